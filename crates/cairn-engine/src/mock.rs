//! The deterministic mock provider behind `--llm mock`: offline demos and
//! tests get answers of the right shape without a model.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use cairn_ports::{ChatRequest, ChatResponse, Clock, LlmProvider, PortError, ResponseFormat, Role, Usage};
use serde_json::{Map, Value, json};

/// Answers every request deterministically: a JSON document satisfying the
/// requested schema (required properties, one item per list, the first
/// `enum` value, minimums respected), `{"answer": ...}` for plain JSON, or a
/// short text naming what was asked. A step that may ask questions
/// (`clarify: true`) is asked one first, before anything was answered. The same request always gets the same
/// answer. An optional latency (on the given clock) makes parallelism visible.
pub struct MockLlm {
    clock: Arc<dyn Clock>,
    latency: Duration,
}

impl MockLlm {
    /// A mock answering after `latency`, measured on `clock`.
    pub fn new(clock: Arc<dyn Clock>, latency: Duration) -> Self {
        Self { clock, latency }
    }
}

#[async_trait]
impl LlmProvider for MockLlm {
    async fn chat(&self, request: ChatRequest) -> Result<ChatResponse, PortError> {
        if !self.latency.is_zero() {
            self.clock.sleep(self.latency).await;
        }
        let prompt =
            request.messages.iter().rev().find(|m| m.role == Role::User).map_or("", |m| m.content.as_str());
        let may_ask = request
            .messages
            .iter()
            .any(|m| m.role == Role::System && m.content.contains("clarification_questions"));
        let answered = request.messages.iter().any(|m| m.role == Role::Assistant);
        let text = match &request.format {
            // A step that may ask gets one question first, like a careful model.
            _ if may_ask && !answered => {
                json!({ "clarification_questions": [format!("What matters most for: {}?", summary(prompt))] })
                    .to_string()
            }
            ResponseFormat::JsonSchema(schema) => instance(schema, "answer", 0).to_string(),
            ResponseFormat::Json => json!({ "answer": summary(prompt) }).to_string(),
            ResponseFormat::Text => format!("mock answer to: {}", summary(prompt)),
        };
        let usage = Usage::estimate(&request.messages, &text);
        Ok(ChatResponse {
            text,
            usage,
            model: request.model.unwrap_or_else(|| "mock".into()),
            tool_calls: Vec::new(),
        })
    }
}

/// The first line of the prompt, at most 60 characters.
fn summary(prompt: &str) -> String {
    let line = prompt.lines().map(str::trim).find(|l| !l.is_empty()).unwrap_or("");
    let mut out: String = line.chars().take(60).collect();
    if line.chars().count() > 60 {
        out.push('…');
    }
    out
}

/// A small document valid against `schema` (the common keywords).
fn instance(schema: &Value, name: &str, depth: usize) -> Value {
    if depth > 16 {
        return Value::Null;
    }
    if let Some(first) = schema.get("const") {
        return first.clone();
    }
    if let Some(first) = schema.get("enum").and_then(Value::as_array).and_then(|e| e.first()) {
        return first.clone();
    }
    for key in ["anyOf", "oneOf", "allOf"] {
        if let Some(first) = schema.get(key).and_then(Value::as_array).and_then(|e| e.first()) {
            return instance(first, name, depth + 1);
        }
    }
    let ty = match schema.get("type") {
        Some(Value::String(t)) => t.as_str(),
        Some(Value::Array(types)) => {
            types.iter().filter_map(Value::as_str).find(|t| *t != "null").unwrap_or("null")
        }
        _ if schema.get("properties").is_some() => "object",
        _ if schema.get("items").is_some() => "array",
        _ => "string",
    };
    match ty {
        "object" => {
            let props = schema.get("properties").and_then(Value::as_object);
            let mut out = Map::new();
            for (key, sub) in props.into_iter().flatten() {
                out.insert(key.clone(), instance(sub, key, depth + 1));
            }
            Value::Object(out)
        }
        "array" => {
            let items = schema.get("items").cloned().unwrap_or(json!({}));
            let count = schema.get("minItems").and_then(Value::as_u64).unwrap_or(1).clamp(1, 3);
            let singular = name.strip_suffix('s').unwrap_or(name);
            Value::Array((1..=count).map(|i| with_index(instance(&items, singular, depth + 1), i)).collect())
        }
        "integer" | "number" => json!(schema.get("minimum").and_then(Value::as_i64).unwrap_or(1)),
        "boolean" => json!(true),
        "null" => Value::Null,
        _ => {
            let base = format!("mock-{}", name.replace('_', "-").to_ascii_lowercase());
            let min = schema.get("minLength").and_then(Value::as_u64).unwrap_or(0) as usize;
            json!(format!("{base:-<min$}"))
        }
    }
}

/// Makes the items of a generated list differ (`mock-id-1`, `mock-id-2`), so
/// keys built from them are unique.
fn with_index(value: Value, i: u64) -> Value {
    match value {
        Value::String(s) => Value::String(format!("{s}-{i}")),
        Value::Object(map) => Value::Object(map.into_iter().map(|(k, v)| (k, with_index(v, i))).collect()),
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::SystemClock;

    fn request(format: ResponseFormat) -> ChatRequest {
        ChatRequest {
            model: None,
            messages: vec![cairn_ports::ChatMessage::new(Role::User, "Parse src/lib.rs\nand more")],
            temperature: None,
            max_tokens: None,
            format,
            tools: Vec::new(),
            idempotency_key: "r/s/1".into(),
            tokens: None,
        }
    }

    #[tokio::test]
    async fn answers_fit_the_schema_and_repeat() {
        let schema = json!({"type": "object", "required": ["functions", "ok"], "properties": {
            "functions": {"type": "array", "items": {"type": "string"}, "minItems": 2},
            "ok": {"type": "boolean"}, "kind": {"enum": ["a", "b"]}}});
        let mock = MockLlm::new(Arc::new(SystemClock), Duration::ZERO);
        let a = mock.chat(request(ResponseFormat::JsonSchema(schema.clone()))).await.expect("answer");
        let b = mock.chat(request(ResponseFormat::JsonSchema(schema.clone()))).await.expect("answer");
        assert_eq!(a, b);
        let doc: Value = serde_json::from_str(&a.text).expect("json");
        assert_eq!(
            doc,
            json!({"functions": ["mock-function-1", "mock-function-2"], "ok": true, "kind": "a"})
        );
        assert!(jsonschema::is_valid(&schema, &doc));
        let text = mock.chat(request(ResponseFormat::Text)).await.expect("answer");
        assert_eq!(text.text, "mock answer to: Parse src/lib.rs");
        assert!(text.usage.estimated && text.usage.prompt_tokens > 0);
    }
}
