//! The pure decision core: from a run's state and its program alone, what
//! happens next ([`decide`]) and what an attempt's outcome records
//! ([`attempt_finished`]). The engine only carries these out.
//!
//! `decide` returns either events to record (transitions that need no
//! effect: skips, failure policies, run completion), or steps to start and
//! the time of the next due retry. The engine records, applies and asks
//! again until only starts remain, so every rule sees the state its previous
//! decision made.

use std::collections::HashMap;

use serde_json::Value;

use crate::dag::{Dag, Reach};
use crate::definition::{FailureAction, OnFailure, RetryPolicy, Step, StepKind, Workflow};
use crate::duration::Duration;
use crate::plan::CycleError;
use crate::render::{Reads, Renderer, truthy};
use crate::scope::ScopeKey;
use crate::state::{
    ErrorClass, EventKind, RunState, RunStatus, StepError, StepPath, StepState, StepStatus, Timestamp,
    WaitKind,
};

/// A validated workflow prepared for running: the dependency graph and the
/// per-step policies, computed once.
pub struct Program {
    workflow: Workflow,
    reads: Vec<Reads>,
    dag: Dag,
    reach: Reach,
    paths: Vec<StepPath>,
    index: HashMap<StepPath, usize>,
}

impl Program {
    /// Prepares a validated workflow.
    pub fn new(workflow: Workflow) -> Result<Self, CycleError> {
        let dag = Dag::of_steps(&workflow.steps);
        let reach = dag.reach().ok_or_else(|| CycleError(workflow.id.to_string()))?;
        let paths: Vec<StepPath> = workflow.steps.iter().map(|s| StepPath::new(s.id.as_str())).collect();
        let index = paths.iter().enumerate().map(|(i, p)| (p.clone(), i)).collect();
        let renderer = Renderer::default();
        let reads = workflow
            .steps
            .iter()
            .map(|step| {
                let mut sources = step.template_sources();
                if let StepKind::Agent(a) = &step.kind
                    && let Some(system) =
                        workflow.agents.get(a.agent.as_str()).and_then(|agent| agent.system.as_ref())
                {
                    sources.push(system.as_str());
                }
                Reads::of(&renderer, sources)
            })
            .collect();
        Ok(Self { workflow, reads, dag, reach, paths, index })
    }

    /// What the step at `path` reads from the run, for building its context.
    pub fn reads(&self, path: &StepPath) -> &Reads {
        static ALL: std::sync::OnceLock<Reads> = std::sync::OnceLock::new();
        self.index.get(path).map_or_else(|| ALL.get_or_init(Reads::all), |&i| &self.reads[i])
    }

    /// The workflow.
    pub fn workflow(&self) -> &Workflow {
        &self.workflow
    }

    /// The step at `path`, if the program has one.
    pub fn step(&self, path: &StepPath) -> Option<&Step> {
        self.index.get(path).map(|&i| &self.workflow.steps[i])
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

    fn on_failure(&self, i: usize) -> &OnFailure {
        self.workflow.steps[i].on_failure.as_ref().unwrap_or(&self.workflow.defaults.on_failure)
    }
}

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
    match state.status {
        RunStatus::Pending => return vec![Action::Record(EventKind::RunStarted)],
        RunStatus::Running => {}
        _ => return Vec::new(),
    }
    // One lookup per step per call: the state is keyed by path, the program by index.
    let steps: Vec<Option<&StepState>> = program.paths.iter().map(|p| state.steps.get(p)).collect();
    let status = |i: usize| steps[i].map_or(StepStatus::Pending, |s| s.status);
    let n = program.paths.len();

    // Failure policies of steps whose retries are spent.
    for i in (0..n).filter(|&i| status(i) == StepStatus::Failed) {
        let path = &program.paths[i];
        match effective_failure(state, program, i) {
            Effective::Continue => {}
            Effective::Stop => return stop_run(state, program, i),
            Effective::Skip => {
                let reason = "it failed and its `on_failure` is `skip`".to_owned();
                return vec![Action::Record(EventKind::StepSkipped {
                    path: path.clone(),
                    reason,
                    cascade: true,
                })];
            }
            Effective::Block => {
                return vec![Action::Record(EventKind::StepWaiting {
                    path: path.clone(),
                    wait: WaitKind::Block,
                })];
            }
            Effective::Goto(target) => return goto(state, program, i, target),
        }
    }

