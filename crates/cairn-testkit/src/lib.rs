//! Test support shared by cairn's crates: a fake clock, event-log rendering
//! for snapshots, and the conformance suites every `RunStore` and every
//! `TokenStore` must pass.
//!
//! What it is: code used only from tests (`[dev-dependencies]`).
//!
//! What it deliberately does not do: ship in a binary, or hold production
//! logic: a fake here stands in for a port, it never replaces one.
//!
//! May depend on: `cairn-domain`, `cairn-ports`, tokio (with its test
//! utilities). Never on the engine, an adapter or the app (they depend on
//! it, to run its suites).
//!
//! Read first: [`FakeClock`], [`run_store_suite!`], [`run_token_store_suite!`],
//! [`run_workflow_store_suite!`], [`event_line`].

pub mod store_suite;
pub mod token_suite;
pub mod workflow_suite;

use std::time::Duration;

use async_trait::async_trait;
use cairn_domain::state::{Event, EventKind, Timestamp};
use cairn_ports::Clock;

/// A clock on tokio's virtual time. In a test runtime started paused
/// (`#[tokio::test(start_paused = true)]`), time stands still while any task
/// can make progress and jumps to the next timer when all wait: sleeps cost
/// nothing, timestamps are exact, and runs replay identically.
pub struct FakeClock {
    start: tokio::time::Instant,
    epoch_ms: u64,
}

impl FakeClock {
    /// A clock whose `now` starts at `epoch_ms`.
    pub fn starting_at(epoch_ms: u64) -> Self {
        Self { start: tokio::time::Instant::now(), epoch_ms }
    }
}

impl Default for FakeClock {
    fn default() -> Self {
        Self::starting_at(0)
    }
}

#[async_trait]
impl Clock for FakeClock {
    fn now(&self) -> Timestamp {
        let elapsed = u64::try_from(self.start.elapsed().as_millis()).unwrap_or(u64::MAX);
        Timestamp(self.epoch_ms + elapsed)
    }

    async fn sleep(&self, duration: Duration) {
        tokio::time::sleep(duration).await;
    }
}

/// One event as a short, stable line for snapshots:
/// `seq time type path detail`.
pub fn event_line(e: &Event) -> String {
    let t = format!("{:>3}.{:03}s", e.at.0 / 1000, e.at.0 % 1000);
    let v = serde_json::to_value(&e.kind).unwrap_or_default();
    let kind = v["type"].as_str().unwrap_or("?").to_owned();
    let path = v["path"].as_str().map(|p| format!(" {p}")).unwrap_or_default();
    let detail = match &e.kind {
        EventKind::RunCreated { workflow, inputs, .. } => format!(" {workflow} {inputs}"),
        EventKind::StepStarted { attempt, .. } => format!(" #{attempt}"),
        EventKind::StepSucceeded { output, .. } => format!(" -> {output}"),
        EventKind::StepFailed { attempt, error, retry_at, .. } => format!(
            " #{attempt} {}: {}{}",
            error.class,
            error.message,
            retry_at.map(|t| format!(" (retry at {}.{:03}s)", t.0 / 1000, t.0 % 1000)).unwrap_or_default()
        ),
        EventKind::StepSkipped { reason, .. } => format!(": {reason}"),
        EventKind::StepWaiting { wait, .. } => format!(" ({})", cairn_domain::state::word(*wait)),
        EventKind::RunWaiting { wait } => format!(" ({})", cairn_domain::state::word(wait)),
        EventKind::ChildStarted { attempt, run_id, .. } => format!(" #{attempt} {run_id}"),
        EventKind::ChildWaiting { run_id, wait, .. } => {
            format!(" {run_id} ({})", cairn_domain::state::word(wait))
        }
        EventKind::GateDecided { approve, role, comment, timed_out, .. } => format!(
            " {} by {}{}{}{}",
            if *approve { "approved" } else { "rejected" },
            e.actor,
            role.as_ref().map(|r| format!(" as {r}")).unwrap_or_default(),
            comment.as_ref().map(|c| format!(": {c}")).unwrap_or_default(),
            if *timed_out { " (timed out)" } else { "" },
        ),
        EventKind::Answered { text, .. } => format!(" by {}: {text}", e.actor),
        EventKind::OutputRepaired { attempt, reason, .. } => format!(" #{attempt}: {reason}"),
        EventKind::PromptRendered { attempt, prompt, .. } => format!(" #{attempt}: {prompt:?}"),
        EventKind::ToolCalled { attempt, round, tool, arguments, .. } => {
            format!(" #{attempt} round {round}: {tool} {arguments}")
        }
        EventKind::ToolReturned { call_id, result, refused, .. } => {
            format!(" {call_id}{}: {result:?}", if *refused { " refused" } else { "" })
        }
        EventKind::SessionExtended { agent, turns, .. } => format!(" {agent} +{} messages", turns.len()),
        EventKind::GroupExpanded { keys, .. } => format!(": {}", keys.join(", ")),
        EventKind::IterationStarted { index, .. } => format!(" [{index}]"),
        EventKind::InstanceFinished { key, failed, .. } => {
            let failed = failed.as_ref().map(|f| format!(" ({f} failed)")).unwrap_or_default();
            format!(" [{key}]{failed}")
        }
        EventKind::DocumentStored { scope, doc_type, .. } => format!(" {doc_type} in [{scope}]"),
        EventKind::UsageRecorded { model, usage, .. } => {
            format!(" {model} {}+{}", usage.prompt_tokens, usage.completion_tokens)
        }
        EventKind::RunFailed { error } => format!(" {}: {}", error.class, error.message),
        EventKind::GotoTaken { from, to, .. } => format!(" {from} -> {to}"),
        _ => String::new(),
    };
    format!("{:>2} {t} {kind}{path}{detail}", e.seq)
}

