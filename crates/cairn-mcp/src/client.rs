//! One MCP server over stdio: a child process spoken to in JSON-RPC 2.0,
//! one message per line. Requests wait for their answer by id; the
//! server's own requests get an answer (`ping`) or a refusal, its
//! notifications are let be. The process and its group are killed when the
//! connection is dropped or killed.

use std::collections::HashMap;
use std::process::Stdio;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, ChildStdin};
use tokio::sync::oneshot;

/// The protocol version cairn asks for; the versions it accepts in answer
/// (their `tools/list` and `tools/call` are the same).
const PROTOCOL_VERSION: &str = "2025-06-18";
const ACCEPTED_VERSIONS: [&str; 4] = ["2024-11-05", "2025-03-26", "2025-06-18", "2025-11-25"];
/// The longest message a server may send; a longer one ends the connection.
const MAX_LINE_BYTES: usize = 16 * 1024 * 1024;
/// How much of the server's stderr is kept, to say why it stopped.
const STDERR_TAIL_BYTES: usize = 2048;
/// How long a server that stopped speaking has to finish its stderr.
const LAST_WORDS: Duration = Duration::from_secs(1);
/// The most pages of `tools/list` read, and tools kept.
const MAX_PAGES: usize = 100;
const MAX_TOOLS: usize = 1000;

/// How to start a server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Launch {
    /// The program and its arguments.
    pub command: Vec<String>,
    /// The folder it runs in.
    pub cwd: std::path::PathBuf,
    /// The variables it gets (its environment is cleared first).
    pub env: Vec<(String, String)>,
    /// How long the handshake and each request may take.
    pub timeout: Duration,
}

/// Why a request got no result.
#[derive(Debug, Clone, PartialEq)]
pub enum Failure {
    /// The server answered with a JSON-RPC error.
    Rpc { code: i64, message: String },
    /// The request took longer than the timeout (and was cancelled).
    TimedOut,
    /// The connection is gone: the server exited, or spoke nonsense.
    Gone(String),
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Rpc { code, message } => write!(f, "{message} (error {code})"),
            Self::TimedOut => f.write_str("no answer in time"),
            Self::Gone(why) => f.write_str(why),
        }
    }
}

/// A tool as the server lists it.
#[derive(Debug, Clone, PartialEq)]
pub struct ServerTool {
    /// Its name on the server.
    pub name: String,
    /// What it does.
    pub description: String,
    /// The JSON Schema of its arguments.
    pub input_schema: Value,
}

type Answer = Result<Value, Failure>;

/// The requests waiting for an answer, and why the connection closed once
/// it has.
#[derive(Default)]
struct Pending {
    waiting: HashMap<u64, oneshot::Sender<Answer>>,
    closed: Option<String>,
}

impl Pending {
    /// Closes the connection: every waiting request fails with `why`.
    fn close(&mut self, why: String) {
        for (_, waiter) in self.waiting.drain() {
            let _ = waiter.send(Err(Failure::Gone(why.clone())));
        }
        self.closed.get_or_insert(why);
    }
}

/// A started, initialised server.
pub struct Connection {
    stdin: Arc<tokio::sync::Mutex<ChildStdin>>,
    pending: Arc<Mutex<Pending>>,
    stderr: Arc<Mutex<Vec<u8>>>,
    next_id: AtomicU64,
    child: Mutex<Child>,
    timeout: Duration,
}

