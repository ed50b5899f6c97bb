//! The application layer: the operations every front calls (the CLI today,
//! the HTTP server next), each on one run by id, returning typed values and
//! typed errors. A front adds transport and words, never rules: it prints
//! or serializes what these return ([`crate::view`]) and turns an
//! [`Error`] into its own words.

use std::collections::BTreeMap;
use std::sync::Arc;

use cairn_domain::Definition;
use cairn_domain::access::Role;
use cairn_domain::checkpoint::Checkpoint;
use cairn_domain::duration::Duration;
use cairn_domain::id::RunId;
use cairn_domain::program::{Price, priced};
use cairn_domain::state::Timestamp;
use cairn_domain::state::{Event, Launch, RunState, RunStatus, StepStatus, TokenUsage};
use cairn_domain::steer::{GateCall, Request};
use cairn_engine::{Engine, EngineError, RunControl};
use cairn_ports::{
    Ask, Clock, RunQuery, RunStore, RunSummary, SearchIndex, Secrets, TokenRecord, TokenStore, WorkflowStore,
};
use serde_json::Value;

use crate::error::{Error, TokenError};
use crate::follow::Hub;

/// One run as every front shows it: its state, the definition it runs,
/// and what it cost so far (when every model it used has a price).
#[derive(Debug, Clone)]
pub struct Run {
    /// The run's state, folded from its events.
    pub state: RunState,
    /// The definition the run recorded when it started.
    pub definition: Definition,
    /// USD spent, when every model it used has a price.
    pub cost_usd: Option<f64>,
    /// USD the source of a fork spent before the checkpoint (inherited, not
    /// counted in `cost_usd`), when every model it used has a price.
    pub inherited_cost_usd: Option<f64>,
    /// Whether a process drives the run now (this one, or among workers
    /// sharing a database, the holder of its lease): a `running` run
    /// nobody drives was left so by a driver that stopped, and `resume`
    /// goes on.
    pub driven: bool,
}

/// A run in a listing, with its cost.
#[derive(Debug, Clone)]
pub struct Listed {
    /// What the store keeps of it (usage included).
    pub summary: RunSummary,
    /// USD spent, when every model it used has a price.
    pub cost_usd: Option<f64>,
    /// Whether this process drives the run now (see [`Run::driven`]).
    pub driven: bool,
}

/// A page of listed runs and the cursor of the next one.
#[derive(Debug, Clone)]
pub struct Listing {
    /// The runs, newest first.
    pub runs: Vec<Listed>,
    /// Where the next page starts, when there is one.
    pub next: Option<cairn_ports::Cursor>,
}

/// A token [`App::create_token`] made: what is kept of it, and its secret,
/// shown this once.
#[derive(Debug, Clone)]
pub struct NewToken {
    /// What the store keeps (the secret's hash, never the secret).
    pub record: TokenRecord,
    /// The secret a client presents as `Authorization: Bearer SECRET`.
    pub secret: String,
}

/// Where an [`App`] keeps things and what it shares with its fronts.
pub struct Parts {
    /// The engine's own store of runs.
    pub store: Arc<dyn RunStore>,
    /// API tokens.
    pub tokens: Arc<dyn TokenStore>,
    /// The workflow catalog.
    pub workflows: Arc<dyn WorkflowStore>,
    /// The clock.
    pub clock: Arc<dyn Clock>,
    /// Model prices, for costs.
    pub prices: BTreeMap<String, Price>,
    /// The host's secrets, hidden from what fronts print or send.
    pub secrets: Secrets,
    /// What the engine records and streams, live, for followers.
    pub hub: Arc<Hub>,
    /// What this process counts for operators.
    pub meter: Arc<crate::meter::Meter>,
    /// The full-text index `search` reads.
    pub search: Arc<dyn SearchIndex>,
}

/// The operations on runs, over one engine and its store.
pub struct App {
    engine: Engine,
    store: Arc<dyn RunStore>,
    tokens: Arc<dyn TokenStore>,
    workflows: Arc<dyn WorkflowStore>,
    clock: Arc<dyn Clock>,
    prices: BTreeMap<String, Price>,
    secrets: Secrets,
    hub: Arc<Hub>,
    meter: Arc<crate::meter::Meter>,
    hooks: crate::hooks::HookKeys,
    search: Arc<dyn SearchIndex>,
    /// One indexing at a time (searches, the service's indexer, prunes).
    indexing: tokio::sync::Mutex<()>,
    /// The leases of runs shared with other processes (`None`: this
    /// process owns the store).
    leases: Option<Arc<dyn cairn_ports::Leases>>,
}

