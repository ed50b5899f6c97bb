//! The verbs on runs through the binary, each checked by what it prints
//! (ids, statuses, JSON fields) and what the store holds afterwards:
//! `run --inputs`, `runs --status/--workflow`, `resume`, `approve`/`reject
//! --by`, `answer --gate`, `checkpoints`, `fork` and `prune`.

use std::path::Path;

use crate::support::{Bench, json, run_ids};

/// Three steps in a row, no model: completes.
const ALPHA: &str = "cairn: 1\nid: alpha\nsteps:\n  - id: first\n    set: one\n  - id: second\n    set: two\n  - id: third\n    set: three\n";

/// An approval between two steps: waits for `lead`.
const BETA: &str = "cairn: 1\nid: beta\nsteps:\n  - id: draft\n    set: hello\n  - id: sign\n    approval:\n      message: \"Sign {{ steps.draft.output }}?\"\n      approvers: [lead]\n  - id: after\n    set: done\n";

/// An agent that asks a question first (on the mock), then a step after it.
const ASKS: &str = "cairn: 1\nid: asks\nagents:\n  w: { system: Be brief. }\nsteps:\n  - id: ask\n    agent: w\n    prompt: What should we build?\n    clarify: true\n  - id: after\n    set: \"{{ steps.ask.output }}\"\n";

/// Typed inputs, echoed back by one step.
const INPUTS: &str = "cairn: 1\nid: typed\ninputs:\n  name: { type: string, required: true }\n  n: { type: integer, default: 1 }\n  tags: { type: array, default: [] }\nsteps:\n  - id: echo\n    set: { name: \"{{ inputs.name }}\", n: \"{{ inputs.n }}\" }\n";

/// The workflows every test here starts from.
const FILES: &[(&str, &str)] =
    &[("alpha.yaml", ALPHA), ("beta.yaml", BETA), ("asks.yaml", ASKS), ("typed.yaml", INPUTS)];

impl Bench {
    /// The ids `runs ARGS --format json` lists.
    fn ids(&self, args: &[&str]) -> Vec<String> {
        let mut all = vec!["runs"];
        all.extend_from_slice(args);
        all.extend(["--format", "json"]);
        run_ids(&self.expect(0, &all).stdout)
    }

    /// `status RUN --format json`.
    fn status(&self, run: &str) -> serde_json::Value {
        json(&self.expect(0, &["status", run, "--format", "json"]).stdout)
    }

    /// `events RUN --format jsonl`, parsed.
    fn events(&self, run: &str) -> Vec<serde_json::Value> {
        self.expect(0, &["events", run, "--format", "jsonl"]).stdout.lines().map(json).collect()
    }
}

fn write(dir: &Path, name: &str, text: &str) {
    std::fs::write(dir.join(name), text).expect("write");
}

#[test]
fn run_reads_inputs_from_a_yaml_or_json_file_and_input_overrides_it() {
    let b = Bench::new("verbs_inputs", FILES);
    write(&b.dir, "in.yaml", "name: from-yaml\nn: 3\ntags: [x, y]\n");
    write(&b.dir, "in.json", "{\"name\": \"from-json\", \"n\": 4}");
    let inputs = |args: &[&str]| {
        let mut all = vec!["run", "typed.yaml", "--format", "json"];
        all.extend_from_slice(args);
        json(&b.expect(0, &all).stdout)["inputs"].clone()
    };
    assert_eq!(
        inputs(&["--inputs", "in.yaml"]),
        serde_json::json!({"name": "from-yaml", "n": 3, "tags": ["x", "y"]})
    );
    assert_eq!(
        inputs(&["--inputs", "in.json"]),
        serde_json::json!({"name": "from-json", "n": 4, "tags": []})
    );
    assert_eq!(
        inputs(&["--inputs", "in.yaml", "--input", "name=over", "--input", "n=9"]),
        serde_json::json!({"name": "over", "n": 9, "tags": ["x", "y"]}),
        "--input overrides the file"
    );
    assert_eq!(
        inputs(&["--input", "name=first", "--inputs", "in.json"]),
        serde_json::json!({"name": "first", "n": 4, "tags": []}),
        "whatever the order on the line"
    );
    // What the step saw is what the file said.
    let run = json(&b.expect(0, &["run", "typed.yaml", "--inputs", "in.yaml", "--format", "json"]).stdout);
    assert_eq!(run["steps"][0]["output"]["name"], "from-yaml");
    // A file input is checked like any other, before a run exists.
    write(&b.dir, "bad.yaml", "name: x\nnme: y\n");
    write(&b.dir, "list.json", "[1, 2]");
    let before = b.ids(&[]).len();
    for file in ["bad.yaml", "list.json", "missing.yaml"] {
        let run = b.expect(2, &["run", "typed.yaml", "--inputs", file]);
        assert!(run.stderr.contains("error:"), "{file}: {}", run.stderr);
    }
    assert!(b.expect(2, &["run", "typed.yaml", "--inputs", "missing.yaml"]).stderr.contains("missing.yaml"));
    assert_eq!(b.ids(&[]).len(), before, "no run was created by a refused start");
}

