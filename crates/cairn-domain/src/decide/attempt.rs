//! Attempts: what an attempt's outcome records, when the next one is due,
//! and the key that names it everywhere.

use super::Outcome;
use crate::definition::{RetryPolicy, StepKind};
use crate::duration::Duration;
use crate::id::RunId;
use crate::program::Program;
use crate::state::{ErrorClass, EventKind, RunState, StepError, StepPath, Timestamp, WaitKind};

/// The events that record how an attempt ended: success (and the document
/// it produces), or failure with the next attempt scheduled when the retry
/// policy allows it.
pub fn attempt_finished(
    state: &RunState,
    program: &Program,
    path: &StepPath,
    attempt: u32,
    outcome: Outcome,
    now: Timestamp,
) -> Vec<EventKind> {
    let Some(step) = program.step(path) else { return Vec::new() };
    match outcome {
        Outcome::Succeeded(output) => {
            let mut events = vec![EventKind::StepSucceeded { path: path.clone(), output: output.clone() }];
            match &step.accept {
                // An output under review is stored as a document once accepted.
                Some(accept) => events.push(EventKind::StepWaiting {
                    path: path.clone(),
                    wait: WaitKind::Acceptance,
                    deadline: accept.timeout.map(|t| now.after(t)),
                    message: None,
                    questions: Vec::new(),
                }),
                None => {
                    if let Some(doc_type) = &step.produces {
                        events.push(EventKind::DocumentStored {
                            scope: program.scope_of(path),
                            doc_type: doc_type.clone(),
                            value: output,
                        });
                    }
                }
            }
            events
        }
        Outcome::ChildWaits { run_id, wait } => {
            vec![EventKind::ChildWaiting { path: path.clone(), run_id, wait }]
        }
        Outcome::Replied(text) => vec![EventKind::StepWaiting {
            path: path.clone(),
            wait: WaitKind::Conversation,
            deadline: None,
            message: Some(text),
            questions: Vec::new(),
        }],
        Outcome::Clarify(questions) => {
            let asked = state.steps.get(path).map_or(0, |s| s.clarifications);
            let most = match &step.kind {
                StepKind::Agent(a) => a.max_clarifications,
                _ => 0,
            };
            if asked < most {
                return vec![EventKind::StepWaiting {
                    path: path.clone(),
                    wait: WaitKind::Clarification,
                    deadline: None,
                    message: None,
                    questions,
                }];
            }
            let error = StepError {
                class: ErrorClass::Fatal,
                message: format!("the model still asks questions after {asked} rounds of answers"),
                hint: Some("raise `max_clarifications`, or give the prompt what the model asks for".into()),
                cause: None,
            };
            vec![EventKind::StepFailed { path: path.clone(), attempt, error, output: None, retry_at: None }]
        }
        Outcome::Failed { error, output, retry_after } => {
            let policy = program.retry(step);
            let round_base = state.steps.get(path).map_or(0, |s| s.round_base);
            let in_round = attempt.saturating_sub(round_base);
            let retry_at = (in_round < policy.max_attempts && policy.retries(error.class)).then(|| {
                let delay = backoff(&policy, in_round, jitter_seed(state, path, attempt));
                let delay = retry_after.map_or(delay, |least| delay.max(least));
                Timestamp(now.0.saturating_add(delay.as_millis()))
            });
            vec![EventKind::StepFailed { path: path.clone(), attempt, error, output, retry_at }]
        }
    }
}

/// The delay after the `n`th failed attempt of a round: `delay × backoff^(n-1)`,
/// capped at `max_delay`; with jitter, a deterministic point in its upper half.
pub fn backoff(policy: &RetryPolicy, n: u32, seed: u64) -> Duration {
    let exponent = i32::try_from(n.saturating_sub(1)).unwrap_or(i32::MAX);
    let raw = policy.delay.as_millis() as f64 * policy.backoff.powi(exponent);
    let capped = raw.min(policy.max_delay.as_millis() as f64).max(0.0);
    let ms = if policy.jitter {
        let fraction = (seed >> 11) as f64 / (1u64 << 53) as f64;
        capped / 2.0 + fraction * capped / 2.0
    } else {
        capped
    };
    Duration::from_millis(ms as u64)
}

/// A seed that differs per run, step and attempt, and is the same every
/// time they are the same: jitter without a random source, so replays agree.
fn jitter_seed(state: &RunState, path: &StepPath, attempt: u32) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in state.run_id.as_str().bytes().chain(path.as_str().bytes()).chain(attempt.to_le_bytes()) {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    hash
}

/// The key that identifies one attempt everywhere: `run/step/attempt`. Sent
/// to LLM providers as a header and to commands in the environment, so a
/// step re-run after a crash is recognisably the same attempt.
pub fn idempotency_key(state: &RunState, path: &StepPath, attempt: u32) -> String {
    format!("{}/{}/{}", state.run_id, path, attempt)
}

/// The run a `workflow:` step's attempt runs as its child: the parent's id
/// (cut to fit) and 12 hex digits of the attempt's idempotency key's
/// SHA-256. Derived, never drawn, so a driver that takes the attempt over
/// after a crash finds the child the first one started.
pub fn child_run_id(state: &RunState, path: &StepPath, attempt: u32) -> RunId {
    use sha2::{Digest, Sha256};
    let digest = format!("{:x}", Sha256::digest(idempotency_key(state, path, attempt).as_bytes()));
    let parent = state.run_id.as_str();
    let kept = &parent[..parent.len().min(64 - 13)];
    RunId::new(format!("{kept}-{}", &digest[..12]))
        .unwrap_or_else(|_| unreachable!("a run id's first 51 characters, `-` and hex digits are a slug"))
}

/// What a completed run of `workflow` hands the step that called it (a
/// sub-workflow's output): the outputs of its top-level steps that have
/// one, by id.
pub fn run_output(state: &RunState, workflow: &crate::definition::Workflow) -> serde_json::Value {
    let outputs = workflow.steps.iter().filter_map(|step| {
        let output = state.steps.get(&StepPath::new(step.id.as_str()))?.output.clone()?;
        Some((step.id.as_str().to_owned(), output))
    });
    serde_json::Value::Object(outputs.collect())
}