impl App {
    /// The operations of `engine` over `parts` (the store is the engine's
    /// own; the engine's sink feeds the hub).
    pub fn new(engine: Engine, parts: Parts) -> Self {
        let Parts { store, tokens, workflows, clock, prices, secrets, hub, meter, search } = parts;
        let hooks = crate::hooks::HookKeys::default();
        let indexing = tokio::sync::Mutex::new(());
        Self {
            engine,
            store,
            tokens,
            workflows,
            clock,
            prices,
            secrets,
            hub,
            meter,
            hooks,
            search,
            indexing,
            leases: None,
        }
    }

    /// These operations over a store shared with other processes through
    /// `leases` (the engine was built with the same): requests for a run
    /// another process drives are handed to it.
    pub fn with_leases(self, leases: Option<Arc<dyn cairn_ports::Leases>>) -> Self {
        Self { leases, ..self }
    }

    /// The leases of runs shared with other processes, if the store is.
    pub(crate) fn leases(&self) -> Option<&Arc<dyn cairn_ports::Leases>> {
        self.leases.as_ref()
    }

    /// These operations, taking webhook deliveries signed with `hooks`
    /// (none by default: every delivery is refused).
    pub fn with_hooks(self, hooks: crate::hooks::HookKeys) -> Self {
        Self { hooks, ..self }
    }

    /// The keys webhook deliveries are signed with.
    pub(crate) fn hooks(&self) -> &crate::hooks::HookKeys {
        &self.hooks
    }

    /// The full-text index `search` reads.
    pub(crate) fn search_index(&self) -> &Arc<dyn SearchIndex> {
        &self.search
    }

    /// Held while the index is written.
    pub(crate) fn indexing(&self) -> &tokio::sync::Mutex<()> {
        &self.indexing
    }

    /// Now, by the application's clock.
    pub fn now(&self) -> Timestamp {
        self.clock.now()
    }

    /// The host's secrets: a front hides them from whatever it prints or
    /// sends.
    pub fn secrets(&self) -> &Secrets {
        &self.secrets
    }

    /// What the engine records and streams, live: followers subscribe here.
    pub fn hub(&self) -> &Arc<Hub> {
        &self.hub
    }

    /// What this process counts for operators (`GET /metrics`).
    pub fn meter(&self) -> &Arc<crate::meter::Meter> {
        &self.meter
    }

    /// The store of runs, for followers that read it again after falling
    /// behind.
    pub fn store(&self) -> &Arc<dyn RunStore> {
        &self.store
    }

    /// The workflow catalog.
    pub fn workflows(&self) -> &Arc<dyn WorkflowStore> {
        &self.workflows
    }

    /// The engine, for what a host adds (its own drivers, tests).
    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    /// The handle that pauses or cancels `run` while this process drives it.
    pub fn control(&self, run: &RunId) -> RunControl {
        self.engine.control(run)
    }

    /// Creates a run of `definition` with `inputs` (checked against the
    /// declared inputs) under `run_id` (a new one when `None`); refused when
    /// this host lacks a provider or handler the workflow needs. The run is
    /// not driven yet: [`App::drive`] does that.
    pub async fn start(
        &self,
        definition: Definition,
        inputs: Value,
        run_id: Option<RunId>,
    ) -> Result<Run, Error> {
        self.start_by(definition, inputs, run_id, "engine", Launch::default()).await
    }

    /// [`App::start`], recorded as asked for by `by`, launched as
    /// `launch` says (labels over the definition's, priority, parent).
    /// Refused when a sub-workflow it names by id is not registered, or
    /// its sub-workflows come back to it.
    pub async fn start_by(
        &self,
        definition: Definition,
        inputs: Value,
        run_id: Option<RunId>,
        by: &str,
        launch: impl Into<Launch>,
    ) -> Result<Run, Error> {
        self.check_calls(&definition, Unregistered::Refused).await?;
        let run_id = run_id.unwrap_or_else(|| self.engine.new_run_id());
        let state = self
            .engine
            .start_by(definition.clone(), inputs, run_id.clone(), by, launch)
            .await
            .map_err(Error::of_run(&run_id))?;
        Ok(self.run(state, definition))
    }

