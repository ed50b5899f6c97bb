//! The conformance suite of the `RunStore` contract. Every store runs it:
//!
//! ```text
//! cairn_testkit::run_store_suite!(MemoryStore::new());
//! ```

use cairn_domain::id::{RunId, WorkflowId};
use cairn_domain::state::{Event, EventKind, RunState, RunStatus, StepPath, Timestamp, TokenUsage};
use cairn_ports::{Cursor, NewRun, RunQuery, RunStore, RunSummary, Snapshot, StoreError};
use serde_json::json;

fn event(seq: u64, at: u64, kind: EventKind) -> Event {
    Event { seq, at: Timestamp(at), actor: "engine".into(), kind }
}

/// A run `id` of workflow `wf` created at `at` (milliseconds), for store
/// tests beyond this suite.
pub fn new_run(id: &str, at: u64) -> NewRun {
    new_run_of("wf", id, at)
}

fn new_run_of(workflow: &str, id: &str, at: u64) -> NewRun {
    let run_id = RunId::new(id).expect("valid id");
    let workflow = WorkflowId::new(workflow).expect("valid id");
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
            EventKind::RunCreated {
                run_id,
                workflow,
                definition_hash: "h".into(),
                inputs: json!({}),
                version: None,
                labels: Default::default(),
                priority: 0,
                parent: None,
            },
        ),
    }
}

fn id(s: &str) -> RunId {
    RunId::new(s).expect("valid id")
}

fn usage(model: &str, prompt_tokens: u64, completion_tokens: u64) -> EventKind {
    EventKind::UsageRecorded {
        path: StepPath::new("a"),
        attempt: 1,
        agent: None,
        model: model.into(),
        usage: TokenUsage { prompt_tokens, completion_tokens, estimated: false, cost_micro_usd: 0 },
    }
}

async fn list(store: &dyn RunStore, query: &RunQuery) -> Vec<RunSummary> {
    store.list(query).await.expect("list").runs
}

fn ids(runs: &[RunSummary]) -> Vec<&str> {
    runs.iter().map(|r| r.run_id.as_str()).collect()
}

async fn seqs(store: &dyn RunStore, run: &str, from_seq: u64) -> Vec<u64> {
    store.load(&id(run), from_seq).await.expect("load").events.iter().map(|e| e.seq).collect()
}

/// `create` then `load` gives back the definition and the first event.
pub async fn create_then_load(store: &dyn RunStore) {
    let run = new_run("r1", 10);
    store.create(run.clone()).await.expect("create");
    let loaded = store.load(&run.run_id, 0).await.expect("load");
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
    assert_eq!(store.load(&id("r1"), 0).await.expect("load").events[0].at, Timestamp(10));
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
    let events = store.load(&id("r1"), 0).await.expect("load").events;
    assert_eq!(events.iter().map(|e| e.seq).collect::<Vec<_>>(), vec![1, 2, 3, 4, 5]);
    let state = RunState::fold(&events).expect("legal").expect("created");
    assert_eq!(state.status, RunStatus::Completed);
}

/// Appending to or loading a run that does not exist is `NotFound`.
pub async fn unknown_runs_are_not_found(store: &dyn RunStore) {
    assert_eq!(store.load(&id("nope"), 0).await, Err(StoreError::NotFound("nope".into())));
    let append = store.append(&id("nope"), 1, &[event(2, 1, EventKind::RunStarted)]).await;
    assert_eq!(append, Err(StoreError::NotFound("nope".into())));
}

/// `list` shows every run with its current status, newest first.
pub async fn list_is_newest_first_with_status(store: &dyn RunStore) {
    store.create(new_run("old", 10)).await.expect("create");
    store.create(new_run("new", 20)).await.expect("create");
    store.append(&id("old"), 1, &[event(2, 30, EventKind::RunStarted)]).await.expect("append");
    let listed = list(store, &RunQuery::default()).await;
    let rows: Vec<(&str, RunStatus, u64)> =
        listed.iter().map(|r| (r.run_id.as_str(), r.status, r.updated_at.0)).collect();
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
    assert_eq!(store.load(&id("gone"), 0).await, Err(StoreError::NotFound("gone".into())));
    assert_eq!(store.latest_snapshot(&id("gone")).await, Err(StoreError::NotFound("gone".into())));
    assert_eq!(store.delete(&id("gone")).await, Err(StoreError::NotFound("gone".into())));
    assert_eq!(ids(&list(store, &RunQuery::default()).await), vec!["kept"]);
    // The id can be used again.
    store.create(new_run("gone", 13)).await.expect("create again");
    assert_eq!(store.load(&id("gone"), 0).await.expect("load").events.len(), 1);
}

