//! The sled store passes the `RunStore` conformance suite, keeps what it
//! committed across reopening, and refuses what it cannot use.

use std::path::{Path, PathBuf};

use cairn_domain::id::RunId;
use cairn_domain::state::{Event, EventKind, Timestamp, TokenUsage};
use cairn_ports::{NewRun, RunQuery, RunStore};
use cairn_store_sled::{Durability, OpenError, SledStore};

cairn_testkit::run_store_suite!(cairn_store_sled::SledStore::temporary().expect("temporary store"));
cairn_testkit::run_token_store_suite!(cairn_store_sled::SledStore::temporary().expect("temporary store"));
cairn_testkit::run_workflow_store_suite!(cairn_store_sled::SledStore::temporary().expect("temporary store"));

fn dir(name: &str) -> PathBuf {
    let d = Path::new(env!("CARGO_TARGET_TMPDIR")).join("sled").join(name);
    let _ = std::fs::remove_dir_all(&d);
    d
}

fn new_run(id: &str) -> NewRun {
    cairn_testkit::store_suite::new_run(id, 1)
}

#[tokio::test]
async fn committed_events_survive_reopening() {
    let d = dir("reopen");
    {
        let store = SledStore::open(&d, Durability::Sync, "test (pid 1)").expect("open");
        store.create(new_run("r1")).await.expect("create");
        let started = Event { seq: 2, at: Timestamp(2), actor: "t".into(), kind: EventKind::RunStarted };
        store.append(&RunId::new("r1").expect("id"), 1, &[started]).await.expect("append");
    }
    let store = SledStore::open(&d, Durability::Sync, "test (pid 1)").expect("reopen");
    let run = store.load(&RunId::new("r1").expect("id"), 0).await.expect("load");
    assert_eq!(run.events.len(), 2);
    assert_eq!(
        store.list(&RunQuery::default()).await.expect("list").runs[0].status,
        cairn_domain::state::RunStatus::Running
    );
}

#[tokio::test]
async fn a_second_opener_is_told_who_holds_the_store() {
    let d = dir("locked");
    let _first = SledStore::open(&d, Durability::Sync, "test (pid 1)").expect("open");
    match SledStore::open(&d, Durability::Sync, "test (pid 1)") {
        Err(OpenError::Locked { holder, .. }) => assert!(holder.contains("pid"), "{holder}"),
        Err(other) => panic!("expected Locked, got {other}"),
        Ok(_) => panic!("a second handle opened a held store"),
    }
}

#[tokio::test]
async fn foreign_and_damaged_directories_are_refused() {
    let foreign = dir("foreign");
    std::fs::create_dir_all(&foreign).expect("dir");
    std::fs::write(foreign.join("notes.txt"), "my files").expect("write");
    assert!(matches!(SledStore::open(&foreign, Durability::Sync, "test"), Err(OpenError::Foreign(_))));
    assert_eq!(std::fs::read_to_string(foreign.join("notes.txt")).expect("untouched"), "my files");

    // A first open killed before sled wrote its `conf` leaves only its own files.
    let interrupted = dir("interrupted");
    std::fs::create_dir_all(interrupted.join("blobs")).expect("dir");
    std::fs::write(interrupted.join(cairn_store_sled::HOLDER_FILE), "pid 1").expect("write");
    drop(SledStore::open(&interrupted, Durability::Sync, "test").expect("still a store"));

    let damaged = dir("damaged");
    drop(SledStore::open(&damaged, Durability::Sync, "test").expect("create"));
    std::fs::write(damaged.join("conf"), b"\xff\xfe garbage").expect("damage");
    assert!(matches!(
        SledStore::open(&damaged, Durability::Sync, "test"),
        Err(OpenError::Corrupt { .. } | OpenError::Damaged(_))
    ));
}

