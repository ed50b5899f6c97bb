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
    let url = format!("{base}{sep}options=-c%20search_path%3D{schema}");
    PostgresStore::open(&url).await.unwrap_or_else(|e| panic!("{e}"))
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
    assert!(message.contains("schema version 99, newer than this binary's 1"), "{message}");
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
