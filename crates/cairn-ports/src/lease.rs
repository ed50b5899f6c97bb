//! Leases: which process drives a run when many share one store (workers
//! on one database). A process drives a run only while it holds the run's
//! lease; every write it makes under the lease carries the lease's token,
//! so a process that was paused past its lease can never commit over the
//! one that took the run over. Requests for a run another process drives
//! are handed to that process ([`Ask`]).

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use cairn_domain::id::RunId;
use cairn_domain::state::Timestamp;
use cairn_domain::steer::{GateCall, Refusal, Request};

use crate::StoreError;

/// A run held by this process: its token fences the writes made under it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    /// The run.
    pub run: RunId,
    /// Raised by one at each takeover: a write carrying an older one is
    /// refused.
    pub token: u64,
}

/// What claiming one run gave.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Claim {
    /// The lease is this process's (newly, or still).
    Held(Lease),
    /// Another process holds a live lease on the run.
    Taken {
        /// The process holding it.
        worker: String,
    },
}

/// A request for a run, handed to the process that drives it.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Ask {
    /// A person's decision at a gate.
    Decide {
        /// The decision.
        call: GateCall,
        /// Who decided.
        by: String,
    },
    /// A pause or cancel.
    Stop {
        /// Which.
        request: Request,
        /// Who asked.
        by: String,
    },
    /// A raised budget.
    RaiseBudget {
        /// The new budget, in USD.
        usd: f64,
        /// Who raised it.
        by: String,
    },
}

/// How the process driving a run answered an [`Ask`].
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Answer {
    /// Recorded (or, for a pause or cancel, asked of the driver).
    Done,
    /// The request does not fit the run.
    Refused {
        /// Why.
        refusal: Refusal,
    },
    /// It failed otherwise (the store, ...).
    Failed {
        /// What was said.
        reason: String,
    },
}

/// What a process hears from the others sharing the store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Notice {
    /// Runs became due: a worker with a free lane may claim them. Also
    /// sent after the listener reconnected (what it missed is read again).
    Wake,
    /// Requests were asked of this process.
    Asked,
    /// Another process appended events `first..=last` to `run`.
    Appended {
        /// The run.
        run: RunId,
        /// The first event appended.
        first: u64,
        /// The last.
        last: u64,
    },
}

/// Where [`Leases::listen`] delivers what it hears.
pub type OnNotice = Arc<dyn Fn(Notice) + Send + Sync>;

/// Leases on runs in a store many processes share.
#[cfg_attr(feature = "test-util", mockall::automock)]
#[async_trait]
pub trait Leases: Send + Sync {
    /// This process's name among the workers (unique per process).
    fn worker(&self) -> &str;

    /// How long a lease lasts without renewal.
    fn term(&self) -> Duration;

    /// Claims `run` for this process if no other holds a live lease on it
    /// (a lease this process holds is kept, with its token).
    async fn claim(&self, run: &RunId) -> Result<Claim, StoreError>;

    /// Claims up to `limit` runs that need a driver (due now and leased by
    /// nobody alive), highest priority first, the oldest among equals;
    /// runs another process is claiming at the same moment are skipped,
    /// never waited for.
    async fn claim_due(&self, limit: usize) -> Result<Vec<Lease>, StoreError>;

    /// Renews `leases` for another [`Leases::term`]; returns the runs whose
    /// lease this process lost (another took the run over).
    async fn renew(&self, leases: &[Lease]) -> Result<Vec<RunId>, StoreError>;

    /// Lets go of `lease`: the run next needs a driver at `wake_at` (now or
    /// earlier: at once; `None`: only when a request comes).
    async fn release(&self, lease: &Lease, wake_at: Option<Timestamp>) -> Result<(), StoreError>;

    /// Makes `run` due now and wakes the workers.
    async fn wake(&self, run: &RunId) -> Result<(), StoreError>;

    /// The process holding a live lease on `run`, if any.
    async fn holder(&self, run: &RunId) -> Result<Option<String>, StoreError>;

    /// Hands `ask` about `run` to `worker`; returns the request's number.
    async fn ask(&self, run: &RunId, worker: &str, ask: &Ask) -> Result<u64, StoreError>;

    /// The answer to request `id`, once given (read once: the request is
    /// then forgotten).
    async fn answer_of(&self, id: u64) -> Result<Option<Answer>, StoreError>;

    /// Takes back request `id` if it is not answered yet; `false`: it was.
    async fn withdraw(&self, id: u64) -> Result<bool, StoreError>;

    /// The requests asked of this process not answered yet, oldest first.
    async fn asked(&self) -> Result<Vec<(u64, RunId, Ask)>, StoreError>;

    /// Answers request `id`.
    async fn answer(&self, id: u64, answer: &Answer) -> Result<(), StoreError>;

    /// Starts hearing the other processes (in the background, reconnecting
    /// after a failure, with [`Notice::Wake`] once connected again);
    /// returns once listening.
    async fn listen(&self, on_notice: OnNotice) -> Result<(), StoreError>;
}
