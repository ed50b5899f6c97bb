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
    /// Waiting for a person's turn in an interactive step.
    WaitingConversation,
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
                | RunStatus::WaitingConversation
                | RunStatus::Blocked
        )
    }

    /// How a run in this status waits for a person (`None` when it does
    /// not): the inverse of [`WaitKind::run_status`].
    pub fn wait(self) -> Option<WaitKind> {
        match self {
            RunStatus::WaitingAcceptance => Some(WaitKind::Acceptance),
            RunStatus::WaitingApproval => Some(WaitKind::Approval),
            RunStatus::WaitingClarification => Some(WaitKind::Clarification),
            RunStatus::WaitingConversation => Some(WaitKind::Conversation),
            RunStatus::Blocked => Some(WaitKind::Block),
            _ => None,
        }
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
                // Waiting again: a sub-workflow's step whose child waits
                // otherwise now, or failed and retries.
                | (Waiting, Running | Succeeded | Failed | Cancelled | Pending | Waiting)
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
            WaitKind::Conversation => RunStatus::WaitingConversation,
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

impl RunState {
    /// What stopping the run records of its steps: each one running or
    /// waiting for a person, cancelled (a cancel, a run's timeout).
    pub fn cancellations(&self) -> Vec<EventKind> {
        self.steps
            .iter()
            .filter(|(_, s)| matches!(s.status, StepStatus::Running | StepStatus::Waiting))
            .map(|(path, _)| EventKind::StepCancelled { path: path.clone() })
            .collect()
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
    /// While waiting: the sequence number of the event that began the
    /// wait, so a decision can tell a gate that began waiting after it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub waiting_since: Option<u64>,
    /// The tool calls of its current attempt, in order, with what each
    /// returned: a driver that takes the attempt over goes on after them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tool_calls: Vec<ToolExchange>,
    /// A `workflow:` step's child run (of its latest attempt).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub child: Option<RunId>,
    /// It waits because its child run waits (`wait` says how): the gate
    /// is the child's, decided there.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub waits_on_child: bool,
}

/// One tool call of an attempt and, once it ended, what it returned.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ToolExchange {
    /// The model's round of calls, from 1.
    pub round: u32,
    /// The id the model gave the call.
    pub call_id: String,
    /// The tool, as the model named it.
    pub tool: String,
    /// The arguments, as the model wrote them.
    pub arguments: String,
    /// What went back to the model; `None` while the call is in flight.
    pub result: Option<String>,
    /// The result is a refusal or an error.
    #[serde(default)]
    pub refused: bool,
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
            waiting_since: None,
            tool_calls: Vec::new(),
            child: None,
            waits_on_child: false,
        }
    }
}

/// How a run is started, beside its definition and inputs: its labels
/// (put over the definition's), its priority, and the run it is made from.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Launch {
    /// Labels over the definition's `labels:`.
    pub labels: crate::label::Labels,
    /// Of the runs waiting to be driven, higher ones go first (default 0).
    pub priority: i32,
    /// The run it is made from.
    pub parent: Option<crate::event::Parent>,
}

impl From<crate::label::Labels> for Launch {
    fn from(labels: crate::label::Labels) -> Self {
        Self { labels, ..Self::default() }
    }
}

/// A run, folded from its events.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunState {
    /// The run's id.
    pub run_id: RunId,
    /// The workflow's id.
    pub workflow: WorkflowId,
    /// The workflow's `version:` the run started with (a fork keeps its
    /// source's), so a run says which revision of the workflow it follows.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    /// The definition's content hash.
    pub definition_hash: String,
    /// The run's inputs.
    pub inputs: Value,
    /// The run's labels, fixed at creation (a fork keeps its source's).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: crate::label::Labels,
    /// Who started it: the actor of its `run_created` (a token's name,
    /// the command line's user).
    #[serde(default)]
    pub triggered_by: String,
    /// Its priority, fixed at creation (a fork keeps its source's).
    #[serde(default)]
    pub priority: i32,
    /// The run it was made from, fixed at creation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parent: Option<crate::event::Parent>,
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
    /// The run and checkpoint this run was forked from, if it is a fork.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub forked_from: Option<Origin>,
    /// Tokens the source of a fork used before the checkpoint, by model:
    /// shown as inherited, never counted as this run's (`usage` is not).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub inherited_by_model: BTreeMap<String, TokenUsage>,
    /// The budget a person raised the run's to, over the definition's
    /// `defaults.budget_usd`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub budget_usd: Option<f64>,
    /// When the run was created.
    pub created_at: Timestamp,
    /// When the last event was recorded.
    pub updated_at: Timestamp,
    /// Where each decider last decided (by [`decider`]): a decision that
    /// names no gate is taken only where it cannot mean an earlier one.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub last_decided: BTreeMap<String, Decided>,
}