/// `create` refuses a first event that is not `run_created` numbered 1,
/// and stores nothing.
pub async fn create_refuses_a_bad_first_event(store: &dyn RunStore) {
    let mut not_created = new_run("r1", 10);
    not_created.created = event(1, 10, EventKind::RunStarted);
    let mut not_first = new_run("r1", 10);
    not_first.created.seq = 2;
    for run in [not_created, not_first] {
        assert!(matches!(store.create(run).await, Err(StoreError::Corrupt(_))));
        assert_eq!(store.load(&id("r1"), 0).await, Err(StoreError::NotFound("r1".into())));
        assert!(list(store, &RunQuery::default()).await.is_empty());
    }
    store.create(new_run("r1", 10)).await.expect("a good first event is taken");
}

/// An `append` with a gap or a wrong number anywhere in the batch is
/// refused and stores nothing: all or nothing.
pub async fn append_is_all_or_nothing(store: &dyn RunStore) {
    store.create(new_run("r1", 10)).await.expect("create");
    store.append(&id("r1"), 1, &[event(2, 11, EventKind::RunStarted)]).await.expect("append");
    let ok = |seq| event(seq, 12, usage("m", 1, 1));
    let batches = [
        vec![ok(4)],                      // a gap before the batch
        vec![ok(2)],                      // a number already taken
        vec![ok(3), ok(5)],               // a gap inside it
        vec![ok(3), ok(4), ok(4)],        // the third misnumbered
        vec![ok(3), ok(4), ok(6), ok(7)], // a gap in the middle
    ];
    for batch in batches {
        let refused = store.append(&id("r1"), 2, &batch).await;
        assert!(matches!(refused, Err(StoreError::Corrupt(_))), "{batch:?}: {refused:?}");
        assert_eq!(seqs(store, "r1", 0).await, [1, 2]);
        let listed = list(store, &RunQuery::default()).await;
        assert_eq!((listed[0].usage(), listed[0].updated_at), (TokenUsage::default(), Timestamp(11)));
    }
    store.append(&id("r1"), 2, &[ok(3), ok(4)]).await.expect("a well-numbered batch after them");
    assert_eq!(seqs(store, "r1", 0).await, [1, 2, 3, 4]);
}

/// `load` from a sequence number returns exactly the events from it on.
pub async fn load_from_a_sequence_number_returns_the_tail(store: &dyn RunStore) {
    store.create(new_run("r1", 10)).await.expect("create");
    // Appends of 1, 3 and 5 events: 2, 3..=5, 6..=10.
    let mut next = 2;
    for size in [1, 3, 5] {
        let batch: Vec<Event> = (next..next + size).map(|seq| event(seq, seq, usage("m", 1, 0))).collect();
        store.append(&id("r1"), next - 1, &batch).await.expect("append");
        next += size;
    }
    for from in 0..=12 {
        let expected: Vec<u64> = (from.max(1)..=10).collect();
        assert_eq!(seqs(store, "r1", from).await, expected, "from {from}");
    }
    let tail = store.load(&id("r1"), 7).await.expect("load");
    assert_eq!((tail.definition, tail.files), (new_run("r1", 10).definition, new_run("r1", 10).files));
    assert_eq!(store.load(&id("nope"), 7).await, Err(StoreError::NotFound("nope".into())));
}

