//! The CLI's words for typed causes: what inner layers refuse or fail
//! with, said as a message, a hint naming the command or setting that
//! helps, and the exit code.

use cairn_domain::steer::Refusal;
use cairn_engine::{EngineError, Unmet};
use cairn_ports::StoreError;

use super::exit;
use crate::error::Error;

/// An error as the CLI says it.
pub(crate) struct Said {
    /// The `error:` line.
    pub message: String,
    /// The `hint:` line, when one helps.
    pub hint: Option<String>,
    /// The exit code.
    pub code: u8,
    /// Printed as it is, without `error: ` (located problems, one a line).
    pub bare: bool,
}

fn usage(message: impl Into<String>, hint: Option<String>) -> Said {
    Said { message: message.into(), hint, code: exit::USAGE, bare: false }
}

/// What the CLI says of `e`, met by `verb`.
pub(crate) fn said(e: &Error, verb: &str) -> Said {
    match e {
        Error::Definition { name, problems } => Said { bare: true, ..usage(problems.render(name), None) },
        Error::Engine(e) => engine(e, verb),
        Error::Interrupted { run, cause } => usage(
            cause.to_string(),
            Some(format!(
                "every event committed before the failure is kept; fix the cause (free disk space, check the \
                 data directory), then `cairn resume {run}`"
            )),
        ),
        other => usage(other.to_string(), None),
    }
}

fn engine(e: &EngineError, verb: &str) -> Said {
    match e {
        EngineError::Store(StoreError::NotFound(id)) => {
            usage(format!("no run `{id}` in this data directory"), None)
        }
        EngineError::Store(StoreError::AlreadyExists(id)) => {
            usage(format!("a run `{id}` exists already: pick another --run-id"), None)
        }
        EngineError::Store(e) => usage(e.to_string(), None),
        EngineError::Refused { run, refusal } => refused(run.as_str(), refusal, verb),
        EngineError::Unmet { run, unmet } => {
            let what: Vec<String> = unmet.iter().map(ToString::to_string).collect();
            let hints: std::collections::BTreeSet<String> = unmet.iter().map(unmet_hint).collect();
            let hint = hints.into_iter().collect::<Vec<_>>().join("; ");
            let message = match run {
                Some(run) => format!("run `{run}` needs what this process lacks: {}", what.join(", ")),
                None => format!("the workflow needs what this process lacks: {}", what.join(", ")),
            };
            usage(message, Some(hint))
        }
        EngineError::Inputs(problems) => usage(problems.join("; "), None),
        EngineError::Definition { run, problems } => {
            usage(format!("the definition recorded with run `{run}` no longer loads: {}", problems), None)
        }
        other => Said { code: exit::FAILED, ..usage(other.to_string(), None) },
    }
}

fn unmet_hint(u: &Unmet) -> String {
    match u {
        Unmet::Provider { provider, .. } if provider == "default" => {
            "set CAIRN_LLM_BASE_URL (with CAIRN_LLM_API_KEY and CAIRN_LLM_MODEL as needed), or add \
             [providers.default] to cairn.toml, or run with --llm mock"
                .into()
        }
        Unmet::Provider { provider, .. } => {
            format!("add [providers.{provider}] to cairn.toml, or run with --llm mock")
        }
        Unmet::Handler { handler } => {
            format!("`{handler}` is served by the binary that registers it; run the run with that binary")
        }
        _ => String::new(),
    }
}

fn refused(run: &str, r: &Refusal, verb: &str) -> Said {
    let message = match verb {
        "" => format!("run `{run}`: {r}"),
        verb => format!("cannot {verb} run `{run}`: {r}"),
    };
    let hint = match r {
        Refusal::Ended { .. } => Some(format!(
            "`cairn status {run}` shows how it ended; to run it again, fork it from one of its checkpoints \
             (`cairn checkpoints {run}`)"
        )),
        Refusal::BudgetNotRaised { .. } => Some("give a larger --budget-usd".into()),
        Refusal::SeveralWait { .. } | Refusal::NotWaitingThere { .. } => {
            Some("name the gate with --gate STEP (`cairn status` lists them)".into())
        }
        Refusal::RoleNeeded { .. } | Refusal::NotAnApprover { .. } => {
            Some("decide as one of its roles with --as ROLE".into())
        }
        Refusal::NoCheckpoint { .. } => Some(format!("`cairn checkpoints {run}` lists them")),
        _ => None,
    };
    usage(message, hint)
}
