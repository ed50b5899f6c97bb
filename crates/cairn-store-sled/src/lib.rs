//! The embedded, durable run store: cairn's `RunStore` port on sled.
//!
//! What it is: event logs per run, ordered by sequence number; snapshots of
//! folded state; a run index (status, workflow, timestamps, token usage by
//! model) for listing without reading logs; and each run's exact
//! definition and the files it named. An append is one
//! record of its events under the sequence number of the first, checked
//! against the run's last event (kept in memory, one append at a time), so
//! of two drivers appending after the same event, one commits. Its chunk
//! reaches sled through the store's own thread (`applier.rs`), which
//! compresses and inserts it while the appender goes on; every read of the
//! event tree first applies what is queued. A log is read from the chunk
//! that holds the first event asked for, so loading after a snapshot reads
//! only the tail. The index is written to sled when a run's status changes
//! (its current record, with usage, is kept in memory in between, and
//! written on close), and repaired from the log at open after a crash.
//! With `Durability::Sync` every change is also appended to a write-ahead
//! log (`wal.rs`) that is synced before `append` returns: one write and one
//! `fdatasync`, shared by concurrent appends (group commit); sled itself is
//! flushed only at checkpoints.
//!
//! Damage is never read as a crash: the log tells a torn tail from damage
//! (`wal.rs`), each run's chunks are chained (each names the checksum of
//! the one before, the index the last one's), and a seal written beside
//! sled at each flush says what it held. Opening refuses damage, or a
//! sled that came back with less, with [`OpenError::Damaged`], replaying
//! nothing past it and deleting nothing; [`examine`] reports it for
//! `cairn doctor`.
//!
//! It also keeps the API tokens `cairn serve` accepts (`TokenStore`, in
//! `tokens.rs`): a tree of their own beside the runs', outside the log.
//!
//! What it deliberately does not do: interpret events beyond the run status
//! and token usage (folding state is the domain's), or schedule anything
//! (the engine's). Records on disk are this crate's own versioned envelopes.
//!
//! May depend on: `cairn-domain`, `cairn-ports`, sled, serde. Never on the
//! engine or the app.
//!
//! Read first: [`SledStore::open`], [`Durability`].

mod applier;
mod doctor;
mod records;
mod tokens;
mod wal;
mod workflows;

pub use doctor::{Examination, FileReport, FileState, RunReport, examine};
pub use wal::SEGMENT_BYTES;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use async_trait::async_trait;
use cairn_domain::id::RunId;
use cairn_domain::state::{Event, EventKind};
use cairn_ports::{
    Damage, DamageKind, NewRun, RunPage, RunQuery, RunStore, RunSummary, Snapshot, StoreError, StoredRun,
};
use sled::transaction::{ConflictableTransactionError, TransactionError};
use sled::{IVec, Transactional};

use applier::Applier;
use records::{
    ChunkRecord, DefinitionRecord, LogRecord, Mark, RunRecord, SealRecord, SnapshotRecord, chained,
    compressed, decode, encode, kept, pack, unpack,
};
use wal::{Change, TreeId, Wal};

/// When appended events reach the disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Durability {
    /// Before `append` returns (the default): a finished step is on disk
    /// before any step that needs it starts. Written ahead to a log file
    /// and synced there; sled is flushed at checkpoints.
    Sync,
    /// Within `window_ms` of the append, by a background flush.
    Batch {
        /// The longest time an appended event may wait for the disk.
        window_ms: u64,
    },
    /// When sled decides (tests only).
    None,
}

/// Why the store cannot be opened.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum OpenError {
    /// Another process has the store open.
    #[error("the store at {} is in use by another process{}", path.display(), if holder.is_empty() { String::new() } else { format!(": {holder}") })]
    Locked {
        /// The data directory.
        path: PathBuf,
        /// What the holder said of itself, when known.
        holder: String,
    },
    /// The directory holds something that is not a cairn store.
    #[error("{} is not a cairn data directory (it holds other files); pick an empty or new directory", .0.display())]
    Foreign(PathBuf),
    /// The store's files are damaged or from an unknown format.
    #[error("the store at {} cannot be read: {reason}", path.display())]
    Corrupt {
        /// The data directory.
        path: PathBuf,
        /// What sled said.
        reason: String,
    },
    /// A file of the store is damaged in a way no crash leaves (or the
    /// database came back with less than it held): nothing was replayed
    /// past the damage and nothing deleted, so a person can look.
    #[error("{0}")]
    Damaged(Damage),
}

/// The key under which the format marker is kept.
const FORMAT_KEY: &[u8] = b"format";
/// The format marker's value.
const FORMAT: &[u8] = b"cairn-store/1";
/// The file that names the process holding the store.
pub const HOLDER_FILE: &str = "holder";
/// The file that says what sled held when it was last flushed
/// (each run's last event and chain head), to tell a rolled-back sled.
pub const SEAL_FILE: &str = "seal";
/// Where the seal is written before it is renamed over the last one.
const NEW_SEAL: &str = "seal.new";
/// The key whose presence says this store's log segments have headers.
const WAL_KEY: &[u8] = b"wal";

