//! Durable execution on the sled store, measured, never asserted: runs
//! workflows of `set` steps through the real engine on a `SledStore` opened
//! with `Durability::Sync` (every append flushed to disk before it returns,
//! so a finished step is on disk before a dependent starts), and prints one
//! JSON line with the median and best wall time of each measurement:
//!
//! - one run, a chain of 500 steps: durable steps/s of a single run;
//! - W3: 200 runs of 10-step chains of agent steps (each an LLM call to the
//!   mock, an effect that must be persisted), one after another and then
//!   all 200 at once in one process and one store (concurrent appends
//!   share sled flushes): runs/s;
//! - resuming a run of 10,000 finished steps: opening the store afresh and
//!   folding the run's state (`Engine::load`);
//! - the run index over 100,000 stored runs: `cairn runs`' first page,
//!   `cairn stats` over every run, and the catalog, each from the store's
//!   index (kept as runs go), on a store opened afresh;
//! - the disk's own rate: 4 KiB appended and `sync_data` to a file in the
//!   same directory, 300 times; cairn's chain steps/s is reported as a ratio
//!   of these fsyncs/s.
//!
//! The concurrent measurement runs last, under a watchdog: if it has not
//! finished within `CONCURRENT_LIMIT`, its row holds an `error` instead of
//! times and the report is printed at once.
//!
//! Data lives under `target/bench/durable-*`, deleted before each use. Run
//! with `cargo bench -p cairn-app --bench durable`; `cargo xtask bench`
//! runs it and adds its rows to the report.

use std::fmt::Write as _;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use cairn_domain::Definition;
use cairn_domain::id::RunId;
use cairn_domain::state::RunStatus;
use cairn_engine::{Engine, EngineBuilder, MockLlm, SystemClock};
use cairn_ports::{Clock, RunStore};
use cairn_store_sled::{Durability, SledStore};
use cairn_testkit::bench::{median_best, round, steps_row};
use serde_json::json;

/// Timed repetitions of each measurement (after a warm-up where cheap).
const RUNS: usize = 3;
/// Steps in the single durable chain.
const CHAIN: usize = 500;
/// Runs in the W3 measurements.
const CONCURRENT: usize = 200;
/// Steps in each of the concurrent runs.
const CONCURRENT_STEPS: usize = 10;
/// Finished steps in the run that is resumed.
const RESUME: usize = 10_000;
/// Runs stored for the run-index measurements.
const INDEXED: usize = 100_000;
/// Write + fsync operations in the disk measurement.
const FSYNCS: usize = 300;
/// Bytes written before each fsync.
const BLOCK: usize = 4096;
/// How long the concurrent measurement (warm-up and timed runs) may take
/// before it is reported as not finished.
const CONCURRENT_LIMIT: Duration = Duration::from_secs(120);

/// A chain of `n` `set` steps; each waits for the one before it.
fn chain(n: usize) -> String {
    let mut out = String::from("cairn: 1\nid: chain\nsteps:\n");
    for i in 0..n {
        let _ = writeln!(out, "  - id: s{i}\n    set: {i}");
    }
    out
}

/// Loads `yaml` as a validated definition.
fn definition(yaml: &str) -> Definition {
    let workflow = cairn_testkit::workflow(yaml);
    Definition { name: "wf.yaml".into(), text: yaml.to_owned(), workflow, files: Default::default() }
}

/// `target/bench/<name>` of the workspace, deleted and created afresh.
fn fresh_dir(name: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/bench").join(name);
    if dir.exists() {
        std::fs::remove_dir_all(&dir).expect("the old bench directory can be removed");
    }
    std::fs::create_dir_all(&dir).expect("the bench directory can be created");
    dir
}

/// Opens the sled store in `dir`.
fn open(dir: &Path, durability: Durability) -> Arc<SledStore> {
    Arc::new(SledStore::open(dir, durability, "cairn durable bench").expect("the store opens"))
}

/// The real engine on `store`, with the mock LLM (unused by `set` steps).
fn engine(store: Arc<SledStore>) -> Engine {
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    EngineBuilder::new(store)
        .clock(clock.clone())
        .provider("default", Arc::new(MockLlm::new(clock, Duration::ZERO)))
        .build()
}

