//! A run as a person reads it at a terminal: the summary table, and the
//! text of a gate with the commands that decide it.

use std::fmt::Write;

use cairn_domain::definition::{Step, StepKind};
use cairn_domain::event::{Cause, END_CONVERSATION};
use cairn_domain::state::{GroupState, RunStatus, StepPath, Timestamp, TokenUsage, WaitKind, word};
use serde_json::Value;

use crate::app::Run;
use crate::view::iso_time;
use crate::view::run::{Gate, Row, rows, waiting_gates};
use crate::view::time::between;

/// `3/5 instances` (`2/2 iterations` for a loop).
fn instances(step: &Step, group: &GroupState) -> String {
    let noun = if matches!(step.kind, StepKind::Loop(_)) { "iterations" } else { "instances" };
    format!("{}/{} {noun}", group.finished, group.keys.len())
}

/// What a person reads about a gate: what it waits for, who may decide,
/// the deadline, the questions or message, and the commands that decide.
/// `named`: the decide line names the gate (`--gate`), for when several wait.
pub fn gate_text(run: &str, gate: &Gate<'_>, now: Timestamp, named: bool) -> String {
    let mut out = String::new();
    let s = gate.state;
    let who = if gate.approvers.is_empty() { "anyone".to_owned() } else { gate.approvers.join(", ") };
    if let Some(child) = s.child.as_ref().filter(|_| s.waits_on_child) {
        let _ = writeln!(
            out,
            "waiting: `{}` runs a sub-workflow, and its run {child} waits for {}; decide there",
            gate.path,
            word(gate.kind)
        );
        return out;
    }
    let _ = match gate.kind {
        WaitKind::Acceptance => writeln!(out, "waiting: acceptance of `{}`, by {who}", gate.path),
        WaitKind::Approval => writeln!(out, "waiting: approval `{}`, by {who}", gate.path),
        WaitKind::Clarification => writeln!(out, "waiting: answers to the questions of `{}`", gate.path),
        WaitKind::Conversation => writeln!(
            out,
            "waiting: your turn in the conversation of `{}`; it said:\n{}",
            gate.path,
            s.message.as_deref().unwrap_or_default()
        ),
        WaitKind::Block if s.error.as_ref().is_some_and(|e| e.cause == Some(Cause::BudgetSpent)) => writeln!(
            out,
            "blocked: the run's budget is spent before `{}`; `cairn resume {run} --budget-usd USD` raises it and goes on",
            gate.path
        ),
        WaitKind::Block => writeln!(out, "blocked: `{}` failed; `cairn resume {run}` retries it", gate.path),
        other => writeln!(out, "waiting: {} at `{}`", word(other), gate.path),
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
        WaitKind::Conversation => {
            let gate = if named { format!(" --gate '{}'", gate.path) } else { String::new() };
            writeln!(
                out,
                "  reply: cairn answer {run}{gate} --text \"...\"   or end it: cairn answer {run}{gate} --text {END_CONVERSATION}"
            )
        }
        _ => Ok(()),
    };
    out
}

/// The end-of-run summary: a line for the run, a table of steps (instance
/// steps indented under their group, with counts), the usage, the final
/// outputs, and the error with its hint.
pub fn summary(run: &Run, now: Timestamp) -> String {
    let (state, wf, cost_usd) = (&run.state, &run.definition.workflow, run.cost_usd);
    let version = state.version.as_ref().map(|v| format!(", version {v}")).unwrap_or_default();
    let mut out = format!(
        "run {} ({}{version}): {} in {}\n",
        state.run_id,
        state.workflow,
        word(state.status),
        between(state.created_at, state.updated_at)
    );
    let id = state.run_id.as_str();
    if let Some(origin) = &state.forked_from {
        let _ = writeln!(out, "forked from run {} at checkpoint {}", origin.run, origin.checkpoint);
    }
    match state.status {
        RunStatus::Running if !run.driven => {
            let _ = writeln!(
                out,
                "nobody drives it: the process driving it stopped; `cairn resume {id}` goes on where it stopped"
            );
        }
        RunStatus::Paused | RunStatus::Pending => {
            let _ = writeln!(out, "`cairn resume {id}` drives it on");
        }
        _ => {}
    }
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
        let status = word(s.map_or(state.unstarted_status(), |s| s.status));
        let attempts = s.map_or(0, |s| s.attempts);
        let time = s
            .and_then(|s| Some(between(s.started_at?, s.finished_at.unwrap_or(now))))
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
    let inherited = TokenUsage::total(state.inherited_by_model.values());
    if inherited.prompt_tokens + inherited.completion_tokens > 0 {
        let cost = run.inherited_cost_usd.map(|c| format!(", ${c:.4}")).unwrap_or_default();
        let _ = writeln!(
            out,
            "inherited from the source run: {} prompt + {} completion tokens{cost}, not counted as this run's",
            inherited.prompt_tokens, inherited.completion_tokens
        );
    }
    for step in cairn_domain::plan::final_steps(wf).into_iter().map(|s| s.id.as_str()) {
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
        if let Some(hint) = crate::view::hint(error) {
            let _ = writeln!(out, "hint: {hint}");
        }
    }
    out
}

/// A child run's summary, under the parent's step that runs it, indented
/// `depth` levels: how `status` shows a sub-workflow's progress.
pub fn under_step(step: &StepPath, child: &Run, now: Timestamp, depth: usize) -> String {
    let indent = "    ".repeat(depth);
    let mut out = format!("{indent}step {step} runs a sub-workflow:\n");
    for line in summary(child, now).lines() {
        let _ = writeln!(out, "{indent}  | {line}");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use cairn_domain::state::StepState;

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
