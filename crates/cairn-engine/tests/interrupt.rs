//! An interrupted drive (a server shutting down) records nothing: the run
//! stays `running`, and the next drive runs what was in flight again as the
//! same attempt, with the same idempotency key.

mod support;

use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use cairn_domain::state::{RunStatus, StepPath, StepStatus};
use cairn_ports::{HandlerCall, PortError, StepHandler};
use serde_json::{Value, json};
use support::{Harness, definition, run_id};

/// Keeps every call's key; the first call hangs until the drive stops it.
#[derive(Default)]
struct HangsOnce {
    keys: Mutex<Vec<String>>,
    started: tokio::sync::Notify,
}

#[async_trait]
impl StepHandler for HangsOnce {
    async fn call(&self, call: HandlerCall) -> Result<Value, PortError> {
        let first = {
            let mut keys = self.keys.lock().expect("lock");
            keys.push(call.idempotency_key);
            keys.len() == 1
        };
        if first {
            self.started.notify_one();
            std::future::pending::<()>().await;
        }
        Ok(json!("done"))
    }
}

const WF: &str = "cairn: 1\nid: wf\nsteps:\n  - id: work\n    uses: work\n  - id: after\n    set: ok\n";

#[tokio::test]
async fn an_interrupt_leaves_the_run_running_and_the_next_drive_runs_the_same_attempt() {
    let h = Harness::new();
    let work = Arc::new(HangsOnce::default());
    let engine = Arc::new(h.builder(std::time::Duration::ZERO).handler("work", work.clone()).build());
    let driving = tokio::spawn({
        let engine = Arc::clone(&engine);
        async move { engine.run(definition(WF), json!({}), run_id()).await }
    });
    work.started.notified().await;
    let before = engine.load(&run_id()).await.expect("loads").seq;
    engine.control(&run_id()).interrupt();
    let state = driving.await.expect("joins").expect("an interrupt is no failure");
    assert_eq!(state.status, RunStatus::Running);
    assert_eq!(state.steps[&StepPath::new("work")].status, StepStatus::Running);
    assert_eq!(engine.load(&run_id()).await.expect("loads").seq, before, "nothing recorded");
    assert!(!engine.drives(&run_id()));

    let state = engine.resume(&run_id()).await.expect("goes on");
    assert_eq!(state.status, RunStatus::Completed);
    let keys = work.keys.lock().expect("lock").clone();
    assert_eq!(keys.len(), 2);
    assert_eq!(keys[0], keys[1], "the same attempt, the same key");
}

/// Answers once let go.
#[derive(Default)]
struct Held {
    started: tokio::sync::Notify,
    go: tokio::sync::Notify,
}

#[async_trait]
impl StepHandler for Held {
    async fn call(&self, _: HandlerCall) -> Result<Value, PortError> {
        self.started.notify_one();
        self.go.notified().await;
        Ok(json!("done"))
    }
}

#[tokio::test]
async fn a_pause_asked_of_a_driver_by_someone_is_recorded_as_theirs() {
    let h = Harness::new();
    let work = Arc::new(Held::default());
    let engine = Arc::new(h.builder(std::time::Duration::ZERO).handler("work", work.clone()).build());
    let driving = tokio::spawn({
        let engine = Arc::clone(&engine);
        async move { engine.run(definition(WF), json!({}), run_id()).await }
    });
    work.started.notified().await;
    engine.control(&run_id()).ask(cairn_domain::steer::Request::Pause, Some("alice"));
    work.go.notify_one();
    let state = driving.await.expect("joins").expect("pauses");
    assert_eq!(state.status, RunStatus::Paused);
    let events = engine.events(&run_id()).await.expect("events");
    let paused = events.last().expect("an event");
    assert!(matches!(paused.kind, cairn_domain::state::EventKind::RunPaused), "{paused:?}");
    assert_eq!(paused.actor, "alice");
}
