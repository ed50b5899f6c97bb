//! `cairn search`: full-text search over workflows (name, description,
//! tags, step prompts) and runs (inputs, outputs, error messages), ranked.
//!
//! The index is derived from the stores and brought up to them before each
//! search, and by the service as runs go: it records how far it came (the
//! time of the last run event it holds), so only runs changed since are
//! read again, and an index lost or emptied fills itself again.

use std::collections::{BTreeMap, BTreeSet};

use cairn_domain::definition::{Step, StepKind, Workflow};
use cairn_domain::id::{RunId, WorkflowId};
use cairn_domain::state::{RunState, Timestamp};
use cairn_engine::EngineError;
use cairn_ports::{DocKind, IndexMark, RunQuery, RunSummary, SearchDoc, SearchHit, SearchQuery, TextField};
use serde_json::Value;

use crate::app::{App, Listed};
use crate::catalog::definition_of;
use crate::error::Error;

/// Runs read and committed to the index at a time, so a long first
/// indexing keeps what it did if stopped.
const BATCH: usize = 500;

/// A hit as fronts show it: the index's hit and, for a run, the run as
/// listings show it now.
#[derive(Debug, Clone)]
pub struct Found {
    /// What matched, where, and how well.
    pub hit: SearchHit,
    /// The run, for a run's hit.
    pub run: Option<Listed>,
}

impl App {
    /// The workflows and runs matching `query`, best first, after bringing
    /// the index up to the stores. Runs deleted since they were indexed are
    /// left out.
    pub async fn search(&self, query: &SearchQuery) -> Result<Vec<Found>, Error> {
        if query.text.trim().is_empty() {
            return Err(Error::BlankSearch);
        }
        self.index_changes().await?;
        let hits = self.search_index().search(query).await?;
        let mut found = Vec::with_capacity(hits.len());
        for hit in hits {
            let run = match hit.kind {
                DocKind::Workflow => None,
                DocKind::Run => {
                    let Ok(id) = RunId::new(hit.id.as_str()) else { continue };
                    match self.store().summary(&id).await.map_err(EngineError::from)? {
                        Some(summary) => Some(self.listed(RunSummary::clone(&summary))),
                        // Deleted since it was indexed.
                        None => continue,
                    }
                }
            };
            found.push(Found { hit, run });
        }
        Ok(found)
    }

    /// Brings the index up to the stores: the latest version of each
    /// registered workflow, and every run whose last event is newer than
    /// the index's mark (oldest first, [`BATCH`] runs per commit). Returns
    /// how many documents were written.
    pub async fn index_changes(&self) -> Result<usize, Error> {
        let _one_at_a_time = self.indexing().lock().await;
        let index = self.search_index();
        let mut mark = index.mark().await?;
        let mut written = 0;

        let mut docs = Vec::new();
        let latest = self.workflows().latest().await.map_err(EngineError::from)?;
        let registered: BTreeSet<WorkflowId> = latest.iter().map(|v| v.workflow.clone()).collect();
        for version in latest {
            if mark.workflows.get(&version.workflow) == Some(&version.hash) {
                continue;
            }
            // A version the store cannot rebuild is left out, not a failed search.
            if let Ok(definition) = definition_of(&version) {
                docs.push(workflow_doc(&definition.workflow));
                mark.workflows.insert(version.workflow.clone(), version.hash.clone());
            }
        }

        // Definitions that could not be read, tried once a pass.
        let mut unreadable: BTreeSet<(WorkflowId, String)> = BTreeSet::new();
        let all = self.store().summaries(&RunQuery::default()).await.map_err(EngineError::from)?;
        let mut changed: Vec<&RunSummary> =
            all.iter().map(AsRef::as_ref).filter(|s| is_newer(s, &mark)).collect();
        changed.sort_by(|a, b| (a.updated_at, &a.run_id).cmp(&(b.updated_at, &b.run_id)));
        for batch in changed.chunks(BATCH) {
            for summary in batch {
                // A run deleted meanwhile, or one that cannot be read, is not indexed.
                let Ok(state) = self.engine().load(&summary.run_id).await else { continue };
                docs.push(run_doc(&state));
                // A workflow only run from files is known by its runs' definitions.
                let key = format!("run:{}", state.definition_hash);
                if registered.contains(&state.workflow)
                    || mark.workflows.get(&state.workflow) == Some(&key)
                    || unreadable.contains(&(state.workflow.clone(), key.clone()))
                {
                    continue;
                }
                match self.engine().definition(&state.run_id).await {
                    Ok(definition) => {
                        docs.push(workflow_doc(&definition.workflow));
                        mark.workflows.insert(state.workflow.clone(), key);
                    }
                    Err(_) => {
                        unreadable.insert((state.workflow.clone(), key));
                    }
                }
            }
            if let Some(last) = batch.last() {
                advance(&mut mark, batch, last.updated_at);
            }
            written += docs.len();
            index.commit(std::mem::take(&mut docs), Vec::new(), mark.clone()).await?;
        }
        if !docs.is_empty() {
            written += docs.len();
            index.commit(docs, Vec::new(), mark).await?;
        }
        Ok(written)
    }