#[test]
fn many_concurrent_synced_appends_finish() {
    // sled 0.34's flush_async deadlocked here, blocking the runtime's own
    // workers; the watchdog lives outside the runtime so a regression fails
    // instead of hanging.
    let (done, finished) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let runtime =
            tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("rt");
        let count = runtime.block_on(async {
            let d = dir("concurrent");
            let store = std::sync::Arc::new(SledStore::open(&d, Durability::Sync, "test").expect("open"));
            let mut tasks = Vec::new();
            for n in 0..100 {
                let store = store.clone();
                tasks.push(tokio::spawn(async move {
                    let run = new_run(&format!("r{n}"));
                    let id = run.run_id.clone();
                    store.create(run).await.expect("create");
                    for seq in 2..12 {
                        let e =
                            Event { seq, at: Timestamp(seq), actor: "t".into(), kind: EventKind::RunStarted };
                        store.append(&id, seq - 1, &[e]).await.expect("append");
                    }
                }));
            }
            for t in tasks {
                t.await.expect("task");
            }
            store.list(&RunQuery::default()).await.expect("list").runs.len()
        });
        let _ = done.send(count);
    });
    let count =
        finished.recv_timeout(std::time::Duration::from_secs(120)).expect("concurrent appends deadlocked");
    assert_eq!(count, 100);
}

#[tokio::test]
async fn only_the_latest_snapshots_are_kept() {
    use cairn_domain::state::RunState;
    use cairn_ports::Snapshot;
    let store = SledStore::temporary().expect("store").keep_snapshots(2);
    let run = new_run("r1");
    let id = run.run_id.clone();
    let state = RunState::create(&run.created).expect("state");
    store.create(run).await.expect("create");
    for seq in [1, 2, 3, 4] {
        store.put_snapshot(&id, Snapshot { seq, state: state.clone() }).await.expect("put");
    }
    assert_eq!(store.snapshot_seqs(&id).expect("seqs"), vec![3, 4]);
    assert_eq!(store.latest_snapshot(&id).await.expect("latest").map(|s| s.seq), Some(4));
}

/// Writes `value` under `run`'s log key for `seq` straight into sled, as a
/// process that died mid-append (or an older cairn) left it.
fn write_raw_log(d: &Path, run: &str, seq: u64, value: &str) {
    write_raw(d, "events", &seq_key(run, seq), value.as_bytes());
}

/// `run 0xff seq`, the key of a run's log chunk or snapshot.
fn seq_key(run: &str, seq: u64) -> Vec<u8> {
    let mut k = run.as_bytes().to_vec();
    k.push(0xff);
    k.extend_from_slice(&seq.to_be_bytes());
    k
}

/// Writes `value` under `key` in `tree` straight into the closed store's sled.
fn write_raw(d: &Path, tree: &str, key: &[u8], value: &[u8]) {
    let db = sled::open(d).expect("sled opens the store's files");
    db.open_tree(tree).expect("tree").insert(key, value).expect("insert");
    db.flush().expect("flush");
}

fn event(seq: u64, kind: EventKind) -> Event {
    Event { seq, at: Timestamp(seq), actor: "t".into(), kind }
}

fn usage(model: &str, prompt_tokens: u64, completion_tokens: u64) -> EventKind {
    EventKind::UsageRecorded {
        path: cairn_domain::state::StepPath::new("a"),
        attempt: 1,
        agent: None,
        model: model.into(),
        usage: TokenUsage { prompt_tokens, completion_tokens, estimated: false, cost_micro_usd: 0 },
    }
}

/// `(prompt, completion)` tokens by model, as the run's listing shows them.
async fn listed_usage(store: &SledStore) -> Vec<(String, (u64, u64))> {
    let runs = store.list(&RunQuery::default()).await.expect("list").runs;
    runs[0].usage_by_model.iter().map(|(m, u)| (m.clone(), (u.prompt_tokens, u.completion_tokens))).collect()
}

#[tokio::test]
async fn loading_from_a_sequence_number_starts_at_the_chunk_that_holds_it() {
    let d = dir("tail");
    let id = RunId::new("r1").expect("id");
    {
        let store = SledStore::open(&d, Durability::None, "test").expect("open");
        store.create(new_run("r1")).await.expect("create");
        // 100 appends of 100 events: chunks under 2, 102, ..., 9902.
        for first in (2..10_002).step_by(100) {
            let batch: Vec<Event> = (first..first + 100).map(|seq| event(seq, usage("m", 1, 0))).collect();
            store.append(&id, first - 1, &batch).await.expect("append");
        }
    }
    // The first chunk is damaged: only a load that reads it fails.
    write_raw_log(&d, "r1", 2, "garbage");
    let store = SledStore::open(&d, Durability::None, "test").expect("the index needs no log on reopen");
    let seqs = |run: cairn_ports::StoredRun| run.events.iter().map(|e| e.seq).collect::<Vec<_>>();
    assert_eq!(seqs(store.load(&id, 9_990).await.expect("the tail")), (9_990..=10_001).collect::<Vec<_>>());
    assert_eq!(seqs(store.load(&id, 102).await.expect("from a chunk's first event")).len(), 9_900);
    assert_eq!(seqs(store.load(&id, 10_002).await.expect("past the end")), Vec::<u64>::new());
    assert!(matches!(store.load(&id, 0).await, Err(cairn_ports::StoreError::Corrupt(_))));
    assert_eq!(listed_usage(&store).await, [("m".to_owned(), (10_000, 0))]);
}

