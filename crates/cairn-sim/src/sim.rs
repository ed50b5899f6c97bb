//! One simulation: a workflow driven to its end by the real engine over
//! the simulated store, clock and ports, with crashes (the drive dropped
//! at a seed-chosen poll, then a fresh engine resumes) and power cuts
//! (the store keeps only what it synced) when faults are on. When the run
//! waits at a gate, a simulated person decides (as the seed says, so the
//! same way with faults and without) and the run is resumed.

use std::collections::BTreeMap;
use std::sync::Arc;

use cairn_domain::Definition;
use cairn_domain::id::RunId;
use cairn_domain::state::{Event, RunState, StepStatus, WaitKind};
use cairn_domain::steer::{GateCall, Verdict};
use cairn_engine::{Engine, EngineBuilder};
use cairn_ports::RunStore;
use serde_json::json;

use crate::clock::SimClock;
use crate::exec::{self, Ran};
use crate::ports::{Call, SimPorts};
use crate::rng::{Rng, hash};
use crate::store::{DiskFaults, Durability, SimStore};
use crate::trace::Trace;
use crate::workflow::{APPROVER, Generated};

/// The id of every simulated run.
pub const RUN: &str = "sim";

/// Drives (and decisions at gates) after which a run that has not ended
/// counts as stuck.
const MAX_DRIVES: u32 = 80;

/// Crashes (process or power) one faulty simulation suffers at most.
const MAX_CRASHES: u64 = 3;

/// In a hundred: how often a store write or read fails.
const DISK_FAULT_PERCENT: u64 = 6;

/// Store writes and reads one faulty simulation fails at most.
const DISK_FAULT_BUDGET: u32 = 5;

/// Whether a simulation injects faults, and how long the fault-free
/// run of the same seed took (crash points are drawn up to it).
#[derive(Debug, Clone, Copy)]
pub enum Mode {
    /// No fault, no crash: the reference run.
    Clean,
    /// Faults and crashes; the clean run took this many polls.
    Faulty {
        /// Polls of the clean run.
        polls: u64,
    },
}

/// What one simulation left: the final durable state and log, every port
/// call, and what happened on the way.
#[derive(Default)]
pub struct World {
    /// The run's state folded from what survived a last power cut.
    pub state: Option<RunState>,
    /// The run's durable log.
    pub log: Vec<Event>,
    /// Every call of the model and the program runner, in order.
    pub calls: Vec<Call>,
    /// Promises broken on the way (checked as they happened).
    pub violations: Vec<String>,
    /// What happened, line by line, with simulated times.
    pub trace: Vec<String>,
    /// Polls of the engine's futures, in all.
    pub polls: u64,
    /// Drives the run took (a start, then resumes).
    pub drives: u32,
    /// Drives dropped by a process crash.
    pub crashes: u32,
    /// Drives dropped by a power cut.
    pub power_cuts: u32,
    /// Drives that ended with an error (a failed store write or read).
    pub errors: u32,
    /// Decisions people made at gates (recorded or not).
    pub decisions: u32,
}

fn engine(store: &Arc<SimStore>, clock: &Arc<SimClock>, ports: &Arc<SimPorts>) -> Engine {
    EngineBuilder::new(store.clone())
        .clock(clock.clone())
        .every_provider(ports.clone())
        .commands(ports.clone())
        .actor("sim")
        .build()
}

