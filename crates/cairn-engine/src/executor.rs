//! The executor: drives a run by asking the pure core what to do, recording
//! each transition in the store before acting on it, and running step
//! attempts concurrently through the ports.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use cairn_domain::Definition;
use cairn_domain::decide::{
    Action, Frontier, Outcome, Program, attempt_finished, child_run_id, decide_with, idempotency_key,
    run_output,
};
use cairn_domain::definition::{Callee, StepKind};
use cairn_domain::id::RunId;
use cairn_domain::program::{Frame, Price};
use cairn_domain::render::Renderer;
use cairn_domain::state::Launch;
use cairn_domain::state::{
    ErrorClass, Event, EventKind, RunState, RunStatus, StepError, StepPath, StepStatus, WaitKind,
};
use cairn_domain::steer::{self, GateCall, Refusal, Request};
use cairn_ports::{
    Clock, CommandOutput, CommandRunner, CommandSpec, ContextFile, EventSink, LlmProvider, NewRun, NoSink,
    PortError, RunStore, Secrets, StepHandler, StoreError, ToolChoice, ToolError, ToolInvocation, ToolSpec,
    Tools, WorkflowStore,
};
use futures_util::FutureExt;
use futures_util::future::{AbortHandle, BoxFuture, abortable};
use futures_util::stream::{FuturesUnordered, StreamExt};
use serde_json::Value;
use tokio::sync::watch;

use crate::control::{Asked, Control, Controls, Mailbox, RunControl};

mod lease;
use crate::job::{self, ChildCall, Finished, Job, Ports};
use crate::tooling::{Progress, Recorder};
use crate::{EngineError, SystemClock, Unmet};

/// Events between physical snapshots, at least. A larger run snapshots
/// every four times (the power of two ≥) its step count instead: a snapshot
/// costs what the state holds (some hundred bytes a step), an event some
/// hundred bytes once, so spacing snapshots by a multiple of the step count
/// keeps them a small, fixed share of what a run stores (W1 stays under
/// 1 KB a step), while loading replays at most a few events per step.
pub const SNAPSHOT_EVERY: u64 = 500;

/// Events between snapshots of a run holding `steps` steps.
fn snapshot_spacing(steps: usize) -> u64 {
    SNAPSHOT_EVERY.max(4 * (steps as u64).next_power_of_two())
}

/// A new run id: a ULID (48 bits of time, 80 random), in lowercase, so ids
/// sort by creation time and never collide.
pub fn new_run_id(now: cairn_domain::state::Timestamp) -> RunId {
    let id = ulid::Ulid::from_parts(now.0, rand_bits()).to_string().to_ascii_lowercase();
    RunId::new(id).unwrap_or_else(|_| unreachable!("a lowercase ULID is 26 of 0-9 and a-z"))
}

/// 80 random bits from the process's hasher seeds (no extra crate).
fn rand_bits() -> u128 {
    use std::hash::{BuildHasher, Hasher};
    let half = || std::collections::hash_map::RandomState::new().build_hasher().finish();
    (u128::from(half()) << 64 | u128::from(half())) & ((1 << 80) - 1)
}

/// Runs workflows through the ports it was built with.
pub struct Engine {
    store: Arc<dyn RunStore>,
    clock: Arc<dyn Clock>,
    sink: Arc<dyn EventSink>,
    ports: Ports,
    renderer: Renderer,
    actor: String,
    controls: Controls,
    prices: BTreeMap<String, Price>,
    /// Hidden from every event before it is applied or stored.
    secrets: Secrets,
    /// Definitions loaded from what runs recorded, by exact content.
    definitions: std::sync::Mutex<HashMap<DefinitionKey, Definition>>,
    /// Where registered workflows called by id are found.
    workflows: Option<Arc<dyn WorkflowStore>>,
    /// The leases of runs shared with other processes (`None`: this
    /// process owns the store).
    leases: Option<Arc<dyn cairn_ports::Leases>>,
}

/// How many loaded definitions an engine keeps (all are let go past it).
const DEFINITIONS_KEPT: usize = 256;

/// The cache key of a recorded definition: all of what it was loaded
/// from (name, text, named files), compared whole.
type DefinitionKey = (String, String, BTreeMap<String, String>);

fn lock_cache(
    cache: &std::sync::Mutex<HashMap<DefinitionKey, Definition>>,
) -> std::sync::MutexGuard<'_, HashMap<DefinitionKey, Definition>> {
    cache.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Builds an [`Engine`]: a store is required, everything else has a default
/// (system clock, no live sink, no providers, commands refused).
pub struct EngineBuilder {
    store: Arc<dyn RunStore>,
    clock: Arc<dyn Clock>,
    sink: Arc<dyn EventSink>,
    providers: HashMap<String, Arc<dyn LlmProvider>>,
    every_provider: Option<Arc<dyn LlmProvider>>,
    commands: Arc<dyn CommandRunner>,
    handlers: HashMap<String, Arc<dyn StepHandler>>,
    actor: String,
    prices: BTreeMap<String, Price>,
    secrets: Secrets,
    tools: Arc<dyn Tools>,
    workflows: Option<Arc<dyn WorkflowStore>>,
    leases: Option<Arc<dyn cairn_ports::Leases>>,
}

impl EngineBuilder {
    /// A builder over `store`.
    pub fn new(store: Arc<dyn RunStore>) -> Self {
        Self {
            store,
            clock: Arc::new(SystemClock),
            sink: Arc::new(NoSink),
            providers: HashMap::new(),
            every_provider: None,
            commands: Arc::new(NoCommands),
            handlers: HashMap::new(),
            actor: "engine".into(),
            prices: BTreeMap::new(),
            secrets: Secrets::default(),
            tools: Arc::new(NoTools),
            workflows: None,
            leases: None,
        }
    }

    /// The leases of a store shared with other processes: the engine then
    /// drives or steers a run only while it holds the run's lease.
    pub fn leases(mut self, leases: Arc<dyn cairn_ports::Leases>) -> Self {
        self.leases = Some(leases);
        self
    }

    /// The catalog `workflow: ID` steps find their workflow in (without
    /// one, only sub-workflow files run).
    pub fn workflows(mut self, workflows: Arc<dyn WorkflowStore>) -> Self {
        self.workflows = Some(workflows);
        self
    }

    /// The host's secret values (keys, credentials), hidden from every
    /// event before it is applied or stored: a server that echoes a key
    /// in an error or an answer puts it in no log, snapshot or output.
    pub fn secrets(mut self, secrets: Secrets) -> Self {
        self.secrets = secrets;
        self
    }

    /// What models cost, for runs' `defaults.budget_usd`.
    pub fn prices(mut self, prices: BTreeMap<String, Price>) -> Self {
        self.prices = prices;
        self
    }

