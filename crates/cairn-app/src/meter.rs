//! What a long-lived process counts about the runs it drives, for
//! operators (`GET /metrics` of `cairn serve`, in the Prometheus text
//! format): steps started and finished by kind and outcome, how long steps
//! and model calls took, provider errors by class, live followers, and how
//! long store appends take. It is fed from what the engine records (the
//! [`Hub`]) and from a store wrapper ([`MeteredStore`]); nothing in it
//! decides anything.

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Instant;

use async_trait::async_trait;
use cairn_domain::definition::{Step, Workflow};
use cairn_domain::id::RunId;
use cairn_domain::state::{Event, EventKind, RunStatus, Timestamp};
use cairn_ports::{NewRun, RunPage, RunQuery, RunStore, RunSummary, Snapshot, StoreError, StoredRun};

use crate::follow::{Hub, Live};

/// Upper bounds of the latency buckets, in seconds.
const BUCKETS: [f64; 14] = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0];

/// A latency histogram, cumulative as Prometheus reads it.
#[derive(Debug, Default)]
struct Histogram {
    counts: [AtomicU64; BUCKETS.len()],
    count: AtomicU64,
    /// The sum, in microseconds.
    sum_us: AtomicU64,
}

impl Histogram {
    fn observe(&self, seconds: f64) {
        for (bound, count) in BUCKETS.iter().zip(&self.counts) {
            if seconds <= *bound {
                count.fetch_add(1, Ordering::Relaxed);
            }
        }
        self.count.fetch_add(1, Ordering::Relaxed);
        // Whole microseconds: a negative or absurd time counts as none.
        let micros = (seconds * 1e6).clamp(0.0, u64::MAX as f64) as u64;
        self.sum_us.fetch_add(micros, Ordering::Relaxed);
    }

    fn render(&self, out: &mut String, name: &str, labels: &str) {
        let sep = if labels.is_empty() { "" } else { "," };
        for (bound, count) in BUCKETS.iter().zip(&self.counts) {
            let _ = writeln!(
                out,
                "{name}_bucket{{{labels}{sep}le=\"{bound}\"}} {}",
                count.load(Ordering::Relaxed)
            );
        }
        let count = self.count.load(Ordering::Relaxed);
        let _ = writeln!(out, "{name}_bucket{{{labels}{sep}le=\"+Inf\"}} {count}");
        let braces = if labels.is_empty() { String::new() } else { format!("{{{labels}}}") };
        let sum = self.sum_us.load(Ordering::Relaxed) as f64 / 1e6;
        let _ = writeln!(out, "{name}_sum{braces} {sum}");
        let _ = writeln!(out, "{name}_count{braces} {count}");
    }
}

/// The counts of one process.
#[derive(Debug, Default)]
pub struct Meter {
    inner: Mutex<Counts>,
    step_seconds: Mutex<BTreeMap<&'static str, Arc<Histogram>>>,
    llm_seconds: Histogram,
    append_seconds: Histogram,
    followers: AtomicI64,
}

/// The counts kept under a lock (labelled, or per run).
#[derive(Debug, Default)]
struct Counts {
    /// `(kind, outcome)` → how many.
    steps: BTreeMap<(&'static str, &'static str), u64>,
    /// Error class → how many failed model calls.
    provider_errors: BTreeMap<String, u64>,
    /// Per run: its steps' kinds by path, and when each running one started.
    runs: HashMap<RunId, Watched>,
}

/// What the meter knows of one run.
#[derive(Debug, Default)]
struct Watched {
    kinds: HashMap<String, &'static str>,
    started: HashMap<String, Timestamp>,
}

impl Meter {
    /// A meter with nothing counted.
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    /// Counts from every batch the hub brings, until the hub is gone (a
    /// run's workflow, for its steps' kinds, is read from `store` the
    /// first time the run is seen); a meter that falls behind counts what
    /// it still sees.
    pub fn watch(self: &Arc<Self>, hub: &Hub, store: Arc<dyn RunStore>) {
        let mut live = hub.subscribe();
        let meter = Arc::clone(self);
        tokio::spawn(async move {
            loop {
                match live.recv().await {
                    Ok(Live::Recorded { run, events }) => {
                        let workflow = match meter.knows(&run) {
                            true => None,
                            false => workflow_of(store.as_ref(), &run).await,
                        };
                        meter.record(&run, events.iter().map(|e| e.event()), workflow);
                    }
                    Ok(Live::Token { .. }) => {}
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {}
                    Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
                }
            }
        });
    }