/// A chain of `n` agent steps (W3): each an LLM call, reading the one before.
fn agent_chain(n: usize) -> String {
    let mut out = String::from("cairn: 1\nid: w3\nagents:\n  w: { system: Be brief. }\nsteps:\n");
    for i in 0..n {
        let _ = writeln!(out, "  - id: s{i}\n    agent: w");
        match i {
            0 => out.push_str("    prompt: go\n"),
            _ => {
                let _ = writeln!(out, "    prompt: \"after {{{{ steps.s{}.output }}}}\"", i - 1);
            }
        }
    }
    out
}

/// Runs `yaml` as `id` to completion; returns the number of events stored.
async fn run_to_end(engine: &Engine, store: &SledStore, def: Definition, id: &str) -> usize {
    let run_id = RunId::new(id).expect("valid run id");
    let state = engine.run(def, json!({}), run_id.clone()).await.expect("the run completes");
    assert_eq!(state.status, RunStatus::Completed, "the benchmark workflow must complete");
    store.load(&run_id, 0).await.expect("run stored").events.len()
}

/// One durable chain of `CHAIN` steps on a fresh store; the time is
/// `Engine::run` alone. Returns the time and the events recorded.
async fn chain_once(yaml: &str) -> (Duration, usize) {
    let dir = fresh_dir("durable-chain");
    let store = open(&dir, Durability::Sync);
    let engine = engine(store.clone());
    let def = definition(yaml);
    let start = Instant::now();
    let events = run_to_end(&engine, &store, def, "chain").await;
    (start.elapsed(), events)
}

/// `CONCURRENT` runs of `yaml` one after another on one engine and one
/// fresh store. Returns the time and the events recorded by all runs.
async fn sequential_once(yaml: &str) -> (Duration, usize) {
    let dir = fresh_dir("durable-sequential");
    let store = open(&dir, Durability::Sync);
    let engine = engine(store.clone());
    let start = Instant::now();
    let mut events = 0;
    for i in 0..CONCURRENT {
        events += run_to_end(&engine, &store, definition(yaml), &format!("run-{i}")).await;
    }
    (start.elapsed(), events)
}

/// `CONCURRENT` runs of `CONCURRENT_STEPS`-step chains at once on one
/// engine and one fresh store; the time is from the first start to the last
/// run's end. Returns the time and the events recorded by all runs.
async fn concurrent_once(yaml: &str) -> (Duration, usize) {
    let dir = fresh_dir("durable-concurrent");
    let store = open(&dir, Durability::Sync);
    let engine = Arc::new(engine(store.clone()));
    let defs: Vec<Definition> = (0..CONCURRENT).map(|_| definition(yaml)).collect();
    let start = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for (i, def) in defs.into_iter().enumerate() {
        let (engine, store) = (engine.clone(), store.clone());
        tasks.spawn(async move { run_to_end(&engine, &store, def, &format!("run-{i}")).await });
    }
    let mut events = 0;
    while let Some(joined) = tasks.join_next().await {
        events += joined.expect("a run task finishes");
    }
    (start.elapsed(), events)
}

/// Builds a finished run of `RESUME` steps in `dir` (without flushing each
/// append, then flushed once) and drops every handle on the store.
async fn build_long_run(dir: &Path, run_id: &str) -> usize {
    let store = open(dir, Durability::None);
    let engine = engine(store.clone());
    let events = run_to_end(&engine, &store, definition(&chain(RESUME)), run_id).await;
    store.flush().await.expect("the store flushes");
    drop(engine);
    drop(store);
    events
}

/// Opens the store in `dir` afresh and folds `run_id`'s state; returns the
/// time of both and the number of steps in the state.
async fn resume_once(dir: &Path, run_id: &RunId) -> (Duration, usize) {
    let start = Instant::now();
    let store = open(dir, Durability::Sync);
    let engine = engine(store.clone());
    let state = engine.load(run_id).await.expect("the run loads");
    let elapsed = start.elapsed();
    assert_eq!(state.status, RunStatus::Completed, "the long run is finished");
    let steps = state.steps.len();
    drop(engine);
    drop(store);
    (elapsed, steps)
}

