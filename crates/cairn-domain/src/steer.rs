//! Steering a run from outside its driver: a person's verdict at a gate,
//! a pause or cancel, driving a stored run on, a fork at a checkpoint.
//! Each rule takes the run as plain values and says which events it
//! records, or why the request does not fit the run ([`Refusal`]); the
//! engine stores what it is told, and fronts put refusals into words.

use serde_json::Value;

use crate::checkpoint::checkpoints;
use crate::event::{Event, EventKind, Parent, StepPath, Timestamp, WaitKind};
use crate::id::WorkflowId;
use crate::program::Program;
use crate::state::{RunState, RunStatus, StepStatus, decider, word};

/// What a person asks of a run from outside its driver.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Request {
    /// Stop driving it for now; `resume` goes on where it stopped.
    Pause,
    /// Stop it for good.
    Cancel,
}

/// When `state`'s run next needs a driver with nobody asking: now for
/// one left pending or running; for one waiting for people (or for a
/// raised budget), the first deadline of a gate it waits at or its own
/// (`workflow`'s `timeout:`); never for one paused or ended.
pub fn next_wake(
    state: &RunState,
    workflow: &crate::definition::Workflow,
    now: Timestamp,
) -> Option<Timestamp> {
    match state.status {
        RunStatus::Pending | RunStatus::Running => Some(now),
        status if status.is_waiting() => state
            .steps
            .values()
            .filter(|s| s.status == StepStatus::Waiting)
            .filter_map(|s| s.deadline)
            .chain(workflow.deadline(state.created_at))
            .min(),
        _ => None,
    }
}

/// A person's verdict at a gate.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    /// Approve the output, or the approval step.
    Approve,
    /// Reject it.
    Reject,
    /// Answer the model's questions with this text.
    Answer(String),
}

/// A decision at a gate, as approve, reject and answer give it.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct GateCall {
    /// The waiting step's path; `None`: the one step that waits for this
    /// kind of verdict.
    pub gate: Option<String>,
    /// What the person decided.
    pub verdict: Verdict,
    /// The role they decide as.
    pub role: Option<String>,
    /// Their comment (a rejection's becomes the rework's feedback).
    pub comment: Option<String>,
}

/// Why a request does not fit the run, typed: fronts turn it into words
/// and hints of their own.
#[derive(Debug, Clone, PartialEq, thiserror::Error, serde::Serialize, serde::Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
#[non_exhaustive]
pub enum Refusal {
    /// The run has ended: nothing can be decided, stopped or resumed.
    #[error("it has ended ({})", word(.status))]
    Ended {
        /// Its final status.
        status: RunStatus,
    },
    /// No step waits for this kind of verdict.
    #[error("it is {}: no step waits for {}", word(.status), waited_for(*.answer))]
    NothingWaits {
        /// The run's status.
        status: RunStatus,
        /// The verdict was an answer (else an approval or rejection).
        answer: bool,
    },
    /// The named step does not wait for this kind of verdict.
    #[error("step `{gate}` does not wait for this; waiting: {}", paths(.waiting))]
    NotWaitingThere {
        /// The step named.
        gate: String,
        /// The steps that do wait for it.
        waiting: Vec<StepPath>,
    },
    /// No step was named, and several wait for this kind of verdict.
    #[error("several steps wait: {}", paths(.waiting))]
    SeveralWait {
        /// The steps that wait.
        waiting: Vec<StepPath>,
    },
    /// The step waits because its sub-workflow's run waits: the decision
    /// belongs on that run.
    #[error("step `{gate}` waits on its sub-workflow's run `{child}`: decide there")]
    InChild {
        /// The parent's step.
        gate: StepPath,
        /// The child run.
        child: crate::id::RunId,
    },
    /// The gate lists approvers, and the decision named no role.
    #[error("`{gate}` needs a decision from one of its roles: {}", .roles.join(", "))]
    RoleNeeded {
        /// The gate's step.
        gate: StepPath,
        /// Its approvers.
        roles: Vec<String>,
    },
    /// The role is not one the gate lists.
    #[error("role `{role}` is not an approver of `{gate}`: its roles are {}", .roles.join(", "))]
    NotAnApprover {
        /// The gate's step.
        gate: StepPath,
        /// The role given.
        role: String,
        /// Its approvers.
        roles: Vec<String>,
    },
    /// The gate's deadline has passed: its `on_timeout` decides instead.
    #[error("the deadline of `{gate}` has passed: its `on_timeout` applies instead of this decision")]
    DeadlinePassed {
        /// The gate's step.
        gate: StepPath,
        /// The deadline.
        at: Timestamp,
    },
    /// A fork named a sequence number that is not one of the log's checkpoints.
    #[error("it has no checkpoint {seq}{}", last_checkpoint(*.last))]
    NoCheckpoint {
        /// The sequence number asked for.
        seq: u64,
        /// The log's last checkpoint, if it has any.
        last: Option<u64>,
    },
    /// A new budget that is not above the one in force (or not a number).
    #[error("its budget is ${budget_usd:.2}: a new one must be larger")]
    BudgetNotRaised {
        /// The budget in force, in USD.
        budget_usd: f64,
    },
    /// The waiting step is not in the definition given for the run.
    #[error("step `{gate}` is not in the run's definition")]
    UnknownStep {
        /// The step.
        gate: StepPath,
    },
    /// The same role (or, without one, the same kind of decider) already
    /// made this decision at this gate's current wait: a repeated command.
    /// Nothing more is recorded.
    #[error("`{gate}` already has this {}{}: nothing is recorded again", if *.approve { "approval" } else { "rejection" }, as_role(.role.as_deref()))]
    AlreadyDecided {
        /// The gate's step.
        gate: StepPath,
        /// The decision was an approval (else a rejection).
        approve: bool,
        /// The role it was made as.
        role: Option<String>,
    },
    /// No gate was named, and the one that waits began waiting after this
    /// decider's last decision, at another gate: the request may be a
    /// repeat meant for that one, so it is not taken without the gate named.
    #[error("`{gate}` began waiting after the last {} (at `{last}`), so this one may have meant `{last}`", decided(*.answer, .role.as_deref()))]
    GateNotNamed {
        /// The gate that waits now.
        gate: StepPath,
        /// Where the same decider last decided.
        last: StepPath,
        /// The request was an answer (else an approval or rejection).
        answer: bool,
        /// The role it was made as.
        role: Option<String>,
    },
}

