//! The verbs that steer and inspect stored runs: `runs`, `status`,
//! `events`, `checkpoints`, `resume`, `pause`, `cancel`, `fork`, `prune`.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use cairn_domain::definition::Workflow;
use cairn_domain::id::RunId;
use cairn_domain::state::{Event, RunState, RunStatus};
use cairn_engine::{Control, Engine, EngineBuilder, EngineError, SystemClock};
use cairn_ports::{Clock, RunStore, StoreError};
use cairn_store_sled::SledStore;
use serde_json::json;

use crate::cli::{EventsFormat, ListFormat, RunFormat, exit};
use crate::config::Loaded;
use crate::files::load_recorded;
use crate::run::{new_run_id, print_run, usage};
use crate::runview::{self, iso_time};
use crate::session::{self, Holder};

/// What every steering verb needs from the command line.
pub struct Common<'a> {
    /// `--data-dir`.
    pub data_dir: &'a Path,
    /// `--config`.
    pub config: Option<&'a Path>,
    /// `--llm`.
    pub llm: Option<&'a str>,
}

/// The store, a runtime, and the config, for one verb.
pub(crate) struct Opened {
    pub store: Arc<SledStore>,
    pub runtime: tokio::runtime::Runtime,
    pub loaded: Loaded,
}

fn open(common: &Common<'_>, verb: &str, run: Option<&RunId>) -> Result<Opened, u8> {
    let loaded = Loaded::load(common.config).map_err(usage)?;
    let settings = session::store_settings(&loaded).map_err(usage)?;
    let store = session::open_store(common.data_dir, settings, verb, run).map_err(usage)?;
    let runtime = session::runtime().map_err(usage)?;
    Ok(Opened { store: Arc::new(store), runtime, loaded })
}

fn run_id(text: &str) -> Result<RunId, u8> {
    RunId::new(text).map_err(usage)
}

/// A usage error (printed), as the early return of a verb.
fn fail(message: impl std::fmt::Display) -> Result<u8, u8> {
    Err(usage(message))
}

/// Folds a stored run; unknown runs are a usage error.
pub(crate) fn load(o: &Opened, id: &RunId) -> Result<(RunState, Workflow, Vec<Event>), u8> {
    let stored = o.runtime.block_on(o.store.load(id)).map_err(|e| match e {
        StoreError::NotFound(_) => usage(format!("no run `{id}` in this data directory")),
        other => usage(other),
    })?;
    let workflow =
        load_recorded(&stored.definition_name, &stored.definition, &stored.files).map_err(|problems| {
            let first = problems.0.first().map(|p| p.render(&stored.definition_name)).unwrap_or_default();
            usage(format!("the definition recorded with run `{id}` no longer loads: {first}"))
        })?;
    let state = RunState::fold(&stored.events)
        .map_err(usage)?
        .ok_or_else(|| usage(format!("run `{id}` has no events")))?;
    Ok((state, workflow, stored.events))
}

/// `cairn runs`.
pub fn runs(
    common: &Common<'_>,
    status: Option<&str>,
    workflow: Option<&str>,
    format: ListFormat,
) -> Result<u8, u8> {
    let o = open(common, "runs", None)?;
    let list = o.runtime.block_on(o.store.list()).map_err(usage)?;
    let word = cairn_domain::state::word::<RunStatus>;
    let rows: Vec<_> = list
        .into_iter()
        .filter(|r| status.is_none_or(|s| word(r.status) == s))
        .filter(|r| workflow.is_none_or(|w| r.workflow.as_str() == w))
        .collect();
    // Tokens and cost of each run, folded from its log.
    let usage_of = |r: &cairn_ports::RunSummary| {
        let stored = o.runtime.block_on(o.store.load(&r.run_id)).ok()?;
        let state = RunState::fold(&stored.events).ok().flatten()?;
        Some((state.usage, o.loaded.cost(&state.usage_by_model)))
    };
    match format {
        ListFormat::Table => {
            println!(
                "{:<18} {:<20} {:<20} {:<24} {:<24} {:>10} {:>9}",
                "RUN", "WORKFLOW", "STATUS", "CREATED", "UPDATED", "TOKENS", "COST"
            );
            for r in &rows {
                let (tokens, cost) = match usage_of(r) {
                    Some((u, cost)) => (
                        (u.prompt_tokens + u.completion_tokens).to_string(),
                        cost.map_or("-".to_owned(), |c| format!("${c:.4}")),
                    ),
                    None => ("-".to_owned(), "-".to_owned()),
                };
                println!(
                    "{:<18} {:<20} {:<20} {:<24} {:<24} {tokens:>10} {cost:>9}",
                    r.run_id.as_str(),
                    r.workflow.as_str(),
                    word(r.status),
                    iso_time(r.created_at),
                    iso_time(r.updated_at)
                );
            }
        }
        ListFormat::Json => {
            let out: Vec<_> = rows
                .iter()
                .map(|r| {
                    let usage_json = usage_of(r).map(|(u, cost)| {
                        json!({"prompt_tokens": u.prompt_tokens, "completion_tokens": u.completion_tokens,
                               "estimated": u.estimated, "cost_usd": cost})
                    });
                    json!({
                        "run_id": r.run_id, "workflow": r.workflow, "status": r.status,
                        "created_at": iso_time(r.created_at), "updated_at": iso_time(r.updated_at), "usage": usage_json,
                    })
                })
                .collect();
            println!("{}", serde_json::Value::Array(out));
        }
    }
    Ok(exit::OK)
}

