//! Run state as a fold of events. [`RunState::apply`] is the only way state
//! changes; it refuses events that break the status machines, so a log that
//! folds without error describes a run that could have happened.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

pub use crate::event::{
    ErrorClass, Event, EventKind, StepError, StepPath, Timestamp, TokenUsage, Turn, WaitKind,
};
use crate::id::{RunId, WorkflowId};
use crate::scope::{ScopeKey, Scopes};

/// The status of a run, as the CLI and JSON show it.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, strum::IntoStaticStr, strum::EnumString,
)]
#[serde(rename_all = "snake_case")]
#[strum(serialize_all = "snake_case")]
pub enum RunStatus {
    /// Created, not yet driven.
    Pending,
    /// Being driven.
    Running,
    /// Waiting for people to accept a step's output.
    WaitingAcceptance,
    /// Waiting at an approval step.
    WaitingApproval,
    /// Waiting for answers to a model's questions.
    WaitingClarification,
    /// A step failed with `on_failure: block`; waits for `resume`.
    Blocked,
    /// Paused by a person; `resume` carries on.
    Paused,
    /// Finished successfully.
    Completed,
    /// Finished with an error.
    Failed,
    /// Stopped by a person.
    Cancelled,
}

impl RunStatus {
    /// No event may follow a terminal status.
    pub fn is_terminal(self) -> bool {
        matches!(self, RunStatus::Completed | RunStatus::Failed | RunStatus::Cancelled)
    }

    /// Whether the run waits for a person (exit code 3).
    pub fn is_waiting(self) -> bool {
        matches!(
            self,
            RunStatus::WaitingAcceptance
                | RunStatus::WaitingApproval
                | RunStatus::WaitingClarification
                | RunStatus::Blocked
        )
    }

    /// The legal moves of the run status machine.
    pub fn can_become(self, next: RunStatus) -> bool {
        use RunStatus::*;
        if self.is_terminal() {
            return false;
        }
        match (self, next) {
            (Pending, Running | Cancelled | Failed) => true,
            (Running, _) => next != Pending && next != Running,
            (s, Running) if s.is_waiting() || s == Paused => true,
            (s, Cancelled | Failed) if s.is_waiting() || s == Paused => true,
            // A gate decided while nobody drives the run.
            (s, Paused) if s.is_waiting() => true,
            _ => false,
        }
    }
}

/// The status of one step.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, strum::IntoStaticStr)]
#[serde(rename_all = "snake_case")]
#[strum(serialize_all = "snake_case")]
pub enum StepStatus {
    /// Not started.
    Pending,
    /// An attempt is in flight.
    Running,
    /// Waiting at a gate, or for its next retry.
    Waiting,
    /// Finished with an output.
    Succeeded,
    /// Finished with an error.
    Failed,
    /// Not run (`when` false, or a dependency skipped).
    Skipped,
    /// Stopped because the run stopped.
    Cancelled,
}

impl StepStatus {
    /// Succeeded, failed, skipped or cancelled.
    pub fn is_finished(self) -> bool {
        matches!(
            self,
            StepStatus::Succeeded | StepStatus::Failed | StepStatus::Skipped | StepStatus::Cancelled
        )
    }

    /// The legal moves of the step status machine. A finished step may only
    /// go back to pending when a `goto` or `resume` runs it again; a failed
    /// one may also become skipped (`on_failure: skip`) or waiting (`block`).
    pub fn can_become(self, next: StepStatus) -> bool {
        use StepStatus::*;
        matches!(
            (self, next),
            (Pending, Running | Skipped | Cancelled | Failed | Pending)
                | (Running, Succeeded | Failed | Waiting | Cancelled | Pending)
                | (Waiting, Running | Succeeded | Failed | Cancelled | Pending)
                | (Succeeded, Pending | Waiting)
                | (Skipped | Cancelled, Pending)
                | (Failed, Pending | Skipped | Waiting)
        )
    }
}