/// Runs in a sled database.
pub struct SledStore {
    db: sled::Db,
    runs: sled::Tree,
    definitions: sled::Tree,
    events: sled::Tree,
    snapshots: sled::Tree,
    /// API tokens by name (`tokens.rs`): not logged, flushed on change.
    tokens: sled::Tree,
    /// The workflow catalog (`workflows.rs`): not logged, flushed on change.
    workflows: sled::Tree,
    /// Held while a version is registered: its number is read and taken at once.
    registering: std::sync::Mutex<()>,
    durability: Durability,
    holder_file: Option<PathBuf>,
    /// The data directory (none for a temporary store): where the seal is.
    dir: Option<PathBuf>,
    keep_snapshots: usize,
    /// Group commit for `Durability::Sync`.
    commits: Commits,
    /// The write-ahead log, with `Durability::Sync` on a data directory.
    wal: Option<Arc<Wal>>,
    /// Writes appended chunks into sled off the appender.
    applier: Applier,
    /// The index records of runs appended to since the store opened, with
    /// `last_seq` kept current: an append checks and advances it here
    /// instead of reading the log's last chunk and the index from sled.
    /// A run leaves it when it ends or is deleted.
    live: std::sync::Mutex<std::collections::HashMap<String, RunRecord>>,
    /// Every run's summary as its index record on disk says (decoded once,
    /// at the first listing, then kept as records change): a listing, and
    /// stats, read this and the live records, never the whole tree again.
    summaries: std::sync::Mutex<Option<std::collections::HashMap<String, Arc<RunSummary>>>>,
}

/// Group commit: writes are numbered as they finish; one flush at a time
/// makes everything written before it durable, and a writer whose number a
/// finished flush covered returns without flushing again. Concurrent runs
/// thus share flushes, and only one thread waits on the disk.
#[derive(Default)]
struct Commits {
    /// Writes finished so far.
    written: std::sync::atomic::AtomicU64,
    /// Writes made durable by the last finished flush.
    durable: std::sync::atomic::AtomicU64,
    /// Held while a flush runs.
    flushing: tokio::sync::Mutex<()>,
}

/// Snapshots kept per run unless [`SledStore::keep_snapshots`] says otherwise.
pub const DEFAULT_KEEP_SNAPSHOTS: usize = 10;

/// The most memory sled's page cache may hold. Runs are read once when
/// loaded and then only appended to, so a small cache costs no speed and
/// keeps a long fan-out's memory flat.
const CACHE_BYTES: u64 = 16 * 1024 * 1024;

/// A name sled or cairn puts in a data directory. A directory holding only
/// such names is a store, perhaps one whose first open was killed before
/// sled wrote its `conf`.
fn is_store_file(name: &str) -> bool {
    matches!(name, "conf" | "db" | "blobs" | HOLDER_FILE | SEAL_FILE | NEW_SEAL)
        || name.starts_with("snap.")
        || name.starts_with(wal::SEGMENT_PREFIX)
}

impl SledStore {
    /// Opens (or creates) the store in `dir`. Fails clearly when another
    /// process holds it, when `dir` holds other files, or when the files are
    /// damaged. `holder` describes this process to others that find the
    /// store held (see [`SledStore::describe_holder`]).
    pub fn open(dir: &Path, durability: Durability, holder: &str) -> Result<Self, OpenError> {
        // A store dropped a moment ago in this process keeps its lock until
        // sled's writer threads let go of the file: locked without a holder
        // file means closing, so wait for it a little.
        let mut tries = 0;
        loop {
            match Self::open_once(dir, durability, holder) {
                Err(OpenError::Locked { holder, .. }) if holder.is_empty() && tries < 100 => {
                    tries += 1;
                    std::thread::sleep(std::time::Duration::from_millis(10));
                }
                other => return other,
            }
        }
    }

    fn open_once(dir: &Path, durability: Durability, holder: &str) -> Result<Self, OpenError> {
        let existed = dir.join("conf").exists() || dir.join("db").exists();
        let others = std::fs::read_dir(dir)
            .map(|entries| entries.flatten().any(|e| !is_store_file(&e.file_name().to_string_lossy())))
            .unwrap_or(false);
        if !existed && others {
            return Err(OpenError::Foreign(dir.to_path_buf()));
        }
        let flush_every = match durability {
            Durability::Batch { window_ms } => Some(window_ms.max(1)),
            Durability::Sync | Durability::None => None,
        };
        let db = sled::Config::new()
            .path(dir)
            .cache_capacity(CACHE_BYTES)
            .flush_every_ms(flush_every)
            .open()
            .map_err(|e| {
                let reason = e.to_string();
                if reason.contains("lock")
                    || reason.contains("WouldBlock")
                    || reason.contains("temporarily unavailable")
                {
                    let holder = std::fs::read_to_string(dir.join(HOLDER_FILE))
                        .map(|h| h.trim().to_owned())
                        .unwrap_or_default();
                    OpenError::Locked { path: dir.to_path_buf(), holder }
                } else if matches!(e, sled::Error::Corruption { .. }) {
                    let file = dir.display().to_string();
                    OpenError::Damaged(Damage { file, offset: None, what: DamageKind::Database })
                } else {
                    OpenError::Corrupt { path: dir.to_path_buf(), reason }
                }
            })?;
        let corrupt = |e: sled::Error| OpenError::Corrupt { path: dir.to_path_buf(), reason: e.to_string() };
        match db.get(FORMAT_KEY).map_err(corrupt)? {
            Some(v) if v.as_ref() == FORMAT => {}
            Some(other) => {
                let reason = format!("unknown format `{}`", String::from_utf8_lossy(&other));
                return Err(OpenError::Corrupt { path: dir.to_path_buf(), reason });
            }
            None if existed && db.tree_names().len() > 1 => {
                return Err(OpenError::Foreign(dir.to_path_buf()));
            }
            None => {
                db.insert(FORMAT_KEY, FORMAT).map_err(corrupt)?;
                db.flush().map_err(corrupt)?;
            }
        }
        let holder_file = dir.join(HOLDER_FILE);
        let _ = std::fs::write(&holder_file, holder);
        let mut store = Self::from_db(db, durability, Some(holder_file)).map_err(corrupt)?;
        store.dir = Some(dir.to_path_buf());
        let unreadable = |e: StoreError| match e {
            StoreError::Damaged(damage) => OpenError::Damaged(damage),
            other => OpenError::Corrupt { path: dir.to_path_buf(), reason: other.to_string() },
        };
        // Damaged files are refused before anything is written: the holder
        // file goes, so that no process is named as holding the store.
        let refused = |store: Self, e: StoreError| {
            if let Some(file) = &store.holder_file {
                let _ = std::fs::remove_file(file);
            }
            store.dont_close();
            unreadable(e)
        };
        let replayed = match store.recover(dir) {
            Ok(replayed) => replayed,
            Err(e) => return Err(refused(store, e)),
        };
        if let Err(e) = store.repair_index().and_then(|()| store.check_seal(dir, &replayed.removed)) {
            return Err(refused(store, e));
        }
        // From now on every segment is written with its header.
        store.db.insert(WAL_KEY, &b"2"[..]).map_err(corrupt)?;
        store.db.flush().map_err(corrupt)?;
        wal::remove_segments(dir, |_| true).map_err(unreadable)?;
        if durability == Durability::Sync {
            store.wal = Some(Arc::new(Wal::create(dir, replayed.next_segment).map_err(unreadable)?));
        }
        Ok(store)
    }