    /// The clock every time and timer comes from.
    pub fn clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    /// Where live events go.
    pub fn sink(mut self, sink: Arc<dyn EventSink>) -> Self {
        self.sink = sink;
        self
    }

    /// The provider agents name `name` (`default` when they name none).
    pub fn provider(mut self, name: impl Into<String>, provider: Arc<dyn LlmProvider>) -> Self {
        self.providers.insert(name.into(), provider);
        self
    }

    /// The provider of every agent whose provider has none registered
    /// under its name (a mock, a replay, one model for all).
    pub fn every_provider(mut self, provider: Arc<dyn LlmProvider>) -> Self {
        self.every_provider = Some(provider);
        self
    }

    /// What runs command steps.
    pub fn commands(mut self, runner: Arc<dyn CommandRunner>) -> Self {
        self.commands = runner;
        self
    }

    /// What agents' tool calls run on (built-in tools, MCP servers).
    pub fn tools(mut self, tools: Arc<dyn Tools>) -> Self {
        self.tools = tools;
        self
    }

    /// The handler `uses: NAME` steps call.
    pub fn handler(mut self, name: impl Into<String>, handler: Arc<dyn StepHandler>) -> Self {
        self.handlers.insert(name.into(), handler);
        self
    }

    /// Who the events of this engine name as actor (default `engine`).
    pub fn actor(mut self, actor: impl Into<String>) -> Self {
        self.actor = actor.into();
        self
    }

    /// The engine.
    pub fn build(self) -> Engine {
        Engine {
            store: self.store,
            clock: self.clock,
            sink: self.sink,
            ports: Ports {
                providers: self.providers,
                every_provider: self.every_provider,
                commands: self.commands,
                handlers: self.handlers,
                tools: self.tools,
            },
            renderer: Renderer::default(),
            actor: self.actor,
            controls: Controls::default(),
            definitions: std::sync::Mutex::default(),
            prices: self.prices,
            secrets: self.secrets,
            workflows: self.workflows,
            leases: self.leases,
        }
    }
}

/// The default command runner: refuses every program.
struct NoCommands;

#[async_trait]
impl CommandRunner for NoCommands {
    async fn run(&self, spec: CommandSpec) -> Result<CommandOutput, PortError> {
        Err(PortError::new(
            ErrorClass::Permission,
            format!("`{}` may not run: no program is allowed", spec.program),
        ))
    }
}

/// The default tools: none.
struct NoTools;

#[async_trait]
impl Tools for NoTools {
    /// The built-in tools, offered as every host offers them (each call
    /// is refused); no MCP server.
    async fn specs(&self, _: &RunId, choice: &ToolChoice) -> Result<Vec<ToolSpec>, PortError> {
        choice.builtin_only()
    }

    async fn call(&self, call: ToolInvocation) -> Result<String, ToolError> {
        Err(ToolError::Refused(format!("`{}` may not run: this host runs no tools", call.name)))
    }

    async fn context(&self, patterns: &[String], _: usize) -> Result<Vec<ContextFile>, PortError> {
        Err(PortError::new(
            ErrorClass::Permission,
            format!("this host reads no project files (context: {})", patterns.join(", ")),
        ))
    }

    async fn release(&self, _: &RunId) {}
}

impl Engine {
    /// A new run id, from this engine's clock.
    pub fn new_run_id(&self) -> RunId {
        new_run_id(self.clock.now())
    }

    /// The handle that pauses or cancels `run` while this engine drives it.
    pub fn control(&self, run: &RunId) -> RunControl {
        self.controls.of(run)
    }

    /// Whether this engine drives `run` now: a run that is `running` and
    /// driven by no engine was left so by a driver that stopped.
    pub fn drives(&self, run: &RunId) -> bool {
        self.controls.drives(run)
    }

    /// What this engine lacks to run `workflow`: a provider an agent
    /// names, a handler a `uses:` step names.
    pub fn unmet(&self, workflow: &cairn_domain::definition::Workflow) -> Vec<Unmet> {
        let needs = cairn_domain::needs::needs(workflow);
        let mut unmet: Vec<Unmet> = needs
            .providers
            .into_iter()
            .filter(|(_, p)| {
                self.ports.every_provider.is_none() && !self.ports.providers.contains_key(p.as_str())
            })
            .map(|(agent, provider)| Unmet::Provider { agent, provider })
            .collect();
        unmet.extend(
            needs
                .handlers
                .into_iter()
                .filter(|h| !self.ports.handlers.contains_key(h.as_str()))
                .map(|handler| Unmet::Handler { handler }),
        );
        unmet
    }

    /// Refuses, naming what is missing, when this engine lacks what the
    /// stored run `run_id` needs to be driven: what a host checks before it
    /// records anything a drive would follow.
    pub async fn check(&self, run_id: &RunId) -> Result<(), EngineError> {
        if self.load(run_id).await?.status.is_terminal() {
            // Nothing of an ended run runs again: what refuses it is the
            // request itself.
            return Ok(());
        }
        self.served(&self.definition(run_id).await?.workflow, Some(run_id))
    }

    /// Refuses `workflow` (of `run`, when it exists) when this engine lacks
    /// what it needs.
    fn served(
        &self,
        workflow: &cairn_domain::definition::Workflow,
        run: Option<&RunId>,
    ) -> Result<(), EngineError> {
        let unmet = self.unmet(workflow);
        if unmet.is_empty() { Ok(()) } else { Err(EngineError::Unmet { run: run.cloned(), unmet }) }
    }

    /// Creates a run of `def` with `inputs` (checked against the declared
    /// inputs, defaults filled in) under `run_id`, without driving it.
    /// Refused before anything is stored when this engine lacks a provider
    /// or handler the workflow needs.
    pub async fn start(
        &self,
        def: Definition,
        inputs: Value,
        run_id: RunId,
    ) -> Result<RunState, EngineError> {
        self.create(def, inputs, run_id, &self.actor, Launch::default()).await.map(|(state, _)| state)
    }

    /// [`Engine::start`], recorded as done by `by` (who asked for the run),
    /// launched as `launch` says (labels put over the definition's, its
    /// priority, its parent).
    pub async fn start_by(
        &self,
        def: Definition,
        inputs: Value,
        run_id: RunId,
        by: &str,
        launch: impl Into<Launch>,
    ) -> Result<RunState, EngineError> {
        self.create(def, inputs, run_id, by, launch.into()).await.map(|(state, _)| state)
    }