#[tokio::test]
async fn a_damaged_snapshot_gives_way_to_an_older_one_then_to_the_log() {
    use cairn_domain::state::RunState;
    use cairn_ports::Snapshot;
    let d = dir("damaged-snapshot");
    let id = RunId::new("r1").expect("id");
    {
        let store = SledStore::open(&d, Durability::Sync, "test").expect("open");
        let run = new_run("r1");
        let state = RunState::create(&run.created).expect("state");
        store.create(run).await.expect("create");
        store.append(&id, 1, &[event(2, EventKind::RunStarted)]).await.expect("append");
        for seq in [1, 2] {
            store.put_snapshot(&id, Snapshot { seq, state: state.clone() }).await.expect("put");
        }
    }
    write_raw(&d, "snapshots", &seq_key("r1", 2), b"\x01not a zstd frame");
    {
        let store = SledStore::open(&d, Durability::Sync, "test").expect("reopen");
        assert_eq!(store.latest_snapshot(&id).await.expect("latest").map(|s| s.seq), Some(1));
    }
    write_raw(&d, "snapshots", &seq_key("r1", 1), br#"{"v":1,"seq":1}"#);
    let store = SledStore::open(&d, Durability::Sync, "test").expect("reopen");
    assert_eq!(store.latest_snapshot(&id).await, Ok(None));
    assert_eq!(store.load(&id, 0).await.expect("the log is whole").events.len(), 2);
}

#[tokio::test]
async fn usage_appended_after_the_last_change_of_status_is_folded_in_on_open() {
    let d = dir("repair-usage");
    let id = RunId::new("r1").expect("id");
    {
        let store = SledStore::open(&d, Durability::Sync, "test").expect("open");
        store.create(new_run("r1")).await.expect("create");
        store.append(&id, 1, &[event(2, EventKind::RunStarted)]).await.expect("append");
    }
    // Two appends stored; their process died with the index only in memory.
    let chunk = |events: &[Event]| serde_json::json!({"v": 1, "events": events}).to_string();
    write_raw_log(&d, "r1", 3, &chunk(&[event(3, usage("big", 10, 1))]));
    write_raw_log(&d, "r1", 4, &chunk(&[event(4, usage("big", 5, 1)), event(5, usage("small", 1, 1))]));
    let store = SledStore::open(&d, Durability::Sync, "test").expect("reopen");
    assert_eq!(listed_usage(&store).await, [("big".to_owned(), (15, 2)), ("small".to_owned(), (1, 1))]);
    let run = &store.list(&RunQuery::default()).await.expect("list").runs[0];
    assert_eq!((run.status, run.updated_at), (cairn_domain::state::RunStatus::Running, Timestamp(5)));
    store.append(&id, 5, &[event(6, usage("big", 1, 0))]).await.expect("appends after them");
    assert_eq!(listed_usage(&store).await[0], ("big".to_owned(), (16, 2)));
}

#[tokio::test]
async fn an_index_record_from_before_usage_was_kept_is_folded_from_the_log() {
    let d = dir("old-index");
    let id = RunId::new("r1").expect("id");
    {
        let store = SledStore::open(&d, Durability::Sync, "test").expect("open");
        store.create(new_run("r1")).await.expect("create");
        let batch = [event(2, EventKind::RunStarted), event(3, usage("m", 7, 3))];
        store.append(&id, 1, &batch).await.expect("append");
    }
    let old = r#"{"v":1,"run_id":"r1","workflow":"wf","status":"running","created_at":1,"updated_at":3,"last_seq":3,"definition_hash":"h"}"#;
    write_raw(&d, "runs", b"r1", old.as_bytes());
    let store = SledStore::open(&d, Durability::Sync, "test").expect("an older record still reads");
    assert_eq!(listed_usage(&store).await, [("m".to_owned(), (7, 3))]);
}

#[tokio::test]
async fn an_index_left_behind_its_log_by_a_crash_is_repaired_on_open() {
    let d = dir("repair");
    let id = RunId::new("r1").expect("id");
    {
        let store = SledStore::open(&d, Durability::Sync, "test").expect("open");
        store.create(new_run("r1")).await.expect("create");
        let started = Event { seq: 2, at: Timestamp(2), actor: "t".into(), kind: EventKind::RunStarted };
        store.append(&id, 1, &[started]).await.expect("append");
    }
    // The append of event 3 was stored; its process died before the index.
    write_raw_log(&d, "r1", 3, r#"{"v":1,"events":[{"seq":3,"at":3,"actor":"t","type":"run_completed"}]}"#);
    let store = SledStore::open(&d, Durability::Sync, "test").expect("reopen");
    let listed = store.list(&RunQuery::default()).await.expect("list").runs;
    assert_eq!(
        (listed[0].status, listed[0].updated_at),
        (cairn_domain::state::RunStatus::Completed, Timestamp(3))
    );
    assert_eq!(store.load(&id, 0).await.expect("load").events.len(), 3);
    let late = Event { seq: 3, at: Timestamp(4), actor: "t".into(), kind: EventKind::RunPaused };
    let refused = store.append(&id, 2, &[late]).await.expect_err("event 3 is taken");
    assert_eq!(
        refused.to_string(),
        cairn_ports::StoreError::Conflict { run: "r1".into(), expected: 2, actual: 3 }.to_string()
    );
}

#[tokio::test]
async fn logs_stored_one_event_per_key_still_load_and_grow() {
    let d = dir("one-per-key");
    let id = RunId::new("r1").expect("id");
    {
        let store = SledStore::open(&d, Durability::Sync, "test").expect("open");
        store.create(new_run("r1")).await.expect("create");
    }
    write_raw_log(&d, "r1", 2, r#"{"v":1,"event":{"seq":2,"at":2,"actor":"t","type":"run_started"}}"#);
    let store = SledStore::open(&d, Durability::Sync, "test").expect("reopen");
    let paused = Event { seq: 3, at: Timestamp(3), actor: "t".into(), kind: EventKind::RunPaused };
    store.append(&id, 2, &[paused]).await.expect("appends after the old record");
    let seqs: Vec<u64> = store.load(&id, 0).await.expect("load").events.iter().map(|e| e.seq).collect();
    assert_eq!(seqs, [1, 2, 3]);
}

#[tokio::test]
async fn a_store_still_closing_is_waited_for() {
    let d = dir("closing");
    let first = SledStore::open(&d, Durability::Sync, "test").expect("open");
    // Closing: the holder file is gone, the lock not yet.
    std::fs::remove_file(d.join(cairn_store_sled::HOLDER_FILE)).expect("holder file");
    let closer = std::thread::spawn(move || {
        std::thread::sleep(std::time::Duration::from_millis(100));
        drop(first);
    });
    SledStore::open(&d, Durability::Sync, "test").expect("opens once the first is closed");
    closer.join().expect("closed");
}

/// The child half of `a_killed_process_loses_no_acknowledged_append`:
/// creates a run, appends 50 events with `Durability::Sync`, and exits at
/// once, as a killed process would: no destructor runs, sled is never
/// flushed, the write-ahead log is left behind.
fn write_then_die(d: &Path) -> ! {
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).build().expect("rt");
    runtime.block_on(async {
        let store = SledStore::open(d, Durability::Sync, "child").expect("open");
        store.create(new_run("r1")).await.expect("create");
        let id = RunId::new("r1").expect("id");
        for seq in 2..=51 {
            let e = Event { seq, at: Timestamp(seq), actor: "t".into(), kind: EventKind::RunStarted };
            store.append(&id, seq - 1, &[e]).await.expect("append");
        }
        std::process::exit(0)
    })
}

#[test]
fn a_killed_process_loses_no_acknowledged_append() {
    const CHILD: &str = "CAIRN_STORE_TEST_CHILD_DIR";
    if let Some(d) = std::env::var_os(CHILD) {
        write_then_die(Path::new(&d));
    }
    let d = dir("killed");
    let status = std::process::Command::new(std::env::current_exe().expect("test binary"))
        .args(["--exact", "a_killed_process_loses_no_acknowledged_append", "--nocapture"])
        .env(CHILD, &d)
        .status()
        .expect("child runs");
    assert!(status.success(), "the child failed: {status}");
    let logs = |d: &Path| -> Vec<String> {
        std::fs::read_dir(d)
            .expect("dir")
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n.starts_with("wal-"))
            .collect()
    };
    assert_eq!(logs(&d).len(), 1, "the dead process left its write-ahead log");
    let runtime = tokio::runtime::Builder::new_current_thread().build().expect("rt");
    runtime.block_on(reopen_after_the_kill(&d, logs));
}

async fn reopen_after_the_kill(d: &Path, logs: impl Fn(&Path) -> Vec<String>) {
    let d = d.to_path_buf();
    let store = SledStore::open(&d, Durability::Sync, "test").expect("reopen");
    let id = RunId::new("r1").expect("id");
    let seqs: Vec<u64> = store.load(&id, 0).await.expect("load").events.iter().map(|e| e.seq).collect();
    assert_eq!(seqs, (1..=51).collect::<Vec<_>>());
    assert_eq!(
        store.list(&RunQuery::default()).await.expect("list").runs[0].status,
        cairn_domain::state::RunStatus::Running
    );
    // Replayed, made durable in sled and deleted; a new log is started.
    assert_eq!(logs(&d).len(), 1);
    let next = Event { seq: 52, at: Timestamp(52), actor: "t".into(), kind: EventKind::RunPaused };
    store.append(&id, 51, &[next]).await.expect("appends after the replayed events");
    drop(store);
    assert!(logs(&d).is_empty(), "a store closed cleanly leaves no log");
    let store = SledStore::open(&d, Durability::Sync, "test").expect("reopen");
    assert_eq!(store.load(&id, 0).await.expect("load").events.len(), 52);
}

#[tokio::test]
async fn full_log_segments_are_checkpointed_into_sled_and_deleted() {
    let d = dir("checkpoint");
    let id = RunId::new("r1").expect("id");
    let store = SledStore::open(&d, Durability::Sync, "test").expect("open").segment_bytes(2048);
    store.create(new_run("r1")).await.expect("create");
    for seq in 2..=200 {
        let e = Event { seq, at: Timestamp(seq), actor: "t".into(), kind: EventKind::RunStarted };
        store.append(&id, seq - 1, &[e]).await.expect("append");
        let segments: Vec<String> = std::fs::read_dir(&d)
            .expect("dir")
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n.starts_with("wal-"))
            .collect();
        assert_eq!(segments.len(), 1, "after append {seq}: {segments:?}");
    }
    // Many checkpoints ran: the live segment is a late one.
    let live = std::fs::read_dir(&d)
        .expect("dir")
        .flatten()
        .filter_map(|e| e.file_name().to_string_lossy().strip_prefix("wal-").map(str::to_owned))
        .next()
        .and_then(|n| u64::from_str_radix(&n, 16).ok())
        .unwrap_or(0);
    assert!(live > 5, "segment {live}");
    assert_eq!(store.load(&id, 0).await.expect("load").events.len(), 200);
}

