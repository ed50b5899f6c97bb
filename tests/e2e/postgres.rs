//! The command line on a PostgreSQL store (`--store`, `CAIRN_STORE`): the
//! same verbs and answers as on the data directory, many processes on one
//! database, its schema migrated on open, and the refusals of a database
//! that is not there or is newer than the binary. Each test has a schema of
//! its own in the test database (`cargo xtask postgres` makes it).

use std::path::Path;
use std::process::Command;

use crate::support::{Run, Server, cairn_env, json, scratch, skip_when_served};

/// The test database, as psql and cairn reach it.
fn database() -> String {
    std::env::var("CAIRN_TEST_POSTGRES")
        .unwrap_or_else(|_| "postgres:///cairn_test?host=/var/run/postgresql".into())
}

/// A fresh schema `name` of the test database: the store URL that uses it.
pub(crate) fn fresh_store(name: &str) -> String {
    let base = database();
    let sql = format!("DROP SCHEMA IF EXISTS e2e_{name} CASCADE; CREATE SCHEMA e2e_{name}");
    let made = Command::new("psql").args(["-q", &base, "-c", &sql]).output().expect("psql runs");
    assert!(made.status.success(), "the test database is there (`cargo xtask postgres`): {made:?}");
    let sep = if base.contains('?') { '&' } else { '?' };
    format!("{base}{sep}options=-c%20search_path%3De2e_{name}")
}

fn on(store: &str, dir: &Path, args: &[&str]) -> Run {
    cairn_env(dir, args, &[("CAIRN_STORE", store)])
}

#[test]
fn every_verb_reads_and_drives_runs_kept_in_postgres() {
    if skip_when_served("the store is a database, not a data directory a server holds") {
        return;
    }
    let store = fresh_store("verbs");
    let dir = scratch("postgres_verbs");
    let triage = crate::support::root().join("examples/ticket-triage.yaml");
    let triage = triage.to_str().expect("a path");
    let ran = on(
        &store,
        &dir,
        &["--llm", "mock", "run", triage, "--input", "ticket=printer on fire", "--format", "json"],
    );
    assert_eq!(ran.code, 0, "{}", ran.stderr);
    let run_id = json(&ran.stdout)["run_id"].as_str().expect("an id").to_owned();
    assert!(!dir.join(".cairn").exists(), "no data directory is made");

    // Another process sees it, with its events and figures.
    let listed = json(&on(&store, &dir, &["runs", "--format", "json"]).stdout);
    assert_eq!(listed[0]["run_id"], run_id.as_str());
    assert_eq!(listed[0]["status"], "completed");
    let status = on(&store, &dir, &["status", &run_id, "--format", "json"]);
    assert_eq!(json(&status.stdout)["status"], "completed");
    let events = on(&store, &dir, &["events", &run_id, "--format", "json"]);
    let events = json(&events.stdout);
    assert_eq!(
        events.as_array().and_then(|e| e.last()).map(|e| &e["type"]),
        Some(&serde_json::json!("run_completed"))
    );
    let stats = json(&on(&store, &dir, &["stats", "--format", "json"]).stdout);
    assert_eq!(stats["overall"]["runs"], 1);
    let found = json(&on(&store, &dir, &["search", "printer", "--format", "json"]).stdout);
    assert_eq!(found[0]["id"], run_id.as_str());
    let added = on(&store, &dir, &["workflows", "add", triage]);
    assert_eq!(added.code, 0, "{}", added.stderr);
    let by_id = on(&store, &dir, &["--llm", "mock", "run", "ticket-triage", "--input", "ticket=again"]);
    assert_eq!(by_id.code, 0, "{}", by_id.stderr);
    let tokens = on(&store, &dir, &["token", "create", "ops", "--role", "operator"]);
    assert_eq!(tokens.code, 0, "{}", tokens.stderr);
    assert!(on(&store, &dir, &["token", "list"]).stdout.contains("ops"));
    let pruned = on(&store, &dir, &["prune", "--older-than", "1ms", "--format", "json"]);
    assert_eq!(json(&pruned.stdout)["deleted"].as_array().map(Vec::len), Some(2), "{}", pruned.stdout);
    assert_eq!(on(&store, &dir, &["runs", "--format", "json"]).stdout.trim(), "[]");
}

