//! A run as people and scripts read it: the one run JSON every front
//! serializes (the shape `spec/cli.md` fixes), the summary table, and the
//! text of a gate.

use std::fmt::Write;

use cairn_domain::definition::{Step, StepKind, Workflow};
use cairn_domain::state::{GroupState, RunState, StepPath, StepState, StepStatus, Timestamp, WaitKind, word};
use serde_json::{Value, json};

use super::{elapsed, iso_time};
use crate::app::Run;

/// One step of a run as the views list it: top-level steps always, instance
/// steps once they have a state, each under its group.
struct Row<'a> {
    depth: usize,
    path: StepPath,
    step: &'a Step,
    state: Option<&'a StepState>,
    group: Option<&'a GroupState>,
    /// Not a step: a note that the group above left out this many instances.
    hidden: usize,
}

/// Instances the summary lists per group; the rest are counted (failed and
/// unfinished ones are always listed).
const LISTED_INSTANCES: usize = 10;

/// The rows of `steps` (under `prefix`), depth first in file and item order.
/// With `cap`, a group lists at most [`LISTED_INSTANCES`] finished-fine instances.
fn rows<'a>(
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

/// `3/5 instances` (`2/2 iterations` for a loop).
fn instances(step: &Step, group: &GroupState) -> String {
    let noun = if matches!(step.kind, StepKind::Loop(_)) { "iterations" } else { "instances" };
    format!("{}/{} {noun}", group.finished, group.keys.len())
}

/// The run JSON: `run_id`, `workflow`, `status`, `inputs`, `steps`, `waiting`, `usage`, `error`.
/// `steps` lists every step with a state, instance steps by their paths.
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
                "status": s.map_or(StepStatus::Pending, |s| s.status),
                "attempts": s.map_or(0, |s| s.attempts),
                "output": s.and_then(|s| s.output.clone()),
                "error": s.and_then(|s| s.error.clone()),
            });
            if let Some(g) = row.group {
                v["instances"] = json!({"total": g.keys.len(), "finished": g.finished});
            }
            if let Some(u) = s.map(|s| s.usage).filter(|u| u.prompt_tokens + u.completion_tokens > 0) {
                v["usage"] = json!(u);
            }
            v
        })
        .collect();
    let waiting = waiting_gates(state, &all).into_iter().next().map(|gate| {
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
        if kind_needs_output(gate.kind) {
            v["output"] = s.output.clone().unwrap_or(Value::Null);
        }
        v
    });
    json!({
        "run_id": state.run_id,
        "workflow": state.workflow,
        "status": state.status,
        "inputs": state.inputs,
        "steps": steps,
        "waiting": waiting,
        "usage": {
            "prompt_tokens": state.usage.prompt_tokens,
            "completion_tokens": state.usage.completion_tokens,
            "estimated": state.usage.estimated,
            "cost_usd": cost_usd,
        },
        "error": state.error,
    })
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

/// The gates a run waits at, when it waits for a person, in step order.
fn waiting_gates<'a>(state: &RunState, rows: &[Row<'a>]) -> Vec<Gate<'a>> {
    if !state.status.is_waiting() {
        return Vec::new();
    }
    rows.iter()
        .filter_map(|row| {
            let s = row.state?;
            let kind = s.wait.filter(|_| s.status == StepStatus::Waiting)?;
            let approvers = row
                .step
                .gate(kind)
                .map(|(roles, _)| roles.iter().map(|r| r.to_string()).collect())
                .unwrap_or_default();
            Some(Gate { path: row.path.clone(), kind, approvers, state: s })
        })
        .collect()
}

/// The gate of a waiting run, for prompts.
pub fn gate_of<'a>(state: &'a RunState, wf: &'a Workflow) -> Option<Gate<'a>> {
    let mut all = Vec::new();
    rows(state, &wf.steps, "", 0, false, &mut all);
    waiting_gates(state, &all).into_iter().next()
}

fn kind_needs_output(kind: WaitKind) -> bool {
    kind == WaitKind::Acceptance
}

