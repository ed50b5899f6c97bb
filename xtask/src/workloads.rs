//! The four comparison workloads of `cargo xtask bench` (W1-W4), the
//! disk's own fsync rate measured alongside, the scaling curves, and with
//! `--peers` the same workloads on LangGraph (`xtask/peers/`).
//!
//! - W1: one run of a 200-step chain of agent steps through `cairn run
//!   --llm mock` (each step an LLM call, an effect that must be persisted).
//! - W2: a `for_each` over 1,000 items, one agent step each, then a reduce,
//!   through `cairn run`.
//! - W3: 200 runs x 10 steps in one process through the library, one after
//!   another and all at once (`crates/cairn-app/benches/durable.rs`).
//! - W4: a 100-step chain waits at an approval at step 50; a new `cairn
//!   approve` process loads it and runs it to the end.
//!
//! Every run uses the default `durability = "sync"` on a fresh data
//! directory. Rates come from the run's own clock (its first and last
//! event), like the peers' in-process timers; the process's whole wall time
//! is reported beside it.

use std::fmt::Write as _;
use std::io::Write as _;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use serde_json::{Value, json};

use crate::{python_venv, root};

/// Repetitions of W2 and W4.
const REPEATS: usize = 5;
/// Repetitions of W1, each between two disk probes.
const W1_REPEATS: usize = 11;
/// Appends of 4 KiB, each followed by `sync_data`, in one disk probe.
const PROBE_FSYNCS: usize = 200;

/// What one `cairn` process did.
struct Measured {
    wall: Duration,
    peak_kb: u64,
    code: Option<i32>,
}

/// Runs `cairn ARGS` with `CAIRN_DATA_DIR=data`, sampling its peak
/// resident memory (`VmHWM`, every 2 ms) until it exits.
fn measure(cairn: &Path, data: &Path, args: &[&str]) -> Result<Measured> {
    let start = Instant::now();
    let mut child = Command::new(cairn)
        .args(args)
        .env("CAIRN_DATA_DIR", data)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .context("starting cairn")?;
    let status_file = format!("/proc/{}/status", child.id());
    let mut peak_kb = 0;
    let status = loop {
        if let Some(kb) = std::fs::read_to_string(&status_file).ok().and_then(|s| peak_rss_kb(&s)) {
            peak_kb = peak_kb.max(kb);
        }
        if let Some(status) = child.try_wait()? {
            break status;
        }
        std::thread::sleep(Duration::from_millis(2));
    };
    Ok(Measured { wall: start.elapsed(), peak_kb, code: status.code() })
}

/// `VmHWM` (the peak resident set) of a `/proc/PID/status` text, in KB.
/// Sampled every 2 ms while the process runs, so growth in its very last
/// milliseconds could be missed.
pub fn peak_rss_kb(status: &str) -> Option<u64> {
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// The run's own duration: from `run_started` to its last event, in
/// seconds (the store's clock has millisecond resolution).
fn run_seconds(cairn: &Path, data: &Path, run: &str) -> Result<f64> {
    let out = Command::new(cairn)
        .args(["events", run, "--format", "jsonl"])
        .env("CAIRN_DATA_DIR", data)
        .output()
        .context("running cairn events")?;
    let text = String::from_utf8_lossy(&out.stdout);
    let events: Vec<Value> = text.lines().filter_map(|l| serde_json::from_str(l).ok()).collect();
    let started = events.iter().find(|e| e["type"] == "run_started").and_then(|e| e["at"].as_u64());
    let (Some(started), Some(ended)) = (started, events.last().and_then(|e| e["at"].as_u64())) else {
        bail!("run {run} has no run_started or no events: {text}");
    };
    Ok((ended.saturating_sub(started)).max(1) as f64 / 1000.0)
}

/// Bytes the events of `run` take as `cairn events --format jsonl` prints
/// them: what each step adds to the log.
fn event_bytes(cairn: &Path, data: &Path, run: &str) -> Result<u64> {
    let out = Command::new(cairn)
        .args(["events", run, "--format", "jsonl"])
        .env("CAIRN_DATA_DIR", data)
        .output()
        .context("running cairn events")?;
    Ok(out.stdout.len() as u64)
}

/// Bytes of every file under `dir`.
fn dir_bytes(dir: &Path) -> u64 {
    std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| {
            let path = e.path();
            if path.is_dir() { dir_bytes(&path) } else { e.metadata().map_or(0, |m| m.len()) }
        })
        .sum()
}

