//! Steering runs from separate processes, as a user would: pause, resume,
//! cancel, Ctrl-C, fork, status and events; and the refusals. The tests wait
//! for the run's own progress lines, never for a guessed time.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Stdio};
use std::sync::mpsc::{Receiver, channel};
use std::time::Duration;

use crate::support::{cairn_command, cairn_env, fresh_data_dir, redact_times, scratch};

pub(crate) const CHAIN: &str = "cairn: 1\nid: chain\nagents:\n  w: { system: hi }\nsteps:\n  - id: a\n    agent: w\n    prompt: one\n  - id: b\n    agent: w\n    prompt: two\n  - id: c\n    agent: w\n    prompt: three\n";

/// A `cairn run` in the background, with its progress lines as they come.
pub(crate) struct Driver {
    pub(crate) child: Child,
    lines: Receiver<String>,
}

impl Driver {
    fn start(dir: &Path, data: &Path, run_id: &str) -> Self {
        Self::start_with(dir, data, run_id, "400ms")
    }

    pub(crate) fn start_with(dir: &Path, data: &Path, run_id: &str, latency: &str) -> Self {
        let mut child = cairn_command(dir, data, &["--llm", "mock", "run", "wf.yaml", "--run-id", run_id])
            .env("CAIRN_MOCK_LATENCY", latency)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn");
        let stderr = child.stderr.take().expect("stderr");
        let (tx, lines) = channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        Self { child, lines }
    }

    /// Blocks until the run prints a line containing `text`.
    pub(crate) fn wait_for(&self, text: &str) {
        loop {
            let line = self.lines.recv_timeout(Duration::from_secs(30)).expect("the run went quiet");
            if line.contains(text) {
                return;
            }
        }
    }

    pub(crate) fn exit_code(mut self) -> i32 {
        self.child.wait().expect("wait").code().unwrap_or(-1)
    }
}

pub(crate) fn setup(name: &str) -> (std::path::PathBuf, std::path::PathBuf) {
    let dir = scratch(name);
    std::fs::write(dir.join("wf.yaml"), CHAIN).expect("write");
    (dir, fresh_data_dir())
}

pub(crate) fn cairn_at(dir: &Path, data: &Path, args: &[&str]) -> (i32, String, String) {
    let r = cairn_env(dir, args, &[("CAIRN_DATA_DIR", data.to_str().expect("utf-8 path"))]);
    (r.code, r.stdout, r.stderr)
}

/// ISO times and hashes vary per run; everything else in the log must not.
fn redact_log(text: &str) -> String {
    let mut out = String::new();
    for line in text.lines() {
        let mut words: Vec<String> = line.split(' ').map(str::to_owned).collect();
        for w in &mut words {
            if w.len() == 24 && w.ends_with('Z') && w.as_bytes().get(10) == Some(&b'T') {
                *w = "<time>".into();
            }
            if let Some(hash) = w.strip_prefix("definition=") {
                *w = format!("definition=<{} hex>", hash.len());
            }
        }
        out.push_str(&words.join(" "));
        out.push('\n');
    }
    out
}

#[test]
fn pause_from_another_process_then_resume() {
    if crate::support::skip_when_served("where a pause lands depends on the process that drives the run") {
        return;
    }
    let (dir, data) = setup("steer_pause");
    // Steps take 2 s: the pause arrives while `b` runs, however slow the machine.
    let driver = Driver::start_with(&dir, &data, "p1", "2s");
    driver.wait_for("▸ b");
    let (code, stdout, stderr) = cairn_at(&dir, &data, &["pause", "p1"]);
    assert_eq!(code, 5, "{stdout}{stderr}");
    assert!(stderr.contains("asked cairn run (pid"), "{stderr}");
    assert_eq!(driver.exit_code(), 5);
    let (code, status, _) = cairn_at(&dir, &data, &["status", "p1"]);
    assert_eq!(code, 0);
    insta::assert_snapshot!("paused_status", redact_times(&status));
    let (code, _, _) = cairn_at(&dir, &data, &["--llm", "mock", "resume", "p1"]);
    assert_eq!(code, 0);
    let (_, events, _) = cairn_at(&dir, &data, &["events", "p1"]);
    insta::assert_snapshot!("paused_then_resumed_events", redact_log(&events));
}

#[test]
fn ctrl_c_pauses_the_run() {
    let (dir, data) = setup("steer_ctrl_c");
    let driver = Driver::start(&dir, &data, "i1");
    driver.wait_for("▸ a");
    let pid = nix::unistd::Pid::from_raw(driver.child.id() as i32);
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGINT).expect("SIGINT");
    assert_eq!(driver.exit_code(), 5);
    let (_, json, _) = cairn_at(&dir, &data, &["status", "i1", "--format", "json"]);
    let run: serde_json::Value = serde_json::from_str(&json).expect("json");
    assert_eq!(run["status"], "paused");
    assert_eq!(run["steps"][0]["status"], "succeeded", "the running step finished before the pause");
}

