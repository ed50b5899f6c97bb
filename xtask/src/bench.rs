//! `cargo xtask bench [--peers]`: measured, never asserted. Builds the
//! release binary and times it on generated inputs and on the workloads
//! W1-W4 (`workloads.rs`), runs the engine-overhead bench of `cairn-engine`,
//! the provider bench, the durable-execution bench of `cairn-app` and the
//! server bench of `cairn-server` (`cairn serve` under load); with
//! `--peers`, the same workloads on LangGraph; prints the tables and
//! writes `target/bench/report.json`.

use std::fmt::Write as _;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use crate::{cargo, root};

/// Repetitions per measurement; the table shows the median and the best.
const RUNS: usize = 15;

pub fn run(args: &[String]) -> Result<()> {
    let flag = |name: &str| args.iter().any(|a| a == name);
    if let Some(other) = args.iter().find(|a| !["--peers", "--workloads", "--postgres"].contains(&a.as_str()))
    {
        bail!("unknown flag {other}; usage: cargo xtask bench [--peers] [--workloads] [--postgres]");
    }
    cargo(&["build", "--release", "--locked", "-p", "cairn", "--bin", "cairn"])?;
    if flag("--postgres") {
        return crate::pgbench::run(&root().join("target/release/cairn"));
    }
    // Every bench compiled before any is timed: a build leaves the kernel
    // writing back its output while the first timings run.
    let mut build_benches = vec!["bench", "--no-run", "--locked"];
    for package in ["cairn-engine", "cairn-llm-http", "cairn-app", "cairn-server"] {
        build_benches.extend(["-p", package]);
    }
    cargo(&build_benches)?;
    let dir = root().join("target/bench");
    std::fs::create_dir_all(&dir)?;
    let cairn = root().join("target/release/cairn");
    if flag("--workloads") {
        return workloads_only(&cairn, &dir, flag("--peers"));
    }
    let with_peers = flag("--peers");
    let wf = dir.join("generated-10000.yaml");
    std::fs::write(&wf, generated_workflow(10_000))?;

    // The CPU-bound library benches first, on a machine at rest: the
    // processes below keep both cores busy for a minute, and the workloads
    // leave the kernel writing back hundreds of megabytes.
    crate::quiesce();
    let engine = rows_of(&bench_json("cairn-engine", "overhead")?, "engine")?;
    let provider = rows_of(&bench_json("cairn-llm-http", "provider")?, "provider")?;
    let mut rows = Vec::new();
    for (name, args) in [
        ("validate 10,000 steps", vec!["validate", wf.to_str().unwrap_or_default()]),
        ("plan 10,000 steps (json)", vec!["plan", wf.to_str().unwrap_or_default(), "--format", "json"]),
    ] {
        rows.push((name, time_command(&cairn, &args)?));
    }
    crate::quiesce();
    let durable_report = bench_json("cairn-app", "durable")?;
    let durable = rows_of(&durable_report, "durable")?;
    let ratio = durable_report["ratio_chain_to_fsync"].as_f64().unwrap_or(f64::NAN);
    let workloads = crate::workloads::run(&cairn)?;
    let scaling = crate::workloads::scaling(&cairn)?;
    // The server last: it spawns the release binary and loads it with
    // thousands of runs and connections.
    crate::quiesce();
    let serve = rows_of(&bench_json("cairn-server", "serve")?, "serve")?;

    let mut table = format!("{:<38} {:>10} {:>10}   (runs)\n", "benchmark", "median", "best");
    let mut json = Vec::new();
    for (name, (median, best)) in &rows {
        let _ = writeln!(table, "{name:<38} {:>7.1} ms {:>7.1} ms   ({RUNS})", ms(*median), ms(*best));
        json.push(
            serde_json::json!({"name": name, "median_ms": ms(*median), "best_ms": ms(*best), "runs": RUNS}),
        );
    }
    for row in engine.iter().chain(&durable).chain(&provider) {
        if let Some(error) = row["error"].as_str() {
            let _ = writeln!(table, "{:<38} {error}", row["name"].as_str().unwrap_or("?"));
            continue;
        }
        let _ = write!(
            table,
            "{:<38} {:>7.1} ms {:>7.1} ms   ({})",
            row["name"].as_str().unwrap_or("?"),
            row["median_ms"].as_f64().unwrap_or(f64::NAN),
            row["best_ms"].as_f64().unwrap_or(f64::NAN),
            row["runs"].as_u64().unwrap_or(0),
        );
        if let Some(rate) = row["steps_per_s"].as_f64() {
            let _ = write!(table, "   {rate:>6.0} steps/s");
        }
        if let Some(rate) = row["ops_per_s"].as_f64() {
            let _ = write!(table, "   {rate:>6.0} fsyncs/s");
        }
        if let Some(rate) = row["items_per_s"].as_f64() {
            let _ = write!(table, "   {rate:>6.0} items/s");
        }
        if let Some(rate) = row["requests_per_s"].as_f64() {
            let _ = write!(table, "   {rate:>6.0} requests/s");
        }
        if let Some(rate) = row["mb_per_s"].as_f64() {
            let _ = write!(table, "   {rate:>6.0} MB/s");
        }
        if let Some(mb) = row["peak_rss_mb"].as_f64() {
            let _ = write!(table, "   peak {mb:.1} MB");
        }
        table.push('\n');
    }
    let _ = writeln!(table, "durable chain steps/s per disk fsync/s: {ratio:.3}");
    let peer = if with_peers { Some(crate::workloads::peers()?) } else { None };
    table.push('\n');
    table.push_str(&crate::workloads::table(&workloads, &durable, peer.as_ref()));
    table.push('\n');
    table.push_str(&serve_table(&serve));
    print!("{table}");
    let report = serde_json::json!({
        "benchmarks": json,
        "engine": engine,
        "durable": durable,
        "workloads": workloads,
        "scaling": scaling,
        "peers": peer,
        "provider": provider,
        "serve": serve,
        "durable_ratio_chain_to_fsync": ratio,
    });
    std::fs::write(dir.join("report.json"), serde_json::to_string_pretty(&report)?)?;
    eprintln!("wrote target/bench/report.json");
    Ok(())
}

