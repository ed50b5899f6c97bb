//! The HTTP LLM provider: cairn's `LlmProvider` port over any
//! OpenAI-compatible chat-completions server (OpenAI, vLLM, Ollama,
//! llama.cpp, LiteLLM, Gemini's and xAI's compatible endpoints).
//!
//! What it is: one `POST {base_url}/chat/completions` per call, with the
//! `Idempotency-Key` header; streamed (server-sent events, parsed as they
//! arrive, each piece forwarded live) unless the provider sets
//! `stream = false`; structured output as `response_format` `json_schema`,
//! `json_object`, or instructions in the prompt, per provider. Every fault
//! is classed for the engine's retry policy: connection failures, resets,
//! 5xx, streams cut before they finish, `error` events inside a stream and
//! malformed bodies are `transient` (a partial stream is discarded whole);
//! 429 is `rate_limited` with its `Retry-After` (seconds, HTTP date, or
//! `retry-after-ms`, obeyed up to `max_retry_after`; a longer one fails
//! the call at once, `rate_limited` with no wait), but
//! `insufficient_quota` is `fatal`; 401/403 are
//! `permission` with a hint naming the key setting; other 4xx are `fatal`
//! with the server's message; running out of time is `timeout`. The only
//! retry here is a connection refused before any byte arrived, twice,
//! quickly; everything else is the step's retry policy. Requests in flight
//! (`max_concurrency`) and requests per minute (a token bucket) are bounded
//! per provider, across every run the process drives. Streams are read in
//! one pass, an answer and one event are capped in size (`invalid_output`
//! past them), and the whole `timeout` holds whatever the server sends.
//!
//! What it deliberately does not do: ever write an API key anywhere: the
//! key is read from the environment variable the config names, kept in a
//! type whose `Debug` hides it, and only sent as a header; a server that
//! echoes it (or the credentials of the base URL) finds it hidden as
//! `***` in every error the provider returns.
//!
//! May depend on: `cairn-domain`, `cairn-ports`, reqwest, serde, tokio
//! (time, sync). Never on the engine or the app.
//!
//! Read first: [`HttpProvider`], [`ProviderSettings`].

pub mod sse;

use std::fmt;
use std::sync::Mutex;
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use cairn_domain::event::Cause;
use cairn_domain::state::ErrorClass;
use cairn_ports::{
    ChatMessage, ChatRequest, ChatResponse, LlmProvider, PortError, ResponseFormat, Role, Secrets, ToolCall,
    Usage,
};
use serde_json::{Value, json};
use tokio::sync::Semaphore;
use tokio::time::Instant;

/// An API key. Its `Debug` and `Display` never show it.
#[derive(Clone, PartialEq, Eq)]
pub struct ApiKey(String);

impl ApiKey {
    /// Wraps a key read from the environment.
    pub fn new(key: String) -> Self {
        Self(key)
    }
}

impl fmt::Debug for ApiKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ApiKey(***)")
    }
}

/// How a step's output schema reaches the model, per provider: servers
/// differ in what `response_format` they accept.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum StructuredOutput {
    /// `response_format: {type: json_schema, strict: true}` (OpenAI, vLLM, recent Ollama).
    #[default]
    JsonSchema,
    /// `response_format: {type: json_object}`, the schema in the instructions.
    JsonObject,
    /// No `response_format`; the schema in the instructions only.
    Prompt,
}

