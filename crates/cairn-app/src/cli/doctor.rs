//! The store's upkeep. `cairn doctor`: what of the embedded store's files
//! is damaged and what can be recovered, read from a copy
//! (`cairn_store_sled::examine`), so the data directory is never changed.
//! Exit 0 when nothing is damaged (a torn tail a crash left is not
//! damage), 2 when something is. `cairn migrate`: a PostgreSQL store's
//! schema brought up to this binary's, alone.

use cairn_domain::state::word;
use cairn_store_sled::{Examination, FileState};

use super::words::{damage_line, damage_words};
use super::{DocFormat, Verbs, exit};
use crate::error::Error;

/// `cairn migrate`: applies the migrations the database of `--store` (or
/// `[store] url`) lacks.
pub(crate) fn migrate(verbs: &Verbs<'_>, format: DocFormat) -> Result<u8, Error> {
    let loaded = verbs.loaded()?;
    let Some(url) = loaded.config.store.database() else {
        return Err(Error::Config(
            "migrate works on a PostgreSQL store: give `--store postgres://...` or `[store] url` \
             (the embedded store needs no migration)"
                .into(),
        ));
    };
    let runtime = crate::host::runtime()?;
    let migrated = runtime.block_on(async {
        let store = cairn_store_postgres::PostgresStore::connect(url)?;
        let migrated = store.migrate().await?;
        Ok::<_, cairn_store_postgres::OpenError>((store.at().to_owned(), migrated))
    });
    let (at, migrated) = migrated.map_err(|e| Error::Store(e.to_string()))?;
    match format {
        DocFormat::Text if migrated.from == migrated.to => {
            outln!("{at}: schema version {} already, nothing to do", migrated.to);
        }
        DocFormat::Text => outln!("{at}: schema version {} -> {}", migrated.from, migrated.to),
        DocFormat::Json => {
            outln!("{}", serde_json::json!({"at": at, "from": migrated.from, "to": migrated.to}));
        }
    }
    Ok(exit::OK)
}

/// Examines the data directory's store and prints the report.
pub(crate) fn doctor(verbs: &Verbs<'_>, format: DocFormat) -> Result<u8, Error> {
    let dir = verbs.data_dir;
    if !dir.is_dir() {
        return Err(Error::Store(format!("there is no data directory at `{}`", dir.display())));
    }
    if let Some(holder) = verbs.holder() {
        return Err(Error::Store(format!(
            "the store at {} is in use by {}: doctor reads the files of a store no process holds",
            dir.display(),
            holder.sentence()
        )));
    }
    let runtime = crate::host::runtime()?;
    let exam = runtime
        .block_on(cairn_store_sled::examine(dir))
        .map_err(|e| Error::Store(format!("the data directory `{}`: {e}", dir.display())))?;
    match format {
        DocFormat::Json => outln!("{}", json(&exam)),
        DocFormat::Text => outln!("{}", text(&dir.display().to_string(), &exam)),
    }
    Ok(if exam.damaged() { exit::USAGE } else { exit::OK })
}

/// One file's state, in words.
fn state_words(state: &FileState) -> String {
    match state {
        FileState::Whole { records: Some(n) } => format!("ok ({n} records)"),
        FileState::Whole { records: None } => "ok".to_owned(),
        FileState::TornTail { records, end } => {
            format!("ok ({records} records; a crash left an unacknowledged write after byte {end}, dropped)")
        }
        FileState::Damaged { offset, what, records } => {
            let at = offset.map(|o| format!(" at byte {o}")).unwrap_or_default();
            let before = records
                .map(|n| format!("; the {n} whole records before it can be recovered"))
                .unwrap_or_default();
            format!("DAMAGED{at}: {}{before}", damage_words(what))
        }
    }
}

/// Why a run's events could not be loaded, in words.
fn load_words(e: &cairn_ports::StoreError) -> String {
    match e {
        cairn_ports::StoreError::Damaged(damage) => damage_line(damage),
        other => other.to_string(),
    }
}

/// The report as people read it.
fn text(dir: &str, exam: &Examination) -> String {
    let mut out = vec![format!("{dir}: {}", if exam.damaged() { "damaged" } else { "no damage found" })];
    let width = exam.files.iter().map(|f| f.name.len()).max().unwrap_or(0);
    for file in &exam.files {
        out.push(format!("  {:<width$}  {:>10} B  {}", file.name, file.bytes, state_words(&file.state)));
    }
    match &exam.damage {
        None => out.push("the store opens".to_owned()),
        Some(damage) => out.push(format!("the store refuses to open: {}", damage_line(damage))),
    }
    match (&exam.damage, &exam.recoverable) {
        (_, None) => out.push(
            "nothing can be recovered by cutting the log back: restore a copy of the data directory"
                .to_owned(),
        ),
        (None, Some(runs)) => out.push(format!("runs ({}):", runs.len())),
        (Some(_), Some(runs)) => out.push(format!(
            "recoverable with each damaged log segment cut back to its whole records and the seal set aside ({} runs):",
            runs.len()
        )),
    }
    for run in exam.recoverable.iter().flatten() {
        let events = match &run.events {
            Ok(n) => format!("{n} events"),
            Err(e) => format!("unreadable: {}", load_words(e)),
        };
        out.push(format!("  {}  {}  {events}", run.run, word(run.status)));
    }
    out.join("\n")
}

