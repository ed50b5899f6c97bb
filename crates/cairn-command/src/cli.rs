//! Coding-agent CLIs as LLM providers: Claude Code (`claude -p` with
//! stream-json output), Codex (`codex exec --json`), Gemini CLI (`gemini`
//! with stream-json output), or any program that reads the prompt on
//! stdin and writes its answer on stdout. Each call is one run of the
//! program under the command fence (the allowlist, the first root as its
//! folder, a cleared environment, every process killed when it ends or
//! the call is dropped); its output is read as it comes: text as live
//! tokens, then the answer, the usage and, where the CLI reports it, the
//! cost.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use cairn_domain::state::ErrorClass;
use cairn_ports::{ChatRequest, ChatResponse, CommandSpec, LlmProvider, PortError, Role, Usage};
use serde_json::Value;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};

use crate::LocalCommands;

/// The longest line of a CLI's output read; a longer one fails the call.
const MAX_LINE_BYTES: usize = 16 * 1024 * 1024;
/// The most text of an answer kept; a longer one fails the call.
const MAX_ANSWER_BYTES: usize = 4 * 1024 * 1024;
/// The bytes of stderr kept, to say why a CLI failed.
const MAX_STDERR_BYTES: usize = 8 * 1024;

/// What a CLI prints, and so how it is run and read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CliFormat {
    /// Claude Code: `claude -p --output-format stream-json --verbose
    /// --include-partial-messages`.
    ClaudeCode,
    /// Codex: `codex exec --json --skip-git-repo-check -`.
    Codex,
    /// Gemini CLI: `gemini --output-format stream-json`.
    Gemini,
    /// Any program: the prompt on stdin, the answer on stdout.
    Plain,
}

impl CliFormat {
    /// The presets by the names the config gives them.
    pub const PRESETS: [(&'static str, CliFormat); 3] =
        [("claude-code", Self::ClaudeCode), ("codex", Self::Codex), ("gemini", Self::Gemini)];

    /// The program a preset runs when the config names none.
    fn program(self) -> &'static str {
        match self {
            Self::ClaudeCode => "claude",
            Self::Codex => "codex",
            Self::Gemini => "gemini",
            Self::Plain => "",
        }
    }

    /// The arguments of a preset, for `model`; the prompt goes on stdin.
    fn args(self, model: Option<&str>) -> Vec<String> {
        let (fixed, model_flag): (&[&str], &str) = match self {
            Self::ClaudeCode => (
                &["-p", "--output-format", "stream-json", "--verbose", "--include-partial-messages"],
                "--model",
            ),
            Self::Codex => (&["exec", "--json", "--skip-git-repo-check"], "-m"),
            Self::Gemini => (&["--output-format", "stream-json"], "-m"),
            Self::Plain => (&[], ""),
        };
        let mut args: Vec<String> = fixed.iter().map(|a| (*a).to_owned()).collect();
        if let (Some(model), false) = (model, model_flag.is_empty()) {
            args.extend([model_flag.to_owned(), model.to_owned()]);
        }
        if self == Self::Codex {
            args.push("-".into());
        }
        args
    }
}

/// How one CLI provider runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CliSettings {
    /// The provider's name, for messages.
    pub name: String,
    /// What it prints.
    pub format: CliFormat,
    /// The program and arguments before the preset's own (for a preset,
    /// empty means the preset's program); for `Plain`, the whole command.
    pub command: Vec<String>,
    /// The model of agents that name none.
    pub model: Option<String>,
    /// The limit on one call.
    pub timeout: Duration,
    /// Variables of cairn's environment the CLI is given (its keys).
    pub env: Vec<String>,
}

/// A coding-agent CLI behind the LLM port.
pub struct CliProvider {
    commands: Arc<LocalCommands>,
    settings: CliSettings,
}

impl CliProvider {
    /// A provider running `settings`' CLI inside `commands`' fence.
    pub fn new(commands: Arc<LocalCommands>, settings: CliSettings) -> Self {
        Self { commands, settings }
    }

