//! `cargo xtask bench`: measured, never asserted. Builds the release binary
//! and times it on generated inputs, runs the engine-overhead bench of
//! `cairn-engine` and the durable-execution bench of `cairn-app`;
//! prints a table and writes `target/bench/report.json`.

use std::fmt::Write as _;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use crate::{cargo, root};

/// Repetitions per measurement; the table shows the median and the best.
const RUNS: usize = 15;

pub fn run(_args: &[String]) -> Result<()> {
    cargo(&["build", "--release", "--locked", "-p", "cairn-app", "--bin", "cairn"])?;
    let dir = root().join("target/bench");
    std::fs::create_dir_all(&dir)?;
    let cairn = root().join("target/release/cairn");
    let wf = dir.join("generated-10000.yaml");
    std::fs::write(&wf, generated_workflow(10_000))?;

    let mut rows = Vec::new();
    for (name, args) in [
        ("validate 10,000 steps", vec!["validate", wf.to_str().unwrap_or_default()]),
        ("plan 10,000 steps (json)", vec!["plan", wf.to_str().unwrap_or_default(), "--format", "json"]),
    ] {
        rows.push((name, time_command(&cairn, &args)?));
    }
    let fan_outs = [(1_000, RUNS_FAN_OUT), (10_000, 1)]
        .into_iter()
        .map(|(items, runs)| fan_out_row(&cairn, &dir, items, runs))
        .collect::<Result<Vec<_>>>()?;
    let engine = rows_of(&bench_json("cairn-engine", "overhead")?, "engine")?;
    let provider = rows_of(&bench_json("cairn-llm-http", "provider")?, "provider")?;
    let durable_report = bench_json("cairn-app", "durable")?;
    let durable = rows_of(&durable_report, "durable")?;
    let ratio = durable_report["ratio_chain_to_fsync"].as_f64().unwrap_or(f64::NAN);

    let mut table = format!("{:<38} {:>10} {:>10}   (runs)\n", "benchmark", "median", "best");
    let mut json = Vec::new();
    for (name, (median, best)) in &rows {
        let _ = writeln!(table, "{name:<38} {:>7.1} ms {:>7.1} ms   ({RUNS})", ms(*median), ms(*best));
        json.push(
            serde_json::json!({"name": name, "median_ms": ms(*median), "best_ms": ms(*best), "runs": RUNS}),
        );
    }
    for row in engine.iter().chain(&durable).chain(&fan_outs).chain(&provider) {
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
    print!("{table}");
    let report = serde_json::json!({
        "benchmarks": json,
        "engine": engine,
        "durable": durable,
        "fan_out": fan_outs,
        "provider": provider,
        "durable_ratio_chain_to_fsync": ratio,
    });
    std::fs::write(dir.join("report.json"), serde_json::to_string_pretty(&report)?)?;
    eprintln!("wrote target/bench/report.json");
    Ok(())
}

/// Runs `cargo bench -p <package> --bench <bench> --locked` (the engine
/// overhead of `crates/cairn-engine/benches/overhead.rs`, the durable runs
/// of `crates/cairn-app/benches/durable.rs`) and returns the last
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

/// Repetitions of the 1,000-item fan-out through the binary.
const RUNS_FAN_OUT: usize = 5;

/// `cairn run` of a fan-out over `items` (trivial body, then a reduce), on
/// a fresh data directory with the default `sync` durability, `runs`
/// times: wall time of the whole process, items/s and peak resident memory.
fn fan_out_row(cairn: &Path, dir: &Path, items: usize, runs: usize) -> Result<serde_json::Value> {
    let wf = dir.join(format!("fan-out-{items}.yaml"));
    std::fs::write(&wf, fan_out_workflow(items))?;
    let mut times = Vec::with_capacity(runs);
    let mut peak_kb = 0;
    for _ in 0..runs {
        let data = dir.join("fan-out-data");
        let _ = std::fs::remove_dir_all(&data);
        let start = Instant::now();
        let mut child = Command::new(cairn)
            .args(["run", wf.to_str().unwrap_or_default()])
            .env("CAIRN_DATA_DIR", &data)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .context("starting cairn")?;
        let status_file = format!("/proc/{}/status", child.id());
        let status = loop {
            if let Some(kb) = std::fs::read_to_string(&status_file).ok().and_then(|s| peak_rss_kb(&s)) {
                peak_kb = peak_kb.max(kb);
            }
            if let Some(status) = child.try_wait()? {
                break status;
            }
            std::thread::sleep(Duration::from_millis(2));
        };
        times.push(start.elapsed());
        if !status.success() {
            bail!("the {items}-item fan-out failed: {status}");
        }
    }
    times.sort();
    let (median, best) = (times[times.len() / 2], times[0]);
    eprintln!("fan-out {items}: median {:.1} ms, peak {} KB", ms(median), peak_kb);
    Ok(serde_json::json!({
        "name": format!("cairn run: fan-out {items} items, sync"),
        "items": items,
        "runs": runs,
        "median_ms": ms(median),
        "best_ms": ms(best),
        "items_per_s": (items as f64 / median.as_secs_f64()).round(),
        "peak_rss_mb": (peak_kb as f64 / 102.4).round() / 10.0,
    }))
}

/// `VmHWM` (the peak resident set) of a `/proc/PID/status` text, in KB.
/// Sampled every 2 ms while the process runs, so growth in its very last
/// milliseconds could be missed.
fn peak_rss_kb(status: &str) -> Option<u64> {
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// The fan-out of `cairn_testkit::bench::fan_out`: `items` numbers, 64
/// instances open at once, a trivial `set` each, then a reduce.
fn fan_out_workflow(items: usize) -> String {
    format!(
        "cairn: 1\nid: fanout\ndefaults: {{ max_parallel: 64 }}\nsteps:\n  - id: items\n    set: \"{{{{ range({items}) | list }}}}\"\n  - id: per_item\n    for_each: {{ items: \"{{{{ steps.items.output }}}}\", as: item }}\n    steps:\n      - id: work\n        set: \"{{{{ item * 2 }}}}\"\n  - id: reduce\n    set: \"{{{{ steps.per_item.output | length }}}}\"\n"
    )
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
