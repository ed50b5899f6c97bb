//! Server-sent events of a streamed chat completion, parsed as bytes
//! arrive: the text deltas in order, the finish reason, the usage (sent
//! last when `stream_options.include_usage` is asked) and the model. A
//! stream is complete only with `[DONE]` or a finish reason; anything else
//! is a cut stream, and an `error` event inside it fails the call.

use cairn_domain::state::ErrorClass;
use cairn_ports::{PortError, Usage};
use serde_json::Value;

/// A completion being read from its event stream.
#[derive(Debug, Default)]
pub struct Stream {
    pending: Vec<u8>,
    /// The text so far.
    pub text: String,
    /// Why the model stopped, once it said.
    pub finish: Option<String>,
    /// Tokens used, when the server reported them.
    pub usage: Option<Usage>,
    /// The model that answered, when the server named it.
    pub model: Option<String>,
    done: bool,
}

impl Stream {
    /// Feeds the next bytes; returns the text deltas they completed, in
    /// order. An `error` event, or an event that is not JSON, is an error.
    pub fn feed(&mut self, bytes: &[u8]) -> Result<Vec<String>, PortError> {
        self.pending.extend_from_slice(bytes);
        let pending = std::mem::take(&mut self.pending);
        let mut deltas = Vec::new();
        let mut start = 0;
        let result = loop {
            let Some((end, skip)) = event_end(&pending[start..]) else { break Ok(()) };
            let event = String::from_utf8_lossy(&pending[start..start + end]);
            start += end + skip;
            if let Err(e) = self.event(&event, &mut deltas) {
                break Err(e);
            }
        };
        self.pending = pending[start..].to_vec();
        result.map(|()| deltas)
    }

    /// Reads one event's `data:` lines.
    fn event(&mut self, event: &str, deltas: &mut Vec<String>) -> Result<(), PortError> {
        let data: Vec<&str> = event
            .lines()
            .filter_map(|l| l.strip_prefix("data:"))
            .map(|d| d.strip_prefix(' ').unwrap_or(d))
            .collect();
        if data.is_empty() {
            return Ok(()); // a comment (`: keep-alive`) or a field cairn does not use
        }
        let data = data.join("\n");
        if data.trim() == "[DONE]" {
            self.done = true;
            return Ok(());
        }
        let chunk: Value = serde_json::from_str(&data).map_err(|e| {
            PortError::new(
                ErrorClass::Transient,
                format!("the provider streamed an event that is not JSON: {e}"),
            )
        })?;
        if let Some(error) = chunk.get("error") {
            let message = error.get("message").and_then(Value::as_str).unwrap_or("no message");
            let message: String = message.chars().take(500).collect();
            return Err(PortError::new(
                ErrorClass::Transient,
                format!("the provider sent an error inside its stream: {message}"),
            ));
        }
        let choice = &chunk["choices"][0];
        if let Some(delta) = choice["delta"]["content"].as_str().filter(|d| !d.is_empty()) {
            self.text.push_str(delta);
            deltas.push(delta.to_owned());
        }
        if let Some(reason) = choice["finish_reason"].as_str() {
            self.finish = Some(reason.to_owned());
        }
        if let (Some(p), Some(c)) =
            (chunk["usage"]["prompt_tokens"].as_u64(), chunk["usage"]["completion_tokens"].as_u64())
        {
            self.usage = Some(Usage { prompt_tokens: p, completion_tokens: c, estimated: false });
        }
        if let Some(model) = chunk["model"].as_str() {
            self.model = Some(model.to_owned());
        }
        Ok(())
    }

    /// Whether the stream said it was complete (`[DONE]` or a finish reason).
    pub fn is_complete(&self) -> bool {
        self.done || self.finish.is_some()
    }
}

/// Where the first complete event ends (`\n\n` or `\r\n\r\n`), and the
/// length of its separator: one pass, stopping at the first.
fn event_end(bytes: &[u8]) -> Option<(usize, usize)> {
    (0..bytes.len()).find_map(|i| {
        if bytes[i..].starts_with(b"\n\n") {
            Some((i, 2))
        } else if bytes[i..].starts_with(b"\r\n\r\n") {
            Some((i, 4))
        } else {
            None
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chunk(content: &str) -> String {
        format!("data: {{\"choices\":[{{\"delta\":{{\"content\":{}}}}}]}}\n\n", serde_json::json!(content))
    }

    #[test]
    fn events_split_anywhere_give_the_same_text() {
        let body = format!(
            ": keep-alive\n\n{}{}data: {{\"choices\":[{{\"delta\":{{}},\"finish_reason\":\"stop\"}}],\"model\":\"m1\"}}\r\n\r\ndata: {{\"choices\":[],\"usage\":{{\"prompt_tokens\":7,\"completion_tokens\":2}}}}\n\ndata: [DONE]\n\n",
            chunk("Hel"),
            chunk("lo ✓")
        );
        for split in 0..body.len() {
            let mut s = Stream::default();
            let (a, b) = body.as_bytes().split_at(split);
            let mut deltas = s.feed(a).expect("valid");
            deltas.extend(s.feed(b).expect("valid"));
            assert_eq!(s.text, "Hello ✓", "split at {split}");
            assert_eq!(deltas.concat(), "Hello ✓");
            assert!(s.is_complete());
            assert_eq!(s.usage, Some(Usage { prompt_tokens: 7, completion_tokens: 2, estimated: false }));
            assert_eq!(s.model.as_deref(), Some("m1"));
        }
    }

    #[test]
    fn a_cut_stream_is_incomplete_and_an_error_event_fails() {
        let mut s = Stream::default();
        s.feed(chunk("partial").as_bytes()).expect("valid");
        assert!(!s.is_complete());
        let mut s = Stream::default();
        let e = s.feed(b"data: {\"error\":{\"message\":\"overloaded\"}}\n\n").expect_err("error event");
        assert_eq!(e.class, ErrorClass::Transient);
        assert!(e.message.contains("overloaded"));
        let e = Stream::default().feed(b"data: {not json\n\n").expect_err("bad event");
        assert_eq!(e.class, ErrorClass::Transient);
    }
}