/// The report as one JSON document.
fn json(exam: &Examination) -> serde_json::Value {
    let files: Vec<serde_json::Value> = exam
        .files
        .iter()
        .map(|f| {
            let mut v = serde_json::json!({"name": f.name, "bytes": f.bytes});
            match &f.state {
                FileState::Whole { records } => {
                    v["state"] = "ok".into();
                    v["records"] = serde_json::json!(records);
                }
                FileState::TornTail { records, end } => {
                    v["state"] = "torn_tail".into();
                    v["records"] = serde_json::json!(records);
                    v["end"] = serde_json::json!(end);
                }
                FileState::Damaged { offset, what, records } => {
                    v["state"] = "damaged".into();
                    v["offset"] = serde_json::json!(offset);
                    v["what"] = damage_words(what).into();
                    v["records"] = serde_json::json!(records);
                }
            }
            v
        })
        .collect();
    let damage = exam
        .damage
        .as_ref()
        .map(|d| serde_json::json!({"file": d.file, "offset": d.offset, "what": damage_words(&d.what)}));
    let recoverable = exam.recoverable.as_ref().map(|runs| {
        runs.iter()
            .map(|r| match &r.events {
                Ok(n) => serde_json::json!({"run": r.run, "status": word(r.status), "events": n}),
                Err(e) => serde_json::json!({"run": r.run, "status": word(r.status), "events": null, "error": load_words(e)}),
            })
            .collect::<Vec<_>>()
    });
    serde_json::json!({
        "damaged": exam.damaged(),
        "opens": exam.damage.is_none(),
        "files": files,
        "damage": damage,
        "recoverable": recoverable,
    })
}

#[cfg(test)]
mod tests {
    use cairn_domain::state::RunStatus;
    use cairn_ports::{Damage, DamageKind, StoreError};
    use cairn_store_sled::{FileReport, RunReport};

    use super::*;

    /// A store whose log segment is damaged in its middle, with a torn
    /// older segment beside it, and what cutting it back recovers.
    fn damaged() -> Examination {
        let file = |name: &str, bytes, state| FileReport { name: name.into(), bytes, state };
        Examination {
            files: vec![
                file("conf", 62, FileState::Whole { records: None }),
                file("db", 524_287, FileState::Whole { records: None }),
                file("seal", 119, FileState::Whole { records: None }),
                file(
                    "wal-0000000000000002",
                    262_144,
                    FileState::Damaged { offset: Some(2178), what: DamageKind::BadRecord, records: Some(17) },
                ),
            ],
            damage: Some(Damage {
                file: ".cairn/wal-0000000000000002".into(),
                offset: Some(2178),
                what: DamageKind::BadRecord,
            }),
            recoverable: Some(vec![
                RunReport { run: "r1".into(), status: RunStatus::Completed, events: Ok(81) },
                RunReport {
                    run: "r2".into(),
                    status: RunStatus::Running,
                    events: Err(StoreError::Damaged(Damage {
                        file: ".cairn/db".into(),
                        offset: None,
                        what: DamageKind::Broken { run: "r2".into(), seq: 40 },
                    })),
                },
            ]),
        }
    }

    #[test]
    fn a_damaged_store_is_reported_per_file_with_what_can_be_recovered() {
        insta::assert_snapshot!(text(".cairn", &damaged()), @r"
        .cairn: damaged
          conf                          62 B  ok
          db                        524287 B  ok
          seal                         119 B  ok
          wal-0000000000000002      262144 B  DAMAGED at byte 2178: a log record is damaged (not the half-written end a crash leaves); the 17 whole records before it can be recovered
        the store refuses to open: .cairn/wal-0000000000000002 at byte 2178: a log record is damaged (not the half-written end a crash leaves)
        recoverable with each damaged log segment cut back to its whole records and the seal set aside (2 runs):
          r1  completed  81 events
          r2  running  unreadable: .cairn/db: run `r2`: its stored log does not link at event 40
        ");
        insta::assert_snapshot!(serde_json::to_string_pretty(&json(&damaged())).unwrap_or_default(), @r#"
        {
          "damaged": true,
          "opens": false,
          "files": [
            {
              "name": "conf",
              "bytes": 62,
              "state": "ok",
              "records": null
            },
            {
              "name": "db",
              "bytes": 524287,
              "state": "ok",
              "records": null
            },
            {
              "name": "seal",
              "bytes": 119,
              "state": "ok",
              "records": null
            },
            {
              "name": "wal-0000000000000002",
              "bytes": 262144,
              "state": "damaged",
              "offset": 2178,
              "what": "a log record is damaged (not the half-written end a crash leaves)",
              "records": 17
            }
          ],
          "damage": {
            "file": ".cairn/wal-0000000000000002",
            "offset": 2178,
            "what": "a log record is damaged (not the half-written end a crash leaves)"
          },
          "recoverable": [
            {
              "run": "r1",
              "status": "completed",
              "events": 81
            },
            {
              "run": "r2",
              "status": "running",
              "events": null,
              "error": ".cairn/db: run `r2`: its stored log does not link at event 40"
            }
          ]
        }
        "#);
    }

    #[test]
    fn a_whole_store_after_a_crash_is_not_damaged() {
        let exam = Examination {
            files: vec![
                FileReport { name: "db".into(), bytes: 4514, state: FileState::Whole { records: None } },
                FileReport {
                    name: "wal-0000000000000001".into(),
                    bytes: 262_144,
                    state: FileState::TornTail { records: 50, end: 4096 },
                },
            ],
            damage: None,
            recoverable: Some(vec![RunReport {
                run: "r1".into(),
                status: RunStatus::Running,
                events: Ok(51),
            }]),
        };
        assert!(!exam.damaged());
        insta::assert_snapshot!(text(".cairn", &exam), @r"
        .cairn: no damage found
          db                          4514 B  ok
          wal-0000000000000001      262144 B  ok (50 records; a crash left an unacknowledged write after byte 4096, dropped)
        the store opens
        runs (1):
          r1  running  51 events
        ");
    }
}
