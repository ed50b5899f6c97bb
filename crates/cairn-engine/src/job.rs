//! One attempt of one step: rendered up front from the run's state (so a
//! template error fails the attempt before any effect), then executed
//! through a port.

use std::collections::HashMap;
use std::sync::Arc;

use cairn_domain::decide::{Outcome, Program};
use cairn_domain::definition::{OutputFormat, Step, StepKind, Template};
use cairn_domain::id::RunId;
use cairn_domain::render::{Context, Renderer};
use cairn_domain::state::{ErrorClass, StepError, StepPath, TokenUsage};
use cairn_ports::{
    ChatMessage, ChatRequest, CommandRunner, CommandSpec, HandlerCall, LlmProvider, PortError,
    ResponseFormat, Role, StepHandler,
};
use serde_json::{Value, json};

/// The ports a job may use.
pub(crate) struct Ports {
    pub providers: HashMap<String, Arc<dyn LlmProvider>>,
    pub commands: Arc<dyn CommandRunner>,
    pub handlers: HashMap<String, Arc<dyn StepHandler>>,
}

/// A rendered attempt, ready to execute.
pub(crate) enum Job {
    /// Already decided (a `set` value, or a failure found while rendering).
    Done(Outcome),
    /// An LLM call.
    Chat {
        provider: Arc<dyn LlmProvider>,
        request: ChatRequest,
        output: Option<cairn_domain::definition::OutputSpec>,
    },
    /// A program.
    Command { runner: Arc<dyn CommandRunner>, spec: CommandSpec },
    /// A host handler.
    Handler { handler: Arc<dyn StepHandler>, call: HandlerCall },
}

/// What an executed job reports.
pub(crate) struct Finished {
    pub outcome: Outcome,
    /// Tokens used, by model, when the job called an LLM.
    pub usage: Option<(String, TokenUsage)>,
}

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
}

fn refused(class: ErrorClass, message: impl Into<String>, hint: Option<&str>) -> StepError {
    StepError { class, message: message.into(), hint: hint.map(str::to_owned) }
}

