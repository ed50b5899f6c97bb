//! Reading Server-Sent Events from a response, frame by frame: the lines
//! `event:` and `data:` up to a blank line, as the server writes them
//! (comments, keep-alives and `id:` lines are read past: the event's
//! number is in its data).

use std::collections::VecDeque;

/// One frame.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Frame {
    /// `event:` (`message` when none).
    pub event: String,
    /// Every `data:` line, joined by newlines.
    pub data: String,
}

/// The longest line a parser holds: past it the line is dropped, so a
/// server that sends no newline cannot fill memory.
const MAX_LINE: usize = 16 << 20;

/// Frames out of bytes, however the bytes are cut.
#[derive(Debug, Default)]
pub(crate) struct Parser {
    line: Vec<u8>,
    /// The line grew past [`MAX_LINE`]: dropped up to its end.
    dropping: bool,
    frame: Frame,
}

impl Parser {
    /// Takes the next bytes; returns the frames they complete.
    pub(crate) fn feed(&mut self, bytes: &[u8]) -> Vec<Frame> {
        let mut frames = Vec::new();
        for piece in bytes.split_inclusive(|b| *b == b'\n') {
            let ends = piece.last() == Some(&b'\n');
            if !self.dropping {
                self.line.extend_from_slice(piece);
                if self.line.len() > MAX_LINE {
                    self.line.clear();
                    self.dropping = true;
                }
            }
            if ends {
                if !std::mem::take(&mut self.dropping) {
                    let line = String::from_utf8_lossy(&self.line).trim_end_matches(['\n', '\r']).to_owned();
                    frames.extend(self.take(&line));
                }
                self.line.clear();
            }
        }
        frames
    }

    /// Takes one whole line; a blank line ends the frame.
    fn take(&mut self, line: &str) -> Option<Frame> {
        if line.is_empty() {
            let frame = std::mem::take(&mut self.frame);
            return (!frame.data.is_empty() || !frame.event.is_empty()).then(|| Frame {
                event: if frame.event.is_empty() { "message".into() } else { frame.event },
                data: frame.data,
            });
        }
        let (key, value) = line.split_once(':').unwrap_or((line, ""));
        let value = value.strip_prefix(' ').unwrap_or(value);
        match key {
            "event" => self.frame.event = value.to_owned(),
            "data" => {
                if !self.frame.data.is_empty() {
                    self.frame.data.push('\n');
                }
                self.frame.data.push_str(value);
            }
            _ => {}
        }
        None
    }
}

/// Frames of one response.
pub(crate) struct Reader {
    response: reqwest::Response,
    parser: Parser,
    ready: VecDeque<Frame>,
}

impl Reader {
    pub(crate) fn new(response: reqwest::Response) -> Self {
        Self { response, parser: Parser::default(), ready: VecDeque::new() }
    }

    /// The next frame, or `None` when the stream ends.
    pub(crate) async fn next(&mut self) -> Result<Option<Frame>, reqwest::Error> {
        loop {
            if let Some(frame) = self.ready.pop_front() {
                return Ok(Some(frame));
            }
            match self.response.chunk().await? {
                Some(bytes) => self.ready.extend(self.parser.feed(&bytes)),
                None => return Ok(None),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const STREAM: &str = "id: 4\nevent: step_started\ndata: {\"seq\":4}\n\n: keep-alive\n\nevent: token\ndata: a\ndata: b\n\nevent: end\r\ndata: {}\r\n\r\n";

    #[test]
    fn frames_come_out_whole_however_the_bytes_are_cut() {
        let whole = Parser::default().feed(STREAM.as_bytes());
        assert_eq!(
            whole,
            vec![
                Frame { event: "step_started".into(), data: "{\"seq\":4}".into() },
                Frame { event: "token".into(), data: "a\nb".into() },
                Frame { event: "end".into(), data: "{}".into() },
            ]
        );
        for cut in 1..STREAM.len() {
            let mut parser = Parser::default();
            let mut frames = parser.feed(&STREAM.as_bytes()[..cut]);
            frames.extend(parser.feed(&STREAM.as_bytes()[cut..]));
            assert_eq!(frames, whole, "cut at {cut}");
        }
    }

    #[test]
    fn a_line_past_the_limit_is_dropped_and_reading_goes_on() {
        let mut parser = Parser::default();
        let huge = vec![b'x'; MAX_LINE + 10];
        assert!(parser.feed(b"data: ").is_empty());
        assert!(parser.feed(&huge).is_empty());
        let frames = parser.feed(b"\nevent: end\ndata: {}\n\n");
        assert_eq!(frames, vec![Frame { event: "end".into(), data: "{}".into() }]);
    }
}
