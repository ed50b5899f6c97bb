//! One attempt of one step: rendered up front from the run's state (so a
//! template error fails the attempt before any effect), then executed
//! through a port.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use cairn_domain::decide::{Outcome, Program};
use cairn_domain::definition::{AgentDef, OutputFormat, SessionMode, Step, StepKind, Template};
use cairn_domain::id::Name;
use cairn_domain::id::RunId;
use cairn_domain::render::{Context, Renderer};
use cairn_domain::state::EventKind;
use cairn_domain::state::Turn;
use cairn_domain::state::{ErrorClass, StepError, StepPath, TokenUsage};
use cairn_ports::{
    ChatMessage, ChatRequest, CommandRunner, CommandSpec, EventSink, HandlerCall, LiveEvent, LlmProvider,
    PortError, ResponseFormat, Role, Secrets, StepHandler, StreamRedactor, TokenSink, ToolChoice, Tools,
};
use serde_json::{Value, json};

use crate::tooling::{Recorder, ToolLoop};

/// The ports a job may use.
pub(crate) struct Ports {
    pub providers: HashMap<String, Arc<dyn LlmProvider>>,
    /// The provider of agents whose provider is not in `providers`.
    pub every_provider: Option<Arc<dyn LlmProvider>>,
    pub commands: Arc<dyn CommandRunner>,
    pub handlers: HashMap<String, Arc<dyn StepHandler>>,
    /// What agents' tool calls run on.
    pub tools: Arc<dyn Tools>,
}

/// A rendered attempt, ready to execute.
pub(crate) enum Job {
    /// Already decided (a `set` value, or a failure found while rendering).
    Done(Outcome),
    /// An LLM call, with its QA gates.
    Chat(Box<Chat>),
    /// A program.
    Command { runner: Arc<dyn CommandRunner>, spec: CommandSpec },
    /// A host handler.
    Handler { handler: Arc<dyn StepHandler>, call: HandlerCall },
    /// A sub-workflow: its child run, started or gone on with by the driver.
    Child(ChildCall),
}

/// A `workflow:` step's attempt: which workflow, with what inputs, and
/// where the attempt records the link to its child.
pub(crate) struct ChildCall {
    pub callee: cairn_domain::definition::Callee,
    pub inputs: Value,
    pub recorder: Recorder,
    /// The child this attempt recorded already (a driver taking it over).
    pub known: Option<RunId>,
}

impl ChildCall {
    /// Records that the attempt starts `child`, unless it did already;
    /// an error outcome when the attempt may not go on.
    pub(crate) async fn link(&self, child: &RunId) -> Result<(), Outcome> {
        if self.known.as_ref() == Some(child) {
            return Ok(());
        }
        let started = EventKind::ChildStarted {
            path: self.recorder.path.clone(),
            attempt: self.recorder.attempt,
            run_id: child.clone(),
        };
        self.recorder.record(vec![started]).await
    }
}

/// An LLM call and what its answer must pass: the output format and
/// schema, and an LLM judge; a failing answer goes back to the model with
/// the reason, up to `repairs` times.
pub(crate) struct Chat {
    /// The agent asking.
    agent: String,
    provider: Arc<dyn LlmProvider>,
    request: ChatRequest,
    format: OutputFormat,
    schema: Option<Arc<jsonschema::Validator>>,
    repairs: u32,
    clarify: bool,
    /// An interactive step: each answer is the agent's turn, then the person's.
    interactive: bool,
    judge: Option<Judge>,
    /// With `session: reuse`: the agent, and the messages this step adds to
    /// its conversation (the final answer joins them on success).
    session: Option<(String, Vec<Turn>)>,
    /// Where the streamed text of the answers goes; told when each ends.
    live: Option<LiveText>,
    /// The rendered system prompt (as sent) and prompt, for the record.
    shown: (Option<String>, String),
    /// The agent's tools, when it lists some.
    tools: Option<ToolLoop>,
    /// The agent's `context` files, and where they are read.
    context: Option<(Arc<dyn Tools>, Vec<String>)>,
}

impl Chat {
    /// What the call sends the model, rendered: the system prompt as sent
    /// and the step's prompt.
    pub(crate) fn prompt(&self) -> (Option<String>, String) {
        self.shown.clone()
    }
}

