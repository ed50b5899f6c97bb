//! Gates: the decisions people record at a waiting step, its deadline,
//! and what a rejection does (rework, or fail).

use serde_json::{Value, json};

use super::{Cx, Walk};
use crate::definition::{RejectAction, Step, StepKind, TimeoutAction};
use crate::id::Label;
use crate::program::Frame;
use crate::state::{Decision, ErrorClass, EventKind, StepError, StepPath, StepState, WaitKind, word};

impl Cx<'_> {
    /// A step waiting for a person: applies the decisions recorded at its
    /// gate (the first that settles it wins), or its deadline once passed.
    pub(super) fn gate(&self, frame: &Frame, step: &Step, path: &StepPath, s: &StepState, walk: &mut Walk) {
        let Some(wait) = s.wait else { return };
        // A child run's gate is decided on the child.
        let gate = step.gate(wait).filter(|_| !s.waits_on_child);
        let Some((approvers, on_timeout)) = gate else {
            walk.person.get_or_insert(wait);
            return;
        };
        let Some(decisive) = settled(&s.decisions, approvers) else {
            match s.deadline {
                Some(deadline) if deadline <= self.now => walk.records.push(match on_timeout {
                    TimeoutAction::Fail => EventKind::StepFailed {
                        path: path.clone(),
                        attempt: s.attempts,
                        error: StepError {
                            class: ErrorClass::Timeout,
                            message: format!("nobody decided at its {} gate in time", word(wait)),
                            hint: Some("raise the gate's `timeout`, or set `on_timeout`".into()),
                            cause: None,
                        },
                        output: s.output.clone(),
                        retry_at: None,
                    },
                    action => EventKind::GateDecided {
                        path: path.clone(),
                        approve: action == TimeoutAction::Approve,
                        role: None,
                        comment: None,
                        timed_out: true,
                    },
                }),
                _ => {
                    walk.person.get_or_insert(wait);
                }
            }
            return;
        };
        if decisive.approve {
            match &step.kind {
                StepKind::Approval(_) => {
                    let output = json!({
                        "approved": true,
                        "approved_by": s.decisions.iter().filter(|d| d.approve).map(approval).collect::<Vec<_>>(),
                    });
                    walk.records.push(EventKind::StepSucceeded { path: path.clone(), output });
                }
                _ => {
                    walk.records.push(EventKind::StepAccepted { path: path.clone() });
                    if let (Some(doc_type), Some(output)) = (&step.produces, &s.output) {
                        walk.records.push(EventKind::DocumentStored {
                            scope: frame.scope.clone(),
                            doc_type: doc_type.clone(),
                            value: output.clone(),
                        });
                    }
                }
            }
            return;
        }
        let rework = step.accept.as_ref().filter(|a| {
            wait == WaitKind::Acceptance && a.on_reject == RejectAction::Rework && s.reworks < a.max_reworks
        });
        if rework.is_some() {
            walk.records.push(EventKind::StepReworked { path: path.clone() });
            return;
        }
        let who = match &decisive.role {
            _ if decisive.timed_out => "its deadline (`on_timeout: reject`)".to_owned(),
            Some(role) => format!("{} as {role}", decisive.by),
            None => decisive.by.clone(),
        };
        let comment = decisive.comment.as_ref().map(|c| format!(": {c}")).unwrap_or_default();
        let after = match s.reworks {
            0 => String::new(),
            1 => " after 1 rework".to_owned(),
            n => format!(" after {n} reworks"),
        };
        walk.records.push(EventKind::StepFailed {
            path: path.clone(),
            attempt: s.attempts,
            error: StepError {
                class: ErrorClass::Rejected,
                message: format!("rejected by {who}{after}{comment}"),
                hint: None,
                cause: None,
            },
            output: s.output.clone(),
            retry_at: None,
        });
    }
}

/// One approval in an approval step's output; one its deadline gave says so.
fn approval(d: &Decision) -> Value {
    let mut v = json!({"by": d.by, "role": d.role, "comment": d.comment});
    if d.timed_out {
        v["timed_out"] = json!(true);
    }
    v
}

/// The decision that settles a gate, if one does yet: the first rejection,
/// or the approval that completes it (every listed role, or anyone's one
/// approval when none are listed), whichever comes first.
fn settled<'d>(decisions: &'d [Decision], approvers: &[Label]) -> Option<&'d Decision> {
    let mut roles: Vec<&str> = Vec::new();
    for d in decisions {
        if !d.approve {
            return Some(d);
        }
        if approvers.is_empty() || d.timed_out {
            return Some(d);
        }
        if let Some(role) = d.role.as_deref() {
            roles.push(role);
        }
        if approvers.iter().all(|a| roles.contains(&a.as_str())) {
            return Some(d);
        }
    }
    None
}
