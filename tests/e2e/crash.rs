//! The crash test: the real `cairn run` against a loopback LLM server,
//! killed with SIGKILL at seeded random moments and resumed, until each run
//! completes. Then the invariants of the durability contract are checked
//! against the event log and the server's call log:
//!
//! - every step succeeded exactly once in the final log;
//! - no step was called after its success was recorded (nothing finished
//!   runs again);
//! - each crash re-executed at most the steps that were in flight;
//! - every call of a step carried the same idempotency key.
//!
//! `CAIRN_CRASH_KILLS` sets how many kills must land (default 50, at most 3
//! per run); `cargo xtask crash --kills N` runs more.

use std::collections::BTreeMap;
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::support::{LlmServer, cairn_bin, scratch};

/// a -> (b, c) -> d -> e -> f: a chain with two steps in flight at once.
const WORKFLOW: &str = r#"cairn: 1
id: crashy
agents:
  w: { system: Be brief. }
defaults:
  retry: { max_attempts: 1 }
steps:
  - id: a
    agent: w
    prompt: start
  - id: b
    needs: [a]
    agent: w
    prompt: "left of {{ steps.a.output }}"
  - id: c
    needs: [a]
    agent: w
    prompt: "right of {{ steps.a.output }}"
  - id: d
    needs: [b, c]
    agent: w
    prompt: join
  - id: e
    agent: w
    prompt: "after {{ steps.d.output }}"
  - id: f
    agent: w
    prompt: end
"#;

const STEPS: [&str; 6] = ["a", "b", "c", "d", "e", "f"];

/// A fan-out: four instances, two at a time, each a chain of two LLM
/// steps, then a step that reads the collected outputs.
const FAN_OUT: &str = r#"cairn: 1
id: fanout
agents:
  w: { system: Be brief. }
defaults:
  retry: { max_attempts: 1 }
steps:
  - id: items
    set: [e1, e2, e3, e4]
  - id: per
    for_each:
      items: "{{ steps.items.output }}"
      as: epic
      max_parallel: 2
    steps:
      - id: write
        agent: w
        prompt: "write {{ epic }}"
        produces: draft
      - id: check
        agent: w
        prompt: "check {{ docs.draft }}"
  - id: join
    agent: w
    prompt: "join {{ docs.draft | length }} drafts"
"#;

/// One workflow the crash test kills: its LLM steps, and how many of them
/// can be in flight at once (the most a kill can make run again).
struct Scenario {
    workflow: &'static str,
    llm_steps: Vec<String>,
    width: usize,
}

/// A small deterministic generator (xorshift), so every CI run kills at the same moments.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }
}

fn cairn(dir: &std::path::Path, data: &std::path::Path, url: &str, args: &[&str]) -> Command {
    let mut c = Command::new(cairn_bin());
    c.args(args)
        .current_dir(dir)
        .env("CAIRN_DATA_DIR", data)
        .env("CAIRN_LLM_BASE_URL", url)
        .env("CAIRN_LLM_MODEL", "fake")
        .env_remove("CAIRN_CONFIG")
        .env_remove("CAIRN_LLM_API_KEY")
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    c
}

fn kills() -> usize {
    std::env::var("CAIRN_CRASH_KILLS").ok().and_then(|v| v.parse().ok()).unwrap_or(40)
}

#[test]
fn killed_runs_resume_and_finish_every_step_exactly_once() {
    let steps = STEPS.iter().map(|s| (*s).to_owned()).collect();
    crash_test("crash", Scenario { workflow: WORKFLOW, llm_steps: steps, width: 2 }, kills());
}

#[test]
fn killed_fan_outs_resume_only_unfinished_instances() {
    let mut steps: Vec<String> =
        (0..4).flat_map(|i| [format!("per[{i}].write"), format!("per[{i}].check")]).collect();
    steps.push("join".into());
    crash_test("crash-fan", Scenario { workflow: FAN_OUT, llm_steps: steps, width: 2 }, kills());
}

