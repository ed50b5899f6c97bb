//! A service's part among the workers sharing one database
//! ([`Service::work`]): it claims the runs that need a driver (left by a
//! worker that died, due at a gate's deadline, woken by a request, queued
//! past another worker's limit), answers the requests other processes
//! hand it for the runs it drives, and streams to its own followers the
//! events other workers commit.
//!
//! Wake-ups come by LISTEN/NOTIFY; each loop also looks on its own every
//! so often, so a notification lost (the listening connection dropped)
//! delays work and never loses it.

use std::sync::Arc;
use std::time::Duration;

use cairn_domain::id::RunId;
use cairn_engine::EngineError;
use cairn_ports::{Ask, EventSink, Leases, Notice, StoreError};

use super::Service;
use crate::app::Run;
use crate::error::Error;

/// How often a worker looks for due runs with no wake-up heard.
const CLAIM_EVERY: Duration = Duration::from_secs(1);

/// The most runs a worker without a limit claims at once.
const CLAIM_BATCH: usize = 16;

/// The first wait after the database failed a claim; doubled up to
/// [`BACKOFF_MAX`].
const BACKOFF: Duration = Duration::from_millis(200);
const BACKOFF_MAX: Duration = Duration::from_secs(5);

impl Service {
    /// Takes part among the workers sharing the store, when it is shared
    /// (else does nothing): hears the others, then claims due runs,
    /// answers requests and relays others' events, in the background
    /// until shutdown. Refused when the database cannot be heard.
    pub async fn work(self: &Arc<Self>) -> Result<(), Error> {
        let Some(leases) = self.app.leases().cloned() else { return Ok(()) };
        let (appended, appends) = tokio::sync::mpsc::unbounded_channel();
        let (wakeup, asked) = (Arc::clone(&self.wakeup), Arc::clone(&self.asked));
        leases
            .listen(Arc::new(move |notice| match notice {
                Notice::Wake => wakeup.notify_one(),
                Notice::Asked => asked.notify_one(),
                Notice::Appended { run, first, .. } => {
                    let _ = appended.send((run, first));
                }
            }))
            .await
            .map_err(|e| Error::Engine(EngineError::Store(e)))?;
        let tasks = [
            tokio::spawn(Arc::clone(self).claimer(Arc::clone(&leases))),
            tokio::spawn(Arc::clone(self).answerer(leases)),
            tokio::spawn(Arc::clone(self).relay_events(appends)),
        ];
        self.lanes().workers.extend(tasks);
        Ok(())
    }

    /// Carries out `ask` on `run` as this process's own request (a front's,
    /// or one another process handed over): a decision or a raised budget
    /// is recorded and the run driven on; a pause or cancel goes to the
    /// run's driver. Returns the run as it stands after.
    pub async fn request(self: &Arc<Self>, run: &RunId, ask: Ask) -> Result<Run, Error> {
        let app = Arc::clone(&self.app);
        let done = match ask {
            Ask::Decide { call, by } => self.steer(run, app.decide(run, call, &by)).await?,
            Ask::RaiseBudget { usd, by } => self.steer(run, app.raise_budget(run, usd, &by)).await?,
            Ask::Stop { request, by } => return self.stop(run, request, &by).await,
        };
        self.drive(run);
        Ok(done)
    }

    /// How many more runs this worker may drive now.
    fn free_lanes(&self) -> usize {
        let lanes = self.lanes();
        if lanes.stopping {
            return 0;
        }
        match self.limit {
            Some(limit) => limit.saturating_sub(lanes.driving.len()),
            None => CLAIM_BATCH,
        }
    }

    async fn claimer(self: Arc<Self>, leases: Arc<dyn Leases>) {
        let mut backoff = BACKOFF;
        loop {
            let free = self.free_lanes();
            if free > 0 {
                match leases.claim_due(free).await {
                    Ok(claimed) => {
                        backoff = BACKOFF;
                        for lease in &claimed {
                            self.drive(&lease.run);
                        }
                        // More may be due than there were lanes.
                        if !claimed.is_empty() && claimed.len() == free {
                            continue;
                        }
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, retry_in = ?backoff, "due runs could not be claimed");
                        tokio::time::sleep(backoff).await;
                        backoff = (backoff * 2).min(BACKOFF_MAX);
                        continue;
                    }
                }
            }
            tokio::select! {
                () = self.wakeup.notified() => {}
                () = tokio::time::sleep(CLAIM_EVERY) => {}
            }
        }
    }

    async fn answerer(self: Arc<Self>, leases: Arc<dyn Leases>) {
        loop {
            tokio::select! {
                () = self.asked.notified() => {}
                () = tokio::time::sleep(leases.term() / 3) => {}
            }
            let asked = match leases.asked().await {
                Ok(asked) => asked,
                Err(e) => {
                    tracing::warn!(error = %e, "requests handed to this worker could not be read");
                    continue;
                }
            };
            for (id, run, ask) in asked {
                if !self.lanes().answering.insert(id) {
                    continue;
                }
                let (this, leases) = (Arc::clone(&self), Arc::clone(&leases));
                tokio::spawn(async move {
                    let done = this.request(&run, ask).await;
                    if let Err(e) = leases.answer(id, &crate::relay::answer_of(&done)).await {
                        tracing::warn!(run = %run, error = %e, "a handed request could not be answered");
                    }
                    this.lanes().answering.remove(&id);
                });
            }
        }
    }

    /// Tells this process's followers what other workers appended (read
    /// from the store: a follower skips what it has, so nothing repeats).
    async fn relay_events(self: Arc<Self>, mut appends: tokio::sync::mpsc::UnboundedReceiver<(RunId, u64)>) {
        while let Some((run, first)) = appends.recv().await {
            if !self.app.hub().followed() {
                continue;
            }
            match self.app.events_after(&run, first.saturating_sub(1), usize::MAX).await {
                Ok((events, _)) => self.app.hub().recorded(&run, &events),
                // Deleted since: nothing to tell.
                Err(Error::Engine(EngineError::Store(StoreError::NotFound(_)))) => {}
                Err(e) => tracing::warn!(run = %run, error = %e, "another worker's events could not be read"),
            }
        }
    }
}
