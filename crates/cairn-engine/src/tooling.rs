//! The tool loop of an agent's attempt: the tools offered to its model, each
//! call the model asks for run under the host's fence, and its result sent
//! back, until the model answers or its rounds are spent.
//!
//! Durable: the calls of a round are recorded before any runs, and each
//! result as it returns, through the run's driver (the one writer of the
//! run). A driver that takes the attempt over after a crash rebuilds the
//! conversation from what was recorded: a call that returned never runs
//! again, the one in flight runs again once, with the same key.

use std::collections::BTreeMap;
use std::sync::Arc;

use cairn_domain::decide::Outcome;
use cairn_domain::id::RunId;
use cairn_domain::state::{ErrorClass, EventKind, StepError, StepPath, ToolExchange};
use cairn_ports::{ChatMessage, ToolCall, ToolChoice, ToolError, ToolInvocation, ToolSpec, Tools};
use serde_json::Value;
use tokio::sync::{mpsc, oneshot};

/// The most bytes of a tool's result the model reads (and the log keeps);
/// the rest is cut, and the model is told.
pub(crate) const MAX_RESULT_BYTES: usize = 64 * 1024;

/// Events an attempt asks its driver to record before it goes on.
pub(crate) struct Progress {
    pub path: StepPath,
    pub attempt: u32,
    pub events: Vec<EventKind>,
    /// `true` once stored; `false` when the attempt is no longer the
    /// step's current one (cancelled, reset): it stops.
    pub stored: oneshot::Sender<bool>,
}

/// Where an attempt sends what it records mid-way.
#[derive(Clone)]
pub(crate) struct Recorder {
    pub sender: mpsc::UnboundedSender<Progress>,
    pub path: StepPath,
    pub attempt: u32,
}

impl Recorder {
    /// Records `events` durably; an error outcome when the attempt may not go on.
    pub(crate) async fn record(&self, events: Vec<EventKind>) -> Result<(), Outcome> {
        let (stored, answer) = oneshot::channel();
        let progress = Progress { path: self.path.clone(), attempt: self.attempt, events, stored };
        let gone = || stopped("the run's driver stopped while the attempt was recording its tool calls");
        self.sender.send(progress).map_err(|_| gone())?;
        match answer.await {
            Ok(true) => Ok(()),
            Ok(false) => Err(stopped("the attempt is no longer the step's current one")),
            Err(_) => Err(gone()),
        }
    }
}

fn stopped(message: &str) -> Outcome {
    Outcome::Failed {
        error: StepError { class: ErrorClass::Transient, message: message.into(), hint: None, cause: None },
        output: None,
        retry_after: None,
    }
}

fn invalid(message: String, hint: &str) -> Outcome {
    Outcome::Failed {
        error: StepError { class: ErrorClass::InvalidOutput, message, hint: Some(hint.into()), cause: None },
        output: None,
        retry_after: None,
    }
}

/// The tools of one attempt, and what it recorded of them so far.
pub(crate) struct ToolLoop {
    tools: Arc<dyn Tools>,
    run: RunId,
    choice: ToolChoice,
    max_rounds: u32,
    /// The attempt's key: each call's key is made from it.
    key: String,
    pub recorder: Recorder,
    /// The calls this attempt recorded before (a driver taking it over).
    earlier: Vec<ToolExchange>,
    /// The tools offered, by name, with their argument validators.
    offered: BTreeMap<String, (ToolSpec, Option<jsonschema::Validator>)>,
    /// The last round recorded.
    round: u32,
}

impl ToolLoop {
    /// A loop over `choice`, after the calls in `earlier`.
    pub(crate) fn new(
        tools: Arc<dyn Tools>,
        run: RunId,
        choice: ToolChoice,
        max_rounds: u32,
        key: String,
        recorder: Recorder,
        earlier: Vec<ToolExchange>,
    ) -> Self {
        let round = earlier.iter().map(|c| c.round).max().unwrap_or(0);
        Self { tools, run, choice, max_rounds, key, recorder, earlier, offered: BTreeMap::new(), round }
    }

    /// The key of the next model call: the attempt's until a round of
    /// calls is recorded, then `KEY/rROUND` after the last round (also for
    /// a driver that took the attempt over), so no two requests of an
    /// attempt that differ share a key.
    pub(crate) fn model_key(&self) -> String {
        if self.round == 0 { self.key.clone() } else { format!("{}/r{}", self.key, self.round) }
    }

    /// The specs to offer the model: asked of the host once, before the
    /// first call.
    pub(crate) async fn offer(&mut self) -> Result<Vec<ToolSpec>, Outcome> {
        let specs = self.tools.specs(&self.run, &self.choice).await.map_err(|e| Outcome::Failed {
            error: e.to_step_error(),
            output: None,
            retry_after: None,
        })?;
        self.offered = specs
            .iter()
            .map(|s| (s.name.clone(), (s.clone(), jsonschema::validator_for(&s.parameters).ok())))
            .collect();
        Ok(specs)
    }

    /// The conversation the earlier calls made, appended to `messages`;
    /// a call that was in flight runs again (once, with its key) first.
    pub(crate) async fn replay(&mut self, messages: &mut Vec<ChatMessage>) -> Result<(), Outcome> {
        let earlier = std::mem::take(&mut self.earlier);
        let mut rounds: BTreeMap<u32, Vec<ToolExchange>> = BTreeMap::new();
        for call in earlier {
            rounds.entry(call.round).or_default().push(call);
        }
        for (round, calls) in rounds {
            let asked = calls
                .iter()
                .map(|c| ToolCall {
                    id: c.call_id.clone(),
                    name: c.tool.clone(),
                    arguments: c.arguments.clone(),
                })
                .collect();
            messages.push(ChatMessage::calls("", asked));
            for (n, call) in calls.into_iter().enumerate() {
                let result = match call.result {
                    Some(result) => result,
                    None => self.run_one(round, n, &call.call_id, &call.tool, &call.arguments).await?,
                };
                messages.push(ChatMessage::tool_result(call.call_id, result));
            }
        }
        Ok(())
    }

