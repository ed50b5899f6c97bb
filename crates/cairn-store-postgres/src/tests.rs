//! The conformance suites on a real PostgreSQL: each test in a schema of
//! its own, in the database `CAIRN_TEST_POSTGRES` names (default: the
//! local socket's `cairn_test`, which `.ci/run` makes).

use std::sync::atomic::{AtomicUsize, Ordering};

use super::*;

/// The database the tests use.
pub(crate) fn test_url() -> String {
    std::env::var("CAIRN_TEST_POSTGRES")
        .unwrap_or_else(|_| "postgres:///cairn_test?host=/var/run/postgresql".to_owned())
}

/// A store in a fresh schema of the test database.
pub(crate) async fn fresh() -> PostgresStore {
    PostgresStore::open(&fresh_url().await).await.unwrap_or_else(|e| panic!("{e}"))
}

/// The URL of a fresh schema of the test database (each store opened on
/// it is another worker).
pub(crate) async fn fresh_url() -> String {
    static COUNT: AtomicUsize = AtomicUsize::new(0);
    let nanos =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.subsec_nanos());
    let schema = format!("t{}_{}_{nanos}", std::process::id(), COUNT.fetch_add(1, Ordering::Relaxed));
    let base = test_url();
    let admin = PostgresStore::connect(&base).unwrap_or_else(|e| panic!("{e}"));
    let client = admin.client().await.unwrap_or_else(|e| {
        panic!("{e}: the tests need PostgreSQL (start it: `pg_ctlcluster 15 main start`; see .ci/run)")
    });
    client.batch_execute(&format!("CREATE SCHEMA {schema}")).await.unwrap_or_else(|e| panic!("{e}"));
    let sep = if base.contains('?') { '&' } else { '?' };
    format!("{base}{sep}options=-c%20search_path%3D{schema}")
}

cairn_testkit::run_store_suite!(crate::tests::fresh().await);
cairn_testkit::run_token_store_suite!(crate::tests::fresh().await);
cairn_testkit::run_workflow_store_suite!(crate::tests::fresh().await);

#[tokio::test]
async fn opening_twice_migrates_once_and_a_newer_schema_is_refused_naming_both_versions() {
    let store = fresh().await;
    assert_eq!(store.migrate().await.ok(), Some(Migrated { from: SCHEMA_VERSION, to: SCHEMA_VERSION }));
    let client = store.client().await.unwrap_or_else(|e| panic!("{e}"));
    client
        .execute("UPDATE cairn_meta SET value = '99' WHERE key = 'schema_version'", &[])
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let refused = store.migrate().await.map(|_| ()).map_err(|e| e.to_string());
    let message = refused.expect_err("refused");
    let expected = format!("schema version 99, newer than this binary's {SCHEMA_VERSION}");
    assert!(message.contains(&expected), "{message}");
}

#[tokio::test]
async fn a_database_that_is_not_there_is_a_clear_error_without_the_password() {
    let store = PostgresStore::open("postgres://cairn:hunter2@127.0.0.1:1/nowhere").await;
    let message = store.map(|_| ()).expect_err("unreachable").to_string();
    assert!(message.starts_with("cannot reach PostgreSQL at cairn@127.0.0.1:1/nowhere"), "{message}");
    assert!(!message.contains("hunter2"), "{message}");
    let bad = PostgresStore::connect("mysql://x").map(|_| ()).expect_err("not postgres").to_string();
    assert!(bad.starts_with("not a PostgreSQL URL"), "{bad}");
}

#[tokio::test]
async fn of_two_writers_appending_after_the_same_event_exactly_one_commits() {
    use cairn_domain::state::EventKind;
    let store = fresh().await;
    let run = cairn_testkit::store_suite::new_run("race", 10);
    let id = run.run_id.clone();
    store.create(run).await.unwrap_or_else(|e| panic!("{e}"));
    let event =
        |actor: &str| Event { seq: 2, at: Timestamp(11), actor: actor.into(), kind: EventKind::RunStarted };
    let (first, second) = ([event("a")], [event("b")]);
    let (a, b) = tokio::join!(store.append(&id, 1, &first), store.append(&id, 1, &second));
    let committed = [a.is_ok(), b.is_ok()];
    assert_eq!(committed.iter().filter(|ok| **ok).count(), 1, "{a:?} {b:?}");
    let refused = if a.is_ok() { b } else { a };
    assert!(matches!(refused, Err(StoreError::Conflict { expected: 1, .. })), "{refused:?}");
    let log = store.load(&id, 0).await.unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(log.events.len(), 2);
}

