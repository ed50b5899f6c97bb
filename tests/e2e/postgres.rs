//! The command line on a PostgreSQL store (`--store`, `CAIRN_STORE`): the
//! same verbs and answers as on the data directory, many processes on one
//! database, its schema migrated on open, and the refusals of a database
//! that is not there or is newer than the binary. Each test has a schema of
//! its own in the test database (`cargo xtask postgres` makes it).

use std::path::Path;
use std::process::Command;

use crate::support::{Run, cairn_env, json, scratch, skip_when_served};

/// The test database, as psql and cairn reach it.
fn database() -> String {
    std::env::var("CAIRN_TEST_POSTGRES")
        .unwrap_or_else(|_| "postgres:///cairn_test?host=/var/run/postgresql".into())
}

/// A fresh schema `name` of the test database: the store URL that uses it.
fn fresh_store(name: &str) -> String {
    let base = database();
    let sql = format!("DROP SCHEMA IF EXISTS e2e_{name} CASCADE; CREATE SCHEMA e2e_{name}");
    let made = Command::new("psql").args(["-q", &base, "-c", &sql]).output().expect("psql runs");
    assert!(made.status.success(), "the test database is there (`cargo xtask postgres`): {made:?}");
    let sep = if base.contains('?') { '&' } else { '?' };
    format!("{base}{sep}options=-c%20search_path%3De2e_{name}")
}

fn on(store: &str, dir: &Path, args: &[&str]) -> Run {
    cairn_env(dir, args, &[("CAIRN_STORE", store)])
}

#[test]
fn every_verb_reads_and_drives_runs_kept_in_postgres() {
    if skip_when_served("the store is a database, not a data directory a server holds") {
        return;
    }
    let store = fresh_store("verbs");
    let dir = scratch("postgres_verbs");
    let triage = crate::support::root().join("examples/ticket-triage.yaml");
    let triage = triage.to_str().expect("a path");
    let ran = on(
        &store,
        &dir,
        &["--llm", "mock", "run", triage, "--input", "ticket=printer on fire", "--format", "json"],
    );
    assert_eq!(ran.code, 0, "{}", ran.stderr);
    let run_id = json(&ran.stdout)["run_id"].as_str().expect("an id").to_owned();
    assert!(!dir.join(".cairn").exists(), "no data directory is made");

    // Another process sees it, with its events and figures.
    let listed = json(&on(&store, &dir, &["runs", "--format", "json"]).stdout);
    assert_eq!(listed[0]["run_id"], run_id.as_str());
    assert_eq!(listed[0]["status"], "completed");
    let status = on(&store, &dir, &["status", &run_id, "--format", "json"]);
    assert_eq!(json(&status.stdout)["status"], "completed");
    let events = on(&store, &dir, &["events", &run_id, "--format", "json"]);
    let events = json(&events.stdout);
    assert_eq!(
        events.as_array().and_then(|e| e.last()).map(|e| &e["type"]),
        Some(&serde_json::json!("run_completed"))
    );
    let stats = json(&on(&store, &dir, &["stats", "--format", "json"]).stdout);
    assert_eq!(stats["overall"]["runs"], 1);
    let found = json(&on(&store, &dir, &["search", "printer", "--format", "json"]).stdout);
    assert_eq!(found[0]["id"], run_id.as_str());
    let added = on(&store, &dir, &["workflows", "add", triage]);
    assert_eq!(added.code, 0, "{}", added.stderr);
    let by_id = on(&store, &dir, &["--llm", "mock", "run", "ticket-triage", "--input", "ticket=again"]);
    assert_eq!(by_id.code, 0, "{}", by_id.stderr);
    let tokens = on(&store, &dir, &["token", "create", "ops", "--role", "operator"]);
    assert_eq!(tokens.code, 0, "{}", tokens.stderr);
    assert!(on(&store, &dir, &["token", "list"]).stdout.contains("ops"));
    let pruned = on(&store, &dir, &["prune", "--older-than", "1ms", "--format", "json"]);
    assert_eq!(json(&pruned.stdout)["deleted"].as_array().map(Vec::len), Some(2), "{}", pruned.stdout);
    assert_eq!(on(&store, &dir, &["runs", "--format", "json"]).stdout.trim(), "[]");
}

#[test]
fn the_schema_is_migrated_once_and_a_newer_one_or_no_database_is_refused_with_exit_2() {
    if skip_when_served("the store is a database, not a data directory a server holds") {
        return;
    }
    let store = fresh_store("migrate");
    let dir = scratch("postgres_migrate");
    let first = on(&store, &dir, &["migrate"]);
    assert_eq!(
        (first.code, first.stdout.ends_with(": schema version 0 -> 2\n")),
        (0, true),
        "{} {}",
        first.stdout,
        first.stderr
    );
    let again = on(&store, &dir, &["migrate", "--format", "json"]);
    let again = json(&again.stdout);
    assert_eq!((&again["from"], &again["to"]), (&serde_json::json!(2), &serde_json::json!(2)));

    let base = database();
    let newer = "UPDATE e2e_migrate.cairn_meta SET value = '7' WHERE key = 'schema_version'";
    assert!(Command::new("psql").args(["-q", &base, "-c", newer]).status().expect("psql").success());
    let refused = on(&store, &dir, &["runs"]);
    assert_eq!(refused.code, 2);
    assert!(
        refused.stderr.contains("cairn schema version 7, newer than this binary's 2: run a newer cairn"),
        "{}",
        refused.stderr
    );

    let down = cairn_env(&dir, &["runs"], &[("CAIRN_STORE", "postgres://cairn:hunter2@127.0.0.1:1/nowhere")]);
    assert_eq!(down.code, 2);
    assert!(
        down.stderr.starts_with("error: cannot reach PostgreSQL at cairn@127.0.0.1:1/nowhere"),
        "{}",
        down.stderr
    );
    assert!(!down.stderr.contains("hunter2"), "{}", down.stderr);
    let not_postgres = cairn_env(&dir, &["runs"], &[("CAIRN_STORE", "sqlite://here.db")]);
    assert_eq!(not_postgres.code, 2);
    assert!(
        not_postgres.stderr.contains("--store: a store URL starts with `postgres://`"),
        "{}",
        not_postgres.stderr
    );
    let no_url = cairn_env(&dir, &["migrate"], &[]);
    assert_eq!(no_url.code, 2);
    assert!(no_url.stderr.contains("migrate works on a PostgreSQL store"), "{}", no_url.stderr);
}
