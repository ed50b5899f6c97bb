//! The pure core driven as the engine drives it, with scripted outcomes and
//! a fake clock: every attempt takes one second, attempts in flight finish in
//! the order they started. The snapshot is the run's event log.

use cairn_domain::decide::{Action, Outcome, Program, attempt_finished, decide};
use cairn_domain::id::RunId;
use cairn_domain::render::Renderer;
use cairn_domain::state::{ErrorClass, Event, EventKind, RunState, StepError, StepPath, Timestamp};
use serde_json::{Value, json};

type Script = dyn Fn(&str, u32) -> Outcome;

fn fail(class: ErrorClass, message: &str) -> Outcome {
    Outcome::Failed {
        error: StepError { class, message: message.into(), hint: None },
        output: None,
        retry_after: None,
    }
}

fn ok(path: &str) -> Outcome {
    Outcome::Succeeded(json!(format!("{path} done")))
}

/// Runs `yaml` to the end (or until it waits) and returns its event log as lines.
fn simulate(yaml: &str, script: &Script) -> String {
    simulate_events(yaml, script).iter().map(line).collect::<Vec<_>>().join("\n")
}

/// Runs `yaml` to the end (or until it waits) and returns its event log.
fn simulate_events(yaml: &str, script: &Script) -> Vec<Event> {
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
    let created = EventKind::RunCreated {
        run_id: RunId::new("run-1").expect("id"),
        workflow: program.workflow().id.clone(),
        definition_hash: "test".into(),
        inputs: json!({"flag": false}),
    };
    record(&mut state, created, now, &mut log);
    let mut in_flight: Vec<(StepPath, u32)> = Vec::new();
    for _ in 0..500 {
        let s = state.as_ref().expect("state");
        let actions = decide(s, &program, &renderer, now);
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
            let outcome = script(path.as_str(), attempt);
            let s = state.as_ref().expect("state");
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

/// One event as a short line.
fn line(e: &Event) -> String {
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

const HEADER: &str = "cairn: 1\nid: t\ninputs:\n  flag: boolean\n";

fn wf(defaults: &str, steps: &str) -> String {
    format!(
        "{HEADER}defaults:\n  retry: {{ delay: 1s, backoff: 2.0, jitter: false }}\n{defaults}steps:\n{steps}"
    )
}

const DIAMOND: &str = "  - id: a\n    set: 1\n  - id: b\n    needs: [a]\n    set: 2\n  - id: c\n    needs: [a]\n    set: 3\n  - id: d\n    needs: [b, c]\n    set: 4\n";

#[test]
fn diamond_runs_the_middle_in_parallel() {
    insta::assert_snapshot!(simulate(&wf("", DIAMOND), &|p, _| ok(p)));
}

#[test]
fn transient_failures_retry_with_backoff_then_succeed() {
    let log = simulate(&wf("", DIAMOND), &|p, n| {
        if p == "b" && n < 3 { fail(ErrorClass::Transient, "502 from provider") } else { ok(p) }
    });
    insta::assert_snapshot!(log);
}

#[test]
fn retries_exhausted_under_each_policy() {
    for policy in ["stop", "continue", "skip", "block"] {
        let steps = DIAMOND.replace("  - id: b\n", &format!("  - id: b\n    on_failure: {policy}\n"));
        let log = simulate(&wf("", &steps), &|p, _| {
            if p == "b" { fail(ErrorClass::Transient, "still down") } else { ok(p) }
        });
        insta::assert_snapshot!(format!("exhausted_{policy}"), log);
    }
}

#[test]
fn goto_loops_back_then_gives_up() {
    let steps = "  - id: plan\n    set: 1\n  - id: code\n    set: 2\n  - id: test\n    set: 3\n    retry: { max_attempts: 1 }\n    on_failure: { goto: code, max: 2, then: stop }\n  - id: ship\n    set: 4\n";
    let log = simulate(&wf("", steps), &|p, _| {
        if p == "test" { fail(ErrorClass::Fatal, "2 tests failed") } else { ok(p) }
    });
    insta::assert_snapshot!(log);
}

#[test]
fn goto_succeeds_on_the_second_round() {
    let steps = "  - id: code\n    set: 2\n  - id: test\n    set: 3\n    retry: { max_attempts: 1 }\n    on_failure: { goto: code, max: 2 }\n";
    let log = simulate(&wf("", steps), &|p, n| {
        if p == "test" && n == 1 { fail(ErrorClass::Fatal, "red") } else { ok(p) }
    });
    insta::assert_snapshot!(log);
}

#[test]
fn when_false_skips_without_holding_dependents_back() {
    let steps = "  - id: a\n    set: 1\n  - id: b\n    when: \"{{ inputs.flag }}\"\n    set: 2\n  - id: c\n    set: \"{{ steps.b.status }}\"\n";
    insta::assert_snapshot!(simulate(&wf("", steps), &|p, _| ok(p)));
}

#[test]
fn an_optional_failure_never_fails_the_run() {
    let steps = DIAMOND.replace("  - id: c\n", "  - id: c\n    optional: true\n");
    let log = simulate(&wf("", &steps), &|p, _| {
        if p == "c" { fail(ErrorClass::Fatal, "lint failed") } else { ok(p) }
    });
    insta::assert_snapshot!(log);
}

#[test]
fn classes_not_listed_are_not_retried_and_retry_after_is_a_floor() {
    let steps = "  - id: a\n    set: 1\n  - id: b\n    set: 2\n";
    let log = simulate(&wf("", steps), &|p, n| match (p, n) {
        ("a", 1) => Outcome::Failed {
            error: StepError { class: ErrorClass::RateLimited, message: "429".into(), hint: None },
            output: None,
            retry_after: Some(cairn_domain::duration::Duration::from_secs(20)),
        },
        ("b", _) => fail(ErrorClass::Permission, "401: check CAIRN_LLM_API_KEY"),
        _ => ok(p),
    });
    insta::assert_snapshot!(log);
}

#[test]
fn max_parallel_bounds_starts() {
    let mut steps = String::from("  - id: root\n    set: 0\n");
    for i in 0..5 {
        steps.push_str(&format!("  - id: w{i}\n    needs: [root]\n    set: {i}\n"));
    }
    let log = simulate(&wf("  max_parallel: 2\n", &steps), &|p, _| ok(p));
    insta::assert_snapshot!(log);
}

#[test]
fn stop_cancels_running_siblings() {
    let log = simulate(&wf("", DIAMOND), &|p, _| {
        if p == "b" { fail(ErrorClass::Fatal, "bad request") } else { ok(p) }
    });
    insta::assert_snapshot!(log);
}

mod snapshots {
    use super::*;
    use proptest::prelude::*;

    /// Workflows that exercise every policy: retries, skip cascades, goto, block, optional.
    fn workflows() -> Vec<String> {
        vec![
            wf("", DIAMOND),
            wf("", &DIAMOND.replace("  - id: b\n", "  - id: b\n    on_failure: skip\n")),
            wf("", &DIAMOND.replace("  - id: c\n", "  - id: c\n    optional: true\n")),
            wf("", &DIAMOND.replace("  - id: b\n", "  - id: b\n    on_failure: block\n")),
            wf(
                "",
                "  - id: code\n    set: 1\n  - id: test\n    set: 2\n    on_failure: { goto: code, max: 2, then: continue }\n  - id: ship\n    set: 3\n",
            ),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 200, ..ProptestConfig::default() })]

        /// fold(snapshot at k, through JSON) + tail == fold(all), for every k.
        #[test]
        fn a_snapshot_and_the_tail_fold_to_the_whole(which in 0usize..5, failures in proptest::collection::vec(0u8..4, 40)) {
            let yaml = &workflows()[which];
            let script = move |path: &str, attempt: u32| {
                let slot = (path.bytes().map(usize::from).sum::<usize>() * 7 + attempt as usize) % failures.len();
                match failures[slot] {
                    0 => fail(ErrorClass::Transient, "flaky"),
                    1 => fail(ErrorClass::Fatal, "broken"),
                    _ => ok(path),
                }
            };
            let events = simulate_events(yaml, &script);
            let whole = RunState::fold(&events).expect("legal").expect("created");
            for k in 1..=events.len() {
                let prefix = RunState::fold(&events[..k]).expect("legal").expect("created");
                let stored = serde_json::to_string(&prefix).expect("serialize");
                let mut resumed: RunState = serde_json::from_str(&stored).expect("deserialize");
                for e in &events[k..] {
                    resumed.apply(e).expect("tail applies");
                }
                prop_assert_eq!(&resumed, &whole);
            }
        }
    }
}

#[test]
fn an_approval_step_starts_by_waiting_for_people() {
    let steps = "  - id: build\n    set: 1\n  - id: go_live\n    approval: { message: \"Ship {{ steps.build.output }}?\", approvers: [lead] }\n  - id: ship\n    set: 2\n";
    insta::assert_snapshot!(simulate(&wf("", steps), &|p, _| ok(p)));
}
