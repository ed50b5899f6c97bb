//! What the command line says about itself: `--help` on every verb,
//! suggestions for mistyped verbs and flags, completions, the man page and
//! the version.

use crate::support::{Run, cairn_env, root};

/// Every verb, as `cairn --help` lists it.
const VERBS: [&str; 21] = [
    "validate",
    "run",
    "runs",
    "status",
    "pause",
    "resume",
    "approve",
    "reject",
    "answer",
    "cancel",
    "checkpoints",
    "fork",
    "events",
    "prune",
    "plan",
    "init",
    "completions",
    "man",
    "doctor",
    "version",
    "help",
];

/// `cairn ARGS` with help wrapped at 100 columns, whatever the terminal.
fn cairn(args: &[&str]) -> Run {
    cairn_env(&root(), args, &[("COLUMNS", "100")])
}

#[test]
fn a_mistyped_verb_or_flag_gets_a_suggestion() {
    let out = cairn(&["runz"]);
    assert_eq!(out.code, 2);
    assert!(out.stderr.contains("error: unrecognized subcommand 'runz'"), "{}", out.stderr);
    assert!(
        out.stderr.contains("tip: some similar subcommands exist: 'prune', 'runs', 'run'"),
        "{}",
        out.stderr
    );
    let out = cairn(&["runs", "--formt", "json"]);
    assert_eq!(out.code, 2);
    assert!(out.stderr.contains("tip: a similar argument exists: '--format'"), "{}", out.stderr);
    let out = cairn(&["--llm", "mock", "run", "wf.yaml", "--run-di", "x"]);
    assert_eq!(out.code, 2);
    assert!(out.stderr.contains("tip: a similar argument exists: '--run-id'"), "{}", out.stderr);
    let out = cairn(&["--dat-dir", "x", "runs"]);
    assert_eq!(out.code, 2);
    assert!(out.stderr.contains("tip: a similar argument exists: '--data-dir'"), "{}", out.stderr);
}