    /// Whether `run` has been seen (its steps' kinds are known).
    fn knows(&self, run: &RunId) -> bool {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner).runs.contains_key(run)
    }

    /// Counts what one append recorded of `run`; `workflow` is the run's,
    /// for its steps' kinds, when it is first seen.
    fn record<'a>(
        &self,
        run: &RunId,
        events: impl IntoIterator<Item = &'a Event>,
        workflow: Option<Workflow>,
    ) {
        let mut observed = Vec::new();
        {
            let mut counts = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
            if !counts.runs.contains_key(run) {
                let kinds = workflow.map(|wf| kinds_of(&wf.steps)).unwrap_or_default();
                counts.runs.insert(run.clone(), Watched { kinds, started: HashMap::new() });
            }
            for event in events {
                let (path, outcome) = match &event.kind {
                    EventKind::StepStarted { path, .. } => (path.as_str(), "started"),
                    EventKind::StepSucceeded { path, .. } => (path.as_str(), "succeeded"),
                    EventKind::StepFailed { path, .. } => (path.as_str(), "failed"),
                    EventKind::StepSkipped { path, .. } => (path.as_str(), "skipped"),
                    EventKind::StepCancelled { path } => (path.as_str(), "cancelled"),
                    kind => {
                        if is_end(kind) {
                            counts.runs.remove(run);
                        }
                        continue;
                    }
                };
                let watched = counts.runs.entry(run.clone()).or_default();
                let step_kind = watched.kinds.get(&step_of(path)).copied().unwrap_or("step");
                match &event.kind {
                    EventKind::StepStarted { .. } => {
                        watched.started.insert(path.to_owned(), event.at);
                    }
                    EventKind::StepFailed { error, .. } if step_kind == "agent" => {
                        let class = cairn_domain::state::word(error.class).to_owned();
                        *counts.provider_errors.entry(class).or_default() += 1;
                    }
                    _ => {}
                }
                *counts.steps.entry((step_kind, outcome)).or_default() += 1;
                if outcome != "started"
                    && let Some(watched) = counts.runs.get_mut(run)
                    && let Some(started) = watched.started.remove(path)
                {
                    let seconds = event.at.0.saturating_sub(started.0) as f64 / 1000.0;
                    observed.push((step_kind, seconds));
                }
            }
        }
        for (kind, seconds) in observed {
            self.histogram(kind).observe(seconds);
            if kind == "agent" {
                self.llm_seconds.observe(seconds);
            }
        }
    }

    fn histogram(&self, kind: &'static str) -> Arc<Histogram> {
        let mut all = self.step_seconds.lock().unwrap_or_else(PoisonError::into_inner);
        Arc::clone(all.entry(kind).or_default())
    }

    /// One more live follower (an event stream) while the guard lives.
    pub fn follower(self: &Arc<Self>) -> Following {
        self.followers.fetch_add(1, Ordering::Relaxed);
        Following(Arc::clone(self))
    }

    /// The Prometheus text of every count, with the runs by status given.
    pub fn render(&self, runs_by_status: &[(RunStatus, u64)]) -> String {
        let mut out = String::new();
        out.push_str("# HELP cairn_runs Runs in the store, by status.\n# TYPE cairn_runs gauge\n");
        for (status, n) in runs_by_status {
            let _ = writeln!(out, "cairn_runs{{status=\"{}\"}} {n}", cairn_domain::state::word(*status));
        }
        let counts = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        out.push_str("# HELP cairn_steps_total Steps started and finished, by kind and outcome.\n");
        out.push_str("# TYPE cairn_steps_total counter\n");
        for ((kind, outcome), n) in &counts.steps {
            let _ = writeln!(out, "cairn_steps_total{{kind=\"{kind}\",outcome=\"{outcome}\"}} {n}");
        }
        out.push_str("# HELP cairn_provider_errors_total Model calls that failed, by error class.\n");
        out.push_str("# TYPE cairn_provider_errors_total counter\n");
        for (class, n) in &counts.provider_errors {
            let _ = writeln!(out, "cairn_provider_errors_total{{class=\"{class}\"}} {n}");
        }
        drop(counts);
        out.push_str("# HELP cairn_step_seconds How long finished steps took, by kind.\n");
        out.push_str("# TYPE cairn_step_seconds histogram\n");
        for (kind, histogram) in self.step_seconds.lock().unwrap_or_else(PoisonError::into_inner).iter() {
            histogram.render(&mut out, "cairn_step_seconds", &format!("kind=\"{kind}\""));
        }
        out.push_str("# HELP cairn_llm_call_seconds How long agent steps' model calls took.\n");
        out.push_str("# TYPE cairn_llm_call_seconds histogram\n");
        self.llm_seconds.render(&mut out, "cairn_llm_call_seconds", "");
        out.push_str("# HELP cairn_store_append_seconds How long durable appends took.\n");
        out.push_str("# TYPE cairn_store_append_seconds histogram\n");
        self.append_seconds.render(&mut out, "cairn_store_append_seconds", "");
        out.push_str("# HELP cairn_sse_subscribers Live event streams open now.\n");
        out.push_str("# TYPE cairn_sse_subscribers gauge\n");
        let _ = writeln!(out, "cairn_sse_subscribers {}", self.followers.load(Ordering::Relaxed));
        out
    }
}

