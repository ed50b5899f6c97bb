//! The persisted event format: what a run's log holds, one [`Event`] per
//! change, and the value types events carry. Stores write these as JSON and
//! read them back years later, so their serde shape never changes: a new
//! field is optional, a renamed one keeps its old spelling.
//! [`crate::state`] folds them into run state.

use std::fmt;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::id::{Name, RunId, WorkflowId};
use crate::scope::ScopeKey;

/// Why a step attempt failed, classed so retry policy is decided once.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Hash,
    PartialOrd,
    Ord,
    Serialize,
    Deserialize,
    strum::IntoStaticStr,
    strum::EnumString,
    strum::VariantArray,
)]
#[serde(rename_all = "snake_case")]
#[strum(serialize_all = "snake_case")]
#[non_exhaustive]
pub enum ErrorClass {
    /// I/O, 5xx, connection: trying again may work.
    Transient,
    /// The provider asked to slow down (429).
    RateLimited,
    /// The attempt ran out of time.
    Timeout,
    /// The output failed its QA gate after every repair.
    InvalidOutput,
    /// Not allowed by policy (command fence, credentials).
    Permission,
    /// A person rejected the output.
    Rejected,
    /// Anything else: trying again will not help.
    Fatal,
}

impl ErrorClass {
    /// The spelling in files and JSON.
    pub fn as_str(self) -> &'static str {
        self.into()
    }
}

impl fmt::Display for ErrorClass {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The error of a failed step or run: `{class, message, hint}`, and the
/// typed cause a front words a hint from when the setting that helps is
/// the front's to name.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StepError {
    /// The class, for retry decisions.
    pub class: ErrorClass,
    /// What happened.
    pub message: String,
    /// What a person can do about it, when the layer that failed can say it
    /// without naming a front's settings.
    pub hint: Option<String>,
    /// What failed, typed, when what helps is a setting of the host (its
    /// config file, its flags): the front that shows the error words it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cause: Option<Cause>,
}

impl StepError {
    /// An error of `class` with no hint and no cause.
    pub fn new(class: ErrorClass, message: impl Into<String>) -> Self {
        Self { class, message: message.into(), hint: None, cause: None }
    }

    /// This error with a hint.
    pub fn with_hint(mut self, hint: impl Into<String>) -> Self {
        self.hint = Some(hint.into());
        self
    }
}

/// What failed, where the way out is a setting of the host that runs the
/// step (a program to allow, a directory to add to the fence's roots, a
/// model, a key, a timeout), so a front names it in its own words.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
#[non_exhaustive]
pub enum Cause {
    /// A command's program is not on the fence's allowlist.
    ProgramNotAllowed {
        /// The program, as the step names it.
        program: String,
    },
    /// A command's working directory resolves outside the fence's roots.
    OutsideRoots {
        /// The directory, as the step names it.
        dir: String,
    },
    /// No model is set for a provider.
    NoModel {
        /// The provider.
        provider: String,
    },
    /// A provider refused the key it was given.
    KeyRefused {
        /// The provider.
        provider: String,
        /// The setting that holds its key (an environment variable's name).
        setting: String,
    },
    /// A provider asks to slow down.
    RateLimited {
        /// The provider.
        provider: String,
    },
    /// A provider did not answer in time.
    ProviderTimeout {
        /// The provider.
        provider: String,
    },
    /// The run's budget is spent: no further LLM step starts until a person
    /// raises it.
    BudgetSpent,
    /// A command step sets a variable that changes which program or code
    /// runs (`PATH`, the loader's `LD_*`), which the fence refuses.
    EnvNotAllowed {
        /// The variable's name.
        name: String,
    },
    /// A command argument led by run data starts with `-`: data would pick
    /// an option of the program, and the step did not allow it.
    OptionFromData {
        /// The argument's place in the step's `command` list (the program is 0).
        index: usize,
    },
    /// With `confine_paths`, a command argument, read as a path, resolves
    /// outside the fence's roots.
    ArgOutsideRoots {
        /// The argument's place in the step's `command` list (the program is 0).
        index: usize,
    },
}

/// A point in time, in milliseconds since the Unix epoch. The domain never
/// reads a clock; the engine passes times in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Timestamp(pub u64);