#[test]
fn runs_carry_labels_from_the_definition_and_the_flags_and_filter_by_them() {
    let b = Bench::new("verbs_labels", FILES);
    write(
        &b.dir,
        "labelled.yaml",
        &ALPHA.replace("id: alpha\n", "id: labelled\nlabels: { team: payments, tier: 2 }\n"),
    );
    b.expect(0, &["run", "labelled.yaml", "--run-id", "l1"]);
    b.expect(0, &["run", "labelled.yaml", "--run-id", "l2", "--label", "team=search", "--label", "pr=42"]);
    b.expect(0, &["run", "alpha.yaml", "--run-id", "a1", "--label", "pr=42"]);
    assert_eq!(b.status("l1")["labels"], serde_json::json!({"team": "payments", "tier": "2"}));
    assert_eq!(
        b.status("l2")["labels"],
        serde_json::json!({"pr": "42", "team": "search", "tier": "2"}),
        "a flag wins over the definition"
    );
    assert_eq!(b.status("a1")["labels"], serde_json::json!({"pr": "42"}));
    assert_eq!(b.ids(&["--label", "pr=42"]), ["a1", "l2"]);
    assert_eq!(b.ids(&["--label", "tier=2"]), ["l2", "l1"]);
    assert_eq!(b.ids(&["--label", "tier=2", "--label", "team=payments"]), ["l1"]);
    assert_eq!(b.ids(&["--label", "team=nobody"]), Vec::<String>::new());
    let listed = json(&b.expect(0, &["runs", "--label", "pr=42", "--format", "json"]).stdout);
    assert_eq!(listed[0]["labels"], serde_json::json!({"pr": "42"}));
    let table = b.expect(0, &["runs"]).stdout;
    assert!(table.lines().next().is_some_and(|head| head.trim_end().ends_with("LABELS")), "{table}");
    assert!(table.contains("pr=42 team=search tier=2"), "{table}");
    // A fork carries its source's labels.
    let marks = json(&b.expect(0, &["checkpoints", "l2", "--format", "json"]).stdout);
    let seq = marks[0]["seq"].as_u64().expect("a checkpoint").to_string();
    let forked = json(&b.expect(0, &["fork", "l2", "--checkpoint", &seq, "--format", "json"]).stdout);
    assert_eq!(forked["labels"]["team"], "search");
    // Bad labels are refused before a run exists, saying what is wrong.
    let before = b.ids(&[]).len();
    for (flag, says) in [
        ("team", "--label: `team` is not a label: write KEY=VALUE"),
        ("has space=x", "--label: `has space` is not a valid label key"),
        ("k=line\nbreak", "--label: the value of label `k` must be at most 256 bytes"),
    ] {
        let run = b.expect(2, &["run", "alpha.yaml", "--label", flag]);
        assert!(run.stderr.contains(says), "{flag}: {}", run.stderr);
        let listing = b.expect(2, &["runs", "--label", flag]);
        assert!(listing.stderr.contains(says), "{flag}: {}", listing.stderr);
    }
    assert_eq!(b.ids(&[]).len(), before, "no run was created by a refused start");
}