mod leases {
    use cairn_ports::{Answer, Ask, Claim, Lease, Leases, Notice};
    use cairn_testkit::store_suite::new_run;

    use super::*;

    /// Two workers on one fresh schema.
    async fn two() -> (PostgresStore, PostgresStore) {
        let url = fresh_url().await;
        let open = || async { PostgresStore::open(&url).await.unwrap_or_else(|e| panic!("{e}")) };
        (open().await, open().await)
    }

    async fn created(store: &PostgresStore, id: &str) -> RunId {
        let run = new_run(id, 10);
        let id = run.run_id.clone();
        store.create(run).await.unwrap_or_else(|e| panic!("{e}"));
        id
    }

    fn held(claim: Claim) -> Lease {
        match claim {
            Claim::Held(lease) => lease,
            Claim::Taken { worker } => panic!("taken by {worker}"),
        }
    }

    fn started(seq: u64, actor: &str) -> [Event; 1] {
        [Event {
            seq,
            at: Timestamp(11),
            actor: actor.into(),
            kind: cairn_domain::state::EventKind::RunStarted,
        }]
    }

    /// Ends every live lease on `run` now, as if its term passed.
    async fn expire(store: &PostgresStore, run: &RunId) {
        let client = store.client().await.unwrap_or_else(|e| panic!("{e}"));
        client
            .execute(
                "UPDATE cairn_runs SET lease_until = now() - interval '1 second' WHERE run_id = $1",
                &[&run.as_str()],
            )
            .await
            .unwrap_or_else(|e| panic!("{e}"));
    }

    #[tokio::test]
    async fn a_lease_is_one_workers_and_a_worker_paused_past_it_can_never_commit_over_its_successor() {
        let (a, b) = two().await;
        assert_ne!(a.worker(), b.worker(), "each process is a worker of its own");
        let run = created(&a, "fenced").await;
        let first = held(a.claim(&run).await.expect("claims"));
        assert_eq!(first.token, 1);
        assert_eq!(b.claim(&run).await.expect("answers"), Claim::Taken { worker: a.worker().to_owned() });
        assert_eq!(held(a.claim(&run).await.expect("claims")), first, "claimed again: the same lease");
        assert_eq!(b.holder(&run).await.expect("reads"), Some(a.worker().to_owned()));

        // Without a lease, nobody writes beside the holder.
        let refused = b.append(&run, 1, &started(2, "b")).await;
        assert!(
            matches!(&refused, Err(StoreError::Leased { worker, .. }) if worker == a.worker()),
            "{refused:?}"
        );

        // a stops (SIGSTOP) past its term; b takes the run over.
        expire(&a, &run).await;
        let second = held(b.claim(&run).await.expect("claims"));
        assert_eq!(second.token, 2, "each takeover raises the token");
        // a thaws and writes after the same event as b would: refused by
        // the token, before b wrote anything.
        let zombie = a.append(&run, 1, &started(2, "a")).await;
        assert!(
            matches!(&zombie, Err(StoreError::Leased { worker, .. }) if worker == b.worker()),
            "{zombie:?}"
        );
        assert_eq!(
            a.renew(std::slice::from_ref(&first)).await.expect("renews"),
            std::slice::from_ref(&run),
            "lost"
        );
        b.append(&run, 1, &started(2, "b")).await.expect("the holder writes");
        assert_eq!(b.renew(std::slice::from_ref(&second)).await.expect("renews"), Vec::<RunId>::new());
        let log = a.load(&run, 0).await.expect("loads");
        assert_eq!(log.events.iter().map(|e| e.actor.as_str()).collect::<Vec<_>>(), ["engine", "b"]);

        // Released, the run is anyone's again.
        b.release(&second, None).await.expect("releases");
        assert_eq!(a.holder(&run).await.expect("reads"), None);
        assert_eq!(held(a.claim(&run).await.expect("claims")).token, 3);
    }

