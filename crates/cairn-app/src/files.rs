//! Reading definition and input files from disk, within the size limit,
//! before a byte of a huge file is read.

use std::fs::File;
use std::io::Read;
use std::path::Path;

use cairn_domain::Definition;
use cairn_domain::limits::MAX_FILE_BYTES;
use cairn_domain::problem::Problems;
use serde_json::{Map, Value};

use crate::error::Error;

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

/// Loads and validates the definition at `path`, with the files it names
/// (schemas, read relative to its folder), as a run records it.
pub fn load_definition(path: &Path) -> Result<Definition, Error> {
    let name = path.display().to_string();
    let problems = |problems: Problems| Error::Definition { name: name.clone(), problems };
    let bytes = read_bounded(path).map_err(|e| problems(Problems::unreadable(e)))?;
    let base = path.parent().unwrap_or(Path::new("."));
    let mut read = |rel: &str| {
        read_bounded(&base.join(rel)).and_then(|b| String::from_utf8(b).map_err(|e| e.to_string()))
    };
    Definition::from_source(&name, &bytes, &mut read).map_err(problems)
}

/// Reads a file of run inputs (a YAML or JSON mapping), within the size limit.
pub fn load_inputs(path: &Path) -> Result<Map<String, Value>, Error> {
    let fail = |reason: String| Error::File { path: path.to_path_buf(), reason };
    let bytes = read_bounded(path).map_err(fail)?;
    let name = path.to_string_lossy();
    cairn_domain::inputs::read(&name, &bytes).map_err(|p| fail(Problems(vec![p]).to_string()))
}