/// The QA judge of a step: its agent's provider and the request the answer
/// is added to, and the pass condition with the step's context.
pub(crate) struct Judge {
    /// The judging agent.
    agent: String,
    provider: Arc<dyn LlmProvider>,
    request: ChatRequest,
    rubric: String,
    pass_when: Template,
    ctx: Context,
}

/// The streamed text of one attempt on its way to the live sink: each
/// answer's pieces pass a [`StreamRedactor`], so a secret is hidden from
/// watchers even when the model's stream splits it between two pieces.
#[derive(Clone)]
struct LiveText {
    sink: Arc<dyn EventSink>,
    run: RunId,
    path: StepPath,
    attempt: u32,
    /// Shared by the provider's token sink and the job, which tells it
    /// when a stream ends.
    text: Arc<Mutex<StreamRedactor>>,
}

impl LiveText {
    /// The listener a provider streams this attempt's answer to.
    fn sink(&self) -> TokenSink {
        let live = self.clone();
        TokenSink(Arc::new(move |piece: &str| {
            // Held while emitting, so pieces reach the sink in order.
            let mut redactor = live.redactor();
            let shown = redactor.push(piece);
            live.emit(&shown);
        }))
    }

    /// The answer's stream ended: what was held back goes out, and the
    /// next answer (a repair) starts afresh.
    fn finish(&self) {
        let mut redactor = self.redactor();
        let rest = redactor.finish();
        self.emit(&rest);
    }

    /// The redactor, also after a panic while it was held: at worst its
    /// held-back text is cut short, and that text is live only.
    fn redactor(&self) -> std::sync::MutexGuard<'_, StreamRedactor> {
        self.text.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Tells the sink `text` as this attempt's token (nothing when empty).
    fn emit(&self, text: &str) {
        if !text.is_empty() {
            let token = LiveEvent::Token { path: &self.path, attempt: self.attempt, text };
            self.sink.emit(&self.run, &token);
        }
    }
}

/// The tokens one LLM call used, and who asked which model.
pub(crate) struct Used {
    pub agent: String,
    pub model: String,
    pub usage: TokenUsage,
}

impl Used {
    /// The event that records it for the attempt.
    pub(crate) fn recorded(self, path: &StepPath, attempt: u32) -> EventKind {
        let Used { agent, model, usage } = self;
        EventKind::UsageRecorded { path: path.clone(), attempt, agent: Some(agent), model, usage }
    }
}

/// What an executed job reports.
pub(crate) struct Finished {
    pub outcome: Outcome,
    /// Tokens used by each LLM call.
    pub usage: Vec<Used>,
    /// Why answers were sent back for repair, in order.
    pub repairs: Vec<String>,
    /// What a `session: reuse` agent's conversation gains: the agent and the messages.
    pub session: Option<(String, Vec<Turn>)>,
}

impl Finished {
    pub(crate) fn plain(outcome: Outcome) -> Self {
        Self { outcome, usage: Vec::new(), repairs: Vec::new(), session: None }
    }
}

/// Told to a model that may ask instead of answering (`clarify: true`).
const CLARIFY_INSTRUCTION: &str = "If you cannot answer well without more information, reply with exactly \
     {\"clarification_questions\": [\"...\"]} listing your questions, and nothing else.";

/// Told to the judge of a QA gate.
const JUDGE_INSTRUCTION: &str = "You judge an answer against a rubric. Reply with exactly \
     {\"pass\": true or false, \"reason\": \"...\"} and nothing else.";

fn failure(class: ErrorClass, message: impl Into<String>, hint: Option<&str>) -> Outcome {
    Outcome::Failed { error: refused(class, message, hint), output: None, retry_after: None }
}

fn port_failure(e: PortError) -> Outcome {
    let retry_after = e.retry_after.map(|d| {
        cairn_domain::duration::Duration::from_millis(u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
    });
    Outcome::Failed { error: e.to_step_error(), output: None, retry_after }
}

/// Everything one attempt is rendered from.
pub(crate) struct Attempt<'a> {
    pub program: &'a Program,
    pub renderer: &'a Renderer,
    pub ctx: &'a Context,
    pub ports: &'a Ports,
    pub run_id: &'a RunId,
    pub path: &'a StepPath,
    pub key: String,
    /// Earlier answers of the step and the replies they drew (rework, questions).
    pub turns: Vec<cairn_domain::state::Turn>,
    /// Where streamed text goes, live.
    pub sink: Arc<dyn EventSink>,
    /// The attempt's number, from 1: streamed text carries it.
    pub attempt: u32,
    /// The host's secrets, hidden from streamed text as from events.
    pub secrets: &'a Secrets,
    /// The run's conversations of `session: reuse` agents, by agent.
    pub sessions: &'a std::collections::BTreeMap<String, Vec<Turn>>,
    /// Where the attempt records its tool calls as it makes them.
    pub recorder: Recorder,
    /// The tool calls the attempt recorded before (a driver taking it over).
    pub tool_calls: Vec<cairn_domain::state::ToolExchange>,
    /// The child run the attempt recorded before (a `workflow:` step).
    pub child: Option<RunId>,
}

