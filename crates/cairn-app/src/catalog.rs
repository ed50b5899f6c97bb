//! The workflow catalog: definitions registered by id and version (every
//! version kept, the same text never stored twice), runs started from a
//! registered id, and each workflow's figures over its runs.

use std::collections::{BTreeMap, BTreeSet};

use cairn_domain::Definition;
use cairn_domain::definition::Callee;
use cairn_domain::id::WorkflowId;
use cairn_domain::state::{RunStatus, Timestamp, TokenUsage};
use cairn_engine::EngineError;
use cairn_ports::{RegisterError, Registered, RunQuery, RunSummary, WorkflowVersion};

use crate::app::{App, Unregistered};
use crate::error::{CatalogError, Error};

/// One workflow of the catalog: every workflow registered or run here.
#[derive(Debug, Clone, PartialEq)]
pub struct Entry {
    /// The workflow's id.
    pub workflow: WorkflowId,
    /// Its latest registered version (none: it was run from files only).
    pub latest: Option<WorkflowVersion>,
    /// What its latest version says of itself.
    pub about: About,
    /// Its figures over the runs the store keeps.
    pub stats: Stats,
}

/// What a definition says of itself: `name`, `description`, `tags`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct About {
    /// Its display name.
    pub name: Option<String>,
    /// What it does.
    pub description: Option<String>,
    /// Its tags.
    pub tags: Vec<String>,
}

impl About {
    /// What `version` says of itself (nothing, if it no longer loads).
    fn of(version: Option<&WorkflowVersion>) -> Self {
        match version.map(definition_of) {
            Some(Ok(d)) => {
                let wf = d.workflow;
                Self { name: wf.name, description: wf.description, tags: wf.tags }
            }
            _ => Self::default(),
        }
    }
}

/// A workflow's figures over its runs: what the store's index keeps of
/// each (status, times, usage), never a run's log.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Stats {
    /// Runs stored.
    pub runs: usize,
    /// Runs by status.
    pub by_status: BTreeMap<String, usize>,
    /// Of the runs ended, the share that completed (none ended: `None`).
    pub success_rate: Option<f64>,
    /// The median time from creation to end of the runs ended, in ms.
    pub median_ms: Option<u64>,
    /// The 95th percentile of that time (nearest rank), in ms.
    pub p95_ms: Option<u64>,
    /// Tokens used by every run together.
    pub usage: TokenUsage,
    /// USD spent, when every model used has a price.
    pub cost_usd: Option<f64>,
    /// When the latest run was created.
    pub last_run_at: Option<Timestamp>,
}

/// The `p`-th percentile (0 to 100) of sorted `values`, nearest rank.
fn percentile(sorted: &[u64], p: u64) -> Option<u64> {
    let rank = (p as usize * sorted.len()).div_ceil(100).clamp(1, sorted.len().max(1));
    sorted.get(rank - 1).copied()
}

impl App {
    /// Registers `definition` as a version of its workflow, registered by
    /// `by`: its `version`, else the first 12 hex digits of the hash of its
    /// text and files. The same text again is the version stored. Refused
    /// when its sub-workflows, followed through the catalog, come back to it.
    pub async fn register(&self, definition: &Definition, by: &str) -> Result<Registered, Error> {
        self.check_calls(definition, Unregistered::Allowed).await?;
        let hash = definition.content_hash();
        let version = WorkflowVersion {
            workflow: definition.workflow.id.clone(),
            version: definition.workflow.version.clone().unwrap_or_else(|| hash[..12].to_owned()),
            number: 0,
            // The file's name without the folder it was registered from.
            definition_name: std::path::Path::new(&definition.name)
                .file_name()
                .map_or_else(|| definition.name.clone(), |n| n.to_string_lossy().into_owned()),
            definition: definition.text.clone(),
            files: definition.files.clone(),
            hash,
            registered_at: self.now(),
            registered_by: by.to_owned(),
        };
        self.workflows().register(version).await.map_err(|e| match e {
            RegisterError::VersionTaken { workflow, version } => {
                CatalogError::VersionTaken { workflow, version }.into()
            }
            RegisterError::Store(e) => EngineError::Store(e).into(),
        })
    }

    /// Follows the sub-workflows of `definition` (files as it recorded
    /// them, ids to their latest registered version, `definition` standing
    /// for its own id): refused when they come back to a workflow on the
    /// way, or (unless `unregistered` allows it) name an id not registered.
    pub async fn check_calls(
        &self,
        definition: &Definition,
        unregistered: Unregistered,
    ) -> Result<(), Error> {
        let mut chain = vec![definition.workflow.id.clone()];
        let mut done = BTreeSet::new();
        self.walk_calls(definition, &mut chain, &mut done, unregistered).await
    }

