//! The SSE parser (`cairn_llm_http::sse::Stream`): whatever bytes a
//! server streams, split wherever the network splits them, the parser never
//! panics, the deltas it forwards live add up to the text it keeps, an
//! error never carries the API key, the text stays within its limit, and
//! it reads the same completion (text, finish reason, usage, model, whether
//! it is complete) or fails at the same event however the bytes are cut.

use cairn_llm_http::sse::{Limits, Stream};
use cairn_ports::{Secrets, Usage};

/// The API key of the fuzzed provider: no error may show it.
const SECRET: &str = "sk-fuzz-0123456789";

/// Limits small enough for the fuzzer's inputs to pass them.
const SMALL: Limits = Limits { max_event: 256, max_text: 128 };

/// What a stream read, compared between two ways of splitting it.
#[derive(Debug, PartialEq)]
struct Read {
    text: String,
    finish: Option<String>,
    usage: Option<Usage>,
    model: Option<String>,
    complete: bool,
    failed: bool,
}

/// Feeds `body` in pieces of the given sizes (the rest in one piece when
/// they run out), stopping at the first error as the provider does.
fn read(body: &[u8], limits: Limits, sizes: impl Iterator<Item = usize>) -> Read {
    let mut stream = Stream::new(limits, Secrets::new([SECRET]));
    let mut forwarded = String::new();
    let mut rest = body;
    let mut sizes = sizes.fuse();
    let mut failed = false;
    while !rest.is_empty() {
        let size = sizes.next().unwrap_or(rest.len()).clamp(1, rest.len());
        let (piece, after) = rest.split_at(size);
        rest = after;
        match stream.feed(piece) {
            Ok(deltas) => forwarded.extend(deltas),
            Err(e) => {
                assert!(!e.message.is_empty(), "an error says what went wrong");
                let said = format!("{} {}", e.message, e.hint.as_deref().unwrap_or_default());
                assert!(!said.contains(SECRET), "an error shows the key: {said}");
                failed = true;
                break;
            }
        }
    }
    if failed {
        assert!(
            stream.text.starts_with(&forwarded),
            "deltas forwarded before the error are the text's start"
        );
    } else {
        assert_eq!(forwarded, stream.text, "the deltas forwarded are the text");
    }
    assert!(stream.text.len() <= limits.max_text, "the text passed its limit");
    let complete = stream.is_complete();
    Read {
        text: stream.text,
        finish: stream.finish,
        usage: stream.usage,
        model: stream.model,
        complete,
        failed,
    }
}

/// Piece sizes from 1 to 32 bytes, from a seed (a small linear
/// congruential generator: the fuzzer picks the seed, the sizes follow).
fn sizes(seed: u8) -> impl Iterator<Item = usize> {
    let mut state = u32::from(seed);
    std::iter::repeat_with(move || {
        state = state.wrapping_mul(1_103_515_245).wrapping_add(12_345);
        ((state >> 16) % 32) as usize + 1
    })
}

/// `data` is a seed byte then a response body, read whole and split into
/// the seed's pieces, within the default limits (the seed's high bit
/// clear) or small ones the fuzzer's inputs reach: both reads are the same.
pub fn run(data: &[u8]) {
    let Some((&seed, body)) = data.split_first() else { return };
    let limits = if seed & 0x80 == 0 { Limits::default() } else { SMALL };
    let whole = read(body, limits, std::iter::empty());
    let split = read(body, limits, sizes(seed));
    assert_eq!(whole, split, "the same body split differently reads differently");
}
