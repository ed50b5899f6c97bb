//! What the store writes: versioned envelopes, so that a later cairn can
//! read what an earlier one wrote (and refuse what it cannot).

use std::cell::RefCell;
use std::collections::BTreeMap;

use cairn_domain::id::{RunId, WorkflowId};
use cairn_domain::label::Labels;
use cairn_domain::state::{Event, RunState, RunStatus, Timestamp, TokenUsage};
use cairn_ports::{NewRun, RunSummary, Snapshot, StoreError};
use serde::{Deserialize, Serialize, de::DeserializeOwned};

/// The version every record is written with.
const VERSION: u32 = 1;

pub(crate) fn encode<T: Serialize>(record: &T) -> Vec<u8> {
    // Sized for a typical chunk: growing from serde_json's default costs
    // several reallocations per append.
    let mut out = Vec::with_capacity(1024);
    match serde_json::to_writer(&mut out, record) {
        Ok(()) => out,
        Err(_) => Vec::new(),
    }
}

/// The first bytes of a zstd frame. A JSON record starts with `{`, so a
/// record that starts with these was stored compressed (without a
/// dictionary, as stores before [`DICTIONARY_1`] wrote them).
const ZSTD_MAGIC: [u8; 4] = [0x28, 0xb5, 0x2f, 0xfd];

/// The byte before a zstd frame compressed with [`DICTIONARY_1`].
const WITH_DICTIONARY_1: u8 = 0x01;

/// What records are compressed against: the JSON that log chunks are made
/// of (keys, event types, statuses), most common last. A record of a few
/// events is mostly these strings, so with the dictionary zstd stores it
/// as references into it, in about half the bytes and a third of the time
/// it takes alone (`docs/benchmarks.md`). Stored records depend on these
/// exact bytes: never edit it; a better one gets a new marker byte.
const DICTIONARY_1: &[u8] = br#"{"v":1,"seq":1,"state":{"run_id":"","workflow":"","status":"running","inputs":{},"steps":{},"scopes":{},"progress":[],"sessions":{},"usage":{}}}
{"seq":1,"at":1796000000000,"actor":"engine","type":"run_created","run_id":"","workflow":"","definition_hash":"","inputs":{}}
{"seq":2,"at":1796000000000,"actor":"cli","type":"gate_decided","path":"","decision":"approve","by":"","role":"","comment":""}
{"seq":3,"at":1796000000000,"actor":"engine","type":"group_expanded","path":"","items":[],"keys":[]}{"seq":4,"at":1796000000000,"actor":"engine","type":"iteration_started","path":"","index":0}
{"seq":5,"at":1796000000000,"actor":"engine","type":"instance_finished","path":"","status":"succeeded"}
{"seq":6,"at":1796000000000,"actor":"engine","type":"step_skipped","path":"","reason":"its condition is false"}
{"seq":7,"at":1796000000000,"actor":"engine","type":"step_waiting","path":"","wait":"acceptance","deadline":1796000000000}{"seq":8,"at":1796000000000,"actor":"engine","type":"run_waiting","wait":"approval"}
{"seq":9,"at":1796000000000,"actor":"engine","type":"step_failed","path":"","attempt":1,"error":{"class":"transient","message":"","hint":null},"retry_at":1796000000000}
{"seq":10,"at":1796000000000,"actor":"engine","type":"run_completed"}{"seq":11,"at":1796000000000,"actor":"engine","type":"run_failed"}
{"seq":12,"at":1796000000000,"actor":"engine","type":"document_stored","scope":"","doc_type":"","value":""}
{"v":1,"events":[{"seq":13,"at":1796000000000,"actor":"engine","type":"run_started"},{"seq":14,"at":1796000000000,"actor":"engine","type":"usage_recorded","path":"","attempt":1,"model":"mock","usage":{"prompt_tokens":20,"completion_tokens":20,"estimated":true}},{"seq":15,"at":1796000000000,"actor":"engine","type":"step_succeeded","path":"","output":"mock answer to: "},{"seq":16,"at":1796000000000,"actor":"engine","type":"step_started","path":"","attempt":1}]}"#;

/// The largest record the store reads back.
const MAX_RECORD: u64 = 1 << 30;

/// [`DICTIONARY_1`], prepared once for compressing (level 1) and for
/// decompressing.
fn dictionaries() -> &'static (zstd::zstd_safe::CDict<'static>, zstd::zstd_safe::DDict<'static>) {
    static PREPARED: std::sync::OnceLock<(zstd::zstd_safe::CDict<'static>, zstd::zstd_safe::DDict<'static>)> =
        std::sync::OnceLock::new();
    PREPARED.get_or_init(|| {
        (zstd::zstd_safe::create_cdict(DICTIONARY_1, 1), zstd::zstd_safe::create_ddict(DICTIONARY_1))
    })
}