/// Runs `workflow` under `mode` with the seed's answers and faults, on a
/// store that keeps `durability`.
pub fn simulate(seed: u64, workflow: &Generated, mode: Mode, durability: Durability) -> World {
    let faulty = matches!(mode, Mode::Faulty { .. });
    let clock = Arc::new(SimClock::new());
    let trace = Arc::new(Trace::new(clock.clone()));
    let faults =
        faulty.then(|| DiskFaults::new(hash(seed, &["store"]), DISK_FAULT_PERCENT, DISK_FAULT_BUDGET));
    let store = Arc::new(SimStore::with_durability(durability, clock.clone(), trace.clone(), faults));
    let ports = Arc::new(SimPorts::new(
        seed,
        faulty,
        RUN,
        workflow.max_attempts,
        clock.clone(),
        store.clone(),
        trace.clone(),
    ));
    let mut world = World::default();
    let run_id = RunId::new(RUN).expect("`sim` is a valid run id");
    let definition = match Definition::from_recorded("sim.yaml", &workflow.yaml, &BTreeMap::new()) {
        Ok(d) => d,
        Err(problems) => {
            world.violations.push(format!("the generated workflow is invalid: {problems:?}"));
            return world;
        }
    };
    let mut rng = Rng::new(hash(seed, &["crashes"]));
    let mut crashes_left = if faulty { rng.below(MAX_CRASHES + 1) } else { 0 };
    let horizon = match mode {
        Mode::Clean => 1,
        Mode::Faulty { polls } => polls.max(1),
    };
    let mut ended = false;
    while world.drives < MAX_DRIVES {
        let engine = engine(&store, &clock, &ports);
        let exists = store.exists(&run_id);
        if exists {
            // A run that ended (its last write reported failed, yet
            // reached the disk) is not driven again.
            match exec::run(&clock, engine.load(&run_id), None, &mut world.polls) {
                Ran::Done(Ok(state)) if state.status.is_terminal() => {
                    ended = true;
                    break;
                }
                Ran::Done(Ok(state)) => {
                    if let Some((gate, call)) = decision(seed, &state) {
                        world.drives += 1;
                        world.decisions += 1;
                        let crash_at = (crashes_left > 0 && rng.chance(20)).then(|| rng.range(1, 4));
                        trace.note(format!(
                            "{} decides {:?} at `{gate}`{}",
                            call.role.as_deref().unwrap_or_default(),
                            call.verdict,
                            crash_at.map(|n| format!(", crash after poll {n}")).unwrap_or_default()
                        ));
                        let decided = engine.decide_gate(&run_id, call, "sim-person");
                        match exec::run(&clock, decided, crash_at, &mut world.polls) {
                            Ran::Done(Ok(_)) => {}
                            Ran::Done(Err(e)) => {
                                trace.note(format!("the decision failed: {e}"));
                                world.errors += 1;
                            }
                            Ran::Crashed => {
                                crashes_left -= 1;
                                crash(&store, &mut rng, &mut world);
                                continue;
                            }
                            other => {
                                world.violations.push(format!("deciding at `{gate}`: {other:?}"));
                                break;
                            }
                        }
                    }
                }
                Ran::Done(Err(e)) => {
                    trace.note(format!("loading the run failed: {e}"));
                    world.errors += 1;
                    world.drives += 1;
                    continue;
                }
                other => {
                    world.violations.push(format!("loading the run failed: {other:?}"));
                    break;
                }
            }
        }
        let crash_at = (crashes_left > 0 && rng.chance(70)).then(|| rng.range(1, horizon));
        world.drives += 1;
        trace.note(format!(
            "drive {}: {}{}",
            world.drives,
            if exists { "resume" } else { "start" },
            crash_at.map(|n| format!(", crash after poll {n}")).unwrap_or_default()
        ));
        let driven = if exists {
            exec::run(&clock, engine.resume(&run_id), crash_at, &mut world.polls)
        } else {
            exec::run(
                &clock,
                engine.run(definition.clone(), json!({}), run_id.clone()),
                crash_at,
                &mut world.polls,
            )
        };
        match driven {
            Ran::Done(Ok(state)) => {
                trace.note(format!("drive {} returned: {:?}", world.drives, state.status));
                if state.status.is_terminal() {
                    ended = true;
                    break;
                }
            }
            Ran::Done(Err(e)) => {
                trace.note(format!("drive {} failed: {e}", world.drives));
                world.errors += 1;
            }
            Ran::Crashed => {
                crashes_left -= 1;
                crash(&store, &mut rng, &mut world);
            }
            Ran::Stalled | Ran::RanAway => {
                world.violations.push(format!("drive {} {driven:?}", world.drives));
                break;
            }
        }
    }
    if !ended && world.violations.is_empty() {
        world.violations.push(format!("the run did not end in {MAX_DRIVES} drives"));
    }
    // What the run reported must survive the power failing now, and is
    // read back without faults.
    store.power_cut();
    store.heal();
    let engine = engine(&store, &clock, &ports);
    if let Ran::Done(Ok(state)) = exec::run(&clock, engine.load(&run_id), None, &mut world.polls) {
        world.state = Some(state);
    }
    if let Ran::Done(Ok(stored)) = exec::run(&clock, store.load(&run_id, 0), None, &mut world.polls) {
        world.log = stored.events;
    }
    world.calls = ports.calls();
    world.violations.extend(ports.violations());
    world.trace = trace.lines();
    world
}

/// After a crash: half the time the power failed too (what was not synced
/// is lost), else the process died and the next one recovers the store.
fn crash(store: &SimStore, rng: &mut Rng, world: &mut World) {
    if rng.chance(50) {
        world.power_cuts += 1;
        store.power_cut();
    } else {
        world.crashes += 1;
        store.recover();
    }
}

/// What the simulated person decides at the first gate the run waits at,
/// from the seed and the gate alone: an approval step is rejected one time
/// in four; an acceptance is rejected (sent to rework) up to twice, then
/// approved.
fn decision(seed: u64, state: &RunState) -> Option<(String, GateCall)> {
    let (path, step) = state.steps.iter().find(|(_, s)| {
        s.status == StepStatus::Waiting && matches!(s.wait, Some(WaitKind::Approval | WaitKind::Acceptance))
    })?;
    let path = path.to_string();
    let approve = match step.wait {
        Some(WaitKind::Approval) => !hash(seed, &["reject", &path]).is_multiple_of(4),
        _ => u64::from(step.reworks) >= hash(seed, &["reworks", &path]) % 3,
    };
    let call = GateCall {
        gate: Some(path.clone()),
        verdict: if approve { Verdict::Approve } else { Verdict::Reject },
        role: Some(APPROVER.to_owned()),
        comment: (!approve).then(|| format!("redo {path}, round {}", step.reworks + 1)),
    };
    Some((path, call))
}
