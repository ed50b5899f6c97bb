//! What `cairn doctor` reports of a data directory, without changing it:
//! each file's state (whole, a torn tail a crash left, or damaged where
//! and how), whether the store opens, and what a store cut back to its
//! whole records would hold. Every check runs on a copy of the files in
//! a scratch directory, so the data directory is only read.

use std::path::{Path, PathBuf};

use cairn_domain::state::RunStatus;
use cairn_ports::{Damage, DamageKind, RunQuery, RunStore as _};

use crate::{Durability, OpenError, SEAL_FILE, SledStore, WAL_KEY, wal};

/// What examining a data directory found.
#[derive(Debug, Clone)]
pub struct Examination {
    /// Each file of the store, by name, sorted.
    pub files: Vec<FileReport>,
    /// The damage that makes the store refuse to open; `None` when it opens.
    pub damage: Option<Damage>,
    /// The runs a store holds once damaged log segments are cut back to
    /// their whole records (and the seal set aside): `None` when even that
    /// store does not open.
    pub recoverable: Option<Vec<RunReport>>,
}

impl Examination {
    /// Whether anything is damaged (a torn tail is not damage).
    pub fn damaged(&self) -> bool {
        self.damage.is_some() || self.files.iter().any(|f| matches!(f.state, FileState::Damaged { .. }))
    }
}

/// One file of the store.
#[derive(Debug, Clone)]
pub struct FileReport {
    /// Its name in the data directory (`blobs/...` inside sled's folder).
    pub name: String,
    /// Its size.
    pub bytes: u64,
    /// What was found.
    pub state: FileState,
}

/// What was found of one file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FileState {
    /// Whole: a log segment's records (`Some`), or a file checked by
    /// opening the store.
    Whole {
        /// A log segment's whole records.
        records: Option<u64>,
    },
    /// A log segment whose last write a crash interrupted: its whole
    /// records replay, the rest was never acknowledged.
    TornTail {
        /// Whole records.
        records: u64,
        /// Where they end.
        end: u64,
    },
    /// Damaged: nothing past `offset` can be trusted.
    Damaged {
        /// Where the damage starts, when a file offset says it.
        offset: Option<u64>,
        /// What is wrong.
        what: DamageKind,
        /// A log segment's whole records before the damage (recoverable).
        records: Option<u64>,
    },
}

/// A run as a store holds it.
#[derive(Debug, Clone)]
pub struct RunReport {
    /// The run's id.
    pub run: String,
    /// Its status, as the index holds it.
    pub status: RunStatus,
    /// Its events, or why loading them failed.
    pub events: Result<u64, cairn_ports::StoreError>,
}

/// Examines the store in `dir`, changing nothing there (see the module doc).
pub async fn examine(dir: &Path) -> Result<Examination, OpenError> {
    let headed = has_headers(dir)?;
    let scratch = Scratch::new(dir)?;
    let mut files = Vec::new();
    for (name, bytes) in listing(dir, Path::new(""))? {
        let state = match name.strip_prefix(wal::SEGMENT_PREFIX).and_then(|n| u64::from_str_radix(n, 16).ok())
        {
            Some(number) => {
                let reading = wal::read_segment(dir, number, headed).map_err(|e| refused(dir, e))?;
                let records = reading.records.len() as u64;
                match reading.damage {
                    Some((offset, what)) => {
                        FileState::Damaged { offset: Some(offset), what, records: Some(records) }
                    }
                    None if reading.torn => FileState::TornTail { records, end: reading.end },
                    None => FileState::Whole { records: Some(records) },
                }
            }
            None => FileState::Whole { records: None },
        };
        files.push(FileReport { name, bytes, state });
    }
    let (damage, recoverable) = match SledStore::open(&scratch.0, Durability::None, "cairn doctor") {
        Ok(store) => (None, runs(&store).await),
        Err(OpenError::Damaged(damage)) => {
            let damage = Damage {
                file: damage.file.replace(&*scratch.0.to_string_lossy(), &dir.to_string_lossy()),
                ..damage
            };
            mark(&mut files, dir, &damage);
            (Some(damage), recover(dir, &files).await?)
        }
        Err(other) => return Err(other),
    };
    Ok(Examination { files, damage, recoverable })
}