    /// Every run's summary, read from the index the first time (under the
    /// lock, so no change made meanwhile is missed; off the runtime's
    /// worker where the runtime allows).
    fn with_summaries<T>(
        &self,
        f: impl FnOnce(&std::collections::HashMap<String, Arc<RunSummary>>) -> T,
    ) -> Result<T, StoreError> {
        let mut guard = lock(&self.summaries);
        if guard.is_none() {
            let read = || {
                let mut all = std::collections::HashMap::new();
                for item in self.runs.iter() {
                    let (_, v) = item.map_err(io)?;
                    let summary = decode::<RunRecord>(&v)?.summary()?;
                    all.insert(summary.run_id.to_string(), Arc::new(summary));
                }
                Ok::<_, StoreError>(all)
            };
            let multi_thread = tokio::runtime::Handle::try_current()
                .is_ok_and(|h| h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread);
            *guard = Some(if multi_thread { tokio::task::block_in_place(read)? } else { read()? });
        }
        Ok(f(guard.get_or_insert_default()))
    }

    /// Keeps `summary` as its run's, when summaries are kept.
    fn summarize(&self, summary: &RunSummary) {
        if let Some(summaries) = lock(&self.summaries).as_mut() {
            summaries.insert(summary.run_id.to_string(), Arc::new(summary.clone()));
        }
    }

    /// Leaves the store without what closing does (writing the index,
    /// flushing, sealing, deleting the log): it was refused as damaged.
    fn dont_close(mut self) {
        self.holder_file = None;
        self.wal = None;
        lock(&self.live).clear();
    }

    /// A store that lives in memory and a temporary directory, for tests.
    pub fn temporary() -> Result<Self, OpenError> {
        let corrupt =
            |e: sled::Error| OpenError::Corrupt { path: PathBuf::from("<temporary>"), reason: e.to_string() };
        let db = sled::Config::new().temporary(true).open().map_err(corrupt)?;
        Self::from_db(db, Durability::Sync, None).map_err(corrupt)
    }

    fn from_db(
        db: sled::Db,
        durability: Durability,
        holder_file: Option<PathBuf>,
    ) -> Result<Self, sled::Error> {
        let events = db.open_tree("events")?;
        Ok(Self {
            runs: db.open_tree("runs")?,
            definitions: db.open_tree("definitions")?,
            applier: Applier::start(events.clone()).map_err(sled::Error::Io)?,
            events,
            snapshots: db.open_tree("snapshots")?,
            tokens: db.open_tree(tokens::TOKENS_TREE)?,
            workflows: db.open_tree(workflows::WORKFLOWS_TREE)?,
            registering: Default::default(),
            db,
            durability,
            holder_file,
            dir: None,
            keep_snapshots: DEFAULT_KEEP_SNAPSHOTS,
            commits: Commits::default(),
            wal: None,
            live: Default::default(),
            summaries: Default::default(),
        })
    }

    fn tree(&self, id: TreeId) -> &sled::Tree {
        match id {
            TreeId::Runs => &self.runs,
            TreeId::Definitions => &self.definitions,
            TreeId::Events => &self.events,
            TreeId::Snapshots => &self.snapshots,
        }
    }

    /// Replays the write-ahead log left in `dir` (by a process that died,
    /// or before its final flush) into sled; returns the number for the
    /// next segment and the runs whose index the log removed. Every segment
    /// is read and checked before anything is applied: a damaged one
    /// leaves sled as it was. The caller flushes sled and deletes the log.
    fn recover(&self, dir: &Path) -> Result<Replayed, StoreError> {
        let headed = self.db.get(WAL_KEY).map_err(io)?.is_some();
        let mut replayed = Replayed { next_segment: 1, removed: Default::default() };
        let segments = wal::segments(dir)?;
        let Some(&last) = segments.last() else { return Ok(replayed) };
        let mut readings = Vec::new();
        for &number in &segments {
            let reading = wal::read_segment(dir, number, headed)?;
            // Only the last segment's last sync can have been torn: a
            // segment was whole before the next one was started.
            let damage = reading
                .damage
                .clone()
                .or_else(|| (reading.torn && number != last).then_some((reading.end, DamageKind::BadRecord)));
            if let Some((offset, what)) = damage {
                let file = wal::segment_file(dir, number).display().to_string();
                return Err(StoreError::Damaged(Damage { file, offset: Some(offset), what }));
            }
            readings.push(reading);
        }
        for change in readings.into_iter().flat_map(|r| r.records).flatten() {
            match change {
                // Appends log their chunks as JSON; sled keeps them packed.
                Change::Insert(TreeId::Events, key, chunk) => self.events.insert(key, &*kept(&chunk)),
                Change::Insert(tree, key, value) => self.tree(tree).insert(key, value),
                Change::Remove(TreeId::Runs, key) => {
                    replayed.removed.insert(key.to_vec());
                    self.runs.remove(key)
                }
                Change::Remove(tree, key) => self.tree(tree).remove(key),
            }
            .map_err(io)?;
        }
        replayed.next_segment = last + 1;
        Ok(replayed)
    }

