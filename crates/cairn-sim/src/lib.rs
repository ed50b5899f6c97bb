//! Deterministic simulation of cairn, as FoundationDB and TigerBeetle test
//! themselves: the real engine drives generated workflows on a simulated
//! clock, over a store whose disk can lose power and ports that fail from a
//! seed, crashing at any await point and resuming, and every seed's end
//! is checked against the durability contract and a fault-free run.
//!
//! What it is: a harness. [`run_seed`] runs one seed: it generates a
//! workflow ([`workflow`]), runs it once without faults, once with them
//! ([`sim`]), and checks the invariants ([`check`]). A failing seed
//! replays exactly: no wall clock, no thread, no real randomness; one
//! future is polled on the calling thread ([`exec`]) and time moves only
//! when nothing can run ([`clock`]).
//!
//! What it deliberately does not do: test an adapter (sled, HTTP and
//! processes have their own tests, and the kill -9 crash test drives the
//! real binary), model a disk below the `RunStore` contract (a torn write
//! is an error the store reports, as its checksums would), or generate
//! clarification questions, QA judges, budgets or sub-workflows yet.
//!
//! May depend on: `cairn-domain`, `cairn-ports`, `cairn-engine`;
//! `cairn-testkit` in tests only. Nothing depends on it but `xtask`'s
//! `sim` task, through its binary.
//!
//! Read first: [`run_seed`], [`sim::simulate`], [`store::SimStore`],
//! [`ports::SimPorts`], [`check::check`].

pub mod check;
pub mod clock;
pub mod exec;
pub mod ports;
pub mod rng;
pub mod sim;
pub mod store;
pub mod trace;
pub mod workflow;

use cairn_domain::state::EventKind;
use sim::{Mode, World};
use store::Durability;

/// What one seed did and what it broke.
pub struct Report {
    /// The seed.
    pub seed: u64,
    /// The generated workflow, as YAML.
    pub workflow: String,
    /// The run with faults.
    pub faulty: World,
    /// The broken invariants; empty when the seed passed.
    pub broken: Vec<String>,
}

impl Report {
    /// Whether every invariant held.
    pub fn passed(&self) -> bool {
        self.broken.is_empty()
    }

    /// The seed's story for a person: the workflow, what happened with
    /// simulated times, and what broke.
    pub fn explain(&self) -> String {
        let mut out = format!("seed {}\n--- workflow\n{}--- trace\n", self.seed, self.workflow);
        for line in &self.faulty.trace {
            out.push_str(line);
            out.push('\n');
        }
        out.push_str("--- broken\n");
        for b in &self.broken {
            out.push_str(b);
            out.push('\n');
        }
        out
    }

    /// The durable log the faulty run left, one JSON event a line: equal,
    /// byte for byte, every time the seed runs.
    pub fn log(&self) -> String {
        self.faulty.log.iter().map(|e| serde_json::to_string(e).unwrap_or_default() + "\n").collect()
    }
}

/// Runs seed `seed`: its workflow without faults, then with them, and
/// checks both.
pub fn run_seed(seed: u64) -> Report {
    run_seed_on(seed, Durability::Sync)
}

/// [`run_seed`], the run with faults on a store that keeps `durability`
/// (the fault-free run always syncs): how the tests prove that a store
/// breaking its promise is caught.
pub fn run_seed_on(seed: u64, durability: Durability) -> Report {
    let generated = workflow::generate(seed);
    let clean = sim::simulate(seed, &generated, Mode::Clean, Durability::Sync);
    let mut broken: Vec<String> =
        check::check(&clean, &clean).into_iter().map(|b| format!("fault-free: {b}")).collect();
    let faulty = sim::simulate(seed, &generated, Mode::Faulty { polls: clean.polls }, durability);
    broken.extend(check::check(&faulty, &clean));
    Report { seed, workflow: generated.yaml, faulty, broken }
}

/// What a run of many seeds found: the seeds that broke something, and the
/// faults injected over all of them (a sweep that injected none proves
/// nothing).
#[derive(Debug, Default)]
pub struct Sweep {
    /// Each failed seed with what it broke.
    pub failed: Vec<(u64, Vec<String>)>,
    /// Process crashes injected.
    pub crashes: usize,
    /// Power cuts injected.
    pub power_cuts: usize,
    /// Failed writes and reads injected.
    pub errors: usize,
    /// Calls the ports served.
    pub calls: usize,
    /// Decisions people made at gates.
    pub decisions: usize,
    /// Reworks and `goto`s recorded: steps run again on purpose.
    pub reruns: usize,
}

/// Runs every seed of `seeds` ([`run_seed`]) and sums what they found.
pub fn sweep(seeds: std::ops::Range<u64>) -> Sweep {
    let mut sweep = Sweep::default();
    for seed in seeds {
        let report = run_seed(seed);
        sweep.crashes += report.faulty.crashes as usize;
        sweep.power_cuts += report.faulty.power_cuts as usize;
        sweep.errors += report.faulty.errors as usize;
        sweep.calls += report.faulty.calls.len();
        sweep.decisions += report.faulty.decisions as usize;
        sweep.reruns += report
            .faulty
            .log
            .iter()
            .filter(|e| matches!(e.kind, EventKind::StepReworked { .. } | EventKind::GotoTaken { .. }))
            .count();
        if !report.passed() {
            sweep.failed.push((seed, report.broken));
        }
    }
    sweep
}