fn as_role(role: Option<&str>) -> String {
    role.map(|r| format!(" as {r}")).unwrap_or_default()
}

fn decided(answer: bool, role: Option<&str>) -> String {
    if answer { "answer".to_owned() } else { format!("decision{}", as_role(role)) }
}

fn waited_for(answer: bool) -> &'static str {
    if answer { "answers" } else { "a decision" }
}

fn paths(paths: &[StepPath]) -> String {
    paths.iter().map(|p| format!("`{p}`")).collect::<Vec<_>>().join(", ")
}

fn last_checkpoint(last: Option<u64>) -> String {
    match last {
        Some(last) => format!(" (the last is {last})"),
        None => " (it has none yet)".to_owned(),
    }
}

/// The event recording a gate decision, after checking which gate (named,
/// or the only one waiting for this kind of verdict), that the role may
/// decide there (listed approvers; none listed = anyone), and that its
/// deadline has not passed at `now`. `program` is the run's definition.
pub fn gate_decision(
    state: &RunState,
    program: &Program,
    call: GateCall,
    now: Timestamp,
) -> Result<EventKind, Refusal> {
    if state.status.is_terminal() {
        return Err(Refusal::Ended { status: state.status });
    }
    let answer = matches!(call.verdict, Verdict::Answer(_));
    let wanted = |w: WaitKind| match w {
        WaitKind::Clarification | WaitKind::Conversation => answer,
        WaitKind::Acceptance | WaitKind::Approval => !answer,
        WaitKind::Block => false,
    };
    let (in_children, waiting): (Vec<_>, Vec<_>) = state
        .steps
        .iter()
        .filter(|(_, s)| s.status == StepStatus::Waiting)
        .filter(|(_, s)| s.wait.is_some_and(wanted))
        .partition(|(_, s)| s.waits_on_child);
    // A sub-workflow's gate is decided on its child run.
    let in_child = in_children.iter().find(|(p, _)| call.gate.as_deref().is_none_or(|g| p.as_str() == g));
    if let Some((path, step)) = in_child
        && (call.gate.is_some() || waiting.is_empty())
        && let Some(child) = &step.child
    {
        return Err(Refusal::InChild { gate: (*path).clone(), child: child.clone() });
    }
    let waiting: Vec<(&StepPath, WaitKind)> =
        waiting.into_iter().filter_map(|(p, s)| s.wait.map(|w| (p, w))).collect();
    let found = match &call.gate {
        Some(gate) => waiting.iter().find(|(p, _)| p.as_str() == gate),
        None if waiting.len() == 1 => waiting.first(),
        None => None,
    };
    let Some(&(path, wait)) = found else {
        let waiting: Vec<StepPath> = waiting.into_iter().map(|(p, _)| p.clone()).collect();
        return Err(match call.gate {
            _ if waiting.is_empty() => Refusal::NothingWaits { status: state.status, answer },
            Some(gate) => Refusal::NotWaitingThere { gate, waiting },
            None => Refusal::SeveralWait { waiting },
        });
    };
    let path = path.clone();
    if call.gate.is_none() {
        unmistaken(state, &path, answer, call.role.as_deref())?;
    }
    if let Some(at) = state.steps.get(&path).and_then(|s| s.deadline)
        && at <= now
    {
        return Err(Refusal::DeadlinePassed { gate: path, at });
    }
    let Some(step) = program.step(&path) else { return Err(Refusal::UnknownStep { gate: path }) };
    let approve = match call.verdict {
        Verdict::Answer(text) => return Ok(EventKind::Answered { path, text }),
        Verdict::Approve => true,
        Verdict::Reject => false,
    };
    let approvers = step.gate(wait).map_or(&[][..], |(approvers, _)| approvers);
    let roles = || approvers.iter().map(|a| a.to_string()).collect();
    match &call.role {
        None if !approvers.is_empty() => return Err(Refusal::RoleNeeded { gate: path, roles: roles() }),
        Some(role) if !approvers.is_empty() && !approvers.iter().any(|a| a.as_str() == role) => {
            return Err(Refusal::NotAnApprover { gate: path, role: role.clone(), roles: roles() });
        }
        _ => {}
    }
    let repeated = state.steps.get(&path).is_some_and(|s| {
        s.decisions.iter().any(|d| !d.timed_out && d.approve == approve && d.role == call.role)
    });
    if repeated {
        return Err(Refusal::AlreadyDecided { gate: path, approve, role: call.role });
    }
    Ok(EventKind::GateDecided { path, approve, role: call.role, comment: call.comment, timed_out: false })
}

