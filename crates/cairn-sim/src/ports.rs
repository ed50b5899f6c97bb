//! The fake model and program runner of a simulation. Answers come from
//! the seed and what is asked (never from the attempt or the time), so a
//! run with faults must end with the outputs of a run without. Faults come
//! from the seed too: the first attempts of a step fail (every error
//! class, hangs past the step's timeout, answers that fail their schema,
//! streams cut short), later ones succeed, slowly or in pieces.
//!
//! Every call is logged with its idempotency key, and a call for a step
//! whose success is already durable or acknowledged is a broken promise,
//! noted at once.

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use async_trait::async_trait;
use cairn_domain::state::ErrorClass;
use cairn_ports::{
    ChatRequest, ChatResponse, Clock, CommandOutput, CommandRunner, CommandSpec, LlmProvider, PortError,
    ResponseFormat, Role, Usage,
};
use serde_json::json;

use crate::clock::SimClock;
use crate::rng::hash;
use crate::store::SimStore;
use crate::trace::Trace;
use crate::workflow::CHECK;

/// One call of a port: which step and attempt its key names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Call {
    /// The step's path, read from the key.
    pub path: String,
    /// The attempt, read from the key.
    pub attempt: u32,
    /// The idempotency key as the engine sent it.
    pub key: String,
}

/// How one call goes, drawn from the seed.
enum Fate {
    /// An answer after `latency`, streamed in `chunks` pieces; `garbled`
    /// answers are not what the step's format asks (the engine repairs).
    Answer { latency: Duration, chunks: u32, garbled: bool },
    /// An error of this class after `latency`.
    Error { latency: Duration, class: ErrorClass },
    /// Never answers: the step's timeout must stop it.
    Hang,
    /// Starts streaming, then the connection drops (`transient`).
    Cut { latency: Duration },
    /// A program that exits with code 1 (class `fatal`, output kept).
    ExitCode { latency: Duration },
}

/// What a simulation's ports need to know and share.
pub struct SimPorts {
    seed: u64,
    faulty: bool,
    run: String,
    /// Attempts the steps allow: at most this many minus one fail.
    max_attempts: u32,
    clock: Arc<SimClock>,
    store: Arc<SimStore>,
    trace: Arc<Trace>,
    calls: Mutex<Vec<Call>>,
    violations: Mutex<Vec<String>>,
}

impl SimPorts {
    /// The ports of run `run`, whose steps allow `max_attempts` attempts;
    /// with `faulty`, the first attempts of steps fail.
    pub fn new(
        seed: u64,
        faulty: bool,
        run: &str,
        max_attempts: u32,
        clock: Arc<SimClock>,
        store: Arc<SimStore>,
        trace: Arc<Trace>,
    ) -> Self {
        Self {
            seed,
            faulty,
            run: run.to_owned(),
            max_attempts,
            clock,
            store,
            trace,
            calls: Mutex::default(),
            violations: Mutex::default(),
        }
    }

    /// Every call so far, in order.
    pub fn calls(&self) -> Vec<Call> {
        lock(&self.calls).clone()
    }

    /// The promises broken so far.
    pub fn violations(&self) -> Vec<String> {
        lock(&self.violations).clone()
    }

    fn violated(&self, what: String) {
        self.trace.note(format!("VIOLATION {what}"));
        lock(&self.violations).push(what);
    }

    /// Logs a call and checks it; returns the step's path, and how many
    /// calls carried this key before.
    fn begin(&self, port: &str, key: &str) -> (String, u32) {
        let parsed = key
            .strip_prefix(&format!("{}/", self.run))
            .and_then(|rest| rest.rsplit_once('/'))
            .and_then(|(path, n)| Some((path.to_owned(), n.parse::<u32>().ok()?)));
        let Some((path, attempt)) = parsed else {
            self.violated(format!("{port} call with key `{key}`, not run/step/attempt"));
            return (key.to_owned(), 0);
        };
        if let Some(how) = self.store.succeeded(&format!("{}/{path}", self.run)) {
            self.violated(format!("{port} called for `{path}` (key {key}) after its success was {how}"));
        }
        let mut calls = lock(&self.calls);
        let nth = calls.iter().filter(|c| c.key == key).count() as u32;
        calls.push(Call { path: path.clone(), attempt, key: key.to_owned() });
        drop(calls);
        self.trace.note(format!("{port} {key} (call {})", nth + 1));
        (path, nth)
    }

    /// A latency from the seed: up to 3 s, never a whole number of
    /// milliseconds, so it never falls due together with an engine timer
    /// of the same length (see `clock::Key`).
    fn latency(&self, parts: &[&str]) -> Duration {
        let h = hash(self.seed, parts);
        Duration::from_nanos((h % 3_000) * 1_000_000 + 1 + (h >> 32) % 999_999)
    }

    /// How the `nth` call with `key` (for step `path`) goes: attempts up to
    /// a number drawn for the step fail, later ones answer.
    fn fate(&self, path: &str, key: &str, nth: u32, json: bool, command: bool) -> Fate {
        let n = nth.to_string();
        let latency = self.latency(&["latency", key, &n]);
        if !self.faulty {
            return Fate::Answer { latency, chunks: 1, garbled: false };
        }
        let attempt = key.rsplit('/').next().and_then(|a| a.parse::<u64>().ok()).unwrap_or(0);
        let fails = hash(self.seed, &["fails", path]) % u64::from(self.max_attempts.max(1));
        let draw = hash(self.seed, &["fate", key, &n]);
        if attempt > fails {
            let chunks = 1 + (draw % 6) as u32;
            return Fate::Answer { latency, chunks, garbled: json && nth == 0 && draw.is_multiple_of(3) };
        }
        match (draw >> 8) % 8 {
            0 => Fate::Error { latency, class: ErrorClass::Transient },
            1 => Fate::Error { latency, class: ErrorClass::RateLimited },
            2 => Fate::Error { latency, class: ErrorClass::Timeout },
            3 => Fate::Error { latency, class: ErrorClass::Fatal },
            4 => Fate::Error { latency, class: ErrorClass::Permission },
            5 => Fate::Hang,
            6 if command => Fate::ExitCode { latency },
            6 if json => Fate::Answer { latency, chunks: 1, garbled: true },
            _ => Fate::Cut { latency },
        }
    }