    #[tokio::test]
    async fn due_runs_are_claimed_by_one_worker_each_highest_priority_first() {
        let (a, b) = two().await;
        let mut runs = Vec::new();
        for (id, priority) in [("low", -1), ("plain", 0), ("urgent", 5)] {
            let mut run = new_run(id, 10);
            if let cairn_domain::state::EventKind::RunCreated { priority: p, .. } = &mut run.created.kind {
                *p = priority;
            }
            runs.push(run.run_id.clone());
            a.create(run).await.expect("creates");
        }
        // Created at 10 ms after the epoch: their starters' grace is long past.
        let (first, second) = tokio::join!(a.claim_due(2), b.claim_due(2));
        let (first, second) = (first.expect("claims"), second.expect("claims"));
        let mut all: Vec<&str> = first.iter().chain(&second).map(|l| l.run.as_str()).collect();
        assert_eq!(all.len(), 3, "each run once: {first:?} {second:?}");
        all.sort_unstable();
        assert_eq!(all, ["low", "plain", "urgent"]);
        let order: Vec<&str> = first.iter().chain(&second).map(|l| l.run.as_str()).collect();
        assert!(order == ["urgent", "plain", "low"] || order == ["low", "urgent", "plain"], "{order:?}");
        assert!(a.claim_due(5).await.expect("claims").is_empty(), "all leased");

        // Released with a deadline to come, or none, a run is not due; with
        // one passed, it is.
        let lease = |run: &str| first.iter().chain(&second).find(|l| l.run.as_str() == run).cloned();
        let (urgent, plain, low) = (lease("urgent"), lease("plain"), lease("low"));
        let release = |lease: Option<Lease>, wake: Option<Timestamp>| {
            let (a, b) = (&a, &b);
            async move {
                let lease = lease.expect("claimed");
                // Whichever worker holds it releases it; the other's release does nothing.
                a.release(&lease, wake).await.expect("releases");
                b.release(&lease, wake).await.expect("releases");
            }
        };
        release(urgent, Some(Timestamp(u64::MAX / 4))).await;
        release(plain, None).await;
        release(low, Some(Timestamp(5))).await;
        let due: Vec<String> =
            a.claim_due(5).await.expect("claims").iter().map(|l| l.run.to_string()).collect();
        assert_eq!(due, ["low"]);
        b.wake(&runs[1]).await.expect("wakes");
        let woken: Vec<String> =
            b.claim_due(5).await.expect("claims").iter().map(|l| l.run.to_string()).collect();
        assert_eq!(woken, ["plain"], "woken by a request");
    }

    #[tokio::test]
    async fn a_request_reaches_the_holder_and_its_answer_comes_back_once() {
        let (a, b) = two().await;
        let run = created(&a, "asked").await;
        let (heard, mut hearing) = tokio::sync::mpsc::unbounded_channel();
        b.listen(Arc::new(move |notice| {
            let _ = heard.send(notice);
        }))
        .await
        .expect("listens");
        assert_eq!(hearing.recv().await, Some(Notice::Wake), "told to look once listening");

        let ask = Ask::Stop { request: cairn_domain::steer::Request::Cancel, by: "alice".into() };
        let id = a.ask(&run, b.worker(), &ask).await.expect("asks");
        assert_eq!(hearing.recv().await, Some(Notice::Asked));
        assert_eq!(b.asked().await.expect("reads"), [(id, run.clone(), ask.clone())]);
        assert!(a.asked().await.expect("reads").is_empty(), "asked of b only");
        assert_eq!(a.answer_of(id).await.expect("reads"), None, "not answered yet");
        b.answer(id, &Answer::Done).await.expect("answers");
        assert_eq!(a.answer_of(id).await.expect("reads"), Some(Answer::Done));
        assert_eq!(a.answer_of(id).await.expect("reads"), None, "read once");

        let unanswered = a.ask(&run, b.worker(), &ask).await.expect("asks");
        assert!(a.withdraw(unanswered).await.expect("withdraws"));
        assert!(b.asked().await.expect("reads").is_empty());

        // b hears a's appends and wake-ups, never its own.
        held(a.claim(&run).await.expect("claims"));
        a.append(&run, 1, &started(2, "a")).await.expect("appends");
        let mut notices = Vec::new();
        while notices.len() < 2 {
            notices.push(hearing.recv().await.expect("hears"));
        }
        assert!(notices.contains(&Notice::Appended { run: run.clone(), first: 2, last: 2 }), "{notices:?}");
        a.wake(&run).await.expect("wakes");
        assert_eq!(hearing.recv().await, Some(Notice::Wake));
    }
}

mod search {
    use cairn_ports::{DocKind, IndexMark, SearchDoc, SearchHit, SearchIndex, SearchQuery, TextField};

    use super::*;

    fn doc(kind: DocKind, id: &str, workflow: &str, text: &[(TextField, &str)]) -> SearchDoc {
        SearchDoc {
            kind,
            id: id.into(),
            workflow: WorkflowId::new(workflow).unwrap_or_else(|e| panic!("{e}")),
            text: text.iter().map(|(f, t)| (*f, (*t).to_owned())).collect(),
        }
    }