/// What a person reads about a gate: what it waits for, who may decide,
/// the deadline, the questions or message, and the commands that decide.
/// `named`: the decide line names the gate (`--gate`), for when several wait.
pub fn gate_text(run: &str, gate: &Gate<'_>, now: Timestamp, named: bool) -> String {
    let mut out = String::new();
    let s = gate.state;
    let who = if gate.approvers.is_empty() { "anyone".to_owned() } else { gate.approvers.join(", ") };
    let _ = match gate.kind {
        WaitKind::Acceptance => writeln!(out, "waiting: acceptance of `{}`, by {who}", gate.path),
        WaitKind::Approval => writeln!(out, "waiting: approval `{}`, by {who}", gate.path),
        WaitKind::Clarification => writeln!(out, "waiting: answers to the questions of `{}`", gate.path),
        WaitKind::Block => writeln!(out, "blocked: `{}` failed; `cairn resume {run}` retries it", gate.path),
    };
    let approved: Vec<String> = s
        .decisions
        .iter()
        .filter(|d| d.approve)
        .map(|d| match &d.role {
            Some(role) => format!("{} as {role}", d.by),
            None => d.by.clone(),
        })
        .collect();
    if !approved.is_empty() {
        let _ = writeln!(out, "  approved so far by {}", approved.join(", "));
    }
    if let Some(message) = &s.message {
        let _ = writeln!(out, "  {message}");
    }
    for (i, q) in s.questions.iter().enumerate() {
        let _ = writeln!(out, "  {}. {q}", i + 1);
    }
    if let Some(deadline) = s.deadline {
        let note = if deadline <= now {
            "passed: its `on_timeout` applies when the run is next driven"
        } else {
            "its `on_timeout` applies then"
        };
        let _ = writeln!(out, "  deadline {} ({note})", iso_time(deadline));
    }
    let mut role = match gate.approvers.as_slice() {
        [] => String::new(),
        [one] => format!(" --as {one}"),
        _ => " --as ROLE".to_owned(),
    };
    if named {
        role = format!(" --gate '{}'{role}", gate.path);
    }
    let _ = match gate.kind {
        WaitKind::Acceptance | WaitKind::Approval => writeln!(
            out,
            "  decide: cairn approve {run}{role}   or   cairn reject {run}{role} --comment \"...\""
        ),
        WaitKind::Clarification => {
            let gate = if named { format!(" --gate '{}'", gate.path) } else { String::new() };
            writeln!(out, "  answer: cairn answer {run}{gate} --text \"...\"")
        }
        WaitKind::Block => Ok(()),
    };
    out
}

