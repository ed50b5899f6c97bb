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

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use cairn_domain::Definition;
    use cairn_domain::state::RunStatus;
    use cairn_domain::steer::{GateCall, Refusal, Verdict};
    use cairn_engine::{EngineBuilder, MemoryStore};
    use cairn_ports::{Claim, Lease, MockLeases, NoSink};
    use serde_json::json;

    use super::*;
    use crate::app::Parts;
    use crate::follow::Hub;

    const GATE: &str = "cairn: 1\nid: gate\nsteps:\n  - id: go\n    approval: { message: Go? }\n  - id: after\n    set: done\n";

    fn app(store: &Arc<MemoryStore>, leases: Option<Arc<dyn cairn_ports::Leases>>) -> App {
        let mut engine = EngineBuilder::new(store.clone()).sink(Arc::new(NoSink));
        if let Some(leases) = &leases {
            engine = engine.leases(Arc::clone(leases));
        }
        let parts = Parts {
            store: store.clone(),
            tokens: store.clone(),
            workflows: store.clone(),
            clock: Arc::new(cairn_engine::SystemClock),
            prices: Default::default(),
            secrets: Default::default(),
            hub: Arc::new(Hub::new()),
            meter: crate::meter::Meter::new(),
            search: Arc::new(cairn_search_tantivy::TantivyIndex::in_memory()),
        };
        App::new(engine.build(), parts).with_leases(leases)
    }

    /// A run waiting at its gate, made without leases.
    async fn waiting(store: &Arc<MemoryStore>) -> RunId {
        let plain = app(store, None);
        let definition = Definition::from_recorded("gate.yaml", GATE, &Default::default()).expect("valid");
        let run = plain.start(definition, json!({}), None).await.expect("starts").state.run_id;
        assert_eq!(plain.drive(&run).await.expect("drives").state.status, RunStatus::WaitingApproval);
        run
    }

    fn approve() -> GateCall {
        GateCall { gate: None, verdict: Verdict::Approve, role: None, comment: None }
    }

    #[tokio::test(start_paused = true)]
    async fn a_request_for_a_run_another_worker_drives_is_handed_to_it_and_its_refusal_comes_back() {
        let store = Arc::new(MemoryStore::new());
        let run = waiting(&store).await;
        let mut leases = MockLeases::new();
        leases.expect_claim().returning(|_| Ok(Claim::Taken { worker: "w2".into() }));
        leases
            .expect_ask()
            .withf(|_, worker, ask| worker == "w2" && matches!(ask, Ask::Decide { by, .. } if by == "alice"))
            .times(1)
            .returning(|_, _, _| Ok(7));
        let refusal = Refusal::NothingWaits { status: RunStatus::Running, answer: false };
        let answered = refusal.clone();
        leases.expect_answer_of().returning(move |_| Ok(Some(Answer::Refused { refusal: answered.clone() })));
        leases.expect_holder().returning(|_| Ok(Some("w2".into())));
        let app = app(&store, Some(Arc::new(leases)));
        let refused = app.decide(&run, approve(), "alice").await.map(|_| ()).expect_err("refused there");
        assert!(
            matches!(&refused, Error::Engine(EngineError::Refused { refusal: r, .. }) if *r == refusal),
            "{refused:?}"
        );
        assert_eq!(app.status(&run).await.expect("reads").state.status, RunStatus::WaitingApproval);
    }

    #[tokio::test(start_paused = true)]
    async fn a_request_whose_worker_lets_go_first_is_taken_back_and_recorded_here() {
        let store = Arc::new(MemoryStore::new());
        let run = waiting(&store).await;
        let mut leases = MockLeases::new();
        let claims = AtomicUsize::new(0);
        let id = run.clone();
        leases.expect_claim().returning(move |_| {
            Ok(match claims.fetch_add(1, Ordering::SeqCst) {
                0 => Claim::Taken { worker: "w2".into() },
                _ => Claim::Held(Lease { run: id.clone(), token: 2 }),
            })
        });
        leases.expect_term().return_const(std::time::Duration::from_secs(10));
        leases.expect_ask().times(1).returning(|_, _, _| Ok(7));
        leases.expect_answer_of().returning(|_| Ok(None));
        // w2 let go of the run before it answered: the request is taken back.
        leases.expect_holder().returning(|_| Ok(None));
        leases.expect_withdraw().times(1).returning(|_| Ok(true));
        leases.expect_release().times(1).returning(|_, _| Ok(()));
        let app = app(&store, Some(Arc::new(leases)));
        let decided = app.decide(&run, approve(), "alice").await.expect("recorded here");
        let gate = &decided.state.steps[&cairn_domain::state::StepPath::new("go")];
        let by: Vec<&str> = gate.decisions.iter().map(|d| d.by.as_str()).collect();
        assert_eq!(by, ["alice"], "recorded under this process's own lease");
    }
}
