//! One output vocabulary: `--format text|json` on every verb that prints,
//! `jsonl` and `json` for events, `text` as another word for `table`; and
//! tables that fit their content.

use std::path::{Path, PathBuf};

use crate::support::{Run, cairn_env, fresh_data_dir, scratch};

const GATED: &str = "cairn: 1\nid: gated\nsteps:\n  - id: a\n    set: 1\n  - id: go\n    approval: { message: \"Ship it?\" }\n  - id: b\n    set: 2\n";

/// A folder with `wf.yaml` (a run that waits at an approval) and its own data directory.
fn setup(name: &str) -> (PathBuf, PathBuf) {
    let dir = scratch(name);
    std::fs::write(dir.join("wf.yaml"), GATED).expect("write");
    (dir, fresh_data_dir())
}

fn cairn(dir: &Path, data: &Path, args: &[&str]) -> Run {
    cairn_env(dir, args, &[("CAIRN_DATA_DIR", data.to_str().expect("utf-8"))])
}

/// Exactly one JSON document on stdout.
fn json(out: &Run) -> serde_json::Value {
    serde_json::from_str(&out.stdout)
        .unwrap_or_else(|e| panic!("not one JSON document ({e}): {}", out.stdout))
}

#[test]
fn pause_cancel_and_prune_print_json_when_asked() {
    let (dir, data) = setup("cli_output_steer");
    for id in ["g1", "g2"] {
        let out = cairn(&dir, &data, &["run", "wf.yaml", "--run-id", id, "--non-interactive"]);
        assert_eq!(out.code, 3, "{}", out.stderr);
    }
    let out = cairn(&dir, &data, &["pause", "g1", "--format", "json"]);
    assert_eq!(out.code, 5, "the exit code still says how the run stands: {}", out.stderr);
    let run = json(&out);
    assert_eq!((run["run_id"].as_str(), run["status"].as_str()), (Some("g1"), Some("paused")));
    assert!(run["steps"].is_array() && run.get("waiting").is_some(), "the run JSON of `status`: {run}");
    let out = cairn(&dir, &data, &["cancel", "g2", "--format", "json"]);
    assert_eq!(out.code, 4, "{}", out.stderr);
    assert_eq!(json(&out)["status"], "cancelled");
    let out = cairn(&dir, &data, &["cancel", "g1", "--format", "text"]);
    assert_eq!(out.code, 4);
    assert!(out.stdout.starts_with("run g1 (gated): cancelled in "), "{}", out.stdout);
    std::thread::sleep(std::time::Duration::from_millis(5));
    let out = cairn(&dir, &data, &["prune", "--older-than", "1ms", "--dry-run", "--format", "json"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(json(&out), serde_json::json!({"deleted": ["g2", "g1"], "dry_run": true}));
    let out = cairn(&dir, &data, &["prune", "--older-than", "1ms", "--format", "json"]);
    assert_eq!(json(&out), serde_json::json!({"deleted": ["g2", "g1"], "dry_run": false}));
    let out = cairn(&dir, &data, &["runs", "--format", "json"]);
    assert_eq!(out.stdout.trim(), "[]");
}

#[test]
fn events_print_as_lines_jsonl_or_one_json_array() {
    let (dir, data) = setup("cli_output_events");
    let out = cairn(&dir, &data, &["run", "wf.yaml", "--run-id", "e1", "--non-interactive"]);
    assert_eq!(out.code, 3, "{}", out.stderr);
    let jsonl = cairn(&dir, &data, &["events", "e1", "--format", "jsonl"]);
    let lines: Vec<serde_json::Value> =
        jsonl.stdout.lines().map(|l| serde_json::from_str(l).expect("a JSON object per line")).collect();
    let array = json(&cairn(&dir, &data, &["events", "e1", "--format", "json"]));
    assert_eq!(array, serde_json::Value::Array(lines.clone()), "the same events, as one array");
    assert!(lines.len() > 4);
    let text = cairn(&dir, &data, &["events", "e1"]);
    assert_eq!(text.stdout.lines().count(), lines.len());
}

#[test]
fn text_is_another_word_for_table_and_tables_fit_their_content() {
    let (dir, data) = setup("cli_output_tables");
    let out = cairn(&dir, &data, &["run", "wf.yaml", "--run-id", "t1", "--non-interactive"]);
    assert_eq!(out.code, 3, "{}", out.stderr);
    for verb in [&["runs"][..], &["checkpoints", "t1"]] {
        let table = cairn(&dir, &data, &[verb, &["--format", "table"]].concat());
        let text = cairn(&dir, &data, &[verb, &["--format", "text"]].concat());
        assert_eq!((table.code, text.code), (0, 0), "{}", text.stderr);
        // Seconds may pass between the two: compare them with the relative time as a word.
        assert_eq!(without_ago(&table.stdout), without_ago(&text.stdout), "{verb:?}");
        assert!(table.stdout.lines().all(|l| l == l.trim_end()), "no trailing blanks: {:?}", table.stdout);
    }
    let runs = cairn(&dir, &data, &["runs"]).stdout;
    let mut lines = runs.lines();
    let header = lines.next().unwrap_or_default();
    assert!(header.starts_with("RUN  WORKFLOW  STATUS            CREATED"), "sized to the content: {runs}");
    let row = lines.next().unwrap_or_default();
    assert!(row.starts_with("t1   gated     waiting_approval  "), "{runs}");
    assert!(row.contains(" ago ") || row.contains("just now"), "a relative time: {runs}");
    let checkpoints = cairn(&dir, &data, &["checkpoints", "t1"]).stdout;
    assert!(checkpoints.starts_with("SEQ  AT "), "{checkpoints}");
    assert!(checkpoints.contains("after a (succeeded)"), "{checkpoints}");
    let out = cairn(&dir, &data, &["runs", "--format", "yaml"]);
    assert_eq!(out.code, 2);
    assert!(out.stderr.contains("[possible values: table, json]"), "{}", out.stderr);
}

/// `text` with each relative time (`just now`, `5s ago`) as `<ago>` and
/// runs of blanks as one, so two listings taken seconds apart compare.
fn without_ago(text: &str) -> String {
    let words: Vec<&str> = text.split(' ').filter(|w| !w.is_empty()).collect();
    let mut out: Vec<String> = Vec::new();
    let mut i = 0;
    while i < words.len() {
        let (w, next) = (words[i], words.get(i + 1).copied());
        let number = w.trim_end_matches(['s', 'm', 'h', 'd']);
        if w == "just" && next == Some("now")
            || !number.is_empty() && number.chars().all(|c| c.is_ascii_digit()) && next == Some("ago")
        {
            out.push("<ago>".into());
            i += 2;
        } else {
            out.push(w.to_owned());
            i += 1;
        }
    }
    out.join(" ")
}