#[test]
fn runs_filters_by_status_and_workflow() {
    let b = Bench::new("verbs_runs_filters", FILES);
    b.expect(0, &["run", "alpha.yaml", "--run-id", "a1"]);
    b.expect(3, &["run", "beta.yaml", "--run-id", "b1", "--non-interactive"]);
    b.expect(0, &["run", "alpha.yaml", "--run-id", "a2"]);
    assert_eq!(b.ids(&[]), ["a2", "b1", "a1"], "newest first");
    assert_eq!(b.ids(&["--status", "completed"]), ["a2", "a1"]);
    assert_eq!(b.ids(&["--status", "waiting_approval"]), ["b1"]);
    assert_eq!(b.ids(&["--status", "failed"]), Vec::<String>::new());
    assert_eq!(b.ids(&["--workflow", "beta"]), ["b1"]);
    assert_eq!(b.ids(&["--workflow", "alpha"]), ["a2", "a1"]);
    assert_eq!(b.ids(&["--workflow", "nope"]), Vec::<String>::new());
    assert_eq!(b.ids(&["--workflow", "alpha", "--status", "waiting_approval"]), Vec::<String>::new());
    assert_eq!(b.ids(&["--workflow", "beta", "--status", "waiting_approval"]), ["b1"]);
    let listed = json(&b.expect(0, &["runs", "--format", "json"]).stdout);
    for run in listed.as_array().expect("array") {
        for field in ["run_id", "workflow", "status", "created_at", "updated_at", "usage"] {
            assert!(run.get(field).is_some(), "{field} in {run}");
        }
    }

    // The table says the same: a line per run, with its workflow and status.
    let table = b.expect(0, &["runs"]).stdout;
    let line_of = |table: &str, id: &str| {
        table.lines().find(|l| l.split_whitespace().any(|w| w == id)).map(str::to_owned)
    };
    for (id, workflow, status) in
        [("a1", "alpha", "completed"), ("b1", "beta", "waiting"), ("a2", "alpha", "completed")]
    {
        let line = line_of(&table, id).unwrap_or_else(|| panic!("{id} listed:\n{table}"));
        assert!(line.contains(workflow) && line.contains(status), "{line}");
    }
    let positions: Vec<usize> = ["a2", "b1", "a1"]
        .iter()
        .map(|id| table.lines().position(|l| l.split_whitespace().any(|w| w == *id)).expect("listed"))
        .collect();
    assert!(positions.windows(2).all(|w| w[0] < w[1]), "newest first:\n{table}");
    let completed = b.expect(0, &["runs", "--status", "completed"]).stdout;
    assert!(line_of(&completed, "a1").is_some() && line_of(&completed, "a2").is_some(), "{completed}");
    assert!(line_of(&completed, "b1").is_none(), "{completed}");
    let beta = b.expect(0, &["runs", "--workflow", "beta"]).stdout;
    assert!(line_of(&beta, "b1").is_some() && line_of(&beta, "a1").is_none(), "{beta}");
}

#[test]
fn approve_and_reject_record_who_decided_with_by() {
    let b = Bench::new("verbs_by", FILES);
    b.expect(3, &["run", "beta.yaml", "--run-id", "yes", "--non-interactive"]);
    b.expect(3, &["run", "beta.yaml", "--run-id", "no", "--non-interactive"]);
    let approved = b.expect(0, &["approve", "yes", "--as", "lead", "--by", "bob", "--format", "json"]);
    assert_eq!(json(&approved.stdout)["status"], "completed");
    let rejected = b.expect(1, &["reject", "no", "--as", "lead", "--by", "alice", "--comment", "not yet"]);
    assert!(rejected.stdout.contains("no"), "{}", rejected.stdout);
    assert_eq!(b.status("no")["status"], "failed");
    let decision = |run: &str| {
        let events = b.events(run);
        let decided: Vec<serde_json::Value> =
            events.into_iter().filter(|e| e["type"] == "gate_decided").collect();
        assert_eq!(decided.len(), 1, "{decided:?}");
        decided.into_iter().next().expect("one")
    };
    let yes = decision("yes");
    assert_eq!((&yes["actor"], &yes["approve"], &yes["role"]), (&"bob".into(), &true.into(), &"lead".into()));
    let no = decision("no");
    assert_eq!(
        (&no["actor"], &no["approve"], &no["comment"]),
        (&"alice".into(), &false.into(), &"not yet".into())
    );
    // Without --by, the OS user decides.
    b.expect(3, &["run", "beta.yaml", "--run-id", "me", "--non-interactive"]);
    b.expect(0, &["approve", "me", "--as", "lead"]);
    assert_eq!(decision("me")["actor"], "tester");
}