    fn query(text: &str) -> SearchQuery {
        SearchQuery { text: text.into(), kind: None, workflow: None, limit: 10 }
    }

    async fn ids(index: &PostgresStore, q: SearchQuery) -> Vec<String> {
        let hits = index.search(&q).await.unwrap_or_else(|e| panic!("{e}"));
        hits.into_iter().map(|h| h.id).collect()
    }

    fn marked(hit: &SearchHit) -> String {
        hit.snippet.iter().map(|f| if f.hit { format!("[{}]", f.text) } else { f.text.clone() }).collect()
    }

    async fn filled() -> PostgresStore {
        let store = fresh().await;
        let corpus = vec![
            doc(
                DocKind::Workflow,
                "ticket-triage",
                "ticket-triage",
                &[
                    (TextField::Name, "Ticket triage"),
                    (TextField::Description, "Sorts incoming support tickets."),
                ],
            ),
            doc(
                DocKind::Run,
                "r-1",
                "ticket-triage",
                &[
                    (TextField::Inputs, "ticket: The printer on floor 3 is on fire \u{1}"),
                    (TextField::Outputs, "urgency: high"),
                ],
            ),
            doc(
                DocKind::Run,
                "r-2",
                "release-notes",
                &[(TextField::Errors, "step `draft` failed: the provider timed out")],
            ),
        ];
        store.commit(corpus, Vec::new(), IndexMark::default()).await.unwrap_or_else(|e| panic!("{e}"));
        store
    }

    #[tokio::test]
    async fn ranked_by_weighted_fields_stemmed_with_the_matched_words_marked() {
        let store = filled().await;
        let hits = store.search(&query("tickets")).await.unwrap_or_else(|e| panic!("{e}"));
        let found: Vec<&str> = hits.iter().map(|h| h.id.as_str()).collect();
        assert_eq!(found, ["ticket-triage", "r-1"]);
        assert_eq!((hits[0].kind, hits[0].field), (DocKind::Workflow, TextField::Name));
        assert_eq!(marked(&hits[0]), "[Ticket] triage");
        assert_eq!(hits[1].field, TextField::Inputs);
        // The marker character in the text was indexed as a space.
        assert_eq!(marked(&hits[1]), "[ticket]: The printer on floor 3 is on fire  ");
        let failing = store.search(&query("FAILING")).await.unwrap_or_else(|e| panic!("{e}"));
        assert_eq!((failing[0].id.as_str(), failing[0].field), ("r-2", TextField::Errors));
        assert_eq!(marked(&failing[0]), "step `draft` [failed]: the provider timed out");
    }

    #[tokio::test]
    async fn filters_phrases_exclusions_and_text_the_syntax_cannot_read() {
        let store = filled().await;
        assert_eq!(ids(&store, SearchQuery { kind: Some(DocKind::Run), ..query("ticket") }).await, ["r-1"]);
        let other = SearchQuery {
            workflow: Some(WorkflowId::new("release-notes").unwrap_or_else(|e| panic!("{e}"))),
            ..query("ticket")
        };
        assert!(ids(&store, other).await.is_empty());
        assert_eq!(ids(&store, SearchQuery { limit: 1, ..query("ticket") }).await.len(), 1);
        assert_eq!(ids(&store, query("\"on fire\"")).await, ["r-1"]);
        assert_eq!(ids(&store, query("ticket -printer")).await, ["ticket-triage"]);
        for broken in ["\"unclosed", "name:(", "((", ":", "-", "the", "&|!"] {
            let hits = store.search(&query(broken)).await;
            assert!(hits.is_ok(), "{broken}: {hits:?}");
        }
    }

    #[tokio::test]
    async fn a_put_replaces_gone_runs_leave_and_the_mark_is_kept_with_them() {
        let store = filled().await;
        assert_eq!(store.mark().await.unwrap_or_else(|e| panic!("{e}")), IndexMark::default());
        let again = doc(DocKind::Run, "r-1", "ticket-triage", &[(TextField::Outputs, "urgency: low")]);
        let mark = IndexMark { runs_until: Some(Timestamp(42)), ..IndexMark::default() };
        store.commit(vec![again], vec!["r-2".into()], mark.clone()).await.unwrap_or_else(|e| panic!("{e}"));
        assert!(ids(&store, query("printer")).await.is_empty());
        assert_eq!(ids(&store, query("urgency")).await, ["r-1"]);
        assert!(ids(&store, query("provider")).await.is_empty());
        assert_eq!(store.mark().await.unwrap_or_else(|e| panic!("{e}")), mark);
    }
}