fn refused(class: ErrorClass, message: impl Into<String>, hint: Option<&str>) -> StepError {
    StepError { class, message: message.into(), hint: hint.map(str::to_owned), cause: None }
}

const RENDER_HINT: Option<&str> =
    Some("fix the template: validating the definition checks the names it reads");

/// A template that did not render, as the attempt's error. A size limit is
/// `invalid_output`: the data is more than a step may hold, not a template
/// that is wrong, and the run stays as it was (no value was built), so a
/// later driver renders it again and fails it the same way. Anything else
/// is `fatal`, with the hint to fix the template.
fn render_failure(what: &str, e: &cairn_domain::render::RenderError) -> StepError {
    use cairn_domain::render::RenderError;
    let message = format!("cannot render {what}: {e}");
    match e {
        RenderError::TooLarge { .. } => {
            refused(ErrorClass::InvalidOutput, message, Some(cairn_domain::render::TOO_LARGE_HINT))
        }
        RenderError::Template(_) => refused(ErrorClass::Fatal, message, RENDER_HINT),
    }
}

impl Attempt<'_> {
    /// Renders a step's templates into a job; a template that fails to
    /// render fails the attempt before any effect.
    pub(crate) fn prepare(self, step: &Step) -> Job {
        match self.build(step) {
            Ok(job) => job,
            Err(error) => Job::Done(Outcome::Failed { error, output: None, retry_after: None }),
        }
    }

    fn text(&self, t: &Template, what: &str) -> Result<String, StepError> {
        self.renderer.try_text(t, self.ctx).map_err(|e| render_failure(what, &e))
    }

    fn deep(&self, v: &Value, what: &str) -> Result<Value, StepError> {
        self.renderer.try_deep(v, self.ctx).map_err(|e| render_failure(what, &e))
    }

    /// Where this attempt's streamed text goes: the live sink, as the
    /// step's tokens, cleaned of the host's secrets.
    fn live_text(&self) -> LiveText {
        LiveText {
            sink: Arc::clone(&self.sink),
            run: self.run_id.clone(),
            path: self.path.clone(),
            attempt: self.attempt,
            text: Arc::new(Mutex::new(StreamRedactor::new(self.secrets.clone()))),
        }
    }

    /// An agent by name, and the provider it names (`what`: `judge ` or nothing, for messages).
    fn agent(&self, name: &Name, what: &str) -> Result<(&AgentDef, Arc<dyn LlmProvider>), StepError> {
        let agent = self
            .program
            .workflow()
            .agents
            .get(name.as_str())
            .ok_or_else(|| refused(ErrorClass::Fatal, format!("unknown {what}agent `{name}`"), None))?;
        let provider = self
            .ports
            .providers
            .get(agent.provider.as_str())
            .or(self.ports.every_provider.as_ref())
            .ok_or_else(|| {
                refused(
                    ErrorClass::Fatal,
                    format!("provider `{}` of {what}agent `{name}` is not configured", agent.provider),
                    None,
                )
            })?;
        Ok((agent, Arc::clone(provider)))
    }

    /// The judge of a QA gate: its agent, provider and rendered rubric.
    fn judge(&self, qa: &cairn_domain::definition::Qa) -> Result<Judge, StepError> {
        let (agent, provider) = self.agent(&qa.agent, "judge ")?;
        let system = match &agent.system {
            Some(t) => format!("{}\n\n{JUDGE_INSTRUCTION}", self.text(t, "the judge's system prompt")?),
            None => JUDGE_INSTRUCTION.to_owned(),
        };
        let request = ChatRequest {
            model: agent.model.clone(),
            messages: vec![ChatMessage::new(Role::System, system)],
            temperature: agent.temperature,
            max_tokens: agent.max_tokens,
            format: ResponseFormat::JsonSchema(json!({
                "type": "object",
                "required": ["pass", "reason"],
                "properties": {"pass": {"type": "boolean"}, "reason": {"type": "string"}},
            })),
            tools: Vec::new(),
            idempotency_key: format!("{}/judge", self.key),
            tokens: None,
        };
        Ok(Judge {
            agent: qa.agent.to_string(),
            provider,
            request,
            rubric: self.text(&qa.rubric, "the QA rubric")?,
            pass_when: qa.pass_when.clone(),
            ctx: self.ctx.clone(),
        })
    }

    fn build(&self, step: &Step) -> Result<Job, StepError> {
        Ok(match &step.kind {
            StepKind::Set(set) => Job::Done(Outcome::Succeeded(self.deep(&set.value, "`set`")?)),
            // The person ended the conversation: its transcript is the output.
            StepKind::Agent(a) if a.interactive && self.turns.last().is_some_and(Turn::ends_conversation) => {
                Job::Done(Outcome::Succeeded(Turn::transcript(&self.turns)))
            }
            StepKind::Agent(a) => {
                let (agent, provider) = self.agent(&a.agent, "")?;
                let mut system =
                    agent.system.as_ref().map(|t| self.text(t, "the system prompt")).transpose()?;
                if a.clarify {
                    system = Some(match system {
                        Some(s) => format!("{s}\n\n{CLARIFY_INSTRUCTION}"),
                        None => CLARIFY_INSTRUCTION.to_owned(),
                    });
                }
                let mut messages: Vec<ChatMessage> =
                    system.iter().map(|content| ChatMessage::new(Role::System, content.clone())).collect();
                let reuse = agent.session == SessionMode::Reuse;
                let earlier = if reuse { self.sessions.get(a.agent.as_str()) } else { None };
                let prompt = self.text(&a.prompt, "the prompt")?;
                let mut added = vec![Turn::Prompt { text: prompt.clone() }];
                added.extend(self.turns.iter().cloned());
                messages.extend(earlier.into_iter().flatten().chain(&added).map(message));
                let session = reuse.then(|| (a.agent.to_string(), added));
                let output_format = a.output.as_ref().map_or(OutputFormat::Text, |o| o.format);
                let format = match &a.output {
                    Some(o) if o.format == OutputFormat::Json => match &o.schema {
                        Some(schema) => ResponseFormat::JsonSchema(schema.document.clone()),
                        None => ResponseFormat::Json,
                    },
                    _ => ResponseFormat::Text,
                };
                let live = self.live_text();
                let request = ChatRequest {
                    model: agent.model.clone(),
                    messages,
                    temperature: agent.temperature,
                    max_tokens: agent.max_tokens,
                    format,
                    tools: Vec::new(),
                    idempotency_key: self.key.clone(),
                    tokens: Some(live.sink()),
                };
                let judge = a.qa.as_ref().map(|qa| self.judge(qa)).transpose()?;
                let choice = ToolChoice {
                    builtin: agent.tools.iter().map(ToString::to_string).collect(),
                    servers: agent.mcp.iter().map(ToString::to_string).collect(),
                };
                let tools = (!choice.is_empty()).then(|| {
                    ToolLoop::new(
                        Arc::clone(&self.ports.tools),
                        self.run_id.clone(),
                        choice,
                        agent.max_tool_rounds,
                        self.key.clone(),
                        self.recorder.clone(),
                        self.tool_calls.clone(),
                    )
                });
                Job::Chat(Box::new(Chat {
                    agent: a.agent.to_string(),
                    provider,
                    request,
                    format: output_format,
                    schema: self.program.validator(self.path),
                    repairs: a.output.as_ref().map_or(DEFAULT_REPAIRS, |o| o.repair_attempts),
                    clarify: a.clarify,
                    interactive: a.interactive,
                    judge,
                    session,
                    live: Some(live),
                    shown: (system, prompt),
                    tools,
                    context: (!agent.context.is_empty())
                        .then(|| (Arc::clone(&self.ports.tools), agent.context.clone())),
                }))
            }
            StepKind::Command(c) => {
                let mut argv = Vec::with_capacity(c.command.len());
                for (i, arg) in c.command.iter().enumerate() {
                    argv.push(self.text(arg, &format!("command[{i}]"))?);
                }
                let program = argv.remove(0);
                let cwd = c.cwd.as_ref().map(|t| self.text(t, "cwd")).transpose()?;
                let mut env = Vec::new();
                for (name, value) in &c.env {
                    env.push((name.clone(), self.text(value, &format!("env.{name}"))?));
                }
                let stdin = c.stdin.as_ref().map(|t| self.text(t, "stdin")).transpose()?;
                // The program is `command[0]`: `data_led` counts the arguments after it.
                let data_led = c
                    .command
                    .iter()
                    .skip(1)
                    .enumerate()
                    .filter(|(_, t)| t.option_led_by_data())
                    .map(|(i, _)| i);
                let spec = CommandSpec {
                    program,
                    args: argv,
                    cwd,
                    env,
                    stdin,
                    idempotency_key: self.key.clone(),
                    data_led: data_led.collect(),
                    allow_option_args: c.allow_option_args,
                    confine_paths: c.confine_paths,
                };
                Job::Command { runner: Arc::clone(&self.ports.commands), spec }
            }
            StepKind::Workflow(w) => Job::Child(ChildCall {
                callee: w.workflow.clone(),
                inputs: self.deep(&w.with, "`with`")?,
                recorder: self.recorder.clone(),
                known: self.child.clone(),
            }),
            StepKind::Uses(u) => {
                let handler = self.ports.handlers.get(u.handler.as_str()).ok_or_else(|| {
                    refused(
                        ErrorClass::Fatal,
                        format!("no handler named `{}` is registered", u.handler),
                        None,
                    )
                })?;
                let call = HandlerCall {
                    run_id: self.run_id.clone(),
                    path: self.path.clone(),
                    idempotency_key: self.key.clone(),
                    with: self.deep(&u.with, "`with`")?,
                };
                Job::Handler { handler: Arc::clone(handler), call }
            }
            // `decide` starts approvals by waiting, and groups by expanding
            // their instances: neither is ever an attempt.
            _ => {
                return Err(refused(
                    ErrorClass::Fatal,
                    format!("a `{}` step has no attempt to execute", step.kind.key()),
                    None,
                ));
            }
        })
    }
}

