//! The ports of cairn: the traits the engine needs from the outside world,
//! each documented as a contract, with the error types that cross them.
//!
//! What it is: the seam between the engine and adapters. An adapter author
//! on another team compiles this crate and `cairn-domain`, never the engine.
//!
//! What it deliberately does not do: implement anything against a real
//! technology (that is each adapter crate's job), or decide policy (retries
//! are decided in the engine from the error class a port returns).
//!
//! May depend on: `cairn-domain`, and small trait-support crates
//! (async-trait, thiserror, serde; mockall behind the `test-util` feature;
//! sha2 and getrandom for token secrets). Never on the engine, an adapter
//! or the app.
//!
//! Read first: [`RunStore`], [`LlmProvider`], [`CommandRunner`], [`Clock`],
//! [`EventSink`], [`StepHandler`], [`TokenStore`], [`WorkflowStore`], [`SearchIndex`], [`Leases`], and [`PortError`].

mod error;
mod lease;
mod llm;
mod search;
mod secrets;
mod store;
mod tokens;
mod tools;
mod workflows;

use std::time::Duration;

use async_trait::async_trait;
use cairn_domain::id::RunId;
use cairn_domain::state::{Event, StepPath, Timestamp};
use serde_json::Value;

pub use error::{Damage, DamageKind, PortError, StoreError};
pub use lease::{Answer, Ask, Claim, Lease, Leases, Notice, OnNotice};
pub use llm::{
    ChatMessage, ChatRequest, ChatResponse, LlmProvider, ResponseFormat, Role, TokenSink, ToolCall, ToolSpec,
    Usage,
};
pub use search::{
    DocKind, Fragment, IndexMark, SearchDoc, SearchError, SearchHit, SearchIndex, SearchQuery, TextField,
};
pub use secrets::{MIN_SECRET_LEN, REDACTED, Secrets, StreamRedactor};
pub use store::{
    Cursor, CursorError, Launched, NewRun, RunFigures, RunPage, RunQuery, RunStore, RunSummary, Snapshot,
    StoredRun, follows, tally_usage,
};
pub use tokens::{SECRET_PREFIX, TokenRecord, TokenStore, hash_secret, new_secret, random_word};
pub use tools::{ContextFile, ToolChoice, ToolError, ToolInvocation, Tools};
pub use workflows::{RegisterError, Registered, WorkflowStore, WorkflowVersion, place};

#[cfg(feature = "test-util")]
pub use lease::MockLeases;
#[cfg(feature = "test-util")]
pub use llm::MockLlmProvider;
#[cfg(feature = "test-util")]
pub use store::MockRunStore;
#[cfg(feature = "test-util")]
pub use tokens::MockTokenStore;
#[cfg(feature = "test-util")]
pub use tools::MockTools;
#[cfg(feature = "test-util")]
pub use workflows::MockWorkflowStore;

/// A program to run: argv (never a shell), working directory, environment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommandSpec {
    /// The program, as written (a bare name or an absolute path).
    pub program: String,
    /// Its arguments, each passed as one argument, never split or expanded.
    pub args: Vec<String>,
    /// The working directory, as written; the runner resolves and checks it.
    pub cwd: Option<String>,
    /// The step's variables; the runner adds only a minimal safe set.
    pub env: Vec<(String, String)>,
    /// Standard input.
    pub stdin: Option<String>,
    /// The attempt's idempotency key, exported as `CAIRN_IDEMPOTENCY_KEY`.
    pub idempotency_key: String,
    /// Indices into `args` of the arguments whose start came from run data
    /// (see `Template::option_led_by_data`): the runner refuses any of them
    /// that starts with `-`, unless `allow_option_args`, so data never picks
    /// an option of the program.
    pub data_led: Vec<usize>,
    /// The step lets arguments led by data start with `-`.
    pub allow_option_args: bool,
    /// Every argument, read as a path from the working directory, must
    /// resolve inside the runner's roots.
    pub confine_paths: bool,
}

/// What a finished program produced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommandOutput {
    /// Its exit code (`-1` when a signal ended it).
    pub exit_code: i32,
    /// Standard output, cut at the runner's bound.
    pub stdout: String,
    /// Standard error, cut at the runner's bound.
    pub stderr: String,
}

