//! What the store writes: versioned envelopes, so that a later cairn can
//! read what an earlier one wrote (and refuse what it cannot).

use std::cell::RefCell;
use std::collections::BTreeMap;

use cairn_domain::id::{RunId, WorkflowId};
use cairn_domain::state::{Event, RunState, RunStatus, Timestamp};
use cairn_ports::{NewRun, RunSummary, Snapshot, StoreError};
use serde::{Deserialize, Serialize, de::DeserializeOwned};

/// The version every record is written with.
const VERSION: u32 = 1;

pub(crate) fn encode<T: Serialize>(record: &T) -> Vec<u8> {
    serde_json::to_vec(record).unwrap_or_default()
}

/// The first bytes of a zstd frame. A JSON record starts with `{`, so a
/// record that starts with these was stored compressed.
const ZSTD_MAGIC: [u8; 4] = [0x28, 0xb5, 0x2f, 0xfd];

/// The largest record the store reads back.
const MAX_RECORD: u64 = 1 << 30;

thread_local! {
    /// Compression contexts are costly to make and reusable: one a thread.
    static COMPRESSOR: RefCell<zstd::block::Compressor> = RefCell::new(zstd::block::Compressor::new());
    static DECOMPRESSOR: RefCell<zstd::block::Decompressor> = RefCell::new(zstd::block::Decompressor::new());
}

/// A record as JSON compressed with zstd (level 1): what log chunks and
/// snapshots are stored as. sled rewrites whole tree pages as a log grows,
/// so the bytes of every record count several times on disk.
pub(crate) fn compressed<T: Serialize>(record: &T) -> Vec<u8> {
    let json = encode(record);
    COMPRESSOR.with(|c| c.borrow_mut().compress(&json, 1)).unwrap_or(json)
}

/// A stored record's JSON: decompressed when it was stored compressed.
fn json_of(bytes: &[u8]) -> Result<std::borrow::Cow<'_, [u8]>, StoreError> {
    if !bytes.starts_with(&ZSTD_MAGIC) {
        return Ok(bytes.into());
    }
    let size = zstd::zstd_safe::get_frame_content_size(bytes);
    if size > MAX_RECORD {
        return Err(StoreError::Corrupt("a compressed record without a readable size".into()));
    }
    DECOMPRESSOR
        .with(|d| d.borrow_mut().decompress(bytes, size as usize))
        .map(Into::into)
        .map_err(|e| StoreError::Corrupt(format!("unreadable compressed record: {e}")))
}

pub(crate) fn decode<T: DeserializeOwned + Versioned>(bytes: &[u8]) -> Result<T, StoreError> {
    let json = json_of(bytes)?;
    let record: T =
        serde_json::from_slice(&json).map_err(|e| StoreError::Corrupt(format!("unreadable record: {e}")))?;
    if record.version() != VERSION {
        return Err(StoreError::Corrupt(format!("record version {} is not {VERSION}", record.version())));
    }
    Ok(record)
}

/// Records that carry their format version.
pub(crate) trait Versioned {
    fn version(&self) -> u32;
}

/// The run index: what `list` shows without reading logs.
#[derive(Clone, Serialize, Deserialize)]
pub(crate) struct RunRecord {
    v: u32,
    run_id: String,
    workflow: String,
    pub status: RunStatus,
    created_at: u64,
    updated_at: u64,
    pub last_seq: u64,
    definition_hash: String,
}

impl RunRecord {
    pub fn new(run: &NewRun) -> Self {
        Self {
            v: VERSION,
            run_id: run.run_id.to_string(),
            workflow: run.workflow.to_string(),
            status: RunStatus::Pending,
            created_at: run.created.at.0,
            updated_at: run.created.at.0,
            last_seq: 1,
            definition_hash: run.definition_hash.clone(),
        }
    }

