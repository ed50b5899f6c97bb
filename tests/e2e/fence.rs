//! The command fence through the real binary: run data never becomes an
//! option, a step cannot change how its program is found or loaded, paths
//! can be confined to the roots, and nothing a step starts outlives it.

use std::path::Path;

use crate::support::{cairn_env, json, redact_times, scratch};

/// A folder with `wf.yaml` and a `cairn.toml` that allows `allow`.
fn project(name: &str, workflow: &str, allow: &[&str]) -> std::path::PathBuf {
    let dir = scratch(name);
    std::fs::write(dir.join("wf.yaml"), workflow).expect("workflow");
    let listed: Vec<String> = allow.iter().map(|p| format!("{p:?}")).collect();
    std::fs::write(dir.join("cairn.toml"), format!("[commands]\nallow = [{}]\n", listed.join(", ")))
        .expect("config");
    dir
}

const LS_REMOTE: &str = r#"cairn: 1
id: fetch
inputs:
  url: { type: string }
steps:
  - id: remote
    command: [git, ls-remote, "{{ inputs.url }}", "."]
"#;

#[test]
fn an_answer_that_reads_as_an_option_never_reaches_the_program() {
    let dir = project("fence_option", LS_REMOTE, &["git"]);
    // A repository of its own, so git works in this folder and not in the
    // workspace's repository around it.
    let init = std::process::Command::new("git").args(["init", "-q"]).current_dir(&dir).status();
    assert!(init.is_ok_and(|s| s.success()), "git init");
    let url = "--upload-pack=touch pwned";
    let run = cairn_env(&dir, &["run", "wf.yaml", "--run-id", "f1", "--input", &format!("url={url}")], &[]);
    assert_eq!(run.code, 1, "{}{}", run.stdout, run.stderr);
    assert!(!dir.join("pwned").exists(), "git ran the answer as its upload-pack");
    insta::assert_snapshot!(redact_times(&run.stdout));
    // The step that opts in hands the same text to git as an option: the
    // reason the fence refuses it by default.
    let opted = LS_REMOTE.replace("\"]\n", "\"]\n    allow_option_args: true\n");
    std::fs::write(dir.join("wf.yaml"), opted).expect("workflow");
    let run = cairn_env(&dir, &["run", "wf.yaml", "--input", &format!("url={url}")], &[]);
    assert!(dir.join("pwned").exists(), "{}{}", run.stdout, run.stderr);
}

#[test]
fn a_step_may_not_set_path_or_the_loader() {
    let workflow = "cairn: 1\nid: env\nsteps:\n  - id: e\n    command: [env]\n    env: { LD_PRELOAD: /tmp/x.so, PATH: . }\n";
    let dir = project("fence_env", workflow, &["env"]);
    let run = cairn_env(&dir, &["validate", "wf.yaml"], &[]);
    assert_eq!(run.code, 2, "{}{}", run.stdout, run.stderr);
    insta::assert_snapshot!(run.stdout + &run.stderr);
}

#[test]
fn confined_arguments_stay_inside_the_roots() {
    let workflow = r#"cairn: 1
id: read
inputs:
  file: { type: string }
steps:
  - id: show
    command: [cat, "{{ inputs.file }}"]
    confine_paths: true
"#;
    let dir = project("fence_confine", workflow, &["cat"]);
    std::fs::write(dir.join("notes.txt"), "inside\n").expect("notes");
    let run = cairn_env(&dir, &["run", "wf.yaml", "--input", "file=notes.txt", "--format", "json"], &[]);
    assert_eq!(run.code, 0, "{}{}", run.stdout, run.stderr);
    assert_eq!(json(&run.stdout)["steps"][0]["output"]["stdout"], "inside\n");
    let run = cairn_env(&dir, &["run", "wf.yaml", "--input", "file=/etc/hostname", "--format", "json"], &[]);
    assert_eq!(run.code, 1, "{}{}", run.stdout, run.stderr);
    let error = &json(&run.stdout)["steps"][0]["error"];
    assert_eq!(error["class"], "permission", "{error}");
    assert!(error["message"].as_str().is_some_and(|m| m.contains("outside the allowed roots")), "{error}");
}

#[test]
fn a_process_that_detaches_dies_with_its_step() {
    let workflow = r#"cairn: 1
id: daemon
steps:
  - id: start
    command:
      - sh
      - -c
      - >-
        setsid sh -c 'echo $$ > daemon.pid; exec sleep 31337' </dev/null >/dev/null 2>&1 &
        while [ ! -s daemon.pid ]; do sleep 0.01; done
"#;
    let dir = project("fence_detach", workflow, &["sh"]);
    let run = cairn_env(&dir, &["run", "wf.yaml"], &[]);
    assert_eq!(run.code, 0, "{}{}", run.stdout, run.stderr);
    let pid = std::fs::read_to_string(dir.join("daemon.pid")).expect("the daemon started");
    let stat = std::fs::read_to_string(Path::new("/proc").join(pid.trim()).join("stat")).unwrap_or_default();
    // `pid (comm) S ...`: gone, or at most a zombie nobody waits for.
    let state = stat.rsplit_once(") ").map(|(_, rest)| &rest[..1]);
    assert!(matches!(state, None | Some("Z")), "the detached process outlived its step: {stat}");
}

#[test]
fn a_run_past_its_timeout_fails_as_a_timeout_and_its_command_dies_with_it() {
    let workflow = r#"cairn: 1
id: slow
timeout: 2s
steps:
  - id: wait
    command: [sh, -c, "echo $$ > slow.pid; exec sleep 31337"]
  - id: after
    needs: [wait]
    set: never
"#;
    let dir = project("fence_run_timeout", workflow, &["sh"]);
    let run = cairn_env(&dir, &["run", "wf.yaml", "--format", "json"], &[]);
    assert_eq!(run.code, 1, "{}{}", run.stdout, run.stderr);
    let shown = json(&run.stdout);
    assert_eq!(shown["error"]["class"], "timeout", "{}", shown["error"]);
    assert_eq!(shown["error"]["message"], "the run's timeout of 2s passed");
    let steps: Vec<(&str, &str)> = shown["steps"]
        .as_array()
        .expect("steps")
        .iter()
        .map(|s| (s["path"].as_str().unwrap_or_default(), s["status"].as_str().unwrap_or_default()))
        .collect();
    assert_eq!(
        steps,
        [("wait", "cancelled"), ("after", "skipped")],
        "the command stopped; nothing after it ran"
    );
    let pid = std::fs::read_to_string(dir.join("slow.pid")).expect("the command started");
    let stat = std::fs::read_to_string(Path::new("/proc").join(pid.trim()).join("stat")).unwrap_or_default();
    let state = stat.rsplit_once(") ").map(|(_, rest)| &rest[..1]);
    assert!(matches!(state, None | Some("Z")), "the command outlived its run: {stat}");
}
