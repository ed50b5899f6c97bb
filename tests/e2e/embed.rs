//! `examples/embed`: a binary of its own over cairn keeps every verb of
//! the `cairn` command line and adds its own `uses:` handler; the stock
//! `cairn` binary, which lacks that handler, refuses the workflow before
//! its first step.

use crate::support::{Run, bin_env, cairn_env, embed_bin, fresh_data_dir, root, scratch};

fn embed(dir: &std::path::Path, data: &str, args: &[&str]) -> Run {
    bin_env(embed_bin(), dir, args, &[("CAIRN_DATA_DIR", data)])
}

#[test]
fn the_embedded_binary_keeps_every_verb_and_serves_its_own_handler() {
    let dir = scratch("embed");
    std::fs::copy(root().join("examples/embed/review.yaml"), dir.join("review.yaml")).expect("copy");
    let data = fresh_data_dir();
    let data = data.to_str().expect("utf-8 path");
    let text = "the quick brown fox jumps over the lazy dog";

    let valid = embed(&dir, data, &["validate", "review.yaml"]);
    assert_eq!((valid.code, valid.stdout.as_str()), (0, "review.yaml: ok (3 steps)\n"), "{}", valid.stderr);
    let plan = embed(&dir, data, &["plan", "review.yaml"]);
    assert!(plan.stdout.contains("level 0: stats"), "{}", plan.stdout);

    let input = format!("text={text}");
    let run =
        embed(&dir, data, &["--llm", "mock", "run", "review.yaml", "--input", &input, "--run-id", "r1"]);
    assert_eq!(run.code, 3, "it waits for the editor-in-chief: {}{}", run.stdout, run.stderr);
    let status = embed(&dir, data, &["status", "r1", "--format", "json"]);
    let doc: serde_json::Value = serde_json::from_str(&status.stdout).expect("one JSON document");
    assert_eq!(doc["steps"][0]["output"], serde_json::json!({"words": 9, "lines": 1, "chars": 43}));
    assert_eq!(doc["waiting"]["gate"], "publish");

    let runs = embed(&dir, data, &["runs", "--format", "json"]);
    assert!(runs.stdout.contains("\"run_id\":\"r1\""), "{}", runs.stdout);
    let approved = embed(
        &dir,
        data,
        &["--llm", "mock", "approve", "r1", "--as", "editor_in_chief", "--comment", "ship it"],
    );
    assert_eq!(approved.code, 0, "{}{}", approved.stdout, approved.stderr);
    let events = embed(&dir, data, &["events", "r1"]);
    assert!(events.stdout.contains("gate_decided publish") && events.stdout.contains("run_completed"));

    let checkpoints = embed(&dir, data, &["checkpoints", "r1", "--format", "json"]);
    let marks: serde_json::Value = serde_json::from_str(&checkpoints.stdout).expect("JSON");
    let after_stats = marks[0]["seq"].as_u64().expect("a checkpoint after stats").to_string();
    let fork = embed(&dir, data, &["fork", "r1", "--checkpoint", &after_stats]);
    assert_eq!(fork.code, 0, "{}", fork.stderr);
    let forked = fork.stdout.trim();
    let cancelled = embed(&dir, data, &["cancel", forked]);
    assert_eq!(cancelled.code, 4, "{}", cancelled.stderr);
    let listed = embed(&dir, data, &["prune", "--older-than", "1ms", "--dry-run"]);
    assert!(
        listed.stdout.ends_with("would prune 2 run(s) that ended more than 1ms ago\n"),
        "{}",
        listed.stdout
    );
    let pruned = embed(&dir, data, &["prune", "--older-than", "1ms"]);
    assert_eq!((pruned.code, pruned.stdout.as_str()), (0, "pruned 2 run(s) that ended more than 1ms ago\n"));

    // The stock binary has no `word_stats`: refused before anything runs.
    let other = fresh_data_dir();
    let stock = cairn_env(
        &dir,
        &["--llm", "mock", "run", "review.yaml", "--input", &input],
        &[("CAIRN_DATA_DIR", other.to_str().expect("utf-8 path"))],
    );
    assert_eq!(stock.code, 2, "{}", stock.stderr);
    assert!(stock.stderr.contains("handler `word_stats`"), "{}", stock.stderr);
    assert!(!stock.stderr.contains("▸"), "no step started: {}", stock.stderr);
}
