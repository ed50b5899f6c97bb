//! The operations a front calls, as a trait: the [`App`] of this process
//! over its own store, or a client of a server that holds the store
//! (`cairn serve`), answer them alike, with the same typed values and
//! errors, so the command line prints the same either way.

use async_trait::async_trait;
use cairn_domain::Definition;
use cairn_domain::access::Role;
use cairn_domain::checkpoint::Checkpoint;
use cairn_domain::duration::Duration;
use cairn_domain::id::{RunId, WorkflowId};
use cairn_domain::state::{Event, Launch, Timestamp};
use cairn_domain::steer::{GateCall, Request};
use cairn_ports::{Registered, RunQuery, RunSummary, SearchQuery, TokenRecord, WorkflowVersion};
use serde_json::Value;

use crate::app::{App, Listing, NewToken, Run};
use crate::catalog::Entry;
use crate::error::Error;
use crate::search::Found;
use crate::stats::{Report, StatsQuery};
use crate::transfer::{Exported, Imported};

/// What a front asks of runs and tokens. See [`App`] for what each does;
/// a remote implementation does the same through the server's API.
#[async_trait]
pub trait Operations: Send + Sync {
    /// Creates a run, not yet driven, asked for by `by` ([`App::start_by`];
    /// a server records its caller instead).
    async fn start(
        &self,
        definition: Definition,
        inputs: Value,
        run_id: Option<RunId>,
        by: &str,
        launch: Launch,
    ) -> Result<Run, Error>;
    /// Drives a run on until nothing moves without a person ([`App::drive`]);
    /// through a server, the server drives it and this waits.
    async fn drive(&self, id: &RunId) -> Result<Run, Error>;
    /// One run as it stands.
    async fn status(&self, id: &RunId) -> Result<Run, Error>;
    /// A page of runs, newest first.
    async fn list(&self, query: &RunQuery) -> Result<Listing, Error>;
    /// The run's whole event log.
    async fn events(&self, id: &RunId) -> Result<Vec<Event>, Error>;
    /// The run's checkpoints, oldest first.
    async fn checkpoints(&self, id: &RunId) -> Result<Vec<Checkpoint>, Error>;
    /// Refuses when driving `id` needs what the driver lacks.
    async fn check(&self, id: &RunId) -> Result<(), Error>;
    /// Records a decision at a gate, made by `by`.
    async fn decide(&self, id: &RunId, call: GateCall, by: &str) -> Result<Run, Error>;
    /// Pauses or cancels a run, as `by`.
    async fn stop(&self, id: &RunId, request: Request, by: &str) -> Result<Run, Error>;
    /// Raises a run's budget, as `by`.
    async fn raise_budget(&self, id: &RunId, budget_usd: f64, by: &str) -> Result<Run, Error>;
    /// A new run from a checkpoint, made by `by`, not driven.
    async fn fork(&self, id: &RunId, seq: u64, by: &str) -> Result<Run, Error>;
    /// Deletes (unless `dry_run`) the ended runs older than `age`.
    async fn prune(&self, age: Duration, dry_run: bool) -> Result<Vec<RunSummary>, Error>;
    /// A run as a record to import elsewhere ([`App::export`]).
    async fn export(&self, id: &RunId) -> Result<Exported, Error>;
    /// Adds a run exported elsewhere ([`App::import`]).
    async fn import(&self, record: Exported) -> Result<Imported, Error>;
    /// Makes an API token.
    async fn create_token(
        &self,
        name: &str,
        role: Role,
        gate_roles: Vec<String>,
        expires: Option<Duration>,
    ) -> Result<NewToken, Error>;
    /// Every API token.
    async fn tokens(&self) -> Result<Vec<TokenRecord>, Error>;
    /// Revokes an API token.
    async fn revoke_token(&self, name: &str) -> Result<(), Error>;
    /// Registers a definition in the workflow catalog, as `by`.
    async fn register(&self, definition: &Definition, by: &str) -> Result<Registered, Error>;
    /// The workflow catalog, with each workflow's figures.
    async fn catalog(&self) -> Result<Vec<Entry>, Error>;
    /// Figures over the stored runs `query` selects.
    async fn stats(&self, query: &StatsQuery) -> Result<Report, Error>;
    /// The workflows and runs matching `query`, best first.
    async fn search(&self, query: &SearchQuery) -> Result<Vec<Found>, Error>;
    /// A registered version of a workflow (its latest when `version` is `None`).
    async fn registered(
        &self,
        workflow: &WorkflowId,
        version: Option<&str>,
    ) -> Result<WorkflowVersion, Error>;
    /// Every registered version of a workflow, oldest first.
    async fn versions(&self, workflow: &WorkflowId) -> Result<Vec<WorkflowVersion>, Error>;
    /// Calls `each` with every event of `id` after `after`, then with each
    /// new one as it is recorded, until the run ends. Where nothing can
    /// move the run (it waits, or nobody drives it), it stops with what is
    /// stored, unless a server drives it: then it waits on.
    async fn follow(
        &self,
        id: &RunId,
        after: u64,
        each: &mut (dyn for<'e> FnMut(&'e Event) + Send),
    ) -> Result<(), Error>;
    /// Whether runs move without this process: a server drives them.
    fn served(&self) -> bool;
    /// Asks whoever drives `id` to pause or cancel it (a signal at the
    /// terminal that drives or waits for it).
    async fn interrupt(&self, id: &RunId, request: Request);
    /// Now, by the clock runs are recorded with.
    fn now(&self) -> Timestamp;
}