    /// The program and arguments one call runs.
    fn argv(&self, model: Option<&str>) -> (String, Vec<String>) {
        let format = self.settings.format;
        let mut argv = self.settings.command.clone();
        if argv.is_empty() {
            argv.push(format.program().to_owned());
        }
        argv.extend(format.args(model));
        let program = argv.remove(0);
        (program, argv)
    }
}

/// The conversation as one prompt: system instructions first, then the
/// turns (one user turn is the prompt as is), then what form the answer
/// must have.
fn prompt_of(request: &ChatRequest) -> String {
    let system: Vec<&str> =
        request.messages.iter().filter(|m| m.role == Role::System).map(|m| m.content.as_str()).collect();
    let turns: Vec<_> = request.messages.iter().filter(|m| m.role != Role::System).collect();
    let mut prompt = String::new();
    if !system.is_empty() {
        prompt.push_str(&system.join("\n\n"));
        prompt.push_str("\n\n");
    }
    match turns.as_slice() {
        [only] => prompt.push_str(&only.content),
        turns => {
            for turn in turns {
                let who = if turn.role == Role::Assistant { "Assistant" } else { "User" };
                prompt.push_str(&format!("## {who}\n\n{}\n\n", turn.content));
            }
        }
    }
    if let Some(instructions) = request.format.instructions() {
        prompt.push_str("\n\n");
        prompt.push_str(&instructions);
    }
    prompt
}

/// What the CLI said so far, read line by line.
#[derive(Debug, Default)]
struct Reading {
    /// Text streamed so far (for the formats whose answer is its sum).
    text: String,
    /// Whether token deltas came (Claude Code's whole messages then repeat them).
    deltas: bool,
    /// The final answer, once the CLI gave it.
    answer: Option<String>,
    /// What it failed with, and the HTTP status behind it when it says.
    failure: Option<(String, Option<u64>)>,
    usage: Option<Usage>,
    model: Option<String>,
}

impl Reading {
    /// Reads one line; returns the text to stream live, if any.
    fn line(&mut self, format: CliFormat, line: &str) -> Option<String> {
        if format == CliFormat::Plain {
            let piece = format!("{line}\n");
            self.text.push_str(&piece);
            return Some(piece);
        }
        let event: Value = serde_json::from_str(line).ok()?;
        let kind = event["type"].as_str().unwrap_or_default();
        match format {
            CliFormat::ClaudeCode => self.claude(kind, &event),
            CliFormat::Codex => self.codex(kind, &event),
            CliFormat::Gemini => self.gemini(kind, &event),
            CliFormat::Plain => None,
        }
    }

    fn claude(&mut self, kind: &str, event: &Value) -> Option<String> {
        match kind {
            "system" => {
                self.model = self.model.take().or_else(|| text(&event["model"]));
                None
            }
            "stream_event" if event["event"]["delta"]["type"] == "text_delta" => {
                self.deltas = true;
                text(&event["event"]["delta"]["text"])
            }
            "assistant" if !self.deltas => {
                let blocks = event["message"]["content"].as_array()?;
                let said: String = blocks
                    .iter()
                    .filter(|b| b["type"] == "text")
                    .filter_map(|b| b["text"].as_str())
                    .collect();
                (!said.is_empty()).then_some(said)
            }
            "result" => {
                let failed = event["is_error"] == true || event["subtype"] != "success";
                if failed {
                    let errors: Vec<&str> =
                        event["errors"].as_array().into_iter().flatten().filter_map(Value::as_str).collect();
                    let message =
                        text(&event["result"]).filter(|r| !r.is_empty()).unwrap_or_else(|| errors.join("; "));
                    self.failure = Some((message, event["api_error_status"].as_u64()));
                } else {
                    self.answer = text(&event["result"]);
                }
                let usage = &event["usage"];
                let prompt = ["input_tokens", "cache_creation_input_tokens", "cache_read_input_tokens"]
                    .iter()
                    .filter_map(|k| usage[*k].as_u64())
                    .sum();
                self.usage = Some(Usage {
                    prompt_tokens: prompt,
                    completion_tokens: usage["output_tokens"].as_u64().unwrap_or_default(),
                    estimated: false,
                    cost_micro_usd: event["total_cost_usd"].as_f64().map(micros),
                });
                if let Some(model) = event["modelUsage"].as_object().and_then(|m| m.keys().next()) {
                    self.model = Some(model.clone());
                }
                None
            }
            _ => None,
        }
    }