impl StructuredOutput {
    /// The spellings in `cairn.toml`.
    pub const ALL: [(&'static str, StructuredOutput); 3] = [
        ("json_schema", StructuredOutput::JsonSchema),
        ("json_object", StructuredOutput::JsonObject),
        ("prompt", StructuredOutput::Prompt),
    ];
}

/// One provider of the config (`[providers.NAME]`).
#[derive(Debug, Clone, PartialEq)]
pub struct ProviderSettings {
    /// The provider's name, for messages.
    pub name: String,
    /// The OpenAI-compatible `/v1` base URL.
    pub base_url: String,
    /// The key, when the server needs one.
    pub api_key: Option<ApiKey>,
    /// The setting that holds the key (`CAIRN_LLM_API_KEY`, `OPENAI_API_KEY`), for hints.
    pub api_key_setting: String,
    /// The model used when the agent names none.
    pub model: Option<String>,
    /// The limit on a whole request.
    pub timeout: Duration,
    /// The limit on connecting.
    pub connect_timeout: Duration,
    /// The limit on the wait for the response to start.
    pub first_byte_timeout: Duration,
    /// The limit on a silence inside a streamed answer.
    pub idle_timeout: Duration,
    /// Stream answers (server-sent events); `false` for servers that cannot.
    pub stream: bool,
    /// How output schemas are sent.
    pub structured_output: StructuredOutput,
    /// Requests in flight at once, across every run of the process.
    pub max_concurrency: Option<u32>,
    /// Requests started per minute, across every run of the process.
    pub requests_per_minute: Option<u32>,
    /// The longest `Retry-After` obeyed, so a server cannot hold a step
    /// for a day: one asking for more fails the call at once
    /// (`rate_limited`, with no wait handed on), saying what it asked.
    pub max_retry_after: Duration,
    /// Bytes of an answer's text kept at most; a longer answer fails.
    pub max_answer_bytes: usize,
}

impl ProviderSettings {
    /// Settings with the built-in defaults: 120 s per request, 10 s to
    /// connect, the whole timeout to the first byte, 60 s of silence in a
    /// stream, streaming on, `json_schema`, no limits on requests, a
    /// `Retry-After` obeyed up to 5 minutes, answers up to 4 MiB.
    pub fn new(name: impl Into<String>, base_url: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            base_url: base_url.into(),
            api_key: None,
            api_key_setting: "CAIRN_LLM_API_KEY".into(),
            model: None,
            timeout: Duration::from_secs(120),
            connect_timeout: Duration::from_secs(10),
            first_byte_timeout: Duration::from_secs(120),
            idle_timeout: Duration::from_secs(60),
            stream: true,
            structured_output: StructuredOutput::JsonSchema,
            max_concurrency: None,
            requests_per_minute: None,
            max_retry_after: Duration::from_secs(300),
            max_answer_bytes: 4 << 20,
        }
    }

    /// The values this provider must never let out: its key, and the
    /// credentials its base URL carries (`user:pass@`, `?key=`).
    pub fn secrets(&self) -> Secrets {
        let key = Secrets::new(self.api_key.iter().map(|k| k.0.as_str()));
        key.with(&Secrets::of_url(&self.base_url))
    }

    /// The limits of a streamed answer: its text, and one event (room for
    /// the text escaped as JSON, and what surrounds it).
    fn stream_limits(&self) -> sse::Limits {
        let max_text = self.max_answer_bytes;
        sse::Limits { max_event: max_text.saturating_mul(2).saturating_add(ERROR_BODY_BYTES), max_text }
    }
}

/// Connection attempts before any byte arrived that are tried again, quickly.
const CONNECT_RETRIES: u32 = 2;

/// Bytes of an error body read: enough for any message, never a flood.
const ERROR_BODY_BYTES: usize = 64 << 10;

/// How long a stream that gave its finish reason is waited on for its
/// usage and `[DONE]` before the answer is used as it is.
const AFTER_FINISH: Duration = Duration::from_secs(1);

/// Chat completions over HTTP.
pub struct HttpProvider {
    settings: ProviderSettings,
    client: reqwest::Client,
    url: String,
    /// Hidden from every error this provider returns.
    secrets: Secrets,
    in_flight: Option<Semaphore>,
    bucket: Option<Mutex<Bucket>>,
}

/// A token bucket: `per_minute` requests a minute, at most that many at once.
struct Bucket {
    per_minute: f64,
    tokens: f64,
    at: Instant,
}

impl Bucket {
    /// Takes a token; the time to wait first when there is none.
    fn take(&mut self, now: Instant) -> Duration {
        let refill = now.saturating_duration_since(self.at).as_secs_f64() * self.per_minute / 60.0;
        self.tokens = (self.tokens + refill).min(self.per_minute);
        self.at = now;
        self.tokens -= 1.0;
        if self.tokens >= 0.0 {
            Duration::ZERO
        } else {
            Duration::from_secs_f64(-self.tokens * 60.0 / self.per_minute)
        }
    }
}