impl Connection {
    /// Starts the server and does the handshake.
    pub async fn start(launch: &Launch) -> Result<Self, String> {
        let (program, args) = launch.command.split_first().ok_or("the command is empty")?;
        let mut command = tokio::process::Command::new(program);
        command.args(args).current_dir(&launch.cwd).env_clear().envs(launch.env.iter().cloned());
        command.stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped());
        command.process_group(0).kill_on_drop(true);
        let mut child = command.spawn().map_err(|e| format!("`{program}` could not start: {e}"))?;
        let (Some(stdin), Some(stdout), Some(stderr)) =
            (child.stdin.take(), child.stdout.take(), child.stderr.take())
        else {
            return Err("its pipes could not be opened".into());
        };
        let connection = Self {
            stdin: Arc::new(tokio::sync::Mutex::new(stdin)),
            pending: Arc::default(),
            stderr: Arc::default(),
            next_id: AtomicU64::new(1),
            child: Mutex::new(child),
            timeout: launch.timeout,
        };
        let tail = tokio::spawn(keep_tail(stderr, Arc::clone(&connection.stderr)));
        tokio::spawn(read(stdout, Arc::clone(&connection.pending), Arc::clone(&connection.stdin), tail));
        connection.handshake().await.map_err(|e| connection.why(&e))?;
        Ok(connection)
    }

    async fn handshake(&self) -> Result<(), Failure> {
        let params = json!({
            "protocolVersion": PROTOCOL_VERSION,
            "capabilities": {},
            "clientInfo": {"name": "cairn", "version": env!("CARGO_PKG_VERSION")},
        });
        let answer = self.request("initialize", params).await?;
        let version = answer["protocolVersion"].as_str().unwrap_or_default();
        if !ACCEPTED_VERSIONS.contains(&version) {
            return Err(Failure::Gone(format!(
                "it speaks MCP version `{version}`; cairn speaks {}",
                ACCEPTED_VERSIONS.join(", ")
            )));
        }
        self.send(&json!({"jsonrpc": "2.0", "method": "notifications/initialized"})).await
    }

    /// The server's tools, every page of them.
    pub async fn tools(&self) -> Result<Vec<ServerTool>, Failure> {
        let mut tools = Vec::new();
        let mut cursor: Option<String> = None;
        for _ in 0..MAX_PAGES {
            let params = cursor.as_ref().map_or_else(|| json!({}), |c| json!({"cursor": c}));
            let page = self.request("tools/list", params).await?;
            for tool in page["tools"].as_array().into_iter().flatten() {
                let Some(name) = tool["name"].as_str() else { continue };
                tools.push(ServerTool {
                    name: name.to_owned(),
                    description: tool["description"].as_str().unwrap_or_default().to_owned(),
                    input_schema: tool
                        .get("inputSchema")
                        .cloned()
                        .unwrap_or_else(|| json!({"type": "object"})),
                });
            }
            match page["nextCursor"].as_str() {
                Some(next) if tools.len() < MAX_TOOLS => cursor = Some(next.to_owned()),
                _ => break,
            }
        }
        tools.truncate(MAX_TOOLS);
        Ok(tools)
    }

    /// Calls a tool; the answer's content, and whether the server says the
    /// call failed.
    pub async fn call(&self, tool: &str, arguments: &Value, key: &str) -> Result<(String, bool), Failure> {
        let params = json!({"name": tool, "arguments": arguments, "_meta": {"cairn/idempotencyKey": key}});
        let answer = self.request("tools/call", params).await?;
        Ok((content_text(&answer), answer["isError"] == true))
    }

    /// Sends a request and waits for its answer, at most the timeout (then
    /// the server is told to stop working on it).
    async fn request(&self, method: &str, params: Value) -> Answer {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        {
            let mut pending = self.pending.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            if let Some(why) = &pending.closed {
                return Err(Failure::Gone(why.clone()));
            }
            pending.waiting.insert(id, tx);
        }
        self.send(&json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params})).await?;
        match tokio::time::timeout(self.timeout, rx).await {
            Ok(Ok(answer)) => answer,
            Ok(Err(_)) => Err(Failure::Gone("the connection closed".into())),
            Err(_) => {
                self.pending.lock().unwrap_or_else(std::sync::PoisonError::into_inner).waiting.remove(&id);
                let cancel = json!({"jsonrpc": "2.0", "method": "notifications/cancelled",
                                    "params": {"requestId": id, "reason": "timeout"}});
                let _ = self.send(&cancel).await;
                Err(Failure::TimedOut)
            }
        }
    }

    async fn send(&self, message: &Value) -> Result<(), Failure> {
        write_line(&self.stdin, message).await.map_err(|e| Failure::Gone(format!("it stopped reading: {e}")))
    }

    /// Whether the connection closed (the server exited or broke the
    /// protocol): a closed one is started anew when next needed.
    pub fn is_closed(&self) -> bool {
        self.pending.lock().unwrap_or_else(std::sync::PoisonError::into_inner).closed.is_some()
    }

    /// `failure`, with the end of what the server wrote to stderr.
    pub fn why(&self, failure: &Failure) -> String {
        let tail = self.stderr.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let tail = String::from_utf8_lossy(&tail);
        let tail = tail.trim();
        if tail.is_empty() { failure.to_string() } else { format!("{failure}; its stderr ends: {tail}") }
    }

    /// Kills the server and every process of its group.
    pub fn kill(&self) {
        let mut child = self.child.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(pid) = child.id().and_then(|pid| i32::try_from(pid).ok()) {
            let _ =
                nix::sys::signal::killpg(nix::unistd::Pid::from_raw(pid), nix::sys::signal::Signal::SIGKILL);
        }
        let _ = child.start_kill();
        self.pending.lock().unwrap_or_else(std::sync::PoisonError::into_inner).close("it was stopped".into());
    }
}

