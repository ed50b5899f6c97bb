//! The run store port: append-only event logs, guarded by sequence numbers.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use async_trait::async_trait;
use cairn_domain::id::{RunId, WorkflowId};
use cairn_domain::label::Labels;
use cairn_domain::state::StepPath;
use cairn_domain::state::{Event, EventKind, RunState, RunStatus, Timestamp, TokenUsage};
use serde::{Deserialize, Serialize};

use crate::StoreError;

/// A run to create: its identity, the exact definition it starts with, and
/// its first event.
#[derive(Debug, Clone, PartialEq)]
pub struct NewRun {
    /// The run's id.
    pub run_id: RunId,
    /// The workflow's id.
    pub workflow: WorkflowId,
    /// The definition's file name, as given.
    pub definition_name: String,
    /// The definition's exact text; editing the file later never changes the run.
    pub definition: String,
    /// Files the definition names (schemas), by the path it names them with.
    pub files: BTreeMap<String, String>,
    /// SHA-256 of `definition`, hex.
    pub definition_hash: String,
    /// The first event (`run_created`, sequence 1).
    pub created: Event,
}

impl NewRun {
    /// What its `run_created` fixes that a store's index keeps.
    pub fn launched(&self) -> Launched {
        Launched::of(&self.created)
    }
}

/// What a run's `run_created` fixes of it that listings show and filter
/// on: its labels, who started it, its priority and its parent.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Launched {
    /// Its labels.
    pub labels: Labels,
    /// The actor of its `run_created`.
    pub triggered_by: String,
    /// Its priority.
    pub priority: i32,
    /// The run it was made from.
    pub parent: Option<RunId>,
}

impl Launched {
    /// What `created` (a `run_created`) fixes; nothing of another event.
    fn of(created: &Event) -> Self {
        match &created.kind {
            EventKind::RunCreated { labels, priority, parent, .. } => Self {
                labels: labels.clone(),
                triggered_by: created.actor.clone(),
                priority: *priority,
                parent: parent.as_ref().map(|p| p.run_id.clone()),
            },
            _ => Self::default(),
        }
    }
}

/// Everything stored for a run (its log from the sequence number asked for on).
#[derive(Debug, Clone, PartialEq)]
pub struct StoredRun {
    /// The definition's file name.
    pub definition_name: String,
    /// The definition's exact text.
    pub definition: String,
    /// Files the definition names, as they were when the run started.
    pub files: BTreeMap<String, String>,
    /// The log from the `from_seq` given to [`RunStore::load`] on, in
    /// sequence order (the whole log for 0 or 1).
    pub events: Vec<Event>,
}

/// A run's state folded up to an event: loading starts from the latest
/// snapshot and replays only the events after it.
#[derive(Debug, Clone, PartialEq)]
pub struct Snapshot {
    /// The last event folded in.
    pub seq: u64,
    /// The state after it.
    pub state: RunState,
}

/// A run in a listing (serialized by stores that keep it as JSON).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunSummary {
    /// The run's id.
    pub run_id: RunId,
    /// The workflow's id.
    pub workflow: WorkflowId,
    /// Its status after its last event.
    pub status: RunStatus,
    /// When it was created.
    pub created_at: Timestamp,
    /// When its last event was recorded.
    pub updated_at: Timestamp,
    /// Tokens used, by model: the sum of its `usage_recorded` events, kept
    /// by the store so a listing never folds a log.
    pub usage_by_model: BTreeMap<String, TokenUsage>,
    /// Its labels, as its `run_created` fixed them.
    pub labels: Labels,
    /// Who started it: the actor of its `run_created`.
    pub triggered_by: String,
    /// Its priority, as its `run_created` fixed it.
    pub priority: i32,
    /// The run it was made from (a fork's source), as its `run_created`
    /// fixed it.
    pub parent: Option<RunId>,
    /// Tokens by agent and the steps that failed for good: what stats
    /// count, kept by the store as the run goes.
    pub figures: RunFigures,
}

