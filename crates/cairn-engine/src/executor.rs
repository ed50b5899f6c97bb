//! The executor: drives a run by asking the pure core what to do, recording
//! each transition in the store before acting on it, and running step
//! attempts concurrently through the ports.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use cairn_domain::decide::{Action, Program, attempt_finished, decide, idempotency_key};
use cairn_domain::definition::{StepKind, Workflow};
use cairn_domain::id::RunId;
use cairn_domain::render::Renderer;
use cairn_domain::state::{
    ErrorClass, Event, EventKind, RunState, StepError, StepPath, StepStatus, WaitKind,
};
use cairn_ports::{
    Clock, CommandOutput, CommandRunner, CommandSpec, EventSink, LiveEvent, LlmProvider, NewRun, NoSink,
    PortError, RunStore, StepHandler,
};
use serde_json::Value;
use sha2::{Digest, Sha256};
use tokio::task::{AbortHandle, JoinSet};

use crate::job::{self, Finished, Ports};
use crate::{EngineError, SystemClock};

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
        }
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
        let program = Program::new(def.workflow).map_err(|e| EngineError::Definition(e.to_string()))?;
        if let Some(error) = self.missing_provider(&program) {
            self.record(&mut state, vec![EventKind::RunFailed { error }]).await?;
            return Ok(state);
        }
        self.drive(&program, state).await
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
        if kinds.is_empty() {
            return Ok(());
        }
        let at = self.clock.now();
        let events: Vec<Event> = kinds
            .into_iter()
            .enumerate()
            .map(|(i, kind)| Event { seq: state.seq + 1 + i as u64, at, actor: self.actor.clone(), kind })
            .collect();
        self.store.append(&state.run_id, state.seq, &events).await?;
        for event in &events {
            state.apply(event)?;
            self.sink.emit(&state.run_id, &LiveEvent::Recorded(event));
        }
        Ok(())
    }

    /// Drives a run until it is terminal, or waits with nothing in flight.
    async fn drive(&self, program: &Program, mut state: RunState) -> Result<RunState, EngineError> {
        let mut tasks: JoinSet<(StepPath, u32, Finished)> = JoinSet::new();
        let mut in_flight: HashMap<StepPath, AbortHandle> = HashMap::new();
        loop {
            let wake = self.settle(program, &mut state, &mut tasks, &mut in_flight).await?;
            let stopped = state.status.is_terminal()
                || !matches!(state.status, cairn_domain::state::RunStatus::Running);
            if tasks.is_empty() && (stopped || wake.is_none()) {
                return Ok(state);
            }
            let sleep = wake.map(|t| Duration::from_millis(t.0.saturating_sub(self.clock.now().0)));
            tokio::select! {
                joined = tasks.join_next(), if !tasks.is_empty() => {
                    let Some(Ok((path, attempt, finished))) = joined else { continue };
                    in_flight.remove(&path);
                    self.finish(program, &mut state, &path, attempt, finished).await?;
                }
                () = self.clock.sleep(sleep.unwrap_or_default()), if sleep.is_some() => {}
            }
        }
    }

    /// Records decisions until only starts remain, starts those, and returns
    /// when the next retry is due.
    async fn settle(
        &self,
        program: &Program,
        state: &mut RunState,
        tasks: &mut JoinSet<(StepPath, u32, Finished)>,
        in_flight: &mut HashMap<StepPath, AbortHandle>,
    ) -> Result<Option<cairn_domain::state::Timestamp>, EngineError> {
        loop {
            let actions = decide(state, program, &self.renderer, self.clock.now());
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
                        && let Some(handle) = in_flight.remove(path)
                    {
                        handle.abort();
                    }
                }
                self.record(state, records).await?;
                continue;
            }
            if starts.is_empty() {
                return Ok(wake);
            }
            for (path, attempt) in starts {
                let Some(step) = program.step(&path) else { continue };
                let mut events = vec![EventKind::StepStarted { path: path.clone(), attempt }];
                if matches!(step.kind, StepKind::Approval(_)) {
                    events.push(EventKind::StepWaiting { path: path.clone(), wait: WaitKind::Approval });
                    self.record(state, events).await?;
                    continue;
                }
                self.record(state, events).await?;
                let key = idempotency_key(state, &path, attempt);
                let context =
                    self.renderer.context(state, program.workflow(), program.reads(&path), None, &[]);
                let job = job::Attempt {
                    program,
                    renderer: &self.renderer,
                    ctx: &context,
                    ports: &self.ports,
                    run_id: &state.run_id,
                    path: &path,
                    key,
                }
                .prepare(step);
                let timeout = program.timeout(step).map(|d| d.to_std());
                let clock = Arc::clone(&self.clock);
                let task_path = path.clone();
                let handle = tasks.spawn(async move {
                    let finished = match timeout {
                        None => job::execute(job).await,
                        Some(limit) => tokio::select! {
                            finished = job::execute(job) => finished,
                            () = clock.sleep(limit) => timed_out(limit),
                        },
                    };
                    (task_path, attempt, finished)
                });
                in_flight.insert(path, handle);
            }
        }
    }

    /// Records how an attempt ended, unless the step moved on meanwhile
    /// (cancelled, or reset by a goto).
    async fn finish(
        &self,
        program: &Program,
        state: &mut RunState,
        path: &StepPath,
        attempt: u32,
        finished: Finished,
    ) -> Result<(), EngineError> {
        let current = state.steps.get(path).map(|s| (s.status, s.attempts));
        if current != Some((StepStatus::Running, attempt)) {
            return Ok(());
        }
        let mut events = Vec::new();
        if let Some((model, usage)) = finished.usage {
            events.push(EventKind::UsageRecorded { path: path.clone(), attempt, model, usage });
        }
        events.extend(attempt_finished(state, program, path, attempt, finished.outcome, self.clock.now()));
        self.record(state, events).await
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
        usage: None,
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
