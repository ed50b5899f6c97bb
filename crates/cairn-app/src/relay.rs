//! Requests for a run another process drives (workers sharing one
//! database): the request is handed to the process holding the run's
//! lease, which records it as its own ([`crate::Service::request`]), and
//! its answer comes back. A run nobody drives is steered here, under a
//! lease of this process's own.

use std::time::Duration;

use cairn_domain::id::RunId;
use cairn_domain::state::RunState;
use cairn_engine::EngineError;
use cairn_ports::{Answer, Ask, StoreError};

use crate::app::{App, Run};
use crate::error::Error;

/// How often an asker looks for the answer.
const ANSWER_POLL: Duration = Duration::from_millis(50);

/// How long an asker waits for the holder's answer.
const ANSWER_WAIT: Duration = Duration::from_secs(30);

/// How many times a request is tried, here or handed on, while the run's
/// lease changes hands.
const TRIES: usize = 5;

impl App {
    /// Runs `here` (records the request in this process); when another
    /// process drives the run, hands `ask` to it instead and answers what
    /// it answered.
    pub(crate) async fn handed<F, Fut>(&self, id: &RunId, ask: &Ask, here: F) -> Result<Run, Error>
    where
        F: Fn() -> Fut,
        Fut: std::future::Future<Output = Result<RunState, EngineError>>,
    {
        for _ in 0..TRIES {
            match here().await {
                Err(EngineError::Store(StoreError::Leased { worker, .. })) => {
                    if let Some(answer) = self.relay(id, &worker, ask).await? {
                        return self.answered(id, answer).await;
                    }
                }
                done => return self.with_definition(done.map_err(Error::of_run(id))?).await,
            }
        }
        Err(Error::Engine(EngineError::Store(StoreError::Io(format!(
            "the lease on run `{id}` kept changing hands: try again"
        )))))
    }

    /// Hands `ask` to `worker`, which holds `run`'s lease, and waits for
    /// its answer; `None` when the worker let go of the run first (then
    /// the run may be anyone's: ask again).
    async fn relay(&self, run: &RunId, worker: &str, ask: &Ask) -> Result<Option<Answer>, Error> {
        let store = |e: StoreError| Error::Engine(EngineError::Store(e));
        let Some(leases) = self.leases() else {
            return Err(store(StoreError::Leased { run: run.to_string(), worker: worker.to_owned() }));
        };
        let id = leases.ask(run, worker, ask).await.map_err(store)?;
        let asked = tokio::time::Instant::now();
        loop {
            tokio::time::sleep(ANSWER_POLL).await;
            if let Some(answer) = leases.answer_of(id).await.map_err(store)? {
                return Ok(Some(answer));
            }
            let held = leases.holder(run).await.map_err(store)?.as_deref() == Some(worker);
            let late = asked.elapsed() >= ANSWER_WAIT;
            // Taken back unless answered meanwhile (then read next round).
            if (!held || late) && leases.withdraw(id).await.map_err(store)? {
                if held {
                    return Err(store(StoreError::Io(format!(
                        "worker `{worker}`, which drives run `{run}`, did not answer within {} s",
                        ANSWER_WAIT.as_secs()
                    ))));
                }
                return Ok(None);
            }
        }
    }

    /// The run after a request another process answered.
    async fn answered(&self, id: &RunId, answer: Answer) -> Result<Run, Error> {
        match answer {
            Answer::Done => self.status(id).await,
            Answer::Refused { refusal } => {
                Err(Error::Engine(EngineError::Refused { run: id.clone(), refusal }))
            }
            Answer::Failed { reason } => Err(Error::Engine(EngineError::Store(StoreError::Io(reason)))),
        }
    }
}

/// How a request that was handed to this process went, said back to the
/// asker.
pub(crate) fn answer_of(done: &Result<Run, Error>) -> Answer {
    match done {
        Ok(_) => Answer::Done,
        Err(Error::Engine(EngineError::Refused { refusal, .. })) => {
            Answer::Refused { refusal: refusal.clone() }
        }
        Err(e) => Answer::Failed { reason: e.to_string() },
    }
}
