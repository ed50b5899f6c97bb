//! The typed workflow definition: every key of the format, as Rust types.
//! Built only by [`crate::read`] from a parsed document, so a value of these
//! types has passed the structural checks; [`crate::validate`] adds the
//! cross-step ones.

use std::collections::BTreeMap;

use serde::Serialize;
use serde_json::Value;

use crate::duration::Duration;
use crate::event::ErrorClass;
use crate::id::{Label, Name, StepId, WorkflowId};

/// A template source string (MiniJinja). Parsed at validation; rendered by the engine.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(transparent)]
pub struct Template(pub String);

impl Template {
    /// The template text.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Whether a command argument rendered from this template could start
    /// with `-` because of run data rather than the author's own text, so
    /// that data (a model's answer, an input) would pick a program option.
    /// The author owns the option when the template has no substitution at
    /// all, or when its literal start names the option: `-` and a character
    /// other than `-` (`-n{{ n }}`), or `--name=` (`--output={{ path }}`).
    /// `{{ x }}`, `-{{ x }}`, `--{{ x }}` and `--out{{ x }}` are led by data.
    pub fn option_led_by_data(&self) -> bool {
        let source = self.as_str();
        let start = ["{{", "{%", "{#"].iter().filter_map(|tag| source.find(tag)).min();
        let Some(start) = start else { return false };
        let literal = &source[..start];
        match literal.strip_prefix("--") {
            Some(long) => long.split_once('=').is_none_or(|(name, _)| name.is_empty()),
            None => match literal.strip_prefix('-') {
                Some(short) => short.is_empty(),
                None => literal.is_empty(),
            },
        }
    }
}

/// Whether a command step may not set the variable `name`: it changes how
/// the program is found (`PATH`) or which code the loader maps into it
/// (`LD_*`, `DYLD_*`, `GCONV_PATH`, `GLIBC_TUNABLES`), so a step could run
/// code its fence never allowed. `CAIRN_IDEMPOTENCY_KEY` is the runner's.
pub fn env_name_refused(name: &str) -> bool {
    let upper = name.to_ascii_uppercase();
    matches!(upper.as_str(), "PATH" | "GCONV_PATH" | "GLIBC_TUNABLES" | "CAIRN_IDEMPOTENCY_KEY")
        || upper.starts_with("LD_")
        || upper.starts_with("DYLD_")
}

/// A whole workflow definition.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Workflow {
    /// The format version (`cairn: 1`).
    pub cairn: u32,
    /// The workflow id.
    pub id: WorkflowId,
    /// A display name.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// A free version string that runs record.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    /// What the workflow does.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// Free tags.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub tags: Vec<String>,
    /// The whole run's time limit, counted from its creation: past it the
    /// run fails (class `timeout`) and what is in flight is stopped.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub timeout: Option<crate::duration::Duration>,
    /// The labels every run of it carries (a start may add or override).
    #[serde(skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub labels: crate::label::Labels,
    /// What starts its runs under `cairn serve`: a schedule, a webhook.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub on: Option<crate::schedule::Triggers>,
    /// Typed run inputs, read as `{{ inputs.NAME }}`.
    pub inputs: BTreeMap<Name, InputDef>,
    /// Who does LLM work.
    pub agents: BTreeMap<Name, AgentDef>,
    /// What every step inherits.
    pub defaults: Defaults,
    /// The top-level steps, in file order.
    pub steps: Vec<Step>,
}

impl Workflow {
    /// When a run of it created at `created_at` times out (`timeout:`).
    pub fn deadline(&self, created_at: crate::state::Timestamp) -> Option<crate::state::Timestamp> {
        self.timeout.map(|t| created_at.after(t))
    }
}

/// The type of a run input.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum InputType {
    /// A string.
    String,
    /// Any number.
    Number,
    /// A whole number.
    Integer,
    /// `true` or `false`.
    Boolean,
    /// A mapping.
    Object,
    /// A list.
    Array,
}

