//! The `token` verbs: API tokens for `cairn serve`, kept in the data
//! directory's store as hashes.

use super::args::{ListFormat, TokenVerb};
use super::{Verbs, exit};
use crate::error::Error;
use crate::view;

/// `cairn token create|list|revoke`.
pub(crate) fn token(verbs: &Verbs<'_>, verb: TokenVerb) -> Result<u8, Error> {
    let opened = verbs.open("token")?;
    let app = &opened.app;
    match verb {
        TokenVerb::Create { name, role, gate_roles, expires } => {
            let expires = match expires {
                Some(text) => Some(
                    text.parse::<cairn_domain::duration::Duration>()
                        .map_err(|e| Error::Config(format!("--expires `{text}`: {e}")))?,
                ),
                None => None,
            };
            let made = opened.runtime.block_on(app.create_token(&name, role.into(), gate_roles, expires))?;
            outln!("{}", made.secret);
            verbs.notice(format!(
                "token `{}` ({}) made: it is shown this once; send it as `Authorization: Bearer TOKEN`",
                made.record.name,
                made.record.role.word()
            ));
        }
        TokenVerb::List { format } => {
            let tokens = opened.runtime.block_on(app.tokens())?;
            match format {
                ListFormat::Json => {
                    outln!("{}", serde_json::Value::Array(tokens.iter().map(view::token::json).collect()));
                }
                ListFormat::Table => out!("{}", table(&tokens, app.now())),
            }
        }
        TokenVerb::Revoke { name } => {
            opened.runtime.block_on(app.revoke_token(&name))?;
            verbs.notice(format!("token `{name}` revoked"));
        }
    }
    Ok(exit::OK)
}

/// Tokens as aligned columns.
fn table(tokens: &[cairn_ports::TokenRecord], now: cairn_domain::state::Timestamp) -> String {
    if tokens.is_empty() {
        return "no tokens (make one with `cairn token create NAME`)\n".into();
    }
    let rows: Vec<[String; 6]> = tokens
        .iter()
        .map(|t| {
            [
                t.name.clone(),
                t.role.word().to_owned(),
                if t.gate_roles.is_empty() { "-".into() } else { t.gate_roles.join(",") },
                view::time::ago(t.created_at, now),
                match t.expires_at {
                    Some(_) if t.expired(now) => "expired".into(),
                    Some(at) => view::iso_time(at),
                    None => "never".into(),
                },
                t.last_used_at.map_or_else(|| "never".into(), |at| view::time::ago(at, now)),
            ]
        })
        .collect();
    let header = ["NAME", "ROLE", "GATE ROLES", "CREATED", "EXPIRES", "LAST USED"].map(str::to_owned);
    let widths: Vec<usize> = (0..6)
        .map(|i| std::iter::once(&header).chain(&rows).map(|r| r[i].chars().count()).max().unwrap_or(0))
        .collect();
    std::iter::once(&header)
        .chain(&rows)
        .map(|r| {
            let cells: Vec<String> = r.iter().zip(&widths).map(|(c, w)| format!("{c:<w$}")).collect();
            cells.join("  ").trim_end().to_owned() + "\n"
        })
        .collect()
}