/// Refuses a decision that names no gate when the one gate waiting began
/// waiting after the same decider last decided, at another gate: `approve
/// RUN --as lead` typed again after the acceptance it meant was decided
/// would otherwise decide the next gate, unseen. A gate the decider has
/// not met since (or that waited already when they decided elsewhere), and
/// a gate that waits again after their own rejection or answer, are taken.
fn unmistaken(state: &RunState, gate: &StepPath, answer: bool, role: Option<&str>) -> Result<(), Refusal> {
    let Some(last) = state.last_decided.get(&decider(answer, role)) else { return Ok(()) };
    let since = state.steps.get(gate).and_then(|s| s.waiting_since);
    match since {
        Some(since) if &last.gate != gate && since > last.seq => Err(Refusal::GateNotNamed {
            gate: gate.clone(),
            last: last.gate.clone(),
            answer,
            role: role.map(str::to_owned),
        }),
        _ => Ok(()),
    }
}

/// The gate a decision was just recorded at: where `call`'s decider last
/// decided, when that decision is the run's last event. What a front tells
/// the person who decided.
pub fn decided_gate<'s>(state: &'s RunState, call: &GateCall) -> Option<&'s StepPath> {
    let answer = matches!(call.verdict, Verdict::Answer(_));
    let last = state.last_decided.get(&decider(answer, call.role.as_deref()))?;
    (last.seq == state.seq).then_some(&last.gate)
}

/// What pausing or cancelling a run nobody drives records: a cancel
/// cancels its running and waiting steps, then the run. Nothing when it
/// already is so, or when pausing a run that has not started (nothing of
/// it runs); an ended run is refused.
pub fn stop(state: &RunState, request: Request) -> Result<Vec<EventKind>, Refusal> {
    let (wanted, last) = match request {
        Request::Pause => (RunStatus::Paused, EventKind::RunPaused),
        Request::Cancel => (RunStatus::Cancelled, EventKind::RunCancelled),
    };
    if state.status == wanted || (request == Request::Pause && state.status == RunStatus::Pending) {
        return Ok(Vec::new());
    }
    if state.status.is_terminal() {
        return Err(Refusal::Ended { status: state.status });
    }
    let mut events = Vec::new();
    if request == Request::Cancel {
        events.extend(state.cancellations());
    }
    events.push(last);
    Ok(events)
}

/// What driving a stored run on records first: its blocked steps reset
/// (they are retried), and `run_started` when it was paused, pending or
/// waiting (a run whose driver died is still running). An ended run is
/// refused.
pub fn resume(state: &RunState) -> Result<Vec<EventKind>, Refusal> {
    if state.status.is_terminal() {
        return Err(Refusal::Ended { status: state.status });
    }
    let mut events: Vec<EventKind> = state
        .steps
        .iter()
        .filter(|(_, s)| s.status == StepStatus::Waiting && s.wait == Some(WaitKind::Block))
        // A blocked child run is resumed on the child.
        .filter(|(_, s)| !s.waits_on_child)
        .map(|(path, _)| EventKind::StepReset { path: path.clone() })
        .collect();
    if state.status != RunStatus::Running {
        events.push(EventKind::RunStarted);
    }
    Ok(events)
}