fn crash_test(name: &str, scenario: Scenario, target: usize) {
    let server = LlmServer::start(Duration::from_millis(150));
    let dir = scratch(name);
    std::fs::write(dir.join("wf.yaml"), scenario.workflow).expect("write");
    let mut rng = Rng(0x5eed_cafe_f00d_d00d);
    let mut kill_points = 0;
    let mut n = 0;
    while kill_points < target {
        assert!(n < target, "kills keep missing: {kill_points} landed in {n} runs");
        n += 1;
        let id = format!("crash-{n}");
        let data = dir.join(format!("data-{n}"));
        let mut kills = 0;
        let mut created = false;
        loop {
            let args: Vec<&str> =
                if created { vec!["resume", &id] } else { vec!["run", "wf.yaml", "--run-id", &id] };
            let mut command = cairn(&dir, &data, &server.url, &args);
            if kills >= 3 {
                command.stderr(Stdio::piped());
            }
            let mut child = command.spawn().expect("spawn cairn");
            if kills < 3 {
                std::thread::sleep(Duration::from_millis(rng.below(450)));
                let finished = child.try_wait().expect("poll").is_some();
                if !finished {
                    child.kill().expect("SIGKILL");
                    kill_points += 1;
                    kills += 1;
                }
                let status = child.wait().expect("reap");
                created = cairn(&dir, &data, &server.url, &["status", &id]).status().expect("status").code()
                    != Some(2);
                if finished && status.code() == Some(0) {
                    break;
                }
                continue;
            }
            let out = child.wait_with_output().expect("wait");
            let why = String::from_utf8_lossy(&out.stderr);
            assert_eq!(out.status.code(), Some(0), "run {id} did not complete after {kills} kills: {why}");
            break;
        }
        check(&scenario, &dir, &data, &server, &id, kills);
    }
    eprintln!("{name}: {kill_points} kills landed over {n} runs, every invariant held");
}

/// The invariants of one run.
fn check(
    scenario: &Scenario,
    dir: &std::path::Path,
    data: &std::path::Path,
    server: &LlmServer,
    id: &str,
    kills: usize,
) {
    let out = cairn(dir, data, &server.url, &["events", id, "--format", "jsonl"])
        .stdout(Stdio::piped())
        .output()
        .expect("events");
    let events: Vec<serde_json::Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).expect("jsonl"))
        .collect();
    assert_eq!(events.last().and_then(|e| e["type"].as_str()), Some("run_completed"), "{id}");
    let mut succeeded_at: BTreeMap<String, u64> = BTreeMap::new();
    for e in events.iter().filter(|e| e["type"] == "step_succeeded") {
        let path = e["path"].as_str().expect("path").to_owned();
        assert!(
            succeeded_at.insert(path.clone(), millis(&e["at"])).is_none(),
            "{id}: {path} succeeded twice"
        );
    }
    for step in &scenario.llm_steps {
        assert!(succeeded_at.contains_key(step), "{id}: {step} never succeeded: {succeeded_at:?}");
    }
    let mut extra = 0;
    for step in &scenario.llm_steps {
        let prefix = format!("{id}/{step}/");
        let calls: Vec<_> = server.calls().into_iter().filter(|c| c.key.starts_with(&prefix)).collect();
        assert!(!calls.is_empty(), "{id}: {step} never called");
        assert!(
            calls.iter().all(|c| c.key == calls[0].key),
            "{id}: {step} called with different keys: {calls:?}"
        );
        let done = succeeded_at[step.as_str()];
        assert!(calls.iter().all(|c| c.at_ms <= done), "{id}: {step} was called again after it succeeded");
        assert!(calls.len() <= 1 + kills, "{id}: {step} ran {} times with {kills} kills", calls.len());
        extra += calls.len() - 1;
    }
    assert!(extra <= kills * scenario.width, "{id}: {extra} re-executions for {kills} kills");
}

/// An event's RFC 3339 time as milliseconds since the epoch.
fn millis(at: &serde_json::Value) -> u64 {
    let text = at.as_str().expect("an RFC 3339 time");
    let t = humantime::parse_rfc3339(text).expect("RFC 3339");
    let since = t.duration_since(std::time::UNIX_EPOCH).expect("after the epoch");
    u64::try_from(since.as_millis()).expect("fits")
}