/// `list` keeps only the runs of the status and the workflow asked for.
pub async fn list_filters_by_status_and_workflow(store: &dyn RunStore) {
    store.create(new_run_of("wf", "a", 10)).await.expect("create");
    store.create(new_run_of("other", "b", 20)).await.expect("create");
    store.create(new_run_of("wf", "c", 30)).await.expect("create");
    for run in ["a", "b"] {
        store.append(&id(run), 1, &[event(2, 40, EventKind::RunStarted)]).await.expect("append");
    }
    let running = RunQuery { status: Some(RunStatus::Running), ..RunQuery::default() };
    assert_eq!(ids(&list(store, &running).await), ["b", "a"]);
    let wf = RunQuery { workflow: Some(WorkflowId::new("wf").expect("id")), ..RunQuery::default() };
    assert_eq!(ids(&list(store, &wf).await), ["c", "a"]);
    let both = RunQuery { status: Some(RunStatus::Running), ..wf.clone() };
    assert_eq!(ids(&list(store, &both).await), ["a"]);
    let none = RunQuery { status: Some(RunStatus::Completed), ..wf };
    assert_eq!(store.list(&none).await.expect("list").runs, []);
}

/// `list` shows each run's labels, as its `run_created` fixed them, and
/// keeps only the runs with every label asked for.
pub async fn list_shows_and_filters_by_labels(store: &dyn RunStore) {
    let labelled = |workflow: &str, run: &str, at: u64, labels: &[(&str, &str)]| {
        let mut new = new_run_of(workflow, run, at);
        if let EventKind::RunCreated { labels: kept, .. } = &mut new.created.kind {
            *kept = labels.iter().map(|(k, v)| cairn_domain::label::label(k, v).expect("a label")).collect();
        }
        new
    };
    store.create(labelled("wf", "a", 10, &[("team", "pay"), ("env", "prod")])).await.expect("create");
    store.create(labelled("wf", "b", 20, &[("team", "pay")])).await.expect("create");
    store.create(labelled("wf", "c", 30, &[])).await.expect("create");
    store.append(&id("a"), 1, &[event(2, 40, EventKind::RunStarted)]).await.expect("append");
    let all = list(store, &RunQuery::default()).await;
    let shown: Vec<usize> = all.iter().map(|r| r.labels.len()).collect();
    assert_eq!(shown, [0, 1, 2], "newest first: c, b, a");
    let query = |pairs: &[(&str, &str)]| RunQuery {
        labels: pairs.iter().map(|(k, v)| cairn_domain::label::label(k, v).expect("a label")).collect(),
        ..RunQuery::default()
    };
    assert_eq!(ids(&list(store, &query(&[("team", "pay")])).await), ["b", "a"]);
    assert_eq!(ids(&list(store, &query(&[("team", "pay"), ("env", "prod")])).await), ["a"]);
    assert_eq!(store.list(&query(&[("team", "other")])).await.expect("list").runs, []);
}

/// `list` pages with a limit and a cursor, without gaps or repeats, newest
/// first, and says where the next page starts only while more runs match.
pub async fn list_pages_with_limit_and_cursor(store: &dyn RunStore) {
    // Two runs share a creation time: the id orders them.
    for (run, at) in [("r1", 10), ("r2", 20), ("r3", 20), ("r4", 30), ("r5", 40)] {
        store.create(new_run(run, at)).await.expect("create");
    }
    let mut query = RunQuery { limit: Some(2), ..RunQuery::default() };
    let mut pages = Vec::new();
    loop {
        let page = store.list(&query).await.expect("list");
        pages.push(ids(&page.runs).into_iter().map(str::to_owned).collect::<Vec<_>>());
        match page.next {
            Some(next) => {
                assert_eq!(Some(&next), page.runs.last().map(RunSummary::cursor).as_ref());
                // The cursor travels as its token.
                query.after = Some(next.to_string().parse::<Cursor>().expect("a cursor reads back"));
            }
            None => break,
        }
        assert!(pages.len() < 5, "pages never end: {pages:?}");
    }
    assert_eq!(pages, [vec!["r5", "r4"], vec!["r3", "r2"], vec!["r1"]]);
    // A page that ends exactly at the last run has no next.
    let all = store.list(&RunQuery { limit: Some(5), ..RunQuery::default() }).await.expect("list");
    assert_eq!((all.runs.len(), all.next), (5, None));
    let unlimited = store.list(&RunQuery::default()).await.expect("list");
    assert_eq!((ids(&unlimited.runs), unlimited.next), (vec!["r5", "r4", "r3", "r2", "r1"], None));
}