/// The end-of-run summary: a line for the run, a table of steps (instance
/// steps indented under their group, with counts), the usage, the final
/// outputs, and the error with its hint.
pub fn summary(run: &Run, now: Timestamp) -> String {
    let (state, wf, cost_usd) = (&run.state, &run.definition.workflow, run.cost_usd);
    let mut out = format!(
        "run {} ({}): {} in {}\n",
        state.run_id,
        state.workflow,
        word(state.status),
        elapsed(state.created_at, state.updated_at)
    );
    let mut table = Vec::new();
    rows(state, &wf.steps, "", 0, true, &mut table);
    let label = |row: &Row| format!("{}{}", "  ".repeat(row.depth), row.path);
    let width = table.iter().filter(|r| r.hidden == 0).map(|r| label(r).len()).max().unwrap_or(4).max(4);
    let _ = writeln!(out, "  {:<width$}  {:<10} {:>8}  {:>7}", "STEP", "STATUS", "ATTEMPTS", "TIME");
    for row in &table {
        if row.hidden > 0 {
            let indent = "  ".repeat(row.depth);
            let _ = writeln!(out, "  {indent}… {} more finished (`--format json` lists all)", row.hidden);
            continue;
        }
        let s = row.state;
        let status = s.map_or("pending".to_owned(), |s| word(s.status));
        let attempts = s.map_or(0, |s| s.attempts);
        let time = s
            .and_then(|s| Some(elapsed(s.started_at?, s.finished_at.or(s.started_at)?)))
            .unwrap_or_else(|| "-".into());
        let count = row.group.map(|g| format!("  {}", instances(row.step, g))).unwrap_or_default();
        let _ = writeln!(out, "  {:<width$}  {status:<10} {attempts:>8}  {time:>7}{count}", label(row));
    }
    if state.usage.prompt_tokens + state.usage.completion_tokens > 0 {
        let estimated = if state.usage.estimated { " (estimated)" } else { "" };
        let cost = cost_usd.map(|c| format!(", ${c:.4}")).unwrap_or_default();
        let _ = writeln!(
            out,
            "usage: {} prompt + {} completion tokens{estimated}{cost}",
            state.usage.prompt_tokens, state.usage.completion_tokens
        );
    }
    for step in final_steps(wf) {
        let Some(output) = state.steps.get(&StepPath::new(step)).and_then(|s| s.output.as_ref()) else {
            continue;
        };
        let text = match output {
            Value::String(s) => s.clone(),
            other => serde_json::to_string_pretty(other).unwrap_or_default(),
        };
        let _ = writeln!(out, "output of {step}:");
        let lines: Vec<&str> = text.lines().collect();
        for line in lines.iter().take(40) {
            let _ = writeln!(out, "  {line}");
        }
        if lines.len() > 40 {
            let _ = writeln!(out, "  … {} more lines (`--format json` shows all)", lines.len() - 40);
        }
    }
    let gates = waiting_gates(state, &table);
    for gate in &gates {
        out.push_str(&gate_text(state.run_id.as_str(), gate, now, gates.len() > 1));
    }
    if let Some(error) = &state.error {
        let _ = writeln!(out, "error: {}: {}", error.class, error.message);
        if let Some(hint) = &error.hint {
            let _ = writeln!(out, "hint: {hint}");
        }
    }
    out
}

/// Steps no other step needs: where the run's results end up.
fn final_steps(wf: &Workflow) -> Vec<&str> {
    let dag = cairn_domain::dag::Dag::of_steps(&wf.steps);
    let needed: std::collections::BTreeSet<usize> = dag.needs.iter().flatten().copied().collect();
    (0..wf.steps.len()).filter(|i| !needed.contains(i)).map(|i| wf.steps[i].id.as_str()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_gate_shows_its_deadline_and_whether_it_passed() {
        let mut step: StepState = serde_json::from_value(serde_json::json!({
            "status": "waiting", "attempts": 1, "output": "draft", "error": null, "retry_at": null,
            "wait": "approval", "round_base": 0, "cascade_skip": false, "started_at": 0, "finished_at": null,
            "deadline": 3_600_000, "message": "Deploy?", "questions": []
        }))
        .expect("a step state");
        step.decisions.push(cairn_domain::state::Decision {
            approve: true,
            by: "tess".into(),
            role: Some("tech_lead".into()),
            comment: None,
            at: Timestamp(10),
            timed_out: false,
        });
        let gate = Gate {
            path: StepPath::new("go"),
            kind: WaitKind::Approval,
            approvers: vec!["tech_lead".into(), "product_owner".into()],
            state: &step,
        };
        let before = gate_text("r1", &gate, Timestamp(1_000), false);
        let after = gate_text("r1", &gate, Timestamp(3_600_000), true);
        insta::assert_snapshot!(format!("{before}---\n{after}"), @r#"
        waiting: approval `go`, by tech_lead, product_owner
          approved so far by tess as tech_lead
          Deploy?
          deadline 1970-01-01T01:00:00.000Z (its `on_timeout` applies then)
          decide: cairn approve r1 --as ROLE   or   cairn reject r1 --as ROLE --comment "..."
        ---
        waiting: approval `go`, by tech_lead, product_owner
          approved so far by tess as tech_lead
          Deploy?
          deadline 1970-01-01T01:00:00.000Z (passed: its `on_timeout` applies when the run is next driven)
          decide: cairn approve r1 --gate 'go' --as ROLE   or   cairn reject r1 --gate 'go' --as ROLE --comment "..."
        "#);
    }
}