/// `PROBE_FSYNCS` appends of 4 KiB to a new file in `dir`, each followed by
/// `sync_data`: the disk's sequential append+fsync rate, per second.
fn disk_probe(dir: &Path) -> Result<f64> {
    let path = dir.join("fsync-probe.dat");
    let _ = std::fs::remove_file(&path);
    let file = std::fs::OpenOptions::new().create(true).append(true).open(&path)?;
    let block = vec![0x5a_u8; 4096];
    syncs_per_second(&path, &file, |_| (&file).write_all(&block))
}

/// A block of memory aligned for direct I/O.
#[repr(C, align(4096))]
struct Block([u8; 4096]);

/// `PROBE_FSYNCS` writes of 4 KiB over a file of zeros written and synced
/// first, each followed by `sync_data`, with direct I/O where the file
/// system takes it: what cairn's write-ahead log does, per second. The
/// disk's floor for that log, beside [`disk_probe`]'s for appending.
fn disk_probe_rewrite(dir: &Path) -> Result<f64> {
    use std::os::unix::fs::FileExt as _;
    let path = dir.join("fsync-probe-rewrite.dat");
    let open = |direct: bool| {
        let _ = std::fs::remove_file(&path);
        let mut options = std::fs::OpenOptions::new();
        options.create(true).write(true);
        #[cfg(target_os = "linux")]
        if direct {
            use std::os::unix::fs::OpenOptionsExt as _;
            options.custom_flags(libc::O_DIRECT);
        }
        let file = options.open(&path)?;
        let zeros = Block([0; 4096]);
        for i in 0..PROBE_FSYNCS as u64 {
            file.write_all_at(&zeros.0, i * 4096)?;
        }
        file.sync_all()?;
        Ok::<_, std::io::Error>(file)
    };
    let file = open(true).or_else(|_| open(false))?;
    let block = Block([0x5a; 4096]);
    syncs_per_second(&path, &file, |i| file.write_all_at(&block.0, i * 4096))
}

/// Times `PROBE_FSYNCS` rounds of `write(i)` and `sync_data` on `file`,
/// then deletes it at `path`; returns the rounds per second.
fn syncs_per_second(
    path: &Path,
    file: &std::fs::File,
    mut write: impl FnMut(u64) -> std::io::Result<()>,
) -> Result<f64> {
    let start = Instant::now();
    for i in 0..PROBE_FSYNCS as u64 {
        write(i)?;
        file.sync_data()?;
    }
    let rate = PROBE_FSYNCS as f64 / start.elapsed().as_secs_f64();
    let _ = std::fs::remove_file(path);
    Ok(rate)
}

fn median(mut xs: Vec<f64>) -> f64 {
    xs.sort_by(f64::total_cmp);
    xs.get(xs.len() / 2).copied().unwrap_or(f64::NAN)
}

fn best(xs: &[f64]) -> f64 {
    xs.iter().copied().fold(f64::NAN, f64::max)
}

/// A chain of `n` agent steps, each reading the one before (W1, W4). With
/// `gate_at`, that step is an approval instead.
pub fn chain_workflow(n: usize, gate_at: Option<usize>) -> String {
    let mut out = String::from("cairn: 1\nid: chain\nagents:\n  w: { system: Be brief. }\nsteps:\n");
    for i in 0..n {
        let _ = writeln!(out, "  - id: s{i}");
        if Some(i) == gate_at {
            out.push_str("    approval: { message: \"Go on?\" }\n");
            continue;
        }
        out.push_str("    agent: w\n");
        match i {
            0 => out.push_str("    prompt: go\n"),
            _ if Some(i - 1) == gate_at => out.push_str("    prompt: \"after the gate\"\n"),
            _ => {
                let _ = writeln!(out, "    prompt: \"after {{{{ steps.s{}.output }}}}\"", i - 1);
            }
        }
    }
    out
}

/// A `for_each` over `items` numbers, one agent step each (64 instances
/// open at once), then a reduce that reads every output (W2).
pub fn fan_out_workflow(items: usize) -> String {
    format!(
        "cairn: 1\nid: fanout\nagents:\n  w: {{ system: Be brief. }}\ndefaults: {{ max_parallel: 64 }}\nsteps:\n  - id: items\n    set: \"{{{{ range({items}) | list }}}}\"\n  - id: per_item\n    for_each: {{ items: \"{{{{ steps.items.output }}}}\", as: item }}\n    steps:\n      - id: work\n        agent: w\n        prompt: \"item {{{{ item }}}}\"\n  - id: reduce\n    set: \"{{{{ steps.per_item.output | length }}}}\"\n"
    )
}

