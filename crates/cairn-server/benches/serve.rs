//! `cairn serve` under load, measured, never asserted: spawns the release
//! binary (`target/release/cairn`, built when missing) with `--llm mock
//! --auth none` on a fresh data directory under `target/bench/serve-*`,
//! drives it over plain HTTP/1.1 on loopback (a small client written on
//! tokio's TCP streams, one keep-alive connection per concurrent caller),
//! and prints one JSON line on stdout (`{"serve": [rows]}`, each row with a
//! `name`, its figures and a one-line `summary`, or an `error`) and a human
//! summary on stderr:
//!
//! - **in flight**: `CAIRN_MOCK_LATENCY=200ms`, 1,000 runs of a chain of 3
//!   agent steps POSTed by 50 concurrent callers; then the completed list is
//!   polled until every run completed. POST /runs per second, the time until
//!   the last run completed (from the runs' own `updated_at`), runs/s, the
//!   bound the provider alone sets (the last POST's answer + 3 x 200 ms),
//!   the server's peak RSS (`VmHWM`) and its growth per run in flight.
//! - **waiting**: 10,000 runs that wait at an approval gate (their first
//!   step), created by 32 concurrent callers (timed); the server is stopped
//!   with SIGTERM and started again three times: time from spawn to the
//!   `listening` line and to `GET /api/v1/health` answering, and VmRSS
//!   about 1 s after start-up (targets: under 2 s, under 500 MB).
//! - **SSE fan-out**: one run of an approval gate followed by a chain of
//!   100 agent steps (`CAIRN_MOCK_LATENCY=5ms`); 1,000 subscribers read its
//!   event stream from the start while it waits at the gate, and once every
//!   one has read up to the gate the run is approved. For every event stored
//!   after the approval and every subscriber: latency = the time the client
//!   read it - the event's `at` (the time the engine stamped it; millisecond
//!   precision, so up to 1 ms too high). p50, p99, max; every subscriber
//!   must receive every event once, in order (checked). Target p99 < 50 ms.
//! - **GET under load**: 100 runs of a 100-step agent chain in flight
//!   (`CAIRN_MOCK_LATENCY=200ms`) while 16 callers GET
//!   `/api/v1/runs/{id}` of random ones for 10 s: p50, p99, requests/s.
//!
//! The client shares the machine's cores with the server: its own CPU
//! (notably parsing 1,000 streams) is part of what the figures cost.
//!
//! Sizes are overridable by environment variables: `CAIRN_BENCH_QUICK=1`
//! divides every count and duration by 10 (a smoke run); then
//! `CAIRN_BENCH_INFLIGHT`, `CAIRN_BENCH_WAITING`,
//! `CAIRN_BENCH_SUBSCRIBERS`, `CAIRN_BENCH_SSE_STEPS`,
//! `CAIRN_BENCH_LOADED_RUNS` and `CAIRN_BENCH_GET_SECS` set one each, and
//! `CAIRN_BENCH_ONLY=inflight,waiting,sse,get` picks the measurements.
//! `CAIRN_BENCH_BIN` points at another binary. Every row reports the sizes
//! it used.
//!
//! Run with `cargo bench -p cairn-server --bench serve`; `cargo xtask
//! bench` runs it and adds its rows to the report.

use std::io::BufRead as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt as _, AsyncReadExt as _, AsyncWriteExt as _, BufReader};
use tokio::net::TcpStream;

/// What a measurement gives: its row, or why it has none.
type Measured = Result<Value, String>;

/// Sizes of the measurements, from the environment.
#[derive(Debug, Clone)]
struct Sizes {
    in_flight: usize,
    waiting: usize,
    subscribers: usize,
    sse_steps: usize,
    loaded_runs: usize,
    get_secs: f64,
}

impl Sizes {
    fn from_env() -> Self {
        let quick = std::env::var("CAIRN_BENCH_QUICK").is_ok_and(|v| !v.is_empty() && v != "0");
        let shrink = |n: usize| if quick { (n / 10).max(1) } else { n };
        let var = |name: &str, default: usize| {
            std::env::var(name).ok().and_then(|v| v.trim().parse().ok()).unwrap_or(default)
        };
        Self {
            in_flight: var("CAIRN_BENCH_INFLIGHT", shrink(1_000)),
            waiting: var("CAIRN_BENCH_WAITING", shrink(10_000)),
            subscribers: var("CAIRN_BENCH_SUBSCRIBERS", shrink(1_000)),
            sse_steps: var("CAIRN_BENCH_SSE_STEPS", shrink(100)),
            loaded_runs: var("CAIRN_BENCH_LOADED_RUNS", shrink(100)),
            get_secs: std::env::var("CAIRN_BENCH_GET_SECS")
                .ok()
                .and_then(|v| v.trim().parse::<f64>().ok())
                .unwrap_or(if quick { 1.0 } else { 10.0 }),
        }
    }
}

// ---------------------------------------------------------------------------
// Workflows

/// A chain of `n` agent steps (the mock answers each).
fn agent_chain(id: &str, n: usize) -> String {
    let mut out = format!("cairn: 1\nid: {id}\nagents:\n  w: {{}}\nsteps:\n");
    for i in 0..n {
        out.push_str(&format!("  - id: s{i}\n    agent: w\n    prompt: step {i}\n"));
    }
    out
}

/// An approval gate, then a chain of `n` agent steps.
fn gated_chain(id: &str, n: usize) -> String {
    let mut out = format!(
        "cairn: 1\nid: {id}\nagents:\n  w: {{}}\nsteps:\n  - id: gate\n    approval: {{ message: Go? }}\n"
    );
    for i in 0..n {
        let need = if i == 0 { "gate".to_owned() } else { format!("s{}", i - 1) };
        out.push_str(&format!("  - id: s{i}\n    needs: [{need}]\n    agent: w\n    prompt: step {i}\n"));
    }
    out
}

