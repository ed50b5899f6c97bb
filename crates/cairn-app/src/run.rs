//! `cairn run`: load, check inputs, wire the adapters, drive the run, print
//! progress and the result.

use std::hash::{BuildHasher, Hasher};
use std::path::Path;
use std::sync::Arc;

use cairn_domain::definition::Workflow;
use cairn_domain::id::RunId;
use cairn_domain::state::RunState;
use cairn_engine::{Definition, EngineError, SystemClock};
use cairn_ports::{Clock, StoreError};
use serde_json::{Map, Value};

use crate::cli::{RunFormat, exit};
use crate::config::Loaded;
use crate::files::{load_definition, load_inputs};
use crate::{runview, session};

/// What `cairn run` was asked.
pub struct RunRequest<'a> {
    /// The definition file.
    pub file: &'a Path,
    /// `--input K=V`, in order.
    pub inputs: &'a [String],
    /// `--inputs FILE`.
    pub inputs_file: Option<&'a Path>,
    /// `--run-id`.
    pub run_id: Option<&'a str>,
    /// `--format`.
    pub format: RunFormat,
    /// `--config`.
    pub config: Option<&'a Path>,
    /// `--llm`.
    pub llm: Option<&'a str>,
    /// `--data-dir`.
    pub data_dir: &'a Path,
    /// `--non-interactive`: never ask at the terminal.
    pub non_interactive: bool,
}

/// Prints a usage error and returns exit code 2.
pub fn usage(message: impl std::fmt::Display) -> u8 {
    eprintln!("error: {message}");
    exit::USAGE
}

/// Runs `cairn run`; returns the exit code.
pub fn run(req: &RunRequest<'_>) -> u8 {
    let name = req.file.display().to_string();
    let loaded_def = match load_definition(req.file) {
        Ok(loaded) => loaded,
        Err(problems) => {
            for p in &problems.0 {
                eprintln!("{}", p.render(&name));
            }
            return exit::USAGE;
        }
    };
    let inputs = match gather_inputs(req.inputs_file, req.inputs) {
        Ok(inputs) => inputs,
        Err(e) => return usage(e),
    };
    let run_id = match req.run_id {
        Some(id) => match RunId::new(id) {
            Ok(id) => id,
            Err(e) => return usage(e),
        },
        None => new_run_id(SystemClock.now().0),
    };
    let loaded = match Loaded::load(req.config) {
        Ok(loaded) => loaded,
        Err(e) => return usage(e),
    };
    let settings = match session::store_settings(&loaded) {
        Ok(d) => d,
        Err(e) => return usage(e),
    };
    let store = match session::open_store(req.data_dir, settings, "run", Some(&run_id)) {
        Ok(store) => Arc::new(store),
        Err(e) => return usage(e),
    };
    let runtime = match session::runtime() {
        Ok(rt) => rt,
        Err(e) => return usage(e),
    };
    let control = session::signals(&runtime);
    let workflow = loaded_def.workflow.clone();
    let engine = match session::engine(Arc::clone(&store), &loaded, req.llm, &workflow, control) {
        Ok(engine) => engine,
        Err(e) => return usage(e),
    };
    let definition = Definition {
        name: name.clone(),
        text: loaded_def.text,
        workflow: loaded_def.workflow,
        files: loaded_def.files,
    };
    let run_id_text = run_id.to_string();
    let started = runtime.block_on(engine.run(definition, Value::Object(inputs), run_id));
    let state = started
        .and_then(|state| crate::gate::converse(&runtime, &engine, state, &workflow, !req.non_interactive));
    let state = match state {
        Ok(state) => state,
        Err(EngineError::Inputs(e)) => return usage(format!("{name}: {e}")),
        Err(EngineError::Store(StoreError::AlreadyExists(id))) => {
            return usage(format!("a run `{id}` exists already: pick another --run-id"));
        }
        Err(EngineError::Store(e)) => return usage(store_failed(&e, &run_id_text)),
        Err(e) => {
            eprintln!("error: {e}");
            return exit::FAILED;
        }
    };
    print_run(&state, &workflow, &loaded, req.format)
}

/// The message of a store that failed under a run: what happened, and that
/// everything committed before is kept.
pub fn store_failed(e: &StoreError, run: &str) -> String {
    format!(
        "{e}\nhint: every event committed before the failure is kept; fix the cause (free disk space, \
         check the data directory), then `cairn resume {run}`"
    )
}

/// Prints a run as `--format` asks; returns the exit code of its status.
pub fn print_run(state: &RunState, workflow: &Workflow, loaded: &Loaded, format: RunFormat) -> u8 {
    let cost = loaded.cost(&state.usage_by_model);
    let now = SystemClock.now();
    match format {
        RunFormat::Text => print!("{}", runview::summary(state, workflow, cost, now)),
        RunFormat::Json => println!("{}", runview::run_json(state, workflow, cost, now)),
    }
    runview::exit_code(state.status)
}

/// `--inputs FILE`, then each `--input K=V` over it. `V` is JSON when it
/// parses as JSON, a string otherwise.
fn gather_inputs(file: Option<&Path>, pairs: &[String]) -> Result<Map<String, Value>, String> {
    let mut inputs = match file {
        Some(path) => match load_inputs(path)? {
            Value::Object(map) => map,
            _ => Map::new(),
        },
        None => Map::new(),
    };
    for pair in pairs {
        let Some((key, value)) = pair.split_once('=') else {
            return Err(format!("--input `{pair}` must be KEY=VALUE"));
        };
        let value = serde_json::from_str(value).unwrap_or_else(|_| Value::String(value.to_owned()));
        inputs.insert(key.trim().to_owned(), value);
    }
    Ok(inputs)
}

/// A new run id: 10 characters of time (sortable) and 6 random ones, in
/// lowercase Crockford base32.
pub fn new_run_id(now_ms: u64) -> RunId {
    const ALPHABET: &[u8; 32] = b"0123456789abcdefghjkmnpqrstvwxyz";
    let random = std::collections::hash_map::RandomState::new().build_hasher().finish();
    let mut id = String::with_capacity(16);
    for i in (0..10).rev() {
        id.push(ALPHABET[((now_ms >> (i * 5)) & 31) as usize] as char);
    }
    for i in 0..6 {
        id.push(ALPHABET[((random >> (i * 5)) & 31) as usize] as char);
    }
    RunId::new(id).expect("16 base32 characters are a valid run id")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn run_ids_sort_by_time_and_differ() {
        let a = new_run_id(1_700_000_000_000);
        let b = new_run_id(1_700_000_000_001);
        assert_eq!(a.as_str().len(), 16);
        assert!(a.as_str()[..10] < b.as_str()[..10]);
        assert_ne!(new_run_id(5).as_str(), new_run_id(5).as_str());
    }

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