/// `cairn status RUN`.
pub fn status(common: &Common<'_>, id: &str, format: RunFormat) -> Result<u8, u8> {
    let (o, id) = open_for(common, "status", id)?;
    let (state, workflow, _) = load(&o, &id)?;
    print_run(&state, &workflow, &o.loaded, format);
    Ok(exit::OK)
}

pub(crate) fn open_for(common: &Common<'_>, verb: &str, id: &str) -> Result<(Opened, RunId), u8> {
    let id = run_id(id)?;
    let o = open(common, verb, Some(&id))?;
    Ok((o, id))
}

/// `cairn events RUN`.
pub fn events(common: &Common<'_>, id: &str, format: EventsFormat) -> Result<u8, u8> {
    let (o, id) = open_for(common, "events", id)?;
    let (_, _, events) = load(&o, &id)?;
    for e in &events {
        match format {
            EventsFormat::Jsonl => println!("{}", serde_json::to_string(e).unwrap_or_default()),
            EventsFormat::Text => println!("{}", runview::event_text(e)),
        }
    }
    Ok(exit::OK)
}

/// `cairn checkpoints RUN`.
pub fn checkpoints(common: &Common<'_>, id: &str, format: ListFormat) -> Result<u8, u8> {
    let (o, id) = open_for(common, "checkpoints", id)?;
    let (_, _, events) = load(&o, &id)?;
    let list = cairn_domain::checkpoint::checkpoints(&events);
    match format {
        ListFormat::Table => {
            println!("{:>6}  {:<24}  {:>10}  LABEL", "SEQ", "AT", "SIZE");
            for c in &list {
                println!("{:>6}  {:<24}  {:>10}  {}", c.seq, iso_time(c.at), c.size_bytes, c.label);
            }
        }
        ListFormat::Json => {
            let rows: Vec<_> = list
                .iter()
                .map(|c| json!({"seq": c.seq, "at": iso_time(c.at), "label": c.label, "size_bytes": c.size_bytes}))
                .collect();
            println!("{}", serde_json::Value::Array(rows));
        }
    }
    Ok(exit::OK)
}

/// An engine that drives `workflow`'s runs, paused by SIGINT and cancelled by SIGTERM.
pub(crate) fn driving_engine(common: &Common<'_>, o: &Opened, workflow: &Workflow) -> Result<Engine, u8> {
    let control = session::signals(&o.runtime);
    session::engine(Arc::clone(&o.store), &o.loaded, common.llm, workflow, control).map_err(usage)
}

/// `cairn resume RUN`: drives the run on, and converses at its gates.
pub fn resume(common: &Common<'_>, id: &str, non_interactive: bool, format: RunFormat) -> Result<u8, u8> {
    let (o, id) = open_for(common, "resume", id)?;
    let (_, workflow, _) = load(&o, &id)?;
    let engine = driving_engine(common, &o, &workflow)?;
    let state = crate::gate::drive_on(&o.runtime, &engine, &id, &workflow, !non_interactive);
    Ok(crate::gate::finish(state, &id, &workflow, &o.loaded, format))
}