impl HttpProvider {
    /// A provider for `settings`; fails on a base URL that is not
    /// `http(s)://` (the message shows no credential of it).
    pub fn new(settings: ProviderSettings) -> Result<Self, String> {
        let secrets = settings.secrets();
        let (path, query) = match settings.base_url.split_once('?') {
            Some((path, query)) => (path, Some(query)),
            None => (settings.base_url.as_str(), None),
        };
        let base = path.trim_end_matches('/');
        if !(base.starts_with("http://") || base.starts_with("https://")) {
            let message = format!(
                "provider `{}`: base_url `{}` must start with http:// or https://",
                settings.name, settings.base_url
            );
            return Err(secrets.redact(&message).into_owned());
        }
        let client = reqwest::Client::builder()
            .connect_timeout(settings.connect_timeout.min(settings.timeout))
            .build()
            .map_err(|e| secrets.redact(&format!("provider `{}`: {e}", settings.name)).into_owned())?;
        // A query of the base URL (`?api-version=`) stays after the path.
        let url = match query {
            Some(query) => format!("{base}/chat/completions?{query}"),
            None => format!("{base}/chat/completions"),
        };
        let in_flight = settings.max_concurrency.map(|n| Semaphore::new(n.max(1) as usize));
        let bucket = settings.requests_per_minute.map(|n| {
            let per_minute = f64::from(n.max(1));
            Mutex::new(Bucket { per_minute, tokens: per_minute, at: Instant::now() })
        });
        Ok(Self { settings, client, url, secrets, in_flight, bucket })
    }

    /// The request body cairn sends for `request`.
    pub fn body(&self, request: &ChatRequest, model: &str) -> Value {
        let mut messages = request.messages.clone();
        let instructions = request.format.instructions().unwrap_or_default();
        let mut body = json!({ "model": model, "stream": self.settings.stream });
        match (&request.format, self.settings.structured_output) {
            (ResponseFormat::Text, _) => {}
            (ResponseFormat::JsonSchema(schema), StructuredOutput::JsonSchema) => {
                body["response_format"] = json!({"type": "json_schema", "json_schema": {"name": "output", "schema": schema, "strict": true}});
            }
            (ResponseFormat::Json, StructuredOutput::JsonSchema | StructuredOutput::JsonObject) => {
                body["response_format"] = json!({"type": "json_object"});
            }
            (ResponseFormat::JsonSchema(_), StructuredOutput::JsonObject) => {
                body["response_format"] = json!({"type": "json_object"});
                add_instructions(&mut messages, instructions);
            }
            (ResponseFormat::JsonSchema(_) | ResponseFormat::Json, StructuredOutput::Prompt) => {
                add_instructions(&mut messages, instructions);
            }
        }
        body["messages"] = Value::Array(messages.iter().map(wire).collect());
        if !request.tools.is_empty() {
            let tools = request.tools.iter().map(|t| {
                json!({"type": "function", "function": {"name": t.name, "description": t.description, "parameters": t.parameters}})
            });
            body["tools"] = Value::Array(tools.collect());
        }
        if self.settings.stream {
            body["stream_options"] = json!({"include_usage": true});
        }
        if let Some(t) = request.temperature {
            body["temperature"] = json!(t);
        }
        if let Some(m) = request.max_tokens {
            body["max_tokens"] = json!(m);
        }
        body
    }