    /// [`App::start_by`] made safe to retry: the run's id is derived from
    /// `key`, so a repeat finds the run the first call started (also after
    /// a restart). A repeat answers that run (`Started::Repeat`) when its
    /// definition, inputs, labels and priority resolve to what the first
    /// recorded, and is refused with [`Error::KeyReused`] otherwise.
    pub async fn start_idempotent(
        &self,
        definition: Definition,
        inputs: Value,
        key: &str,
        by: &str,
        launch: Launch,
    ) -> Result<(Run, Started), Error> {
        let run_id = idempotent_id(key);
        let hash = definition.hash();
        // What the run would record of these inputs and labels (defaults
        // filled, values read as the declared types).
        let resolved = cairn_domain::inputs::resolve(&definition.workflow, inputs.clone()).ok();
        let merged = cairn_domain::label::merge(&definition.workflow.labels, launch.labels.clone()).ok();
        let priority = launch.priority;
        match self.start_by(definition, inputs, Some(run_id.clone()), by, launch).await {
            Ok(run) => Ok((run, Started::New)),
            Err(Error::Engine(EngineError::Store(cairn_ports::StoreError::AlreadyExists(_)))) => {
                let first = self.status(&run_id).await?;
                if first.definition.hash() == hash
                    && resolved.as_ref() == Some(&first.state.inputs)
                    && merged.as_ref() == Some(&first.state.labels)
                    && priority == first.state.priority
                {
                    Ok((first, Started::Repeat))
                } else {
                    Err(Error::KeyReused { run: run_id })
                }
            }
            Err(e) => Err(e),
        }
    }

    /// Drives a stored run on until it completes, fails, is paused or
    /// cancelled, or waits for a person; refused, leaving the run as it
    /// was, when this host lacks what the run needs.
    /// A parent waiting on the run (a sub-workflow's caller) is driven
    /// on after it, and its own parent after that.
    pub async fn drive(&self, id: &RunId) -> Result<Run, Error> {
        let run = self.drive_alone(id).await?;
        let mut next = self.parent_to_wake(&run.state).await;
        while let Some(parent) = next {
            match self.engine.resume(&parent).await {
                Ok(state) => next = self.parent_to_wake(&state).await,
                Err(e) => {
                    tracing::warn!(run = %parent, error = %e, "the parent run was not driven on");
                    next = None;
                }
            }
        }
        Ok(run)
    }

    /// [`App::drive`] without driving a parent after (a service drives
    /// that in its own turn: [`App::parent_to_wake`]).
    pub(crate) async fn drive_alone(&self, id: &RunId) -> Result<Run, Error> {
        let state = self.engine.resume(id).await.map_err(Error::of_run(id))?;
        self.with_definition(state).await
    }

    /// The parent run to drive on now that `state`'s run moved: its step
    /// waits on this run, which has ended or waits otherwise than the step
    /// says.
    pub(crate) async fn parent_to_wake(&self, state: &RunState) -> Option<RunId> {
        let parent = state.parent.as_ref()?;
        let step = parent.step.as_ref()?;
        if matches!(state.status, RunStatus::Pending | RunStatus::Running) {
            return None;
        }
        let caller = self.engine.load(&parent.run_id).await.ok()?;
        let waits = caller.steps.get(step).filter(|s| {
            s.status == StepStatus::Waiting && s.waits_on_child && s.child.as_ref() == Some(&state.run_id)
        })?;
        let moved = state.status.is_terminal() || waits.wait != state.status.wait();
        (moved && !caller.status.is_terminal()).then(|| parent.run_id.clone())
    }

    /// One run as it stands.
    pub async fn status(&self, id: &RunId) -> Result<Run, Error> {
        let state = self.engine.load(id).await?;
        self.with_definition(state).await
    }

    /// A page of runs, newest first.
    pub async fn list(&self, query: &RunQuery) -> Result<Listing, Error> {
        let page = self.store.list(query).await.map_err(EngineError::from)?;
        let runs = page.runs.into_iter().map(|summary| self.listed(summary)).collect();
        Ok(Listing { runs, next: page.next })
    }

    /// A run's summary as a listing shows it: with its cost and whether
    /// this process drives it.
    pub fn listed(&self, summary: RunSummary) -> Listed {
        Listed {
            cost_usd: self.cost(&summary.usage_by_model),
            driven: self.engine.drives(&summary.run_id),
            summary,
        }
    }

