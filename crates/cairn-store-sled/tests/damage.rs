//! Damaged store files never lose data silently: the battery flips
//! bytes, cuts files short and zeroes ranges at seeded offsets of the
//! write-ahead log and sled's files, of a store whose process died and of
//! one closed cleanly, and opens each damaged copy. Every outcome is one
//! of: refused with an error that names the damage (at open, or when the
//! run is loaded), or harmless (every acknowledged event is there, the
//! listing as it was). A silent loss (the store opens and shows less or
//! other than it acknowledged) fails the test.
//!
//! `CAIRN_DAMAGE_OFFSETS` sets how many offsets are tried (default 240,
//! half on each store); `cargo xtask faults` runs 1,200.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use cairn_domain::id::RunId;
use cairn_domain::state::{Event, EventKind, RunStatus, Timestamp, TokenUsage};
use cairn_ports::{NewRun, RunQuery, RunStore, StoreError};
use cairn_store_sled::{Durability, OpenError, SledStore};

fn dir(name: &str) -> PathBuf {
    let d = Path::new(env!("CARGO_TARGET_TMPDIR")).join("damage").join(name);
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).expect("dir");
    d
}

fn new_run(id: &str) -> NewRun {
    cairn_testkit::store_suite::new_run(id, 1)
}

fn usage(seq: u64) -> Event {
    Event {
        seq,
        at: Timestamp(seq),
        actor: "t".into(),
        kind: EventKind::UsageRecorded {
            path: cairn_domain::state::StepPath::new(format!("step{}", seq % 7)),
            attempt: 1,
            agent: None,
            model: format!("model-{}", seq % 3),
            usage: TokenUsage {
                prompt_tokens: seq,
                completion_tokens: 1,
                estimated: false,
                cost_micro_usd: 0,
            },
        },
    }
}

/// Appends `appends` batches of one to three events to `run`, from
/// `after`; with `end`, the run completes. Returns the last sequence number.
async fn grow(store: &SledStore, run: &str, after: u64, appends: u64, end: bool) -> u64 {
    let id = RunId::new(run).expect("id");
    let mut last = after;
    for i in 0..appends {
        let batch: Vec<Event> = (last + 1..=last + 1 + i % 3).map(usage).collect();
        store.append(&id, last, &batch).await.expect("append");
        last += batch.len() as u64;
    }
    if end {
        let done = Event {
            seq: last + 1,
            at: Timestamp(last + 1),
            actor: "t".into(),
            kind: EventKind::RunCompleted,
        };
        store.append(&id, last, &[done]).await.expect("complete");
        last += 1;
    }
    last
}

/// What a store shows: each run's status and every event.
type Truth = BTreeMap<String, (RunStatus, Vec<Event>)>;

async fn truth(store: &SledStore) -> Result<Truth, StoreError> {
    let mut out = Truth::new();
    for run in store.list(&RunQuery::default()).await?.runs {
        let events = store.load(&run.run_id, 0).await?.events;
        out.insert(run.run_id.to_string(), (run.status, events));
    }
    Ok(out)
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime")
}

/// A store with two sessions behind it: the first closed cleanly (sled
/// flushed, sealed), the second with checkpoints of a small log.
/// `crash`: the second session's process dies (no destructor runs: its
/// log is left behind, sled unflushed since its last checkpoint).
fn build(d: &Path, crash: bool) -> Truth {
    runtime().block_on(async {
        let r2 = {
            let store = SledStore::open(d, Durability::Sync, "battery").expect("open");
            for run in ["r1", "r2"] {
                store.create(new_run(run)).await.expect("create");
            }
            grow(&store, "r1", 1, 40, true).await;
            grow(&store, "r2", 1, 30, false).await
        };
        let store = SledStore::open(d, Durability::Sync, "battery").expect("reopen").segment_bytes(24 * 1024);
        store.create(new_run("r3")).await.expect("create");
        let r2 = grow(&store, "r2", r2, 30, false).await;
        grow(&store, "r3", 1, 25, true).await;
        grow(&store, "r2", r2, 8, false).await;
        let truth = truth(&store).await.expect("the store reads back");
        if crash {
            // As kill -9 leaves it: what was written stays, nothing more happens.
            std::mem::forget(store);
        }
        truth
    })
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("dir");
    for entry in std::fs::read_dir(from).expect("read dir").flatten() {
        let (src, dst) = (entry.path(), to.join(entry.file_name()));
        if entry.file_type().expect("type").is_dir() {
            copy_dir(&src, &dst);
        } else if entry.file_name() != "holder" {
            std::fs::copy(&src, &dst).expect("copy");
        }
    }
}