    /// One step of [`App::check_calls`]: a depth-first walk, `chain` the
    /// workflows on the way, `done` those whose calls were all followed.
    fn walk_calls<'a>(
        &'a self,
        definition: &'a Definition,
        chain: &'a mut Vec<WorkflowId>,
        done: &'a mut BTreeSet<WorkflowId>,
        unregistered: Unregistered,
    ) -> futures_util::future::BoxFuture<'a, Result<(), Error>> {
        Box::pin(async move {
            for callee in definition.calls() {
                let called = match callee {
                    Callee::File(file) => match definition.called(file) {
                        Ok(called) => called,
                        // Loading it again refuses it with its problems.
                        Err(_) => continue,
                    },
                    // Not loaded again: the workflow on the way may be the
                    // one being registered, whose latest version is older.
                    Callee::Registered(id) if chain.contains(id) => return Err(recursion(chain, id)),
                    Callee::Registered(id) if done.contains(id) => continue,
                    Callee::Registered(id) => {
                        match self.workflows().versions(id).await.map_err(EngineError::from)?.pop() {
                            // One that no longer loads fails its step when run.
                            Some(latest) => match definition_of(&latest) {
                                Ok(called) => called,
                                Err(_) => continue,
                            },
                            None if unregistered == Unregistered::Allowed => continue,
                            None => {
                                let caller = definition.workflow.id.clone();
                                return Err(CatalogError::UnknownCallee { caller, callee: id.clone() }.into());
                            }
                        }
                    }
                };
                let id = called.workflow.id.clone();
                if chain.contains(&id) {
                    return Err(recursion(chain, &id));
                }
                if done.contains(&id) || chain.len() > cairn_domain::limits::MAX_CALL_DEPTH as usize {
                    continue;
                }
                chain.push(id.clone());
                self.walk_calls(&called, chain, done, unregistered).await?;
                chain.pop();
                done.insert(id);
            }
            Ok(())
        })
    }

    /// Every version of `workflow`, oldest first; refused for a workflow
    /// never registered.
    pub async fn versions(&self, workflow: &WorkflowId) -> Result<Vec<WorkflowVersion>, Error> {
        let versions = self.workflows().versions(workflow).await.map_err(EngineError::from)?;
        if versions.is_empty() {
            return Err(CatalogError::UnknownWorkflow(workflow.clone()).into());
        }
        Ok(versions)
    }

    /// The version `version` of `workflow` (its `version` string, or its
    /// number), else its latest.
    pub async fn registered(
        &self,
        workflow: &WorkflowId,
        version: Option<&str>,
    ) -> Result<WorkflowVersion, Error> {
        let mut versions = self.versions(workflow).await?;
        let Some(wanted) = version else {
            return versions.pop().ok_or_else(|| CatalogError::UnknownWorkflow(workflow.clone()).into());
        };
        let by_number = |v: &WorkflowVersion| wanted.parse::<u32>().is_ok_and(|n| n == v.number);
        let found = versions
            .iter()
            .rposition(|v| v.version == wanted)
            .or_else(|| versions.iter().position(by_number));
        found.map(|i| versions.swap_remove(i)).ok_or_else(|| {
            CatalogError::UnknownVersion { workflow: workflow.clone(), version: wanted.to_owned() }.into()
        })
    }

    /// The catalog: every workflow registered or run here, by id, with
    /// its latest version and its figures.
    pub async fn catalog(&self) -> Result<Vec<Entry>, Error> {
        let latest = self.workflows().latest().await.map_err(EngineError::from)?;
        let runs = self.store().summaries(&RunQuery::default()).await.map_err(EngineError::from)?;
        let mut by_workflow: BTreeMap<WorkflowId, Vec<&RunSummary>> = BTreeMap::new();
        for run in &runs {
            by_workflow.entry(run.workflow.clone()).or_default().push(run);
        }
        let mut entries: BTreeMap<WorkflowId, Entry> = by_workflow
            .into_iter()
            .map(|(workflow, runs)| {
                let entry = Entry {
                    stats: self.figures(&runs),
                    workflow: workflow.clone(),
                    latest: None,
                    about: About::default(),
                };
                (workflow, entry)
            })
            .collect();
        for version in latest {
            let workflow = version.workflow.clone();
            let entry = entries.entry(workflow.clone()).or_insert_with(|| Entry {
                workflow,
                latest: None,
                about: About::default(),
                stats: Stats::default(),
            });
            entry.about = About::of(Some(&version));
            entry.latest = Some(version);
        }
        Ok(entries.into_values().collect())
    }

    /// One workflow's entry; refused when it was neither registered nor run.
    pub async fn catalog_entry(&self, workflow: &WorkflowId) -> Result<Entry, Error> {
        let latest = self.workflows().versions(workflow).await.map_err(EngineError::from)?.pop();
        let query = RunQuery { workflow: Some(workflow.clone()), ..RunQuery::default() };
        let runs = self.store().summaries(&query).await.map_err(EngineError::from)?;
        if latest.is_none() && runs.is_empty() {
            return Err(CatalogError::UnknownWorkflow(workflow.clone()).into());
        }
        Ok(Entry {
            workflow: workflow.clone(),
            about: About::of(latest.as_ref()),
            latest,
            stats: self.figures(&runs),
        })
    }

    /// The figures of `runs`, counted without a copy of any.
    pub(crate) fn figures<R: std::borrow::Borrow<RunSummary>>(&self, runs: &[R]) -> Stats {
        let mut tally = Tally::default();
        runs.iter().for_each(|run| tally.add(run.borrow()));
        tally.stats(self)
    }
}

