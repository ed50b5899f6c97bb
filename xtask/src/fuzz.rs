//! `cargo xtask fuzz [--seconds N] [--keep] [TARGET...]`: runs each
//! `cargo fuzz` target of `fuzz/` (the definition reader, the template
//! renderer, the SSE parser) for N seconds (180 by default) on the nightly
//! toolchain, installing cargo-fuzz first when it is missing, and prints
//! the executions and crashes of each.
//!
//! The committed corpus (`fuzz/corpus/<target>/`) seeds each run but is
//! never written by it: new inputs go to `fuzz/target/corpus/<target>/`,
//! so a run leaves the tree clean. `--keep` merges them into the committed
//! corpus afterwards, adding only inputs that reach code the corpus did not
//! (libFuzzer's `-merge=1`, counting edges, not hit counts); the stable test `fuzz_corpus` of each crate
//! replays that corpus on every CI run. A crash is saved under
//! `fuzz/artifacts/<target>/` and fails the task, with the commands that
//! reproduce and minimise it.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

use anyhow::{Context, Result, bail};

use crate::root;

/// The targets, in the order they run.
const TARGETS: [&str; 3] = ["definition", "template", "sse"];

/// Seconds per target when `--seconds` is not given.
const DEFAULT_SECONDS: u64 = 180;

/// The longest one input may take before libFuzzer calls it a hang: the
/// template fuel allows about a second, so ten is a real hang.
const TIMEOUT_SECONDS: u64 = 10;

/// What one target's run measured.
struct Report {
    target: &'static str,
    seconds: f64,
    executions: Option<u64>,
    exec_per_second: Option<u64>,
    new_inputs: Option<u64>,
    peak_rss_mb: Option<u64>,
    crashes: Vec<PathBuf>,
    /// Why the run failed without saving an input (a bad flag, a build
    /// problem): the target was not fuzzed.
    failure: Option<String>,
}

/// Runs the task with the arguments after `fuzz`.
pub fn run(args: &[String]) -> Result<()> {
    let mut seconds = DEFAULT_SECONDS;
    let mut keep = false;
    let mut targets = Vec::new();
    let mut args = args.iter();
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--seconds" => {
                seconds = args
                    .next()
                    .and_then(|n| n.parse().ok())
                    .filter(|n| *n > 0)
                    .context("--seconds takes a whole number of seconds above 0")?;
            }
            "--keep" => keep = true,
            name => match TARGETS.iter().find(|t| **t == name) {
                Some(target) => targets.push(*target),
                None => bail!("usage: cargo xtask fuzz [--seconds N] [--keep] [{}]...", TARGETS.join("|")),
            },
        }
    }
    if targets.is_empty() {
        targets = TARGETS.to_vec();
    }
    ensure_cargo_fuzz()?;
    // One build for every target, with the debug assertions (overflow
    // checks) the stable replay tests run with.
    crate::run_cmd(nightly().args(["fuzz", "build", "--debug-assertions"]))?;
    let mut reports = Vec::new();
    for target in targets {
        reports.push(fuzz(target, seconds)?);
        if keep {
            merge(target)?;
        }
    }
    print(&reports);
    let failed: Vec<&Report> = reports.iter().filter(|r| r.failure.is_some()).collect();
    for report in &failed {
        eprintln!("{}: {}", report.target, report.failure.as_deref().unwrap_or_default());
    }
    let crashed: Vec<&Report> = reports.iter().filter(|r| !r.crashes.is_empty()).collect();
    if crashed.is_empty() && failed.is_empty() {
        return Ok(());
    }
    for report in &crashed {
        for input in &report.crashes {
            let input = input.strip_prefix(root()).unwrap_or(input).display();
            eprintln!("{}: {input}", report.target);
            eprintln!("  reproduce: cargo +nightly fuzz run --debug-assertions {} {input}", report.target);
            eprintln!("  minimise:  cargo +nightly fuzz tmin --debug-assertions {} {input}", report.target);
        }
    }
    if crashed.is_empty() {
        bail!("a fuzz target did not run");
    }
    bail!("a fuzz target crashed")
}

