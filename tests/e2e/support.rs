//! Locating and running the `cairn` binary.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// The workspace root.
pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().map(Path::to_path_buf).unwrap_or_default()
}

/// The `cairn` binary of this build: `target/<profile>/cairn`, next to the
/// folder of this test executable, built once per test process (so a
/// test never runs a stale binary).
pub fn cairn_bin() -> &'static Path {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| built("cairn"))
}

/// The `cairn-embed` example binary (`examples/embed`), built once per test process.
pub fn embed_bin() -> &'static Path {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| built("cairn-embed"))
}

/// Builds `bin` in this test's profile and returns its path.
///
/// The build names the same targets `cargo test --workspace` builds, so its
/// features resolve the same way and it finds everything already built; a
/// narrower `cargo build -p PACKAGE` would resolve features differently and
/// compile a second copy of every dependency.
fn built(bin: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    let profile_dir = exe.parent().and_then(Path::parent).expect("target/<profile>");
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut build = Command::new(cargo);
    build.args(["build", "--quiet", "--workspace", "--tests", "--bins"]).current_dir(root());
    if profile_dir.file_name().is_some_and(|p| p == "release") {
        build.arg("--release");
    }
    let status = build.status().expect("cargo build runs");
    assert!(status.success(), "building {bin} failed");
    profile_dir.join(format!("{bin}{}", std::env::consts::EXE_SUFFIX))
}