#[test]
fn cancel_from_another_process() {
    let (dir, data) = setup("steer_cancel");
    let driver = Driver::start_with(&dir, &data, "c1", "5s");
    driver.wait_for("▸ a");
    let (code, _, _) = cairn_at(&dir, &data, &["cancel", "c1"]);
    assert_eq!(code, 4);
    assert_eq!(driver.exit_code(), 4);
    let (_, events, _) = cairn_at(&dir, &data, &["events", "c1"]);
    insta::assert_snapshot!(redact_log(&events));
    let (code, _, stderr) = cairn_at(&dir, &data, &["--llm", "mock", "resume", "c1"]);
    assert_eq!(code, 2);
    assert!(stderr.contains("run `c1`: it has ended (cancelled)"), "{stderr}");
}

#[test]
fn fork_from_a_checkpoint_reruns_only_what_came_after() {
    let (dir, data) = setup("steer_fork");
    let (code, _, _) = cairn_at(&dir, &data, &["--llm", "mock", "run", "wf.yaml", "--run-id", "src"]);
    assert_eq!(code, 0);
    let (_, list, _) = cairn_at(&dir, &data, &["checkpoints", "src", "--format", "json"]);
    let checkpoints: serde_json::Value = serde_json::from_str(&list).expect("json");
    let labels: Vec<&str> =
        checkpoints.as_array().expect("array").iter().filter_map(|c| c["label"].as_str()).collect();
    assert_eq!(labels, ["after a (succeeded)", "after b (succeeded)", "after c (succeeded)"]);
    let after_a = checkpoints[0]["seq"].as_u64().expect("seq").to_string();
    let (code, forked, _) = cairn_at(&dir, &data, &["fork", "src", "--checkpoint", &after_a]);
    assert_eq!(code, 0);
    let forked = forked.trim().to_owned();
    let (_, json, _) = cairn_at(&dir, &data, &["status", &forked, "--format", "json"]);
    let run: serde_json::Value = serde_json::from_str(&json).expect("json");
    assert_eq!(run["status"], "paused");
    assert_eq!(run["steps"][0]["status"], "succeeded");
    assert_eq!(run["steps"][1]["status"], "pending");
    let (code, _, stderr) = cairn_at(&dir, &data, &["--llm", "mock", "resume", &forked]);
    assert_eq!(code, 0);
    assert!(!stderr.contains("▸ a") && stderr.contains("▸ b") && stderr.contains("▸ c"), "{stderr}");
    let (_, runs, _) = cairn_at(&dir, &data, &["runs", "--format", "json"]);
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&runs).expect("json").as_array().map(Vec::len),
        Some(2)
    );
}

#[test]
fn steering_refusals_are_clear_usage_errors() {
    let (dir, data) = setup("steer_refusals");
    let (code, _, _) = cairn_at(&dir, &data, &["--llm", "mock", "run", "wf.yaml", "--run-id", "done"]);
    assert_eq!(code, 0);
    let cases: [(&[&str], &str); 4] = [
        (&["status", "nope"], "error: no run `nope` in this data directory\n"),
        (
            &["--llm", "mock", "resume", "done"],
            "error: cannot resume run `done`: it has ended (completed)\nhint: `cairn status done` shows how it ended; to run it again, fork it from one of its checkpoints (`cairn checkpoints done`)\n",
        ),
        (
            &["fork", "done", "--checkpoint", "999"],
            "error: cannot fork run `done`: it has no checkpoint 999 (the last is 14)\nhint: `cairn checkpoints done` lists them\n",
        ),
        (&["pause", "done"], ""),
    ];
    for (args, expected) in cases {
        let (code, _, stderr) = cairn_at(&dir, &data, args);
        assert_eq!(code, 2, "{args:?}: {stderr}");
        if !expected.is_empty() {
            assert_eq!(stderr, expected, "{args:?}");
        }
    }
    let foreign = scratch("steer_foreign");
    std::fs::write(foreign.join("notes.txt"), "mine").expect("write");
    let (code, _, stderr) = cairn_at(&dir, &foreign, &["runs"]);
    assert_eq!(code, 2);
    assert!(stderr.contains("is not a cairn data directory"), "{stderr}");
}

