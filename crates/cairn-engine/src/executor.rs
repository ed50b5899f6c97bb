//! The executor: drives a run by asking the pure core what to do, recording
//! each transition in the store before acting on it, and running step
//! attempts concurrently through the ports.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use cairn_domain::decide::{Action, Frontier, Program, attempt_finished, decide_with, idempotency_key};
use cairn_domain::definition::{StepKind, Workflow};
use cairn_domain::id::RunId;
use cairn_domain::program::{Frame, Price};
use cairn_domain::render::Renderer;
use cairn_domain::state::{
    ErrorClass, Event, EventKind, RunState, RunStatus, StepError, StepPath, StepStatus, WaitKind, word,
};
use cairn_ports::{
    Clock, CommandOutput, CommandRunner, CommandSpec, EventSink, LiveEvent, LlmProvider, NewRun, NoSink,
    PortError, RunStore, StepHandler,
};
use futures_util::FutureExt;
use futures_util::future::{AbortHandle, BoxFuture, abortable};
use futures_util::stream::{FuturesUnordered, StreamExt};
use serde_json::Value;
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use tokio::sync::watch;

use crate::job::{self, Finished, Ports};
use crate::{EngineError, SystemClock};

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

/// A definition to run: the validated workflow and the exact text it came from.
pub struct Definition {
    /// The file name, as given.
    pub name: String,
    /// The exact text; the run records it and its hash.
    pub text: String,
    /// The validated workflow.
    pub workflow: Workflow,
    /// Files the definition names (schemas), by the path it names them with.
    pub files: std::collections::BTreeMap<String, String>,
}

/// Runs workflows through the ports it was built with.
pub struct Engine {
    store: Arc<dyn RunStore>,
    clock: Arc<dyn Clock>,
    sink: Arc<dyn EventSink>,
    ports: Ports,
    renderer: Renderer,
    actor: String,
    control: Option<watch::Receiver<Control>>,
    prices: BTreeMap<String, Price>,
}

/// Builds an [`Engine`]: a store is required, everything else has a default
/// (system clock, no live sink, no providers, commands refused).
pub struct EngineBuilder {
    store: Arc<dyn RunStore>,
    clock: Arc<dyn Clock>,
    sink: Arc<dyn EventSink>,
    providers: HashMap<String, Arc<dyn LlmProvider>>,
    commands: Arc<dyn CommandRunner>,
    handlers: HashMap<String, Arc<dyn StepHandler>>,
    actor: String,
    control: Option<watch::Receiver<Control>>,
    prices: BTreeMap<String, Price>,
}

impl EngineBuilder {
    /// A builder over `store`.
    pub fn new(store: Arc<dyn RunStore>) -> Self {
        Self {
            store,
            clock: Arc::new(SystemClock),
            sink: Arc::new(NoSink),
            providers: HashMap::new(),
            commands: Arc::new(NoCommands),
            handlers: HashMap::new(),
            actor: "engine".into(),
            control: None,
            prices: BTreeMap::new(),
        }
    }

    /// What models cost, for runs' `defaults.budget_usd`.
    pub fn prices(mut self, prices: BTreeMap<String, Price>) -> Self {
        self.prices = prices;
        self
    }

    /// Where pause and cancel requests come from (a signal handler, a host).
    pub fn control(mut self, control: watch::Receiver<Control>) -> Self {
        self.control = Some(control);
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

    /// What runs command steps.
    pub fn commands(mut self, runner: Arc<dyn CommandRunner>) -> Self {
        self.commands = runner;
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
            ports: Ports { providers: self.providers, commands: self.commands, handlers: self.handlers },
            renderer: Renderer::default(),
            actor: self.actor,
            control: self.control,
            prices: self.prices,
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
        )
        .with_hint("list it under [commands] allow in cairn.toml"))
    }
}