/// The body of `POST /runs` for `definition`.
fn start_body(definition: &str) -> String {
    json!({"definition": definition, "inputs": {}}).to_string()
}

// ---------------------------------------------------------------------------
// The server process

/// The workspace's `target` directory.
fn target_dir() -> PathBuf {
    match std::env::var_os("CARGO_TARGET_DIR") {
        Some(dir) => PathBuf::from(dir),
        None => Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target"),
    }
}

/// The release binary, built when missing.
fn cairn_bin() -> PathBuf {
    if let Some(bin) = std::env::var_os("CAIRN_BENCH_BIN") {
        return PathBuf::from(bin);
    }
    let bin = target_dir().join("release/cairn");
    if !bin.exists() {
        eprintln!("serve bench: building the release binary");
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let status = Command::new(cargo)
            .args(["build", "--release", "--locked", "-p", "cairn", "--bin", "cairn"])
            .current_dir(Path::new(env!("CARGO_MANIFEST_DIR")).join("../.."))
            .status()
            .expect("cargo runs");
        assert!(status.success(), "the release binary builds");
    }
    bin
}

/// `target/bench/<name>`, deleted and created afresh.
fn fresh_dir(name: &str) -> PathBuf {
    let dir = target_dir().join("bench").join(name);
    if dir.exists() {
        std::fs::remove_dir_all(&dir).expect("the old bench directory can be removed");
    }
    std::fs::create_dir_all(&dir).expect("the bench directory can be created");
    dir
}

/// A running `cairn serve`.
struct Server {
    child: Child,
    pid: u32,
    addr: String,
    /// From spawn to the `listening` line.
    listening: Duration,
    /// When it was spawned.
    spawned: Instant,
    /// Warning and error lines it logged (the first few kept).
    warnings: Arc<Mutex<(u64, Vec<String>)>>,
}

impl Server {
    /// Spawns the server on `dir`, with the mock's latency when given, and
    /// waits for its `listening` line (at most `limit`).
    fn spawn(dir: &Path, latency: Option<&str>, limit: Duration) -> Result<Self, String> {
        let mut command = Command::new(cairn_bin());
        command
            .arg("--data-dir")
            .arg(dir)
            .args(["--llm", "mock", "serve", "--listen", "127.0.0.1:0", "--auth", "none"])
            .env_remove("RUST_LOG")
            .env_remove("CAIRN_SERVER")
            .env_remove("CAIRN_MOCK_LATENCY")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        if let Some(latency) = latency {
            command.env("CAIRN_MOCK_LATENCY", latency);
        }
        let spawned = Instant::now();
        let mut child = command.spawn().map_err(|e| format!("cannot spawn cairn serve: {e}"))?;
        let pid = child.id();
        let stderr = child.stderr.take().ok_or("no stderr")?;
        let (tx, rx) = std::sync::mpsc::channel::<(String, Instant)>();
        let warnings = Arc::new(Mutex::new((0_u64, Vec::new())));
        let kept = Arc::clone(&warnings);
        std::thread::spawn(move || {
            let mut tx = Some(tx);
            for line in std::io::BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                if let Some(rest) = line.split("cairn serve listening on http://").nth(1)
                    && let Some(tx) = tx.take()
                {
                    let _ = tx.send((rest.trim().to_owned(), Instant::now()));
                    continue;
                }
                if line.contains("WARN") || line.contains("ERROR") {
                    let mut kept = kept.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
                    kept.0 += 1;
                    if kept.1.len() < 5 {
                        kept.1.push(line);
                    }
                }
            }
        });
        let mut server =
            Self { child, pid, addr: String::new(), listening: Duration::ZERO, spawned, warnings };
        match rx.recv_timeout(limit) {
            Ok((addr, at)) => {
                server.addr = addr;
                server.listening = at.duration_since(spawned);
                Ok(server)
            }
            Err(_) => Err(format!("cairn serve printed no listening line within {limit:?}")),
        }
    }

    /// `VmRSS`, `VmHWM`... of the server, in MB.
    fn mem_mb(&self, key: &str) -> f64 {
        proc_status_kb(self.pid, key).map_or(f64::NAN, |kb| kb as f64 / 1024.0)
    }

    /// CPU seconds the server has used (user + system).
    fn cpu_s(&self) -> f64 {
        cpu_of(&self.pid.to_string())
    }

    /// SIGTERM, then waits for the exit: how long it took and whether it
    /// exited 0.
    fn stop(mut self) -> Result<Duration, String> {
        let asked = Instant::now();
        let _ = Command::new("kill").args(["-TERM", &self.pid.to_string()]).status();
        loop {
            match self.child.try_wait() {
                Ok(Some(status)) if status.success() => return Ok(asked.elapsed()),
                Ok(Some(status)) => return Err(format!("cairn serve exited with {status} after SIGTERM")),
                Ok(None) if asked.elapsed() > Duration::from_secs(120) => {
                    return Err("cairn serve did not exit within 120 s of SIGTERM".into());
                }
                Ok(None) => std::thread::sleep(Duration::from_millis(2)),
                Err(e) => return Err(format!("waiting for cairn serve: {e}")),
            }
        }
    }

    fn warnings(&self) -> Value {
        let kept = self.warnings.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        json!({"count": kept.0, "first": kept.1})
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// CPU seconds this process (the client) has used (user + system).
fn own_cpu_s() -> f64 {
    cpu_of("self")
}

/// CPU seconds of `/proc/<pid>` (user + system; 100 ticks a second).
fn cpu_of(pid: &str) -> f64 {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else { return f64::NAN };
    // After the command name (in parentheses): fields 3.. ; utime and
    // stime are fields 14 and 15.
    let Some(rest) = stat.rsplit(')').next() else { return f64::NAN };
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| fields.get(i).and_then(|f| f.parse::<f64>().ok()).unwrap_or(f64::NAN);
    (ticks(11) + ticks(12)) / 100.0
}

/// A field of `/proc/PID/status`, in kB.
fn proc_status_kb(pid: u32, key: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with(key) && l[key.len()..].starts_with(':'))?;
    line[key.len() + 1..].split_whitespace().next()?.parse().ok()
}

