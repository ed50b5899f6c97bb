//! One event of the audit trail as a line people read.

use cairn_domain::scope::ScopeKey;
use cairn_domain::state::{Event, EventKind, word};

use super::iso_time;

/// One event as JSON, the shape every front prints (`events --format
/// jsonl`, the API's streams): the stored event with its times (`at`,
/// `retry_at`, `deadline`) in RFC 3339.
pub fn json(e: &Event) -> serde_json::Value {
    let mut v = serde_json::to_value(e).unwrap_or_default();
    if let Some(fields) = v.as_object_mut() {
        fields.insert("at".into(), iso_time(e.at).into());
        for key in ["retry_at", "deadline"] {
            if let Some(ms) = fields.get(key).and_then(serde_json::Value::as_u64) {
                fields.insert(key.into(), iso_time(cairn_domain::state::Timestamp(ms)).into());
            }
        }
    }
    v
}

/// The first 80 characters of `text`, marked when cut.
fn short(text: &str) -> String {
    let mut shown: String = text.chars().take(80).collect();
    if text.chars().count() > 80 {
        shown.push('…');
    }
    shown
}

/// One event of the audit trail as a line: sequence, time, actor, what.
pub fn line(e: &Event) -> String {
    let v = serde_json::to_value(&e.kind).unwrap_or_default();
    let kind = v["type"].as_str().unwrap_or("?").to_owned();
    let path = v["path"].as_str().map(|p| format!(" {p}")).unwrap_or_default();
    let detail = match &e.kind {
        EventKind::RunCreated { workflow, inputs, definition_hash, .. } => {
            format!(
                " {workflow} inputs={inputs} definition={}",
                &definition_hash[..definition_hash.len().min(12)]
            )
        }
        EventKind::StepStarted { attempt, .. } => format!(" attempt {attempt}"),
        EventKind::StepSucceeded { output, .. } => format!(" -> {}", short(&output.to_string())),
        EventKind::StepFailed { attempt, error, retry_at, .. } => format!(
            " attempt {attempt}: {}: {}{}",
            error.class,
            error.message,
            retry_at.map(|t| format!(" (retry at {})", iso_time(t))).unwrap_or_default()
        ),
        EventKind::StepSkipped { reason, .. } => format!(": {reason}"),
        EventKind::StepWaiting { wait, .. } => format!(" for {}", word(wait)),
        EventKind::GotoTaken { from, to, .. } => format!(" {from} -> {to}"),
        EventKind::DocumentStored { scope, doc_type, .. } if *scope == ScopeKey::root() => {
            format!(" {doc_type} in the run's scope")
        }
        EventKind::DocumentStored { scope, doc_type, .. } => format!(" {doc_type} in `{scope}`"),
        EventKind::RunWaiting { wait } => format!(" for {}", word(wait)),
        EventKind::ChildStarted { attempt, run_id, .. } => format!(" attempt {attempt}: run {run_id}"),
        EventKind::ChildWaiting { run_id, wait, .. } => format!(" run {run_id} waits for {}", word(wait)),
        EventKind::GateDecided { approve, role, comment, timed_out, .. } => format!(
            " {}{}{}{}",
            if *approve { "approved" } else { "rejected" },
            role.as_ref().map(|r| format!(" as {r}")).unwrap_or_default(),
            comment.as_ref().map(|c| format!(": {c}")).unwrap_or_default(),
            if *timed_out { " (its deadline passed)" } else { "" },
        ),
        EventKind::Answered { text, .. } => format!(": {text}"),
        EventKind::OutputRepaired { attempt, reason, .. } => format!(" attempt {attempt}: {reason}"),
        EventKind::PromptRendered { attempt, prompt, .. } => {
            format!(" attempt {attempt}: {}", short(&prompt.replace('\n', " ")))
        }
        EventKind::ToolCalled { attempt, call_id, tool, arguments, .. } => {
            format!(" attempt {attempt}: {tool} {} ({call_id})", short(arguments))
        }
        EventKind::ToolReturned { call_id, result, refused, .. } => {
            format!(
                " {call_id}{}: {}",
                if *refused { " refused" } else { "" },
                short(&result.replace('\n', " "))
            )
        }
        EventKind::SessionExtended { agent, turns, .. } => {
            format!(" {agent}'s conversation gains {} messages", turns.len())
        }
        EventKind::GroupExpanded { keys, .. } => {
            let shown: Vec<&str> = keys.iter().take(10).map(String::as_str).collect();
            let more = keys.len().saturating_sub(shown.len());
            let more = if more > 0 { format!(", … {more} more") } else { String::new() };
            format!(" into {} instances: {}{more}", keys.len(), shown.join(", "))
        }
        EventKind::IterationStarted { index, .. } => format!(" iteration {index}"),
        EventKind::InstanceFinished { key, failed, .. } => {
            let failed = failed.as_ref().map(|f| format!(" ({f} failed)")).unwrap_or_default();
            format!(" [{key}]{failed}")
        }
        EventKind::UsageRecorded { model, usage, .. } => {
            format!(
                " {model}: {} prompt + {} completion tokens",
                usage.prompt_tokens, usage.completion_tokens
            )
        }
        EventKind::RunFailed { error } => format!(" {}: {}", error.class, error.message),
        EventKind::RunForked { source, checkpoint } => format!(" from {source} at checkpoint {checkpoint}"),
        EventKind::BudgetRaised { budget_usd } => format!(" to ${budget_usd:.2}"),
        _ => String::new(),
    };
    format!("{:>4} {} {:<10} {kind}{path}{detail}", e.seq, iso_time(e.at), e.actor)
}

#[cfg(test)]
mod tests {
    use cairn_domain::state::{StepPath, Timestamp, WaitKind};

    use super::*;

    #[test]
    fn a_fork_and_a_raised_budget_say_what_they_did() {
        let at = |kind| line(&Event { seq: 9, at: Timestamp(0), actor: "ann".into(), kind });
        let source = cairn_domain::id::RunId::new("src").expect("id");
        assert_eq!(
            at(EventKind::RunForked { source, checkpoint: 8 }),
            "   9 1970-01-01T00:00:00.000Z ann        run_forked from src at checkpoint 8"
        );
        assert_eq!(
            at(EventKind::BudgetRaised { budget_usd: 2.5 }),
            "   9 1970-01-01T00:00:00.000Z ann        budget_raised to $2.50"
        );
    }

    #[test]
    fn event_json_has_rfc3339_times() {
        let e = Event {
            seq: 4,
            at: Timestamp(1_000),
            actor: "ann".into(),
            kind: EventKind::StepWaiting {
                path: StepPath::new("go"),
                wait: WaitKind::Approval,
                deadline: Some(Timestamp(61_000)),
                message: None,
                questions: Vec::new(),
            },
        };
        assert_eq!(
            json(&e),
            serde_json::json!({"seq": 4, "at": "1970-01-01T00:00:01.000Z", "actor": "ann",
                "type": "step_waiting", "path": "go", "wait": "approval",
                "deadline": "1970-01-01T00:01:01.000Z"})
        );
    }
}
