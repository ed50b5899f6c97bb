//! What a run records of itself through the engine: the workflow version
//! it started with (kept by a fork), and how its steps read once it has
//! ended: those that never started are skipped by a failure and cancelled
//! with the run, while a fork from before the end still runs them.

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use cairn_domain::checkpoint::checkpoints;
use cairn_domain::id::RunId;
use cairn_domain::state::{ErrorClass, EventKind, RunStatus, StepPath, StepStatus};
use cairn_domain::steer::Request;
use cairn_ports::{HandlerCall, PortError, RunStore, StepHandler};
use serde_json::{Value, json};
use support::{Harness, definition, run_id};

const VERSIONED: &str = "cairn: 1\nid: versioned\nversion: 2.1\nsteps:\n  - id: a\n    set: 1\n";

#[tokio::test(start_paused = true)]
async fn a_run_records_its_workflow_version_and_a_fork_keeps_it() {
    let h = Harness::new();
    let engine = h.builder(Duration::ZERO).build();
    let state = engine.run(definition(VERSIONED), json!({}), run_id()).await.expect("runs");
    assert_eq!(state.version.as_deref(), Some("2.1"), "a number is read as its text");
    let events = h.store.load(&run_id(), 0).await.expect("stored").events;
    assert!(
        matches!(&events[0].kind, EventKind::RunCreated { version: Some(v), .. } if v == "2.1"),
        "{:?}",
        events[0]
    );
    let at = checkpoints(&events)[0].seq;
    let forked = RunId::new("forked").expect("id");
    let fork = engine.fork(&run_id(), at, forked.clone(), "tess").await.expect("forks");
    assert_eq!(fork.version.as_deref(), Some("2.1"));
    assert_eq!(engine.load(&forked).await.expect("loads").version.as_deref(), Some("2.1"));

    let unversioned = "cairn: 1\nid: plain\nsteps:\n  - id: a\n    set: 1\n";
    let other = RunId::new("plain").expect("id");
    let state = engine.run(definition(unversioned), json!({}), other).await.expect("runs");
    assert_eq!(state.version, None);
}

/// Fails with class `fatal` on its first `fails` calls, then succeeds.
struct FailsFirst {
    calls: AtomicUsize,
    fails: usize,
}

#[async_trait]
impl StepHandler for FailsFirst {
    async fn call(&self, call: HandlerCall) -> Result<Value, PortError> {
        let n = self.calls.fetch_add(1, Ordering::SeqCst) + 1;
        if n <= self.fails {
            return Err(PortError::new(ErrorClass::Fatal, format!("broken on call {n}")));
        }
        Ok(json!(call.path.as_str()))
    }
}

/// `b` fails, goes back to `a` once (so `c`, which needs it, has a state
/// and is pending again), fails again and stops the run.
const SENT_BACK: &str = r#"cairn: 1
id: sent-back
steps:
  - id: a
    set: 1
  - id: b
    uses: flaky
    on_failure: { goto: a, max: 1, then: stop }
  - id: c
    set: 2
"#;

fn statuses(state: &cairn_domain::state::RunState) -> Vec<(String, StepStatus)> {
    state.steps.iter().map(|(p, s)| (p.to_string(), s.status)).collect()
}

