//! Listings: runs and checkpoints, as a table and as JSON.

use std::fmt::Write;

use cairn_domain::checkpoint::Checkpoint;
use cairn_domain::state::word;
use serde_json::{Value, json};

use super::iso_time;
use crate::app::Listed;

/// Runs as aligned columns, newest first.
pub fn table(runs: &[Listed]) -> String {
    let mut out = format!(
        "{:<26} {:<20} {:<20} {:<24} {:<24} {:>10} {:>9}\n",
        "RUN", "WORKFLOW", "STATUS", "CREATED", "UPDATED", "TOKENS", "COST"
    );
    for r in runs {
        let s = &r.summary;
        let usage = s.usage();
        let tokens = usage.prompt_tokens + usage.completion_tokens;
        let cost = r.cost_usd.map_or("-".to_owned(), |c| format!("${c:.4}"));
        let _ = writeln!(
            out,
            "{:<26} {:<20} {:<20} {:<24} {:<24} {tokens:>10} {cost:>9}",
            s.run_id.as_str(),
            s.workflow.as_str(),
            word(s.status),
            iso_time(s.created_at),
            iso_time(s.updated_at)
        );
    }
    out
}

/// Runs as a JSON array of summaries, newest first: `run_id`, `workflow`,
/// `status`, `created_at`, `updated_at`, `usage`.
pub fn json(runs: &[Listed]) -> Value {
    let rows = runs.iter().map(|r| {
        let (s, usage) = (&r.summary, r.summary.usage());
        json!({
            "run_id": s.run_id, "workflow": s.workflow, "status": s.status,
            "created_at": iso_time(s.created_at), "updated_at": iso_time(s.updated_at),
            "usage": {"prompt_tokens": usage.prompt_tokens, "completion_tokens": usage.completion_tokens,
                      "estimated": usage.estimated, "cost_usd": r.cost_usd},
        })
    });
    Value::Array(rows.collect())
}

/// Checkpoints as aligned columns, oldest first.
pub fn checkpoints_table(list: &[Checkpoint]) -> String {
    let mut out = format!("{:>6}  {:<24}  {:>10}  LABEL\n", "SEQ", "AT", "SIZE");
    for c in list {
        let _ = writeln!(out, "{:>6}  {:<24}  {:>10}  {}", c.seq, iso_time(c.at), c.size_bytes, c.label);
    }
    out
}

/// Checkpoints as a JSON array, oldest first: `seq`, `at`, `label`, `size_bytes`.
pub fn checkpoints_json(list: &[Checkpoint]) -> Value {
    let rows = list
        .iter()
        .map(|c| json!({"seq": c.seq, "at": iso_time(c.at), "label": c.label, "size_bytes": c.size_bytes}));
    Value::Array(rows.collect())
}
