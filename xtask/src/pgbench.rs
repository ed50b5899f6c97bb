//! `cargo xtask bench --postgres`: cairn on PostgreSQL (the installed
//! cluster, a schema of its own per measurement). W1 (a 200-step chain)
//! and W2 (a 1,000-item fan-out) through `cairn --store URL run`; W3 (200
//! runs of 10 steps, all at once) through one `cairn serve`; steps per
//! second with 1, 2 and 4 workers on one database, with trivial steps and
//! with 200 ms model latency; and the failover time, from a worker's
//! `SIGKILL` to its run moving again on another. Written to
//! `target/bench/postgres.json` and printed as a table.

use std::fmt::Write as _;
use std::io::{BufRead, BufReader, Read, Write};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use serde_json::json;

use crate::root;
use crate::workloads::{chain_workflow, fan_out_workflow};

/// The database the schemas are made in.
const DATABASE: &str = "postgres:///cairn_test?host=/var/run/postgresql";

/// A fresh schema `name`: the store URL that uses it.
fn schema(name: &str) -> Result<String> {
    let sql = format!("DROP SCHEMA IF EXISTS bench_{name} CASCADE; CREATE SCHEMA bench_{name}");
    let made = Command::new("psql").args(["-q", DATABASE, "-c", &sql]).output()?;
    if !made.status.success() {
        bail!("psql: {}", String::from_utf8_lossy(&made.stderr));
    }
    Ok(format!("{DATABASE}&options=-c%20search_path%3Dbench_{name}"))
}

