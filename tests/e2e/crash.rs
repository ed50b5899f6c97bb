//! The crash test: the real `cairn` against a loopback server that answers
//! its model calls and the calls its command steps make, killed with SIGKILL
//! while calls are in flight and resumed, until each run completes.
//!
//! How a kill lands: before each `cairn` process the harness names one call
//! (an idempotency key, `run/step/attempt`). The server holds that call and
//! every later one unanswered and reports it; the harness then kills the
//! process, and the server drops what it held. So every kill lands with a
//! call in flight, and the server knows which calls were: every call of the
//! process it had not answered. A process that ends before the named call
//! was not killed, and nothing counts it. The test fails unless exactly
//! `CAIRN_CRASH_KILLS` kills landed in each scenario (0 is refused: it would
//! prove nothing).
//!
//! The first kill of each run names a call no kill has named yet, so once
//! a scenario has had as many runs as it has calls, every call of it has
//! been killed in flight (asserted); a run's later kills name a random call
//! not yet finished, one never named if there is one. A run is killed at
//! most three times, then driven to its end (`run`, `approve` at its gate,
//! `resume` after a kill).
//!
//! After each kill the harness reads the run's log (`events --format
//! jsonl`) and notes the calls *owed*: made, and with no outcome recorded. Then:
//!
//! - the calls in flight at a kill are owed (nothing unanswered is recorded
//!   as done);
//! - the next process makes again only owed calls (nothing finished runs
//!   again), and if it runs to its own end it makes every owed call again:
//!   exactly the steps in flight re-ran, with the same idempotency key;
//! - an owed call a killed process did not reach is still owed at its kill;
//! - no process makes the same call twice;
//! - the run completes, having made exactly the calls of an unkilled run of
//!   the same workflow (a crash never adds an attempt), with the same steps
//!   succeeded as often.
//!
//! The scenarios: a chain with two steps in flight; a fan-out of four
//! instances two at a time; a workflow with commands, a retried step, a loop
//! and a `goto`; one that waits at an approval, whose `approve` process
//! is killed while the next steps' calls are in flight; and an agent's tool
//! loop, killed while a tool call (a `run_command` that asks the server) or
//! the model call after a round is in flight: a call whose result was
//! recorded never runs again, the one in flight runs again with its key.
//!
//! The server mode kills `cairn serve` itself, the same way: each process
//! of a run is a new server over the run's data directory. The first
//! starts the run through it from a second shell (`run --detach`), a later
//! one finds it left `running` by the killed server and drives it on at
//! start (the `resume` of this mode), and one started at the run's gate
//! records the approval from a second shell (`approve --detach`) and drives
//! the run on. The harness watches the run (`runs` through the server);
//! once the named call is held it SIGKILLs the server, which gets no chance
//! to close anything, and reads the log with no server holding the store.
//! A server whose run completes or waits at its gate is stopped with
//! SIGTERM: that process ended on its own. The same invariants hold with
//! "process" meaning one server's life, and the same count of kills. Every
//! verb through a server must succeed, reading the run back while the
//! server drives it included.
//!
//! `CAIRN_CRASH_KILLS` sets how many kills land per scenario and mode
//! (default 20 killing `cairn run` and its verbs, 8 killing `cairn serve`,
//! whose processes are slower to start; at most 3 per run); `cargo xtask
//! crash --kills N` runs more.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use crate::support::{cairn_command, scratch};

/// a -> (b, c) -> d -> e -> f: a chain with two steps in flight at once.
const CHAIN: &str = r#"cairn: 1
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

/// Commands, retries, a loop and a goto: `flaky`'s first attempt gets a
/// 500 and is retried after a jittered delay; the command `probe` runs
/// beside it; `refine` loops twice over a model call and a command; the
/// command `test` fails its first attempt, which sends the run back to
/// `build`. `@CALL@` is the command that asks the server.
const MIXED: &str = r#"cairn: 1
id: mixed
agents:
  w: { system: Be brief. }
defaults:
  retry: { max_attempts: 1 }
steps:
  - id: plan
    agent: w
    prompt: plan
  - id: flaky
    needs: [plan]
    agent: w
    prompt: "flaky after {{ steps.plan.output }}"
    retry: { max_attempts: 3, delay: 30ms, max_delay: 60ms, jitter: true, on: [transient] }
  - id: probe
    needs: [plan]
    command: @CALL@
  - id: refine
    needs: [flaky, probe]
    loop:
      max_iters: 3
      until: "{{ loop.index >= 1 }}"
    steps:
      - id: draft
        agent: w
        prompt: "draft {{ loop.index }}"
      - id: lint
        command: @CALL@
  - id: build
    agent: w
    prompt: build
  - id: test
    command: @CALL@
    on_failure: { goto: build, max: 1, then: stop }
  - id: report
    agent: w
    prompt: "report on {{ steps.test.output.stdout }}"
"#;

/// A run that waits at an approval; `approve` drives it on to a model call
/// and a command in flight together, then one more call.
const GATE: &str = r#"cairn: 1
id: gated
agents:
  w: { system: Be brief. }
defaults:
  retry: { max_attempts: 1 }
steps:
  - id: draft
    agent: w
    prompt: draft
  - id: review
    approval:
      message: "Ship {{ steps.draft.output }}?"
  - id: ship
    agent: w
    prompt: ship
  - id: notify
    needs: [review]
    command: @CALL@
  - id: wrap
    needs: [ship, notify]
    agent: w
    prompt: wrap
"#;

/// An agent with a tool loop: `fix`'s model asks for two `run_command`
/// calls (each asks the server, as a command step does), then one more,
/// then answers; `check` reads its answer. The server answers a request
/// that offers tools by its round (the key's `rN`), so every process asks
/// the same.
const TOOLS: &str = r#"cairn: 1
id: tooled
agents:
  w: { system: Be brief., tools: [run_command] }
  plain: { system: Be brief. }
defaults:
  retry: { max_attempts: 1 }
steps:
  - id: fix
    agent: w
    prompt: fix
  - id: check
    needs: [fix]
    agent: plain
    prompt: "check {{ steps.fix.output }}"