/// `FSYNCS` appends of `BLOCK` bytes to a new file in `dir`, each followed
/// by `sync_data`.
fn fsync_once(dir: &Path) -> Duration {
    let path = dir.join("fsync.dat");
    let _ = std::fs::remove_file(&path);
    let mut file =
        std::fs::OpenOptions::new().create(true).append(true).open(&path).expect("the fsync file opens");
    let block = vec![0x5a_u8; BLOCK];
    let start = Instant::now();
    for _ in 0..FSYNCS {
        file.write_all(&block).expect("the block is written");
        file.sync_data().expect("the block is synced");
    }
    start.elapsed()
}

/// Stores `INDEXED` finished runs of three workflows in `dir`, written
/// straight to the store (a created, a started, a usage and an end event
/// each; one in ten failed at a step), as the engine records them.
async fn build_index(dir: &Path) {
    use cairn_domain::state::{ErrorClass, Event, EventKind, StepError, StepPath, Timestamp, TokenUsage};
    let store = open(dir, Durability::Batch { window_ms: 50 });
    let at = |i: usize, ms: u64| Timestamp(1_795_000_000_000 + (i as u64) * 1_000 + ms);
    for i in 0..INDEXED {
        let run_id = RunId::new(format!("r{i:06}")).expect("valid run id");
        let workflow = cairn_domain::id::WorkflowId::new(["triage", "review", "release"][i % 3]).expect("id");
        let event =
            |seq: u64, ms: u64, kind: EventKind| Event { seq, at: at(i, ms), actor: "bench".into(), kind };
        let created = event(
            1,
            0,
            EventKind::RunCreated {
                run_id: run_id.clone(),
                workflow: workflow.clone(),
                definition_hash: "h".into(),
                inputs: json!({"n": i}),
                version: None,
                labels: Default::default(),
                priority: 0,
                parent: None,
            },
        );
        store
            .create(cairn_ports::NewRun {
                run_id: run_id.clone(),
                workflow,
                definition_name: "wf.yaml".into(),
                definition: String::new(),
                files: Default::default(),
                definition_hash: "h".into(),
                created,
            })
            .await
            .expect("created");
        let path = StepPath::new("work");
        let usage =
            TokenUsage { prompt_tokens: 100, completion_tokens: 20, estimated: false, cost_micro_usd: 0 };
        let end = if i % 10 == 0 {
            let error =
                StepError { class: ErrorClass::Transient, message: "down".into(), hint: None, cause: None };
            vec![
                EventKind::StepFailed {
                    path: path.clone(),
                    attempt: 1,
                    error: error.clone(),
                    output: None,
                    retry_at: None,
                },
                EventKind::RunFailed { error },
            ]
        } else {
            vec![
                EventKind::StepSucceeded { path: path.clone(), output: json!("ok") },
                EventKind::RunCompleted,
            ]
        };
        let mut kinds = vec![
            EventKind::RunStarted,
            EventKind::StepStarted { path: path.clone(), attempt: 1 },
            EventKind::UsageRecorded {
                path,
                attempt: 1,
                agent: Some("writer".into()),
                model: "m".into(),
                usage,
            },
        ];
        kinds.extend(end);
        let events: Vec<Event> = kinds
            .into_iter()
            .enumerate()
            .map(|(k, kind)| event(k as u64 + 2, 10 * (k as u64 + 1), kind))
            .collect();
        store.append(&run_id, 1, &events).await.expect("appended");
    }
}