/// The fold's reading of a wait: the run status it puts a waiting run in.
impl WaitKind {
    /// The run status while waiting this way.
    pub fn run_status(self) -> RunStatus {
        match self {
            WaitKind::Acceptance => RunStatus::WaitingAcceptance,
            WaitKind::Approval => RunStatus::WaitingApproval,
            WaitKind::Clarification => RunStatus::WaitingClarification,
            WaitKind::Block => RunStatus::Blocked,
        }
    }
}

/// A status or kind as its JSON word (`waiting_acceptance`).
pub fn word(value: impl Into<&'static str>) -> &'static str {
    value.into()
}

/// A value as text: a string as itself, anything else as JSON.
pub fn text_of(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// The fold's reading of an event: how it moves the run status machine.
impl EventKind {
    /// The run status this event moves the run to, if it moves it.
    pub fn run_status(&self) -> Option<RunStatus> {
        Some(match self {
            EventKind::RunStarted => RunStatus::Running,
            EventKind::RunPaused => RunStatus::Paused,
            EventKind::RunCompleted => RunStatus::Completed,
            EventKind::RunCancelled => RunStatus::Cancelled,
            EventKind::RunFailed { .. } => RunStatus::Failed,
            EventKind::RunWaiting { wait } => wait.run_status(),
            _ => return None,
        })
    }
}

/// The instances of a `for_each` or the iterations of a `loop`, as far as
/// the run got: enough to walk only the unfinished ones.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct GroupState {
    /// Each instance's key, in order (a loop's: `0`, `1`, ...).
    pub keys: Vec<String>,
    /// Which instances have finished.
    pub done: Vec<bool>,
    /// How many have finished.
    pub finished: usize,
    /// The first unfinished instance: the ones before it are all done.
    pub first_open: usize,
    /// The first step of an instance that failed and let the instance finish.
    pub failed: Option<StepPath>,
}

impl GroupState {
    fn add(&mut self, key: String) {
        self.keys.push(key);
        self.done.push(false);
    }

    /// Whether every instance has finished.
    pub fn is_complete(&self) -> bool {
        self.finished == self.keys.len()
    }
}

/// The state of one step in a run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StepState {
    /// Its status.
    pub status: StepStatus,
    /// Attempts started so far.
    pub attempts: u32,
    /// The output, once succeeded.
    pub output: Option<Value>,
    /// The last error.
    pub error: Option<StepError>,
    /// When a scheduled retry is due.
    pub retry_at: Option<Timestamp>,
    /// The person-facing wait, while waiting.
    pub wait: Option<WaitKind>,
    /// Attempts made before the current round (a goto or resume starts a new
    /// round); retry limits count from here, attempt numbers never repeat.
    pub round_base: u32,
    /// A skip that its dependents inherit.
    pub cascade_skip: bool,
    /// When its latest attempt started.
    pub started_at: Option<Timestamp>,
    /// When it last finished (succeeded, failed, skipped or cancelled).
    pub finished_at: Option<Timestamp>,
    /// While waiting at a gate with a timeout: when `on_timeout` applies.
    #[serde(default)]
    pub deadline: Option<Timestamp>,
    /// While waiting at an approval: the rendered message.
    #[serde(default)]
    pub message: Option<String>,
    /// While waiting for answers: the model's questions.
    #[serde(default)]
    pub questions: Vec<String>,
    /// Decisions at the current wait, in the order they were recorded.
    #[serde(default)]
    pub decisions: Vec<Decision>,
    /// The reviewer's last comment, read by the next attempt as `{{ feedback }}`.
    #[serde(default)]
    pub feedback: Option<String>,
    /// Turns the next attempt adds to its conversation: earlier answers and
    /// the comments or answers they drew.
    #[serde(default)]
    pub turns: Vec<Turn>,
    /// Reworks after rejections so far.
    #[serde(default)]
    pub reworks: u32,
    /// Rounds of questions answered so far.
    #[serde(default)]
    pub clarifications: u32,
    /// Tokens its LLM calls used, over all its attempts.
    #[serde(default)]
    pub usage: TokenUsage,
}