"#;

/// What a command step runs: it asks the server over TCP (bash's
/// `/dev/tcp`, the port is `$0`), giving its idempotency key and its parent
/// (the `cairn` process, so the server can tell which process asked), then
/// prints the answer and exits with the code the server sent.
const CALL_SCRIPT: &str = r#"exec 3<>"/dev/tcp/127.0.0.1/$0" || exit 97
printf 'CMD %s %s\n' "$CAIRN_IDEMPOTENCY_KEY" "$PPID" >&3
read -r code text <&3 || exit 98
printf '%s\n' "$text"
exit "$code""#;

/// A call: a step's path and attempt (its key without the run id); a call
/// of an agent's tool loop (a model call after a round, `path/attempt/rR`,
/// or a tool's, `path/attempt/rR/N`) is its whole key with attempt 0.
type Call = (String, u32);

/// The call a key names, without its run id.
fn call_of(rest: &str) -> Option<Call> {
    match rest.split_once('/') {
        Some((path, attempt)) if !attempt.contains('/') => Some((path.to_owned(), attempt.parse().ok()?)),
        Some(_) => Some((rest.to_owned(), 0)),
        None => None,
    }
}

/// The idempotency key of `call` in run `run`.
fn key_of(run: &str, (path, attempt): &Call) -> String {
    if path.contains('/') { format!("{run}/{path}") } else { format!("{run}/{path}/{attempt}") }
}

/// One workflow the crash test kills.
struct Scenario {
    name: &'static str,
    workflow: &'static str,
    /// Every call an unkilled run makes, in the order the kills name them.
    calls: &'static [(&'static str, u32)],
    /// The calls the server fails: a model call with a 500, a command with exit 1.
    faults: &'static [(&'static str, u32)],
}

const CHAIN_CALLS: &[(&str, u32)] = &[("a", 1), ("b", 1), ("c", 1), ("d", 1), ("e", 1), ("f", 1)];

const FAN_OUT_CALLS: &[(&str, u32)] = &[
    ("per[0].write", 1),
    ("per[1].write", 1),
    ("per[0].check", 1),
    ("per[1].check", 1),
    ("per[2].write", 1),
    ("per[3].write", 1),
    ("per[2].check", 1),
    ("per[3].check", 1),
    ("join", 1),
];

const MIXED_CALLS: &[(&str, u32)] = &[
    ("plan", 1),
    ("flaky", 1),
    ("probe", 1),
    ("flaky", 2),
    ("refine[0].draft", 1),
    ("refine[0].lint", 1),
    ("refine[1].draft", 1),
    ("refine[1].lint", 1),
    ("build", 1),
    ("test", 1),
    ("build", 2),
    ("test", 2),
    ("report", 1),
];

const GATE_CALLS: &[(&str, u32)] = &[("draft", 1), ("ship", 1), ("notify", 1), ("wrap", 1)];

const TOOLS_CALLS: &[(&str, u32)] = &[
    ("fix", 1),
    ("fix/1/r1/0", 0),
    ("fix/1/r1/1", 0),
    ("fix/1/r1", 0),
    ("fix/1/r2/0", 0),
    ("fix/1/r2", 0),
    ("check", 1),
];

const CHAIN_SCENARIO: Scenario = Scenario { name: "crash", workflow: CHAIN, calls: CHAIN_CALLS, faults: &[] };

const FAN_OUT_SCENARIO: Scenario =
    Scenario { name: "crash-fan", workflow: FAN_OUT, calls: FAN_OUT_CALLS, faults: &[] };

const MIXED_SCENARIO: Scenario = Scenario {
    name: "crash-mixed",
    workflow: MIXED,
    calls: MIXED_CALLS,
    faults: &[("flaky", 1), ("test", 1)],
};

const GATE_SCENARIO: Scenario =
    Scenario { name: "crash-gate", workflow: GATE, calls: GATE_CALLS, faults: &[] };

const TOOLS_SCENARIO: Scenario =
    Scenario { name: "crash-tools", workflow: TOOLS, calls: TOOLS_CALLS, faults: &[] };

#[test]
fn killed_runs_resume_and_finish_every_step_exactly_once() {
    crash_test(&CHAIN_SCENARIO, Mode::Cli);
}

#[test]
fn killed_fan_outs_resume_only_unfinished_instances() {
    crash_test(&FAN_OUT_SCENARIO, Mode::Cli);
}

#[test]
fn killed_commands_retries_loops_and_gotos_resume_exactly_what_was_in_flight() {
    crash_test(&MIXED_SCENARIO, Mode::Cli);
}

#[test]
fn runs_killed_after_an_approval_resume_past_the_gate() {
    crash_test(&GATE_SCENARIO, Mode::Cli);
}

#[test]
fn killed_tool_loops_lose_no_returned_result_and_repeat_only_the_call_in_flight() {
    crash_test(&TOOLS_SCENARIO, Mode::Cli);
}

#[test]
fn killed_servers_resume_tool_loops_after_the_last_recorded_result() {
    crash_test(&TOOLS_SCENARIO, Mode::Served);
}

#[test]
fn killed_servers_resume_their_runs_and_finish_every_step_exactly_once() {
    crash_test(&CHAIN_SCENARIO, Mode::Served);
}

#[test]
fn killed_servers_resume_only_unfinished_fan_out_instances() {
    crash_test(&FAN_OUT_SCENARIO, Mode::Served);
}

#[test]
fn killed_servers_resume_commands_retries_loops_and_gotos_exactly_where_they_were() {
    crash_test(&MIXED_SCENARIO, Mode::Served);
}

#[test]
fn servers_killed_after_an_approval_through_them_resume_past_the_gate() {
    crash_test(&GATE_SCENARIO, Mode::Served);
}

