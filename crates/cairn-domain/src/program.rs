//! A validated workflow prepared for running, and where a step sits in a run.
//!
//! A [`Program`] holds every sibling list of the workflow as a [`Block`]
//! (the top level, and the body of each `for_each` and `loop`) with its
//! dependency graph and what each step reads, computed once. A [`Frame`] is
//! one live copy of a block: the top level, one `for_each` instance or one
//! loop iteration. It knows the path prefix of its steps
//! (`per_epic[e-auth].`), its scope (`epic/e-auth`) and its iteration
//! variables, and resolves `steps.ID` the way templates read it: innermost
//! first, then outward.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use minijinja::Environment;
use serde_json::{Value, json};

use crate::dag::{Dag, Reach};
use crate::definition::{OnFailure, RetryPolicy, Step, StepKind, Workflow};
use crate::duration::Duration;
use crate::id::Name;
use crate::plan::CycleError;
use crate::scope::ScopeKey;
use crate::state::{RunState, StepPath, StepStatus, TokenUsage};
use crate::template::{self, Reads};

/// The most instances one `for_each` may expand to. Each instance costs
/// its item, its steps' states and its outputs in memory; beyond this a run
/// fails the group with a clear error instead of growing without bound.
pub const MAX_INSTANCES: usize = 100_000;

/// One sibling list of the workflow, prepared once.
pub struct Block {
    /// The steps, in file order.
    pub steps: Vec<Step>,
    /// Their paths at the top level (their ids), made once.
    top_paths: Vec<StepPath>,
    index: HashMap<String, usize>,
    /// Who needs whom among the siblings.
    pub dag: Dag,
    /// The reverse of `dag.needs`: who needs each step.
    pub dependents: Vec<Vec<usize>>,
    /// Transitive needs.
    pub reach: Reach,
    /// What each step's templates read.
    pub reads: Vec<Reads>,
    /// The body block of each `for_each` or `loop` step.
    pub bodies: Vec<Option<usize>>,
    /// Document types produced in this block at any depth: after a group,
    /// the enclosing scope sees each as the list of its instances' documents.
    pub produced: Vec<Name>,
}

impl Block {
    /// The position of the step `id`.
    pub fn position(&self, id: &str) -> Option<usize> {
        self.index.get(id).copied()
    }
}

/// A validated workflow prepared for running.
pub struct Program {
    workflow: Workflow,
    blocks: Vec<Block>,
    /// Output schemas of agent steps, compiled once, by (block, position).
    validators: HashMap<(usize, usize), Arc<jsonschema::Validator>>,
    /// USD per million prompt and completion tokens, by model.
    prices: BTreeMap<String, Price>,
}

/// What a model's tokens cost: USD per million prompt and completion tokens.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Price {
    /// Per million prompt tokens.
    pub prompt: f64,
    /// Per million completion tokens.
    pub completion: f64,
}

impl Program {
    /// Prepares a validated workflow.
    pub fn new(workflow: Workflow) -> Result<Self, CycleError> {
        let env = template::environment();
        let mut blocks = Vec::new();
        add_block(&workflow, &workflow.steps, &env, &mut blocks)?;
        let mut validators = HashMap::new();
        for (b, block) in blocks.iter().enumerate() {
            for (i, step) in block.steps.iter().enumerate() {
                let StepKind::Agent(a) = &step.kind else { continue };
                let Some(schema) = a.output.as_ref().and_then(|o| o.schema.as_ref()) else { continue };
                // Validation compiled it already; a schema that fails here is left unchecked.
                if let Ok(v) = jsonschema::validator_for(&schema.document) {
                    validators.insert((b, i), Arc::new(v));
                }
            }
        }
        Ok(Self { workflow, blocks, validators, prices: BTreeMap::new() })
    }

    /// The workflow.
    pub fn workflow(&self) -> &Workflow {
        &self.workflow
    }

    /// A block by number; 0 is the top level.
    pub fn block(&self, b: usize) -> &Block {
        &self.blocks[b]
    }

    /// The block and position of the step at `path`.
    pub fn locate(&self, path: &StepPath) -> Option<(usize, usize)> {
        let mut block = 0;
        let segments = segments(path.as_str())?;
        let last = segments.len() - 1;
        for (n, (id, key)) in segments.into_iter().enumerate() {
            let i = self.blocks[block].position(id)?;
            match key {
                Some(_) if n < last => block = self.blocks[block].bodies[i]?,
                None if n == last => return Some((block, i)),
                _ => return None,
            }
        }
        None
    }

