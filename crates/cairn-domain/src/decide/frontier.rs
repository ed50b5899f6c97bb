//! Which steps of a run [`decide_with`](super::decide_with) looks at, kept
//! between rounds so a round costs what changed.

use std::collections::{BTreeSet, HashMap};

use crate::program::Program;
use crate::state::{EventKind, StepPath, StepStatus};

/// Which steps of each live frame [`decide_with`](super::decide_with) has to look at, kept
/// between rounds: a derived index of the run's events, like the state.
///
/// A step is looked at while it may act or be acted on: until it has
/// succeeded, been skipped or cancelled, or while pending until one of its
/// needs holds it back. Every event that changes a step names it, and
/// [`Frontier::note`] puts that step and its dependents back in view; a
/// frame the frontier has not seen yet is looked at whole. So each round
/// costs the steps that changed and those in flight, never the run's size.
#[derive(Debug, Default)]
pub struct Frontier {
    /// By the frame's path prefix (`""` for the top level).
    pub(super) fronts: HashMap<String, Front>,
    /// Steps named by the events noted since the last round.
    changed: Vec<StepPath>,
}

/// What the frontier knows of one frame.
#[derive(Debug)]
pub(super) struct Front {
    /// The steps to look at, in file order.
    pub(super) look: BTreeSet<usize>,
    /// Each step's status when last looked at.
    pub(super) status: Vec<StepStatus>,
    /// Whether each step no longer holds its dependents back, when last looked at.
    pub(super) done: Vec<bool>,
    /// How many steps have a finished status.
    pub(super) finished: usize,
}

impl Front {
    pub(super) fn new(n: usize) -> Self {
        Self {
            look: (0..n).collect(),
            status: vec![StepStatus::Pending; n],
            done: vec![false; n],
            finished: 0,
        }
    }

    pub(super) fn set(&mut self, i: usize, status: StepStatus, done: bool) {
        match (self.status[i].is_finished(), status.is_finished()) {
            (false, true) => self.finished += 1,
            (true, false) => self.finished -= 1,
            _ => {}
        }
        self.status[i] = status;
        self.done[i] = done;
    }
}

impl Frontier {
    /// Notes an event applied to the run's state: the steps it changed come
    /// back into view. Every event a driver applies must be noted.
    pub fn note(&mut self, kind: &EventKind) {
        match kind {
            EventKind::StepReset { path }
            | EventKind::StepReworked { path }
            | EventKind::Answered { path, .. } => {
                self.reset(path);
            }
            EventKind::GotoTaken { from, reset, .. } => {
                reset.iter().for_each(|path| self.reset(path));
                self.changed.push(from.clone());
            }
            EventKind::InstanceFinished { path, key, .. } => {
                // A finished instance is never walked again (a reset of its
                // group starts it afresh).
                self.fronts.remove(&format!("{path}[{key}]."));
                self.changed.push(path.clone());
            }
            EventKind::StepStarted { path, .. }
            | EventKind::StepSucceeded { path, .. }
            | EventKind::StepFailed { path, .. }
            | EventKind::StepSkipped { path, .. }
            | EventKind::StepWaiting { path, .. }
            | EventKind::ChildWaiting { path, .. }
            | EventKind::GateDecided { path, .. }
            | EventKind::StepAccepted { path }
            | EventKind::StepCancelled { path }
            | EventKind::GroupExpanded { path, .. }
            | EventKind::IterationStarted { path, .. } => self.changed.push(path.clone()),
            EventKind::RunCreated { .. }
            | EventKind::RunStarted
            | EventKind::RunWaiting { .. }
            | EventKind::RunPaused
            | EventKind::RunCompleted
            | EventKind::RunFailed { .. }
            | EventKind::RunCancelled
            | EventKind::RunForked { .. }
            | EventKind::ChildStarted { .. }
            | EventKind::BudgetRaised { .. }
            | EventKind::SessionExtended { .. }
            | EventKind::PromptRendered { .. }
            | EventKind::ToolCalled { .. }
            | EventKind::ToolReturned { .. }
            | EventKind::OutputRepaired { .. }
            | EventKind::UsageRecorded { .. }
            | EventKind::DocumentStored { .. } => {}
        }
    }

    /// A step runs again: whatever ran inside it is gone from the state.
    fn reset(&mut self, path: &StepPath) {
        let inside = format!("{path}[");
        self.fronts.retain(|prefix, _| !prefix.starts_with(&inside));
        self.changed.push(path.clone());
    }

    /// Puts the changed steps and their dependents back in view.
    pub(super) fn take_changes(&mut self, program: &Program) {
        for path in self.changed.drain(..) {
            let Some((b, i)) = program.locate(&path) else { continue };
            let block = program.block(b);
            let text = path.as_str();
            let prefix = &text[..text.len() - block.steps[i].id.as_str().len()];
            if let Some(front) = self.fronts.get_mut(prefix) {
                front.look.insert(i);
                front.look.extend(block.dependents[i].iter().copied());
            }
        }
    }
}