/// `cargo +nightly` through rustup, in the workspace root, free of the
/// stable toolchain this task was started with.
fn nightly() -> Command {
    let mut command = Command::new("cargo");
    command
        .arg("+nightly")
        .current_dir(root())
        .env_remove("CARGO")
        .env_remove("RUSTC")
        .env_remove("RUSTUP_TOOLCHAIN");
    command
}

/// Installs cargo-fuzz when `cargo +nightly fuzz` is not there.
fn ensure_cargo_fuzz() -> Result<()> {
    let found = |mut command: Command| {
        command.stdout(Stdio::null()).stderr(Stdio::null()).status().is_ok_and(|s| s.success())
    };
    let mut version = nightly();
    version.arg("--version");
    if !found(version) {
        bail!("cargo fuzz needs the nightly toolchain: rustup toolchain install nightly");
    }
    let mut fuzz = nightly();
    fuzz.args(["fuzz", "--version"]);
    if !found(fuzz) {
        crate::run_cmd(
            Command::new("cargo")
                .args(["install", "cargo-fuzz", "--locked"])
                .env_remove("CARGO")
                .env_remove("RUSTUP_TOOLCHAIN"),
        )?;
    }
    Ok(())
}

/// The folders of `target`: the committed corpus, the scratch corpus new
/// inputs go to, and where crashes are saved.
fn folders(target: &str) -> (PathBuf, PathBuf, PathBuf) {
    let fuzz = root().join("fuzz");
    (
        fuzz.join("corpus").join(target),
        fuzz.join("target").join("corpus").join(target),
        fuzz.join("artifacts").join(target),
    )
}

/// The files in `dir`, none when it does not exist.
fn files(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> =
        fs::read_dir(dir).into_iter().flatten().flatten().map(|e| e.path()).filter(|p| p.is_file()).collect();
    files.sort();
    files
}

/// Fuzzes `target` for `seconds`, its log in `fuzz/target/logs/`.
fn fuzz(target: &'static str, seconds: u64) -> Result<Report> {
    let (committed, scratch, artifacts) = folders(target);
    fs::create_dir_all(&scratch).with_context(|| format!("creating {}", scratch.display()))?;
    let before = files(&artifacts);
    let logs = root().join("fuzz/target/logs");
    fs::create_dir_all(&logs).context("creating fuzz/target/logs")?;
    let log_path = logs.join(format!("{target}.log"));
    let log = fs::File::create(&log_path).with_context(|| format!("creating {}", log_path.display()))?;
    let dict = root().join("fuzz/dicts").join(format!("{target}.dict"));
    let mut command = nightly();
    command
        .args(["fuzz", "run", "--debug-assertions", target])
        .arg(&scratch)
        .arg(&committed)
        .arg("--")
        .arg(format!("-max_total_time={seconds}"))
        .arg(format!("-timeout={TIMEOUT_SECONDS}"))
        .arg(format!("-dict={}", dict.display()))
        .arg("-print_final_stats=1")
        .stdout(Stdio::null())
        .stderr(log.try_clone().context("sharing the log")?);
    eprintln!("$ {command:?}  (log: {})", log_path.display());
    let started = Instant::now();
    let status = command.status().context("running cargo fuzz")?;
    let elapsed = started.elapsed().as_secs_f64();
    let text = fs::read_to_string(&log_path).unwrap_or_default();
    let crashes: Vec<PathBuf> = files(&artifacts)
        .into_iter()
        .filter(|p| !before.contains(p))
        .filter(|p| p.file_name().and_then(|n| n.to_str()).is_some_and(|n| !n.starts_with("slow-unit-")))
        .collect();
    let failure = (!status.success() && crashes.is_empty()).then(|| {
        let tail: Vec<&str> = text.lines().rev().take(15).collect();
        for line in tail.into_iter().rev() {
            eprintln!("  {line}");
        }
        format!(
            "`cargo fuzz run {target}` failed with {status} and saved no input: see {}",
            log_path.display()
        )
    });
    Ok(Report {
        target,
        seconds: fuzzed_seconds(&text).unwrap_or(elapsed),
        executions: stat(&text, "number_of_executed_units").or_else(|| last_status(&text)),
        exec_per_second: stat(&text, "average_exec_per_sec"),
        new_inputs: stat(&text, "new_units_added"),
        peak_rss_mb: stat(&text, "peak_rss_mb"),
        crashes,
        failure,
    })
}

