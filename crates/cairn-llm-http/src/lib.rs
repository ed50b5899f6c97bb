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
//! `retry-after-ms`), but `insufficient_quota` is `fatal`; 401/403 are
//! `permission` with a hint naming the key setting; other 4xx are `fatal`
//! with the server's message; running out of time is `timeout`. The only
//! retry here is a connection refused before any byte arrived, twice,
//! quickly; everything else is the step's retry policy. Requests in flight
//! (`max_concurrency`) and requests per minute (a token bucket) are bounded
//! per provider, across every run the process drives.
//!
//! What it deliberately does not do: ever write an API key anywhere: the
//! key is read from the environment variable the config names, kept in a
//! type whose `Debug` hides it, and only sent as a header.
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
    ChatMessage, ChatRequest, ChatResponse, LlmProvider, PortError, ResponseFormat, Role, Usage,
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
}

impl ProviderSettings {
    /// Settings with the built-in defaults: 120 s per request, 10 s to
    /// connect, the whole timeout to the first byte, 60 s of silence in a
    /// stream, streaming on, `json_schema`, no limits.
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
        }
    }
}

/// Connection attempts before any byte arrived that are tried again, quickly.
const CONNECT_RETRIES: u32 = 2;

/// Chat completions over HTTP.
pub struct HttpProvider {
    settings: ProviderSettings,
    client: reqwest::Client,
    url: String,
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
    /// A provider for `settings`; fails on a base URL that is not `http(s)://`.
    pub fn new(settings: ProviderSettings) -> Result<Self, String> {
        let base = settings.base_url.trim_end_matches('/');
        if !(base.starts_with("http://") || base.starts_with("https://")) {
            return Err(format!(
                "provider `{}`: base_url `{}` must start with http:// or https://",
                settings.name, settings.base_url
            ));
        }
        let client = reqwest::Client::builder()
            .connect_timeout(settings.connect_timeout.min(settings.timeout))
            .build()
            .map_err(|e| format!("provider `{}`: {e}", settings.name))?;
        let url = format!("{base}/chat/completions");
        let in_flight = settings.max_concurrency.map(|n| Semaphore::new(n.max(1) as usize));
        let bucket = settings.requests_per_minute.map(|n| {
            let per_minute = f64::from(n.max(1));
            Mutex::new(Bucket { per_minute, tokens: per_minute, at: Instant::now() })
        });
        Ok(Self { settings, client, url, in_flight, bucket })
    }