/// The files damage is done to, relative to the store, with the part of
/// each that offsets are drawn from: what is written in it and a block
/// of the padding after.
fn targets(d: &Path) -> Vec<(PathBuf, u64)> {
    let mut out = Vec::new();
    let mut walk = vec![d.to_path_buf()];
    while let Some(at) = walk.pop() {
        for entry in std::fs::read_dir(&at).expect("read dir").flatten() {
            let path = entry.path();
            let name = entry.file_name().to_string_lossy().into_owned();
            if entry.file_type().expect("type").is_dir() {
                walk.push(path);
                continue;
            }
            let len = entry.metadata().expect("stat").len();
            let padding = if name.starts_with("wal-") { 0xa5 } else { 0 };
            let span = written(&path, padding) + 4096;
            if span > 0 && name != "holder" {
                out.push((path.strip_prefix(d).expect("inside").to_path_buf(), span.min(len)));
            }
        }
    }
    out.sort();
    out
}

/// Where what is written in a file ends: past it, only `padding` (a log
/// segment's filler, the zeros sled's files are grown by).
fn written(path: &Path, padding: u8) -> u64 {
    let bytes = std::fs::read(path).expect("read");
    bytes.iter().rposition(|&b| b != padding).map_or(0, |p| p as u64 + 1)
}

/// splitmix64: seeded, so a failure names the trial that reproduces it.
struct Seeded(u64);

impl Seeded {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

#[derive(Debug, Clone, Copy)]
enum Damage {
    Flip { offset: u64, mask: u8 },
    Cut { offset: u64 },
    Zero { offset: u64, len: u64 },
}

impl Damage {
    fn draw(rng: &mut Seeded, span: u64) -> Self {
        let offset = rng.below(span);
        match rng.below(3) {
            0 => Self::Flip { offset, mask: 1 << rng.below(8) },
            1 => Self::Cut { offset },
            _ => Self::Zero { offset, len: 1 + rng.below(64) },
        }
    }

    fn name(self) -> &'static str {
        match self {
            Self::Flip { .. } => "flip",
            Self::Cut { .. } => "cut",
            Self::Zero { .. } => "zero",
        }
    }

    fn apply(self, file: &Path) {
        let mut bytes = std::fs::read(file).expect("read");
        match self {
            Self::Flip { offset, mask } => bytes[offset as usize] ^= mask,
            Self::Cut { offset } => bytes.truncate(offset as usize),
            Self::Zero { offset, len } => {
                let end = bytes.len().min((offset + len) as usize);
                bytes[offset as usize..end].fill(0);
            }
        }
        std::fs::write(file, bytes).expect("write");
    }
}

/// How one damaged copy fared.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Outcome {
    /// Open (or the load of a run) refused, naming the damage.
    Refused,
    /// Everything acknowledged is there.
    Harmless,
    /// The store opened and showed less or other than it acknowledged.
    SilentLoss,
}

fn open_damaged(d: &Path, truth: &Truth) -> (Outcome, String) {
    let store = match SledStore::open(d, Durability::Sync, "battery") {
        Ok(store) => store,
        Err(e @ (OpenError::Damaged(_) | OpenError::Corrupt { .. })) => {
            return (Outcome::Refused, e.to_string());
        }
        Err(other) => panic!("{}: unexpected {other}", d.display()),
    };
    match runtime().block_on(truth_of(&store)) {
        Err(e @ (StoreError::Damaged(_) | StoreError::Corrupt(_))) => (Outcome::Refused, e.to_string()),
        Err(other) => panic!("{}: unexpected {other}", d.display()),
        Ok(shown) if &shown == truth => (Outcome::Harmless, String::new()),
        Ok(shown) => {
            let said: Vec<String> = shown
                .iter()
                .map(|(run, (status, events))| format!("{run}: {status:?}, {} events", events.len()))
                .collect();
            (Outcome::SilentLoss, said.join("; "))
        }
    }
}

