//! Checkpoints: the points of a run's log a user can list and fork from,
//! one after every step that finished (with the documents it stored), and
//! one after every output people accepted.
//!
//! A checkpoint never falls between a step's end and the wait recorded with
//! it: a step under review succeeds and starts waiting for acceptance in one
//! record, so its checkpoint comes after the wait, and a fork there waits at
//! the gate again instead of going past it (the same holds for a step a
//! spent budget blocks).

use crate::state::{Event, EventKind, RunState, Timestamp, WaitKind};

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

/// The checkpoints of a log: one after every step that finished or whose
/// output was accepted, including the documents it stored and the wait
/// recorded with its end.
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
            EventKind::StepSucceeded { path, .. } => Some(format!("after {path} (succeeded")),
            EventKind::StepFailed { path, retry_at: None, .. } => Some(format!("after {path} (failed")),
            EventKind::StepSkipped { path, .. } => Some(format!("after {path} (skipped")),
            EventKind::StepAccepted { path } => Some(format!("after {path} (accepted")),
            _ => None,
        };
        if finished.is_some() {
            pending = finished;
        }
        if let (Some(label), EventKind::StepWaiting { wait, .. }) = (&mut pending, &e.kind) {
            label.push_str(match wait {
                WaitKind::Acceptance => ", waiting for acceptance",
                WaitKind::Approval => ", waiting for approval",
                WaitKind::Clarification => ", waiting for answers",
                WaitKind::Conversation => ", in a conversation",
                WaitKind::Block => ", blocked",
            });
        }
        let continues = match (pending.is_some(), events.get(i + 1).map(|n| (&n.kind, &e.kind))) {
            (true, Some((EventKind::DocumentStored { .. }, _))) => true,
            // The wait recorded with a step's end belongs to it.
            (
                true,
                Some((
                    EventKind::StepWaiting { path: waits, .. },
                    EventKind::StepSucceeded { path, .. } | EventKind::StepFailed { path, .. },
                )),
            ) => waits == path,
            _ => false,
        };
        if let (Some(label), false, Some(s)) = (&pending, continues, &state) {
            let label = format!("{label})");
            out.push(Checkpoint {
                seq: e.seq,
                at: e.at,
                label,
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
                    labels: Default::default(),
                    priority: 0,
                    parent: None,
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

    #[test]
    fn a_step_under_review_checkpoints_after_its_wait_and_after_its_acceptance() {
        let a = StepPath::new("a");
        let b = StepPath::new("b");
        let waiting = |path: &StepPath, wait| EventKind::StepWaiting {
            path: path.clone(),
            wait,
            deadline: None,
            message: None,
            questions: Vec::new(),
        };
        let kinds = vec![
            EventKind::RunStarted,
            EventKind::StepStarted { path: a.clone(), attempt: 1 },
            EventKind::StepSucceeded { path: a.clone(), output: serde_json::json!("v1") },
            waiting(&a, WaitKind::Acceptance),
            EventKind::GateDecided {
                path: a.clone(),
                approve: true,
                role: None,
                comment: None,
                timed_out: false,
            },
            EventKind::StepAccepted { path: a.clone() },
            EventKind::DocumentStored {
                scope: ScopeKey::root(),
                doc_type: Name::new("doc").expect("name"),
                value: serde_json::json!("v1"),
            },
            EventKind::StepFailed {
                path: b.clone(),
                attempt: 0,
                error: StepError::new(ErrorClass::Fatal, "the budget is spent"),
                output: None,
                retry_at: None,
            },
            waiting(&b, WaitKind::Block),
        ];
        let mut events = vec![ev(
            1,
            EventKind::RunCreated {
                run_id: RunId::new("r").expect("id"),
                workflow: WorkflowId::new("w").expect("id"),
                definition_hash: String::new(),
                inputs: serde_json::json!({}),
                version: None,
                labels: Default::default(),
                priority: 0,
                parent: None,
            },
        )];
        events.extend(kinds.into_iter().zip(2..).map(|(kind, seq)| ev(seq, kind)));
        let marks: Vec<(u64, String)> = checkpoints(&events).into_iter().map(|c| (c.seq, c.label)).collect();
        assert_eq!(
            marks,
            vec![
                (5, "after a (succeeded, waiting for acceptance)".to_owned()),
                (8, "after a (accepted)".to_owned()),
                (10, "after b (failed, blocked)".to_owned()),
            ]
        );
        // Folded at the first, the step still waits for people.
        let upto: Vec<Event> = events.iter().take_while(|e| e.seq <= 5).cloned().collect();
        let s = RunState::fold(&upto).expect("legal").expect("created");
        assert_eq!(s.steps[&a].wait, Some(WaitKind::Acceptance));
    }
}
