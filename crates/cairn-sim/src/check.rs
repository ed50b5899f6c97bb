//! The invariants a simulation must keep, those of the kill -9 crash
//! test (`tests/e2e/crash.rs`) and one more:
//!
//! - the run completes (the fault-free run must);
//! - every step succeeds in the final log as many times as in the
//!   fault-free run's (once, or again after a rework or a `goto`);
//! - no port is called for a step whose success was durable or
//!   acknowledged by an `append` (checked at each call, in `ports`);
//! - a step run again after a crash carries the same idempotency key
//!   (`run/step/attempt`): every call whose attempt the log never
//!   finished is followed by a call with the same key;
//! - the final state (statuses and outputs, not times) equals the
//!   fault-free run's.

use std::collections::{BTreeMap, BTreeSet};

use cairn_domain::state::{EventKind, RunStatus};

use crate::sim::World;

/// What `world` broke, checked against the fault-free `clean` run.
pub fn check(world: &World, clean: &World) -> Vec<String> {
    let mut broken = world.violations.clone();
    let Some(state) = &world.state else {
        broken.push("no run survived".into());
        return broken;
    };
    if let Some(clean) = clean.state.as_ref().filter(|clean| clean.status != RunStatus::Completed) {
        broken.push(format!("the fault-free run ended {:?}, not completed", clean.status));
    }
    let (clean_successes, _) = successes_in(clean);
    let (successes, finished) = successes_in(world);
    for (path, step) in &state.steps {
        let n = successes.get(path.as_str()).copied().unwrap_or(0);
        let want = clean_successes.get(path.as_str()).copied().unwrap_or(0);
        if n != want {
            broken.push(format!(
                "`{path}` is {:?} with {n} successes in the log, {want} in the fault-free run's",
                step.status
            ));
        }
    }
    for (i, call) in world.calls.iter().enumerate() {
        if finished.contains(&(call.path.clone(), call.attempt)) {
            continue;
        }
        if !world.calls[i + 1..].iter().any(|later| later.key == call.key) {
            broken.push(format!("call {} ({}) was lost and never made again with its key", i + 1, call.key));
        }
    }
    let mut seen: BTreeMap<&str, u32> = BTreeMap::new();
    for call in &world.calls {
        let last = seen.entry(&call.path).or_default();
        if call.attempt < *last {
            broken.push(format!("`{}` was called for attempt {} after {}", call.path, call.attempt, last));
        }
        *last = call.attempt;
    }
    broken.extend(differences(world, clean));
    broken
}

/// How many times each step succeeds in the log, and the attempts (path,
/// number) the log finished.
fn successes_in(world: &World) -> (BTreeMap<String, usize>, BTreeSet<(String, u32)>) {
    let mut successes: BTreeMap<String, usize> = BTreeMap::new();
    let mut finished: BTreeSet<(String, u32)> = BTreeSet::new();
    let mut started: BTreeMap<String, u32> = BTreeMap::new();
    for e in &world.log {
        match &e.kind {
            EventKind::StepStarted { path, attempt } => {
                started.insert(path.to_string(), *attempt);
            }
            EventKind::StepSucceeded { path, .. } => {
                *successes.entry(path.to_string()).or_default() += 1;
                if let Some(attempt) = started.get(path.as_str()) {
                    finished.insert((path.to_string(), *attempt));
                }
            }
            EventKind::StepFailed { path, attempt, .. } => {
                finished.insert((path.to_string(), *attempt));
            }
            _ => {}
        }
    }
    (successes, finished)
}

/// Where the final state differs from the fault-free run's: the run's
/// status, and each step's status and output.
fn differences(world: &World, clean: &World) -> Vec<String> {
    let (Some(got), Some(want)) = (&world.state, &clean.state) else {
        return vec!["the fault-free run left no state".into()];
    };
    let mut diffs = Vec::new();
    if got.status != want.status {
        diffs.push(format!("the run ended {:?}, the fault-free run {:?}", got.status, want.status));
    }
    let paths: BTreeSet<_> = got.steps.keys().chain(want.steps.keys()).collect();
    for path in paths {
        let a = got.steps.get(path).map(|s| (s.status, &s.output));
        let b = want.steps.get(path).map(|s| (s.status, &s.output));
        if a != b {
            diffs.push(format!("`{path}` ended {a:?}, in the fault-free run {b:?}"));
        }
    }
    diffs
}