/// What a copy of the store holds once its damaged segments are cut back
/// to their whole records and the seal is set aside.
async fn recover(dir: &Path, files: &[FileReport]) -> Result<Option<Vec<RunReport>>, OpenError> {
    let scratch = Scratch::new(dir)?;
    for file in files {
        if let FileState::Damaged { offset: Some(offset), records: Some(_), .. } = file.state {
            let path = scratch.0.join(&file.name);
            let mut bytes = std::fs::read(&path).map_err(|e| io_refusal(dir, e))?;
            bytes.truncate(offset as usize);
            std::fs::write(&path, bytes).map_err(|e| io_refusal(dir, e))?;
        }
    }
    let _ = std::fs::remove_file(scratch.0.join(SEAL_FILE));
    match SledStore::open(&scratch.0, Durability::None, "cairn doctor") {
        Ok(store) => Ok(runs(&store).await),
        Err(_) => Ok(None),
    }
}

/// Marks the file `damage` names (every sled file, when sled refused).
fn mark(files: &mut [FileReport], dir: &Path, damage: &Damage) {
    for file in files.iter_mut() {
        let named = dir.join(&file.name).to_string_lossy() == damage.file.as_str();
        let sled_file = damage.what == DamageKind::Database
            && (file.name == "conf" || file.name == "db" || file.name.starts_with("snap."));
        if (named || sled_file) && !matches!(file.state, FileState::Damaged { .. }) {
            file.state =
                FileState::Damaged { offset: damage.offset, what: damage.what.clone(), records: None };
        }
    }
}

async fn runs(store: &SledStore) -> Option<Vec<RunReport>> {
    let listed = store.list(&RunQuery::default()).await.ok()?;
    let mut out = Vec::new();
    for summary in listed.runs {
        let events = store.load(&summary.run_id, 0).await.map(|run| run.events.len() as u64);
        out.push(RunReport { run: summary.run_id.to_string(), status: summary.status, events });
    }
    Some(out)
}

/// Whether the store writes log segments with headers: a segment has
/// one, or sled (opened on a copy of its own) says so.
fn has_headers(dir: &Path) -> Result<bool, OpenError> {
    let segments = wal::segments(dir).map_err(|e| refused(dir, e))?;
    for &number in &segments {
        let bytes = std::fs::read(wal::segment_file(dir, number)).map_err(|e| io_refusal(dir, e))?;
        if bytes.starts_with(wal::SEGMENT_HEADER) {
            return Ok(true);
        }
    }
    if segments.is_empty() {
        return Ok(true);
    }
    let scratch = Scratch::new(dir)?;
    let headed = sled::open(&scratch.0).ok().and_then(|db| db.get(WAL_KEY).ok().flatten()).is_some();
    Ok(headed)
}

/// The files under `dir/sub`, by name from `dir`, with their sizes, sorted.
fn listing(dir: &Path, sub: &Path) -> Result<Vec<(String, u64)>, OpenError> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir.join(sub)).map_err(|e| io_refusal(dir, e))?.flatten() {
        let name = sub.join(entry.file_name());
        let meta = entry.metadata().map_err(|e| io_refusal(dir, e))?;
        if meta.is_dir() {
            out.extend(listing(dir, &name)?);
        } else if entry.file_name() != crate::HOLDER_FILE {
            out.push((name.to_string_lossy().into_owned(), meta.len()));
        }
    }
    out.sort();
    Ok(out)
}

fn refused(dir: &Path, e: cairn_ports::StoreError) -> OpenError {
    OpenError::Corrupt { path: dir.to_path_buf(), reason: e.to_string() }
}

fn io_refusal(dir: &Path, e: std::io::Error) -> OpenError {
    OpenError::Corrupt { path: dir.to_path_buf(), reason: e.to_string() }
}

/// A copy of a data directory's files, removed when dropped.
struct Scratch(PathBuf);

impl Scratch {
    fn new(dir: &Path) -> Result<Self, OpenError> {
        static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let scratch = std::env::temp_dir().join(format!("cairn-doctor-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&scratch);
        let copy = Self(scratch);
        for (name, _) in listing(dir, Path::new(""))? {
            let to = copy.0.join(&name);
            if let Some(parent) = to.parent() {
                std::fs::create_dir_all(parent).map_err(|e| io_refusal(dir, e))?;
            }
            std::fs::copy(dir.join(&name), &to).map_err(|e| io_refusal(dir, e))?;
        }
        std::fs::create_dir_all(&copy.0).map_err(|e| io_refusal(dir, e))?;
        Ok(copy)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