    /// The run's whole event log: its audit trail.
    pub async fn events(&self, id: &RunId) -> Result<Vec<Event>, Error> {
        Ok(self.engine.events(id).await?)
    }

    /// At most `limit` events of a run numbered after `after`, and whether
    /// more are stored after those.
    pub async fn events_after(
        &self,
        id: &RunId,
        after: u64,
        limit: usize,
    ) -> Result<(Vec<Event>, bool), Error> {
        let mut events =
            self.store.load(id, after.saturating_add(1)).await.map_err(EngineError::from)?.events;
        let more = events.len() > limit;
        events.truncate(limit);
        Ok((events, more))
    }

    /// Makes an API token named `name` (1 to 64 of a-z, 0-9, `_`, `-`)
    /// that acts as `role` and may decide at gates as `gate_roles`, valid
    /// for `expires` when given.
    pub async fn create_token(
        &self,
        name: &str,
        role: Role,
        gate_roles: Vec<String>,
        expires: Option<Duration>,
    ) -> Result<NewToken, Error> {
        if !cairn_domain::id::is_slug(name) {
            return Err(TokenError::BadName(name.to_owned()).into());
        }
        let secret = cairn_ports::new_secret().map_err(|e| Error::Config(e.message))?;
        let now = self.clock.now();
        let record = TokenRecord {
            name: name.to_owned(),
            hash: cairn_ports::hash_secret(&secret),
            role,
            gate_roles,
            created_at: now,
            expires_at: expires.map(|d| now.after(d)),
            last_used_at: None,
        };
        self.tokens.add_token(record.clone()).await.map_err(|e| match e {
            cairn_ports::StoreError::AlreadyExists(name) => Error::from(TokenError::NameTaken(name)),
            other => Error::Engine(other.into()),
        })?;
        Ok(NewToken { record, secret })
    }

    /// Every API token, by name (hashes, never secrets).
    pub async fn tokens(&self) -> Result<Vec<TokenRecord>, Error> {
        Ok(self.tokens.tokens().await.map_err(EngineError::from)?)
    }

    /// Revokes the token named `name`: no request is accepted with it again.
    pub async fn revoke_token(&self, name: &str) -> Result<(), Error> {
        match self.tokens.revoke_token(name).await.map_err(EngineError::from)? {
            true => Ok(()),
            false => Err(TokenError::NoSuchToken(name.to_owned()).into()),
        }
    }

    /// The token a request presents `secret` for, refused when no token
    /// has it or it has expired; its use is recorded.
    pub async fn authenticate(&self, secret: &str) -> Result<TokenRecord, Error> {
        let hash = cairn_ports::hash_secret(secret);
        let Some(token) = self.tokens.token_by_hash(&hash).await.map_err(EngineError::from)? else {
            return Err(TokenError::Unknown.into());
        };
        let now = self.clock.now();
        if token.expired(now) {
            return Err(TokenError::Expired(token.name).into());
        }
        // Recorded at most once a minute a token: a busy client costs no
        // write per request.
        if token.last_used_at.is_none_or(|at| now.0.saturating_sub(at.0) >= 60_000) {
            self.tokens.touch_token(&token.name, now).await.map_err(EngineError::from)?;
        }
        Ok(token)
    }

    /// The run's checkpoints, oldest first.
    pub async fn checkpoints(&self, id: &RunId) -> Result<Vec<Checkpoint>, Error> {
        Ok(cairn_domain::checkpoint::checkpoints(&self.events(id).await?))
    }

    /// Refuses, naming what is missing, when this host lacks what driving
    /// `id` needs: checked before recording what a drive would follow.
    pub async fn check(&self, id: &RunId) -> Result<(), Error> {
        Ok(self.engine.check(id).await?)
    }

    /// Refuses a resume of `id` that could not go on, with the cause: the
    /// run has ended, or this host lacks what driving it needs. Checked
    /// before anything a drive would follow is recorded.
    pub async fn resumable(&self, id: &RunId) -> Result<(), Error> {
        let state = self.engine.load(id).await?;
        if state.status.is_terminal() {
            let refusal = cairn_domain::steer::Refusal::Ended { status: state.status };
            return Err(EngineError::Refused { run: id.clone(), refusal }.into());
        }
        self.check(id).await
    }