// ---------------------------------------------------------------------------
// A small HTTP/1.1 client

/// One keep-alive connection.
struct Conn {
    stream: BufReader<TcpStream>,
    host: String,
}

/// How a response's body is framed.
enum Framing {
    Length(usize),
    Chunked,
    UntilClose,
}

impl Conn {
    async fn open(addr: &str) -> std::io::Result<Self> {
        let stream = TcpStream::connect(addr).await?;
        stream.set_nodelay(true)?;
        Ok(Self { stream: BufReader::with_capacity(64 * 1024, stream), host: addr.to_owned() })
    }

    /// Sends a request (a JSON body when given).
    async fn send(
        &mut self,
        method: &str,
        path: &str,
        body: Option<&str>,
        extra: &str,
    ) -> std::io::Result<()> {
        let mut request = format!("{method} {path} HTTP/1.1\r\nHost: {}\r\n{extra}", self.host);
        if let Some(body) = body {
            request
                .push_str(&format!("Content-Type: application/json\r\nContent-Length: {}\r\n", body.len()));
        }
        request.push_str("\r\n");
        if let Some(body) = body {
            request.push_str(body);
        }
        self.stream.get_mut().write_all(request.as_bytes()).await
    }

    /// Reads a response's status line and headers.
    async fn head(&mut self) -> std::io::Result<(u16, Framing)> {
        let mut line = String::new();
        if self.stream.read_line(&mut line).await? == 0 {
            return Err(std::io::Error::new(std::io::ErrorKind::UnexpectedEof, "connection closed"));
        }
        let status = line
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse::<u16>().ok())
            .ok_or_else(|| std::io::Error::other(format!("bad status line {line:?}")))?;
        let mut framing = Framing::UntilClose;
        loop {
            line.clear();
            if self.stream.read_line(&mut line).await? == 0 {
                return Err(std::io::Error::new(std::io::ErrorKind::UnexpectedEof, "closed in headers"));
            }
            let header = line.trim_end();
            if header.is_empty() {
                break;
            }
            let Some((name, value)) = header.split_once(':') else { continue };
            let (name, value) = (name.trim().to_ascii_lowercase(), value.trim());
            if name == "content-length" {
                framing = Framing::Length(value.parse().map_err(std::io::Error::other)?);
            } else if name == "transfer-encoding" && value.eq_ignore_ascii_case("chunked") {
                framing = Framing::Chunked;
            }
        }
        Ok((status, framing))
    }

    /// The next chunk of a chunked body (`None` at its end).
    async fn chunk(&mut self) -> std::io::Result<Option<Vec<u8>>> {
        let mut line = String::new();
        if self.stream.read_line(&mut line).await? == 0 {
            return Ok(None);
        }
        let size = usize::from_str_radix(line.trim().split(';').next().unwrap_or("0"), 16)
            .map_err(|e| std::io::Error::other(format!("bad chunk size {line:?}: {e}")))?;
        if size == 0 {
            // Trailers, then the empty line.
            loop {
                line.clear();
                if self.stream.read_line(&mut line).await? == 0 || line.trim().is_empty() {
                    return Ok(None);
                }
            }
        }
        let mut data = vec![0; size];
        self.stream.read_exact(&mut data).await?;
        line.clear();
        self.stream.read_line(&mut line).await?;
        Ok(Some(data))
    }

    /// One request and its whole response: status and body.
    async fn call(
        &mut self,
        method: &str,
        path: &str,
        body: Option<&str>,
    ) -> std::io::Result<(u16, Vec<u8>)> {
        self.send(method, path, body, "").await?;
        let (status, framing) = self.head().await?;
        let body = match framing {
            Framing::Length(n) => {
                let mut data = vec![0; n];
                self.stream.read_exact(&mut data).await?;
                data
            }
            Framing::Chunked => {
                let mut data = Vec::new();
                while let Some(piece) = self.chunk().await? {
                    data.extend_from_slice(&piece);
                }
                data
            }
            Framing::UntilClose => {
                let mut data = Vec::new();
                self.stream.read_to_end(&mut data).await?;
                data
            }
        };
        Ok((status, body))
    }

    /// A request whose answer must be `want` and JSON.
    async fn json(
        &mut self,
        method: &str,
        path: &str,
        body: Option<&str>,
        want: u16,
    ) -> Result<Value, String> {
        let (status, bytes) =
            self.call(method, path, body).await.map_err(|e| format!("{method} {path}: {e}"))?;
        if status != want {
            return Err(format!("{method} {path}: {status} {}", String::from_utf8_lossy(&bytes)));
        }
        serde_json::from_slice(&bytes).map_err(|e| format!("{method} {path}: not JSON: {e}"))
    }
}