    /// Checks sled against the seal written when it was last flushed: each
    /// run sealed is still there (unless the replayed log removed it), and
    /// its log still holds the sealed chunk. A store that writes seals and
    /// has none lost it.
    fn check_seal(&self, dir: &Path, removed: &std::collections::HashSet<Vec<u8>>) -> Result<(), StoreError> {
        let path = dir.join(SEAL_FILE);
        let file = path.display().to_string();
        let lost =
            || StoreError::Damaged(Damage { file: file.clone(), offset: None, what: DamageKind::Seal });
        let bytes = match std::fs::read(&path) {
            Ok(bytes) => bytes,
            // No seal: a store from before seals, or one a person set
            // aside to accept the database as it is.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(StoreError::Io(format!("reading the seal: {e}"))),
        };
        let seal = SealRecord::read(&bytes).ok_or_else(lost)?;
        for (run, mark) in &seal.runs {
            if removed.contains(run.as_bytes()) {
                continue;
            }
            let rolled_back =
                |found| self.damaged(DamageKind::RolledBack { run: run.clone(), expected: mark.seq, found });
            let Some(bytes) = self.runs.get(run).map_err(io)? else {
                return Err(rolled_back(0));
            };
            // The index, checked against its log's last chunk just before,
            // is where the seal says: no chunk to read.
            let record: RunRecord = decode(&bytes)?;
            if mark.head.is_some() && (record.last_seq, record.head) == (mark.seq, mark.head) {
                continue;
            }
            match chunk_at(&self.events, run.as_bytes(), mark.seq)? {
                Some(found) if found.seq == mark.seq && (mark.head.is_none() || found.head == mark.head) => {}
                Some(found) if found.seq == mark.seq => {
                    return Err(self.damaged(DamageKind::Broken { run: run.clone(), seq: mark.seq }));
                }
                found => return Err(rolled_back(found.map_or(0, |f| f.seq.min(mark.seq)))),
            }
        }
        Ok(())
    }

    /// Damage found in sled's data (the `db` file).
    fn damaged(&self, what: DamageKind) -> StoreError {
        StoreError::Damaged(Damage { file: self.db_file(), offset: None, what })
    }

    /// sled's data file, to name in a report.
    fn db_file(&self) -> String {
        self.dir.as_ref().map_or_else(|| "<temporary>".to_owned(), |d| d.join("db").display().to_string())
    }

    /// What the seal is to claim: the index as sled holds it now, with the
    /// current records of runs appended to. Taken before the flush that
    /// precedes [`SledStore::write_seal`], so that flush covers all of it.
    fn seal_marks(&self) -> Result<std::collections::BTreeMap<String, Mark>, StoreError> {
        let live = lock(&self.live).clone();
        let mut runs = std::collections::BTreeMap::new();
        for item in self.runs.iter() {
            let (id, bytes) = item.map_err(io)?;
            let stored: RunRecord = decode(&bytes)?;
            let record = match live.get(stored.run_id()) {
                Some(current) if current.last_seq >= stored.last_seq => current,
                _ => &stored,
            };
            runs.insert(
                String::from_utf8_lossy(&id).into_owned(),
                Mark { seq: record.last_seq, head: record.head },
            );
        }
        Ok(runs)
    }

    /// Writes the seal (see [`SealRecord`]) once sled has been flushed
    /// with everything `runs` claims, and marks the store as sealed.
    fn write_seal(&self, runs: std::collections::BTreeMap<String, Mark>) -> Result<(), StoreError> {
        let Some(dir) = &self.dir else { return Ok(()) };
        write_durably(dir, SEAL_FILE, &SealRecord::new(runs).bytes())
    }

    /// Takes `run` out of the seal, before it is deleted from a store
    /// without a log (with one, the log's removal is replayed instead).
    fn unseal(&self, run: &RunId) -> Result<(), StoreError> {
        let Some(dir) = self.dir.as_ref().filter(|_| self.wal.is_none()) else { return Ok(()) };
        let Ok(bytes) = std::fs::read(dir.join(SEAL_FILE)) else { return Ok(()) };
        let Some(mut seal) = SealRecord::read(&bytes) else {
            let file = dir.join(SEAL_FILE).display().to_string();
            return Err(StoreError::Damaged(Damage { file, offset: None, what: DamageKind::Seal }));
        };
        if seal.runs.remove(run.as_str()).is_some() {
            write_durably(dir, SEAL_FILE, &seal.bytes())?;
        }
        Ok(())
    }

    /// Makes sled hold every append that returned (see `applier.rs`).
    fn settle(&self) -> Result<(), StoreError> {
        self.applier.settle()
    }

    /// Changes sled through `change`, which returns what it changed; with
    /// a write-ahead log, that is logged under the log's lock, in the order
    /// sled saw it.
    fn write<T>(
        &self,
        change: impl FnOnce() -> Result<(T, Vec<Change>), StoreError>,
    ) -> Result<T, StoreError> {
        match &self.wal {
            Some(wal) => wal.log(change),
            None => change().map(|(out, _)| out),
        }
    }

    /// Keeps at most `n` (at least 1) snapshots per run; older ones are
    /// deleted as new ones are written. The event log is never pruned.
    pub fn keep_snapshots(mut self, n: usize) -> Self {
        self.keep_snapshots = n.max(1);
        self
    }

