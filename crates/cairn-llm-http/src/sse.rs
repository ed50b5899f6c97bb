//! Server-sent events of a streamed chat completion, parsed as bytes
//! arrive: the text deltas in order, the tool calls pieced together from
//! theirs, the finish reason, the usage (sent
//! last when `stream_options.include_usage` is asked) and the model. A
//! stream is complete only with `[DONE]` or a finish reason; anything else
//! is a cut stream, and an `error` event inside it fails the call (its
//! message with the provider's secrets hidden). Bytes are scanned once
//! however the stream is cut, and one event and the whole text are
//! capped ([`Limits`]), so a server cannot make the parser spin or fill
//! the memory.

use cairn_domain::state::ErrorClass;
use cairn_ports::{PortError, Secrets, ToolCall, Usage};
use serde_json::Value;

/// How much one stream may hold, so a server that never ends a line or
/// an answer cannot fill the memory or the store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Bytes of one event (its lines together), before it is parsed.
    pub max_event: usize,
    /// Bytes of the answer's text.
    pub max_text: usize,
}

impl Default for Limits {
    /// 8 MiB an event, 4 MiB of text.
    fn default() -> Self {
        Self { max_event: 8 << 20, max_text: 4 << 20 }
    }
}

/// The most tool calls one answer may ask for.
pub const MAX_TOOL_CALLS: usize = 64;

/// A completion being read from its event stream.
#[derive(Debug, Default)]
pub struct Stream {
    pending: Vec<u8>,
    /// Bytes of `pending` known to start no separator: each byte is looked
    /// at a bounded number of times, however the stream is cut.
    scanned: usize,
    limits: Limits,
    /// Hidden from the server's error messages.
    secrets: Secrets,
    /// Bytes looked at while searching for separators, all told.
    examined: usize,
    /// The text so far.
    pub text: String,
    /// The tool calls so far, by their index in the stream: each arrives in
    /// pieces (its id and name first, then its arguments).
    pub tool_calls: Vec<ToolCall>,
    /// Why the model stopped, once it said.
    pub finish: Option<String>,
    /// Tokens used, when the server reported them.
    pub usage: Option<Usage>,
    /// The model that answered, when the server named it.
    pub model: Option<String>,
    done: bool,
}

impl Stream {
    /// A stream read within `limits`, hiding `secrets` from what the
    /// server says in an `error` event.
    pub fn new(limits: Limits, secrets: Secrets) -> Self {
        Self { limits, secrets, ..Self::default() }
    }

    /// Feeds the next bytes; returns the text deltas they completed, in
    /// order. An `error` event, an event that is not JSON, an event or a
    /// text past the limits is an error. Linear in the bytes fed.
    pub fn feed(&mut self, bytes: &[u8]) -> Result<Vec<String>, PortError> {
        self.pending.extend_from_slice(bytes);
        let mut deltas = Vec::new();
        let mut start = 0;
        let mut result = Ok(());
        while let Some((end, skip)) = separator(&self.pending, self.scanned.max(start), &mut self.examined) {
            if end - start > self.limits.max_event {
                result = Err(self.too_long_event());
                break;
            }
            let event = String::from_utf8_lossy(&self.pending[start..end]).into_owned();
            start = end + skip;
            if let Err(e) = self.event(&event, &mut deltas) {
                result = Err(e);
                break;
            }
        }
        self.pending.drain(..start);
        // A separator may start in the last three bytes, cut by the chunk.
        self.scanned = self.pending.len().saturating_sub(3);
        result?;
        // What waits for its end may hold the start of a separator (three
        // bytes at most): an event is refused by its own length, however
        // the stream is cut.
        if self.pending.len() > self.limits.max_event.saturating_add(3) {
            return Err(self.too_long_event());
        }
        Ok(deltas)
    }

    fn too_long_event(&self) -> PortError {
        too_large(format!("the provider streamed an event of more than {} bytes", self.limits.max_event))
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
            // Hidden before it is cut, so no part of a secret is left.
            let message: String = self.secrets.redact(message).chars().take(500).collect();
            return Err(PortError::new(
                ErrorClass::Transient,
                format!("the provider sent an error inside its stream: {message}"),
            ));
        }
        let choice = &chunk["choices"][0];
        if let Some(delta) = choice["delta"]["content"].as_str().filter(|d| !d.is_empty()) {
            if self.text.len() + delta.len() > self.limits.max_text {
                return Err(too_large(format!(
                    "the provider's answer passed {} bytes",
                    self.limits.max_text
                )));
            }
            self.text.push_str(delta);
            deltas.push(delta.to_owned());
        }
        for piece in choice["delta"]["tool_calls"].as_array().into_iter().flatten() {
            self.tool_piece(piece)?;
        }
        if let Some(reason) = choice["finish_reason"].as_str() {
            self.finish = Some(reason.to_owned());
        }
        if let (Some(p), Some(c)) =
            (chunk["usage"]["prompt_tokens"].as_u64(), chunk["usage"]["completion_tokens"].as_u64())
        {
            self.usage = Some(Usage::reported(p, c));
        }
        if let Some(model) = chunk["model"].as_str() {
            self.model = Some(model.to_owned());
        }
        Ok(())
    }

    /// Adds one streamed piece of a tool call to the call at its index.
    fn tool_piece(&mut self, piece: &Value) -> Result<(), PortError> {
        let index = piece["index"].as_u64().map_or(self.tool_calls.len().saturating_sub(1), |i| i as usize);
        if index > self.tool_calls.len() || index >= MAX_TOOL_CALLS {
            return Err(PortError::new(
                ErrorClass::Transient,
                format!("the provider streamed a tool call at index {index} out of order"),
            ));
        }
        if index == self.tool_calls.len() {
            self.tool_calls.push(ToolCall {
                id: String::new(),
                name: String::new(),
                arguments: String::new(),
            });
        }
        let arguments = piece["function"]["arguments"].as_str().unwrap_or_default();
        let held: usize = self.text.len() + self.tool_calls.iter().map(|c| c.arguments.len()).sum::<usize>();
        if held + arguments.len() > self.limits.max_text {
            return Err(too_large(format!("the provider's answer passed {} bytes", self.limits.max_text)));
        }
        let call = &mut self.tool_calls[index];
        if let Some(id) = piece["id"].as_str() {
            call.id = id.to_owned();
        }
        if let Some(name) = piece["function"]["name"].as_str() {
            call.name.push_str(name);
        }
        call.arguments.push_str(arguments);
        Ok(())
    }

    /// Whether the stream said it was complete (`[DONE]` or a finish reason).
    pub fn is_complete(&self) -> bool {
        self.done || self.finish.is_some()
    }

    /// Whether the stream sent `[DONE]`: nothing more comes.
    pub fn is_done(&self) -> bool {
        self.done
    }
}

