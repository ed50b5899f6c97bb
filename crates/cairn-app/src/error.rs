//! Why an operation of the application failed, typed: each front turns
//! these into its own words (the CLI into a message, a hint and an exit
//! code, in one place: `cli::report`).

use std::path::PathBuf;

use cairn_domain::id::{RunId, WorkflowId};
use cairn_domain::problem::Problems;
use cairn_engine::EngineError;
use cairn_ports::StoreError;

impl Error {
    /// `e`, which happened to `run`: a store that failed under the run is
    /// said with the run, so the way back names it.
    pub(crate) fn of_run(run: &RunId) -> impl FnOnce(EngineError) -> Self + '_ {
        move |e| match e {
            EngineError::Store(cause @ (StoreError::Io(_) | StoreError::Corrupt(_))) => {
                Self::Interrupted { run: run.clone(), cause }
            }
            other => Self::Engine(other),
        }
    }
}

/// Why an operation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A definition has problems (each located in the file).
    #[error("{name}: the definition has {} problem(s)", problems.len())]
    Definition {
        /// The file, as given.
        name: String,
        /// What is wrong with it.
        problems: Problems,
    },
    /// A file the request names cannot be read or does not fit.
    #[error("{}: {reason}", path.display())]
    File {
        /// The file.
        path: PathBuf,
        /// What went wrong.
        reason: String,
    },
    /// The config (file, flags or environment) is not usable.
    #[error("{0}")]
    Config(String),
    /// The store cannot be opened.
    #[error("{0}")]
    Store(String),
    /// The store failed under a run: what was committed before is kept.
    #[error("{cause}")]
    Interrupted {
        /// The run.
        run: RunId,
        /// What the store said.
        cause: StoreError,
    },
    /// The engine refused or failed.
    #[error(transparent)]
    Engine(#[from] EngineError),
    /// An API token was refused or cannot be made or found.
    #[error(transparent)]
    Token(#[from] TokenError),
    /// The workflow catalog refused, or lacks what was asked.
    #[error(transparent)]
    Catalog(#[from] CatalogError),
    /// A search was asked for no words.
    #[error("nothing to search for: give one or more words")]
    BlankSearch,
    /// The search index failed.
    #[error(transparent)]
    Index(#[from] cairn_ports::SearchError),
    /// A run's record cannot be imported.
    #[error(transparent)]
    Import(#[from] ImportError),
    /// A webhook delivery was refused.
    #[error(transparent)]
    Hook(#[from] HookError),
    /// A caller may not make the decision it asked for at a gate.
    #[error("`{caller}` ({role}) may not decide: {denied}")]
    Denied {
        /// The caller's name.
        caller: String,
        /// Its role.
        role: cairn_domain::access::Role,
        /// Why not.
        denied: cairn_domain::access::Denied,
    },
    /// An idempotency key that started a run came again with another
    /// definition or other inputs.
    #[error("the idempotency key of run `{run}` came again with another definition or other inputs")]
    KeyReused {
        /// The run the key started.
        run: RunId,
    },
    /// A server refused a request in a way no typed error here says (its
    /// problem document's `code` and `detail`).
    #[error("{detail}")]
    Server {
        /// The HTTP status.
        status: u16,
        /// The problem's stable code (`unauthorized`, `forbidden`, ...).
        code: String,
        /// What the server said.
        detail: String,
    },
}

/// Why an API token operation was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TokenError {
    /// No token has the secret presented.
    #[error("no token has the secret presented")]
    Unknown,
    /// The token presented has expired.
    #[error("token `{0}` has expired")]
    Expired(String),
    /// A token with this name exists already.
    #[error("a token `{0}` exists already")]
    NameTaken(String),
    /// No token has this name.
    #[error("no token `{0}`")]
    NoSuchToken(String),
    /// The name is not one a token may have.
    #[error("`{0}` is not a token name: {rule}", rule = cairn_domain::id::SLUG_RULE)]
    BadName(String),
}

/// Why the catalog refused, or lacks what was asked.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CatalogError {
    /// No version of this workflow is registered.
    #[error("no workflow `{0}` is registered")]
    UnknownWorkflow(WorkflowId),
    /// The workflow has no such version.
    #[error("workflow `{workflow}` has no version `{version}`")]
    UnknownVersion {
        /// The workflow.
        workflow: WorkflowId,
        /// The version asked for.
        version: String,
    },
    /// A sub-workflow names a workflow that is not registered.
    #[error("`{caller}` runs the workflow `{callee}`, which is not registered")]
    UnknownCallee {
        /// The workflow whose step names it.
        caller: WorkflowId,
        /// The id it names.
        callee: WorkflowId,
    },
    /// Sub-workflows, followed through the catalog, come back to a
    /// workflow on the way: it would run itself.
    #[error("{}: a workflow may not run itself, directly or through others", chain.iter().map(|w| format!("`{w}`")).collect::<Vec<_>>().join(" → "))]
    Recursion {
        /// The workflows on the way, the first again at the end.
        chain: Vec<WorkflowId>,
    },
    /// The definition names a version the workflow has with other text.
    #[error("workflow `{workflow}` has a version `{version}` with other text")]
    VersionTaken {
        /// The workflow.
        workflow: WorkflowId,
        /// The version named.
        version: String,
    },
}

/// Why a webhook delivery (`POST /api/v1/hooks/{workflow}`) starts no run.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum HookError {
    /// The workflow's latest version takes no webhook (`on.webhook`).
    #[error("workflow `{0}` takes no webhook: its latest version has no `on: {{ webhook: true }}`")]
    NotTaken(WorkflowId),
    /// The config gives the workflow's webhook no key.
    #[error("no key signs the webhook of `{workflow}`{}", env.as_ref().map(|e| format!(": `{e}` is not set")).unwrap_or_else(|| format!(": the config has no `[hooks.{workflow}]`")))]
    NoKey {
        /// The workflow.
        workflow: WorkflowId,
        /// The variable the config names, when it does.
        env: Option<String>,
    },
    /// The signature is missing, malformed, or not the body's.
    #[error(
        "the delivery's signature is missing or wrong: sign the body with HMAC-SHA256 and send `X-Cairn-Signature: sha256=HEX`"
    )]
    BadSignature,
    /// The delivery has no id to tell a replay by.
    #[error(
        "the delivery has no id: send `X-Cairn-Delivery` (1 to 200 visible characters), the same for a replay"
    )]
    NoDelivery,
}

/// Why a record cannot be imported.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, serde::Serialize, serde::Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
#[non_exhaustive]
pub enum ImportError {
    /// The record's form is a later one than this binary reads.
    #[error(
        "the record's form is version {found}, newer than the {known} this binary reads: import with a newer cairn"
    )]
    Format {
        /// The record's.
        found: u32,
        /// This binary's.
        known: u32,
    },
    /// The log is not a run's log.
    #[error("run `{run}`: {reason}")]
    Log {
        /// The run.
        run: RunId,
        /// What is wrong with it.
        reason: String,
    },
    /// The store holds another run under this id.
    #[error("run `{run}` exists in this store with another log: nothing was imported over it")]
    Differs {
        /// The run.
        run: RunId,
    },
}