    fn codex(&mut self, kind: &str, event: &Value) -> Option<String> {
        match kind {
            "item.completed" if event["item"]["type"] == "agent_message" => {
                let said = text(&event["item"]["text"])?;
                self.text = said.clone();
                Some(said)
            }
            "turn.completed" => {
                let usage = &event["usage"];
                self.usage = Some(Usage::reported(
                    usage["input_tokens"].as_u64().unwrap_or_default(),
                    usage["output_tokens"].as_u64().unwrap_or_default(),
                ));
                self.answer = Some(std::mem::take(&mut self.text));
                None
            }
            "turn.failed" => {
                self.failure = Some((text(&event["error"]["message"]).unwrap_or_default(), None));
                None
            }
            _ => None,
        }
    }

    fn gemini(&mut self, kind: &str, event: &Value) -> Option<String> {
        match kind {
            "init" => {
                self.model = text(&event["model"]);
                None
            }
            "message" if event["role"] == "assistant" => {
                let piece = text(&event["content"])?;
                self.text.push_str(&piece);
                Some(piece)
            }
            "result" if event["status"] == "success" => {
                let stats = &event["stats"];
                self.usage = Some(Usage::reported(
                    stats["input_tokens"].as_u64().unwrap_or_default(),
                    stats["output_tokens"].as_u64().unwrap_or_default(),
                ));
                if let Some(model) = stats["models"].as_object().and_then(|m| m.keys().next()) {
                    self.model = Some(model.clone());
                }
                self.answer = Some(std::mem::take(&mut self.text));
                None
            }
            "result" => {
                self.failure = Some((text(&event["error"]["message"]).unwrap_or_default(), None));
                None
            }
            _ => None,
        }
    }
}

fn text(value: &Value) -> Option<String> {
    value.as_str().map(str::to_owned)
}

/// USD in millionths.
fn micros(usd: f64) -> u64 {
    (usd * 1e6).round().max(0.0) as u64
}

/// The class of a CLI's failure: by the HTTP status it reports, else by
/// what its message says.
fn class_of(message: &str, status: Option<u64>) -> ErrorClass {
    let lower = message.to_ascii_lowercase();
    match status {
        Some(429) => ErrorClass::RateLimited,
        Some(401 | 403) => ErrorClass::Permission,
        Some(500..=599) => ErrorClass::Transient,
        Some(_) => ErrorClass::Fatal,
        None if lower.contains("401")
            || lower.contains("unauthorized")
            || lower.contains("not logged in") =>
        {
            ErrorClass::Permission
        }
        None if lower.contains("429") || lower.contains("rate limit") || lower.contains("quota") => {
            ErrorClass::RateLimited
        }
        None => ErrorClass::Transient,
    }
}

#[async_trait]
impl LlmProvider for CliProvider {
    async fn chat(&self, request: ChatRequest) -> Result<ChatResponse, PortError> {
        let name = &self.settings.name;
        if !request.tools.is_empty() {
            return Err(PortError::new(
                ErrorClass::Fatal,
                format!(
                    "provider `{name}` is a coding-agent CLI: it calls its own tools, not the agent's `tools:`"
                ),
            ));
        }
        let model = request.model.as_deref().or(self.settings.model.as_deref());
        let (program, args) = self.argv(model);
        let env =
            self.settings.env.iter().filter_map(|v| Some((v.clone(), std::env::var(v).ok()?))).collect();
        let spec = CommandSpec {
            program: program.clone(),
            args,
            cwd: None,
            env,
            stdin: Some(prompt_of(&request)),
            idempotency_key: request.idempotency_key.clone(),
            data_led: Vec::new(),
            allow_option_args: true,
            confine_paths: false,
        };
        let call = self.converse(spec, &request);
        match tokio::time::timeout(self.settings.timeout, call).await {
            Ok(answer) => answer.map(|(text, usage, answered_by)| ChatResponse {
                usage: usage.unwrap_or_else(|| Usage::estimate(&request.messages, &text)),
                model: answered_by.or(model.map(str::to_owned)).unwrap_or(program),
                text,
                tool_calls: Vec::new(),
            }),
            Err(_) => Err(PortError::new(
                ErrorClass::Timeout,
                format!(
                    "provider `{name}`: `{program}` gave no answer in {:?}; it was killed",
                    self.settings.timeout
                ),
            )),
        }
    }
}