/// Where and when a decider last decided.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Decided {
    /// The gate's step.
    pub gate: StepPath,
    /// The decision's sequence number.
    pub seq: u64,
}

/// Who decides, as far as a request says: answers, or decisions as a role
/// (or with none). People are named by the role they decide as, since
/// that is what a gate asks for and what a repeated command repeats.
pub fn decider(answer: bool, role: Option<&str>) -> String {
    match (answer, role) {
        (true, _) => "answer".to_owned(),
        (false, Some(role)) => format!("decision as {role}"),
        (false, None) => "decision".to_owned(),
    }
}

/// Where a fork came from: its source run and the checkpoint there.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Origin {
    /// The source run.
    pub run: RunId,
    /// The source's checkpoint (its sequence number).
    pub checkpoint: u64,
}

/// Characters of each output section `{{ feedback }}` shows after a
/// `goto`: the end of a longer output (where a test run or a compiler says
/// what went wrong last), so a long log does not crowd out the prompt.
const FEEDBACK_OUTPUT_CHARS: usize = 8_000;

/// What the step a `goto` sends the run back to reads as `{{ feedback }}`:
/// why `from` failed, and what it produced when it produced something. A
/// command's output shows its non-empty `stdout` and `stderr` as text; any
/// other output shows as `output:`, a string as itself, else JSON:
///
/// ```text
/// `test` failed: the command exited with code 101
///
/// stdout:
/// test parse ... FAILED
///
/// stderr:
/// error: test failed
/// ```
fn goto_feedback(from: &StepPath, failed: &StepState) -> String {
    let message = failed.error.as_ref().map_or("it failed", |e| e.message.as_str());
    let mut text = format!("`{from}` failed: {message}");
    let mut section = |name: &str, body: &str| {
        let body = body.trim_end();
        if !body.is_empty() {
            text.push_str(&format!("\n\n{name}:\n{}", tail(body, FEEDBACK_OUTPUT_CHARS)));
        }
    };
    match &failed.output {
        None | Some(Value::Null) => {}
        Some(Value::Object(o))
            if o.get("stdout").is_some_and(Value::is_string)
                && o.get("stderr").is_some_and(Value::is_string) =>
        {
            for name in ["stdout", "stderr"] {
                section(name, o.get(name).and_then(Value::as_str).unwrap_or_default());
            }
        }
        Some(other) => section("output", &text_of(other)),
    }
    text
}