/// A crash test asked for no kills fails: it would prove nothing.
#[test]
fn a_crash_test_asked_for_no_kills_fails() {
    let scenario = Scenario { name: "crash-none", workflow: CHAIN, calls: CHAIN_CALLS, faults: &[] };
    let result = std::panic::catch_unwind(|| crash_test_killing(&scenario, 0, Mode::Cli));
    let why = result.expect_err("a crash test with no kills passed");
    let why =
        why.downcast_ref::<String>().map(String::as_str).or_else(|| why.downcast_ref::<&str>().copied());
    assert!(why.is_some_and(|w| w.contains("asks for no kills")), "{why:?}");
}

/// Only a process killed with the named call in flight counts as killed:
/// one that never makes that call ends on its own and is reported so, and
/// one killed at it reports the call in flight.
#[test]
fn a_kill_lands_only_with_the_named_call_in_flight() {
    let server = Server::start(Duration::ZERO, &[]);
    let dir = scratch("crash-landing");
    std::fs::write(dir.join("set.yaml"), "cairn: 1\nid: quiet\nsteps:\n  - id: only\n    set: 1\n")
        .expect("write");
    std::fs::write(dir.join("ask.yaml"), CHAIN).expect("write");
    let data = dir.join("data");
    let quiet = server
        .drive(cairn(&dir, &data, &server.url, &["run", "set.yaml", "--run-id", "q"]), Some("q/only/1"));
    assert!(matches!(quiet, End::Exited { code: 0, .. }), "{quiet:?}");
    let asked =
        server.drive(cairn(&dir, &data, &server.url, &["run", "ask.yaml", "--run-id", "k"]), Some("k/a/1"));
    let End::Killed { calls } = asked else { panic!("not killed at the named call: {asked:?}") };
    assert_eq!(calls, vec![Made { key: "k/a/1".into(), answered: false, command: false }]);
}

/// The same for a server: one whose run never makes the named call is
/// stopped when the run completes, and reported as ended on its own; one
/// whose run makes it is killed with the call in flight; and the next
/// server, started over the same data directory, drives the run on at
/// start, making that call again, to the run's end.
#[test]
fn a_served_kill_lands_only_with_the_named_call_in_flight() {
    let server = Server::start(Duration::ZERO, &[]);
    let dir = scratch("crash-serve-landing");
    std::fs::write(dir.join("set.yaml"), "cairn: 1\nid: quiet\nsteps:\n  - id: only\n    set: 1\n")
        .expect("write");
    std::fs::write(dir.join("ask.yaml"), CHAIN).expect("write");
    let data = dir.join("data");
    let quiet =
        server.serve(&dir, &data, "q", &["run", "set.yaml", "--run-id", "q", "--detach"], Some("q/only/1"));
    assert!(matches!(quiet, End::Exited { code: 0, .. }), "{quiet:?}");
    let asked =
        server.serve(&dir, &data, "k", &["run", "ask.yaml", "--run-id", "k", "--detach"], Some("k/a/1"));
    let End::Killed { calls } = asked else { panic!("not killed at the named call: {asked:?}") };
    assert_eq!(calls, vec![Made { key: "k/a/1".into(), answered: false, command: false }]);
    let again = server.serve(&dir, &data, "k", &[], None);
    let End::Exited { code: 0, calls, .. } = again else { panic!("the run did not complete: {again:?}") };
    assert_eq!(
        calls.first(),
        Some(&Made { key: "k/a/1".into(), answered: true, command: false }),
        "{calls:?}"
    );
    assert_eq!(calls.len(), CHAIN_CALLS.len(), "{calls:?}");
}

/// The checks of the ledger have teeth: each rejects the history it exists
/// to catch.
#[test]
fn the_ledger_rejects_what_a_crash_must_not_do() {
    let call = |p: &str| (p.to_owned(), 1);
    let made = |p: &str, answered| Made { key: format!("r/{p}/1"), answered, command: false };
    let finished = |ps: &[&str]| ps.iter().map(|p| call(p)).collect::<BTreeSet<_>>();

    // A finished call made again after the kill.
    let mut ledger = Ledger::new("r");
    ledger.killed(&[made("a", true), made("b", false)], &finished(&["a"])).expect("a kill");
    let err = ledger.exited(&[made("a", true), made("b", true)]).expect_err("a finished call ran again");
    assert!(err.contains("not owed"), "{err}");

    // A call in flight at the kill that a process running to its end never made again.
    let mut ledger = Ledger::new("r");
    ledger.killed(&[made("a", true), made("b", false)], &finished(&["a"])).expect("a kill");
    let err = ledger.exited(&[made("c", true)]).expect_err("b never ran again");
    assert!(err.contains("never made again"), "{err}");

    // A call unanswered at the kill, yet recorded as finished.
    let mut ledger = Ledger::new("r");
    let err = ledger.killed(&[made("a", false)], &finished(&["a"])).expect_err("recorded without an answer");
    assert!(err.contains("in flight"), "{err}");

    // An owed call a killed process did not reach, finished by the next kill.
    let mut ledger = Ledger::new("r");
    ledger.killed(&[made("a", false)], &finished(&[])).expect("a kill");
    let err = ledger.killed(&[made("b", false)], &finished(&["a"])).expect_err("a finished without a call");
    assert!(err.contains("without being made again"), "{err}");

    // The same call twice in one process.
    let mut ledger = Ledger::new("r");
    let err = ledger.exited(&[made("a", true), made("a", true)]).expect_err("a twice");
    assert!(err.contains("twice"), "{err}");

    // What a correct run does passes.
    let mut ledger = Ledger::new("r");
    ledger.killed(&[made("a", true), made("b", false), made("c", true)], &finished(&["a"])).expect("a kill");
    ledger.exited(&[made("b", true), made("c", true), made("d", true)]).expect("b and c re-ran");
}

/// Which process the harness kills.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// `cairn run`, `resume` and `approve`, each driving the run itself.
    Cli,
    /// `cairn serve`, driving the run it was handed or found running.
    Served,
}

/// How many kills a scenario gets: `CAIRN_CRASH_KILLS`, or 20 (8 of a
/// server, which takes longer to start).
fn kills(mode: Mode) -> usize {
    match std::env::var("CAIRN_CRASH_KILLS") {
        Err(_) if mode == Mode::Served => 8,
        Err(_) => 20,
        Ok(v) => v.parse().unwrap_or_else(|_| panic!("CAIRN_CRASH_KILLS={v:?} is not a number of kills")),
    }
}