async fn truth_of(store: &SledStore) -> Result<Truth, StoreError> {
    truth(store).await
}

/// Runs the battery on one kind of store; returns counts by outcome and
/// prints them by file and kind of damage.
fn battery(kind: &str, crash: bool, trials: u64, seed: u64) -> BTreeMap<Outcome, u64> {
    let base = dir(&format!("{kind}-base"));
    let truth = build(&base, crash);
    let files = targets(&base);
    assert!(!files.is_empty());
    if crash {
        assert!(
            files.iter().any(|(f, _)| f.to_string_lossy().starts_with("wal-")),
            "a log is left: {files:?}"
        );
    }
    let mut rng = Seeded(seed);
    let mut counts = BTreeMap::new();
    let mut by_file: BTreeMap<(String, &str), [u64; 3]> = BTreeMap::new();
    let mut losses = Vec::new();
    let mut said_of = BTreeMap::new();
    for trial in 0..trials {
        let (file, span) = &files[rng.below(files.len() as u64) as usize];
        let damage = Damage::draw(&mut rng, *span);
        let copy = dir(&format!("{kind}-trial"));
        copy_dir(&base, &copy);
        damage.apply(&copy.join(file));
        let damaged = std::fs::read(copy.join(file)).expect("read");
        let (outcome, said) = open_damaged(&copy, &truth);
        if outcome == Outcome::Refused {
            // The damaged file is kept as it was, for a person to look at.
            let kept = std::fs::read(copy.join(file)).ok();
            if file.to_string_lossy().starts_with("wal-") {
                assert_eq!(
                    kept.as_deref(),
                    Some(&damaged[..]),
                    "trial {trial}: {file:?} was changed or deleted: {said}"
                );
            }
        }
        if outcome == Outcome::Refused {
            said_of.entry(family(file)).or_insert(said.clone());
        }
        if outcome == Outcome::SilentLoss {
            losses.push(format!("trial {trial} (seed {seed}): {damage:?} of {}: {said}", file.display()));
        }
        *counts.entry(outcome).or_default() += 1;
        let family = if file.to_string_lossy().starts_with("wal-") {
            "wal-*".to_owned()
        } else {
            file.display().to_string()
        };
        by_file.entry((family, damage.name())).or_default()[outcome as usize] += 1;
    }
    eprintln!("{kind} store, {trials} offsets (seed {seed}):");
    eprintln!("  {:<12} {:<5} {:>7} {:>8} {:>7}", "file", "kind", "refused", "harmless", "silent");
    for ((file, damage), [refused, harmless, silent]) in &by_file {
        eprintln!("  {file:<12} {damage:<5} {refused:>7} {harmless:>8} {silent:>7}");
    }
    for (file, said) in &said_of {
        eprintln!("  refused ({file}), e.g.: {said}");
    }
    assert!(losses.is_empty(), "silent losses:\n{}", losses.join("\n"));
    counts
}

/// Files of one kind report together: every log segment is `wal-*`,
/// every sled snapshot `snap.*`.
fn family(file: &Path) -> String {
    let name = file.display().to_string();
    if name.starts_with("wal-") {
        "wal-*".into()
    } else if name.starts_with("snap.") {
        "snap.*".into()
    } else {
        name
    }
}

fn trials() -> u64 {
    std::env::var("CAIRN_DAMAGE_OFFSETS").ok().and_then(|n| n.parse().ok()).unwrap_or(240)
}

#[test]
fn damage_to_a_crashed_store_is_refused_or_harmless() {
    let counts = battery("crashed", true, trials() / 2, 17);
    eprintln!("crashed: {counts:?}");
}

#[test]
fn damage_to_a_closed_store_is_refused_or_harmless() {
    let counts = battery("closed", false, trials() - trials() / 2, 71);
    eprintln!("closed: {counts:?}");
}