/// A store whose process died after appending to `r1` through `events`,
/// as kill -9 leaves it: its write-ahead log behind, sled unflushed. Made
/// in this process and copied, since the dead store keeps its lock.
fn crashed_copy(name: &str, events: u64) -> PathBuf {
    let d = dir(&format!("{name}-live"));
    let runtime = tokio::runtime::Builder::new_current_thread().build().expect("rt");
    runtime.block_on(async {
        let store = SledStore::open(&d, Durability::Sync, "test").expect("open");
        store.create(new_run("r1")).await.expect("create");
        let id = RunId::new("r1").expect("id");
        for seq in 2..=events {
            store.append(&id, seq - 1, &[event(seq, usage("m", seq, 1))]).await.expect("append");
        }
        std::mem::forget(store);
    });
    let copy = dir(name);
    std::fs::create_dir_all(&copy).expect("dir");
    for entry in std::fs::read_dir(&d).expect("dir").flatten() {
        if entry.file_type().expect("type").is_file() && entry.file_name() != "holder" {
            std::fs::copy(entry.path(), copy.join(entry.file_name())).expect("copy");
        }
    }
    copy
}

fn segment(d: &Path) -> PathBuf {
    std::fs::read_dir(d)
        .expect("dir")
        .flatten()
        .map(|e| e.path())
        .find(|p| p.file_name().is_some_and(|n| n.to_string_lossy().starts_with("wal-")))
        .expect("a log segment")
}

