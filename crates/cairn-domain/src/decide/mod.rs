//! The pure decision core: from a run's state and its program alone, what
//! happens next ([`decide`]) and what an attempt's outcome records
//! ([`attempt_finished`]). The engine only carries these out.
//!
//! `decide` returns either events to record (transitions that need no
//! effect: skips, failure policies, run completion), or steps to start and
//! the time of the next due retry. The engine records, applies and asks
//! again until only starts remain, so every rule sees the state its previous
//! decision made.

mod attempt;
mod failure;
mod frontier;
mod gate;
mod group;

use std::borrow::Cow;
use std::collections::HashMap;

use serde_json::Value;

use crate::definition::StepKind;
use crate::duration::Duration;
use crate::event::Cause;
pub use crate::program::Program;
use crate::program::{Block, Frame};
use crate::render::{Renderer, truthy};
use crate::state::{
    ErrorClass, EventKind, RunState, RunStatus, StepError, StepPath, StepState, StepStatus, Timestamp,
    WaitKind,
};

pub use attempt::{attempt_finished, backoff, child_run_id, idempotency_key, run_output};
use failure::{Effective, step_failed};
use frontier::Front;
pub use frontier::Frontier;
use group::expand;

/// What the engine does next.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    /// Record this event; it needs no effect beyond the record (and, for
    /// `step_cancelled`, stopping the attempt in flight).
    Record(EventKind),
    /// Start this attempt of the step: record `step_started`, then execute.
    Start {
        /// The step.
        path: StepPath,
        /// The attempt number, from 1, never reused for the step.
        attempt: u32,
    },
    /// Nothing else is due before this time (the next retry).
    WakeAt(Timestamp),
}

/// How an attempt ended, as the engine observed it.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// The step produced its output.
    Succeeded(Value),
    /// The attempt failed.
    Failed {
        /// Why.
        error: StepError,
        /// What it produced anyway (a command's exit code and output).
        output: Option<Value>,
        /// The least delay before trying again (a provider's `Retry-After`).
        retry_after: Option<Duration>,
    },
    /// The model asked these questions instead of answering (`clarify: true`).
    Clarify(Vec<String>),
    /// An interactive step's agent said this; the person's turn is next.
    Replied(String),
    /// A `workflow:` step's child run waits for a person, as `wait` says.
    ChildWaits {
        /// The child run.
        run_id: crate::id::RunId,
        /// How it waits.
        wait: WaitKind,
    },
}

/// Decides what happens next in a run, from its state alone.
pub fn decide(state: &RunState, program: &Program, renderer: &Renderer, now: Timestamp) -> Vec<Action> {
    decide_with(&mut Frontier::default(), state, program, renderer, now)
}

/// [`decide`], looking only at the steps `frontier` says may have moved:
/// what a driver calls round after round, noting every event it applies
/// ([`Frontier::note`]), so a round costs what changed, not the run's size.
/// Returns exactly what [`decide`] returns for the same state.
pub fn decide_with(
    frontier: &mut Frontier,
    state: &RunState,
    program: &Program,
    renderer: &Renderer,
    now: Timestamp,
) -> Vec<Action> {
    match state.status {
        RunStatus::Pending => return vec![Action::Record(EventKind::RunStarted)],
        RunStatus::Running => {}
        _ => return Vec::new(),
    }
    let deadline = program.workflow().deadline(state.created_at);
    if let (Some(deadline), Some(limit)) = (deadline, program.workflow().timeout)
        && deadline <= now
    {
        return timed_out(state, limit);
    }
    frontier.take_changes(program);
    let cx = Cx { state, program, renderer, now };
    let mut walk = Walk {
        records: Vec::new(),
        ready: Vec::new(),
        wake: None,
        running: 0,
        person: None,
        fronts: &mut frontier.fronts,
    };
    let end = match cx.frame(&Frame::root(), &mut walk) {
        Ok(end) => end,
        Err(decisive) => return decisive,
    };
    if !walk.records.is_empty() {
        return walk.records.into_iter().map(Action::Record).collect();
    }
    let free = (program.workflow().defaults.max_parallel as usize).saturating_sub(walk.running);
    let mut actions: Vec<Action> = walk
        .ready
        .into_iter()
        .take(free)
        .map(|path| {
            let attempt = state.steps.get(&path).map_or(0, |s| s.attempts) + 1;
            Action::Start { path, attempt }
        })
        .collect();
    // The next due retry; and the run's deadline, while something runs,
    // starts or waits for its retry (not when the run is about to end or
    // to wait for a person: then no driver waits).
    let busy = walk.running > 0 || !actions.is_empty() || walk.wake.is_some();
    if let Some(w) = walk.wake.into_iter().chain(deadline.filter(|_| busy)).min() {
        actions.push(Action::WakeAt(w));
    }
    if actions.is_empty()
        && walk.running == 0
        && let (End::Busy, Some(wait)) = (&end, walk.person)
    {
        return vec![Action::Record(EventKind::RunWaiting { wait })];
    }
    if let End::Done { failed } = end
        && actions.is_empty()
    {
        let event = match failed {
            Some(path) => EventKind::RunFailed { error: step_failed(state, &path) },
            None => EventKind::RunCompleted,
        };
        return vec![Action::Record(event)];
    }
    actions
}