/// Times `cairn runs`' first page, `cairn stats` over every run and the
/// catalog on the store in `dir`, opened afresh, and the first listing
/// alone (it reads the index from disk): four rows.
async fn index_rows(dir: &Path) -> Vec<serde_json::Value> {
    use cairn_app::app::{App, Parts};
    let store = open(dir, Durability::Sync);
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let parts = Parts {
        store: store.clone(),
        tokens: store.clone(),
        workflows: store.clone(),
        clock,
        prices: Default::default(),
        secrets: Default::default(),
        hub: Arc::new(cairn_app::follow::Hub::new()),
        meter: cairn_app::meter::Meter::new(),
        search: Arc::new(
            cairn_search_tantivy::TantivyIndex::open(&dir.join("search")).expect("the index opens"),
        ),
    };
    let app = App::new(engine(store), parts);
    let first_page = cairn_ports::RunQuery { limit: Some(50), ..Default::default() };
    let mut rows = Vec::new();
    for name in ["runs, first page of 50", "stats, every run", "catalog (workflows)"] {
        let mut times = Vec::with_capacity(RUNS);
        for _ in 0..=RUNS {
            let start = Instant::now();
            let counted = match name {
                "runs, first page of 50" => app.list(&first_page).await.expect("listed").runs.len(),
                "stats, every run" => app.run_stats(&Default::default()).await.expect("stats").overall.runs,
                _ => app.catalog().await.expect("catalog").iter().map(|e| e.stats.runs).sum(),
            };
            times.push(start.elapsed());
            assert!(counted > 0, "{name} counted nothing");
        }
        // The first reads the index from disk (the first listing after the
        // store opens): reported on its own, not counted with the others.
        let cold = times.remove(0);
        if rows.is_empty() {
            let name = format!("first listing after opening, {INDEXED} runs (reads the index once)");
            rows.push(timed_row(&name, vec![cold]));
        }
        rows.push(timed_row(&format!("{name} of {INDEXED} runs"), times));
    }
    rows.extend(search_rows(&app).await);
    rows
}

/// Times the first indexing of every run for search (one row), then
/// searches of it that match one run in ten (the failed ones), each first
/// checking that nothing is left to index.
async fn search_rows(app: &cairn_app::app::App) -> Vec<serde_json::Value> {
    let start = Instant::now();
    let written = app.index_changes().await.expect("indexed");
    let first = start.elapsed();
    assert!(written >= INDEXED, "every run was indexed: {written}");
    let first_row = timed_row(&format!("search: first indexing of {INDEXED} runs"), vec![first]);
    let query = cairn_ports::SearchQuery { text: "down".into(), kind: None, workflow: None, limit: 20 };
    let mut times = Vec::with_capacity(RUNS);
    for _ in 0..RUNS {
        let start = Instant::now();
        let found = app.search(&query).await.expect("searched");
        times.push(start.elapsed());
        assert_eq!(found.len(), 20, "a full page of failed runs");
    }
    let name = format!("search, 20 best of {} matching, {INDEXED} runs indexed", INDEXED / 10);
    vec![first_row, timed_row(&name, times)]
}

/// A report row of `times` (median and best, in ms), printed as it is made.
fn timed_row(name: &str, times: Vec<Duration>) -> serde_json::Value {
    let runs = times.len();
    let (median, best) = median_best(times);
    let row = json!({
        "name": name,
        "runs": runs,
        "median_ms": round(median * 1000.0, 2),
        "best_ms": round(best * 1000.0, 2),
    });
    eprintln!("{row}");
    row
}