thread_local! {
    /// Compression contexts are costly to make and reusable: one a thread.
    static COMPRESSOR: RefCell<zstd::zstd_safe::CCtx<'static>> = RefCell::new(zstd::zstd_safe::create_cctx());
    static DECOMPRESSOR: RefCell<zstd::zstd_safe::DCtx<'static>> = RefCell::new(zstd::zstd_safe::create_dctx());
}

/// A record as JSON compressed with zstd (level 1) against
/// [`DICTIONARY_1`]: what log chunks and snapshots are stored as.
pub(crate) fn compressed<T: Serialize>(record: &T) -> Vec<u8> {
    pack(&encode(record))
}

/// A record's JSON as it is stored: compressed against [`DICTIONARY_1`]
/// (left as it is if compressing fails).
pub(crate) fn pack(json: &[u8]) -> Vec<u8> {
    let mut out = vec![0; 1 + zstd::zstd_safe::compress_bound(json.len())];
    out[0] = WITH_DICTIONARY_1;
    let done =
        COMPRESSOR.with(|c| c.borrow_mut().compress_using_cdict(&mut out[1..], json, &dictionaries().0));
    match done {
        Ok(len) => {
            out.truncate(1 + len);
            out
        }
        Err(_) => json.to_vec(),
    }
}

/// A record in the form the store keeps it: JSON is packed, a record
/// already packed (or compressed by an older store) stays as it is.
pub(crate) fn kept(bytes: &[u8]) -> std::borrow::Cow<'_, [u8]> {
    if bytes.first() == Some(&b'{') { pack(bytes).into() } else { bytes.into() }
}

/// A stored record's JSON: decompressed when it was stored compressed.
pub(crate) fn unpack(bytes: &[u8]) -> Result<std::borrow::Cow<'_, [u8]>, StoreError> {
    let (frame, with_dictionary) = match bytes {
        [WITH_DICTIONARY_1, frame @ ..] => (frame, true),
        frame if frame.starts_with(&ZSTD_MAGIC) => (frame, false),
        json => return Ok(json.into()),
    };
    let size = zstd::zstd_safe::get_frame_content_size(frame);
    if size > MAX_RECORD {
        return Err(StoreError::Corrupt("a compressed record without a readable size".into()));
    }
    let mut out = Vec::with_capacity(size as usize);
    DECOMPRESSOR
        .with(|d| {
            let mut d = d.borrow_mut();
            if with_dictionary {
                d.decompress_using_ddict(&mut out, frame, &dictionaries().1)
            } else {
                d.decompress(&mut out, frame)
            }
        })
        .map_err(|code| {
            StoreError::Corrupt(format!(
                "unreadable compressed record: {}",
                zstd::zstd_safe::get_error_name(code)
            ))
        })?;
    Ok(out.into())
}

pub(crate) fn decode<T: DeserializeOwned + Versioned>(bytes: &[u8]) -> Result<T, StoreError> {
    let json = unpack(bytes)?;
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
    /// Tokens used, by model, up to `last_seq`. `None` in records written
    /// before usage was kept: opening the store folds it from the whole log.
    #[serde(default)]
    pub usage_by_model: Option<BTreeMap<String, TokenUsage>>,
    /// The checksum of the JSON of the chunk that ends at `last_seq`: the
    /// head of the run's chain. `None` in records written before chunks
    /// were chained: opening the store fills it in.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub head: Option<u32>,
    /// The run's labels, fixed at creation (absent when it has none).
    #[serde(default, skip_serializing_if = "Labels::is_empty")]
    labels: Labels,
    /// Who started it (empty in records written before it was kept).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    triggered_by: String,
    /// Its priority (absent when 0).
    #[serde(default, skip_serializing_if = "is_zero")]
    priority: i32,
    /// The run it was made from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    parent: Option<String>,
    /// Tokens by agent and the steps that failed for good, up to
    /// `last_seq` (empty in records written before they were kept).
    #[serde(default)]
    pub figures: cairn_ports::RunFigures,
}

fn is_zero(n: &i32) -> bool {
    *n == 0
}

impl RunRecord {
    pub fn new(run: &NewRun) -> Self {
        let launched = run.launched();
        Self {
            v: VERSION,
            run_id: run.run_id.to_string(),
            workflow: run.workflow.to_string(),
            status: RunStatus::Pending,
            created_at: run.created.at.0,
            updated_at: run.created.at.0,
            last_seq: 1,
            definition_hash: run.definition_hash.clone(),
            usage_by_model: Some(BTreeMap::new()),
            head: None,
            labels: launched.labels,
            triggered_by: launched.triggered_by,
            priority: launched.priority,
            parent: launched.parent.map(|p| p.to_string()),
            figures: cairn_ports::RunFigures::default(),
        }
    }

    /// The run's id, as stored.
    pub fn run_id(&self) -> &str {
        &self.run_id
    }