/// Executes a job.
pub(crate) async fn execute(job: Job) -> Finished {
    match job {
        Job::Done(outcome) => Finished::plain(outcome),
        Job::Chat(chat) => chat.run().await,
        Job::Command { runner, spec } => match runner.run(spec).await {
            Err(e) => Finished::plain(port_failure(e)),
            Ok(out) => {
                let value = json!({"exit_code": out.exit_code, "stdout": out.stdout, "stderr": out.stderr});
                let outcome = if out.exit_code == 0 {
                    Outcome::Succeeded(value)
                } else {
                    Outcome::Failed {
                        error: StepError {
                            class: ErrorClass::Fatal,
                            message: format!("the command exited with code {}", out.exit_code),
                            hint: Some("read its stderr in the step's output".into()),
                            cause: None,
                        },
                        output: Some(value),
                        retry_after: None,
                    }
                };
                Finished::plain(outcome)
            }
        },
        Job::Child(_) => {
            Finished::plain(failure(ErrorClass::Fatal, "a sub-workflow runs through its run's driver", None))
        }
        Job::Handler { handler, call } => {
            let outcome = match handler.call(call).await {
                Ok(v) => Outcome::Succeeded(v),
                Err(e) => port_failure(e),
            };
            Finished::plain(outcome)
        }
    }
}

