//! The pure core of cairn.
//!
//! What it is: workflow definitions (parsed from YAML or JSON into typed
//! structs, validated with every problem located), execution plans, run
//! state as a fold of events, scopes and documents, and templates.
//!
//! What it deliberately does not do: no I/O, no clocks, no async, no threads.
//! Files a definition names (schemas) are read through a function the caller
//! passes in; times are values the caller passes in. Everything here is
//! testable with plain values.
//!
//! May depend on: serde, serde_json, serde_yaml and saphyr-parser (behind
//! [`source`]), minijinja, jsonschema, strsim, thiserror. Never on another
//! cairn crate.
//!
//! Read first: [`load`], [`definition::Workflow`], [`plan::Plan`],
//! [`state::RunState::apply`].

pub mod checkpoint;
pub mod dag;
pub mod decide;
pub mod definition;
pub mod duration;
pub mod id;
pub mod inputs;
pub mod limits;
pub mod plan;
pub mod problem;
pub mod program;
pub mod read;
pub mod render;
pub mod scope;
pub mod source;
pub mod state;
pub mod template;
pub mod validate;

use definition::Workflow;
use problem::Problems;
pub use validate::ReadFile;

/// Reads, checks and validates a definition file's contents. `file_name`
/// picks the format (`.json` or YAML) and `read_file` loads the schema files
/// the definition names, relative to it. On failure, every problem found,
/// each placed at its line and column where the text allows.
pub fn load(file_name: &str, bytes: &[u8], read_file: &mut ReadFile<'_>) -> Result<Workflow, Problems> {
    let text = source::decode(bytes).map_err(|p| Problems(vec![p]))?;
    let root = source::parse(text, source::Format::detect(file_name, text)).map_err(|p| Problems(vec![p]))?;
    let mut problems = Problems::default();
    let workflow = read::read_workflow(&root, &mut problems).map(|mut wf| {
        validate::validate(&mut wf, &root, read_file, &mut problems);
        wf
    });
    match workflow {
        Some(wf) if problems.is_empty() => Ok(wf),
        _ => {
            source::place(&mut problems.0, text, &root);
            problems.0.sort_by(|a, b| a.location.cmp(&b.location).then_with(|| a.path.cmp(&b.path)));
            Err(problems)
        }
    }
}