/// Waits until `GET /api/v1/health` answers 200 (connecting again while
/// refused); the time from `since`.
async fn health(addr: &str, since: Instant, limit: Duration) -> Result<Duration, String> {
    loop {
        if let Ok(mut conn) = Conn::open(addr).await
            && let Ok((200, _)) = conn.call("GET", "/api/v1/health", None).await
        {
            return Ok(since.elapsed());
        }
        if since.elapsed() > limit {
            return Err(format!("/api/v1/health did not answer within {limit:?}"));
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

/// `n` copies of `body` POSTed to `/api/v1/runs` by `concurrency` callers,
/// each on its own connection. Returns the run ids and each POST's time.
async fn post_runs(
    addr: &str,
    n: usize,
    concurrency: usize,
    body: &str,
) -> Result<(Vec<String>, Vec<f64>), String> {
    let next = Arc::new(AtomicUsize::new(0));
    let body: Arc<str> = Arc::from(body);
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..concurrency.min(n).max(1) {
        let (next, body, addr) = (Arc::clone(&next), Arc::clone(&body), addr.to_owned());
        tasks.spawn(async move {
            let mut conn = Conn::open(&addr).await.map_err(|e| format!("connect: {e}"))?;
            let mut done = Vec::new();
            while next.fetch_add(1, Ordering::Relaxed) < n {
                let start = Instant::now();
                let run = conn.json("POST", "/api/v1/runs", Some(&body), 201).await?;
                let ms = start.elapsed().as_secs_f64() * 1000.0;
                let id = run["run_id"].as_str().ok_or("the run JSON has no run_id")?.to_owned();
                done.push((id, ms));
            }
            Ok::<_, String>(done)
        });
    }
    let (mut ids, mut times) = (Vec::with_capacity(n), Vec::with_capacity(n));
    while let Some(joined) = tasks.join_next().await {
        for (id, ms) in joined.map_err(|e| e.to_string())?? {
            ids.push(id);
            times.push(ms);
        }
    }
    Ok((ids, times))
}

/// The runs listed with `status`: how many, and the latest `updated_at`
/// (ms since the epoch).
async fn listed(conn: &mut Conn, status: &str) -> Result<(usize, f64), String> {
    let (mut count, mut latest) = (0, f64::NAN);
    let mut cursor: Option<String> = None;
    loop {
        let mut path = format!("/api/v1/runs?status={status}&limit=500");
        if let Some(c) = &cursor {
            path.push_str("&cursor=");
            path.push_str(&percent(c));
        }
        let page = conn.json("GET", &path, None, 200).await?;
        for run in page["runs"].as_array().map(Vec::as_slice).unwrap_or_default() {
            count += 1;
            if let Some(at) = run["updated_at"].as_str().and_then(rfc3339_ms) {
                latest = if latest.is_nan() { at } else { latest.max(at) };
            }
        }
        match page["next_cursor"].as_str() {
            Some(next) => cursor = Some(next.to_owned()),
            None => return Ok((count, latest)),
        }
    }
}

/// Polls until `n` runs are listed with `status` (at most `limit`).
async fn until_listed(
    addr: &str,
    status: &str,
    n: usize,
    limit: Duration,
) -> Result<(Duration, f64), String> {
    let start = Instant::now();
    let mut conn = Conn::open(addr).await.map_err(|e| e.to_string())?;
    loop {
        let (count, latest) = listed(&mut conn, status).await?;
        if count >= n {
            return Ok((start.elapsed(), latest));
        }
        if start.elapsed() > limit {
            return Err(format!("{count} of {n} runs {status} after {limit:?}"));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A cursor in a query string.
fn percent(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

// ---------------------------------------------------------------------------
// Time and statistics

/// Now, in ms since the epoch.
fn now_ms() -> f64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0.0, |d| d.as_secs_f64() * 1000.0)
}

/// `2026-11-30T20:00:00.123Z` in ms since the epoch.
fn rfc3339_ms(text: &str) -> Option<f64> {
    let b = text.as_bytes();
    let num = |from: usize, len: usize| -> Option<i64> { text.get(from..from + len)?.parse().ok() };
    if b.len() < 20 || b[4] != b'-' || b[10] != b'T' {
        return None;
    }
    let (y, m, d) = (num(0, 4)?, num(5, 2)?, num(8, 2)?);
    let (hh, mm, ss) = (num(11, 2)?, num(14, 2)?, num(17, 2)?);
    let mut ms = 0.0;
    if b.get(19) == Some(&b'.') {
        let digits: String = text[20..].chars().take_while(char::is_ascii_digit).collect();
        ms = format!("0.{digits}").parse::<f64>().ok()? * 1000.0;
    }
    // Days from the civil date (Howard Hinnant's algorithm).
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    Some(((days * 86_400 + hh * 3_600 + mm * 60 + ss) as f64) * 1000.0 + ms)
}

/// The `p`-th percentile (0-100) of sorted values.
fn pct(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

fn sorted(mut values: Vec<f64>) -> Vec<f64> {
    values.sort_by(f64::total_cmp);
    values
}

fn r(x: f64, digits: i32) -> f64 {
    let k = 10_f64.powi(digits);
    (x * k).round() / k
}

// ---------------------------------------------------------------------------
// 1. Runs in flight

async fn in_flight(n: usize) -> Measured {
    const CONCURRENCY: usize = 50;
    const STEPS: usize = 3;
    const LATENCY_MS: f64 = 200.0;
    let dir = fresh_dir("serve-inflight");
    let server = Server::spawn(&dir, Some("200ms"), Duration::from_secs(30))?;
    health(&server.addr, Instant::now(), Duration::from_secs(10)).await?;
    let rss_idle = server.mem_mb("VmRSS");
    let cpu_before = server.cpu_s();
    let body = start_body(&agent_chain("chain", STEPS));
    let (t0_wall, t0) = (now_ms(), Instant::now());
    let (ids, post_ms) = post_runs(&server.addr, n, CONCURRENCY, &body).await?;
    let posted = t0.elapsed();
    let (polled, latest) = until_listed(&server.addr, "completed", n, Duration::from_secs(300)).await?;
    let finished_ms = latest - t0_wall;
    let hwm = server.mem_mb("VmHWM");
    let cpu = server.cpu_s() - cpu_before;
    let warnings = server.warnings();
    server.stop()?;
    let post_ms = sorted(post_ms);
    let posted_ms = posted.as_secs_f64() * 1000.0;
    let bound_ms = posted_ms + STEPS as f64 * LATENCY_MS;
    let row = json!({
        "name": format!("serve: {n} runs in flight (3 agent steps, mock 200 ms)"),
        "runs": ids.len(),
        "concurrency": CONCURRENCY,
        "post_total_ms": r(posted_ms, 1),
        "posts_per_s": r(n as f64 / posted.as_secs_f64(), 0),
        "post_p50_ms": r(pct(&post_ms, 50.0), 2),
        "post_p99_ms": r(pct(&post_ms, 99.0), 2),
        "finished_ms": r(finished_ms, 0),
        "finished_polled_ms": r(posted_ms + polled.as_secs_f64() * 1000.0, 0),
        "runs_per_s": r(n as f64 / (finished_ms / 1000.0), 0),
        "ideal_ms": STEPS as f64 * LATENCY_MS,
        "provider_bound_ms": r(bound_ms, 0),
        "server_cpu_s": r(cpu, 2),
        "rss_idle_mb": r(rss_idle, 1),
        "peak_rss_mb": r(hwm, 1),
        "rss_per_run_kb": r((hwm - rss_idle) * 1024.0 / n as f64, 1),
        "server_warnings": warnings,
        "summary": format!(
            "{:.0} POST/s; all done in {:.0} ms ({:.0} runs/s; ideal 600, last POST + 600 = {:.0}); peak RSS {:.1} MB ({:.1} KB/run); server CPU {:.1} s",
            n as f64 / posted.as_secs_f64(),
            finished_ms,
            n as f64 / (finished_ms / 1000.0),
            bound_ms,
            hwm,
            (hwm - rss_idle) * 1024.0 / n as f64,
            cpu
        ),
    });
    Ok(row)
}

// ---------------------------------------------------------------------------
// 2. Runs waiting at a gate, and a restart

async fn waiting(n: usize) -> Measured {
    const CONCURRENCY: usize = 32;
    const RESTARTS: usize = 3;
    let dir = fresh_dir("serve-waiting");
    // A start on an empty data directory, for comparison (the store is
    // created then; the second start opens it). Stopped only once it
    // answers: a SIGTERM right after the `listening` line kills the server
    // (its signal handler is installed later).
    let first = Server::spawn(&dir, None, Duration::from_secs(30))?;
    health(&first.addr, first.spawned, Duration::from_secs(10)).await?;
    first.stop()?;
    let server = Server::spawn(&dir, None, Duration::from_secs(30))?;
    let empty_health = health(&server.addr, server.spawned, Duration::from_secs(10)).await?;
    let empty_listening = server.listening;
    let body = start_body(&gated_chain("gated", 3));
    let t0 = Instant::now();
    let (_, post_ms) = post_runs(&server.addr, n, CONCURRENCY, &body).await?;
    let posted = t0.elapsed();
    let (_, _) = until_listed(&server.addr, "waiting_approval", n, Duration::from_secs(600)).await?;
    let all_waiting = t0.elapsed();
    let rss_loaded = server.mem_mb("VmRSS");
    let hwm_loaded = server.mem_mb("VmHWM");
    let warnings = server.warnings();
    let stop_first = server.stop()?;
    let store_mb = dir_bytes(&dir) as f64 / 1e6;

    let mut starts = Vec::new();
    for _ in 0..RESTARTS {
        let server = Server::spawn(&dir, None, Duration::from_secs(120))?;
        let healthy = health(&server.addr, server.spawned, Duration::from_secs(120)).await?;
        let listening = server.listening;
        tokio::time::sleep(Duration::from_secs(1)).await;
        let rss = server.mem_mb("VmRSS");
        let hwm = server.mem_mb("VmHWM");
        let mut conn = Conn::open(&server.addr).await.map_err(|e| e.to_string())?;
        let (still, _) = listed(&mut conn, "waiting_approval").await?;
        drop(conn);
        if still != n {
            return Err(format!("after a restart {still} of {n} runs wait"));
        }
        let stop = server.stop()?;
        starts.push(Start { listening, healthy, rss, hwm, stop });
    }
    let median = |f: &dyn Fn(&Start) -> f64| {
        let values = sorted(starts.iter().map(f).collect());
        values[values.len() / 2]
    };
    let listening_ms = median(&|s| s.listening.as_secs_f64() * 1000.0);
    let health_ms = median(&|s| s.healthy.as_secs_f64() * 1000.0);
    let rss = median(&|s| s.rss);
    let post_ms = sorted(post_ms);
    let each: Vec<Value> = starts
        .iter()
        .map(|s| {
            json!({
                "listening_ms": r(s.listening.as_secs_f64() * 1000.0, 1),
                "health_ms": r(s.healthy.as_secs_f64() * 1000.0, 1),
                "rss_mb": r(s.rss, 1),
                "peak_rss_mb": r(s.hwm, 1),
                "stop_ms": r(s.stop.as_secs_f64() * 1000.0, 1),
            })
        })
        .collect();
    Ok(json!({
        "name": format!("serve: {n} runs waiting at a gate, restart"),
        "runs": n,
        "concurrency": CONCURRENCY,
        "create_ms": r(posted.as_secs_f64() * 1000.0, 0),
        "posts_per_s": r(n as f64 / posted.as_secs_f64(), 0),
        "post_p50_ms": r(pct(&post_ms, 50.0), 2),
        "post_p99_ms": r(pct(&post_ms, 99.0), 2),
        "all_waiting_ms": r(all_waiting.as_secs_f64() * 1000.0, 0),
        "rss_loaded_mb": r(rss_loaded, 1),
        "peak_rss_loaded_mb": r(hwm_loaded, 1),
        "first_stop_ms": r(stop_first.as_secs_f64() * 1000.0, 1),
        "store_mb": r(store_mb, 1),
        "empty_listening_ms": r(empty_listening.as_secs_f64() * 1000.0, 1),
        "empty_health_ms": r(empty_health.as_secs_f64() * 1000.0, 1),
        "restarts": RESTARTS,
        "listening_ms": r(listening_ms, 1),
        "health_ms": r(health_ms, 1),
        "rss_after_start_mb": r(rss, 1),
        "each_start": each,
        "server_warnings": warnings,
        "summary": format!(
            "created in {:.1} s ({:.0} POST/s); restart: listening {:.0} ms, health {:.0} ms (target < 2 s; empty store {:.0} ms), RSS {:.1} MB (target < 500) [median of {RESTARTS}]",
            posted.as_secs_f64(),
            n as f64 / posted.as_secs_f64(),
            listening_ms,
            health_ms,
            empty_health.as_secs_f64() * 1000.0,
            rss
        ),
    }))
}

/// One start of the server on the waiting runs: spawn to the `listening`
/// line, spawn to health answering, VmRSS and VmHWM (MB) a second later,
/// and how long SIGTERM took.
struct Start {
    listening: Duration,
    healthy: Duration,
    rss: f64,
    hwm: f64,
    stop: Duration,
}

/// Bytes of the files under `dir`.
fn dir_bytes(dir: &Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir) else { return 0 };
    entries
        .flatten()
        .map(|e| match e.metadata() {
            Ok(m) if m.is_dir() => dir_bytes(&e.path()),
            Ok(m) => m.len(),
            Err(_) => 0,
        })
        .sum()
}

// ---------------------------------------------------------------------------
// 3. SSE fan-out

/// What one subscriber saw.
#[derive(Default)]
struct Seen {
    /// Latency of each event after `measured_after`, ms.
    latencies: Vec<f64>,
    /// Events with an id, all of them.
    events: u64,
    /// The last id.
    last: u64,
    /// Every id was the one after the last.
    in_order: bool,
    /// `event: end` came.
    ended: bool,
    /// `event: token` messages.
    tokens: u64,
}

/// Reads one run's stream from its start: counts up `caught_up` once it
/// has read event `gate_seq`, and measures every event after
/// `measured_after` (read once the approval is sent).
async fn subscribe(
    addr: String,
    run: String,
    gate_seq: u64,
    caught_up: Arc<AtomicUsize>,
    connected: Arc<AtomicUsize>,
) -> Result<Seen, String> {
    let mut conn = Conn::open(&addr).await.map_err(|e| format!("connect: {e}"))?;
    let path = format!("/api/v1/runs/{run}/events/stream");
    conn.send("GET", &path, None, "Accept: text/event-stream\r\n").await.map_err(|e| e.to_string())?;
    let (status, framing) = conn.head().await.map_err(|e| e.to_string())?;
    if status != 200 {
        return Err(format!("GET {path}: {status}"));
    }
    connected.fetch_add(1, Ordering::Relaxed);
    let mut seen = Seen { in_order: true, ..Seen::default() };
    let mut buffer: Vec<u8> = Vec::with_capacity(16 * 1024);
    let mut counted = false;
    loop {
        let piece = match framing {
            Framing::Chunked => conn.chunk().await.map_err(|e| e.to_string())?,
            _ => {
                let mut data = vec![0; 16 * 1024];
                let n = conn.stream.read(&mut data).await.map_err(|e| e.to_string())?;
                data.truncate(n);
                (n > 0).then_some(data)
            }
        };
        let received = now_ms();
        let Some(piece) = piece else { break };
        buffer.extend_from_slice(&piece);
        while let Some(end) = buffer.windows(2).position(|w| w == b"\n\n") {
            let block: Vec<u8> = buffer.drain(..end + 2).collect();
            let text = String::from_utf8_lossy(&block);
            let (mut id, mut kind, mut data) = (None, "", "");
            for line in text.lines() {
                if let Some(v) = line.strip_prefix("id:") {
                    id = v.trim().parse::<u64>().ok();
                } else if let Some(v) = line.strip_prefix("event:") {
                    kind = v.trim();
                } else if let Some(v) = line.strip_prefix("data:") {
                    data = v.trim();
                }
            }
            match (id, kind) {
                (Some(seq), _) => {
                    seen.events += 1;
                    if seq != seen.last + 1 {
                        seen.in_order = false;
                    }
                    seen.last = seq;
                    if seq > gate_seq {
                        let at = data
                            .split("\"at\":\"")
                            .nth(1)
                            .and_then(|rest| rest.split('"').next())
                            .and_then(rfc3339_ms)
                            .ok_or_else(|| format!("event {seq} has no `at`: {data}"))?;
                        seen.latencies.push(received - at);
                    } else if seq == gate_seq && !counted {
                        counted = true;
                        caught_up.fetch_add(1, Ordering::Relaxed);
                    }
                }
                (None, "token") => seen.tokens += 1,
                (None, "end") => seen.ended = true,
                _ => {}
            }
        }
        if seen.ended {
            break;
        }
    }
    Ok(seen)
}

async fn fan_out(subscribers: usize, steps: usize) -> Measured {
    let dir = fresh_dir("serve-sse");
    let server = Server::spawn(&dir, Some("5ms"), Duration::from_secs(30))?;
    health(&server.addr, Instant::now(), Duration::from_secs(10)).await?;
    let mut conn = Conn::open(&server.addr).await.map_err(|e| e.to_string())?;
    let run =
        conn.json("POST", "/api/v1/runs", Some(&start_body(&gated_chain("fanout", steps))), 201).await?;
    let id = run["run_id"].as_str().ok_or("no run_id")?.to_owned();
    until_listed(&server.addr, "waiting_approval", 1, Duration::from_secs(30)).await?;
    let stored = conn.json("GET", &format!("/api/v1/runs/{id}/events?after=0"), None, 200).await?;
    let gate_seq = stored["events"]
        .as_array()
        .and_then(|e| e.last())
        .and_then(|e| e["seq"].as_u64())
        .ok_or("no events")?;

    let rss_before = server.mem_mb("VmRSS");
    let caught_up = Arc::new(AtomicUsize::new(0));
    let connected = Arc::new(AtomicUsize::new(0));
    let t_subscribe = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..subscribers {
        let (addr, run, caught, conn) =
            (server.addr.clone(), id.clone(), Arc::clone(&caught_up), Arc::clone(&connected));
        tasks.spawn(subscribe(addr, run, gate_seq, caught, conn));
    }
    while caught_up.load(Ordering::Relaxed) < subscribers {
        if t_subscribe.elapsed() > Duration::from_secs(120) {
            return Err(format!(
                "{} of {subscribers} subscribers connected, {} caught up, after 120 s",
                connected.load(Ordering::Relaxed),
                caught_up.load(Ordering::Relaxed)
            ));
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let subscribed = t_subscribe.elapsed();
    let rss_subscribed = server.mem_mb("VmRSS");
    let cpu_before = server.cpu_s();
    let client_before = own_cpu_s();
    let t_run = Instant::now();
    conn.json("POST", &format!("/api/v1/runs/{id}/approve"), Some("{}"), 200).await?;
    let mut all = Vec::new();
    let (mut complete, mut events, mut tokens, mut ended) = (0, 0, 0, 0);
    let mut lasts = Vec::new();
    let limit = tokio::time::sleep(Duration::from_secs(300));
    tokio::pin!(limit);
    loop {
        tokio::select! {
            joined = tasks.join_next() => {
                let Some(joined) = joined else { break };
                let seen = joined.map_err(|e| e.to_string())??;
                events += seen.events;
                tokens += seen.tokens;
                ended += u64::from(seen.ended);
                if seen.in_order {
                    complete += 1;
                }
                lasts.push(seen.last);
                all.extend(seen.latencies);
            }
            () = &mut limit => return Err("the subscribers did not all see the run end within 300 s".into()),
        }
    }
    let run_ms = t_run.elapsed().as_secs_f64() * 1000.0;
    let cpu = server.cpu_s() - cpu_before;
    let client_cpu = own_cpu_s() - client_before;
    let hwm = server.mem_mb("VmHWM");
    let stored = conn.json("GET", &format!("/api/v1/runs/{id}"), None, 200).await?;
    let status = stored["status"].as_str().unwrap_or("?").to_owned();
    let after = conn.json("GET", &format!("/api/v1/runs/{id}/events?after={gate_seq}"), None, 200).await?;
    let last_seq =
        after["events"].as_array().and_then(|e| e.last()).and_then(|e| e["seq"].as_u64()).unwrap_or(0);
    drop(conn);
    let warnings = server.warnings();
    server.stop()?;
    let per_subscriber = last_seq - gate_seq;
    let expected = per_subscriber * subscribers as u64;
    let every = lasts.iter().all(|&l| l == last_seq)
        && complete == subscribers
        && ended == subscribers as u64
        && all.len() as u64 == expected;
    let lat = sorted(all);
    let (p50, p99, max) = (pct(&lat, 50.0), pct(&lat, 99.0), lat.last().copied().unwrap_or(f64::NAN));
    Ok(json!({
        "name": format!("serve: SSE fan-out, {subscribers} subscribers x {per_subscriber} events"),
        "subscribers": subscribers,
        "steps": steps,
        "mock_latency_ms": 5,
        "run_status": status,
        "events_per_subscriber": per_subscriber,
        "deliveries": lat.len(),
        "deliveries_expected": expected,
        "every_subscriber_got_every_event": every,
        "events_read": events,
        "tokens_read": tokens,
        "ends_read": ended,
        "subscribe_ms": r(subscribed.as_secs_f64() * 1000.0, 0),
        "run_ms": r(run_ms, 0),
        "deliveries_per_s": r(lat.len() as f64 / (run_ms / 1000.0), 0),
        "latency_p50_ms": r(p50, 1),
        "latency_p99_ms": r(p99, 1),
        "latency_max_ms": r(max, 1),
        "server_cpu_s": r(cpu, 2),
        "client_cpu_s": r(client_cpu, 2),
        "rss_before_mb": r(rss_before, 1),
        "rss_subscribed_mb": r(rss_subscribed, 1),
        "peak_rss_mb": r(hwm, 1),
        "server_warnings": warnings,
        "summary": format!(
            "{} deliveries ({}): latency p50 {p50:.1} ms, p99 {p99:.1} ms (target < 50), max {max:.1} ms; run {run_ms:.0} ms",
            lat.len(),
            if every { "every subscriber got every event" } else { "SOME EVENTS MISSING" },
        ),
    }))
}

// ---------------------------------------------------------------------------
// 4. GET /runs/{id} under load

async fn get_under_load(runs: usize, secs: f64) -> Measured {
    const CALLERS: usize = 16;
    const STEPS: usize = 100;
    let dir = fresh_dir("serve-get");
    let server = Server::spawn(&dir, Some("200ms"), Duration::from_secs(30))?;
    health(&server.addr, Instant::now(), Duration::from_secs(10)).await?;
    let (ids, _) = post_runs(&server.addr, runs, 50, &start_body(&agent_chain("long", STEPS))).await?;
    let ids: Arc<[String]> = Arc::from(ids);
    let cpu_before = server.cpu_s();
    let client_before = own_cpu_s();
    let start = Instant::now();
    let stop = Arc::new(AtomicBool::new(false));
    let bytes = Arc::new(AtomicU64::new(0));
    let mut tasks = tokio::task::JoinSet::new();
    for caller in 0..CALLERS {
        let (addr, ids, stop, bytes) =
            (server.addr.clone(), Arc::clone(&ids), Arc::clone(&stop), Arc::clone(&bytes));
        tasks.spawn(async move {
            let mut conn = Conn::open(&addr).await.map_err(|e| e.to_string())?;
            let mut seed =
                0x9E37_79B9_7F4A_7C15_u64 ^ (caller as u64 + 1).wrapping_mul(0xD1B5_4A32_D192_ED03);
            let (mut times, mut errors) = (Vec::new(), Vec::new());
            while !stop.load(Ordering::Relaxed) {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                let id = &ids[(seed % ids.len() as u64) as usize];
                let t = Instant::now();
                let (status, body) =
                    conn.call("GET", &format!("/api/v1/runs/{id}"), None).await.map_err(|e| e.to_string())?;
                times.push(t.elapsed().as_secs_f64() * 1000.0);
                if status != 200 {
                    errors.push(format!("GET /runs/{id}: {status} {}", String::from_utf8_lossy(&body)));
                }
                bytes.fetch_add(body.len() as u64, Ordering::Relaxed);
            }
            Ok::<_, String>((times, errors))
        });
    }
    tokio::time::sleep(Duration::from_secs_f64(secs)).await;
    stop.store(true, Ordering::Relaxed);
    let (mut all, mut errors) = (Vec::new(), Vec::new());
    while let Some(joined) = tasks.join_next().await {
        let (times, failed) = joined.map_err(|e| e.to_string())??;
        all.extend(times);
        errors.extend(failed);
    }
    let elapsed = start.elapsed().as_secs_f64();
    let cpu = server.cpu_s() - cpu_before;
    let client_cpu = own_cpu_s() - client_before;
    let mut conn = Conn::open(&server.addr).await.map_err(|e| e.to_string())?;
    let (running, _) = listed(&mut conn, "running").await?;
    // How far the runs got: steps finished over all runs.
    let mut finished_steps = 0;
    for id in ids.iter() {
        let run = conn.json("GET", &format!("/api/v1/runs/{id}"), None, 200).await?;
        finished_steps += run["steps"]
            .as_array()
            .map(|s| s.iter().filter(|s| s["status"].as_str() == Some("succeeded")).count())
            .or_else(|| {
                run["steps"]
                    .as_object()
                    .map(|m| m.values().filter(|s| s["status"].as_str() == Some("succeeded")).count())
            })
            .unwrap_or(0);
    }
    drop(conn);
    let hwm = server.mem_mb("VmHWM");
    let warnings = server.warnings();
    server.stop()?;
    let n = all.len();
    let lat = sorted(all);
    let (p50, p99, max) = (pct(&lat, 50.0), pct(&lat, 99.0), lat.last().copied().unwrap_or(f64::NAN));
    let rate = n as f64 / elapsed;
    Ok(json!({
        "name": format!("serve: GET /runs/{{id}}, {CALLERS} callers, {runs} runs in flight"),
        "runs": runs,
        "steps_per_run": STEPS,
        "callers": CALLERS,
        "secs": r(elapsed, 2),
        "requests": n,
        "requests_per_s": r(rate, 0),
        "latency_p50_ms": r(p50, 2),
        "latency_p99_ms": r(p99, 2),
        "latency_max_ms": r(max, 1),
        "mean_body_bytes": bytes.load(Ordering::Relaxed) / n.max(1) as u64,
        "errors": errors.len(),
        "first_errors": errors.iter().take(3).collect::<Vec<_>>(),
        "running_at_end": running,
        "steps_succeeded_at_end": finished_steps,
        "server_cpu_s": r(cpu, 2),
        "server_cpu_ms_per_request": r(cpu * 1000.0 / n.max(1) as f64, 3),
        "client_cpu_s": r(client_cpu, 2),
        "peak_rss_mb": r(hwm, 1),
        "server_warnings": warnings,
        "summary": format!(
            "{rate:.0} requests/s; p50 {p50:.2} ms, p99 {p99:.2} ms, max {max:.1} ms; {running} of {runs} runs still running at the end{}",
            if errors.is_empty() { String::new() } else { format!("; {} ANSWERS NOT 200", errors.len()) }
        ),
    }))
}

// ---------------------------------------------------------------------------

async fn measure() -> Value {
    let sizes = Sizes::from_env();
    let only = std::env::var("CAIRN_BENCH_ONLY").unwrap_or_default();
    let wanted = |name: &str| only.is_empty() || only.split(',').any(|o| o.trim() == name);
    eprintln!("serve bench: {sizes:?}; binary {}", cairn_bin().display());
    let mut rows = Vec::new();
    let mut add = |name: &str, measured: Measured| {
        let row = measured.unwrap_or_else(|error| json!({"name": format!("serve: {name}"), "error": error}));
        match row["summary"].as_str().or(row["error"].as_str()) {
            Some(text) => eprintln!("{:<60} {text}", row["name"].as_str().unwrap_or(name)),
            None => eprintln!("{row}"),
        }
        rows.push(row);
    };
    if wanted("inflight") {
        add("runs in flight", in_flight(sizes.in_flight).await);
    }
    if wanted("waiting") {
        add("runs waiting", waiting(sizes.waiting).await);
    }
    if wanted("sse") {
        add("SSE fan-out", fan_out(sizes.subscribers, sizes.sse_steps).await);
    }
    if wanted("get") {
        add("GET under load", get_under_load(sizes.loaded_runs, sizes.get_secs).await);
    }
    json!({ "serve": rows })
}

fn main() {
    // `cargo bench` passes `--bench`; a filter or other flags are ignored.
    let runtime =
        tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("a tokio runtime starts");
    let report = runtime.block_on(measure());
    println!("{report}");
}
