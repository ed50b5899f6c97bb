//! Every example in `examples/` (found by listing the folder) runs through
//! the binary on the mock provider and is driven to completion across
//! processes: each person's gate it reaches is approved or answered by a
//! later `cairn` process, until the run completes.
//!
//! The examples' command steps run `cargo` and `git`; here they run
//! stand-ins (shell scripts on `PATH` that print their arguments and
//! succeed), so the test never builds or tests a real project.

use std::path::PathBuf;

use crate::support::{cairn_env, examples, fresh_data_dir, json};

/// `--input` arguments for the required inputs of a definition, read from
/// its top-level `inputs:` block (`  name: { type: T, required: true }`).
fn required_inputs(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut inside = false;
    for line in text.lines() {
        if line == "inputs:" {
            inside = true;
            continue;
        }
        if inside && !line.is_empty() && !line.starts_with(' ') && !line.starts_with('#') {
            break;
        }
        let Some(rest) = line.strip_prefix("  ").filter(|r| inside && !r.starts_with(' ')) else { continue };
        let Some((name, spec)) = rest.split_once(':') else { continue };
        if !spec.contains("required: true") {
            continue;
        }
        let value = match (name, spec) {
            ("repo", _) => ".".to_owned(),
            (_, s) if s.contains("type: integer") || s.contains("type: number") => "1".to_owned(),
            (_, s) if s.contains("type: boolean") => "false".to_owned(),
            _ => format!("an e2e {name}"),
        };
        out.push(format!("{name}={value}"));
    }
    out
}

/// A folder with `cairn.toml` allowing `cargo` and `git`, and a `bin/`
/// of stand-ins for them; returns it and the `PATH` that finds them first.
fn bench() -> (PathBuf, String) {
    let dir = crate::support::scratch("verbs_examples");
    let bin = dir.join("bin");
    std::fs::create_dir_all(&bin).expect("mkdir");
    for program in ["cargo", "git"] {
        let path = bin.join(program);
        std::fs::write(&path, format!("#!/bin/sh\necho \"{program} stand-in: $*\"\n")).expect("write");
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    }
    std::fs::write(dir.join("cairn.toml"), "[commands]\nallow = [\"cargo\", \"git\"]\nroots = [\".\"]\n")
        .expect("write");
    let path = format!("{}:{}", bin.display(), std::env::var("PATH").unwrap_or_default());
    (dir, path)
}

/// The next decision for a run waiting at `waiting`: the verb's arguments.
fn decision(id: &str, waiting: &serde_json::Value) -> Vec<String> {
    let gate = waiting["gate"].as_str().expect("the waiting gate").to_owned();
    let base = |verb: &str| vec![verb.to_owned(), id.to_owned(), "--gate".to_owned(), gate.clone()];
    match waiting["kind"].as_str() {
        Some("approval" | "acceptance") => {
            let decided: Vec<&str> = waiting["approved_by"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|a| a["role"].as_str().or_else(|| a.as_str()))
                .collect();
            let mut args = base("approve");
            let role = waiting["approvers"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|r| r.as_str())
                .find(|r| !decided.contains(r));
            if let Some(role) = role {
                args.extend(["--as".to_owned(), role.to_owned()]);
            }
            args
        }
        Some("clarification") => {
            let mut args = base("answer");
            args.extend(["--text".to_owned(), "Keep it small.".to_owned()]);
            args
        }
        other => panic!("{id}: waits for {other:?}, which no person's decision ends: {waiting}"),
    }
}

#[test]
fn every_example_runs_on_the_mock_to_completion() {
    let (dir, path) = bench();
    let mut completed = Vec::new();
    for file in examples() {
        let name = file.file_stem().and_then(|s| s.to_str()).expect("a name").to_owned();
        // An example with a fence of its own (`examples/NAME/cairn.toml`)
        // acts on its own files, with its cassette's answers: the cassette
        // test runs it.
        if file.with_extension("").join("cairn.toml").exists() {
            continue;
        }
        let data = fresh_data_dir();
        let env = [("CAIRN_DATA_DIR", data.to_str().expect("utf-8")), ("PATH", path.as_str())];
        let cairn = |args: &[String]| {
            let mut all = vec!["--llm".to_owned(), "mock".to_owned()];
            all.extend_from_slice(args);
            all.extend(["--non-interactive".to_owned(), "--format".to_owned(), "json".to_owned()]);
            let all: Vec<&str> = all.iter().map(String::as_str).collect();
            cairn_env(&dir, &all, &env)
        };
        let text = std::fs::read_to_string(&file).expect("read");
        let mut args =
            vec!["run".to_owned(), file.display().to_string(), "--run-id".to_owned(), name.clone()];
        for input in required_inputs(&text) {
            args.extend(["--input".to_owned(), input]);
        }
        let mut transcript = Vec::new();
        let mut run = cairn(&args);
        for _ in 0..30 {
            transcript.push(format!("$ cairn {}\nexit {}\n{}", args.join(" "), run.code, run.stderr));
            let doc = json(&run.stdout);
            let failed: Vec<&serde_json::Value> =
                doc["steps"].as_array().expect("steps").iter().filter(|s| s["status"] == "failed").collect();
            assert!(failed.is_empty(), "{name}: failed steps {failed:?}\n{}", transcript.join("\n"));
            match (run.code, doc["status"].as_str()) {
                (0, Some("completed")) => break,
                (3, Some(status)) if status.starts_with("waiting_") => {
                    args = decision(&name, &doc["waiting"]);
                    run = cairn(&args);
                }
                (code, status) => panic!("{name}: exit {code}, status {status:?}\n{}", transcript.join("\n")),
            }
        }
        let status = json(&cairn_env(&dir, &["status", &name, "--format", "json"], &env).stdout);
        assert_eq!(status["status"], "completed", "{name}\n{}", transcript.join("\n"));
        completed.push(name);
    }
    let fenced = examples().iter().filter(|f| f.with_extension("").join("cairn.toml").exists()).count();
    assert_eq!(completed.len() + fenced, examples().len());
    assert!(completed.len() >= 6, "{completed:?}");
}

#[test]
fn the_inputs_of_an_example_are_read_from_its_inputs_block() {
    let text = "cairn: 1\ninputs:\n  repo: { type: string, required: true }\n  n: { type: integer, required: true }\n  opt: { type: string, default: x }\nagents:\n  a: { required: true }\n";
    assert_eq!(required_inputs(text), ["repo=.", "n=1"]);
}
