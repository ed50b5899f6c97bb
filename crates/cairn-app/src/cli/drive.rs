//! The verbs that drive a run: `run` (start one, from a file or the
//! catalog) and `resume`; and what
//! every driving verb shares: progress on stderr, SIGINT pausing and
//! SIGTERM cancelling the run, a person asked at its gates.

use std::path::{Path, PathBuf};

use std::sync::Arc;

use cairn_domain::Definition;
use cairn_domain::id::{RunId, WorkflowId};
use cairn_domain::state::Launch;
use cairn_domain::steer::Request;
use cairn_ports::Clock;
use serde_json::{Map, Value};

use super::{Opened, RunFormat, Verbs, print_run, prompt};
use crate::app::Run;
use crate::error::{CatalogError, Error};
use crate::files::{load_definition, load_inputs};

/// What `cairn run` starts.
pub(crate) struct Start {
    /// The definition file.
    pub file: PathBuf,
    /// `--input K=V`, in order.
    pub inputs: Vec<String>,
    /// `--inputs FILE`.
    pub inputs_file: Option<PathBuf>,
    /// `--run-id`.
    pub run_id: Option<String>,
    /// `--label K=V`, in order (a later key wins).
    pub labels: Vec<String>,
    /// `--priority`.
    pub priority: i32,
}

/// `cairn run FILE`: starts a run and drives it.
pub(crate) fn run(
    verbs: &Verbs<'_>,
    start: Start,
    interactive: bool,
    format: RunFormat,
) -> Result<u8, Error> {
    let inputs = gather_inputs(start.inputs_file.as_deref(), &start.inputs)?;
    let run_id = match start.run_id {
        Some(id) => super::run_id(&id)?,
        None => cairn_engine::new_run_id(cairn_engine::SystemClock.now()),
    };
    let launch = Launch { labels: super::labels(&start.labels)?, priority: start.priority, parent: None };
    let opened = verbs.open_driving("run", &run_id)?;
    let definition = definition_for(&opened, &start.file)?;
    let by = crate::host::whoami();
    let started = opened.app.start(definition, Value::Object(inputs), Some(run_id.clone()), &by, launch);
    opened.runtime.block_on(started).map_err(|e| inputs_of(e, &start.file))?;
    let run = drive_on(&opened, &run_id, interactive)?;
    Ok(print_run(&run, format))
}

/// `cairn run FILE --detach`: starts a run and returns at once with its
/// id. A server drives it; without one, a background `cairn resume` of its
/// own does (its words go to `logs/RUN.log` in the data directory).
pub(crate) fn detach(verbs: &Verbs<'_>, start: Start, format: RunFormat) -> Result<u8, Error> {
    let inputs = gather_inputs(start.inputs_file.as_deref(), &start.inputs)?;
    let run_id = match start.run_id {
        Some(id) => super::run_id(&id)?,
        None => cairn_engine::new_run_id(cairn_engine::SystemClock.now()),
    };
    let launch = Launch { labels: super::labels(&start.labels)?, priority: start.priority, parent: None };
    let opened = verbs.open("run")?;
    let definition = definition_for(&opened, &start.file)?;
    let by = crate::host::whoami();
    let started = opened.app.start(definition, Value::Object(inputs), Some(run_id.clone()), &by, launch);
    let run = opened.runtime.block_on(started).map_err(|e| inputs_of(e, &start.file))?;
    if !opened.app.served() {
        // Let go of the store first: the background process opens it.
        drop(opened);
        verbs.resume_in_background(&run_id)?;
    }
    match format {
        RunFormat::Text => outln!("{run_id}"),
        RunFormat::Json => {
            print_run(&run, RunFormat::Json);
        }
    }
    Ok(super::exit::OK)
}

/// What `run FILE` starts: the file; or, where no such file exists and
/// FILE is a workflow id, the latest version registered under that id.
fn definition_for(opened: &Opened, file: &Path) -> Result<Definition, Error> {
    let id = file.to_str().filter(|_| !file.exists()).and_then(|text| WorkflowId::new(text).ok());
    let Some(id) = id else { return load_definition(file) };
    match opened.runtime.block_on(opened.app.registered(&id, None)) {
        Ok(version) => crate::catalog::definition_of(&version),
        Err(Error::Catalog(CatalogError::UnknownWorkflow(_))) => Err(Error::File {
            path: file.to_path_buf(),
            reason: "no such file, and no workflow is registered by this id".into(),
        }),
        Err(e) => Err(e),
    }
}