/// `--workloads`: only W1-W4, the scaling curves and (with `--peers`) the
/// peer; the table is printed and written to `target/bench/workloads.json`.
fn workloads_only(cairn: &Path, dir: &Path, with_peers: bool) -> Result<()> {
    let workloads = crate::workloads::run(cairn)?;
    let durable = rows_of(&bench_json("cairn-app", "durable")?, "durable")?;
    let scaling = crate::workloads::scaling(cairn)?;
    let peer = if with_peers { Some(crate::workloads::peers()?) } else { None };
    print!("{}", crate::workloads::table(&workloads, &durable, peer.as_ref()));
    let report =
        serde_json::json!({ "workloads": workloads, "durable": durable, "scaling": scaling, "peers": peer });
    std::fs::write(dir.join("workloads.json"), serde_json::to_string_pretty(&report)?)?;
    eprintln!("wrote target/bench/workloads.json");
    Ok(())
}

/// Runs `cargo bench -p <package> --bench <bench> --locked` (the engine
/// overhead of `crates/cairn-engine/benches/overhead.rs`, the durable runs
/// of `crates/cairn-app/benches/durable.rs`, the server of
/// `crates/cairn-server/benches/serve.rs`) and returns the last
/// stdout line that parses as JSON.
fn bench_json(package: &str, bench: &str) -> Result<serde_json::Value> {
    let args = ["bench", "-p", package, "--bench", bench, "--locked"];
    eprintln!("$ cargo {}", args.join(" "));
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let out = Command::new(cargo)
        .args(args)
        .current_dir(root())
        .stderr(std::process::Stdio::inherit())
        .output()
        .context("running cargo bench")?;
    if !out.status.success() {
        bail!("`cargo {}` failed with {}", args.join(" "), out.status);
    }
    let stdout = String::from_utf8_lossy(&out.stdout);
    stdout
        .lines()
        .rev()
        .find_map(|line| serde_json::from_str::<serde_json::Value>(line.trim()).ok())
        .with_context(|| format!("the {bench} bench printed no JSON line"))
}

/// The rows of the server bench (`crates/cairn-server/benches/serve.rs`):
/// each its name and its one-line summary (or why it has no figures).
fn serve_table(rows: &[serde_json::Value]) -> String {
    let mut table = String::from("cairn serve (details in report.json)\n");
    for row in rows {
        let name = row["name"].as_str().unwrap_or("?");
        let text = row["summary"].as_str().or_else(|| row["error"].as_str()).unwrap_or("?");
        let _ = writeln!(table, "  {name}\n      {text}");
    }
    table
}

/// The list under `key` in a bench's JSON line.
fn rows_of(report: &serde_json::Value, key: &str) -> Result<Vec<serde_json::Value>> {
    match report.get(key).and_then(serde_json::Value::as_array) {
        Some(rows) => Ok(rows.clone()),
        None => bail!("the bench's JSON has no `{key}` list: {report}"),
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// Runs the binary `RUNS` times; returns (median, best) wall time.
fn time_command(bin: &Path, args: &[&str]) -> Result<(Duration, Duration)> {
    let mut times = Vec::with_capacity(RUNS);
    for _ in 0..RUNS {
        let start = Instant::now();
        let out =
            Command::new(bin).args(args).output().with_context(|| format!("running {}", bin.display()))?;
        times.push(start.elapsed());
        if !out.status.success() {
            bail!("{} {} failed: {}", bin.display(), args.join(" "), String::from_utf8_lossy(&out.stdout));
        }
    }
    times.sort();
    Ok((times[RUNS / 2], times[0]))
}

/// A workflow of `n` agent steps in a realistic shape: groups of ten that
/// fan out from a root and join, each prompt reading inputs and a needed
/// step's output.
pub fn generated_workflow(n: usize) -> String {
    let mut out = String::from(
        "cairn: 1\nid: generated\ninputs:\n  topic: { type: string, required: true }\nagents:\n  worker:\n    system: You are terse.\nsteps:\n",
    );
    for i in 0..n {
        let group = i / 10;
        let _ = writeln!(out, "  - id: s{i}");
        match i % 10 {
            0 if group == 0 => out.push_str("    needs: []\n"),
            0 => {
                let _ = writeln!(out, "    needs: [s{}]", i - 1);
            }
            9 => {
                let needs: Vec<String> = (i - 8..i).map(|j| format!("s{j}")).collect();
                let _ = writeln!(out, "    needs: [{}]", needs.join(", "));
            }
            _ => {
                let _ = writeln!(out, "    needs: [s{}]", group * 10);
            }
        }
        out.push_str("    agent: worker\n");
        if i == 0 {
            out.push_str("    prompt: \"Start on {{ inputs.topic }}\"\n");
        } else {
            let read = if i % 10 == 0 { i - 1 } else { group * 10 };
            let _ = writeln!(
                out,
                "    prompt: \"Step {i} on {{{{ inputs.topic }}}} after {{{{ steps.s{read}.output }}}}\""
            );
        }
    }
    out
}