/// Loads a workflow written inline in a test or bench; it names no files.
/// Panics on an invalid definition: that is a mistake in the test itself.
pub fn workflow(yaml: &str) -> cairn_domain::definition::Workflow {
    let mut no_files = |_: &str| Err("no files in tests".to_owned());
    match cairn_domain::load("wf.yaml", yaml.as_bytes(), &mut no_files) {
        Ok(wf) => wf,
        Err(problems) => panic!("invalid test workflow: {problems:?}"),
    }
}

/// What the benchmarks share: measured, never asserted.
pub mod bench {
    use std::time::Duration;

    /// A fan-out over `items` numbers (64 instances open at once), each
    /// instance one trivial `set` step, then a reduce step reading every
    /// instance's output.
    pub fn fan_out(items: usize) -> String {
        format!(
            "cairn: 1\nid: fanout\ndefaults: {{ max_parallel: 64 }}\nsteps:\n  - id: items\n    set: \"{{{{ range({items}) | list }}}}\"\n  - id: per_item\n    for_each: {{ items: \"{{{{ steps.items.output }}}}\", as: item }}\n    steps:\n      - id: work\n        set: \"{{{{ item * 2 }}}}\"\n  - id: reduce\n    set: \"{{{{ steps.per_item.output | length }}}}\"\n"
        )
    }

    /// The median and the best of `times`, in seconds.
    pub fn median_best(mut times: Vec<Duration>) -> (f64, f64) {
        times.sort();
        (
            times.get(times.len() / 2).map_or(0.0, Duration::as_secs_f64),
            times.first().map_or(0.0, Duration::as_secs_f64),
        )
    }

    /// `x` rounded to `digits` decimals.
    pub fn round(x: f64, digits: i32) -> f64 {
        let scale = 10f64.powi(digits);
        (x * scale).round() / scale
    }

    /// The JSON row of a measurement of `steps` steps (also printed to
    /// stderr), and its steps/s from the median.
    pub fn steps_row(
        name: &str,
        steps: usize,
        events: usize,
        times: Vec<Duration>,
    ) -> (serde_json::Value, f64) {
        let runs = times.len();
        let (median, best) = median_best(times);
        let per_second = steps as f64 / median;
        let row = serde_json::json!({
            "name": name,
            "steps": steps,
            "events": events,
            "runs": runs,
            "median_ms": round(median * 1000.0, 2),
            "best_ms": round(best * 1000.0, 2),
            "steps_per_s": round(per_second, 0),
        });
        eprintln!("{row}");
        (row, per_second)
    }
}
