//! `cairn cancel` from another process stops a running command step with
//! its whole process group: the test first sees the group's processes
//! running (they write their pids), then sees none of them survive.

use std::process::Stdio;
use std::time::{Duration, Instant};

use crate::support::{cairn_command, cairn_env, fresh_data_dir, json, scratch};

/// A command step whose shell starts a sleeping child, writes both pids,
/// and waits.
const SLEEPER: &str = "cairn: 1\nid: sleeper\nsteps:\n  - id: nap\n    command: [sh, -c, \"sleep 31337 & echo $$ $! > pids.tmp; mv pids.tmp pids; wait\"]\n  - id: after\n    set: never\n";

/// Whether `pid` is a live process (a zombie is not: it has ended and
/// waits only to be reaped).
fn alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => stat.rsplit_once(") ").is_some_and(|(_, rest)| !rest.starts_with('Z')),
        Err(_) => false,
    }
}

#[test]
fn cancel_stops_a_running_command_and_every_process_it_started() {
    let dir = scratch("verbs_cancel");
    std::fs::write(dir.join("wf.yaml"), SLEEPER).expect("write");
    std::fs::write(dir.join("cairn.toml"), "[commands]\nallow = [\"sh\"]\n").expect("write");
    let data = fresh_data_dir();
    let data_text = data.to_str().expect("utf-8").to_owned();
    let mut driver = cairn_command(&dir, &data, &["run", "wf.yaml", "--run-id", "nap1", "--non-interactive"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("cairn starts");

    // The group started: both of its processes wrote their pids and run.
    let deadline = Instant::now() + Duration::from_secs(30);
    let pids: Vec<u32> = loop {
        if let Ok(text) = std::fs::read_to_string(dir.join("pids")) {
            break text.split_whitespace().map(|p| p.parse().expect("a pid")).collect();
        }
        assert!(driver.try_wait().expect("poll").is_none(), "the run ended before its command started");
        assert!(Instant::now() < deadline, "the command never started");
        std::thread::sleep(Duration::from_millis(20));
    };
    assert_eq!(pids.len(), 2, "{pids:?}");
    assert!(pids.iter().all(|&p| alive(p)), "the shell and its sleep run: {pids:?}");

    let cancel = cairn_env(&dir, &["cancel", "nap1"], &[("CAIRN_DATA_DIR", &data_text)]);
    assert_eq!(cancel.code, 4, "{}", cancel.stderr);
    let out = driver.wait_with_output().expect("the driver ends");
    assert_eq!(out.status.code(), Some(4), "{}", String::from_utf8_lossy(&out.stderr));

    let deadline = Instant::now() + Duration::from_secs(5);
    while pids.iter().any(|&p| alive(p)) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    let survivors: Vec<u32> = pids.iter().copied().filter(|&p| alive(p)).collect();
    assert!(survivors.is_empty(), "outlived the cancel: {survivors:?}");

    let status = cairn_env(&dir, &["status", "nap1", "--format", "json"], &[("CAIRN_DATA_DIR", &data_text)]);
    let run = json(&status.stdout);
    assert_eq!(run["status"], "cancelled");
    assert_eq!(run["steps"][0]["status"], "cancelled", "{run}");
    assert_eq!(run["steps"][1]["attempts"], 0, "nothing after the cancelled step started: {run}");
}
