//! The engine's overhead per step, measured, never asserted: runs a
//! 1,000-step chain and a 1,000-wide fan-in through the real executor with
//! the in-memory store and the deterministic mock LLM (no latency), and
//! prints one JSON line with the median and best wall time and steps/s.
//!
//! Run with `cargo bench -p cairn-engine --bench overhead`; `cargo xtask
//! bench` runs it and adds its rows to the report.

use std::fmt::Write as _;
use std::sync::Arc;
use std::time::{Duration, Instant};

use cairn_domain::Definition;
use cairn_domain::id::RunId;
use cairn_domain::state::RunStatus;
use cairn_engine::{EngineBuilder, MemoryStore, MockLlm, SystemClock};
use cairn_ports::{Clock, RunStore};
use serde_json::json;

/// Timed runs per workflow, after one warm-up run: a run takes tens of
/// milliseconds, so a median of many keeps a moment of a busy host from
/// deciding the figure.
const RUNS: usize = 21;

/// Steps in each workflow.
const STEPS: usize = 1_000;

/// A chain of `n` agent steps, each reading the previous step's output.
fn chain(n: usize) -> String {
    let mut out = String::from(
        "cairn: 1\nid: chain\nagents:\n  w: { system: You are terse. }\ndefaults:\n  max_parallel: 64\nsteps:\n",
    );
    for i in 0..n {
        let _ = writeln!(out, "  - id: s{i}\n    agent: w");
        if i == 0 {
            out.push_str("    prompt: \"go\"\n");
        } else {
            let _ = writeln!(out, "    prompt: \"after {{{{ steps.s{}.output }}}}\"", i - 1);
        }
    }
    out
}

/// `width` independent agent steps, then one that needs all of them.
fn fan_in(width: usize) -> String {
    let mut out = String::from(
        "cairn: 1\nid: fanin\nagents:\n  w: { system: You are terse. }\ndefaults:\n  max_parallel: 1000\nsteps:\n",
    );
    for i in 0..width {
        let _ = writeln!(out, "  - id: w{i}\n    needs: []\n    agent: w\n    prompt: \"part {i}\"");
    }
    let needs: Vec<String> = (0..width).map(|i| format!("w{i}")).collect();
    let _ = writeln!(
        out,
        "  - id: join\n    needs: [{}]\n    agent: w\n    prompt: \"join {{{{ steps.w0.output }}}} and {{{{ steps.w{}.output }}}}\"",
        needs.join(", "),
        width - 1
    );
    out
}

/// One run on a fresh store and engine; returns the wall time of
/// `Engine::run` alone and the number of events recorded.
async fn run_once(yaml: &str, id: &str) -> (Duration, usize) {
    let def = Definition {
        name: "wf.yaml".into(),
        text: yaml.to_owned(),
        workflow: cairn_testkit::workflow(yaml),
        files: Default::default(),
    };
    let store = Arc::new(MemoryStore::new());
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let engine = EngineBuilder::new(store.clone())
        .clock(clock.clone())
        .provider("default", Arc::new(MockLlm::new(clock, Duration::ZERO)))
        .build();
    let run_id = RunId::new(id).expect("valid run id");
    let start = Instant::now();
    let state = engine.run(def, json!({}), run_id.clone()).await.expect("the run completes");
    let elapsed = start.elapsed();
    assert_eq!(state.status, RunStatus::Completed, "the benchmark workflow must complete");
    let events = store.load(&run_id, 0).await.expect("run stored").events.len();
    (elapsed, events)
}

/// Runs `yaml` once to warm up and then `RUNS` times; returns its JSON row.
async fn measure(name: &str, yaml: &str, steps: usize) -> serde_json::Value {
    let (_, events) = run_once(yaml, "bench-warmup").await;
    let mut times = Vec::with_capacity(RUNS);
    for i in 0..RUNS {
        times.push(run_once(yaml, &format!("bench-{i}")).await.0);
    }
    cairn_testkit::bench::steps_row(name, steps, events, times).0
}

fn main() {
    // `cargo bench` passes `--bench`; any other argument filters the
    // workflows by name, as `cargo bench -- <filter>` does elsewhere.
    let filter: Vec<String> = std::env::args().skip(1).filter(|a| !a.starts_with("--")).collect();
    let wanted = |name: &str| filter.is_empty() || filter.iter().any(|f| name.contains(f.as_str()));
    let runtime =
        tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("a tokio runtime starts");
    let rows = runtime.block_on(async {
        let workflows = [
            ("chain 1,000 steps", chain(STEPS), STEPS),
            ("fan-in 1,000 wide", fan_in(STEPS), STEPS + 1),
            ("fan-out 1,000 items + reduce", cairn_testkit::bench::fan_out(STEPS), STEPS + 2),
        ];
        let mut rows = Vec::new();
        for (name, yaml, steps) in workflows.iter().filter(|(name, ..)| wanted(name)) {
            rows.push(measure(name, yaml, *steps).await);
        }
        rows
    });
    println!("{}", json!({ "engine": rows }));
}