fn damage_of(opened: Result<SledStore, OpenError>) -> cairn_ports::Damage {
    match opened {
        Err(OpenError::Damaged(damage)) => damage,
        Err(other) => panic!("expected damage, got {other}"),
        Ok(_) => panic!("a damaged store opened"),
    }
}

#[test]
fn a_flipped_byte_in_the_middle_of_the_log_is_refused_and_the_log_kept() {
    let d = crashed_copy("flipped-log", 145);
    let file = segment(&d);
    let mut bytes = std::fs::read(&file).expect("read");
    let end = bytes.iter().rposition(|&b| b != 0xa5).expect("records");
    let middle = end / 2;
    for flip in [middle, middle + 1, middle + 2, middle + 3] {
        bytes[flip] ^= 0xff;
    }
    std::fs::write(&file, &bytes).expect("damage");
    let damage = damage_of(SledStore::open(&d, Durability::Sync, "test"));
    assert_eq!(damage.file, file.display().to_string());
    assert!(damage.offset.is_some_and(|o| o as usize <= middle), "{damage}");
    assert_eq!(damage.what, cairn_ports::DamageKind::BadRecord);
    assert_eq!(std::fs::read(&file).expect("kept"), bytes, "the damaged log is kept as it was");
    // Refused again, the same way: nothing was replayed past it or deleted.
    assert_eq!(damage_of(SledStore::open(&d, Durability::Sync, "test")), damage);
}

