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
//! A segment's file is filled with a filler byte ([`FILL`]) before records
//! go into it ([`PREALLOCATED`] at first, more as it fills), and records
//! overwrite the filler: a sync then writes data into blocks the file
//! already has, with no new file size or block map (except when the log
//! outgrows the filler, which is then synced before records go into it),
//! so it costs one write and a cache flush rather than also an inode write
//! (on ext4 the difference is close to half of each sync). Where the file
//! system allows it, the segment is written with direct I/O (`O_DIRECT`)
//! in whole 4 KiB blocks, the block holding the end of the log rewritten
//! with each sync; elsewhere through the page cache.
//!
//! A segment starts with a header ([`SEGMENT_HEADER`]), written and synced
//! under a temporary name that is then renamed: a segment under its own
//! name always had its header. Then come records, each `[magic u32]
//! [length u32][crc32 u32][payload]` (little-endian; the checksum covers
//! the length and the payload), the payload `[number u64][synced u64]
//! [previous crc u32]` then one or more changes: `[1][tree][key length
//! u32][key][value length u32][value]` for an insert, `[2][tree][key length
//! u32][key]` for a removal. `number` counts the segment's records from 1,
//! `previous crc` is the checksum of the record before (0 for the first),
//! so records chain; `synced` is how far the log was durable (acknowledged)
//! when the record was logged. A record is the changes of one store
//! operation, so replay applies all of an operation or none of it.
//!
//! Reading tells a torn tail from damage. The log ends where the filler
//! starts. A crash can interrupt only the last sync, whose sectors land
//! or not: a record whose header landed but one of whose whole 512-byte
//! sectors is still filler, or filler where a header should start, is a
//! torn tail, never acknowledged, and dropped. Anything else — a checksum
//! that fails in bytes that all landed, filler replaced by other bytes, a
//! record out of order or off the chain, the file ending inside a record,
//! a segment without its header, or a good record after the end whose
//! `synced` says the end was acknowledged — is damage: [`read`] reports
//! where, and the store refuses to open, replaying and deleting nothing.
//! Segments written before the header existed (zeros for filler, records
//! `[length][crc32][changes]`) are read as before, except that a bad record
//! followed by a good one is damage.
//! Changes are whole values and removals of single keys, so replaying a
//! segment over a sled that already holds some of it ends in the same state.

use std::fs::File;
use std::os::unix::fs::FileExt as _;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use cairn_ports::{DamageKind, StoreError};
use sled::IVec;

use crate::lock;

/// The size past which a segment is closed and sled checkpointed, unless
/// the store is told otherwise ([`crate::SledStore::segment_bytes`]).
pub const SEGMENT_BYTES: u64 = 32 * 1024 * 1024;

/// Filler a new segment's file starts with; whenever the log reaches the
/// file's end, it grows by as much as it has (at most [`MOST_GROWTH`]).
pub const PREALLOCATED: u64 = 256 * 1024;

/// The most filler one growth of a segment writes (while the sync that
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
/// Magic, length and checksum before each record's payload.
const HEADER: usize = 12;
/// The payload's number, synced offset and previous checksum, before its changes.
const PREFIX: usize = 20;
/// The first bytes of every record: where a record starts.
const MAGIC: [u8; 4] = [0xc4, 0x1b, 0x5e, 0x7a];
/// What a segment's file holds where no record has been written.
pub(crate) const FILL: u8 = 0xa5;
/// The first bytes of a segment: its format.
pub(crate) const SEGMENT_HEADER: &[u8; 16] = b"cairn-wal 2\n\0\0\0\0";
/// What a torn write loses at the least: a sector lands whole or not at all.
const SECTOR: usize = 512;
/// Length and checksum before each record of a segment without a header.
const LEGACY_HEADER: usize = 8;
/// The name a segment is created under before it is renamed to its own.
const NEW_SEGMENT: &str = "wal-new";

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
    /// Records logged in this segment.
    number: u64,
    /// The checksum of the last record logged.
    prev: u32,
    /// Set once a write or sync failed: what follows a half-written record
    /// could not be replayed, so nothing more is written.
    broken: Option<String>,
}