/// Figures being counted, run by run.
#[derive(Default)]
pub(crate) struct Tally {
    runs: usize,
    /// Runs by status (a few statuses: a list searched beats a hash).
    by_status: Vec<(RunStatus, usize)>,
    /// Creation to end of each run ended, in ms.
    took: Vec<u64>,
    usage_by_model: BTreeMap<String, TokenUsage>,
    last_run_at: Option<Timestamp>,
}

impl Tally {
    /// Counts `run`.
    pub(crate) fn add(&mut self, run: &RunSummary) {
        self.runs += 1;
        match self.by_status.iter_mut().find(|(status, _)| *status == run.status) {
            Some((_, n)) => *n += 1,
            None => self.by_status.push((run.status, 1)),
        }
        if run.status.is_terminal() {
            self.took.push(run.updated_at.0.saturating_sub(run.created_at.0));
        }
        for (model, usage) in &run.usage_by_model {
            add_usage(&mut self.usage_by_model, model, *usage);
        }
        self.last_run_at = self.last_run_at.max(Some(run.created_at));
    }

    /// Counts what `other` counted.
    pub(crate) fn merge(&mut self, other: &Tally) {
        self.runs += other.runs;
        for (status, n) in &other.by_status {
            match self.by_status.iter_mut().find(|(s, _)| s == status) {
                Some((_, mine)) => *mine += n,
                None => self.by_status.push((*status, *n)),
            }
        }
        self.took.extend_from_slice(&other.took);
        for (model, usage) in &other.usage_by_model {
            add_usage(&mut self.usage_by_model, model, *usage);
        }
        self.last_run_at = self.last_run_at.max(other.last_run_at);
    }

    /// Tokens counted, by model.
    pub(crate) fn usage_by_model(&self) -> impl Iterator<Item = (&String, &TokenUsage)> {
        self.usage_by_model.iter()
    }

    /// The figures counted, priced by `app`.
    pub(crate) fn stats(mut self, app: &App) -> Stats {
        self.took.sort_unstable();
        let completed =
            self.by_status.iter().find(|(s, _)| *s == RunStatus::Completed).map_or(0, |(_, n)| *n);
        let ended = self.took.len();
        Stats {
            runs: self.runs,
            by_status: self
                .by_status
                .into_iter()
                .map(|(s, n)| (cairn_domain::state::word(s).to_owned(), n))
                .collect(),
            success_rate: (ended > 0).then(|| completed as f64 / ended as f64),
            median_ms: percentile(&self.took, 50),
            p95_ms: percentile(&self.took, 95),
            usage: TokenUsage::total(self.usage_by_model.values()),
            cost_usd: app.cost(&self.usage_by_model),
            last_run_at: self.last_run_at,
        }
    }
}

/// The recursion of coming back to `id`, which is on the way `chain`: the
/// workflows from `id` on, and `id` again.
fn recursion(chain: &[WorkflowId], id: &WorkflowId) -> Error {
    let start = chain.iter().position(|w| w == id).unwrap_or(0);
    let mut cycle = chain[start..].to_vec();
    cycle.push(id.clone());
    CatalogError::Recursion { chain: cycle }.into()
}

/// Adds `usage` to `name`'s, copying the name only the first time.
pub(crate) fn add_usage(by_name: &mut BTreeMap<String, TokenUsage>, name: &str, usage: TokenUsage) {
    match by_name.get_mut(name) {
        Some(sum) => sum.add(usage),
        None => {
            by_name.insert(name.to_owned(), usage);
        }
    }
}

/// The definition a registered version is: loaded (and validated) again
/// from its text and files, as a run of it records them.
pub fn definition_of(version: &WorkflowVersion) -> Result<Definition, Error> {
    Definition::from_recorded(&version.definition_name, &version.definition, &version.files)
        .map_err(|problems| Error::Definition { name: version.definition_name.clone(), problems })
}

#[cfg(test)]
mod tests {
    use super::percentile;

    #[test]
    fn percentiles_are_by_nearest_rank() {
        let ten: Vec<u64> = (1..=10).collect();
        assert_eq!(
            (percentile(&ten, 50), percentile(&ten, 95), percentile(&ten, 100)),
            (Some(5), Some(10), Some(10))
        );
        assert_eq!((percentile(&[7], 50), percentile(&[7], 95)), (Some(7), Some(7)));
        assert_eq!(percentile(&[], 50), None);
        let hundred: Vec<u64> = (1..=100).collect();
        assert_eq!(
            (percentile(&hundred, 50), percentile(&hundred, 95), percentile(&hundred, 0)),
            (Some(50), Some(95), Some(1))
        );
    }
}