#[tokio::test(start_paused = true)]
async fn steps_that_never_started_read_skipped_in_a_failed_run_and_a_fork_runs_them() {
    let h = Harness::new();
    let flaky = Arc::new(FailsFirst { calls: AtomicUsize::new(0), fails: 2 });
    let engine = h.builder(Duration::ZERO).handler("flaky", flaky.clone()).build();
    let failed = engine.run(definition(SENT_BACK), json!({}), run_id()).await.expect("runs");
    assert_eq!(failed.status, RunStatus::Failed);
    let skipped = [
        ("a".to_owned(), StepStatus::Succeeded),
        ("b".to_owned(), StepStatus::Failed),
        ("c".to_owned(), StepStatus::Skipped),
    ];
    assert_eq!(statuses(&failed), skipped, "`c` was sent back by the goto and never ran again");
    assert_eq!(failed.unstarted_status(), StepStatus::Skipped, "so would a step with no event");
    assert_eq!(engine.load(&run_id()).await.expect("loads"), failed, "the stored log folds the same");

    // Forked after `a` ran again, `b` and `c` are pending: resuming runs them.
    let events = h.store.load(&run_id(), 0).await.expect("stored").events;
    let after_a = checkpoints(&events)[2].seq;
    assert!(checkpoints(&events)[2].label.contains("after a"), "{:?}", checkpoints(&events)[2]);
    let fork = RunId::new("fork").expect("id");
    let paused = engine.fork(&run_id(), after_a, fork.clone(), "tess").await.expect("forks");
    assert_eq!(paused.steps[&StepPath::new("c")].status, StepStatus::Pending);
    assert_eq!(paused.unstarted_status(), StepStatus::Pending);
    let done = engine.resume(&fork).await.expect("resumes");
    assert_eq!(done.status, RunStatus::Completed);
    for step in ["b", "c"] {
        assert_eq!(done.steps[&StepPath::new(step)].status, StepStatus::Succeeded, "{step}");
    }

    // A fork cancelled before it runs them: they read cancelled.
    let again = RunId::new("again").expect("id");
    engine.fork(&run_id(), after_a, again.clone(), "tess").await.expect("forks");
    let cancelled = engine.stop(&again, Request::Cancel, "tess").await.expect("cancels");
    assert_eq!(cancelled.steps[&StepPath::new("c")].status, StepStatus::Cancelled);
    assert_eq!(cancelled.unstarted_status(), StepStatus::Cancelled);
}

/// A slow model call (60 s) under a run timeout of 5 s, beside an
/// approval; then a step after both.
const TIMED: &str = "cairn: 1
id: timed
timeout: 5s
agents:
  w: { system: Be slow. }
steps:
  - id: slow
    agent: w
    prompt: Take your time.
  - id: after
    needs: [slow]
    set: late
";

#[tokio::test(start_paused = true)]
async fn a_run_past_its_timeout_fails_as_a_timeout_and_stops_what_is_in_flight() {
    let h = Harness::new();
    let engine = h.builder(Duration::from_secs(60)).build();
    let state = engine.run(definition(TIMED), json!({}), run_id()).await.expect("runs");
    assert_eq!(state.status, RunStatus::Failed);
    let error = state.error.as_ref().expect("an error");
    assert_eq!(
        (error.class, error.message.as_str()),
        (ErrorClass::Timeout, "the run's timeout of 5s passed")
    );
    assert_eq!(
        state.steps[&StepPath::new("slow")].status,
        StepStatus::Cancelled,
        "stopped, not left running"
    );
    assert!(!state.steps.contains_key(&StepPath::new("after")), "nothing started after");
    let events = h.store.load(&run_id(), 0).await.expect("stored").events;
    let failed = events.last().expect("events");
    assert_eq!(failed.at.0 - events[0].at.0, 5_000, "at the deadline, not when the call would have ended");
    insta::assert_snapshot!(h.log().await);
}

#[tokio::test(start_paused = true)]
async fn a_run_waiting_at_a_gate_past_its_timeout_fails_when_driven() {
    let gated = "cairn: 1\nid: gated\ntimeout: 1m\nsteps:\n  - id: sign\n    approval: { message: Ship? }\n";
    let h = Harness::new();
    let engine = h.builder(Duration::ZERO).build();
    let state = engine.run(definition(gated), json!({}), run_id()).await.expect("runs");
    assert_eq!(state.status, RunStatus::WaitingApproval);
    tokio::time::advance(Duration::from_secs(30)).await;
    let state = engine.resume(&run_id()).await.expect("resumes");
    assert_eq!(state.status, RunStatus::WaitingApproval, "before its deadline it waits on");
    tokio::time::advance(Duration::from_secs(31)).await;
    let state = engine.resume(&run_id()).await.expect("resumes");
    assert_eq!(state.status, RunStatus::Failed);
    assert_eq!(state.error.map(|e| e.class), Some(ErrorClass::Timeout));
    assert_eq!(state.steps[&StepPath::new("sign")].status, StepStatus::Cancelled);
}