#[async_trait]
impl Operations for App {
    async fn start(
        &self,
        definition: Definition,
        inputs: Value,
        run_id: Option<RunId>,
        by: &str,
        launch: Launch,
    ) -> Result<Run, Error> {
        App::start_by(self, definition, inputs, run_id, by, launch).await
    }

    async fn drive(&self, id: &RunId) -> Result<Run, Error> {
        App::drive(self, id).await
    }

    async fn status(&self, id: &RunId) -> Result<Run, Error> {
        App::status(self, id).await
    }

    async fn list(&self, query: &RunQuery) -> Result<Listing, Error> {
        App::list(self, query).await
    }

    async fn events(&self, id: &RunId) -> Result<Vec<Event>, Error> {
        App::events(self, id).await
    }

    async fn checkpoints(&self, id: &RunId) -> Result<Vec<Checkpoint>, Error> {
        App::checkpoints(self, id).await
    }

    async fn check(&self, id: &RunId) -> Result<(), Error> {
        App::check(self, id).await
    }

    async fn decide(&self, id: &RunId, call: GateCall, by: &str) -> Result<Run, Error> {
        App::decide(self, id, call, by).await
    }

    async fn stop(&self, id: &RunId, request: Request, by: &str) -> Result<Run, Error> {
        App::stop(self, id, request, by).await
    }

    async fn raise_budget(&self, id: &RunId, budget_usd: f64, by: &str) -> Result<Run, Error> {
        App::raise_budget(self, id, budget_usd, by).await
    }

    async fn fork(&self, id: &RunId, seq: u64, by: &str) -> Result<Run, Error> {
        App::fork(self, id, seq, by).await
    }

    async fn prune(&self, age: Duration, dry_run: bool) -> Result<Vec<RunSummary>, Error> {
        App::prune(self, age, dry_run).await
    }

    async fn export(&self, id: &RunId) -> Result<Exported, Error> {
        App::export(self, id).await
    }

    async fn import(&self, record: Exported) -> Result<Imported, Error> {
        App::import(self, record).await
    }

    async fn create_token(
        &self,
        name: &str,
        role: Role,
        gate_roles: Vec<String>,
        expires: Option<Duration>,
    ) -> Result<NewToken, Error> {
        App::create_token(self, name, role, gate_roles, expires).await
    }

    async fn tokens(&self) -> Result<Vec<TokenRecord>, Error> {
        App::tokens(self).await
    }

    async fn revoke_token(&self, name: &str) -> Result<(), Error> {
        App::revoke_token(self, name).await
    }

    async fn register(&self, definition: &Definition, by: &str) -> Result<Registered, Error> {
        App::register(self, definition, by).await
    }

    async fn catalog(&self) -> Result<Vec<Entry>, Error> {
        App::catalog(self).await
    }

    async fn stats(&self, query: &StatsQuery) -> Result<Report, Error> {
        App::run_stats(self, query).await
    }

    async fn search(&self, query: &SearchQuery) -> Result<Vec<Found>, Error> {
        App::search(self, query).await
    }

    async fn registered(
        &self,
        workflow: &WorkflowId,
        version: Option<&str>,
    ) -> Result<WorkflowVersion, Error> {
        App::registered(self, workflow, version).await
    }

    async fn versions(&self, workflow: &WorkflowId) -> Result<Vec<WorkflowVersion>, Error> {
        App::versions(self, workflow).await
    }

    async fn follow(
        &self,
        id: &RunId,
        after: u64,
        each: &mut (dyn for<'e> FnMut(&'e Event) + Send),
    ) -> Result<(), Error> {
        use futures_util::StreamExt as _;
        // Only what this process drives moves while it holds the store.
        if !self.engine().drives(id) {
            let (events, _) = self.events_after(id, after, usize::MAX).await?;
            events.iter().for_each(&mut *each);
            return Ok(());
        }
        let stream = crate::follow::follow(self.store().clone(), self.hub(), id.clone(), after);
        futures_util::pin_mut!(stream);
        while let Some(item) = stream.next().await {
            match item.map_err(cairn_engine::EngineError::from)? {
                crate::follow::Followed::Event(e) => each(e.event()),
                crate::follow::Followed::End(_) => break,
                crate::follow::Followed::Token { .. } => {}
            }
        }
        Ok(())
    }

    fn served(&self) -> bool {
        false
    }

    async fn interrupt(&self, id: &RunId, request: Request) {
        self.control(id).ask(request, None);
    }

    fn now(&self) -> Timestamp {
        App::now(self)
    }
}

/// Where a server is and how to speak to it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// Its base URL (`http://127.0.0.1:7770`).
    pub url: String,
    /// The bearer token to present, if any.
    pub token: Option<String>,
    /// The user to act as, sent only with the local key of a server of
    /// the same data directory (a token's own name is its actor).
    pub actor: Option<String>,
}

/// Connects to a server: a binary plugs in its HTTP client, which lives in
/// a crate of its own (an outbound adapter over this library).
pub trait Connect: Send + Sync {
    /// The operations of the server at `target`; what the server streams
    /// of the runs this process waits for goes to `sink` (progress).
    fn connect(
        &self,
        target: Target,
        sink: std::sync::Arc<dyn cairn_ports::EventSink>,
    ) -> Result<std::sync::Arc<dyn Operations>, Error>;
}