    /// Waits for a place among the requests in flight and for a token of
    /// the per-minute budget.
    async fn admit(&self) -> Option<tokio::sync::SemaphorePermit<'_>> {
        let permit = match &self.in_flight {
            Some(s) => s.acquire().await.ok(),
            None => None,
        };
        if let Some(bucket) = &self.bucket {
            let wait = bucket.lock().map(|mut b| b.take(Instant::now())).unwrap_or_default();
            if !wait.is_zero() {
                tokio::time::sleep(wait).await;
            }
        }
        permit
    }

    /// Sends the request; a connection refused before any byte arrived is
    /// tried again, at most twice, quickly.
    async fn send(
        &self,
        request: &ChatRequest,
        body: &Value,
        deadline: Instant,
    ) -> Result<reqwest::Response, PortError> {
        let first_byte = Instant::now() + self.settings.first_byte_timeout;
        let mut tries = 0;
        loop {
            let mut http =
                self.client.post(&self.url).header("Idempotency-Key", &request.idempotency_key).json(body);
            if let Some(key) = &self.settings.api_key {
                http = http.bearer_auth(&key.0);
            }
            match tokio::time::timeout_at(first_byte.min(deadline), http.send()).await {
                Err(_) if Instant::now() >= deadline => return Err(self.overtime()),
                Err(_) => {
                    return Err(timed_out(
                        &self.settings,
                        format!("did not start answering within {:?}", self.settings.first_byte_timeout),
                    ));
                }
                Ok(Err(e)) if e.is_connect() && tries < CONNECT_RETRIES => {
                    tries += 1;
                    tokio::time::sleep(Duration::from_millis(100 * u64::from(tries))).await;
                }
                Ok(Err(e)) => return Err(transport_error(&self.settings, &e)),
                Ok(Ok(response)) => return Ok(response),
            }
        }
    }

    /// The error of a request that ran out of its whole time.
    fn overtime(&self) -> PortError {
        timed_out(&self.settings, format!("did not finish within {:?}", self.settings.timeout))
    }

    /// The next chunk of a response body, within the idle timeout and the
    /// request's deadline; checked again once it came, so the deadline
    /// holds whatever reading the chunks costs.
    async fn chunk(
        &self,
        response: &mut reqwest::Response,
        deadline: Instant,
        idle: Duration,
    ) -> Result<Option<Vec<u8>>, PortError> {
        if Instant::now() >= deadline {
            return Err(self.overtime());
        }
        match tokio::time::timeout_at((Instant::now() + idle).min(deadline), response.chunk()).await {
            Err(_) if Instant::now() >= deadline => Err(self.overtime()),
            Err(_) => Err(timed_out(
                &self.settings,
                format!("went silent for {idle:?} in the middle of its answer"),
            )),
            Ok(Err(e)) => Err(transport_error(&self.settings, &e)),
            Ok(Ok(chunk)) => Ok(chunk.map(|b| b.to_vec())),
        }
    }

    /// The whole body, at most `limit` bytes: `Err` with what was read when
    /// it is longer.
    async fn body_bytes(
        &self,
        response: &mut reqwest::Response,
        deadline: Instant,
        limit: usize,
    ) -> Result<Result<Vec<u8>, Vec<u8>>, PortError> {
        let mut bytes = Vec::new();
        while let Some(chunk) = self.chunk(response, deadline, self.settings.idle_timeout).await? {
            if bytes.len() + chunk.len() > limit {
                let room = limit - bytes.len();
                bytes.extend_from_slice(&chunk[..room]);
                return Ok(Err(bytes));
            }
            bytes.extend_from_slice(&chunk);
        }
        Ok(Ok(bytes))
    }

    async fn call(
        &self,
        request: &ChatRequest,
        model: String,
        deadline: Instant,
    ) -> Result<ChatResponse, PortError> {
        let body = self.body(request, &model);
        let mut response = self.send(request, &body, deadline).await?;
        let status = response.status();
        if !status.is_success() {
            let headers = response.headers().clone();
            // A body past the limit is cut: its start says what went wrong.
            let text = self.body_bytes(&mut response, deadline, ERROR_BODY_BYTES).await?;
            let text = text.unwrap_or_else(|cut| cut);
            return Err(self.status_error(
                status,
                &headers,
                &String::from_utf8_lossy(&text),
                SystemTime::now(),
            ));
        }
        let streamed = response
            .headers()
            .get(reqwest::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.starts_with("text/event-stream"));
        let (text, tool_calls, usage, answered_by) = if streamed {
            let mut stream = sse::Stream::new(self.settings.stream_limits(), self.secrets.clone());
            loop {
                // Once the model said it finished, only the usage and
                // `[DONE]` may follow: a server that holds the connection
                // open (or drops it) does not cost the answer.
                let idle = match stream.finish {
                    Some(_) => self.settings.idle_timeout.min(AFTER_FINISH),
                    None => self.settings.idle_timeout,
                };
                let chunk = match self.chunk(&mut response, deadline, idle).await {
                    Ok(Some(chunk)) => chunk,
                    Ok(None) => break,
                    Err(_) if stream.finish.is_some() => break,
                    Err(e) => return Err(e),
                };
                for delta in stream.feed(&chunk)? {
                    if let Some(sink) = &request.tokens {
                        (sink.0)(&delta);
                    }
                }
                if stream.is_done() {
                    break;
                }
            }
            if !stream.is_complete() {
                return Err(PortError::new(
                    ErrorClass::Transient,
                    format!(
                        "provider `{}` ended its stream before the answer was finished ({} characters in)",
                        self.settings.name,
                        stream.text.chars().count()
                    ),
                )
                .with_hint("the partial answer was discarded; the step's retry policy decides what next"));
            }
            (stream.text, stream.tool_calls, stream.usage, stream.model)
        } else {
            let limits = self.settings.stream_limits();
            let Ok(bytes) = self.body_bytes(&mut response, deadline, limits.max_event).await? else {
                return Err(sse::too_large(format!(
                    "the provider's answer passed {} bytes",
                    limits.max_event
                )));
            };
            let parsed: Value = serde_json::from_slice(&bytes).map_err(|e| {
                PortError::new(ErrorClass::Transient, format!("the provider's answer is not JSON: {e}"))
            })?;
            let message = &parsed["choices"][0]["message"];
            let tool_calls = tool_calls_of(&message["tool_calls"])?;
            let text = match message["content"].as_str() {
                Some(text) => text,
                // A model that asks for tools may say nothing with them.
                None if !tool_calls.is_empty() => "",
                None => {
                    return Err(PortError::new(
                        ErrorClass::Transient,
                        "the provider's answer has no choices[0].message.content",
                    ));
                }
            };
            if text.len() > limits.max_text {
                return Err(sse::too_large(format!(
                    "the provider's answer passed {} bytes",
                    limits.max_text
                )));
            }
            let usage = match (
                parsed["usage"]["prompt_tokens"].as_u64(),
                parsed["usage"]["completion_tokens"].as_u64(),
            ) {
                (Some(p), Some(c)) => Some(Usage::reported(p, c)),
                _ => None,
            };
            (text.to_owned(), tool_calls, usage, parsed["model"].as_str().map(str::to_owned))
        };
        let asked: String = tool_calls.iter().map(|c| c.arguments.as_str()).collect();
        let usage = usage.unwrap_or_else(|| Usage::estimate(&request.messages, &format!("{text}{asked}")));
        Ok(ChatResponse { text, usage, model: answered_by.unwrap_or(model), tool_calls })
    }

    /// The error of a non-success status.
    fn status_error(
        &self,
        status: reqwest::StatusCode,
        headers: &reqwest::header::HeaderMap,
        body: &str,
        now: SystemTime,
    ) -> PortError {
        let message = server_message(body).unwrap_or_else(|| status.to_string());
        // Hidden before it is cut, so no part of a secret is left.
        let message: String = self.secrets.redact(&message).chars().take(500).collect();
        let code = status.as_u16();
        match code {
            401 | 403 => {
                PortError::new(ErrorClass::Permission, format!("the provider answered {code}: {message}"))
                    .with_cause(Cause::KeyRefused {
                        provider: self.settings.name.clone(),
                        setting: self.settings.api_key_setting.clone(),
                    })
            }
            429 if out_of_quota(body) => {
                PortError::new(ErrorClass::Fatal, format!("the provider answered 429: {message}")).with_hint(
                    "the account's quota is used up, so waiting does not help: add credit, or use another key or provider",
                )
            }
            429 => {
                let error =
                    PortError::new(ErrorClass::RateLimited, format!("the provider answered 429: {message}"))
                        .with_cause(Cause::RateLimited { provider: self.settings.name.clone() });
                match retry_after(headers, now) {
                    Some(asked) if asked > self.settings.max_retry_after => self.too_long_a_wait(error, asked),
                    asked => PortError { retry_after: asked, ..error },
                }
            }
            500..=599 => {
                PortError::new(ErrorClass::Transient, format!("the provider answered {code}: {message}"))
            }
            _ => PortError::new(ErrorClass::Fatal, format!("the provider answered {code}: {message}"))
                .with_hint("the request was refused as it is; check the model name and the step's settings"),
        }
    }

    /// A 429 whose server asks for a longer wait than `max_retry_after`:
    /// the call fails at once, `rate_limited`, saying what was asked and
    /// the limit, and hands the engine no wait (`retry_after` is `None`).
    /// Why none: the engine takes a `retry_after` as the least delay
    /// before its next attempt, so the asked wait would park the step for
    /// as long as the server says (a day), and the limit would be a wait
    /// the server did not ask for and refuses anyway. The step's own
    /// retry policy still applies (`rate_limited` is retried by default,
    /// after its backoff, up to `max_attempts`); each further attempt is
    /// likely refused the same way and fails as quickly, so the step ends
    /// `rate_limited` in seconds, with this message and hint.
    fn too_long_a_wait(&self, error: PortError, asked: Duration) -> PortError {
        let limit = self.settings.max_retry_after;
        PortError {
            retry_after: None,
            message: format!(
                "{}; it asks to wait {}, more than the {} this provider allows",
                error.message,
                words(asked),
                words(limit)
            ),
            hint: Some(
                "cairn does not wait that long between attempts, so this attempt failed at once: run the step \
                 again once the provider's limit resets, or send its agent to another provider"
                    .into(),
            ),
            ..error
        }
    }
}