/// `cairn pause RUN` and `cairn cancel RUN`: signal the process driving the
/// run and wait for it to let go; a run nobody drives is marked directly.
pub fn pause_or_cancel(common: &Common<'_>, id: &str, cancel: bool) -> Result<u8, u8> {
    let id = run_id(id)?;
    let verb = if cancel { "cancel" } else { "pause" };
    if let Some(holder) = Holder::of(common.data_dir)
        && holder.pid != std::process::id()
        && process_alive(holder.pid)
    {
        if holder.run.as_deref() != Some(id.as_str()) {
            return fail(format!(
                "the store is in use by {}; {verb} that run or wait for it",
                holder.sentence()
            ));
        }
        let signal =
            if cancel { nix::sys::signal::Signal::SIGTERM } else { nix::sys::signal::Signal::SIGINT };
        let pid = nix::unistd::Pid::from_raw(i32::try_from(holder.pid).unwrap_or(0));
        if let Err(e) = nix::sys::signal::kill(pid, signal) {
            return Err(usage(format!("cannot signal {}: {e}", holder.sentence())));
        }
        eprintln!("asked {} to {verb}; waiting for it to stop", holder.sentence());
        // The store's lock is released when the driver exits: wait for that.
        let loaded = Loaded::load(common.config).map_err(usage)?;
        let settings = session::store_settings(&loaded).map_err(usage)?;
        let wait = Duration::from_secs(600);
        match session::open_store_within(common.data_dir, settings, verb, Some(&id), wait) {
            Ok(store) => drop(store),
            Err(e) => return fail(e),
        }
    }
    let o = open(common, verb, Some(&id))?;
    let (_, workflow, _) = load(&o, &id)?;
    let request = if cancel { Control::Cancel } else { Control::Pause };
    let state = match o.runtime.block_on(steering_engine(&o).stop(&id, request)) {
        Ok(state) => state,
        Err(EngineError::Finished { status, .. }) => {
            return fail(format!(
                "run `{id}` has ended ({}); there is nothing to {verb}",
                runview::word(status)
            ));
        }
        Err(e) => return fail(e),
    };
    print_run(&state, &workflow, &o.loaded, RunFormat::Text);
    Ok(runview::exit_code(state.status))
}

/// An engine for verbs that only record (pause, cancel, fork): the person
/// running the verb is the actor of what it records.
fn steering_engine(o: &Opened) -> cairn_engine::Engine {
    EngineBuilder::new(Arc::clone(&o.store) as Arc<dyn RunStore>).actor(session::whoami()).build()
}

fn process_alive(pid: u32) -> bool {
    let Ok(raw) = i32::try_from(pid) else { return false };
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(raw), None).is_ok()
}

/// `cairn fork RUN --checkpoint N`.
pub fn fork(common: &Common<'_>, id: &str, checkpoint: u64, format: RunFormat) -> Result<u8, u8> {
    let (o, id) = open_for(common, "fork", id)?;
    let (_, workflow, _) = load(&o, &id)?;
    let new_id = new_run_id(SystemClock.now().0);
    let state = match o.runtime.block_on(steering_engine(&o).fork(&id, checkpoint, new_id.clone())) {
        Ok(state) => state,
        Err(EngineError::NoCheckpoint { last, .. }) => {
            let last = last.map_or("none".to_owned(), |l| l.to_string());
            return fail(format!(
                "run `{id}` has no checkpoint {checkpoint} (its checkpoints: `cairn checkpoints {id}`; the last is {last})"
            ));
        }
        Err(e) => return fail(e),
    };
    match format {
        RunFormat::Text => println!("{new_id}"),
        RunFormat::Json => {
            let cost = o.loaded.cost(&state.usage_by_model);
            println!("{}", runview::run_json(&state, &workflow, cost, SystemClock.now()))
        }
    }
    Ok(exit::OK)
}

/// `cairn prune --older-than D`: deletes ended runs last updated before now − D.
pub fn prune(common: &Common<'_>, older_than: &str) -> Result<u8, u8> {
    let age = match older_than.parse::<cairn_domain::duration::Duration>() {
        Ok(d) => d,
        Err(e) => return fail(format!("--older-than: {e}")),
    };
    let o = open(common, "prune", None)?;
    let cutoff = SystemClock.now().0.saturating_sub(age.as_millis());
    let list = o.runtime.block_on(o.store.list()).map_err(usage)?;
    let mut pruned = 0;
    for r in list.iter().filter(|r| r.status.is_terminal() && r.updated_at.0 < cutoff) {
        if let Err(e) = o.runtime.block_on(o.store.delete(&r.run_id)) {
            return Err(usage(e));
        }
        pruned += 1;
    }
    println!("pruned {pruned} run(s) that ended more than {age} ago");
    Ok(exit::OK)
}
