//! Search hits, as JSON and as text.

use anstyle::Style;
use cairn_domain::state::Timestamp;
use cairn_ports::{DocKind, Fragment};
use serde_json::{Value, json};
use unicode_width::UnicodeWidthChar;

use super::list::{Fit, status_style, summary_json};
use super::time;
use crate::search::Found;

/// Hits as a JSON array, best first: `kind` (`workflow` or `run`), `id`,
/// `workflow`, `score`, `field` (where the snippet comes from), `snippet`
/// (pieces `{text, hit}`, `hit` true for matched words) and, for a run,
/// `run` (its summary, as `runs` lists it).
pub fn hits_json(found: &[Found]) -> Value {
    Value::Array(found.iter().map(hit_json).collect())
}

/// One hit, as [`hits_json`] lists it.
pub fn hit_json(f: &Found) -> Value {
    let h = &f.hit;
    json!({
        "kind": h.kind.as_str(), "id": h.id, "workflow": h.workflow, "score": h.score,
        "field": h.field.as_str(), "snippet": h.snippet, "run": f.run.as_ref().map(summary_json),
    })
}

/// Hits as text, best first: a line naming each (a run with its workflow,
/// status and age) and an indented line with its snippet, matched words
/// in bold on a terminal with colours and between `**` elsewhere.
pub fn hits_text(found: &[Found], now: Timestamp, fit: Fit) -> String {
    let mut out = String::new();
    for f in found {
        let h = &f.hit;
        match (&h.kind, &f.run) {
            (DocKind::Run, Some(run)) => {
                let status = cairn_domain::state::word(run.summary.status);
                let status = if fit.colour {
                    let style = status_style(run.summary.status);
                    format!("{style}{status}{style:#}")
                } else {
                    status.to_owned()
                };
                let ago = time::ago(run.summary.created_at, now);
                out.push_str(&format!("run       {}  {}  {status}  {ago}\n", h.id, h.workflow));
            }
            _ => out.push_str(&format!("{:<9} {}\n", h.kind.as_str(), h.id)),
        }
        let lead = format!("          {}: ", h.field.as_str());
        let room = fit.width.map(|w| w.saturating_sub(lead.len()));
        out.push_str(&lead);
        out.push_str(&snippet_line(&h.snippet, room, fit.colour));
        out.push('\n');
    }
    out
}

/// A snippet on one line (whitespace runs become one space), cut with `…`
/// to `room` columns.
fn snippet_line(snippet: &[Fragment], room: Option<usize>, colour: bool) -> String {
    let bold = Style::new().bold();
    let mut line = String::new();
    let mut used = 0;
    let mut last_space = true;
    for fragment in snippet {
        let (open, close) = match (fragment.hit, colour) {
            (false, _) => (String::new(), String::new()),
            (true, true) => (bold.render().to_string(), bold.render_reset().to_string()),
            (true, false) => ("**".to_owned(), "**".to_owned()),
        };
        line.push_str(&open);
        for c in fragment.text.chars() {
            let c = if c.is_whitespace() { ' ' } else { c };
            if c == ' ' && last_space {
                continue;
            }
            last_space = c == ' ';
            let width = c.width().unwrap_or(0);
            if room.is_some_and(|room| used + width + 1 > room) {
                line.push_str(&close);
                line.push('…');
                return line;
            }
            used += width;
            line.push(c);
        }
        line.push_str(&close);
    }
    line
}