/// One W1-style chain run of `steps` steps on a fresh data directory:
/// (run seconds, process, event bytes, data directory bytes).
fn chain_run(cairn: &Path, dir: &Path, steps: usize) -> Result<(f64, Measured, u64, u64)> {
    let wf = dir.join(format!("chain-{steps}.yaml"));
    if !wf.exists() {
        std::fs::write(&wf, chain_workflow(steps, None))?;
    }
    let data = dir.join("chain-data");
    let _ = std::fs::remove_dir_all(&data);
    let m = measure(cairn, &data, &["--llm", "mock", "run", path(&wf), "--run-id", "w1"])?;
    if m.code != Some(0) {
        bail!("the {steps}-step chain exited with {:?}", m.code);
    }
    // Before `cairn events` opens the store again (sled extends its file
    // to a whole segment on opening).
    let stored = dir_bytes(&data);
    let secs = run_seconds(cairn, &data, "w1")?;
    Ok((secs, m, event_bytes(cairn, &data, "w1")?, stored))
}

/// One W2-style fan-out run of `items` items: (run seconds, process).
fn fan_out_run(cairn: &Path, dir: &Path, items: usize) -> Result<(f64, Measured)> {
    let wf = dir.join(format!("fan-out-{items}.yaml"));
    if !wf.exists() {
        std::fs::write(&wf, fan_out_workflow(items))?;
    }
    let data = dir.join("fan-out-data");
    let _ = std::fs::remove_dir_all(&data);
    let m = measure(cairn, &data, &["--llm", "mock", "run", path(&wf), "--run-id", "w2"])?;
    if m.code != Some(0) {
        bail!("the {items}-item fan-out exited with {:?}", m.code);
    }
    Ok((run_seconds(cairn, &data, "w2")?, m))
}

fn path(p: &Path) -> &str {
    p.to_str().unwrap_or_default()
}

fn ms(d: Duration) -> f64 {
    (d.as_secs_f64() * 1e5).round() / 100.0
}

fn mb(kb: u64) -> f64 {
    (kb as f64 / 102.4).round() / 10.0
}

/// W1 between disk probes, W2, W4; returns their JSON.
pub fn run(cairn: &Path) -> Result<Value> {
    crate::quiesce();
    let dir = root().join("target/bench/workloads");
    std::fs::create_dir_all(&dir)?;

    // W1, each repetition between two disk probes: the disk's rate on this
    // machine moves by several times within minutes, so each run is set
    // against the disk as it was just before and just after it, and the
    // ratio is the median of those paired ratios.
    let (mut w1_rates, mut disk_rates, mut rewrite_rates, mut walls) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let (mut events_per_step, mut disk_per_step, mut peak) = (0.0, 0.0, 0);
    chain_run(cairn, &dir, 200)?;
    let (mut before, mut rewrite_before) = (disk_probe(&dir)?, disk_probe_rewrite(&dir)?);
    for _ in 0..W1_REPEATS {
        let (secs, m, events, bytes) = chain_run(cairn, &dir, 200)?;
        let (after, rewrite_after) = (disk_probe(&dir)?, disk_probe_rewrite(&dir)?);
        w1_rates.push(200.0 / secs);
        disk_rates.push((before + after) / 2.0);
        rewrite_rates.push((rewrite_before + rewrite_after) / 2.0);
        (before, rewrite_before) = (after, rewrite_after);
        walls.push(m.wall.as_secs_f64());
        peak = peak.max(m.peak_kb);
        events_per_step = events as f64 / 200.0;
        disk_per_step = bytes as f64 / 200.0;
    }
    let (w1, disk) = (median(w1_rates.clone()), median(disk_rates.clone()));
    let paired =
        |disk: &[f64]| -> Vec<f64> { w1_rates.iter().zip(disk).map(|(w1, disk)| w1 / disk).collect() };
    let (ratios, to_rewrite) = (paired(&disk_rates), paired(&rewrite_rates));
    let w1_row = json!({
        "steps": 200,
        "runs": W1_REPEATS,
        "steps_per_s": w1.round(),
        "best_steps_per_s": best(&w1_rates).round(),
        "steps_per_s_each": w1_rates.iter().map(|r| r.round()).collect::<Vec<_>>(),
        "process_wall_ms": median(walls.iter().map(|s| s * 1000.0).collect()),
        "peak_rss_mb": mb(peak),
        "event_bytes_per_step": events_per_step.round(),
        "data_dir_bytes_per_step": disk_per_step.round(),
        "disk_fsyncs_per_s": disk.round(),
        "disk_fsyncs_per_s_each": disk_rates.iter().map(|r| r.round()).collect::<Vec<_>>(),
        "ratio_to_disk": (median(ratios.clone()) * 1000.0).round() / 1000.0,
        "ratio_to_disk_each": ratios.iter().map(|r| (r * 100.0).round() / 100.0).collect::<Vec<_>>(),
        "disk_rewrite_fsyncs_per_s": median(rewrite_rates.clone()).round(),
        "ratio_to_disk_rewrite": (median(to_rewrite) * 1000.0).round() / 1000.0,
    });
    eprintln!("W1 {w1_row}");

    let (mut w2_rates, mut walls, mut peak) = (Vec::new(), Vec::new(), 0);
    fan_out_run(cairn, &dir, 1_000)?;
    for _ in 0..REPEATS {
        let (secs, m) = fan_out_run(cairn, &dir, 1_000)?;
        w2_rates.push(1_000.0 / secs);
        walls.push(m.wall.as_secs_f64());
        peak = peak.max(m.peak_kb);
    }
    let wall = median(walls);
    let w2_row = json!({
        "items": 1_000,
        "runs": REPEATS,
        "items_per_s": median(w2_rates.clone()).round(),
        "best_items_per_s": best(&w2_rates).round(),
        "process_wall_ms": (wall * 1e5).round() / 100.0,
        "process_items_per_s": (1_000.0 / wall).round(),
        "peak_rss_mb": mb(peak),
    });
    eprintln!("W2 {w2_row}");

    let w4_row = w4(cairn, &dir)?;
    eprintln!("W4 {w4_row}");
    Ok(json!({ "w1": w1_row, "w2": w2_row, "w4": w4_row }))
}