    /// [`Engine::start`], returning the prepared program too (so `run`
    /// drives on without preparing it again).
    async fn create(
        &self,
        def: Definition,
        inputs: Value,
        run_id: RunId,
        by: &str,
        launch: Launch,
    ) -> Result<(RunState, Program), EngineError> {
        self.served(&def.workflow, None)?;
        let labels =
            cairn_domain::label::merge(&def.workflow.labels, launch.labels).map_err(EngineError::Labels)?;
        // A workflow that cannot be run is refused before a run exists.
        let program = self.program(def.workflow.clone())?;
        let inputs = cairn_domain::inputs::resolve(&def.workflow, inputs).map_err(EngineError::Inputs)?;
        let hash = def.hash();
        let created = Event {
            seq: 1,
            at: self.clock.now(),
            actor: by.to_owned(),
            kind: self.scrub(EventKind::RunCreated {
                run_id: run_id.clone(),
                workflow: def.workflow.id.clone(),
                definition_hash: hash.clone(),
                inputs,
                version: def.workflow.version.clone(),
                labels,
                priority: launch.priority,
                parent: launch.parent.map(Box::new),
            })?,
        };
        self.store
            .create(NewRun {
                run_id: run_id.clone(),
                workflow: def.workflow.id.clone(),
                definition_name: def.name,
                definition: def.text,
                files: def.files,
                definition_hash: hash,
                created: created.clone(),
            })
            .await?;
        let state = RunState::create(&created)?;
        self.sink.recorded(&run_id, std::slice::from_ref(&created));
        Ok((state, program))
    }

    /// [`Engine::start`], then [`Engine::resume`]: creates a run and drives
    /// it until it completes, fails, or waits for a person.
    pub async fn run(&self, def: Definition, inputs: Value, run_id: RunId) -> Result<RunState, EngineError> {
        let (state, program) =
            self.create(def, inputs, run_id.clone(), &self.actor, Launch::default()).await?;
        let held = self.hold(&run_id).await?;
        let driven = self.drive(state, &program).await;
        self.let_go(held, self.wake_after(&driven, program.workflow())).await;
        driven
    }

    /// A workflow prepared for running, with this engine's prices.
    fn program(&self, workflow: cairn_domain::definition::Workflow) -> Result<Program, EngineError> {
        Program::new(workflow)
            .map(|p| p.with_prices(self.prices.clone()))
            .map_err(|e| EngineError::Program(e.to_string()))
    }

    /// The definition `run` recorded when it started, loaded again from
    /// what the store kept (never from disk).
    pub async fn definition(&self, run: &RunId) -> Result<Definition, EngineError> {
        let stored = self.store.load(run, u64::MAX).await?;
        // Loading validates the whole text: many runs of one workflow (and
        // every read of a busy run) share the result, by exact content.
        let key = (stored.definition_name, stored.definition, stored.files);
        if let Some(known) = lock_cache(&self.definitions).get(&key) {
            return Ok(known.clone());
        }
        let definition = Definition::from_recorded(&key.0, &key.1, &key.2)
            .map_err(|problems| EngineError::Definition { run: run.clone(), problems })?;
        let mut cache = lock_cache(&self.definitions);
        if cache.len() >= DEFINITIONS_KEPT {
            cache.clear();
        }
        cache.insert(key, definition.clone());
        Ok(definition)
    }

    /// The run's whole event log.
    pub async fn events(&self, run: &RunId) -> Result<Vec<Event>, EngineError> {
        Ok(self.store.load(run, 0).await?.events)
    }

    /// Appends events atomically after the state's last one, then applies
    /// them and tells the sink: nothing takes effect before it is stored.
    async fn record(
        &self,
        state: &mut RunState,
        kinds: Vec<EventKind>,
        actor: &str,
    ) -> Result<(), EngineError> {
        let mut staged = Vec::new();
        self.stage(state, kinds, actor, &mut staged)?;
        self.persist(state, &mut staged).await
    }

    /// Numbers events after the state's last one and applies them, keeping
    /// them in `staged` until [`Engine::persist`]: nothing may act on them
    /// before then.
    fn stage(
        &self,
        state: &mut RunState,
        kinds: Vec<EventKind>,
        actor: &str,
        staged: &mut Vec<Event>,
    ) -> Result<(), EngineError> {
        let at = self.clock.now();
        for kind in kinds {
            let kind = self.scrub(kind)?;
            let event = Event { seq: state.seq + 1, at, actor: actor.to_owned(), kind };
            state.apply(&event)?;
            staged.push(event);
        }
        Ok(())
    }

    /// Appends the staged events in one atomic append (one flush), then
    /// tells the sink, and snapshots when one is due.
    async fn persist(&self, state: &RunState, staged: &mut Vec<Event>) -> Result<(), EngineError> {
        let Some(first) = staged.first().map(|e| e.seq) else { return Ok(()) };
        let before = first - 1;
        self.store.append(&state.run_id, before, staged).await?;
        self.sink.recorded(&state.run_id, staged);
        staged.clear();
        let every = snapshot_spacing(state.steps.len());
        if state.seq / every > before / every {
            self.snapshot(state).await?;
        }
        Ok(())
    }

    /// `kind` with the host's secrets hidden, before anything applies or
    /// stores it (so no state, snapshot or sink sees them either).
    fn scrub(&self, kind: EventKind) -> Result<EventKind, EngineError> {
        self.secrets
            .redact_event(kind)
            .map_err(|e| EngineError::Program(format!("an event could not be kept without its secrets: {e}")))
    }