    /// Checkpoints sled (flushes it and deletes the write-ahead log it
    /// covers) whenever the log's current segment passes `bytes` (at least
    /// 1; [`SEGMENT_BYTES`] unless set). Only a store with a log has
    /// segments: `Durability::Sync` on a data directory. Smaller segments bound the log
    /// replayed after a crash; larger ones flush sled less often.
    pub fn segment_bytes(self, bytes: u64) -> Self {
        if let Some(wal) = &self.wal {
            wal.set_limit(bytes.max(1));
        }
        self
    }

    /// The sequence numbers of a run's snapshots, oldest first.
    pub fn snapshot_seqs(&self, run: &RunId) -> Result<Vec<u64>, StoreError> {
        let mut out = Vec::new();
        for k in self.snapshots.scan_prefix(prefix(run)).keys() {
            let k = k.map_err(io)?;
            let tail: [u8; 8] = k[k.len().saturating_sub(8)..]
                .try_into()
                .map_err(|_| StoreError::Corrupt("bad snapshot key".into()))?;
            out.push(u64::from_be_bytes(tail));
        }
        Ok(out)
    }

    /// Brings every run's index record up to its log. The record is written
    /// when the run's status changes and on close; a process that died in
    /// between left the events after the record's `last_seq` (their status,
    /// usage and times) only in the log, so they are folded in here. A log
    /// that ends before its record, or whose chunks do not link to the
    /// record's head, was damaged or rolled back.
    fn repair_index(&self) -> Result<(), StoreError> {
        for item in self.runs.iter() {
            let (id, bytes) = item.map_err(io)?;
            let mut record: RunRecord = decode(&bytes)?;
            let run = String::from_utf8_lossy(&id).into_owned();
            let last = last_chunk(&self.events, &id)?;
            let found = last.map_or(0, |m| m.seq);
            if found < record.last_seq {
                let what = DamageKind::RolledBack { run, expected: record.last_seq, found };
                return Err(self.damaged(what));
            }
            // A record from before usage was kept folds the whole log.
            let from = if record.usage_by_model.is_some() { record.last_seq + 1 } else { 1 };
            record.usage_by_model.get_or_insert_default();
            if from > found {
                match (record.head, last.and_then(|m| m.head)) {
                    (Some(head), Some(actual)) if head != actual => {
                        return Err(self.damaged(DamageKind::Broken { run, seq: found }));
                    }
                    // A record from before chunks were chained gets its head.
                    (None, Some(actual)) => {
                        record.head = Some(actual);
                        self.runs.insert(id, encode(&record)).map_err(io)?;
                    }
                    _ => {}
                }
                continue;
            }
            let before = (from > 1).then_some(Mark { seq: record.last_seq, head: record.head });
            let broken = |seq| self.damaged(DamageKind::Broken { run: run.clone(), seq });
            let (tail, end) = read_log(&self.events, &id, from, before, &broken)?;
            if !tail.is_empty() {
                record.advance(&tail);
                record.head = end.and_then(|m| m.head);
                self.runs.insert(id, encode(&record)).map_err(io)?;
            }
        }
        Ok(())
    }

    /// Replaces what others are told about the process holding the store.
    pub fn describe_holder(&self, holder: &str) {
        if let Some(file) = &self.holder_file {
            let _ = std::fs::write(file, holder);
        }
    }

    /// Makes every committed event durable now: syncs the write-ahead
    /// log, or without one flushes sled. Concurrent callers share the
    /// flushes (a flush writes everything committed before it).
    pub async fn flush(&self) -> Result<(), StoreError> {
        match &self.wal {
            Some(wal) => {
                let wal = Arc::clone(wal);
                off_the_runtime(move || wal.sync()).await
            }
            None => {
                self.settle()?;
                let db = self.db.clone();
                off_the_runtime(move || db.flush().map(drop).map_err(io)).await
            }
        }
    }

    /// Flushes sled and deletes the write-ahead log's segments it now
    /// holds, once the current segment is full.
    async fn checkpoint_if_full(&self) -> Result<(), StoreError> {
        let Some(wal) = self.wal.as_ref().filter(|w| w.full()) else { return Ok(()) };
        let rotating = Arc::clone(wal);
        let keep_from = off_the_runtime(move || rotating.rotate()).await?;
        let marks = self.seal_marks()?;
        self.settle()?;
        let db = self.db.clone();
        off_the_runtime(move || db.flush().map(drop).map_err(io)).await?;
        self.write_seal(marks)?;
        wal.remove_before(keep_from)
    }

    /// After a write: with `Durability::Sync`, returns once it is durable,
    /// sharing a flush with every write that finished before that flush.
    async fn after_append(&self) -> Result<(), StoreError> {
        use std::sync::atomic::Ordering::SeqCst;
        if self.durability != Durability::Sync {
            return Ok(());
        }
        let mine = self.commits.written.fetch_add(1, SeqCst) + 1;
        let _flushing = self.commits.flushing.lock().await;
        if self.commits.durable.load(SeqCst) >= mine {
            return Ok(());
        }
        let covered = self.commits.written.load(SeqCst);
        self.flush().await?;
        self.commits.durable.fetch_max(covered, SeqCst);
        self.checkpoint_if_full().await
    }
}

