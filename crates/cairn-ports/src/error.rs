//! Errors that cross ports.

use std::time::Duration;

use cairn_domain::event::Cause;
use cairn_domain::state::{ErrorClass, StepError};

/// An error from an adapter, classed so the engine alone decides retries.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{class}: {message}")]
pub struct PortError {
    /// Whether and how a retry may help.
    pub class: ErrorClass,
    /// What happened. Never contains a secret.
    pub message: String,
    /// What a person can do about it, in words that name no host setting.
    pub hint: Option<String>,
    /// What failed, typed, when the way out is a host setting the front
    /// names (a program to allow, a model, a key, a timeout).
    pub cause: Option<Cause>,
    /// The least time to wait before trying again (`Retry-After`).
    pub retry_after: Option<Duration>,
}

impl PortError {
    /// An error of `class` with no hint.
    pub fn new(class: ErrorClass, message: impl Into<String>) -> Self {
        Self { class, message: message.into(), hint: None, cause: None, retry_after: None }
    }

    /// This error with its typed cause.
    pub fn with_cause(mut self, cause: Cause) -> Self {
        self.cause = Some(cause);
        self
    }

    /// This error with a recovery hint.
    pub fn with_hint(mut self, hint: impl Into<String>) -> Self {
        self.hint = Some(hint.into());
        self
    }

    /// The error as a step records it.
    pub fn to_step_error(&self) -> StepError {
        StepError {
            class: self.class,
            message: self.message.clone(),
            hint: self.hint.clone(),
            cause: self.cause.clone(),
        }
    }
}

/// Why a [`crate::RunStore`] operation failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// No run has this id.
    #[error("no run `{0}`")]
    NotFound(String),
    /// A run with this id exists already.
    #[error("a run `{0}` exists already")]
    AlreadyExists(String),
    /// Another writer appended first: the log's last sequence number is not
    /// the one expected.
    #[error("run `{run}` is at event {actual}, not {expected}: another process drives it")]
    Conflict {
        /// The run.
        run: String,
        /// The sequence number the caller expected.
        expected: u64,
        /// The log's actual last sequence number.
        actual: u64,
    },
    /// The stored data cannot be read.
    #[error("the store is damaged: {0}")]
    Corrupt(String),
    /// The storage itself failed.
    #[error("the store failed: {0}")]
    Io(String),
}