    let mut records = Vec::new();
    let mut ready = Vec::new();
    let mut wake: Option<Timestamp> = None;
    for i in 0..n {
        let path = &program.paths[i];
        match status(i) {
            StepStatus::Pending => {}
            StepStatus::Waiting => {
                let Some(due) = steps[i].and_then(|s| s.retry_at) else { continue };
                if due <= now {
                    ready.push(i);
                } else {
                    wake = Some(wake.map_or(due, |w| w.min(due)));
                }
                continue;
            }
            _ => continue,
        }
        let needs = &program.dag.needs[i];
        if needs.iter().any(|&d| status(d) == StepStatus::Cancelled) {
            continue;
        }
        let skipped_need = needs.iter().find(|&&d| steps[d].is_some_and(|s| s.cascade_skip));
        if let Some(&d) = skipped_need {
            let reason = format!("it needs `{}`, which was skipped", program.paths[d]);
            records.push(EventKind::StepSkipped { path: path.clone(), reason, cascade: true });
            continue;
        }
        if !needs.iter().all(|&d| is_done(state, program, d, status(d))) {
            continue;
        }
        if let Some(when) = &program.workflow.steps[i].when {
            let ctx = renderer.context(state, &program.workflow, &program.reads[i], None, &[]);
            match renderer.value(when, &ctx) {
                Ok(v) if !truthy(&v) => {
                    let reason = "its `when` is false".to_owned();
                    records.push(EventKind::StepSkipped { path: path.clone(), reason, cascade: false });
                    continue;
                }
                Ok(_) => {}
                Err(e) => {
                    let error = StepError {
                        class: ErrorClass::Fatal,
                        message: format!("its `when` cannot be rendered: {e}"),
                        hint: Some(
                            "fix the `when` template; `cairn validate` checks the names it reads".into(),
                        ),
                    };
                    records.push(EventKind::StepFailed {
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
        if matches!(program.workflow.steps[i].kind, StepKind::Approval(_)) {
            // An approval does no work: it starts by waiting for people.
            let attempt = steps[i].map_or(0, |s| s.attempts) + 1;
            records.push(EventKind::StepStarted { path: path.clone(), attempt });
            records.push(EventKind::StepWaiting { path: path.clone(), wait: WaitKind::Approval });
            continue;
        }
        ready.push(i);
    }
    if !records.is_empty() {
        return records.into_iter().map(Action::Record).collect();
    }

    let running = (0..n).filter(|&i| status(i) == StepStatus::Running).count();
    let free = (program.workflow.defaults.max_parallel as usize).saturating_sub(running);
    let mut actions: Vec<Action> = ready
        .into_iter()
        .take(free)
        .map(|i| {
            let attempts = steps[i].map_or(0, |s| s.attempts);
            Action::Start { path: program.paths[i].clone(), attempt: attempts + 1 }
        })
        .collect();
    if let Some(w) = wake {
        actions.push(Action::WakeAt(w));
    }
    if actions.is_empty() && running == 0 && (0..n).all(|i| status(i).is_finished()) {
        let failed = (0..n).find(|&i| status(i) == StepStatus::Failed && !program.workflow.steps[i].optional);
        let event = match failed {
            Some(i) => EventKind::RunFailed { error: run_error(state, program, i) },
            None => EventKind::RunCompleted,
        };
        return vec![Action::Record(event)];
    }
    actions
}

/// Whether a need no longer holds its dependents back.
fn is_done(state: &RunState, program: &Program, i: usize, status: StepStatus) -> bool {
    match status {
        StepStatus::Succeeded | StepStatus::Skipped => true,
        StepStatus::Failed => matches!(effective_failure(state, program, i), Effective::Continue),
        _ => false,
    }
}

fn effective_failure(state: &RunState, program: &Program, i: usize) -> Effective {
    if program.workflow.steps[i].optional {
        return Effective::Continue;
    }
    let action = match program.on_failure(i) {
        OnFailure::Action(a) => *a,
        OnFailure::Goto { step, max, then } => {
            let taken = state.gotos.get(&program.paths[i]).copied().unwrap_or(0);
            match program.paths.iter().position(|p| p.as_str() == step.as_str()) {
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

/// The run's error when step `i` made it fail.
fn run_error(state: &RunState, program: &Program, i: usize) -> StepError {
    let path = &program.paths[i];
    let cause = state.steps.get(path).and_then(|s| s.error.clone());
    let cause =
        cause.unwrap_or(StepError { class: ErrorClass::Fatal, message: "it failed".into(), hint: None });
    StepError {
        class: cause.class,
        message: format!("step `{path}` failed: {}", cause.message),
        hint: cause.hint,
    }
}

/// Cancels what is in flight, then fails the run.
fn stop_run(state: &RunState, program: &Program, failed: usize) -> Vec<Action> {
    let mut actions: Vec<Action> = in_flight(state, program, 0..program.paths.len())
        .map(|path| Action::Record(EventKind::StepCancelled { path }))
        .collect();
    actions.push(Action::Record(EventKind::RunFailed { error: run_error(state, program, failed) }));
    actions
}

fn in_flight<'a>(
    state: &'a RunState,
    program: &'a Program,
    among: impl Iterator<Item = usize> + 'a,
) -> impl Iterator<Item = StepPath> + 'a {
    among
        .map(|i| &program.paths[i])
        .filter(|p| {
            state.steps.get(*p).is_some_and(|s| matches!(s.status, StepStatus::Running | StepStatus::Waiting))
        })
        .cloned()
}

/// Runs again from `target`: it, the failed step, and everything that needs either.
fn goto(state: &RunState, program: &Program, from: usize, target: usize) -> Vec<Action> {
    let again: Vec<usize> = (0..program.paths.len())
        .filter(|&j| {
            j == target || j == from || program.reach.needs(j, target) || program.reach.needs(j, from)
        })
        .collect();
    let mut actions: Vec<Action> = in_flight(state, program, again.iter().copied())
        .map(|path| Action::Record(EventKind::StepCancelled { path }))
        .collect();
    actions.push(Action::Record(EventKind::GotoTaken {
        from: program.paths[from].clone(),
        to: program.paths[target].clone(),
        reset: again.iter().map(|&j| program.paths[j].clone()).collect(),
    }));
    actions
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
            if let Some(doc_type) = &step.produces {
                events.push(EventKind::DocumentStored {
                    scope: ScopeKey::root(),
                    doc_type: doc_type.clone(),
                    value: output,
                });
            }
            if step.accept.is_some() {
                events.push(EventKind::StepWaiting { path: path.clone(), wait: WaitKind::Acceptance });
            }
            events
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