#[test]
fn the_schema_is_migrated_once_and_a_newer_one_or_no_database_is_refused_with_exit_2() {
    if skip_when_served("the store is a database, not a data directory a server holds") {
        return;
    }
    let store = fresh_store("migrate");
    let dir = scratch("postgres_migrate");
    let first = on(&store, &dir, &["migrate"]);
    assert_eq!(
        (first.code, first.stdout.ends_with(": schema version 0 -> 3\n")),
        (0, true),
        "{} {}",
        first.stdout,
        first.stderr
    );
    let again = on(&store, &dir, &["migrate", "--format", "json"]);
    let again = json(&again.stdout);
    assert_eq!((&again["from"], &again["to"]), (&serde_json::json!(3), &serde_json::json!(3)));

    let base = database();
    let newer = "UPDATE e2e_migrate.cairn_meta SET value = '7' WHERE key = 'schema_version'";
    assert!(Command::new("psql").args(["-q", &base, "-c", newer]).status().expect("psql").success());
    let refused = on(&store, &dir, &["runs"]);
    assert_eq!(refused.code, 2);
    assert!(
        refused.stderr.contains("cairn schema version 7, newer than this binary's 3: run a newer cairn"),
        "{}",
        refused.stderr
    );

    let down = cairn_env(&dir, &["runs"], &[("CAIRN_STORE", "postgres://cairn:hunter2@127.0.0.1:1/nowhere")]);
    assert_eq!(down.code, 2);
    assert!(
        down.stderr.starts_with("error: cannot reach PostgreSQL at cairn@127.0.0.1:1/nowhere"),
        "{}",
        down.stderr
    );
    assert!(!down.stderr.contains("hunter2"), "{}", down.stderr);
    let not_postgres = cairn_env(&dir, &["runs"], &[("CAIRN_STORE", "sqlite://here.db")]);
    assert_eq!(not_postgres.code, 2);
    assert!(
        not_postgres.stderr.contains("--store: a store URL starts with `postgres://`"),
        "{}",
        not_postgres.stderr
    );
    let no_url = cairn_env(&dir, &["migrate"], &[]);
    assert_eq!(no_url.code, 2);
    assert!(no_url.stderr.contains("migrate works on a PostgreSQL store"), "{}", no_url.stderr);
}

/// A gate beside a slow model step, then a step after both: while one
/// worker drives the slow step, the run waits at the gate.
const SHARED: &str = "cairn: 1\nid: shared\nagents:\n  w: { system: hi }\nsteps:\n  - id: go\n    approval: { message: Go? }\n  - id: slow\n    needs: []\n    agent: w\n    prompt: slowly\n  - id: after\n    needs: [go, slow]\n    agent: w\n    prompt: after\n";

/// Two workers (`cairn serve`) on one database, leases of a second, model
/// answers taking `latency`.
fn workers(store: &str, dir: &Path, latency: &str) -> (Server, Server) {
    std::fs::write(dir.join("cairn.toml"), "[store]\nlease = \"1s\"\n").expect("writes the config");
    let config = dir.join("cairn.toml");
    let config = config.to_str().expect("a path");
    let env = [("CAIRN_STORE", store), ("CAIRN_CONFIG", config), ("CAIRN_MOCK_LATENCY", latency)];
    let start = |name: &str| Server::start(dir, &dir.join(name), &["--auth", "none"], &env);
    (start("a"), start("b"))
}