impl Logged {
    /// A new segment's log: its header, already on disk.
    fn empty() -> Self {
        let header = SEGMENT_HEADER.len() as u64;
        Self {
            len: header,
            synced: header,
            tail: SEGMENT_HEADER.to_vec(),
            tail_at: 0,
            buf: Vec::new(),
            number: 0,
            prev: 0,
            broken: None,
        }
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
    /// Bytes of the file that exist (filler past the log's end).
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

/// What reading a segment found: its whole records up to the end, and
/// whether the end is clean, a torn tail, or damage.
#[derive(Debug)]
pub(crate) struct Reading {
    /// The changes of each whole record, in order, up to the end or the damage.
    pub records: Vec<Vec<Change>>,
    /// Where the whole records end.
    pub end: u64,
    /// Bytes past the end that a crash left half-written: dropped, never
    /// acknowledged.
    pub torn: bool,
    /// Damage no crash leaves: where it starts and what it is.
    pub damage: Option<(u64, DamageKind)>,
}

/// Reads segment `number` in `dir` (see [`read`]).
pub(crate) fn read_segment(dir: &Path, number: u64, headed: bool) -> Result<Reading, StoreError> {
    let bytes = std::fs::read(segment_path(dir, number)).map_err(|e| io("reading a segment", e))?;
    Ok(read(&bytes, headed))
}

/// The path of segment `number` in `dir`, to name it in a report.
pub(crate) fn segment_file(dir: &Path, number: u64) -> PathBuf {
    segment_path(dir, number)
}

/// Reads a segment's bytes. `headed`: the store writes segments with a
/// header, so one without is damage rather than an older segment.
pub(crate) fn read(bytes: &[u8], headed: bool) -> Reading {
    if bytes.starts_with(SEGMENT_HEADER) {
        read_chained(bytes)
    } else if headed {
        Reading { records: Vec::new(), end: 0, torn: false, damage: Some((0, DamageKind::NoHeader)) }
    } else {
        read_legacy(bytes)
    }
}

/// A record as parsed at an offset.
enum Parsed {
    /// Whole, its checksum good.
    Whole { changes: Vec<Change>, number: u64, synced: u64, prev: u32, crc: u32, next: usize },
    /// Its checksum is good but its changes do not read.
    Unreadable,
    /// Its magic is there, but the file ends inside it.
    CutShort,
    /// Its magic is there, but its checksum fails.
    Failing { end: usize },
    /// No record starts here.
    None,
}

fn parse(bytes: &[u8], at: usize) -> Parsed {
    let Some(header) = bytes.get(at..at.saturating_add(HEADER)) else {
        return if bytes.get(at..).is_some_and(|rest| MAGIC.starts_with(rest) && !rest.is_empty()) {
            Parsed::CutShort
        } else {
            Parsed::None
        };
    };
    if header[..4] != MAGIC {
        return Parsed::None;
    }
    let len = u32::from_le_bytes([header[4], header[5], header[6], header[7]]) as usize;
    let crc = u32::from_le_bytes([header[8], header[9], header[10], header[11]]);
    let start = at + HEADER;
    let Some(payload) = start.checked_add(len).and_then(|end| bytes.get(start..end)) else {
        return Parsed::CutShort;
    };
    if checksum(&header[4..8], payload) != crc {
        return Parsed::Failing { end: start + len };
    }
    let Some((prefix, changes)) = payload.split_at_checked(PREFIX) else { return Parsed::Unreadable };
    let number = u64::from_le_bytes(prefix[..8].try_into().unwrap_or_default());
    let synced = u64::from_le_bytes(prefix[8..16].try_into().unwrap_or_default());
    let prev = u32::from_le_bytes(prefix[16..].try_into().unwrap_or_default());
    match decode(changes) {
        Some(changes) if !changes.is_empty() => {
            Parsed::Whole { changes, number, synced, prev, crc, next: start + len }
        }
        _ => Parsed::Unreadable,
    }
}

/// A record's checksum: of its length's bytes and its payload.
fn checksum(len: &[u8], payload: &[u8]) -> u32 {
    let mut hasher = crc32fast::Hasher::new();
    hasher.update(len);
    hasher.update(payload);
    hasher.finalize()
}

fn read_chained(bytes: &[u8]) -> Reading {
    let mut reading = Reading { records: Vec::new(), end: 0, torn: false, damage: None };
    let (mut at, mut number, mut prev) = (SEGMENT_HEADER.len(), 0u64, 0u32);
    let stop = loop {
        match parse(bytes, at) {
            Parsed::Whole { changes, number: n, synced, prev: p, crc, next } => {
                if n != number + 1 || p != prev || synced > at as u64 {
                    break Some(DamageKind::OutOfOrder);
                }
                reading.records.push(changes);
                (at, number, prev) = (next, n, crc);
            }
            Parsed::Unreadable => break Some(DamageKind::BadRecord),
            Parsed::CutShort => break Some(DamageKind::CutShort),
            Parsed::Failing { end } => break (!torn_inside(bytes, at, end)).then_some(DamageKind::BadRecord),
            Parsed::None => {
                let next_header = &bytes[at..bytes.len().min(at + HEADER)];
                break (!next_header.iter().all(|&b| b == FILL)).then_some(DamageKind::BadRecord);
            }
        }
    };
    reading.end = at as u64;
    reading.damage = stop.map(|what| (at as u64, what));
    if reading.damage.is_none() && bytes[at..].iter().any(|&b| b != FILL) {
        // Past the end: a torn write's sectors, or damage after it. A
        // whole record there that says the end was acknowledged is damage.
        if acknowledged_later(bytes, at) {
            reading.damage = Some((at as u64, DamageKind::BadRecord));
        } else {
            reading.torn = true;
        }
    }
    reading
}

/// Whether the record from `at` to `end` (whose header landed) has a
/// whole sector past its header that is still filler: the write that
/// carried it was torn.
fn torn_inside(bytes: &[u8], at: usize, end: usize) -> bool {
    let first = (at + HEADER).div_ceil(SECTOR) * SECTOR;
    (first..end).step_by(SECTOR).any(|s| bytes[s..bytes.len().min(s + SECTOR)].iter().all(|&b| b == FILL))
}

/// Whether a whole record after `end` says the log was durable past `end`.
fn acknowledged_later(bytes: &[u8], end: usize) -> bool {
    let mut from = end + 1;
    while let Some(found) = bytes.get(from..).and_then(|rest| rest.windows(4).position(|w| w == MAGIC)) {
        let at = from + found;
        if let Parsed::Whole { synced, .. } = parse(bytes, at)
            && synced > end as u64
        {
            return true;
        }
        from = at + 1;
    }
    false
}

/// A segment written before segments had headers: records until the
/// zeros; a bad record is the end, unless a good one follows it.
fn read_legacy(bytes: &[u8]) -> Reading {
    let mut records = Vec::new();
    let mut at = 0;
    while let Some(changes) = legacy_record_at(bytes, &mut at) {
        records.push(changes);
    }
    let end = at;
    let rest = &bytes[end..];
    let damage = if rest.iter().all(|&b| b == 0) {
        None
    } else {
        (end + 1..bytes.len())
            .any(|mut p| legacy_record_at(bytes, &mut p).is_some())
            .then_some(DamageKind::BadRecord)
    };
    let torn = damage.is_none() && rest.iter().any(|&b| b != 0);
    Reading { records, end: end as u64, torn, damage: damage.map(|what| (end as u64, what)) }
}

/// The changes of the older record at `*at`, moving `*at` past it; `None`
/// at the end, or where the record is cut short or damaged.
fn legacy_record_at(bytes: &[u8], at: &mut usize) -> Option<Vec<Change>> {
    let header = bytes.get(*at..at.checked_add(LEGACY_HEADER)?)?;
    let len = u32::from_le_bytes(header[..4].try_into().ok()?) as usize;
    let crc = u32::from_le_bytes(header[4..].try_into().ok()?);
    let start = *at + LEGACY_HEADER;
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

/// Encodes `changes` as record `number` of its segment, logged when the
/// log was durable up to `synced`, after the record whose checksum is
/// `prev`; returns its checksum.
fn encode(changes: &[Change], number: u64, synced: u64, prev: u32, buf: &mut Vec<u8>) -> u32 {
    fn sized(buf: &mut Vec<u8>, bytes: &[u8]) {
        buf.extend_from_slice(&(bytes.len() as u32).to_le_bytes());
        buf.extend_from_slice(bytes);
    }
    buf.clear();
    buf.extend_from_slice(&MAGIC);
    buf.extend_from_slice(&[0; HEADER - 4]);
    buf.extend_from_slice(&number.to_le_bytes());
    buf.extend_from_slice(&synced.to_le_bytes());
    buf.extend_from_slice(&prev.to_le_bytes());
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
    let len = ((buf.len() - HEADER) as u32).to_le_bytes();
    buf[4..8].copy_from_slice(&len);
    let crc = checksum(&len, &buf[HEADER..]);
    buf[8..HEADER].copy_from_slice(&crc.to_le_bytes());
    crc
}

impl Writer {
    /// Makes a new segment durable in `dir`: its file, its header and
    /// [`PREALLOCATED`] bytes of filler, written under a temporary name
    /// and renamed, then its directory entry. Direct I/O where the file
    /// system takes it (opening and writing the filler with it succeed),
    /// the page cache elsewhere.
    fn create(dir: &Path, number: u64, aligned: Box<Aligned>) -> Result<Self, StoreError> {
        let new = dir.join(NEW_SEGMENT);
        let _ = std::fs::remove_file(&new);
        let create = |direct: bool, aligned: Box<Aligned>| -> Result<Self, std::io::Error> {
            let mut options = std::fs::OpenOptions::new();
            options.create_new(true).write(true);
            #[cfg(target_os = "linux")]
            if direct {
                use std::os::unix::fs::OpenOptionsExt as _;
                options.custom_flags(libc::O_DIRECT);
            }
            let mut writer = Self { number, file: options.open(&new)?, direct, capacity: 0, aligned };
            writer.grow(PREALLOCATED)?;
            writer.aligned.0[..SEGMENT_HEADER.len()].copy_from_slice(SEGMENT_HEADER);
            writer.file.write_all_at(&writer.aligned.0[..BLOCK], 0)?;
            Ok(writer)
        };
        let writer = match create(cfg!(target_os = "linux"), aligned) {
            Ok(writer) => writer,
            Err(_) if cfg!(target_os = "linux") => {
                let _ = std::fs::remove_file(&new);
                create(false, Box::new(Aligned([FILL; CHUNK]))).map_err(|e| io("creating a segment", e))?
            }
            Err(e) => return Err(io("creating a segment", e)),
        };
        writer.file.sync_all().map_err(|e| io("syncing a new segment", e))?;
        std::fs::rename(&new, segment_path(dir, number)).map_err(|e| io("naming a new segment", e))?;
        File::open(dir).and_then(|d| d.sync_all()).map_err(|e| io("syncing the data directory", e))?;
        Ok(writer)
    }

    /// Fills the file with [`FILL`] up to at least `size` bytes (a
    /// multiple of [`CHUNK`]). Not synced.
    fn grow(&mut self, size: u64) -> Result<(), std::io::Error> {
        let size = size.div_ceil(CHUNK as u64) * CHUNK as u64;
        self.aligned.0.fill(FILL);
        while self.capacity < size {
            self.file.write_all_at(&self.aligned.0, self.capacity)?;
            self.capacity += CHUNK as u64;
        }
        Ok(())
    }

    /// Writes the log's end `tail` (which starts at the block boundary
    /// `at`), growing the file first if it reaches past it; then syncs.
    /// With direct I/O the last block is padded with filler.
    fn write_tail(&mut self, tail: &[u8], at: u64) -> Result<(), StoreError> {
        let end = at + tail.len() as u64;
        if end > self.capacity {
            let more = self.capacity.clamp(CHUNK as u64, MOST_GROWTH);
            self.grow(end.max(self.capacity + more)).map_err(|e| io("growing a segment", e))?;
            // The new size is durable before records go past the old one,
            // so a file that ends inside a record is damage, never a crash.
            self.file.sync_data().map_err(|e| io("syncing a grown segment", e))?;
        }
        for (i, piece) in tail.chunks(CHUNK).enumerate() {
            let offset = at + (i * CHUNK) as u64;
            let written = if self.direct {
                let padded = piece.len().div_ceil(BLOCK) * BLOCK;
                self.aligned.0[..piece.len()].copy_from_slice(piece);
                self.aligned.0[piece.len()..padded].fill(FILL);
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
        let writer = Writer::create(dir, number, Box::new(Aligned([FILL; CHUNK])))?;
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
        log.number += 1;
        log.prev = encode(&changes, log.number, log.synced, log.prev, &mut log.buf);
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
        let aligned = std::mem::replace(&mut writer.aligned, Box::new(Aligned([FILL; CHUNK])));
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
        let reading = read_segment(d, number, true).expect("reads");
        assert_eq!(reading.damage, None);
        reading.records.into_iter().flatten().collect()
    }

    /// A segment of three synced records, the third spanning sectors;
    /// returns its bytes and where each record starts.
    fn three_records(d: &Path) -> (Vec<u8>, Vec<usize>) {
        let wal = Wal::create(d, 1).expect("create");
        let mut starts = Vec::new();
        for change in [insert("a", "1"), insert("b", "2"), insert("c", &"x".repeat(2000))] {
            starts.push(lock(&wal.log).len as usize);
            wal.log(|| Ok(((), vec![change]))).expect("log");
            wal.sync().expect("sync");
        }
        (std::fs::read(segment_path(d, 1)).expect("read"), starts)
    }

    fn kinds(bytes: &[u8]) -> (usize, bool, Option<(u64, DamageKind)>) {
        let reading = read(bytes, true);
        (reading.records.len(), reading.torn, reading.damage)
    }

    #[test]
    fn a_torn_tail_is_dropped_and_damage_is_told_from_it() {
        let d = dir("torn");
        let (whole, starts) = three_records(&d);
        assert_eq!(kinds(&whole), (3, false, None));
        let last = starts[2];
        // A crash in the last sync: the sector after its header never landed.
        let mut torn = whole.clone();
        let sector = (last + HEADER).div_ceil(SECTOR) * SECTOR;
        torn[sector..sector + SECTOR].fill(FILL);
        assert_eq!(kinds(&torn), (2, true, None));
        // ... or none of it landed: the log ends where it would have started.
        let mut unlanded = whole.clone();
        let end = (last + HEADER + PREFIX + 2011).div_ceil(SECTOR) * SECTOR;
        unlanded[last..end].fill(FILL);
        assert_eq!(kinds(&unlanded), (2, false, None));
        // A flipped byte in a record that landed whole: damage, at its start.
        let mut flipped = whole.clone();
        flipped[last + 100] ^= 0x01;
        assert_eq!(kinds(&flipped), (2, false, Some((last as u64, DamageKind::BadRecord))));
        // A flip in the middle record: damage, though good records follow.
        let mut middle = whole.clone();
        middle[starts[1] + HEADER + 3] ^= 0x40;
        assert_eq!(kinds(&middle), (1, false, Some((starts[1] as u64, DamageKind::BadRecord))));
        // Zeros over a record's header: no crash writes zeros.
        let mut zeroed = whole.clone();
        zeroed[starts[1]..starts[1] + 4].fill(0);
        assert_eq!(kinds(&zeroed), (1, false, Some((starts[1] as u64, DamageKind::BadRecord))));
        // The file cut inside a record.
        assert_eq!(kinds(&whole[..last + 50]), (2, false, Some((last as u64, DamageKind::CutShort))));
        // Cut in the filler, or a byte of filler damaged: nothing is lost.
        let data_end = last + HEADER + PREFIX + 2 + 4 + 1 + 4 + 2000;
        assert_eq!(kinds(&whole[..data_end + 100]), (3, false, None));
        let mut filler = whole.clone();
        filler[data_end + 5000] ^= 0xff;
        assert_eq!(kinds(&filler), (3, true, None));
        // A record moved before its turn.
        let mut swapped = whole[..starts[1]].to_vec();
        swapped.extend_from_slice(&whole[starts[2]..data_end]);
        swapped.resize(whole.len(), FILL);
        assert_eq!(kinds(&swapped), (1, false, Some((starts[1] as u64, DamageKind::OutOfOrder))));
        // A segment without its header, zeroed or empty.
        for headless in [vec![0; whole.len()], Vec::new()] {
            assert_eq!(kinds(&headless), (0, false, Some((0, DamageKind::NoHeader))));
        }
    }

    #[test]
    fn a_good_record_that_says_the_end_was_acknowledged_is_damage() {
        let d = dir("acknowledged");
        let (whole, starts) = three_records(&d);
        // The second record's first sector reads as never landed, but the
        // third, logged after the second was synced, landed.
        let mut hidden = whole.clone();
        hidden[starts[1]..starts[2]].fill(FILL);
        assert_eq!(kinds(&hidden), (1, false, Some((starts[1] as u64, DamageKind::BadRecord))));
    }

    #[test]
    fn segments_written_before_headers_still_replay() {
        // [length][crc32][changes], zeros after: as older stores wrote them.
        let mut old = Vec::new();
        let mut starts = Vec::new();
        for change in [insert("a", "1"), insert("b", "2")] {
            let mut payload = Vec::new();
            encode(&[change], 1, 0, 0, &mut payload);
            let changes = &payload[HEADER + PREFIX..];
            starts.push(old.len());
            old.extend_from_slice(&(changes.len() as u32).to_le_bytes());
            old.extend_from_slice(&crc32fast::hash(changes).to_le_bytes());
            old.extend_from_slice(changes);
        }
        old.resize(4096, 0);
        let reading = read(&old, false);
        assert_eq!((reading.records.len(), reading.damage), (2, None));
        assert_eq!(read(&old, true).damage, Some((0, DamageKind::NoHeader)), "a store that writes headers");
        // A torn last record is dropped; a bad first one before a good one is damage.
        let mut torn = old.clone();
        torn[starts[1] + 9] ^= 1;
        assert_eq!((read(&torn, false).records.len(), read(&torn, false).damage), (1, None));
        let mut bad = old.clone();
        bad[starts[0] + 9] ^= 1;
        assert_eq!(read(&bad, false).damage, Some((0, DamageKind::BadRecord)));
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
    fn records_synced_a_few_at_a_time_replay_whole_past_the_preallocated_filler() {
        let d = dir("grow");
        let wal = Wal::create(&d, 1).expect("create");
        let size = std::fs::metadata(segment_path(&d, 1)).expect("stat").len();
        assert_eq!(size, PREALLOCATED, "a new segment is its filler");
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
