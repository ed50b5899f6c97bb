//! The CLI's words for typed causes: what inner layers refuse or fail
//! with, said as a message, a hint naming the command or setting that
//! helps, and the exit code.

use cairn_domain::steer::Refusal;
use cairn_engine::{EngineError, Unmet};
use cairn_ports::StoreError;

use super::exit;
use crate::error::{CatalogError, Error};

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
        Error::Server { code, detail, .. } => usage(
            format!("the server refused: {detail}"),
            match code.as_str() {
                "unauthorized" => {
                    Some("pass a token: `--token TOKEN` or CAIRN_TOKEN (`cairn token create`)".into())
                }
                "forbidden" => {
                    Some("use a token with that role (`cairn token list` shows each token's)".into())
                }
                _ => None,
            },
        ),
        Error::Catalog(catalog) => usage(
            catalog.to_string(),
            Some(match catalog {
                CatalogError::VersionTaken { .. } => {
                    "a version is one text: change the definition's `version:` to register the changed text".into()
                }
                CatalogError::Recursion { .. } => {
                    "a sub-workflow may not lead back to its caller: break the loop in one of them".into()
                }
                _ => "`cairn workflows` lists what is registered; `cairn workflows add FILE` registers a definition"
                    .into(),
            }),
        ),
        Error::Index(e) => usage(
            e.to_string(),
            Some(format!(
                "the index is made from the store: remove the `{}` directory of the data directory and search again \
                 to make it anew",
                crate::host::SEARCH_DIR
            )),
        ),
        other => usage(other.to_string(), None),
    }
}

/// What is wrong with damaged store data, in words.
pub(crate) fn damage_words(what: &cairn_ports::DamageKind) -> String {
    use cairn_ports::DamageKind as K;
    match what {
        K::BadRecord => "a log record is damaged (not the half-written end a crash leaves)".to_owned(),
        K::OutOfOrder => "a log record is out of order".to_owned(),
        K::CutShort => "the file ends inside a log record".to_owned(),
        K::NoHeader => "the log segment has lost its header".to_owned(),
        K::RolledBack { run, expected, found } => {
            format!("run `{run}` was recorded up to event {expected}, but the database holds up to {found}")
        }
        K::Broken { run, seq } => format!("run `{run}`: its stored log does not link at event {seq}"),
        K::Database => "the database's own files (conf, db, snap.*) are damaged".to_owned(),
        K::Seal => "the seal (what the database held at its last flush) is damaged".to_owned(),
        other => other.to_string(),
    }
}

/// Where damaged store data is and what is wrong with it.
pub(crate) fn damage_line(damage: &cairn_ports::Damage) -> String {
    let at = damage.offset.map(|o| format!(" at byte {o}")).unwrap_or_default();
    format!("{}{at}: {}", damage.file, damage_words(&damage.what))
}

/// A store that refuses damaged files: where, what, and that nothing
/// was replayed past the damage or deleted.
fn damaged(damage: &cairn_ports::Damage) -> Said {
    usage(
        format!("the store is damaged: {}", damage_line(damage)),
        Some(
            "nothing was replayed past the damage and no log file was deleted; `cairn doctor` reports \
             what is damaged and what can be recovered; copy the data directory before repairing it"
                .to_owned(),
        ),
    )
}

fn engine(e: &EngineError, verb: &str) -> Said {
    match e {
        EngineError::Store(StoreError::NotFound(id)) => {
            usage(format!("no run `{id}` in this data directory"), None)
        }
        EngineError::Store(StoreError::AlreadyExists(id)) => {
            usage(format!("a run `{id}` exists already: pick another --run-id"), None)
        }
        EngineError::Store(StoreError::Damaged(damage)) => damaged(damage),
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
        EngineError::Labels(e) => usage(
            e.to_string(),
            Some("a run's labels are its definition's `labels:` and each `--label KEY=VALUE`".into()),
        ),
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
        Refusal::GateNotNamed { gate, .. } => Some(format!(
            "to decide at `{gate}`, name it: --gate '{gate}' (`cairn status {run}` shows what it waits for)"
        )),
        _ => None,
    };
    usage(message, hint)
}

#[cfg(test)]
mod tests {
    use cairn_ports::{Damage, DamageKind};

    use super::*;

    #[test]
    fn a_damaged_store_is_refused_with_where_what_and_the_way_on() {
        let damage = Damage {
            file: ".cairn/wal-0000000000000002".into(),
            offset: Some(2178),
            what: DamageKind::BadRecord,
        };
        let said = said(&Error::Engine(EngineError::Store(StoreError::Damaged(damage))), "runs");
        let hint = said.hint.unwrap_or_default();
        insta::assert_snapshot!(format!("error: {}\nhint: {hint}\nexit {}", said.message, said.code), @r"
        error: the store is damaged: .cairn/wal-0000000000000002 at byte 2178: a log record is damaged (not the half-written end a crash leaves)
        hint: nothing was replayed past the damage and no log file was deleted; `cairn doctor` reports what is damaged and what can be recovered; copy the data directory before repairing it
        exit 2
        ");
    }
}