/// Locks `m`, also after a panic elsewhere while it was held: every state
/// behind the store's locks is whole between statements, and a failure
/// that leaves work half-done is recorded in the state itself (the log's
/// `broken`, the applier's `failed`).
fn lock<T>(m: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Runs blocking disk work (a sync, sled's blocking `flush`: sled 0.34's
/// `flush_async` can deadlock its own thread pool under concurrent
/// writers). On a multi-threaded runtime the worker waits for the disk
/// itself (its other tasks move to another worker): one thread hand-off
/// fewer than the blocking pool.
async fn off_the_runtime<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, StoreError> + Send + 'static,
) -> Result<T, StoreError> {
    let multi_thread = tokio::runtime::Handle::try_current()
        .is_ok_and(|h| h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread);
    if multi_thread {
        return tokio::task::block_in_place(f);
    }
    blocking(f).await
}

impl Drop for SledStore {
    fn drop(&mut self) {
        // What is queued goes into sled before the last flush, and so do
        // the current index records, so the next open folds no tails.
        if self.applier.settle().is_ok() {
            for (id, record) in lock(&self.live).drain() {
                let _ = self.runs.insert(id.as_str(), encode(&record));
            }
        }
        if let Some(file) = self.holder_file.take() {
            // The log's segments go once sled holds all they hold, and the
            // seal says so.
            let sealed = self.seal_marks().and_then(|marks| {
                self.db.flush().map_err(io)?;
                self.write_seal(marks)
            });
            if sealed.is_ok()
                && let Some(wal) = &self.wal
            {
                let _ = wal.remove_all();
            }
            let _ = std::fs::remove_file(file);
        }
    }
}

/// What opening replayed from the write-ahead log.
struct Replayed {
    /// The number for the next segment.
    next_segment: u64,
    /// The runs whose index record the log removed (deleted runs).
    removed: std::collections::HashSet<Vec<u8>>,
}

/// A stored chunk read back: its events and its chain link, and its own
/// mark (last event, checksum of its JSON).
fn read_chunk(bytes: &[u8]) -> Result<Chunk, StoreError> {
    let json = unpack(bytes)?;
    let head = crc32fast::hash(&json);
    let record: LogRecord = decode(&json)?;
    let prev = record.prev;
    let events = record.into_events();
    let mark = events.last().map(|e| Mark { seq: e.seq, head: Some(head) });
    Ok(Chunk { events, prev, mark })
}

/// A stored chunk read back.
struct Chunk {
    events: Vec<Event>,
    /// The checksum of its predecessor's JSON, when it names it.
    prev: Option<u32>,
    /// Its last event and the checksum of its own JSON.
    mark: Option<Mark>,
}

/// The mark of the chunk that holds event `seq` of the run whose id's
/// bytes are `run` (the last chunk at or before it), if any.
fn chunk_at(events: &sled::Tree, run: &[u8], seq: u64) -> Result<Option<Mark>, StoreError> {
    match events.range(log_key(run, 0)..=log_key(run, seq)).next_back() {
        None => Ok(None),
        Some(item) => Ok(read_chunk(&item.map_err(io)?.1)?.mark),
    }
}

/// The mark of a run's last chunk (none when it has no events).
fn last_chunk(events: &sled::Tree, run: &[u8]) -> Result<Option<Mark>, StoreError> {
    chunk_at(events, run, u64::MAX)
}

/// The events of the run whose id's bytes are `run`, numbered `from` and
/// after, and the mark of its last chunk: the scan starts at the chunk
/// that holds `from` (the last key at or before it), so the chunks before
/// it are never read. Each chunk must start where the one before ended
/// and name its checksum (`before` is the chunk before `from`, when the
/// caller knows it); where one does not, `broken` says so.
fn read_log(
    events: &sled::Tree,
    run: &[u8],
    from: u64,
    before: Option<Mark>,
    broken: &dyn Fn(u64) -> StoreError,
) -> Result<(Vec<Event>, Option<Mark>), StoreError> {
    let first = log_key(run, 0);
    let start = match events.range(first.clone()..=log_key(run, from)).next_back() {
        Some(item) => item.map_err(io)?.0.to_vec(),
        None => first,
    };
    let mut log = Vec::new();
    let mut last = before;
    for item in events.range(start..=log_key(run, u64::MAX)) {
        let (_, v) = item.map_err(io)?;
        let Chunk { events: chunk, prev, mark } = read_chunk(&v)?;
        let Some(head) = chunk.first() else { continue };
        if let Some(before) = last
            && (head.seq != before.seq + 1 || prev.is_some_and(|p| before.head.is_some_and(|h| h != p)))
        {
            return Err(broken(before.seq + 1));
        }
        last = mark;
        log.extend(chunk.into_iter().filter(|e| e.seq >= from));
    }
    Ok((log, last))
}

/// Writes `bytes` as `dir/name` so that a crash leaves the old file or
/// the new one: written beside it, synced, renamed over it, the directory
/// synced.
fn write_durably(dir: &Path, name: &str, bytes: &[u8]) -> Result<(), StoreError> {
    use std::io::Write as _;
    let fail = |e: std::io::Error| StoreError::Io(format!("writing {name}: {e}"));
    let new = dir.join(NEW_SEAL);
    let mut file = std::fs::File::create(&new).map_err(fail)?;
    file.write_all(bytes).and_then(|()| file.sync_all()).map_err(fail)?;
    std::fs::rename(&new, dir.join(name)).map_err(fail)?;
    std::fs::File::open(dir).and_then(|d| d.sync_all()).map_err(fail)
}

fn io(e: sled::Error) -> StoreError {
    StoreError::Io(e.to_string())
}

/// `run_id 0xff seq`: a run's keys sort together, in sequence order.
fn key(run: &RunId, seq: u64) -> Vec<u8> {
    log_key(run.as_str().as_bytes(), seq)
}

/// [`key`] from the id's bytes, as the index tree holds them.
fn log_key(run: &[u8], seq: u64) -> Vec<u8> {
    let mut k = run.to_vec();
    k.push(0xff);
    k.extend_from_slice(&seq.to_be_bytes());
    k
}

fn prefix(run: &RunId) -> Vec<u8> {
    let mut k = run.as_str().as_bytes().to_vec();
    k.push(0xff);
    k
}

/// Runs blocking sled work off the async threads.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, StoreError> + Send + 'static,
) -> Result<T, StoreError> {
    tokio::task::spawn_blocking(f).await.map_err(|e| StoreError::Io(format!("store task failed: {e}")))?
}