/// Runs command steps.
///
/// Contract: the runner enforces its fence before starting anything: a
/// program not on its allowlist, a working directory that does not resolve
/// (symlinks included) inside its roots, or a Windows batch file is refused
/// with class `permission`, and so are a spec variable that changes how the
/// program is found or loaded (`PATH`, `LD_*`), an argument in `data_led`
/// that starts with `-` (unless `allow_option_args`) and, with
/// `confine_paths`, an argument that read as a path lands outside the roots.
/// The environment is cleared except the spec's variables, `PATH`, `HOME`,
/// `LANG` and `CAIRN_IDEMPOTENCY_KEY`. Output is bounded. A program that
/// exits non-zero is `Ok` with that exit code: the engine decides what it
/// means. When the program ends, and when the returned future is dropped,
/// every process it started is killed, also those that left its process
/// group.
#[cfg_attr(feature = "test-util", mockall::automock)]
#[async_trait]
pub trait CommandRunner: Send + Sync {
    /// Runs the program to completion.
    async fn run(&self, spec: CommandSpec) -> Result<CommandOutput, PortError>;
}

/// Time, so that everything time-dependent can run on a fake clock in tests.
///
/// Contract: `now` never goes backwards; `sleep` returns once `now` has
/// advanced by at least `duration`.
#[async_trait]
pub trait Clock: Send + Sync {
    /// The current time.
    fn now(&self) -> Timestamp;
    /// Waits until `duration` has passed.
    async fn sleep(&self, duration: Duration);
}

/// Live events to watchers (a terminal, later a server's subscribers).
///
/// Contract: called after each event is durably recorded, in order, from the
/// task that drives the run; must not block. Also receives live-only
/// messages ([`LiveEvent::Note`]) that are never persisted.
pub trait EventSink: Send + Sync {
    /// One event of one run.
    fn emit(&self, run: &RunId, event: &LiveEvent<'_>);

    /// The events one append recorded, in order: by default one
    /// [`LiveEvent::Recorded`] each; a sink that writes to a file or a
    /// terminal can write them at once.
    fn recorded(&self, run: &RunId, events: &[Event]) {
        for event in events {
            self.emit(run, &LiveEvent::Recorded(event));
        }
    }
}

/// What an [`EventSink`] receives.
#[derive(Debug, Clone, Copy)]
pub enum LiveEvent<'a> {
    /// A recorded event.
    Recorded(&'a Event),
    /// Text of a step's answer as the model streams it (never persisted:
    /// the finished text is recorded once, with the step's outcome).
    Token {
        /// The step.
        path: &'a StepPath,
        /// The attempt the text belongs to, from 1: a retry streams its
        /// answer anew, and a watcher tells the two apart by it.
        attempt: u32,
        /// The next piece of text, cleaned of the host's secrets.
        text: &'a str,
    },
    /// A live-only message about a step (never persisted).
    Note {
        /// The step.
        path: &'a StepPath,
        /// The message.
        text: &'a str,
    },
}

/// An [`EventSink`] that drops everything.
pub struct NoSink;

impl EventSink for NoSink {
    fn emit(&self, _: &RunId, _: &LiveEvent<'_>) {}
}

/// One call of a host-registered step handler (a `uses:` step).
#[derive(Debug, Clone, PartialEq)]
pub struct HandlerCall {
    /// The run.
    pub run_id: RunId,
    /// The step.
    pub path: StepPath,
    /// The attempt's idempotency key.
    pub idempotency_key: String,
    /// The step's `with`, rendered.
    pub with: Value,
}

/// The `uses:` extension point: host binaries register handlers by name.
///
/// Contract: returns the step's output, or an error whose class says whether
/// a retry may help. May be called again with the same idempotency key after
/// a crash.
#[cfg_attr(feature = "test-util", mockall::automock)]
#[async_trait]
pub trait StepHandler: Send + Sync {
    /// Runs the handler once.
    async fn call(&self, call: HandlerCall) -> Result<Value, PortError>;
}
