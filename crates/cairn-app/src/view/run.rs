//! A run as every front shows it: the one run JSON (the shape
//! `docs/cli.md` fixes), its steps as rows, and the gates it waits at.

use cairn_domain::access::Denied;
use cairn_domain::definition::{Step, Workflow};
use cairn_domain::event::Parent;
use cairn_domain::state::{
    GroupState, RunState, StepPath, StepState, StepStatus, Timestamp, TokenUsage, WaitKind,
};
use serde_json::{Value, json};

use super::iso_time;
use crate::app::Run;

/// One step of a run as the views list it: top-level steps always, instance
/// steps once they have a state, each under its group.
pub(crate) struct Row<'a> {
    pub depth: usize,
    pub path: StepPath,
    pub step: &'a Step,
    pub state: Option<&'a StepState>,
    pub group: Option<&'a GroupState>,
    /// Not a step: a note that the group above left out this many instances.
    pub hidden: usize,
}

/// Instances the summary lists per group; the rest are counted (failed and
/// unfinished ones are always listed).
const LISTED_INSTANCES: usize = 10;

/// The rows of `steps` (under `prefix`), depth first in file and item order.
/// With `cap`, a group lists at most [`LISTED_INSTANCES`] finished-fine instances.
pub(crate) fn rows<'a>(
    state: &'a RunState,
    steps: &'a [Step],
    prefix: &str,
    depth: usize,
    cap: bool,
    out: &mut Vec<Row<'a>>,
) {
    for step in steps {
        let path = StepPath::new(format!("{prefix}{}", step.id));
        let s = state.steps.get(&path);
        if depth > 0 && s.is_none() {
            continue;
        }
        let group = state.groups.get(&path);
        out.push(Row { depth, path: path.clone(), step, state: s, group, hidden: 0 });
        let (Some(body), Some(g)) = (step.body(), group) else { continue };
        let mut hidden = 0;
        for (i, key) in g.keys.iter().enumerate() {
            let instance = format!("{path}[{key}].");
            let quiet = g.done[i] && g.failed.as_ref().is_none_or(|f| !f.as_str().starts_with(&instance));
            if cap && i >= LISTED_INSTANCES && quiet {
                hidden += 1;
                continue;
            }
            rows(state, body, &instance, depth + 1, cap, out);
        }
        if hidden > 0 {
            out.push(Row { depth: depth + 1, path, step, state: None, group: None, hidden });
        }
    }
}

/// The run JSON: `run_id`, `workflow`, `status`, `inputs`, `steps`,
/// `waiting` (the first gate), `usage`, `error` as `docs/cli.md` fixes
/// them, and `version`, `labels`, `triggered_by`, `priority`, `parent`, `driven`, `created_at`, `updated_at`, `gates` (every waiting
/// gate), `budget_usd`, and a fork's `forked_from` and `inherited_usage`.
/// `steps` lists every step with a state, instance steps by their paths,
/// with `started_at`, `finished_at` and `duration_ms`. Times are RFC 3339.
pub fn run_json(run: &Run, now: Timestamp) -> Value {
    let (state, wf, cost_usd) = (&run.state, &run.definition.workflow, run.cost_usd);
    let mut all = Vec::new();
    rows(state, &wf.steps, "", 0, false, &mut all);
    let steps: Vec<Value> = all
        .iter()
        .map(|row| {
            let s = row.state;
            let mut v = json!({
                "path": row.path,
                "id": row.step.id,
                "status": s.map_or(state.unstarted_status(), |s| s.status),
                "attempts": s.map_or(0, |s| s.attempts),
                "output": s.and_then(|s| s.output.clone()),
                "error": s.and_then(|s| s.error.as_ref()).map(super::error_json),
            });
            let (started, finished) = (s.and_then(|s| s.started_at), s.and_then(|s| s.finished_at));
            v["started_at"] = json!(started.map(iso_time));
            v["finished_at"] = json!(finished.map(iso_time));
            v["duration_ms"] = json!(started.map(|from| finished.unwrap_or(now).0.saturating_sub(from.0)));
            if let Some(g) = row.group {
                v["instances"] = json!({"total": g.keys.len(), "finished": g.finished});
            }
            if let Some(u) = s.map(|s| s.usage).filter(|u| u.prompt_tokens + u.completion_tokens > 0) {
                v["usage"] = json!(u);
            }
            if let Some(child) = s.and_then(|s| s.child.as_ref()) {
                v["child"] = json!(child);
            }
            v
        })
        .collect();
    let gates: Vec<Value> = waiting_gates(state, &all).iter().map(|gate| gate_json(gate, now)).collect();
    let usage = super::usage_json;
    let mut v = json!({
        "run_id": state.run_id,
        "workflow": state.workflow,
        "version": state.version,
        "labels": state.labels,
        "triggered_by": state.triggered_by,
        "priority": state.priority,
        "parent": parent_of(state),
        "status": state.status,
        "driven": run.driven,
        "created_at": iso_time(state.created_at),
        "updated_at": iso_time(state.updated_at),
        "inputs": state.inputs,
        "steps": steps,
        "waiting": gates.first().filter(|_| state.status.is_waiting()),
        "gates": gates,
        "usage": usage(&state.usage, cost_usd),
        "budget_usd": state.budget_usd.or(wf.defaults.budget_usd),
        "error": state.error.as_ref().map(super::error_json),
    });
    if let Some(origin) = &state.forked_from {
        v["forked_from"] = json!({"run_id": origin.run, "checkpoint": origin.checkpoint});
        let inherited = TokenUsage::total(state.inherited_by_model.values());
        v["inherited_usage"] = usage(&inherited, run.inherited_cost_usd);
    }
    v
}

