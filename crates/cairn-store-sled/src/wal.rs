//! The write-ahead log behind `Durability::Sync`.
//!
//! sled makes its writes durable with `flush`, which costs far more than the
//! disk's own sync: it hands the write to sled's I/O pool, wakes every idle
//! thread of it, and rewrites tree pages. So with `Durability::Sync` every
//! change the store makes to sled is also logged, in the same order, to a
//! plain file in the data directory, and `append` returns once that file is
//! synced: one write and one `fdatasync` per group commit. sled is flushed
//! only at checkpoints (when a segment has grown past [`SEGMENT_BYTES`] or
//! the store's own limit, and when the store closes), after which the
//! segments it covers are deleted. Opening a store replays whatever segments
//! are left into sled before anything reads it.
//!
//! A segment's file is filled with zeros before records go into it
//! ([`PREALLOCATED`] at first, more as it fills), and records overwrite
//! those zeros: a sync then writes data into blocks the file already has,
//! with no new file size or block map (except when the log outgrows the
//! zeros), so it costs one write and a cache flush rather than also an
//! inode write (on ext4 the difference is close to half of each sync). Where the file system allows it, the segment is
//! written with direct I/O (`O_DIRECT`) in whole 4 KiB blocks, the block
//! holding the end of the log rewritten with each sync; elsewhere through
//! the page cache.
//!
//! A segment is a sequence of records, each `[length u32][crc32 u32]
//! [payload]` (little-endian), the payload one or more changes: `[1][tree]
//! [key length u32][key][value length u32][value]` for an insert, `[2][tree]
//! [key length u32][key]` for a removal. A record is the changes of one
//! store operation, so replay applies all of an operation or none of it.
//! Replay stops at the first record that is cut short, fails its checksum
//! or has length zero (the zeros after the last record): that is the end,
//! or the write a crash interrupted, never acknowledged to anyone.
//! Changes are whole values and removals of single keys, so replaying a
//! segment over a sled that already holds some of it ends in the same state.

use std::fs::File;
use std::os::unix::fs::FileExt as _;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use cairn_ports::StoreError;
use sled::IVec;

use crate::lock;

/// The size past which a segment is closed and sled checkpointed, unless
/// the store is told otherwise ([`crate::SledStore::segment_bytes`]).
pub const SEGMENT_BYTES: u64 = 32 * 1024 * 1024;

/// Zeros a new segment's file starts with; whenever the log reaches the
/// file's end, it grows by as much as it has (at most [`MOST_GROWTH`]).
pub const PREALLOCATED: u64 = 256 * 1024;

/// The most zeros one growth of a segment writes (while the sync that
/// needs them waits).
const MOST_GROWTH: u64 = 4 * 1024 * 1024;

/// The unit of direct I/O: offsets and lengths of writes are multiples of
/// it, and so is the address of the memory written from.
const BLOCK: usize = 4096;

/// Bytes one write covers at most: the size of the aligned buffer writes
/// are made from.
const CHUNK: usize = 64 * 1024;

/// Memory aligned for direct I/O, to write from.
#[repr(C, align(4096))]
struct Aligned([u8; CHUNK]);

/// The prefix of a segment's file name; the rest is its number in hex.
pub(crate) const SEGMENT_PREFIX: &str = "wal-";

/// The trees a change can touch, as the log names them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum TreeId {
    Runs = 1,
    Definitions = 2,
    Events = 3,
    Snapshots = 4,
}

impl TreeId {
    fn from_byte(b: u8) -> Option<Self> {
        Some(match b {
            1 => Self::Runs,
            2 => Self::Definitions,
            3 => Self::Events,
            4 => Self::Snapshots,
            _ => return None,
        })
    }
}

/// One change to a tree, as made in sled and as logged.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Change {
    Insert(TreeId, IVec, IVec),
    Remove(TreeId, IVec),
}

const INSERT: u8 = 1;
const REMOVE: u8 = 2;
/// Length and checksum before each record's payload.
const HEADER: usize = 8;

/// The log: what is logged, behind one lock that also orders the changes
/// in sled (see [`Wal::log`]), and the segment's writer, behind the lock of
/// the one sync (or rotation) that writes at a time.
pub(crate) struct Wal {
    dir: PathBuf,
    log: Mutex<Logged>,
    writer: Mutex<Writer>,
    /// The size past which [`Wal::full`] says so.
    limit: std::sync::atomic::AtomicU64,
}

