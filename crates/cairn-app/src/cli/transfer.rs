//! `export` and `import`: runs moved between stores as JSON lines.

use std::io::Read as _;
use std::path::PathBuf;

use cairn_domain::id::RunId;
use cairn_ports::RunQuery;

use super::args::DocFormat;
use super::{Verbs, exit, run_id};
use crate::error::Error;
use crate::transfer::{Exported, Imported, check};

/// `cairn export RUN...` or `--all`: one record a line on stdout.
pub(crate) fn export(verbs: &Verbs<'_>, runs: &[String], all: bool) -> Result<u8, Error> {
    let mut ids = runs.iter().map(|r| run_id(r)).collect::<Result<Vec<RunId>, Error>>()?;
    let opened = verbs.open("export")?;
    if all {
        let mut query = RunQuery { limit: Some(500), ..RunQuery::default() };
        loop {
            let page = opened.runtime.block_on(opened.app.list(&query))?;
            ids.extend(page.runs.iter().map(|r| r.summary.run_id.clone()));
            match page.next {
                Some(next) => query.after = Some(next),
                None => break,
            }
        }
        // Listed newest first; written oldest first.
        ids.reverse();
    }
    for id in &ids {
        let record = opened.runtime.block_on(opened.app.export(id))?;
        let line = serde_json::to_string(&record).map_err(|e| Error::Config(e.to_string()))?;
        outln!("{line}");
    }
    Ok(exit::OK)
}

/// `cairn import [FILE]`: every line read and checked, then each run added.
pub(crate) fn import(verbs: &Verbs<'_>, file: &str, format: DocFormat) -> Result<u8, Error> {
    let (path, text) = read(file)?;
    let mut records = Vec::new();
    for (n, line) in text.lines().enumerate().filter(|(_, l)| !l.trim().is_empty()) {
        let at =
            |reason: String| Error::File { path: path.clone(), reason: format!("line {}: {reason}", n + 1) };
        let record: Exported = serde_json::from_str(line).map_err(|e| at(e.to_string()))?;
        check(&record).map_err(|e| at(e.to_string()))?;
        records.push(record);
    }
    let opened = verbs.open("import")?;
    let mut done = Vec::new();
    for record in records {
        let (run, events) = (record.run_id.clone(), record.events.len());
        let imported = opened.runtime.block_on(opened.app.import(record))?;
        if format == DocFormat::Text {
            outln!("{}", said(&run, imported, events));
        }
        done.push(serde_json::json!({"run_id": run, "imported": imported, "events": events}));
    }
    if format == DocFormat::Json {
        outln!("{}", serde_json::Value::Array(done));
    }
    Ok(exit::OK)
}

/// The text `file` holds (`-`: standard input), and how errors name it.
fn read(file: &str) -> Result<(PathBuf, String), Error> {
    let mut text = String::new();
    if file == "-" {
        let path = PathBuf::from("<stdin>");
        std::io::stdin()
            .read_to_string(&mut text)
            .map_err(|e| Error::File { path: path.clone(), reason: e.to_string() })?;
        return Ok((path, text));
    }
    let path = PathBuf::from(file);
    std::fs::File::open(&path)
        .and_then(|mut f| f.read_to_string(&mut text))
        .map_err(|e| Error::File { path: path.clone(), reason: e.to_string() })?;
    Ok((path, text))
}

/// One imported run, as a line people read.
fn said(run: &RunId, imported: Imported, events: usize) -> String {
    match imported {
        Imported::Added => format!("added {run} ({events} events)"),
        Imported::Completed => format!("completed {run} (the rest of its {events} events)"),
        Imported::Present => format!("present {run}: this store holds it already"),
    }
}