impl InputType {
    /// All types, with their spelling in files.
    pub const ALL: [(&'static str, InputType); 6] = [
        ("string", InputType::String),
        ("number", InputType::Number),
        ("integer", InputType::Integer),
        ("boolean", InputType::Boolean),
        ("object", InputType::Object),
        ("array", InputType::Array),
    ];

    /// Whether `value` is of this type.
    pub fn admits(self, value: &Value) -> bool {
        match self {
            InputType::String => value.is_string(),
            InputType::Number => value.is_number(),
            InputType::Integer => value.is_i64() || value.is_u64(),
            InputType::Boolean => value.is_boolean(),
            InputType::Object => value.is_object(),
            InputType::Array => value.is_array(),
        }
    }

    /// The spelling in files.
    pub fn as_str(self) -> &'static str {
        Self::ALL.iter().find(|(_, t)| *t == self).map_or("string", |(s, _)| s)
    }
}

/// One declared run input.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct InputDef {
    /// Its type.
    #[serde(rename = "type")]
    pub ty: InputType,
    /// A run without it is refused (unless it has a default).
    pub required: bool,
    /// The value used when the run does not give one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub default: Option<Value>,
    /// What it is for.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
}

/// Whether an agent keeps its conversation across its steps.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum SessionMode {
    /// Every step starts a new conversation.
    #[default]
    Fresh,
    /// The agent's earlier messages of this run are sent again.
    Reuse,
}

/// An agent: a provider, a model and a system prompt.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AgentDef {
    /// A provider named in the config (`default` if omitted).
    pub provider: Label,
    /// The model; the provider's default otherwise.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    /// The system prompt (a template).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub system: Option<Template>,
    /// Sampling temperature.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub temperature: Option<f64>,
    /// Completion token limit.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_tokens: Option<u32>,
    /// Fresh or reused conversation.
    pub session: SessionMode,
    /// The built-in tools the agent may call ([`BUILTIN_TOOLS`]).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub tools: Vec<Label>,
    /// The MCP servers (the host's `[mcp.NAME]`) whose tools it may call.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub mcp: Vec<Label>,
    /// Files inside the command roots (globs) given to the model before
    /// the system prompt.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub context: Vec<String>,
    /// Rounds of tool calls one attempt may make before it fails
    /// (`invalid_output`).
    pub max_tool_rounds: u32,
}

/// The tools every host offers, fenced like command steps: files inside
/// the command roots, and programs the allowlist lets run.
pub const BUILTIN_TOOLS: [&str; 5] = ["read_file", "write_file", "list_files", "search", "run_command"];

/// Rounds of tool calls an attempt may make when its agent sets no `max_tool_rounds`.
pub const DEFAULT_TOOL_ROUNDS: u32 = 20;
/// The most `max_tool_rounds` may be.
pub const MAX_TOOL_ROUNDS: u32 = 1000;

/// A retry setting as written: every field optional, merged over the defaults.
#[derive(Debug, Clone, PartialEq, Default, Serialize)]
pub struct RetrySpec {
    /// Attempts in all, the first included.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_attempts: Option<u32>,
    /// Delay before the second attempt.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub delay: Option<Duration>,
    /// Multiplier of the delay per attempt.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub backoff: Option<f64>,
    /// Cap on the delay.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_delay: Option<Duration>,
    /// Randomise delays (full jitter) so retries of many runs spread out.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub jitter: Option<bool>,
    /// The error classes that are retried.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub on: Option<Vec<RetryOn>>,
}

/// An error class a retry applies to, or all of them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RetryOn {
    /// Every class.
    Any,
    /// One class.
    #[serde(untagged)]
    Class(ErrorClass),
}

/// A complete retry policy, after merging a step's [`RetrySpec`] over the defaults.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RetryPolicy {
    /// Attempts in all, the first included.
    pub max_attempts: u32,
    /// Delay before the second attempt.
    pub delay: Duration,
    /// Multiplier of the delay per attempt.
    pub backoff: f64,
    /// Cap on the delay.
    pub max_delay: Duration,
    /// Randomise delays.
    pub jitter: bool,
    /// The error classes that are retried.
    pub on: Vec<RetryOn>,
}

