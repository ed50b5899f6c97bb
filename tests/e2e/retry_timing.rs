//! Retry timing through the real binary: a step whose first calls get
//! faults from the loopback server, with small delays in its policy. The
//! checks compare three clocks that agree (the engine's and the server's
//! are both the system clock in milliseconds), and each is one the engine
//! cannot pass by chance:
//!
//! - `retry_at - at` of a `step_failed` is at most the delay the policy
//!   allows (the engine stamps `at` after it computes `retry_at`, so this
//!   never exceeds the delay it chose);
//! - `retry_at` minus the failed call's arrival is at least the policy's
//!   floor (the engine saw the fault after it arrived);
//! - the next attempt starts (its `step_started`) and its call arrives no
//!   earlier than `retry_at`, and it starts no later than `retry_at` plus
//!   this process's own start-up time (spawn to its first call: far more
//!   work than waking and deciding), the one margin, measured rather than
//!   guessed. So a gap between two calls is at most the cap plus what this
//!   process measurably spent: seeing the fault (`at` minus the fault's
//!   arrival), waking (bounded so), and flushing and sending the next start
//!   (the call's arrival minus `step_started`'s `at`).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::support::{Call, LlmServer, cairn_command, fresh_data_dir, scratch};

fn workflow(retry: &str) -> String {
    format!(
        "cairn: 1\nid: timing\nagents:\n  w: {{ system: Be brief. }}\nsteps:\n  - id: ask\n    agent: w\n    prompt: hello\n    retry: {retry}\n"
    )
}

fn fault(status: &str, headers: &str) -> String {
    format!(
        "HTTP/1.1 {status}\r\ncontent-type: application/json\r\n{headers}content-length: 2\r\nconnection: close\r\n\r\n{{}}"
    )
}

fn server_error() -> String {
    fault("500 Internal Server Error", "")
}

/// One retried step of a run, as the server and the log saw it.
#[derive(Debug)]
struct Timed {
    /// The step's calls, in order of arrival.
    calls: Vec<Call>,
    /// Each failed attempt's `(at, retry_at)`, in ms since the epoch.
    failed: Vec<(u64, u64)>,
    /// When each attempt started (`step_started`'s `at`, stamped before its
    /// append is flushed).
    started: Vec<u64>,
    /// Spawn to the first call's arrival: what this process needs to start
    /// and send a request.
    startup: u64,
}

impl Timed {
    /// The engine's delay after failure `n` (from 0) is at most `cap`.
    fn at_most(&self, n: usize, cap: u64) {
        let (at, retry_at) = self.failed[n];
        assert!(retry_at.saturating_sub(at) <= cap, "retry {n}: {}ms > {cap}ms: {self:?}", retry_at - at);
    }

    /// The engine's delay after failure `n` is at least `floor`.
    fn at_least(&self, n: usize, floor: u64) {
        let (_, retry_at) = self.failed[n];
        let arrived = self.calls[n].at_ms;
        assert!(retry_at >= arrived + floor, "retry {n}: less than {floor}ms after the fault: {self:?}");
        assert!(
            self.calls[n + 1].at_ms >= arrived + floor,
            "call {}: less than {floor}ms after: {self:?}",
            n + 1
        );
    }

    /// Whether the delay after failure `n` was below `cap` (so jitter drew it down).
    fn below(&self, n: usize, cap: u64) -> bool {
        self.failed[n].1 < self.calls[n].at_ms + cap
    }

    /// Each next attempt started at its `retry_at`, not before, and within
    /// this process's start-up time after it (waking and deciding need far
    /// less than starting the process); its call came after.
    fn kept_schedule(&self) {
        for (n, (_, retry_at)) in self.failed.iter().enumerate() {
            let (started, arrived) = (self.started[n + 1], self.calls[n + 1].at_ms);
            assert!(started >= *retry_at && arrived >= started, "attempt {} started early: {self:?}", n + 2);
            assert!(
                started - retry_at <= self.startup,
                "attempt {} started {}ms after its retry_at, more than the {}ms this process took to start: {self:?}",
                n + 2,
                started - retry_at,
                self.startup
            );
        }
    }
}

fn ms(t: SystemTime) -> u64 {
    u64::try_from(t.duration_since(UNIX_EPOCH).expect("after the epoch").as_millis()).expect("fits")
}

fn rfc3339(value: &serde_json::Value) -> u64 {
    ms(humantime::parse_rfc3339(value.as_str().expect("an RFC 3339 time")).expect("RFC 3339"))
}

