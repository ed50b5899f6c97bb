//! The executor through its ports: real scheduling, fake clock (tokio's
//! paused time), in-memory store, mock LLM, scripted handlers.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use cairn_domain::id::RunId;
use cairn_domain::state::{ErrorClass, RunStatus};
use cairn_domain::steer::{Refusal, Request};
use cairn_engine::{EngineBuilder, EngineError, MemoryStore, Unmet};
use cairn_ports::{
    ChatResponse, HandlerCall, MockLlmProvider, MockRunStore, PortError, RunQuery, RunStore, StepHandler,
    StoreError, Usage,
};
use serde_json::{Value, json};

mod support;

use support::{Gauge, Harness, definition, recorder, run_id};

cairn_testkit::run_store_suite!(cairn_engine::MemoryStore::new());
cairn_testkit::run_token_store_suite!(cairn_engine::MemoryStore::new());
cairn_testkit::run_workflow_store_suite!(cairn_engine::MemoryStore::new());

const REVIEW: &str = r#"cairn: 1
id: review
inputs:
  file: { type: string, default: src/lib.rs }
agents:
  w: { system: You review. }
steps:
  - id: parse
    agent: w
    prompt: "List the functions of {{ inputs.file }}"
    output:
      schema: { type: object, required: [functions], properties: { functions: { type: array, items: { type: string } } } }
  - id: security
    needs: [parse]
    agent: w
    prompt: "Check {{ steps.parse.output.functions | join(', ') }}"
  - id: quality
    needs: [parse]
    agent: w
    prompt: "Rate {{ steps.parse.output.functions | length }} functions"
  - id: report
    needs: [security, quality]
    set:
      security: "{{ steps.security.output }}"
      functions: "{{ steps.parse.output.functions }}"
"#;

#[tokio::test(start_paused = true)]
async fn a_review_dag_runs_in_parallel_on_virtual_time() {
    let h = Harness::new();
    let engine = h.builder(Duration::from_millis(1500)).build();
    let state = engine.run(definition(REVIEW), json!({}), run_id()).await.expect("runs");
    assert_eq!(state.status, RunStatus::Completed);
    // parse, then security and quality together (1.5 s, not 3 s), then report.
    assert_eq!(state.updated_at.0, 3000);
    insta::assert_snapshot!(h.log().await);
}

/// A handler that waits at a barrier: two of them finish only if they run at once.
struct AtBarrier(Arc<tokio::sync::Barrier>);

#[async_trait]
impl StepHandler for AtBarrier {
    async fn call(&self, call: HandlerCall) -> Result<Value, PortError> {
        self.0.wait().await;
        Ok(json!(call.path.as_str()))
    }
}

#[tokio::test]
async fn independent_steps_run_at_the_same_time() {
    let yaml = "cairn: 1\nid: par\nsteps:\n  - id: a\n    uses: barrier\n  - id: b\n    needs: []\n    uses: barrier\n";
    let store = Arc::new(MemoryStore::new());
    let barrier = Arc::new(tokio::sync::Barrier::new(2));
    let engine = EngineBuilder::new(store).handler("barrier", Arc::new(AtBarrier(barrier))).build();
    // Run one after the other, the first would wait at the barrier forever.
    let state =
        tokio::time::timeout(Duration::from_secs(30), engine.run(definition(yaml), json!({}), run_id()))
            .await
            .expect("no deadlock: both steps were in flight together")
            .expect("runs");
    assert_eq!(state.status, RunStatus::Completed);
}

#[tokio::test(start_paused = true)]
async fn max_parallel_is_never_exceeded() {
    let mut yaml = String::from("cairn: 1\nid: wide\ndefaults:\n  max_parallel: 3\nsteps:\n");
    for i in 0..10 {
        yaml.push_str(&format!("  - id: s{i}\n    needs: []\n    uses: gauge\n"));
    }
    let gauge = Arc::new(Gauge::default());
    let h = Harness::new();
    let engine = h.builder(Duration::ZERO).handler("gauge", gauge.clone()).build();
    let state = engine.run(definition(&yaml), json!({}), run_id()).await.expect("runs");
    assert_eq!(state.status, RunStatus::Completed);
    assert_eq!(gauge.max.load(Ordering::SeqCst), 3);
    assert_eq!(state.updated_at.0, 400, "10 steps of 100 ms, 3 at a time: 4 rounds");
}

/// Fails transiently `fails` times, then succeeds; never returns for `hang`.
struct Flaky {
    calls: AtomicUsize,
    fails: usize,
    hang: bool,
}