/// The current segment's records, as far as they are logged and synced.
struct Logged {
    /// Bytes of records logged.
    len: u64,
    /// Bytes of records written and synced.
    synced: u64,
    /// The log from `tail_at` (a multiple of [`BLOCK`]) to `len`: what the
    /// next sync writes, starting with the block it shares with what is
    /// synced already.
    tail: Vec<u8>,
    tail_at: u64,
    /// Reused for encoding each record.
    buf: Vec<u8>,
    /// Set once a write or sync failed: what follows a half-written record
    /// could not be replayed, so nothing more is written.
    broken: Option<String>,
}

impl Logged {
    fn empty() -> Self {
        Self { len: 0, synced: 0, tail: Vec::new(), tail_at: 0, buf: Vec::new(), broken: None }
    }

    /// Refuses once a write or sync has failed.
    fn usable(&self) -> Result<(), StoreError> {
        match &self.broken {
            Some(why) => Err(StoreError::Io(format!("write-ahead log: an earlier write failed ({why})"))),
            None => Ok(()),
        }
    }
}

/// The current segment's file and what writing it needs.
struct Writer {
    number: u64,
    file: File,
    /// Whether it was opened for direct I/O.
    direct: bool,
    /// Bytes of the file that exist (zeros past the log's end).
    capacity: u64,
    /// Aligned memory the writes are made from.
    aligned: Box<Aligned>,
}

fn io(what: &str, e: std::io::Error) -> StoreError {
    StoreError::Io(format!("write-ahead log: {what}: {e}"))
}

fn segment_path(dir: &Path, number: u64) -> PathBuf {
    dir.join(format!("{SEGMENT_PREFIX}{number:016x}"))
}

/// The numbers of the segments in `dir`, ascending.
pub(crate) fn segments(dir: &Path) -> Result<Vec<u64>, StoreError> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(|e| io("listing segments", e))? {
        let entry = entry.map_err(|e| io("listing segments", e))?;
        let name = entry.file_name();
        if let Some(n) = name.to_str().and_then(|n| n.strip_prefix(SEGMENT_PREFIX))
            && let Ok(number) = u64::from_str_radix(n, 16)
        {
            out.push(number);
        }
    }
    out.sort_unstable();
    Ok(out)
}

/// Replays segment `number` in `dir`: every whole record's changes, in
/// order, through `apply`. Returns how many records were applied.
pub(crate) fn replay(
    dir: &Path,
    number: u64,
    mut apply: impl FnMut(Change) -> Result<(), StoreError>,
) -> Result<usize, StoreError> {
    let bytes = std::fs::read(segment_path(dir, number)).map_err(|e| io("reading a segment", e))?;
    let mut records = 0;
    let mut at = 0;
    while let Some(changes) = record_at(&bytes, &mut at) {
        for change in changes {
            apply(change)?;
        }
        records += 1;
    }
    Ok(records)
}

/// The changes of the record at `*at`, moving `*at` past it; `None` at the
/// end, or where the record is cut short or damaged.
fn record_at(bytes: &[u8], at: &mut usize) -> Option<Vec<Change>> {
    let header = bytes.get(*at..at.checked_add(HEADER)?)?;
    let len = u32::from_le_bytes(header[..4].try_into().ok()?) as usize;
    let crc = u32::from_le_bytes(header[4..].try_into().ok()?);
    let start = *at + HEADER;
    let payload = bytes.get(start..start.checked_add(len)?)?;
    if len == 0 || crc32fast::hash(payload) != crc {
        return None;
    }
    let changes = decode(payload)?;
    *at = start + len;
    Some(changes)
}

fn decode(mut payload: &[u8]) -> Option<Vec<Change>> {
    fn take<'a>(bytes: &mut &'a [u8], n: usize) -> Option<&'a [u8]> {
        let (head, rest) = bytes.split_at_checked(n)?;
        *bytes = rest;
        Some(head)
    }
    fn sized<'a>(bytes: &mut &'a [u8]) -> Option<&'a [u8]> {
        let len = u32::from_le_bytes(take(bytes, 4)?.try_into().ok()?) as usize;
        take(bytes, len)
    }
    let mut out = Vec::new();
    while !payload.is_empty() {
        let head = take(&mut payload, 2)?;
        let tree = TreeId::from_byte(head[1])?;
        let key = IVec::from(sized(&mut payload)?);
        out.push(match head[0] {
            INSERT => Change::Insert(tree, key, IVec::from(sized(&mut payload)?)),
            REMOVE => Change::Remove(tree, key),
            _ => return None,
        });
    }
    Some(out)
}