/// Runs the step with `retry` against a server that sends `faults` first,
/// as run `id`, and reads its timing.
fn timed(name: &str, id: &str, retry: &str, faults: Vec<String>) -> Timed {
    let retries = faults.len();
    let server = LlmServer::with_faults(Duration::ZERO, faults);
    let dir = scratch(name);
    std::fs::write(dir.join("wf.yaml"), workflow(retry)).expect("write");
    let data = fresh_data_dir();
    let mut run = cairn_command(&dir, &data, &["run", "wf.yaml", "--run-id", id, "--non-interactive"]);
    run.env("CAIRN_LLM_BASE_URL", &server.url).env("CAIRN_LLM_MODEL", "fake");
    let spawned = ms(SystemTime::now());
    let out = run.output().expect("cairn runs");
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    let log = cairn_command(&dir, &data, &["events", id, "--format", "jsonl"]).output().expect("events");
    let events: Vec<serde_json::Value> = String::from_utf8_lossy(&log.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).expect("jsonl"))
        .collect();
    let failed: Vec<(u64, u64)> = events
        .iter()
        .filter(|e| e["type"] == "step_failed")
        .map(|e| (rfc3339(&e["at"]), rfc3339(&e["retry_at"])))
        .collect();
    let started: Vec<u64> =
        events.iter().filter(|e| e["type"] == "step_started").map(|e| rfc3339(&e["at"])).collect();
    let mut calls: Vec<Call> =
        server.calls().into_iter().filter(|c| c.key.starts_with(&format!("{id}/ask/"))).collect();
    calls.sort_by_key(|c| c.at_ms);
    assert_eq!(failed.len(), retries, "one retried failure per fault: {failed:?}");
    assert_eq!(calls.len(), retries + 1, "{calls:?}");
    let startup = calls[0].at_ms.saturating_sub(spawned);
    let delays: Vec<String> = failed
        .iter()
        .zip(&calls)
        .zip(&calls[1..])
        .zip(&started[1..])
        .map(|((((at, retry_at), fault), next), start)| {
            let late = start.saturating_sub(*retry_at);
            format!(
                "{}ms chosen, started {late}ms after, {}ms fault to call",
                retry_at - at,
                next.at_ms - fault.at_ms
            )
        })
        .collect();
    eprintln!("{id} ({retry}): {}; start-up {startup}ms", delays.join(", "));
    assert_eq!(started.len(), retries + 1, "{started:?}");
    Timed { calls, failed, started, startup }
}

/// `delay × backoff^(n-1)` capped at `max_delay`, each jittered into its
/// upper half: 200ms, then 400ms capped to 300ms, then 300ms.
#[test]
fn jittered_delays_grow_by_backoff_stop_at_max_delay_and_stay_in_the_upper_half() {
    let retry =
        "{ max_attempts: 4, delay: 200ms, backoff: 2.0, max_delay: 300ms, jitter: true, on: [transient] }";
    let caps = [200, 300, 300];
    let mut drawn_down = 0;
    for id in ["jitter-a", "jitter-b"] {
        let t = timed(&format!("retry-{id}"), id, retry, vec![server_error(); 3]);
        for (n, cap) in caps.iter().enumerate() {
            t.at_most(n, *cap);
            t.at_least(n, cap / 2);
            drawn_down += usize::from(t.below(n, *cap));
        }
        t.kept_schedule();
    }
    assert!(drawn_down > 0, "jitter on, yet no delay of six fell below its cap");
}

/// Without jitter each delay is the capped backoff itself.
#[test]
fn without_jitter_each_delay_is_the_capped_backoff() {
    let retry =
        "{ max_attempts: 4, delay: 200ms, backoff: 2.0, max_delay: 300ms, jitter: false, on: [transient] }";
    let t = timed("retry-steady", "steady", retry, vec![server_error(); 3]);
    for (n, cap) in [200, 300, 300].into_iter().enumerate() {
        t.at_most(n, cap);
        t.at_least(n, cap);
    }
    t.kept_schedule();
}

/// A provider's `Retry-After` is the least delay: above `max_delay` it
/// wins over the cap, and below the jittered delay it does not shorten it.
#[test]
fn retry_after_is_the_least_delay_against_max_delay_and_jitter() {
    let limited = |headers: &str| fault("429 Too Many Requests", headers);

    let retry = "{ max_attempts: 2, delay: 50ms, max_delay: 100ms, jitter: true }";
    let t = timed("retry-after-cap", "after-cap", retry, vec![limited("retry-after: 1\r\n")]);
    t.at_least(0, 1000);
    t.at_most(0, 1000);
    t.kept_schedule();

    let retry = "{ max_attempts: 2, delay: 400ms, max_delay: 400ms, jitter: true }";
    let t = timed("retry-after-jitter", "after-jitter", retry, vec![limited("retry-after-ms: 20\r\n")]);
    t.at_least(0, 200);
    t.at_most(0, 400);
    t.kept_schedule();
}