/// An answer or event past its limit: the server misbehaves or the model
/// rambles; the same request would likely do it again.
pub(crate) fn too_large(message: String) -> PortError {
    PortError::new(ErrorClass::InvalidOutput, message).with_hint(
        "the answer was dropped; ask for a shorter one (the step's max_tokens), or check the server",
    )
}

/// Where the first event separator at or after `from` starts (`\n\n` or
/// `\r\n\r\n`), and its length.
fn separator(bytes: &[u8], from: usize, examined: &mut usize) -> Option<(usize, usize)> {
    let mut i = from;
    while i < bytes.len() {
        *examined += 1;
        match bytes[i] {
            b'\n' if bytes.get(i + 1) == Some(&b'\n') => return Some((i, 2)),
            b'\r' if bytes[i..].starts_with(b"\r\n\r\n") => return Some((i, 4)),
            _ => i += 1,
        }
    }
    None
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
            assert_eq!(s.usage, Some(Usage::reported(7, 2)));
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

    #[test]
    fn a_long_line_is_scanned_once_however_it_is_cut() {
        let limits = Limits { max_event: 1 << 30, max_text: 1 << 30 };
        let mut s = Stream::new(limits, Secrets::default());
        let piece = vec![b'a'; 1024];
        s.feed(b"data: {\"x\":\"").expect("valid so far");
        for _ in 0..2048 {
            s.feed(&piece).expect("no event ends yet");
        }
        let fed = 2048 * 1024;
        assert!(s.examined < 2 * fed, "{} bytes looked at for {fed} fed: quadratic", s.examined);
        // The event still ends where it ends.
        s.feed(b"\"}\n\ndata: [DONE]\n").expect("a JSON object, no choices");
        s.feed(b"\n").expect("done");
        assert!(s.is_done());
    }

    #[test]
    fn an_event_or_a_text_past_its_limit_fails_and_frees_the_stream() {
        let limits = Limits { max_event: 4096, max_text: 10 };
        let mut s = Stream::new(limits, Secrets::default());
        let e = s.feed(&vec![b'x'; 5000]).expect_err("a line with no end");
        assert_eq!(e.class, ErrorClass::InvalidOutput, "{e}");
        assert!(e.message.contains("more than 4096 bytes"), "{e}");
        // Whole in one chunk or cut anywhere, an event too long is refused alike.
        let long = format!("data: {}\n\n", "y".repeat(4200));
        for cut in [long.len(), 4096, 4099, 4100] {
            let mut s = Stream::new(limits, Secrets::default());
            let (a, b) = long.as_bytes().split_at(cut);
            let e = s.feed(a).and_then(|_| s.feed(b)).expect_err("too long, however cut");
            assert!(e.message.contains("more than 4096 bytes"), "cut at {cut}: {e}");
        }
        let mut s = Stream::new(limits, Secrets::default());
        s.feed(chunk("0123456789").as_bytes()).expect("ten bytes fit");
        let e = s.feed(chunk("!").as_bytes()).expect_err("eleven do not");
        assert_eq!(e.class, ErrorClass::InvalidOutput, "{e}");
        assert!(e.message.contains("passed 10 bytes"), "{e}");
    }

    #[test]
    fn a_secret_in_an_error_event_is_hidden_before_the_message_is_cut() {
        let key = "canary-XYZ-0123456789";
        let mut s = Stream::new(Limits::default(), Secrets::new([key]));
        // The key straddles the 500th character: cut first, a prefix would stay.
        let message = format!("{}{key}", "m".repeat(490));
        let event = format!("data: {}\n\n", serde_json::json!({"error": {"message": message}}));
        let e = s.feed(event.as_bytes()).expect_err("error event");
        assert!(!e.message.contains("canary"), "{e}");
        assert!(e.message.ends_with("***"), "{e}");
    }
}