    /// A refusal of a request about `run`.
    fn refused(run: &RunId) -> impl FnOnce(Refusal) -> EngineError + '_ {
        move |refusal| EngineError::Refused { run: run.clone(), refusal }
    }

    /// Drives a stored run on: folds its log (from the latest snapshot),
    /// loads its recorded definition, then drives it until it completes,
    /// fails, is paused or cancelled, or waits for a person. A step that
    /// was in flight when its driver died runs again with the same attempt
    /// number, so the same idempotency key; a blocked step is retried; a
    /// paused or crashed run goes on where it stopped. Refused, leaving the
    /// run as it was, when it has ended or this engine lacks what it needs.
    pub async fn resume(&self, run_id: &RunId) -> Result<RunState, EngineError> {
        let definition = self.definition(run_id).await?;
        self.served(&definition.workflow, Some(run_id))?;
        let program = self.program(definition.workflow)?;
        // Held before the log is read: what is read is what the next
        // writer (this one) writes after.
        let held = self.hold(run_id).await?;
        let driven = match self.load(run_id).await {
            Ok(state) => self.drive(state, &program).await,
            Err(e) => Err(e),
        };
        self.let_go(held, self.wake_after(&driven, program.workflow())).await;
        driven
    }

    /// Drives a run whose state and program are ready: refuses an ended
    /// run, records what going on records first, restarts what was in
    /// flight, then drives.
    async fn drive(&self, state: RunState, program: &Program) -> Result<RunState, EngineError> {
        let run_id = state.run_id.clone();
        let events = steer::resume(&state).map_err(Self::refused(&run_id))?;
        let (_driving, mailbox) = self.controls.driving(&run_id);
        let control = self.control(&run_id);
        let mut drive = Drive::new(self, program, state, &control, mailbox);
        self.record(&mut drive.state, events, &self.actor).await?;
        let in_flight: Vec<(StepPath, u32)> = drive
            .state
            .steps
            .iter()
            .filter(|(p, s)| s.status == StepStatus::Running && is_attempt(program, p))
            .map(|(p, s)| (p.clone(), s.attempts))
            .collect();
        // Their prompts were recorded with their starts.
        for (path, attempt) in in_flight {
            if let Some(job) = drive.prepare(&path, attempt) {
                drive.spawn(path, attempt, job);
            }
        }
        // Steps waiting on child runs go on with how those stand now.
        let on_children: Vec<(StepPath, u32, RunId)> = drive
            .state
            .steps
            .iter()
            .filter(|(_, s)| s.status == StepStatus::Waiting && s.waits_on_child)
            .filter_map(|(p, s)| Some((p.clone(), s.attempts, s.child.clone()?)))
            .collect();
        for (path, attempt, child) in on_children {
            let (Ok(outcome) | Err(outcome)) = self.child_now(&child).await;
            drive.finish(&path, attempt, Finished::plain(outcome))?;
        }
        let driven = drive.run().await;
        // What the run's tools started (its MCP servers) stops with the drive.
        self.ports.tools.release(&run_id).await;
        // Whatever was asked of this drive is over with it.
        control.done();
        driven
    }

    /// Records a person's decision at a gate of a run that waits there
    /// (`by` is who decided), without driving the run (`resume` applies
    /// it). Refused, with a typed reason: no such gate, a role the gate does
    /// not list (or none where it lists some), a deadline that passed.
    pub async fn decide_gate(
        &self,
        run_id: &RunId,
        call: GateCall,
        by: &str,
    ) -> Result<RunState, EngineError> {
        // A run this engine drives takes the decision from its driver, the
        // run's one writer. A driver that ended before it took it drops
        // the answer: then nobody drives the run, and it is recorded here.
        if let Some(mailbox) = self.controls.mailbox(run_id) {
            let (answer, answered) = tokio::sync::oneshot::channel();
            let asked = Asked { call: call.clone(), by: by.to_owned(), answer };
            if mailbox.send(asked).is_ok()
                && let Ok(answer) = answered.await
            {
                return answer;
            }
        }
        let definition = self.definition(run_id).await?;
        let program = self.program(definition.workflow)?;
        let held = self.hold(run_id).await?;
        let decided = async {
            let mut state = self.load(run_id).await?;
            let event = steer::gate_decision(&state, &program, call, self.clock.now())
                .map_err(Self::refused(run_id))?;
            self.record(&mut state, vec![event], by).await?;
            Ok(state)
        }
        .await;
        // Whoever asked drives the run on; should it go away first, any
        // worker does once a lease's term has passed.
        let wake = decided.as_ref().ok().map(|_| self.later(self.clock.now()));
        self.let_go(held, wake.or_else(|| self.wake_after(&decided, program.workflow()))).await;
        decided
    }

    /// Pauses or cancels a run nobody drives (its driver died, or it waits
    /// for a person), recorded as done by `by`: running and waiting steps
    /// are recorded cancelled with a cancel. Cancelling a cancelled run
    /// changes nothing; any other ended run is refused.
    pub async fn stop(&self, run_id: &RunId, request: Request, by: &str) -> Result<RunState, EngineError> {
        let definition = self.definition(run_id).await?;
        let held = self.hold(run_id).await?;
        let stopped = async {
            let mut state = self.load(run_id).await?;
            let events = steer::stop(&state, request).map_err(Self::refused(run_id))?;
            let cancelled = cancelled_steps(&events);
            self.record(&mut state, events, by).await?;
            Ok((state, cancelled))
        }
        .await;
        let (stopped, cancelled) = match stopped {
            Ok((state, cancelled)) => (Ok(state), cancelled),
            Err(e) => (Err(e), Vec::new()),
        };
        self.let_go(held, self.wake_after(&stopped, &definition.workflow)).await;
        let state = stopped?;
        self.cancel_children(&state, &cancelled, by).await;
        Ok(state)
    }

    /// Raises the budget of a run nobody drives to `budget_usd` (above the
    /// one in force: the last raised, else the definition's
    /// `defaults.budget_usd`), recorded as done by `by`; the run is not
    /// driven on (`resume` retries what the spent budget blocked).
    pub async fn raise_budget(
        &self,
        run_id: &RunId,
        budget_usd: f64,
        by: &str,
    ) -> Result<RunState, EngineError> {
        let definition = self.definition(run_id).await?;
        let held = self.hold(run_id).await?;
        let raised = async {
            let mut state = self.load(run_id).await?;
            let current = state.budget_usd.or(definition.workflow.defaults.budget_usd);
            let events = steer::raise_budget(&state, current, budget_usd).map_err(Self::refused(run_id))?;
            self.record(&mut state, events, by).await?;
            Ok(state)
        }
        .await;
        // Whoever raised it drives the run on (as after a decision).
        let wake = raised.as_ref().ok().map(|_| self.later(self.clock.now()));
        self.let_go(held, wake.or_else(|| self.wake_after(&raised, &definition.workflow))).await;
        raised
    }

    /// A new run `new_id`, made by `by`, with the definition and inputs of
    /// `source` and its events up to checkpoint `seq` (time travel), each
    /// kept with its actor and time. It is left paused, so `resume` runs
    /// only what came after the checkpoint.
    pub async fn fork(
        &self,
        source: &RunId,
        seq: u64,
        new_id: RunId,
        by: &str,
    ) -> Result<RunState, EngineError> {
        let stored = self.store.load(source, 0).await?;
        let fork = steer::fork(&stored.events, seq).map_err(Self::refused(source))?;
        let created = Event {
            seq: 1,
            at: self.clock.now(),
            actor: by.to_owned(),
            kind: self.scrub(EventKind::RunCreated {
                run_id: new_id.clone(),
                workflow: fork.workflow.clone(),
                definition_hash: fork.definition_hash.clone(),
                inputs: fork.inputs,
                version: fork.version,
                labels: fork.labels,
                priority: fork.priority,
                parent: Some(Box::new(fork.parent)),
            })?,
        };
        let mut state = RunState::create(&created)?;
        self.store
            .create(NewRun {
                run_id: new_id,
                workflow: fork.workflow,
                definition_name: stored.definition_name,
                definition: stored.definition,
                files: stored.files,
                definition_hash: fork.definition_hash,
                created,
            })
            .await?;
        let mut copied = fork.copied;
        for event in &mut copied {
            state.apply(event)?;
        }
        self.persist(&state, &mut copied).await?;
        self.record(&mut state, fork.then, by).await?;
        Ok(state)
    }

    /// A run's state, folded from its latest snapshot and the events after
    /// it (only those are read).
    pub async fn load(&self, run_id: &RunId) -> Result<RunState, EngineError> {
        // A snapshot is an optimisation: one that cannot be read is passed over.
        let snapshot = match self.store.latest_snapshot(run_id).await {
            Err(cairn_ports::StoreError::Corrupt(_)) => None,
            other => other?,
        };
        let from = snapshot.as_ref().map_or(0, |s| s.seq + 1);
        let stored = self.store.load(run_id, from).await?;
        let mut state = snapshot.map(|s| s.state);
        for event in &stored.events {
            match &mut state {
                None => state = Some(RunState::create(event)?),
                Some(s) => s.apply(event)?,
            }
        }
        state.ok_or_else(|| {
            EngineError::Store(cairn_ports::StoreError::Corrupt(format!("run `{run_id}` has no events")))
        })
    }

    /// Keeps a snapshot of the state (at pauses and gates), so loading a
    /// long run replays only the tail.
    async fn snapshot(&self, state: &RunState) -> Result<(), EngineError> {
        let snapshot = cairn_ports::Snapshot { seq: state.seq, state: state.clone() };
        self.store.put_snapshot(&state.run_id, snapshot).await.map_err(EngineError::from)
    }
}