impl Drop for Connection {
    fn drop(&mut self) {
        self.kill();
    }
}

async fn write_line(stdin: &tokio::sync::Mutex<ChildStdin>, message: &Value) -> std::io::Result<()> {
    let mut line = message.to_string();
    line.push('\n');
    let mut stdin = stdin.lock().await;
    stdin.write_all(line.as_bytes()).await?;
    stdin.flush().await
}

/// Reads the server's messages until it stops: answers go to their
/// requests, requests get an answer, notifications are let be. Once it
/// stops, its last words on stderr are read before the waiting requests
/// learn it is gone.
async fn read(
    stdout: tokio::process::ChildStdout,
    pending: Arc<Mutex<Pending>>,
    stdin: Arc<tokio::sync::Mutex<ChildStdin>>,
    tail: tokio::task::JoinHandle<()>,
) {
    let mut lines = BufReader::new(stdout);
    let why = loop {
        let line = match bounded_line(&mut lines).await {
            Ok(Some(line)) => line,
            Ok(None) => break "it exited".to_owned(),
            Err(e) => break e,
        };
        if line.trim().is_empty() {
            continue;
        }
        let Ok(message) = serde_json::from_str::<Value>(&line) else {
            break format!("it wrote a line that is not JSON-RPC: {}", cut(&line, 200));
        };
        match (message.get("id"), message["method"].as_str()) {
            (Some(id), Some(method)) => {
                let answer = if method == "ping" {
                    json!({"jsonrpc": "2.0", "id": id, "result": {}})
                } else {
                    json!({"jsonrpc": "2.0", "id": id, "error": {"code": -32601, "message": "cairn does not serve this"}})
                };
                let _ = write_line(&stdin, &answer).await;
            }
            (Some(id), None) => {
                let Some(id) = id.as_u64() else { continue };
                let answer = match message.get("error") {
                    Some(error) => Err(Failure::Rpc {
                        code: error["code"].as_i64().unwrap_or_default(),
                        message: error["message"].as_str().unwrap_or("the server refused").to_owned(),
                    }),
                    None => Ok(message.get("result").cloned().unwrap_or(Value::Null)),
                };
                let waiter =
                    pending.lock().unwrap_or_else(std::sync::PoisonError::into_inner).waiting.remove(&id);
                if let Some(waiter) = waiter {
                    let _ = waiter.send(answer);
                }
            }
            (None, _) => {}
        }
    };
    let _ = tokio::time::timeout(LAST_WORDS, tail).await;
    pending.lock().unwrap_or_else(std::sync::PoisonError::into_inner).close(why);
}

