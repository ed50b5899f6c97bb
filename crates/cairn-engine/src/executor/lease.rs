//! Holding a run's lease while this engine drives or steers it, when runs
//! are shared by many processes ([`cairn_ports::Leases`]): claimed first,
//! renewed by a heartbeat, let go after with when the run next needs a
//! driver. Without leases (one process owns the store), nothing is held.

use std::sync::Arc;

use cairn_domain::id::RunId;
use cairn_domain::state::{RunState, Timestamp};
use cairn_ports::{Claim, Lease, Leases, StoreError};

use super::Engine;
use crate::EngineError;
use crate::control::RunControl;

/// A lease this engine holds, and the heartbeat renewing it.
pub(super) struct Held {
    lease: Lease,
    heartbeat: tokio::task::JoinHandle<()>,
}

impl Engine {
    /// Claims `run`'s lease when runs are shared (`None` when they are
    /// not); refused with [`StoreError::Leased`] when another process
    /// holds it. A heartbeat renews it every third of its term; a lease
    /// lost (another process took the run over) interrupts this engine's
    /// drive of the run, whose writes are refused from then on anyway.
    pub(super) async fn hold(&self, run: &RunId) -> Result<Option<Held>, EngineError> {
        let Some(leases) = &self.leases else { return Ok(None) };
        let lease = match leases.claim(run).await? {
            Claim::Held(lease) => lease,
            Claim::Taken { worker } => return Err(StoreError::Leased { run: run.to_string(), worker }.into()),
        };
        let heartbeat = tokio::spawn(heartbeat(Arc::clone(leases), lease.clone(), self.control(run)));
        Ok(Some(Held { lease, heartbeat }))
    }

    /// Lets go of `held`: the run next needs a driver at `wake_at`.
    pub(super) async fn let_go(&self, held: Option<Held>, wake_at: Option<Timestamp>) {
        let (Some(leases), Some(held)) = (&self.leases, held) else { return };
        held.heartbeat.abort();
        if let Err(e) = leases.release(&held.lease, wake_at).await {
            // The lease then ends with its term, and another worker goes on.
            tracing::warn!(run = %held.lease.run, error = %e, "a run's lease could not be let go");
        }
    }

    /// When a run whose drive or request ended as `outcome` next needs a
    /// driver: as its state says ([`cairn_domain::steer::next_wake`]); after a
    /// failure, once a lease's term has passed (another worker may fare
    /// better, and one that keeps failing is not retried in a loop).
    pub(super) fn wake_after(
        &self,
        outcome: &Result<RunState, EngineError>,
        workflow: &cairn_domain::definition::Workflow,
    ) -> Option<Timestamp> {
        let now = self.clock.now();
        match outcome {
            Ok(state) => cairn_domain::steer::next_wake(state, workflow, now),
            Err(EngineError::Refused { .. } | EngineError::Unmet { .. }) => None,
            Err(_) => Some(self.later(now)),
        }
    }

    /// A lease's term after `now`: when a run whose driver was expected to
    /// go on with it is anyone's, should that driver have gone away.
    pub(super) fn later(&self, now: Timestamp) -> Timestamp {
        let term =
            self.leases.as_ref().map_or(0, |l| u64::try_from(l.term().as_millis()).unwrap_or(u64::MAX));
        Timestamp(now.0.saturating_add(term))
    }
}

/// Renews `lease` every third of its term until aborted; interrupts the
/// run's drive once the lease is lost, or could not be renewed for a
/// whole term (the database is away: another worker may take over).
async fn heartbeat(leases: Arc<dyn Leases>, lease: Lease, control: RunControl) {
    let every = leases.term() / 3;
    let mut failing_since: Option<tokio::time::Instant> = None;
    loop {
        tokio::time::sleep(every).await;
        match leases.renew(std::slice::from_ref(&lease)).await {
            Ok(lost) if lost.is_empty() => failing_since = None,
            Ok(_) => {
                tracing::warn!(run = %lease.run, "the run's lease was taken over: its drive here stops");
                control.interrupt();
                return;
            }
            Err(e) => {
                let since = *failing_since.get_or_insert_with(tokio::time::Instant::now);
                tracing::warn!(run = %lease.run, error = %e, "the run's lease could not be renewed");
                if since.elapsed() >= leases.term() {
                    control.interrupt();
                    return;
                }
            }
        }
    }
}