impl Timestamp {
    /// This time plus a duration.
    pub fn after(self, d: crate::duration::Duration) -> Self {
        Self(self.0.saturating_add(d.as_millis()))
    }
}

/// The run a run was made from: the source of a fork, at a checkpoint
/// (and, for the run of a sub-workflow, the parent run's step).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Parent {
    /// The parent run.
    pub run_id: RunId,
    /// The checkpoint a fork starts at (its sequence number).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub checkpoint: Option<u64>,
    /// The parent's step whose run this is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub step: Option<StepPath>,
    /// How many sub-workflow calls deep this run is (1: a run's child;
    /// absent on a fork): a run refuses to start children past
    /// [`crate::limits::MAX_CALL_DEPTH`].
    #[serde(default, skip_serializing_if = "is_zero_depth")]
    pub depth: u32,
}

fn is_zero_depth(n: &u32) -> bool {
    *n == 0
}

fn is_zero_priority(n: &i32) -> bool {
    *n == 0
}

/// Where a step sits in a run: `parse`, `per_epic[e-auth].stories`, `fix[2].check`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct StepPath(String);

impl StepPath {
    /// A path from its text form.
    pub fn new(path: impl Into<String>) -> Self {
        Self(path.into())
    }

    /// The path as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The path of a step inside instance `key` of this group.
    pub fn instance_child(&self, key: &str, id: &str) -> Self {
        Self(format!("{}[{key}].{id}", self.0))
    }
}

impl fmt::Display for StepPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The kind of person-facing wait.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, strum::IntoStaticStr)]
#[serde(rename_all = "snake_case")]
#[strum(serialize_all = "snake_case")]
#[non_exhaustive]
pub enum WaitKind {
    /// Acceptance of a step's output.
    Acceptance,
    /// An approval step.
    Approval,
    /// Answers to questions.
    Clarification,
    /// A blocked failure.
    Block,
    /// A person's turn in an interactive step's conversation.
    Conversation,
}

impl WaitKind {
    /// A gate or question a person answers (not a blocked failure).
    pub fn is_person(self) -> bool {
        self != WaitKind::Block
    }
}

/// One entry of the audit trail: what happened, when, and who did it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Event {
    /// Position in the run's log, from 1, without gaps.
    pub seq: u64,
    /// When it was recorded.
    pub at: Timestamp,
    /// Who caused it: `engine`, or a person's name.
    pub actor: String,
    /// What happened.
    #[serde(flatten)]
    pub kind: EventKind,
}