#[async_trait]
impl StepHandler for Flaky {
    async fn call(&self, call: HandlerCall) -> Result<Value, PortError> {
        let n = self.calls.fetch_add(1, Ordering::SeqCst);
        if self.hang {
            tokio::time::sleep(Duration::from_secs(3600)).await;
        }
        if n < self.fails {
            return Err(PortError::new(ErrorClass::Transient, format!("flaked on call {}", n + 1)));
        }
        Ok(json!(call.idempotency_key))
    }
}

#[tokio::test(start_paused = true)]
async fn retries_back_off_and_keys_name_each_attempt() {
    let yaml = "cairn: 1\nid: flaky\ndefaults:\n  retry: { max_attempts: 4, delay: 1s, backoff: 2.0, jitter: false }\nsteps:\n  - id: call\n    uses: flaky\n";
    let h = Harness::new();
    let flaky = Arc::new(Flaky { calls: AtomicUsize::new(0), fails: 2, hang: false });
    let engine = h.builder(Duration::ZERO).handler("flaky", flaky).build();
    let state = engine.run(definition(yaml), json!({}), run_id()).await.expect("runs");
    assert_eq!(state.status, RunStatus::Completed);
    insta::assert_snapshot!(h.log().await);
}

#[tokio::test(start_paused = true)]
async fn a_timeout_cancels_the_attempt_and_counts_as_timeout() {
    let yaml = "cairn: 1\nid: slow\ndefaults:\n  retry: { max_attempts: 2, delay: 1s, jitter: false }\nsteps:\n  - id: call\n    timeout: 5s\n    uses: slow\n";
    let h = Harness::new();
    let slow = Arc::new(Flaky { calls: AtomicUsize::new(0), fails: 0, hang: true });
    let engine = h.builder(Duration::ZERO).handler("slow", slow.clone()).build();
    let state = engine.run(definition(yaml), json!({}), run_id()).await.expect("runs");
    assert_eq!(state.status, RunStatus::Failed);
    assert_eq!(slow.calls.load(Ordering::SeqCst), 2);
    insta::assert_snapshot!(h.log().await);
}

#[tokio::test]
async fn a_missing_provider_or_handler_is_refused_before_a_run_exists() {
    let yaml = "cairn: 1\nid: nollm\nagents:\n  w: { system: hi }\nsteps:\n  - id: a\n    agent: w\n    prompt: hi\n  - id: b\n    uses: notify\n";
    let store = Arc::new(MemoryStore::new());
    let engine = EngineBuilder::new(store.clone()).build();
    let err = engine.run(definition(yaml), json!({}), run_id()).await.expect_err("refused");
    let EngineError::Unmet { run: None, unmet } = &err else { panic!("not refused as unmet: {err}") };
    assert_eq!(
        unmet,
        &[
            Unmet::Provider { agent: "w".into(), provider: "default".into() },
            Unmet::Handler { handler: "notify".into() }
        ]
    );
    assert_eq!(
        err.to_string(),
        "needs what this engine lacks: provider `default` of agent `w`, handler `notify`"
    );
    assert!(store.list(&RunQuery::default()).await.expect("list").runs.is_empty(), "no run was created");
}

#[tokio::test]
async fn the_provider_gets_one_call_with_the_attempt_key() {
    let yaml = "cairn: 1\nid: key\nagents:\n  w: { system: Be brief., model: m1 }\nsteps:\n  - id: ask\n    agent: w\n    prompt: hello\n";
    let mut llm = MockLlmProvider::new();
    llm.expect_chat()
        .withf(|r| {
            r.idempotency_key == "run-1/ask/1" && r.model.as_deref() == Some("m1") && r.messages.len() == 2
        })
        .times(1)
        .returning(|_| {
            Ok(ChatResponse {
                text: "hi".into(),
                usage: Usage::default(),
                model: "m1".into(),
                tool_calls: Vec::new(),
            })
        });
    let engine = EngineBuilder::new(Arc::new(MemoryStore::new())).provider("default", Arc::new(llm)).build();
    let state = engine.run(definition(yaml), json!({}), run_id()).await.expect("runs");
    assert_eq!(state.status, RunStatus::Completed);
}