impl Default for RetryPolicy {
    /// The built-in policy: 3 attempts, 1s doubling to at most 30s, with
    /// jitter, for transient errors, timeouts and rate limits.
    fn default() -> Self {
        Self {
            max_attempts: 3,
            delay: Duration::from_secs(1),
            backoff: 2.0,
            max_delay: Duration::from_secs(30),
            jitter: true,
            on: vec![
                RetryOn::Class(ErrorClass::Transient),
                RetryOn::Class(ErrorClass::Timeout),
                RetryOn::Class(ErrorClass::RateLimited),
            ],
        }
    }
}

impl RetryPolicy {
    /// This policy with the fields `spec` sets replaced.
    pub fn merged(&self, spec: &RetrySpec) -> Self {
        Self {
            max_attempts: spec.max_attempts.unwrap_or(self.max_attempts),
            delay: spec.delay.unwrap_or(self.delay),
            backoff: spec.backoff.unwrap_or(self.backoff),
            max_delay: spec.max_delay.unwrap_or(self.max_delay),
            jitter: spec.jitter.unwrap_or(self.jitter),
            on: spec.on.clone().unwrap_or_else(|| self.on.clone()),
        }
    }

    /// Whether an error of `class` is retried by this policy.
    pub fn retries(&self, class: ErrorClass) -> bool {
        self.on.iter().any(|o| *o == RetryOn::Any || *o == RetryOn::Class(class))
    }
}

/// What a failed step does once its retries are spent, short of `goto`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum FailureAction {
    /// The run fails; running siblings are cancelled.
    #[default]
    Stop,
    /// The step is failed; dependents still run.
    Continue,
    /// The step and everything that needs it are skipped.
    Skip,
    /// The run waits for a person; `cairn resume` retries the step.
    Block,
}

impl FailureAction {
    /// All actions, with their spelling in files.
    pub const ALL: [(&'static str, FailureAction); 4] = [
        ("stop", FailureAction::Stop),
        ("continue", FailureAction::Continue),
        ("skip", FailureAction::Skip),
        ("block", FailureAction::Block),
    ];
}

/// `on_failure`: an action, or a jump back to an earlier sibling.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum OnFailure {
    /// Run again from an earlier sibling, at most `max` times, then `then`.
    Goto {
        /// The sibling to start again from.
        step: StepId,
        /// How many jumps at most.
        max: u32,
        /// What happens when the jumps are spent.
        then: FailureAction,
    },
    /// One of the plain actions.
    #[serde(untagged)]
    Action(FailureAction),
}

/// What every step inherits.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Defaults {
    /// Step timeout.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub timeout: Option<Duration>,
    /// The retry policy (built-in policy merged with `defaults.retry`).
    pub retry: RetryPolicy,
    /// Failure policy.
    pub on_failure: OnFailure,
    /// Steps of the run executing at once.
    pub max_parallel: u32,
    /// The most the run may spend on LLM calls, in USD (by the configured
    /// prices); once spent, no further LLM step starts and the run blocks.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub budget_usd: Option<f64>,
}

/// The built-in number of steps a run executes at once.
pub const DEFAULT_MAX_PARALLEL: u32 = 4;

impl Default for Defaults {
    fn default() -> Self {
        Self {
            timeout: None,
            retry: RetryPolicy::default(),
            on_failure: OnFailure::Action(FailureAction::Stop),
            max_parallel: DEFAULT_MAX_PARALLEL,
            budget_usd: None,
        }
    }
}

/// What happens when a gate's deadline passes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum TimeoutAction {
    /// Treated as a rejection.
    Reject,
    /// Treated as an approval.
    Approve,
    /// The step fails.
    Fail,
}

