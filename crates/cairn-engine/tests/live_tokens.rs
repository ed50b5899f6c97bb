//! Streamed text reaches the live sink with its attempt and without the
//! host's secrets, even when the model's stream splits a secret between
//! two pieces.

mod support;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use cairn_domain::id::RunId;
use cairn_domain::state::{ErrorClass, RunStatus};
use cairn_ports::{ChatRequest, ChatResponse, EventSink, LiveEvent, LlmProvider, PortError, Secrets, Usage};
use serde_json::json;
use support::{Harness, definition, run_id};

const KEY: &str = "canary-XYZ-5f1e2d3c";

/// Streams an answer that holds the key, split between pieces at `cut`;
/// its first call fails after streaming (so a second attempt streams again).
struct Splitting {
    cut: usize,
    calls: AtomicUsize,
}

#[async_trait]
impl LlmProvider for Splitting {
    async fn chat(&self, request: ChatRequest) -> Result<ChatResponse, PortError> {
        let call = self.calls.fetch_add(1, Ordering::SeqCst);
        let text = format!("call {call}: the key is {KEY}, see.");
        let (a, b) = text.split_at(self.cut.min(text.len()));
        if let Some(sink) = &request.tokens {
            for piece in [a, b] {
                (sink.0)(piece);
            }
        }
        if call == 0 {
            return Err(PortError::new(ErrorClass::Transient, "the stream broke"));
        }
        Ok(ChatResponse { text, usage: Usage::default(), model: "m".into(), tool_calls: Vec::new() })
    }
}

/// Keeps every token: its step, attempt and text.
#[derive(Default)]
struct Tokens(Mutex<Vec<(String, u32, String)>>);

impl EventSink for Tokens {
    fn emit(&self, _: &RunId, event: &LiveEvent<'_>) {
        if let LiveEvent::Token { path, attempt, text } = event {
            self.0.lock().expect("lock").push((path.to_string(), *attempt, (*text).to_owned()));
        }
    }
}

const WF: &str = "cairn: 1\nid: stream\ndefaults:\n  retry: { max_attempts: 2, delay: 1s, jitter: false }\nagents:\n  w: {}\nsteps:\n  - id: ask\n    agent: w\n    prompt: Say it.\n";

/// The tokens a run streams with the key split at `cut`.
async fn streamed(cut: usize, secrets: Secrets) -> Vec<(String, u32, String)> {
    let h = Harness::new();
    let tokens = Arc::new(Tokens::default());
    let engine = h
        .builder(Duration::ZERO)
        .provider("default", Arc::new(Splitting { cut, calls: AtomicUsize::new(0) }))
        .sink(tokens.clone())
        .secrets(secrets)
        .build();
    let state = engine.run(definition(WF), json!({}), run_id()).await.expect("runs");
    assert_eq!(state.status, RunStatus::Completed);
    tokens.0.lock().expect("lock").clone()
}

#[tokio::test(start_paused = true)]
async fn a_secret_split_between_streamed_pieces_never_reaches_the_sink() {
    let whole = format!("call 0: the key is {KEY}, see.");
    for cut in 0..=whole.len() {
        let tokens = streamed(cut, Secrets::new([KEY])).await;
        for (_, _, text) in &tokens {
            assert!(!text.contains(KEY), "cut {cut}: {text:?}");
            // No piece of the key longer than the held-back part either.
            assert!(!text.contains(&KEY[..KEY.len() / 2 + 1]), "cut {cut}: {text:?}");
        }
        for attempt in [1, 2] {
            let text: String =
                tokens.iter().filter(|(_, a, _)| *a == attempt).map(|(_, _, t)| t.as_str()).collect();
            assert_eq!(text, format!("call {}: the key is ***, see.", attempt - 1), "cut {cut}");
        }
        assert!(tokens.iter().all(|(path, _, _)| path == "ask"));
    }
}

#[tokio::test(start_paused = true)]
async fn without_secrets_tokens_flow_as_streamed_with_their_attempt() {
    let tokens = streamed(9, Secrets::default()).await;
    let want: Vec<(String, u32, String)> = [
        (1, "call 0: t"),
        (1, &*format!("he key is {KEY}, see.")),
        (2, "call 1: t"),
        (2, &*format!("he key is {KEY}, see.")),
    ]
    .into_iter()
    .map(|(attempt, text)| ("ask".to_owned(), attempt, text.to_owned()))
    .collect();
    assert_eq!(tokens, want);
}