#[tokio::test]
async fn a_lost_append_race_stops_the_driver() {
    let yaml = "cairn: 1\nid: race\nsteps:\n  - id: a\n    set: 1\n";
    let mut store = MockRunStore::new();
    store.expect_create().times(1).returning(|_| Ok(()));
    store.expect_latest_snapshot().returning(|_| Ok(None));
    store.expect_load().returning(move |_, _| {
        let created = cairn_domain::state::Event {
            seq: 1,
            at: cairn_domain::state::Timestamp(1),
            actor: "engine".into(),
            kind: cairn_domain::state::EventKind::RunCreated {
                run_id: run_id(),
                workflow: cairn_domain::id::WorkflowId::new("race").expect("id"),
                definition_hash: String::new(),
                inputs: json!({}),
                version: None,
                labels: Default::default(),
                priority: 0,
                parent: None,
            },
        };
        Ok(cairn_ports::StoredRun {
            definition_name: "wf.yaml".into(),
            definition: yaml.into(),
            files: Default::default(),
            events: vec![created],
        })
    });
    store.expect_append().times(1).returning(|_, expected, _| {
        Err(StoreError::Conflict { run: "run-1".into(), expected, actual: expected + 1 })
    });
    let engine = EngineBuilder::new(Arc::new(store)).build();
    let err = engine.run(definition(yaml), json!({}), run_id()).await.expect_err("conflict");
    assert!(matches!(err, EngineError::Store(StoreError::Conflict { .. })), "{err}");
}

#[tokio::test]
async fn bad_inputs_are_refused_before_a_run_exists() {
    let yaml =
        "cairn: 1\nid: inp\ninputs:\n  n: { type: integer, required: true }\nsteps:\n  - id: a\n    set: 1\n";
    let store = Arc::new(MemoryStore::new());
    let engine = EngineBuilder::new(store.clone()).build();
    let err = engine.run(definition(yaml), json!({"n": "x"}), run_id()).await.expect_err("refused");
    assert_eq!(err.to_string(), "input `n` must be of type integer, not \"x\"");
    assert!(store.list(&RunQuery::default()).await.expect("list").runs.is_empty());
}

/// Fails at once with a fatal error.
struct Broken;

#[async_trait]
impl StepHandler for Broken {
    async fn call(&self, _: HandlerCall) -> Result<Value, PortError> {
        tokio::time::sleep(Duration::from_secs(1)).await;
        Err(PortError::new(ErrorClass::Fatal, "bad request").with_hint("fix the request"))
    }
}

#[tokio::test(start_paused = true)]
async fn a_stopping_failure_cancels_the_siblings_in_flight() {
    let yaml = "cairn: 1\nid: stop\nsteps:\n  - id: slow\n    needs: []\n    uses: slow\n  - id: bad\n    needs: []\n    uses: bad\n  - id: after\n    needs: [slow, bad]\n    set: 1\n";
    let h = Harness::new();
    let slow = Arc::new(Flaky { calls: AtomicUsize::new(0), fails: 0, hang: true });
    let engine = h.builder(Duration::ZERO).handler("slow", slow).handler("bad", Arc::new(Broken)).build();
    let state = engine.run(definition(yaml), json!({}), run_id()).await.expect("runs");
    assert_eq!(state.status, RunStatus::Failed);
    assert_eq!(state.updated_at.0, 1000, "the hour-long sibling did not hold the run up");
    let error = state.error.expect("error");
    assert_eq!(
        (error.message.as_str(), error.hint.as_deref()),
        ("step `bad` failed: bad request", Some("fix the request"))
    );
    insta::assert_snapshot!(h.log().await);
}

/// Panics: a bug in a port or handler.
struct Panics;

#[async_trait]
impl StepHandler for Panics {
    async fn call(&self, _: HandlerCall) -> Result<Value, PortError> {
        panic!("handler bug")
    }
}

#[tokio::test(start_paused = true)]
async fn a_panicking_handler_fails_its_attempt_and_the_run_goes_on() {
    let yaml = "cairn: 1\nid: panic\nsteps:\n  - id: boom\n    uses: panics\n    on_failure: continue\n  - id: after\n    needs: [boom]\n    set: 1\n";
    let h = Harness::new();
    let engine = h.builder(Duration::ZERO).handler("panics", Arc::new(Panics)).build();
    let state = engine.run(definition(yaml), json!({}), run_id()).await.expect("the driver survives");
    let boom = &state.steps[&cairn_domain::state::StepPath::new("boom")];
    let error = boom.error.as_ref().expect("the attempt failed");
    assert_eq!((error.class, error.message.as_str()), (ErrorClass::Fatal, "the step's executor panicked"));
    assert_eq!(state.steps[&cairn_domain::state::StepPath::new("after")].output, Some(json!(1)));
}

