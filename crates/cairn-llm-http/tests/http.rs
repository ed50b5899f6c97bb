//! The provider against a scripted server on loopback, streaming and not:
//! what it sends (request bodies are snapshots), what it reads, and how each
//! fault a server can throw is classed. The server is a raw socket, so it
//! can also cut a stream, stall, or not be there at all.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use cairn_domain::state::ErrorClass;
use cairn_llm_http::{ApiKey, HttpProvider, ProviderSettings, StructuredOutput};
use cairn_ports::{
    ChatMessage, ChatRequest, LlmProvider, ResponseFormat, Role, TokenSink, ToolCall, ToolSpec,
};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const KEY: &str = "sk-test-secret-123";

/// What the server does with one connection.
#[derive(Clone)]
enum Reply {
    /// Writes these bytes and closes.
    Full(String),
    /// Writes these bytes, then holds the connection open without a word.
    Stall(String),
    /// Writes these bytes, with `{auth}` replaced by the request's
    /// `Authorization` header, and closes: a server that echoes the key.
    Echo(String),
    /// Writes these bytes, then this piece again and again, never pausing
    /// long enough for an idle timeout, never ending.
    Drip(String, String),
}

/// A server that answers each connection with the next reply of its script
/// (the last one repeats), after `latency`, and keeps what it was sent.
struct Server {
    url: String,
    requests: Arc<Mutex<Vec<String>>>,
    most_at_once: Arc<AtomicUsize>,
}

impl Server {
    async fn start(script: Vec<Reply>, latency: Duration) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind loopback");
        let url = format!("http://{}/v1", listener.local_addr().expect("addr"));
        Self::serve(listener, script, latency, url).await
    }

    async fn serve(listener: TcpListener, script: Vec<Reply>, latency: Duration, url: String) -> Self {
        let requests = Arc::new(Mutex::new(Vec::new()));
        let most_at_once = Arc::new(AtomicUsize::new(0));
        let now = Arc::new(AtomicUsize::new(0));
        let (log, most) = (Arc::clone(&requests), Arc::clone(&most_at_once));
        tokio::spawn(async move {
            let mut n = 0;
            loop {
                let Ok((socket, _)) = listener.accept().await else { return };
                let reply = script.get(n).or(script.last()).cloned().expect("a script");
                n += 1;
                let (log, most, now) = (Arc::clone(&log), Arc::clone(&most), Arc::clone(&now));
                tokio::spawn(async move {
                    let at_once = now.fetch_add(1, Ordering::SeqCst) + 1;
                    most.fetch_max(at_once, Ordering::SeqCst);
                    answer(socket, reply, latency, &log).await;
                    now.fetch_sub(1, Ordering::SeqCst);
                });
            }
        });
        Self { url, requests, most_at_once }
    }

    fn bodies(&self) -> Vec<Value> {
        let requests = self.requests.lock().expect("lock");
        requests
            .iter()
            .map(|r| serde_json::from_str(&r[r.find("\r\n\r\n").expect("body") + 4..]).expect("json"))
            .collect()
    }
}