    /// The body block of the group step `id` of block `b`.
    pub fn body(&self, b: usize, id: &str) -> Option<usize> {
        let block = &self.blocks[b];
        block.position(id).and_then(|i| block.bodies[i])
    }

    /// The step at `path`, if the program has one.
    pub fn step(&self, path: &StepPath) -> Option<&Step> {
        self.locate(path).map(|(b, i)| &self.blocks[b].steps[i])
    }

    /// What the step at `path` reads from the run, for building its context.
    pub fn reads(&self, path: &StepPath) -> &Reads {
        static ALL: std::sync::OnceLock<Reads> = std::sync::OnceLock::new();
        self.locate(path).map_or_else(|| ALL.get_or_init(Reads::all), |(b, i)| &self.blocks[b].reads[i])
    }

    /// The program with the prices of models, for the run's budget.
    pub fn with_prices(mut self, prices: BTreeMap<String, Price>) -> Self {
        self.prices = prices;
        self
    }

    /// What the run's LLM calls cost so far, in USD; models without a price count as free.
    pub fn spent(&self, state: &RunState) -> f64 {
        priced(&state.usage_by_model, &self.prices).0
    }

    /// The compiled output schema of the agent step at `path`, if it has one.
    pub fn validator(&self, path: &StepPath) -> Option<Arc<jsonschema::Validator>> {
        self.locate(path).and_then(|at| self.validators.get(&at).cloned())
    }

    /// The step's retry policy: its `retry` merged over the defaults.
    pub fn retry(&self, step: &Step) -> RetryPolicy {
        match &step.retry {
            Some(spec) => self.workflow.defaults.retry.merged(spec),
            None => self.workflow.defaults.retry.clone(),
        }
    }

    /// The step's attempt timeout, if any.
    pub fn timeout(&self, step: &Step) -> Option<Duration> {
        step.timeout.or(self.workflow.defaults.timeout)
    }

    /// The step's failure policy: its own, else the default.
    pub fn on_failure<'a>(&'a self, step: &'a Step) -> &'a OnFailure {
        step.on_failure.as_ref().unwrap_or(&self.workflow.defaults.on_failure)
    }

    /// The scope documents of the step at `path` are stored in.
    pub fn scope_of(&self, path: &StepPath) -> ScopeKey {
        let mut scope = ScopeKey::root();
        let mut block = 0;
        for (id, key) in segments(path.as_str()).unwrap_or_default() {
            let (Some(key), Some(i)) = (key, self.blocks[block].position(id)) else { break };
            if let StepKind::ForEach(g) = &self.blocks[block].steps[i].kind {
                scope = scope.child(g.as_name.as_str(), key);
            }
            match self.blocks[block].bodies[i] {
                Some(body) => block = body,
                None => break,
            }
        }
        scope
    }
}

/// What tokens by model cost in USD at `prices`, and whether every model
/// has a price (the sum leaves out those that do not). A cost the provider
/// reported stands for its model's price.
pub fn priced(usage: &BTreeMap<String, TokenUsage>, prices: &BTreeMap<String, Price>) -> (f64, bool) {
    usage.iter().fold((0.0, true), |(sum, all), (model, u)| match prices.get(model) {
        _ if u.cost_micro_usd > 0 => (sum + u.cost_micro_usd as f64 / 1e6, all),
        Some(p) => {
            (sum + (u.prompt_tokens as f64 * p.prompt + u.completion_tokens as f64 * p.completion) / 1e6, all)
        }
        None => (sum, false),
    })
}