const TWO: &str = "cairn: 1\nid: two\nsteps:\n  - id: a\n    uses: rec\n  - id: b\n    uses: rec\n";

#[tokio::test(start_paused = true)]
async fn a_step_in_flight_at_a_crash_runs_again_with_the_same_key() {
    use cairn_domain::state::{EventKind, StepPath};
    let h = Harness::new();
    // A driver died after recording that `a` started.
    let first = EngineBuilder::new(h.store.clone()).handler("rec", recorder(None, true)).build();
    let crashed =
        tokio::time::timeout(Duration::from_secs(10), first.run(definition(TWO), json!({}), run_id())).await;
    assert!(crashed.is_err(), "the hanging attempt keeps the first driver busy until it is dropped");
    let events = h.store.load(&run_id(), 0).await.expect("stored").events;
    assert!(matches!(events.last().map(|e| &e.kind), Some(EventKind::StepStarted { attempt: 1, .. })));
    let rec = recorder(None, false);
    let engine = h.builder(Duration::ZERO).handler("rec", rec.clone()).build();
    let state = engine.resume(&run_id()).await.expect("resumes");
    assert_eq!(state.status, RunStatus::Completed);
    assert_eq!(*rec.keys.lock().expect("lock"), vec!["run-1/a/1".to_owned(), "run-1/b/1".to_owned()]);
    let starts = h
        .store
        .load(&run_id(), 0)
        .await
        .expect("stored")
        .events
        .iter()
        .filter(|e| matches!(&e.kind, EventKind::StepStarted { path, .. } if path == &StepPath::new("a")))
        .count();
    assert_eq!(starts, 1, "the re-run is the same attempt, not a new one");
}

#[tokio::test(start_paused = true)]
async fn pause_lets_the_running_step_finish_then_resume_goes_on() {
    let h = Harness::new();
    let rec = recorder(Some(Request::Pause), false);
    let engine = h.builder(Duration::ZERO).handler("rec", rec.clone()).build();
    let _ = rec.control.set(engine.control(&run_id()));
    let paused = engine.run(definition(TWO), json!({}), run_id()).await.expect("runs");
    assert_eq!(paused.status, RunStatus::Paused);
    assert_eq!(paused.steps.len(), 1, "b never started");
    let engine = h.builder(Duration::ZERO).handler("rec", recorder(None, false)).build();
    let done = engine.resume(&run_id()).await.expect("resumes");
    assert_eq!(done.status, RunStatus::Completed);
    insta::assert_snapshot!(h.log().await);
}

#[tokio::test(start_paused = true)]
async fn cancel_stops_the_running_step_and_the_run() {
    let h = Harness::new();
    let rec = recorder(Some(Request::Cancel), true);
    let engine = h.builder(Duration::ZERO).handler("rec", rec.clone()).build();
    let _ = rec.control.set(engine.control(&run_id()));
    let state = engine.run(definition(TWO), json!({}), run_id()).await.expect("runs");
    assert_eq!(state.status, RunStatus::Cancelled);
    let err = engine.resume(&run_id()).await.expect_err("ended");
    assert!(matches!(err, EngineError::Refused { refusal: Refusal::Ended { .. }, .. }), "{err}");
    insta::assert_snapshot!(h.log().await);
}

#[tokio::test(start_paused = true)]
async fn resume_retries_a_blocked_step() {
    let yaml = "cairn: 1\nid: blocked\ndefaults:\n  retry: { max_attempts: 1 }\nsteps:\n  - id: a\n    uses: flaky\n    on_failure: block\n  - id: b\n    set: 2\n";
    let h = Harness::new();
    let flaky = Arc::new(Flaky { calls: AtomicUsize::new(0), fails: 1, hang: false });
    let engine = h.builder(Duration::ZERO).handler("flaky", flaky.clone()).build();
    let blocked = engine.run(definition(yaml), json!({}), run_id()).await.expect("runs");
    assert_eq!(blocked.status, RunStatus::Blocked);
    let done = engine.resume(&run_id()).await.expect("resumes");
    assert_eq!(done.status, RunStatus::Completed);
    insta::assert_snapshot!(h.log().await);
}

/// Fails every attempt before the 100th (the attempt is the last part of
/// the idempotency key).
struct SucceedsOnAttempt100;

