//! A fork never goes past a gate: a run that meets every kind of gate
//! (answers, an acceptance with a rework, an approval by two roles, a spent
//! budget) is forked at each of its checkpoints, and each fork, driven on
//! with nobody deciding, stops at the first gate its copy had not passed.

mod support;

use std::collections::BTreeSet;
use std::time::Duration;

use cairn_domain::checkpoint::checkpoints;
use cairn_domain::id::RunId;
use cairn_domain::program::Price;
use cairn_domain::state::{Event, EventKind, RunState, RunStatus, StepPath, StepStatus};
use cairn_domain::steer::{GateCall, Verdict};
use cairn_engine::Engine;
use cairn_ports::RunStore;
use serde_json::json;
use support::{Harness, definition, run_id};

const GATES: &str = r#"cairn: 1
id: gates
agents:
  w: { system: You write. }
steps:
  - id: ask
    agent: w
    prompt: Plan it.
    clarify: true
  - id: draft
    agent: w
    prompt: "Draft it. {{ feedback }}"
    produces: draft
    accept: { approvers: [lead], on_reject: rework }
  - id: go
    approval: { message: "Ship {{ docs.draft }}?", approvers: [lead, owner] }
  - id: publish
    set: "{{ docs.draft }}"
"#;

/// A decision at a named gate.
fn call(gate: &str, verdict: Verdict, role: Option<&str>) -> GateCall {
    GateCall { gate: Some(gate.into()), verdict, role: role.map(str::to_owned), comment: Some("ok".into()) }
}

async fn events(h: &Harness, id: &RunId) -> Vec<Event> {
    h.store.load(id, 0).await.expect("stored").events
}

/// Whether `events` passed the gate of `step`: its answer, its acceptance,
/// or its approval's success.
fn passed(events: &[Event], step: &str) -> bool {
    events.iter().any(|e| match &e.kind {
        EventKind::Answered { path, .. } | EventKind::StepAccepted { path } => path.as_str() == step,
        EventKind::StepSucceeded { path, .. } => path.as_str() == step && step == "go",
        _ => false,
    })
}

/// Drives the fork at every checkpoint of `source`, with nobody deciding,
/// and says where one went past a gate its copy had not passed.
async fn forks_stop_at_gates(h: &Harness, engine: &Engine, source: &RunId, gates: &[&str]) -> Vec<String> {
    let log = events(h, source).await;
    let marks = checkpoints(&log);
    assert!(!marks.is_empty(), "the run has checkpoints");
    let mut skipped = Vec::new();
    for (n, mark) in marks.iter().enumerate() {
        let fork_id = RunId::new(format!("fork-{n}")).expect("id");
        engine.fork(source, mark.seq, fork_id.clone(), "bob").await.expect("a checkpoint forks");
        let copied: Vec<Event> = log.iter().take_while(|e| e.seq <= mark.seq).cloned().collect();
        let state: RunState = engine.resume(&fork_id).await.expect("the fork goes on");
        let driven = events(h, &fork_id).await;
        for gate in gates {
            let succeeded =
                state.steps.get(&StepPath::new(*gate)).is_some_and(|s| s.status == StepStatus::Succeeded);
            if succeeded && !passed(&driven, gate) {
                skipped.push(format!("fork at {} ({}) went past `{gate}` unasked", mark.seq, mark.label));
            }
            if passed(&driven, gate) && !passed(&copied, gate) {
                skipped.push(format!("fork at {} ({}) decided `{gate}` by itself", mark.seq, mark.label));
            }
        }
        if state.status == RunStatus::Failed {
            skipped.push(format!("fork at {} ({}) failed: {:?}", mark.seq, mark.label, state.error));
        }
    }
    skipped
}

#[tokio::test(start_paused = true)]
async fn a_fork_at_any_checkpoint_waits_at_every_gate_it_had_not_passed() {
    let h = Harness::new();
    let engine = h.builder(Duration::ZERO).build();
    let id = run_id();
    let state = engine.run(definition(GATES), json!({}), id.clone()).await.expect("runs");
    assert_eq!(state.status, RunStatus::WaitingClarification);
    let decisions = [
        (call("ask", Verdict::Answer("Keep it small.".into()), None), RunStatus::WaitingAcceptance),
        (call("draft", Verdict::Reject, Some("lead")), RunStatus::WaitingAcceptance),
        (call("draft", Verdict::Approve, Some("lead")), RunStatus::WaitingApproval),
        (call("go", Verdict::Approve, Some("lead")), RunStatus::WaitingApproval),
        (call("go", Verdict::Approve, Some("owner")), RunStatus::Completed),
    ];
    for (call, then) in decisions {
        engine.decide_gate(&id, call, "alice").await.expect("recorded");
        assert_eq!(engine.resume(&id).await.expect("goes on").status, then);
    }
    let skipped = forks_stop_at_gates(&h, &engine, &id, &["ask", "draft", "go"]).await;
    assert!(skipped.is_empty(), "{}", skipped.join("\n"));
    let labels: BTreeSet<String> = checkpoints(&events(&h, &id).await).into_iter().map(|c| c.label).collect();
    assert!(labels.contains("after draft (succeeded, waiting for acceptance)"), "{labels:?}");
    assert!(labels.contains("after draft (accepted)"), "{labels:?}");
}

const BUDGET: &str = r#"cairn: 1
id: budget
defaults: { budget_usd: 0.000001 }
agents:
  w: { system: You write. }
steps:
  - id: first
    agent: w
    prompt: One.
  - id: second
    agent: w
    prompt: Two.
"#;

#[tokio::test(start_paused = true)]
async fn a_spent_budget_checkpoints_after_the_block_it_records() {
    let h = Harness::new();
    // The mock's model at $1,000 per million tokens: the first call spends it.
    let prices = [("mock".to_owned(), Price { prompt: 1_000.0, completion: 1_000.0 })];
    let engine = h.builder(Duration::ZERO).prices(prices.into_iter().collect()).build();
    let id = run_id();
    let state = engine.run(definition(BUDGET), json!({}), id.clone()).await.expect("runs");
    assert_eq!(state.status, RunStatus::Blocked, "{:?}", state.steps);
    let last = checkpoints(&events(&h, &id).await).pop().map(|c| c.label);
    assert_eq!(last.as_deref(), Some("after second (failed, blocked)"));
}
