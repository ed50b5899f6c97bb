//! The provider against a scripted server on loopback: what it sends, and
//! how each answer is classed.

use std::time::Duration;

use cairn_domain::state::ErrorClass;
use cairn_llm_http::{ApiKey, HttpProvider, ProviderSettings};
use cairn_ports::{ChatMessage, ChatRequest, LlmProvider, ResponseFormat, Role};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

const KEY: &str = "sk-test-secret-123";

/// Serves one canned response; returns the base URL and the request it received.
async fn serve_once(response: String) -> (String, tokio::task::JoinHandle<String>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind loopback");
    let addr = listener.local_addr().expect("addr");
    let handle = tokio::spawn(async move {
        let (mut socket, _) = listener.accept().await.expect("accept");
        let mut request = Vec::new();
        let mut buf = [0u8; 4096];
        loop {
            let n = socket.read(&mut buf).await.expect("read");
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
                break;
            }
        }
        socket.write_all(response.as_bytes()).await.expect("write");
        socket.shutdown().await.ok();
        String::from_utf8_lossy(&request).to_string()
    });
    (format!("http://{addr}/v1"), handle)
}

fn http(status: &str, headers: &str, body: &str) -> String {
    format!(
        "HTTP/1.1 {status}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n{headers}connection: close\r\n\r\n{body}",
        body.len()
    )
}

fn provider(base_url: String) -> HttpProvider {
    HttpProvider::new(ProviderSettings {
        name: "default".into(),
        base_url,
        api_key: Some(ApiKey::new(KEY.into())),
        api_key_setting: "CAIRN_LLM_API_KEY".into(),
        model: Some("gpt-test".into()),
        timeout: Duration::from_secs(10),
    })
    .expect("valid settings")
}

fn request() -> ChatRequest {
    ChatRequest {
        model: None,
        messages: vec![
            ChatMessage { role: Role::System, content: "Be brief.".into() },
            ChatMessage { role: Role::User, content: "Say hi".into() },
        ],
        temperature: Some(0.2),
        max_tokens: Some(50),
        format: ResponseFormat::JsonSchema(serde_json::json!({"type": "object"})),
        idempotency_key: "run-1/ask/1".into(),
    }
}

#[tokio::test]
async fn sends_a_chat_completion_and_reads_text_and_usage() {
    let body = r#"{"model":"gpt-test-0613","choices":[{"message":{"role":"assistant","content":"{\"hi\":true}"}}],"usage":{"prompt_tokens":12,"completion_tokens":4}}"#;
    let (url, server) = serve_once(http("200 OK", "", body)).await;
    let answer = provider(url).chat(request()).await.expect("answer");
    assert_eq!(answer.text, "{\"hi\":true}");
    assert_eq!(
        (answer.usage.prompt_tokens, answer.usage.completion_tokens, answer.usage.estimated),
        (12, 4, false)
    );
    assert_eq!(answer.model, "gpt-test-0613");
    let sent = server.await.expect("request");
    assert!(sent.starts_with("POST /v1/chat/completions"), "{sent}");
    let lower = sent.to_ascii_lowercase();
    assert!(lower.contains("idempotency-key: run-1/ask/1"), "{sent}");
    assert!(lower.contains(&format!("authorization: bearer {}", KEY.to_ascii_lowercase())), "{sent}");
    let json: serde_json::Value =
        serde_json::from_str(&sent[sent.find("\r\n\r\n").expect("body") + 4..]).expect("json");
    assert_eq!(json["model"], "gpt-test");
    assert_eq!(json["messages"][1]["content"], "Say hi");
    assert_eq!(json["response_format"]["type"], "json_schema");
}

#[tokio::test]
async fn each_failure_gets_its_class_and_never_the_key() {
    let cases = [
        (
            http("429 Too Many Requests", "retry-after: 7\r\n", r#"{"error":{"message":"slow down"}}"#),
            ErrorClass::RateLimited,
        ),
        (http("401 Unauthorized", "", r#"{"error":{"message":"bad key"}}"#), ErrorClass::Permission),
        (http("403 Forbidden", "", "{}"), ErrorClass::Permission),
        (http("500 Internal Server Error", "", "oops"), ErrorClass::Transient),
        (http("503 Service Unavailable", "", "{}"), ErrorClass::Transient),
        (http("400 Bad Request", "", r#"{"error":{"message":"model not found"}}"#), ErrorClass::Fatal),
        (http("200 OK", "", "{not json"), ErrorClass::Transient),
        (http("200 OK", "", r#"{"choices":[]}"#), ErrorClass::Transient),
    ];
    for (response, class) in cases {
        let (url, _server) = serve_once(response.clone()).await;
        let err = provider(url).chat(request()).await.expect_err("fails");
        assert_eq!(err.class, class, "{response}: {err}");
        let all = format!("{err:?} {}", err.hint.clone().unwrap_or_default());
        assert!(!all.contains(KEY), "the key leaked: {all}");
        match class {
            ErrorClass::RateLimited => assert_eq!(err.retry_after, Some(Duration::from_secs(7))),
            ErrorClass::Permission => {
                assert!(err.hint.as_deref().unwrap_or("").contains("CAIRN_LLM_API_KEY"), "{err:?}")
            }
            ErrorClass::Fatal => assert!(err.message.contains("model not found"), "{err:?}"),
            _ => {}
        }
    }
}

#[tokio::test]
async fn a_server_that_is_not_there_is_transient() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let url = format!("http://{}/v1", listener.local_addr().expect("addr"));
    drop(listener);
    let err = provider(url).chat(request()).await.expect_err("refused");
    assert_eq!(err.class, ErrorClass::Transient, "{err:?}");
    assert!(format!("{:?}", ApiKey::new(KEY.into())).contains("***"));
}
