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
    /// Stored files are damaged in a way no crash leaves: the store reads
    /// nothing past the damage and deletes nothing, so a person can look.
    #[error("{0}")]
    Damaged(Damage),
    /// Another process holds the run's lease (it drives the run), or took
    /// it over from this one: nothing was written.
    #[error("run `{run}` is driven by worker `{worker}`")]
    Leased {
        /// The run.
        run: String,
        /// The worker holding the lease now.
        worker: String,
    },
}

/// Where stored data is damaged and how: typed, so that each front words
/// it and a `doctor` can report it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{file}{}: {what}", offset.map(|o| format!(" at byte {o}")).unwrap_or_default())]
pub struct Damage {
    /// The damaged file, as the store found it.
    pub file: String,
    /// Where in the file the damage starts, when a file offset says it.
    pub offset: Option<u64>,
    /// What is wrong.
    pub what: DamageKind,
}

/// What is wrong with damaged stored data.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DamageKind {
    /// A log record fails its checksum or cannot be read, and is not the
    /// half-written end a crash leaves.
    #[error("a record is damaged")]
    BadRecord,
    /// A whole record that does not follow the one before it.
    #[error("a record is out of order")]
    OutOfOrder,
    /// The file ends inside a record.
    #[error("the file ends inside a record")]
    CutShort,
    /// A log segment lacks its header.
    #[error("the log segment has no header")]
    NoHeader,
    /// A run's stored log ends before what the store recorded of it:
    /// the database was rolled back.
    #[error("run `{run}` holds events up to {found}, but {expected} were recorded")]
    RolledBack {
        /// The run.
        run: String,
        /// The last sequence number recorded elsewhere (index, seal, chain).
        expected: u64,
        /// The last sequence number the database holds.
        found: u64,
    },
    /// A run's stored chunks do not link: one is missing or not the one
    /// that was written.
    #[error("run `{run}`: the log does not link at event {seq}")]
    Broken {
        /// The run.
        run: String,
        /// The sequence number where the link fails.
        seq: u64,
    },
    /// The database itself finds its files damaged (sled checks its own
    /// pages and refuses to open).
    #[error("the database's own files (conf, db, snap.*) are damaged")]
    Database,
    /// The record of what the database held when it was last flushed
    /// fails its checksum or does not read.
    #[error("the seal is damaged")]
    Seal,
}
