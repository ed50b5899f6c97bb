//! `export` and `import`: runs moved from one store to another keep every
//! event with its actor and time, go on where they were, and bad records
//! are refused before anything is written.

use crate::support::{Bench, json};

/// An approval between two steps.
const GATE: &str = "cairn: 1\nid: gate\nsteps:\n  - id: draft\n    set: hello\n  - id: sign\n    approval: { message: Sign? }\n  - id: after\n    set: done\n";

/// `events RUN --format json` on `bench`.
fn events(bench: &Bench, run: &str) -> serde_json::Value {
    json(&bench.expect(0, &["events", run, "--format", "json"]).stdout)
}

#[test]
fn runs_move_between_stores_with_their_events_actors_and_times_and_go_on_there() {
    let from = Bench::new("transfer_from", &[("gate.yaml", GATE)]);
    let to = Bench::new("transfer_to", &[]);
    let run = |bench: &Bench| {
        let ran = bench.expect(3, &["run", "gate.yaml", "--format", "json"]);
        json(&ran.stdout)["run_id"].as_str().expect("an id").to_owned()
    };
    let (done, waiting) = (run(&from), run(&from));
    from.expect(0, &["approve", &done, "--by", "alice"]);

    let one = from.expect(0, &["export", &done]);
    assert_eq!(one.stdout.lines().count(), 1);
    let all = from.expect(0, &["export", "--all"]).stdout;
    let ids: Vec<String> =
        all.lines().map(|l| json(l)["run_id"].as_str().expect("an id").to_owned()).collect();
    assert_eq!(ids, [done.clone(), waiting.clone()], "oldest first");
    std::fs::write(to.dir.join("runs.jsonl"), &all).expect("writes");

    let imported = to.expect(0, &["import", "runs.jsonl"]);
    assert_eq!(
        imported.stdout,
        format!("added {done} (13 events)\nadded {waiting} (7 events)\n"),
        "{}",
        imported.stderr
    );
    for id in [&done, &waiting] {
        assert_eq!(events(&to, id), events(&from, id), "every event as it was: actor, time, fields");
    }
    let decided = events(&to, &done);
    let decided = decided.as_array().and_then(|e| e.iter().find(|e| e["type"] == "gate_decided")).cloned();
    assert_eq!(decided.map(|e| e["actor"].clone()), Some(serde_json::json!("alice")));
    let listed = json(&to.expect(0, &["runs", "--format", "json"]).stdout);
    assert_eq!(listed.as_array().map(Vec::len), Some(2));
    let found = json(&to.expect(0, &["search", "hello", "--format", "json"]).stdout);
    assert_eq!(found.as_array().map(Vec::len), Some(2), "imported runs are searched: {found}");

    // Again: both are there already, nothing is written.
    let again = to.expect(0, &["import", "runs.jsonl", "--format", "json"]);
    let again = json(&again.stdout);
    assert_eq!(again[0]["imported"], "present");
    assert_eq!(again[1]["imported"], "present");

    // The waiting run goes on in its new store.
    to.expect(0, &["approve", &waiting]);
    assert_eq!(json(&to.expect(0, &["status", &waiting, "--format", "json"]).stdout)["status"], "completed");

    // A run under the same id with another log is refused.
    let refused = from.expect(0, &["approve", &waiting]);
    assert!(refused.stdout.contains("after"), "{}", refused.stdout);
    std::fs::write(to.dir.join("other.jsonl"), from.expect(0, &["export", &waiting]).stdout).expect("writes");
    let differs = to.expect(2, &["import", "other.jsonl"]);
    assert!(differs.stderr.contains("exists in this store with another log"), "{}", differs.stderr);
}

#[test]
fn a_bad_record_is_refused_with_its_line_and_nothing_is_imported() {
    let from = Bench::new("transfer_bad_from", &[("gate.yaml", GATE)]);
    let to = Bench::new("transfer_bad_to", &[]);
    let ran = from.expect(3, &["run", "gate.yaml", "--format", "json"]);
    let run = json(&ran.stdout)["run_id"].as_str().expect("an id").to_owned();
    let good = from.expect(0, &["export", &run]).stdout;
    let mut record = json(&good);
    let cases = [
        ("not json\n".to_owned(), "bad.jsonl: line 2: expected ident"),
        (
            {
                record["events"].as_array_mut().expect("events").remove(1);
                format!("{record}\n")
            },
            "bad.jsonl: line 2: run `",
        ),
        (
            {
                let mut later = json(&good);
                later["cairn_export"] = serde_json::json!(9);
                format!("{later}\n")
            },
            "bad.jsonl: line 2: the record's form is version 9, newer than the 1 this binary reads",
        ),
        (
            {
                let mut extra = json(&good);
                extra["colour"] = serde_json::json!("red");
                format!("{extra}\n")
            },
            "bad.jsonl: line 2: unknown field `colour`",
        ),
    ];
    for (second, expected) in cases {
        std::fs::write(to.dir.join("bad.jsonl"), format!("{good}{second}")).expect("writes");
        let refused = to.expect(2, &["import", "bad.jsonl"]);
        assert!(refused.stderr.contains(expected), "wanted {expected}\n{}", refused.stderr);
        let listed = json(&to.expect(0, &["runs", "--format", "json"]).stdout);
        assert_eq!(listed, serde_json::json!([]), "the good line before it is not imported either");
    }
    let missing = to.expect(2, &["import", "nowhere.jsonl"]);
    assert!(missing.stderr.contains("nowhere.jsonl: No such file"), "{}", missing.stderr);
    let unknown = from.expect(2, &["export", "no-such-run"]);
    assert!(unknown.stderr.contains("no run `no-such-run`"), "{}", unknown.stderr);
    let neither = from.cairn(&["export"]);
    assert_eq!(neither.code, 2, "{}", neither.stderr);
}