#[test]
fn a_zeroed_log_is_refused() {
    let d = crashed_copy("zeroed-log", 40);
    let file = segment(&d);
    let len = std::fs::metadata(&file).expect("stat").len() as usize;
    std::fs::write(&file, vec![0; len]).expect("zero");
    let damage = damage_of(SledStore::open(&d, Durability::Sync, "test"));
    assert_eq!(
        (damage.file, damage.offset, damage.what),
        (file.display().to_string(), Some(0), cairn_ports::DamageKind::NoHeader)
    );
}

#[test]
fn a_log_cut_in_its_filler_loses_nothing() {
    let d = crashed_copy("cut-filler", 40);
    let file = segment(&d);
    let bytes = std::fs::read(&file).expect("read");
    let end = bytes.iter().rposition(|&b| b != 0xa5).expect("records") + 1;
    std::fs::write(&file, &bytes[..end + 10]).expect("cut");
    let store = SledStore::open(&d, Durability::Sync, "test").expect("opens");
    let runtime = tokio::runtime::Builder::new_current_thread().build().expect("rt");
    let run = runtime.block_on(store.load(&RunId::new("r1").expect("id"), 0)).expect("load");
    assert_eq!(run.events.len(), 40);
}

#[tokio::test]
async fn a_database_rolled_back_behind_its_seal_is_refused() {
    let d = dir("rolled-back");
    let id = RunId::new("r1").expect("id");
    {
        let store = SledStore::open(&d, Durability::Sync, "test").expect("open");
        store.create(new_run("r1")).await.expect("create");
        store.append(&id, 1, &[event(2, EventKind::RunStarted)]).await.expect("append");
    }
    let older = dir("rolled-back-older");
    std::fs::create_dir_all(&older).expect("dir");
    for entry in std::fs::read_dir(&d).expect("dir").flatten() {
        if entry.file_type().expect("type").is_file() {
            std::fs::copy(entry.path(), older.join(entry.file_name())).expect("copy");
        }
    }
    {
        let store = SledStore::open(&d, Durability::Sync, "test").expect("reopen");
        for seq in 3..=20 {
            store.append(&id, seq - 1, &[event(seq, usage("m", 1, 1))]).await.expect("append");
        }
        store.append(&id, 20, &[event(21, EventKind::RunCompleted)]).await.expect("complete");
    }
    // sled comes back as it was two sessions ago; the seal is the last one.
    std::fs::copy(d.join(cairn_store_sled::SEAL_FILE), older.join(cairn_store_sled::SEAL_FILE))
        .expect("seal");
    let damage = damage_of(SledStore::open(&older, Durability::Sync, "test"));
    assert_eq!(damage.what, cairn_ports::DamageKind::RolledBack { run: "r1".into(), expected: 21, found: 2 });
    // Set aside, the seal no longer speaks: a person accepts the database as it is.
    std::fs::remove_file(older.join(cairn_store_sled::SEAL_FILE)).expect("set aside");
    let store = SledStore::open(&older, Durability::Sync, "test").expect("opens");
    assert_eq!(store.load(&id, 0).await.expect("load").events.len(), 2);
}