impl CliProvider {
    /// Runs the CLI once: its answer, the usage it reported and the model
    /// that answered.
    async fn converse(
        &self,
        spec: CommandSpec,
        request: &ChatRequest,
    ) -> Result<(String, Option<Usage>, Option<String>), PortError> {
        let name = &self.settings.name;
        let program = spec.program.clone();
        let input = spec.stdin.clone().unwrap_or_default();
        let mut started = self.commands.start(&spec)?;
        let stdin = started.child.stdin.take();
        let feed = async move {
            if let Some(mut pipe) = stdin {
                // A CLI that exits without reading its input is not an error.
                let _ = pipe.write_all(input.as_bytes()).await;
            }
        };
        let stderr = crate::bounded(started.child.stderr.take(), MAX_STDERR_BYTES);
        let stdout = started.child.stdout.take();
        let format = self.settings.format;
        let read = async {
            let mut reading = Reading::default();
            let Some(stdout) = stdout else { return Ok(reading) };
            let mut lines = BufReader::new(stdout);
            let mut line = Vec::new();
            loop {
                line.clear();
                let n = (&mut lines)
                    .take(MAX_LINE_BYTES as u64 + 1)
                    .read_until(b'\n', &mut line)
                    .await
                    .map_err(|e| format!("reading its output failed: {e}"))?;
                if n == 0 {
                    return Ok(reading);
                }
                if line.len() > MAX_LINE_BYTES {
                    return Err(format!("it wrote a line longer than {MAX_LINE_BYTES} bytes"));
                }
                let text = String::from_utf8_lossy(&line);
                let piece = reading.line(format, text.trim_end_matches(['\n', '\r']));
                if let (Some(piece), Some(sink)) = (piece, &request.tokens) {
                    (sink.0)(&piece);
                }
                if reading.text.len() > MAX_ANSWER_BYTES {
                    return Err(format!("its answer is longer than {MAX_ANSWER_BYTES} bytes"));
                }
            }
        };
        let ((), read, stderr, status) = tokio::join!(feed, read, stderr, started.child.wait());
        drop(started.guard);
        let fail =
            |class, message: String| Err(PortError::new(class, format!("provider `{name}`: {message}")));
        let mut reading = match read {
            Ok(reading) => reading,
            Err(message) => return fail(ErrorClass::InvalidOutput, format!("`{program}`: {message}")),
        };
        let code = status.map(|s| s.code().unwrap_or(-1)).unwrap_or(-1);
        if let Some((message, status)) = reading.failure.take() {
            return fail(class_of(&message, status), format!("`{program}` failed: {message}"));
        }
        if format == CliFormat::Plain && code == 0 {
            reading.answer = Some(std::mem::take(&mut reading.text).trim_end().to_owned());
        }
        let stderr = stderr.trim();
        match reading.answer {
            Some(answer) if code == 0 => Ok((answer, reading.usage, reading.model)),
            _ if code != 0 => fail(
                class_of(stderr, None),
                format!(
                    "`{program}` exited with code {code}{}",
                    if stderr.is_empty() { String::new() } else { format!(": {stderr}") }
                ),
            ),
            _ => fail(
                ErrorClass::InvalidOutput,
                format!("`{program}` ended without an answer (is it a version that prints this format?)"),
            ),
        }
    }
}
