//! `cairn init`: a starter workflow that validates and runs offline, a
//! commented config, and never an overwritten file.

use crate::support::{cairn_env, scratch};

#[test]
fn init_writes_a_starter_that_validates_and_runs_with_the_mock() {
    let dir = scratch("cli_init");
    let out = cairn_env(&dir, &["init"], &[]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(
        out.stdout,
        "wrote workflow.yaml\nwrote cairn.toml\nnext: cairn --llm mock run workflow.yaml\n"
    );
    let config = std::fs::read_to_string(dir.join("cairn.toml")).expect("cairn.toml");
    assert!(config.lines().filter(|l| l.starts_with('#')).count() > 10, "a commented config");
    let out = cairn_env(&dir, &["validate", "workflow.yaml"], &[]);
    assert_eq!((out.code, out.stdout.as_str()), (0, "workflow.yaml: ok (4 steps)\n"), "{}", out.stderr);
    // Exactly the command it printed: the config it wrote is found and allows the command step.
    let out = cairn_env(&dir, &["--llm", "mock", "run", "workflow.yaml"], &[]);
    assert_eq!(out.code, 0, "{}{}", out.stdout, out.stderr);
    assert!(out.stdout.contains("): completed in "), "{}", out.stdout);
    assert!(out.stderr.contains("✓ stamp"), "the command step ran: {}", out.stderr);
}

#[test]
fn init_never_overwrites_and_names_the_file_that_exists() {
    let dir = scratch("cli_init_exists");
    std::fs::write(dir.join("cairn.toml"), "# mine\n").expect("write");
    let out = cairn_env(&dir, &["init"], &[]);
    assert_eq!(out.code, 2);
    assert!(out.stderr.starts_with("error: cairn.toml: exists already"), "{}", out.stderr);
    assert_eq!(std::fs::read_to_string(dir.join("cairn.toml")).expect("kept"), "# mine\n");
    assert!(!dir.join("workflow.yaml").exists(), "nothing is written when one file exists");
}

#[test]
fn init_into_a_new_folder_says_to_go_there_and_speaks_json() {
    let dir = scratch("cli_init_dir");
    let out = cairn_env(&dir, &["init", "flows/first", "--format", "json"], &[]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let json: serde_json::Value = serde_json::from_str(&out.stdout).expect("one JSON document");
    assert_eq!(
        json,
        serde_json::json!({
            "wrote": ["flows/first/workflow.yaml", "flows/first/cairn.toml"],
            "next": "cd flows/first && cairn --llm mock run workflow.yaml",
        })
    );
    let out = cairn_env(&dir.join("flows/first"), &["--llm", "mock", "run", "workflow.yaml"], &[]);
    assert_eq!(out.code, 0, "{}", out.stderr);
}