/// Who calls a child run: the parent run, the step's attempt, and what
/// the child inherits (who started the parent, its priority, the depth).
struct ChildOf {
    run: RunId,
    path: StepPath,
    child: RunId,
    by: String,
    priority: i32,
    depth: u32,
}

/// How often an attempt looks again at a child run another drive of this
/// process has (a decision's drive), until that drive ends.
const CHILD_LOOK_AGAIN: Duration = Duration::from_millis(100);

impl Engine {
    /// One attempt of a `workflow:` step: starts its child run (once, by a
    /// derived id), drives it as far as it goes, and reports how it ended
    /// or how it waits.
    fn child_attempt(&self, of: ChildOf, call: ChildCall) -> BoxFuture<'_, Finished> {
        Box::pin(async move {
            let outcome = match self.go_on_with_child(&of, &call).await {
                Ok(outcome) | Err(outcome) => outcome,
            };
            Finished::plain(outcome)
        })
    }

    async fn go_on_with_child(&self, of: &ChildOf, call: &ChildCall) -> Result<Outcome, Outcome> {
        let id = &of.child;
        match self.load(id).await {
            Err(EngineError::Store(StoreError::NotFound(_))) => self.start_child(of, call).await?,
            Err(e) => return Err(unreadable_child(id, &e)),
            Ok(_) => call.link(id).await?,
        }
        self.child_now(id).await
    }

    /// How the child run `id` stands, once driven as far as it goes: a
    /// run another drive of this process has is waited for; one nobody
    /// drives that has not ended or stopped for a person is driven here.
    fn child_now<'a>(&'a self, id: &'a RunId) -> BoxFuture<'a, Result<Outcome, Outcome>> {
        Box::pin(async move {
            while self.drives(id) {
                self.clock.sleep(CHILD_LOOK_AGAIN).await;
            }
            let mut state = self.load(id).await.map_err(|e| unreadable_child(id, &e))?;
            if matches!(state.status, RunStatus::Pending | RunStatus::Running) {
                state = self.resume(id).await.map_err(|e| {
                    let message = format!("the sub-workflow's run `{id}` could not go on: {e}");
                    child_failure(ErrorClass::Fatal, message)
                })?;
            }
            let definition = self.definition(id).await.map_err(|e| unreadable_child(id, &e))?;
            Ok(child_outcome(&state, &definition))
        })
    }

    /// Creates the child run of `of`, refused past the depth limit.
    async fn start_child(&self, of: &ChildOf, call: &ChildCall) -> Result<(), Outcome> {
        let depth = of.depth + 1;
        if depth > cairn_domain::limits::MAX_CALL_DEPTH {
            let max = cairn_domain::limits::MAX_CALL_DEPTH;
            let message =
                format!("sub-workflows nest deeper than {max} levels: `{}` is not started", call.callee);
            return Err(child_failure(ErrorClass::Fatal, message));
        }
        let definition = self.callee(&of.run, &call.callee).await?;
        let parent = cairn_domain::event::Parent {
            run_id: of.run.clone(),
            checkpoint: None,
            step: Some(of.path.clone()),
            depth,
        };
        let launch = Launch { priority: of.priority, parent: Some(parent), ..Launch::default() };
        // Linked first: a driver that dies before the child exists leaves
        // a link its successor makes true.
        call.link(&of.child).await?;
        match self.create(definition, call.inputs.clone(), of.child.clone(), &of.by, launch).await {
            Ok(_) => Ok(()),
            Err(e) => {
                let message = format!("the sub-workflow `{}` could not start: {e}", call.callee);
                Err(child_failure(ErrorClass::Fatal, message))
            }
        }
    }

    /// The definition a `workflow:` step of `run` names: a file it
    /// recorded, or the latest registered version of an id.
    async fn callee(&self, run: &RunId, callee: &Callee) -> Result<Definition, Outcome> {
        let fatal = |message: String| child_failure(ErrorClass::Fatal, message);
        match callee {
            Callee::File(file) => {
                let parent = self.definition(run).await.map_err(|e| fatal(e.to_string()))?;
                parent.called(file).map_err(|p| fatal(format!("sub-workflow `{file}`: {p}")))
            }
            Callee::Registered(id) => {
                let Some(catalog) = &self.workflows else {
                    return Err(fatal(format!("this host keeps no catalog to find the workflow `{id}` in")));
                };
                let versions = catalog.versions(id).await.map_err(|e| {
                    child_failure(ErrorClass::Transient, format!("the catalog could not be read: {e}"))
                })?;
                let latest = versions
                    .into_iter()
                    .max_by_key(|v| v.number)
                    .ok_or_else(|| fatal(format!("no workflow `{id}` is registered")))?;
                Definition::from_recorded(&latest.definition_name, &latest.definition, &latest.files)
                    .map_err(|p| fatal(format!("the registered workflow `{id}`: {p}")))
            }
        }
    }

    /// Cancels the child runs of the steps of `state` at `paths` that have
    /// one and have not ended (and theirs in turn), as `by`: through its
    /// driver when this engine drives it, else recorded here.
    fn cancel_children<'a>(
        &'a self,
        state: &'a RunState,
        paths: &'a [StepPath],
        by: &'a str,
    ) -> BoxFuture<'a, ()> {
        Box::pin(async move {
            let children = paths.iter().filter_map(|p| state.steps.get(p)?.child.as_ref());
            for child in children {
                if self.drives(child) {
                    self.control(child).ask(Request::Cancel, Some(by));
                    continue;
                }
                match self.stop(child, Request::Cancel, by).await {
                    // Ended already, or not started yet (its attempt, told
                    // to cancel, cancels it when it starts).
                    Ok(_)
                    | Err(EngineError::Refused { .. } | EngineError::Store(StoreError::NotFound(_))) => {}
                    Err(e) => {
                        tracing::warn!(run = %child, error = %e, "a sub-workflow's run was not cancelled")
                    }
                }
            }
        })
    }
}

