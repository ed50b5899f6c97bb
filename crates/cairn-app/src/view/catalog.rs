//! The workflow catalog as every front shows it: a workflow's entry
//! (its latest version and figures) and its versions, as JSON.

use cairn_ports::{Registered, WorkflowVersion};
use serde_json::{Value, json};

use super::iso_time;
use crate::catalog::{Entry, Stats};
use crate::stats::{Report, Spent};

/// A registered version without its text: `workflow`, `version`,
/// `number`, `definition_name`, `hash`, `registered_at`, `registered_by`.
pub fn version_json(v: &WorkflowVersion) -> Value {
    json!({
        "workflow": v.workflow, "version": v.version, "number": v.number,
        "definition_name": v.definition_name, "hash": v.hash,
        "registered_at": iso_time(v.registered_at), "registered_by": v.registered_by,
    })
}

/// A registered version with its `definition` text and `files`: what
/// `workflows show` prints and a run from it records.
pub fn definition_json(v: &WorkflowVersion) -> Value {
    let mut out = version_json(v);
    out["definition"] = json!(v.definition);
    out["files"] = json!(v.files);
    out
}

/// What registering did: the version, and `added` (false: the same text
/// was registered already, as this version).
pub fn registered_json(r: &Registered) -> Value {
    let mut out = version_json(r.version());
    out["added"] = json!(matches!(r, Registered::Added(_)));
    out
}

/// A workflow's figures: `runs`, `by_status`, `success_rate`,
/// `median_ms`, `p95_ms`, `usage` (tokens, `cost_usd`), `last_run_at`.
pub fn stats_json(s: &Stats) -> Value {
    json!({
        "runs": s.runs, "by_status": s.by_status, "success_rate": s.success_rate,
        "median_ms": s.median_ms, "p95_ms": s.p95_ms,
        "usage": super::usage_json(&s.usage, s.cost_usd),
        "last_run_at": s.last_run_at.map(iso_time),
    })
}

/// One workflow of the catalog: `workflow`, `name`, `description`,
/// `tags`, `latest` (its latest version, or `null` for one only run from
/// files) and `stats`.
pub fn entry_json(e: &Entry) -> Value {
    json!({
        "workflow": e.workflow, "name": e.about.name, "description": e.about.description, "tags": e.about.tags,
        "latest": e.latest.as_ref().map(version_json), "stats": stats_json(&e.stats),
    })
}

/// What `cairn stats` and `GET /stats` answer: `workflow` and `since` (as
/// asked), `overall` (figures as [`stats_json`]), `by_workflow` (each with
/// its `workflow`), `failing_steps` (`workflow`, `step`, `failures`,
/// `runs`, `classes`), `by_agent` and `by_model` (`name`, tokens,
/// `cost_usd`).
pub fn report_json(r: &Report) -> Value {
    let by_workflow: Vec<Value> = r
        .by_workflow
        .iter()
        .map(|(workflow, s)| {
            let mut v = stats_json(s);
            v["workflow"] = json!(workflow);
            v
        })
        .collect();
    let failing: Vec<Value> = r
        .failing
        .iter()
        .map(|f| json!({"workflow": f.workflow, "step": f.step, "failures": f.failures, "runs": f.runs, "classes": f.classes}))
        .collect();
    let spent = |list: &[Spent]| -> Vec<Value> {
        list.iter()
            .map(|s| {
                let mut v = super::usage_json(&s.usage, s.cost_usd);
                v["name"] = json!(s.name);
                v
            })
            .collect()
    };
    json!({
        "workflow": r.workflow, "since": r.since.map(iso_time), "overall": stats_json(&r.overall),
        "by_workflow": by_workflow, "failing_steps": failing,
        "by_agent": spent(&r.by_agent), "by_model": spent(&r.by_model),
    })
}
