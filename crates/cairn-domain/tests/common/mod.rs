//! The pure core driven as the engine drives it, with scripted outcomes and
//! a fake clock: every attempt takes one second, attempts in flight finish in
//! the order they started. Every round is decided twice, through a
//! [`Frontier`] kept across rounds (as the engine does) and afresh from the
//! state alone, and the two must agree.
#![allow(dead_code)]

use cairn_domain::decide::{Action, Frontier, Outcome, Program, attempt_finished, decide, decide_with};
use cairn_domain::definition::StepKind;
use cairn_domain::id::RunId;
use cairn_domain::program::Frame;
use cairn_domain::render::Renderer;
use cairn_domain::state::{ErrorClass, Event, EventKind, RunState, StepError, StepPath, Timestamp};
use serde_json::{Value, json};

/// Scripts how each attempt ends: given the step's path, the attempt, and
/// for a `set` step its rendered value.
pub type Script<'a> = dyn Fn(&str, u32, Option<Value>) -> Outcome + 'a;

pub fn fail(class: ErrorClass, message: &str) -> Outcome {
    Outcome::Failed {
        error: StepError { class, message: message.into(), hint: None, cause: None },
        output: None,
        retry_after: None,
    }
}

pub fn ok(path: &str) -> Outcome {
    Outcome::Succeeded(json!(format!("{path} done")))
}

/// Runs `yaml` to the end (or until it waits) and returns its event log as lines.
pub fn simulate(yaml: &str, script: &Script<'_>) -> String {
    simulate_events(yaml, script).iter().map(line).collect::<Vec<_>>().join("\n")
}

/// Runs `yaml` to the end (or until it waits) and returns its event log.
pub fn simulate_events(yaml: &str, script: &Script<'_>) -> Vec<Event> {
    let mut no_files = |_: &str| Err("no files".to_owned());
    let wf = cairn_domain::load("wf.yaml", yaml.as_bytes(), &mut no_files).expect("valid workflow");
    let program = Program::new(wf).expect("acyclic");
    let renderer = Renderer::default();
    let mut now = Timestamp(0);
    let mut log: Vec<Event> = Vec::new();
    let record = |state: &mut Option<RunState>, kind: EventKind, now: Timestamp, log: &mut Vec<Event>| {
        let event = Event { seq: log.len() as u64 + 1, at: now, actor: "engine".into(), kind };
        match state {
            None => *state = Some(RunState::create(&event).expect("created")),
            Some(s) => s.apply(&event).expect("legal event"),
        }
        log.push(event);
    };
    let mut state = None;
    let declares_flag = program.workflow().inputs.keys().any(|k| k.as_str() == "flag");
    let given = if declares_flag { json!({"flag": false}) } else { json!({}) };
    let created = EventKind::RunCreated {
        run_id: RunId::new("run-1").expect("id"),
        workflow: program.workflow().id.clone(),
        definition_hash: "test".into(),
        inputs: cairn_domain::inputs::resolve(program.workflow(), given).expect("inputs"),
        version: program.workflow().version.clone(),
        labels: Default::default(),
        priority: 0,
        parent: None,
    };
    record(&mut state, created, now, &mut log);
    let mut in_flight: Vec<(StepPath, u32)> = Vec::new();
    let (mut frontier, mut noted) = (Frontier::default(), 0);
    for _ in 0..500 {
        let s = state.as_ref().expect("state");
        let actions = decide(s, &program, &renderer, now);
        log[noted..].iter().for_each(|e| frontier.note(&e.kind));
        noted = log.len();
        let kept = decide_with(&mut frontier, s, &program, &renderer, now);
        assert_eq!(kept, actions, "the frontier saw less than the whole state at event {}", s.seq);
        let mut wake = None;
        let mut progressed = false;
        for action in actions {
            match action {
                Action::Record(kind) => {
                    if let EventKind::StepCancelled { path } = &kind {
                        in_flight.retain(|(p, _)| p != path);
                    }
                    record(&mut state, kind, now, &mut log);
                    progressed = true;
                }
                Action::Start { path, attempt } => {
                    record(&mut state, EventKind::StepStarted { path: path.clone(), attempt }, now, &mut log);
                    in_flight.push((path, attempt));
                    progressed = true;
                }
                Action::WakeAt(t) => wake = Some(t),
            }
        }
        if progressed {
            continue;
        }
        if !in_flight.is_empty() {
            let (path, attempt) = in_flight.remove(0);
            now = Timestamp(now.0 + 1000);
            let s = state.as_ref().expect("state");
            let outcome = script(path.as_str(), attempt, set_value(s, &program, &renderer, &path));
            for kind in attempt_finished(s, &program, &path, attempt, outcome, now) {
                record(&mut state, kind, now, &mut log);
            }
        } else if let Some(t) = wake {
            now = t;
        } else {
            break;
        }
    }
    log
}

