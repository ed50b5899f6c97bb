//! Sub-workflows: a `workflow:` step runs another workflow as a child run
//! with its own events and gates, linked both ways; the child's outputs
//! are the step's output, its failure the step's, and cancelling or timing
//! out the parent cancels the child. Recursion the files do not show is
//! stopped by the depth limit.

mod support;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use cairn_domain::Definition;
use cairn_domain::event::Parent;
use cairn_domain::id::{RunId, WorkflowId};
use cairn_domain::state::{ErrorClass, RunState, RunStatus, StepPath, StepStatus, WaitKind};
use cairn_domain::steer::{GateCall, Refusal, Request, Verdict};
use cairn_engine::{EngineError, MemoryStore};
use cairn_ports::{RunStore, WorkflowStore, WorkflowVersion};
use cairn_testkit::event_line;
use serde_json::json;
use support::{Harness, run_id};

const CHILD: &str = r#"cairn: 1
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

const PARENT: &str = r#"cairn: 1
id: intake
inputs:
  text: { type: string }
steps:
  - id: triage
    workflow: sub/triage.yaml
    with: { ticket: "{{ inputs.text }}" }
  - id: after
    needs: triage
    set: "{{ steps.triage.output.label }}"
"#;

/// The parent, loaded as from disk with the child file beside it.
fn parent(text: &str) -> Definition {
    let mut disk = |rel: &str| match rel {
        "sub/triage.yaml" => Ok(CHILD.to_owned()),
        other => Err(format!("no file `{other}`")),
    };
    Definition::from_source("intake.yaml", text.as_bytes(), &mut disk).expect("valid")
}

fn step(state: &RunState, path: &str) -> cairn_domain::state::StepState {
    state.steps.get(&StepPath::new(path)).cloned().expect("the step has a state")
}

async fn log(store: &MemoryStore, run: &RunId) -> String {
    let events = store.load(run, 0).await.expect("stored").events;
    events.iter().map(event_line).collect::<Vec<_>>().join("\n")
}

fn approve(gate: Option<&str>) -> GateCall {
    GateCall { gate: gate.map(str::to_owned), verdict: Verdict::Approve, role: None, comment: None }
}

#[tokio::test(start_paused = true)]
async fn a_child_run_holds_its_step_at_its_gate_and_its_outputs_are_the_steps_output() {
    let h = Harness::new();
    let engine = h.builder(Duration::ZERO).build();
    let waiting = engine.run(parent(PARENT), json!({"text": "T-7"}), run_id()).await.expect("runs");
    assert_eq!(waiting.status, RunStatus::WaitingApproval, "the parent waits as its child does");
    let triage = step(&waiting, "triage");
    assert_eq!(
        (triage.status, triage.wait, triage.waits_on_child),
        (StepStatus::Waiting, Some(WaitKind::Approval), true)
    );
    let child_id = triage.child.expect("the step names its child");

    let child = engine.load(&child_id).await.expect("the child is a run of its own");
    assert_eq!(child.status, RunStatus::WaitingApproval);
    assert_eq!(child.workflow.as_str(), "triage");
    let back = Parent { run_id: run_id(), checkpoint: None, step: Some(StepPath::new("triage")), depth: 1 };
    assert_eq!(child.parent, Some(back), "the child names its parent and step");

    // The gate is the child's: the parent refuses a decision and says where.
    let refused =
        engine.decide_gate(&run_id(), approve(None), "eve").await.expect_err("not the parent's gate");
    assert!(
        matches!(&refused, EngineError::Refused { refusal: Refusal::InChild { child, .. }, .. } if *child == child_id),
        "{refused:?}"
    );
    engine.decide_gate(&child_id, approve(None), "eve").await.expect("decided on the child");
    assert_eq!(engine.resume(&child_id).await.expect("the child goes on").status, RunStatus::Completed);

    let done = engine.resume(&run_id()).await.expect("the parent goes on");
    assert_eq!(done.status, RunStatus::Completed);
    assert_eq!(
        step(&done, "triage").output,
        Some(
            json!({"label": "T-7-triaged", "review": {"approved": true, "approved_by": [{"by": "eve", "role": null, "comment": null}]}})
        )
    );
    assert_eq!(step(&done, "after").output, Some(json!("T-7-triaged")));
    insta::assert_snapshot!("parent_log", log(&h.store, &run_id()).await);
}