    fn error(&self, class: ErrorClass, key: &str) -> PortError {
        let mut e = PortError::new(class, format!("simulated {class} fault ({key})"));
        if class == ErrorClass::RateLimited {
            e.retry_after = Some(Duration::from_millis(1_500));
        }
        self.trace.note(format!("  {key} fails {class}"));
        e
    }

    /// Waits a timeout's worth and more: the engine stops the attempt first.
    async fn hang(&self, key: &str) {
        self.trace.note(format!("  {key} hangs"));
        self.clock.sleep(Duration::from_secs(24 * 3600)).await;
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

#[async_trait]
impl LlmProvider for SimPorts {
    async fn chat(&self, request: ChatRequest) -> Result<ChatResponse, PortError> {
        let key = request.idempotency_key.clone();
        let (path, nth) = self.begin("llm", &key);
        let json = !matches!(request.format, ResponseFormat::Text);
        // The answer depends on what was asked first (not on repairs).
        let asked: Vec<&str> = request
            .messages
            .iter()
            .take_while(|m| m.role != Role::Assistant)
            .map(|m| m.content.as_str())
            .collect();
        let mut parts = vec!["answer"];
        parts.extend(&asked);
        let word = format!("{:016x}", hash(self.seed, &parts));
        let answer = if json { json!({ "answer": word }).to_string() } else { format!("{path} says {word}") };
        let (latency, chunks, garbled) = match self.fate(&path, &key, nth, json, false) {
            Fate::Answer { latency, chunks, garbled } => (latency, chunks, garbled),
            Fate::Error { latency, class } => {
                self.clock.sleep(latency).await;
                return Err(self.error(class, &key));
            }
            Fate::ExitCode { latency } => {
                self.clock.sleep(latency).await;
                return Err(self.error(ErrorClass::Fatal, &key));
            }
            Fate::Hang => {
                self.hang(&key).await;
                return Err(self.error(ErrorClass::Timeout, &key));
            }
            Fate::Cut { latency } => {
                self.clock.sleep(latency).await;
                if let Some(tokens) = &request.tokens {
                    (tokens.0)(&answer[..answer.len() / 2]);
                }
                self.trace.note(format!("  {key} stream cut"));
                return Err(PortError::new(ErrorClass::Transient, "simulated stream cut before the end"));
            }
        };
        let text =
            if garbled { format!("Sure! Here it is: {}", &answer[..answer.len() / 2]) } else { answer };
        // Streamed in pieces, each after its share of the latency.
        let piece = text.len().div_ceil(chunks as usize).max(1);
        for chunk in text.as_bytes().chunks(piece) {
            self.clock.sleep(latency / chunks).await;
            if let Some(tokens) = &request.tokens {
                (tokens.0)(&String::from_utf8_lossy(chunk));
            }
        }
        self.trace.note(format!("  {key} answered{}", if garbled { " (garbled)" } else { "" }));
        let usage = Usage::estimate(&request.messages, &text);
        Ok(ChatResponse { text, usage, model: "sim".into(), tool_calls: Vec::new() })
    }
}

#[async_trait]
impl CommandRunner for SimPorts {
    async fn run(&self, spec: CommandSpec) -> Result<CommandOutput, PortError> {
        let key = spec.idempotency_key.clone();
        let (path, nth) = self.begin("command", &key);
        let mut parts = vec!["stdout", spec.program.as_str()];
        parts.extend(spec.args.iter().map(String::as_str));
        parts.extend(spec.stdin.as_deref());
        let stdout = format!("{} => {:016x}", spec.program, hash(self.seed, &parts));
        // The check of a `goto` fails for half of what it is given, from
        // what it is given alone.
        let mut verdict = vec!["verdict"];
        verdict.extend(spec.args.iter().map(String::as_str));
        let fails = spec.program == CHECK && hash(self.seed, &verdict).is_multiple_of(2);
        match self.fate(&path, &key, nth, false, true) {
            Fate::Answer { latency, .. } if fails => {
                self.clock.sleep(latency).await;
                self.trace.note(format!("  {key} finds fault, exits 1"));
                Ok(CommandOutput { exit_code: 1, stdout, stderr: "the check failed".into() })
            }
            Fate::Answer { latency, .. } => {
                self.clock.sleep(latency).await;
                self.trace.note(format!("  {key} exited 0"));
                Ok(CommandOutput { exit_code: 0, stdout, stderr: String::new() })
            }
            Fate::ExitCode { latency } => {
                self.clock.sleep(latency).await;
                self.trace.note(format!("  {key} exited 1"));
                Ok(CommandOutput { exit_code: 1, stdout, stderr: "simulated failure".into() })
            }
            Fate::Error { latency, class } => {
                self.clock.sleep(latency).await;
                Err(self.error(class, &key))
            }
            Fate::Cut { latency } => {
                self.clock.sleep(latency).await;
                Err(self.error(ErrorClass::Transient, &key))
            }
            Fate::Hang => {
                self.hang(&key).await;
                Err(self.error(ErrorClass::Timeout, &key))
            }
        }
    }
}
