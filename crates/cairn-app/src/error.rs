//! Why an operation of the application failed, typed: each front turns
//! these into its own words (the CLI into a message, a hint and an exit
//! code, in one place: `cli::report`).

use std::path::PathBuf;

use cairn_domain::id::RunId;
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
}