    /// One round of the calls the model asks for: recorded (with `usage`,
    /// the events of the model call that asked), run in order, each result
    /// recorded as it returns and added to `messages`. Fails the attempt
    /// (`invalid_output`) past `max_tool_rounds`.
    pub(crate) async fn round(
        &mut self,
        text: String,
        calls: Vec<ToolCall>,
        usage: Vec<EventKind>,
        messages: &mut Vec<ChatMessage>,
    ) -> Result<(), Outcome> {
        self.round += 1;
        if self.round > self.max_rounds {
            self.recorder.record(usage).await?;
            return Err(invalid(
                format!(
                    "the model asked for tools in more than {} rounds without answering",
                    self.max_rounds
                ),
                "raise the agent's `max_tool_rounds`, or make the prompt say when to stop",
            ));
        }
        let round = self.round;
        // Ids the model left out or repeated are made unique, so each
        // result answers one call.
        let mut seen = std::collections::BTreeSet::new();
        let calls: Vec<ToolCall> = calls
            .into_iter()
            .enumerate()
            .map(|(n, mut c)| {
                if c.id.is_empty() || !seen.insert(c.id.clone()) {
                    c.id = format!("call_{round}_{n}");
                    seen.insert(c.id.clone());
                }
                c
            })
            .collect();
        let mut events = usage;
        events.extend(calls.iter().map(|c| EventKind::ToolCalled {
            path: self.recorder.path.clone(),
            attempt: self.recorder.attempt,
            round,
            call_id: c.id.clone(),
            tool: c.name.clone(),
            arguments: c.arguments.clone(),
        }));
        self.recorder.record(events).await?;
        messages.push(ChatMessage::calls(text, calls.clone()));
        for (n, call) in calls.into_iter().enumerate() {
            let result = self.run_one(round, n, &call.id, &call.name, &call.arguments).await?;
            messages.push(ChatMessage::tool_result(call.id, result));
        }
        Ok(())
    }

    /// Runs one call (or refuses it), records what it returned, and gives
    /// the text the model reads.
    async fn run_one(
        &self,
        round: u32,
        n: usize,
        call_id: &str,
        tool: &str,
        arguments: &str,
    ) -> Result<String, Outcome> {
        let (result, refused) = match self.checked(tool, arguments) {
            Err(refusal) => (refusal, true),
            Ok(arguments) => {
                let invocation = ToolInvocation {
                    run: self.run.clone(),
                    name: tool.to_owned(),
                    arguments,
                    idempotency_key: format!("{}/r{round}/{n}", self.key),
                };
                match self.tools.call(invocation).await {
                    Ok(text) => (text, false),
                    Err(ToolError::Refused(why)) => (why, true),
                    Err(ToolError::Broken(e)) => {
                        return Err(Outcome::Failed {
                            error: e.to_step_error(),
                            output: None,
                            retry_after: None,
                        });
                    }
                }
            }
        };
        let result = bounded(result);
        let shown = if refused { format!("error: {result}") } else { result.clone() };
        self.recorder
            .record(vec![EventKind::ToolReturned {
                path: self.recorder.path.clone(),
                attempt: self.recorder.attempt,
                call_id: call_id.to_owned(),
                result,
                refused,
            }])
            .await?;
        Ok(shown)
    }

    /// The arguments of a call to an offered tool, parsed and matching
    /// its schema; otherwise why not, for the model to fix.
    fn checked(&self, tool: &str, arguments: &str) -> Result<Value, String> {
        let Some((_, validator)) = self.offered.get(tool) else {
            let names: Vec<&str> = self.offered.keys().map(String::as_str).collect();
            return Err(format!(
                "`{tool}` is not a tool this agent may call; it may call: {}",
                if names.is_empty() { "none".to_owned() } else { names.join(", ") }
            ));
        };
        let text = if arguments.trim().is_empty() { "{}" } else { arguments };
        let value: Value =
            serde_json::from_str(text).map_err(|e| format!("the arguments of `{tool}` are not JSON: {e}"))?;
        if let Some(validator) = validator {
            let errors: Vec<String> = validator
                .iter_errors(&value)
                .take(5)
                .map(|e| format!("{e} at `{}`", e.instance_path()))
                .collect();
            if !errors.is_empty() {
                return Err(format!(
                    "the arguments of `{tool}` do not match its schema: {}",
                    errors.join("; ")
                ));
            }
        }
        Ok(value)
    }
}

/// `text` cut to [`MAX_RESULT_BYTES`] (at a character boundary), saying so.
fn bounded(mut text: String) -> String {
    if text.len() <= MAX_RESULT_BYTES {
        return text;
    }
    let total = text.len();
    let mut end = MAX_RESULT_BYTES;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text.truncate(end);
    text.push_str(&format!("\n[cut: {} more bytes of {total}]", total - end));
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_long_result_is_cut_at_a_character_and_says_how_much_is_left() {
        let long = "é".repeat(MAX_RESULT_BYTES);
        let cut = bounded(long.clone());
        assert!(cut.len() < MAX_RESULT_BYTES + 64, "{}", cut.len());
        assert!(cut.ends_with(&format!(
            "[cut: {} more bytes of {}]",
            long.len() - MAX_RESULT_BYTES,
            long.len()
        )));
        assert_eq!(bounded("short".into()), "short");
    }
}