    /// After appending `events`; returns whether the run's status changed
    /// (the record is written again only then: `last_seq`, `updated_at`
    /// and usage on disk are those of the last status change, and the
    /// store keeps the current record in memory).
    pub fn advance(&mut self, events: &[Event]) -> bool {
        let before = self.status;
        for e in events {
            self.status = e.kind.run_status().unwrap_or(self.status);
            cairn_ports::tally_usage(self.usage_by_model.get_or_insert_default(), &e.kind);
            self.figures.add(&e.kind);
            self.last_seq = e.seq;
            self.updated_at = e.at.0;
        }
        self.status != before
    }

    /// What `list` shows.
    pub fn summary(&self) -> Result<RunSummary, StoreError> {
        let bad = |e: cairn_domain::id::IdError| StoreError::Corrupt(e.to_string());
        Ok(RunSummary {
            run_id: RunId::new(self.run_id.clone()).map_err(bad)?,
            workflow: WorkflowId::new(self.workflow.clone()).map_err(bad)?,
            status: self.status,
            created_at: Timestamp(self.created_at),
            updated_at: Timestamp(self.updated_at),
            usage_by_model: self.usage_by_model.clone().unwrap_or_default(),
            labels: self.labels.clone(),
            triggered_by: self.triggered_by.clone(),
            priority: self.priority,
            parent: self.parent.clone().map(RunId::new).transpose().map_err(bad)?,
            figures: self.figures.clone(),
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

/// A chunk's JSON with the checksum of its predecessor's JSON added as
/// `prev` (the chain), and its own checksum: the chunk is encoded
/// off the log's lock, the link added under it.
pub(crate) fn chained(mut json: Vec<u8>, prev: Option<u32>) -> (Vec<u8>, u32) {
    if let Some(prev) = prev
        && json.last() == Some(&b'}')
    {
        json.pop();
        json.extend_from_slice(format!(",\"prev\":{prev}}}").as_bytes());
    }
    let crc = crc32fast::hash(&json);
    (json, crc)
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
    /// The checksum of the JSON of the chunk before it (absent in the
    /// first chunk and in chunks written before chunks were chained).
    #[serde(default)]
    pub prev: Option<u32>,
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

/// What the store held of each run when sled was last flushed (at a
/// checkpoint or on close), kept outside sled: a sled that comes back
/// with less than this was rolled back.
#[derive(Serialize, Deserialize, Default)]
pub(crate) struct SealRecord {
    v: u32,
    /// By run id: the last event and the chain's head then.
    pub runs: BTreeMap<String, Mark>,
}

impl SealRecord {
    pub fn new(runs: BTreeMap<String, Mark>) -> Self {
        Self { v: VERSION, runs }
    }

    /// The seal's file: the checksum of its JSON (8 hex digits), a
    /// newline, the JSON; so a damaged seal reads as damaged, not as a
    /// claim about runs.
    pub fn bytes(&self) -> Vec<u8> {
        let json = encode(self);
        let mut out = format!("{:08x}\n", crc32fast::hash(&json)).into_bytes();
        out.extend_from_slice(&json);
        out
    }

    /// A seal's file read back; `None` when its checksum fails or it
    /// does not read.
    pub fn read(bytes: &[u8]) -> Option<Self> {
        let (crc, json) = bytes.split_at_checked(9)?;
        let crc = u32::from_str_radix(std::str::from_utf8(crc.strip_suffix(b"\n")?).ok()?, 16).ok()?;
        (crc32fast::hash(json) == crc).then(|| decode(json).ok()).flatten()
    }
}

impl Versioned for SealRecord {
    fn version(&self) -> u32 {
        self.v
    }
}

/// A point in a run's log: its last sequence number and the checksum of
/// the chunk that ends there.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Mark {
    pub seq: u64,
    #[serde(default)]
    pub head: Option<u32>,
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
        let json = encode(&ChunkRecord::new(&events));
        let stored = compressed(&ChunkRecord::new(&events));
        assert_eq!(stored[0], WITH_DICTIONARY_1);
        assert!(stored[1..].starts_with(&ZSTD_MAGIC));
        assert!(stored.len() * 2 < json.len(), "{} bytes of {}", stored.len(), json.len());
        assert_eq!(decode::<LogRecord>(&stored).expect("reads back").into_events(), events);
        for damaged in
            [stored[..stored.len() - 3].to_vec(), [&[WITH_DICTIONARY_1][..], &stored[2..]].concat()]
        {
            let refused = decode::<LogRecord>(&damaged).err().map(|e| e.to_string()).unwrap_or_default();
            assert!(refused.contains("compressed record"), "{refused}");
        }
        // As stores wrote records before the dictionary: plain JSON, and
        // zstd frames of their own.
        let plain = zstd::block::compress(&json, 1).expect("compresses");
        assert!(plain.starts_with(&ZSTD_MAGIC));
        for older in [json, plain] {
            assert_eq!(decode::<LogRecord>(&older).expect("reads back").into_events(), events);
        }
    }
}