/// What a `set` step computes, rendered as the engine renders it.
fn set_value(state: &RunState, program: &Program, renderer: &Renderer, path: &StepPath) -> Option<Value> {
    let (frame, i) = Frame::of(program, state, path)?;
    let block = program.block(frame.block());
    let StepKind::Set(set) = &block.steps[i].kind else { return None };
    let ctx = renderer.context(state, program, &frame, &block.reads[i], None, &[]);
    Some(renderer.deep(&set.value, &ctx).unwrap_or_else(|e| Value::String(format!("render error: {e}"))))
}

/// One event as a short line.
pub fn line(e: &Event) -> String {
    let t = format!("{:>3}.{:03}s", e.at.0 / 1000, e.at.0 % 1000);
    let detail = match &e.kind {
        EventKind::RunCreated { workflow, .. } => format!("run_created {workflow}"),
        EventKind::StepStarted { path, attempt } => format!("step_started {path} #{attempt}"),
        EventKind::StepSucceeded { path, output } => format!("step_succeeded {path} -> {output}"),
        EventKind::StepFailed { path, attempt, error, retry_at, .. } => format!(
            "step_failed {path} #{attempt} {}: {}{}",
            error.class,
            error.message,
            retry_at.map(|t| format!(" (retry at {}.{:03}s)", t.0 / 1000, t.0 % 1000)).unwrap_or_default()
        ),
        EventKind::StepSkipped { path, reason, cascade } => {
            format!("step_skipped {path}: {reason}{}", if *cascade { " (cascades)" } else { "" })
        }
        EventKind::GotoTaken { from, to, reset } => {
            let reset: Vec<&str> = reset.iter().map(StepPath::as_str).collect();
            format!("goto_taken {from} -> {to}, again: {}", reset.join(", "))
        }
        EventKind::RunFailed { error } => format!("run_failed {}: {}", error.class, error.message),
        EventKind::GroupExpanded { path, keys, .. } => format!("group_expanded {path}: {}", keys.join(", ")),
        EventKind::IterationStarted { path, index } => format!("iteration_started {path}[{index}]"),
        EventKind::InstanceFinished { path, key, failed, .. } => {
            let failed = failed.as_ref().map(|f| format!(" ({f} failed)")).unwrap_or_default();
            format!("instance_finished {path}[{key}]{failed}")
        }
        EventKind::DocumentStored { scope, doc_type, .. } => {
            format!("document_stored {doc_type} in [{scope}]")
        }
        other => {
            let v = serde_json::to_value(other).unwrap_or(Value::Null);
            let kind = v["type"].as_str().unwrap_or("?").to_owned();
            let path = v["path"].as_str().map(|p| format!(" {p}")).unwrap_or_default();
            let wait = v["wait"].as_str().map(|w| format!(" ({w})")).unwrap_or_default();
            format!("{kind}{path}{wait}")
        }
    };
    format!("{:>2} {t} {detail}", e.seq)
}
