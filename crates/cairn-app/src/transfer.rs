//! Moving runs between stores (`cairn export`, `cairn import`): a run as
//! one JSON record, the definition it recorded and its whole event log,
//! each event with its actor and time as they were, so a run moved from
//! the embedded store to PostgreSQL (or back) reads, forks and audits the
//! same.

use std::collections::BTreeMap;

use cairn_domain::id::{RunId, WorkflowId};
use cairn_domain::state::{Event, EventKind, RunState};
use cairn_engine::EngineError;
use cairn_ports::{NewRun, StoreError};
use serde::{Deserialize, Serialize};

use crate::app::App;
use crate::error::{Error, ImportError};

/// The version of the record's form.
pub const EXPORT_FORMAT: u32 = 1;

/// One run as `export` writes it (a line of JSONL) and `import` reads it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Exported {
    /// The form's version ([`EXPORT_FORMAT`]).
    pub cairn_export: u32,
    /// The run's id.
    pub run_id: RunId,
    /// Its workflow's id.
    pub workflow: WorkflowId,
    /// The definition's file name, as given at start.
    pub definition_name: String,
    /// The definition's exact text, as recorded at start.
    pub definition: String,
    /// The files the definition names (schemas), as they were at start.
    #[serde(default)]
    pub files: BTreeMap<String, String>,
    /// The definition's hash, as recorded at start.
    pub definition_hash: String,
    /// The whole event log, numbered from 1.
    pub events: Vec<Event>,
}

/// What importing one run did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Imported {
    /// The run is new to this store.
    Added,
    /// The store held the start of this very log (an import that stopped
    /// midway): the rest was added.
    Completed,
    /// The store holds this very run already: nothing was written.
    Present,
}

impl App {
    /// `id` as a record to import elsewhere.
    pub async fn export(&self, id: &RunId) -> Result<Exported, Error> {
        let stored = self.store().load(id, 0).await.map_err(EngineError::from)?;
        let Some(EventKind::RunCreated { workflow, definition_hash, .. }) =
            stored.events.first().map(|e| &e.kind)
        else {
            return Err(
                EngineError::Store(StoreError::Corrupt(format!("run `{id}` has no run_created"))).into()
            );
        };
        Ok(Exported {
            cairn_export: EXPORT_FORMAT,
            run_id: id.clone(),
            workflow: workflow.clone(),
            definition_name: stored.definition_name,
            definition: stored.definition,
            files: stored.files,
            definition_hash: definition_hash.clone(),
            events: stored.events,
        })
    }

    /// Adds `record`'s run to this store, its events as they were (actors
    /// and times kept). The log is checked whole before anything is
    /// written (it must fold, event by event, into a run); a run this
    /// store holds already is left as it is when it is the same, and
    /// finished when it is the start of the same log.
    pub async fn import(&self, record: Exported) -> Result<Imported, Error> {
        check(&record)?;
        let run = record.run_id.clone();
        let Some(created) = record.events.first().cloned() else {
            unreachable!("a checked log has its run_created")
        };
        let new = NewRun {
            run_id: run.clone(),
            workflow: record.workflow.clone(),
            definition_name: record.definition_name.clone(),
            definition: record.definition.clone(),
            files: record.files.clone(),
            definition_hash: record.definition_hash.clone(),
            created,
        };
        let (from, imported) = match self.store().create(new).await {
            Ok(()) => (1, Imported::Added),
            Err(StoreError::AlreadyExists(_)) => {
                let held = self.store().load(&run, 0).await.map_err(EngineError::from)?;
                let same_start = held.definition == record.definition && held.files == record.files;
                if !same_start || !record.events.starts_with(&held.events) {
                    return Err(ImportError::Differs { run }.into());
                }
                if held.events.len() == record.events.len() {
                    return Ok(Imported::Present);
                }
                (held.events.len(), Imported::Completed)
            }
            Err(e) => return Err(EngineError::from(e).into()),
        };
        let rest = &record.events[from..];
        if !rest.is_empty() {
            self.store().append(&run, from as u64, rest).await.map_err(EngineError::from)?;
        }
        // Its events are older than what the search index holds: indexed here.
        self.index_runs(std::slice::from_ref(&run)).await?;
        Ok(imported)
    }
}

/// Refuses a record whose log is not a run's (checked again by [`App::import`]): numbered 1, 2, ... from a
/// `run_created` of this run and workflow, folding without a broken rule.
pub(crate) fn check(record: &Exported) -> Result<(), ImportError> {
    if record.cairn_export > EXPORT_FORMAT {
        return Err(ImportError::Format { found: record.cairn_export, known: EXPORT_FORMAT });
    }
    let broken = |reason: String| ImportError::Log { run: record.run_id.clone(), reason };
    let Some(first) = record.events.first() else { return Err(broken("it has no events".into())) };
    match &first.kind {
        EventKind::RunCreated { run_id, workflow, definition_hash, .. } => {
            if *run_id != record.run_id
                || *workflow != record.workflow
                || *definition_hash != record.definition_hash
            {
                return Err(broken("its run_created names another run, workflow or definition".into()));
            }
        }
        _ => return Err(broken("its first event is not run_created".into())),
    }
    let mut state = RunState::create(first).map_err(|e| broken(e.to_string()))?;
    for (expected, event) in (1..).zip(&record.events) {
        if event.seq != expected {
            return Err(broken(format!("event {expected} is numbered {}", event.seq)));
        }
        if expected > 1 {
            state.apply(event).map_err(|e| broken(format!("event {expected}: {e}")))?;
        }
    }
    Ok(())
}