/// A message as the chat-completions API takes it: an assistant's tool
/// calls as `function` calls, a tool's result with the call it answers.
fn wire(message: &ChatMessage) -> Value {
    let role = match message.role {
        Role::System => "system",
        Role::User => "user",
        Role::Assistant => "assistant",
        Role::Tool => "tool",
    };
    let mut m = json!({"role": role, "content": message.content});
    if !message.tool_calls.is_empty() {
        let calls = message.tool_calls.iter().map(|c| {
            json!({"id": c.id, "type": "function", "function": {"name": c.name, "arguments": c.arguments}})
        });
        m["tool_calls"] = Value::Array(calls.collect());
    }
    if let Some(id) = &message.tool_call_id {
        m["tool_call_id"] = json!(id);
    }
    m
}

/// The tool calls of a whole (not streamed) answer: each with its id, name
/// and arguments text.
fn tool_calls_of(calls: &Value) -> Result<Vec<ToolCall>, PortError> {
    let Some(calls) = calls.as_array() else { return Ok(Vec::new()) };
    if calls.len() > sse::MAX_TOOL_CALLS {
        return Err(PortError::new(
            ErrorClass::InvalidOutput,
            format!(
                "the model asked for {} tool calls at once, more than {}",
                calls.len(),
                sse::MAX_TOOL_CALLS
            ),
        ));
    }
    calls
        .iter()
        .map(|c| {
            let name = c["function"]["name"].as_str().ok_or_else(|| {
                PortError::new(ErrorClass::Transient, "the provider's answer has a tool call without a name")
            })?;
            Ok(ToolCall {
                id: c["id"].as_str().unwrap_or_default().to_owned(),
                name: name.to_owned(),
                arguments: c["function"]["arguments"].as_str().unwrap_or_default().to_owned(),
            })
        })
        .collect()
}