/// What raising a run's budget to `budget_usd` USD records, when
/// `current` is the budget in force (the raised one, else the
/// definition's). A budget must go up (a run without one gets one), and
/// an ended run is refused.
pub fn raise_budget(
    state: &RunState,
    current: Option<f64>,
    budget_usd: f64,
) -> Result<Vec<EventKind>, Refusal> {
    if state.status.is_terminal() {
        return Err(Refusal::Ended { status: state.status });
    }
    let raised = budget_usd.is_finite() && budget_usd >= 0.0 && current.is_none_or(|c| budget_usd > c);
    if !raised {
        return Err(Refusal::BudgetNotRaised { budget_usd: current.unwrap_or_default() });
    }
    Ok(vec![EventKind::BudgetRaised { budget_usd }])
}

/// What a fork of a run copies: a new run of the same definition and
/// inputs that starts where the source was at one of its checkpoints
/// (time travel).
#[derive(Debug, Clone, PartialEq)]
pub struct Fork {
    /// The source's workflow.
    pub workflow: WorkflowId,
    /// The source's definition hash: the fork runs the same definition.
    pub definition_hash: String,
    /// The source's inputs.
    pub inputs: Value,
    /// The source's workflow version, recorded again in the fork's `run_created`.
    pub version: Option<String>,
    /// The source's labels, which the fork carries too.
    pub labels: crate::label::Labels,
    /// The source's priority, which the fork keeps.
    pub priority: i32,
    /// The fork's parent: the source, at the checkpoint.
    pub parent: Parent,
    /// The source's events after `run_created` up to the checkpoint, each
    /// with its original sequence number, actor and time: the audit trail
    /// is not rewritten.
    pub copied: Vec<Event>,
    /// What the fork records after them: `run_forked` (where it came
    /// from; the usage before it is inherited), then `run_paused` when the
    /// copy would be left running, so that `resume` runs only what came
    /// after.
    pub then: Vec<EventKind>,
}