/// `cairn ARGS` for the crash test: on `data`, against the server at `url`,
/// without a terminal.
fn cairn(dir: &Path, data: &Path, url: &str, args: &[&str]) -> Command {
    let mut c = cairn_command(dir, data, args);
    c.env("CAIRN_LLM_BASE_URL", url)
        .env("CAIRN_LLM_MODEL", "fake")
        .stdin(Stdio::null())
        .stdout(Stdio::null());
    c
}

/// A small deterministic generator (xorshift), so every CI run kills at the same moments.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: usize) -> usize {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        usize::try_from(self.0 % n as u64).expect("fits")
    }
}

/// What the kills of one scenario covered.
#[derive(Default)]
struct Tally {
    landed: usize,
    runs: usize,
    /// Kills with two calls or more in flight.
    crowded: usize,
    /// Kills with a command's call in flight.
    commands: usize,
    /// Kills of a process `approve` started.
    after_approve: usize,
    /// Calls made again after a kill; of those, answered before the kill.
    remade: usize,
    answered_unrecorded: usize,
}

/// Kills `scenario`'s process in `mode` as often as [`kills`] says, and
/// checks what every kill left.
fn crash_test(scenario: &Scenario, mode: Mode) {
    crash_test_killing(scenario, kills(mode), mode);
}

fn crash_test_killing(scenario: &Scenario, target: usize, mode: Mode) {
    assert!(target > 0, "CAIRN_CRASH_KILLS=0 asks for no kills: the crash test would prove nothing");
    let server = Server::start(Duration::from_millis(30), scenario.faults);
    let name = match mode {
        Mode::Cli => scenario.name.to_owned(),
        Mode::Served => format!("{}-serve", scenario.name),
    };
    let name = name.as_str();
    let dir = scratch(name);
    let workflow = scenario.workflow.replace("@CALL@", &call_command(server.port));
    std::fs::write(dir.join("wf.yaml"), workflow).expect("write");
    std::fs::write(dir.join("cairn.toml"), "[commands]\nallow = [\"bash\"]\n").expect("write");
    let calls: Vec<Call> = scenario.calls.iter().map(|(p, a)| ((*p).to_owned(), *a)).collect();

    // An unkilled run: what every killed run must end like.
    let reference = drive_run(&server, &dir, "ref", &mut Targets::none(), &mut Tally::default(), mode);
    let made: BTreeSet<Call> = reference.1.iter().cloned().collect();
    assert_eq!(made, calls.iter().cloned().collect(), "{name}: the calls of an unkilled run");

    let mut targets = Targets::new(calls.clone(), Rng(0x5eed_cafe_f00d_d00d));
    let mut tally = Tally::default();
    while tally.landed < target {
        tally.runs += 1;
        let id = format!("crash-{}", tally.runs);
        let unnamed = calls.iter().find(|c| !targets.named.contains(*c));
        let first = unnamed.unwrap_or(&calls[(tally.runs - 1) % calls.len()]).clone();
        let most = (target - tally.landed).min(3);
        let before = tally.landed;
        (targets.next, targets.left) = (Some(first), most);
        let (log, made) = drive_run(&server, &dir, &id, &mut targets, &mut tally, mode);
        assert!(tally.landed > before, "{id} completed before its first kill landed");
        assert_eq!(log.succeeded, reference.0.succeeded, "{id}: steps succeeded, against an unkilled run");
        assert_eq!(log.started, reference.0.started, "{id}: attempts started, against an unkilled run");
        let made: BTreeSet<Call> = made.into_iter().collect();
        assert_eq!(made, calls.iter().cloned().collect(), "{id}: the calls made, against an unkilled run");
    }
    assert_eq!(tally.landed, target, "{name}: kills landed");
    let missed: Vec<_> = calls.iter().filter(|c| !targets.named.contains(*c)).collect();
    if tally.runs >= calls.len() {
        assert!(missed.is_empty(), "{name}: never killed with these calls in flight: {missed:?}");
    }
    eprintln!(
        "{}: {} kills landed over {} runs, each with a call in flight, {} of its {} calls named ({} with two or \
         more in flight, {} with a command's, {} in a process `approve` started or approved through); {} calls \
         made again after a kill, {} of them answered before it but not recorded; every invariant held",
        name,
        tally.landed,
        tally.runs,
        calls.len() - missed.len(),
        calls.len(),
        tally.crowded,
        tally.commands,
        tally.after_approve,
        tally.remade,
        tally.answered_unrecorded,
    );
}

/// Which call each process of a run is killed at.
struct Targets {
    /// The call the next process is killed at, if any.
    next: Option<Call>,
    /// Kills left for this run.
    left: usize,
    calls: Vec<Call>,
    /// The calls named by kills that landed.
    named: BTreeSet<Call>,
    rng: Rng,
}

impl Targets {
    fn new(calls: Vec<Call>, rng: Rng) -> Self {
        Self { next: None, left: 0, calls, named: BTreeSet::new(), rng }
    }

    fn none() -> Self {
        Self::new(Vec::new(), Rng(1))
    }

    /// After a kill landed at the named call: the next is a random call not
    /// yet finished, one never named before if there is one, while kills
    /// are left.
    fn after_kill(&mut self, finished: &BTreeSet<Call>) {
        self.named.extend(self.next.take());
        self.left -= 1;
        let open: Vec<&Call> = self.calls.iter().filter(|c| !finished.contains(*c)).collect();
        let fresh: Vec<&Call> = open.iter().copied().filter(|c| !self.named.contains(*c)).collect();
        let pool = if fresh.is_empty() { open } else { fresh };
        self.next = (self.left > 0 && !pool.is_empty()).then(|| pool[self.rng.below(pool.len())].clone());
    }
}

