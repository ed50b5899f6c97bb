//! The sled store keeps API tokens (and the workflow catalog) across
//! reopening and across a killed process, beside runs whose log and
//! checks they leave alone.

use std::path::{Path, PathBuf};

use cairn_domain::access::Role;
use cairn_domain::id::RunId;
use cairn_domain::state::{Event, EventKind, Timestamp};
use cairn_ports::{RunQuery, RunStore, StoreError, TokenRecord, TokenStore};
use cairn_store_sled::{Durability, SledStore, examine};
use cairn_testkit::token_suite::new_token;

fn dir(name: &str) -> PathBuf {
    let d = Path::new(env!("CARGO_TARGET_TMPDIR")).join("sled-tokens").join(name);
    let _ = std::fs::remove_dir_all(&d);
    d
}

fn names(tokens: &[TokenRecord]) -> Vec<&str> {
    tokens.iter().map(|t| t.name.as_str()).collect()
}

#[tokio::test]
async fn tokens_survive_reopening() {
    let d = dir("reopen");
    let mut ci = new_token("ci", Role::Operator, 10);
    ci.expires_at = Some(Timestamp(5_000));
    {
        let store = SledStore::open(&d, Durability::Sync, "test").expect("open");
        store.add_token(ci.clone()).await.expect("add");
        store.add_token(new_token("old", Role::Viewer, 11)).await.expect("add");
        store.revoke_token("old").await.expect("revoke");
        store.touch_token("ci", Timestamp(40)).await.expect("touch");
    }
    let store = SledStore::open(&d, Durability::Sync, "test").expect("reopen");
    let kept = TokenRecord { last_used_at: Some(Timestamp(40)), ..ci };
    assert_eq!(store.token_by_hash(&kept.hash).await.expect("lookup").as_ref(), Some(&kept));
    assert_eq!(store.tokens().await.expect("tokens"), [kept]);
    assert_eq!(
        store.add_token(new_token("ci", Role::Admin, 12)).await,
        Err(StoreError::AlreadyExists("ci".into()))
    );
}

#[tokio::test]
async fn registered_workflows_survive_reopening() {
    use cairn_ports::{Registered, WorkflowStore};
    use cairn_testkit::workflow_suite::new_version;
    let d = dir("workflows");
    let first = {
        let store = SledStore::open(&d, Durability::Sync, "test").expect("open");
        let Ok(Registered::Added(first)) = store.register(new_version("wf", "1", "one", 10)).await else {
            panic!("added");
        };
        first
    };
    let store = SledStore::open(&d, Durability::Sync, "test").expect("reopen");
    assert_eq!(store.latest().await.expect("latest"), std::slice::from_ref(&first));
    let Ok(Registered::Added(second)) = store.register(new_version("wf", "2", "two", 11)).await else {
        panic!("added");
    };
    assert_eq!(second.number, 2, "numbered after what was stored before reopening");
    assert_eq!(store.versions(&first.workflow).await.expect("versions"), [first, second]);
}

/// The child half of `a_killed_process_keeps_the_tokens_it_added`: opens
/// the store, adds two tokens and revokes one, and exits at once, as a
/// killed process would: no destructor runs, nothing flushes at close.
fn add_then_die(d: &Path) -> ! {
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).build().expect("rt");
    runtime.block_on(async {
        let store = SledStore::open(d, Durability::Sync, "child").expect("open");
        store.create(cairn_testkit::store_suite::new_run("r1", 1)).await.expect("create");
        store.add_token(new_token("kept", Role::Admin, 1)).await.expect("add");
        store.add_token(new_token("revoked", Role::Viewer, 2)).await.expect("add");
        let id = RunId::new("r1").expect("id");
        let started = Event { seq: 2, at: Timestamp(2), actor: "t".into(), kind: EventKind::RunStarted };
        store.append(&id, 1, &[started]).await.expect("append");
        assert_eq!(store.revoke_token("revoked").await, Ok(true));
        std::process::exit(0)
    })
}

#[test]
fn a_killed_process_keeps_the_tokens_it_added() {
    const CHILD: &str = "CAIRN_TOKENS_TEST_CHILD_DIR";
    if let Some(d) = std::env::var_os(CHILD) {
        add_then_die(Path::new(&d));
    }
    let d = dir("killed");
    let status = std::process::Command::new(std::env::current_exe().expect("test binary"))
        .args(["--exact", "a_killed_process_keeps_the_tokens_it_added", "--nocapture"])
        .env(CHILD, &d)
        .status()
        .expect("child runs");
    assert!(status.success(), "the child failed: {status}");
    let runtime = tokio::runtime::Builder::new_current_thread().build().expect("rt");
    runtime.block_on(async {
        let store = SledStore::open(&d, Durability::Sync, "test").expect("reopen after the kill");
        assert_eq!(names(&store.tokens().await.expect("tokens")), ["kept"]);
        let kept = store.token_by_hash(&cairn_ports::hash_secret("secret-kept")).await.expect("lookup");
        assert_eq!(kept.map(|t| t.role), Some(Role::Admin));
        // The run beside them replayed from its log as ever.
        let id = RunId::new("r1").expect("id");
        assert_eq!(store.load(&id, 0).await.expect("load").events.len(), 2);
    });
}

#[tokio::test]
async fn tokens_leave_the_run_store_and_its_checks_alone() {
    let d = dir("beside-runs");
    {
        let store = SledStore::open(&d, Durability::Sync, "test").expect("open");
        store.create(cairn_testkit::store_suite::new_run("r1", 1)).await.expect("create");
        store.add_token(new_token("ci", Role::Operator, 1)).await.expect("add");
        let id = RunId::new("r1").expect("id");
        for seq in 2..=20 {
            let e = Event { seq, at: Timestamp(seq), actor: "t".into(), kind: EventKind::RunStarted };
            store.append(&id, seq - 1, &[e]).await.expect("append");
            store.touch_token("ci", Timestamp(seq)).await.expect("touch");
        }
        store.add_token(new_token("other", Role::Viewer, 30)).await.expect("add");
        store.revoke_token("other").await.expect("revoke");
    }
    let exam = examine(&d).await.expect("examine");
    assert!(!exam.damaged(), "{exam:?}");
    assert_eq!(exam.recoverable.as_ref().map(Vec::len), Some(1), "{exam:?}");
    let store = SledStore::open(&d, Durability::Sync, "test").expect("reopen");
    assert_eq!(store.list(&RunQuery::default()).await.expect("list").runs.len(), 1);
    assert_eq!(store.load(&RunId::new("r1").expect("id"), 0).await.expect("load").events.len(), 20);
    let tokens = store.tokens().await.expect("tokens");
    assert_eq!(
        tokens.iter().map(|t| (t.name.as_str(), t.last_used_at)).collect::<Vec<_>>(),
        [("ci", Some(Timestamp(20)))]
    );
}