fn encode(changes: &[Change], buf: &mut Vec<u8>) {
    fn sized(buf: &mut Vec<u8>, bytes: &[u8]) {
        buf.extend_from_slice(&(bytes.len() as u32).to_le_bytes());
        buf.extend_from_slice(bytes);
    }
    buf.clear();
    buf.extend_from_slice(&[0; HEADER]);
    for change in changes {
        match change {
            Change::Insert(tree, key, value) => {
                buf.extend_from_slice(&[INSERT, *tree as u8]);
                sized(buf, key);
                sized(buf, value);
            }
            Change::Remove(tree, key) => {
                buf.extend_from_slice(&[REMOVE, *tree as u8]);
                sized(buf, key);
            }
        }
    }
    let len = (buf.len() - HEADER) as u32;
    let crc = crc32fast::hash(&buf[HEADER..]);
    buf[..4].copy_from_slice(&len.to_le_bytes());
    buf[4..HEADER].copy_from_slice(&crc.to_le_bytes());
}

impl Writer {
    /// Makes a new segment durable in `dir`: its file, [`PREALLOCATED`]
    /// bytes of zeros, and its directory entry. Direct I/O where the file
    /// system takes it (opening and writing the zeros with it succeed), the
    /// page cache elsewhere.
    fn create(dir: &Path, number: u64, aligned: Box<Aligned>) -> Result<Self, StoreError> {
        let path = segment_path(dir, number);
        let create = |direct: bool, aligned: Box<Aligned>| -> Result<Self, std::io::Error> {
            let mut options = std::fs::OpenOptions::new();
            options.create_new(true).write(true);
            #[cfg(target_os = "linux")]
            if direct {
                use std::os::unix::fs::OpenOptionsExt as _;
                options.custom_flags(libc::O_DIRECT);
            }
            let mut writer = Self { number, file: options.open(&path)?, direct, capacity: 0, aligned };
            writer.grow(PREALLOCATED)?;
            Ok(writer)
        };
        let writer = match create(cfg!(target_os = "linux"), aligned) {
            Ok(writer) => writer,
            Err(_) if cfg!(target_os = "linux") => {
                let _ = std::fs::remove_file(&path);
                create(false, Box::new(Aligned([0; CHUNK]))).map_err(|e| io("creating a segment", e))?
            }
            Err(e) => return Err(io("creating a segment", e)),
        };
        writer.file.sync_all().map_err(|e| io("syncing a new segment", e))?;
        File::open(dir).and_then(|d| d.sync_all()).map_err(|e| io("syncing the data directory", e))?;
        Ok(writer)
    }

    /// Fills the file with zeros up to at least `size` bytes (a multiple of
    /// [`CHUNK`]). Not synced: the sync that follows makes it durable.
    fn grow(&mut self, size: u64) -> Result<(), std::io::Error> {
        let size = size.div_ceil(CHUNK as u64) * CHUNK as u64;
        self.aligned.0.fill(0);
        while self.capacity < size {
            self.file.write_all_at(&self.aligned.0, self.capacity)?;
            self.capacity += CHUNK as u64;
        }
        Ok(())
    }

    /// Writes the log's end `tail` (which starts at the block boundary
    /// `at`), growing the file first if it reaches past it; then syncs.
    /// With direct I/O the last block is padded with zeros.
    fn write_tail(&mut self, tail: &[u8], at: u64) -> Result<(), StoreError> {
        let end = at + tail.len() as u64;
        if end > self.capacity {
            let more = self.capacity.clamp(CHUNK as u64, MOST_GROWTH);
            self.grow(end.max(self.capacity + more)).map_err(|e| io("growing a segment", e))?;
        }
        for (i, piece) in tail.chunks(CHUNK).enumerate() {
            let offset = at + (i * CHUNK) as u64;
            let written = if self.direct {
                let padded = piece.len().div_ceil(BLOCK) * BLOCK;
                self.aligned.0[..piece.len()].copy_from_slice(piece);
                self.aligned.0[piece.len()..padded].fill(0);
                self.file.write_all_at(&self.aligned.0[..padded], offset)
            } else {
                self.file.write_all_at(piece, offset)
            };
            written.map_err(|e| io("writing", e))?;
        }
        self.file.sync_data().map_err(|e| io("syncing", e))
    }
}