/// What a run records when its `timeout` passed: every step running or
/// waiting cancelled (the engine stops what is in flight), then the run
/// failed with class `timeout`.
fn timed_out(state: &RunState, limit: Duration) -> Vec<Action> {
    let error = StepError {
        class: ErrorClass::Timeout,
        message: format!("the run's timeout of {limit} passed"),
        hint: Some("raise the workflow's top-level `timeout`".into()),
        cause: None,
    };
    let mut records = state.cancellations();
    records.push(EventKind::RunFailed { error });
    records.into_iter().map(Action::Record).collect()
}

/// What one `decide` call works from.
struct Cx<'a> {
    state: &'a RunState,
    program: &'a Program,
    renderer: &'a Renderer,
    now: Timestamp,
}

/// What walking the frames found: transitions to record, steps ready to
/// start (in file and item order), the next due retry, and how many
/// attempts are in flight.
struct Walk<'f> {
    records: Vec<EventKind>,
    ready: Vec<StepPath>,
    wake: Option<Timestamp>,
    running: usize,
    /// The first step found waiting for a person.
    person: Option<WaitKind>,
    /// Which steps of each frame to look at.
    fronts: &'f mut HashMap<String, Front>,
}

/// Where a frame stands.
enum End {
    /// Something is still to run or running.
    Busy,
    /// Every step finished; `failed` is the first that failed and let the
    /// frame go on (`on_failure: continue`).
    Done { failed: Option<StepPath> },
}

/// Actions that must be taken alone, before anything else is decided (a
/// failure policy that stops, skips, blocks or jumps).
type Decisive = Vec<Action>;

