//! Reading definition files from disk, within the size limit, before a byte
//! of a huge file is read.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::Read;
use std::path::Path;

use cairn_domain::definition::Workflow;
use cairn_domain::limits::MAX_FILE_BYTES;
use cairn_domain::problem::{Problem, Problems, Rule};

/// Reads at most [`MAX_FILE_BYTES`] (plus one, to tell that a file is over).
fn read_bounded(path: &Path) -> Result<Vec<u8>, String> {
    let file = File::open(path).map_err(|e| e.to_string())?;
    if file.metadata().map_err(|e| e.to_string())?.is_dir() {
        return Err("it is a directory".into());
    }
    let mut bytes = Vec::new();
    file.take(MAX_FILE_BYTES + 1).read_to_end(&mut bytes).map_err(|e| e.to_string())?;
    Ok(bytes)
}

/// Loads and validates the definition at `path`; schema files it names are
/// read relative to its folder.
pub fn load_workflow(path: &Path) -> Result<Workflow, Problems> {
    load_definition(path).map(|loaded| loaded.workflow)
}

/// A definition as loaded from disk: the workflow, its exact text, and the
/// files it named (schemas), which a run records so that editing them later
/// never changes it.
pub struct Loaded {
    /// The validated workflow.
    pub workflow: Workflow,
    /// The file's exact text.
    pub text: String,
    /// The files it named, by the path it named them with.
    pub files: BTreeMap<String, String>,
}

/// Like [`load_workflow`], also returning what a run records.
pub fn load_definition(path: &Path) -> Result<Loaded, Problems> {
    let bytes = read_bounded(path)
        .map_err(|e| Problems(vec![Problem::at(Rule::Syntax, None, format!("cannot read the file: {e}"))]))?;
    let base = path.parent().unwrap_or(Path::new("."));
    let mut files = BTreeMap::new();
    let mut read_schema = |rel: &str| {
        let text =
            read_bounded(&base.join(rel)).and_then(|b| String::from_utf8(b).map_err(|e| e.to_string()))?;
        files.insert(rel.to_owned(), text.clone());
        Ok(text)
    };
    let workflow = cairn_domain::load(&path.to_string_lossy(), &bytes, &mut read_schema)?;
    Ok(Loaded { workflow, text: String::from_utf8_lossy(&bytes).into_owned(), files })
}

/// Loads a definition a run recorded, reading named files from what it recorded.
pub fn load_recorded(name: &str, text: &str, files: &BTreeMap<String, String>) -> Result<Workflow, Problems> {
    let mut read =
        |rel: &str| files.get(rel).cloned().ok_or_else(|| format!("`{rel}` was not recorded with the run"));
    cairn_domain::load(name, text.as_bytes(), &mut read)
}

/// Reads a file of run inputs (a YAML or JSON mapping), within the size limit.
pub fn load_inputs(path: &Path) -> Result<serde_json::Value, String> {
    let bytes = read_bounded(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let name = path.to_string_lossy();
    let text = cairn_domain::source::decode(&bytes).map_err(|p| p.render(&name))?;
    let format = cairn_domain::source::Format::detect(&name, text);
    let value = cairn_domain::source::parse(text, format).map_err(|p| p.render(&name))?;
    if value.is_object() {
        Ok(value)
    } else {
        Err(format!("{name}: inputs must be a mapping of names to values"))
    }
}