/// A live follower, counted while it lives.
pub struct Following(Arc<Meter>);

impl Drop for Following {
    fn drop(&mut self) {
        self.0.followers.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Whether `kind` ends a run (its per-run memory is let go).
fn is_end(kind: &EventKind) -> bool {
    matches!(kind, EventKind::RunCompleted | EventKind::RunFailed { .. } | EventKind::RunCancelled)
}

/// The kinds of a workflow's steps, by their paths without instance keys
/// (`per_epic.stories`).
fn kinds_of(steps: &[Step]) -> HashMap<String, &'static str> {
    fn walk(steps: &[Step], prefix: &str, into: &mut HashMap<String, &'static str>) {
        for step in steps {
            let path = if prefix.is_empty() { step.id.to_string() } else { format!("{prefix}.{}", step.id) };
            into.insert(path.clone(), step.kind.key());
            if let Some(body) = step.body() {
                walk(body, &path, into);
            }
        }
    }
    let mut kinds = HashMap::new();
    walk(steps, "", &mut kinds);
    kinds
}

/// A step path without its instance keys: `per_epic[e1].stories` →
/// `per_epic.stories`.
fn step_of(path: &str) -> String {
    let mut out = String::with_capacity(path.len());
    let mut depth = 0usize;
    for c in path.chars() {
        match c {
            '[' => depth += 1,
            ']' => depth = depth.saturating_sub(1),
            _ if depth == 0 => out.push(c),
            _ => {}
        }
    }
    out
}

/// The workflow run `run` recorded, if it can be read.
async fn workflow_of(store: &dyn RunStore, run: &RunId) -> Option<Workflow> {
    let stored = store.load(run, u64::MAX).await.ok()?;
    let definition =
        cairn_domain::Definition::from_recorded(&stored.definition_name, &stored.definition, &stored.files)
            .ok()?;
    Some(definition.workflow)
}

/// A store that times its appends for a [`Meter`]; everything else passes
/// through.
pub struct MeteredStore {
    inner: Arc<dyn RunStore>,
    meter: Arc<Meter>,
}

impl MeteredStore {
    /// `inner`, timed into `meter`.
    pub fn new(inner: Arc<dyn RunStore>, meter: Arc<Meter>) -> Self {
        Self { inner, meter }
    }
}

#[async_trait]
impl RunStore for MeteredStore {
    async fn create(&self, run: NewRun) -> Result<(), StoreError> {
        self.inner.create(run).await
    }

    async fn append(&self, run: &RunId, expected_seq: u64, events: &[Event]) -> Result<(), StoreError> {
        let started = Instant::now();
        let appended = self.inner.append(run, expected_seq, events).await;
        self.meter.append_seconds.observe(started.elapsed().as_secs_f64());
        appended
    }