/// Adds instructions after the system messages (or first, when there are none).
fn add_instructions(messages: &mut Vec<ChatMessage>, text: String) {
    let at = messages.iter().take_while(|m| m.role == Role::System).count();
    messages.insert(at, ChatMessage::new(Role::System, text));
}

/// `error.message` of an OpenAI-style error body, whole.
fn server_message(body: &str) -> Option<String> {
    let v: Value = serde_json::from_str(body).ok()?;
    let m = v.get("error").and_then(|e| e.get("message").or(Some(e))).and_then(Value::as_str)?;
    Some(m.to_owned())
}

/// A duration as people read it (`5m`, `1d03h46m40s`).
fn words(d: Duration) -> String {
    cairn_domain::duration::Duration::from_millis(u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .to_string()
}

/// A 429 that means the account has no quota left (`insufficient_quota`).
fn out_of_quota(body: &str) -> bool {
    let Ok(v) = serde_json::from_str::<Value>(body) else { return false };
    let e = &v["error"];
    [&e["code"], &e["type"]].iter().any(|f| f.as_str() == Some("insufficient_quota"))
}

/// How long a 429 asks to wait: `retry-after-ms`, or `Retry-After` in
/// seconds or as an HTTP date (relative to `now`).
fn retry_after(headers: &reqwest::header::HeaderMap, now: SystemTime) -> Option<Duration> {
    let text = |name: &str| headers.get(name).and_then(|v| v.to_str().ok()).map(str::trim);
    if let Some(ms) = text("retry-after-ms").and_then(|v| v.parse::<f64>().ok()) {
        return Some(Duration::from_millis(ms.max(0.0) as u64));
    }
    let value = text("retry-after")?;
    if let Ok(s) = value.parse::<f64>() {
        return Some(Duration::from_millis((s.max(0.0) * 1000.0) as u64));
    }
    let at = httpdate::parse_http_date(value).ok()?;
    Some(at.duration_since(now).unwrap_or(Duration::ZERO))
}

#[async_trait]
impl LlmProvider for HttpProvider {
    async fn chat(&self, request: ChatRequest) -> Result<ChatResponse, PortError> {
        let Some(model) = request.model.clone().or_else(|| self.settings.model.clone()) else {
            return Err(PortError::new(
                ErrorClass::Fatal,
                format!("no model for provider `{}`", self.settings.name),
            )
            .with_cause(Cause::NoModel { provider: self.settings.name.clone() }));
        };
        let _permit = self.admit().await;
        let deadline = Instant::now() + self.settings.timeout;
        let answer = match tokio::time::timeout_at(deadline, self.call(&request, model, deadline)).await {
            Ok(answer) => answer,
            Err(_) => Err(self.overtime()),
        };
        // Whatever the server echoed (a key, a URL with credentials) is hidden here, once.
        answer.map_err(|e| self.secrets.redact_error(e))
    }
}

fn timed_out(settings: &ProviderSettings, what: String) -> PortError {
    PortError::new(ErrorClass::Timeout, format!("provider `{}` {what}", settings.name))
        .with_cause(Cause::ProviderTimeout { provider: settings.name.clone() })
}

/// Connection-level failures: never the URL's query or a header, so no key leaks.
fn transport_error(settings: &ProviderSettings, e: &reqwest::Error) -> PortError {
    let what = if e.is_timeout() {
        return timed_out(settings, "timed out".into());
    } else if e.is_connect() {
        "could not connect"
    } else {
        "the connection failed"
    };
    PortError::new(
        ErrorClass::Transient,
        format!("provider `{}` at {}: {what}", settings.name, settings.base_url),
    )
    .with_hint("check that the server is running and the base URL is right")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::UNIX_EPOCH;

    #[test]
    fn retry_after_reads_seconds_dates_and_milliseconds() {
        let now = UNIX_EPOCH + Duration::from_secs(1_445_412_470); // Wed, 21 Oct 2015 07:27:50 GMT
        let headers = |name: &'static str, value: &'static str| {
            let mut h = reqwest::header::HeaderMap::new();
            h.insert(name, reqwest::header::HeaderValue::from_static(value));
            h
        };
        assert_eq!(retry_after(&headers("retry-after", "3"), now), Some(Duration::from_secs(3)));
        assert_eq!(retry_after(&headers("retry-after-ms", "250"), now), Some(Duration::from_millis(250)));
        assert_eq!(
            retry_after(&headers("retry-after", "Wed, 21 Oct 2015 07:28:00 GMT"), now),
            Some(Duration::from_secs(10))
        );
        assert_eq!(
            retry_after(&headers("retry-after", "Wed, 21 Oct 2015 07:00:00 GMT"), now),
            Some(Duration::ZERO)
        );
        assert_eq!(retry_after(&headers("retry-after", "soon"), now), None);
        let epoch = |date: &'static str| retry_after(&headers("retry-after", date), UNIX_EPOCH);
        assert_eq!(epoch("Thu, 01 Jan 1970 00:00:00 GMT"), Some(Duration::ZERO));
        assert_eq!(epoch("Tue, 29 Feb 2000 12:00:00 GMT"), Some(Duration::from_secs(951_825_600)));
    }

    fn provider() -> HttpProvider {
        let mut settings = ProviderSettings::new("default", "http://127.0.0.1:9/v1");
        settings.api_key = Some(ApiKey::new(KEY.into()));
        HttpProvider::new(settings).expect("valid settings")
    }

    const KEY: &str = "canary-XYZ-0123456789";

    #[test]
    fn a_retry_after_past_the_cap_fails_at_once_and_hands_on_no_wait() {
        let now = UNIX_EPOCH + Duration::from_secs(1_445_412_470); // Wed, 21 Oct 2015 07:27:50 GMT
        let status = reqwest::StatusCode::TOO_MANY_REQUESTS;
        let error = |name: &'static str, value: &'static str| {
            let mut headers = reqwest::header::HeaderMap::new();
            headers.insert(name, reqwest::header::HeaderValue::from_static(value));
            provider().status_error(status, &headers, "{}", now)
        };
        for (name, value, asked) in [
            ("retry-after", "100000", "1d3h46m40s"),
            ("retry-after", "301", "5m1s"),
            ("retry-after-ms", "300001", "5m1ms"),
            ("retry-after", "Thu, 22 Oct 2015 07:27:50 GMT", "1d"),
        ] {
            let e = error(name, value);
            assert_eq!(e.class, ErrorClass::RateLimited, "{name}: {value}");
            assert_eq!(e.retry_after, None, "{name}: {value}: no wait handed on, neither a day nor the cap");
            assert_eq!(
                e.message,
                format!(
                    "the provider answered 429: 429 Too Many Requests; it asks to wait {asked}, \
                     more than the 5m this provider allows"
                )
            );
            assert!(e.hint.as_deref().is_some_and(|h| h.contains("failed at once")), "{e:?}");
            assert_eq!(e.cause, Some(Cause::RateLimited { provider: "default".into() }));
        }
        for (name, value, obeyed) in [
            ("retry-after", "7", Duration::from_secs(7)),
            ("retry-after", "300", Duration::from_secs(300)),
            ("retry-after-ms", "300000", Duration::from_secs(300)),
        ] {
            let e = error(name, value);
            assert_eq!((e.retry_after, e.hint), (Some(obeyed), None), "within the cap: obeyed");
        }
    }

    #[test]
    fn a_key_the_server_echoes_is_hidden_before_its_message_is_cut() {
        let headers = reqwest::header::HeaderMap::new();
        let message = format!("{}Bearer {KEY}", "m".repeat(490));
        let body = json!({"error": {"message": message}}).to_string();
        for status in [400, 401, 429, 500] {
            let status = reqwest::StatusCode::from_u16(status).expect("a status");
            let e = provider().status_error(status, &headers, &body, UNIX_EPOCH);
            assert!(!format!("{e:?}").contains("canary"), "{e:?}");
            assert!(e.message.ends_with("Bearer ***"), "{}", e.message);
        }
    }

    #[test]
    fn a_base_url_with_credentials_is_never_shown_and_its_query_is_kept() {
        let mut settings =
            ProviderSettings::new("az", "https://h.example/v1?api-version=2024&key=canary-XYZ-01");
        let p = HttpProvider::new(settings.clone()).expect("valid");
        assert_eq!(p.url, "https://h.example/v1/chat/completions?api-version=2024&key=canary-XYZ-01");
        settings.base_url = "ftp://user:canary-XYZ-pass@h.example/v1".into();
        let e = HttpProvider::new(settings).err().expect("not http");
        assert!(!e.contains("canary"), "{e}");
        assert!(e.contains("ftp://***@h.example/v1"), "{e}");
    }

    #[test]
    fn the_bucket_spreads_requests_over_the_minute() {
        let start = Instant::now();
        let mut b = Bucket { per_minute: 60.0, tokens: 2.0, at: start };
        assert_eq!(b.take(start), Duration::ZERO);
        assert_eq!(b.take(start), Duration::ZERO);
        assert_eq!(b.take(start), Duration::from_secs(1));
        assert_eq!(b.take(start + Duration::from_secs(2)), Duration::ZERO);
    }
}