#[async_trait]
impl RunStore for SledStore {
    async fn create(&self, run: NewRun) -> Result<(), StoreError> {
        if run.created.seq != 1 || !matches!(run.created.kind, EventKind::RunCreated { .. }) {
            return Err(StoreError::Corrupt("a run starts with run_created, numbered 1".into()));
        }
        let id = run.run_id.clone();
        let (name, first_key) = (IVec::from(id.as_str()), IVec::from(key(&id, 1)));
        let definition = IVec::from(encode(&DefinitionRecord::new(&run)));
        let (json, head) = chained(encode(&ChunkRecord::new(std::slice::from_ref(&run.created))), None);
        let chunk = IVec::from(pack(&json));
        let mut record = RunRecord::new(&run);
        record.head = Some(head);
        let summary = record.summary()?;
        let record = IVec::from(encode(&record));
        self.write(|| {
            let result =
                (&self.runs, &self.definitions, &self.events).transaction(|(runs, definitions, events)| {
                    if runs.get(&name)?.is_some() {
                        return Err(ConflictableTransactionError::Abort(StoreError::AlreadyExists(
                            id.to_string(),
                        )));
                    }
                    runs.insert(&name, record.clone())?;
                    definitions.insert(&name, definition.clone())?;
                    events.insert(&first_key, chunk.clone())?;
                    Ok(())
                });
            unwrap_tx(result)?;
            self.summarize(&summary);
            let changes = vec![
                Change::Insert(TreeId::Runs, name.clone(), record.clone()),
                Change::Insert(TreeId::Definitions, name.clone(), definition.clone()),
                Change::Insert(TreeId::Events, first_key.clone(), chunk.clone()),
            ];
            Ok(((), changes))
        })?;
        self.after_append().await
    }

    async fn append(&self, run: &RunId, expected_seq: u64, events: &[Event]) -> Result<(), StoreError> {
        cairn_ports::follows(expected_seq, events)?;
        let Some(first) = events.first() else { return Ok(()) };
        let conflict = |actual| StoreError::Conflict { run: run.to_string(), expected: expected_seq, actual };
        let chunk_key = IVec::from(key(run, first.seq));
        let unchained = encode(&ChunkRecord::new(events));
        self.write(|| {
            let mut live = lock(&self.live);
            if !live.contains_key(run.as_str()) {
                let Some(bytes) = self.runs.get(run.as_str()).map_err(io)? else {
                    return Err(StoreError::NotFound(run.to_string()));
                };
                let mut record: RunRecord = decode(&bytes)?;
                self.settle()?;
                let last = last_chunk(&self.events, run.as_str().as_bytes())?;
                let found = last.map_or(0, |m| m.seq);
                if found < record.last_seq {
                    let what =
                        DamageKind::RolledBack { run: run.to_string(), expected: record.last_seq, found };
                    return Err(self.damaged(what));
                }
                record.last_seq = found;
                record.head = last.and_then(|m| m.head);
                live.insert(run.to_string(), record);
            }
            let record = live.get_mut(run.as_str()).ok_or_else(|| StoreError::NotFound(run.to_string()))?;
            // The commit point: appends are checked against the run's last
            // event here, one at a time (under this lock).
            if record.last_seq != expected_seq {
                return Err(conflict(record.last_seq));
            }
            // Linked to the run's last chunk: a checksum of about a
            // kilobyte under the lock.
            let (json, head) = chained(unchained, record.head);
            let json = IVec::from(json);
            // Logged as JSON; packed into sled off this task.
            self.applier.queue(chunk_key.clone(), json.clone())?;
            let mut changes = vec![Change::Insert(TreeId::Events, chunk_key.clone(), json)];
            record.head = Some(head);
            // The index follows a change of status; `repair_index` mends it
            // if a crash comes first. sled gets the chunk first, so that
            // no flush holds an index ahead of its log.
            if record.advance(events) {
                self.settle()?;
                self.summarize(&record.summary()?);
                let bytes = IVec::from(encode(&*record));
                if record.status.is_terminal() {
                    live.remove(run.as_str());
                }
                self.runs.insert(run.as_str(), bytes.clone()).map_err(io)?;
                changes.push(Change::Insert(TreeId::Runs, run.as_str().into(), bytes));
            }
            Ok(((), changes))
        })?;
        self.after_append().await
    }

    async fn load(&self, run: &RunId, from_seq: u64) -> Result<StoredRun, StoreError> {
        // What the store recorded of the run's end: the log must reach it,
        // through the chunk it names. Read before the applier settles, so
        // an append that lands meanwhile (queued under the same lock) is
        // applied before the log is read: a live run never reads as
        // rolled back.
        let known =
            lock(&self.live).get(run.as_str()).map(|record| Mark { seq: record.last_seq, head: record.head });
        self.settle()?;
        let known = match known {
            Some(known) => Some(known),
            None => match self.runs.get(run.as_str()).map_err(io)? {
                Some(bytes) => {
                    let record: RunRecord = decode(&bytes)?;
                    Some(Mark { seq: record.last_seq, head: record.head })
                }
                None => None,
            },
        };
        let (definitions, events, run) = (self.definitions.clone(), self.events.clone(), run.clone());
        let db_file = self.db_file();
        blocking(move || {
            let def = definitions
                .get(run.as_str())
                .map_err(io)?
                .ok_or_else(|| StoreError::NotFound(run.to_string()))?;
            let def: DefinitionRecord = decode(&def)?;
            let damaged = |what| StoreError::Damaged(Damage { file: db_file.clone(), offset: None, what });
            let broken = |seq| damaged(DamageKind::Broken { run: run.to_string(), seq });
            let id = run.as_str().as_bytes();
            let (log, end) = read_log(&events, id, from_seq, None, &broken)?;
            if let Some(known) = known {
                let found = end.map_or(0, |m| m.seq);
                if found < known.seq {
                    let what = DamageKind::RolledBack { run: run.to_string(), expected: known.seq, found };
                    return Err(damaged(what));
                }
                let at = if end.is_some_and(|m| m.seq == known.seq) {
                    end
                } else {
                    chunk_at(&events, id, known.seq)?
                };
                if known.head.is_some() && at != Some(known) {
                    return Err(broken(known.seq));
                }
            }
            Ok(StoredRun { definition_name: def.name, definition: def.text, files: def.files, events: log })
        })
        .await
    }