    /// Records a person's decision at a gate (`by` is who decided); the run
    /// is not driven on ([`App::drive`] does that).
    pub async fn decide(&self, id: &RunId, call: GateCall, by: &str) -> Result<Run, Error> {
        let ask = Ask::Decide { call: call.clone(), by: by.to_owned() };
        self.handed(id, &ask, || self.engine.decide_gate(id, call.clone(), by)).await
    }

    /// Pauses or cancels a run nobody drives, recorded as done by `by`.
    pub async fn stop(&self, id: &RunId, request: Request, by: &str) -> Result<Run, Error> {
        let ask = Ask::Stop { request, by: by.to_owned() };
        self.handed(id, &ask, || self.engine.stop(id, request, by)).await
    }

    /// Raises the budget of a run nobody drives to `budget_usd` (above the
    /// one in force), recorded as done by `by`; the run is not driven on
    /// ([`App::drive`] retries what the spent budget blocked).
    pub async fn raise_budget(&self, id: &RunId, budget_usd: f64, by: &str) -> Result<Run, Error> {
        let ask = Ask::RaiseBudget { usd: budget_usd, by: by.to_owned() };
        self.handed(id, &ask, || self.engine.raise_budget(id, budget_usd, by)).await
    }

    /// A new run from checkpoint `seq` of `id`, made by `by`, paused:
    /// driving it runs only what came after the checkpoint.
    pub async fn fork(&self, id: &RunId, seq: u64, by: &str) -> Result<Run, Error> {
        let new_id = self.engine.new_run_id();
        let state = self.engine.fork(id, seq, new_id, by).await?;
        self.with_definition(state).await
    }

    /// The ended runs last updated longer ago than `age`, deleted unless
    /// `dry_run`; returns them.
    pub async fn prune(&self, age: Duration, dry_run: bool) -> Result<Vec<RunSummary>, Error> {
        let cutoff = self.clock.now().0.saturating_sub(age.as_millis());
        let all = self.store.list(&RunQuery::default()).await.map_err(EngineError::from)?;
        let old: Vec<RunSummary> =
            all.runs.into_iter().filter(|r| r.status.is_terminal() && r.updated_at.0 < cutoff).collect();
        if !dry_run {
            for r in &old {
                self.store.delete(&r.run_id).await.map_err(EngineError::from)?;
            }
            let gone: Vec<RunId> = old.iter().map(|r| r.run_id.clone()).collect();
            self.unindex(&gone).await?;
        }
        Ok(old)
    }

    /// A run's state with the definition it recorded; driven when this
    /// process drives it or, among workers, another holds its lease.
    pub(crate) async fn with_definition(&self, state: RunState) -> Result<Run, Error> {
        let definition = self.engine.definition(&state.run_id).await?;
        let mut run = self.run(state, definition);
        if let Some(leases) = &self.leases
            && !run.driven
            && !run.state.status.is_terminal()
        {
            run.driven = leases.holder(&run.state.run_id).await.map_err(EngineError::from)?.is_some();
        }
        Ok(run)
    }

    fn run(&self, state: RunState, definition: Definition) -> Run {
        let cost_usd = self.cost(&state.usage_by_model);
        let inherited_cost_usd = self.cost(&state.inherited_by_model);
        let driven = self.engine.drives(&state.run_id);
        Run { state, definition, cost_usd, inherited_cost_usd, driven }
    }

    /// The cost in USD of `usage` by model, when every model has a price.
    pub(crate) fn cost(&self, usage: &BTreeMap<String, TokenUsage>) -> Option<f64> {
        let (sum, every_model_priced) = priced(usage, &self.prices);
        every_model_priced.then_some(sum)
    }
}

/// Whether [`App::check_calls`] lets a sub-workflow name an id nobody
/// registered (yet).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unregistered {
    /// When registering: the other workflow may be registered later.
    Allowed,
    /// When starting a run: the step would fail.
    Refused,
}

/// Whether [`App::start_idempotent`] started a run or found the one its key
/// started before.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Started {
    /// A new run.
    New,
    /// The run an earlier call with the same key started.
    Repeat,
}

/// The run id an idempotency key stands for: `idem-` and 32 hex digits of
/// the key's hash (a key never reaches the store as it was sent).
fn idempotent_id(key: &str) -> RunId {
    let hash = cairn_ports::hash_secret(key);
    let digits = hash.get(..32).unwrap_or(&hash);
    RunId::new(format!("idem-{digits}"))
        .unwrap_or_else(|_| unreachable!("`idem-` and 32 lowercase hex digits is a slug"))
}
