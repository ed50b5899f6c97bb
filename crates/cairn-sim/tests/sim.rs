//! The simulation as CI runs it: a few hundred seeds must keep every
//! invariant, a seed must replay byte for byte, the checks must catch a
//! store that acknowledges before it syncs, and the simulated store must
//! keep the `RunStore` contract itself.

use std::sync::Arc;
use std::time::Instant;

use cairn_sim::clock::SimClock;
use cairn_sim::exec::{self, Ran};
use cairn_sim::store::{Durability, SimStore};
use cairn_sim::trace::Trace;

/// Seeds CI runs: `CAIRN_SIM_SEEDS` or 300.
fn seeds() -> u64 {
    std::env::var("CAIRN_SIM_SEEDS").ok().and_then(|v| v.parse().ok()).unwrap_or(300)
}

#[test]
fn every_seed_keeps_the_durability_contract() {
    let n = seeds();
    // Wall time is read only to report the speed.
    let began = Instant::now();
    let found = cairn_sim::sweep(0..n);
    let failed: Vec<String> =
        found.failed.iter().map(|(seed, broken)| format!("seed {seed}: {}", broken.join("; "))).collect();
    let (crashes, cuts, errors, calls) = (found.crashes, found.power_cuts, found.errors, found.calls);
    println!(
        "{n} seeds: {} failed; {crashes} process crashes, {cuts} power cuts, {errors} failed writes and reads, \
         {calls} port calls, {} decisions at gates, {} reworks and gotos, in {:.1}s",
        failed.len(),
        found.decisions,
        found.reruns,
        began.elapsed().as_secs_f64()
    );
    assert!(crashes > 0 && cuts > 0 && errors > 0, "the seeds injected too few faults");
    assert!(found.decisions > 0 && found.reruns > 0, "the seeds decided at no gate or ran nothing again");
    assert!(failed.is_empty(), "replay with `cargo xtask sim --seed N`:\n{}", failed.join("\n"));
}

#[test]
fn a_seed_replays_byte_for_byte() {
    for seed in 0..25 {
        let (a, b) = (cairn_sim::run_seed(seed), cairn_sim::run_seed(seed));
        assert_eq!(a.faulty.trace, b.faulty.trace, "seed {seed}");
        assert_eq!(a.log(), b.log(), "seed {seed}");
        assert_eq!(a.faulty.polls, b.faulty.polls, "seed {seed}");
    }
}

#[test]
fn a_store_that_acknowledges_before_syncing_is_caught() {
    // Only a power cut can expose it: a killed process leaves the page
    // cache, which recovery syncs.
    let caught = (0..100).find(|&seed| {
        let report = cairn_sim::run_seed_on(seed, Durability::Lying);
        report.broken.iter().any(|b| b.contains("after its success was acknowledged"))
    });
    println!("a lying store is caught first by seed {caught:?}");
    assert!(caught.is_some(), "100 seeds did not catch a store that skips its syncs");
}

/// Runs one check of the conformance suite on a fresh simulated store.
fn conforms<F: std::future::Future<Output = ()>>(check: impl FnOnce(Arc<SimStore>) -> F) {
    let clock = Arc::new(SimClock::new());
    let trace = Arc::new(Trace::new(clock.clone()));
    let store = Arc::new(SimStore::new(clock.clone(), trace, None));
    let ran = exec::run(&clock, check(store), None, &mut 0);
    assert!(matches!(ran, Ran::Done(())), "{ran:?}");
}

macro_rules! conformance {
    ($($name:ident),*) => {
        $(
            #[test]
            fn $name() {
                conforms(|store| async move { cairn_testkit::store_suite::$name(&*store).await });
            }
        )*
    };
}

conformance!(
    create_then_load,
    create_twice_is_refused,
    append_checks_the_expected_sequence,
    unknown_runs_are_not_found,
    list_is_newest_first_with_status,
    snapshots_keep_the_latest,
    delete_removes_everything,
    create_refuses_a_bad_first_event,
    append_is_all_or_nothing,
    load_from_a_sequence_number_returns_the_tail,
    list_filters_by_status_and_workflow,
    list_shows_and_filters_by_labels,
    list_pages_with_limit_and_cursor,
    list_reports_usage_by_model,
    a_fork_counts_only_its_own_usage
);
