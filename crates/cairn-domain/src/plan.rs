//! The execution plan: per scope, the steps in topological order with their
//! resolved `needs`, levels of steps that can run together, and the critical
//! path. The engine schedules from the same [`Dag`]; this is its readable form.

use serde::Serialize;

use crate::dag::Dag;
use crate::definition::{InputDef, Step, StepKind, Workflow};
use crate::id::{Name, StepId, WorkflowId};

/// The plan of a whole workflow.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Plan {
    /// The workflow's id.
    pub workflow: WorkflowId,
    /// Steps in the whole definition, nested ones included.
    pub total_steps: usize,
    /// The inputs a run takes, by name: what a form to start one asks.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub inputs: Vec<PlanInput>,
    /// The top-level scope.
    #[serde(flatten)]
    pub scope: ScopePlan,
}

/// The plan of one sibling list.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ScopePlan {
    /// Step ids level by level: every step of a level can run once the
    /// levels before it are done.
    pub levels: Vec<Vec<StepId>>,
    /// Steps on the longest chain of `needs`.
    pub critical_path: usize,
    /// The steps, in topological order.
    pub steps: Vec<PlanStep>,
}

/// One declared input of a plan.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PlanInput {
    /// Its name.
    pub name: Name,
    /// Its type, default, description and whether it is required.
    #[serde(flatten)]
    pub def: InputDef,
}

/// One step of a plan.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PlanStep {
    /// Its id.
    pub id: StepId,
    /// Its kind key (`agent`, `for_each`, ...).
    pub kind: &'static str,
    /// The siblings it waits for, implicit ones included.
    pub needs: Vec<StepId>,
    /// Its level.
    pub level: usize,
    /// The plan of its nested steps, for `for_each` and `loop`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub body: Option<Box<ScopePlan>>,
}

/// A plan cannot be made of a definition with a dependency cycle.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("steps {0} form a dependency cycle")]
pub struct CycleError(pub String);

impl Plan {
    /// Plans a validated workflow.
    pub fn build(wf: &Workflow) -> Result<Self, CycleError> {
        Ok(Self {
            workflow: wf.id.clone(),
            total_steps: count(&wf.steps),
            inputs: wf
                .inputs
                .iter()
                .map(|(name, def)| PlanInput { name: name.clone(), def: def.clone() })
                .collect(),
            scope: ScopePlan::build(&wf.steps)?,
        })
    }
}

fn count(steps: &[Step]) -> usize {
    steps.iter().map(|s| 1 + s.body().map_or(0, count)).sum()
}

impl ScopePlan {
    /// Plans one sibling list and, recursively, the bodies in it.
    pub fn build(steps: &[Step]) -> Result<Self, CycleError> {
        let dag = Dag::of_steps(steps);
        let (Some(order), Some(level)) = (dag.topological_order(), dag.levels()) else {
            let ids: Vec<&str> = steps.iter().map(|s| s.id.as_str()).collect();
            return Err(CycleError(ids.join(", ")));
        };
        let depth = level.iter().max().map_or(0, |m| m + 1);
        let mut levels = vec![Vec::new(); depth];
        let mut planned = Vec::with_capacity(steps.len());
        for &i in &order {
            let step = &steps[i];
            levels[level[i]].push(step.id.clone());
            let body = match &step.kind {
                StepKind::ForEach(g) => Some(Box::new(Self::build(&g.steps)?)),
                StepKind::Loop(l) => Some(Box::new(Self::build(&l.steps)?)),
                _ => None,
            };
            planned.push(PlanStep {
                id: step.id.clone(),
                kind: step.kind.key(),
                needs: dag.needs[i].iter().map(|&n| steps[n].id.clone()).collect(),
                level: level[i],
                body,
            });
        }
        Ok(Self { levels, critical_path: depth, steps: planned })
    }
}
/// The top-level steps no other step needs: where a run's results end up.
pub fn final_steps(wf: &Workflow) -> Vec<&Step> {
    let dag = Dag::of_steps(&wf.steps);
    let needed: std::collections::BTreeSet<usize> = dag.needs.iter().flatten().copied().collect();
    (0..wf.steps.len()).filter(|i| !needed.contains(i)).map(|i| &wf.steps[i]).collect()
}
