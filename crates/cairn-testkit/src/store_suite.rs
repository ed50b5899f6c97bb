//! The conformance suite of the `RunStore` contract. Every store runs it:
//!
//! ```text
//! cairn_testkit::run_store_suite!(MemoryStore::new());
//! ```

use cairn_domain::id::{RunId, WorkflowId};
use cairn_domain::state::{Event, EventKind, RunState, RunStatus, StepPath, Timestamp};
use cairn_ports::{NewRun, RunStore, Snapshot, StoreError};
use serde_json::json;

fn event(seq: u64, at: u64, kind: EventKind) -> Event {
    Event { seq, at: Timestamp(at), actor: "engine".into(), kind }
}

fn new_run(id: &str, at: u64) -> NewRun {
    let run_id = RunId::new(id).expect("valid id");
    let workflow = WorkflowId::new("wf").expect("valid id");
    NewRun {
        run_id: run_id.clone(),
        workflow: workflow.clone(),
        definition_name: "wf.yaml".into(),
        definition: "cairn: 1\n".into(),
        files: [("schemas/a.json".to_owned(), "{}".to_owned())].into(),
        definition_hash: "h".into(),
        created: event(
            1,
            at,
            EventKind::RunCreated { run_id, workflow, definition_hash: "h".into(), inputs: json!({}) },
        ),
    }
}

fn id(s: &str) -> RunId {
    RunId::new(s).expect("valid id")
}

/// `create` then `load` gives back the definition and the first event.
pub async fn create_then_load(store: &dyn RunStore) {
    let run = new_run("r1", 10);
    store.create(run.clone()).await.expect("create");
    let loaded = store.load(&run.run_id).await.expect("load");
    assert_eq!(loaded.definition, run.definition);
    assert_eq!(loaded.definition_name, run.definition_name);
    assert_eq!(loaded.files, run.files);
    assert_eq!(loaded.events, vec![run.created]);
}

/// A second `create` with the same id is refused and changes nothing.
pub async fn create_twice_is_refused(store: &dyn RunStore) {
    store.create(new_run("r1", 10)).await.expect("create");
    let again = store.create(new_run("r1", 20)).await;
    assert_eq!(again, Err(StoreError::AlreadyExists("r1".into())));
    assert_eq!(store.load(&id("r1")).await.expect("load").events[0].at, Timestamp(10));
}

/// `append` is guarded by the expected sequence number.
pub async fn append_checks_the_expected_sequence(store: &dyn RunStore) {
    store.create(new_run("r1", 10)).await.expect("create");
    let started = [event(2, 11, EventKind::RunStarted)];
    store.append(&id("r1"), 1, &started).await.expect("append after 1");
    let stale = store.append(&id("r1"), 1, &[event(2, 12, EventKind::RunCompleted)]).await;
    assert_eq!(stale, Err(StoreError::Conflict { run: "r1".into(), expected: 1, actual: 2 }));
    let path = StepPath::new("a");
    let batch = [
        event(3, 12, EventKind::StepStarted { path: path.clone(), attempt: 1 }),
        event(4, 13, EventKind::StepSucceeded { path, output: json!(1) }),
        event(5, 13, EventKind::RunCompleted),
    ];
    store.append(&id("r1"), 2, &batch).await.expect("batch");
    let events = store.load(&id("r1")).await.expect("load").events;
    assert_eq!(events.iter().map(|e| e.seq).collect::<Vec<_>>(), vec![1, 2, 3, 4, 5]);
    let state = RunState::fold(&events).expect("legal").expect("created");
    assert_eq!(state.status, RunStatus::Completed);
}

/// Appending to or loading a run that does not exist is `NotFound`.
pub async fn unknown_runs_are_not_found(store: &dyn RunStore) {
    assert_eq!(store.load(&id("nope")).await, Err(StoreError::NotFound("nope".into())));
    let append = store.append(&id("nope"), 1, &[event(2, 1, EventKind::RunStarted)]).await;
    assert_eq!(append, Err(StoreError::NotFound("nope".into())));
}

/// `list` shows every run with its current status, newest first.
pub async fn list_is_newest_first_with_status(store: &dyn RunStore) {
    store.create(new_run("old", 10)).await.expect("create");
    store.create(new_run("new", 20)).await.expect("create");
    store.append(&id("old"), 1, &[event(2, 30, EventKind::RunStarted)]).await.expect("append");
    let list = store.list().await.expect("list");
    let rows: Vec<(&str, RunStatus, u64)> =
        list.iter().map(|r| (r.run_id.as_str(), r.status, r.updated_at.0)).collect();
    assert_eq!(rows, vec![("new", RunStatus::Pending, 20), ("old", RunStatus::Running, 30)]);
}

/// The latest snapshot wins; an older one does not replace it.
pub async fn snapshots_keep_the_latest(store: &dyn RunStore) {
    let run = new_run("r1", 10);
    store.create(run.clone()).await.expect("create");
    assert_eq!(store.latest_snapshot(&run.run_id).await, Ok(None));
    let mut state = RunState::create(&run.created).expect("state");
    let started = event(2, 11, EventKind::RunStarted);
    store.append(&run.run_id, 1, std::slice::from_ref(&started)).await.expect("append");
    let first = Snapshot { seq: 1, state: state.clone() };
    state.apply(&started).expect("apply");
    let second = Snapshot { seq: 2, state };
    store.put_snapshot(&run.run_id, second.clone()).await.expect("put");
    store.put_snapshot(&run.run_id, first).await.expect("put older");
    assert_eq!(store.latest_snapshot(&run.run_id).await, Ok(Some(second)));
}

/// `delete` removes the run and everything stored for it.
pub async fn delete_removes_everything(store: &dyn RunStore) {
    store.create(new_run("gone", 10)).await.expect("create");
    store.create(new_run("kept", 11)).await.expect("create");
    store.append(&id("gone"), 1, &[event(2, 12, EventKind::RunStarted)]).await.expect("append");
    store.delete(&id("gone")).await.expect("delete");
    assert_eq!(store.load(&id("gone")).await, Err(StoreError::NotFound("gone".into())));
    assert_eq!(store.latest_snapshot(&id("gone")).await, Err(StoreError::NotFound("gone".into())));
    assert_eq!(store.delete(&id("gone")).await, Err(StoreError::NotFound("gone".into())));
    let list = store.list().await.expect("list");
    assert_eq!(list.iter().map(|r| r.run_id.as_str()).collect::<Vec<_>>(), vec!["kept"]);
    // The id can be used again.
    store.create(new_run("gone", 13)).await.expect("create again");
    assert_eq!(store.load(&id("gone")).await.expect("load").events.len(), 1);
}

/// Generates one `#[tokio::test]` per rule of the `RunStore` contract, each
/// on a fresh store made by the given expression.
#[macro_export]
macro_rules! run_store_suite {
    ($make:expr) => {
        mod run_store_conformance {
            #[allow(unused_imports)]
            use super::*;
            $crate::run_store_suite!(@tests $make;
                create_then_load, create_twice_is_refused, append_checks_the_expected_sequence,
                unknown_runs_are_not_found, list_is_newest_first_with_status, snapshots_keep_the_latest,
                delete_removes_everything);
        }
    };
    (@tests $make:expr; $($name:ident),*) => {
        $(
            #[tokio::test]
            async fn $name() {
                let store = $make;
                $crate::store_suite::$name(&store).await;
            }
        )*
    };
}