/// The body of `GET path` at `address`, read until the server closes it
/// (a stream closes when its run ends).
fn streamed(address: &str, path: &str) -> String {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(address).expect("connects");
    stream.set_read_timeout(Some(std::time::Duration::from_secs(60))).expect("a timeout");
    let request = format!("GET {path} HTTP/1.1\r\nHost: {address}\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).expect("sends");
    let mut answer = String::new();
    let _ = stream.read_to_string(&mut answer);
    answer
}

/// `cairn --server URL ARGS` on `store`.
fn through(server: &Server, store: &str, dir: &Path, args: &[&str]) -> Run {
    let mut all = vec!["--server", server.url.as_str()];
    all.extend_from_slice(args);
    on(store, dir, &all)
}

/// Waits until `run` is `status`, as `server` answers.
fn settled(server: &Server, store: &str, dir: &Path, run: &str, status: &str) -> serde_json::Value {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        let now = json(&through(server, store, dir, &["status", run, "--format", "json"]).stdout);
        if now["status"] == status {
            return now;
        }
        assert!(std::time::Instant::now() < deadline, "run {run} never became {status}: {now}");
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
}

#[test]
fn workers_on_one_database_hand_requests_to_the_driver_stream_each_others_events_and_take_over_a_killed_one()
{
    if skip_when_served("the test runs its own servers on a database") {
        return;
    }
    let store = fresh_store("workers");
    let dir = scratch("postgres_workers");
    std::fs::write(dir.join("shared.yaml"), SHARED).expect("writes the workflow");
    let (a, b) = workers(&store, &dir, "3s");

    // Started on a, which drives it: the slow step runs, the gate waits.
    let started = through(&a, &store, &dir, &["run", "shared.yaml", "--detach", "--format", "json"]);
    assert_eq!(started.code, 0, "{}", started.stderr);
    let run = json(&started.stdout)["run_id"].as_str().expect("an id").to_owned();
    // b follows it live, from its start.
    let path = format!("/api/v1/runs/{run}/events/stream");
    let watcher = {
        let address = b.address().to_owned();
        std::thread::spawn(move || streamed(&address, &path))
    };
    std::thread::sleep(std::time::Duration::from_millis(500));

    // Approved through b while a drives the run: b hands the decision to a.
    let approved = through(&b, &store, &dir, &["approve", &run, "--format", "json"]);
    assert_eq!(approved.code, 0, "{}", approved.stderr);
    let done = settled(&b, &store, &dir, &run, "completed");
    assert_eq!(done["steps"].as_array().map(Vec::len), Some(3), "{done}");
    let stream = watcher.join().expect("the watcher ends with the run");
    for event in ["gate_decided", "step_succeeded", "run_completed"] {
        assert!(stream.contains(event), "b streamed what a recorded ({event}): {stream}");
    }

    // A cancel through b reaches a's driver.
    let second = through(&a, &store, &dir, &["run", "shared.yaml", "--detach", "--format", "json"]);
    let second = json(&second.stdout)["run_id"].as_str().expect("an id").to_owned();
    std::thread::sleep(std::time::Duration::from_millis(500));
    let cancelled = through(&b, &store, &dir, &["cancel", &second]);
    assert_eq!(cancelled.code, 4, "{}", cancelled.stderr);
    settled(&b, &store, &dir, &second, "cancelled");

    // A gate's deadline set while a drove the run fires on b after a is
    // gone: no worker keeps the timer, and it fires once.
    std::fs::write(dir.join("timed.yaml"), TIMED).expect("writes the workflow");
    let timed = through(&a, &store, &dir, &["run", "timed.yaml", "--detach", "--format", "json"]);
    let timed = json(&timed.stdout)["run_id"].as_str().expect("an id").to_owned();
    settled(&a, &store, &dir, &timed, "waiting_approval");

    // a dies (SIGKILL) in the middle of the slow step; b takes the run over
    // once a's lease ends and runs the step again, as the same attempt.
    let third = through(&a, &store, &dir, &["run", "shared.yaml", "--detach", "--format", "json"]);
    let third = json(&third.stdout)["run_id"].as_str().expect("an id").to_owned();
    std::thread::sleep(std::time::Duration::from_millis(800));
    drop(a);
    let approved = through(&b, &store, &dir, &["approve", &third]);
    assert_eq!(approved.code, 0, "{}", approved.stderr);
    settled(&b, &store, &dir, &third, "completed");
    let events = json(&through(&b, &store, &dir, &["events", &third, "--format", "json"]).stdout);
    let events = events.as_array().expect("events");
    let seqs: Vec<u64> = events.iter().filter_map(|e| e["seq"].as_u64()).collect();
    assert_eq!(seqs, (1..=seqs.len() as u64).collect::<Vec<_>>(), "no gap, no repeat");
    let slow_started: Vec<&serde_json::Value> =
        events.iter().filter(|e| e["type"] == "step_started" && e["path"] == "slow").collect();
    let succeeded = events.iter().filter(|e| e["type"] == "step_succeeded" && e["path"] == "slow").count();
    assert_eq!(succeeded, 1, "the step succeeded once");
    assert!(slow_started.iter().all(|e| e["attempt"] == 1), "the same attempt: {slow_started:?}");

    settled(&b, &store, &dir, &timed, "completed");
    let events = json(&through(&b, &store, &dir, &["events", &timed, "--format", "json"]).stdout);
    let decided: Vec<&serde_json::Value> =
        events.as_array().expect("events").iter().filter(|e| e["type"] == "gate_decided").collect();
    assert_eq!(decided.len(), 1, "{decided:?}");
    assert_eq!(decided[0]["timed_out"], true);
}

/// A gate that approves itself 3 s after it opens.
const TIMED: &str = "cairn: 1\nid: timed\nsteps:\n  - id: go\n    approval: { message: Go?, timeout: 3s, on_timeout: approve }\n  - id: after\n    set: done\n";

#[test]
fn runs_move_from_the_data_directory_to_postgres_and_go_on_there() {
    if skip_when_served("the store is a database, not a data directory a server holds") {
        return;
    }
    let store = fresh_store("moved");
    let dir = scratch("postgres_moved");
    let data = dir.join("data");
    let data = data.to_str().expect("a path");
    let gate = "cairn: 1\nid: gate\nsteps:\n  - id: sign\n    approval: { message: Sign? }\n  - id: after\n    set: done\n";
    std::fs::write(dir.join("gate.yaml"), gate).expect("writes");
    let local = |args: &[&str]| cairn_env(&dir, args, &[("CAIRN_DATA_DIR", data)]);
    let ran = local(&["run", "gate.yaml", "--format", "json"]);
    assert_eq!(ran.code, 3, "{}", ran.stderr);
    let run = json(&ran.stdout)["run_id"].as_str().expect("an id").to_owned();
    let exported = local(&["export", "--all"]);
    std::fs::write(dir.join("runs.jsonl"), &exported.stdout).expect("writes");

    let imported = on(&store, &dir, &["import", "runs.jsonl"]);
    assert_eq!(imported.stdout, format!("added {run} (5 events)\n"), "{}", imported.stderr);
    let events = |run: Run| json(&run.stdout);
    assert_eq!(
        events(on(&store, &dir, &["events", &run, "--format", "json"])),
        events(local(&["events", &run, "--format", "json"])),
        "the same log in the database"
    );
    let approved = on(&store, &dir, &["approve", &run, "--by", "alice"]);
    assert_eq!(approved.code, 0, "{}", approved.stderr);
    let status = json(&on(&store, &dir, &["status", &run, "--format", "json"]).stdout);
    assert_eq!(status["status"], "completed");
}