#[test]
fn answer_names_the_gate_and_prints_the_run_as_json() {
    let b = Bench::new("verbs_answer", FILES);
    let waiting = json(&b.expect(3, &["run", "asks.yaml", "--run-id", "q1", "--format", "json"]).stdout);
    assert_eq!(waiting["status"], "waiting_clarification");
    assert_eq!(
        (&waiting["waiting"]["gate"], &waiting["waiting"]["kind"]),
        (&"ask".into(), &"clarification".into())
    );
    let wrong = b.expect(2, &["answer", "q1", "--gate", "after", "--text", "a list app"]);
    assert!(wrong.stderr.contains("after"), "{}", wrong.stderr);
    let answered = b.expect(
        0,
        &["answer", "q1", "--gate", "ask", "--text", "a list app", "--by", "dana", "--format", "json"],
    );
    let run = json(&answered.stdout);
    assert_eq!((&run["run_id"], &run["status"]), (&"q1".into(), &"completed".into()));
    assert_eq!(run["waiting"], serde_json::Value::Null);
    assert!(run["steps"].as_array().expect("steps").iter().all(|s| s["status"] == "succeeded"), "{run}");
    let answers: Vec<serde_json::Value> =
        b.events("q1").into_iter().filter(|e| e["type"] == "answered").collect();
    assert_eq!(answers.len(), 1);
    assert_eq!((&answers[0]["actor"], &answers[0]["path"]), (&"dana".into(), &"ask".into()));
    assert!(answers[0].to_string().contains("a list app"), "{}", answers[0]);
}

#[test]
fn checkpoints_are_listed_as_a_table_and_json_and_fork_prints_the_new_run() {
    let b = Bench::new("verbs_checkpoints", FILES);
    b.expect(0, &["run", "alpha.yaml", "--run-id", "src"]);
    let list = json(&b.expect(0, &["checkpoints", "src", "--format", "json"]).stdout);
    let list = list.as_array().expect("array").clone();
    let labels: Vec<&str> = list.iter().filter_map(|c| c["label"].as_str()).collect();
    assert_eq!(labels, ["after first (succeeded)", "after second (succeeded)", "after third (succeeded)"]);
    for c in &list {
        assert!(c["seq"].is_u64() && c["at"].is_string() && c["size_bytes"].is_u64(), "{c}");
    }
    // The table has a line per checkpoint, oldest first, with its number and step.
    let table = b.expect(0, &["checkpoints", "src"]).stdout;
    let mut last = 0;
    for (c, step) in list.iter().zip(["first", "second", "third"]) {
        let seq = c["seq"].as_u64().expect("seq").to_string();
        let at = table
            .lines()
            .position(|l| {
                let words: Vec<&str> = l.split_whitespace().collect();
                words.contains(&seq.as_str()) && l.contains(step)
            })
            .unwrap_or_else(|| panic!("checkpoint {seq} after {step} in:\n{table}"));
        assert!(at >= last, "oldest first:\n{table}");
        last = at;
    }

    // A fork from the first checkpoint: the new run as JSON, paused, with
    // only the first step done.
    let seq = list[0]["seq"].as_u64().expect("seq").to_string();
    let forked = b.expect(0, &["fork", "src", "--checkpoint", &seq, "--format", "json"]);
    let fork = json(&forked.stdout);
    let id = fork["run_id"].as_str().expect("the new run's id").to_owned();
    assert_ne!(id, "src");
    assert_eq!((&fork["workflow"], &fork["status"]), (&"alpha".into(), &"paused".into()));
    let statuses: Vec<&str> =
        fork["steps"].as_array().expect("steps").iter().filter_map(|s| s["status"].as_str()).collect();
    assert_eq!(statuses, ["succeeded", "pending", "pending"]);
    assert_eq!(b.status(&id)["status"], "paused", "what fork printed is what the store holds");
    assert_eq!(b.ids(&[]).len(), 2);

    // `resume --format json` drives it on and prints one document.
    let resumed = b.expect(0, &["resume", &id, "--format", "json"]);
    let run = json(&resumed.stdout);
    assert_eq!((&run["run_id"], &run["status"]), (&id.as_str().into(), &"completed".into()));
    assert!(!resumed.stderr.contains("▸ first") && resumed.stderr.contains("▸ second"), "{}", resumed.stderr);
    let outputs: Vec<&str> =
        run["steps"].as_array().expect("steps").iter().filter_map(|s| s["output"].as_str()).collect();
    assert_eq!(outputs, ["one", "two", "three"]);
}

