//! Errors of the engine itself (not of steps: those are events).

use cairn_ports::StoreError;

/// Why the engine could not start or drive a run.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum EngineError {
    /// The store failed or refused (another process drives the run, ...).
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The run's inputs do not fit the workflow's declared inputs.
    #[error("{0}")]
    Inputs(String),
    /// The log cannot be folded: it breaks the run state machine.
    #[error("run log is inconsistent: {0}")]
    Log(#[from] cairn_domain::state::ApplyError),
    /// The definition cannot be run (a dependency cycle slipped through).
    #[error("{0}")]
    Definition(String),
    /// A fork named a sequence number that is not one of the run's checkpoints.
    #[error("run `{run}` has no checkpoint {seq}")]
    NoCheckpoint {
        /// The run.
        run: String,
        /// The sequence number asked for.
        seq: u64,
        /// The run's last checkpoint, if it has any.
        last: Option<u64>,
    },
    /// A decision or answer that does not fit the run: no such gate, a role
    /// the gate does not list, a run not waiting there.
    #[error("{0}")]
    Refused(String),
    /// A decision came after the gate's deadline: its `on_timeout` applies
    /// instead, when the run is next driven.
    #[error("the deadline of `{gate}` has passed: its `on_timeout` applies instead of this decision")]
    DeadlinePassed {
        /// The gate's step.
        gate: String,
        /// The deadline.
        at: cairn_domain::state::Timestamp,
    },
    /// The run has ended; there is nothing to resume.
    #[error("run `{run}` is {status:?}: it has ended and cannot be resumed (fork it to run it again)")]
    Finished {
        /// The run.
        run: String,
        /// Its final status.
        status: cairn_domain::state::RunStatus,
    },
}