    async fn load(&self, run: &RunId, from_seq: u64) -> Result<StoredRun, StoreError> {
        self.inner.load(run, from_seq).await
    }

    async fn list(&self, query: &RunQuery) -> Result<RunPage, StoreError> {
        self.inner.list(query).await
    }

    async fn summaries(&self, query: &RunQuery) -> Result<Vec<Arc<RunSummary>>, StoreError> {
        self.inner.summaries(query).await
    }

    async fn summary(&self, run: &RunId) -> Result<Option<Arc<RunSummary>>, StoreError> {
        self.inner.summary(run).await
    }

    async fn put_snapshot(&self, run: &RunId, snapshot: Snapshot) -> Result<(), StoreError> {
        self.inner.put_snapshot(run, snapshot).await
    }

    async fn latest_snapshot(&self, run: &RunId) -> Result<Option<Snapshot>, StoreError> {
        self.inner.latest_snapshot(run).await
    }

    async fn delete(&self, run: &RunId) -> Result<(), StoreError> {
        self.inner.delete(run).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn instance_keys_are_left_out_of_a_step_path() {
        assert_eq!(step_of("per_epic[e1].stories"), "per_epic.stories");
        assert_eq!(step_of("loop[2].inner[a.b]"), "loop.inner");
        assert_eq!(step_of("plain"), "plain");
    }

    #[test]
    fn a_histogram_is_cumulative_with_its_sum_and_count() {
        let h = Histogram::default();
        h.observe(0.003);
        h.observe(0.2);
        h.observe(400.0);
        let mut out = String::new();
        h.render(&mut out, "x", "kind=\"agent\"");
        assert!(out.contains("x_bucket{kind=\"agent\",le=\"0.005\"} 1\n"), "{out}");
        assert!(out.contains("x_bucket{kind=\"agent\",le=\"0.25\"} 2\n"), "{out}");
        assert!(out.contains("x_bucket{kind=\"agent\",le=\"300\"} 2\n"), "{out}");
        assert!(out.contains("x_bucket{kind=\"agent\",le=\"+Inf\"} 3\n"), "{out}");
        assert!(out.contains("x_count{kind=\"agent\"} 3\n"), "{out}");
        assert!(out.contains("x_sum{kind=\"agent\"} 400.203\n"), "{out}");
    }

    #[test]
    fn steps_are_counted_by_kind_and_outcome_with_their_time() {
        let wf = cairn_testkit::workflow(
            "cairn: 1\nid: m\nagents:\n  w: {}\nsteps:\n  - id: ask\n    agent: w\n    prompt: hi\n  - id: tidy\n    set: done\n",
        );
        let meter = Meter::new();
        let run = RunId::new("r1").expect("id");
        let at = |ms, kind| Event { seq: 0, at: Timestamp(ms), actor: "engine".into(), kind };
        let path = |p: &str| cairn_domain::state::StepPath::new(p);
        let events = vec![
            at(1000, EventKind::StepStarted { path: path("ask"), attempt: 1 }),
            at(1250, EventKind::StepSucceeded { path: path("ask"), output: serde_json::json!("x") }),
            at(1300, EventKind::StepStarted { path: path("tidy"), attempt: 1 }),
        ];
        meter.record(&run, &events, Some(wf));
        let text = meter.render(&[(RunStatus::Running, 1)]);
        assert!(text.contains("cairn_runs{status=\"running\"} 1\n"), "{text}");
        assert!(text.contains("cairn_steps_total{kind=\"agent\",outcome=\"started\"} 1\n"), "{text}");
        assert!(text.contains("cairn_steps_total{kind=\"agent\",outcome=\"succeeded\"} 1\n"), "{text}");
        assert!(text.contains("cairn_steps_total{kind=\"set\",outcome=\"started\"} 1\n"), "{text}");
        assert!(text.contains("cairn_llm_call_seconds_count 1\n"), "{text}");
        assert!(text.contains("cairn_llm_call_seconds_sum 0.25\n"), "{text}");
        let follower = meter.follower();
        assert!(meter.render(&[]).contains("cairn_sse_subscribers 1\n"));
        drop(follower);
        assert!(meter.render(&[]).contains("cairn_sse_subscribers 0\n"));
    }
}