/// Merges the inputs of the scratch corpus that reach new code into the
/// committed one: new edges only, not new hit counts of known ones
/// (`-use_counters=0`), so the committed corpus stays small.
fn merge(target: &str) -> Result<()> {
    let (committed, scratch, _) = folders(target);
    crate::run_cmd(
        nightly().args(["fuzz", "run", "--debug-assertions", target]).arg(&committed).arg(&scratch).args([
            "--",
            "-merge=1",
            "-use_counters=0",
        ]),
    )
}

/// A `stat::NAME: VALUE` line of libFuzzer's final statistics.
fn stat(log: &str, name: &str) -> Option<u64> {
    let prefix = format!("stat::{name}:");
    log.lines().rev().find_map(|l| l.strip_prefix(&prefix)).and_then(|v| v.trim().parse().ok())
}

/// The seconds libFuzzer fuzzed (`Done N runs in S second(s)`), which
/// leave out the build `cargo fuzz run` starts with.
fn fuzzed_seconds(log: &str) -> Option<f64> {
    log.lines()
        .rev()
        .find_map(|l| l.strip_prefix("Done ")?.split(" runs in ").nth(1)?.split(' ').next()?.parse().ok())
}

/// The execution count of libFuzzer's last `#N ...` status line, for a run
/// that ended before its final statistics.
fn last_status(log: &str) -> Option<u64> {
    log.lines().rev().find_map(|l| l.strip_prefix('#')?.split_whitespace().next()?.parse().ok())
}

/// The table of every target's figures.
fn print(reports: &[Report]) {
    let figure = |n: Option<u64>| n.map_or_else(|| "?".to_owned(), |n| n.to_string());
    println!(
        "{:<11} {:>8} {:>12} {:>8} {:>10} {:>8} {:>8}",
        "target", "seconds", "executions", "exec/s", "new inputs", "rss MB", "crashes"
    );
    for r in reports {
        println!(
            "{:<11} {:>8.0} {:>12} {:>8} {:>10} {:>8} {:>8}",
            r.target,
            r.seconds,
            figure(r.executions),
            figure(r.exec_per_second),
            figure(r.new_inputs),
            figure(r.peak_rss_mb),
            if r.failure.is_some() { "-".to_owned() } else { r.crashes.len().to_string() }
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_libfuzzer_statistics_and_status_lines() {
        let log = "#2\tINITED cov: 10 ft: 12 corp: 3/40b exec/s: 0 rss: 30Mb\n#4096\tpulse  cov: 11\n\
                   Done 5000 runs in 2 second(s)\nstat::number_of_executed_units: 5000\n\
                   stat::average_exec_per_sec:     2500\nstat::new_units_added:          7\n";
        assert_eq!(stat(log, "number_of_executed_units"), Some(5000));
        assert_eq!(stat(log, "average_exec_per_sec"), Some(2500));
        assert_eq!(stat(log, "new_units_added"), Some(7));
        assert_eq!(stat(log, "peak_rss_mb"), None);
        assert_eq!(fuzzed_seconds(log), Some(2.0));
        assert_eq!(
            last_status("#2\tINITED cov: 10\n#4096\tpulse  cov: 11\n==1== ERROR: deadly signal\n"),
            Some(4096)
        );
    }
}
