//! The `workflows` verbs: the catalog of definitions registered by id and
//! version, listed with each workflow's figures.

use std::path::PathBuf;

use cairn_domain::id::WorkflowId;
use cairn_ports::{DocKind, Registered, SearchQuery};
use serde_json::{Value, json};

use super::args::{DocFormat, ListFormat, SearchKind, ShowFormat, WorkflowsVerb};
use super::{Verbs, exit, term};
use crate::error::Error;
use crate::files::load_definition;
use crate::view;

/// `cairn workflows [add|show]`.
pub(crate) fn workflows(
    verbs: &Verbs<'_>,
    verb: Option<WorkflowsVerb>,
    format: ListFormat,
) -> Result<u8, Error> {
    match verb {
        None => list(verbs, format),
        Some(WorkflowsVerb::Add { files, format }) => add(verbs, &files, format),
        Some(WorkflowsVerb::Show { workflow, version, format }) => {
            show(verbs, &workflow, version.as_deref(), format)
        }
    }
}

/// The `--workflow ID` flag, read.
fn workflow_flag(workflow: Option<&str>) -> Result<Option<WorkflowId>, Error> {
    workflow.map(WorkflowId::new).transpose().map_err(|e| Error::Config(format!("--workflow: {e}")))
}

/// `cairn stats [--workflow ID] [--since D]`: figures over the stored runs.
pub(crate) fn stats(
    verbs: &Verbs<'_>,
    workflow: Option<&str>,
    since: Option<&str>,
    format: ListFormat,
) -> Result<u8, Error> {
    let workflow = workflow_flag(workflow)?;
    let since = since
        .map(str::parse::<cairn_domain::duration::Duration>)
        .transpose()
        .map_err(|e| Error::Config(format!("--since: {e}")))?;
    let opened = verbs.open("stats")?;
    let query = crate::stats::StatsQuery { workflow, since };
    let report = opened.runtime.block_on(opened.app.stats(&query))?;
    match format {
        ListFormat::Json => outln!("{}", view::catalog::report_json(&report)),
        ListFormat::Table => out!("{}", view::list::report_text(&report, term::table_fit())),
    }
    Ok(exit::OK)
}

/// `cairn search TEXT`: workflows and runs by text, best first.
pub(crate) fn search(
    verbs: &Verbs<'_>,
    text: &str,
    kind: Option<SearchKind>,
    workflow: Option<&str>,
    limit: usize,
    format: ListFormat,
) -> Result<u8, Error> {
    let workflow = workflow_flag(workflow)?;
    let kind = kind.map(|k| match k {
        SearchKind::Workflow => DocKind::Workflow,
        SearchKind::Run => DocKind::Run,
    });
    let opened = verbs.open("search")?;
    let query = SearchQuery { text: text.to_owned(), kind, workflow, limit };
    let found = opened.runtime.block_on(opened.app.search(&query))?;
    match format {
        ListFormat::Json => outln!("{}", view::search::hits_json(&found)),
        ListFormat::Table if found.is_empty() => outln!("nothing matches `{text}`"),
        ListFormat::Table => {
            let now = cairn_ports::Clock::now(&cairn_engine::SystemClock);
            out!("{}", view::search::hits_text(&found, now, term::table_fit()));
        }
    }
    Ok(exit::OK)
}

/// `cairn workflows`: the catalog, by id.
fn list(verbs: &Verbs<'_>, format: ListFormat) -> Result<u8, Error> {
    let opened = verbs.open("workflows")?;
    let entries = opened.runtime.block_on(opened.app.catalog())?;
    match format {
        ListFormat::Json => {
            outln!("{}", Value::Array(entries.iter().map(view::catalog::entry_json).collect()))
        }
        ListFormat::Table if entries.is_empty() => {
            outln!("no workflows yet (register one with `cairn workflows add FILE`, or run one)");
        }
        ListFormat::Table => out!("{}", view::list::workflows_table(&entries, term::table_fit())),
    }
    Ok(exit::OK)
}

/// `cairn workflows add FILE...`: every file is loaded first, so one with
/// problems registers none.
fn add(verbs: &Verbs<'_>, files: &[PathBuf], format: DocFormat) -> Result<u8, Error> {
    let definitions = files.iter().map(|f| load_definition(f)).collect::<Result<Vec<_>, _>>()?;
    let opened = verbs.open("workflows")?;
    let by = crate::host::whoami();
    let mut registered = Vec::new();
    for definition in &definitions {
        registered.push(opened.runtime.block_on(opened.app.register(definition, &by))?);
    }
    match format {
        DocFormat::Json => {
            outln!("{}", Value::Array(registered.iter().map(view::catalog::registered_json).collect()))
        }
        DocFormat::Text => {
            for (r, file) in registered.iter().zip(files) {
                let v = r.version();
                match r {
                    Registered::Added(_) => outln!(
                        "{}: registered {} version {} (#{})",
                        file.display(),
                        v.workflow,
                        v.version,
                        v.number
                    ),
                    Registered::Unchanged(_) => outln!(
                        "{}: {} version {} (#{}) is registered already with this text",
                        file.display(),
                        v.workflow,
                        v.version,
                        v.number
                    ),
                }
            }
        }
    }
    Ok(exit::OK)
}

/// `cairn workflows show ID`: the exact text, or the version as JSON.
fn show(verbs: &Verbs<'_>, workflow: &str, version: Option<&str>, format: ShowFormat) -> Result<u8, Error> {
    let workflow = workflow_id(workflow)?;
    let opened = verbs.open("workflows")?;
    let found = opened.runtime.block_on(opened.app.registered(&workflow, version))?;
    match format {
        ShowFormat::Yaml => {
            out!("{}", found.definition);
            if !found.definition.ends_with('\n') {
                outln!();
            }
        }
        ShowFormat::Json => {
            let versions = opened.runtime.block_on(opened.app.versions(&workflow))?;
            let mut shown = view::catalog::definition_json(&found);
            shown["versions"] = json!(versions.iter().map(view::catalog::version_json).collect::<Vec<_>>());
            outln!("{shown}");
        }
    }
    Ok(exit::OK)
}

/// A workflow id the command line names.
pub(crate) fn workflow_id(text: &str) -> Result<WorkflowId, Error> {
    WorkflowId::new(text).map_err(|e| Error::Config(format!("`{text}` is not a workflow id: {e}")))
}