impl Engine {
    /// Creates a run of `def` with `inputs` (checked against the declared
    /// inputs, defaults filled in) and drives it until it completes, fails,
    /// or waits for a person. A run whose agents need a provider nobody
    /// configured fails before its first step, naming the settings.
    pub async fn run(&self, def: Definition, inputs: Value, run_id: RunId) -> Result<RunState, EngineError> {
        let inputs = cairn_domain::inputs::resolve(&def.workflow, inputs)
            .map_err(|p| EngineError::Inputs(p.join("; ")))?;
        let hash = format!("{:x}", Sha256::digest(def.text.as_bytes()));
        let created = Event {
            seq: 1,
            at: self.clock.now(),
            actor: self.actor.clone(),
            kind: EventKind::RunCreated {
                run_id: run_id.clone(),
                workflow: def.workflow.id.clone(),
                definition_hash: hash.clone(),
                inputs,
            },
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
        let mut state = RunState::create(&created)?;
        self.sink.emit(&run_id, &LiveEvent::Recorded(&created));
        let program = self.program(def.workflow)?;
        if let Some(error) = self.missing_provider(&program) {
            self.record(&mut state, vec![EventKind::RunFailed { error }]).await?;
            return Ok(state);
        }
        self.drive(&program, state).await
    }

    /// A workflow prepared for running, with this engine's prices.
    fn program(&self, workflow: Workflow) -> Result<Program, EngineError> {
        Program::new(workflow)
            .map(|p| p.with_prices(self.prices.clone()))
            .map_err(|e| EngineError::Definition(e.to_string()))
    }

    /// The error of a run whose agents name a provider this engine lacks.
    fn missing_provider(&self, program: &Program) -> Option<StepError> {
        let wf = program.workflow();
        let used = used_agents(&wf.steps);
        let (agent, provider) = wf
            .agents
            .iter()
            .filter(|(name, _)| used.contains(name.as_str()))
            .find(|(_, a)| !self.ports.providers.contains_key(a.provider.as_str()))
            .map(|(name, a)| (name.to_string(), a.provider.to_string()))?;
        let hint = if provider == "default" {
            "set CAIRN_LLM_BASE_URL (with CAIRN_LLM_API_KEY and CAIRN_LLM_MODEL as needed), or add \
             [providers.default] to cairn.toml, or run with --llm mock"
                .to_owned()
        } else {
            format!("add [providers.{provider}] to cairn.toml, or run with --llm mock")
        };
        Some(StepError {
            class: ErrorClass::Fatal,
            message: format!("agent `{agent}` uses provider `{provider}`, which is not configured"),
            hint: Some(hint),
        })
    }

    /// Appends events atomically after the state's last one, then applies
    /// them and tells the sink: nothing takes effect before it is stored.
    async fn record(&self, state: &mut RunState, kinds: Vec<EventKind>) -> Result<(), EngineError> {
        self.record_as(state, kinds, &self.actor).await
    }

    /// [`Engine::record`], naming `actor` as who caused the events.
    async fn record_as(
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

    /// Carries on a stored run: folds its log (from the latest snapshot),
    /// then drives it. A step that was in flight when its driver died runs
    /// again with the same attempt number, so the same idempotency key; a
    /// blocked step is retried; a paused or crashed run goes on where it
    /// stopped. `workflow` must be the run's recorded definition.
    pub async fn resume(&self, run_id: &RunId, workflow: Workflow) -> Result<RunState, EngineError> {
        let state = self.load(run_id).await?;
        if state.status.is_terminal() {
            return Err(EngineError::Finished { run: run_id.to_string(), status: state.status });
        }
        let program = self.program(workflow)?;
        let mut drive = Drive::new(self, &program, state);
        let mut events = Vec::new();
        for (path, step) in &drive.state.steps {
            if step.status == StepStatus::Waiting && step.wait == Some(WaitKind::Block) {
                events.push(EventKind::StepReset { path: path.clone() });
            }
        }
        let status = drive.state.status;
        let resumable = status.is_waiting() || matches!(status, RunStatus::Paused | RunStatus::Pending);
        if resumable {
            events.push(EventKind::RunStarted);
        }
        self.record(&mut drive.state, events).await?;
        let in_flight: Vec<(StepPath, u32)> = drive
            .state
            .steps
            .iter()
            .filter(|(p, s)| s.status == StepStatus::Running && is_attempt(&program, p))
            .map(|(p, s)| (p.clone(), s.attempts))
            .collect();
        for (path, attempt) in in_flight {
            drive.spawn(path, attempt);
        }
        drive.run().await
    }

    /// Records a person's decision at a gate of a run that waits there,
    /// without driving the run (`resume` applies it). `gate` may be left out
    /// when exactly one gate waits. Refused, with a message saying why: a
    /// run or step not waiting for a decision, a role the gate does not
    /// list (or none where it lists some), an answer to a gate that asked
    /// no questions.
    pub async fn decide_gate(
        &self,
        run_id: &RunId,
        workflow: &Workflow,
        call: GateCall,
    ) -> Result<RunState, EngineError> {
        let mut state = self.load(run_id).await?;
        if state.status.is_terminal() {
            return Err(EngineError::Finished { run: run_id.to_string(), status: state.status });
        }
        let want: &[WaitKind] = match call.decision {
            GateDecision::Approve | GateDecision::Reject => &[WaitKind::Acceptance, WaitKind::Approval],
            GateDecision::Answer(_) => &[WaitKind::Clarification],
        };
        let waiting: Vec<(&StepPath, WaitKind)> = state
            .steps
            .iter()
            .filter(|(_, s)| s.status == StepStatus::Waiting)
            .filter_map(|(p, s)| s.wait.filter(|w| want.contains(w)).map(|w| (p, w)))
            .collect();
        let names = || waiting.iter().map(|(p, _)| format!("`{p}`")).collect::<Vec<_>>().join(", ");
        let what = if matches!(call.decision, GateDecision::Answer(_)) { "questions" } else { "a decision" };
        let found = match &call.gate {
            Some(gate) => waiting.iter().find(|(p, _)| p.as_str() == gate).copied(),
            None if waiting.len() == 1 => waiting.first().copied(),
            None => None,
        };
        let Some((path, wait)) = found.map(|(p, w)| (p.clone(), w)) else {
            let why = match (&call.gate, waiting.len()) {
                (_, 0) => format!("run `{run_id}` is {}: no step waits for {what}", word(state.status)),
                (Some(gate), _) => {
                    format!("step `{gate}` of run `{run_id}` does not wait for {what}; waiting: {}", names())
                }
                (None, _) => {
                    format!("run `{run_id}` waits at several gates ({}): name one with --gate", names())
                }
            };
            return Err(EngineError::Refused(why));
        };
        if let Some(deadline) = state.steps.get(&path).and_then(|s| s.deadline)
            && deadline <= self.clock.now()
        {
            return Err(EngineError::DeadlinePassed { gate: path.to_string(), at: deadline });
        }
        let program = Program::new(workflow.clone()).map_err(|e| EngineError::Definition(e.to_string()))?;
        let step = program
            .step(&path)
            .ok_or_else(|| EngineError::Refused(format!("step `{path}` is not in the run's definition")))?;
        let approvers = step.gate(wait).map_or(&[][..], |(approvers, _)| approvers);
        let event = match call.decision {
            GateDecision::Answer(text) => EventKind::Answered { path, text },
            decision => {
                let listed = || approvers.iter().map(|a| a.as_str()).collect::<Vec<_>>().join(", ");
                match &call.role {
                    None if !approvers.is_empty() => {
                        return Err(EngineError::Refused(format!(
                            "`{path}` needs a decision from one of its roles ({}): say which with --as",
                            listed()
                        )));
                    }
                    Some(role) if !approvers.is_empty() && !approvers.iter().any(|a| a.as_str() == role) => {
                        return Err(EngineError::Refused(format!(
                            "role `{role}` is not an approver of `{path}`: its roles are {}",
                            listed()
                        )));
                    }
                    _ => {}
                }
                EventKind::GateDecided {
                    path,
                    approve: decision == GateDecision::Approve,
                    role: call.role,
                    comment: call.comment,
                    timed_out: false,
                }
            }
        };
        self.record_as(&mut state, vec![event], &call.by).await?;
        Ok(state)
    }

    /// Pauses or cancels a run nobody drives (its driver died, or it waits
    /// for a person): running and waiting steps are recorded cancelled with a
    /// cancel. Cancelling a cancelled run changes nothing; any other ended
    /// run is refused.
    pub async fn stop(&self, run_id: &RunId, request: Control) -> Result<RunState, EngineError> {
        let mut state = self.load(run_id).await?;
        let wanted = match request {
            Control::Run => return Ok(state),
            Control::Pause => RunStatus::Paused,
            Control::Cancel => RunStatus::Cancelled,
        };
        if state.status == wanted {
            return Ok(state);
        }
        if state.status.is_terminal() {
            return Err(EngineError::Finished { run: run_id.to_string(), status: state.status });
        }
        let mut events: Vec<EventKind> = Vec::new();
        if request == Control::Cancel {
            for (path, step) in &state.steps {
                if matches!(step.status, StepStatus::Running | StepStatus::Waiting) {
                    events.push(EventKind::StepCancelled { path: path.clone() });
                }
            }
        }
        events.push(if request == Control::Cancel { EventKind::RunCancelled } else { EventKind::RunPaused });
        self.record(&mut state, events).await?;
        Ok(state)
    }

    /// A new run `new_id` with the definition and inputs of `source` and its
    /// events up to checkpoint `seq` (time travel). It is left paused, so
    /// `resume` runs only what came after the checkpoint.
    pub async fn fork(&self, source: &RunId, seq: u64, new_id: RunId) -> Result<RunState, EngineError> {
        let stored = self.store.load(source).await?;
        let marks = cairn_domain::checkpoint::checkpoints(&stored.events);
        if !marks.iter().any(|c| c.seq == seq) {
            let last = marks.last().map(|c| c.seq);
            return Err(EngineError::NoCheckpoint { run: source.to_string(), seq, last });
        }
        let Some(EventKind::RunCreated { workflow, definition_hash, inputs, .. }) =
            stored.events.first().map(|e| e.kind.clone())
        else {
            return Err(EngineError::Store(cairn_ports::StoreError::Corrupt(format!(
                "run `{source}` has no start"
            ))));
        };
        let created = Event {
            seq: 1,
            at: self.clock.now(),
            actor: self.actor.clone(),
            kind: EventKind::RunCreated {
                run_id: new_id.clone(),
                workflow: workflow.clone(),
                definition_hash: definition_hash.clone(),
                inputs,
            },
        };
        let mut state = RunState::create(&created)?;
        self.store
            .create(NewRun {
                run_id: new_id,
                workflow,
                definition_name: stored.definition_name,
                definition: stored.definition,
                files: stored.files,
                definition_hash,
                created,
            })
            .await?;
        let copied = stored.events[1..seq as usize].iter().map(|e| e.kind.clone()).collect();
        self.record(&mut state, copied).await?;
        if state.status == RunStatus::Running {
            self.record(&mut state, vec![EventKind::RunPaused]).await?;
        }
        Ok(state)
    }

    /// A run's state, folded from its latest snapshot and the events after it.
    pub async fn load(&self, run_id: &RunId) -> Result<RunState, EngineError> {
        let stored = self.store.load(run_id).await?;
        let snapshot = self.store.latest_snapshot(run_id).await?;
        let (mut state, from) = match snapshot {
            Some(s) if s.seq <= stored.events.len() as u64 => (Some(s.state), s.seq as usize),
            _ => (None, 0),
        };
        for event in &stored.events[from..] {
            match &mut state {
                None => state = Some(RunState::create(event)?),
                Some(s) => s.apply(event)?,
            }
        }
        state.ok_or_else(|| {
            EngineError::Store(cairn_ports::StoreError::Corrupt(format!("run `{run_id}` has no events")))
        })
    }

    /// Drives a run until it is terminal, or waits with nothing in flight.
    async fn drive(&self, program: &Program, state: RunState) -> Result<RunState, EngineError> {
        Drive::new(self, program, state).run().await
    }

    /// Keeps a snapshot of the state (at pauses and gates), so loading a
    /// long run replays only the tail.
    async fn snapshot(&self, state: &RunState) -> Result<(), EngineError> {
        let snapshot = cairn_ports::Snapshot { seq: state.seq, state: state.clone() };
        self.store.put_snapshot(&state.run_id, snapshot).await.map_err(EngineError::from)
    }
}

/// A person's decision at a gate, as `approve`, `reject` and `answer` give it.
#[derive(Debug, Clone)]
pub struct GateCall {
    /// The waiting step's path; `None`: the one gate that waits.
    pub gate: Option<String>,
    /// What they decided.
    pub decision: GateDecision,
    /// The role they decide as.
    pub role: Option<String>,
    /// Their comment.
    pub comment: Option<String>,
    /// Who they are (the event's actor).
    pub by: String,
}

/// Approve, reject, or answer a model's questions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GateDecision {
    /// Approve the output or the approval step.
    Approve,
    /// Reject it.
    Reject,
    /// Answer the questions.
    Answer(String),
}

/// What a driver is asked to do from outside (a signal, a host).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Control {
    /// Drive on.
    #[default]
    Run,
    /// Start nothing new; let running steps finish; record `run_paused`.
    Pause,
    /// Stop running steps; record them and the run `cancelled`.
    Cancel,
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
    /// Events applied to `state` but not yet stored: they are stored, in
    /// one append, before anything acts on them or the driver waits.
    staged: Vec<Event>,
    /// Which steps `decide` looks at next round: every staged event is noted.
    frontier: Frontier,
}