/// The result of one `cairn` invocation.
pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl From<Output> for Run {
    fn from(out: Output) -> Self {
        Self {
            code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }
}

/// Runs `cairn ARGS` in `dir`.
pub fn cairn_in(dir: &Path, args: &[&str]) -> Run {
    Command::new(cairn_bin())
        .args(args)
        .current_dir(dir)
        .env_remove("CAIRN_CONFIG")
        .env_remove("CAIRN_DATA_DIR")
        .output()
        .expect("cairn runs")
        .into()
}

/// Runs `cairn ARGS` in the workspace root.
pub fn cairn(args: &[&str]) -> Run {
    cairn_in(&root(), args)
}

/// A fresh, empty folder for one test.
pub fn scratch(name: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("e2e").join(name);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("scratch dir");
    dir
}

/// Runs `cairn ARGS` in `dir` with extra environment variables.
pub fn cairn_env(dir: &Path, args: &[&str], env: &[(&str, &str)]) -> Run {
    bin_env(cairn_bin(), dir, args, env)
}

/// Runs the binary `bin` with `args` in `dir`, as [`cairn_env`] runs `cairn`.
pub fn bin_env(bin: &Path, dir: &Path, args: &[&str], env: &[(&str, &str)]) -> Run {
    if served()
        && bin == cairn_bin()
        && let Some((_, data)) = env.iter().find(|(k, _)| *k == "CAIRN_DATA_DIR")
    {
        hold(dir, Path::new(data), args, env);
    }
    let mut command = command(bin, dir, args);
    if !env.iter().any(|(k, _)| *k == "CAIRN_DATA_DIR") {
        command.env("CAIRN_DATA_DIR", fresh_data_dir());
    }
    command.envs(env.iter().copied());
    command.output().expect("cairn runs").into()
}

/// `bin ARGS` in `dir`, not yet started, with the environment a test
/// controls: none of the caller's config, data directory, provider
/// settings or mock latency, and `USER=tester`. A test that watches a
/// process while it runs sets its pipes and spawns it.
pub fn command(bin: &Path, dir: &Path, args: &[&str]) -> Command {
    let mut command = Command::new(bin);
    command.args(args).current_dir(dir);
    for name in [
        "CAIRN_CONFIG",
        "CAIRN_DATA_DIR",
        "CAIRN_LLM_BASE_URL",
        "CAIRN_LLM_API_KEY",
        "CAIRN_LLM_MODEL",
        "CAIRN_MOCK_LATENCY",
    ] {
        command.env_remove(name);
    }
    command.env("USER", "tester");
    command
}

/// `cairn ARGS` in `dir` on the store in `data`, as [`command`] makes it.
pub fn cairn_command(dir: &Path, data: &Path, args: &[&str]) -> Command {
    let mut command = command(cairn_bin(), dir, args);
    command.env("CAIRN_DATA_DIR", data);
    command
}

/// A data directory no other invocation uses.
pub fn fresh_data_dir() -> PathBuf {
    static NEXT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    let dir =
        Path::new(env!("CARGO_TARGET_TMPDIR")).join("e2e-data").join(format!("{}-{n}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

/// Replaces durations (`12ms`, `1.5s`) by `<t>` and ISO times
/// (`2026-11-24T06:28:21.897Z`) by `<time>`, so snapshots of timed output
/// are stable.
pub fn redact_times(text: &str) -> String {
    redact_durations(&redact_iso(text))
}

/// Replaces ISO-8601 UTC times with milliseconds by `<time>`.
pub fn redact_iso(text: &str) -> String {
    const SHAPE: &str = "dddd-dd-ddTdd:dd:dd.dddZ";
    let bytes = text.as_bytes();
    let fits = |at: usize| {
        bytes.get(at..at + SHAPE.len()).is_some_and(|window| {
            window
                .iter()
                .zip(SHAPE.bytes())
                .all(|(b, s)| if s == b'd' { b.is_ascii_digit() } else { *b == s })
        })
    };
    let mut out = String::with_capacity(text.len());
    let mut i = 0;
    while i < bytes.len() {
        if fits(i) {
            out.push_str("<time>");
            i += SHAPE.len();
            continue;
        }
        let len = text[i..].chars().next().map_or(1, char::len_utf8);
        out.push_str(&text[i..i + len]);
        i += len;
    }
    out
}

fn redact_durations(text: &str) -> String {
    let chars: Vec<char> = text.chars().collect();
    let mut out = String::with_capacity(text.len());
    let mut i = 0;
    while i < chars.len() {
        let starts_word = i == 0 || !chars[i - 1].is_ascii_alphanumeric();
        if starts_word && chars[i].is_ascii_digit() {
            let mut j = i;
            while j < chars.len() && (chars[j].is_ascii_digit() || chars[j] == '.') {
                j += 1;
            }
            let unit = match (chars.get(j), chars.get(j + 1)) {
                (Some('m'), Some('s')) => 2,
                (Some('s'), _) => 1,
                _ => 0,
            };
            let ends_word = chars.get(j + unit).is_none_or(|c| !c.is_ascii_alphanumeric());
            if unit > 0 && ends_word {
                // Column padding depends on the width of the time: fold it too.
                if out.ends_with(' ') {
                    let kept = out.trim_end_matches(' ').len();
                    out.truncate(kept);
                    out.push(' ');
                }
                out.push_str("<t>");
                i = j + unit;
                continue;
            }
        }
        out.push(chars[i]);
        i += 1;
    }
    out
}

/// One call an [`LlmServer`] answered: its idempotency key, and when it
/// arrived (milliseconds since the epoch).
#[derive(Debug, Clone)]
pub struct Call {
    pub key: String,
    pub at_ms: u64,
}

/// An OpenAI-compatible chat server on loopback that answers every request
/// after `latency` (streamed when the request asks, as JSON `{"answer": ...}`
/// when it asks for structured output), and logs each call's `Idempotency-Key`.
pub struct LlmServer {
    pub url: String,
    calls: std::sync::Arc<std::sync::Mutex<Vec<Call>>>,
}

/// Raw HTTP a faulty server sends instead of an answer (then it closes).
pub type Fault = String;

impl LlmServer {
    /// Starts the server on a free loopback port; it lives as long as the test process.
    pub fn start(latency: std::time::Duration) -> Self {
        Self::with_faults(latency, Vec::new())
    }

    /// A server whose first calls get these faults, in order, one each;
    /// later calls are answered.
    pub fn with_faults(latency: std::time::Duration, faults: Vec<Fault>) -> Self {
        let faults = std::sync::Arc::new(std::sync::Mutex::new(std::collections::VecDeque::from(faults)));
        use std::io::{Read, Write};
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind loopback");
        let url = format!("http://{}/v1", listener.local_addr().expect("addr"));
        let calls = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let log = calls.clone();
        std::thread::spawn(move || {
            for socket in listener.incoming() {
                let Ok(mut socket) = socket else { continue };
                let (log, faults) = (log.clone(), faults.clone());
                std::thread::spawn(move || {
                    let mut request = Vec::new();
                    let mut buf = [0u8; 8192];
                    let head_end = loop {
                        let Ok(n) = socket.read(&mut buf) else { return };
                        if n == 0 {
                            return;
                        }
                        request.extend_from_slice(&buf[..n]);
                        let text = String::from_utf8_lossy(&request).to_string();
                        if let Some(end) = text.find("\r\n\r\n") {
                            let length = header(&text, "content-length")
                                .and_then(|v| v.parse::<usize>().ok())
                                .unwrap_or(0);
                            if request.len() >= end + 4 + length {
                                break end;
                            }
                        }
                    };
                    let text = String::from_utf8_lossy(&request[..head_end]).to_string();
                    let key = header(&text, "idempotency-key").unwrap_or_default();
                    let at_ms = std::time::SystemTime::now()
                        .duration_since(std::time::UNIX_EPOCH)
                        .map_or(0, |d| d.as_millis() as u64);
                    log.lock().expect("log").push(Call { key: key.clone(), at_ms });
                    std::thread::sleep(latency);
                    if let Some(fault) = faults.lock().expect("faults").pop_front() {
                        // `{auth}` in a fault echoes the request's `Authorization` header.
                        let fault =
                            fault.replace("{auth}", &header(&text, "authorization").unwrap_or_default());
                        let _ = socket.write_all(fault.as_bytes());
                        return;
                    }
                    let body = String::from_utf8_lossy(&request[head_end + 4..]).to_string();
                    if body.contains("\"tools\"") {
                        let _ = socket.write_all(tool_turn(&body).as_bytes());
                        return;
                    }
                    let answer = format!("answer for {key}");
                    let content = if body.contains("\"response_format\"") {
                        serde_json::json!({ "answer": answer }).to_string()
                    } else {
                        answer
                    };
                    let response = if body.contains("\"stream\":true") {
                        streamed(&content)
                    } else {
                        let body = serde_json::json!({
                            "model": "fake",
                            "choices": [{"message": {"content": content}}],
                            "usage": {"prompt_tokens": 3, "completion_tokens": 4},
                        })
                        .to_string();
                        format!(
                            "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                            body.len()
                        )
                    };
                    let _ = socket.write_all(response.as_bytes());
                });
            }
        });
        Self { url, calls }
    }

    /// The calls logged so far.
    pub fn calls(&self) -> Vec<Call> {
        self.calls.lock().expect("log").clone()
    }
}

/// A model that acts, for requests that offer tools. Offered the `echo`
/// tool of the MCP server `fx`, it calls it once and answers with what it
/// said. Otherwise it reads `notes.txt`, writes what it read, upper-cased,
/// to `out/answer.txt`, runs `echo done`, then answers with what the
/// command said. The turn is picked by the tool results the request holds;
/// the answer is streamed when asked.
fn tool_turn(body: &str) -> String {
    let request: serde_json::Value = serde_json::from_str(body).unwrap_or_default();
    let messages = request["messages"].as_array().cloned().unwrap_or_default();
    let results: Vec<String> = messages
        .iter()
        .filter(|m| m["role"] == "tool")
        .map(|m| m["content"].as_str().unwrap_or_default().to_owned())
        .collect();
    let call = |name: &str, arguments: serde_json::Value| {
        serde_json::json!([{"id": format!("call_{}", results.len()), "type": "function",
                            "function": {"name": name, "arguments": arguments.to_string()}}])
    };
    let offered = |name: &str| {
        request["tools"].as_array().is_some_and(|tools| tools.iter().any(|t| t["function"]["name"] == name))
    };
    let (content, calls) = if offered("fx__echo") {
        match results.first() {
            None => (None, Some(call("fx__echo", serde_json::json!({"text": "hello from the model"})))),
            Some(said) => (Some(format!("the server said: {said}")), None),
        }
    } else {
        match results.len() {
            0 => (None, Some(call("read_file", serde_json::json!({"path": "notes.txt"})))),
            1 => (
                None,
                Some(call(
                    "write_file",
                    serde_json::json!({"path": "out/answer.txt", "content": results[0].to_uppercase()}),
                )),
            ),
            2 => (None, Some(call("run_command", serde_json::json!({"program": "echo", "args": ["done"]})))),
            _ => (Some(format!("finished: {}", results[2].lines().nth(2).unwrap_or_default())), None),
        }
    };
    let stream = request["stream"] == true;
    let body = if stream {
        let delta = match (&content, &calls) {
            (Some(text), _) => serde_json::json!({"content": text}),
            (None, Some(calls)) => {
                let mut calls = calls.clone();
                calls[0]["index"] = serde_json::json!(0);
                serde_json::json!({"tool_calls": calls})
            }
            (None, None) => serde_json::json!({}),
        };
        let reason = if calls.is_some() { "tool_calls" } else { "stop" };
        format!(
            "data: {}\n\ndata: {}\n\ndata: {{\"choices\":[],\"usage\":{{\"prompt_tokens\":3,\"completion_tokens\":4}}}}\n\ndata: [DONE]\n\n",
            serde_json::json!({"model": "fake", "choices": [{"delta": delta}]}),
            serde_json::json!({"choices": [{"delta": {}, "finish_reason": reason}]}),
        )
    } else {
        serde_json::json!({
            "model": "fake",
            "choices": [{"message": {"role": "assistant", "content": content, "tool_calls": calls}}],
            "usage": {"prompt_tokens": 3, "completion_tokens": 4},
        })
        .to_string()
    };
    let kind = if stream { "text/event-stream" } else { "application/json" };
    format!(
        "HTTP/1.1 200 OK\r\ncontent-type: {kind}\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    )
}

/// `content` as a server-sent event stream in three pieces, then the finish
/// reason, the usage and `[DONE]`.
fn streamed(content: &str) -> String {
    let chars: Vec<char> = content.chars().collect();
    let third = chars.len().div_ceil(3).max(1);
    let mut out =
        "HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\nconnection: close\r\n\r\n".to_owned();
    for piece in chars.chunks(third) {
        let delta = serde_json::json!({"model": "fake", "choices": [{"delta": {"content": piece.iter().collect::<String>()}}]});
        out.push_str(&format!("data: {delta}\n\n"));
    }
    out.push_str("data: {\"choices\":[{\"delta\":{},\"finish_reason\":\"stop\"}]}\n\n");
    out.push_str("data: {\"choices\":[],\"usage\":{\"prompt_tokens\":3,\"completion_tokens\":4}}\n\n");
    out.push_str("data: [DONE]\n\n");
    out
}

fn header(head: &str, name: &str) -> Option<String> {
    head.lines().find_map(|l| {
        let (k, v) = l.split_once(':')?;
        k.trim().eq_ignore_ascii_case(name).then(|| v.trim().to_owned())
    })
}

/// Runs `cairn ARGS` in `dir` with `env` as [`cairn_env`] does, but
/// without a data directory of its own: neither `--data-dir` nor
/// `CAIRN_DATA_DIR` unless `args` or `env` give one, so cairn uses its
/// default (`./.cairn` in `dir`).
pub fn cairn_bare(dir: &Path, args: &[&str], env: &[(&str, &str)]) -> Run {
    command(cairn_bin(), dir, args).envs(env.iter().copied()).output().expect("cairn runs").into()
}

/// The run ids of a `runs --format json` array, newest first.
pub fn run_ids(json: &str) -> Vec<String> {
    let runs: serde_json::Value = serde_json::from_str(json).unwrap_or_else(|e| panic!("{e}: {json}"));
    runs.as_array()
        .unwrap_or_else(|| panic!("an array: {json}"))
        .iter()
        .map(|r| r["run_id"].as_str().unwrap_or_default().to_owned())
        .collect()
}

/// One JSON document, or a panic that shows the text.
pub fn json(text: &str) -> serde_json::Value {
    serde_json::from_str(text).unwrap_or_else(|e| panic!("not one JSON document ({e}): {text}"))
}

/// The example workflows: every `examples/*.yaml`, sorted.
pub fn examples() -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(root().join("examples"))
        .expect("examples/")
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "yaml"))
        .collect();
    files.sort();
    assert!(files.len() >= 6, "the six examples at least: {files:?}");
    files
}

/// A `cairn serve` process and where it listens.
pub struct Server {
    pub child: Child,
    pub url: String,
}

impl Server {
    /// Starts `cairn --llm mock serve` on a free port over `data`, and waits
    /// for its listening line.
    pub fn start(dir: &Path, data: &Path, args: &[&str], env: &[(&str, &str)]) -> Self {
        Self::serve(dir, data, &["--llm", "mock"], args, env)
    }

    /// Starts `cairn GLOBALS serve --listen 127.0.0.1:0 ARGS` over `data`,
    /// and waits for its listening line.
    pub fn serve(dir: &Path, data: &Path, globals: &[&str], args: &[&str], env: &[(&str, &str)]) -> Self {
        let mut all = globals.to_vec();
        all.extend(["serve", "--listen", "127.0.0.1:0"]);
        all.extend_from_slice(args);
        let mut child = cairn_command(dir, data, &all)
            .envs(env.iter().copied())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("cairn serve starts");
        let stderr = child.stderr.take().expect("stderr is piped");
        let mut lines = BufReader::new(stderr).lines();
        let deadline = Instant::now() + Duration::from_secs(30);
        let url = loop {
            assert!(Instant::now() < deadline, "no listening line in time");
            let line = lines.next().expect("the server prints before it exits").expect("a line");
            if let Some(url) = line.strip_prefix("cairn serve listening on ") {
                break url.to_owned();
            }
        };
        // The rest of its words are drained, so it never blocks on a pipe.
        std::thread::spawn(move || lines.for_each(drop));
        Self { child, url }
    }

    /// `HOST:PORT`.
    pub fn address(&self) -> &str {
        self.url.trim_start_matches("http://")
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One HTTP/1.1 request, answered in full (the connection closes): the
/// status, the headers as text, the body.
pub fn http(server: &Server, request: &str) -> (u16, String, String) {
    let mut stream = TcpStream::connect(server.address()).expect("connects");
    stream.set_read_timeout(Some(Duration::from_secs(30))).expect("timeout");
    stream.write_all(request.as_bytes()).expect("sends");
    let mut answer = String::new();
    stream.read_to_string(&mut answer).expect("reads");
    let (head, body) = answer.split_once("\r\n\r\n").unwrap_or((&answer, ""));
    let status = head.split_whitespace().nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    (status, head.to_owned(), body.to_owned())
}

/// `GET path` with these extra header lines.
pub fn get(server: &Server, path: &str, headers: &str) -> (u16, String, String) {
    let host = server.address().to_owned();
    http(server, &format!("GET {path} HTTP/1.1\r\nHost: {host}\r\n{headers}Connection: close\r\n\r\n"))
}

/// Whether this run of the suite goes through servers (`CAIRN_E2E_SERVED`
/// set): every invocation on a data directory a test chose ([`cairn_env`]
/// with `CAIRN_DATA_DIR`) finds a `cairn serve` holding it, as a second
/// shell would, and goes through it. `cargo xtask ci` runs the suite's
/// command-line tests both ways.
pub fn served() -> bool {
    std::env::var_os("CAIRN_E2E_SERVED").is_some()
}

/// Whether a test skips this run of the suite: when it goes through
/// servers ([`served`]) and the test checks what only a process that drives
/// its own runs does (`why`, printed).
pub fn skip_when_served(why: &str) -> bool {
    if served() {
        eprintln!("skipped through a server: {why}");
    }
    served()
}

/// The verbs that never go through a server (they read no store).
const LOCAL_VERBS: &[&str] = &[
    "validate",
    "plan",
    "init",
    "serve",
    "help",
    "completions",
    "man",
    "doctor",
    "--help",
    "--version",
    "-h",
    "-V",
];

/// The global options that take a value.
const VALUED_GLOBALS: &[&str] = &["--data-dir", "--config", "--llm", "--server", "--token"];

/// Starts a `cairn serve` holding `data`, unless one does, for an
/// invocation `args` of a verb that reads the store: in `dir`, with the
/// invocation's environment and its `--llm` and `--config` (none when
/// another process holds the store). The server lives as long as the test
/// process: it is started under a shell that stops it when the pipe the
/// process holds open closes.
fn hold(dir: &Path, data: &Path, args: &[&str], env: &[(&str, &str)]) {
    static SERVERS: std::sync::Mutex<Vec<(PathBuf, Child)>> = std::sync::Mutex::new(Vec::new());
    let mut globals = Vec::new();
    let mut rest = args.iter();
    let verb = loop {
        match rest.next() {
            Some(flag) if VALUED_GLOBALS.contains(flag) => {
                let value = rest.next().copied().unwrap_or_default();
                if ["--llm", "--config"].contains(flag) {
                    globals.extend([*flag, value]);
                }
            }
            Some(flag) if flag.starts_with('-') && !LOCAL_VERBS.contains(flag) => {}
            other => break other.copied(),
        }
    };
    if verb.is_none_or(|v| LOCAL_VERBS.contains(&v)) {
        return;
    }
    let mut servers = SERVERS.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    if servers.iter().any(|(held, _)| held == data) {
        return;
    }
    let mut all: Vec<&str> = globals;
    all.extend(["serve", "--listen", "127.0.0.1:0"]);
    let mut shell = command(Path::new("sh"), dir, &[]);
    shell
        .arg("-c")
        .arg(r#""$@" </dev/null & server=$!; exec 2>/dev/null; cat >/dev/null; kill -TERM $server; wait $server"#)
        .arg("sh")
        .arg(cairn_bin())
        .args(&all)
        .env("CAIRN_DATA_DIR", data)
        .envs(env.iter().copied())
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let mut child = shell.spawn().expect("sh starts cairn serve");
    let stderr = child.stderr.take().expect("stderr is piped");
    let mut lines = BufReader::new(stderr).lines();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        assert!(Instant::now() < deadline, "no listening line in time");
        match lines.next() {
            Some(Ok(line)) if line.starts_with("cairn serve listening on ") => break,
            Some(Ok(_)) => {}
            // Another process holds the store (a test's own driver): the
            // invocation meets it as it would without a server.
            _ => {
                drop(child.stdin.take());
                let _ = child.wait();
                return;
            }
        }
    }
    std::thread::spawn(move || lines.for_each(drop));
    // Its stdin stays open while the test process lives.
    servers.push((data.to_owned(), child));
}

/// A scratch folder with workflow files, and a data directory of its own:
/// the verbs of one test, on the mock model.
pub struct Bench {
    /// The folder the verbs run in, holding the files.
    pub dir: PathBuf,
    /// The data directory.
    pub data: PathBuf,
}

impl Bench {
    /// A bench named `name` holding `files` (name and text).
    pub fn new(name: &str, files: &[(&str, &str)]) -> Self {
        let dir = scratch(name);
        for (file, text) in files {
            std::fs::write(dir.join(file), text).expect("write");
        }
        Self { dir, data: fresh_data_dir() }
    }

    /// `cairn --llm mock ARGS` on this bench's data directory.
    pub fn cairn(&self, args: &[&str]) -> Run {
        let mut all = vec!["--llm", "mock"];
        all.extend_from_slice(args);
        cairn_env(&self.dir, &all, &[("CAIRN_DATA_DIR", self.data.to_str().expect("utf-8"))])
    }

    /// Runs `args` and asserts the exit code.
    pub fn expect(&self, code: i32, args: &[&str]) -> Run {
        let run = self.cairn(args);
        assert_eq!(run.code, code, "cairn {args:?}\n{}{}", run.stdout, run.stderr);
        run
    }
}