    /// The request body cairn sends for `request`.
    pub fn body(&self, request: &ChatRequest, model: &str) -> Value {
        let mut messages = request.messages.clone();
        let instructions = |schema: Option<&Value>| match schema {
            Some(schema) => format!(
                "Answer with only a JSON document that matches this JSON Schema, and nothing else:\n{schema}"
            ),
            None => "Answer with only a JSON document, and nothing else.".to_owned(),
        };
        let mut body = json!({ "model": model, "stream": self.settings.stream });
        match (&request.format, self.settings.structured_output) {
            (ResponseFormat::Text, _) => {}
            (ResponseFormat::JsonSchema(schema), StructuredOutput::JsonSchema) => {
                body["response_format"] = json!({"type": "json_schema", "json_schema": {"name": "output", "schema": schema, "strict": true}});
            }
            (ResponseFormat::Json, StructuredOutput::JsonSchema | StructuredOutput::JsonObject) => {
                body["response_format"] = json!({"type": "json_object"});
            }
            (ResponseFormat::JsonSchema(schema), StructuredOutput::JsonObject) => {
                body["response_format"] = json!({"type": "json_object"});
                add_instructions(&mut messages, instructions(Some(schema)));
            }
            (ResponseFormat::JsonSchema(schema), StructuredOutput::Prompt) => {
                add_instructions(&mut messages, instructions(Some(schema)));
            }
            (ResponseFormat::Json, StructuredOutput::Prompt) => {
                add_instructions(&mut messages, instructions(None))
            }
        }
        body["messages"] = json!(messages);
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
    async fn send(&self, request: &ChatRequest, body: &Value) -> Result<reqwest::Response, PortError> {
        let mut tries = 0;
        loop {
            let mut http =
                self.client.post(&self.url).header("Idempotency-Key", &request.idempotency_key).json(body);
            if let Some(key) = &self.settings.api_key {
                http = http.bearer_auth(&key.0);
            }
            match tokio::time::timeout(self.settings.first_byte_timeout, http.send()).await {
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

    /// The next chunk of a response body, within the idle timeout.
    async fn chunk(&self, response: &mut reqwest::Response) -> Result<Option<Vec<u8>>, PortError> {
        match tokio::time::timeout(self.settings.idle_timeout, response.chunk()).await {
            Err(_) => Err(timed_out(
                &self.settings,
                format!("went silent for {:?} in the middle of its answer", self.settings.idle_timeout),
            )),
            Ok(Err(e)) => Err(transport_error(&self.settings, &e)),
            Ok(Ok(chunk)) => Ok(chunk.map(|b| b.to_vec())),
        }
    }

    async fn call(&self, request: &ChatRequest, model: String) -> Result<ChatResponse, PortError> {
        let body = self.body(request, &model);
        let mut response = self.send(request, &body).await?;
        let status = response.status();
        if !status.is_success() {
            let headers = response.headers().clone();
            let mut text = Vec::new();
            while let Some(chunk) = self.chunk(&mut response).await? {
                text.extend_from_slice(&chunk);
            }
            return Err(self.status_error(status, &headers, &String::from_utf8_lossy(&text)));
        }
        let streamed = response
            .headers()
            .get(reqwest::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.starts_with("text/event-stream"));
        let (text, usage, answered_by) = if streamed {
            let mut stream = sse::Stream::default();
            while let Some(chunk) = self.chunk(&mut response).await? {
                for delta in stream.feed(&chunk)? {
                    if let Some(sink) = &request.tokens {
                        (sink.0)(&delta);
                    }
                }
                if stream.is_complete() && stream.usage.is_some() {
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
            (stream.text, stream.usage, stream.model)
        } else {
            let mut bytes = Vec::new();
            while let Some(chunk) = self.chunk(&mut response).await? {
                bytes.extend_from_slice(&chunk);
            }
            let parsed: Value = serde_json::from_slice(&bytes).map_err(|e| {
                PortError::new(ErrorClass::Transient, format!("the provider's answer is not JSON: {e}"))
            })?;
            let text = parsed["choices"][0]["message"]["content"].as_str().ok_or_else(|| {
                PortError::new(
                    ErrorClass::Transient,
                    "the provider's answer has no choices[0].message.content",
                )
            })?;
            let usage = match (
                parsed["usage"]["prompt_tokens"].as_u64(),
                parsed["usage"]["completion_tokens"].as_u64(),
            ) {
                (Some(p), Some(c)) => {
                    Some(Usage { prompt_tokens: p, completion_tokens: c, estimated: false })
                }
                _ => None,
            };
            (text.to_owned(), usage, parsed["model"].as_str().map(str::to_owned))
        };
        let usage = usage.unwrap_or_else(|| Usage::estimate(&request.messages, &text));
        Ok(ChatResponse { text, usage, model: answered_by.unwrap_or(model) })
    }

    /// The error of a non-success status.
    fn status_error(
        &self,
        status: reqwest::StatusCode,
        headers: &reqwest::header::HeaderMap,
        body: &str,
    ) -> PortError {
        let message = server_message(body).unwrap_or_else(|| status.to_string());
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
            429 => PortError {
                retry_after: retry_after(headers, SystemTime::now()),
                ..PortError::new(ErrorClass::RateLimited, format!("the provider answered 429: {message}"))
                    .with_cause(Cause::RateLimited { provider: self.settings.name.clone() })
            },
            500..=599 => {
                PortError::new(ErrorClass::Transient, format!("the provider answered {code}: {message}"))
            }
            _ => PortError::new(ErrorClass::Fatal, format!("the provider answered {code}: {message}"))
                .with_hint("the request was refused as it is; check the model name and the step's settings"),
        }
    }
}

/// Adds instructions after the system messages (or first, when there are none).
fn add_instructions(messages: &mut Vec<ChatMessage>, text: String) {
    let at = messages.iter().take_while(|m| m.role == Role::System).count();
    messages.insert(at, ChatMessage { role: Role::System, content: text });
}

/// `error.message` of an OpenAI-style error body.
fn server_message(body: &str) -> Option<String> {
    let v: Value = serde_json::from_str(body).ok()?;
    let m = v.get("error").and_then(|e| e.get("message").or(Some(e))).and_then(Value::as_str)?;
    Some(m.chars().take(500).collect())
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
        match tokio::time::timeout(self.settings.timeout, self.call(&request, model)).await {
            Ok(answer) => answer,
            Err(_) => {
                Err(timed_out(&self.settings, format!("did not finish within {:?}", self.settings.timeout)))
            }
        }
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
