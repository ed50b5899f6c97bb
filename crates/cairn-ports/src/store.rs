//! The run store port: append-only event logs, guarded by sequence numbers.

use std::collections::BTreeMap;

use async_trait::async_trait;
use cairn_domain::id::{RunId, WorkflowId};
use cairn_domain::state::{Event, RunState, RunStatus, Timestamp};

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

/// Everything stored for a run.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredRun {
    /// The definition's file name.
    pub definition_name: String,
    /// The definition's exact text.
    pub definition: String,
    /// Files the definition names, as they were when the run started.
    pub files: BTreeMap<String, String>,
    /// The whole log, in sequence order.
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

/// A run in a listing.
#[derive(Debug, Clone, PartialEq)]
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
}

/// Where runs live.
///
/// Contract:
/// - `create` stores the run and its first event atomically, or returns
///   `AlreadyExists`; a retried start never makes two runs.
/// - `append` adds events atomically (all or none) after the event numbered
///   `expected_seq`, or returns `Conflict` with the actual last number when
///   another writer got there first; events must be numbered
///   `expected_seq + 1, + 2, ...`. When it returns `Ok`, the events are
///   durable to the store's configured level.
/// - `load` returns the definition and the whole log, or `NotFound`.
/// - `list` returns every run, newest first.
/// - `put_snapshot` keeps a folded state; `latest_snapshot` returns the one
///   with the highest `seq`. Snapshots are an optimisation: the log alone
///   is the truth.
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
    /// Loads a run.
    async fn load(&self, run: &RunId) -> Result<StoredRun, StoreError>;
    /// Lists runs, newest first.
    async fn list(&self) -> Result<Vec<RunSummary>, StoreError>;
    /// Keeps a snapshot of a run's state.
    async fn put_snapshot(&self, run: &RunId, snapshot: Snapshot) -> Result<(), StoreError>;
    /// The run's latest snapshot, if any.
    async fn latest_snapshot(&self, run: &RunId) -> Result<Option<Snapshot>, StoreError>;
    /// Removes a run.
    async fn delete(&self, run: &RunId) -> Result<(), StoreError>;
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
