//! Gates through the engine on a fake clock: acceptance with rework,
//! approvals per role, deadlines each way, clarification, and the QA gates
//! (schema repair, judge). Each path's event log is a snapshot; decisions
//! are recorded between drives, as the verbs do across processes.

mod support;

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use cairn_domain::state::{ErrorClass, RunState, RunStatus, StepPath};
use cairn_domain::steer::{GateCall, Refusal, Verdict};
use cairn_engine::{Engine, EngineBuilder, EngineError};
use cairn_ports::{ChatRequest, ChatResponse, Clock, LlmProvider, PortError, Usage};
use serde_json::json;
use support::{Harness, definition, run_id};

/// Answers from a script, in call order, and keeps every request.
#[derive(Default)]
struct Scripted {
    answers: Mutex<VecDeque<String>>,
    requests: Mutex<Vec<ChatRequest>>,
}

impl Scripted {
    fn new(answers: &[&str]) -> Arc<Self> {
        Arc::new(Self {
            answers: Mutex::new(answers.iter().map(|a| (*a).to_owned()).collect()),
            ..Default::default()
        })
    }

    /// The messages of the `n`th request, one line each.
    fn conversation(&self, n: usize) -> String {
        let requests = self.requests.lock().expect("lock");
        requests[n]
            .messages
            .iter()
            .map(|m| format!("{:?}: {}", m.role, m.content))
            .collect::<Vec<_>>()
            .join("\n")
    }
}

#[async_trait]
impl LlmProvider for Scripted {
    async fn chat(&self, request: ChatRequest) -> Result<ChatResponse, PortError> {
        self.requests.lock().expect("lock").push(request);
        let text = self.answers.lock().expect("lock").pop_front().unwrap_or_else(|| "the answer".into());
        Ok(ChatResponse {
            text,
            usage: Usage { prompt_tokens: 10, completion_tokens: 5, estimated: false, cost_micro_usd: None },
            model: "m".into(),
            tool_calls: Vec::new(),
        })
    }
}

fn engine(h: &Harness, llm: Arc<Scripted>) -> Engine {
    let clock: Arc<dyn Clock> = h.clock.clone();
    EngineBuilder::new(h.store.clone()).clock(clock).provider("default", llm).build()
}

