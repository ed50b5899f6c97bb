//! The pure decision core: from a run's state and its program alone, what
//! happens next ([`decide`]) and what an attempt's outcome records
//! ([`attempt_finished`]). The engine only carries these out.
//!
//! `decide` returns either events to record (transitions that need no
//! effect: skips, failure policies, run completion), or steps to start and
//! the time of the next due retry. The engine records, applies and asks
//! again until only starts remain, so every rule sees the state its previous
//! decision made.

use std::borrow::Cow;
use std::collections::{BTreeSet, HashMap};

use serde_json::{Value, json};

use crate::definition::{
    Exhausted, FailureAction, ForEachStep, OnFailure, RejectAction, RetryPolicy, Step, StepKind,
    TimeoutAction,
};
use crate::duration::Duration;
use crate::id::Label;
pub use crate::program::Program;
use crate::program::{Block, Frame, MAX_INSTANCES};
use crate::render::{Renderer, truthy};
use crate::scope::ScopeKey;
use crate::state::{
    Decision, ErrorClass, EventKind, GroupState, RunState, RunStatus, StepError, StepPath, StepState,
    StepStatus, Timestamp, WaitKind, word,
};

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
}

/// What a failed step does now, after its retries.
enum Effective {
    Continue,
    Stop,
    Skip,
    Block,
    Goto(usize),
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
    if let Some(w) = walk.wake {
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

/// Which steps of each live frame [`decide_with`] has to look at, kept
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
    fronts: HashMap<String, Front>,
    /// Steps named by the events noted since the last round.
    changed: Vec<StepPath>,
}

/// What the frontier knows of one frame.
#[derive(Debug)]
struct Front {
    /// The steps to look at, in file order.
    look: BTreeSet<usize>,
    /// Each step's status when last looked at.
    status: Vec<StepStatus>,
    /// Whether each step no longer holds its dependents back, when last looked at.
    done: Vec<bool>,
    /// How many steps have a finished status.
    finished: usize,
}

impl Front {
    fn new(n: usize) -> Self {
        Self {
            look: (0..n).collect(),
            status: vec![StepStatus::Pending; n],
            done: vec![false; n],
            finished: 0,
        }
    }