fn add_block(
    wf: &Workflow,
    steps: &[Step],
    env: &Environment<'_>,
    blocks: &mut Vec<Block>,
) -> Result<usize, CycleError> {
    let dag = Dag::of_steps(steps);
    let mut dependents = vec![Vec::new(); steps.len()];
    for (i, needs) in dag.needs.iter().enumerate() {
        for &d in needs {
            dependents[d].push(i);
        }
    }
    let reach = dag.reach().ok_or_else(|| CycleError(wf.id.to_string()))?;
    let reads = steps
        .iter()
        .map(|step| {
            let mut sources = step.template_sources();
            if let StepKind::Agent(a) = &step.kind
                && let Some(system) = wf.agents.get(a.agent.as_str()).and_then(|agent| agent.system.as_ref())
            {
                sources.push(system.as_str());
            }
            Reads::of(env, sources)
        })
        .collect();
    let mut produced = Vec::new();
    collect_produced(steps, &mut produced);
    let me = blocks.len();
    blocks.push(Block {
        steps: steps.to_vec(),
        top_paths: steps.iter().map(|s| StepPath::new(s.id.as_str())).collect(),
        index: steps.iter().enumerate().map(|(i, s)| (s.id.to_string(), i)).collect(),
        dag,
        dependents,
        reach,
        reads,
        bodies: vec![None; steps.len()],
        produced,
    });
    for (i, step) in steps.iter().enumerate() {
        if let Some(body) = step.body() {
            let b = add_block(wf, body, env, blocks)?;
            blocks[me].bodies[i] = Some(b);
        }
    }
    Ok(me)
}

fn collect_produced(steps: &[Step], out: &mut Vec<Name>) {
    for step in steps {
        if let Some(t) = &step.produces
            && !out.contains(t)
        {
            out.push(t.clone());
        }
        if let Some(body) = step.body() {
            collect_produced(body, out);
        }
    }
}

/// The parts of a path: `per_epic[e-auth].stories` is
/// `[("per_epic", Some("e-auth")), ("stories", None)]`. Every part but the
/// last names an instance; `None` for text that is not a path.
pub fn segments(path: &str) -> Option<Vec<(&str, Option<&str>)>> {
    let mut out = Vec::new();
    let mut rest = path;
    loop {
        let end = rest.find(['.', '[']).unwrap_or(rest.len());
        let (id, after) = rest.split_at(end);
        if id.is_empty() {
            return None;
        }
        match after.strip_prefix('[') {
            Some(inner) => {
                let close = inner.find(']')?;
                out.push((id, Some(&inner[..close])));
                rest = inner[close + 1..].strip_prefix('.')?;
            }
            None if after.is_empty() => {
                out.push((id, None));
                return Some(out);
            }
            None => return None,
        }
    }
}

/// One level of a frame: a block and the prefix of its steps' paths.
#[derive(Debug, Clone)]
struct Level {
    block: usize,
    prefix: String,
    /// The group step this level is an instance of, and the instance's key.
    owner: Option<(StepPath, String)>,
    /// For a loop iteration, its number: a step can read what a later
    /// sibling did in the previous one.
    iteration: Option<u32>,
}

/// One live copy of a block: the top level, an instance or an iteration.
#[derive(Debug, Clone)]
pub struct Frame {
    levels: Vec<Level>,
    /// Where its steps store documents, and where `docs.X` lookups start.
    pub scope: ScopeKey,
    /// Iteration variables in scope: each `for_each`'s item, and `loop`.
    pub vars: Vec<(String, Value)>,
}

impl Frame {
    /// The top level of a run.
    pub fn root() -> Self {
        let top = Level { block: 0, prefix: String::new(), owner: None, iteration: None };
        Self { levels: vec![top], scope: ScopeKey::root(), vars: Vec::new() }
    }

    /// The block this frame runs.
    pub fn block(&self) -> usize {
        self.levels.last().map_or(0, |l| l.block)
    }

