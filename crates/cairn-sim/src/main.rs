//! `cairn-sim`: runs seeds of the deterministic simulation and reports
//! what they broke; `cargo xtask sim` runs it.
//!
//! `cairn-sim [--seeds N] [--from S]` runs seeds S to S+N-1 (default 0 and
//! 1000); `cairn-sim --seed S` replays one seed and prints its story.
//! Exits 1 when a seed breaks an invariant, naming the seed.

use std::process::ExitCode;
use std::time::Instant;

fn usage() -> ExitCode {
    eprintln!("usage: cairn-sim [--seeds N] [--from S] | --seed S");
    ExitCode::from(2)
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (mut seeds, mut from, mut one) = (1000_u64, 0_u64, None);
    let mut it = args.iter();
    while let Some(flag) = it.next() {
        let Some(value) = it.next().and_then(|v| v.parse::<u64>().ok()) else { return usage() };
        match flag.as_str() {
            "--seeds" => seeds = value,
            "--from" => from = value,
            "--seed" => one = Some(value),
            _ => return usage(),
        }
    }
    if let Some(seed) = one {
        let report = cairn_sim::run_seed(seed);
        print!("{}", report.explain());
        println!("{}", if report.passed() { "passed" } else { "FAILED" });
        return if report.passed() { ExitCode::SUCCESS } else { ExitCode::FAILURE };
    }
    // Wall time is read only to report the speed, never by a simulation.
    let began = Instant::now();
    let found = cairn_sim::sweep(from..from.saturating_add(seeds));
    for (seed, broken) in &found.failed {
        eprintln!("seed {seed} FAILED: {}", broken.join("; "));
    }
    let failed: Vec<u64> = found.failed.iter().map(|(seed, _)| *seed).collect();
    let (crashes, cuts, errors, calls) = (found.crashes, found.power_cuts, found.errors, found.calls);
    let secs = began.elapsed().as_secs_f64();
    println!(
        "{seeds} seeds from {from}: {} clean, {} failed; {crashes} process crashes, {cuts} power cuts, \
         {errors} failed writes and reads, {calls} port calls, {} decisions at gates, {} reworks and gotos; \
         {secs:.1}s, {:.0} seeds/s",
        seeds - failed.len() as u64,
        failed.len(),
        found.decisions,
        found.reruns,
        seeds as f64 / secs.max(1e-9)
    );
    if failed.is_empty() {
        ExitCode::SUCCESS
    } else {
        eprintln!("replay one with: cargo xtask sim --seed {}", failed[0]);
        ExitCode::FAILURE
    }
}
