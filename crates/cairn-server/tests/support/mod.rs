//! What the server's test files share: the whole API in process (an app
//! over a memory store, the mock model answering every agent, a service
//! driving runs, the router), tokens to call it with, requests and their
//! answers, problem documents and SSE text. No socket: each request goes
//! through the router with `oneshot`.
#![allow(dead_code, reason = "each test file uses part of the support")]

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::http::{HeaderMap, Method, Request, Response, StatusCode, header};
use cairn_app::app::{App, Parts};
use cairn_app::follow::{Both, Hub};
use cairn_app::hooks::HookKey;
use cairn_app::{Service, Stores};
use cairn_domain::access::Role;
use cairn_domain::id::WorkflowId;
use cairn_engine::{EngineBuilder, MemoryStore, MockLlm};
use cairn_ports::{Clock, EventSink, NoSink};
use cairn_server::{Auth, Shared};
use serde_json::{Value, json};
use tokio::sync::watch;
use tower::ServiceExt;

/// The key webhook deliveries to `hooked` are signed with.
pub const HOOK_KEY: &str = "s3cret-hook-key";

/// A workflow the mock takes to the end: one agent step, then a step that
/// reads its output. Its one input has a default.
pub const HELLO: &str = r#"cairn: 1
id: hello
inputs:
  topic: { type: string, default: rivers }
agents:
  w: { system: You write. }
steps:
  - id: draft
    agent: w
    prompt: "Write about {{ inputs.topic }}."
  - id: publish
    set: "{{ steps.draft.output }}"
"#;

/// A workflow that waits at an approval only the gate role `lead` may
/// give, after an agent step, and goes on to a last step once approved.
pub const GATED: &str = r#"cairn: 1
id: gated
agents:
  w: { system: You write. }
steps:
  - id: draft
    agent: w
    prompt: "Write it."
  - id: sign_off
    approval:
      message: "Ship it?"
      approvers: [lead]
  - id: after
    set: "{{ steps.sign_off.output.approved }}"
"#;

/// How long a test waits for a run to get somewhere before it fails.
pub const PATIENCE: Duration = Duration::from_secs(20);

/// The API in process, and the app under it (for fixtures a test makes
/// without going through the API).
pub struct Server {
    /// The API's router.
    pub router: Router,
    /// The service the router drives runs with.
    pub service: Arc<Service>,
    /// Turning it true ends the live streams, as a closing server does.
    /// Kept here: a dropped sender would end every stream at once.
    pub closing: watch::Sender<bool>,
}

impl Server {
    /// The API over a fresh memory store, on `clock`, asking for tokens.
    pub fn new(clock: Arc<dyn Clock>) -> Self {
        let stores = Stores::both(MemoryStore::new());
        let hub = Arc::new(Hub::new());
        let sink: Arc<dyn EventSink> = Arc::new(Both(Arc::new(NoSink), hub.clone()));
        let engine = EngineBuilder::new(Arc::clone(&stores.runs))
            .clock(Arc::clone(&clock))
            .sink(sink)
            .every_provider(Arc::new(MockLlm::new(Arc::clone(&clock), Duration::ZERO)))
            .build();
        let parts = Parts {
            store: stores.runs,
            tokens: stores.tokens,
            workflows: stores.workflows,
            clock,
            prices: Default::default(),
            secrets: Default::default(),
            hub,
            meter: cairn_app::meter::Meter::new(),
            search: stores.search,
        };
        // `hooked` takes webhooks signed with HOOK_KEY; `unkeyed` names a
        // variable nobody set.
        let hooks = cairn_app::hooks::HookKeys::new(
            [
                (WorkflowId::new("hooked").expect("id"), HookKey::Set(HOOK_KEY.to_owned())),
                (WorkflowId::new("unkeyed").expect("id"), HookKey::Unset { env: "UNKEYED_SECRET".into() }),
            ]
            .into(),
        );
        let service = Service::new(Arc::new(App::new(engine, parts).with_hooks(hooks)));
        let (closing, closing_rx) = watch::channel(false);
        let router = cairn_server::router(Shared::new(
            Arc::clone(&service),
            Auth::Token { local_key: None },
            closing_rx,
        ));
        Self { router, service, closing }
    }

    /// The API on the system clock.
    pub fn on_system_clock() -> Self {
        Self::new(Arc::new(cairn_engine::SystemClock))
    }

    /// The application the API calls.
    pub fn app(&self) -> &Arc<App> {
        self.service.app()
    }