/// What a run's index keeps of its events for stats, beside its status
/// and tokens by model: tokens by agent (and model), and the steps that
/// failed for good (retries spent), each with its failures by error class.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct RunFigures {
    /// Tokens used, by agent, then model (calls recorded before runs kept
    /// the agent are not here).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub usage_by_agent: BTreeMap<String, BTreeMap<String, TokenUsage>>,
    /// Failures for good, by step (its path without instance keys:
    /// `per_epic.stories`), then error class.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub failures: BTreeMap<String, BTreeMap<String, u32>>,
}

impl RunFigures {
    /// Counts what `event` adds (a fork's copied events count for its
    /// source, as its usage does).
    pub fn add(&mut self, event: &EventKind) {
        match event {
            EventKind::UsageRecorded { agent: Some(agent), model, usage, .. } => {
                self.usage_by_agent
                    .entry(agent.clone())
                    .or_default()
                    .entry(model.clone())
                    .or_default()
                    .add(*usage);
            }
            EventKind::StepFailed { path, error, retry_at: None, .. } => {
                let by_class = self.failures.entry(step_of(path)).or_default();
                *by_class.entry(error.class.as_str().to_owned()).or_default() += 1;
            }
            EventKind::RunForked { .. } => *self = Self::default(),
            _ => {}
        }
    }
}

/// A step's path without its instance keys: the step as the definition
/// names it (`per_epic[e1].stories` → `per_epic.stories`).
fn step_of(path: &StepPath) -> String {
    let mut out = String::with_capacity(path.as_str().len());
    let mut depth = 0usize;
    for c in path.as_str().chars() {
        match c {
            '[' => depth += 1,
            ']' => depth = depth.saturating_sub(1),
            c if depth == 0 => out.push(c),
            _ => {}
        }
    }
    out
}

impl RunSummary {
    /// A run's summary from its log, first event on: what every store's
    /// index keeps, folded.
    pub fn fold<'a>(events: impl IntoIterator<Item = &'a Event>) -> Result<Self, StoreError> {
        let mut events = events.into_iter();
        let Some(created) = events.next() else {
            return Err(StoreError::Corrupt("a run's log is empty".into()));
        };
        let EventKind::RunCreated { run_id, workflow, .. } = &created.kind else {
            return Err(StoreError::Corrupt(format!(
                "a run's log starts with event {}, not run_created",
                created.seq
            )));
        };
        let Launched { labels, triggered_by, priority, parent } = Launched::of(created);
        let mut summary = Self {
            run_id: run_id.clone(),
            workflow: workflow.clone(),
            status: RunStatus::Pending,
            created_at: created.at,
            updated_at: created.at,
            usage_by_model: BTreeMap::new(),
            labels,
            triggered_by,
            priority,
            parent,
            figures: RunFigures::default(),
        };
        summary.advance(events);
        Ok(summary)
    }

    /// The summary past `events`: the status they move the run to, the
    /// time of the last, the usage they record.
    pub fn advance<'a>(&mut self, events: impl IntoIterator<Item = &'a Event>) {
        for event in events {
            self.status = event.kind.run_status().unwrap_or(self.status);
            self.updated_at = event.at;
            tally_usage(&mut self.usage_by_model, &event.kind);
            self.figures.add(&event.kind);
        }
    }

    /// Tokens used by every model together.
    pub fn usage(&self) -> TokenUsage {
        TokenUsage::total(self.usage_by_model.values())
    }

    /// Where this run sits in the newest-first order, as a cursor.
    pub fn cursor(&self) -> Cursor {
        Cursor { created_at: self.created_at, run_id: self.run_id.clone() }
    }
}

/// What `list` is asked: filters, a page size, and where the last page ended.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RunQuery {
    /// Only runs with this status.
    pub status: Option<RunStatus>,
    /// Only runs of this workflow.
    pub workflow: Option<WorkflowId>,
    /// Only runs with every one of these labels.
    pub labels: Labels,
    /// Only runs started by this actor.
    pub triggered_by: Option<String>,
    /// Only runs of this priority.
    pub priority: Option<i32>,
    /// Only runs made from this run.
    pub parent: Option<RunId>,
    /// At most this many runs (`None`: all of them).
    pub limit: Option<usize>,
    /// Only runs after this one, in newest-first order (the previous page's `next`).
    pub after: Option<Cursor>,
}

