//! What every front shows, built once: the run JSON and summary, event
//! lines, listings, plans. The CLI prints these and the server will
//! serialize the same values, so a run reads the same everywhere.

pub mod catalog;
pub mod event;
pub mod list;
pub mod plan;
pub mod run;
pub mod search;
pub mod time;
pub mod token;

use std::time::{Duration, UNIX_EPOCH};

use cairn_domain::event::Cause;
use cairn_domain::state::{StepError, Timestamp};

/// RFC 3339 in UTC with milliseconds (`2026-11-23T04:31:41.123Z`): the one
/// time format of everything cairn prints.
pub fn iso_time(t: Timestamp) -> String {
    humantime::format_rfc3339_millis(UNIX_EPOCH + Duration::from_millis(t.0)).to_string()
}

/// Tokens and their cost as every JSON shows them: `prompt_tokens`,
/// `completion_tokens`, `estimated`, `cost_usd` (`null` when a model has
/// no price).
pub fn usage_json(u: &cairn_domain::state::TokenUsage, cost_usd: Option<f64>) -> serde_json::Value {
    serde_json::json!({
        "prompt_tokens": u.prompt_tokens,
        "completion_tokens": u.completion_tokens,
        "estimated": u.estimated,
        "cost_usd": cost_usd,
    })
}

/// What helps with `error`: its own hint, else the words for its typed
/// cause, which name the host's settings (`cairn.toml`, the environment).
pub fn hint(error: &StepError) -> Option<String> {
    error.hint.clone().or_else(|| error.cause.as_ref().map(cause_hint))
}

fn cause_hint(cause: &Cause) -> String {
    match cause {
        Cause::ProgramNotAllowed { program } => {
            format!("add \"{program}\" to [commands] allow in cairn.toml if it should run")
        }
        Cause::OutsideRoots { .. } => {
            "list the directory under [commands] roots in cairn.toml if commands may run there".into()
        }
        Cause::NoModel { provider } if provider == "default" => {
            "set `model` on the agent, or CAIRN_LLM_MODEL (or `model` under [providers.default] in cairn.toml)"
                .into()
        }
        Cause::NoModel { provider } => {
            format!("set `model` on the agent, or under [providers.{provider}] in cairn.toml")
        }
        Cause::KeyRefused { provider, setting } => format!("check {setting} (the key of provider `{provider}`)"),
        Cause::RateLimited { provider } => format!(
            "provider `{provider}` is rate limiting: lower the workflow's max_parallel, or set requests_per_minute under [providers.{provider}] in cairn.toml"
        ),
        Cause::ProviderTimeout { provider } => format!(
            "raise the timeouts under [providers.{provider}] in cairn.toml (timeout, first_byte_timeout, idle_timeout), or check the server"
        ),
        Cause::BudgetSpent => {
            "raise the run's budget and go on: `cairn resume RUN --budget-usd USD` (recorded with who raised it)"
                .into()
        }
        Cause::EnvNotAllowed { name } => format!(
            "remove `{name}` from the step's env: programs are found and loaded from cairn's own environment"
        ),
        Cause::OptionFromData { index } => format!(
            "put a literal \"--\" before command[{index}] so the program reads it as an operand, or set `allow_option_args: true` on the step if run data may pick options"
        ),
        Cause::ArgOutsideRoots { index } => format!(
            "list the folder command[{index}] names under [commands] roots in cairn.toml, or drop `confine_paths: true` from the step"
        ),
        _ => "see the error's message".into(),
    }
}

/// An error as the run JSON shows it: `{class, message, hint}`, the hint
/// worded from the cause when the error has none.
pub fn error_json(error: &StepError) -> serde_json::Value {
    serde_json::json!({"class": error.class, "message": error.message, "hint": hint(error)})
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cause_is_worded_here_and_a_hint_of_the_error_wins() {
        let error = StepError {
            cause: Some(Cause::ProgramNotAllowed { program: "rm".into() }),
            ..StepError::new(cairn_domain::state::ErrorClass::Permission, "`rm` is not an allowed program")
        };
        assert_eq!(
            hint(&error).as_deref(),
            Some("add \"rm\" to [commands] allow in cairn.toml if it should run")
        );
        assert_eq!(
            error_json(&error),
            serde_json::json!({"class": "permission", "message": "`rm` is not an allowed program",
                               "hint": "add \"rm\" to [commands] allow in cairn.toml if it should run"})
        );
        let said = error.with_hint("ask the owner");
        assert_eq!(hint(&said).as_deref(), Some("ask the owner"));
        assert_eq!(hint(&StepError::new(cairn_domain::state::ErrorClass::Fatal, "x")), None);
    }

    #[test]
    fn the_fence_refusals_say_the_way_out() {
        let hints: Vec<String> = [
            Cause::EnvNotAllowed { name: "LD_PRELOAD".into() },
            Cause::OptionFromData { index: 2 },
            Cause::ArgOutsideRoots { index: 3 },
        ]
        .iter()
        .map(cause_hint)
        .collect();
        insta::assert_snapshot!(hints.join("\n"));
    }

    #[test]
    fn iso_times_match_the_calendar() {
        assert_eq!(iso_time(Timestamp(0)), "1970-01-01T00:00:00.000Z");
        assert_eq!(iso_time(Timestamp(951_782_400_000)), "2000-02-29T00:00:00.000Z");
        assert_eq!(iso_time(Timestamp(1_795_409_501_123)), "2026-11-23T04:51:41.123Z");
    }
}