/// What happened in a run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
#[non_exhaustive]
pub enum EventKind {
    /// The run exists: its definition (by content hash) and inputs are fixed.
    RunCreated {
        /// The run's id.
        run_id: RunId,
        /// The workflow's id.
        workflow: WorkflowId,
        /// SHA-256 of the definition text the run started with.
        definition_hash: String,
        /// The resolved inputs.
        inputs: Value,
        /// The definition's `version:` text, when it has one: which revision
        /// of the workflow the run follows (absent in logs written before
        /// runs recorded it).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        version: Option<String>,
        /// The run's labels: its definition's, with those given at start
        /// over them (absent when it has none).
        #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
        labels: crate::label::Labels,
        /// Its priority: of the runs waiting to be driven, higher ones
        /// are driven first (default 0).
        #[serde(default, skip_serializing_if = "is_zero_priority")]
        priority: i32,
        /// The run it was made from (a fork's source).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        parent: Option<Box<Parent>>,
    },
    /// The run started or went on.
    RunStarted,
    /// An attempt of a step began.
    StepStarted {
        /// The step.
        path: StepPath,
        /// The attempt number, from 1.
        attempt: u32,
    },
    /// An agent step's attempt rendered what it sends the model, recorded
    /// before the call so a person sees the prompt while the answer streams.
    /// Earlier turns (rework comments, answers) are events of their own.
    PromptRendered {
        /// The step.
        path: StepPath,
        /// The attempt.
        attempt: u32,
        /// The agent's rendered system prompt, when it has one.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        system: Option<String>,
        /// The step's rendered prompt.
        prompt: String,
    },
    /// An agent's model asked for a tool: recorded before the tool runs, so
    /// a crash runs it again at most once (with the same key).
    ToolCalled {
        /// The step.
        path: StepPath,
        /// The attempt.
        attempt: u32,
        /// The model's round of calls within the attempt, from 1.
        round: u32,
        /// The id the model gave the call.
        call_id: String,
        /// The tool's name as the model wrote it.
        tool: String,
        /// The arguments as the model wrote them (JSON text that may not parse).
        arguments: String,
    },
    /// A tool call ended: what went back to the model. A call that returned
    /// is never run again, also after a crash.
    ToolReturned {
        /// The step.
        path: StepPath,
        /// The attempt.
        attempt: u32,
        /// The call it answers.
        call_id: String,
        /// The result, or the refusal or error the model reads instead.
        result: String,
        /// The call was refused or failed (the result says why); the model
        /// was told so.
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        refused: bool,
    },
    /// A step finished with an output.
    StepSucceeded {
        /// The step.
        path: StepPath,
        /// Its output.
        output: Value,
    },
    /// An attempt failed; `retry_at` is set when another attempt follows.
    StepFailed {
        /// The step.
        path: StepPath,
        /// The failed attempt (0: the step failed before an attempt, e.g. its `when`).
        attempt: u32,
        /// Why.
        error: StepError,
        /// What the attempt produced anyway (a command's exit code and output).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        output: Option<Value>,
        /// When the next attempt is due, if any.
        retry_at: Option<Timestamp>,
    },
    /// A step was not run, or its failure was turned into a skip.
    StepSkipped {
        /// The step.
        path: StepPath,
        /// Why, in words.
        reason: String,
        /// Whether the steps that need it are skipped too (`on_failure: skip`);
        /// a step skipped by its `when` lets its dependents run.
        cascade: bool,
    },
    /// A failed step sent the run back to an earlier sibling (`on_failure: goto`).
    GotoTaken {
        /// The failed step.
        from: StepPath,
        /// The step the run goes back to.
        to: StepPath,
        /// Every step that runs again: `to`, `from`, and all that need either.
        reset: Vec<StepPath>,
    },
    /// A step waits for a person.
    StepWaiting {
        /// The step.
        path: StepPath,
        /// The kind of wait.
        wait: WaitKind,
        /// When the gate's `on_timeout` applies, if it has a timeout.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        deadline: Option<Timestamp>,
        /// What the approvers read (an approval step's rendered message).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        message: Option<String>,
        /// The model's questions (a clarification).
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        questions: Vec<String>,
    },
    /// Nothing can go on until a person acts: the run waits.
    RunWaiting {
        /// The kind of wait of the first waiting step.
        wait: WaitKind,
    },
    /// A person (the event's actor) approved or rejected at a gate, or its
    /// deadline decided for them.
    GateDecided {
        /// The gate's step.
        path: StepPath,
        /// Approved (or rejected).
        approve: bool,
        /// The role the person decided as.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        role: Option<String>,
        /// Their comment; a rejection's becomes `{{ feedback }}` of a rework.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        comment: Option<String>,
        /// The gate's deadline passed and its `on_timeout` decided.
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        timed_out: bool,
    },
    /// An accepted output: the step is done, its document stored after this.
    StepAccepted {
        /// The step.
        path: StepPath,
    },
    /// A rejected output runs again with the reviewer's comment.
    StepReworked {
        /// The step.
        path: StepPath,
    },
    /// A person (the event's actor) answered a model's questions; the step
    /// runs again with questions and answers in its conversation.
    Answered {
        /// The step.
        path: StepPath,
        /// The answers.
        text: String,
    },
    /// An agent with `session: reuse` finished a step: its prompt and final
    /// answer join the agent's conversation for its later steps of the run.
    SessionExtended {
        /// The agent.
        agent: String,
        /// The step that added them.
        path: StepPath,
        /// The messages added, in order.
        turns: Vec<Turn>,
    },
    /// An answer failed its QA gate and went back to the model (within one attempt).
    OutputRepaired {
        /// The step.
        path: StepPath,
        /// The attempt.
        attempt: u32,
        /// Why it was sent back: the parser's or validator's errors, or the judge's reason.
        reason: String,
    },
    /// A finished step is to run again (goto, rework, resume of a block).
    StepReset {
        /// The step.
        path: StepPath,
    },
    /// A step was cancelled with its run.
    StepCancelled {
        /// The step.
        path: StepPath,
    },
    /// A `for_each` step fixed its instances: one per item, in item order.
    /// Recorded once, so a resumed run expands to exactly these instances
    /// even if the items would now render differently.
    GroupExpanded {
        /// The `for_each` step.
        path: StepPath,
        /// The scope the group runs in; each instance's scope is its child.
        scope: ScopeKey,
        /// The `as` name: the item's name in templates and in scope keys.
        name: String,
        /// Each instance's key, in item order.
        keys: Vec<String>,
        /// Each instance's item, stored as the entity of its scope.
        items: Vec<Value>,
    },
    /// A loop began an iteration.
    IterationStarted {
        /// The `loop` step.
        path: StepPath,
        /// The iteration, from 0.
        index: u32,
    },
    /// Every step of an instance or iteration finished.
    InstanceFinished {
        /// The group step.
        path: StepPath,
        /// The instance's position in the group.
        index: u32,
        /// Its key.
        key: String,
        /// A step of it that failed (with `on_failure: continue`), if any.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        failed: Option<StepPath>,
    },
    /// A document was stored in a scope.
    DocumentStored {
        /// The scope.
        scope: ScopeKey,
        /// The document type.
        doc_type: Name,
        /// The document.
        value: Value,
    },
    /// Tokens an LLM call of a step used.
    UsageRecorded {
        /// The step.
        path: StepPath,
        /// The attempt.
        attempt: u32,
        /// The agent that asked (the step's, or its QA judge's; absent in
        /// logs written before runs recorded it).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        agent: Option<String>,
        /// The model that answered.
        model: String,
        /// Tokens used.
        usage: TokenUsage,
    },
    /// A person paused the run.
    RunPaused,
    /// The run finished successfully.
    RunCompleted,
    /// The run failed.
    RunFailed {
        /// Why.
        error: StepError,
    },
    /// A person cancelled the run.
    RunCancelled,
    /// The run was forked from a checkpoint of another: the events before
    /// this one are the source's, copied with their actors and times, and
    /// the tokens they record are the source's (inherited, not this run's).
    RunForked {
        /// The source run.
        source: RunId,
        /// The source's checkpoint (its sequence number) the fork starts at.
        checkpoint: u64,
    },
    /// A person set the run's budget above the definition's
    /// `defaults.budget_usd`, for the rest of the run.
    BudgetRaised {
        /// The new budget, in USD.
        budget_usd: f64,
    },
    /// A `workflow:` step's attempt started its child run (recorded
    /// before the child exists, so the link is never lost; the child's
    /// `run_created` names this run and step back).
    ChildStarted {
        /// The step.
        path: StepPath,
        /// The attempt.
        attempt: u32,
        /// The child run.
        run_id: RunId,
    },
    /// A `workflow:` step's child run waits for a person: so does the
    /// step, until the child moves on. Its gates are decided on the child.
    ChildWaiting {
        /// The step.
        path: StepPath,
        /// The child run.
        run_id: RunId,
        /// How the child waits.
        wait: WaitKind,
    },
}