/// `list` reports each run's usage by model, summed from its
/// `usage_recorded` events.
pub async fn list_reports_usage_by_model(store: &dyn RunStore) {
    store.create(new_run("r1", 10)).await.expect("create");
    store.create(new_run("r2", 20)).await.expect("create");
    store.append(&id("r1"), 1, &[event(2, 11, EventKind::RunStarted)]).await.expect("append");
    let batch = [event(3, 12, usage("big", 100, 10)), event(4, 13, usage("small", 5, 1))];
    store.append(&id("r1"), 2, &batch).await.expect("append");
    store.append(&id("r1"), 4, &[event(5, 14, usage("big", 20, 2))]).await.expect("append");
    let runs = list(store, &RunQuery::default()).await;
    let r1 = &runs[1];
    assert_eq!(r1.run_id.as_str(), "r1");
    let tokens = |u: &TokenUsage| (u.prompt_tokens, u.completion_tokens);
    let by_model: Vec<(&str, (u64, u64))> =
        r1.usage_by_model.iter().map(|(m, u)| (m.as_str(), tokens(u))).collect();
    assert_eq!(by_model, [("big", (120, 12)), ("small", (5, 1))]);
    assert_eq!(tokens(&r1.usage()), (125, 13));
    assert_eq!((r1.status, r1.updated_at), (RunStatus::Running, Timestamp(14)));
    assert_eq!(runs[0].usage(), TokenUsage::default());
    // Kept through a change of status.
    store.append(&id("r1"), 5, &[event(6, 15, EventKind::RunCompleted)]).await.expect("append");
    let done = RunQuery { status: Some(RunStatus::Completed), ..RunQuery::default() };
    assert_eq!(list(store, &done).await.iter().map(|r| tokens(&r.usage())).collect::<Vec<_>>(), [(125, 13)]);
}

/// A fork's copied usage is the source's: after `run_forked`, `list`
/// counts only what the fork itself used.
pub async fn a_fork_counts_only_its_own_usage(store: &dyn RunStore) {
    store.create(new_run("f1", 10)).await.expect("create");
    let copied = [event(2, 3, EventKind::RunStarted), event(3, 4, usage("big", 100, 10))];
    store.append(&id("f1"), 1, &copied).await.expect("append");
    let forked = EventKind::RunForked { source: id("r0"), checkpoint: 3 };
    store.append(&id("f1"), 3, &[event(4, 11, forked)]).await.expect("append");
    let tokens = |r: &RunSummary| (r.usage().prompt_tokens, r.usage().completion_tokens);
    assert_eq!(list(store, &RunQuery::default()).await.iter().map(tokens).collect::<Vec<_>>(), [(0, 0)]);
    store.append(&id("f1"), 4, &[event(5, 12, usage("big", 7, 1))]).await.expect("append");
    assert_eq!(list(store, &RunQuery::default()).await.iter().map(tokens).collect::<Vec<_>>(), [(7, 1)]);
}

/// `summary` is the run's as a listing shows it, current after appends;
/// `None` for a run the store does not hold.
pub async fn summary_is_the_listed_one(store: &dyn RunStore) {
    store.create(new_run("s1", 10)).await.expect("create");
    store.create(new_run("s2", 20)).await.expect("create");
    store.append(&id("s1"), 1, &[event(2, 30, usage("m", 5, 1))]).await.expect("append");
    let listed = list(store, &RunQuery::default()).await;
    for run in &listed {
        let one = store.summary(&run.run_id).await.expect("summary");
        assert_eq!(one.as_deref(), Some(run), "{}", run.run_id);
    }
    let s1 = store.summary(&id("s1")).await.expect("summary").expect("held");
    assert_eq!((s1.updated_at, s1.usage().prompt_tokens), (Timestamp(30), 5));
    assert_eq!(store.summary(&id("nobody")).await, Ok(None));
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
                delete_removes_everything, create_refuses_a_bad_first_event, append_is_all_or_nothing,
                load_from_a_sequence_number_returns_the_tail, list_filters_by_status_and_workflow,
                list_shows_and_filters_by_labels, list_pages_with_limit_and_cursor, list_reports_usage_by_model,
                a_fork_counts_only_its_own_usage, summary_is_the_listed_one);
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