/// One decision at a gate.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Decision {
    /// Approved (or rejected).
    pub approve: bool,
    /// Who decided (a person, or `engine` for a deadline).
    pub by: String,
    /// As which role.
    pub role: Option<String>,
    /// Their comment.
    pub comment: Option<String>,
    /// When.
    pub at: Timestamp,
    /// The deadline decided.
    #[serde(default)]
    pub timed_out: bool,
}

impl StepState {
    fn new() -> Self {
        Self {
            status: StepStatus::Pending,
            attempts: 0,
            output: None,
            error: None,
            retry_at: None,
            wait: None,
            round_base: 0,
            cascade_skip: false,
            started_at: None,
            finished_at: None,
            deadline: None,
            message: None,
            questions: Vec::new(),
            decisions: Vec::new(),
            feedback: None,
            turns: Vec::new(),
            reworks: 0,
            clarifications: 0,
            usage: TokenUsage::default(),
        }
    }
}

/// A run, folded from its events.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunState {
    /// The run's id.
    pub run_id: RunId,
    /// The workflow's id.
    pub workflow: WorkflowId,
    /// The definition's content hash.
    pub definition_hash: String,
    /// The run's inputs.
    pub inputs: Value,
    /// Its status.
    pub status: RunStatus,
    /// Every step that has an event, by path.
    pub steps: BTreeMap<StepPath, StepState>,
    /// Documents by scope.
    pub scopes: Scopes,
    /// `for_each` and `loop` steps that have started, by path.
    #[serde(default)]
    pub groups: BTreeMap<StepPath, GroupState>,
    /// Outputs of finished steps, in the order they finished (the progress log).
    pub progress: Vec<(StepPath, Value)>,
    /// The run's error, once failed.
    pub error: Option<StepError>,
    /// Jumps taken by each failing step's `goto`.
    pub gotos: BTreeMap<StepPath, u32>,
    /// Tokens used by the run's LLM calls.
    pub usage: TokenUsage,
    /// The same, by model (for prices).
    pub usage_by_model: BTreeMap<String, TokenUsage>,
    /// The conversation of each agent with `session: reuse`, so far.
    #[serde(default)]
    pub sessions: BTreeMap<String, Vec<Turn>>,
    /// The last applied event's sequence number.
    pub seq: u64,
    /// When the run was created.
    pub created_at: Timestamp,
    /// When the last event was recorded.
    pub updated_at: Timestamp,
}

/// An event that cannot follow the current state.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ApplyError {
    /// The first event of a log must be `run_created`, and only the first.
    #[error("event {seq}: a run log starts with exactly one run_created event")]
    NotCreated {
        /// The offending event.
        seq: u64,
    },
    /// Events must come in sequence without gaps.
    #[error("event {seq} does not follow event {last}")]
    OutOfSequence {
        /// The offending event.
        seq: u64,
        /// The last applied event.
        last: u64,
    },
    /// A run status move the machine does not allow.
    #[error("event {seq}: a {from:?} run cannot become {to:?}")]
    RunTransition {
        /// The offending event.
        seq: u64,
        /// Current status.
        from: RunStatus,
        /// Requested status.
        to: RunStatus,
    },
    /// A decision or answer for a step that does not wait for one.
    #[error("event {seq}: step {path} is {status:?}, not waiting for a person")]
    NotWaiting {
        /// The offending event.
        seq: u64,
        /// The step.
        path: StepPath,
        /// Its status.
        status: StepStatus,
    },
    /// An instance event for a group that has not started.
    #[error("event {seq}: {path} is not a started group")]
    UnknownGroup {
        /// The offending event.
        seq: u64,
        /// The group step.
        path: StepPath,
    },
    /// A step status move the machine does not allow.
    #[error("event {seq}: step {path} cannot go from {from:?} to {to:?}")]
    StepTransition {
        /// The offending event.
        seq: u64,
        /// The step.
        path: StepPath,
        /// Current status.
        from: StepStatus,
        /// Requested status.
        to: StepStatus,
    },
}