/// How a child run stands, as its step's outcome: its outputs once
/// completed, its error once failed, how it waits otherwise.
fn child_outcome(state: &RunState, definition: &Definition) -> Outcome {
    let id = &state.run_id;
    match state.status {
        RunStatus::Completed => Outcome::Succeeded(run_output(state, &definition.workflow)),
        RunStatus::Failed => {
            let error = state.error.clone().unwrap_or_else(|| StepError {
                class: ErrorClass::Fatal,
                message: "no error was recorded".into(),
                hint: None,
                cause: None,
            });
            Outcome::Failed {
                error: StepError {
                    message: format!("the sub-workflow's run `{id}` failed: {}", error.message),
                    ..error
                },
                output: None,
                retry_after: None,
            }
        }
        RunStatus::Cancelled => {
            child_failure(ErrorClass::Fatal, format!("the sub-workflow's run `{id}` was cancelled"))
        }
        // A paused child holds its parent's step as a block would.
        status => match status.wait().or((status == RunStatus::Paused).then_some(WaitKind::Block)) {
            Some(wait) => Outcome::ChildWaits { run_id: id.clone(), wait },
            None => child_failure(
                ErrorClass::Transient,
                format!(
                    "the sub-workflow's run `{id}` stopped {} without ending",
                    cairn_domain::state::word(status)
                ),
            ),
        },
    }
}

/// The steps `events` cancel.
fn cancelled_steps(events: &[EventKind]) -> Vec<StepPath> {
    let cancelled = events.iter().filter_map(|e| match e {
        EventKind::StepCancelled { path } => Some(path.clone()),
        _ => None,
    });
    cancelled.collect()
}

fn unreadable_child(id: &RunId, e: &EngineError) -> Outcome {
    child_failure(ErrorClass::Transient, format!("the sub-workflow's run `{id}` could not be read: {e}"))
}

fn child_failure(class: ErrorClass, message: String) -> Outcome {
    Outcome::Failed {
        error: StepError { class, message, hint: None, cause: None },
        output: None,
        retry_after: None,
    }
}

/// One run being driven: its state, and the attempts in flight.
struct Drive<'a> {
    engine: &'a Engine,
    program: &'a Program,
    state: RunState,
    /// The attempts in flight, polled by the driver's own task: an attempt
    /// that finishes at once costs no hop to another thread. `None` for an
    /// attempt that was stopped.
    tasks: FuturesUnordered<BoxFuture<'a, Option<(StepPath, u32, Finished)>>>,
    in_flight: HashMap<StepPath, AbortHandle>,
    control: Option<watch::Receiver<Control>>,
    /// Decisions at gates asked while this driver drives the run.
    mailbox: Mailbox,
    /// Where attempts send what they record mid-way (tool calls), and
    /// where the driver takes it.
    progress: tokio::sync::mpsc::UnboundedSender<Progress>,
    recorded: tokio::sync::mpsc::UnboundedReceiver<Progress>,
    /// The run's control, which says who asked for a pause or cancel.
    requester: RunControl,
    /// Events applied to `state` but not yet stored: they are stored, in
    /// one append, before anything acts on them or the driver waits.
    staged: Vec<Event>,
    /// Which steps `decide` looks at next round: every staged event is noted.
    frontier: Frontier,
    /// Steps cancelled whose child runs are cancelled once that is stored.
    cancelled: Vec<StepPath>,
}

impl<'a> Drive<'a> {
    fn new(
        engine: &'a Engine,
        program: &'a Program,
        state: RunState,
        control: &RunControl,
        mailbox: Mailbox,
    ) -> Self {
        let (progress, recorded) = tokio::sync::mpsc::unbounded_channel();
        Self {
            engine,
            program,
            state,
            progress,
            recorded,
            tasks: FuturesUnordered::new(),
            in_flight: HashMap::new(),
            control: Some(control.watch()),
            requester: control.clone(),
            mailbox,
            staged: Vec::new(),
            frontier: Frontier::default(),
            cancelled: Vec::new(),
        }
    }

    /// Stages events of the engine (see [`Engine::stage`]).
    fn stage(&mut self, kinds: Vec<EventKind>) -> Result<(), EngineError> {
        kinds.iter().for_each(|kind| self.frontier.note(kind));
        self.engine.stage(&mut self.state, kinds, &self.engine.actor, &mut self.staged)
    }

    /// Stores what is staged, then cancels the child runs of the steps
    /// it cancels.
    async fn flush(&mut self) -> Result<(), EngineError> {
        self.engine.persist(&self.state, &mut self.staged).await?;
        if !self.cancelled.is_empty() {
            let cancelled = std::mem::take(&mut self.cancelled);
            let by = self.requester.requester().unwrap_or_else(|| self.engine.actor.clone());
            self.engine.cancel_children(&self.state, &cancelled, &by).await;
        }
        Ok(())
    }

    /// Stops the attempt in flight at `path`: a sub-workflow's child run is
    /// told to cancel (its driver records it, and the attempt then ends);
    /// any other attempt is dropped where it stands.
    fn stop_attempt(&mut self, path: &StepPath) {
        let Some(handle) = self.in_flight.remove(path) else { return };
        let child = self.program.step(path).filter(|s| matches!(s.kind, StepKind::Workflow(_)));
        match (child, self.state.steps.get(path)) {
            (Some(_), Some(step)) => {
                let child = child_run_id(&self.state, path, step.attempts);
                self.engine.control(&child).ask(Request::Cancel, self.requester.requester().as_deref());
                self.in_flight.insert(path.clone(), handle);
            }
            _ => handle.abort(),
        }
    }

    /// What is asked of the driver now. Marks the request seen, so the
    /// wait for the next one (on a clone of the receiver) waits for a change.
    fn requested(&mut self) -> Control {
        self.control.as_mut().map_or(Control::Run, |c| *c.borrow_and_update())
    }

