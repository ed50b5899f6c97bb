//! The verbs that read definitions without running them: `validate` and `plan`.

use std::io::Write;
use std::path::{Path, PathBuf};

use cairn_domain::plan::Plan;

use super::{PlanFormat, ProblemFormat, exit};
use crate::error::Error;
use crate::files::load_definition;
use crate::view;

/// `cairn validate FILE...`: `FILE: ok (N steps)` per valid file, one
/// located line per problem otherwise (exit 2).
pub(crate) fn validate(files: &[PathBuf], format: ProblemFormat) -> Result<u8, Error> {
    let mut out = std::io::stdout().lock();
    let (mut bad_files, mut count) = (0, 0);
    let mut json = Vec::new();
    for path in files {
        let name = path.display().to_string();
        match load_definition(path) {
            Ok(def) => {
                if format == ProblemFormat::Text {
                    let steps = Plan::build(&def.workflow).map(|p| p.total_steps).unwrap_or(0);
                    let _ = writeln!(out, "{name}: ok ({steps} steps)");
                }
            }
            Err(Error::Definition { problems, .. }) => {
                bad_files += 1;
                count += problems.len();
                for p in &problems.0 {
                    match format {
                        ProblemFormat::Text => {
                            let _ = writeln!(out, "{}", p.render(&name));
                        }
                        ProblemFormat::Json => json.push(serde_json::json!({
                            "file": name,
                            "line": p.location.map(|l| l.line),
                            "column": p.location.map(|l| l.column),
                            "path": p.subject,
                            "rule": p.rule,
                            "message": p.message,
                        })),
                    }
                }
            }
            Err(other) => return Err(other),
        }
    }
    if format == ProblemFormat::Json {
        let _ = writeln!(out, "{}", serde_json::Value::Array(json));
    }
    if bad_files == 0 {
        return Ok(exit::OK);
    }
    let plural = if count == 1 { "" } else { "s" };
    eprintln!("{count} problem{plural} in {bad_files} of {} file(s)", files.len());
    Ok(exit::USAGE)
}

/// `cairn plan FILE`: the levels of steps that can run together.
pub(crate) fn plan(path: &Path, format: PlanFormat) -> Result<u8, Error> {
    let def = load_definition(path)?;
    let plan = Plan::build(&def.workflow)
        .map_err(|e| Error::File { path: path.to_path_buf(), reason: e.to_string() })?;
    let text = match format {
        PlanFormat::Text => view::plan::text(&plan),
        PlanFormat::Mermaid => view::plan::mermaid(&plan),
        PlanFormat::Json => {
            serde_json::to_string_pretty(&plan).map_err(|e| Error::File {
                path: path.to_path_buf(),
                reason: format!("cannot print the plan: {e}"),
            })? + "\n"
        }
    };
    let _ = std::io::stdout().lock().write_all(text.as_bytes());
    Ok(exit::OK)
}