impl RunState {
    /// Folds a whole log.
    pub fn fold<'a>(events: impl IntoIterator<Item = &'a Event>) -> Result<Option<Self>, ApplyError> {
        let mut state: Option<RunState> = None;
        for event in events {
            match &mut state {
                None => state = Some(Self::create(event)?),
                Some(s) => s.apply(event)?,
            }
        }
        Ok(state)
    }

    /// The state after the first event of a log.
    pub fn create(event: &Event) -> Result<Self, ApplyError> {
        let EventKind::RunCreated { run_id, workflow, definition_hash, inputs } = &event.kind else {
            return Err(ApplyError::NotCreated { seq: event.seq });
        };
        if event.seq != 1 {
            return Err(ApplyError::OutOfSequence { seq: event.seq, last: 0 });
        }
        Ok(Self {
            run_id: run_id.clone(),
            workflow: workflow.clone(),
            definition_hash: definition_hash.clone(),
            inputs: inputs.clone(),
            status: RunStatus::Pending,
            steps: BTreeMap::new(),
            scopes: Scopes::default(),
            groups: BTreeMap::new(),
            progress: Vec::new(),
            error: None,
            gotos: BTreeMap::new(),
            usage: TokenUsage::default(),
            usage_by_model: BTreeMap::new(),
            sessions: BTreeMap::new(),
            seq: 1,
            created_at: event.at,
            updated_at: event.at,
        })
    }

    /// Applies one event: the only way a run's state changes.
    pub fn apply(&mut self, event: &Event) -> Result<(), ApplyError> {
        let seq = event.seq;
        if seq != self.seq + 1 {
            return Err(ApplyError::OutOfSequence { seq, last: self.seq });
        }
        let at = event.at;
        match &event.kind {
            EventKind::RunCreated { .. } => return Err(ApplyError::NotCreated { seq }),
            EventKind::RunStarted
            | EventKind::RunPaused
            | EventKind::RunCompleted
            | EventKind::RunCancelled => {}
            EventKind::RunFailed { error } => self.error = Some(error.clone()),
            EventKind::StepStarted { path, attempt } => {
                let step = self.step_to(seq, at, path, StepStatus::Running)?;
                step.attempts = *attempt;
                step.retry_at = None;
                step.wait = None;
            }
            EventKind::StepSucceeded { path, output } => {
                let step = self.step_to(seq, at, path, StepStatus::Succeeded)?;
                step.output = Some(output.clone());
                step.error = None;
                step.wait = None;
                self.progress.push((path.clone(), output.clone()));
            }
            EventKind::StepFailed { path, error, output, retry_at, .. } => {
                let to = if retry_at.is_some() { StepStatus::Waiting } else { StepStatus::Failed };
                let step = self.step_to(seq, at, path, to)?;
                step.error = Some(error.clone());
                step.output = output.clone();
                step.retry_at = *retry_at;
            }
            EventKind::StepSkipped { path, cascade, .. } => {
                self.step_to(seq, at, path, StepStatus::Skipped)?.cascade_skip = *cascade;
            }
            EventKind::StepCancelled { path } => {
                self.step_to(seq, at, path, StepStatus::Cancelled)?;
            }
            EventKind::StepWaiting { path, wait, deadline, message, questions } => {
                let step = self.step_to(seq, at, path, StepStatus::Waiting)?;
                step.wait = Some(*wait);
                step.deadline = *deadline;
                step.message.clone_from(message);
                step.questions.clone_from(questions);
                step.decisions.clear();
            }
            EventKind::RunWaiting { .. } | EventKind::OutputRepaired { .. } => {}
            EventKind::GateDecided { path, approve, role, comment, timed_out } => {
                let step = self.waiting(seq, path)?;
                step.decisions.push(Decision {
                    approve: *approve,
                    by: event.actor.clone(),
                    role: role.clone(),
                    comment: comment.clone(),
                    at,
                    timed_out: *timed_out,
                });
            }
            EventKind::StepAccepted { path } => {
                let step = self.step_to(seq, at, path, StepStatus::Succeeded)?;
                step.wait = None;
                step.deadline = None;
            }
            EventKind::StepReworked { path } => {
                let step = self.waiting(seq, path)?;
                let comment =
                    step.decisions.iter().rev().find(|d| !d.approve).and_then(|d| d.comment.clone());
                let answer = step.output.as_ref().map(text_of).unwrap_or_default();
                step.turns.push(Turn::Answer { text: answer });
                step.turns.push(Turn::Rejected { comment: comment.clone() });
                step.feedback = Some(comment.unwrap_or_else(|| "rejected".to_owned()));
                step.reworks += 1;
                self.reset(seq, at, path)?;
            }
            EventKind::Answered { path, text } => {
                let step = self.waiting(seq, path)?;
                step.turns.push(Turn::Questions { questions: step.questions.clone() });
                step.turns.push(Turn::Answers { text: text.clone() });
                step.clarifications += 1;
                self.reset(seq, at, path)?;
            }
            EventKind::StepReset { path } => self.reset(seq, at, path)?,
            EventKind::GotoTaken { from, reset, .. } => {
                for path in reset {
                    self.reset(seq, at, path)?;
                }
                *self.gotos.entry(from.clone()).or_default() += 1;
            }
            EventKind::SessionExtended { agent, turns, .. } => {
                self.sessions.entry(agent.clone()).or_default().extend(turns.iter().cloned());
            }
            EventKind::UsageRecorded { path, usage, model, .. } => {
                if let Some(step) = self.steps.get_mut(path) {
                    step.usage.add(*usage);
                }
                self.usage.add(*usage);
                self.usage_by_model.entry(model.clone()).or_default().add(*usage);
            }
            EventKind::GroupExpanded { path, scope, name, keys, items } => {
                let mut group = GroupState::default();
                for (key, item) in keys.iter().zip(items) {
                    self.scopes.set_entity(scope.child(name, key), item.clone());
                    group.add(key.clone());
                }
                self.groups.insert(path.clone(), group);
            }
            EventKind::IterationStarted { path, index } => {
                self.groups.entry(path.clone()).or_default().add(index.to_string());
            }
            EventKind::InstanceFinished { path, index, failed, .. } => {
                let group = self.groups.get_mut(path);
                let Some(group) = group.filter(|g| (*index as usize) < g.keys.len()) else {
                    return Err(ApplyError::UnknownGroup { seq, path: path.clone() });
                };
                let i = *index as usize;
                if !group.done[i] {
                    group.done[i] = true;
                    group.finished += 1;
                }
                while group.done.get(group.first_open) == Some(&true) {
                    group.first_open += 1;
                }
                if group.failed.is_none() {
                    group.failed.clone_from(failed);
                }
            }
            EventKind::DocumentStored { scope, doc_type, value } => {
                self.scopes.store(scope.clone(), doc_type.clone(), value.clone());
            }
        }
        if let Some(to) = event.kind.run_status() {
            self.set_status(seq, to)?;
        }
        self.seq = seq;
        self.updated_at = event.at;
        Ok(())
    }

    /// A step runs again: pending, with a new round of attempts. A group
    /// forgets its instances and everything they did.
    fn reset(&mut self, seq: u64, at: Timestamp, path: &StepPath) -> Result<(), ApplyError> {
        if self.groups.remove(path).is_some() {
            let inside = format!("{path}[");
            self.steps.retain(|p, _| !p.as_str().starts_with(&inside));
            self.groups.retain(|p, _| !p.as_str().starts_with(&inside));
        }
        let step = self.step_to(seq, at, path, StepStatus::Pending)?;
        step.output = None;
        step.error = None;
        step.wait = None;
        step.retry_at = None;
        step.cascade_skip = false;
        step.round_base = step.attempts;
        step.deadline = None;
        step.message = None;
        step.questions.clear();
        step.decisions.clear();
        Ok(())
    }

    /// A step that waits for a person, for an event that needs one.
    fn waiting(&mut self, seq: u64, path: &StepPath) -> Result<&mut StepState, ApplyError> {
        match self.steps.get_mut(path) {
            Some(step)
                if step.status == StepStatus::Waiting && step.wait.is_some_and(WaitKind::is_person) =>
            {
                Ok(step)
            }
            other => Err(ApplyError::NotWaiting {
                seq,
                path: path.clone(),
                status: other.map_or(StepStatus::Pending, |s| s.status),
            }),
        }
    }

    fn set_status(&mut self, seq: u64, to: RunStatus) -> Result<(), ApplyError> {
        if !self.status.can_become(to) {
            return Err(ApplyError::RunTransition { seq, from: self.status, to });
        }
        self.status = to;
        Ok(())
    }

    fn step_to(
        &mut self,
        seq: u64,
        at: Timestamp,
        path: &StepPath,
        to: StepStatus,
    ) -> Result<&mut StepState, ApplyError> {
        let step = self.steps.entry(path.clone()).or_insert_with(StepState::new);
        if !step.status.can_become(to) {
            return Err(ApplyError::StepTransition { seq, path: path.clone(), from: step.status, to });
        }
        step.status = to;
        if to == StepStatus::Running {
            step.started_at = Some(at);
        } else if to.is_finished() {
            step.finished_at = Some(at);
        }
        Ok(step)
    }

    /// The nearest document of `doc_type` seen from `scope`.
    pub fn document(&self, scope: &ScopeKey, doc_type: &str) -> Option<&Value> {
        self.scopes.lookup(scope, doc_type)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::id::Name;

    fn ev(seq: u64, kind: EventKind) -> Event {
        Event { seq, at: Timestamp(seq * 1000), actor: "engine".into(), kind }
    }

    fn created() -> Event {
        ev(
            1,
            EventKind::RunCreated {
                run_id: RunId::new("r1").expect("id"),
                workflow: WorkflowId::new("wf").expect("id"),
                definition_hash: "abc".into(),
                inputs: serde_json::json!({"x": 1}),
            },
        )
    }

    fn path(p: &str) -> StepPath {
        StepPath::new(p)
    }

    #[test]
    fn folds_a_run_with_a_retry_to_completion() {
        let events = vec![
            created(),
            ev(2, EventKind::RunStarted),
            ev(3, EventKind::StepStarted { path: path("a"), attempt: 1 }),
            ev(
                4,
                EventKind::StepFailed {
                    path: path("a"),
                    attempt: 1,
                    error: StepError {
                        class: ErrorClass::Transient,
                        message: "502".into(),
                        hint: None,
                        cause: None,
                    },
                    output: None,
                    retry_at: Some(Timestamp(5000)),
                },
            ),
            ev(5, EventKind::StepStarted { path: path("a"), attempt: 2 }),
            ev(6, EventKind::StepSucceeded { path: path("a"), output: serde_json::json!("done") }),
            ev(7, EventKind::RunCompleted),
        ];
        let state = RunState::fold(&events).expect("legal").expect("created");
        assert_eq!(state.status, RunStatus::Completed);
        let a = &state.steps[&path("a")];
        assert_eq!((a.status, a.attempts), (StepStatus::Succeeded, 2));
        assert_eq!(state.progress, vec![(path("a"), serde_json::json!("done"))]);
        assert_eq!(state.seq, 7);
    }

    #[test]
    fn refuses_illegal_moves_and_gaps() {
        let mut s = RunState::create(&created()).expect("created");
        assert!(matches!(s.apply(&ev(3, EventKind::RunStarted)), Err(ApplyError::OutOfSequence { .. })));
        assert!(matches!(s.apply(&ev(2, EventKind::RunCompleted)), Err(ApplyError::RunTransition { .. })));
        s.apply(&ev(2, EventKind::RunStarted)).expect("start");
        let done = EventKind::StepSucceeded { path: path("a"), output: Value::Null };
        assert!(matches!(s.apply(&ev(3, done)), Err(ApplyError::StepTransition { .. })));
        assert!(matches!(
            RunState::create(&ev(1, EventKind::RunStarted)),
            Err(ApplyError::NotCreated { .. })
        ));
    }

    #[test]
    fn terminal_runs_accept_nothing() {
        for s in [RunStatus::Completed, RunStatus::Failed, RunStatus::Cancelled] {
            assert!(!s.can_become(RunStatus::Running));
            assert!(!s.can_become(RunStatus::Paused));
        }
        assert!(RunStatus::Running.can_become(RunStatus::WaitingApproval));
        assert!(RunStatus::WaitingApproval.can_become(RunStatus::Running));
        assert!(!RunStatus::Pending.can_become(RunStatus::Completed));
    }

    #[test]
    fn waiting_steps_put_the_run_in_the_matching_status() {
        let mut s = RunState::create(&created()).expect("created");
        s.apply(&ev(2, EventKind::RunStarted)).expect("start");
        s.apply(&ev(3, EventKind::StepStarted { path: path("go"), attempt: 1 })).expect("step");
        let wait = EventKind::StepWaiting {
            path: path("go"),
            wait: WaitKind::Approval,
            deadline: None,
            message: None,
            questions: Vec::new(),
        };
        s.apply(&ev(4, wait)).expect("wait");
        assert_eq!(s.status, RunStatus::Running, "others may go on while one step waits");
        s.apply(&ev(5, EventKind::RunWaiting { wait: WaitKind::Approval })).expect("run waits");
        assert_eq!(s.status, RunStatus::WaitingApproval);
        assert!(s.status.is_waiting());
    }

    #[test]
    fn reworks_and_answers_join_the_conversation_as_what_happened() {
        let waiting = |seq, wait, questions: Vec<String>| {
            let kind =
                EventKind::StepWaiting { path: path("a"), wait, deadline: None, message: None, questions };
            ev(seq, kind)
        };
        let events = vec![
            created(),
            ev(2, EventKind::RunStarted),
            ev(3, EventKind::StepStarted { path: path("a"), attempt: 1 }),
            ev(4, EventKind::StepSucceeded { path: path("a"), output: serde_json::json!("v1") }),
            waiting(5, WaitKind::Acceptance, Vec::new()),
            ev(
                6,
                EventKind::GateDecided {
                    path: path("a"),
                    approve: false,
                    role: None,
                    comment: None,
                    timed_out: false,
                },
            ),
            ev(7, EventKind::StepReworked { path: path("a") }),
            ev(8, EventKind::StepStarted { path: path("a"), attempt: 2 }),
            waiting(9, WaitKind::Clarification, vec!["Which?".into()]),
            ev(10, EventKind::Answered { path: path("a"), text: "That one.".into() }),
        ];
        let state = RunState::fold(&events).expect("legal").expect("created");
        let a = &state.steps[&path("a")];
        assert_eq!(
            a.turns,
            vec![
                Turn::Answer { text: "v1".into() },
                Turn::Rejected { comment: None },
                Turn::Questions { questions: vec!["Which?".into()] },
                Turn::Answers { text: "That one.".into() },
            ]
        );
        assert_eq!(a.feedback.as_deref(), Some("rejected"), "what `{{ feedback }}` reads");
    }

    #[test]
    fn events_and_state_round_trip_through_json() {
        let events = vec![
            created(),
            ev(2, EventKind::RunStarted),
            ev(
                3,
                EventKind::DocumentStored {
                    scope: ScopeKey::root().child("epic", "e/1"),
                    doc_type: Name::new("story_backlog").expect("name"),
                    value: serde_json::json!({"stories": []}),
                },
            ),
            ev(
                4,
                EventKind::RunFailed {
                    error: StepError {
                        class: ErrorClass::Fatal,
                        message: "x".into(),
                        hint: Some("y".into()),
                        cause: None,
                    },
                },
            ),
        ];
        let json = serde_json::to_string(&events).expect("serialize");
        let back: Vec<Event> = serde_json::from_str(&json).expect("deserialize");
        assert_eq!(back, events);
        let state = RunState::fold(&events).expect("legal").expect("created");
        let state_json = serde_json::to_string(&state).expect("serialize");
        assert_eq!(serde_json::from_str::<RunState>(&state_json).expect("deserialize"), state);
        // The words the CLI prints are the words JSON writes.
        for class in <ErrorClass as strum::VariantArray>::VARIANTS {
            assert_eq!(serde_json::to_value(class).expect("class"), Value::String(class.as_str().into()));
        }
        for status in [RunStatus::WaitingAcceptance, RunStatus::Completed, RunStatus::Pending] {
            assert_eq!(serde_json::to_value(status).expect("status"), Value::String(word(status).into()));
        }
    }
}