/// The most bytes of one `context` file an agent is given.
pub(crate) const MAX_CONTEXT_BYTES: usize = 128 * 1024;

/// Repairs an answer gets when the step sets no `output.repair_attempts`.
const DEFAULT_REPAIRS: u32 = 2;

impl Chat {
    /// Asks the model, checks the answer against its gates, and sends a
    /// failing answer back with the reason until it passes or the repairs
    /// are spent (then class `invalid_output`).
    async fn run(mut self) -> Finished {
        let mut done = Finished::plain(Outcome::Succeeded(Value::Null));
        if let Err(outcome) = self.read_context().await {
            done.outcome = outcome;
            return done;
        }
        if let Err(outcome) = self.open_tools().await {
            done.outcome = outcome;
            return done;
        }
        loop {
            let answer = match self.ask(&mut done).await {
                Ok(answer) => answer,
                Err(outcome) => {
                    done.outcome = outcome;
                    return done;
                }
            };
            if self.clarify
                && let Some(questions) = clarification(&answer.text)
            {
                done.outcome = Outcome::Clarify(questions);
                return done;
            }
            if self.interactive {
                done.outcome = Outcome::Replied(answer.text);
                return done;
            }
            let reason = match self.check(&answer.text) {
                Ok(value) => match self.judge(&value, &mut done).await {
                    Ok(None) => {
                        done.session = self.session.take().map(|(agent, mut turns)| {
                            turns.push(Turn::Answer { text: answer.text.clone() });
                            (agent, turns)
                        });
                        done.outcome = Outcome::Succeeded(value);
                        return done;
                    }
                    Ok(Some(reason)) => reason,
                    Err(outcome) => {
                        done.outcome = outcome;
                        return done;
                    }
                },
                Err(reason) => reason,
            };
            if done.repairs.len() as u32 >= self.repairs {
                let tried = done.repairs.len();
                done.outcome = failure(
                    ErrorClass::InvalidOutput,
                    format!("the answer failed its QA gate after {tried} repairs: {reason}"),
                    Some("make the prompt clearer about the output, or raise `output.repair_attempts`"),
                );
                return done;
            }
            done.repairs.push(reason.clone());
            self.request.messages.push(ChatMessage::new(Role::Assistant, answer.text));
            self.request.messages.push(ChatMessage::new(
                Role::User,
                format!("Your answer was not accepted: {reason}\nAnswer again, in the required form."),
            ));
        }
    }