/// What a fork of `events` at checkpoint `seq` copies (see [`Fork`]).
/// Refuses a `seq` that is not one of the log's checkpoints
/// ([`checkpoints`]), naming the last one.
pub fn fork(events: &[Event], seq: u64) -> Result<Fork, Refusal> {
    let source = events.first().and_then(|e| RunState::create(e).ok());
    let marks = if source.is_some() { checkpoints(events) } else { Vec::new() };
    let (Some(source), true) = (source, marks.iter().any(|c| c.seq == seq)) else {
        return Err(Refusal::NoCheckpoint { seq, last: marks.last().map(|c| c.seq) });
    };
    let upto: Vec<&Event> = events.iter().take_while(|e| e.seq <= seq).collect();
    let running =
        RunState::fold(upto.iter().copied()).ok().flatten().is_some_and(|s| s.status == RunStatus::Running);
    Ok(Fork {
        workflow: source.workflow,
        definition_hash: source.definition_hash,
        inputs: source.inputs,
        version: source.version,
        labels: source.labels,
        priority: source.priority,
        parent: Parent { run_id: source.run_id.clone(), checkpoint: Some(seq), step: None, depth: 0 },
        copied: upto[1..].iter().map(|&e| e.clone()).collect(),
        then: std::iter::once(EventKind::RunForked { source: source.run_id, checkpoint: seq })
            .chain(running.then_some(EventKind::RunPaused))
            .collect(),
    })
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::event::{ErrorClass, StepError};
    use crate::id::RunId;

    const WF: &str = r#"cairn: 1
id: steer
agents:
  w: { system: You write. }
steps:
  - id: go_live
    approval: { message: Go?, approvers: [tech_lead, product_owner], timeout: 1h }
  - id: ok
    approval: { message: Fine? }
  - id: plan
    agent: w
    prompt: Plan.
    clarify: true
"#;

    fn program() -> Program {
        let mut no_files = |_: &str| Err("no files".to_owned());
        Program::new(crate::load("wf.yaml", WF.as_bytes(), &mut no_files).expect("valid")).expect("acyclic")
    }

    fn path(p: &str) -> StepPath {
        StepPath::new(p)
    }

    /// A log of `run_created` and then `kinds`, each by `engine` at its
    /// sequence number in seconds.
    fn log(kinds: Vec<EventKind>) -> Vec<Event> {
        let created = EventKind::RunCreated {
            run_id: RunId::new("r1").expect("id"),
            workflow: WorkflowId::new("steer").expect("id"),
            definition_hash: "abc".into(),
            inputs: json!({"x": 1}),
            version: Some("3".into()),
            labels: Default::default(),
            priority: 0,
            parent: None,
        };
        std::iter::once(created)
            .chain(kinds)
            .enumerate()
            .map(|(i, kind)| {
                let seq = i as u64 + 1;
                Event { seq, at: Timestamp(seq * 1000), actor: "engine".into(), kind }
            })
            .collect()
    }

    fn state(kinds: Vec<EventKind>) -> RunState {
        RunState::fold(&log(kinds)).expect("legal").expect("created")
    }

    fn wait(p: &str, wait: WaitKind, deadline: Option<u64>) -> [EventKind; 2] {
        [
            EventKind::StepStarted { path: path(p), attempt: 1 },
            EventKind::StepWaiting {
                path: path(p),
                wait,
                deadline: deadline.map(Timestamp),
                message: None,
                questions: Vec::new(),
            },
        ]
    }

    /// A running run whose `waits` steps wait, each with its kind and deadline.
    fn waiting(waits: &[(&str, WaitKind, Option<u64>)]) -> RunState {
        let mut kinds = vec![EventKind::RunStarted];
        waits.iter().for_each(|&(p, w, d)| kinds.extend(wait(p, w, d)));
        state(kinds)
    }

    fn call(gate: Option<&str>, verdict: Verdict, role: Option<&str>) -> GateCall {
        GateCall {
            gate: gate.map(str::to_owned),
            verdict,
            role: role.map(str::to_owned),
            comment: Some("looks fine".into()),
        }
    }

    const NOW: Timestamp = Timestamp(10_000);

    #[test]
    fn a_decision_at_the_only_waiting_gate_is_recorded() {
        let s = waiting(&[("ok", WaitKind::Approval, None), ("plan", WaitKind::Clarification, None)]);
        let event = gate_decision(&s, &program(), call(None, Verdict::Reject, None), NOW);
        assert_eq!(
            event,
            Ok(EventKind::GateDecided {
                path: path("ok"),
                approve: false,
                role: None,
                comment: Some("looks fine".into()),
                timed_out: false,
            })
        );
        let answer = gate_decision(&s, &program(), call(None, Verdict::Answer("Sled.".into()), None), NOW);
        assert_eq!(answer, Ok(EventKind::Answered { path: path("plan"), text: "Sled.".into() }));
    }

    #[test]
    fn a_gate_is_named_when_several_wait_and_must_be_waiting() {
        let s = waiting(&[("go_live", WaitKind::Approval, None), ("ok", WaitKind::Approval, None)]);
        let both = vec![path("go_live"), path("ok")];
        let p = program();
        assert_eq!(
            gate_decision(&s, &p, call(None, Verdict::Approve, None), NOW),
            Err(Refusal::SeveralWait { waiting: both.clone() })
        );
        assert_eq!(
            gate_decision(&s, &p, call(Some("plan"), Verdict::Approve, None), NOW),
            Err(Refusal::NotWaitingThere { gate: "plan".into(), waiting: both })
        );
        assert!(gate_decision(&s, &p, call(Some("ok"), Verdict::Approve, None), NOW).is_ok());
        assert_eq!(
            gate_decision(&s, &p, call(None, Verdict::Answer("x".into()), None), NOW),
            Err(Refusal::NothingWaits { status: RunStatus::Running, answer: true })
        );
    }

    #[test]
    fn listed_approvers_decide_as_their_role() {
        let s = waiting(&[("go_live", WaitKind::Approval, None)]);
        let p = program();
        let roles = vec!["tech_lead".to_owned(), "product_owner".to_owned()];
        assert_eq!(
            gate_decision(&s, &p, call(None, Verdict::Approve, None), NOW),
            Err(Refusal::RoleNeeded { gate: path("go_live"), roles: roles.clone() })
        );
        assert_eq!(
            gate_decision(&s, &p, call(None, Verdict::Reject, Some("intern")), NOW),
            Err(Refusal::NotAnApprover { gate: path("go_live"), role: "intern".into(), roles })
        );
        let ok = gate_decision(&s, &p, call(None, Verdict::Approve, Some("tech_lead")), NOW);
        assert!(
            matches!(ok, Ok(EventKind::GateDecided { approve: true, role: Some(r), .. }) if r == "tech_lead")
        );
    }

    #[test]
    fn a_passed_deadline_an_unknown_step_and_an_ended_run_are_refused() {
        let p = program();
        let s = waiting(&[("go_live", WaitKind::Approval, Some(NOW.0))]);
        assert_eq!(
            gate_decision(&s, &p, call(None, Verdict::Approve, Some("tech_lead")), NOW),
            Err(Refusal::DeadlinePassed { gate: path("go_live"), at: NOW })
        );
        let early = Timestamp(NOW.0 - 1);
        assert!(gate_decision(&s, &p, call(None, Verdict::Approve, Some("tech_lead")), early).is_ok());
        let s = waiting(&[("gone", WaitKind::Acceptance, None)]);
        assert_eq!(
            gate_decision(&s, &p, call(None, Verdict::Approve, None), NOW),
            Err(Refusal::UnknownStep { gate: path("gone") })
        );
        let s = state(vec![EventKind::RunStarted, EventKind::RunCompleted]);
        assert_eq!(
            gate_decision(&s, &p, call(None, Verdict::Approve, None), NOW),
            Err(Refusal::Ended { status: RunStatus::Completed })
        );
    }

    fn decided(p: &str, role: Option<&str>) -> EventKind {
        EventKind::GateDecided {
            path: path(p),
            approve: true,
            role: role.map(str::to_owned),
            comment: None,
            timed_out: false,
        }
    }

    #[test]
    fn a_repeated_decision_is_a_no_op_and_never_decides_the_next_gate() {
        let p = program();
        let mut kinds = vec![EventKind::RunStarted];
        kinds.extend(wait("go_live", WaitKind::Approval, None));
        kinds.push(decided("go_live", Some("tech_lead")));
        let s = state(kinds.clone());
        assert_eq!(
            gate_decision(&s, &p, call(None, Verdict::Approve, Some("tech_lead")), NOW),
            Err(Refusal::AlreadyDecided {
                gate: path("go_live"),
                approve: true,
                role: Some("tech_lead".into())
            }),
            "the same role again at the same wait"
        );
        assert!(
            gate_decision(&s, &p, call(None, Verdict::Reject, Some("tech_lead")), NOW).is_ok(),
            "a change of mind"
        );
        let decision = gate_decision(&s, &p, call(None, Verdict::Approve, Some("product_owner")), NOW);
        assert_eq!(
            decision,
            Ok(decided("go_live", Some("product_owner"))).map(|mut e| {
                if let EventKind::GateDecided { comment, .. } = &mut e {
                    *comment = Some("looks fine".into());
                }
                e
            })
        );
        // The gate is settled and the run goes on to the next one.
        kinds.push(decided("go_live", Some("product_owner")));
        kinds.push(EventKind::StepSucceeded { path: path("go_live"), output: json!({"approved": true}) });
        kinds.extend(wait("ok", WaitKind::Approval, None));
        let s = state(kinds.clone());
        assert_eq!(
            gate_decision(&s, &p, call(None, Verdict::Approve, Some("tech_lead")), NOW),
            Err(Refusal::GateNotNamed {
                gate: path("ok"),
                last: path("go_live"),
                answer: false,
                role: Some("tech_lead".into()),
            }),
            "`approve RUN --as tech_lead` again does not approve `ok` unseen"
        );
        assert!(gate_decision(&s, &p, call(Some("ok"), Verdict::Approve, Some("tech_lead")), NOW).is_ok());
        assert!(gate_decision(&s, &p, call(None, Verdict::Approve, None), NOW).is_ok(), "a decider new here");
        // Where the decision was recorded, for the front to say.
        kinds.push(decided("ok", Some("tech_lead")));
        let s = state(kinds);
        let named = call(Some("ok"), Verdict::Approve, Some("tech_lead"));
        assert_eq!(decided_gate(&s, &named), Some(&path("ok")));
        assert_eq!(
            decided_gate(&s, &call(None, Verdict::Approve, Some("product_owner"))),
            None,
            "not the last"
        );
    }

    #[test]
    fn a_gate_that_waited_already_or_waits_again_is_taken_without_its_name() {
        let p = program();
        let mut kinds = vec![EventKind::RunStarted];
        kinds.extend(wait("go_live", WaitKind::Approval, None));
        kinds.extend(wait("ok", WaitKind::Approval, None));
        kinds.push(decided("go_live", Some("tech_lead")));
        kinds.push(decided("go_live", Some("product_owner")));
        kinds.push(EventKind::StepSucceeded { path: path("go_live"), output: json!({"approved": true}) });
        let s = state(kinds);
        assert!(
            gate_decision(&s, &p, call(None, Verdict::Approve, Some("tech_lead")), NOW).is_ok(),
            "`ok` waited already when tech_lead decided at `go_live`"
        );
        // An answer, and the same step asking again.
        let mut kinds = vec![EventKind::RunStarted];
        kinds.extend(wait("plan", WaitKind::Clarification, None));
        kinds.push(EventKind::Answered { path: path("plan"), text: "Sled.".into() });
        kinds.push(EventKind::StepStarted { path: path("plan"), attempt: 2 });
        kinds.push(EventKind::StepWaiting {
            path: path("plan"),
            wait: WaitKind::Clarification,
            deadline: None,
            message: None,
            questions: vec!["Which version?".into()],
        });
        let s = state(kinds);
        let answer = gate_decision(&s, &p, call(None, Verdict::Answer("16".into()), None), NOW);
        assert_eq!(answer, Ok(EventKind::Answered { path: path("plan"), text: "16".into() }));
    }

    #[test]
    fn a_cancel_cancels_what_runs_or_waits_and_a_pause_only_pauses() {
        let mut kinds = vec![EventKind::RunStarted, EventKind::StepStarted { path: path("a"), attempt: 1 }];
        kinds.extend(wait("ok", WaitKind::Approval, None));
        kinds.push(EventKind::StepStarted { path: path("b"), attempt: 1 });
        kinds.push(EventKind::StepSucceeded { path: path("b"), output: json!(1) });
        let s = state(kinds);
        assert_eq!(
            stop(&s, Request::Cancel),
            Ok(vec![
                EventKind::StepCancelled { path: path("a") },
                EventKind::StepCancelled { path: path("ok") },
                EventKind::RunCancelled,
            ])
        );
        assert_eq!(stop(&s, Request::Pause), Ok(vec![EventKind::RunPaused]));
    }

    #[test]
    fn stopping_what_already_stopped_records_nothing_or_is_refused() {
        let paused = state(vec![EventKind::RunStarted, EventKind::RunPaused]);
        assert_eq!(stop(&paused, Request::Pause), Ok(Vec::new()));
        assert_eq!(stop(&paused, Request::Cancel), Ok(vec![EventKind::RunCancelled]));
        assert_eq!(stop(&state(Vec::new()), Request::Pause), Ok(Vec::new()), "a pending run runs nothing");
        let cancelled = state(vec![EventKind::RunCancelled]);
        assert_eq!(stop(&cancelled, Request::Cancel), Ok(Vec::new()));
        assert_eq!(stop(&cancelled, Request::Pause), Err(Refusal::Ended { status: RunStatus::Cancelled }));
        let done = state(vec![EventKind::RunStarted, EventKind::RunCompleted]);
        assert_eq!(stop(&done, Request::Cancel), Err(Refusal::Ended { status: RunStatus::Completed }));
    }

    #[test]
    fn resuming_resets_blocked_steps_and_restarts_a_stopped_run() {
        let mut kinds = vec![EventKind::RunStarted];
        kinds.extend(wait("a", WaitKind::Block, None));
        kinds.extend(wait("ok", WaitKind::Approval, None));
        let running = state(kinds.clone());
        assert_eq!(resume(&running), Ok(vec![EventKind::StepReset { path: path("a") }]));
        kinds.push(EventKind::RunWaiting { wait: WaitKind::Block });
        assert_eq!(
            resume(&state(kinds)),
            Ok(vec![EventKind::StepReset { path: path("a") }, EventKind::RunStarted])
        );
        assert_eq!(resume(&state(Vec::new())), Ok(vec![EventKind::RunStarted]));
        let paused = state(vec![EventKind::RunStarted, EventKind::RunPaused]);
        assert_eq!(resume(&paused), Ok(vec![EventKind::RunStarted]));
        let failed = state(vec![
            EventKind::RunStarted,
            EventKind::RunFailed {
                error: StepError { class: ErrorClass::Fatal, message: "x".into(), hint: None, cause: None },
            },
        ]);
        assert_eq!(resume(&failed), Err(Refusal::Ended { status: RunStatus::Failed }));
    }

    #[test]
    fn a_fork_copies_up_to_a_checkpoint_keeping_actors_and_times() {
        let mut events = log(vec![
            EventKind::RunStarted,
            EventKind::StepStarted { path: path("a"), attempt: 1 },
            EventKind::StepSucceeded { path: path("a"), output: json!(1) },
            EventKind::StepStarted { path: path("b"), attempt: 1 },
            EventKind::StepSucceeded { path: path("b"), output: json!(2) },
            EventKind::RunCompleted,
        ]);
        events[1].actor = "alice".into();
        let f = fork(&events, 4).expect("a checkpoint");
        assert_eq!(
            (f.workflow.as_str(), f.definition_hash.as_str(), &f.inputs),
            ("steer", "abc", &json!({"x": 1}))
        );
        assert_eq!(f.version.as_deref(), Some("3"), "the fork follows the same workflow version");
        assert_eq!(f.copied, events[1..4].to_vec(), "the same events, actors and times");
        let forked = EventKind::RunForked { source: RunId::new("r1").expect("id"), checkpoint: 4 };
        assert_eq!(f.then, vec![forked, EventKind::RunPaused]);
        assert_eq!(fork(&events, 5), Err(Refusal::NoCheckpoint { seq: 5, last: Some(6) }));
        assert_eq!(fork(&events[1..], 4), Err(Refusal::NoCheckpoint { seq: 4, last: None }));
    }

    #[test]
    fn a_fork_records_its_source_and_inherits_the_usage_before_it() {
        let used = crate::state::TokenUsage {
            prompt_tokens: 10,
            completion_tokens: 2,
            estimated: false,
            cost_micro_usd: 0,
        };
        let events = log(vec![
            EventKind::RunStarted,
            EventKind::StepStarted { path: path("plan"), attempt: 1 },
            EventKind::UsageRecorded {
                path: path("plan"),
                attempt: 1,
                agent: None,
                model: "m".into(),
                usage: used,
            },
            EventKind::StepSucceeded { path: path("plan"), output: json!("p") },
            EventKind::RunCompleted,
        ]);
        let f = fork(&events, 5).expect("a checkpoint after plan");
        let mut fork_log = events[..5].to_vec();
        for kind in f.then {
            let seq = fork_log.len() as u64 + 1;
            fork_log.push(Event { seq, at: Timestamp(9_000), actor: "bob".into(), kind });
        }
        let s = RunState::fold(&fork_log).expect("legal").expect("created");
        let origin = crate::state::Origin { run: RunId::new("r1").expect("id"), checkpoint: 5 };
        assert_eq!(s.forked_from, Some(origin));
        assert_eq!(s.usage, crate::state::TokenUsage::default(), "not the fork's own");
        assert_eq!(s.inherited_by_model.get("m"), Some(&used));
        assert!(s.usage_by_model.is_empty(), "so a budget counts only what the fork spends");
        assert_eq!(s.steps[&path("plan")].usage, used, "the step keeps what it used");
        assert_eq!(s.status, RunStatus::Paused);
    }

    #[test]
    fn a_budget_is_raised_above_the_one_in_force_on_a_run_that_goes_on() {
        let blocked = state(vec![EventKind::RunStarted, EventKind::RunWaiting { wait: WaitKind::Block }]);
        assert_eq!(
            raise_budget(&blocked, Some(1.0), 2.5),
            Ok(vec![EventKind::BudgetRaised { budget_usd: 2.5 }])
        );
        assert_eq!(raise_budget(&blocked, None, 2.5), Ok(vec![EventKind::BudgetRaised { budget_usd: 2.5 }]));
        assert_eq!(raise_budget(&blocked, Some(2.5), 2.5), Err(Refusal::BudgetNotRaised { budget_usd: 2.5 }));
        assert_eq!(
            raise_budget(&blocked, Some(1.0), f64::NAN),
            Err(Refusal::BudgetNotRaised { budget_usd: 1.0 })
        );
        let done = state(vec![EventKind::RunStarted, EventKind::RunCompleted]);
        assert_eq!(raise_budget(&done, Some(1.0), 2.0), Err(Refusal::Ended { status: RunStatus::Completed }));
    }

    #[test]
    fn a_fork_of_a_failed_run_runs_again_what_its_end_skipped() {
        let error = || StepError::new(ErrorClass::Fatal, "m");
        let failed = |p: &str, attempt| EventKind::StepFailed {
            path: path(p),
            attempt,
            error: error(),
            output: None,
            retry_at: None,
        };
        let events = log(vec![
            EventKind::RunStarted,
            EventKind::StepStarted { path: path("a"), attempt: 1 },
            EventKind::StepSucceeded { path: path("a"), output: json!(1) },
            EventKind::StepStarted { path: path("b"), attempt: 1 },
            failed("b", 1),
            EventKind::GotoTaken { from: path("b"), to: path("a"), reset: vec![path("a"), path("b")] },
            EventKind::StepStarted { path: path("a"), attempt: 2 },
            failed("a", 2),
            EventKind::RunFailed { error: error() },
        ]);
        let ended = RunState::fold(&events).expect("legal").expect("created");
        assert_eq!(ended.steps[&path("b")].status, StepStatus::Skipped, "sent back, never run again");
        assert_eq!(
            resume(&ended),
            Err(Refusal::Ended { status: RunStatus::Failed }),
            "nothing follows the end"
        );
        // The last checkpoint (after `a` failed) comes before the run's end,
        // so a fork copies `b` pending, and resuming it runs `b`.
        let last = checkpoints(&events).last().map(|c| c.seq);
        assert_eq!(last, Some(9));
        let f = fork(&events, 9).expect("a checkpoint");
        let mut forked = RunState::create(&events[0]).expect("created");
        for event in &f.copied {
            forked.apply(event).expect("legal");
        }
        for kind in f.then {
            let seq = forked.seq + 1;
            forked
                .apply(&Event { seq, at: Timestamp(seq * 1000), actor: "bob".into(), kind })
                .expect("legal");
        }
        assert_eq!(forked.steps[&path("b")].status, StepStatus::Pending);
        assert_eq!(forked.unstarted_status(), StepStatus::Pending);
        assert_eq!(resume(&forked), Ok(vec![EventKind::RunStarted]));
    }

    #[test]
    fn refusals_read_as_sentences_without_flags() {
        let cases = [
            (Refusal::Ended { status: RunStatus::Completed }, "it has ended (completed)"),
            (
                Refusal::NothingWaits { status: RunStatus::Paused, answer: false },
                "it is paused: no step waits for a decision",
            ),
            (
                Refusal::NotWaitingThere { gate: "x".into(), waiting: vec![path("a"), path("b")] },
                "step `x` does not wait for this; waiting: `a`, `b`",
            ),
            (
                Refusal::RoleNeeded { gate: path("g"), roles: vec!["qa".into(), "ops".into()] },
                "`g` needs a decision from one of its roles: qa, ops",
            ),
            (Refusal::NoCheckpoint { seq: 3, last: Some(9) }, "it has no checkpoint 3 (the last is 9)"),
        ];
        for (refusal, words) in cases {
            assert_eq!(refusal.to_string(), words);
        }
    }
}