    /// A new token's secret: named `name`, acting as `role`, deciding at
    /// gates as `gate_roles`.
    pub async fn token(&self, name: &str, role: Role, gate_roles: &[&str]) -> String {
        let roles = gate_roles.iter().map(|r| (*r).to_owned()).collect();
        self.app().create_token(name, role, roles, None).await.expect("the token is made").secret
    }

    /// Sends `request` through the router.
    pub async fn send(&self, request: Request<Body>) -> Response<Body> {
        self.router.clone().oneshot(request).await.expect("the router answers every request")
    }

    /// Sends `method uri` with `token` (as a bearer) and `body` (as JSON),
    /// and reads the answer whole.
    pub async fn call(&self, method: Method, uri: &str, token: Option<&str>, body: Option<Value>) -> Answer {
        read(self.send(request(method, uri, token, body)).await).await
    }

    /// `GET uri` as `token`, read whole.
    pub async fn get(&self, uri: &str, token: &str) -> Answer {
        self.call(Method::GET, uri, Some(token), None).await
    }

    /// `POST uri` as `token` with a JSON `body`, read whole.
    pub async fn post(&self, uri: &str, token: &str, body: Value) -> Answer {
        self.call(Method::POST, uri, Some(token), Some(body)).await
    }

    /// Starts a run of `definition` through the API as `token` and
    /// returns its id (the start must answer `201`).
    pub async fn start(&self, token: &str, definition: &str) -> String {
        let answer = self.post("/api/v1/runs", token, json!({"definition": definition})).await;
        assert_eq!(answer.status, StatusCode::CREATED, "the run starts: {}", answer.body);
        answer.body["run_id"].as_str().expect("the run JSON has its id").to_owned()
    }

