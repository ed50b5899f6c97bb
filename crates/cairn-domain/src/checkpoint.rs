//! Checkpoints: the points of a run's log a user can list and fork from,
//! one after every step that finished (with the documents it stored).

use crate::state::{Event, EventKind, RunState, Timestamp};

/// A point of a run's log a user can fork from: after each finished step.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checkpoint {
    /// The last event it includes.
    pub seq: u64,
    /// When that event was recorded.
    pub at: Timestamp,
    /// `after parse (succeeded)`.
    pub label: String,
    /// The size of the run's state at that point, as JSON.
    pub size_bytes: usize,
}

/// The checkpoints of a log: one after every step that finished (with the
/// documents it stored).
pub fn checkpoints(events: &[Event]) -> Vec<Checkpoint> {
    let mut out: Vec<Checkpoint> = Vec::new();
    let mut state: Option<RunState> = None;
    let mut pending: Option<String> = None;
    for (i, e) in events.iter().enumerate() {
        match &mut state {
            None => state = RunState::create(e).ok(),
            Some(s) => {
                if s.apply(e).is_err() {
                    break;
                }
            }
        }
        let finished = match &e.kind {
            EventKind::StepSucceeded { path, .. } => Some(format!("after {path} (succeeded)")),
            EventKind::StepFailed { path, retry_at: None, .. } => Some(format!("after {path} (failed)")),
            EventKind::StepSkipped { path, .. } => Some(format!("after {path} (skipped)")),
            _ => None,
        };
        if finished.is_some() {
            pending = finished;
        }
        let continues = matches!(events.get(i + 1).map(|n| &n.kind), Some(EventKind::DocumentStored { .. }));
        if let (Some(label), false, Some(s)) = (&pending, continues, &state) {
            out.push(Checkpoint {
                seq: e.seq,
                at: e.at,
                label: label.clone(),
                size_bytes: serde_json::to_vec(s).map_or(0, |v| v.len()),
            });
            pending = None;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::id::{Name, RunId, WorkflowId};
    use crate::scope::ScopeKey;
    use crate::state::{ErrorClass, StepError, StepPath};

    fn ev(seq: u64, kind: EventKind) -> Event {
        Event { seq, at: Timestamp(seq), actor: "engine".into(), kind }
    }

    #[test]
    fn one_after_each_finished_step_including_its_documents() {
        let a = StepPath::new("a");
        let b = StepPath::new("b");
        let error = StepError { class: ErrorClass::Transient, message: "x".into(), hint: None, cause: None };
        let events = vec![
            ev(
                1,
                EventKind::RunCreated {
                    run_id: RunId::new("r").expect("id"),
                    workflow: WorkflowId::new("w").expect("id"),
                    definition_hash: String::new(),
                    inputs: serde_json::json!({}),
                    version: None,
                },
            ),
            ev(2, EventKind::RunStarted),
            ev(3, EventKind::StepStarted { path: a.clone(), attempt: 1 }),
            ev(4, EventKind::StepSucceeded { path: a.clone(), output: serde_json::json!(1) }),
            ev(
                5,
                EventKind::DocumentStored {
                    scope: ScopeKey::root(),
                    doc_type: Name::new("doc").expect("name"),
                    value: serde_json::json!(1),
                },
            ),
            ev(6, EventKind::StepStarted { path: b.clone(), attempt: 1 }),
            ev(
                7,
                EventKind::StepFailed {
                    path: b.clone(),
                    attempt: 1,
                    error: error.clone(),
                    output: None,
                    retry_at: Some(Timestamp(9)),
                },
            ),
            ev(8, EventKind::StepStarted { path: b.clone(), attempt: 2 }),
            ev(9, EventKind::StepFailed { path: b, attempt: 2, error, output: None, retry_at: None }),
        ];
        let marks: Vec<(u64, String)> = checkpoints(&events).into_iter().map(|c| (c.seq, c.label)).collect();
        assert_eq!(marks, vec![(5, "after a (succeeded)".to_owned()), (9, "after b (failed)".to_owned())]);
    }
}
