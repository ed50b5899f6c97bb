//! Errors of the engine itself (not of steps: those are events), typed:
//! each front says them in its own words.

use cairn_domain::id::RunId;
use cairn_domain::problem::Problems;
use cairn_domain::steer::Refusal;
use cairn_ports::StoreError;

/// Why the engine could not start or drive a run, or record a request.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum EngineError {
    /// The store failed or refused (another process drives the run, ...).
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The run's inputs do not fit the workflow's declared inputs: one
    /// sentence per problem.
    #[error("{}", .0.join("; "))]
    Inputs(Vec<String>),
    /// The labels given at start, with the definition's, are not a run's
    /// labels (too many of them).
    #[error(transparent)]
    Labels(cairn_domain::label::LabelError),
    /// The log cannot be folded: it breaks the run state machine.
    #[error("run log is inconsistent: {0}")]
    Log(#[from] cairn_domain::state::ApplyError),
    /// The definition a run recorded no longer loads (a format this engine
    /// no longer reads).
    #[error("the definition recorded with run `{run}` no longer loads: {problems}")]
    Definition {
        /// The run.
        run: RunId,
        /// What is wrong with it.
        problems: Problems,
    },
    /// The workflow cannot be run (a dependency cycle slipped through).
    #[error("{0}")]
    Program(String),
    /// A request that does not fit the run: a decision at no gate, a role
    /// the gate does not list, a run that has ended, a missing checkpoint.
    #[error("run `{run}`: {refusal}")]
    Refused {
        /// The run.
        run: RunId,
        /// Why.
        refusal: Refusal,
    },
    /// This engine lacks what the workflow needs (a provider, a handler):
    /// refused before anything was recorded.
    #[error("{}needs what this engine lacks: {}", run.as_ref().map(|r| format!("run `{r}` ")).unwrap_or_default(), unmet.iter().map(ToString::to_string).collect::<Vec<_>>().join(", "))]
    Unmet {
        /// The run, when it exists already.
        run: Option<RunId>,
        /// Everything missing.
        unmet: Vec<Unmet>,
    },
}

/// One thing a workflow needs that an engine lacks.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, serde::Serialize, serde::Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
#[non_exhaustive]
pub enum Unmet {
    /// No provider under the name an agent uses.
    #[error("provider `{provider}` of agent `{agent}`")]
    Provider {
        /// The agent.
        agent: String,
        /// The provider it names.
        provider: String,
    },
    /// No handler under the name a `uses:` step names.
    #[error("handler `{handler}`")]
    Handler {
        /// The handler.
        handler: String,
    },
}