/// Problems with a run's inputs are the inputs file's: say which.
fn inputs_of(e: Error, file: &Path) -> Error {
    match e {
        Error::Engine(cairn_engine::EngineError::Inputs(problems)) => {
            Error::File { path: file.to_path_buf(), reason: problems.join("; ") }
        }
        other => other,
    }
}

/// `cairn resume RUN`: drives a stored run on, first raising its budget
/// to `budget` (USD, and who raised it) when given.
pub(crate) fn resume(
    verbs: &Verbs<'_>,
    id: &RunId,
    budget: Option<(f64, String)>,
    interactive: bool,
    format: RunFormat,
) -> Result<u8, Error> {
    let opened = verbs.open_driving("resume", id)?;
    if let Some((usd, by)) = budget {
        // Nothing is recorded that this process could not drive on.
        opened.runtime.block_on(opened.app.check(id))?;
        opened.runtime.block_on(opened.app.raise_budget(id, usd, &by))?;
    }
    let run = drive_on(&opened, id, interactive)?;
    Ok(print_run(&run, format))
}

/// Drives the run until nothing moves without a person, then asks the
/// person at the terminal (when `interactive`) and drives on.
pub(crate) fn drive_on(opened: &Opened, id: &RunId, interactive: bool) -> Result<Run, Error> {
    signals(opened, id);
    let run = opened.runtime.block_on(opened.app.drive(id))?;
    prompt::converse(opened, run, interactive)
}

/// Turns SIGINT into a pause and SIGTERM into a cancel of the run `id`; a
/// second SIGINT exits at once (what was recorded is kept: `resume` runs
/// the steps that were in flight again).
fn signals(opened: &Opened, id: &RunId) {
    let app = Arc::clone(&opened.app);
    let id = id.clone();
    opened.runtime.spawn(async move {
        use tokio::signal::unix::{SignalKind, signal};
        let (Ok(mut interrupt), Ok(mut terminate)) =
            (signal(SignalKind::interrupt()), signal(SignalKind::terminate()))
        else {
            return;
        };
        let mut interrupted = false;
        loop {
            tokio::select! {
                _ = interrupt.recv() => {
                    if interrupted {
                        eprintln!("stopped at once; `cairn resume {id}` goes on (the steps in flight run again)");
                        std::process::exit(130);
                    }
                    interrupted = true;
                    eprintln!(
                        "pausing: running steps finish, nothing new starts; `cairn resume {id}` goes on \
                         (Ctrl-C again stops at once, SIGTERM cancels)"
                    );
                    app.interrupt(&id, Request::Pause).await;
                }
                _ = terminate.recv() => app.interrupt(&id, Request::Cancel).await,
            }
        }
    });
}

/// `--inputs FILE`, then each `--input K=V` over it. `V` is JSON when it
/// parses as JSON, a string otherwise.
fn gather_inputs(file: Option<&Path>, pairs: &[String]) -> Result<Map<String, Value>, Error> {
    let mut inputs = match file {
        Some(path) => load_inputs(path)?,
        None => Map::new(),
    };
    for pair in pairs {
        let Some((key, value)) = pair.split_once('=') else {
            return Err(Error::Config(format!("--input `{pair}` must be KEY=VALUE")));
        };
        let value = serde_json::from_str(value).unwrap_or_else(|_| Value::String(value.to_owned()));
        inputs.insert(key.trim().to_owned(), value);
    }
    Ok(inputs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inputs_parse_json_values_else_strings() {
        let pairs =
            ["n=3".to_owned(), "list=[1,2]".to_owned(), "name=src/lib.rs".to_owned(), "q= a=b".to_owned()];
        let inputs = gather_inputs(None, &pairs).expect("valid");
        assert_eq!(
            Value::Object(inputs),
            serde_json::json!({"n": 3, "list": [1, 2], "name": "src/lib.rs", "q": " a=b"})
        );
        assert!(gather_inputs(None, &["novalue".to_owned()]).is_err());
    }
}
