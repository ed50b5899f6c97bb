//! The host's secrets never reach what the engine records: a provider or
//! handler that echoes a key (in an error, an answer, an output), and
//! inputs that hold one, leave it in no event, snapshot or state.

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use cairn_domain::state::{ErrorClass, RunStatus};
use cairn_ports::{
    ChatRequest, ChatResponse, HandlerCall, LlmProvider, PortError, RunStore, Secrets, StepHandler, Usage,
};
use serde_json::{Value, json};
use support::{Harness, definition, run_id};

const KEY: &str = "canary-XYZ-5f1e2d3c";

/// Fails its first call with the key in the error, then answers with it.
struct Echo {
    calls: AtomicUsize,
}

#[async_trait]
impl LlmProvider for Echo {
    async fn chat(&self, _: ChatRequest) -> Result<ChatResponse, PortError> {
        if self.calls.fetch_add(1, Ordering::SeqCst) == 0 {
            return Err(PortError::new(ErrorClass::Transient, format!("the server said: Bearer {KEY}"))
                .with_hint(format!("key {KEY}")));
        }
        let usage = Usage { prompt_tokens: 1, completion_tokens: 1, estimated: false, cost_micro_usd: None };
        Ok(ChatResponse { text: format!("you sent {KEY}"), usage, model: "m".into(), tool_calls: Vec::new() })
    }
}

/// Returns the key inside its output, keys of objects included.
struct Leaky;

#[async_trait]
impl StepHandler for Leaky {
    async fn call(&self, _: HandlerCall) -> Result<Value, PortError> {
        Ok(json!({ "token": KEY, KEY: [format!("x{KEY}x")] }))
    }
}

const WF: &str = "cairn: 1\nid: leak\ninputs:\n  secret: string\ndefaults:\n  retry: { max_attempts: 2, delay: 1s, jitter: false }\nagents:\n  w: { system: Be brief. }\nsteps:\n  - id: ask\n    agent: w\n    prompt: \"Say {{ inputs.secret }}\"\n  - id: tool\n    uses: leaky\n";

/// Everything the run left: its log, its latest snapshot, its state.
async fn everything(secrets: Secrets) -> (RunStatus, String) {
    let h = Harness::new();
    let engine = h
        .builder(Duration::ZERO)
        .provider("default", Arc::new(Echo { calls: AtomicUsize::new(0) }))
        .handler("leaky", Arc::new(Leaky))
        .secrets(secrets)
        .build();
    let state = engine.run(definition(WF), json!({ "secret": KEY }), run_id()).await.expect("runs");
    let events = h.store.load(&run_id(), 0).await.expect("stored").events;
    let snapshot = h.store.latest_snapshot(&run_id()).await.expect("readable");
    let all = format!(
        "{}\n{}\n{}",
        serde_json::to_string(&events).expect("json"),
        serde_json::to_string(&snapshot.map(|s| s.state)).expect("json"),
        serde_json::to_string(&state).expect("json"),
    );
    (state.status, all)
}

#[tokio::test(start_paused = true)]
async fn an_echoed_key_reaches_no_event_snapshot_or_state() {
    let (status, all) = everything(Secrets::new([KEY])).await;
    assert_eq!(status, RunStatus::Completed);
    assert!(!all.contains(KEY), "the key was kept: {all}");
    for said in ["the server said: Bearer ***", "you sent ***", "\"token\":\"***\"", "\"***\":[\"x***x\"]"] {
        assert!(all.contains(said), "{said} in {all}");
    }
    // Without the host's secrets nothing is hidden: the test sees what it guards.
    let (_, all) = everything(Secrets::default()).await;
    assert!(all.contains(KEY));
}