    /// The run's JSON once its status is `status`; fails the test when it
    /// does not get there in time.
    pub async fn wait_for(&self, run: &str, token: &str, status: &str) -> Value {
        let deadline = tokio::time::Instant::now() + PATIENCE;
        loop {
            let answer = self.get(&format!("/api/v1/runs/{run}"), token).await;
            assert_eq!(answer.status, StatusCode::OK, "the run is there: {}", answer.body);
            if answer.body["status"] == status {
                return answer.body;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "run {run} did not get to `{status}`; it is {}",
                answer.body["status"]
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Waits until the service no longer drives `run` (its drive has
    /// ended, not only reached a status): a pause or cancel sent then is
    /// recorded by the request itself, not handed to a driver.
    pub async fn wait_idle(&self, run: &str) {
        let id = cairn_domain::id::RunId::new(run).expect("a run id");
        let deadline = tokio::time::Instant::now() + PATIENCE;
        while self.service.drives(&id) {
            assert!(tokio::time::Instant::now() < deadline, "run {run} is still driven");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    /// Every event of a run, through the API.
    pub async fn events(&self, run: &str, token: &str) -> Vec<Value> {
        let answer = self.get(&format!("/api/v1/runs/{run}/events"), token).await;
        assert_eq!(answer.status, StatusCode::OK, "{}", answer.body);
        answer.body["events"].as_array().expect("an array of events").clone()
    }
}

/// A request: `token` as a bearer, `body` as JSON.
pub fn request(method: Method, uri: &str, token: Option<&str>, body: Option<Value>) -> Request<Body> {
    let mut builder = Request::builder().method(method).uri(uri);
    if let Some(token) = token {
        builder = builder.header(header::AUTHORIZATION, format!("Bearer {token}"));
    }
    let body = match body {
        Some(value) => {
            builder = builder.header(header::CONTENT_TYPE, "application/json");
            Body::from(value.to_string())
        }
        None => Body::empty(),
    };
    builder.body(body).expect("a well-formed request")
}

/// An answer read whole: its status, headers and body (JSON, or the text
/// as a JSON string when it is not JSON, or null when empty).
#[derive(Debug)]
pub struct Answer {
    /// The status.
    pub status: StatusCode,
    /// The headers.
    pub headers: HeaderMap,
    /// The body.
    pub body: Value,
}

impl Answer {
    /// The `Content-Type`, or "".
    pub fn content_type(&self) -> &str {
        self.headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("")
    }

    /// Asserts this is a problem document (RFC 9457 as `spec/api.md` has
    /// it) with `status` and `code`, and returns its body.
    #[track_caller]
    pub fn problem(&self, status: StatusCode, code: &str) -> &Value {
        assert_eq!(self.status, status, "status; body: {}", self.body);
        assert_problem_shape(self);
        assert_eq!(self.body["code"], code, "code; body: {}", self.body);
        &self.body
    }
}

/// Asserts `answer` is a well-formed problem document, whatever its code:
/// `application/problem+json`, with `type`, `title`, `status` (its own),
/// `detail` and a snake_case `code`.
#[track_caller]
pub fn assert_problem_shape(answer: &Answer) {
    assert_eq!(answer.content_type(), "application/problem+json", "content type; body: {}", answer.body);
    let body = &answer.body;
    for key in ["type", "title", "detail", "code"] {
        assert!(body[key].as_str().is_some_and(|s| !s.is_empty()), "`{key}` is a non-empty string in {body}");
    }
    assert_eq!(body["status"], answer.status.as_u16(), "`status` repeats the HTTP status in {body}");
    let code = body["code"].as_str().unwrap_or_default();
    assert!(code.bytes().all(|b| b.is_ascii_lowercase() || b == b'_'), "`code` is snake_case: {code}");
}

/// Reads a response whole.
pub async fn read(response: Response<Body>) -> Answer {
    let (parts, body) = response.into_parts();
    let bytes = tokio::time::timeout(PATIENCE, axum::body::to_bytes(body, usize::MAX))
        .await
        .expect("the body ends in time")
        .expect("the body reads");
    let body = if bytes.is_empty() {
        Value::Null
    } else {
        serde_json::from_slice(&bytes)
            .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into_owned()))
    };
    Answer { status: parts.status, headers: parts.headers, body }
}

/// One Server-Sent Event as it came: its `id`, `event` and `data` fields.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SseEvent {
    /// `id:`, when it had one.
    pub id: Option<String>,
    /// `event:`, when it had one.
    pub event: Option<String>,
    /// `data:`, its lines joined.
    pub data: String,
}

impl SseEvent {
    /// The data as JSON.
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.data).expect("the data is JSON")
    }
}

/// Takes the complete events off the front of `buffer` (each ends with a
/// blank line), leaving a partial one; comment-only blocks are dropped.
pub fn take_events(buffer: &mut String) -> Vec<SseEvent> {
    let mut events = Vec::new();
    while let Some(end) = buffer.find("\n\n") {
        let block: String = buffer.drain(..end + 2).collect();
        let mut event = SseEvent { id: None, event: None, data: String::new() };
        let mut data = Vec::new();
        let mut fields = 0;
        for line in block.lines().filter(|l| !l.is_empty() && !l.starts_with(':')) {
            let (field, value) = line.split_once(':').unwrap_or((line, ""));
            let value = value.strip_prefix(' ').unwrap_or(value);
            fields += 1;
            match field {
                "id" => event.id = Some(value.to_owned()),
                "event" => event.event = Some(value.to_owned()),
                "data" => data.push(value),
                other => panic!("an SSE field we do not send: `{other}` in {block:?}"),
            }
        }
        if fields > 0 {
            event.data = data.join("\n");
            events.push(event);
        }
    }
    events
}

/// Parses a whole SSE body; fails on a partial event at its end.
pub fn parse_sse(text: &str) -> Vec<SseEvent> {
    let mut buffer = text.replace("\r\n", "\n");
    let events = take_events(&mut buffer);
    assert!(buffer.trim().is_empty(), "the stream ends between events, not in one: {buffer:?}");
    events
}

/// Reads a live SSE response event by event, as its frames come.
pub struct SseReader {
    body: axum::body::BodyDataStream,
    buffer: String,
    ready: std::collections::VecDeque<SseEvent>,
}

impl SseReader {
    /// A reader of `response`'s body.
    pub fn new(response: Response<Body>) -> Self {
        Self {
            body: response.into_body().into_data_stream(),
            buffer: String::new(),
            ready: Default::default(),
        }
    }

    /// The next event, or `None` once the stream has ended; `Err` when
    /// nothing came within `wait`.
    pub async fn next_within(
        &mut self,
        wait: Duration,
    ) -> Result<Option<SseEvent>, tokio::time::error::Elapsed> {
        use futures_util::StreamExt;
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            if let Some(event) = self.ready.pop_front() {
                return Ok(Some(event));
            }
            match tokio::time::timeout_at(deadline, self.body.next()).await? {
                Some(frame) => {
                    let bytes = frame.expect("the stream reads");
                    self.buffer.push_str(&String::from_utf8_lossy(&bytes).replace("\r\n", "\n"));
                    self.ready.extend(take_events(&mut self.buffer));
                }
                None => {
                    assert!(
                        self.buffer.trim().is_empty(),
                        "the stream ended inside an event: {:?}",
                        self.buffer
                    );
                    return Ok(None);
                }
            }
        }
    }

    /// The next event, or `None` once the stream has ended; fails the test
    /// when nothing comes in time.
    pub async fn next(&mut self) -> Option<SseEvent> {
        self.next_within(PATIENCE).await.expect("the stream sends its next event in time")
    }
}