async fn answer(mut socket: TcpStream, reply: Reply, latency: Duration, log: &Mutex<Vec<String>>) {
    let mut request = Vec::new();
    let mut buf = [0u8; 8192];
    loop {
        let Ok(n) = socket.read(&mut buf).await else { return };
        request.extend_from_slice(&buf[..n]);
        let text = String::from_utf8_lossy(&request).to_string();
        if let Some(end) = text.find("\r\n\r\n") {
            let length = text
                .lines()
                .find_map(|l| {
                    l.to_ascii_lowercase().strip_prefix("content-length:").map(|v| v.trim().to_owned())
                })
                .and_then(|v| v.parse::<usize>().ok())
                .unwrap_or(0);
            if request.len() >= end + 4 + length {
                break;
            }
        }
        if n == 0 {
            return;
        }
    }
    log.lock().expect("lock").push(String::from_utf8_lossy(&request).to_string());
    tokio::time::sleep(latency).await;
    match reply {
        Reply::Full(bytes) => {
            let _ = socket.write_all(bytes.as_bytes()).await;
            let _ = socket.shutdown().await;
        }
        Reply::Stall(bytes) => {
            let _ = socket.write_all(bytes.as_bytes()).await;
            tokio::time::sleep(Duration::from_secs(30)).await;
        }
        Reply::Echo(bytes) => {
            let head = String::from_utf8_lossy(&request).to_string();
            let auth = head
                .lines()
                .find_map(|l| l.split_once(':').filter(|(k, _)| k.eq_ignore_ascii_case("authorization")))
                .map(|(_, v)| v.trim().to_owned())
                .unwrap_or_default();
            let _ = socket.write_all(bytes.replace("{auth}", &auth).as_bytes()).await;
            let _ = socket.shutdown().await;
        }
        Reply::Drip(head, piece) => {
            let _ = socket.write_all(head.as_bytes()).await;
            for _ in 0..3000 {
                if socket.write_all(piece.as_bytes()).await.is_err() {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
    }
}

fn http(status: &str, headers: &str, body: &str) -> Reply {
    Reply::Full(format!(
        "HTTP/1.1 {status}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n{headers}connection: close\r\n\r\n{body}",
        body.len()
    ))
}

/// An event stream, its body ending when the connection closes.
fn sse_text(events: &[String]) -> String {
    let mut out =
        "HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\nconnection: close\r\n\r\n".to_owned();
    for e in events {
        out.push_str(&format!("data: {e}\n\n"));
    }
    out
}

fn delta(text: &str) -> String {
    json!({"model": "gpt-test-0613", "choices": [{"delta": {"content": text}, "finish_reason": null}]})
        .to_string()
}

fn finish() -> String {
    json!({"choices": [{"delta": {}, "finish_reason": "stop"}]}).to_string()
}

fn usage() -> String {
    json!({"choices": [], "usage": {"prompt_tokens": 12, "completion_tokens": 4}}).to_string()
}

/// A complete streamed answer of `parts`.
fn streamed(parts: &[&str]) -> Reply {
    let mut events: Vec<String> = parts.iter().map(|p| delta(p)).collect();
    events.extend([finish(), usage(), "[DONE]".into()]);
    Reply::Full(sse_text(&events))
}

fn settings(base_url: &str, stream: bool) -> ProviderSettings {
    let mut s = ProviderSettings::new("default", base_url);
    s.api_key = Some(ApiKey::new(KEY.into()));
    s.model = Some("gpt-test".into());
    s.timeout = Duration::from_secs(10);
    s.first_byte_timeout = Duration::from_secs(10);
    s.stream = stream;
    s
}

fn provider(base_url: &str, stream: bool) -> HttpProvider {
    HttpProvider::new(settings(base_url, stream)).expect("valid settings")
}

fn request(format: ResponseFormat) -> ChatRequest {
    ChatRequest {
        model: None,
        messages: vec![ChatMessage::new(Role::System, "Be brief."), ChatMessage::new(Role::User, "Say hi")],
        temperature: Some(0.2),
        max_tokens: Some(50),
        format,
        tools: Vec::new(),
        idempotency_key: "run-1/ask/1".into(),
        tokens: None,
    }
}

fn schema() -> ResponseFormat {
    ResponseFormat::JsonSchema(
        json!({"type": "object", "required": ["hi"], "properties": {"hi": {"type": "boolean"}}}),
    )
}

#[tokio::test]
async fn a_streamed_answer_is_read_as_it_arrives_and_forwarded_live() {
    let server = Server::start(vec![streamed(&["{\"hi\"", ": tr", "ue}"])], Duration::ZERO).await;
    let seen = Arc::new(Mutex::new(Vec::<String>::new()));
    let live = Arc::clone(&seen);
    let mut req = request(schema());
    req.tokens = Some(TokenSink(Arc::new(move |t: &str| live.lock().expect("lock").push(t.to_owned()))));
    let answer = provider(&server.url, true).chat(req).await.expect("answer");
    assert_eq!(answer.text, "{\"hi\": true}");
    assert_eq!(
        (answer.usage.prompt_tokens, answer.usage.completion_tokens, answer.usage.estimated),
        (12, 4, false)
    );
    assert_eq!(answer.model, "gpt-test-0613");
    assert_eq!(*seen.lock().expect("lock"), ["{\"hi\"", ": tr", "ue}"]);
    let sent = server.requests.lock().expect("lock")[0].clone();
    let lower = sent.to_ascii_lowercase();
    assert!(sent.starts_with("POST /v1/chat/completions"), "{sent}");
    assert!(lower.contains("idempotency-key: run-1/ask/1"), "{sent}");
    assert!(lower.contains(&format!("authorization: bearer {}", KEY.to_ascii_lowercase())), "{sent}");
}

#[tokio::test]
async fn without_streaming_the_whole_body_is_read() {
    let body = r#"{"model":"gpt-test-0613","choices":[{"message":{"role":"assistant","content":"hello"}}]}"#;
    let server = Server::start(vec![http("200 OK", "", body)], Duration::ZERO).await;
    let answer = provider(&server.url, false).chat(request(ResponseFormat::Text)).await.expect("answer");
    assert_eq!(answer.text, "hello");
    assert!(answer.usage.estimated, "no usage reported: estimated, and marked so");
}

/// A request that offers a tool, after a round in which the model called it.
fn with_tools() -> ChatRequest {
    let mut req = request(ResponseFormat::Text);
    req.tools = vec![ToolSpec {
        name: "read_file".into(),
        description: "Reads a file.".into(),
        parameters: json!({"type": "object", "required": ["path"], "properties": {"path": {"type": "string"}}}),
    }];
    let call =
        ToolCall { id: "call_1".into(), name: "read_file".into(), arguments: r#"{"path":"a.txt"}"#.into() };
    req.messages.push(ChatMessage::calls("", vec![call]));
    req.messages.push(ChatMessage::tool_result("call_1", "the text"));
    req
}

#[tokio::test]
async fn tools_are_offered_and_the_calls_the_model_asks_for_come_back_streaming_or_not() {
    let whole = json!({"model": "m", "choices": [{"finish_reason": "tool_calls", "message": {"role": "assistant", "content": null,
        "tool_calls": [{"id": "call_2", "type": "function", "function": {"name": "read_file", "arguments": "{\"path\":\"b.txt\"}"}},
                       {"id": "call_3", "type": "function", "function": {"name": "list_files", "arguments": "{}"}}]}}]});
    let pieces = [
        json!({"choices": [{"delta": {"tool_calls": [{"index": 0, "id": "call_2", "type": "function", "function": {"name": "read_file", "arguments": ""}}]}}]}),
        json!({"choices": [{"delta": {"tool_calls": [{"index": 0, "function": {"arguments": "{\"path\":"}}]}}]}),
        json!({"choices": [{"delta": {"tool_calls": [{"index": 0, "function": {"arguments": "\"b.txt\"}"}}]}}]}),
        json!({"choices": [{"delta": {"tool_calls": [{"index": 1, "id": "call_3", "function": {"name": "list_files", "arguments": "{}"}}]}}]}),
        json!({"choices": [{"delta": {}, "finish_reason": "tool_calls"}]}),
    ];
    let mut events: Vec<String> = pieces.iter().map(Value::to_string).collect();
    events.extend([usage(), "[DONE]".into()]);
    for (stream, reply) in
        [(false, http("200 OK", "", &whole.to_string())), (true, Reply::Full(sse_text(&events)))]
    {
        let server = Server::start(vec![reply], Duration::ZERO).await;
        let answer = provider(&server.url, stream).chat(with_tools()).await.expect("answer");
        assert_eq!(answer.text, "", "stream: {stream}");
        assert_eq!(
            answer.tool_calls,
            [
                ToolCall {
                    id: "call_2".into(),
                    name: "read_file".into(),
                    arguments: r#"{"path":"b.txt"}"#.into()
                },
                ToolCall { id: "call_3".into(), name: "list_files".into(), arguments: "{}".into() },
            ],
            "stream: {stream}"
        );
        let body = &server.bodies()[0];
        assert_eq!(body["tools"][0]["type"], "function");
        assert_eq!(body["tools"][0]["function"]["name"], "read_file");
        assert_eq!(body["tools"][0]["function"]["parameters"]["required"], json!(["path"]));
        let messages = body["messages"].as_array().expect("messages");
        assert_eq!(
            messages[2],
            json!({"role": "assistant", "content": "", "tool_calls": [{"id": "call_1", "type": "function", "function": {"name": "read_file", "arguments": "{\"path\":\"a.txt\"}"}}]})
        );
        assert_eq!(messages[3], json!({"role": "tool", "content": "the text", "tool_call_id": "call_1"}));
    }
}

#[tokio::test]
async fn a_tool_call_streamed_out_of_order_or_too_many_fails_the_call() {
    let skipped = json!({"choices": [{"delta": {"tool_calls": [{"index": 3, "id": "c", "function": {"name": "x", "arguments": "{}"}}]}}]});
    let server = Server::start(vec![Reply::Full(sse_text(&[skipped.to_string()]))], Duration::ZERO).await;
    let err = provider(&server.url, true).chat(with_tools()).await.expect_err("out of order");
    assert_eq!(err.class, ErrorClass::Transient);
    assert!(err.message.contains("out of order"), "{}", err.message);
    let calls: Vec<Value> = (0..100)
        .map(|i| json!({"id": format!("c{i}"), "type": "function", "function": {"name": "x", "arguments": "{}"}}))
        .collect();
    let many = json!({"choices": [{"message": {"role": "assistant", "content": null, "tool_calls": calls}}]});
    let server = Server::start(vec![http("200 OK", "", &many.to_string())], Duration::ZERO).await;
    let err = provider(&server.url, false).chat(with_tools()).await.expect_err("too many");
    assert_eq!(err.class, ErrorClass::InvalidOutput);
    assert!(err.message.contains("100 tool calls"), "{}", err.message);
}

#[tokio::test]
async fn request_bodies_per_output_mode() {
    let server = Server::start(vec![streamed(&["ok"])], Duration::ZERO).await;
    let mut shown = Vec::new();
    for (mode, stream, format) in [
        (StructuredOutput::JsonSchema, true, schema()),
        (StructuredOutput::JsonObject, true, schema()),
        (StructuredOutput::Prompt, true, schema()),
        (StructuredOutput::JsonSchema, true, ResponseFormat::Text),
        (StructuredOutput::JsonSchema, false, ResponseFormat::Json),
    ] {
        let mut s = settings(&server.url, stream);
        s.structured_output = mode;
        let p = HttpProvider::new(s).expect("valid");
        let body = p.body(&request(format), "gpt-test");
        shown.push(format!(
            "{mode:?}, stream {stream}:\n{}",
            serde_json::to_string_pretty(&body).expect("json")
        ));
    }
    insta::assert_snapshot!(shown.join("\n\n"));
}

#[tokio::test]
async fn every_fault_gets_its_class_streaming_or_not_and_never_shows_the_key() {
    let cut = Reply::Full(sse_text(&[delta("Hel"), delta("lo")]));
    let error_event =
        Reply::Full(sse_text(&[delta("Hel"), json!({"error": {"message": "overloaded"}}).to_string()]));
    let cases: Vec<(&str, Reply, ErrorClass)> = vec![
        (
            "429 seconds",
            http("429 Too Many Requests", "retry-after: 7\r\n", r#"{"error":{"message":"slow down"}}"#),
            ErrorClass::RateLimited,
        ),
        ("429 ms", http("429 Too Many Requests", "retry-after-ms: 1500\r\n", "{}"), ErrorClass::RateLimited),
        (
            "429 quota",
            http(
                "429 Too Many Requests",
                "",
                r#"{"error":{"message":"You exceeded your current quota","type":"insufficient_quota","code":"insufficient_quota"}}"#,
            ),
            ErrorClass::Fatal,
        ),
        ("401", http("401 Unauthorized", "", r#"{"error":{"message":"bad key"}}"#), ErrorClass::Permission),
        ("403", http("403 Forbidden", "", "{}"), ErrorClass::Permission),
        ("500", http("500 Internal Server Error", "", "oops"), ErrorClass::Transient),
        ("503", http("503 Service Unavailable", "", "{}"), ErrorClass::Transient),
        ("400", http("400 Bad Request", "", r#"{"error":{"message":"model not found"}}"#), ErrorClass::Fatal),
        ("malformed body", http("200 OK", "", "{not json"), ErrorClass::Transient),
        ("no choices", http("200 OK", "", r#"{"choices":[]}"#), ErrorClass::Transient),
        ("stream cut before the end", cut, ErrorClass::Transient),
        ("error event in a 200 stream", error_event, ErrorClass::Transient),
    ];
    let mut table = Vec::new();
    for (name, reply, class) in cases {
        let server = Server::start(vec![reply], Duration::ZERO).await;
        for stream in [true, false] {
            let err =
                provider(&server.url, stream).chat(request(ResponseFormat::Text)).await.expect_err("fails");
            assert_eq!(err.class, class, "{name} (stream {stream}): {err}");
            let all = format!("{err:?}");
            assert!(!all.contains(KEY), "the key leaked: {all}");
            if stream {
                table.push(format!(
                    "{name}: {}: {}{}{}{}",
                    err.class,
                    err.message,
                    err.retry_after.map(|d| format!(" (retry after {d:?})")).unwrap_or_default(),
                    err.hint.map(|h| format!("\n    hint: {h}")).unwrap_or_default(),
                    err.cause.map(|c| format!("\n    cause: {c:?}")).unwrap_or_default()
                ));
            }
        }
    }
    insta::assert_snapshot!(table.join("\n"));
}

#[tokio::test]
async fn silences_and_absences_time_out_or_are_transient() {
    let server = Server::start(vec![Reply::Stall(String::new())], Duration::ZERO).await;
    let mut s = settings(&server.url, true);
    s.first_byte_timeout = Duration::from_millis(200);
    let err =
        HttpProvider::new(s).expect("valid").chat(request(ResponseFormat::Text)).await.expect_err("silent");
    assert_eq!(err.class, ErrorClass::Timeout, "{err}");
    assert!(err.message.contains("did not start answering"), "{err}");

    let head = sse_text(&[delta("Hel")]);
    let server = Server::start(vec![Reply::Stall(head)], Duration::ZERO).await;
    let mut s = settings(&server.url, true);
    s.idle_timeout = Duration::from_millis(200);
    let err =
        HttpProvider::new(s).expect("valid").chat(request(ResponseFormat::Text)).await.expect_err("stalled");
    assert_eq!(err.class, ErrorClass::Timeout, "{err}");
    assert!(err.message.contains("went silent"), "{err}");

    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let url = format!("http://{}/v1", listener.local_addr().expect("addr"));
    drop(listener);
    let err = provider(&url, true).chat(request(ResponseFormat::Text)).await.expect_err("refused");
    assert_eq!(err.class, ErrorClass::Transient, "{err:?}");
    assert!(format!("{:?}", ApiKey::new(KEY.into())).contains("***"));
}

#[tokio::test]
async fn a_refused_connection_is_tried_again_before_any_byte() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr");
    drop(listener);
    // The server comes up after the first attempt was refused.
    let url = format!("http://{addr}/v1");
    let later = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(50)).await;
        let listener = TcpListener::bind(addr).await.expect("rebind");
        Server::serve(listener, vec![streamed(&["hi"])], Duration::ZERO, String::new()).await
    });
    let answer =
        provider(&url, true).chat(request(ResponseFormat::Text)).await.expect("the retry reached it");
    assert_eq!(answer.text, "hi");
    let server = later.await.expect("served");
    assert_eq!(server.requests.lock().expect("lock").len(), 1);
}

#[tokio::test]
async fn max_concurrency_bounds_requests_in_flight() {
    let server = Server::start(vec![streamed(&["ok"])], Duration::from_millis(100)).await;
    let mut s = settings(&server.url, true);
    s.max_concurrency = Some(2);
    let p = Arc::new(HttpProvider::new(s).expect("valid"));
    let calls: Vec<_> = (0..6)
        .map(|_| {
            let p = Arc::clone(&p);
            tokio::spawn(async move { p.chat(request(ResponseFormat::Text)).await })
        })
        .collect();
    for call in calls {
        call.await.expect("joined").expect("answered");
    }
    assert_eq!(server.most_at_once.load(Ordering::SeqCst), 2);
    assert_eq!(server.bodies().len(), 6);
}

/// An HTTP response with no length, its body ending when the connection closes.
fn raw(status: &str, content_type: &str, body: &str) -> String {
    format!("HTTP/1.1 {status}\r\ncontent-type: {content_type}\r\nconnection: close\r\n\r\n{body}")
}

#[tokio::test]
async fn a_key_the_server_echoes_reaches_no_error() {
    let json_error = |m: &str| json!({"error": {"message": m}}).to_string();
    let url_error = json_error(&format!("upstream https://api.example/v1?key={KEY}&x=1 refused you"));
    let cases = [
        raw("400 Bad Request", "application/json", &json_error("you sent Authorization: {auth}")),
        raw("401 Unauthorized", "application/json", &json_error("{auth} is not a valid key")),
        raw("429 Too Many Requests", "application/json", &json_error("slow down, {auth}")),
        raw("500 Internal Server Error", "application/json", &json_error("crashed on {auth}")),
        raw("400 Bad Request", "application/json", &url_error),
        raw("200 OK", "text/event-stream", &format!("data: {}\n\n", json_error("stream failed for {auth}"))),
    ];
    for reply in cases {
        let server = Server::start(vec![Reply::Echo(reply.clone())], Duration::ZERO).await;
        let err = provider(&server.url, true).chat(request(ResponseFormat::Text)).await.expect_err("fails");
        let all = format!("{err:?} {err}");
        assert!(!all.contains(KEY), "the key leaked: {all}");
        assert!(all.contains("***"), "the echo is shown, hidden: {all}");
    }
}

#[tokio::test]
async fn a_finished_stream_is_used_though_the_server_holds_the_connection() {
    let mut events: Vec<String> = ["Hel", "lo"].iter().map(|p| delta(p)).collect();
    events.extend([finish(), "[DONE]".into()]);
    // `[DONE]` (no usage), then the connection stays open for longer than any timeout here.
    let server = Server::start(vec![Reply::Stall(sse_text(&events))], Duration::ZERO).await;
    let answer =
        provider(&server.url, true).chat(request(ResponseFormat::Text)).await.expect("used at [DONE]");
    assert_eq!((answer.text.as_str(), answer.usage.estimated), ("Hello", true));

    // A finish reason and no `[DONE]`: used once the server goes quiet.
    let server = Server::start(vec![Reply::Stall(sse_text(&[delta("Hi"), finish()]))], Duration::ZERO).await;
    let answer =
        provider(&server.url, true).chat(request(ResponseFormat::Text)).await.expect("used after its finish");
    assert_eq!((answer.text.as_str(), answer.usage.estimated), ("Hi", true));
}

#[tokio::test]
async fn a_line_without_end_or_an_answer_too_large_fails_and_is_not_kept() {
    let head =
        "HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\nconnection: close\r\n\r\ndata: {\"x\":\"";
    let line = format!("{head}{}", "a".repeat(1 << 20));
    let server = Server::start(vec![Reply::Full(line)], Duration::ZERO).await;
    let mut s = settings(&server.url, true);
    s.max_answer_bytes = 64 << 10;
    let err = HttpProvider::new(s.clone()).expect("valid").chat(request(ResponseFormat::Text)).await;
    let err = err.expect_err("a line past the limit");
    assert_eq!(err.class, ErrorClass::InvalidOutput, "{err}");

    let long = "b".repeat(100 << 10);
    let server = Server::start(vec![streamed(&[&long])], Duration::ZERO).await;
    s.base_url = server.url.clone();
    let err = HttpProvider::new(s.clone()).expect("valid").chat(request(ResponseFormat::Text)).await;
    assert_eq!(err.expect_err("streamed, too long").class, ErrorClass::InvalidOutput);

    let body = json!({"choices": [{"message": {"content": long}}]}).to_string();
    let server = Server::start(vec![http("200 OK", "", &body)], Duration::ZERO).await;
    s.base_url = server.url.clone();
    s.stream = false;
    let err = HttpProvider::new(s).expect("valid").chat(request(ResponseFormat::Text)).await;
    assert_eq!(err.expect_err("whole, too long").class, ErrorClass::InvalidOutput);
}

#[tokio::test]
async fn the_whole_timeout_fires_while_a_server_drips_forever() {
    let head = "HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\nconnection: close\r\n\r\n".to_owned();
    for piece in [": keep-alive\n\n", "a"] {
        let server = Server::start(vec![Reply::Drip(head.clone(), piece.into())], Duration::ZERO).await;
        let mut s = settings(&server.url, true);
        s.timeout = Duration::from_millis(300);
        s.idle_timeout = Duration::from_secs(5);
        let err = HttpProvider::new(s).expect("valid").chat(request(ResponseFormat::Text)).await;
        let err = err.expect_err("never finishes");
        assert_eq!(err.class, ErrorClass::Timeout, "{err}");
        assert!(err.message.contains("did not finish within"), "{err}");
    }
}

#[tokio::test]
async fn a_retry_after_past_the_cap_fails_at_once_with_rate_limited_and_says_why() {
    let limited =
        |headers: &str| http("429 Too Many Requests", headers, r#"{"error":{"message":"slow down"}}"#);
    for (headers, asked) in
        [("retry-after: 100000\r\n", "1d3h46m40s"), ("retry-after-ms: 400000\r\n", "6m40s")]
    {
        let server = Server::start(vec![limited(headers)], Duration::ZERO).await;
        for stream in [true, false] {
            let started = std::time::Instant::now();
            let err = provider(&server.url, stream)
                .chat(request(ResponseFormat::Text))
                .await
                .expect_err("rate limited");
            assert!(started.elapsed() < Duration::from_secs(5), "not prompt: {:?}", started.elapsed());
            assert_eq!(err.class, ErrorClass::RateLimited, "{err}");
            assert_eq!(
                err.message,
                format!(
                    "the provider answered 429: slow down; it asks to wait {asked}, more than the 5m this provider allows"
                )
            );
            assert_eq!(err.retry_after, None, "no wait handed to the engine: {err:?}");
            assert!(err.hint.as_deref().is_some_and(|h| h.contains("failed at once")), "{err:?}");
        }
    }
    // The cap is the provider's: a shorter one refuses a shorter wait.
    let server = Server::start(vec![limited("retry-after: 3\r\n")], Duration::ZERO).await;
    let mut s = settings(&server.url, true);
    s.max_retry_after = Duration::from_secs(2);
    let err = HttpProvider::new(s).expect("valid").chat(request(ResponseFormat::Text)).await;
    let err = err.expect_err("rate limited");
    assert_eq!((err.class, err.retry_after), (ErrorClass::RateLimited, None), "{err:?}");
    assert!(err.message.ends_with("it asks to wait 3s, more than the 2s this provider allows"), "{err}");
}

#[tokio::test]
async fn a_retry_after_within_the_cap_is_handed_to_the_engine() {
    let limited = |headers: &str| http("429 Too Many Requests", headers, "{}");
    for (headers, wait) in [
        ("retry-after: 7\r\n", Duration::from_secs(7)),
        ("retry-after: 300\r\n", Duration::from_secs(300)),
        ("retry-after-ms: 1500\r\n", Duration::from_millis(1500)),
    ] {
        let server = Server::start(vec![limited(headers)], Duration::ZERO).await;
        let err =
            provider(&server.url, true).chat(request(ResponseFormat::Text)).await.expect_err("rate limited");
        assert_eq!((err.class, err.retry_after), (ErrorClass::RateLimited, Some(wait)), "{headers}: {err:?}");
        assert_eq!(err.message, "the provider answered 429: 429 Too Many Requests", "{headers}");
        assert_eq!(err.hint, None, "{headers}: the cause words it");
    }
}