/// Drives run `id` to completion (`run`, then `approve` when it waits at its
/// gate, `resume` after a kill), killing it where `targets` say; returns the
/// final log and every call it made. Served, each is a new `cairn serve`:
/// `run` and `approve` go through it from a second shell, with `--detach`;
/// on `resume` it drives on the run it finds running.
fn drive_run(
    server: &Server,
    dir: &Path,
    id: &str,
    targets: &mut Targets,
    tally: &mut Tally,
    mode: Mode,
) -> (Log, Vec<Call>) {
    let data = dir.join(format!("data-{id}"));
    let mut ledger = Ledger::new(id);
    let mut verb = "run";
    for _ in 0..64 {
        let key = targets.next.as_ref().map(|call| key_of(id, call));
        let end = match mode {
            Mode::Cli => {
                let args: Vec<&str> = match verb {
                    "run" => vec!["run", "wf.yaml", "--run-id", id, "--non-interactive"],
                    v => vec![v, id, "--non-interactive"],
                };
                server.drive(cairn(dir, &data, &server.url, &args), key.as_deref())
            }
            Mode::Served => {
                let shell: Vec<&str> = match verb {
                    "run" => vec!["run", "wf.yaml", "--run-id", id, "--detach"],
                    "approve" => vec!["approve", id, "--detach"],
                    _ => Vec::new(),
                };
                server.serve(dir, &data, id, &shell, key.as_deref())
            }
        };
        match end {
            End::Killed { calls } => {
                let log = events(dir, &data, &server.url, id);
                let finished = log.finished.clone();
                let report = ledger.killed(&calls, &finished).unwrap_or_else(|e| panic!("{id}: {e}"));
                tally.landed += 1;
                tally.crowded += usize::from(report.in_flight >= 2);
                tally.commands += usize::from(calls.iter().any(|c| c.command && !c.answered));
                tally.after_approve += usize::from(verb == "approve");
                tally.answered_unrecorded += report.answered_unrecorded;
                tally.remade += report.remade;
                targets.after_kill(&finished);
                verb = "resume";
            }
            End::Exited { code, stderr, calls } => {
                let report = ledger.exited(&calls).unwrap_or_else(|e| panic!("{id}: {e}"));
                tally.remade += report.remade;
                match code {
                    0 => {
                        let log = events(dir, &data, &server.url, id);
                        assert_eq!(log.last.as_deref(), Some("run_completed"), "{id}");
                        return (log, ledger.made);
                    }
                    3 if verb != "approve" => verb = "approve",
                    _ => panic!("{id}: `{verb}` exited {code}: {stderr}"),
                }
            }
        }
    }
    panic!("{id} did not complete in 64 processes")
}

/// The call command of `MIXED` and `GATE`, as a YAML flow list (`TOOLS`'s
/// model asks for the same through `run_command`).
fn call_command(port: u16) -> String {
    serde_json::json!(["bash", "-c", CALL_SCRIPT, port.to_string()]).to_string()
}

/// What the run's log says: its last event, the calls with an outcome
/// recorded, every attempt started, and how often each step succeeded.
#[derive(Debug, Default, Clone)]
struct Log {
    last: Option<String>,
    finished: BTreeSet<Call>,
    started: BTreeSet<Call>,
    succeeded: BTreeMap<String, usize>,
}

fn events(dir: &Path, data: &Path, url: &str, id: &str) -> Log {
    let out = cairn(dir, data, url, &["events", id, "--format", "jsonl"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .output()
        .expect("events");
    assert!(out.status.success(), "events {id}: {}", String::from_utf8_lossy(&out.stderr));
    let mut log = Log::default();
    let mut current: BTreeMap<String, u32> = BTreeMap::new();
    // A tool loop's calls by id, and the last round of each attempt.
    let mut tool_calls: BTreeMap<(String, String), Call> = BTreeMap::new();
    let mut rounds: BTreeMap<Call, u64> = BTreeMap::new();
    let mut per_round: BTreeMap<(String, u32, u64), usize> = BTreeMap::new();
    let model_call = |path: &str, attempt: u32, round: u64| match round {
        0 => (path.to_owned(), attempt),
        r => (format!("{path}/{attempt}/r{r}"), 0),
    };
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let e: serde_json::Value = serde_json::from_str(line).expect("jsonl");
        let kind = e["type"].as_str().expect("type").to_owned();
        let path = e["path"].as_str().unwrap_or_default().to_owned();
        let attempt = e["attempt"].as_u64().and_then(|a| u32::try_from(a).ok()).unwrap_or(0);
        match kind.as_str() {
            "step_started" => {
                current.insert(path.clone(), attempt);
                log.started.insert((path, attempt));
            }
            "tool_called" => {
                // The model call of the round before asked for it: done.
                let round = e["round"].as_u64().expect("round");
                let counted = per_round.entry((path.clone(), attempt, round)).or_insert(0usize);
                let n = *counted;
                *counted += 1;
                log.finished.insert(model_call(&path, attempt, round - 1));
                let call_id = e["call_id"].as_str().expect("call_id").to_owned();
                tool_calls.insert((path.clone(), call_id), (format!("{path}/{attempt}/r{round}/{n}"), 0));
                rounds.insert((path, attempt), round);
            }
            "tool_returned" => {
                let call_id = e["call_id"].as_str().expect("call_id").to_owned();
                log.finished.insert(tool_calls[&(path, call_id)].clone());
            }
            "step_succeeded" | "step_cancelled" => {
                if let Some(a) = current.get(&path) {
                    log.finished.insert((path.clone(), *a));
                    if let Some(round) = rounds.get(&(path.clone(), *a)) {
                        log.finished.insert(model_call(&path, *a, *round));
                    }
                }
                if kind == "step_succeeded" {
                    *log.succeeded.entry(path).or_default() += 1;
                }
            }
            "step_failed" if attempt > 0 => {
                log.finished.insert((path, attempt));
            }
            _ => {}
        }
        log.last = Some(kind);
    }
    log
}

/// One call a process made, as the server saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Made {
    key: String,
    answered: bool,
    command: bool,
}

/// The accounting of one run's calls across its processes.
struct Ledger {
    run: String,
    /// Every call made so far, in order.
    made: Vec<Call>,
    /// The calls owed at the last kill, unless the last process ended on its own.
    owed: Option<BTreeSet<Call>>,
}

