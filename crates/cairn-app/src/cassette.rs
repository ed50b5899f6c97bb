//! Record and replay of LLM calls (`--llm record:FILE`, `--llm replay:FILE`):
//! deterministic tests of a workflow without a network. A cassette is a
//! JSON-lines file, one request and its answer per line. A request is
//! matched by what the model sees (model, messages, format, temperature,
//! token limit), never by its idempotency key, and holds no secret: keys
//! live only in the HTTP provider's headers, and an answer that echoes
//! one is written with it hidden.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use async_trait::async_trait;
use cairn_domain::state::ErrorClass;
use cairn_ports::{ChatRequest, ChatResponse, LlmProvider, PortError, Secrets, ToolCall, Usage};
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// One recorded call.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Entry {
    request: Value,
    text: String,
    usage: Usage,
    model: String,
    /// The tools the model asked for instead of answering.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    tool_calls: Vec<ToolCall>,
}

/// What of a request decides which recorded answer it gets (the tools
/// offered only when there are some, so cassettes recorded before tools
/// existed still match).
fn fingerprint(request: &ChatRequest) -> Value {
    let mut key = serde_json::json!({
        "model": request.model,
        "messages": request.messages,
        "format": request.format,
        "temperature": request.temperature,
        "max_tokens": request.max_tokens,
    });
    if !request.tools.is_empty() {
        key["tools"] = serde_json::json!(request.tools);
    }
    key
}

/// The file calls are recorded to, opened once (before any run exists,
/// so a path that cannot be written is refused up front) and shared by the
/// recorders of every provider: each call is one whole line.
pub struct Cassette {
    file: Mutex<std::fs::File>,
    secrets: Secrets,
}

impl Cassette {
    /// Opens `path` to append to (created when missing); every line
    /// written has `secrets` hidden.
    pub fn open(path: &Path, secrets: Secrets) -> Result<Self, String> {
        if path.is_dir() {
            return Err(format!("--llm record:{}: a directory, not a file", path.display()));
        }
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .map_err(|e| format!("--llm record:{}: {e}", path.display()))?;
        Ok(Self { file: Mutex::new(file), secrets })
    }

    /// Appends one recorded call, as one write.
    fn append(&self, mut entry: Entry) -> Result<(), PortError> {
        self.secrets.redact_value(&mut entry.request);
        self.secrets.redact_string(&mut entry.text);
        self.secrets.redact_string(&mut entry.model);
        let mut line =
            serde_json::to_string(&entry).map_err(|e| PortError::new(ErrorClass::Fatal, e.to_string()))?;
        line.push('\n');
        let mut file =
            self.file.lock().map_err(|_| PortError::new(ErrorClass::Fatal, "the cassette is poisoned"))?;
        file.write_all(line.as_bytes())
            .map_err(|e| PortError::new(ErrorClass::Fatal, format!("cannot write the cassette: {e}")))
    }
}

/// Passes every call to the provider it wraps and appends each answered
/// call to the cassette.
pub struct Recorder {
    inner: std::sync::Arc<dyn LlmProvider>,
    cassette: std::sync::Arc<Cassette>,
}

impl Recorder {
    /// Records the calls of `inner` to `cassette`.
    pub fn new(inner: std::sync::Arc<dyn LlmProvider>, cassette: std::sync::Arc<Cassette>) -> Self {
        Self { inner, cassette }
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
            tool_calls: answer.tool_calls.clone(),
        };
        self.cassette.append(entry)?;
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
        Ok(ChatResponse {
            text: e.text.clone(),
            usage: e.usage,
            model: e.model.clone(),
            tool_calls: e.tool_calls.clone(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cairn_ports::{ChatMessage, ResponseFormat, Role};
    use std::sync::Arc;

    const KEY: &str = "canary-XYZ-cassette1";

    /// Answers with the key in its text.
    struct Echo;

    #[async_trait]
    impl LlmProvider for Echo {
        async fn chat(&self, request: ChatRequest) -> Result<ChatResponse, PortError> {
            let asked = request.messages.last().map(|m| m.content.clone()).unwrap_or_default();
            Ok(ChatResponse {
                text: format!("{asked}: you sent Bearer {KEY}"),
                usage: Usage::default(),
                model: "m".into(),
                tool_calls: Vec::new(),
            })
        }
    }

    fn request(text: &str) -> ChatRequest {
        ChatRequest {
            model: None,
            messages: vec![ChatMessage::new(Role::User, text)],
            temperature: None,
            max_tokens: None,
            format: ResponseFormat::Text,
            tools: Vec::new(),
            idempotency_key: "r/s/1".into(),
            tokens: None,
        }
    }

    fn scratch(name: &str) -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(format!("cairn-cassette-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("scratch");
        dir
    }

    #[tokio::test]
    async fn recorders_share_one_file_and_write_no_secret() {
        let dir = scratch("share");
        let path = dir.join("calls.jsonl");
        let cassette = Arc::new(Cassette::open(&path, Secrets::new([KEY])).expect("opens"));
        let a = Arc::new(Recorder::new(Arc::new(Echo), Arc::clone(&cassette)));
        let b = Arc::new(Recorder::new(Arc::new(Echo), cassette));
        let calls: Vec<_> = (0..40)
            .map(|i| {
                let p = if i % 2 == 0 { Arc::clone(&a) } else { Arc::clone(&b) };
                tokio::spawn(async move { p.chat(request(&format!("q{i} {KEY}"))).await })
            })
            .collect();
        for call in calls {
            call.await.expect("joined").expect("answered");
        }
        let text = std::fs::read_to_string(&path).expect("written");
        assert!(!text.contains(KEY), "{text}");
        assert_eq!(text.lines().count(), 40);
        for line in text.lines() {
            let entry: Entry = serde_json::from_str(line).expect("one whole call a line");
            assert!(entry.text.ends_with("you sent Bearer ***"), "{}", entry.text);
        }
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn a_cassette_that_cannot_be_opened_is_refused_at_once() {
        let dir = scratch("refused");
        let missing = dir.join("no-such-dir").join("x.jsonl");
        let e = Cassette::open(&missing, Secrets::default()).err().expect("refused");
        assert!(e.starts_with("--llm record:"), "{e}");
        let e = Cassette::open(&dir, Secrets::default()).err().expect("a directory");
        assert!(e.contains("a directory"), "{e}");
        let _ = std::fs::remove_dir_all(dir);
    }
}