    fn set(&mut self, i: usize, status: StepStatus, done: bool) {
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
            | EventKind::SessionExtended { .. }
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
    fn take_changes(&mut self, program: &Program) {
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
                match self.renderer.value(when, &ctx) {
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
                        let error = fatal(
                            format!("its `when` cannot be rendered: {e}"),
                            "fix the `when` template; `cairn validate` checks the names it reads",
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
                                "fix the template; `cairn validate` checks the names it reads",
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
                    let (spent, budget) =
                        (self.program.spent(self.state), self.program.workflow().defaults.budget_usd);
                    walk.records.push(EventKind::StepFailed {
                        path: path.clone(),
                        attempt: 0,
                        error: fatal(
                            format!(
                                "the run's budget of ${:.4} is spent (${spent:.4} so far): no further LLM step starts",
                                budget.unwrap_or_default()
                            ),
                            "fork the run with a larger `defaults.budget_usd`, or cancel it",
                        ),
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

    /// Whether the run has spent its budget (`defaults.budget_usd`).
    fn over_budget(&self) -> bool {
        self.program.workflow().defaults.budget_usd.is_some_and(|b| self.program.spent(self.state) >= b)
    }

    /// A step waiting for a person: applies the decisions recorded at its
    /// gate (the first that settles it wins), or its deadline once passed.
    fn gate(&self, frame: &Frame, step: &Step, path: &StepPath, s: &StepState, walk: &mut Walk) {
        let Some(wait) = s.wait else { return };
        let Some((approvers, on_timeout)) = step.gate(wait) else {
            walk.person.get_or_insert(wait);
            return;
        };
        let Some(decisive) = settled(&s.decisions, approvers) else {
            match s.deadline {
                Some(deadline) if deadline <= self.now => walk.records.push(match on_timeout {
                    TimeoutAction::Fail => EventKind::StepFailed {
                        path: path.clone(),
                        attempt: s.attempts,
                        error: StepError {
                            class: ErrorClass::Timeout,
                            message: format!("nobody decided at its {} gate in time", word(wait)),
                            hint: Some("raise the gate's `timeout`, or set `on_timeout`".into()),
                        },
                        output: s.output.clone(),
                        retry_at: None,
                    },
                    action => EventKind::GateDecided {
                        path: path.clone(),
                        approve: action == TimeoutAction::Approve,
                        role: None,
                        comment: Some("the gate's deadline passed".into()),
                        timed_out: true,
                    },
                }),
                _ => {
                    walk.person.get_or_insert(wait);
                }
            }
            return;
        };
        if decisive.approve {
            match &step.kind {
                StepKind::Approval(_) => {
                    let output = json!({
                        "approved": true,
                        "approved_by": s.decisions.iter().filter(|d| d.approve).map(|d| json!({"by": d.by, "role": d.role, "comment": d.comment})).collect::<Vec<_>>(),
                    });
                    walk.records.push(EventKind::StepSucceeded { path: path.clone(), output });
                }
                _ => {
                    walk.records.push(EventKind::StepAccepted { path: path.clone() });
                    if let (Some(doc_type), Some(output)) = (&step.produces, &s.output) {
                        walk.records.push(EventKind::DocumentStored {
                            scope: frame.scope.clone(),
                            doc_type: doc_type.clone(),
                            value: output.clone(),
                        });
                    }
                }
            }
            return;
        }
        let rework = step.accept.as_ref().filter(|a| {
            wait == WaitKind::Acceptance && a.on_reject == RejectAction::Rework && s.reworks < a.max_reworks
        });
        if rework.is_some() {
            walk.records.push(EventKind::StepReworked { path: path.clone() });
            return;
        }
        let who = match &decisive.role {
            Some(role) => format!("{} as {role}", decisive.by),
            None => decisive.by.clone(),
        };
        let comment = decisive.comment.as_ref().map(|c| format!(": {c}")).unwrap_or_default();
        let after = if s.reworks > 0 { format!(" after {} reworks", s.reworks) } else { String::new() };
        walk.records.push(EventKind::StepFailed {
            path: path.clone(),
            attempt: s.attempts,
            error: StepError {
                class: ErrorClass::Rejected,
                message: format!("rejected by {who}{after}{comment}"),
                hint: None,
            },
            output: s.output.clone(),
            retry_at: None,
        });
    }

    /// A running group: walks its open instances (at most its
    /// `max_parallel`, in item order) and records what finished.
    fn group(&self, frame: &Frame, step: &Step, path: &StepPath, walk: &mut Walk) -> Result<(), Decisive> {
        let Some(group) = self.state.groups.get(path) else { return Ok(()) };
        match &step.kind {
            StepKind::ForEach(g) => {
                if group.is_complete() {
                    walk.records.extend(self.collect(frame, step, path, group));
                    return Ok(());
                }
                let limit = g.max_parallel.unwrap_or(self.program.workflow().defaults.max_parallel).max(1);
                let open =
                    (group.first_open..group.keys.len()).filter(|&k| !group.done[k]).take(limit as usize);
                for k in open {
                    let key = &group.keys[k];
                    let item = self
                        .state
                        .scopes
                        .entity(&frame.scope.child(g.as_name.as_str(), key))
                        .cloned()
                        .unwrap_or(Value::Null);
                    let instance = frame.instance(self.program, step, path, key, item);
                    if let End::Done { failed } = self.frame(&instance, walk)? {
                        walk.records.push(EventKind::InstanceFinished {
                            path: path.clone(),
                            index: k as u32,
                            key: key.clone(),
                            failed,
                        });
                    }
                }
            }
            StepKind::Loop(l) => {
                let Some(n) = group.keys.len().checked_sub(1) else { return Ok(()) };
                let index = n as u32;
                let iteration = frame.instance(self.program, step, path, &group.keys[n], json!(index));
                if group.done[n] {
                    return Ok(());
                }
                let End::Done { .. } = self.frame(&iteration, walk)? else { return Ok(()) };
                let key = group.keys[n].clone();
                walk.records.push(EventKind::InstanceFinished {
                    path: path.clone(),
                    index,
                    key: key.clone(),
                    failed: None,
                });
                let attempt = self.state.steps.get(path).map_or(1, |s| s.attempts);
                let reads = self.program.reads(path);
                let until = l.until.as_ref().map(|t| {
                    let ctx = self.renderer.context(self.state, self.program, &iteration, reads, None, &[]);
                    self.renderer.value(t, &ctx).map(|v| truthy(&v))
                });
                let output = self.outputs(path, &key, step);
                walk.records.push(match until {
                    Some(Err(e)) => EventKind::StepFailed {
                        path: path.clone(),
                        attempt,
                        error: fatal(
                            format!("its `until` cannot be rendered: {e}"),
                            "fix the `until` template; `cairn validate` checks the names it reads",
                        ),
                        output: Some(output),
                        retry_at: None,
                    },
                    Some(Ok(true)) => EventKind::StepSucceeded { path: path.clone(), output },
                    _ if index + 1 < l.max_iters => {
                        EventKind::IterationStarted { path: path.clone(), index: index + 1 }
                    }
                    _ if l.on_exhausted == Exhausted::Continue => {
                        EventKind::StepSucceeded { path: path.clone(), output }
                    }
                    _ => EventKind::StepFailed {
                        path: path.clone(),
                        attempt,
                        error: fatal(
                            match &l.until {
                                Some(_) => format!("`until` did not hold after {} iterations", l.max_iters),
                                None => format!("the loop ran its {} iterations", l.max_iters),
                            },
                            "raise `max_iters`, or set `on_exhausted: continue` to go on with the last iteration",
                        ),
                        output: Some(output),
                        retry_at: None,
                    },
                });
            }
            _ => {}
        }
        Ok(())
    }

    /// The events that end a `for_each` whose instances all finished: the
    /// documents its instances produced, collected in item order into the
    /// group's scope, and its output (or failure).
    fn collect(&self, frame: &Frame, step: &Step, path: &StepPath, group: &GroupState) -> Vec<EventKind> {
        let StepKind::ForEach(g) = &step.kind else { return Vec::new() };
        let body = self.program.block(self.program.body(frame.block(), step.id.as_str()).unwrap_or(0));
        let scopes: Vec<ScopeKey> =
            group.keys.iter().map(|k| frame.scope.child(g.as_name.as_str(), k)).collect();
        let mut events: Vec<EventKind> = body
            .produced
            .iter()
            .map(|t| EventKind::DocumentStored {
                scope: frame.scope.clone(),
                doc_type: t.clone(),
                value: Value::Array(
                    scopes
                        .iter()
                        .map(|s| self.state.scopes.get(s, t.as_str()).cloned().unwrap_or(Value::Null))
                        .collect(),
                ),
            })
            .collect();
        let outputs: Vec<Value> = group.keys.iter().map(|key| self.outputs(path, key, step)).collect();
        let attempt = self.state.steps.get(path).map_or(1, |s| s.attempts);
        events.push(match &group.failed {
            Some(failed) => EventKind::StepFailed {
                path: path.clone(),
                attempt,
                error: step_failed(self.state, failed),
                output: Some(Value::Array(outputs)),
                retry_at: None,
            },
            None => EventKind::StepSucceeded { path: path.clone(), output: Value::Array(outputs) },
        });
        events
    }

    /// An instance's or iteration's output: each of its steps' output by id.
    fn outputs(&self, group_path: &StepPath, key: &str, group: &Step) -> Value {
        let body = group.body().unwrap_or_default();
        let map = body
            .iter()
            .map(|s| {
                let path = group_path.instance_child(key, s.id.as_str());
                let output = self.state.steps.get(&path).and_then(|st| st.output.clone());
                (s.id.to_string(), output.unwrap_or(Value::Null))
            })
            .collect();
        Value::Object(map)
    }

    /// Whether a need no longer holds its dependents back.
    fn is_done(&self, block: &Block, i: usize, path: &StepPath, status: StepStatus) -> bool {
        match status {
            StepStatus::Succeeded | StepStatus::Skipped => true,
            StepStatus::Failed => matches!(self.effective_failure(block, i, path), Effective::Continue),
            _ => false,
        }
    }

    fn effective_failure(&self, block: &Block, i: usize, path: &StepPath) -> Effective {
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
    fn stop(&self, frame: &Frame, failed: &StepPath) -> Decisive {
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
    fn goto(&self, paths: &[StepPath], block: &Block, from: usize, target: usize) -> Decisive {
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

/// Renders a `for_each`'s items and names each instance.
fn expand(
    renderer: &Renderer,
    g: &ForEachStep,
    ctx: &crate::render::Context,
) -> Result<(Vec<String>, Vec<Value>), StepError> {
    const HINT: &str = "`for_each.items` must yield a list, such as `{{ docs.backlog.items }}`";
    let items = match renderer.value(&g.items, ctx) {
        Ok(Value::Array(items)) => items,
        Ok(other) => {
            return Err(fatal(format!("`for_each.items` yielded {}, not a list", kind_of(&other)), HINT));
        }
        Err(e) => return Err(fatal(format!("`for_each.items` cannot be rendered: {e}"), HINT)),
    };
    if items.len() > MAX_INSTANCES {
        return Err(fatal(
            format!("`for_each.items` yielded {} items; a group runs at most {MAX_INSTANCES}", items.len()),
            "split the collection, or nest a second `for_each`",
        ));
    }
    let mut keys = Vec::with_capacity(items.len());
    let mut seen = std::collections::HashMap::with_capacity(items.len());
    for (i, item) in items.iter().enumerate() {
        let key = match &g.key {
            None => i.to_string(),
            Some(field) => match item.get(field) {
                Some(Value::String(s)) => s.clone(),
                Some(Value::Number(n)) => n.to_string(),
                Some(other) => {
                    return Err(fatal(
                        format!(
                            "item {i} has a `{field}` that is {}, not a string or number",
                            kind_of(other)
                        ),
                        "`for_each.key` names the item field that identifies it",
                    ));
                }
                None => {
                    return Err(fatal(
                        format!("item {i} has no `{field}` field to key it by"),
                        "give every item the key field, or drop `key` to key instances by position",
                    ));
                }
            },
        };
        if key.is_empty() || key.len() > 128 || key.chars().any(|c| c == '[' || c == ']' || c.is_control()) {
            return Err(fatal(
                format!(
                    "item {i} has the key {key:?}: keys are 1 to 128 characters without `[`, `]` or control characters"
                ),
                "key instances by a field of simple ids",
            ));
        }
        if let Some(first) = seen.insert(key.clone(), i) {
            return Err(fatal(
                format!("items {first} and {i} both have the key `{key}`: instance keys must be unique"),
                "key instances by a field that is unique, or drop `key` to key them by position",
            ));
        }
        keys.push(key);
    }
    Ok((keys, items))
}

/// The decision that settles a gate, if one does yet: the first rejection,
/// or the approval that completes it (every listed role, or anyone's one
/// approval when none are listed), whichever comes first.
fn settled<'d>(decisions: &'d [Decision], approvers: &[Label]) -> Option<&'d Decision> {
    let mut roles: Vec<&str> = Vec::new();
    for d in decisions {
        if !d.approve {
            return Some(d);
        }
        if approvers.is_empty() || d.timed_out {
            return Some(d);
        }
        if let Some(role) = d.role.as_deref() {
            roles.push(role);
        }
        if approvers.iter().all(|a| roles.contains(&a.as_str())) {
            return Some(d);
        }
    }
    None
}

fn kind_of(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "an object",
    }
}

fn fatal(message: String, hint: &str) -> StepError {
    StepError { class: ErrorClass::Fatal, message, hint: Some(hint.to_owned()) }
}

/// The error a failed step gives whatever it failed: `step X failed: ...`.
fn step_failed(state: &RunState, path: &StepPath) -> StepError {
    let cause = state.steps.get(path).and_then(|s| s.error.clone());
    let cause =
        cause.unwrap_or(StepError { class: ErrorClass::Fatal, message: "it failed".into(), hint: None });
    StepError {
        class: cause.class,
        message: format!("step `{path}` failed: {}", cause.message),
        hint: cause.hint,
    }
}

/// The events that record how an attempt ended: success (and the document
/// it produces), or failure with the next attempt scheduled when the retry
/// policy allows it.
pub fn attempt_finished(
    state: &RunState,
    program: &Program,
    path: &StepPath,
    attempt: u32,
    outcome: Outcome,
    now: Timestamp,
) -> Vec<EventKind> {
    let Some(step) = program.step(path) else { return Vec::new() };
    match outcome {
        Outcome::Succeeded(output) => {
            let mut events = vec![EventKind::StepSucceeded { path: path.clone(), output: output.clone() }];
            match &step.accept {
                // An output under review is stored as a document once accepted.
                Some(accept) => events.push(EventKind::StepWaiting {
                    path: path.clone(),
                    wait: WaitKind::Acceptance,
                    deadline: accept.timeout.map(|t| now.after(t)),
                    message: None,
                    questions: Vec::new(),
                }),
                None => {
                    if let Some(doc_type) = &step.produces {
                        events.push(EventKind::DocumentStored {
                            scope: program.scope_of(path),
                            doc_type: doc_type.clone(),
                            value: output,
                        });
                    }
                }
            }
            events
        }
        Outcome::Clarify(questions) => {
            let asked = state.steps.get(path).map_or(0, |s| s.clarifications);
            let most = match &step.kind {
                StepKind::Agent(a) => a.max_clarifications,
                _ => 0,
            };
            if asked < most {
                return vec![EventKind::StepWaiting {
                    path: path.clone(),
                    wait: WaitKind::Clarification,
                    deadline: None,
                    message: None,
                    questions,
                }];
            }
            let error = StepError {
                class: ErrorClass::Fatal,
                message: format!("the model still asks questions after {asked} rounds of answers"),
                hint: Some("raise `max_clarifications`, or give the prompt what the model asks for".into()),
            };
            vec![EventKind::StepFailed { path: path.clone(), attempt, error, output: None, retry_at: None }]
        }
        Outcome::Failed { error, output, retry_after } => {
            let policy = program.retry(step);
            let round_base = state.steps.get(path).map_or(0, |s| s.round_base);
            let in_round = attempt.saturating_sub(round_base);
            let retry_at = (in_round < policy.max_attempts && policy.retries(error.class)).then(|| {
                let delay = backoff(&policy, in_round, jitter_seed(state, path, attempt));
                let delay = retry_after.map_or(delay, |least| delay.max(least));
                Timestamp(now.0.saturating_add(delay.as_millis()))
            });
            vec![EventKind::StepFailed { path: path.clone(), attempt, error, output, retry_at }]
        }
    }
}

/// The delay after the `n`th failed attempt of a round: `delay × backoff^(n-1)`,
/// capped at `max_delay`; with jitter, a deterministic point in its upper half.
pub fn backoff(policy: &RetryPolicy, n: u32, seed: u64) -> Duration {
    let exponent = i32::try_from(n.saturating_sub(1)).unwrap_or(i32::MAX);
    let raw = policy.delay.as_millis() as f64 * policy.backoff.powi(exponent);
    let capped = raw.min(policy.max_delay.as_millis() as f64).max(0.0);
    let ms = if policy.jitter {
        let fraction = (seed >> 11) as f64 / (1u64 << 53) as f64;
        capped / 2.0 + fraction * capped / 2.0
    } else {
        capped
    };
    Duration::from_millis(ms as u64)
}

/// A seed that differs per run, step and attempt, and is the same every
/// time they are the same: jitter without a random source, so replays agree.
fn jitter_seed(state: &RunState, path: &StepPath, attempt: u32) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in state.run_id.as_str().bytes().chain(path.as_str().bytes()).chain(attempt.to_le_bytes()) {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    hash
}

/// The key that identifies one attempt everywhere: `run/step/attempt`. Sent
/// to LLM providers as a header and to commands in the environment, so a
/// step re-run after a crash is recognisably the same attempt.
pub fn idempotency_key(state: &RunState, path: &StepPath, attempt: u32) -> String {
    format!("{}/{}/{}", state.run_id, path, attempt)
}