/// The gate a waiting run waits at: the first step waiting for a person.
pub struct Gate<'a> {
    /// Its path.
    pub path: StepPath,
    /// What it waits for.
    pub kind: WaitKind,
    /// The roles that must approve (none: anyone, once).
    pub approvers: Vec<String>,
    /// Its state: decisions, deadline, questions, output.
    pub state: &'a StepState,
}

/// The run a run was made from: recorded at its creation, or (for a fork
/// recorded before runs kept it) where its `run_forked` says it came from.
fn parent_of(state: &RunState) -> Option<Parent> {
    state.parent.clone().or_else(|| {
        let origin = state.forked_from.as_ref()?;
        Some(Parent { run_id: origin.run.clone(), checkpoint: Some(origin.checkpoint), step: None, depth: 0 })
    })
}

/// A gate as the run JSON lists it: `gate`, `kind`, `approvers`,
/// `approved_by`, and where they apply `deadline`, `message`,
/// `questions` and the `output` to accept; `child` names the child run
/// whose gate it is (a sub-workflow's step), decided there.
pub fn gate_json(gate: &Gate, now: Timestamp) -> Value {
    let s = gate.state;
    let approved_by: Vec<Value> = s
        .decisions
        .iter()
        .filter(|d| d.approve)
        .map(|d| json!({"by": d.by, "role": d.role, "comment": d.comment, "at": iso_time(d.at)}))
        .collect();
    let mut v = json!({
        "gate": gate.path,
        "kind": gate.kind,
        "approvers": gate.approvers,
        "approved_by": approved_by,
    });
    if let Some(deadline) = s.deadline {
        v["deadline"] = json!(iso_time(deadline));
        v["deadline_passed"] = json!(deadline <= now);
    }
    if let Some(message) = &s.message {
        v["message"] = json!(message);
    }
    if !s.questions.is_empty() {
        v["questions"] = json!(s.questions);
    }
    if kind_needs_output(gate.kind) && !s.waits_on_child {
        v["output"] = s.output.clone().unwrap_or(Value::Null);
    }
    if let Some(child) = s.child.as_ref().filter(|_| s.waits_on_child) {
        v["child"] = json!(child);
    }
    v
}

/// A gate waiting for a person, and what a caller may do there.
pub struct WaitingGate<'a> {
    /// The run it waits in.
    pub run: &'a Run,
    /// The gate.
    pub gate: Gate<'a>,
    /// The gate role the caller decides as there (`None`: an operator's
    /// decision or answer), or why it may not act there.
    pub role: Result<Option<String>, Denied>,
}

/// A gate of the inbox (`GET /gates`): the gate as the run JSON lists it,
/// with `run_id`, `workflow`, `run_status`, `updated_at` (the run's), and
/// what the caller may do: `decide_as` (the gate role, `null` for an
/// operator's decision or answer) or `cannot` (why not).
pub fn waiting_gate_json(g: &WaitingGate, now: Timestamp) -> Value {
    let mut v = gate_json(&g.gate, now);
    let state = &g.run.state;
    v["run_id"] = json!(state.run_id);
    v["workflow"] = json!(state.workflow);
    v["run_status"] = json!(state.status);
    v["updated_at"] = json!(iso_time(state.updated_at));
    match &g.role {
        Ok(role) => v["decide_as"] = json!(role),
        Err(denied) => v["cannot"] = json!(denied.to_string()),
    }
    v
}

impl Gate<'_> {
    /// The roles that approved here so far.
    pub fn approved(&self) -> Vec<String> {
        self.state.decisions.iter().filter(|d| d.approve).filter_map(|d| d.role.clone()).collect()
    }
}

/// The gates a run waits at, in step order: every step waiting for a
/// person, also while other steps run (a decision is taken then too),
/// none once the run ended.
pub(crate) fn waiting_gates<'a>(state: &RunState, rows: &[Row<'a>]) -> Vec<Gate<'a>> {
    if state.status.is_terminal() {
        return Vec::new();
    }
    rows.iter()
        .filter_map(|row| {
            let s = row.state?;
            let kind = s.wait.filter(|_| s.status == StepStatus::Waiting)?;
            let approvers = row
                .step
                .gate(kind)
                .filter(|_| !s.waits_on_child)
                .map(|(roles, _)| roles.iter().map(|r| r.to_string()).collect())
                .unwrap_or_default();
            Some(Gate { path: row.path.clone(), kind, approvers, state: s })
        })
        .collect()
}

/// The gates a run waits at, in step order, for prompts and decisions.
pub fn gates_of<'a>(state: &'a RunState, wf: &'a Workflow) -> Vec<Gate<'a>> {
    let mut all = Vec::new();
    rows(state, &wf.steps, "", 0, false, &mut all);
    waiting_gates(state, &all)
}

fn kind_needs_output(kind: WaitKind) -> bool {
    kind == WaitKind::Acceptance
}
