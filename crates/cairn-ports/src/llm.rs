//! The LLM port: a chat request in, text (or the tool calls the model
//! asks for) and usage out.

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::PortError;

/// Who said a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Instructions.
    System,
    /// The workflow's side.
    User,
    /// The model's side.
    Assistant,
    /// What a tool the model called returned.
    Tool,
}

/// One message of a conversation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChatMessage {
    /// Who said it.
    pub role: Role,
    /// What was said.
    pub content: String,
    /// The tools an assistant message asks to be called, in order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tool_calls: Vec<ToolCall>,
    /// The call a tool message answers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_call_id: Option<String>,
}

impl ChatMessage {
    /// A message of plain text.
    pub fn new(role: Role, content: impl Into<String>) -> Self {
        Self { role, content: content.into(), tool_calls: Vec::new(), tool_call_id: None }
    }

    /// The model asking for `calls` (with whatever text came with them).
    pub fn calls(content: impl Into<String>, calls: Vec<ToolCall>) -> Self {
        Self { tool_calls: calls, ..Self::new(Role::Assistant, content) }
    }

    /// What the tool called as `call_id` returned.
    pub fn tool_result(call_id: impl Into<String>, content: impl Into<String>) -> Self {
        Self { tool_call_id: Some(call_id.into()), ..Self::new(Role::Tool, content) }
    }
}

/// A tool the model asks to be called.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ToolCall {
    /// The id the model gave the call; the result answers it.
    pub id: String,
    /// The tool's name.
    pub name: String,
    /// The arguments as the model wrote them: JSON text, which may not parse.
    pub arguments: String,
}

/// A tool offered to the model: its name, what it does, and the JSON
/// Schema of its arguments.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ToolSpec {
    /// The name the model calls it by (`[A-Za-z0-9_-]`, at most 64).
    pub name: String,
    /// What it does, for the model.
    pub description: String,
    /// The JSON Schema its arguments must match (an object schema).
    pub parameters: Value,
}

/// One chat completion request.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ChatRequest {
    /// The model; the provider's default when `None`.
    pub model: Option<String>,
    /// The conversation, system message first.
    pub messages: Vec<ChatMessage>,
    /// Sampling temperature.
    pub temperature: Option<f64>,
    /// Completion token limit.
    pub max_tokens: Option<u32>,
    /// What the answer must be.
    pub format: ResponseFormat,
    /// The tools the model may call (none: it answers in text).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub tools: Vec<ToolSpec>,
    /// `run/step/attempt`, sent as the `Idempotency-Key` header.
    pub idempotency_key: String,
    /// Where streamed text goes as it arrives (live only, never persisted);
    /// `None` when nobody listens.
    #[serde(skip)]
    pub tokens: Option<TokenSink>,
}

/// A listener for the text of a streamed answer, piece by piece.
#[derive(Clone)]
pub struct TokenSink(pub std::sync::Arc<dyn Fn(&str) + Send + Sync>);

impl std::fmt::Debug for TokenSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TokenSink")
    }
}

/// Listeners do not make two requests differ.
impl PartialEq for TokenSink {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}

/// The form of answer a step expects.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ResponseFormat {
    /// Free text.
    Text,
    /// Any JSON document.
    Json,
    /// JSON satisfying this schema.
    JsonSchema(Value),
}

impl ResponseFormat {
    /// The words that ask a model for this form in the prompt itself, for
    /// providers that cannot ask for it otherwise; `None` for free text.
    pub fn instructions(&self) -> Option<String> {
        match self {
            Self::Text => None,
            Self::Json => Some("Answer with only a JSON document, and nothing else.".to_owned()),
            Self::JsonSchema(schema) => Some(format!(
                "Answer with only a JSON document that matches this JSON Schema, and nothing else:\n{schema}"
            )),
        }
    }
}

/// Tokens used by one request.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Usage {
    /// Prompt tokens.
    pub prompt_tokens: u64,
    /// Completion tokens.
    pub completion_tokens: u64,
    /// The provider did not report usage; these are estimates.
    pub estimated: bool,
    /// The cost the provider reported, in millionths of a USD (coding-agent
    /// CLIs that say what they spent); `None` when it said nothing.
    pub cost_micro_usd: Option<u64>,
}

impl Usage {
    /// Counts the provider reported, with no cost.
    pub fn reported(prompt_tokens: u64, completion_tokens: u64) -> Self {
        Self { prompt_tokens, completion_tokens, estimated: false, cost_micro_usd: None }
    }

    /// Usage nobody reported, estimated at four characters a token.
    pub fn estimate(messages: &[ChatMessage], answer: &str) -> Self {
        let prompt: usize = messages
            .iter()
            .map(|m| {
                m.content.chars().count()
                    + m.tool_calls.iter().map(|c| c.arguments.chars().count()).sum::<usize>()
            })
            .sum();
        Self {
            prompt_tokens: prompt.div_ceil(4) as u64,
            completion_tokens: answer.chars().count().div_ceil(4) as u64,
            estimated: true,
            cost_micro_usd: None,
        }
    }
}

/// A chat completion.
#[derive(Debug, Clone, PartialEq)]
pub struct ChatResponse {
    /// The answer's text (with tool calls: what came with them, often nothing).
    pub text: String,
    /// Tokens used.
    pub usage: Usage,
    /// The model that answered.
    pub model: String,
    /// The tools the model asks to be called before it answers; empty
    /// when `text` is its answer.
    pub tool_calls: Vec<ToolCall>,
}

/// An LLM behind a chat-completions interface.
///
/// Contract: one call is one logical request (an adapter may reconnect before
/// any byte arrived, nothing more); errors carry a class — `transient` for
/// connection failures and 5xx, `rate_limited` with `retry_after` for 429
/// (none when the server asks to wait longer than the adapter allows:
/// the call fails at once, its message saying what was asked),
/// `permission` for 401/403 with a hint naming the key setting, `fatal` for
/// other refusals. Keys never appear in errors.
#[cfg_attr(feature = "test-util", mockall::automock)]
#[async_trait]
pub trait LlmProvider: Send + Sync {
    /// Sends the request and waits for the whole answer.
    async fn chat(&self, request: ChatRequest) -> Result<ChatResponse, PortError>;
}