#[tokio::test(start_paused = true)]
async fn a_failed_child_fails_its_step_with_the_childs_error_and_class() {
    let failing =
        CHILD.replace("approval: { message: \"Is {{ steps.label.output }} right?\" }", "uses: missing");
    let mut disk = |rel: &str| match rel {
        "sub/triage.yaml" => Ok(failing.clone()),
        other => Err(format!("no file `{other}`")),
    };
    let definition = Definition::from_source("intake.yaml", PARENT.as_bytes(), &mut disk).expect("valid");
    let h = Harness::new();
    // The host has no handler `missing`: the child cannot start, and the step says so.
    let engine = h.builder(Duration::ZERO).build();
    let failed = engine.run(definition, json!({"text": "T-8"}), run_id()).await;
    let state = failed.expect("the parent runs");
    assert_eq!(state.status, RunStatus::Failed);
    let error = step(&state, "triage").error.expect("an error");
    assert_eq!(error.class, ErrorClass::Fatal);
    assert!(
        error.message.starts_with("the sub-workflow `sub/triage.yaml` could not start: "),
        "{}",
        error.message
    );
    assert!(error.message.contains("missing"), "{}", error.message);
}

/// A child whose model call takes a minute, under a parent that allows 5 s.
const SLOW_CHILD: &str =
    "cairn: 1\nid: slow\nagents: { w: {} }\nsteps:\n  - id: think\n    agent: w\n    prompt: hi\n";

#[tokio::test(start_paused = true)]
async fn a_parent_past_its_timeout_cancels_the_child_in_flight() {
    let text = "cairn: 1\nid: hurried\ntimeout: 5s\nsteps:\n  - id: slow\n    workflow: slow.yaml\n";
    let mut disk = |rel: &str| match rel {
        "slow.yaml" => Ok(SLOW_CHILD.to_owned()),
        other => Err(format!("no file `{other}`")),
    };
    let definition = Definition::from_source("hurried.yaml", text.as_bytes(), &mut disk).expect("valid");
    let h = Harness::new();
    let engine = h.builder(Duration::from_secs(60)).build();
    let state = engine.run(definition, json!({}), run_id()).await.expect("runs");
    assert_eq!(state.status, RunStatus::Failed);
    assert_eq!(state.error.as_ref().map(|e| e.class), Some(ErrorClass::Timeout));
    let child_id = step(&state, "slow").child.expect("started");
    let child = engine.load(&child_id).await.expect("stored");
    assert_eq!(child.status, RunStatus::Cancelled, "the child stopped with its parent");
    assert_eq!(step(&child, "think").status, StepStatus::Cancelled);
}

#[tokio::test(start_paused = true)]
async fn cancelling_a_parent_that_waits_on_its_child_cancels_the_child() {
    let h = Harness::new();
    let engine = h.builder(Duration::ZERO).build();
    let waiting = engine.run(parent(PARENT), json!({"text": "T-9"}), run_id()).await.expect("runs");
    let child_id = step(&waiting, "triage").child.expect("started");
    let cancelled = engine.stop(&run_id(), Request::Cancel, "eve").await.expect("cancelled");
    assert_eq!(cancelled.status, RunStatus::Cancelled);
    let child = engine.load(&child_id).await.expect("stored");
    assert_eq!(child.status, RunStatus::Cancelled);
    let events = h.store.load(&child_id, 0).await.expect("stored").events;
    assert_eq!(events.last().map(|e| e.actor.as_str()), Some("eve"), "cancelled as the person who asked");
}

/// Two registered workflows that call each other: no file shows the
/// loop, so the run stops it at the depth limit.
#[tokio::test(start_paused = true)]
async fn a_recursion_through_the_catalog_stops_at_the_depth_limit() {
    let h = Harness::new();
    let ping = "cairn: 1\nid: ping\nsteps:\n  - id: call\n    workflow: pong\n";
    let pong = "cairn: 1\nid: pong\nsteps:\n  - id: call\n    workflow: ping\n";
    for (id, text) in [("ping", ping), ("pong", pong)] {
        let version = WorkflowVersion {
            workflow: WorkflowId::new(id).expect("id"),
            version: "1".into(),
            number: 0,
            definition_name: format!("{id}.yaml"),
            definition: text.into(),
            files: BTreeMap::new(),
            hash: id.into(),
            registered_at: cairn_domain::state::Timestamp(0),
            registered_by: "tess".into(),
        };
        h.store.register(version).await.expect("registered");
    }
    let catalog: Arc<dyn WorkflowStore> = h.store.clone();
    let engine = h.builder(Duration::ZERO).workflows(catalog).build();
    let state = engine.run(support::definition(ping), json!({}), run_id()).await.expect("runs");
    assert_eq!(state.status, RunStatus::Failed);
    // Down the chain to the deepest child, each failing with the one below.
    let mut depth = 0;
    let mut run = state;
    while let Some(child) = step(&run, "call").child {
        run = engine.load(&child).await.expect("stored");
        depth += 1;
    }
    assert_eq!(depth, cairn_domain::limits::MAX_CALL_DEPTH, "one run at each level");
    let error = step(&run, "call").error.expect("the deepest step failed");
    assert_eq!(error.message, "sub-workflows nest deeper than 8 levels: `pong` is not started");
}