#[tokio::test]
async fn an_index_ahead_of_its_log_is_refused() {
    let d = dir("index-ahead");
    {
        let store = SledStore::open(&d, Durability::Sync, "test").expect("open");
        store.create(new_run("r1")).await.expect("create");
        store
            .append(&RunId::new("r1").expect("id"), 1, &[event(2, EventKind::RunStarted)])
            .await
            .expect("append");
    }
    let _ = std::fs::remove_file(d.join(cairn_store_sled::SEAL_FILE));
    let ahead = r#"{"v":1,"run_id":"r1","workflow":"wf","status":"completed","created_at":1,"updated_at":9,"last_seq":9,"definition_hash":"h","usage_by_model":{}}"#;
    write_raw(&d, "runs", b"r1", ahead.as_bytes());
    let damage = damage_of(SledStore::open(&d, Durability::Sync, "test"));
    assert_eq!(damage.what, cairn_ports::DamageKind::RolledBack { run: "r1".into(), expected: 9, found: 2 });
}

#[tokio::test]
async fn a_chunk_replaced_in_the_middle_of_a_log_breaks_its_chain() {
    let d = dir("replaced-chunk");
    let id = RunId::new("r1").expect("id");
    {
        let store = SledStore::open(&d, Durability::None, "test").expect("open");
        store.create(new_run("r1")).await.expect("create");
        for seq in 2..=5 {
            store.append(&id, seq - 1, &[event(seq, usage("m", 1, 1))]).await.expect("append");
        }
    }
    // Another chunk with the same events' numbers, not the one written.
    write_raw_log(
        &d,
        "r1",
        3,
        &serde_json::json!({"v": 1, "events": [event(3, usage("other", 9, 9))]}).to_string(),
    );
    let store = SledStore::open(&d, Durability::None, "test").expect("the index is whole");
    match store.load(&id, 0).await {
        Err(cairn_ports::StoreError::Damaged(damage)) => {
            assert_eq!(damage.what, cairn_ports::DamageKind::Broken { run: "r1".into(), seq: 4 });
        }
        other => panic!("expected a broken chain, got {:?}", other.map(|r| r.events.len())),
    }
}

/// A reader of a run that is being appended to (a server's client reading
/// a run its server drives) never sees it as rolled back: what the store
/// recorded of the run's end is applied before the log is read.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_read_while_it_is_appended_to_is_never_seen_rolled_back() {
    let d = dir("read-while-appending");
    let store = std::sync::Arc::new(SledStore::open(&d, Durability::Sync, "test").expect("open"));
    store.create(new_run("r1")).await.expect("create");
    let id = RunId::new("r1").expect("id");
    let writer = {
        let (store, id) = (std::sync::Arc::clone(&store), id.clone());
        tokio::spawn(async move {
            for seq in 2..400 {
                let kind = if seq == 2 { EventKind::RunStarted } else { usage("m", 1, 1) };
                store.append(&id, seq - 1, &[event(seq, kind)]).await.expect("append");
            }
        })
    };
    let mut reads = 0;
    while !writer.is_finished() {
        let run = store.load(&id, 0).await.unwrap_or_else(|e| panic!("read {reads}: {e}"));
        assert_eq!(run.events.last().map(|e| e.seq), Some(run.events.len() as u64));
        reads += 1;
    }
    writer.await.expect("the writer ends");
    assert!(reads > 10, "the reads raced the writes ({reads})");
}