impl RunQuery {
    /// Whether `run` passes the filters and comes after the cursor.
    pub fn matches(&self, run: &RunSummary) -> bool {
        self.status.is_none_or(|s| s == run.status)
            && self.workflow.as_ref().is_none_or(|w| *w == run.workflow)
            && self.labels.iter().all(|(k, v)| run.labels.get(k) == Some(v))
            && self.triggered_by.as_ref().is_none_or(|t| *t == run.triggered_by)
            && self.priority.is_none_or(|p| p == run.priority)
            && self.parent.as_ref().is_none_or(|p| Some(p) == run.parent.as_ref())
            && self.after.as_ref().is_none_or(|c| (run.created_at, &run.run_id) < (c.created_at, &c.run_id))
    }

    /// The page of `runs` (given in any order) this query asks for; every
    /// store pages through it, so all filter, order and page alike.
    pub fn page(&self, runs: impl IntoIterator<Item = RunSummary>) -> RunPage {
        self.page_of(runs.into_iter().filter(|r| self.matches(r)).map(std::sync::Arc::new).collect())
    }

    /// [`RunQuery::page`] of shared summaries that match already (a store
    /// that keeps its index in memory): only the page's are copied.
    pub fn page_of(&self, mut runs: Vec<std::sync::Arc<RunSummary>>) -> RunPage {
        runs.sort_by(|a, b| b.created_at.cmp(&a.created_at).then_with(|| b.run_id.cmp(&a.run_id)));
        let more = self.limit.is_some_and(|n| runs.len() > n);
        runs.truncate(self.limit.unwrap_or(usize::MAX));
        let next = if more { runs.last().map(|r| r.cursor()) } else { None };
        let runs =
            runs.into_iter().map(|r| std::sync::Arc::try_unwrap(r).unwrap_or_else(|r| RunSummary::clone(&r)));
        RunPage { runs: runs.collect(), next }
    }
}

/// Where a page of runs ended: the last run's creation time and id (newest-first order).
///
/// Written and read as an opaque token, `<created_ms>.<run_id>`, so a
/// command line or a URL can carry it to the next page.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cursor {
    /// The last run's creation time.
    pub created_at: Timestamp,
    /// The last run's id.
    pub run_id: RunId,
}

impl fmt::Display for Cursor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.created_at.0, self.run_id)
    }
}

/// A token that is not a [`Cursor`] (not one a previous page gave).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{0}` is not a cursor of the run list; pass the one a previous page gave")]
pub struct CursorError(pub String);

impl FromStr for Cursor {
    type Err = CursorError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || CursorError(s.to_owned());
        let (ms, id) = s.split_once('.').ok_or_else(bad)?;
        if ms.is_empty() || !ms.bytes().all(|b| b.is_ascii_digit()) {
            return Err(bad());
        }
        let created_at = Timestamp(ms.parse().map_err(|_| bad())?);
        Ok(Self { created_at, run_id: RunId::new(id).map_err(|_| bad())? })
    }
}

/// A page of runs, newest first, and the cursor of the next page when there is one.
#[derive(Debug, Clone, PartialEq)]
pub struct RunPage {
    /// The runs, newest first.
    pub runs: Vec<RunSummary>,
    /// Where the next page starts; `None` when no more runs match.
    pub next: Option<Cursor>,
}