    async fn run(mut self) -> Result<RunState, EngineError> {
        loop {
            match self.requested() {
                Control::Cancel => return self.cancel().await,
                Control::Interrupt => return self.interrupt().await,
                Control::Pause if self.tasks.is_empty() && !self.state.status.is_terminal() => {
                    self.stage_as_requester(vec![EventKind::RunPaused])?;
                    self.flush().await?;
                    self.engine.snapshot(&self.state).await?;
                    return Ok(self.state);
                }
                _ => {}
            }
            let wake = self.settle().await?;
            self.flush().await?;
            let stopped = !matches!(self.state.status, RunStatus::Running);
            if self.tasks.is_empty() && (stopped || wake.is_none()) {
                // A request that came since the top of the loop is carried out there.
                if self.requested() != Control::Run && !self.state.status.is_terminal() {
                    continue;
                }
                // So is a decision asked meanwhile.
                if let Ok(asked) = self.mailbox.try_recv() {
                    self.answer(asked).await?;
                    continue;
                }
                if self.state.status.is_waiting() {
                    self.engine.snapshot(&self.state).await?;
                }
                return Ok(self.state);
            }
            let sleep = wake.map(|t| Duration::from_millis(t.0.saturating_sub(self.engine.clock.now().0)));
            let mut control = self.control.clone();
            tokio::select! {
                joined = self.tasks.next(), if !self.tasks.is_empty() => {
                    let Some(Some((path, attempt, finished))) = joined else { continue };
                    self.in_flight.remove(&path);
                    self.finish(&path, attempt, finished)?;
                    // Attempts that finished meanwhile share the next append.
                    while let Some(Some(joined)) = self.tasks.next().now_or_never() {
                        let Some((path, attempt, finished)) = joined else { continue };
                        self.in_flight.remove(&path);
                        self.finish(&path, attempt, finished)?;
                    }
                }
                () = self.engine.clock.sleep(sleep.unwrap_or_default()), if sleep.is_some() => {}
                open = control_changed(&mut control), if control.is_some() => {
                    if !open {
                        self.control = None;
                    }
                }
                Some(asked) = self.mailbox.recv() => self.answer(asked).await?,
                Some(progress) = self.recorded.recv() => self.record_progress(progress).await?,
            }
        }
    }

    /// Records what an attempt in flight asks (its tool calls) and tells
    /// it once stored, unless the attempt is no longer the step's current
    /// one (then it stops).
    async fn record_progress(&mut self, progress: Progress) -> Result<(), EngineError> {
        let current = self.state.steps.get(&progress.path).map(|s| (s.status, s.attempts));
        if current != Some((StepStatus::Running, progress.attempt)) {
            let _ = progress.stored.send(false);
            return Ok(());
        }
        self.stage(progress.events)?;
        self.flush().await?;
        // An attempt that stopped waiting changes nothing.
        let _ = progress.stored.send(true);
        Ok(())
    }

    /// Records a decision asked while this driver drives the run (after
    /// storing what is staged), and answers with the state after it or
    /// the refusal.
    async fn answer(&mut self, asked: Asked) -> Result<(), EngineError> {
        self.flush().await?;
        let now = self.engine.clock.now();
        let decided = match steer::gate_decision(&self.state, self.program, asked.call, now) {
            Err(refusal) => Err(EngineError::Refused { run: self.state.run_id.clone(), refusal }),
            Ok(event) => {
                self.frontier.note(&event);
                self.engine.stage(&mut self.state, vec![event], &asked.by, &mut self.staged)?;
                self.flush().await?;
                Ok(self.state.clone())
            }
        };
        // One that stopped waiting for the answer changes nothing.
        let _ = asked.answer.send(decided);
        Ok(())
    }

    /// Stops what is in flight and records nothing more than what is
    /// staged: the run stays `running`, and the next drive starts the
    /// attempts that were in flight again, as the same attempts.
    async fn interrupt(mut self) -> Result<RunState, EngineError> {
        for (_, handle) in self.in_flight.drain() {
            handle.abort();
        }
        self.flush().await?;
        Ok(self.state)
    }

    /// Stops what is in flight and records it, the groups it ran in and
    /// the run cancelled; child runs of its steps are cancelled with it.
    async fn cancel(mut self) -> Result<RunState, EngineError> {
        let in_flight: Vec<StepPath> = self.in_flight.keys().cloned().collect();
        for path in &in_flight {
            self.stop_attempt(path);
        }
        // What is left are attempts whose child runs cancel now; what they
        // would record is refused (they stop).
        loop {
            tokio::select! {
                joined = self.tasks.next() => if joined.is_none() { break },
                Some(progress) = self.recorded.recv() => {
                    let _ = progress.stored.send(false);
                }
            }
        }
        self.in_flight.clear();
        // An ended run records nothing more.
        let events = steer::stop(&self.state, Request::Cancel).unwrap_or_default();
        self.cancelled.extend(cancelled_steps(&events));
        self.stage_as_requester(events)?;
        self.flush().await?;
        Ok(self.state)
    }

    /// Stages what a pause or cancel records, as done by whoever asked for
    /// it (the engine when nobody said).
    fn stage_as_requester(&mut self, kinds: Vec<EventKind>) -> Result<(), EngineError> {
        let actor = self.requester.requester().unwrap_or_else(|| self.engine.actor.clone());
        kinds.iter().for_each(|kind| self.frontier.note(kind));
        self.engine.stage(&mut self.state, kinds, &actor, &mut self.staged)
    }

    /// Records decisions until only starts remain, starts those (unless a
    /// pause is requested), and returns when the next retry is due.
    async fn settle(&mut self) -> Result<Option<cairn_domain::state::Timestamp>, EngineError> {
        loop {
            let now = self.engine.clock.now();
            let actions =
                decide_with(&mut self.frontier, &self.state, self.program, &self.engine.renderer, now);
            let mut records = Vec::new();
            let mut starts = Vec::new();
            let mut wake = None;
            for action in actions {
                match action {
                    Action::Record(kind) => records.push(kind),
                    Action::Start { path, attempt } => starts.push((path, attempt)),
                    Action::WakeAt(t) => wake = Some(t),
                }
            }
            if !records.is_empty() {
                let cancelled = cancelled_steps(&records);
                for path in &cancelled {
                    self.stop_attempt(path);
                }
                self.cancelled.extend(cancelled);
                self.stage(records)?;
                continue;
            }
            if self.requested() != Control::Run {
                return Ok(None);
            }
            if starts.is_empty() {
                return Ok(wake);
            }
            // One append for every start, the prompts the attempts send, and
            // all staged before them: all are on disk before any attempt runs.
            let started = starts
                .iter()
                .map(|(path, attempt)| EventKind::StepStarted { path: path.clone(), attempt: *attempt });
            self.stage(started.collect())?;
            let jobs: Vec<_> = starts.iter().map(|(path, attempt)| self.prepare(path, *attempt)).collect();
            let prompts = starts.iter().zip(&jobs).filter_map(|((path, attempt), job)| match job {
                Some((Job::Chat(chat), _)) => {
                    let (system, prompt) = chat.prompt();
                    Some(EventKind::PromptRendered { path: path.clone(), attempt: *attempt, system, prompt })
                }
                _ => None,
            });
            let prompts: Vec<_> = prompts.collect();
            self.stage(prompts)?;
            self.flush().await?;
            for ((path, attempt), job) in starts.into_iter().zip(jobs) {
                if let Some(job) = job {
                    self.spawn(path, attempt, job);
                }
            }
            // Starting changes nothing else `decide` looks at: it said all
            // there was to say in this round, wake included.
            return Ok(wake);
        }
    }

