//! Failure policies: what a step whose retries are spent does now (go on,
//! stop the run or its group, skip, block, or go back to an earlier step).

use super::{Action, Cx, Decisive};
use crate::definition::{FailureAction, OnFailure};
use crate::program::{Block, Frame};
use crate::state::{ErrorClass, EventKind, RunState, StepError, StepPath, StepStatus};

/// What a failed step does now, after its retries.
pub(super) enum Effective {
    Continue,
    Stop,
    Skip,
    Block,
    Goto(usize),
}

impl Cx<'_> {
    /// Whether a need no longer holds its dependents back.
    pub(super) fn is_done(&self, block: &Block, i: usize, path: &StepPath, status: StepStatus) -> bool {
        match status {
            StepStatus::Succeeded | StepStatus::Skipped => true,
            StepStatus::Failed => matches!(self.effective_failure(block, i, path), Effective::Continue),
            _ => false,
        }
    }

    pub(super) fn effective_failure(&self, block: &Block, i: usize, path: &StepPath) -> Effective {
        let step = &block.steps[i];
        if step.optional {
            return Effective::Continue;
        }
        let action = match self.program.on_failure(step) {
            OnFailure::Action(a) => *a,
            OnFailure::Goto { step: target, max, then } => {
                let taken = self.state.gotos.get(path).copied().unwrap_or(0);
                match block.position(target.as_str()) {
                    Some(t) if taken < *max => return Effective::Goto(t),
                    _ => *then,
                }
            }
        };
        match action {
            FailureAction::Stop => Effective::Stop,
            FailureAction::Continue => Effective::Continue,
            FailureAction::Skip => Effective::Skip,
            FailureAction::Block => Effective::Block,
        }
    }

    /// A stopping failure: at the top level the run fails; inside an
    /// instance or iteration the group fails, and its other instances stop.
    /// Either way, what is in flight there is cancelled first.
    pub(super) fn stop(&self, frame: &Frame, failed: &StepPath) -> Decisive {
        let (within, end) = match frame.group() {
            None => (String::new(), EventKind::RunFailed { error: step_failed(self.state, failed) }),
            Some((group, _)) => {
                let attempt = self.state.steps.get(&group).map_or(1, |s| s.attempts);
                let error = step_failed(self.state, failed);
                let end = EventKind::StepFailed {
                    path: group.clone(),
                    attempt,
                    error,
                    output: None,
                    retry_at: None,
                };
                (format!("{group}["), end)
            }
        };
        let mut actions: Vec<Action> = self
            .state
            .steps
            .iter()
            .filter(|(p, s)| {
                p.as_str().starts_with(&within)
                    && matches!(s.status, StepStatus::Running | StepStatus::Waiting)
            })
            .map(|(path, _)| Action::Record(EventKind::StepCancelled { path: path.clone() }))
            .collect();
        actions.push(Action::Record(end));
        actions
    }

    /// Runs again from `target`: it, the failed step, and every sibling
    /// that needs either.
    pub(super) fn goto(&self, paths: &[StepPath], block: &Block, from: usize, target: usize) -> Decisive {
        let again: Vec<usize> = (0..paths.len())
            .filter(|&j| {
                j == target || j == from || block.reach.needs(j, target) || block.reach.needs(j, from)
            })
            .collect();
        let mut actions: Vec<Action> = again
            .iter()
            .map(|&j| &paths[j])
            .filter(|p| {
                self.state
                    .steps
                    .get(*p)
                    .is_some_and(|s| matches!(s.status, StepStatus::Running | StepStatus::Waiting))
            })
            .map(|path| Action::Record(EventKind::StepCancelled { path: path.clone() }))
            .collect();
        actions.push(Action::Record(EventKind::GotoTaken {
            from: paths[from].clone(),
            to: paths[target].clone(),
            reset: again.iter().map(|&j| paths[j].clone()).collect(),
        }));
        actions
    }
}

/// The error a failed step gives whatever it failed: `step X failed: ...`.
pub(super) fn step_failed(state: &RunState, path: &StepPath) -> StepError {
    let cause = state.steps.get(path).and_then(|s| s.error.clone());
    let cause = cause.unwrap_or(StepError::new(ErrorClass::Fatal, "it failed"));
    StepError { message: format!("step `{path}` failed: {}", cause.message), ..cause }
}
