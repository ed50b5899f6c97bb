//! The examples under the deterministic mock provider (`--llm mock`): the
//! mock answers every model call of every example in a shape its schemas
//! and templates accept, so each run goes as far as the mock can take it:
//! to the end, to a person's gate, or to a command the engine may not run,
//! which fails with its own cause rather than a template error.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use cairn_domain::Definition;
use cairn_domain::id::RunId;
use cairn_domain::state::{RunState, RunStatus};
use cairn_engine::{EngineBuilder, MemoryStore, MockLlm};
use cairn_ports::{Clock, CommandOutput, CommandRunner, CommandSpec, PortError};
use cairn_testkit::FakeClock;
use serde_json::{Value, json};

/// The examples and inputs that satisfy them, as the README runs them.
const EXAMPLES: [(&str, &[(&str, &str)]); 6] = [
    ("code-review", &[("file_path", "src/lib.rs")]),
    ("feature-delivery", &[("feature", "dark mode")]),
    ("plan-code-test", &[("task", "add a flag")]),
    ("product-discovery", &[("idea", "A shared shopping list")]),
    ("sprint-readiness", &[("repo", "."), ("feature", "search")]),
    ("ticket-triage", &[("ticket", "I was charged twice this month")]),
];

/// Loads `examples/NAME.yaml` with the schema files it names.
fn example(name: &str) -> Definition {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples");
    let file = format!("{name}.yaml");
    let bytes = std::fs::read(dir.join(&file)).expect("the example exists");
    let mut read = |rel: &str| std::fs::read_to_string(dir.join(rel)).map_err(|e| e.to_string());
    Definition::from_source(&file, &bytes, &mut read).expect("the example is valid")
}

/// Runs an example with the mock answering every provider, and `commands`
/// when given (else the engine's default, which allows no program).
async fn run(name: &str, inputs: &[(&str, &str)], commands: Option<Arc<dyn CommandRunner>>) -> RunState {
    let clock: Arc<dyn Clock> = Arc::new(FakeClock::default());
    let mut builder = EngineBuilder::new(Arc::new(MemoryStore::new()))
        .clock(clock.clone())
        .every_provider(Arc::new(MockLlm::new(clock, Duration::ZERO)));
    if let Some(commands) = commands {
        builder = builder.commands(commands);
    }
    let inputs: serde_json::Map<String, Value> =
        inputs.iter().map(|(k, v)| ((*k).to_owned(), json!(v))).collect();
    builder
        .build()
        .run(example(name), Value::Object(inputs), RunId::new("run-1").expect("id"))
        .await
        .expect("runs")
}

/// Where a run stopped, in one line: its status, and its error if it failed.
fn outcome(name: &str, state: &RunState) -> String {
    let status = serde_json::to_value(state.status).unwrap_or(Value::Null);
    let status = status.as_str().unwrap_or("?");
    match &state.error {
        Some(e) => format!("{name}: {status}: {}: {}", e.class, e.message),
        None => format!("{name}: {status}"),
    }
}

#[tokio::test(start_paused = true)]
async fn the_mock_takes_every_example_to_its_end_a_gate_or_a_command_it_may_not_run() {
    let mut lines = Vec::new();
    for (name, inputs) in EXAMPLES {
        lines.push(outcome(name, &run(name, inputs, None).await));
    }
    insta::assert_snapshot!(lines.join("\n"));
}

/// Answers every command with a clean exit: what an allowed `cargo test`
/// on a green tree gives.
struct Green;

#[async_trait]
impl CommandRunner for Green {
    async fn run(&self, _: CommandSpec) -> Result<CommandOutput, PortError> {
        Ok(CommandOutput { exit_code: 0, stdout: "ok".into(), stderr: String::new() })
    }
}

/// With its command allowed and passing, the loop of plan-code-test stops
/// after one iteration and the run completes on the mock's answers alone.
#[tokio::test(start_paused = true)]
async fn plan_code_test_completes_under_the_mock_once_its_command_may_run() {
    let state = run("plan-code-test", &[("task", "add a flag")], Some(Arc::new(Green))).await;
    assert_eq!(state.status, RunStatus::Completed, "{}", outcome("plan-code-test", &state));
    let iterations = state.steps.keys().filter(|p| p.as_str().ends_with(".test")).count();
    assert_eq!(iterations, 1);
}
