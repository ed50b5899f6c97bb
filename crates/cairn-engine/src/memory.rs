//! A [`RunStore`], [`TokenStore`] and [`WorkflowStore`] in memory: for
//! tests, and for hosts that need no durability.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;

use async_trait::async_trait;
use cairn_domain::id::{RunId, WorkflowId};
use cairn_domain::state::{Event, EventKind, Timestamp};
use cairn_ports::{
    NewRun, RegisterError, Registered, RunPage, RunQuery, RunStore, RunSummary, Snapshot, StoreError,
    StoredRun, TokenRecord, TokenStore, WorkflowStore, WorkflowVersion,
};

struct Entry {
    run: StoredRun,
    summary: RunSummary,
    seq: u64,
    snapshot: Option<Snapshot>,
}

/// Runs and API tokens kept in process memory; gone when the process ends.
#[derive(Default)]
pub struct MemoryStore {
    runs: Mutex<HashMap<RunId, Entry>>,
    /// By name, so a listing comes out sorted.
    tokens: Mutex<BTreeMap<String, TokenRecord>>,
    /// Every version of each workflow, oldest first, by id.
    workflows: Mutex<BTreeMap<WorkflowId, Vec<WorkflowVersion>>>,
}

impl MemoryStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> Result<std::sync::MutexGuard<'_, HashMap<RunId, Entry>>, StoreError> {
        self.runs.lock().map_err(|_| StoreError::Io("the in-memory store's lock is poisoned".into()))
    }

    fn lock_workflows(
        &self,
    ) -> Result<std::sync::MutexGuard<'_, BTreeMap<WorkflowId, Vec<WorkflowVersion>>>, StoreError> {
        self.workflows.lock().map_err(|_| StoreError::Io("the in-memory store's lock is poisoned".into()))
    }

    fn lock_tokens(&self) -> Result<std::sync::MutexGuard<'_, BTreeMap<String, TokenRecord>>, StoreError> {
        self.tokens.lock().map_err(|_| StoreError::Io("the in-memory store's lock is poisoned".into()))
    }
}

#[async_trait]
impl RunStore for MemoryStore {
    async fn create(&self, run: NewRun) -> Result<(), StoreError> {
        let mut runs = self.lock()?;
        if runs.contains_key(&run.run_id) {
            return Err(StoreError::AlreadyExists(run.run_id.to_string()));
        }
        if run.created.seq != 1 || !matches!(run.created.kind, EventKind::RunCreated { .. }) {
            return Err(StoreError::Corrupt("a run starts with run_created, numbered 1".into()));
        }
        let summary = RunSummary::fold(std::iter::once(&run.created))?;
        let stored = StoredRun {
            definition_name: run.definition_name,
            definition: run.definition,
            files: run.files,
            events: vec![run.created],
        };
        runs.insert(run.run_id, Entry { run: stored, summary, seq: 1, snapshot: None });
        Ok(())
    }

    async fn append(&self, run: &RunId, expected_seq: u64, events: &[Event]) -> Result<(), StoreError> {
        let mut runs = self.lock()?;
        let entry = runs.get_mut(run).ok_or_else(|| StoreError::NotFound(run.to_string()))?;
        if entry.seq != expected_seq {
            return Err(StoreError::Conflict {
                run: run.to_string(),
                expected: expected_seq,
                actual: entry.seq,
            });
        }
        cairn_ports::follows(expected_seq, events)?;
        entry.summary.advance(events);
        if let Some(last) = events.last() {
            entry.seq = last.seq;
        }
        entry.run.events.extend_from_slice(events);
        Ok(())
    }

    async fn load(&self, run: &RunId, from_seq: u64) -> Result<StoredRun, StoreError> {
        let runs = self.lock()?;
        let entry = runs.get(run).ok_or_else(|| StoreError::NotFound(run.to_string()))?;
        let from = entry.run.events.partition_point(|e| e.seq < from_seq);
        Ok(StoredRun {
            definition_name: entry.run.definition_name.clone(),
            definition: entry.run.definition.clone(),
            files: entry.run.files.clone(),
            events: entry.run.events[from..].to_vec(),
        })
    }

    async fn list(&self, query: &RunQuery) -> Result<RunPage, StoreError> {
        let runs = self.lock()?;
        Ok(query.page(runs.values().map(|e| e.summary.clone())))
    }

    async fn summary(&self, run: &RunId) -> Result<Option<std::sync::Arc<RunSummary>>, StoreError> {
        Ok(self.lock()?.get(run).map(|e| std::sync::Arc::new(e.summary.clone())))
    }

    async fn put_snapshot(&self, run: &RunId, snapshot: Snapshot) -> Result<(), StoreError> {
        let mut runs = self.lock()?;
        let entry = runs.get_mut(run).ok_or_else(|| StoreError::NotFound(run.to_string()))?;
        if entry.snapshot.as_ref().is_none_or(|s| s.seq <= snapshot.seq) {
            entry.snapshot = Some(snapshot);
        }
        Ok(())
    }

    async fn latest_snapshot(&self, run: &RunId) -> Result<Option<Snapshot>, StoreError> {
        let runs = self.lock()?;
        let entry = runs.get(run).ok_or_else(|| StoreError::NotFound(run.to_string()))?;
        Ok(entry.snapshot.clone())
    }

    async fn delete(&self, run: &RunId) -> Result<(), StoreError> {
        let mut runs = self.lock()?;
        runs.remove(run).map(|_| ()).ok_or_else(|| StoreError::NotFound(run.to_string()))
    }
}

#[async_trait]
impl TokenStore for MemoryStore {
    async fn add_token(&self, token: TokenRecord) -> Result<(), StoreError> {
        let mut tokens = self.lock_tokens()?;
        if tokens.contains_key(&token.name) {
            return Err(StoreError::AlreadyExists(token.name));
        }
        tokens.insert(token.name.clone(), token);
        Ok(())
    }

    async fn tokens(&self) -> Result<Vec<TokenRecord>, StoreError> {
        Ok(self.lock_tokens()?.values().cloned().collect())
    }

    async fn token_by_hash(&self, hash: &str) -> Result<Option<TokenRecord>, StoreError> {
        Ok(self.lock_tokens()?.values().find(|t| t.hash == hash).cloned())
    }

    async fn revoke_token(&self, name: &str) -> Result<bool, StoreError> {
        Ok(self.lock_tokens()?.remove(name).is_some())
    }

    async fn touch_token(&self, name: &str, at: Timestamp) -> Result<(), StoreError> {
        if let Some(token) = self.lock_tokens()?.get_mut(name) {
            token.last_used_at = token.last_used_at.max(Some(at));
        }
        Ok(())
    }
}

#[async_trait]
impl WorkflowStore for MemoryStore {
    async fn register(&self, version: WorkflowVersion) -> Result<Registered, RegisterError> {
        let mut workflows = self.lock_workflows()?;
        let versions = workflows.entry(version.workflow.clone()).or_default();
        let placed = cairn_ports::place(versions, version)?;
        if let Registered::Added(new) = &placed {
            versions.push(new.clone());
        }
        Ok(placed)
    }

    async fn versions(&self, workflow: &WorkflowId) -> Result<Vec<WorkflowVersion>, StoreError> {
        Ok(self.lock_workflows()?.get(workflow).cloned().unwrap_or_default())
    }

    async fn latest(&self) -> Result<Vec<WorkflowVersion>, StoreError> {
        Ok(self.lock_workflows()?.values().filter_map(|v| v.last().cloned()).collect())
    }
}
