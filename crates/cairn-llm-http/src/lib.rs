//! The HTTP LLM provider: cairn's `LlmProvider` port over any
//! OpenAI-compatible chat-completions server (OpenAI, vLLM, Ollama,
//! llama.cpp, LiteLLM, ...).
//!
//! What it is: one `POST {base_url}/chat/completions` per call, with the
//! `Idempotency-Key` header, and every HTTP fault mapped to an error class
//! the engine's retry policy understands: connection failures, timeouts and
//! 5xx are `transient` (timeouts `timeout`), 429 is `rate_limited` with its
//! `Retry-After`, 401/403 are `permission` with a hint naming the key
//! setting, other 4xx are `fatal` with the server's message, a malformed
//! body is `transient`.
//!
//! What it deliberately does not do: retry by policy (the engine does), or
//! ever write an API key anywhere: the key is read from the environment
//! variable the config names, kept in a type whose `Debug` hides it, and
//! only sent as a header.
//!
//! May depend on: `cairn-domain`, `cairn-ports`, reqwest, serde. Never on
//! the engine or the app.
//!
//! Read first: [`HttpProvider`], [`ProviderSettings`].

use std::fmt;
use std::time::Duration;

use async_trait::async_trait;
use cairn_domain::state::ErrorClass;
use cairn_ports::{ChatRequest, ChatResponse, LlmProvider, PortError, ResponseFormat, Usage};
use serde_json::{Value, json};

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
}

/// Chat completions over HTTP.
pub struct HttpProvider {
    settings: ProviderSettings,
    client: reqwest::Client,
    url: String,
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
            .timeout(settings.timeout)
            .connect_timeout(Duration::from_secs(10).min(settings.timeout))
            .build()
            .map_err(|e| format!("provider `{}`: {e}", settings.name))?;
        let url = format!("{base}/chat/completions");
        Ok(Self { settings, client, url })
    }

    fn body(&self, request: &ChatRequest, model: &str) -> Value {
        let mut body = json!({ "model": model, "messages": request.messages, "stream": false });
        if let Some(t) = request.temperature {
            body["temperature"] = json!(t);
        }
        if let Some(m) = request.max_tokens {
            body["max_tokens"] = json!(m);
        }
        match &request.format {
            ResponseFormat::Text => {}
            ResponseFormat::Json => body["response_format"] = json!({"type": "json_object"}),
            ResponseFormat::JsonSchema(schema) => {
                body["response_format"] = json!({"type": "json_schema", "json_schema": {"name": "output", "schema": schema, "strict": true}});
            }
        }
        body
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
                    .with_hint(format!(
                        "check {} (the key of provider `{}`)",
                        self.settings.api_key_setting, self.settings.name
                    ))
            }
            429 => PortError {
                retry_after: retry_after(headers),
                ..PortError::new(ErrorClass::RateLimited, format!("the provider answered 429: {message}"))
                    .with_hint("the provider is rate limiting; lower max_parallel or requests_per_minute")
            },
            500..=599 => {
                PortError::new(ErrorClass::Transient, format!("the provider answered {code}: {message}"))
            }
            _ => PortError::new(ErrorClass::Fatal, format!("the provider answered {code}: {message}"))
                .with_hint("the request was refused as it is; check the model name and the step's settings"),
        }
    }
}

/// `error.message` of an OpenAI-style error body.
fn server_message(body: &str) -> Option<String> {
    let v: Value = serde_json::from_str(body).ok()?;
    let m = v.get("error").and_then(|e| e.get("message").or(Some(e))).and_then(Value::as_str)?;
    Some(m.chars().take(500).collect())
}

/// `Retry-After` in seconds, or `retry-after-ms`.
fn retry_after(headers: &reqwest::header::HeaderMap) -> Option<Duration> {
    let text = |name: &str| headers.get(name).and_then(|v| v.to_str().ok()).map(str::trim);
    if let Some(ms) = text("retry-after-ms").and_then(|v| v.parse::<f64>().ok()) {
        return Some(Duration::from_millis(ms.max(0.0) as u64));
    }
    text("retry-after")
        .and_then(|v| v.parse::<f64>().ok())
        .map(|s| Duration::from_millis((s.max(0.0) * 1000.0) as u64))
}

#[async_trait]
impl LlmProvider for HttpProvider {
    async fn chat(&self, request: ChatRequest) -> Result<ChatResponse, PortError> {
        let Some(model) = request.model.clone().or_else(|| self.settings.model.clone()) else {
            return Err(PortError::new(ErrorClass::Fatal, format!("no model for provider `{}`", self.settings.name))
                .with_hint("set `model` on the agent, or on the provider in cairn.toml (CAIRN_LLM_MODEL for the default)"));
        };
        let mut http = self
            .client
            .post(&self.url)
            .header("Idempotency-Key", &request.idempotency_key)
            .json(&self.body(&request, &model));
        if let Some(key) = &self.settings.api_key {
            http = http.bearer_auth(&key.0);
        }
        let response = http.send().await.map_err(|e| transport_error(&self.settings, &e))?;
        let status = response.status();
        let headers = response.headers().clone();
        let body = response.text().await.map_err(|e| transport_error(&self.settings, &e))?;
        if !status.is_success() {
            return Err(self.status_error(status, &headers, &body));
        }
        let parsed: Value = serde_json::from_str(&body).map_err(|e| {
            PortError::new(ErrorClass::Transient, format!("the provider's answer is not JSON: {e}"))
        })?;
        let text = parsed["choices"][0]["message"]["content"].as_str().ok_or_else(|| {
            PortError::new(ErrorClass::Transient, "the provider's answer has no choices[0].message.content")
        })?;
        let usage = match (
            parsed["usage"]["prompt_tokens"].as_u64(),
            parsed["usage"]["completion_tokens"].as_u64(),
        ) {
            (Some(p), Some(c)) => Usage { prompt_tokens: p, completion_tokens: c, estimated: false },
            _ => Usage {
                prompt_tokens: request
                    .messages
                    .iter()
                    .map(|m| m.content.chars().count())
                    .sum::<usize>()
                    .div_ceil(4) as u64,
                completion_tokens: text.chars().count().div_ceil(4) as u64,
                estimated: true,
            },
        };
        let model = parsed["model"].as_str().map_or(model, str::to_owned);
        Ok(ChatResponse { text: text.to_owned(), usage, model })
    }
}

/// Connection-level failures: never the URL's query or a header, so no key leaks.
fn transport_error(settings: &ProviderSettings, e: &reqwest::Error) -> PortError {
    let what = if e.is_timeout() {
        return PortError::new(
            ErrorClass::Timeout,
            format!("provider `{}` did not answer within {:?}", settings.name, settings.timeout),
        )
        .with_hint("raise the provider's timeout in cairn.toml, or check the server");
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
