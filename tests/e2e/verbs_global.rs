//! The global flags through the binary: `--data-dir` (and its default,
//! `./.cairn`), `--config` and `CAIRN_CONFIG` (and the `cairn.toml` found
//! in the current folder or above it), and `--llm NAME` picking a provider
//! of the config.

use std::path::Path;

use crate::support::{LlmServer, cairn_bare, cairn_env, fresh_data_dir, json, run_ids, scratch};

/// A workflow whose one step runs `echo`: it completes only where the
/// config allows `echo`, and fails with `permission` elsewhere.
const ECHO: &str = "cairn: 1\nid: echo\nsteps:\n  - id: greet\n    command: [echo, hello]\n";

const ALLOW_ECHO: &str = "[commands]\nallow = [\"echo\"]\n";

/// A workflow of one agent step, on the `default` provider.
const ASK: &str = "cairn: 1\nid: ask\nagents:\n  w: { system: Be brief. }\nsteps:\n  - id: ask\n    agent: w\n    prompt: Is this fine?\n";

fn write(path: &Path, text: &str) {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).expect("mkdir");
    }
    std::fs::write(path, text).expect("write");
}

#[test]
fn the_data_dir_flag_picks_the_store_over_the_environment() {
    let dir = scratch("global_data_dir");
    write(&dir.join("wf.yaml"), "cairn: 1\nid: one\nsteps:\n  - id: a\n    set: 1\n");
    let (flag, env) = (fresh_data_dir(), fresh_data_dir());
    let (flag, env) = (flag.to_str().expect("utf-8"), env.to_str().expect("utf-8"));
    let with_env = [("CAIRN_DATA_DIR", env)];
    let run = cairn_env(&dir, &["--data-dir", flag, "run", "wf.yaml", "--run-id", "d1"], &with_env);
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert!(Path::new(flag).is_dir(), "the store is where --data-dir says");
    let listed = cairn_env(&dir, &["--data-dir", flag, "runs", "--format", "json"], &with_env);
    assert_eq!(run_ids(&listed.stdout), ["d1"]);
    // The flag after the verb works as well (it is global).
    let status = cairn_env(&dir, &["status", "d1", "--data-dir", flag, "--format", "json"], &with_env);
    assert_eq!(json(&status.stdout)["status"], "completed", "{}", status.stderr);
    // The environment's store never saw the run.
    let other = cairn_env(&dir, &["runs", "--format", "json"], &with_env);
    assert_eq!(run_ids(&other.stdout), Vec::<String>::new());
}

