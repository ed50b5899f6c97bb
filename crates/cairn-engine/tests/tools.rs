//! Agents that call tools: each call the model asks for runs through the
//! tool port and its result goes back, until the model answers. Refused
//! calls (a tool not offered, arguments that do not parse or fit) go back
//! as errors and never run; an endless loop ends at `max_tool_rounds`; and
//! a crash mid-loop loses no returned result and runs the call in flight
//! again once, with the same key.

mod support;

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use cairn_domain::id::RunId;
use cairn_domain::state::{ErrorClass, EventKind, RunStatus, StepPath};
use cairn_engine::EngineBuilder;
use cairn_ports::{
    ChatRequest, ChatResponse, ContextFile, LlmProvider, PortError, Role, RunStore, ToolCall, ToolChoice,
    ToolError, ToolInvocation, ToolSpec, Tools, Usage,
};
use serde_json::json;
use support::{Harness, definition, run_id};

const WF: &str = "cairn: 1\nid: fix\nagents:\n  coder:\n    tools: [read_file, run_command]\n    max_tool_rounds: 3\nsteps:\n  - id: fix\n    agent: coder\n    prompt: Make the tests pass.\n";

fn call(id: &str, name: &str, arguments: &str) -> ToolCall {
    ToolCall { id: id.into(), name: name.into(), arguments: arguments.into() }
}

/// Answers from a script: each entry is the calls the model asks for, or
/// (when empty) its final answer. Keeps every request.
struct Scripted {
    script: Mutex<VecDeque<Vec<ToolCall>>>,
    /// What to answer once the script is spent: more calls, or text.
    then: Option<Vec<ToolCall>>,
    requests: Mutex<Vec<ChatRequest>>,
}

impl Scripted {
    fn new(script: Vec<Vec<ToolCall>>, then: Option<Vec<ToolCall>>) -> Arc<Self> {
        Arc::new(Self { script: Mutex::new(script.into()), then, requests: Mutex::default() })
    }
}

#[async_trait]
impl LlmProvider for Scripted {
    async fn chat(&self, request: ChatRequest) -> Result<ChatResponse, PortError> {
        self.requests.lock().expect("lock").push(request);
        let next =
            self.script.lock().expect("lock").pop_front().or_else(|| self.then.clone()).unwrap_or_default();
        let usage = Usage { prompt_tokens: 10, completion_tokens: 2, estimated: false, cost_micro_usd: None };
        let text = if next.is_empty() { "fixed".to_owned() } else { String::new() };
        Ok(ChatResponse { text, usage, model: "m".into(), tool_calls: next })
    }
}

/// Offers `read_file {path}` and `run_command {program, args}`; keeps the
/// key of every call; a call whose key is in `hang` never returns.
#[derive(Default)]
struct Box_ {
    keys: Mutex<Vec<String>>,
    hang: Mutex<Vec<String>>,
    started: tokio::sync::Notify,
}

#[async_trait]
impl Tools for Box_ {
    async fn specs(&self, _: &RunId, choice: &ToolChoice) -> Result<Vec<ToolSpec>, PortError> {
        Ok(choice
            .builtin
            .iter()
            .map(|name| ToolSpec {
                name: name.clone(),
                description: format!("{name} of the test box"),
                parameters: match name.as_str() {
                    "read_file" => {
                        json!({"type": "object", "required": ["path"], "properties": {"path": {"type": "string"}}, "additionalProperties": false})
                    }
                    _ => json!({"type": "object", "required": ["program"], "properties": {"program": {"type": "string"}, "args": {"type": "array", "items": {"type": "string"}}}}),
                },
            })
            .collect())
    }

    async fn call(&self, call: ToolInvocation) -> Result<String, ToolError> {
        self.keys.lock().expect("lock").push(call.idempotency_key.clone());
        if self.hang.lock().expect("lock").contains(&call.idempotency_key) {
            self.started.notify_one();
            std::future::pending::<()>().await;
        }
        match call.name.as_str() {
            "read_file" if call.arguments["path"] == "../../etc/passwd" => {
                Err(ToolError::Refused("`../../etc/passwd` resolves outside the allowed roots".into()))
            }
            "read_file" => Ok(format!("contents of {}", call.arguments["path"].as_str().unwrap_or("?"))),
            _ => Ok("exit 0".into()),
        }
    }

    async fn context(&self, patterns: &[String], _: usize) -> Result<Vec<ContextFile>, PortError> {
        patterns
            .iter()
            .map(|p| match p.as_str() {
                "AGENTS.md" => Ok(ContextFile { path: p.clone(), text: "Run cargo test.".into() }),
                _ => Err(PortError::new(ErrorClass::Fatal, format!("context `{p}`: no such file"))),
            })
            .collect()
    }

