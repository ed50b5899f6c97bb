//! `on_failure: goto` through the engine: the step the run goes back to
//! runs again knowing why the step after it failed, as `{{ feedback }}`.

mod support;

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use cairn_domain::state::{RunStatus, StepPath};
use cairn_engine::{Engine, EngineBuilder};
use cairn_ports::{
    ChatRequest, ChatResponse, Clock, CommandOutput, CommandRunner, CommandSpec, LlmProvider, PortError,
    Usage,
};
use serde_json::json;
use support::{Harness, definition, run_id};

/// Answers from a script, in call order, and keeps every request's last message.
#[derive(Default)]
struct Scripted {
    answers: Mutex<VecDeque<String>>,
    prompts: Mutex<Vec<String>>,
}

impl Scripted {
    fn new(answers: &[&str]) -> Arc<Self> {
        Arc::new(Self {
            answers: Mutex::new(answers.iter().map(|a| (*a).to_owned()).collect()),
            ..Default::default()
        })
    }

    fn prompts(&self) -> Vec<String> {
        self.prompts.lock().expect("lock").clone()
    }
}

#[async_trait]
impl LlmProvider for Scripted {
    async fn chat(&self, request: ChatRequest) -> Result<ChatResponse, PortError> {
        let prompt = request.messages.last().map(|m| m.content.clone()).unwrap_or_default();
        self.prompts.lock().expect("lock").push(prompt);
        let text = self.answers.lock().expect("lock").pop_front().unwrap_or_else(|| "the answer".into());
        Ok(ChatResponse {
            text,
            usage: Usage { prompt_tokens: 10, completion_tokens: 5, estimated: false, cost_micro_usd: None },
            model: "m".into(),
            tool_calls: Vec::new(),
        })
    }
}

/// A test run that fails once (exit code 101, with what cargo prints), then passes.
#[derive(Default)]
struct FailsOnce {
    calls: Mutex<u32>,
}

#[async_trait]
impl CommandRunner for FailsOnce {
    async fn run(&self, _: CommandSpec) -> Result<CommandOutput, PortError> {
        let mut calls = self.calls.lock().expect("lock");
        *calls += 1;
        Ok(if *calls == 1 {
            CommandOutput {
                exit_code: 101,
                stdout: "running 2 tests\ntest parse ... FAILED\n".into(),
                stderr: "error: test failed, to rerun pass `--lib`\n".into(),
            }
        } else {
            CommandOutput {
                exit_code: 0,
                stdout: "test result: ok. 2 passed\n".into(),
                stderr: String::new(),
            }
        })
    }
}

fn engine(h: &Harness, llm: Arc<Scripted>) -> Engine {
    let clock: Arc<dyn Clock> = h.clock.clone();
    EngineBuilder::new(h.store.clone())
        .clock(clock)
        .provider("default", llm)
        .commands(Arc::new(FailsOnce::default()))
        .build()
}

const TESTED: &str = r#"cairn: 1
id: deliver
agents:
  dev: { system: You write code. }
steps:
  - id: implement
    agent: dev
    prompt: "Implement the parser.{% if feedback %} Address: {{ feedback }}{% endif %}"
  - id: test
    command: [cargo, test]
    on_failure: { goto: implement, max: 2, then: stop }
"#;

#[tokio::test(start_paused = true)]
async fn the_step_a_failed_command_sends_back_to_reads_its_error_and_output() {
    let h = Harness::new();
    let llm = Scripted::new(&["v1", "v2"]);
    let state = engine(&h, llm.clone()).run(definition(TESTED), json!({}), run_id()).await.expect("runs");
    assert_eq!(state.status, RunStatus::Completed);
    let prompts = llm.prompts();
    assert_eq!(prompts.len(), 2, "implement ran twice: {prompts:?}");
    assert_eq!(prompts[0], "Implement the parser.", "no feedback on the first attempt");
    insta::assert_snapshot!(prompts[1], @r"
    Implement the parser. Address: `test` failed: the command exited with code 101

    stdout:
    running 2 tests
    test parse ... FAILED

    stderr:
    error: test failed, to rerun pass `--lib`
    ");
    assert_eq!(state.steps[&StepPath::new("test")].status, cairn_domain::state::StepStatus::Succeeded);
}

const JUDGED: &str = r#"cairn: 1
id: deliver
agents:
  dev: { system: You write code. }
  reviewer: { system: You review code. }
steps:
  - id: implement
    agent: dev
    prompt: "Implement the parser.{% if feedback %} Address: {{ feedback }}{% endif %}"
  - id: verify
    agent: reviewer
    prompt: "Verify {{ steps.implement.output }}."
    qa: { agent: reviewer, rubric: The verdict must cite a test. }
    output: { repair_attempts: 0 }
    retry: { max_attempts: 1 }
    on_failure: { goto: implement }
"#;

#[tokio::test(start_paused = true)]
async fn the_step_a_failed_qa_gate_sends_back_to_reads_the_judges_reason() {
    let h = Harness::new();
    let llm = Scripted::new(&[
        "v1",
        "Looks fine.",
        r#"{"pass": false, "reason": "no test is cited"}"#,
        "v2",
        "test_parse passes.",
        r#"{"pass": true, "reason": "cites test_parse"}"#,
    ]);
    let state = engine(&h, llm.clone()).run(definition(JUDGED), json!({}), run_id()).await.expect("runs");
    assert_eq!(state.status, RunStatus::Completed);
    let prompts = llm.prompts();
    assert_eq!(prompts.len(), 6, "{prompts:?}");
    insta::assert_snapshot!(prompts[3], @"Implement the parser. Address: `verify` failed: the answer failed its QA gate after 0 repairs: the QA judge failed it: no test is cited");
}