/// W4: the chain waits at its approval at step 50 (first process); a new
/// `cairn approve` process records the decision, loads the run and drives
/// steps 51-99 to the end. Its whole process wall time is the figure.
fn w4(cairn: &Path, dir: &Path) -> Result<Value> {
    let wf = dir.join("w4.yaml");
    std::fs::write(&wf, chain_workflow(100, Some(50)))?;
    let data = dir.join("w4-data");
    let mut walls = Vec::new();
    for _ in 0..=REPEATS {
        let _ = std::fs::remove_dir_all(&data);
        let first = measure(cairn, &data, &["--llm", "mock", "run", path(&wf), "--run-id", "w4"])?;
        if first.code != Some(3) {
            bail!("W4's first process should wait at the approval (exit 3), got {:?}", first.code);
        }
        let resumed = measure(cairn, &data, &["--llm", "mock", "approve", "w4", "--by", "bench"])?;
        if resumed.code != Some(0) {
            bail!("W4's resume exited with {:?}", resumed.code);
        }
        walls.push(resumed.wall.as_secs_f64());
    }
    walls.remove(0); // the warm-up
    Ok(json!({
        "steps": 100,
        "interrupted_at": 50,
        "runs": REPEATS,
        "resume_process_ms": (median(walls.clone()) * 1e5).round() / 100.0,
        "best_resume_process_ms": (walls.iter().copied().fold(f64::INFINITY, f64::min) * 1e5).round() / 100.0,
    }))
}

/// W1 at 100, 1,000 and 10,000 steps and W2 at 1,000, 10,000 and 100,000
/// items, once each: the cost per step must stay flat.
pub fn scaling(cairn: &Path) -> Result<Value> {
    let dir = root().join("target/bench/workloads");
    std::fs::create_dir_all(&dir)?;
    let mut w1 = Vec::new();
    for steps in [100, 1_000, 10_000] {
        let (secs, m, events, bytes) = chain_run(cairn, &dir, steps)?;
        let row = json!({
            "steps": steps,
            "run_ms": (secs * 1e5).round() / 100.0,
            "us_per_step": (secs * 1e6 / steps as f64).round(),
            "process_wall_ms": ms(m.wall),
            "peak_rss_mb": mb(m.peak_kb),
            "event_bytes_per_step": (events as f64 / steps as f64).round(),
            "data_dir_bytes_per_step": (bytes as f64 / steps as f64).round(),
        });
        eprintln!("W1 scaling {row}");
        w1.push(row);
    }
    let mut w2 = Vec::new();
    for items in [1_000, 10_000, 100_000] {
        let (secs, m) = fan_out_run(cairn, &dir, items)?;
        let row = json!({
            "items": items,
            "run_ms": (secs * 1e5).round() / 100.0,
            "us_per_item": (secs * 1e6 / items as f64).round(),
            "process_wall_ms": ms(m.wall),
            "peak_rss_mb": mb(m.peak_kb),
        });
        eprintln!("W2 scaling {row}");
        w2.push(row);
    }
    Ok(json!({ "w1": w1, "w2": w2 }))
}