    /// Takes deleted runs out of the index.
    pub(crate) async fn unindex(&self, runs: &[RunId]) -> Result<(), Error> {
        let _one_at_a_time = self.indexing().lock().await;
        let index = self.search_index();
        let mark = index.mark().await?;
        index.commit(Vec::new(), runs.iter().map(ToString::to_string).collect(), mark).await?;
        Ok(())
    }
}

/// Whether the index's mark is older than the run's last event.
impl App {
    /// Indexes `runs` now, whatever their times: runs imported with events
    /// older than the index's mark, which catching up would pass over.
    pub(crate) async fn index_runs(&self, runs: &[cairn_domain::id::RunId]) -> Result<(), Error> {
        let _one_at_a_time = self.indexing().lock().await;
        let index = self.search_index();
        let mark = index.mark().await?;
        let mut docs = Vec::new();
        for run in runs {
            if let Ok(state) = self.engine().load(run).await {
                docs.push(run_doc(&state));
            }
        }
        index.commit(docs, Vec::new(), mark).await?;
        Ok(())
    }
}

fn is_newer(summary: &RunSummary, mark: &IndexMark) -> bool {
    match mark.runs_until {
        None => true,
        Some(until) => {
            summary.updated_at > until
                || (summary.updated_at == until && !mark.runs_at_until.contains(summary.run_id.as_str()))
        }
    }
}

/// Moves the mark to `until`, the last event of the latest run in `batch`
/// (sorted), remembering which runs were indexed at that very millisecond.
fn advance(mark: &mut IndexMark, batch: &[&RunSummary], until: Timestamp) {
    if mark.runs_until != Some(until) {
        mark.runs_until = Some(until);
        mark.runs_at_until.clear();
    }
    let at_until = batch.iter().rev().take_while(|s| s.updated_at == until);
    mark.runs_at_until.extend(at_until.map(|s| s.run_id.to_string()));
}

/// A workflow's document: its name, tags, description and prompts.
fn workflow_doc(wf: &Workflow) -> SearchDoc {
    let mut text = BTreeMap::new();
    if let Some(name) = &wf.name {
        text.insert(TextField::Name, name.clone());
    }
    if !wf.tags.is_empty() {
        text.insert(TextField::Tags, wf.tags.join(" "));
    }
    if let Some(description) = &wf.description {
        text.insert(TextField::Description, description.clone());
    }
    let mut prompts: Vec<&str> =
        wf.agents.values().filter_map(|a| a.system.as_ref()).map(|t| t.as_str()).collect();
    step_prompts(&wf.steps, &mut prompts);
    if !prompts.is_empty() {
        text.insert(TextField::Prompts, prompts.join("\n"));
    }
    SearchDoc { kind: DocKind::Workflow, id: wf.id.to_string(), workflow: wf.id.clone(), text }
}

/// The prompts of `steps` and their nested steps: agent prompts, judges'
/// rubrics and approval messages.
fn step_prompts<'a>(steps: &'a [Step], out: &mut Vec<&'a str>) {
    for step in steps {
        match &step.kind {
            StepKind::Agent(a) => {
                out.push(a.prompt.as_str());
                out.extend(a.qa.iter().map(|qa| qa.rubric.as_str()));
            }
            StepKind::Approval(a) => out.push(a.message.as_str()),
            _ => {}
        }
        if let Some(body) = step.body() {
            step_prompts(body, out);
        }
    }
}

/// A run's document: its inputs, its steps' outputs and its errors.
fn run_doc(state: &RunState) -> SearchDoc {
    let mut text = BTreeMap::new();
    let inputs = plain(&state.inputs);
    if !inputs.is_empty() {
        text.insert(TextField::Inputs, inputs);
    }
    let mut outputs = String::new();
    let mut errors: Vec<&str> = state.error.iter().map(|e| e.message.as_str()).collect();
    for (path, step) in &state.steps {
        if let Some(output) = &step.output {
            outputs.push_str(&format!("{path}: {}\n", plain(output)));
        }
        // The run's error quotes the step's that ended it.
        if let Some(error) = &step.error
            && !errors.iter().any(|e| e.contains(error.message.as_str()))
        {
            errors.push(&error.message);
        }
    }
    if !outputs.is_empty() {
        text.insert(TextField::Outputs, outputs);
    }
    if !errors.is_empty() {
        text.insert(TextField::Errors, errors.join("\n"));
    }
    SearchDoc { kind: DocKind::Run, id: state.run_id.to_string(), workflow: state.workflow.clone(), text }
}

/// A JSON value as words: strings as they are, keys before their values.
fn plain(value: &Value) -> String {
    fn walk(value: &Value, out: &mut String) {
        match value {
            Value::Null => {}
            Value::String(s) => {
                out.push_str(s);
                out.push('\n');
            }
            Value::Array(items) => items.iter().for_each(|v| walk(v, out)),
            Value::Object(map) => {
                for (key, v) in map {
                    out.push_str(key);
                    out.push_str(": ");
                    walk(v, out);
                }
            }
            other => {
                out.push_str(&other.to_string());
                out.push('\n');
            }
        }
    }
    let mut out = String::new();
    walk(value, &mut out);
    out.truncate(out.trim_end().len());
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_reads_as_words_with_keys_before_values() {
        let value =
            serde_json::json!({"ticket": "Printer on fire", "tags": ["urgent", 3], "ok": true, "none": null});
        assert_eq!(plain(&value), "ticket: Printer on fire\ntags: urgent\n3\nok: true\nnone:");
    }
}
