//! A team's own binary over cairn, in a few lines: every `cairn` verb
//! (`run`, `status`, `approve`, `events`, `fork`, ...) on the embedded
//! store, plus a step handler of its own that workflows call with
//! `uses: word_stats`. `docs/embedding.md` walks through it.

use async_trait::async_trait;
use cairn_app::{Cli, SledStores};
use cairn_domain::state::ErrorClass;
use cairn_ports::{HandlerCall, PortError, StepHandler};
use serde_json::{Value, json};

/// Counts the words, lines and characters of `with.text`. A handler may be
/// called again with the same idempotency key after a crash, so it must be
/// safe to repeat (this one has no effect at all).
struct WordStats;

#[async_trait]
impl StepHandler for WordStats {
    async fn call(&self, call: HandlerCall) -> Result<Value, PortError> {
        let Some(text) = call.with.get("text").and_then(Value::as_str) else {
            return Err(PortError::new(ErrorClass::Fatal, "`with.text` must be a string"));
        };
        Ok(json!({
            "words": text.split_whitespace().count(),
            "lines": text.lines().count(),
            "chars": text.chars().count(),
        }))
    }
}

fn main() -> std::process::ExitCode {
    Cli::new(SledStores)
        .front(cairn_server::Http)
        .client(cairn_client::Http)
        .handler("word_stats", WordStats)
        .run()
}