#[async_trait]
impl StepHandler for SucceedsOnAttempt100 {
    async fn call(&self, call: HandlerCall) -> Result<Value, PortError> {
        match call.idempotency_key.rsplit('/').next() {
            Some("100") => Ok(json!("done")),
            _ => Err(PortError::new(ErrorClass::Transient, "not yet")),
        }
    }
}

#[tokio::test(start_paused = true)]
async fn long_runs_are_snapshotted_so_loading_replays_only_the_tail() {
    // Two events per attempt: three steps of 100 attempts each cross the
    // first snapshot point (a run of few steps snapshots every `SNAPSHOT_EVERY`).
    let yaml = "cairn: 1\nid: long\ndefaults:\n  retry: { max_attempts: 100, delay: 1ms, jitter: false }\nsteps:\n  - id: a\n    uses: late\n  - id: b\n    uses: late\n  - id: c\n    uses: late\n";
    let h = Harness::new();
    let engine = h.builder(Duration::ZERO).handler("late", Arc::new(SucceedsOnAttempt100)).build();
    let state = engine.run(definition(yaml), json!({}), run_id()).await.expect("runs");
    assert_eq!(state.status, RunStatus::Completed);
    let snapshot = h.store.latest_snapshot(&run_id()).await.expect("stored").expect("a snapshot was taken");
    // Taken at the append that reached the snapshot point (appends carry a few events).
    let every = cairn_engine::SNAPSHOT_EVERY;
    assert!(
        (every..every + 3).contains(&snapshot.seq),
        "snapshot at {} of {} events",
        snapshot.seq,
        state.seq
    );
    assert_eq!(engine.load(&run_id()).await.expect("loads"), state);
}

#[tokio::test(start_paused = true)]
async fn fork_copies_up_to_a_checkpoint_and_stop_marks_runs_nobody_drives() {
    let h = Harness::new();
    let engine = h.builder(Duration::ZERO).handler("rec", recorder(None, false)).build();
    assert_eq!(
        engine.run(definition(TWO), json!({}), run_id()).await.expect("runs").status,
        RunStatus::Completed
    );
    let events = h.store.load(&run_id(), 0).await.expect("stored").events;
    let after_a = cairn_domain::checkpoint::checkpoints(&events)[0].seq;
    let err = engine
        .fork(&run_id(), after_a + 1, RunId::new("bad").expect("id"), "tess")
        .await
        .expect_err("not a checkpoint");
    assert!(
        matches!(err, EngineError::Refused { refusal: Refusal::NoCheckpoint { last: Some(_), .. }, .. }),
        "{err}"
    );
    let forked = RunId::new("forked").expect("id");
    let state = engine.fork(&run_id(), after_a, forked.clone(), "tess").await.expect("forks");
    assert_eq!(state.status, RunStatus::Paused);
    assert_eq!(state.steps.len(), 1, "only `a` is carried over");
    let cancelled = engine.stop(&forked, Request::Cancel, "tess").await.expect("stops");
    assert_eq!(cancelled.status, RunStatus::Cancelled);
    assert_eq!(engine.stop(&forked, Request::Cancel, "tess").await.expect("again").seq, cancelled.seq);
    let ended = engine.stop(&run_id(), Request::Pause, "tess").await.expect_err("completed");
    assert!(matches!(ended, EngineError::Refused { refusal: Refusal::Ended { .. }, .. }), "{ended}");
}

#[tokio::test(start_paused = true)]
async fn a_fan_out_keeps_to_its_group_limit_on_real_tasks() {
    let yaml = "cairn: 1\nid: fan\ndefaults:\n  max_parallel: 3\nsteps:\n  - id: g\n    for_each: { items: \"{{ range(6) | list }}\", max_parallel: 2 }\n    steps:\n      - id: work\n        uses: gauge\n  - id: sum\n    set: \"{{ steps.g.output | map(attribute='work') | list | length }}\"\n";
    let gauge = Arc::new(Gauge::default());
    let h = Harness::new();
    let engine = h.builder(Duration::ZERO).handler("gauge", gauge.clone()).build();
    let state = engine.run(definition(yaml), json!({}), run_id()).await.expect("runs");
    assert_eq!(state.status, RunStatus::Completed);
    assert_eq!(gauge.max.load(Ordering::SeqCst), 2, "two instances at a time, under the run's three");
    assert_eq!(state.updated_at.0, 300, "6 instances of 100 ms, 2 at a time: 3 rounds");
    assert_eq!(state.steps[&cairn_domain::state::StepPath::new("sum")].output, Some(json!(6)));
}
