//! Project automation, run as `cargo xtask <task>`:
//!
//! - `ci`: format check, clippy with `-D warnings`, every test, a short
//!   schemathesis run against the API, and the web UI's checks. What CI runs.
//! - `postgres`: the test database made ready (`ci` does it first): the
//!   installed cluster started, the role and `cairn_test` created.
//! - `bench [--peers]`: the benchmarks, printed as a table and written to
//!   `target/bench/report.json`; `--peers` runs the same workloads on
//!   LangGraph.
//! - `crash [--kills N]`: the kill -9 crash test with more kills than CI.
//! - `sim [--seeds N] [--seed S]`: the deterministic simulation over more
//!   seeds than CI, or one seed replayed with its trace.
//! - `faults [damage|disk]`: the damage battery on store files (no root)
//!   and checks that need root, such as a disk filling up mid-run.
//! - `cassettes`: records the examples' cassettes (`examples/cassettes/`).
//! - `litellm`: a run against a real OpenAI-compatible server process (the
//!   LiteLLM proxy) on loopback.
//! - `fuzz [--seconds N] [--keep] [TARGET...]`: the `cargo fuzz` targets of
//!   `fuzz/` on nightly, N seconds each (default 180), executions and
//!   crashes per target.
//! - `schemathesis [--quick]`: every operation of the API fuzzed by
//!   schemathesis against a live server, from its OpenAPI document: no
//!   server errors, every answer as documented (`--quick`: fewer examples).
//! - `ui [--shots] [--perf]`: the web UI: its typed client and built assets
//!   checked against what `ui/` makes, its component tests, its browser
//!   tests in Chromium against `cairn serve` (`--shots`: the screenshots
//!   into `docs/ui/`; `--perf`: its performance figures, release binary).
//!
//! Tidy checks (crate docs, dependency edges, no ignored tests) are plain
//! `#[test]`s in this crate, so `ci` runs them with the rest.

mod bench;
mod cassettes;
mod faults;
mod fuzz;
mod litellm;
mod pgbench;
mod postgres;
mod schemathesis;
mod sim;
#[cfg(test)]
mod tidy;
mod ui;
mod workloads;

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("ci") => ci(),
        Some("postgres") => postgres::ensure(),
        Some("nemesis") => nemesis(&args[1..]),
        Some("bench") => bench::run(&args[1..]),
        Some("crash") => crash(&args[1..]),
        Some("sim") => sim::run(&args[1..]),
        Some("faults") => faults::run(&args[1..]),
        Some("cassettes") => cassettes::run(),
        Some("litellm") => litellm::run(),
        Some("fuzz") => fuzz::run(&args[1..]),
        Some("schemathesis") => schemathesis::run(&args[1..]),
        Some("ui") => ui::run(&args[1..]),
        _ => {
            eprintln!(
                "usage: cargo xtask <ci|postgres|nemesis|bench|crash|sim|faults|cassettes|litellm|fuzz|schemathesis|ui>"
            );
            eprintln!("  ci                 fmt check, clippy -D warnings, all tests");
            eprintln!(
                "  nemesis [--short]  3 workers on PostgreSQL killed, frozen, the database restarted (100 runs; 30)"
            );
            eprintln!("  bench [--peers]    benchmarks (and LangGraph's); target/bench/report.json");
            eprintln!(
                "  bench --postgres   W1-W3, workers 1/2/4 and failover on PostgreSQL; target/bench/postgres.json"
            );
            eprintln!("  crash [--kills N]  the kill -9 crash test, N kills per scenario (default 500)");
            eprintln!("  sim [--seeds N]    deterministic simulation of N seeds; --seed S replays one");
            eprintln!("  faults [damage|disk]  damaged store files (1,200 offsets); a full disk (root)");
            eprintln!("  cassettes          record examples/cassettes/*.jsonl from their answers");
            eprintln!("  litellm            a run against the LiteLLM proxy on loopback (installs it)");
            eprintln!(
                "  fuzz [--seconds N] [--keep] [TARGET...]  the fuzz targets on nightly, N s each (default 180)"
            );
            eprintln!(
                "  schemathesis [--quick]  the API fuzzed from its OpenAPI document against a live server"
            );
            eprintln!(
                "  ui [--shots] [--perf]  the web UI: its build checked, its tests in Chromium; screenshots, figures"
            );
            bail!("unknown task")
        }
    }
}

/// The workspace root (the parent of this crate's folder).
pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().map(Path::to_path_buf).unwrap_or_default()
}

/// `cargo test -p cairn-e2e` with `CAIRN_E2E_SERVED=1`.
fn served_cli_suite() -> Result<()> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let args = [
        "test",
        "--locked",
        "-p",
        "cairn-e2e",
        "--test",
        "e2e",
        "--",
        "--skip",
        "crash::",
        "--skip",
        "serve::",
    ];
    eprintln!("$ CAIRN_E2E_SERVED=1 cargo {}", args.join(" "));
    let status = Command::new(cargo)
        .args(args)
        .env("CAIRN_E2E_SERVED", "1")
        .current_dir(root())
        .status()
        .context("running cargo")?;
    if !status.success() {
        bail!("the command-line tests through a server failed with {status}");
    }
    Ok(())
}

