//! A run as people and scripts read it: the JSON shape of `spec/cli.md`,
//! the summary table, and the exit code of its status.

use std::fmt::Write;

use cairn_domain::definition::{StepKind, Workflow};
use cairn_domain::state::{RunState, RunStatus, StepPath, StepStatus};
use serde_json::{Value, json};

use crate::cli::exit;
use crate::progress::elapsed;

/// The exit code of a run's status.
pub fn exit_code(status: RunStatus) -> u8 {
    match status {
        RunStatus::Completed => exit::OK,
        RunStatus::Failed => exit::FAILED,
        RunStatus::Cancelled => exit::CANCELLED,
        RunStatus::Paused | RunStatus::Pending | RunStatus::Running => exit::PAUSED,
        _ => exit::WAITING,
    }
}

fn word<T: serde::Serialize>(value: T) -> String {
    serde_json::to_value(value).ok().and_then(|v| v.as_str().map(str::to_owned)).unwrap_or_default()
}

/// The run JSON: `run_id`, `workflow`, `status`, `inputs`, `steps`, `waiting`, `usage`, `error`.
pub fn run_json(state: &RunState, wf: &Workflow, cost_usd: Option<f64>) -> Value {
    let steps: Vec<Value> = wf
        .steps
        .iter()
        .map(|step| {
            let path = StepPath::new(step.id.as_str());
            let s = state.steps.get(&path);
            json!({
                "path": path,
                "id": step.id,
                "status": s.map_or(StepStatus::Pending, |s| s.status),
                "attempts": s.map_or(0, |s| s.attempts),
                "output": s.and_then(|s| s.output.clone()),
                "error": s.and_then(|s| s.error.clone()),
            })
        })
        .collect();
    let waiting = wf.steps.iter().find_map(|step| {
        let s = state.steps.get(&StepPath::new(step.id.as_str()))?;
        let kind = s.wait.filter(|_| s.status == StepStatus::Waiting)?;
        let approvers = match (&step.kind, &step.accept) {
            (StepKind::Approval(a), _) => a.approvers.clone(),
            (_, Some(accept)) => accept.approvers.clone(),
            _ => Vec::new(),
        };
        Some(json!({"gate": step.id, "kind": kind, "approvers": approvers, "approved_by": []}))
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

/// The end-of-run summary: a line for the run, a table of steps, the usage,
/// the final outputs, and the error with its hint.
pub fn summary(state: &RunState, wf: &Workflow, cost_usd: Option<f64>) -> String {
    let mut out = format!(
        "run {} ({}): {} in {}\n",
        state.run_id,
        state.workflow,
        word(state.status),
        elapsed(state.created_at, state.updated_at)
    );
    let width = wf.steps.iter().map(|s| s.id.as_str().len()).max().unwrap_or(4).max(4);
    let _ = writeln!(out, "  {:<width$}  {:<10} {:>8}  {:>7}", "STEP", "STATUS", "ATTEMPTS", "TIME");
    for step in &wf.steps {
        let s = state.steps.get(&StepPath::new(step.id.as_str()));
        let status = s.map_or("pending".to_owned(), |s| word(s.status));
        let attempts = s.map_or(0, |s| s.attempts);
        let time = s
            .and_then(|s| Some(elapsed(s.started_at?, s.finished_at.or(s.started_at)?)))
            .unwrap_or_else(|| "-".into());
        let _ = writeln!(out, "  {:<width$}  {status:<10} {attempts:>8}  {time:>7}", step.id.as_str());
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