impl Wal {
    /// Starts a log in `dir` with a new segment numbered `number`.
    pub fn create(dir: &Path, number: u64) -> Result<Self, StoreError> {
        let writer = Writer::create(dir, number, Box::new(Aligned([0; CHUNK])))?;
        Ok(Self {
            dir: dir.to_path_buf(),
            log: Mutex::new(Logged::empty()),
            writer: Mutex::new(writer),
            limit: SEGMENT_BYTES.into(),
        })
    }

    /// Runs `change` (which changes sled and returns what it changed) and
    /// appends its changes as one record, both under the log's lock, so that
    /// the log holds changes in the order sled saw them. Nothing is written
    /// or durable until [`Wal::sync`].
    pub fn log<T>(
        &self,
        change: impl FnOnce() -> Result<(T, Vec<Change>), StoreError>,
    ) -> Result<T, StoreError> {
        let mut log = lock(&self.log);
        log.usable()?;
        let (out, changes) = change()?;
        if changes.is_empty() {
            return Ok(out);
        }
        let log = &mut *log;
        encode(&changes, &mut log.buf);
        log.tail.extend_from_slice(&log.buf);
        log.len += log.buf.len() as u64;
        Ok(out)
    }

    /// Writes what is logged and not yet written, and syncs it: every
    /// record logged before this call is durable when it returns. A failure
    /// marks the log broken: nothing after it is written.
    pub fn sync(&self) -> Result<(), StoreError> {
        let mut writer = lock(&self.writer);
        // Copied out, so that appends go on logging while this writes.
        let (tail, at, end) = {
            let log = lock(&self.log);
            log.usable()?;
            if log.synced == log.len {
                return Ok(());
            }
            (log.tail.clone(), log.tail_at, log.len)
        };
        let written = writer.write_tail(&tail, at);
        let mut log = lock(&self.log);
        if let Err(e) = &written {
            log.broken = Some(e.to_string());
            return written;
        }
        log.synced = end;
        // Keep the block the next write shares with this one.
        let keep_from = end / BLOCK as u64 * BLOCK as u64;
        let done = (keep_from - log.tail_at) as usize;
        log.tail.drain(..done);
        log.tail_at = keep_from;
        Ok(())
    }

    /// Sets the size past which [`Wal::full`] says so.
    pub fn set_limit(&self, bytes: u64) {
        self.limit.store(bytes, std::sync::atomic::Ordering::Relaxed);
    }

