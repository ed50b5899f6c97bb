//! The workflow catalog in the store's own sled tree, `workflows`: the key
//! is a workflow's id, a zero byte and its version's number (big-endian,
//! so a workflow's versions iterate oldest first), the value the JSON of
//! a versioned [`VersionEntry`].
//!
//! Like tokens, the catalog is not runs: it stays out of the write-ahead
//! log, and a registration flushes sled before it returns, so a version
//! registered survives the process being killed.

use std::collections::BTreeMap;

use async_trait::async_trait;
use cairn_domain::id::WorkflowId;
use cairn_domain::state::Timestamp;
use cairn_ports::{RegisterError, Registered, StoreError, WorkflowStore, WorkflowVersion};
use serde::{Deserialize, Serialize};

use crate::{SledStore, io, off_the_runtime};

/// The name of the tree the catalog is kept in.
pub(crate) const WORKFLOWS_TREE: &str = "workflows";

/// The version every entry is written with.
const VERSION: u32 = 1;

/// A registered version as stored: this crate's own format, not the
/// port's type, so the port may change without the store's files changing.
#[derive(Serialize, Deserialize)]
struct VersionEntry {
    v: u32,
    workflow: String,
    version: String,
    number: u32,
    definition_name: String,
    definition: String,
    #[serde(default)]
    files: BTreeMap<String, String>,
    hash: String,
    registered_at: u64,
    registered_by: String,
}

impl VersionEntry {
    fn new(v: &WorkflowVersion) -> Self {
        Self {
            v: VERSION,
            workflow: v.workflow.to_string(),
            version: v.version.clone(),
            number: v.number,
            definition_name: v.definition_name.clone(),
            definition: v.definition.clone(),
            files: v.files.clone(),
            hash: v.hash.clone(),
            registered_at: v.registered_at.0,
            registered_by: v.registered_by.clone(),
        }
    }

    /// The version stored under `key`; anything that does not read as one
    /// (bad JSON, another record version, a key it does not belong under)
    /// is `Corrupt`, naming the key.
    fn read(key: &[u8], bytes: &[u8]) -> Result<WorkflowVersion, StoreError> {
        let shown = String::from_utf8_lossy(key).replace('\0', "#");
        let corrupt =
            |why: String| StoreError::Corrupt(format!("workflow version `{shown}` cannot be read: {why}"));
        let entry: VersionEntry = serde_json::from_slice(bytes).map_err(|e| corrupt(e.to_string()))?;
        if entry.v != VERSION {
            return Err(corrupt(format!("record version {} is not {VERSION}", entry.v)));
        }
        let workflow = WorkflowId::new(&entry.workflow).map_err(|e| corrupt(e.to_string()))?;
        if key != version_key(&workflow, entry.number) {
            return Err(corrupt(format!("it is stored as `{}` number {}", entry.workflow, entry.number)));
        }
        Ok(WorkflowVersion {
            workflow,
            version: entry.version,
            number: entry.number,
            definition_name: entry.definition_name,
            definition: entry.definition,
            files: entry.files,
            hash: entry.hash,
            registered_at: Timestamp(entry.registered_at),
            registered_by: entry.registered_by,
        })
    }
}

/// Where a workflow's versions start: its id and a zero byte (no id has one).
fn prefix(workflow: &WorkflowId) -> Vec<u8> {
    let mut key = workflow.as_str().as_bytes().to_vec();
    key.push(0);
    key
}

fn version_key(workflow: &WorkflowId, number: u32) -> Vec<u8> {
    let mut key = prefix(workflow);
    key.extend_from_slice(&number.to_be_bytes());
    key
}

impl SledStore {
    fn stored_versions(&self, workflow: &WorkflowId) -> Result<Vec<WorkflowVersion>, StoreError> {
        self.workflows
            .scan_prefix(prefix(workflow))
            .map(|item| {
                let (key, bytes) = item.map_err(io)?;
                VersionEntry::read(&key, &bytes)
            })
            .collect()
    }
}

#[async_trait]
impl WorkflowStore for SledStore {
    async fn register(&self, version: WorkflowVersion) -> Result<Registered, RegisterError> {
        let placed = {
            // One registration at a time: numbers are read and taken together.
            let _one = self.registering.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            let placed = cairn_ports::place(&self.stored_versions(&version.workflow)?, version)?;
            if let Registered::Added(new) = &placed {
                let bytes = serde_json::to_vec(&VersionEntry::new(new))
                    .map_err(|e| StoreError::Io(format!("workflow `{}`: {e}", new.workflow)))?;
                self.workflows.insert(version_key(&new.workflow, new.number), bytes).map_err(io)?;
            }
            placed
        };
        if matches!(placed, Registered::Added(_)) {
            let db = self.db.clone();
            off_the_runtime(move || db.flush().map(drop).map_err(io)).await?;
        }
        Ok(placed)
    }

    async fn versions(&self, workflow: &WorkflowId) -> Result<Vec<WorkflowVersion>, StoreError> {
        self.stored_versions(workflow)
    }

    async fn latest(&self) -> Result<Vec<WorkflowVersion>, StoreError> {
        // Keys sort by id, then number: the last of each id is its latest.
        let mut latest: Vec<WorkflowVersion> = Vec::new();
        for item in self.workflows.iter() {
            let (key, bytes) = item.map_err(io)?;
            let version = VersionEntry::read(&key, &bytes)?;
            match latest.last_mut() {
                Some(last) if last.workflow == version.workflow => *last = version,
                _ => latest.push(version),
            }
        }
        Ok(latest)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_entry_under_another_key_or_of_another_version_is_corrupt() {
        let wf = WorkflowId::new("wf").expect("an id");
        let v = WorkflowVersion {
            workflow: wf.clone(),
            version: "1".into(),
            number: 2,
            definition_name: "wf.yaml".into(),
            definition: "cairn: 1".into(),
            files: BTreeMap::new(),
            hash: "h".into(),
            registered_at: Timestamp(5),
            registered_by: "pat".into(),
        };
        let bytes = serde_json::to_vec(&VersionEntry::new(&v)).expect("json");
        assert_eq!(VersionEntry::read(&version_key(&wf, 2), &bytes), Ok(v));
        let moved = VersionEntry::read(&version_key(&wf, 3), &bytes);
        assert!(matches!(moved, Err(StoreError::Corrupt(m)) if m.contains("stored as `wf` number 2")));
        let newer = String::from_utf8(bytes).expect("utf-8").replace("\"v\":1", "\"v\":9");
        let newer = VersionEntry::read(&version_key(&wf, 2), newer.as_bytes());
        assert!(matches!(newer, Err(StoreError::Corrupt(m)) if m.contains("record version 9")));
    }
}