/// Where runs live.
///
/// Contract:
/// - `create` stores the run and its first event atomically, or returns
///   `AlreadyExists`; a retried start never makes two runs. A first event
///   that is not `run_created` numbered 1 is refused (`Corrupt`) and
///   nothing is stored.
/// - `append` adds events atomically (all or none) after the event numbered
///   `expected_seq`, or returns `Conflict` with the actual last number when
///   another writer got there first; events must be numbered
///   `expected_seq + 1, + 2, ...` (a gap or a wrong number anywhere in the
///   batch is `Corrupt`, and nothing of it is stored). When it returns
///   `Ok`, the events are durable to the store's configured level.
/// - `load(run, from_seq)` returns the definition and the events numbered
///   `from_seq` and after, in order (0 or 1: the whole log; past the last
///   event: none), or `NotFound`. It reads only what it returns, or little
///   more, so loading after a snapshot saves I/O and not only folding.
/// - `list` returns the runs that match the query's filters, newest first
///   (`created_at` descending, then run id descending), only those strictly
///   after `after`, at most `limit`; `next` is set only when more match.
///   Each summary's status, `updated_at` and usage are those after the
///   run's last event, read from an index the store keeps, never by
///   folding logs.
/// - `put_snapshot` keeps a folded state; `latest_snapshot` returns the one
///   with the highest `seq` that can still be read (older ones when newer
///   ones are damaged; `None` when none can). Snapshots are an
///   optimisation: the log alone is the truth.
/// - `delete` removes a run and everything stored for it, or `NotFound`.
///
/// [`follows`](crate::follows) is the check every `append` makes of the events' numbers.
#[cfg_attr(feature = "test-util", mockall::automock)]
#[async_trait]
pub trait RunStore: Send + Sync {
    /// Creates a run.
    async fn create(&self, run: NewRun) -> Result<(), StoreError>;
    /// Appends events after `expected_seq`.
    async fn append(&self, run: &RunId, expected_seq: u64, events: &[Event]) -> Result<(), StoreError>;
    /// Loads a run's definition and its events numbered `from_seq` and after.
    async fn load(&self, run: &RunId, from_seq: u64) -> Result<StoredRun, StoreError>;
    /// Lists a page of the runs `query` asks for, newest first.
    async fn list(&self, query: &RunQuery) -> Result<RunPage, StoreError>;
    /// Every run `query`'s filters select (its page and order aside),
    /// shared: what figures over many runs read. A store that keeps its
    /// index in memory hands it out without copying it.
    async fn summaries(&self, query: &RunQuery) -> Result<Vec<std::sync::Arc<RunSummary>>, StoreError> {
        let all = RunQuery { limit: None, ..query.clone() };
        Ok(self.list(&all).await?.runs.into_iter().map(std::sync::Arc::new).collect())
    }
    /// One run's summary (`None`: no such run). A store that keeps its
    /// index in memory answers without a scan.
    async fn summary(&self, run: &RunId) -> Result<Option<std::sync::Arc<RunSummary>>, StoreError> {
        Ok(self.summaries(&RunQuery::default()).await?.into_iter().find(|s| &s.run_id == run))
    }
    /// Keeps a snapshot of a run's state.
    async fn put_snapshot(&self, run: &RunId, snapshot: Snapshot) -> Result<(), StoreError>;
    /// The run's latest snapshot, if any.
    async fn latest_snapshot(&self, run: &RunId) -> Result<Option<Snapshot>, StoreError>;
    /// Removes a run.
    async fn delete(&self, run: &RunId) -> Result<(), StoreError>;
}

/// Keeps a run's usage by model, as its summary shows it, past `event`:
/// `usage_recorded` adds; `run_forked` clears what the events copied into
/// a fork recorded (the source's tokens: inherited, not the fork's).
pub fn tally_usage(usage: &mut BTreeMap<String, TokenUsage>, event: &EventKind) {
    match event {
        EventKind::UsageRecorded { model, usage: used, .. } => {
            usage.entry(model.clone()).or_default().add(*used);
        }
        EventKind::RunForked { .. } => usage.clear(),
        _ => {}
    }
}

/// Whether `events` number on from `expected_seq` without gaps; a store
/// refuses an append that does not (`Corrupt`), before writing anything.
pub fn follows(expected_seq: u64, events: &[Event]) -> Result<(), StoreError> {
    for (i, e) in events.iter().enumerate() {
        if e.seq != expected_seq + 1 + i as u64 {
            return Err(StoreError::Corrupt(format!(
                "event {} does not follow {}",
                e.seq,
                expected_seq + i as u64
            )));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cursor_reads_back_from_its_token_and_nothing_else_does() {
        let cursor =
            Cursor { created_at: Timestamp(1_796_000_000_000), run_id: RunId::new("run-7").expect("id") };
        assert_eq!(cursor.to_string(), "1796000000000.run-7");
        assert_eq!("1796000000000.run-7".parse(), Ok(cursor));
        for bad in
            ["", "run-7", ".run-7", "12.", "+12.run-7", "1x.run-7", "12.bad id", "99999999999999999999.r"]
        {
            assert_eq!(bad.parse::<Cursor>(), Err(CursorError(bad.to_owned())), "{bad:?}");
        }
    }
}
