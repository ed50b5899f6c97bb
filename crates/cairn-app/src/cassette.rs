//! Record and replay of LLM calls (`--llm record:FILE`, `--llm replay:FILE`):
//! deterministic tests of a workflow without a network. A cassette is a
//! JSON-lines file, one request and its answer per line. A request is
//! matched by what the model sees (model, messages, format, temperature,
//! token limit), never by its idempotency key, and holds no API key: keys
//! live only in the HTTP provider's headers.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use async_trait::async_trait;
use cairn_domain::state::ErrorClass;
use cairn_ports::{ChatRequest, ChatResponse, LlmProvider, PortError, Usage};
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// One recorded call.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Entry {
    request: Value,
    text: String,
    usage: Usage,
    model: String,
}

/// What of a request decides which recorded answer it gets.
fn fingerprint(request: &ChatRequest) -> Value {
    serde_json::json!({
        "model": request.model,
        "messages": request.messages,
        "format": request.format,
        "temperature": request.temperature,
        "max_tokens": request.max_tokens,
    })
}

/// Passes every call to the provider it wraps and appends each answered
/// call to the cassette.
pub struct Recorder {
    inner: std::sync::Arc<dyn LlmProvider>,
    file: Mutex<std::fs::File>,
}

impl Recorder {
    /// Records the calls of `inner` to `path` (created, or appended to).
    pub fn new(inner: std::sync::Arc<dyn LlmProvider>, path: &Path) -> Result<Self, String> {
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .map_err(|e| format!("--llm record:{}: {e}", path.display()))?;
        Ok(Self { inner, file: Mutex::new(file) })
    }
}

#[async_trait]
impl LlmProvider for Recorder {
    async fn chat(&self, request: ChatRequest) -> Result<ChatResponse, PortError> {
        let key = fingerprint(&request);
        let answer = self.inner.chat(request).await?;
        let entry = Entry {
            request: key,
            text: answer.text.clone(),
            usage: answer.usage,
            model: answer.model.clone(),
        };
        let line =
            serde_json::to_string(&entry).map_err(|e| PortError::new(ErrorClass::Fatal, e.to_string()))?;
        let mut file =
            self.file.lock().map_err(|_| PortError::new(ErrorClass::Fatal, "the cassette is poisoned"))?;
        writeln!(file, "{line}")
            .map_err(|e| PortError::new(ErrorClass::Fatal, format!("cannot write the cassette: {e}")))?;
        Ok(answer)
    }
}

/// Answers from a cassette, with no network: each request gets the first
/// recorded answer to an equal request not yet given (the last one again
/// once all are given); a request never recorded fails clearly.
pub struct Replayer {
    path: PathBuf,
    entries: Vec<Entry>,
    given: Mutex<Vec<bool>>,
}

impl Replayer {
    /// Loads the cassette at `path`.
    pub fn open(path: &Path) -> Result<Self, String> {
        let text =
            std::fs::read_to_string(path).map_err(|e| format!("--llm replay:{}: {e}", path.display()))?;
        let entries = text
            .lines()
            .enumerate()
            .filter(|(_, l)| !l.trim().is_empty())
            .map(|(i, l)| {
                serde_json::from_str::<Entry>(l).map_err(|e| {
                    format!("--llm replay:{}:{}: not a recorded call: {e}", path.display(), i + 1)
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        let given = Mutex::new(vec![false; entries.len()]);
        Ok(Self { path: path.to_path_buf(), entries, given })
    }
}

#[async_trait]
impl LlmProvider for Replayer {
    async fn chat(&self, request: ChatRequest) -> Result<ChatResponse, PortError> {
        let key = fingerprint(&request);
        let mut given =
            self.given.lock().map_err(|_| PortError::new(ErrorClass::Fatal, "the cassette is poisoned"))?;
        let matching: Vec<usize> =
            (0..self.entries.len()).filter(|&i| self.entries[i].request == key).collect();
        let Some(&i) = matching.iter().find(|&&i| !given[i]).or(matching.last()) else {
            let asked = request
                .messages
                .last()
                .map(|m| m.content.chars().take(80).collect::<String>())
                .unwrap_or_default();
            return Err(PortError::new(
                ErrorClass::Fatal,
                format!("the cassette {} has no answer to this request (it asks: {asked:?})", self.path.display()),
            )
            .with_hint("record it again with --llm record:FILE; a prompt that changed (or reads the run id) no longer matches"));
        };
        given[i] = true;
        let e = &self.entries[i];
        Ok(ChatResponse { text: e.text.clone(), usage: e.usage, model: e.model.clone() })
    }
}