    /// Renders one attempt (recorded as started already), with the step's
    /// time limit; `None` when the step is not in the run's program.
    fn prepare(&self, path: &StepPath, attempt: u32) -> Option<(Job, Option<Duration>)> {
        let (frame, i) = Frame::of(self.program, &self.state, path)?;
        let block = self.program.block(frame.block());
        let engine = self.engine;
        let own = self.state.steps.get(path);
        let feedback = own.and_then(|s| s.feedback.as_deref());
        let context =
            engine.renderer.context(&self.state, self.program, &frame, &block.reads[i], feedback, &[]);
        let job = job::Attempt {
            program: self.program,
            renderer: &engine.renderer,
            ctx: &context,
            ports: &engine.ports,
            run_id: &self.state.run_id,
            path,
            key: idempotency_key(&self.state, path, attempt),
            turns: own.map(|s| s.turns.clone()).unwrap_or_default(),
            sink: Arc::clone(&engine.sink),
            attempt,
            secrets: &engine.secrets,
            sessions: &self.state.sessions,
            recorder: Recorder { sender: self.progress.clone(), path: path.clone(), attempt },
            tool_calls: own.map(|s| s.tool_calls.clone()).unwrap_or_default(),
            child: own.and_then(|s| s.child.clone()),
        }
        .prepare(&block.steps[i]);
        // A child run keeps its own time (its workflow's `timeout`).
        let timeout = match &job {
            Job::Child(_) => None,
            _ => self.program.timeout(&block.steps[i]).map(|d| d.to_std()),
        };
        Some((job, timeout))
    }

    /// Starts one rendered attempt.
    fn spawn(&mut self, path: StepPath, attempt: u32, (job, timeout): (Job, Option<Duration>)) {
        let clock = Arc::clone(&self.engine.clock);
        let task_path = path.clone();
        let work: BoxFuture<'a, Finished> = match job {
            Job::Child(call) => {
                let of = ChildOf {
                    run: self.state.run_id.clone(),
                    child: child_run_id(&self.state, &path, attempt),
                    path: path.clone(),
                    by: self.state.triggered_by.clone(),
                    priority: self.state.priority,
                    depth: self.state.parent.as_ref().map_or(0, |p| p.depth),
                };
                self.engine.child_attempt(of, call)
            }
            job => job::execute(job).boxed(),
        };
        let (attempt_run, handle) = abortable(async move {
            let run = async move {
                match timeout {
                    None => work.await,
                    Some(limit) => tokio::select! {
                        finished = work => finished,
                        () = clock.sleep(limit) => timed_out(limit),
                    },
                }
            };
            // A port that panics fails its attempt, not the run's driver.
            let finished = std::panic::AssertUnwindSafe(run).catch_unwind().await.unwrap_or_else(|_| {
                job::Finished::plain(cairn_domain::decide::Outcome::Failed {
                    error: StepError {
                        class: ErrorClass::Fatal,
                        message: "the step's executor panicked".into(),
                        hint: Some("a bug in the port or handler that ran it; its log has the panic".into()),
                        cause: None,
                    },
                    output: None,
                    retry_after: None,
                })
            });
            (task_path, attempt, finished)
        });
        self.tasks.push(attempt_run.map(Result::ok).boxed());
        self.in_flight.insert(path, handle);
    }

    /// Stages how an attempt ended (stored with the next append), unless the
    /// step moved on meanwhile (cancelled, or reset by a goto).
    fn finish(&mut self, path: &StepPath, attempt: u32, finished: Finished) -> Result<(), EngineError> {
        let Some(step) = self.state.steps.get(path).filter(|s| s.attempts == attempt) else { return Ok(()) };
        let on_child = step.status == StepStatus::Waiting && step.waits_on_child;
        if step.status != StepStatus::Running && !on_child {
            return Ok(());
        }
        // A child that waits as it did changes nothing.
        if let Outcome::ChildWaits { run_id, wait } = &finished.outcome
            && on_child
            && step.child.as_ref() == Some(run_id)
            && step.wait == Some(*wait)
        {
            return Ok(());
        }
        let mut events = Vec::new();
        events.extend(finished.usage.into_iter().map(|used| used.recorded(path, attempt)));
        for reason in finished.repairs {
            events.push(EventKind::OutputRepaired { path: path.clone(), attempt, reason });
        }
        if let (Some((agent, turns)), cairn_domain::decide::Outcome::Succeeded(_)) =
            (finished.session, &finished.outcome)
        {
            events.push(EventKind::SessionExtended { agent, path: path.clone(), turns });
        }
        let now = self.engine.clock.now();
        events.extend(attempt_finished(&self.state, self.program, path, attempt, finished.outcome, now));
        self.stage(events)
    }
}

/// Whether the step at `path` runs as attempts (a group step does not: its
/// instances do).
fn is_attempt(program: &Program, path: &StepPath) -> bool {
    program.step(path).is_some_and(|s| s.body().is_none())
}

/// Waits for the next control request; `false` when nobody can send one any more.
async fn control_changed(control: &mut Option<watch::Receiver<Control>>) -> bool {
    match control {
        Some(c) => c.changed().await.is_ok(),
        None => std::future::pending().await,
    }
}

fn timed_out(limit: Duration) -> Finished {
    Finished {
        outcome: cairn_domain::decide::Outcome::Failed {
            error: StepError {
                class: ErrorClass::Timeout,
                message: format!(
                    "the attempt did not finish within {}",
                    cairn_domain::duration::Duration::from_millis(limit.as_millis() as u64)
                ),
                hint: Some("raise the step's `timeout`, or look at why it hangs".into()),
                cause: None,
            },
            output: None,
            retry_after: None,
        },
        usage: Vec::new(),
        repairs: Vec::new(),
        session: None,
    }
}