    async fn list(&self, query: &RunQuery) -> Result<RunPage, StoreError> {
        Ok(query.page_of(self.summaries(query).await?))
    }

    async fn summaries(&self, query: &RunQuery) -> Result<Vec<Arc<RunSummary>>, StoreError> {
        // Runs appended to since opening are current in memory (their
        // usage too), ahead of what their record on disk says.
        let live: Vec<Arc<RunSummary>> =
            lock(&self.live).values().map(|r| r.summary().map(Arc::new)).collect::<Result<_, _>>()?;
        let mut runs: Vec<Arc<RunSummary>> = live.iter().filter(|r| query.matches(r)).cloned().collect();
        let live: std::collections::HashSet<&str> = live.iter().map(|r| r.run_id.as_str()).collect();
        self.with_summaries(|summaries| {
            let stored = summaries.values().filter(|r| query.matches(r) && !live.contains(r.run_id.as_str()));
            runs.extend(stored.cloned());
        })?;
        Ok(runs)
    }

    async fn summary(&self, run: &RunId) -> Result<Option<Arc<RunSummary>>, StoreError> {
        if let Some(live) = lock(&self.live).get(run.as_str()) {
            return live.summary().map(|s| Some(Arc::new(s)));
        }
        self.with_summaries(|summaries| summaries.get(run.as_str()).cloned())
    }

    async fn put_snapshot(&self, run: &RunId, snapshot: Snapshot) -> Result<(), StoreError> {
        let snapshot_key = IVec::from(key(run, snapshot.seq));
        let bytes = IVec::from(compressed(&SnapshotRecord::new(&snapshot)));
        self.write(|| {
            if self.runs.get(run.as_str()).map_err(io)?.is_none() {
                return Err(StoreError::NotFound(run.to_string()));
            }
            self.snapshots.insert(&snapshot_key, bytes.clone()).map_err(io)?;
            let mut changes = vec![Change::Insert(TreeId::Snapshots, snapshot_key.clone(), bytes.clone())];
            let keys: Vec<IVec> =
                self.snapshots.scan_prefix(prefix(run)).keys().collect::<Result<_, _>>().map_err(io)?;
            if keys.len() > self.keep_snapshots {
                changes.extend(removed(
                    &self.snapshots,
                    TreeId::Snapshots,
                    &keys[..keys.len() - self.keep_snapshots],
                )?);
            }
            Ok(((), changes))
        })?;
        self.after_append().await
    }

    async fn latest_snapshot(&self, run: &RunId) -> Result<Option<Snapshot>, StoreError> {
        if self.runs.get(run.as_str()).map_err(io)?.is_none() {
            return Err(StoreError::NotFound(run.to_string()));
        }
        // Newest first; one that does not decode is passed over (the log
        // alone is the truth).
        for item in self.snapshots.scan_prefix(prefix(run)).rev() {
            let (_, v) = item.map_err(io)?;
            if let Ok(record) = decode::<SnapshotRecord>(&v) {
                return Ok(Some(record.into_snapshot()));
            }
        }
        Ok(None)
    }

    async fn delete(&self, run: &RunId) -> Result<(), StoreError> {
        self.unseal(run)?;
        self.write(|| {
            self.settle()?;
            lock(&self.live).remove(run.as_str());
            if let Some(summaries) = lock(&self.summaries).as_mut() {
                summaries.remove(run.as_str());
            }
            if self.runs.remove(run.as_str()).map_err(io)?.is_none() {
                return Err(StoreError::NotFound(run.to_string()));
            }
            self.definitions.remove(run.as_str()).map_err(io)?;
            let mut changes = vec![
                Change::Remove(TreeId::Runs, run.as_str().into()),
                Change::Remove(TreeId::Definitions, run.as_str().into()),
            ];
            for (tree, id) in [(&self.events, TreeId::Events), (&self.snapshots, TreeId::Snapshots)] {
                let keys: Vec<IVec> =
                    tree.scan_prefix(prefix(run)).keys().collect::<Result<_, _>>().map_err(io)?;
                changes.extend(removed(tree, id, &keys)?);
            }
            Ok(((), changes))
        })?;
        self.after_append().await
    }
}

/// Removes `keys` from `tree` in one batch; returns the changes made.
fn removed(tree: &sled::Tree, id: TreeId, keys: &[IVec]) -> Result<Vec<Change>, StoreError> {
    let mut batch = sled::Batch::default();
    for k in keys {
        batch.remove(k.clone());
    }
    tree.apply_batch(batch).map_err(io)?;
    Ok(keys.iter().map(|k| Change::Remove(id, k.clone())).collect())
}

fn unwrap_tx(result: Result<(), TransactionError<StoreError>>) -> Result<(), StoreError> {
    match result {
        Ok(()) => Ok(()),
        Err(TransactionError::Abort(e)) => Err(e),
        Err(TransactionError::Storage(e)) => Err(io(e)),
    }
}