/// `--peers`: LangGraph in a venv under `target/` (pinned by
/// `xtask/peers/requirements.txt`), running `xtask/peers/langgraph_bench.py`.
pub fn peers() -> Result<Value> {
    crate::quiesce();
    let python = python_venv("peers-venv", "xtask/peers/requirements.txt")?.join("bin/python");
    let out_dir = root().join("target/bench/peers");
    std::fs::create_dir_all(&out_dir)?;
    let script = root().join("xtask/peers/langgraph_bench.py");
    eprintln!("$ {} {} --dir {}", python.display(), script.display(), out_dir.display());
    let out = Command::new(&python)
        .args([path(&script), "--dir", path(&out_dir)])
        .stderr(Stdio::inherit())
        .output()
        .context("running the LangGraph benchmark")?;
    if !out.status.success() {
        bail!("the LangGraph benchmark failed with {}", out.status);
    }
    let text = String::from_utf8_lossy(&out.stdout);
    text.lines()
        .rev()
        .find_map(|l| serde_json::from_str::<Value>(l.trim()).ok())
        .context("the LangGraph benchmark printed no JSON line")
}

/// The comparison table: cairn's W1-W4 against the targets, and against
/// the peer when it ran.
pub fn table(ours: &Value, w3: &[Value], peer: Option<&Value>) -> String {
    let w3_seq = w3.iter().find(|r| r["name"].as_str().is_some_and(|n| n.contains("sequential")));
    let w3_con = w3.iter().find(|r| r["name"].as_str().is_some_and(|n| n.contains("concurrent")));
    let f = |v: &Value| v.as_f64().unwrap_or(f64::NAN);
    let rows: Vec<(&str, f64, Option<f64>, bool, &str)> = vec![
        // (what, cairn, peer, higher is better, target)
        (
            "W1 chain 200, steps/s",
            f(&ours["w1"]["steps_per_s"]),
            peer.map(|p| f(&p["w1"]["steps_per_s"])),
            true,
            ">= 4x",
        ),
        (
            "W2 fan-out 1,000, items/s",
            f(&ours["w2"]["items_per_s"]),
            peer.map(|p| f(&p["w2"]["items_per_s"])),
            true,
            ">= 20x",
        ),
        (
            "W3 200x10 sequential, runs/s",
            w3_seq.map_or(f64::NAN, |r| f(&r["runs_per_s"])),
            peer.map(|p| f(&p["w3"]["sequential"]["runs_per_s"])),
            true,
            "",
        ),
        (
            "W3 200x10 concurrent, runs/s",
            w3_con.map_or(f64::NAN, |r| f(&r["runs_per_s"])),
            peer.map(|p| f(&p["w3"]["concurrent"]["runs_per_s"])),
            true,
            ">= 20x",
        ),
        (
            "W4 resume 50 of 100, ms",
            f(&ours["w4"]["resume_process_ms"]),
            peer.map(|p| f(&p["w4"]["resume_s"]) * 1000.0),
            false,
            ">= 3x",
        ),
        (
            "storage, bytes/step (W1)",
            f(&ours["w1"]["data_dir_bytes_per_step"]),
            peer.map(|p| f(&p["w1"]["bytes_per_step"])),
            false,
            "<= 1,024 B",
        ),
    ];
    let mut out =
        format!("{:<32} {:>10} {:>10} {:>8}  {}\n", "workload", "cairn", "langgraph", "ratio", "target");
    for (what, ours, theirs, higher, target) in rows {
        let ratio = theirs.map(|t| if higher { ours / t } else { t / ours });
        let _ = writeln!(
            out,
            "{what:<32} {ours:>10.1} {:>10} {:>8}  {target}",
            theirs.map_or("-".into(), |t| format!("{t:.1}")),
            ratio.map_or("-".into(), |r| format!("{r:.1}x")),
        );
    }
    let _ = writeln!(
        out,
        "W1 vs the disk: median of {} runs, each against the disk probed around it: {:.2} (target >= 0.8; \
         medians {:.0} steps/s, {:.0} fsyncs/s appending 4 KiB); W1 events {} B/step",
        f(&ours["w1"]["runs"]),
        f(&ours["w1"]["ratio_to_disk"]),
        f(&ours["w1"]["steps_per_s"]),
        f(&ours["w1"]["disk_fsyncs_per_s"]),
        f(&ours["w1"]["event_bytes_per_step"]),
    );
    let _ = writeln!(
        out,
        "W1 vs the disk rewriting a preallocated file with direct I/O, as cairn's log writes: {:.2} \
         ({:.0} fsyncs/s)",
        f(&ours["w1"]["ratio_to_disk_rewrite"]),
        f(&ours["w1"]["disk_rewrite_fsyncs_per_s"]),
    );
    out
}