    /// Gives the model the agent's `context` files first, before its
    /// system prompt; a file missing or too big fails the attempt, naming it.
    async fn read_context(&mut self) -> Result<(), Outcome> {
        let Some((tools, patterns)) = &self.context else { return Ok(()) };
        let files = tools.context(patterns, MAX_CONTEXT_BYTES).await.map_err(port_failure)?;
        let mut text = String::from("The project's context files:");
        for file in files {
            text.push_str(&format!("\n\n--- {} ---\n{}", file.path, file.text));
        }
        self.request.messages.insert(0, ChatMessage::new(Role::System, text));
        Ok(())
    }

    /// Offers the agent's tools, and goes on after the calls the attempt
    /// recorded before.
    async fn open_tools(&mut self) -> Result<(), Outcome> {
        let Some(tools) = &mut self.tools else { return Ok(()) };
        self.request.tools = tools.offer().await?;
        tools.replay(&mut self.request.messages).await
    }

    /// Asks the model until it answers: each round of tool calls it asks
    /// for runs (see [`ToolLoop::round`]) and goes back to it.
    async fn ask(&mut self, done: &mut Finished) -> Result<cairn_ports::ChatResponse, Outcome> {
        loop {
            if let Some(tools) = &self.tools {
                self.request.idempotency_key = tools.model_key();
            }
            let answer = self.provider.chat(self.request.clone()).await;
            // The stream has ended: what was held back (in case it began a
            // secret) goes out now, cleaned.
            if let Some(live) = &self.live {
                live.finish();
            }
            let answer = answer.map_err(port_failure)?;
            done.usage.push(Used {
                agent: self.agent.clone(),
                model: answer.model.clone(),
                usage: usage_of(&answer.usage),
            });
            let Some(tools) = self.tools.as_mut().filter(|_| !answer.tool_calls.is_empty()) else {
                return Ok(answer);
            };
            // The usage so far is recorded with the calls, so a crash loses none.
            let (path, attempt) = (tools.recorder.path.clone(), tools.recorder.attempt);
            let usage = done.usage.drain(..).map(|used| used.recorded(&path, attempt)).collect();
            tools.round(answer.text, answer.tool_calls, usage, &mut self.request.messages).await?;
        }
    }

    /// The answer as the step's output, or why it fails the format and schema.
    fn check(&self, text: &str) -> Result<Value, String> {
        if self.format != OutputFormat::Json {
            return Ok(Value::String(text.to_owned()));
        }
        let doc = serde_json::from_str::<Value>(unfence(text))
            .map_err(|e| format!("the answer is not JSON: {e}"))?;
        if let Some(validator) = &self.schema {
            let errors: Vec<String> = validator
                .iter_errors(&doc)
                .take(5)
                .map(|e| format!("{} at `{}`", e, e.instance_path()))
                .collect();
            if !errors.is_empty() {
                return Err(format!("the answer does not match the schema: {}", errors.join("; ")));
            }
        }
        Ok(doc)
    }