#[test]
fn a_held_store_is_refused_naming_the_holder() {
    let (dir, data) = setup("steer_held");
    let mut driver = Driver::start_with(&dir, &data, "h1", "60s");
    driver.wait_for("▸ a");
    let asked = std::time::Instant::now();
    let (code, _, stderr) = cairn_at(&dir, &data, &["runs"]);
    assert_eq!(code, 2);
    assert!(
        stderr.contains("is in use by another process: cairn run (pid") && stderr.contains("run h1)"),
        "{stderr}"
    );
    // It waited for the store before it gave up (3 s), rather than at once.
    assert!(asked.elapsed() >= Duration::from_millis(2500), "gave up after {:?}", asked.elapsed());

    // A verb that finds the store held waits for it: started while the
    // driver holds it, it is still waiting when the driver lets go, and
    // then it lists the run.
    let mut waiter = cairn_command(&dir, &data, &["runs", "--format", "json"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    std::thread::sleep(Duration::from_millis(700));
    assert!(waiter.try_wait().expect("poll").is_none(), "`runs` ended while the store was held");
    assert!(driver.child.try_wait().expect("poll").is_none(), "the driver still holds the store");
    driver.child.kill().expect("stop the driver");
    let _ = driver.child.wait();
    let out = waiter.wait_with_output().expect("the waiter ends");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(crate::support::run_ids(&stdout), ["h1"]);
}

#[test]
fn a_run_id_that_exists_is_refused_and_prune_deletes_ended_runs() {
    let (dir, data) = setup("steer_prune");
    let (code, _, _) = cairn_at(&dir, &data, &["--llm", "mock", "run", "wf.yaml", "--run-id", "once"]);
    assert_eq!(code, 0);
    let (code, _, stderr) = cairn_at(&dir, &data, &["--llm", "mock", "run", "wf.yaml", "--run-id", "once"]);
    assert_eq!((code, stderr.as_str()), (2, "error: a run `once` exists already: pick another --run-id\n"));
    let (code, stdout, _) = cairn_at(&dir, &data, &["prune", "--older-than", "1d"]);
    assert_eq!((code, stdout.as_str()), (0, "pruned 0 run(s) that ended more than 1d ago\n"));
    std::thread::sleep(Duration::from_millis(5));
    let (code, stdout, _) = cairn_at(&dir, &data, &["prune", "--older-than", "1ms"]);
    assert_eq!((code, stdout.as_str()), (0, "pruned 1 run(s) that ended more than 1ms ago\n"));
    let (_, runs, _) = cairn_at(&dir, &data, &["runs", "--format", "json"]);
    assert_eq!(runs.trim(), "[]");
    let (code, _, stderr) = cairn_at(&dir, &data, &["prune", "--older-than", "soon"]);
    assert_eq!(code, 2);
    assert!(stderr.contains("--older-than: `soon` is not a duration"), "{stderr}");
}

#[test]
fn runs_pages_with_limit_and_cursor_and_refuses_an_unknown_status() {
    let (dir, data) = setup("steer_pages");
    for id in ["p1", "p2", "p3"] {
        let (code, _, stderr) = cairn_at(&dir, &data, &["--llm", "mock", "run", "wf.yaml", "--run-id", id]);
        assert_eq!(code, 0, "{stderr}");
    }
    let ids = |json: &str| -> Vec<String> {
        let runs: serde_json::Value = serde_json::from_str(json).expect("a JSON array");
        runs.as_array().expect("array").iter().map(|r| r["run_id"].as_str().expect("id").to_owned()).collect()
    };
    let (code, first, stderr) = cairn_at(&dir, &data, &["runs", "--limit", "2", "--format", "json"]);
    assert_eq!(code, 0);
    assert_eq!(ids(&first), ["p3", "p2"], "newest first");
    let cursor = stderr.strip_prefix("more: cairn runs --cursor ").expect("the next page's cursor").trim();
    let (_, rest, stderr) =
        cairn_at(&dir, &data, &["runs", "--limit", "2", "--cursor", cursor, "--format", "json"]);
    assert_eq!(
        (ids(&rest), stderr.as_str()),
        (vec!["p1".to_owned()], ""),
        "the last page, and no cursor after it"
    );
    let (code, _, stderr) = cairn_at(&dir, &data, &["runs", "--status", "bogus"]);
    assert_eq!((code, stderr.as_str()), (2, "error: --status `bogus` is not a run status\n"));
    let (code, _, stderr) = cairn_at(&dir, &data, &["runs", "--cursor", "nonsense"]);
    assert_eq!(code, 2);
    assert!(stderr.starts_with("error: --cursor `nonsense`"), "{stderr}");
}

#[test]
fn a_reader_that_goes_away_ends_every_printing_verb_quietly() {
    let dir = scratch("steer_pipe");
    std::fs::write(dir.join("fan.yaml"), "cairn: 1\nid: fan\nsteps:\n  - id: items\n    set: \"{{ range(1500) | list }}\"\n  - id: each\n    for_each: { items: \"{{ steps.items.output }}\", as: n }\n    steps:\n      - id: twice\n        set: \"{{ n * 2 }}\"\n").expect("write");
    let data = fresh_data_dir();
    let (code, _, stderr) = cairn_at(&dir, &data, &["run", "fan.yaml", "--run-id", "fan"]);
    assert_eq!(code, 0, "{stderr}");
    // Each output is larger than a pipe holds, so the writer meets the
    // closed pipe whenever the reader goes.
    for args in
        [&["events", "fan"][..], &["status", "fan", "--format", "json"], &["checkpoints", "fan"], &["runs"]]
    {
        let mut child = cairn_command(&dir, &data, args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn");
        drop(child.stdout.take());
        let out = child.wait_with_output().expect("wait");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(0), "{args:?}: {stderr}");
        assert!(!stderr.contains("panicked"), "{args:?}: {stderr}");
    }
}