/// Tokens used by LLM calls.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenUsage {
    /// Prompt tokens.
    pub prompt_tokens: u64,
    /// Completion tokens.
    pub completion_tokens: u64,
    /// Some of the counts are estimates (the provider did not report them).
    #[serde(default)]
    pub estimated: bool,
    /// The cost the provider itself reported, in millionths of a USD (a
    /// coding-agent CLI that says what it spent); counted instead of a
    /// configured price. Absent when none did.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub cost_micro_usd: u64,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

impl TokenUsage {
    /// Adds another call's usage to this total.
    pub fn add(&mut self, other: TokenUsage) {
        self.prompt_tokens += other.prompt_tokens;
        self.completion_tokens += other.completion_tokens;
        self.estimated |= other.estimated;
        self.cost_micro_usd += other.cost_micro_usd;
    }

    /// The sum of `usages` (a run's usage by model, say).
    pub fn total<'a>(usages: impl IntoIterator<Item = &'a TokenUsage>) -> Self {
        let mut total = Self::default();
        for usage in usages {
            total.add(*usage);
        }
        total
    }
}

/// One message of a conversation with a model (a step's own, kept across
/// its attempts, or a `session: reuse` agent's), recorded as what happened:
/// the engine words it for the model, so the log holds no prompt prose.
///
/// JSON: `{"type": "answer", "text": "..."}` and so on; a turn recorded
/// before these kinds existed reads back as [`Turn::Message`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Turn {
    /// A prompt the step sent.
    Prompt {
        /// The rendered prompt.
        text: String,
    },
    /// The model's earlier answer.
    Answer {
        /// The answer as text.
        text: String,
    },
    /// A reviewer rejected the answer before it.
    Rejected {
        /// Their comment, if they gave one.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        comment: Option<String>,
    },
    /// The model asked these questions instead of answering.
    Questions {
        /// The questions.
        questions: Vec<String>,
    },
    /// A person answered the model's questions.
    Answers {
        /// The answers.
        text: String,
    },
    /// A person's turn in an interactive step's conversation.
    Said {
        /// What they said.
        text: String,
    },
    /// A turn as logs before these kinds recorded it: already worded.
    #[serde(untagged)]
    Message {
        /// `assistant` (the model) or `user`.
        role: String,
        /// The words.
        content: String,
    },
}