/// The last `most` characters of `text`, saying how many came before.
fn tail(text: &str, most: usize) -> String {
    let count = text.chars().count();
    if count <= most {
        return text.to_owned();
    }
    let cut = count - most;
    let start = text.char_indices().nth(cut).map_or(text.len(), |(i, _)| i);
    format!("[{cut} characters before these left out]\n{}", &text[start..])
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
        let EventKind::RunCreated {
            run_id,
            workflow,
            definition_hash,
            inputs,
            version,
            labels,
            priority,
            parent,
        } = &event.kind
        else {
            return Err(ApplyError::NotCreated { seq: event.seq });
        };
        if event.seq != 1 {
            return Err(ApplyError::OutOfSequence { seq: event.seq, last: 0 });
        }
        Ok(Self {
            run_id: run_id.clone(),
            workflow: workflow.clone(),
            version: version.clone(),
            definition_hash: definition_hash.clone(),
            inputs: inputs.clone(),
            labels: labels.clone(),
            triggered_by: event.actor.clone(),
            priority: *priority,
            parent: parent.as_deref().cloned(),
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
            forked_from: None,
            inherited_by_model: BTreeMap::new(),
            budget_usd: None,
            created_at: event.at,
            updated_at: event.at,
            last_decided: BTreeMap::new(),
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
                step.tool_calls.clear();
                step.child = None;
            }
            EventKind::ChildStarted { path, attempt, run_id } => {
                if let Some(step) = self.steps.get_mut(path).filter(|s| s.attempts == *attempt) {
                    step.child = Some(run_id.clone());
                }
            }
            EventKind::ChildWaiting { path, run_id, wait } => {
                let step = self.step_to(seq, at, path, StepStatus::Waiting)?;
                step.wait = Some(*wait);
                step.child = Some(run_id.clone());
                step.waits_on_child = true;
                step.deadline = None;
                step.message = None;
                step.questions.clear();
                step.decisions.clear();
                step.waiting_since = Some(seq);
            }
            EventKind::ToolCalled { path, attempt, round, call_id, tool, arguments } => {
                if let Some(step) = self.steps.get_mut(path).filter(|s| s.attempts == *attempt) {
                    step.tool_calls.push(ToolExchange {
                        round: *round,
                        call_id: call_id.clone(),
                        tool: tool.clone(),
                        arguments: arguments.clone(),
                        result: None,
                        refused: false,
                    });
                }
            }
            EventKind::ToolReturned { path, attempt, call_id, result, refused } => {
                let call = self
                    .steps
                    .get_mut(path)
                    .filter(|s| s.attempts == *attempt)
                    .and_then(|s| s.tool_calls.iter_mut().rev().find(|c| c.call_id == *call_id));
                if let Some(call) = call {
                    call.result = Some(result.clone());
                    call.refused = *refused;
                }
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
                step.waiting_since = Some(seq);
            }
            EventKind::RunWaiting { .. }
            | EventKind::OutputRepaired { .. }
            | EventKind::PromptRendered { .. } => {}
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
                if !timed_out {
                    let decided = Decided { gate: path.clone(), seq };
                    self.last_decided.insert(decider(false, role.as_deref()), decided);
                }
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
                if step.wait == Some(WaitKind::Conversation) {
                    let said = step.message.clone().unwrap_or_default();
                    step.turns.push(Turn::Answer { text: said });
                    step.turns.push(Turn::Said { text: text.clone() });
                } else {
                    step.turns.push(Turn::Questions { questions: step.questions.clone() });
                    step.turns.push(Turn::Answers { text: text.clone() });
                    step.clarifications += 1;
                }
                self.reset(seq, at, path)?;
                self.last_decided.insert(decider(true, None), Decided { gate: path.clone(), seq });
            }
            EventKind::StepReset { path } => self.reset(seq, at, path)?,
            EventKind::GotoTaken { from, to, reset } => {
                // Read before the reset forgets it: why `from` failed.
                let feedback = self.steps.get(from).map(|failed| goto_feedback(from, failed));
                for path in reset {
                    self.reset(seq, at, path)?;
                }
                if let (Some(feedback), Some(target)) = (feedback, self.steps.get_mut(to)) {
                    target.feedback = Some(feedback);
                }
                *self.gotos.entry(from.clone()).or_default() += 1;
            }
            EventKind::RunForked { source, checkpoint } => {
                self.forked_from = Some(Origin { run: source.clone(), checkpoint: *checkpoint });
                self.inherited_by_model = std::mem::take(&mut self.usage_by_model);
                self.usage = TokenUsage::default();
            }
            EventKind::BudgetRaised { budget_usd } => self.budget_usd = Some(*budget_usd),
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
            self.settle_unstarted(at);
        }
        self.seq = seq;
        self.updated_at = event.at;
        Ok(())
    }

    /// The status a step that never started reads as: `pending` while the
    /// run may still start it, `skipped` once the run failed (it will not
    /// run), `cancelled` once the run was cancelled. Steps with no event of
    /// their own read so too (views list them from the definition).
    pub fn unstarted_status(&self) -> StepStatus {
        match self.status {
            RunStatus::Failed => StepStatus::Skipped,
            RunStatus::Cancelled => StepStatus::Cancelled,
            _ => StepStatus::Pending,
        }
    }

    /// At a run's end, its pending steps (sent back by a `goto`, never
    /// started again) take the status that says they will not run. Done in
    /// the fold, not by events, so logs recorded before read the same way;
    /// no event follows a failed or cancelled run, so nothing needs them
    /// pending again (a fork copies events from before the end).
    fn settle_unstarted(&mut self, at: Timestamp) {
        let never = self.unstarted_status();
        if never == StepStatus::Pending {
            return;
        }
        for step in self.steps.values_mut().filter(|s| s.status == StepStatus::Pending) {
            step.status = never;
            step.finished_at = Some(at);
        }
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
        step.waiting_since = None;
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
        step.waits_on_child = false;
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
                version: None,
                labels: Default::default(),
                priority: 0,
                parent: None,
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

    /// `path` failed with `message` and `output`, its retries spent.
    fn failed(seq: u64, p: &str, message: &str, output: Option<Value>) -> Event {
        let error = StepError::new(ErrorClass::Fatal, message);
        ev(seq, EventKind::StepFailed { path: path(p), attempt: 1, error, output, retry_at: None })
    }

    /// A run whose `test` failed with `message` and `output` after
    /// `implement` succeeded, and went back to `implement`
    /// (`on_failure: {goto: implement}`), folded.
    fn sent_back(message: &str, output: Option<Value>) -> RunState {
        let events = vec![
            created(),
            ev(2, EventKind::RunStarted),
            ev(3, EventKind::StepStarted { path: path("implement"), attempt: 1 }),
            ev(4, EventKind::StepSucceeded { path: path("implement"), output: serde_json::json!("v1") }),
            ev(5, EventKind::StepStarted { path: path("test"), attempt: 1 }),
            failed(6, "test", message, output),
            ev(
                7,
                EventKind::GotoTaken {
                    from: path("test"),
                    to: path("implement"),
                    reset: vec![path("implement"), path("test")],
                },
            ),
        ];
        RunState::fold(&events).expect("legal").expect("created")
    }

    fn feedback_of(state: &RunState, p: &str) -> String {
        state.steps[&path(p)].feedback.clone().unwrap_or_else(|| format!("no feedback for {p}"))
    }

    #[test]
    fn a_goto_tells_its_target_why_the_step_after_it_failed() {
        let output = serde_json::json!({
            "exit_code": 101,
            "stdout": "running 2 tests\ntest parse ... FAILED\n",
            "stderr": "error: test failed, to rerun pass `--lib`\n",
        });
        let state = sent_back("the command exited with code 101", Some(output));
        insta::assert_snapshot!(feedback_of(&state, "implement"), @r"
        `test` failed: the command exited with code 101

        stdout:
        running 2 tests
        test parse ... FAILED

        stderr:
        error: test failed, to rerun pass `--lib`
        ");
        let (implement, test) = (&state.steps[&path("implement")], &state.steps[&path("test")]);
        assert_eq!((implement.status, &implement.output), (StepStatus::Pending, &None), "it runs again");
        assert_eq!(
            (test.error.as_ref(), test.feedback.as_ref()),
            (None, None),
            "the failed step starts clean"
        );
    }

    #[test]
    fn goto_feedback_shows_what_the_failed_step_produced_when_it_produced_something() {
        let quiet = serde_json::json!({"exit_code": 1, "stdout": "", "stderr": "no such table\n"});
        let cases = [
            (Some(quiet), "`test` failed: m\n\nstderr:\nno such table"),
            (Some(serde_json::json!("half an answer")), "`test` failed: m\n\noutput:\nhalf an answer"),
            (Some(serde_json::json!({"pass": false})), "`test` failed: m\n\noutput:\n{\"pass\":false}"),
            (Some(Value::Null), "`test` failed: m"),
            (None, "`test` failed: m"),
        ];
        for (output, feedback) in cases {
            assert_eq!(feedback_of(&sent_back("m", output), "implement"), feedback);
        }
    }

    #[test]
    fn goto_feedback_keeps_the_end_of_a_long_output() {
        let stdout = format!("{}{}", "a".repeat(100), "é".repeat(FEEDBACK_OUTPUT_CHARS));
        let output = serde_json::json!({"exit_code": 1, "stdout": stdout, "stderr": ""});
        let feedback = feedback_of(&sent_back("m", Some(output)), "implement");
        let head = "`test` failed: m\n\nstdout:\n[100 characters before these left out]\n";
        assert_eq!(feedback, format!("{head}{}", "é".repeat(FEEDBACK_OUTPUT_CHARS)));
    }

    /// `b` failed and sent the run back to `a` (so `b` is pending again),
    /// then `a` started its second attempt: the log so far.
    fn b_sent_back_to_a() -> Vec<Event> {
        vec![
            created(),
            ev(2, EventKind::RunStarted),
            ev(3, EventKind::StepStarted { path: path("a"), attempt: 1 }),
            ev(4, EventKind::StepSucceeded { path: path("a"), output: Value::Null }),
            ev(5, EventKind::StepStarted { path: path("b"), attempt: 1 }),
            failed(6, "b", "m", None),
            ev(7, EventKind::GotoTaken { from: path("b"), to: path("a"), reset: vec![path("a"), path("b")] }),
            ev(8, EventKind::StepStarted { path: path("a"), attempt: 2 }),
        ]
    }

    #[test]
    fn steps_that_never_started_are_skipped_when_the_run_fails() {
        let mut events = b_sent_back_to_a();
        let going = RunState::fold(&events).expect("legal").expect("created");
        assert_eq!(
            (going.steps[&path("b")].status, going.unstarted_status()),
            (StepStatus::Pending, StepStatus::Pending)
        );
        events.push(failed(9, "a", "m", None));
        events.push(ev(
            10,
            EventKind::RunFailed { error: StepError::new(ErrorClass::Fatal, "step `a` failed: m") },
        ));
        let ended = RunState::fold(&events).expect("legal").expect("created");
        let b = &ended.steps[&path("b")];
        assert_eq!(
            (b.status, b.finished_at),
            (StepStatus::Skipped, Some(Timestamp(10_000))),
            "it will not run"
        );
        assert_eq!(ended.steps[&path("a")].status, StepStatus::Failed);
        assert_eq!(ended.unstarted_status(), StepStatus::Skipped, "nor will the steps with no event");
    }

    #[test]
    fn steps_that_never_started_are_cancelled_with_their_run() {
        let mut events = b_sent_back_to_a();
        events.push(ev(9, EventKind::StepCancelled { path: path("a") }));
        events.push(ev(10, EventKind::RunCancelled));
        let ended = RunState::fold(&events).expect("legal").expect("created");
        let statuses: Vec<StepStatus> = ended.steps.values().map(|s| s.status).collect();
        assert_eq!(statuses, vec![StepStatus::Cancelled, StepStatus::Cancelled]);
        assert_eq!(ended.unstarted_status(), StepStatus::Cancelled);
    }

    #[test]
    fn a_run_records_the_workflow_version_it_started_with() {
        let mut first = created();
        let EventKind::RunCreated { version, .. } = &mut first.kind else { unreachable!("run_created") };
        *version = Some("1.2.0".into());
        let state = RunState::create(&first).expect("created");
        assert_eq!(state.version.as_deref(), Some("1.2.0"));
        let json = serde_json::to_value(&state).expect("json");
        assert_eq!(json["version"], "1.2.0");
        let unversioned = serde_json::to_value(RunState::create(&created()).expect("created")).expect("json");
        assert!(unversioned.get("version").is_none(), "state kept before versions reads and writes the same");
    }
}