/// What a rejection of a step's output does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RejectAction {
    /// The step fails with class `rejected`.
    Fail,
    /// The step runs again with the reviewer's comment as `{{ feedback }}`.
    Rework,
}

/// An acceptance gate on a step's output.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Accept {
    /// Roles that must all approve; empty: one approval from anyone.
    pub approvers: Vec<Label>,
    /// How long the gate waits.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub timeout: Option<Duration>,
    /// What the deadline does.
    pub on_timeout: TimeoutAction,
    /// What a rejection does.
    pub on_reject: RejectAction,
    /// Reworks allowed before a rejection fails the step.
    pub max_reworks: u32,
}

/// One step.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Step {
    /// Unique among its siblings.
    pub id: StepId,
    /// A display name.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// The siblings it waits for; `None`: the previous sibling (or none for the first).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub needs: Option<Vec<StepId>>,
    /// Skip the step when this renders false.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub when: Option<Template>,
    /// Attempt timeout (overrides the default).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub timeout: Option<Duration>,
    /// Retry settings merged over the defaults.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub retry: Option<RetrySpec>,
    /// Failure policy (overrides the default).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub on_failure: Option<OnFailure>,
    /// Its failure never fails the run.
    pub optional: bool,
    /// Stores the output as a document of this type in the current scope.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub produces: Option<Name>,
    /// An acceptance gate on the output.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub accept: Option<Accept>,
    /// What the step does.
    pub kind: StepKind,
}

impl Step {
    /// The source of every template of this step itself (not of its nested
    /// steps): `when`, prompts, arguments, messages, and every string inside
    /// `set` and `with` values.
    pub fn template_sources(&self) -> Vec<&str> {
        fn strings<'a>(value: &'a Value, out: &mut Vec<&'a str>) {
            match value {
                Value::String(s) => out.push(s),
                Value::Array(items) => items.iter().for_each(|v| strings(v, out)),
                Value::Object(map) => map.values().for_each(|v| strings(v, out)),
                _ => {}
            }
        }
        let mut out: Vec<&str> = self.when.iter().map(Template::as_str).collect();
        match &self.kind {
            StepKind::Agent(a) => {
                out.push(a.prompt.as_str());
                if let Some(qa) = &a.qa {
                    out.extend([qa.rubric.as_str(), qa.pass_when.as_str()]);
                }
            }
            StepKind::Command(c) => {
                out.extend(c.command.iter().map(Template::as_str));
                out.extend(c.cwd.iter().chain(c.env.values()).chain(c.stdin.iter()).map(Template::as_str));
            }
            StepKind::Approval(a) => out.push(a.message.as_str()),
            StepKind::ForEach(g) => out.push(g.items.as_str()),
            StepKind::Loop(l) => out.extend(l.until.iter().map(Template::as_str)),
            StepKind::Set(set) => strings(&set.value, &mut out),
            StepKind::Uses(u) => strings(&u.with, &mut out),
            StepKind::Workflow(w) => strings(&w.with, &mut out),
        }
        out
    }

    /// The gate the step waits at when waiting as `wait`: the roles that
    /// must approve (empty: anyone, once) and what its deadline does.
    /// `None` for waits that are not approval gates (questions, blocks).
    pub fn gate(&self, wait: crate::event::WaitKind) -> Option<(&[Label], TimeoutAction)> {
        use crate::event::WaitKind;
        match (&self.kind, &self.accept, wait) {
            (StepKind::Approval(a), _, WaitKind::Approval) => Some((&a.approvers, a.on_timeout)),
            (_, Some(accept), WaitKind::Acceptance) => Some((&accept.approvers, accept.on_timeout)),
            _ => None,
        }
    }

    /// The nested steps of a `for_each` or `loop`, if any.
    pub fn body(&self) -> Option<&[Step]> {
        match &self.kind {
            StepKind::ForEach(g) => Some(&g.steps),
            StepKind::Loop(l) => Some(&l.steps),
            _ => None,
        }
    }
}