const RENDER_HINT: Option<&str> = Some("fix the template; `cairn validate` checks the names it reads");

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
        self.renderer
            .text(t, self.ctx)
            .map_err(|e| refused(ErrorClass::Fatal, format!("cannot render {what}: {e}"), RENDER_HINT))
    }

    fn deep(&self, v: &Value, what: &str) -> Result<Value, StepError> {
        self.renderer
            .deep(v, self.ctx)
            .map_err(|e| refused(ErrorClass::Fatal, format!("cannot render {what}: {e}"), RENDER_HINT))
    }

    fn build(&self, step: &Step) -> Result<Job, StepError> {
        Ok(match &step.kind {
            StepKind::Set(set) => Job::Done(Outcome::Succeeded(self.deep(&set.value, "`set`")?)),
            StepKind::Agent(a) => {
                let wf = self.program.workflow();
                let agent = wf.agents.get(a.agent.as_str()).ok_or_else(|| {
                    refused(ErrorClass::Fatal, format!("unknown agent `{}`", a.agent), None)
                })?;
                let provider = self.ports.providers.get(agent.provider.as_str()).ok_or_else(|| {
                    refused(
                        ErrorClass::Fatal,
                        format!("provider `{}` is not configured", agent.provider),
                        Some("configure it in cairn.toml, or run with --llm mock"),
                    )
                })?;
                let mut messages = Vec::new();
                if let Some(system) = &agent.system {
                    messages.push(ChatMessage {
                        role: Role::System,
                        content: self.text(system, "the system prompt")?,
                    });
                }
                messages.push(ChatMessage { role: Role::User, content: self.text(&a.prompt, "the prompt")? });
                let format = match &a.output {
                    Some(o) if o.format == OutputFormat::Json => match &o.schema {
                        Some(schema) => ResponseFormat::JsonSchema(schema.document.clone()),
                        None => ResponseFormat::Json,
                    },
                    _ => ResponseFormat::Text,
                };
                let request = ChatRequest {
                    model: agent.model.clone(),
                    messages,
                    temperature: agent.temperature,
                    max_tokens: agent.max_tokens,
                    format,
                    idempotency_key: self.key.clone(),
                };
                Job::Chat { provider: Arc::clone(provider), request, output: a.output.clone() }
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
                let spec =
                    CommandSpec { program, args: argv, cwd, env, stdin, idempotency_key: self.key.clone() };
                Job::Command { runner: Arc::clone(&self.ports.commands), spec }
            }
            StepKind::Uses(u) => {
                let handler = self.ports.handlers.get(u.handler.as_str()).ok_or_else(|| {
                    refused(
                        ErrorClass::Fatal,
                        format!("no handler named `{}` is registered", u.handler),
                        Some("register it in the host binary, or fix the `uses:` name"),
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
            StepKind::Approval(_) | StepKind::ForEach(_) | StepKind::Loop(_) => {
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
        Job::Done(outcome) => Finished { outcome, usage: None },
        Job::Chat { provider, request, output } => match provider.chat(request).await {
            Err(e) => Finished { outcome: port_failure(e), usage: None },
            Ok(answer) => {
                let usage = Some((
                    answer.model.clone(),
                    TokenUsage {
                        prompt_tokens: answer.usage.prompt_tokens,
                        completion_tokens: answer.usage.completion_tokens,
                        estimated: answer.usage.estimated,
                    },
                ));
                let outcome = match output {
                    Some(spec) if spec.format == OutputFormat::Json => {
                        check_json(&answer.text, spec.schema.as_ref())
                    }
                    _ => Outcome::Succeeded(Value::String(answer.text)),
                };
                Finished { outcome, usage }
            }
        },
        Job::Command { runner, spec } => match runner.run(spec).await {
            Err(e) => Finished { outcome: port_failure(e), usage: None },
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
                        },
                        output: Some(value),
                        retry_after: None,
                    }
                };
                Finished { outcome, usage: None }
            }
        },
        Job::Handler { handler, call } => {
            let outcome = match handler.call(call).await {
                Ok(v) => Outcome::Succeeded(v),
                Err(e) => port_failure(e),
            };
            Finished { outcome, usage: None }
        }
    }
}

/// Parses a JSON answer (a fenced ```json block is tolerated) and checks it
/// against the schema.
fn check_json(text: &str, schema: Option<&cairn_domain::definition::Schema>) -> Outcome {
    let doc = match serde_json::from_str::<Value>(unfence(text)) {
        Ok(doc) => doc,
        Err(e) => {
            return failure(
                ErrorClass::InvalidOutput,
                format!("the answer is not JSON: {e}"),
                Some("the model did not follow the output format; a retry or a stricter prompt may help"),
            );
        }
    };
    if let Some(schema) = schema {
        match jsonschema::validator_for(&schema.document) {
            Ok(validator) => {
                let errors: Vec<String> = validator
                    .iter_errors(&doc)
                    .take(5)
                    .map(|e| format!("{} at `{}`", e, e.instance_path()))
                    .collect();
                if !errors.is_empty() {
                    return failure(
                        ErrorClass::InvalidOutput,
                        format!("the answer does not match the schema: {}", errors.join("; ")),
                        Some("the model's answer missed the schema; a retry or a clearer prompt may help"),
                    );
                }
            }
            Err(e) => return failure(ErrorClass::Fatal, format!("the output schema is invalid: {e}"), None),
        }
    }
    Outcome::Succeeded(doc)
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
        assert!(matches!(check_json("```json\n{\"a\": 1}\n```", None), Outcome::Succeeded(_)));
        assert!(matches!(
            check_json("not json", None),
            Outcome::Failed { error: StepError { class: ErrorClass::InvalidOutput, .. }, .. }
        ));
    }
}