#[test]
fn the_top_level_help_lists_verbs_global_options_environment_and_exit_codes() {
    let out = cairn(&["--help"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    insta::assert_snapshot!("top_level_help", out.stdout);
    for verb in VERBS {
        let line = out.stdout.lines().find(|l| l.starts_with(&format!("  {verb} "))).unwrap_or_default();
        let next = out.stdout.lines().skip_while(|l| *l != line).nth(1).unwrap_or_default();
        assert!(!line.is_empty(), "{verb} is listed");
        assert!(!next.starts_with("               "), "{verb}'s description fits one line: {line}");
    }
    for variable in [
        "CAIRN_DATA_DIR",
        "CAIRN_CONFIG",
        "CAIRN_LLM_BASE_URL",
        "CAIRN_LLM_API_KEY",
        "CAIRN_LLM_MODEL",
        "CAIRN_MOCK_LATENCY",
        "NO_COLOR",
    ] {
        assert!(out.stdout.contains(&format!("\n  {variable} ")), "{variable} is listed");
    }
    assert!(out.stdout.contains("relative to the current directory"), "where the data directory is");
    // `-h` is the short form, with the same sections.
    let short = cairn(&["-h"]);
    assert!(short.stdout.contains("Global options:") && short.stdout.contains("Environment:"));
}

#[test]
fn a_verb_help_has_examples_and_its_global_options_in_their_own_section() {
    let out = cairn(&["run", "--help"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    insta::assert_snapshot!("run_help", out.stdout);
}

#[test]
fn every_verb_has_a_description_and_examples() {
    for verb in VERBS.iter().filter(|v| **v != "help") {
        let out = cairn(&[verb, "--help"]);
        assert_eq!(out.code, 0, "{verb}: {}", out.stderr);
        let about = out.stdout.lines().next().unwrap_or_default();
        assert!(about.len() > 20 && !about.starts_with("Usage"), "{verb} says what it does: {about:?}");
        assert!(out.stdout.contains("\nExamples:\n  cairn "), "{verb} has examples:\n{}", out.stdout);
        // `completions`, `man` and `version` read nothing and print no progress.
        let globals = !["completions", "man", "version"].contains(verb);
        assert_eq!(out.stdout.contains("\nGlobal options:\n"), globals, "{verb}: {}", out.stdout);
    }
}

#[test]
fn global_options_show_where_they_are_read_and_are_accepted_everywhere() {
    let help = |verb: &str| cairn(&[verb, "--help"]).stdout;
    let (validate, runs, run) = (help("validate"), help("runs"), help("run"));
    for flag in ["--data-dir", "--config", "--llm"] {
        assert!(!validate.contains(flag), "validate reads no store, config or model: {validate}");
        assert!(run.contains(flag), "run reads them all: {run}");
    }
    assert!(runs.contains("--data-dir") && runs.contains("--config") && !runs.contains("--llm"), "{runs}");
    assert!(validate.contains("-q, --quiet"));
    // Hidden, not refused: a script may pass the same flags to every verb.
    let out =
        cairn(&["--data-dir", "/nonexistent", "--llm", "mock", "validate", "examples/ticket-triage.yaml"]);
    assert_eq!(
        (out.code, out.stdout.as_str()),
        (0, "examples/ticket-triage.yaml: ok (4 steps)\n"),
        "{}",
        out.stderr
    );
}

#[test]
fn completions_for_every_shell_and_a_man_page() {
    let shells = [
        ("bash", "complete -F _cairn"),
        ("zsh", "#compdef cairn"),
        ("fish", "complete -c cairn"),
        ("powershell", "Register-ArgumentCompleter"),
        ("elvish", "edit:completion:arg-completer"),
    ];
    for (shell, mark) in shells {
        let out = cairn(&["completions", shell]);
        assert_eq!(out.code, 0, "{shell}: {}", out.stderr);
        assert!(out.stdout.contains(mark), "{shell}: {}", &out.stdout[..out.stdout.len().min(400)]);
        assert!(out.stdout.contains("checkpoints"), "{shell} completes the verbs");
    }
    let out = cairn(&["completions", "tcsh"]);
    assert_eq!(out.code, 2);
    assert!(out.stderr.contains("possible values: bash, elvish, fish, powershell, zsh"), "{}", out.stderr);
    let man = cairn(&["man"]);
    assert_eq!(man.code, 0, "{}", man.stderr);
    for part in
        [".TH cairn 1 ", ".SH SUBCOMMANDS", "cairn\\-init(1)", ".SH \"EXAMPLES\"", ".SH \"ENVIRONMENT\""]
    {
        assert!(man.stdout.contains(part), "{part}:\n{}", man.stdout);
    }
    assert!(man.stdout.contains("CAIRN_LLM_API_KEY") && man.stdout.contains(".SH \"EXIT STATUS\""));
    // The verbs' pages the subcommands section names.
    let run = cairn(&["man", "run"]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert!(
        run.stdout.contains(".TH cairn-run 1 ") && run.stdout.contains("\\-\\-run\\-id"),
        "{}",
        run.stdout
    );
    let out = cairn(&["man", "nope"]);
    assert_eq!(
        (out.code, out.stderr.as_str()),
        (2, "error: `nope` is not a verb of cairn; `cairn --help` lists them\n")
    );
}

#[test]
fn version_as_a_verb_a_flag_and_json() {
    let version = env!("CARGO_PKG_VERSION");
    let out = cairn(&["version"]);
    assert_eq!((out.code, out.stdout), (0, format!("cairn {version}\n")));
    let out = cairn(&["--version"]);
    assert_eq!((out.code, out.stdout), (0, format!("cairn {version}\n")));
    let out = cairn(&["version", "--format", "json"]);
    assert_eq!(out.code, 0);
    let json: serde_json::Value = serde_json::from_str(&out.stdout).expect("one JSON document");
    assert_eq!(json, serde_json::json!({"version": version}));
}