    /// The paths of every step of this frame, in file order.
    pub fn paths<'p>(&self, program: &'p Program) -> std::borrow::Cow<'p, [StepPath]> {
        let block = program.block(self.block());
        match self.levels.last() {
            Some(level) if !level.prefix.is_empty() => {
                block.steps.iter().map(|s| self.path(s.id.as_str())).collect::<Vec<_>>().into()
            }
            _ => block.top_paths.as_slice().into(),
        }
    }

    /// The prefix of its steps' paths: `""` at the top level,
    /// `per_epic[e-auth].` in an instance.
    pub fn prefix(&self) -> &str {
        self.levels.last().map_or("", |l| l.prefix.as_str())
    }

    /// The path of the step at position `i` of this frame's block, made
    /// only when the frame is an instance.
    pub fn path_at<'p>(&self, program: &'p Program, i: usize) -> std::borrow::Cow<'p, StepPath> {
        let block = program.block(self.block());
        match self.prefix() {
            "" => std::borrow::Cow::Borrowed(&block.top_paths[i]),
            _ => std::borrow::Cow::Owned(self.path(block.steps[i].id.as_str())),
        }
    }

    /// The path of this frame's step `id`.
    pub fn path(&self, id: &str) -> StepPath {
        StepPath::new(format!("{}{id}", self.prefix()))
    }

    /// The instance `key` of the group step `group` (at `path` in this
    /// frame); `item` is the instance's item, or for a loop its number.
    pub fn instance(&self, program: &Program, group: &Step, path: &StepPath, key: &str, item: Value) -> Self {
        let mut child = self.clone();
        let mut level = Level {
            block: program.body(self.block(), group.id.as_str()).unwrap_or(0),
            prefix: format!("{path}[{key}]."),
            owner: Some((path.clone(), key.to_owned())),
            iteration: None,
        };
        match &group.kind {
            StepKind::ForEach(g) => {
                child.scope = self.scope.child(g.as_name.as_str(), key);
                child.vars.push((g.as_name.to_string(), item));
            }
            _ => {
                let n = item.as_u64().and_then(|n| u32::try_from(n).ok()).unwrap_or(0);
                child.vars.push(("loop".to_owned(), json!({ "index": n })));
                level.iteration = Some(n);
            }
        }
        child.levels.push(level);
        child
    }

    /// The group step this frame is an instance of, and its key; `None` at the top level.
    pub fn group(&self) -> Option<(StepPath, String)> {
        self.levels.last().and_then(|l| l.owner.clone())
    }

    /// The frame a step path runs in, with the step's position in it.
    pub fn of(program: &Program, state: &RunState, path: &StepPath) -> Option<(Self, usize)> {
        let mut frame = Self::root();
        let parts = segments(path.as_str())?;
        let last = parts.len() - 1;
        for (n, (id, key)) in parts.into_iter().enumerate() {
            let block = program.block(frame.block());
            let i = block.position(id)?;
            let Some(key) = key else { return (n == last).then_some((frame, i)) };
            let step = &block.steps[i];
            let group_path = frame.path(id);
            let item = match &step.kind {
                StepKind::ForEach(g) => state
                    .scopes
                    .entity(&frame.scope.child(g.as_name.as_str(), key))
                    .cloned()
                    .unwrap_or(Value::Null),
                _ => json!(key.parse::<u32>().ok()?),
            };
            frame = frame.instance(program, step, &group_path, key, item);
        }
        None
    }

    /// The path `steps.ID` reads from here: the innermost level that has
    /// the id decides. Inside a loop, a step that has not finished in this
    /// iteration is read from the previous one.
    pub fn resolve(&self, program: &Program, state: &RunState, id: &str) -> Option<StepPath> {
        for level in self.levels.iter().rev() {
            if program.block(level.block).position(id).is_none() {
                continue;
            }
            let here = StepPath::new(format!("{}{id}", level.prefix));
            if let (Some(n), Some((loop_path, _))) = (level.iteration, &level.owner) {
                let finished = state.steps.get(&here).is_some_and(|s| s.status.is_finished());
                if !finished && n > 0 {
                    return Some(loop_path.instance_child(&(n - 1).to_string(), id));
                }
            }
            return Some(here);
        }
        None
    }

    /// Every step id visible from here, innermost first.
    pub fn visible_ids<'p>(&self, program: &'p Program) -> Vec<&'p str> {
        let mut seen = std::collections::HashSet::new();
        let mut ids: Vec<&str> = Vec::new();
        for level in self.levels.iter().rev() {
            for step in &program.block(level.block).steps {
                if seen.insert(step.id.as_str()) {
                    ids.push(step.id.as_str());
                }
            }
        }
        ids
    }
}

/// What a step reads as `steps.ID` when it has no state yet (a loop's
/// first iteration reading a later sibling).
pub fn not_started() -> Value {
    json!({ "output": null, "status": StepStatus::Pending, "attempts": 0, "error": null })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_split_into_instances_and_a_step() {
        assert_eq!(segments("a"), Some(vec![("a", None)]));
        assert_eq!(
            segments("per_epic[e.1].per_story[s-2].tasks"),
            Some(vec![("per_epic", Some("e.1")), ("per_story", Some("s-2")), ("tasks", None)])
        );
        for bad in ["", "a.b", "a[1]", "a[1]b", "[1].a", "a[1.b"] {
            assert_eq!(segments(bad), None, "{bad}");
        }
    }
}