/// What one process did again.
#[derive(Debug)]
struct Report {
    remade: usize,
    in_flight: usize,
    answered_unrecorded: usize,
}

impl Ledger {
    fn new(run: &str) -> Self {
        Self { run: run.to_owned(), made: Vec::new(), owed: None }
    }

    fn parse(&self, made: &Made) -> Call {
        let rest = made.key.strip_prefix(&format!("{}/", self.run)).unwrap_or_else(|| panic!("{made:?}"));
        call_of(rest).unwrap_or_else(|| panic!("{made:?}"))
    }

    /// The calls of a process, checked against what was owed: returns those
    /// made again and what stays owed.
    fn process(&mut self, calls: &[Made]) -> Result<(BTreeSet<Call>, BTreeSet<Call>), String> {
        let mine: Vec<Call> = calls.iter().map(|c| self.parse(c)).collect();
        let mut seen = BTreeSet::new();
        for call in &mine {
            if !seen.insert(call) {
                return Err(format!("{call:?} was made twice by one process"));
            }
        }
        let before: BTreeSet<&Call> = self.made.iter().collect();
        let again: BTreeSet<Call> = mine.iter().filter(|c| before.contains(c)).cloned().collect();
        let owed = self.owed.take().unwrap_or_default();
        if let Some(extra) = again.iter().find(|c| !owed.contains(*c)) {
            return Err(format!("{extra:?} was made again but was not owed (owed: {owed:?})"));
        }
        self.made.extend(mine);
        let left = owed.difference(&again).cloned().collect();
        Ok((again, left))
    }

    /// A process that ended on its own: it made every owed call again.
    fn exited(&mut self, calls: &[Made]) -> Result<Report, String> {
        let (again, left) = self.process(calls)?;
        if !left.is_empty() {
            return Err(format!("in flight at the last kill but never made again: {left:?}"));
        }
        Ok(Report { remade: again.len(), in_flight: 0, answered_unrecorded: 0 })
    }

    /// A process killed with `calls` made, its run's log then saying
    /// `finished`: notes what is owed now.
    fn killed(&mut self, calls: &[Made], finished: &BTreeSet<Call>) -> Result<Report, String> {
        let (again, left) = self.process(calls)?;
        if let Some(lost) = left.iter().find(|c| finished.contains(*c)) {
            return Err(format!("{lost:?} was recorded as finished without being made again"));
        }
        let owed: BTreeSet<Call> = self.made.iter().filter(|c| !finished.contains(*c)).cloned().collect();
        let in_flight: Vec<Call> = calls.iter().filter(|c| !c.answered).map(|c| self.parse(c)).collect();
        if let Some(done) = in_flight.iter().find(|c| !owed.contains(*c)) {
            return Err(format!("{done:?} was in flight at the kill, yet recorded as finished"));
        }
        let answered_unrecorded =
            calls.iter().filter(|c| c.answered && owed.contains(&self.parse(c))).count();
        self.owed = Some(owed);
        Ok(Report { remade: again.len(), in_flight: in_flight.len(), answered_unrecorded })
    }
}

/// How a process ended: killed with the named call in flight, or on its own.
#[derive(Debug)]
enum End {
    Killed { calls: Vec<Made> },
    Exited { code: i32, stderr: String, calls: Vec<Made> },
}

/// What the server knows of the current process and its calls.
struct Board {
    epoch: usize,
    /// Whether the current process may still be answered.
    live: bool,
    /// The `cairn` processes by pid, each with its epoch.
    pids: BTreeMap<u32, usize>,
    /// The key to hold, and whether it came.
    target: Option<String>,
    tripped: bool,
    calls: Vec<(usize, Made)>,
}

/// The loopback server of the crash test: an OpenAI-compatible chat server
/// for the model calls (answered after `latency`), and a line protocol for
/// the command steps' calls (`CMD key ppid`, answered `code text`). A model
/// call names its process by its key (`Bearer epoch-N`), a command's by its
/// parent's pid, so a late call of a killed process is never taken for one
/// of the next.
struct Server {
    url: String,
    port: u16,
    board: Arc<(Mutex<Board>, Condvar)>,
}

impl Server {
    fn start(latency: Duration, faults: &[(&str, u32)]) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind loopback");
        let port = listener.local_addr().expect("addr").port();
        let board = Arc::new((
            Mutex::new(Board {
                epoch: 0,
                live: false,
                pids: BTreeMap::new(),
                target: None,
                tripped: false,
                calls: Vec::new(),
            }),
            Condvar::new(),
        ));
        let faults: Arc<BTreeSet<Call>> =
            Arc::new(faults.iter().map(|(p, a)| ((*p).to_owned(), *a)).collect());
        let shared = board.clone();
        std::thread::spawn(move || {
            for socket in listener.incoming().flatten() {
                let (board, faults) = (shared.clone(), faults.clone());
                std::thread::spawn(move || answer(socket, &board, latency, &faults, port));
            }
        });
        Self { url: format!("http://127.0.0.1:{port}/v1"), port, board }
    }

    fn lock(&self) -> MutexGuard<'_, Board> {
        self.board.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Runs `command` as a new process; with `target`, kills it as soon as
    /// the server holds that call.
    fn drive(&self, mut command: Command, target: Option<&str>) -> End {
        let stderr = tempfile_for(&command);
        command.stderr(std::fs::File::create(&stderr).expect("stderr file"));
        let mut board = self.lock();
        board.epoch += 1;
        board.live = true;
        board.tripped = false;
        board.target = target.map(str::to_owned);
        let epoch = board.epoch;
        command.env("CAIRN_LLM_API_KEY", format!("epoch-{epoch}"));
        let mut child = command.spawn().expect("spawn cairn");
        board.pids.insert(child.id(), epoch);
        let made = |board: &Board| -> Vec<Made> {
            board.calls.iter().filter(|(e, _)| *e == epoch).map(|(_, m)| m.clone()).collect()
        };
        loop {
            if board.tripped {
                child.kill().expect("SIGKILL");
                child.wait().expect("reap");
                board.live = false;
                self.board.1.notify_all();
                return End::Killed { calls: made(&board) };
            }
            if let Some(status) = child.try_wait().expect("poll") {
                board.live = false;
                self.board.1.notify_all();
                let stderr = std::fs::read_to_string(&stderr).unwrap_or_default();
                return End::Exited { code: status.code().unwrap_or(-1), stderr, calls: made(&board) };
            }
            // Wakes when a call comes, or soon to look at the process again.
            board = self
                .board
                .1
                .wait_timeout(board, Duration::from_millis(20))
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .0;
        }
    }
}