    /// Whether the current segment has grown past its limit.
    pub fn full(&self) -> bool {
        lock(&self.log).len >= self.limit.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Writes and syncs the current segment and starts the next one;
    /// returns the new segment's number. Every segment before it may be
    /// deleted once sled has been flushed after this returns.
    pub fn rotate(&self) -> Result<u64, StoreError> {
        let mut writer = lock(&self.writer);
        let mut log = lock(&self.log);
        log.usable()?;
        if let Err(e) = writer.write_tail(&log.tail, log.tail_at) {
            log.broken = Some(e.to_string());
            return Err(e);
        }
        let number = writer.number + 1;
        let aligned = std::mem::replace(&mut writer.aligned, Box::new(Aligned([0; CHUNK])));
        *writer = Writer::create(&self.dir, number, aligned)?;
        *log = Logged::empty();
        Ok(number)
    }

    /// Deletes the segments numbered below `number`.
    pub fn remove_before(&self, number: u64) -> Result<(), StoreError> {
        remove_segments(&self.dir, |n| n < number)
    }

    /// Deletes every segment: sled holds all of it durably (the store is
    /// closing after a final flush).
    pub fn remove_all(&self) -> Result<(), StoreError> {
        remove_segments(&self.dir, |_| true)
    }
}

/// Deletes the segments in `dir` whose number `which` picks.
pub(crate) fn remove_segments(dir: &Path, which: impl Fn(u64) -> bool) -> Result<(), StoreError> {
    for number in segments(dir)?.into_iter().filter(|n| which(*n)) {
        std::fs::remove_file(segment_path(dir, number)).map_err(|e| io("deleting a segment", e))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dir(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("cairn-wal-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).expect("dir");
        d
    }

    fn insert(key: &str, value: &str) -> Change {
        Change::Insert(TreeId::Events, key.as_bytes().into(), value.as_bytes().into())
    }

    fn replayed(d: &Path, number: u64) -> Vec<Change> {
        let mut out = Vec::new();
        replay(d, number, |c| {
            out.push(c);
            Ok(())
        })
        .expect("replays");
        out
    }

    #[test]
    fn records_replay_in_order_and_a_torn_tail_is_dropped() {
        let d = dir("torn");
        let wal = Wal::create(&d, 1).expect("create");
        let first = vec![insert("a", "1"), Change::Remove(TreeId::Runs, IVec::from(&b"r"[..]))];
        wal.log(|| Ok(((), first.clone()))).expect("log");
        wal.log(|| Ok(((), vec![insert("b", "2")]))).expect("log");
        wal.sync().expect("sync");
        let end = lock(&wal.log).len as usize;
        let whole = std::fs::read(segment_path(&d, 1)).expect("read")[..end].to_vec();
        let mut expected = first.clone();
        expected.push(insert("b", "2"));
        assert_eq!(replayed(&d, 1), expected);

        // A crash in the middle of the second record's write.
        std::fs::write(segment_path(&d, 1), &whole[..whole.len() - 3]).expect("cut");
        assert_eq!(replayed(&d, 1), first);
        // A flipped byte in the second record: its checksum fails.
        let mut damaged = whole.clone();
        let last = damaged.len() - 1;
        damaged[last] ^= 0xff;
        std::fs::write(segment_path(&d, 1), &damaged).expect("damage");
        assert_eq!(replayed(&d, 1), first);
        // Garbage that claims to be longer than the file.
        let mut long = whole[..HEADER].to_vec();
        long[..4].copy_from_slice(&u32::MAX.to_le_bytes());
        std::fs::write(segment_path(&d, 1), &long).expect("garbage");
        assert_eq!(replayed(&d, 1), Vec::new());
    }

    #[test]
    fn a_failed_change_logs_nothing_and_rotation_starts_a_new_segment() {
        let d = dir("rotate");
        let wal = Wal::create(&d, 7).expect("create");
        let refused: Result<(), _> =
            wal.log(|| Err(StoreError::Conflict { run: "r".into(), expected: 1, actual: 2 }));
        assert!(refused.is_err());
        wal.log(|| Ok(((), vec![insert("a", "1")]))).expect("log");
        assert_eq!(wal.rotate().expect("rotate"), 8);
        wal.log(|| Ok(((), vec![insert("b", "2")]))).expect("log");
        assert_eq!(replayed(&d, 8), Vec::new(), "logged, not yet written");
        wal.sync().expect("sync");
        assert_eq!(segments(&d).expect("list"), vec![7, 8]);
        assert_eq!(replayed(&d, 7), vec![insert("a", "1")]);
        wal.remove_before(8).expect("remove");
        assert_eq!(segments(&d).expect("list"), vec![8]);
        assert_eq!(replayed(&d, 8), vec![insert("b", "2")]);
        wal.remove_all().expect("remove");
        assert_eq!(segments(&d).expect("list"), Vec::<u64>::new());
    }

    #[test]
    fn records_synced_a_few_at_a_time_replay_whole_past_the_preallocated_zeros() {
        let d = dir("grow");
        let wal = Wal::create(&d, 1).expect("create");
        let size = std::fs::metadata(segment_path(&d, 1)).expect("stat").len();
        assert_eq!(size, PREALLOCATED, "a new segment is its zeros");
        let mut expected = Vec::new();
        // Records of every size, some spanning blocks and chunks, synced
        // after one, two or three of them, past the preallocated end.
        for i in 0..400usize {
            let change = insert(&format!("k{i}"), &"v".repeat(i * 7 % 5000));
            wal.log(|| Ok(((), vec![change.clone()]))).expect("log");
            expected.push(change);
            if i % 3 != 1 {
                wal.sync().expect("sync");
                assert_eq!(replayed(&d, 1), expected, "after record {i}");
            }
        }
        wal.sync().expect("sync");
        assert_eq!(replayed(&d, 1), expected);
        assert!(std::fs::metadata(segment_path(&d, 1)).expect("stat").len() > PREALLOCATED, "grown");
    }
}