impl Cx<'_> {
    /// Decides within one frame, and within the open instances of its
    /// running groups, looking only at the steps its front holds in view.
    fn frame(&self, frame: &Frame, walk: &mut Walk) -> Result<End, Decisive> {
        let block = self.program.block(frame.block());
        let prefix = frame.prefix();
        let mut front = walk.fronts.remove(prefix).unwrap_or_else(|| Front::new(block.steps.len()));
        let end = self.frame_in(frame, block, &mut front, walk);
        walk.fronts.insert(prefix.to_owned(), front);
        end
    }

    fn frame_in(
        &self,
        frame: &Frame,
        block: &Block,
        front: &mut Front,
        walk: &mut Walk,
    ) -> Result<End, Decisive> {
        let n = block.steps.len();
        // The steps in view, with their state now.
        let seen: Vec<(usize, Cow<'_, StepPath>, Option<&StepState>)> = front
            .look
            .iter()
            .map(|&i| {
                let path = frame.path_at(self.program, i);
                let state = self.state.steps.get(path.as_ref());
                (i, path, state)
            })
            .collect();
        for (i, path, state) in &seen {
            let status = state.map_or(StepStatus::Pending, |s| s.status);
            front.set(*i, status, self.is_done(block, *i, path, status));
        }

        // Failure policies of steps whose retries are spent.
        for (i, path, _) in seen.iter().filter(|(i, ..)| front.status[*i] == StepStatus::Failed) {
            let path = path.as_ref();
            match self.effective_failure(block, *i, path) {
                Effective::Continue => {}
                Effective::Stop => return Err(self.stop(frame, path)),
                Effective::Skip => {
                    let reason = "it failed and its `on_failure` is `skip`".to_owned();
                    return Err(vec![Action::Record(EventKind::StepSkipped {
                        path: path.clone(),
                        reason,
                        cascade: true,
                    })]);
                }
                Effective::Block => {
                    return Err(vec![Action::Record(EventKind::StepWaiting {
                        path: path.clone(),
                        wait: WaitKind::Block,
                        deadline: None,
                        message: None,
                        questions: Vec::new(),
                    })]);
                }
                Effective::Goto(target) => {
                    return Err(self.goto(&frame.paths(self.program), block, *i, target));
                }
            }
        }

        let mut out_of_view = Vec::new();
        for (i, path, state) in &seen {
            let (i, path, state) = (*i, path.as_ref(), *state);
            let step = &block.steps[i];
            match front.status[i] {
                StepStatus::Pending => {}
                StepStatus::Waiting if state.and_then(|s| s.wait).is_some() => {
                    if let Some(s) = state {
                        self.gate(frame, step, path, s, walk);
                    }
                    continue;
                }
                StepStatus::Waiting => {
                    let Some(due) = state.and_then(|s| s.retry_at) else { continue };
                    if due <= self.now {
                        walk.ready.push(path.clone());
                    } else {
                        walk.wake = Some(walk.wake.map_or(due, |w| w.min(due)));
                    }
                    continue;
                }
                StepStatus::Running if step.body().is_some() => {
                    self.group(frame, step, path, walk)?;
                    continue;
                }
                StepStatus::Running => {
                    walk.running += 1;
                    continue;
                }
                // Its failure policy is looked at every round.
                StepStatus::Failed => continue,
                StepStatus::Succeeded | StepStatus::Skipped | StepStatus::Cancelled => {
                    out_of_view.push(i);
                    continue;
                }
            }
            let needs = &block.dag.needs[i];
            if needs.iter().any(|&d| front.status[d] == StepStatus::Cancelled) {
                out_of_view.push(i);
                continue;
            }
            let skipped_need = needs.iter().find(|&&d| {
                front.status[d] == StepStatus::Skipped
                    && self
                        .state
                        .steps
                        .get(frame.path_at(self.program, d).as_ref())
                        .is_some_and(|s| s.cascade_skip)
            });
            if let Some(&d) = skipped_need {
                let reason = format!("it needs `{}`, which was skipped", block.steps[d].id);
                walk.records.push(EventKind::StepSkipped { path: path.clone(), reason, cascade: true });
                continue;
            }
            if !needs.iter().all(|&d| front.done[d]) {
                // Out of view until one of its needs changes.
                out_of_view.push(i);
                continue;
            }
            if let Some(when) = &step.when {
                let ctx = self.renderer.context(self.state, self.program, frame, &block.reads[i], None, &[]);
                match self.renderer.try_value(when, &ctx) {
                    Ok(v) if !truthy(&v) => {
                        let reason = "its `when` is false".to_owned();
                        walk.records.push(EventKind::StepSkipped {
                            path: path.clone(),
                            reason,
                            cascade: false,
                        });
                        continue;
                    }
                    Ok(_) => {}
                    Err(e) => {
                        let error = unrendered(
                            "its `when`",
                            &e,
                            "fix the `when` template: validating the definition checks the names it reads",
                        );
                        walk.records.push(EventKind::StepFailed {
                            path: path.clone(),
                            attempt: 0,
                            error,
                            output: None,
                            retry_at: None,
                        });
                        continue;
                    }
                }
            }
            let attempt = state.map_or(0, |s| s.attempts) + 1;
            match &step.kind {
                StepKind::Approval(a) => {
                    // An approval does no work: it starts by waiting for people.
                    walk.records.push(EventKind::StepStarted { path: path.clone(), attempt });
                    let ctx =
                        self.renderer.context(self.state, self.program, frame, &block.reads[i], None, &[]);
                    walk.records.push(match self.renderer.text(&a.message, &ctx) {
                        Ok(message) => EventKind::StepWaiting {
                            path: path.clone(),
                            wait: WaitKind::Approval,
                            deadline: a.timeout.map(|t| self.now.after(t)),
                            message: Some(message),
                            questions: Vec::new(),
                        },
                        Err(e) => EventKind::StepFailed {
                            path: path.clone(),
                            attempt,
                            error: fatal(
                                format!("its `approval.message` cannot be rendered: {e}"),
                                "fix the template: validating the definition checks the names it reads",
                            ),
                            output: None,
                            retry_at: None,
                        },
                    });
                }
                StepKind::ForEach(g) => {
                    walk.records.push(EventKind::StepStarted { path: path.clone(), attempt });
                    let ctx =
                        self.renderer.context(self.state, self.program, frame, &block.reads[i], None, &[]);
                    walk.records.push(match expand(self.renderer, g, &ctx) {
                        Ok((keys, items)) => EventKind::GroupExpanded {
                            path: path.clone(),
                            scope: frame.scope.clone(),
                            name: g.as_name.to_string(),
                            keys,
                            items,
                        },
                        Err(error) => EventKind::StepFailed {
                            path: path.clone(),
                            attempt,
                            error,
                            output: None,
                            retry_at: None,
                        },
                    });
                }
                StepKind::Loop(_) => {
                    walk.records.push(EventKind::StepStarted { path: path.clone(), attempt });
                    walk.records.push(EventKind::IterationStarted { path: path.clone(), index: 0 });
                }
                StepKind::Agent(_) if self.over_budget() => {
                    let (spent, budget) = (self.program.spent(self.state), self.budget());
                    let message = format!(
                        "the run's budget of ${:.4} is spent (${spent:.4} so far): no further LLM step starts",
                        budget.unwrap_or_default()
                    );
                    walk.records.push(EventKind::StepFailed {
                        path: path.clone(),
                        attempt: 0,
                        error: StepError {
                            cause: Some(Cause::BudgetSpent),
                            ..StepError::new(ErrorClass::Fatal, message)
                        },
                        output: None,
                        retry_at: None,
                    });
                    walk.records.push(EventKind::StepWaiting {
                        path: path.clone(),
                        wait: WaitKind::Block,
                        deadline: None,
                        message: None,
                        questions: Vec::new(),
                    });
                }
                _ => walk.ready.push(path.clone()),
            }
        }
        for i in out_of_view {
            front.look.remove(&i);
        }
        if front.finished == n {
            let failed = (0..n).find(|&i| front.status[i] == StepStatus::Failed && !block.steps[i].optional);
            return Ok(End::Done { failed: failed.map(|i| frame.path_at(self.program, i).into_owned()) });
        }
        Ok(End::Busy)
    }

    /// The run's budget: the one a person raised it to, else the
    /// definition's `defaults.budget_usd`.
    fn budget(&self) -> Option<f64> {
        self.state.budget_usd.or(self.program.workflow().defaults.budget_usd)
    }

    /// Whether the run has spent its budget.
    fn over_budget(&self) -> bool {
        self.budget().is_some_and(|b| self.program.spent(self.state) >= b)
    }
}

/// An error retrying cannot fix (a template that cannot render, a bad item list), with its hint.
fn fatal(message: String, hint: &str) -> StepError {
    StepError { class: ErrorClass::Fatal, message, hint: Some(hint.to_owned()), cause: None }
}

/// A step's own template (`what`: its `when`, `for_each.items`, `until`)
/// that did not render. A size limit is `invalid_output`: the data is more
/// than a step may hold, not a template that is wrong. Anything else is
/// `fatal`, with `hint`.
fn unrendered(what: &str, e: &crate::render::RenderError, hint: &str) -> StepError {
    let message = format!("{what} cannot be rendered: {e}");
    match e {
        crate::render::RenderError::TooLarge { .. } => StepError {
            class: ErrorClass::InvalidOutput,
            message,
            hint: Some(crate::render::TOO_LARGE_HINT.to_owned()),
            cause: None,
        },
        crate::render::RenderError::Template(_) => fatal(message, hint),
    }
}