/// Builds the debug binaries (`target/debug/cairn` among them) with the
/// targets `cargo test --workspace` builds, so features resolve the same
/// way and a build after the tests finds everything built already (a
/// narrower `-p cairn` resolves features otherwise and compiles a second
/// copy of every dependency).
pub fn build_debug_binaries() -> Result<()> {
    cargo(&["build", "--locked", "--workspace", "--tests", "--bins"])
}

/// Runs `cargo` with `args` in the workspace root, failing on a non-zero exit.
pub fn cargo(args: &[&str]) -> Result<()> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    eprintln!("$ cargo {}", args.join(" "));
    let status = Command::new(cargo).args(args).current_dir(root()).status().context("running cargo")?;
    if !status.success() {
        bail!("`cargo {}` failed with {status}", args.join(" "));
    }
    Ok(())
}

/// Waits for the kernel to write back what earlier measurements left
/// dirty (`sync`), so that it does not run during the next one.
pub fn quiesce() {
    let _ = Command::new("sync").status();
}

/// Runs `command`, echoing it, failing on a non-zero exit.
pub fn run_cmd(command: &mut Command) -> Result<()> {
    eprintln!("$ {command:?}");
    let status = command.status().with_context(|| format!("running {command:?}"))?;
    if !status.success() {
        bail!("{command:?} failed with {status}");
    }
    Ok(())
}

/// A Python venv at `target/NAME` (made when missing) with the pinned
/// packages of `requirements` (a path from the workspace root) installed.
pub fn python_venv(name: &str, requirements: &str) -> Result<PathBuf> {
    let venv = root().join("target").join(name);
    let python = venv.join("bin/python");
    if !python.exists() {
        run_cmd(Command::new("python3").args(["-m", "venv"]).arg(&venv))?;
    }
    run_cmd(
        Command::new(&python).args(["-m", "pip", "install", "--quiet", "-r"]).arg(root().join(requirements)),
    )?;
    Ok(venv)
}

/// The crash test of `tests/e2e/crash.rs`, with more kills per scenario
/// than CI lands (each kill with a call in flight; 0 is refused).
fn crash(args: &[String]) -> Result<()> {
    let kills = match args {
        [] => "500".to_owned(),
        [flag, n] if flag == "--kills" && n.parse::<usize>().is_ok_and(|n| n > 0) => n.clone(),
        _ => bail!("usage: cargo xtask crash [--kills N], N > 0 kills per scenario"),
    };
    let cargo_bin = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    eprintln!("$ CAIRN_CRASH_KILLS={kills} cargo test -p cairn-e2e crash -- --nocapture");
    let status = Command::new(cargo_bin)
        .args(["test", "--locked", "-p", "cairn-e2e", "crash", "--", "--nocapture"])
        .env("CAIRN_CRASH_KILLS", &kills)
        .current_dir(root())
        .status()
        .context("running cargo")?;
    if !status.success() {
        bail!("the crash test failed");
    }
    Ok(())
}

/// The nemesis test (`tests/e2e/nemesis.rs`): 100 runs, or 30 with
/// `--short`, on three workers killed, frozen past their lease, and their
/// database restarted. Run alone: restarting the database would break the
/// other tests that use it.
fn nemesis(args: &[String]) -> Result<()> {
    let runs = match args {
        [] => "100",
        [flag] if flag == "--short" => "30",
        _ => bail!("usage: cargo xtask nemesis [--short]"),
    };
    postgres::ensure()?;
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let args = ["test", "-p", "cairn-e2e", "--test", "e2e", "--locked", "nemesis", "--", "--nocapture"];
    eprintln!("$ CAIRN_NEMESIS_RUNS={runs} cargo {}", args.join(" "));
    let status = Command::new(cargo)
        .args(args)
        .env("CAIRN_NEMESIS_RUNS", runs)
        .current_dir(root())
        .status()
        .context("running cargo")?;
    if !status.success() {
        bail!("the nemesis test failed");
    }
    Ok(())
}

fn ci() -> Result<()> {
    cargo(&["fmt", "--all", "--", "--check"])?;
    cargo(&["clippy", "--workspace", "--all-targets", "--locked", "--", "-D", "warnings"])?;
    // The PostgreSQL store's tests use a real database.
    postgres::ensure()?;
    cargo(&["test", "--workspace", "--locked"])?;
    // The command line's end-to-end tests again, each verb through a
    // `cairn serve` holding the data directory: the same output and exit
    // codes either way. (The crash harness and the server's own tests
    // start their servers themselves.)
    served_cli_suite()?;
    // Workers on one database under faults (alone: it restarts PostgreSQL).
    nemesis(&["--short".to_owned()])?;
    // The API fuzzed against its own OpenAPI document: no server error,
    // no answer outside its schema.
    schemathesis::run(&["--quick".to_owned()])?;
    // The web UI: built from its lockfile into the committed assets, and
    // used in a real browser.
    ui::run(&[])?;
    eprintln!("ci: all checks passed");
    Ok(())
}