/// The chain, resume and disk measurements, then the concurrent one under a
/// watchdog: when it does not finish within `CONCURRENT_LIMIT`, the report
/// is printed with that row marked as not finished and the process exits.
async fn measure() -> serde_json::Value {
    let yaml = chain(CHAIN);
    let (times, events) = repeated(|| chain_once(&yaml)).await;
    let (chain_row, chain_per_s) = steps_row(&format!("sync chain, {CHAIN} steps"), CHAIN, events, times);

    let dir = fresh_dir("durable-resume");
    let run_id = RunId::new("long").expect("valid run id");
    let long_events = build_long_run(&dir, run_id.as_str()).await;
    resume_once(&dir, &run_id).await;
    let mut times = Vec::with_capacity(RUNS);
    let mut steps = 0;
    for _ in 0..RUNS {
        let (time, n) = resume_once(&dir, &run_id).await;
        times.push(time);
        steps = n;
    }
    let (median, best) = median_best(times);
    let resume_row = json!({
        "name": format!("resume 10,000-step run (open + fold)"),
        "steps": steps,
        "events": long_events,
        "runs": RUNS,
        "median_ms": round(median * 1000.0, 2),
        "best_ms": round(best * 1000.0, 2),
    });
    eprintln!("{resume_row}");

    let dir = fresh_dir("durable-fsync");
    fsync_once(&dir);
    let mut times = Vec::with_capacity(RUNS);
    for _ in 0..RUNS {
        times.push(fsync_once(&dir));
    }
    let (median, best) = median_best(times);
    let fsyncs_per_s = FSYNCS as f64 / median;
    let fsync_row = json!({
        "name": "disk write+fsync 4 KiB",
        "ops": FSYNCS,
        "runs": RUNS,
        "median_ms": round(median * 1000.0, 2),
        "best_ms": round(best * 1000.0, 2),
        "ops_per_s": round(fsyncs_per_s, 0),
    });
    eprintln!("{fsync_row}");
    let ratio = round(chain_per_s / fsyncs_per_s, 3);

    let dir = fresh_dir("durable-index");
    build_index(&dir).await;
    let index = index_rows(&dir).await;

    let total = CONCURRENT * CONCURRENT_STEPS;
    let yaml = agent_chain(CONCURRENT_STEPS);
    let (times, events) = repeated(|| sequential_once(&yaml)).await;
    let (sequential_row, _) = runs_row(
        steps_row(
            &format!("W3 {CONCURRENT} runs x {CONCURRENT_STEPS} steps, sequential"),
            total,
            events,
            times,
        )
        .0,
    );

    let name = format!("W3 {CONCURRENT} runs x {CONCURRENT_STEPS} steps, {CONCURRENT} concurrent");
    let unfinished = json!({
        "name": name,
        "steps": total,
        "error": format!("did not finish within {} s", CONCURRENT_LIMIT.as_secs()),
    });
    // Every row, the concurrent one as given.
    let rows = |concurrent: &serde_json::Value| {
        let mut rows = vec![&chain_row, &sequential_row, concurrent, &resume_row, &fsync_row];
        rows.extend(index.iter());
        report(&rows, ratio)
    };
    let partial = rows(&unfinished);
    let (done, finished) = std::sync::mpsc::channel::<()>();
    std::thread::spawn(move || {
        if finished.recv_timeout(CONCURRENT_LIMIT) == Err(std::sync::mpsc::RecvTimeoutError::Timeout) {
            eprintln!("{unfinished}");
            println!("{partial}");
            std::process::exit(0);
        }
    });
    let (times, events) = repeated(|| concurrent_once(&yaml)).await;
    let _ = done.send(());
    let (concurrent_row, _) = runs_row(steps_row(&name, total, events, times).0);

    rows(&concurrent_row)
}

/// One warm-up run of `once`, then `RUNS` timed ones: their times and the
/// events the last one recorded.
async fn repeated<F: std::future::Future<Output = (Duration, usize)>>(
    once: impl Fn() -> F,
) -> (Vec<Duration>, usize) {
    once().await;
    let mut times = Vec::with_capacity(RUNS);
    let mut events = 0;
    for _ in 0..RUNS {
        let (time, n) = once().await;
        times.push(time);
        events = n;
    }
    (times, events)
}

/// A W3 row with its runs/s added (from the median).
fn runs_row(mut row: serde_json::Value) -> (serde_json::Value, f64) {
    let per_s = row["median_ms"].as_f64().map_or(f64::NAN, |ms| CONCURRENT as f64 / (ms / 1000.0));
    row["runs_per_s"] = json!(round(per_s, 1));
    (row, per_s)
}

/// The JSON line: the rows in the order chain, W3 sequential, W3
/// concurrent, resume, disk.
fn report(rows: &[&serde_json::Value], ratio: f64) -> serde_json::Value {
    json!({ "durable": rows, "ratio_chain_to_fsync": ratio })
}

fn main() {
    // `cargo bench` passes `--bench`; a filter or other flags are ignored.
    let runtime =
        tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("a tokio runtime starts");
    let report = runtime.block_on(measure());
    println!("{report}");
}
