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
//! What it deliberately does not do: interpret events beyond the run status
//! and token usage (folding state is the domain's), or schedule anything
//! (the engine's). Records on disk are this crate's own versioned envelopes.
//!
//! May depend on: `cairn-domain`, `cairn-ports`, sled, serde. Never on the
//! engine or the app.
//!
//! Read first: [`SledStore::open`], [`Durability`].

mod applier;
mod records;
mod wal;

pub use wal::SEGMENT_BYTES;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use async_trait::async_trait;
use cairn_domain::id::RunId;
use cairn_domain::state::{Event, EventKind};
use cairn_ports::{NewRun, RunPage, RunQuery, RunStore, Snapshot, StoreError, StoredRun};
use sled::transaction::{ConflictableTransactionError, TransactionError};
use sled::{IVec, Transactional};

use applier::Applier;
use records::{
    ChunkRecord, DefinitionRecord, LogRecord, RunRecord, SnapshotRecord, compressed, decode, encode, kept,
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
}

/// The key under which the format marker is kept.
const FORMAT_KEY: &[u8] = b"format";
/// The format marker's value.
const FORMAT: &[u8] = b"cairn-store/1";
/// The file that names the process holding the store.
pub const HOLDER_FILE: &str = "holder";

/// Runs in a sled database.
pub struct SledStore {
    db: sled::Db,
    runs: sled::Tree,
    definitions: sled::Tree,
    events: sled::Tree,
    snapshots: sled::Tree,
    durability: Durability,
    holder_file: Option<PathBuf>,
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
    matches!(name, "conf" | "db" | "blobs" | HOLDER_FILE)
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
        let unreadable =
            |e: StoreError| OpenError::Corrupt { path: dir.to_path_buf(), reason: e.to_string() };
        let next_segment = store.recover(dir).map_err(unreadable)?;
        if durability == Durability::Sync {
            store.wal = Some(Arc::new(Wal::create(dir, next_segment).map_err(unreadable)?));
        }
        store.repair_index().map_err(unreadable)?;
        Ok(store)
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
            db,
            durability,
            holder_file,
            keep_snapshots: DEFAULT_KEEP_SNAPSHOTS,
            commits: Commits::default(),
            wal: None,
            live: Default::default(),
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
    /// or before its final flush) into sled, makes it durable there and
    /// deletes it; returns the number for the next segment.
    fn recover(&self, dir: &Path) -> Result<u64, StoreError> {
        let segments = wal::segments(dir)?;
        let Some(&last) = segments.last() else { return Ok(1) };
        for &number in &segments {
            wal::replay(dir, number, |change| {
                match change {
                    // Appends log their chunks as JSON; sled keeps them packed.
                    Change::Insert(TreeId::Events, key, chunk) => self.events.insert(key, &*kept(&chunk)),
                    Change::Insert(tree, key, value) => self.tree(tree).insert(key, value),
                    Change::Remove(tree, key) => self.tree(tree).remove(key),
                }
                .map(drop)
                .map_err(io)
            })?;
        }
        self.db.flush().map_err(io)?;
        wal::remove_segments(dir, |_| true)?;
        Ok(last + 1)
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

    /// The sequence number of a run's last stored event (0 when it has none).
    fn last_seq(&self, run: &RunId) -> Result<u64, StoreError> {
        Ok(last_append(&self.events, run.as_str().as_bytes())?.last().map_or(0, |e| e.seq))
    }

    /// Brings every run's index record up to its log. The record is written
    /// when the run's status changes and on close; a process that died in
    /// between left the events after the record's `last_seq` (their status,
    /// usage and times) only in the log, so they are folded in here.
    fn repair_index(&self) -> Result<(), StoreError> {
        for item in self.runs.iter() {
            let (id, bytes) = item.map_err(io)?;
            let mut record: RunRecord = decode(&bytes)?;
            // A record from before usage was kept folds the whole log.
            let from = if record.usage_by_model.is_some() { record.last_seq + 1 } else { 1 };
            record.usage_by_model.get_or_insert_default();
            if from > 1 && last_append(&self.events, &id)?.last().is_none_or(|e| e.seq < from) {
                continue;
            }
            let tail = log_from(&self.events, &id, from)?;
            if !tail.is_empty() {
                record.advance(&tail);
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
        self.settle()?;
        let db = self.db.clone();
        off_the_runtime(move || db.flush().map(drop).map_err(io)).await?;
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
            // The log's segments go once sled holds all they hold.
            if self.db.flush().is_ok()
                && let Some(wal) = &self.wal
            {
                let _ = wal.remove_all();
            }
            let _ = std::fs::remove_file(file);
        }
    }
}

/// The events of a run's last append (empty when it has none).
fn last_append(events: &sled::Tree, run: &[u8]) -> Result<Vec<Event>, StoreError> {
    let mut start = run.to_vec();
    start.push(0xff);
    match events.scan_prefix(start).next_back() {
        None => Ok(Vec::new()),
        Some(item) => {
            let (_, v) = item.map_err(io)?;
            Ok(decode::<LogRecord>(&v)?.into_events())
        }
    }
}

/// The events of the run whose id's bytes are `run`, numbered `from` and
/// after: the scan starts at the chunk that holds `from` (the last key at
/// or before it), so the chunks before it are never read.
fn log_from(events: &sled::Tree, run: &[u8], from: u64) -> Result<Vec<Event>, StoreError> {
    let first = log_key(run, 0);
    let start = match events.range(first.clone()..=log_key(run, from)).next_back() {
        Some(item) => item.map_err(io)?.0.to_vec(),
        None => first,
    };
    let mut log = Vec::new();
    for item in events.range(start..=log_key(run, u64::MAX)) {
        let (_, v) = item.map_err(io)?;
        log.extend(decode::<LogRecord>(&v)?.into_events().into_iter().filter(|e| e.seq >= from));
    }
    Ok(log)
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
        let record = IVec::from(encode(&RunRecord::new(&run)));
        let definition = IVec::from(encode(&DefinitionRecord::new(&run)));
        let chunk = IVec::from(compressed(&ChunkRecord::new(std::slice::from_ref(&run.created))));
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
        let json = IVec::from(encode(&ChunkRecord::new(events)));
        self.write(|| {
            let mut live = lock(&self.live);
            if !live.contains_key(run.as_str()) {
                let Some(bytes) = self.runs.get(run.as_str()).map_err(io)? else {
                    return Err(StoreError::NotFound(run.to_string()));
                };
                let mut record: RunRecord = decode(&bytes)?;
                self.settle()?;
                record.last_seq = self.last_seq(run)?;
                live.insert(run.to_string(), record);
            }
            let record = live.get_mut(run.as_str()).ok_or_else(|| StoreError::NotFound(run.to_string()))?;
            // The commit point: appends are checked against the run's last
            // event here, one at a time (under this lock).
            if record.last_seq != expected_seq {
                return Err(conflict(record.last_seq));
            }
            // Logged as JSON; packed into sled off this task.
            self.applier.queue(chunk_key.clone(), json.clone())?;
            let mut changes = vec![Change::Insert(TreeId::Events, chunk_key.clone(), json.clone())];
            // The index follows a change of status; `repair_index` mends it
            // if a crash comes first.
            if record.advance(events) {
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
        self.settle()?;
        let (definitions, events, run) = (self.definitions.clone(), self.events.clone(), run.clone());
        blocking(move || {
            let def = definitions
                .get(run.as_str())
                .map_err(io)?
                .ok_or_else(|| StoreError::NotFound(run.to_string()))?;
            let def: DefinitionRecord = decode(&def)?;
            let log = log_from(&events, run.as_str().as_bytes(), from_seq)?;
            Ok(StoredRun { definition_name: def.name, definition: def.text, files: def.files, events: log })
        })
        .await
    }

    async fn list(&self, query: &RunQuery) -> Result<RunPage, StoreError> {
        // Runs appended to since opening are current in memory, not on disk;
        // of the two, the record further along wins.
        let live = lock(&self.live).clone();
        let (runs, query) = (self.runs.clone(), query.clone());
        blocking(move || {
            let mut out = Vec::new();
            for item in runs.iter() {
                let (_, v) = item.map_err(io)?;
                let stored: RunRecord = decode(&v)?;
                let record = match live.get(stored.run_id()) {
                    Some(current) if current.last_seq >= stored.last_seq => current,
                    _ => &stored,
                };
                out.push(record.summary()?);
            }
            Ok(query.page(out))
        })
        .await
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
        self.write(|| {
            self.settle()?;
            lock(&self.live).remove(run.as_str());
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