/// What a person says, alone, to end an interactive step's conversation.
pub const END_CONVERSATION: &str = "/done";

impl Turn {
    /// Whether this is the person ending the conversation.
    pub fn ends_conversation(&self) -> bool {
        matches!(self, Turn::Said { text } if text.trim() == END_CONVERSATION)
    }

    /// An interactive step's output: its conversation, the agent's turns
    /// and the person's, as `[{"role": "agent" | "person", "text": ...}]`,
    /// without the `/done` that ended it.
    pub fn transcript(turns: &[Turn]) -> Value {
        let said = turns.iter().filter(|t| !t.ends_conversation()).filter_map(|turn| match turn {
            Turn::Answer { text } => Some(serde_json::json!({"role": "agent", "text": text})),
            Turn::Said { text } => Some(serde_json::json!({"role": "person", "text": text})),
            _ => None,
        });
        Value::Array(said.collect())
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    /// One event of each kind, with every optional field set.
    fn one_of_each() -> Vec<EventKind> {
        let path = || StepPath::new("p[k].s");
        let error = || StepError {
            class: ErrorClass::RateLimited,
            message: "m".into(),
            hint: Some("h".into()),
            cause: None,
        };
        vec![
            EventKind::RunCreated {
                run_id: RunId::new("r1").expect("id"),
                workflow: WorkflowId::new("wf").expect("id"),
                definition_hash: "abc".into(),
                inputs: json!({"x": 1}),
                version: None,
                labels: Default::default(),
                priority: 0,
                parent: None,
            },
            EventKind::RunCreated {
                run_id: RunId::new("r2").expect("id"),
                workflow: WorkflowId::new("wf").expect("id"),
                definition_hash: "def".into(),
                inputs: json!({}),
                version: Some("1.2.0".into()),
                labels: Default::default(),
                priority: 0,
                parent: None,
            },
            EventKind::RunStarted,
            EventKind::StepStarted { path: path(), attempt: 1 },
            EventKind::StepSucceeded { path: path(), output: json!({"a": [1, "b"]}) },
            EventKind::StepFailed {
                path: path(),
                attempt: 2,
                error: error(),
                output: Some(json!(3)),
                retry_at: Some(Timestamp(9)),
            },
            EventKind::StepFailed { path: path(), attempt: 0, error: error(), output: None, retry_at: None },
            EventKind::StepSkipped { path: path(), reason: "r".into(), cascade: true },
            EventKind::GotoTaken { from: path(), to: StepPath::new("a"), reset: vec![StepPath::new("a")] },
            EventKind::StepWaiting {
                path: path(),
                wait: WaitKind::Clarification,
                deadline: Some(Timestamp(5)),
                message: Some("go?".into()),
                questions: vec!["q".into()],
            },
            EventKind::StepWaiting {
                path: path(),
                wait: WaitKind::Block,
                deadline: None,
                message: None,
                questions: Vec::new(),
            },
            EventKind::RunWaiting { wait: WaitKind::Acceptance },
            EventKind::GateDecided {
                path: path(),
                approve: false,
                role: Some("qa".into()),
                comment: Some("c".into()),
                timed_out: true,
            },
            EventKind::GateDecided {
                path: path(),
                approve: true,
                role: None,
                comment: None,
                timed_out: false,
            },
            EventKind::StepAccepted { path: path() },
            EventKind::StepReworked { path: path() },
            EventKind::Answered { path: path(), text: "t".into() },
            EventKind::OutputRepaired { path: path(), attempt: 1, reason: "r".into() },
            EventKind::StepReset { path: path() },
            EventKind::StepCancelled { path: path() },
            EventKind::GroupExpanded {
                path: path(),
                scope: ScopeKey::root().child("epic", "e1"),
                name: "epic".into(),
                keys: vec!["e1".into()],
                items: vec![json!({"id": "e1"})],
            },
            EventKind::IterationStarted { path: path(), index: 2 },
            EventKind::InstanceFinished { path: path(), index: 0, key: "e1".into(), failed: Some(path()) },
            EventKind::InstanceFinished { path: path(), index: 1, key: "e2".into(), failed: None },
            EventKind::DocumentStored {
                scope: ScopeKey::root(),
                doc_type: Name::new("doc").expect("name"),
                value: json!("v"),
            },
            EventKind::UsageRecorded {
                path: path(),
                attempt: 1,
                agent: Some("w".into()),
                model: "m".into(),
                usage: TokenUsage {
                    prompt_tokens: 3,
                    completion_tokens: 4,
                    estimated: true,
                    cost_micro_usd: 0,
                },
            },
            EventKind::RunPaused,
            EventKind::RunCompleted,
            EventKind::RunFailed { error: error() },
            EventKind::RunCancelled,
            EventKind::SessionExtended {
                agent: "w".into(),
                path: path(),
                turns: vec![
                    Turn::Prompt { text: "Plan.".into() },
                    Turn::Answer { text: "v1".into() },
                    Turn::Rejected { comment: Some("c".into()) },
                    Turn::Rejected { comment: None },
                    Turn::Questions { questions: vec!["q".into()] },
                    Turn::Answers { text: "a".into() },
                    Turn::Message { role: "user".into(), content: "old".into() },
                ],
            },
            EventKind::RunForked { source: RunId::new("r0").expect("id"), checkpoint: 12 },
            EventKind::BudgetRaised { budget_usd: 2.5 },
            EventKind::ChildStarted { path: path(), attempt: 1, run_id: RunId::new("r1-c").expect("id") },
            EventKind::ChildWaiting {
                path: path(),
                run_id: RunId::new("r1-c").expect("id"),
                wait: WaitKind::Approval,
            },
        ]
    }

    /// The JSON of each kind, as stores hold it: it never changes.
    const GOLDEN: &str = r#"{"seq":7,"at":1700,"actor":"alice","type":"run_created","run_id":"r1","workflow":"wf","definition_hash":"abc","inputs":{"x":1}}
{"seq":7,"at":1700,"actor":"alice","type":"run_created","run_id":"r2","workflow":"wf","definition_hash":"def","inputs":{},"version":"1.2.0"}
{"seq":7,"at":1700,"actor":"alice","type":"run_started"}
{"seq":7,"at":1700,"actor":"alice","type":"step_started","path":"p[k].s","attempt":1}
{"seq":7,"at":1700,"actor":"alice","type":"step_succeeded","path":"p[k].s","output":{"a":[1,"b"]}}
{"seq":7,"at":1700,"actor":"alice","type":"step_failed","path":"p[k].s","attempt":2,"error":{"class":"rate_limited","message":"m","hint":"h"},"output":3,"retry_at":9}
{"seq":7,"at":1700,"actor":"alice","type":"step_failed","path":"p[k].s","attempt":0,"error":{"class":"rate_limited","message":"m","hint":"h"},"retry_at":null}
{"seq":7,"at":1700,"actor":"alice","type":"step_skipped","path":"p[k].s","reason":"r","cascade":true}
{"seq":7,"at":1700,"actor":"alice","type":"goto_taken","from":"p[k].s","to":"a","reset":["a"]}
{"seq":7,"at":1700,"actor":"alice","type":"step_waiting","path":"p[k].s","wait":"clarification","deadline":5,"message":"go?","questions":["q"]}
{"seq":7,"at":1700,"actor":"alice","type":"step_waiting","path":"p[k].s","wait":"block"}
{"seq":7,"at":1700,"actor":"alice","type":"run_waiting","wait":"acceptance"}
{"seq":7,"at":1700,"actor":"alice","type":"gate_decided","path":"p[k].s","approve":false,"role":"qa","comment":"c","timed_out":true}
{"seq":7,"at":1700,"actor":"alice","type":"gate_decided","path":"p[k].s","approve":true}
{"seq":7,"at":1700,"actor":"alice","type":"step_accepted","path":"p[k].s"}
{"seq":7,"at":1700,"actor":"alice","type":"step_reworked","path":"p[k].s"}
{"seq":7,"at":1700,"actor":"alice","type":"answered","path":"p[k].s","text":"t"}
{"seq":7,"at":1700,"actor":"alice","type":"output_repaired","path":"p[k].s","attempt":1,"reason":"r"}
{"seq":7,"at":1700,"actor":"alice","type":"step_reset","path":"p[k].s"}
{"seq":7,"at":1700,"actor":"alice","type":"step_cancelled","path":"p[k].s"}
{"seq":7,"at":1700,"actor":"alice","type":"group_expanded","path":"p[k].s","scope":"epic/e1","name":"epic","keys":["e1"],"items":[{"id":"e1"}]}
{"seq":7,"at":1700,"actor":"alice","type":"iteration_started","path":"p[k].s","index":2}
{"seq":7,"at":1700,"actor":"alice","type":"instance_finished","path":"p[k].s","index":0,"key":"e1","failed":"p[k].s"}
{"seq":7,"at":1700,"actor":"alice","type":"instance_finished","path":"p[k].s","index":1,"key":"e2"}
{"seq":7,"at":1700,"actor":"alice","type":"document_stored","scope":"","doc_type":"doc","value":"v"}
{"seq":7,"at":1700,"actor":"alice","type":"usage_recorded","path":"p[k].s","attempt":1,"agent":"w","model":"m","usage":{"prompt_tokens":3,"completion_tokens":4,"estimated":true}}
{"seq":7,"at":1700,"actor":"alice","type":"run_paused"}
{"seq":7,"at":1700,"actor":"alice","type":"run_completed"}
{"seq":7,"at":1700,"actor":"alice","type":"run_failed","error":{"class":"rate_limited","message":"m","hint":"h"}}
{"seq":7,"at":1700,"actor":"alice","type":"run_cancelled"}
{"seq":7,"at":1700,"actor":"alice","type":"session_extended","agent":"w","path":"p[k].s","turns":[{"type":"prompt","text":"Plan."},{"type":"answer","text":"v1"},{"type":"rejected","comment":"c"},{"type":"rejected"},{"type":"questions","questions":["q"]},{"type":"answers","text":"a"},{"role":"user","content":"old"}]}
{"seq":7,"at":1700,"actor":"alice","type":"run_forked","source":"r0","checkpoint":12}
{"seq":7,"at":1700,"actor":"alice","type":"budget_raised","budget_usd":2.5}
{"seq":7,"at":1700,"actor":"alice","type":"child_started","path":"p[k].s","attempt":1,"run_id":"r1-c"}
{"seq":7,"at":1700,"actor":"alice","type":"child_waiting","path":"p[k].s","run_id":"r1-c","wait":"approval"}"#;

    #[test]
    fn events_keep_their_json() {
        let events: Vec<Event> = one_of_each()
            .into_iter()
            .map(|kind| Event { seq: 7, at: Timestamp(1_700), actor: "alice".into(), kind })
            .collect();
        let lines: Vec<String> = events.iter().map(|e| serde_json::to_string(e).expect("json")).collect();
        assert_eq!(lines.join("\n"), GOLDEN);
        for (line, event) in GOLDEN.lines().zip(&events) {
            assert_eq!(&serde_json::from_str::<Event>(line).expect("reads back"), event);
        }
    }

    #[test]
    fn turns_recorded_as_words_still_read() {
        let old = r#"{"seq":9,"at":5,"actor":"engine","type":"session_extended","agent":"w","path":"plan","turns":[{"role":"user","content":"Plan."},{"role":"assistant","content":"v1"}]}"#;
        let event: Event = serde_json::from_str(old).expect("an old event reads");
        let EventKind::SessionExtended { turns, .. } = &event.kind else { panic!("{event:?}") };
        let message =
            |role: &str, content: &str| Turn::Message { role: role.into(), content: content.into() };
        assert_eq!(turns, &vec![message("user", "Plan."), message("assistant", "v1")]);
        assert_eq!(serde_json::to_string(&event).expect("json"), old, "and writes back the same");
    }
}
