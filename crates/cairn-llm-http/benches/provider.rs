//! The HTTP provider's own cost, measured, never asserted: requests per
//! second against a loopback server that answers at once (a short streamed
//! answer per connection), one at a time and 64 at once; and how fast the
//! event-stream parser reads (MB/s), on a 16 MiB stream fed in 16 KiB
//! pieces. Prints one JSON line; `cargo xtask bench` adds its rows.

use std::sync::Arc;
use std::time::{Duration, Instant};

use cairn_llm_http::sse::Stream;
use cairn_llm_http::{HttpProvider, ProviderSettings};
use cairn_ports::{ChatMessage, ChatRequest, LlmProvider, ResponseFormat, Role};
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

/// Requests per concurrency level.
const REQUESTS: usize = 2_000;
/// Size of the stream the parser reads.
const STREAM_BYTES: usize = 16 * 1024 * 1024;

/// A server answering every request at once with a streamed "hello", one
/// request per connection.
async fn instant_server() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind loopback");
    let url = format!("http://{}/v1", listener.local_addr().expect("addr"));
    let answer = "HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\nconnection: close\r\n\r\n\
        data: {\"choices\":[{\"delta\":{\"content\":\"hel\"}}]}\n\n\
        data: {\"choices\":[{\"delta\":{\"content\":\"lo\"},\"finish_reason\":\"stop\"}]}\n\n\
        data: {\"choices\":[],\"usage\":{\"prompt_tokens\":3,\"completion_tokens\":2}}\n\ndata: [DONE]\n\n";
    tokio::spawn(async move {
        loop {
            let Ok((mut socket, _)) = listener.accept().await else { return };
            tokio::spawn(async move {
                let mut seen = Vec::new();
                let mut buf = [0u8; 4096];
                loop {
                    let Ok(n) = socket.read(&mut buf).await else { return };
                    if n == 0 {
                        return;
                    }
                    seen.extend_from_slice(&buf[..n]);
                    let text = String::from_utf8_lossy(&seen);
                    if let Some(end) = text.find("\r\n\r\n") {
                        let length = text
                            .lines()
                            .find_map(|l| {
                                l.to_ascii_lowercase()
                                    .strip_prefix("content-length:")
                                    .map(|v| v.trim().to_owned())
                            })
                            .and_then(|v| v.parse::<usize>().ok())
                            .unwrap_or(0);
                        if seen.len() >= end + 4 + length {
                            break;
                        }
                    }
                }
                let _ = socket.write_all(answer.as_bytes()).await;
                let _ = socket.shutdown().await;
            });
        }
    });
    url
}

fn request(i: usize) -> ChatRequest {
    ChatRequest {
        model: Some("bench".into()),
        messages: vec![
            ChatMessage::new(Role::System, "Be brief."),
            ChatMessage::new(Role::User, format!("Question {i}")),
        ],
        temperature: None,
        max_tokens: None,
        format: ResponseFormat::Text,
        tools: Vec::new(),
        idempotency_key: format!("bench/ask/{i}"),
        tokens: None,
    }
}

/// `REQUESTS` calls, `concurrency` in flight at once; returns the wall time.
async fn requests(provider: Arc<HttpProvider>, concurrency: usize) -> Duration {
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let start = Instant::now();
    let workers: Vec<_> = (0..concurrency)
        .map(|_| {
            let (provider, next) = (Arc::clone(&provider), Arc::clone(&next));
            tokio::spawn(async move {
                loop {
                    let i = next.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                    if i >= REQUESTS {
                        return;
                    }
                    let answer = provider.chat(request(i)).await.expect("the instant server answers");
                    assert_eq!(answer.text, "hello");
                }
            })
        })
        .collect();
    for w in workers {
        w.await.expect("a worker finishes");
    }
    start.elapsed()
}

/// The parser on a long stream of small deltas; returns the wall time.
fn parse_stream() -> Duration {
    let event = format!("data: {}\n\n", json!({"choices": [{"delta": {"content": "token "}}]}));
    let mut body = String::with_capacity(STREAM_BYTES + event.len());
    while body.len() < STREAM_BYTES {
        body.push_str(&event);
    }
    body.push_str("data: [DONE]\n\n");
    let start = Instant::now();
    let mut stream = Stream::default();
    for piece in body.as_bytes().chunks(16 * 1024) {
        stream.feed(piece).expect("valid events");
    }
    assert!(stream.is_complete());
    start.elapsed()
}

fn main() {
    let runtime =
        tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("a tokio runtime starts");
    let rows = runtime.block_on(async {
        let url = instant_server().await;
        let mut settings = ProviderSettings::new("bench", url);
        settings.model = Some("bench".into());
        let provider = Arc::new(HttpProvider::new(settings).expect("valid settings"));
        requests(Arc::clone(&provider), 8).await; // warm-up
        let mut rows = Vec::new();
        for concurrency in [1, 64] {
            let took = requests(Arc::clone(&provider), concurrency).await;
            let rate = REQUESTS as f64 / took.as_secs_f64();
            let row = json!({
                "name": format!("HTTP provider, {REQUESTS} streamed requests, {concurrency} at once"),
                "runs": 1,
                "median_ms": (took.as_secs_f64() * 1e5).round() / 100.0,
                "best_ms": (took.as_secs_f64() * 1e5).round() / 100.0,
                "requests_per_s": rate.round(),
            });
            eprintln!("{row}");
            rows.push(row);
        }
        rows
    });
    let mut times: Vec<Duration> = (0..3).map(|_| parse_stream()).collect();
    times.sort();
    let mb = STREAM_BYTES as f64 / (1024.0 * 1024.0);
    let parse = json!({
        "name": "SSE parsing, 16 MiB in 16 KiB pieces",
        "runs": 3,
        "median_ms": (times[1].as_secs_f64() * 1e5).round() / 100.0,
        "best_ms": (times[0].as_secs_f64() * 1e5).round() / 100.0,
        "mb_per_s": (mb / times[1].as_secs_f64()).round(),
    });
    eprintln!("{parse}");
    let mut all = rows;
    all.push(parse);
    println!("{}", json!({ "provider": all }));
}