/// One value `sql` selects in the store at `url`.
fn select(url: &str, sql: &str) -> Result<String> {
    let out = Command::new("psql").args(["-qAt", url, "-c", sql]).output()?;
    if !out.status.success() {
        bail!("psql: {}", String::from_utf8_lossy(&out.stderr));
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

/// Seconds from `run`'s `run_started` to its last event, by its own clock.
fn run_seconds(url: &str, run: &str) -> Result<f64> {
    let span = select(
        url,
        &format!(
            "SELECT max((body::json->>'at')::bigint) - min((body::json->>'at')::bigint) FROM cairn_events \
             WHERE run_id = '{run}' AND (seq > 1)"
        ),
    )?;
    Ok(span.parse::<f64>().context("a run's span")?.max(1.0) / 1000.0)
}

fn median(mut xs: Vec<f64>) -> f64 {
    xs.sort_by(f64::total_cmp);
    xs.get(xs.len() / 2).copied().unwrap_or(f64::NAN)
}

/// `cairn --store URL ARGS`, which must succeed.
fn cairn_on(cairn: &Path, url: &str, args: &[&str]) -> Result<()> {
    let status = Command::new(cairn)
        .args(args)
        .env("CAIRN_STORE", url)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()?;
    if !status.success() {
        bail!("cairn {args:?} exited with {:?}", status.code());
    }
    Ok(())
}

/// The median rate of `workflow` (`units` steps or items) run `rounds`
/// times through `cairn --store URL run`, each in a fresh schema `name`,
/// after one run to warm up.
fn one_process(cairn: &Path, name: &str, workflow: &Path, units: usize, rounds: usize) -> Result<f64> {
    let mut rates = Vec::new();
    for round in 0..=rounds {
        let url = schema(name)?;
        cairn_on(cairn, &url, &["--llm", "mock", "run", path(workflow), "--run-id", name])?;
        if round > 0 {
            rates.push(units as f64 / run_seconds(&url, name)?);
        }
    }
    Ok(median(rates))
}

/// A `cairn serve` worker on `url`, and its address.
struct Worker {
    child: Child,
    address: String,
}

impl Worker {
    fn start(cairn: &Path, url: &str, dir: &Path, env: &[(&str, &str)]) -> Result<Self> {
        std::fs::create_dir_all(dir)?;
        let mut child = Command::new(cairn)
            .args(["--llm", "mock", "serve", "--listen", "127.0.0.1:0", "--auth", "none"])
            .env("CAIRN_STORE", url)
            .env("CAIRN_DATA_DIR", dir)
            .envs(env.iter().copied())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()?;
        let stderr = child.stderr.take().context("stderr")?;
        let mut lines = BufReader::new(stderr).lines();
        let address = loop {
            let Some(line) = lines.next() else { bail!("the worker exited before listening") };
            if let Some(url) = line?.strip_prefix("cairn serve listening on http://") {
                break url.to_owned();
            }
        };
        std::thread::spawn(move || lines.for_each(drop));
        Ok(Self { child, address })
    }

    /// Starts a run of `definition` through this worker.
    fn start_run(&self, definition: &str, id: &str) -> Result<()> {
        let body = json!({"definition": definition, "run_id": id}).to_string();
        let mut stream = std::net::TcpStream::connect(&self.address)?;
        let request = format!(
            "POST /api/v1/runs HTTP/1.1\r\nHost: {}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            self.address,
            body.len()
        );
        stream.write_all(request.as_bytes())?;
        let mut answer = String::new();
        stream.read_to_string(&mut answer)?;
        if !answer.starts_with("HTTP/1.1 201") {
            bail!("run {id} did not start: {answer}");
        }
        Ok(())
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Waits until `count` runs of the store at `url` have completed; the
/// seconds from `since`.
fn completed(url: &str, count: usize, since: Instant, limit: Duration) -> Result<f64> {
    loop {
        let done: usize =
            select(url, "SELECT count(*) FROM cairn_runs WHERE status = 'completed'")?.parse()?;
        if done >= count {
            return Ok(since.elapsed().as_secs_f64());
        }
        if since.elapsed() > limit {
            bail!("only {done} of {count} runs completed in {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// `runs` runs of `definition` (of `steps` steps each), started evenly
/// through `workers` workers at once: steps per second until all completed.
fn throughput(
    cairn: &Path,
    name: &str,
    workers: usize,
    runs: usize,
    steps: usize,
    definition: &str,
    env: &[(&str, &str)],
) -> Result<f64> {
    let url = schema(name)?;
    let dir = root().join("target/bench/postgres").join(name);
    let pool: Vec<Worker> = (0..workers)
        .map(|i| Worker::start(cairn, &url, &dir.join(format!("w{i}")), env))
        .collect::<Result<_>>()?;
    let since = Instant::now();
    for n in 0..runs {
        pool[n % workers].start_run(definition, &format!("r{n}"))?;
    }
    let secs = completed(&url, runs, since, Duration::from_secs(600))?;
    Ok((runs * steps) as f64 / secs)
}

/// A chain of `n` `set` steps: no model, only the engine and the store.
fn trivial_chain(n: usize) -> String {
    let mut out = String::from("cairn: 1\nid: trivial\nsteps:\n");
    for i in 0..n {
        let _ = writeln!(out, "  - id: s{i}\n    set: {i}");
    }
    out
}

/// From a worker's `SIGKILL` to the next event of its run, committed by
/// another worker, with leases of `lease`.
fn failover(cairn: &Path, lease: &str, round: usize) -> Result<f64> {
    let name = format!("failover_{}_{round}", lease.replace(|c: char| !c.is_ascii_alphanumeric(), ""));
    let url = schema(&name)?;
    let dir = root().join("target/bench/postgres").join(&name);
    std::fs::create_dir_all(&dir)?;
    std::fs::write(dir.join("cairn.toml"), format!("[store]\nlease = \"{lease}\"\n"))?;
    let config = dir.join("cairn.toml");
    let env = [("CAIRN_CONFIG", config.to_str().unwrap_or_default()), ("CAIRN_MOCK_LATENCY", "200ms")];
    let first = Worker::start(cairn, &url, &dir.join("a"), &env)?;
    first.start_run(&chain_workflow(200, None), "long")?;
    std::thread::sleep(Duration::from_secs(3));
    let _second = Worker::start(cairn, &url, &dir.join("b"), &env)?;
    std::thread::sleep(Duration::from_secs(1));
    let last = |url: &str| select(url, "SELECT last_seq FROM cairn_runs WHERE run_id = 'long'");
    drop(first);
    let killed = Instant::now();
    let before = last(&url)?;
    loop {
        if last(&url)? != before {
            return Ok(killed.elapsed().as_secs_f64());
        }
        if killed.elapsed() > Duration::from_secs(120) {
            bail!("the run never moved again");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

pub fn run(cairn: &Path) -> Result<()> {
    crate::postgres::ensure()?;
    let dir = root().join("target/bench/postgres");
    std::fs::create_dir_all(&dir)?;

    crate::quiesce();
    let chain = dir.join("chain-200.yaml");
    std::fs::write(&chain, chain_workflow(200, None))?;
    let w1 = one_process(cairn, "w1", &chain, 200, 4)?;
    let fan = dir.join("fan-out-1000.yaml");
    std::fs::write(&fan, fan_out_workflow(1_000))?;
    let w2 = one_process(cairn, "w2", &fan, 1_000, 3)?;
    let ten = chain_workflow(10, None);
    let w3 =
        median((0..3).map(|_| throughput(cairn, "w3", 1, 200, 10, &ten, &[])).collect::<Result<Vec<_>>>()?);
    eprintln!("postgres: W1 {w1:.0} steps/s, W2 {w2:.0} items/s, W3 {w3:.0} steps/s");

    let trivial = trivial_chain(10);
    let slow = chain_workflow(5, None);
    let mut workers = Vec::new();
    for n in [1, 2, 4] {
        crate::quiesce();
        let trivial_rate = throughput(cairn, &format!("trivial_{n}"), n, 400, 10, &trivial, &[])?;
        let agent_rate = throughput(cairn, &format!("agent_{n}"), n, 400, 10, &ten, &[])?;
        let slow_rate =
            throughput(cairn, &format!("slow_{n}"), n, 400, 5, &slow, &[("CAIRN_MOCK_LATENCY", "200ms")])?;
        let row = json!({"workers": n, "set_steps_per_s": trivial_rate.round(), "mock_agent_steps_per_s": agent_rate.round(), "steps_200ms_per_s": slow_rate.round()});
        eprintln!("postgres workers {row}");
        workers.push(row);
    }
    let mut failovers = Vec::new();
    for lease in ["2s", "10s"] {
        let times = (0..3).map(|round| failover(cairn, lease, round)).collect::<Result<Vec<_>>>()?;
        let row = json!({"lease": lease, "median_s": (median(times.clone()) * 100.0).round() / 100.0, "each_s": times.iter().map(|t| (t * 100.0).round() / 100.0).collect::<Vec<_>>()});
        eprintln!("postgres failover {row}");
        failovers.push(row);
    }

    let mut table = String::from("PostgreSQL (one local cluster; cargo xtask bench --postgres)\n");
    let _ = writeln!(table, "W1 200-step chain (one process)        {w1:>8.0} steps/s");
    let _ = writeln!(table, "W2 1,000-item fan-out (one process)    {w2:>8.0} items/s");
    let _ = writeln!(table, "W3 200 runs x 10 steps (one worker)    {w3:>8.0} steps/s");
    let _ = writeln!(
        table,
        "{:<8} {:>14} {:>18} {:>16}",
        "workers", "set steps/s", "mock agent steps/s", "200 ms steps/s"
    );
    for row in &workers {
        let _ = writeln!(
            table,
            "{:<8} {:>14} {:>18} {:>16}",
            row["workers"], row["set_steps_per_s"], row["mock_agent_steps_per_s"], row["steps_200ms_per_s"]
        );
    }
    for row in &failovers {
        let _ = writeln!(
            table,
            "failover, lease {:<4} {:>6} s (each {})",
            row["lease"].as_str().unwrap_or(""),
            row["median_s"],
            row["each_s"]
        );
    }
    print!("{table}");
    let report = json!({"w1_steps_per_s": w1.round(), "w2_items_per_s": w2.round(), "w3_steps_per_s": w3.round(), "workers": workers, "failover": failovers});
    std::fs::write(dir.join("../postgres.json"), serde_json::to_string_pretty(&report)?)?;
    eprintln!("wrote target/bench/postgres.json");
    Ok(())
}

fn path(p: &Path) -> &str {
    p.to_str().unwrap_or_default()
}