impl Server {
    /// Starts `cairn serve` over `data` as a new process, asks it `shell`
    /// from a second shell once it listens (nothing when empty: it drives
    /// on what it finds running), then watches run `id` through it. With
    /// `target`, SIGKILLs the server as soon as this server holds that call;
    /// a server whose run completes (code 0), waits at its gate (3) or ends
    /// otherwise (1) is stopped with SIGTERM and ended on its own.
    fn serve(&self, dir: &Path, data: &Path, id: &str, shell: &[&str], target: Option<&str>) -> End {
        let mut board = self.lock();
        board.epoch += 1;
        board.live = true;
        board.tripped = false;
        board.target = target.map(str::to_owned);
        let epoch = board.epoch;
        let mut command = cairn(dir, data, &self.url, &["serve", "--listen", "127.0.0.1:0"]);
        command.env("CAIRN_LLM_API_KEY", format!("epoch-{epoch}")).stderr(Stdio::piped());
        let mut serving = Serving(command.spawn().expect("spawn cairn serve"));
        // Its command steps' parent: registered before any call is served.
        board.pids.insert(serving.0.id(), epoch);
        drop(board);
        let (words, listening) = watch_stderr(&mut serving.0);
        let made = |board: &Board| -> Vec<Made> {
            board.calls.iter().filter(|(e, _)| *e == epoch).map(|(_, m)| m.clone()).collect()
        };
        let started = Instant::now();
        let (mut listens, mut asked, mut polled) = (false, shell.is_empty(), None::<Instant>);
        let mut board = self.lock();
        loop {
            if board.tripped {
                // SIGKILL: it gets no chance to close anything.
                serving.0.kill().expect("SIGKILL");
                serving.0.wait().expect("reap");
                board.live = false;
                self.board.1.notify_all();
                return End::Killed { calls: made(&board) };
            }
            if let Some(status) = serving.0.try_wait().expect("poll") {
                board.live = false;
                self.board.1.notify_all();
                let stderr = format!("the server ended on its own ({status}): {}", words_of(&words));
                return End::Exited { code: -1, stderr, calls: made(&board) };
            }
            listens = listens || listening.try_recv().is_ok();
            assert!(
                started.elapsed() < Duration::from_secs(120),
                "{id}: the server neither reached the named call nor ended the run in 120s (listening: \
                 {listens}): {}",
                words_of(&words)
            );
            if listens && polled.is_none_or(|at| at.elapsed() >= Duration::from_millis(50)) {
                drop(board);
                if !asked {
                    let out = cairn(dir, data, &self.url, shell)
                        .stdout(Stdio::piped())
                        .stderr(Stdio::piped())
                        .output()
                        .expect("cairn through the server");
                    let (stdout, stderr) =
                        (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
                    assert!(
                        out.status.success() && (shell[0] != "run" || stdout.trim() == id),
                        "{id}: `cairn {}` through the server: {}\n{stdout}{stderr}\nserver: {}",
                        shell.join(" "),
                        out.status,
                        words_of(&words)
                    );
                    asked = true;
                }
                let status = run_status(dir, data, &self.url, id);
                polled = Some(Instant::now());
                board = self.lock();
                let code = match status.as_str() {
                    "pending" | "running" => None,
                    "completed" => Some(0),
                    "waiting_approval" => Some(3),
                    _ => Some(1),
                };
                // Held at the named call, a run cannot have ended: the kill comes first.
                if let Some(code) = code.filter(|_| !board.tripped) {
                    drop(board);
                    let stopped = stop(&mut serving.0);
                    board = self.lock();
                    board.live = false;
                    self.board.1.notify_all();
                    let stderr = format!("the run is {status}: {}", words_of(&words));
                    assert!(stopped, "{id}: the server did not stop on SIGTERM in 30s: {stderr}");
                    return End::Exited { code, stderr, calls: made(&board) };
                }
            }
            // Wakes when a call comes, or soon to look at the server again.
            board = self
                .board
                .1
                .wait_timeout(board, Duration::from_millis(20))
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .0;
        }
    }
}

/// A `cairn serve` process, SIGKILLed if the harness gives up on it.
struct Serving(std::process::Child);

impl Drop for Serving {
    fn drop(&mut self) {
        if self.0.try_wait().ok().flatten().is_none() {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

/// Keeps a server's stderr (so it never blocks on the pipe); the channel
/// says when it listens.
fn watch_stderr(child: &mut std::process::Child) -> (Arc<Mutex<String>>, std::sync::mpsc::Receiver<()>) {
    use std::io::BufRead as _;
    let stderr = child.stderr.take().expect("stderr is piped");
    let words = Arc::new(Mutex::new(String::new()));
    let (tell, listening) = std::sync::mpsc::channel();
    let kept = words.clone();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stderr).lines().map_while(Result::ok) {
            if line.starts_with("cairn serve listening on ") {
                let _ = tell.send(());
            }
            let mut kept = kept.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            kept.push_str(&line);
            kept.push('\n');
        }
    });
    (words, listening)
}

fn words_of(words: &Mutex<String>) -> String {
    words.lock().unwrap_or_else(std::sync::PoisonError::into_inner).clone()
}

/// SIGTERM, then waits up to 30s for the process to end: whether it did.
fn stop(child: &mut std::process::Child) -> bool {
    let signalled =
        Command::new("kill").args(["-TERM", &child.id().to_string()]).status().is_ok_and(|s| s.success());
    let deadline = Instant::now() + Duration::from_secs(30);
    while signalled && Instant::now() < deadline {
        if child.try_wait().expect("poll").is_some() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    false
}

/// The status of run `id`, as `runs --format json` lists it through the
/// server holding `data` (the index only: no log is read).
fn run_status(dir: &Path, data: &Path, url: &str, id: &str) -> String {
    let out = cairn(dir, data, url, &["runs", "--format", "json"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .output()
        .expect("runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let runs: serde_json::Value = serde_json::from_str(&stdout).unwrap_or_else(|e| {
        panic!("runs ({}): {e}: {stdout}{}", out.status, String::from_utf8_lossy(&out.stderr))
    });
    let run = runs.as_array().and_then(|all| all.iter().find(|r| r["run_id"] == id));
    let status = run.and_then(|r| r["status"].as_str());
    status.unwrap_or_else(|| panic!("runs: no status of {id}: {runs}")).to_owned()
}

/// A file in the process's folder for its stderr.
fn tempfile_for(command: &Command) -> std::path::PathBuf {
    static NEXT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    command.get_current_dir().unwrap_or(Path::new(".")).join(format!("stderr-{n}.txt"))
}

/// Serves one connection: logs the call under the process it came from,
/// holds it once the named call came, answers it otherwise.
fn answer(
    mut socket: TcpStream,
    board: &(Mutex<Board>, Condvar),
    latency: Duration,
    faults: &BTreeSet<Call>,
    port: u16,
) {
    let Some(request) = read_request(&mut socket) else { return };
    let (lock, wake) = board;
    let relock = || lock.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    let (epoch, index) = {
        let mut b = relock();
        let from = match request.from {
            From::Epoch(e) => Some(e),
            From::Pid(pid) => b.pids.get(&pid).copied(),
        };
        if !b.live || from != Some(b.epoch) {
            return;
        }
        let made = Made { key: request.key.clone(), answered: false, command: request.command };
        let epoch = b.epoch;
        b.calls.push((epoch, made));
        if b.target.as_deref() == Some(request.key.as_str()) {
            b.tripped = true;
            wake.notify_all();
        }
        (epoch, b.calls.len() - 1)
    };
    std::thread::sleep(latency);
    {
        let mut b = relock();
        while b.live && b.epoch == epoch && b.tripped {
            b = wake.wait(b).unwrap_or_else(std::sync::PoisonError::into_inner);
        }
        if !b.live || b.epoch != epoch {
            return;
        }
        b.calls[index].1.answered = true;
    }
    let key = request.key;
    let call = key.split_once('/').and_then(|(_, rest)| call_of(rest));
    let fail = call.is_some_and(|call| faults.contains(&call));
    // A model offered tools asks for them in rounds 0 and 1 (two calls,
    // then one), and answers in round 2.
    let round = key.rsplit('/').next().and_then(|last| last.strip_prefix('r')).and_then(|r| r.parse().ok());
    let tool_calls = match (request.tools, round.unwrap_or(0)) {
        (true, round @ (0 | 1)) => {
            let arguments =
                serde_json::json!({"program": "bash", "args": ["-c", CALL_SCRIPT, port.to_string()]});
            let call = |n: usize| {
                serde_json::json!({"id": format!("call_{round}_{n}"), "type": "function",
                "function": {"name": "run_command", "arguments": arguments.to_string()}})
            };
            Some(if round == 0 { vec![call(0), call(1)] } else { vec![call(0)] })
        }
        _ => None,
    };
    let response = match (request.command, fail) {
        (true, fail) => format!("{} answer for {key}\n", u8::from(fail)),
        (false, true) => {
            "HTTP/1.1 500 Internal Server Error\r\ncontent-length: 2\r\nconnection: close\r\n\r\n{}"
                .to_owned()
        }
        (false, false) => {
            let message = match &tool_calls {
                Some(calls) => serde_json::json!({"content": null, "tool_calls": calls}),
                None => serde_json::json!({"content": format!("answer for {key}")}),
            };
            let reason = if tool_calls.is_some() { "tool_calls" } else { "stop" };
            let body = serde_json::json!({
                "model": "fake",
                "choices": [{"message": message, "finish_reason": reason}],
                "usage": {"prompt_tokens": 3, "completion_tokens": 4},
            })
            .to_string();
            format!(
                "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                body.len()
            )
        }
    };
    let _ = socket.write_all(response.as_bytes());
}

/// Which process a call came from.
enum From {
    Epoch(usize),
    Pid(u32),
}

struct Request {
    key: String,
    from: From,
    command: bool,
    /// A model call that offers tools.
    tools: bool,
}

/// Reads one call: a command's line or a whole HTTP request.
fn read_request(socket: &mut TcpStream) -> Option<Request> {
    let mut bytes = Vec::new();
    let mut buf = [0u8; 8192];
    loop {
        let n = socket.read(&mut buf).ok().filter(|n| *n > 0)?;
        bytes.extend_from_slice(&buf[..n]);
        let text = String::from_utf8_lossy(&bytes).into_owned();
        if let Some(line) = text.strip_prefix("CMD ") {
            let Some((line, _)) = line.split_once('\n') else { continue };
            let (key, pid) = line.split_once(' ')?;
            return Some(Request {
                key: key.to_owned(),
                from: From::Pid(pid.trim().parse().ok()?),
                command: true,
                tools: false,
            });
        }
        let Some(end) = text.find("\r\n\r\n") else { continue };
        let head = &text[..end];
        let length = header(head, "content-length").and_then(|v| v.parse::<usize>().ok()).unwrap_or(0);
        if bytes.len() < end + 4 + length {
            continue;
        }
        let key = header(head, "idempotency-key")?;
        let epoch = header(head, "authorization")?.strip_prefix("Bearer epoch-")?.parse().ok()?;
        let tools = text[end + 4..].contains("\"tools\"");
        return Some(Request { key, from: From::Epoch(epoch), command: false, tools });
    }
}

fn header(head: &str, name: &str) -> Option<String> {
    head.lines().find_map(|l| {
        let (k, v) = l.split_once(':')?;
        k.trim().eq_ignore_ascii_case(name).then(|| v.trim().to_owned())
    })
}