    /// After appending `events`; returns whether the run's status changed
    /// (the record is written again only then: `last_seq` and `updated_at`
    /// on disk are those of the last status change).
    pub fn advance(&mut self, events: &[Event]) -> bool {
        let before = self.status;
        for e in events {
            self.status = e.kind.run_status().unwrap_or(self.status);
            self.last_seq = e.seq;
            self.updated_at = e.at.0;
        }
        self.status != before
    }

    /// What `list` shows; `last` is the run's last event, when known.
    pub fn summary(&self, last: Option<&Event>) -> Result<RunSummary, StoreError> {
        let bad = |e: cairn_domain::id::IdError| StoreError::Corrupt(e.to_string());
        Ok(RunSummary {
            run_id: RunId::new(self.run_id.clone()).map_err(bad)?,
            workflow: WorkflowId::new(self.workflow.clone()).map_err(bad)?,
            status: self.status,
            created_at: Timestamp(self.created_at),
            updated_at: last.map_or(Timestamp(self.updated_at), |e| e.at),
        })
    }
}

impl Versioned for RunRecord {
    fn version(&self) -> u32 {
        self.v
    }
}

/// The exact definition a run started with.
#[derive(Serialize, Deserialize)]
pub(crate) struct DefinitionRecord {
    v: u32,
    pub name: String,
    pub text: String,
    pub files: BTreeMap<String, String>,
}

impl DefinitionRecord {
    pub fn new(run: &NewRun) -> Self {
        Self {
            v: VERSION,
            name: run.definition_name.clone(),
            text: run.definition.clone(),
            files: run.files.clone(),
        }
    }
}

impl Versioned for DefinitionRecord {
    fn version(&self) -> u32 {
        self.v
    }
}

/// The events of one append, stored under the sequence number of the
/// first: one key per append, so an append is a single atomic insert.
#[derive(Serialize)]
pub(crate) struct ChunkRecord<'a> {
    v: u32,
    events: &'a [Event],
}

impl<'a> ChunkRecord<'a> {
    pub fn new(events: &'a [Event]) -> Self {
        Self { v: VERSION, events }
    }
}

/// A stored piece of a log, as read back: an append's events, or (as
/// stores before appends were chunked wrote it) a single event.
#[derive(Deserialize)]
pub(crate) struct LogRecord {
    v: u32,
    #[serde(default)]
    event: Option<Event>,
    #[serde(default)]
    events: Vec<Event>,
}

impl LogRecord {
    pub fn into_events(self) -> Vec<Event> {
        match self.event {
            Some(event) => vec![event],
            None => self.events,
        }
    }
}

impl Versioned for LogRecord {
    fn version(&self) -> u32 {
        self.v
    }
}

/// A folded state at a sequence number.
#[derive(Serialize, Deserialize)]
pub(crate) struct SnapshotRecord {
    v: u32,
    seq: u64,
    state: RunState,
}

impl SnapshotRecord {
    pub fn new(s: &Snapshot) -> Self {
        Self { v: VERSION, seq: s.seq, state: s.state.clone() }
    }

    pub fn into_snapshot(self) -> Snapshot {
        Snapshot { seq: self.seq, state: self.state }
    }
}

impl Versioned for SnapshotRecord {
    fn version(&self) -> u32 {
        self.v
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compressed_records_read_back_and_damaged_ones_are_refused() {
        let events = [Event {
            seq: 2,
            at: Timestamp(2),
            actor: "t".into(),
            kind: cairn_domain::state::EventKind::RunStarted,
        }];
        let stored = compressed(&ChunkRecord::new(&events));
        assert!(stored.starts_with(&ZSTD_MAGIC));
        assert_eq!(decode::<LogRecord>(&stored).expect("reads back").into_events(), events);
        let mut damaged = stored.clone();
        damaged.truncate(stored.len() - 3);
        let refused = decode::<LogRecord>(&damaged).err().map(|e| e.to_string()).unwrap_or_default();
        assert!(refused.contains("compressed record"), "{refused}");
    }
}