#[test]
fn resume_prints_json_of_a_run_a_decision_left_waiting() {
    if crate::support::skip_when_served(
        "a server drives a run on as soon as a decision lets it: `--detach` leaves it waiting only without one",
    ) {
        return;
    }
    let b = Bench::new("verbs_resume_json", FILES);
    b.expect(3, &["run", "beta.yaml", "--run-id", "w1", "--non-interactive"]);
    let detached =
        json(&b.expect(0, &["approve", "w1", "--as", "lead", "--detach", "--format", "json"]).stdout);
    assert_eq!(detached["steps"][2]["status"], "pending", "not driven on");
    let resumed = json(&b.expect(0, &["resume", "w1", "--format", "json"]).stdout);
    assert_eq!((&resumed["run_id"], &resumed["status"]), (&"w1".into(), &"completed".into()));
    assert_eq!(resumed["steps"][2]["output"], "done");
}

#[test]
fn prune_deletes_ended_runs_and_keeps_the_ones_still_going() {
    let b = Bench::new("verbs_prune", FILES);
    b.expect(0, &["run", "alpha.yaml", "--run-id", "ended"]);
    b.expect(3, &["run", "beta.yaml", "--run-id", "waiting", "--non-interactive"]);
    b.expect(3, &["run", "beta.yaml", "--run-id", "refused", "--non-interactive"]);
    b.expect(1, &["reject", "refused", "--as", "lead"]);
    let list = json(&b.expect(0, &["checkpoints", "ended", "--format", "json"]).stdout);
    let seq = list[0]["seq"].as_u64().expect("seq").to_string();
    let paused = b.expect(0, &["fork", "ended", "--checkpoint", &seq]).stdout.trim().to_owned();
    assert_eq!(b.status(&paused)["status"], "paused");
    // Every run was last updated before now.
    std::thread::sleep(std::time::Duration::from_millis(20));
    let dry = b.expect(0, &["prune", "--older-than", "0s", "--dry-run"]);
    let named: Vec<&str> = ["ended", "waiting", "refused", paused.as_str()]
        .into_iter()
        .filter(|id| dry.stdout.lines().any(|l| l.split_whitespace().next() == Some(id)))
        .collect();
    assert_eq!(named, ["ended", "refused"], "{}", dry.stdout);
    assert_eq!(b.ids(&[]).len(), 4, "a dry run deletes nothing");
    b.expect(0, &["prune", "--older-than", "0s"]);
    let mut left = b.ids(&[]);
    left.sort();
    let mut expected = vec!["waiting".to_owned(), paused.clone()];
    expected.sort();
    assert_eq!(left, expected, "the waiting and the paused run are kept");
    b.expect(2, &["status", "ended"]);
    // The kept run still goes on.
    b.expect(0, &["approve", "waiting", "--as", "lead"]);
}
