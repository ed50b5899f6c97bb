//! The pure core driven as the engine drives it, with scripted outcomes and
//! a fake clock: every attempt takes one second, attempts in flight finish in
//! the order they started. The snapshot is the run's event log.

mod common;

use cairn_domain::decide::Outcome;
use cairn_domain::state::{ErrorClass, Event, RunState, StepError};
use common::{fail, ok};

/// Runs `yaml` to the end (or until it waits) and returns its event log as lines.
fn simulate(yaml: &str, script: &dyn Fn(&str, u32) -> Outcome) -> String {
    common::simulate(yaml, &|p, n, _| script(p, n))
}

fn simulate_events(yaml: &str, script: &dyn Fn(&str, u32) -> Outcome) -> Vec<Event> {
    common::simulate_events(yaml, &|p, n, _| script(p, n))
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
            error: StepError {
                class: ErrorClass::RateLimited,
                message: "429".into(),
                hint: None,
                cause: None,
            },
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