impl<'a> Drive<'a> {
    fn new(engine: &'a Engine, program: &'a Program, state: RunState) -> Self {
        Self {
            engine,
            program,
            state,
            tasks: FuturesUnordered::new(),
            in_flight: HashMap::new(),
            control: engine.control.clone(),
            staged: Vec::new(),
            frontier: Frontier::default(),
        }
    }

    /// Stages events of the engine (see [`Engine::stage`]).
    fn stage(&mut self, kinds: Vec<EventKind>) -> Result<(), EngineError> {
        kinds.iter().for_each(|kind| self.frontier.note(kind));
        self.engine.stage(&mut self.state, kinds, &self.engine.actor, &mut self.staged)
    }

    /// Stores what is staged.
    async fn flush(&mut self) -> Result<(), EngineError> {
        self.engine.persist(&self.state, &mut self.staged).await
    }

    fn requested(&self) -> Control {
        self.control.as_ref().map_or(Control::Run, |c| *c.borrow())
    }

    async fn run(mut self) -> Result<RunState, EngineError> {
        loop {
            match self.requested() {
                Control::Cancel => return self.cancel().await,
                Control::Pause if self.tasks.is_empty() && !self.state.status.is_terminal() => {
                    self.stage(vec![EventKind::RunPaused])?;
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
            }
        }
    }

    /// Stops what is in flight and records it, the groups it ran in and
    /// the run cancelled.
    async fn cancel(mut self) -> Result<RunState, EngineError> {
        for (_, handle) in self.in_flight.drain() {
            handle.abort();
        }
        let mut events: Vec<EventKind> = self
            .state
            .steps
            .iter()
            .filter(|(_, s)| matches!(s.status, StepStatus::Running | StepStatus::Waiting))
            .map(|(path, _)| EventKind::StepCancelled { path: path.clone() })
            .collect();
        if !self.state.status.is_terminal() {
            events.push(EventKind::RunCancelled);
        }
        self.stage(events)?;
        self.flush().await?;
        Ok(self.state)
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
                for kind in &records {
                    if let EventKind::StepCancelled { path } = kind
                        && let Some(handle) = self.in_flight.remove(path)
                    {
                        handle.abort();
                    }
                }
                self.stage(records)?;
                continue;
            }
            if self.requested() != Control::Run {
                return Ok(None);
            }
            if starts.is_empty() {
                return Ok(wake);
            }
            // One append for every start and all staged before them: all
            // are on disk before any attempt runs.
            let started = starts
                .iter()
                .map(|(path, attempt)| EventKind::StepStarted { path: path.clone(), attempt: *attempt });
            self.stage(started.collect())?;
            self.flush().await?;
            for (path, attempt) in starts {
                self.spawn(path, attempt);
            }
            // Starting changes nothing else `decide` looks at: it said all
            // there was to say in this round, wake included.
            return Ok(wake);
        }
    }

    /// Renders and starts one attempt (recorded as started already).
    fn spawn(&mut self, path: StepPath, attempt: u32) {
        let Some((frame, i)) = Frame::of(self.program, &self.state, &path) else { return };
        let block = self.program.block(frame.block());
        let step = &block.steps[i];
        let engine = self.engine;
        let key = idempotency_key(&self.state, &path, attempt);
        let own = self.state.steps.get(&path);
        let feedback = own.and_then(|s| s.feedback.as_deref());
        let context =
            engine.renderer.context(&self.state, self.program, &frame, &block.reads[i], feedback, &[]);
        let turns = own.map(|s| s.turns.clone()).unwrap_or_default();
        let job = job::Attempt {
            program: self.program,
            renderer: &engine.renderer,
            ctx: &context,
            ports: &engine.ports,
            run_id: &self.state.run_id,
            path: &path,
            key,
            turns,
            sink: Arc::clone(&engine.sink),
            sessions: &self.state.sessions,
        }
        .prepare(step);
        let timeout = self.program.timeout(step).map(|d| d.to_std());
        let clock = Arc::clone(&engine.clock);
        let task_path = path.clone();
        let (attempt_run, handle) = abortable(async move {
            let run = async move {
                match timeout {
                    None => job::execute(job).await,
                    Some(limit) => tokio::select! {
                        finished = job::execute(job) => finished,
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
        let current = self.state.steps.get(path).map(|s| (s.status, s.attempts));
        if current != Some((StepStatus::Running, attempt)) {
            return Ok(());
        }
        let mut events = Vec::new();
        for (model, usage) in finished.usage {
            events.push(EventKind::UsageRecorded { path: path.clone(), attempt, model, usage });
        }
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
            },
            output: None,
            retry_after: None,
        },
        usage: Vec::new(),
        repairs: Vec::new(),
        session: None,
    }
}

/// Names of agents that steps (and their QA judges) use.
fn used_agents(steps: &[cairn_domain::definition::Step]) -> std::collections::BTreeSet<String> {
    let mut used = std::collections::BTreeSet::new();
    for step in steps {
        if let StepKind::Agent(a) = &step.kind {
            used.insert(a.agent.to_string());
            if let Some(qa) = &a.qa {
                used.insert(qa.agent.to_string());
            }
        }
        if let Some(body) = step.body() {
            used.extend(used_agents(body));
        }
    }
    used
}