/// The next line, without its newline; `None` at the end; an error for a
/// line longer than [`MAX_LINE_BYTES`] or not UTF-8.
async fn bounded_line<R: tokio::io::AsyncBufRead + Unpin>(reader: &mut R) -> Result<Option<String>, String> {
    let mut line = Vec::new();
    let read = (&mut *reader)
        .take(MAX_LINE_BYTES as u64 + 1)
        .read_until(b'\n', &mut line)
        .await
        .map_err(|e| format!("reading it failed: {e}"))?;
    if read == 0 {
        return Ok(None);
    }
    if line.len() > MAX_LINE_BYTES {
        return Err(format!("it wrote a message longer than {MAX_LINE_BYTES} bytes"));
    }
    if line.last() == Some(&b'\n') {
        line.pop();
    }
    String::from_utf8(line).map(Some).map_err(|_| "it wrote a line that is not UTF-8".to_owned())
}

/// Keeps the last [`STDERR_TAIL_BYTES`] of what the server writes to stderr.
async fn keep_tail(mut stderr: tokio::process::ChildStderr, tail: Arc<Mutex<Vec<u8>>>) {
    let mut buffer = [0u8; 4096];
    while let Ok(n) = stderr.read(&mut buffer).await {
        if n == 0 {
            break;
        }
        let mut tail = tail.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        tail.extend_from_slice(&buffer[..n]);
        let over = tail.len().saturating_sub(STDERR_TAIL_BYTES);
        tail.drain(..over);
    }
}

/// What a tool call's answer says, as text: its text items joined, other
/// items named, or the structured content when there is no text.
fn content_text(answer: &Value) -> String {
    let parts: Vec<String> = answer["content"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|item| match item["type"].as_str() {
            Some("text") => item["text"].as_str().unwrap_or_default().to_owned(),
            Some("resource") if item["resource"]["text"].is_string() => {
                item["resource"]["text"].as_str().unwrap_or_default().to_owned()
            }
            Some("resource_link") => format!("[resource {}]", item["uri"].as_str().unwrap_or_default()),
            Some(other) => format!("[{other} {}]", item["mimeType"].as_str().unwrap_or_default()),
            None => String::new(),
        })
        .collect();
    match answer.get("structuredContent") {
        Some(structured) if parts.iter().all(String::is_empty) => structured.to_string(),
        _ => parts.join("\n"),
    }
}

/// At most `max` bytes of `text`, cut at a character boundary.
fn cut(text: &str, max: usize) -> &str {
    let mut end = text.len().min(max);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_items_are_joined_and_others_named() {
        let answer = json!({"content": [
            {"type": "text", "text": "one"},
            {"type": "image", "data": "AAAA", "mimeType": "image/png"},
            {"type": "resource", "resource": {"uri": "file:///a", "text": "two"}},
            {"type": "resource_link", "uri": "file:///b", "name": "b"},
        ]});
        assert_eq!(content_text(&answer), "one\n[image image/png]\ntwo\n[resource file:///b]");
        let structured = json!({"content": [], "structuredContent": {"n": 2}});
        assert_eq!(content_text(&structured), r#"{"n":2}"#);
    }

    #[tokio::test]
    async fn a_line_longer_than_the_bound_ends_the_reading() {
        let long = vec![b'x'; MAX_LINE_BYTES + 10];
        let mut reader = BufReader::new(&long[..]);
        let error = bounded_line(&mut reader).await.expect_err("too long");
        assert!(error.contains("longer than"), "{error}");
        let mut reader = BufReader::new(&b"{}\n{\"a\":1}"[..]);
        assert_eq!(bounded_line(&mut reader).await, Ok(Some("{}".into())));
        assert_eq!(bounded_line(&mut reader).await, Ok(Some("{\"a\":1}".into())));
        assert_eq!(bounded_line(&mut reader).await, Ok(None));
    }

    #[test]
    fn a_cut_never_splits_a_character() {
        assert_eq!(cut("héllo", 2), "h");
        assert_eq!(cut("abc", 10), "abc");
    }
}