/// A decision and who made it.
type Call = (GateCall, &'static str);

fn call(verdict: Verdict, role: Option<&str>, comment: Option<&str>, by: &'static str) -> Call {
    let call =
        GateCall { gate: None, verdict, role: role.map(str::to_owned), comment: comment.map(str::to_owned) };
    (call, by)
}

fn approve(role: Option<&str>, by: &'static str) -> Call {
    call(Verdict::Approve, role, None, by)
}

fn reject(role: Option<&str>, comment: &str, by: &'static str) -> Call {
    call(Verdict::Reject, role, Some(comment), by)
}

/// Records a decision.
async fn decide(engine: &Engine, (call, by): Call) -> Result<RunState, EngineError> {
    engine.decide_gate(&run_id(), call, by).await
}

/// Records a decision, then drives the run on.
async fn decide_and_resume(engine: &Engine, (call, by): Call) -> RunState {
    decide(engine, (call, by)).await.expect("the decision is recorded");
    engine.resume(&run_id()).await.expect("the run goes on")
}

const ACCEPT: &str = r#"cairn: 1
id: accept
agents:
  w: { system: You write. }
steps:
  - id: draft
    agent: w
    prompt: "Write it.{% if feedback %} Reviewer: {{ feedback }}{% endif %}"
    produces: draft
    accept: { on_reject: rework, max_reworks: 1 }
  - id: publish
    set: "{{ docs.draft }}"
"#;

#[tokio::test(start_paused = true)]
async fn acceptance_waits_then_goes_on_when_approved() {
    let h = Harness::new();
    let engine = engine(&h, Scripted::new(&["v1"]));
    let state = engine.run(definition(ACCEPT), json!({}), run_id()).await.expect("runs");
    assert_eq!(state.status, RunStatus::WaitingAcceptance);
    assert!(!state.scopes.visible(&Default::default()).contains_key("draft"), "stored once accepted");
    let state = decide_and_resume(&engine, approve(None, "alice")).await;
    assert_eq!(state.status, RunStatus::Completed);
    assert_eq!(state.steps[&StepPath::new("publish")].output, Some(json!("v1")));
    insta::assert_snapshot!(h.log().await);
}

#[tokio::test(start_paused = true)]
async fn a_rejection_reworks_with_the_comment_then_acceptance_goes_on() {
    let h = Harness::new();
    let llm = Scripted::new(&["v1", "v2"]);
    let engine = engine(&h, llm.clone());
    engine.run(definition(ACCEPT), json!({}), run_id()).await.expect("runs");
    let state = decide_and_resume(&engine, reject(None, "more detail", "bob")).await;
    assert_eq!(state.status, RunStatus::WaitingAcceptance);
    let state = decide_and_resume(&engine, approve(None, "bob")).await;
    assert_eq!(state.steps[&StepPath::new("publish")].output, Some(json!("v2")));
    insta::assert_snapshot!("rework_log", h.log().await);
    insta::assert_snapshot!("rework_conversation", llm.conversation(1));
}

#[tokio::test(start_paused = true)]
async fn reworks_run_out_and_the_step_fails_rejected() {
    let h = Harness::new();
    let engine = engine(&h, Scripted::new(&["v1", "v2"]));
    engine.run(definition(ACCEPT), json!({}), run_id()).await.expect("runs");
    decide_and_resume(&engine, reject(None, "no", "bob")).await;
    let state = decide_and_resume(&engine, reject(None, "still no", "bob")).await;
    assert_eq!(state.status, RunStatus::Failed);
    let error = state.error.expect("failed");
    assert_eq!(error.class, ErrorClass::Rejected);
    insta::assert_snapshot!(h.log().await);
}

#[tokio::test(start_paused = true)]
async fn on_reject_fail_fails_at_once() {
    let h = Harness::new();
    let engine = engine(&h, Scripted::new(&["v1"]));
    let yaml = ACCEPT.replace("on_reject: rework, max_reworks: 1", "on_reject: fail");
    engine.run(definition(&yaml), json!({}), run_id()).await.expect("runs");
    let state = decide_and_resume(&engine, reject(Some("x"), "wrong", "bob")).await;
    assert_eq!(state.status, RunStatus::Failed);
    let error = state.error.expect("failed");
    assert_eq!(
        (error.class, error.message.as_str()),
        (ErrorClass::Rejected, "step `draft` failed: rejected by bob as x: wrong")
    );
}

const TWO_ROLES: &str = r#"cairn: 1
id: roles
steps:
  - id: go_live
    approval:
      message: "Deploy {{ run.workflow }}?"
      approvers: [tech_lead, product_owner]
  - id: after
    set: "{{ steps.go_live.output.approved_by | length }}"
"#;

#[tokio::test(start_paused = true)]
async fn every_listed_role_must_approve_and_other_decisions_are_refused() {
    let h = Harness::new();
    let engine = engine(&h, Scripted::new(&[]));
    let state = engine.run(definition(TWO_ROLES), json!({}), run_id()).await.expect("runs");
    assert_eq!(state.status, RunStatus::WaitingApproval);
    assert_eq!(state.steps[&StepPath::new("go_live")].message.as_deref(), Some("Deploy roles?"));

    let mut refusals = Vec::new();
    for bad in [
        approve(None, "eve"),
        approve(Some("intern"), "eve"),
        (GateCall { gate: Some("after".into()), ..approve(Some("tech_lead"), "eve").0 }, "eve"),
        call(Verdict::Answer("x".into()), None, None, "eve"),
    ] {
        match decide(&engine, bad).await {
            Err(EngineError::Refused { refusal, .. }) => refusals.push(refusal.to_string()),
            other => panic!("not refused: {other:?}"),
        }
    }
    insta::assert_snapshot!("refusals", refusals.join("\n"));

    let state = decide_and_resume(&engine, approve(Some("tech_lead"), "tess")).await;
    assert_eq!(state.status, RunStatus::WaitingApproval, "one of two roles is not enough");
    let state = decide_and_resume(&engine, approve(Some("product_owner"), "pat")).await;
    assert_eq!(state.status, RunStatus::Completed);
    assert_eq!(state.steps[&StepPath::new("after")].output, Some(json!(2)));
    insta::assert_snapshot!(h.log().await);
}

#[tokio::test(start_paused = true)]
async fn racing_decisions_are_both_recorded_and_the_first_moves_the_run() {
    let h = Harness::new();
    let engine = engine(&h, Scripted::new(&["v1"]));
    engine.run(definition(ACCEPT), json!({}), run_id()).await.expect("runs");
    decide(&engine, approve(None, "alice")).await.expect("recorded");
    decide(&engine, reject(None, "wait", "bob")).await.expect("recorded too");
    let state = engine.resume(&run_id()).await.expect("goes on");
    assert_eq!(state.status, RunStatus::Completed, "alice's approval came first");
    let log = h.log().await;
    assert!(
        log.contains("gate_decided draft approved by alice") && log.contains("rejected by bob: wait"),
        "{log}"
    );
}

#[tokio::test(start_paused = true)]
async fn deadlines_apply_on_timeout_each_way_when_the_run_is_next_driven() {
    let mut logs = Vec::new();
    for on_timeout in ["reject", "approve", "fail"] {
        let yaml = format!(
            "cairn: 1\nid: timed\nsteps:\n  - id: go\n    approval: {{ message: Go?, timeout: 1h, on_timeout: {on_timeout} }}\n"
        );
        let h = Harness::new();
        let engine = engine(&h, Scripted::new(&[]));
        engine.run(definition(&yaml), json!({}), run_id()).await.expect("runs");
        tokio::time::advance(Duration::from_secs(2 * 3600)).await;
        let late = decide(&engine, approve(None, "late")).await;
        assert!(
            matches!(late, Err(EngineError::Refused { refusal: Refusal::DeadlinePassed { .. }, .. })),
            "{late:?}"
        );
        let state = engine.resume(&run_id()).await.expect("goes on");
        logs.push(format!("on_timeout: {on_timeout} -> {:?}\n{}", state.status, h.log().await));
    }
    insta::assert_snapshot!(logs.join("\n\n"));
}

const CLARIFY: &str = r#"cairn: 1
id: clarify
agents:
  w: { system: You plan. }
steps:
  - id: plan
    agent: w
    prompt: Plan the storage layer.
    clarify: true
    max_clarifications: 1
"#;

#[tokio::test(start_paused = true)]
async fn questions_wait_for_answers_and_the_step_runs_again_with_them() {
    let h = Harness::new();
    let llm = Scripted::new(&[r#"{"clarification_questions": ["Which database?"]}"#, "Use Postgres."]);
    let engine = engine(&h, llm.clone());
    let state = engine.run(definition(CLARIFY), json!({}), run_id()).await.expect("runs");
    assert_eq!(state.status, RunStatus::WaitingClarification);
    assert_eq!(state.steps[&StepPath::new("plan")].questions, ["Which database?"]);
    let state =
        decide_and_resume(&engine, call(Verdict::Answer("Postgres".into()), None, None, "dana")).await;
    assert_eq!(state.status, RunStatus::Completed);
    insta::assert_snapshot!("clarify_log", h.log().await);
    insta::assert_snapshot!("clarify_conversation", llm.conversation(1));
}

#[tokio::test(start_paused = true)]
async fn a_model_that_keeps_asking_is_stopped() {
    let h = Harness::new();
    let asks = r#"{"clarification_questions": ["Which?"]}"#;
    let engine = engine(&h, Scripted::new(&[asks, asks]));
    engine.run(definition(CLARIFY), json!({}), run_id()).await.expect("runs");
    let state =
        decide_and_resume(&engine, call(Verdict::Answer("this one".into()), None, None, "dana")).await;
    assert_eq!(state.status, RunStatus::Failed);
    let error = state.error.expect("failed");
    assert!(error.message.contains("still asks questions after 1 rounds"), "{}", error.message);
}

const CONVERSE: &str = r#"cairn: 1
id: converse
agents:
  w: { system: You pair with a person. }
steps:
  - id: chat
    agent: w
    prompt: Help me name the service.
    interactive: true
  - id: after
    agent: w
    prompt: "Summarise: {{ steps.chat.output | tojson }}"
"#;

#[tokio::test(start_paused = true)]
async fn an_interactive_step_converses_turn_by_turn_until_the_person_ends_it() {
    let h = Harness::new();
    let llm = Scripted::new(&["How about `ledger`?", "Then `tally`.", "Named: tally."]);
    let engine = engine(&h, llm.clone());
    let state = engine.run(definition(CONVERSE), json!({}), run_id()).await.expect("runs");
    assert_eq!(state.status, RunStatus::WaitingConversation);
    assert_eq!(state.steps[&StepPath::new("chat")].message.as_deref(), Some("How about `ledger`?"));
    let state =
        decide_and_resume(&engine, call(Verdict::Answer("Shorter.".into()), None, None, "dana")).await;
    assert_eq!(state.status, RunStatus::WaitingConversation, "the agent's next turn, then the person's");
    let state = decide_and_resume(&engine, call(Verdict::Answer("/done".into()), None, None, "dana")).await;
    assert_eq!(state.status, RunStatus::Completed);
    assert_eq!(
        state.steps[&StepPath::new("chat")].output,
        Some(json!([
            {"role": "agent", "text": "How about `ledger`?"},
            {"role": "person", "text": "Shorter."},
            {"role": "agent", "text": "Then `tally`."},
        ])),
        "the transcript is the output"
    );
    assert_eq!(llm.requests.lock().expect("lock").len(), 3, "`/done` asks the model nothing");
    insta::assert_snapshot!("converse_log", h.log().await);
    insta::assert_snapshot!("converse_second_turn", llm.conversation(1));
}

const SCHEMA: &str = r#"cairn: 1
id: qa
agents:
  w: { system: You count. }
steps:
  - id: count
    agent: w
    prompt: Count.
    output:
      format: json
      schema: { type: object, required: [n], properties: { n: { type: integer } } }
      repair_attempts: REPAIRS
"#;

#[tokio::test(start_paused = true)]
async fn invalid_output_goes_back_with_the_errors_until_it_passes_or_the_repairs_run_out() {
    let mut logs = Vec::new();
    for repairs in [2, 1] {
        let h = Harness::new();
        let llm = Scripted::new(&["not json", r#"{"n": "three"}"#, "```json\n{\"n\": 3}\n```"]);
        let engine = engine(&h, llm.clone());
        let yaml = SCHEMA.replace("REPAIRS", &repairs.to_string());
        let state = engine.run(definition(&yaml), json!({}), run_id()).await.expect("runs");
        logs.push(format!("repair_attempts: {repairs} -> {:?}\n{}", state.status, h.log().await));
        if repairs == 2 {
            assert_eq!(state.steps[&StepPath::new("count")].output, Some(json!({"n": 3})));
            insta::assert_snapshot!("repair_conversation", llm.conversation(2));
        } else {
            assert_eq!(state.error.map(|e| e.class), Some(ErrorClass::InvalidOutput));
        }
    }
    insta::assert_snapshot!(logs.join("\n\n"));
}

#[tokio::test(start_paused = true)]
async fn a_failing_verdict_sends_the_answer_back_with_the_judges_reason() {
    let yaml = r#"cairn: 1
id: judged
agents:
  w: { system: You write. }
  judge: { system: You are strict. }
steps:
  - id: write
    agent: w
    prompt: Write a haiku.
    qa:
      agent: judge
      rubric: Three lines.
"#;
    let h = Harness::new();
    let llm = Scripted::new(&[
        "one line",
        r#"{"pass": false, "reason": "not three lines"}"#,
        "one\ntwo\nthree",
        r#"{"pass": true, "reason": "fine"}"#,
    ]);
    let engine = engine(&h, llm.clone());
    let state = engine.run(definition(yaml), json!({}), run_id()).await.expect("runs");
    assert_eq!(state.steps[&StepPath::new("write")].output, Some(json!("one\ntwo\nthree")));
    insta::assert_snapshot!("judge_log", h.log().await);
    insta::assert_snapshot!("judge_request", llm.conversation(1));
}

#[tokio::test(start_paused = true)]
async fn a_reused_session_carries_an_agents_conversation_across_its_steps() {
    let yaml = r#"cairn: 1
id: session
agents:
  dev: { system: You code., session: reuse }
  fresh: { system: You review. }
steps:
  - id: design
    agent: dev
    prompt: Design the cache.
  - id: build
    agent: dev
    prompt: Now build it.
  - id: review
    agent: fresh
    prompt: Review it.
"#;
    let h = Harness::new();
    let llm = Scripted::new(&["a design", "the code", "a review"]);
    let engine = engine(&h, llm.clone());
    let state = engine.run(definition(yaml), json!({}), run_id()).await.expect("runs");
    assert_eq!(state.status, RunStatus::Completed);
    assert_eq!(state.sessions["dev"].len(), 4, "two prompts and two answers");
    insta::assert_snapshot!("session_build", llm.conversation(1));
    insta::assert_snapshot!("session_fresh", llm.conversation(2));
    // The conversation is run state: it is folded back from the log.
    let loaded = engine.load(&run_id()).await.expect("loads");
    assert_eq!(loaded.sessions, state.sessions);
}

#[tokio::test(start_paused = true)]
async fn a_spent_budget_starts_no_further_llm_step_and_blocks_the_run() {
    let yaml = r#"cairn: 1
id: budget
defaults: { budget_usd: 1.5 }
agents:
  w: { system: You write. }
steps:
  - id: a
    agent: w
    prompt: One.
  - id: b
    agent: w
    prompt: Two.
  - id: c
    agent: w
    prompt: Three.
"#;
    let h = Harness::new();
    let clock: Arc<dyn Clock> = h.clock.clone();
    // 10 prompt tokens at $100,000 per million: $1 a call.
    let prices = [("m".to_owned(), cairn_domain::program::Price { prompt: 100_000.0, completion: 0.0 })];
    let engine = EngineBuilder::new(h.store.clone())
        .clock(clock)
        .provider("default", Scripted::new(&[]))
        .prices(prices.into_iter().collect())
        .build();
    let state = engine.run(definition(yaml), json!({}), run_id()).await.expect("runs");
    assert_eq!(state.status, RunStatus::Blocked);
    insta::assert_snapshot!(h.log().await);
}

/// Streams its answer in pieces to the request's token sink.
struct Streaming;

#[async_trait]
impl LlmProvider for Streaming {
    async fn chat(&self, request: ChatRequest) -> Result<ChatResponse, PortError> {
        for piece in ["str", "eam", "ed"] {
            if let Some(sink) = &request.tokens {
                (sink.0)(piece);
            }
        }
        Ok(ChatResponse {
            text: "streamed".into(),
            usage: Usage::default(),
            model: "m".into(),
            tool_calls: Vec::new(),
        })
    }
}

/// Keeps the tokens it is sent, with their step.
#[derive(Default)]
struct Tokens(Mutex<Vec<String>>);

impl cairn_ports::EventSink for Tokens {
    fn emit(&self, _: &cairn_domain::id::RunId, event: &cairn_ports::LiveEvent<'_>) {
        if let cairn_ports::LiveEvent::Token { path, text, .. } = event {
            self.0.lock().expect("lock").push(format!("{path}:{text}"));
        }
    }
}

#[tokio::test(start_paused = true)]
async fn streamed_text_goes_to_the_live_sink_and_only_the_answer_is_recorded() {
    let h = Harness::new();
    let tokens = Arc::new(Tokens::default());
    let clock: Arc<dyn Clock> = h.clock.clone();
    let engine = EngineBuilder::new(h.store.clone())
        .clock(clock)
        .sink(tokens.clone())
        .provider("default", Arc::new(Streaming))
        .build();
    let yaml = "cairn: 1\nid: s\nagents:\n  w: {}\nsteps:\n  - id: ask\n    agent: w\n    prompt: Hi.\n";
    let state = engine.run(definition(yaml), json!({}), run_id()).await.expect("runs");
    assert_eq!(state.steps[&StepPath::new("ask")].output, Some(json!("streamed")));
    assert_eq!(*tokens.0.lock().expect("lock"), ["ask:str", "ask:eam", "ask:ed"]);
    let log = h.log().await;
    assert_eq!(
        log.lines().count(),
        7,
        "created, started, step started, prompt, usage, succeeded, completed: {log}"
    );
    assert!(!log.contains("token"), "pieces are never recorded: {log}");
}

/// A handler that answers once let go.
struct Held(tokio::sync::Notify);

#[async_trait]
impl cairn_ports::StepHandler for Held {
    async fn call(&self, _: cairn_ports::HandlerCall) -> Result<serde_json::Value, PortError> {
        self.0.notified().await;
        Ok(json!("slow done"))
    }
}

const SIDE_BY_SIDE: &str = r#"cairn: 1
id: side
agents:
  w: {}
steps:
  - id: draft
    agent: w
    prompt: Write it.
    accept: { on_reject: rework, max_reworks: 1 }
  - id: slow
    needs: []
    uses: slow
  - id: publish
    needs: [draft, slow]
    set: "{{ steps.slow.output }}"
"#;

#[tokio::test]
async fn a_decision_while_the_run_is_driven_goes_through_its_driver() {
    let h = Harness::new();
    let held = Arc::new(Held(tokio::sync::Notify::new()));
    let clock: Arc<dyn Clock> = h.clock.clone();
    let engine = Arc::new(
        EngineBuilder::new(h.store.clone())
            .clock(clock)
            .provider("default", Scripted::new(&["v1"]))
            .handler("slow", held.clone())
            .build(),
    );
    let driving = tokio::spawn({
        let engine = Arc::clone(&engine);
        async move { engine.run(definition(SIDE_BY_SIDE), json!({}), run_id()).await }
    });
    // The draft waits for acceptance while `slow` still runs.
    loop {
        if let Ok(state) = engine.load(&run_id()).await
            && state
                .steps
                .get(&StepPath::new("draft"))
                .is_some_and(|s| s.status == cairn_domain::state::StepStatus::Waiting)
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert!(engine.drives(&run_id()));
    let before = engine.load(&run_id()).await.expect("loads").seq;
    let decided = decide(&engine, approve(None, "alice")).await.expect("taken by the driver");
    assert!(decided.seq > before, "the driver recorded the decision");
    held.0.notify_one();
    let state = driving.await.expect("joins").expect("the run goes on");
    assert_eq!(state.status, RunStatus::Completed);
    assert_eq!(state.steps[&StepPath::new("publish")].output, Some(json!("slow done")));
    let log = h.log().await;
    assert!(log.contains("alice"), "the decision is recorded as alice's:\n{log}");
}
