//! `cairn validate`: the examples pass; bad input gets a clear error and exit 2.

use crate::support::{cairn, cairn_in, scratch};

#[test]
fn every_example_validates() {
    let examples: Vec<String> = std::fs::read_dir(crate::support::root().join("examples"))
        .expect("examples/")
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "yaml" || x == "json"))
        .map(|p| format!("examples/{}", p.file_name().and_then(|n| n.to_str()).unwrap_or_default()))
        .collect();
    assert!(examples.len() >= 6, "the six examples at least: {examples:?}");
    let mut args = vec!["validate"];
    args.extend(examples.iter().map(String::as_str));
    let run = cairn(&args);
    assert_eq!(run.code, 0, "{}{}", run.stdout, run.stderr);
    assert_eq!(
        run.stdout.lines().filter(|l| l.ends_with("steps)") && l.contains(": ok (")).count(),
        examples.len()
    );
}

#[test]
fn a_missing_file_is_exit_2_naming_it() {
    let run = cairn(&["validate", "no/such/file.yaml"]);
    assert_eq!(run.code, 2);
    assert!(run.stdout.starts_with("no/such/file.yaml: cannot read the file"), "{}", run.stdout);
}

/// Writes `contents` as `name` in a scratch folder and validates it there,
/// returning `exit code` and both streams for a snapshot.
fn validate_file(test: &str, name: &str, contents: &[u8]) -> String {
    let dir = scratch(test);
    std::fs::write(dir.join(name), contents).expect("write fixture");
    let run = cairn_in(&dir, &["validate", name]);
    format!("exit {}\n--- stdout\n{}--- stderr\n{}", run.code, run.stdout, run.stderr)
}

#[test]
fn bad_input_gets_a_clear_error_and_exit_2() {
    let mut alias_bomb = String::from(
        "cairn: 1\nid: bomb\na: &a [\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\"]\n",
    );
    for (n, p) in
        ["b", "c", "d", "e", "f", "g", "h", "i"].iter().zip(["a", "b", "c", "d", "e", "f", "g", "h"])
    {
        alias_bomb.push_str(&format!("{n}: &{n} [*{p},*{p},*{p},*{p},*{p},*{p},*{p},*{p},*{p}]\n"));
    }
    let cases: Vec<(&str, &str, Vec<u8>)> = vec![
        ("malformed_yaml", "wf.yaml", b"cairn: 1\nid: x\nsteps: [\n  - id: a\n".to_vec()),
        ("malformed_json", "wf.json", b"{\"cairn\": 1, \"id\": \"x\", \"steps\": [}".to_vec()),
        (
            "wrong_types",
            "wf.yaml",
            b"cairn: \"one\"\nid: x\nsteps:\n  - id: a\n    set: 1\n    optional: maybe\n    timeout: [1]\n"
                .to_vec(),
        ),
        (
            "unknown_keys",
            "wf.yaml",
            b"cairn: 1\nid: x\nstpes: []\nsteps:\n  - id: a\n    agnet: w\n    set: 1\n".to_vec(),
        ),
        ("empty", "wf.yaml", Vec::new()),
        ("alias_bomb", "wf.yaml", alias_bomb.into_bytes()),
        ("deep_nesting", "wf.yaml", "[".repeat(100_000).into_bytes()),
        (
            "deep_json",
            "wf.json",
            format!("{}{}", "{\"a\":".repeat(100_000), "}".repeat(100_000)).into_bytes(),
        ),
        ("not_utf8", "wf.yaml", b"cairn: 1\nid: x\nname: caf\xe9\nsteps: []\n".to_vec()),
        (
            "bad_ids",
            "wf.yaml",
            b"cairn: 1\nid: my workflow\nsteps:\n  - id: ../etc\n    set: 1\n  - id: has space\n    set: 2\n"
                .to_vec(),
        ),
    ];
    for (case, name, bytes) in cases {
        insta::assert_snapshot!(case, validate_file(case, name, &bytes));
    }
}

#[test]
fn a_50_mb_file_is_refused_without_reading_it() {
    let dir = scratch("huge");
    let file = std::fs::File::create(dir.join("huge.yaml")).expect("create");
    file.set_len(50 * 1024 * 1024).expect("sparse 50 MB");
    let run = cairn_in(&dir, &["validate", "huge.yaml"]);
    assert_eq!(run.code, 2);
    // The true size comes from the file's metadata: a bounded read could
    // only have told 8 MiB and one byte.
    assert_eq!(
        run.stdout,
        "huge.yaml: the file is 52428800 bytes; definitions are limited to 8388608 bytes\n"
    );
    std::fs::File::create(dir.join("inputs.yaml")).expect("create").set_len(9 * 1024 * 1024).expect("9 MiB");
    std::fs::write(dir.join("wf.yaml"), "cairn: 1\nid: x\nsteps:\n  - id: a\n    set: 1\n").expect("write");
    let run = cairn_in(&dir, &["run", "wf.yaml", "--inputs", "inputs.yaml"]);
    assert_eq!(run.code, 2, "{}", run.stderr);
    assert!(run.stderr.contains("the file is 9437184 bytes"), "{}", run.stderr);
}

#[test]
fn json_format_lists_problems_for_tools() {
    let dir = scratch("json_format");
    std::fs::write(dir.join("wf.yaml"), "cairn: 1\nid: x\nsteps:\n  - id: a\n    set: 1\n    needs: [b]\n")
        .expect("write");
    let run = cairn_in(&dir, &["validate", "--format", "json", "wf.yaml"]);
    assert_eq!(run.code, 2);
    let problems: serde_json::Value = serde_json::from_str(&run.stdout).expect("JSON array");
    insta::assert_json_snapshot!(problems);
}

#[test]
fn a_mistyped_verb_gets_a_suggestion() {
    let r = crate::support::cairn(&["staus", "r1"]);
    assert_eq!(r.code, 2);
    assert!(
        r.stderr.contains("tip: some similar subcommands exist: 'pause', 'stats', 'status'"),
        "{}",
        r.stderr
    );
}
