//! Sub-workflows through the binary: a `workflow:` step runs another
//! workflow as a child run with its own events and gates, linked both
//! ways; its gate is decided on the child, which drives the parent on;
//! `status` shows the child under its step; cancelling the parent cancels
//! the child; recursion is refused before anything runs. Also through a
//! server (`CAIRN_E2E_SERVED`), where each verb goes through the API.

use crate::support::{Bench, json, redact_times};

const TRIAGE: &str = r#"cairn: 1
id: triage
inputs:
  ticket: { type: string }
steps:
  - id: label
    set: "{{ inputs.ticket }}-triaged"
  - id: review
    needs: label
    approval: { message: "Is {{ steps.label.output }} right?" }
"#;

const INTAKE: &str = r#"cairn: 1
id: intake
inputs:
  text: { type: string }
steps:
  - id: triage
    workflow: triage.yaml
    with: { ticket: "{{ inputs.text }}" }
  - id: after
    needs: triage
    set: "filed as {{ steps.triage.output.label }}"
"#;

/// Two files that call each other.
const LOOP_A: &str = "cairn: 1\nid: loop-a\nsteps:\n  - id: b\n    workflow: loop-b.yaml\n";
const LOOP_B: &str = "cairn: 1\nid: loop-b\nsteps:\n  - id: a\n    workflow: loop-a.yaml\n";
/// Two registered workflows that call each other by id.
const PING: &str = "cairn: 1\nid: ping\nsteps:\n  - id: call\n    workflow: pong\n";
const PONG: &str = "cairn: 1\nid: pong\nsteps:\n  - id: call\n    workflow: ping\n";

const FILES: &[(&str, &str)] = &[
    ("triage.yaml", TRIAGE),
    ("intake.yaml", INTAKE),
    ("loop-a.yaml", LOOP_A),
    ("loop-b.yaml", LOOP_B),
    ("ping.yaml", PING),
    ("pong.yaml", PONG),
];

/// The run's JSON once its status is `want`: through a server the parent
/// goes on in its own turn, after the child's drive.
fn settled(b: &Bench, run: &str, want: &str) -> serde_json::Value {
    for _ in 0..200 {
        let shown = json(&b.expect(0, &["status", run, "--format", "json"]).stdout);
        if shown["status"] == want {
            return shown;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    panic!("run {run} never became {want}");
}

#[test]
fn a_child_run_holds_its_parent_at_its_gate_is_decided_there_and_drives_the_parent_on() {
    let b = Bench::new("subworkflow_gate", FILES);
    let started =
        b.cairn(&["run", "intake.yaml", "--run-id", "intake-1", "--input", "text=T-7", "--format", "json"]);
    assert_eq!(started.code, 3, "the parent waits as its child does: {}{}", started.stdout, started.stderr);
    let parent = json(&started.stdout);
    assert_eq!(parent["status"], "waiting_approval");
    let child = parent["steps"][0]["child"].as_str().expect("the step names its child").to_owned();
    assert!(child.starts_with("intake-1-"), "{child}");
    assert_eq!(parent["waiting"]["child"], child.as_str(), "the gate is the child's");

    let shown = json(&b.expect(0, &["status", &child, "--format", "json"]).stdout);
    assert_eq!(shown["workflow"], "triage");
    assert_eq!(shown["parent"], serde_json::json!({"run_id": "intake-1", "step": "triage", "depth": 1}));
    let listed = json(&b.expect(0, &["runs", "--parent", "intake-1", "--format", "json"]).stdout);
    assert_eq!(listed[0]["run_id"], child.as_str(), "the parent's children are listed by it");

    let mut transcript = String::new();
    for args in [&["approve", "intake-1"][..], &["status", "intake-1"]] {
        let run = b.cairn(args);
        let text = format!("$ cairn {}\n[exit {}]\n{}{}\n", args.join(" "), run.code, run.stdout, run.stderr);
        transcript += &redact_times(&text).replace(&child, "<child>");
    }
    insta::assert_snapshot!("subworkflow_waiting_transcript", transcript);

    b.expect(0, &["approve", &child, "--format", "json"]);
    let done = settled(&b, "intake-1", "completed");
    assert_eq!(
        done["steps"][1]["output"], "filed as T-7-triaged",
        "the child's outputs are the step's output"
    );
    assert_eq!(done["steps"][0]["output"]["label"], "T-7-triaged");
}

#[test]
fn cancelling_a_parent_cancels_its_child() {
    let b = Bench::new("subworkflow_cancel", FILES);
    b.expect(3, &["run", "intake.yaml", "--run-id", "intake-2", "--input", "text=T-8"]);
    let parent = json(&b.expect(0, &["status", "intake-2", "--format", "json"]).stdout);
    let child = parent["steps"][0]["child"].as_str().expect("started").to_owned();
    b.expect(4, &["cancel", "intake-2"]);
    let shown = json(&b.expect(0, &["status", &child, "--format", "json"]).stdout);
    assert_eq!(shown["status"], "cancelled", "the child stopped with its parent");
}

#[test]
fn a_workflow_that_would_run_itself_is_refused_before_anything_runs() {
    let b = Bench::new("subworkflow_recursion", FILES);
    let mut transcript = String::new();
    for args in [
        &["validate", "loop-a.yaml"][..],
        &["workflows", "add", "ping.yaml"],
        &["run", "ping"],
        &["workflows", "add", "pong.yaml"],
    ] {
        let run = b.cairn(args);
        transcript +=
            &format!("$ cairn {}\n[exit {}]\n{}{}\n", args.join(" "), run.code, run.stdout, run.stderr);
    }
    insta::assert_snapshot!("subworkflow_recursion_transcript", transcript);
    let listed = json(&b.expect(0, &["runs", "--format", "json"]).stdout);
    assert_eq!(listed, serde_json::json!([]), "no run was started");
}
