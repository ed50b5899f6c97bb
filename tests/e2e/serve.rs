//! `cairn serve` through the real binary: every verb from a second shell
//! goes through the server that holds the data directory; a stream
//! resumes after `Last-Event-ID` with no gap; requests without a token are
//! refused with a problem document; a server killed with SIGKILL carries
//! its runs on after a restart, with no finished step run again; a signed
//! webhook delivery starts a run once, and a schedule at its tick.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::support::{Server, cairn_command, get, http, json, root, scratch};

/// A second shell's `cairn ARGS` on the same data directory.
fn shell(dir: &Path, data: &Path, args: &[&str]) -> crate::support::Run {
    cairn_command(dir, data, args).output().expect("cairn runs").into()
}

/// The status of run `id`, read through the server.
fn status_of(dir: &Path, data: &Path, id: &str) -> serde_json::Value {
    let out = shell(dir, data, &["status", id, "--format", "json"]);
    assert!(out.code != 2 || !out.stdout.is_empty(), "status {id}: {}{}", out.stdout, out.stderr);
    json(&out.stdout)
}

/// Waits until run `id` has `status`.
fn wait_for(dir: &Path, data: &Path, id: &str, status: &str) -> serde_json::Value {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let run = status_of(dir, data, id);
        if run["status"] == status {
            return run;
        }
        assert!(Instant::now() < deadline, "run {id} never became {status}: {run}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The workspace root (where the examples are) and a data directory of
/// this test's own.
fn workspace(test: &str) -> (PathBuf, PathBuf) {
    (root(), scratch(&format!("serve-{test}")).join("data"))
}

#[test]
fn every_verb_from_a_second_shell_goes_through_the_server() {
    let (dir, data) = workspace("verbs");
    let _server = Server::start(&dir, &data, &[], &[("CAIRN_MOCK_LATENCY", "100ms")]);

    // A run started detached returns at once with its id.
    let started =
        shell(&dir, &data, &["run", "examples/product-discovery.yaml", "--input", "idea=A list", "--detach"]);
    assert_eq!(started.code, 0, "{}", started.stderr);
    let id = started.stdout.trim().to_owned();
    wait_for(&dir, &data, &id, "waiting_acceptance");

    // Another run goes on beside it, driven to its end.
    let other =
        shell(&dir, &data, &["run", "examples/ticket-triage.yaml", "--input", "ticket=charged twice"]);
    assert_eq!(other.code, 0, "{}{}", other.stdout, other.stderr);
    assert!(other.stdout.contains("completed"), "{}", other.stdout);

    // A decision from this shell is recorded as this user and the run goes on.
    let approved = shell(&dir, &data, &["approve", &id, "--as", "product_owner"]);
    assert_eq!(approved.code, 3, "waits at the next gates: {}{}", approved.stdout, approved.stderr);
    assert!(approved.stderr.contains("approved `epics` as product_owner"), "{}", approved.stderr);
    let events = shell(&dir, &data, &["events", &id, "--format", "jsonl"]);
    let decided: Vec<serde_json::Value> =
        events.stdout.lines().map(json).filter(|e| e["type"] == "gate_decided").collect();
    assert_eq!(decided.len(), 1, "{}", events.stdout);
    assert_eq!(decided[0]["actor"], "tester");

    let runs = shell(&dir, &data, &["runs", "--format", "json"]);
    assert_eq!(runs.code, 0, "{}", runs.stderr);
    assert_eq!(json(&runs.stdout).as_array().map(Vec::len), Some(2));

    // `events --follow` prints until the run ends.
    let detached =
        shell(&dir, &data, &["run", "examples/ticket-triage.yaml", "--input", "ticket=late", "--detach"]);
    let followed = shell(&dir, &data, &["events", detached.stdout.trim(), "--follow", "--format", "jsonl"]);
    assert_eq!(followed.code, 0, "{}", followed.stderr);
    let kinds: Vec<String> =
        followed.stdout.lines().map(|l| json(l)["type"].as_str().unwrap_or_default().to_owned()).collect();
    assert_eq!(kinds.first().map(String::as_str), Some("run_created"));
    assert_eq!(kinds.last().map(String::as_str), Some("run_completed"), "{kinds:?}");
}

#[test]
fn a_stream_resumes_after_last_event_id_with_no_gap_and_needs_a_token() {
    let (dir, data) = workspace("stream");
    let server = Server::start(&dir, &data, &[], &[]);
    let run = shell(&dir, &data, &["run", "examples/ticket-triage.yaml", "--input", "ticket=charged twice"]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    let id = json(&shell(&dir, &data, &["runs", "--format", "json"]).stdout)[0]["run_id"]
        .as_str()
        .expect("a run id")
        .to_owned();

    // No token: a problem document, never the stream.
    let (status, head, body) = get(&server, &format!("/api/v1/runs/{id}/events/stream"), "");
    assert_eq!(status, 401, "{head}\n{body}");
    assert!(head.to_ascii_lowercase().contains("content-type: application/problem+json"), "{head}");
    assert_eq!(json(&body)["code"], "unauthorized");
    // A token in the URL is refused: URLs are logged.
    let (status, _, _) = get(&server, &format!("/api/v1/runs/{id}?token=x"), "");
    assert_eq!(status, 400);

    // A token made from the second shell (through the server).
    let made = shell(&dir, &data, &["token", "create", "watcher", "--role", "viewer"]);
    assert_eq!(made.code, 0, "{}", made.stderr);
    let token = made.stdout.trim().to_owned();
    let auth = format!("Authorization: Bearer {token}\r\n");
    let (status, _, body) = get(&server, &format!("/api/v1/runs/{id}/events/stream"), &auth);
    assert_eq!(status, 200);
    let all = ids(&body);
    assert!(all.len() > 5, "{body}");
    assert_eq!(all, (1..=all.len() as u64).collect::<Vec<_>>(), "every event once, in order");
    assert!(body.contains("event: end\ndata: {\"status\":\"completed\"}"), "{body}");

    // Reconnecting after event 3 gives exactly what came after it.
    let (_, _, resumed) =
        get(&server, &format!("/api/v1/runs/{id}/events/stream"), &format!("{auth}Last-Event-ID: 3\r\n"));
    assert_eq!(ids(&resumed), (4..=all.len() as u64).collect::<Vec<_>>(), "no gap, no duplicate");

    // A viewer may not start runs.
    let body = r#"{"definition": "cairn: 1\nid: x\nsteps:\n  - id: a\n    set: 1\n"}"#;
    let host = server.address().to_owned();
    let (status, _, answer) = http(
        &server,
        &format!(
            "POST /api/v1/runs HTTP/1.1\r\nHost: {host}\r\n{auth}Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        ),
    );
    assert_eq!(status, 403, "{answer}");
    assert_eq!(json(&answer)["code"], "forbidden");
}

/// The `id:` lines of an SSE body, in order.
fn ids(body: &str) -> Vec<u64> {
    body.lines().filter_map(|l| l.strip_prefix("id: ")).filter_map(|n| n.trim().parse().ok()).collect()
}

#[test]
fn a_server_without_tokens_listens_only_on_loopback() {
    let (dir, data) = workspace("open");
    let out: crate::support::Run =
        cairn_command(&dir, &data, &["serve", "--listen", "0.0.0.0:0", "--auth", "none"])
            .output()
            .expect("runs")
            .into();
    assert_eq!(out.code, 2, "{}", out.stderr);
    assert!(out.stderr.contains("loopback"), "{}", out.stderr);
}

#[test]
fn a_killed_server_carries_its_runs_on_and_runs_no_finished_step_again() {
    let (dir, data) = workspace("killed");
    let env = [("CAIRN_MOCK_LATENCY", "400ms")];
    let mut server = Server::start(&dir, &data, &[], &env);
    let started = shell(
        &dir,
        &data,
        &["run", "examples/ticket-triage.yaml", "--input", "ticket=charged twice", "--detach"],
    );
    assert_eq!(started.code, 0, "{}", started.stderr);
    let id = started.stdout.trim().to_owned();
    // Kill it once a step has finished and another is in flight.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let run = status_of(&dir, &data, &id);
        let steps = run["steps"].as_array().cloned().unwrap_or_default();
        let done = steps.iter().filter(|s| s["status"] == "succeeded").count();
        if done >= 1 && steps.iter().any(|s| s["status"] == "running") {
            break;
        }
        assert!(Instant::now() < deadline, "no step finished in time: {run}");
        std::thread::sleep(Duration::from_millis(50));
    }
    nix_kill(&mut server);
    drop(server);

    let _again = Server::start(&dir, &data, &[], &env);
    wait_for(&dir, &data, &id, "completed");
    let events = shell(&dir, &data, &["events", &id, "--format", "jsonl"]);
    let mut succeeded = std::collections::BTreeMap::<String, usize>::new();
    for event in events.stdout.lines().map(json).filter(|e| e["type"] == "step_succeeded") {
        *succeeded.entry(event["path"].as_str().unwrap_or_default().to_owned()).or_default() += 1;
    }
    assert!(!succeeded.is_empty(), "{}", events.stdout);
    assert!(succeeded.values().all(|n| *n == 1), "each step succeeded once: {succeeded:?}");
}

/// SIGKILL: the process gets no chance to close anything.
fn nix_kill(server: &mut Server) {
    let _ = server.child.kill();
    let _ = server.child.wait();
}

/// The verbs both ways compare: each with whether its stderr (an error's
/// words) is compared too. Progress on stderr is not: it is drawn live.
const PARITY: &[(&[&str], bool)] = &[
    (
        &[
            "--llm",
            "mock",
            "run",
            "examples/ticket-triage.yaml",
            "--input",
            "ticket=charged twice",
            "--run-id",
            "t1",
        ],
        false,
    ),
    (&["status", "t1"], false),
    (&["status", "t1", "--format", "json"], false),
    (&["events", "t1", "--format", "jsonl"], false),
    (&["events", "t1"], false),
    (&["checkpoints", "t1", "--format", "json"], false),
    (
        &[
            "--llm",
            "mock",
            "run",
            "examples/product-discovery.yaml",
            "--input",
            "idea=A list",
            "--run-id",
            "pd",
            "--non-interactive",
        ],
        false,
    ),
    (&["--llm", "mock", "approve", "pd", "--as", "nobody"], true),
    (&["--llm", "mock", "approve", "pd", "--as", "product_owner", "--non-interactive"], false),
    (&["status", "pd", "--format", "json"], false),
    (&["cancel", "pd"], false),
    (&["--llm", "mock", "resume", "pd"], true),
    (&["status", "nope"], true),
    (&["fork", "t1", "--checkpoint", "3", "--format", "json"], false),
    (&["fork", "t1", "--checkpoint", "999"], true),
    (&["runs", "--format", "json"], false),
    (&["runs"], false),
    (&["runs", "--status", "completed", "--workflow", "ticket-triage", "--format", "json"], false),
    (&["checkpoints", "t1"], false),
    (&["events", "t1", "--format", "json"], false),
    (&["events", "t1", "--follow"], false),
    (
        &[
            "--llm",
            "mock",
            "run",
            "examples/ticket-triage.yaml",
            "--input",
            "ticket=refund",
            "--run-id",
            "t2",
            "--format",
            "json",
        ],
        false,
    ),
    (
        &[
            "--llm",
            "mock",
            "run",
            "examples/product-discovery.yaml",
            "--input",
            "idea=A map",
            "--run-id",
            "pd2",
            "--non-interactive",
        ],
        false,
    ),
    (&["status", "pd2"], false),
    (&["--llm", "mock", "answer", "pd2", "--text", "yes"], true),
    (&["--llm", "mock", "reject", "pd2", "--as", "nobody"], true),
    (
        &[
            "--llm",
            "mock",
            "reject",
            "pd2",
            "--as",
            "product_owner",
            "--comment",
            "Narrower, please",
            "--non-interactive",
        ],
        false,
    ),
    (&["events", "pd2", "--format", "jsonl"], false),
    (&["pause", "pd2"], true),
    (&["status", "pd2", "--format", "json"], false),
    (&["--llm", "mock", "resume", "pd2", "--non-interactive"], true),
    (&["cancel", "pd2", "--format", "json"], true),
    (&["cancel", "pd2"], true),
    (&["token", "list"], true),
];

/// Every verb of [`PARITY`] on a fresh data directory, directly or through
/// a server holding it: exit code, stdout, and stderr where compared, with
/// times and generated ids folded.
fn play(data: &Path, through_server: bool) -> Vec<String> {
    let dir = root();
    let _server = through_server.then(|| Server::start(&dir, data, &[], &[]));
    PARITY
        .iter()
        .map(|(args, errors)| {
            let out = shell(&dir, data, args);
            let stderr = if *errors { out.stderr.as_str() } else { "" };
            let text = format!("$ cairn {}\nexit {}\n{}{}", args.join(" "), out.code, out.stdout, stderr);
            fold_columns(&fold_ids(&fold_durations(&crate::support::redact_times(&text))))
        })
        .collect()
}

/// `"duration_ms":N` as `"duration_ms":<n>`: timing differs run to run.
fn fold_durations(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find("\"duration_ms\":") {
        let (before, after) = rest.split_at(at + "\"duration_ms\":".len());
        out.push_str(before);
        let digits = after.bytes().take_while(u8::is_ascii_digit).count();
        out.push_str(if digits > 0 { "<n>" } else { "" });
        rest = &after[digits..];
    }
    out.push_str(rest);
    out
}

/// Relative times (`just now`, `3s ago`) as one word, and runs of spaces
/// as one: a table's columns are as wide as the times in them.
fn fold_columns(text: &str) -> String {
    let text = text.replace("just now", "<t> ago");
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if !(c == ' ' && out.ends_with(' ')) {
            out.push(c);
        }
    }
    out
}

/// Generated run ids (26 lowercase letters and digits) as `<id>`.
fn fold_ids(text: &str) -> String {
    text.split_inclusive(|c: char| !c.is_ascii_alphanumeric())
        .map(|word| {
            let core = word.trim_end_matches(|c: char| !c.is_ascii_alphanumeric());
            if core.len() == 26 && core.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit()) {
                word.replacen(core, "<id>", 1)
            } else {
                word.to_owned()
            }
        })
        .collect()
}

#[test]
fn the_command_line_prints_the_same_through_a_server_as_on_its_own() {
    let (_, data) = workspace("parity");
    let alone = play(&data.with_file_name("alone"), false);
    let served = play(&data.with_file_name("served"), true);
    for (a, s) in alone.iter().zip(&served) {
        assert_eq!(a, s, "the same verb printed differently through the server");
    }
    assert_eq!(alone.len(), PARITY.len());
}

/// Takes webhooks; echoes its input.
const HOOKED: &str = "cairn: 1\nid: hooked\non: { webhook: true }\ninputs:\n  ticket: { type: string }\nsteps:\n  - id: echo\n    set: \"{{ inputs.ticket }}\"\n";
/// Starts a run every minute.
const TICKER: &str = "cairn: 1\nid: ticker\non: { schedule: \"* * * * *\" }\nsteps:\n  - id: tick\n    set: \"{{ run.id }}\"\n";
const HOOK_KEY: &str = "e2e-hook-key";

/// A folder with `hooked.yaml`, `ticker.yaml` and a `cairn.toml` giving
/// `hooked` its key's variable; a data directory of its own.
fn trigger_bench(test: &str) -> (PathBuf, PathBuf) {
    let dir = scratch(&format!("serve-{test}"));
    std::fs::write(dir.join("hooked.yaml"), HOOKED).expect("write");
    std::fs::write(dir.join("ticker.yaml"), TICKER).expect("write");
    std::fs::write(dir.join("cairn.toml"), "[hooks.hooked]\nsecret_env = \"CAIRN_E2E_HOOK_KEY\"\n")
        .expect("write");
    let data = dir.join("data");
    (dir, data)
}

/// `POST /api/v1/hooks/{workflow}` of `body`, with these header lines.
fn deliver(server: &Server, workflow: &str, body: &str, headers: &str) -> (u16, String) {
    let host = server.address().to_owned();
    let (status, _, answer) = http(
        server,
        &format!(
            "POST /api/v1/hooks/{workflow} HTTP/1.1\r\nHost: {host}\r\n{headers}Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        ),
    );
    (status, answer)
}

/// `X-Cairn-Signature` of `body` under the bench's key.
fn signature(body: &str) -> String {
    use hmac::Mac;
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(HOOK_KEY.as_bytes()).expect("any key length");
    mac.update(body.as_bytes());
    let hex: String = mac.finalize().into_bytes().iter().map(|b| format!("{b:02x}")).collect();
    format!("X-Cairn-Signature: sha256={hex}\r\n")
}

/// The run JSON of `id` once it has `status`, read through the server.
fn once(server: &Server, id: &str, status: &str) -> serde_json::Value {
    for _ in 0..200 {
        let (_, _, body) = get(server, &format!("/api/v1/runs/{id}"), "");
        let run = json(&body);
        if run["status"] == status {
            return run;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("run {id} never became {status}");
}

#[test]
fn a_signed_webhook_delivery_starts_a_run_once_and_a_replay_answers_it() {
    let (dir, data) = trigger_bench("hooks");
    let server = Server::start(&dir, &data, &["--auth", "none"], &[("CAIRN_E2E_HOOK_KEY", HOOK_KEY)]);
    let added = shell(&dir, &data, &["workflows", "add", "hooked.yaml"]);
    assert_eq!(added.code, 0, "{}{}", added.stdout, added.stderr);

    let body = r#"{"ticket": "T-9"}"#;
    let delivery = "X-Cairn-Delivery: d-1\r\n";
    let (status, first) = deliver(&server, "hooked", body, &format!("{}{delivery}", signature(body)));
    assert_eq!(status, 201, "{first}");
    let first = json(&first);
    assert_eq!(first["triggered_by"], "webhook");
    let id = first["run_id"].as_str().expect("a run").to_owned();
    let (status, replay) = deliver(&server, "hooked", body, &format!("{}{delivery}", signature(body)));
    assert_eq!(
        (status, json(&replay)["run_id"].as_str()),
        (200, Some(id.as_str())),
        "a replay starts nothing"
    );
    let (status, refused) = deliver(&server, "hooked", body, &format!("{}{delivery}", signature("{}")));
    assert_eq!((status, json(&refused)["code"].as_str()), (401, Some("bad_signature")), "{refused}");
    let done = once(&server, &id, "completed");
    assert_eq!(done["steps"][0]["output"], "T-9");
    let (_, _, listed) = get(&server, "/api/v1/runs?workflow=hooked", "");
    assert_eq!(json(&listed)["runs"].as_array().map(Vec::len), Some(1));
}

/// Waits for the next minute to come: at most a minute.
#[test]
fn a_schedule_starts_a_run_at_its_next_tick() {
    let (dir, data) = trigger_bench("schedule");
    let server = Server::start(&dir, &data, &["--auth", "none"], &[]);
    let added = shell(&dir, &data, &["workflows", "add", "ticker.yaml"]);
    assert_eq!(added.code, 0, "{}{}", added.stdout, added.stderr);
    let mut started = None;
    for _ in 0..150 {
        let (_, _, listed) = get(&server, "/api/v1/runs?workflow=ticker", "");
        if let Some(run) = json(&listed)["runs"].as_array().and_then(|r| r.first()).cloned() {
            started = Some(run);
            break;
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    let run = started.expect("a run within the minute and a little");
    assert_eq!(run["triggered_by"], "schedule");
    once(&server, run["run_id"].as_str().expect("an id"), "completed");
}
