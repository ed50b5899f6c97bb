//! `cairn stats`: figures over the runs the store keeps, read from its run
//! index alone (each run's status, times, tokens by model and agent, and
//! the steps that failed for good, kept as the run goes), never a log.

use std::collections::BTreeMap;

use cairn_domain::duration::Duration;
use cairn_domain::id::WorkflowId;
use cairn_domain::state::{Timestamp, TokenUsage};
use cairn_engine::EngineError;
use cairn_ports::RunQuery;

use crate::app::App;
use crate::catalog::{Stats, Tally, add_usage};
use crate::error::Error;

/// What `stats` is asked.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct StatsQuery {
    /// One workflow's runs only.
    pub workflow: Option<WorkflowId>,
    /// Runs created this long ago at most.
    pub since: Option<Duration>,
}

/// The figures `stats` answers.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Report {
    /// The workflow asked for.
    pub workflow: Option<WorkflowId>,
    /// The earliest creation time counted (`None`: every run).
    pub since: Option<Timestamp>,
    /// Over every run counted.
    pub overall: Stats,
    /// By workflow, the most runs first.
    pub by_workflow: Vec<(WorkflowId, Stats)>,
    /// The steps that failed for good most often, at most [`MOST_FAILING`].
    pub failing: Vec<Failing>,
    /// Tokens and cost by agent, the most tokens first.
    pub by_agent: Vec<Spent>,
    /// Tokens and cost by model, the most tokens first.
    pub by_model: Vec<Spent>,
}

/// The most failing steps a report lists.
pub const MOST_FAILING: usize = 10;

/// A step that failed for good (its retries spent).
#[derive(Debug, Clone, PartialEq)]
pub struct Failing {
    /// Its workflow.
    pub workflow: WorkflowId,
    /// The step, as the definition names it (`per_epic.stories`).
    pub step: String,
    /// Failures for good, over every run counted.
    pub failures: u32,
    /// The runs it failed in.
    pub runs: usize,
    /// The failures by error class.
    pub classes: BTreeMap<String, u32>,
}

/// Tokens and what they cost, for an agent or a model.
#[derive(Debug, Clone, PartialEq)]
pub struct Spent {
    /// The agent's or model's name.
    pub name: String,
    /// Tokens used.
    pub usage: TokenUsage,
    /// USD, when every model used has a price.
    pub cost_usd: Option<f64>,
}

impl App {
    /// The figures of the runs `query` selects, from the store's run index.
    pub async fn run_stats(&self, query: &StatsQuery) -> Result<Report, Error> {
        let since = query.since.map(|d| Timestamp(self.now().0.saturating_sub(d.as_millis())));
        let selected = RunQuery { workflow: query.workflow.clone(), ..RunQuery::default() };
        let mut runs = self.store().summaries(&selected).await.map_err(EngineError::from)?;
        if let Some(since) = since {
            runs.retain(|r| r.created_at >= since);
        }
        // One pass over the runs (each a few cache misses away): tallies by
        // workflow, summed into the overall one and tokens by model after.
        let mut by_workflow: BTreeMap<&WorkflowId, Tally> = BTreeMap::new();
        let mut failing: BTreeMap<(&WorkflowId, &str), Failing> = BTreeMap::new();
        let mut by_agent: BTreeMap<String, BTreeMap<String, TokenUsage>> = BTreeMap::new();
        for run in &runs {
            by_workflow.entry(&run.workflow).or_default().add(run);
            for (step, classes) in &run.figures.failures {
                let entry = failing.entry((&run.workflow, step)).or_insert_with(|| Failing {
                    workflow: run.workflow.clone(),
                    step: step.clone(),
                    failures: 0,
                    runs: 0,
                    classes: BTreeMap::new(),
                });
                entry.runs += 1;
                for (class, n) in classes {
                    entry.failures += n;
                    *entry.classes.entry(class.clone()).or_default() += n;
                }
            }
            for (agent, models) in &run.figures.usage_by_agent {
                for (model, usage) in models {
                    add_usage(named(&mut by_agent, agent), model, *usage);
                }
            }
        }
        let mut overall = Tally::default();
        for tally in by_workflow.values() {
            overall.merge(tally);
        }
        let by_model: BTreeMap<String, BTreeMap<String, TokenUsage>> = overall
            .usage_by_model()
            .map(|(model, usage)| (model.clone(), [(model.clone(), *usage)].into()))
            .collect();
        let mut by_workflow: Vec<(WorkflowId, Stats)> =
            by_workflow.into_iter().map(|(workflow, tally)| (workflow.clone(), tally.stats(self))).collect();
        by_workflow.sort_by(|a, b| b.1.runs.cmp(&a.1.runs).then_with(|| a.0.cmp(&b.0)));
        let mut failing: Vec<Failing> = failing.into_values().collect();
        failing.sort_by(|a, b| {
            b.failures.cmp(&a.failures).then_with(|| (&a.workflow, &a.step).cmp(&(&b.workflow, &b.step)))
        });
        failing.truncate(MOST_FAILING);
        Ok(Report {
            workflow: query.workflow.clone(),
            since,
            overall: overall.stats(self),
            by_workflow,
            failing,
            by_agent: self.spent(by_agent),
            by_model: self.spent(by_model),
        })
    }

    /// Tokens and cost of each name (by model), the most tokens first.
    fn spent(&self, by_name: BTreeMap<String, BTreeMap<String, TokenUsage>>) -> Vec<Spent> {
        let mut spent: Vec<Spent> = by_name
            .into_iter()
            .map(|(name, by_model)| Spent {
                name,
                usage: TokenUsage::total(by_model.values()),
                cost_usd: self.cost(&by_model),
            })
            .collect();
        let tokens = |s: &Spent| s.usage.prompt_tokens + s.usage.completion_tokens;
        spent.sort_by(|a, b| tokens(b).cmp(&tokens(a)).then_with(|| a.name.cmp(&b.name)));
        spent
    }
}

/// `name`'s entry of `by_name`, the name copied only the first time.
fn named<'a, V: Default>(by_name: &'a mut BTreeMap<String, V>, name: &str) -> &'a mut V {
    if !by_name.contains_key(name) {
        by_name.insert(name.to_owned(), V::default());
    }
    by_name.get_mut(name).unwrap_or_else(|| unreachable!("inserted just before"))
}