/// The kinds of step: exactly one kind key per step.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "snake_case", tag = "type")]
#[non_exhaustive]
pub enum StepKind {
    /// Asks an LLM.
    Agent(AgentStep),
    /// Runs a program.
    Command(CommandStep),
    /// Waits for people to approve.
    Approval(ApprovalStep),
    /// Runs nested steps once per item.
    ForEach(ForEachStep),
    /// Repeats nested steps.
    Loop(LoopStep),
    /// Computes a value from templates.
    Set(SetStep),
    /// Calls a handler the host registered.
    Uses(UsesStep),
    /// Runs another workflow as a child run.
    Workflow(WorkflowStep),
}

impl StepKind {
    /// The kind keys, as written in files.
    pub const KEYS: [&'static str; 8] =
        ["agent", "command", "approval", "for_each", "loop", "set", "uses", "workflow"];

    /// The kind key of this kind.
    pub fn key(&self) -> &'static str {
        match self {
            StepKind::Agent(_) => "agent",
            StepKind::Command(_) => "command",
            StepKind::Approval(_) => "approval",
            StepKind::ForEach(_) => "for_each",
            StepKind::Loop(_) => "loop",
            StepKind::Set(_) => "set",
            StepKind::Uses(_) => "uses",
            StepKind::Workflow(_) => "workflow",
        }
    }
}

/// Output expectations of an LLM step (the schema QA gate).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct OutputSpec {
    /// Text or JSON.
    pub format: OutputFormat,
    /// A JSON Schema the parsed output must satisfy.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub schema: Option<Schema>,
    /// Times invalid output goes back to the model with the errors.
    pub repair_attempts: u32,
}

/// The format of an LLM answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum OutputFormat {
    /// Free text.
    #[default]
    Text,
    /// A JSON document (a fenced ```json block is tolerated).
    Json,
}

/// A JSON Schema, inline or loaded from a file next to the workflow.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Schema {
    /// The file it came from, relative to the workflow file, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub file: Option<String>,
    /// The schema document (`null` until a file schema is loaded).
    pub document: Value,
}

/// An LLM judge run after schema validation.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Qa {
    /// The judging agent.
    pub agent: Name,
    /// What the judge checks (a template).
    pub rubric: Template,
    /// Pass condition over `verdict` (default `{{ verdict.pass }}`).
    pub pass_when: Template,
}

/// `agent` + `prompt`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AgentStep {
    /// The agent doing the work.
    pub agent: Name,
    /// The user message (a template).
    pub prompt: Template,
    /// Output format and schema.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub output: Option<OutputSpec>,
    /// An LLM judge.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub qa: Option<Qa>,
    /// The model may ask questions instead of answering.
    pub clarify: bool,
    /// Rounds of questions allowed (default 3).
    pub max_clarifications: u32,
    /// A person and the agent converse, turn by turn, until the person
    /// ends it (`/done`); the transcript is the step's output.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub interactive: bool,
}

/// `command`: an argv list, never a shell.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CommandStep {
    /// Program and arguments, each a template rendered on its own.
    pub command: Vec<Template>,
    /// Working directory (inside the allowed roots).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cwd: Option<Template>,
    /// The only variables set, besides a safe minimal set.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub env: BTreeMap<String, Template>,
    /// Standard input.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stdin: Option<Template>,
    /// Arguments led by run data may start with `-` (be options of the
    /// program); off by default, so an answer cannot smuggle in an option.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub allow_option_args: bool,
    /// Every argument, read as a path, must resolve inside the fence's roots.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub confine_paths: bool,
}

/// `approval`: people decide.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ApprovalStep {
    /// What the approvers read (a template).
    pub message: Template,
    /// Roles that must all approve; empty: one approval from anyone.
    pub approvers: Vec<Label>,
    /// How long it waits.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub timeout: Option<Duration>,
    /// What the deadline does.
    pub on_timeout: TimeoutAction,
}