    /// The judge's reason when its verdict fails the answer; an outcome when
    /// the judge itself could not be asked.
    async fn judge(&self, output: &Value, done: &mut Finished) -> Result<Option<String>, Outcome> {
        let Some(judge) = &self.judge else { return Ok(None) };
        let mut request = judge.request.clone();
        let shown = cairn_domain::state::text_of(output);
        request
            .messages
            .push(ChatMessage::new(Role::User, format!("Rubric: {}\n\nAnswer:\n{shown}", judge.rubric)));
        let answer = judge.provider.chat(request).await.map_err(port_failure)?;
        done.usage.push(Used {
            agent: judge.agent.clone(),
            model: answer.model.clone(),
            usage: usage_of(&answer.usage),
        });
        let verdict = serde_json::from_str::<Value>(unfence(&answer.text))
            .ok()
            .filter(|v| {
                v.get("pass").is_some_and(Value::is_boolean) && v.get("reason").is_some_and(Value::is_string)
            })
            .ok_or_else(|| {
                failure(
                    ErrorClass::Transient,
                    "the QA judge did not answer with {\"pass\": bool, \"reason\": str}",
                    Some("a retry may help; a stricter judge model may be needed"),
                )
            })?;
        let renderer = Renderer::default();
        let ctx = judge.ctx.with_verdict(verdict.clone());
        let passed = renderer.try_value(&judge.pass_when, &ctx).map_err(|e| Outcome::Failed {
            error: render_failure("`qa.pass_when`", &e),
            output: None,
            retry_after: None,
        })?;
        if cairn_domain::render::truthy(&passed) {
            return Ok(None);
        }
        let reason = verdict["reason"].as_str().unwrap_or_default();
        Ok(Some(format!("the QA judge failed it: {reason}")))
    }
}

/// A turn of a conversation as the message its model reads: the engine
/// words what the run recorded (recorded cassettes hold these exact texts).
fn message(turn: &Turn) -> ChatMessage {
    let (role, content) = match turn {
        Turn::Prompt { text } | Turn::Answers { text } | Turn::Said { text } => (Role::User, text.clone()),
        Turn::Answer { text } => (Role::Assistant, text.clone()),
        Turn::Rejected { comment } => {
            (Role::User, format!("A reviewer rejected this: {}", comment.as_deref().unwrap_or("rejected")))
        }
        Turn::Questions { questions } => {
            (Role::Assistant, json!({ "clarification_questions": questions }).to_string())
        }
        Turn::Message { role, content } => {
            (if role == "assistant" { Role::Assistant } else { Role::User }, content.clone())
        }
    };
    ChatMessage::new(role, content)
}

fn usage_of(u: &cairn_ports::Usage) -> TokenUsage {
    TokenUsage {
        prompt_tokens: u.prompt_tokens,
        completion_tokens: u.completion_tokens,
        estimated: u.estimated,
        cost_micro_usd: u.cost_micro_usd.unwrap_or_default(),
    }
}

/// The questions of an answer that is exactly `{"clarification_questions": [...]}`.
fn clarification(text: &str) -> Option<Vec<String>> {
    let doc: Value = serde_json::from_str(unfence(text)).ok()?;
    let questions = doc.as_object().filter(|o| o.len() == 1)?.get("clarification_questions")?.as_array()?;
    let questions: Vec<String> =
        questions.iter().map(|q| q.as_str().map(str::to_owned)).collect::<Option<_>>()?;
    (!questions.is_empty()).then_some(questions)
}

/// The inside of a fenced code block, or the text itself.
fn unfence(text: &str) -> &str {
    let t = text.trim();
    let Some(start) = t.find("```") else { return t };
    let after = &t[start + 3..];
    let body_start = after.find('\n').map_or(after.len(), |i| i + 1);
    let body = &after[body_start..];
    body.rfind("```").map_or(body, |end| &body[..end]).trim()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fenced_json_is_tolerated() {
        assert_eq!(unfence("```json\n{\"a\": 1}\n```"), "{\"a\": 1}");
        assert_eq!(unfence("Here:\n```\n[1]\n```\nthanks"), "[1]");
        assert_eq!(unfence(" {\"a\": 1} "), "{\"a\": 1}");
        assert_eq!(
            clarification("```json\n{\"clarification_questions\": [\"Which?\"]}\n```"),
            Some(vec!["Which?".to_owned()])
        );
        assert_eq!(clarification("{\"clarification_questions\": [], \"x\": 1}"), None);
        assert_eq!(clarification("plain text"), None);
    }
}