#[test]
fn without_a_data_dir_the_store_is_dot_cairn_in_the_current_folder() {
    let dir = scratch("global_default_data_dir");
    write(&dir.join("wf.yaml"), "cairn: 1\nid: one\nsteps:\n  - id: a\n    set: 1\n");
    assert!(!dir.join(".cairn").exists());
    let run = cairn_bare(&dir, &["run", "wf.yaml", "--run-id", "here"], &[]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert!(dir.join(".cairn").is_dir(), "the store was made in ./.cairn");
    let listed = cairn_bare(&dir, &["runs", "--format", "json"], &[]);
    assert_eq!(run_ids(&listed.stdout), ["here"]);
    // The same store, named explicitly.
    let data = dir.join(".cairn");
    let named = cairn_bare(&dir, &["--data-dir", data.to_str().expect("utf-8"), "status", "here"], &[]);
    assert_eq!(named.code, 0, "{}", named.stderr);
}

#[test]
fn the_config_flag_and_cairn_config_name_the_file_and_the_flag_wins() {
    let dir = scratch("global_config");
    write(&dir.join("wf.yaml"), ECHO);
    write(&dir.join("conf/allow.toml"), ALLOW_ECHO);
    write(&dir.join("conf/deny.toml"), "[commands]\nallow = []\n");
    let outcome = |args: &[&str], env: &[(&str, &str)]| {
        let mut all = args.to_vec();
        all.extend(["run", "wf.yaml", "--format", "json"]);
        let run = cairn_env(&dir, &all, env);
        let status = json(&run.stdout)["status"].as_str().unwrap_or_default().to_owned();
        (run.code, status)
    };
    let completed = (0, "completed".to_owned());
    let refused = (1, "failed".to_owned());
    assert_eq!(outcome(&[], &[]), refused, "no config: no program may run");
    assert_eq!(outcome(&["--config", "conf/allow.toml"], &[]), completed);
    assert_eq!(outcome(&[], &[("CAIRN_CONFIG", "conf/allow.toml")]), completed);
    assert_eq!(outcome(&["--config", "conf/deny.toml"], &[("CAIRN_CONFIG", "conf/allow.toml")]), refused);
    assert_eq!(outcome(&["--config", "conf/allow.toml"], &[("CAIRN_CONFIG", "conf/deny.toml")]), completed);
    // A ./cairn.toml is not read when another file is named.
    write(&dir.join("cairn.toml"), ALLOW_ECHO);
    assert_eq!(outcome(&[], &[]), completed, "./cairn.toml is read by default");
    assert_eq!(outcome(&["--config", "conf/deny.toml"], &[]), refused);
}

#[test]
fn a_named_config_that_does_not_exist_is_refused_naming_it() {
    let dir = scratch("global_config_missing");
    write(&dir.join("wf.yaml"), ECHO);
    write(&dir.join("cairn.toml"), ALLOW_ECHO);
    for (args, env) in [
        (vec!["--config", "nowhere/cairn.toml", "run", "wf.yaml"], vec![]),
        (vec!["run", "wf.yaml"], vec![("CAIRN_CONFIG", "nowhere/cairn.toml")]),
    ] {
        let run = cairn_env(&dir, &args, &env);
        assert_eq!((run.code, run.stdout.as_str()), (2, ""), "{args:?} {env:?}: {}", run.stderr);
        assert!(run.stderr.contains("nowhere/cairn.toml"), "the path is named: {}", run.stderr);
    }
}

#[test]
fn cairn_toml_is_found_in_the_nearest_folder_above() {
    let dir = scratch("global_config_upward");
    write(&dir.join("wf.yaml"), ECHO);
    write(&dir.join("cairn.toml"), ALLOW_ECHO);
    let deep = dir.join("a/b/c");
    std::fs::create_dir_all(&deep).expect("mkdir");
    let run = cairn_env(&deep, &["run", "../../../wf.yaml", "--format", "json"], &[]);
    assert_eq!(run.code, 0, "the parent's cairn.toml allows echo: {}{}", run.stdout, run.stderr);
    assert_eq!(json(&run.stdout)["steps"][0]["output"]["stdout"], "hello\n");
    // The nearest one wins.
    write(&dir.join("a/b/cairn.toml"), "[commands]\nallow = []\n");
    let run = cairn_env(&deep, &["run", "../../../wf.yaml", "--format", "json"], &[]);
    assert_eq!(run.code, 1, "a/b/cairn.toml allows nothing: {}", run.stderr);
    assert_eq!(json(&run.stdout)["steps"][0]["error"]["class"], "permission");
    // A problem in the file found is refused naming the file, the line and the key.
    write(&dir.join("a/b/cairn.toml"), "[store]\ndurability = \"fast\"\n");
    let run = cairn_env(&deep, &["runs"], &[]);
    assert_eq!(run.code, 2);
    let file = dir.join("a/b/cairn.toml");
    assert!(run.stderr.contains(&format!("{}:2:14: store.durability", file.display())), "{}", run.stderr);
}

#[test]
fn an_unknown_key_in_the_config_is_refused_naming_it() {
    let dir = scratch("global_config_unknown_key");
    write(
        &dir.join("cairn.toml"),
        "[providers.default]\nbase_url = \"http://127.0.0.1:9/v1\"\nmodle = \"x\"\n",
    );
    let run = cairn_env(&dir, &["runs"], &[]);
    assert_eq!(run.code, 2);
    assert!(
        run.stderr.contains("cairn.toml:3:1: providers.default.modle: unknown field `modle`"),
        "{}",
        run.stderr
    );
}

#[test]
fn llm_name_sends_every_agent_to_that_configured_provider() {
    let dir = scratch("global_llm_name");
    write(&dir.join("wf.yaml"), ASK);
    let other = LlmServer::start(std::time::Duration::ZERO);
    let config = format!(
        "[providers.default]\nbase_url = \"http://127.0.0.1:9/v1\"\nmodel = \"unused\"\n\n[providers.other]\nbase_url = \"{}\"\nmodel = \"fake\"\n",
        other.url
    );
    write(&dir.join("cairn.toml"), &config);
    let run =
        cairn_env(&dir, &["--llm", "other", "run", "wf.yaml", "--run-id", "o1", "--format", "json"], &[]);
    assert_eq!(run.code, 0, "{}{}", run.stdout, run.stderr);
    let doc = json(&run.stdout);
    assert_eq!(doc["steps"][0]["output"], "answer for o1/ask/1", "answered by `other`");
    let keys: Vec<String> = other.calls().into_iter().map(|c| c.key).collect();
    assert_eq!(keys, ["o1/ask/1"], "the call went to `other`, not to `default` (port 9 answers nobody)");
    // A name no config gives is refused before anything runs.
    let run = cairn_env(&dir, &["--llm", "nobody", "run", "wf.yaml", "--run-id", "o2"], &[]);
    assert_eq!(run.code, 2);
    assert!(run.stderr.contains("nobody"), "{}", run.stderr);
    // An agent names a provider with `provider:`; the config gives it.
    write(
        &dir.join("named.yaml"),
        &ASK.replace("{ system: Be brief. }", "{ system: Be brief., provider: other }"),
    );
    let run = cairn_env(&dir, &["run", "named.yaml", "--run-id", "o3", "--format", "json"], &[]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert_eq!(json(&run.stdout)["steps"][0]["output"], "answer for o3/ask/1");
}