/// `for_each` + `steps`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ForEachStep {
    /// A template yielding the list.
    pub items: Template,
    /// The item's name in templates, and the scope's name.
    #[serde(rename = "as")]
    pub as_name: Name,
    /// The item field naming the instance; the index otherwise.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    /// Instances of this group running at once.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_parallel: Option<u32>,
    /// The steps each instance runs.
    pub steps: Vec<Step>,
}

/// What a loop does when `max_iters` is spent before `until` holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Exhausted {
    /// The loop step fails.
    #[default]
    Fail,
    /// The loop step succeeds with its last iteration.
    Continue,
}

/// `loop` + `steps`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LoopStep {
    /// Iterations at most.
    pub max_iters: u32,
    /// Stop after an iteration where this renders true.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub until: Option<Template>,
    /// What running out of iterations does.
    pub on_exhausted: Exhausted,
    /// The steps of one iteration.
    pub steps: Vec<Step>,
}

/// `set`: a value whose strings are templates.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SetStep {
    /// The value; every string in it is rendered.
    pub value: Value,
}

/// `uses` + `with`: a host-registered handler.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct UsesStep {
    /// The handler's registered name.
    pub handler: Label,
    /// Its arguments; every string in it is rendered.
    pub with: Value,
}

/// `workflow` + `with`: a sub-workflow, run as a child run of its own
/// (events, gates) whose output is the step's output.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct WorkflowStep {
    /// The workflow it runs.
    pub workflow: Callee,
    /// The child's inputs; every string in it is rendered.
    pub with: Value,
}

/// The workflow a `workflow:` step runs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Callee {
    /// A file beside the workflow (a name ending in `.yaml`, `.yml` or
    /// `.json`): read when the workflow is loaded and recorded with its
    /// runs, so a run never depends on the file later.
    File(String),
    /// A workflow registered in the catalog: its latest version when the
    /// step starts.
    Registered(WorkflowId),
}

impl Callee {
    /// A file when `text` ends like one, else a registered id.
    pub fn parse(text: &str) -> Result<Self, crate::id::IdError> {
        let is_file = [".yaml", ".yml", ".json"].iter().any(|ext| text.ends_with(ext));
        if is_file {
            Ok(Callee::File(text.to_owned()))
        } else {
            WorkflowId::new(text).map(Callee::Registered)
        }
    }
}

impl std::fmt::Display for Callee {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Callee::File(file) => f.write_str(file),
            Callee::Registered(id) => write!(f, "{id}"),
        }
    }
}

#[cfg(test)]
mod fence_tests {
    use super::*;

    #[test]
    fn data_leads_an_option_unless_the_author_wrote_its_name() {
        let led = |t: &str| Template(t.into()).option_led_by_data();
        for author in [
            "--quiet",
            "plain",
            "-n{{ n }}",
            "--output={{ p }}",
            "x{{ a }}",
            " {{ a }}",
            "-1{% if a %}x{% endif %}",
        ] {
            assert!(!led(author), "{author} is the author's");
        }
        for data in [
            "{{ a }}",
            "{% if a %}-x{% endif %}",
            "{# c #}--x",
            "-{{ a }}",
            "--{{ a }}",
            "--out{{ a }}",
            "--={{ a }}",
        ] {
            assert!(led(data), "{data} is led by data");
        }
    }

    #[test]
    fn loader_and_path_variables_are_refused_whatever_their_case() {
        for name in [
            "PATH",
            "path",
            "LD_PRELOAD",
            "LD_LIBRARY_PATH",
            "ld_audit",
            "DYLD_INSERT_LIBRARIES",
            "GCONV_PATH",
            "GLIBC_TUNABLES",
            "CAIRN_IDEMPOTENCY_KEY",
        ] {
            assert!(env_name_refused(name), "{name}");
        }
        for name in ["RUST_LOG", "HOME", "PATHS", "MY_PATH", "OLD_X"] {
            assert!(!env_name_refused(name), "{name}");
        }
    }
}