    async fn release(&self, _: &RunId) {}
}

fn engine(h: &Harness, llm: Arc<Scripted>, tools: Arc<Box_>) -> cairn_engine::Engine {
    let clock: Arc<dyn cairn_ports::Clock> = h.clock.clone();
    EngineBuilder::new(h.store.clone()).clock(clock).provider("default", llm).tools(tools).build()
}

async fn events(h: &Harness) -> Vec<EventKind> {
    h.store.load(&run_id(), 0).await.expect("stored").events.into_iter().map(|e| e.kind).collect()
}

#[tokio::test(start_paused = true)]
async fn a_tool_call_runs_its_result_goes_back_and_the_model_answers() {
    let h = Harness::new();
    let llm = Scripted::new(vec![vec![call("c1", "read_file", r#"{"path": "src/lib.rs"}"#)]], None);
    let tools = Arc::new(Box_::default());
    let state =
        engine(&h, llm.clone(), tools.clone()).run(definition(WF), json!({}), run_id()).await.expect("runs");
    assert_eq!(state.status, RunStatus::Completed);
    assert_eq!(state.steps[&StepPath::new("fix")].output, Some(json!("fixed")));
    assert_eq!(*tools.keys.lock().expect("lock"), ["run-1/fix/1/r1/0"]);
    let requests = llm.requests.lock().expect("lock").clone();
    assert_eq!(
        requests[0].tools.iter().map(|t| t.name.as_str()).collect::<Vec<_>>(),
        ["read_file", "run_command"]
    );
    let last = requests[1].messages.last().expect("a message");
    assert_eq!((last.role, last.content.as_str()), (Role::Tool, "contents of src/lib.rs"));
    assert_eq!(last.tool_call_id.as_deref(), Some("c1"));
    assert_eq!(
        requests.iter().map(|r| r.idempotency_key.as_str()).collect::<Vec<_>>(),
        ["run-1/fix/1", "run-1/fix/1/r1"],
        "each request after a round has a key of its own"
    );
    insta::assert_snapshot!(h.log().await);
}

#[tokio::test(start_paused = true)]
async fn refused_calls_go_back_to_the_model_recorded_and_never_run() {
    let h = Harness::new();
    let round = vec![
        call("a", "write_file", r#"{"path": "x", "content": "y"}"#),
        call("b", "read_file", "{not json"),
        call("c", "read_file", r#"{"file": "x"}"#),
        call("d", "read_file", r#"{"path": "../../etc/passwd"}"#),
        call("e", "run_command", r#"{"program": "cargo", "args": ["test; rm -rf /"]}"#),
    ];
    let llm = Scripted::new(vec![round], None);
    let tools = Arc::new(Box_::default());
    let state =
        engine(&h, llm.clone(), tools.clone()).run(definition(WF), json!({}), run_id()).await.expect("runs");
    assert_eq!(state.status, RunStatus::Completed);
    assert_eq!(
        *tools.keys.lock().expect("lock"),
        ["run-1/fix/1/r1/3", "run-1/fix/1/r1/4"],
        "only calls to offered tools with fitting arguments reach the box"
    );
    let requests = llm.requests.lock().expect("lock").clone();
    let results: Vec<String> =
        requests[1].messages.iter().filter(|m| m.role == Role::Tool).map(|m| m.content.clone()).collect();
    assert!(
        results[0].starts_with(
            "error: `write_file` is not a tool this agent may call; it may call: read_file, run_command"
        ),
        "{}",
        results[0]
    );
    assert!(results[1].starts_with("error: the arguments of `read_file` are not JSON"), "{}", results[1]);
    assert!(
        results[2].starts_with("error: the arguments of `read_file` do not match its schema"),
        "{}",
        results[2]
    );
    assert_eq!(results[3], "error: `../../etc/passwd` resolves outside the allowed roots");
    assert_eq!(results[4], "exit 0", "argv goes to the fence as one argument; the box ran it");
    let refused = events(&h)
        .await
        .into_iter()
        .filter(|e| matches!(e, EventKind::ToolReturned { refused: true, .. }))
        .count();
    assert_eq!(refused, 4, "each refusal is recorded");
}

#[tokio::test(start_paused = true)]
async fn an_endless_tool_loop_ends_at_max_tool_rounds_with_invalid_output() {
    let h = Harness::new();
    let llm = Scripted::new(Vec::new(), Some(vec![call("c", "read_file", r#"{"path": "a"}"#)]));
    let tools = Arc::new(Box_::default());
    let state =
        engine(&h, llm.clone(), tools.clone()).run(definition(WF), json!({}), run_id()).await.expect("runs");
    assert_eq!(state.status, RunStatus::Failed);
    let error = state.steps[&StepPath::new("fix")].error.clone().expect("an error");
    assert_eq!(error.class, ErrorClass::InvalidOutput);
    assert!(error.message.contains("more than 3 rounds"), "{}", error.message);
    assert_eq!(tools.keys.lock().expect("lock").len(), 3, "three rounds ran, the fourth did not");
    assert_eq!(llm.requests.lock().expect("lock").len(), 4);
    let usage: u64 = events(&h)
        .await
        .iter()
        .filter_map(|e| match e {
            EventKind::UsageRecorded { usage, .. } => Some(usage.prompt_tokens),
            _ => None,
        })
        .sum();
    assert_eq!(usage, 40, "every model call's usage is recorded, the last one's too");
}

#[tokio::test(start_paused = true)]
async fn a_crash_mid_loop_loses_no_returned_result_and_runs_the_call_in_flight_again_once() {
    let h = Harness::new();
    let first = vec![
        call("c1", "read_file", r#"{"path": "a"}"#),
        call("c2", "run_command", r#"{"program": "cargo"}"#),
    ];
    let llm = Scripted::new(vec![first.clone()], None);
    let tools = Arc::new(Box_::default());
    tools.hang.lock().expect("lock").push("run-1/fix/1/r1/1".into());
    let crashed = engine(&h, llm, tools.clone());
    let run = tokio::spawn(async move { crashed.run(definition(WF), json!({}), run_id()).await });
    tokio::time::timeout(Duration::from_secs(10), tools.started.notified())
        .await
        .expect("the second call starts");
    // The process dies with the second call in flight: nothing more is written.
    run.abort();
    let _ = run.await;
    let kinds = events(&h).await;
    assert!(kinds.iter().any(|e| matches!(e, EventKind::ToolReturned { call_id, .. } if call_id == "c1")));
    assert!(!kinds.iter().any(|e| matches!(e, EventKind::ToolReturned { call_id, .. } if call_id == "c2")));

    // A new driver takes the attempt over: the model is not asked again for
    // the round it already asked, c1 is not run again, c2 runs once more.
    let llm = Scripted::new(Vec::new(), None);
    let again = Arc::new(Box_::default());
    let state = engine(&h, llm.clone(), again.clone()).resume(&run_id()).await.expect("resumes");
    assert_eq!(state.status, RunStatus::Completed);
    assert_eq!(
        *again.keys.lock().expect("lock"),
        ["run-1/fix/1/r1/1"],
        "only the call in flight, with its key"
    );
    let requests = llm.requests.lock().expect("lock").clone();
    assert_eq!(requests.len(), 1, "one call to the model: the answer");
    assert_eq!(
        requests[0].idempotency_key, "run-1/fix/1/r1",
        "not the key of the call that asked for the tools"
    );
    let results: Vec<(&str, &str)> = requests[0]
        .messages
        .iter()
        .filter(|m| m.role == Role::Tool)
        .map(|m| (m.tool_call_id.as_deref().unwrap_or_default(), m.content.as_str()))
        .collect();
    assert_eq!(results, [("c1", "contents of a"), ("c2", "exit 0")], "the conversation goes on where it was");
    let asked = requests[0].messages.iter().find(|m| !m.tool_calls.is_empty()).expect("the recorded round");
    assert_eq!(asked.tool_calls, first);
}

#[tokio::test(start_paused = true)]
async fn context_files_come_before_the_system_prompt_and_a_missing_one_fails_the_step_naming_it() {
    let with = |context: &str| {
        WF.replace(
            "    max_tool_rounds: 3\n",
            &format!("    max_tool_rounds: 3\n    system: Be careful.\n    context: [{context}]\n"),
        )
    };
    let h = Harness::new();
    let llm = Scripted::new(Vec::new(), None);
    let state = engine(&h, llm.clone(), Arc::new(Box_::default()))
        .run(definition(&with("AGENTS.md")), json!({}), run_id())
        .await
        .expect("runs");
    assert_eq!(state.status, RunStatus::Completed);
    let requests = llm.requests.lock().expect("lock").clone();
    let firsts: Vec<(Role, &str)> =
        requests[0].messages.iter().take(2).map(|m| (m.role, m.content.as_str())).collect();
    assert_eq!(
        firsts,
        [
            (Role::System, "The project's context files:\n\n--- AGENTS.md ---\nRun cargo test."),
            (Role::System, "Be careful.")
        ]
    );

    let h = Harness::new();
    let state = engine(&h, Scripted::new(Vec::new(), None), Arc::new(Box_::default()))
        .run(definition(&with("missing.md")), json!({}), run_id())
        .await
        .expect("runs");
    assert_eq!(state.status, RunStatus::Failed);
    let error = state.steps[&StepPath::new("fix")].error.clone().expect("an error");
    assert_eq!(error.message, "context `missing.md`: no such file");
}
