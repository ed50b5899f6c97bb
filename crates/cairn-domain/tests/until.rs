//! A loop's `until` that reads the output of a step with none: the loop
//! fails with that step's own failure, named, not with a template error.

mod common;

use cairn_domain::decide::Outcome;
use cairn_domain::event::Cause;
use cairn_domain::state::{ErrorClass, Event, RunState, RunStatus, StepError};
use common::{fail, line, simulate_events};
use serde_json::json;

/// Plan, code and test until green: the shape of `examples/plan-code-test.yaml`.
fn workflow(test: &str, until: &str) -> String {
    format!(
        r#"cairn: 1
id: green
steps:
  - id: fix_until_green
    loop: {{ max_iters: 3, until: "{until}" }}
    steps:
      - id: code
        uses: coder
      - id: test
{test}
        on_failure: continue
"#
    )
}

const COMMAND: &str = "        command: [cargo, test]";
const EXIT_CODE: &str = "{{ steps.test.output.exit_code == 0 }}";

fn lines(events: &[Event]) -> String {
    events.iter().map(line).collect::<Vec<_>>().join("\n")
}

fn error_of(events: &[Event], path: &str) -> StepError {
    let state = RunState::fold(events).expect("legal").expect("created");
    assert_eq!(state.status, RunStatus::Failed);
    state.steps.get(&cairn_domain::state::StepPath::new(path)).and_then(|s| s.error.clone()).expect("failed")
}

/// The program may not run, so `test` fails with no output: the loop fails
/// at once with that failure (class and cause kept, so the host can say
/// which setting allows the program), not with "cannot be rendered".
#[test]
fn a_check_that_could_not_run_fails_the_loop_with_its_own_cause() {
    let events = simulate_events(&workflow(COMMAND, EXIT_CODE), &|path, _, _| {
        if path.ends_with(".test") {
            Outcome::Failed {
                error: StepError {
                    cause: Some(Cause::ProgramNotAllowed { program: "cargo".into() }),
                    ..StepError::new(ErrorClass::Permission, "`cargo` is not an allowed program")
                },
                output: None,
                retry_after: None,
            }
        } else {
            Outcome::Succeeded(json!("diff"))
        }
    });
    insta::assert_snapshot!(lines(&events));
    let error = error_of(&events, "fix_until_green");
    assert_eq!(error.class, ErrorClass::Permission);
    assert_eq!(error.cause, Some(Cause::ProgramNotAllowed { program: "cargo".into() }));
    assert_eq!(
        error.message,
        "its `until` reads `steps.test.output`, but `fix_until_green[0].test` failed with no output: \
         `cargo` is not an allowed program"
    );
}

/// A failure without a typed cause or hint gets a hint that says how to
/// let the loop go on.
#[test]
fn a_failure_without_a_hint_gets_one_about_guarding_the_read() {
    let events = simulate_events(&workflow(COMMAND, EXIT_CODE), &|path, _, _| {
        if path.ends_with(".test") {
            fail(ErrorClass::Fatal, "no such file")
        } else {
            Outcome::Succeeded(json!(1))
        }
    });
    let error = error_of(&events, "fix_until_green");
    assert_eq!(error.class, ErrorClass::Fatal);
    assert!(error.message.ends_with("failed with no output: no such file"), "{}", error.message);
    assert_eq!(
        error.hint.as_deref(),
        Some(
            "see why `fix_until_green[0].test` failed; to let the loop go on instead, guard the read with `default(...)`"
        )
    );
}

/// A skipped check has no output either, and the error says it was skipped.
#[test]
fn a_skipped_check_is_named_as_skipped() {
    let skipped = "        when: \"{{ loop.index > 5 }}\"\n        uses: tester";
    let events = simulate_events(&workflow(skipped, EXIT_CODE), &|_, _, _| Outcome::Succeeded(json!(1)));
    let error = error_of(&events, "fix_until_green");
    assert_eq!(error.class, ErrorClass::Fatal);
    assert_eq!(
        error.message,
        "its `until` reads `steps.test.output`, but `fix_until_green[0].test` was skipped, so it has no output"
    );
}

/// A check that failed with its output (a non-zero exit) lets `until`
/// decide, and a template that fails for another reason keeps its error.
#[test]
fn outputs_that_exist_are_read_and_other_render_errors_stay_template_errors() {
    let exit = |code: i64| Outcome::Failed {
        error: StepError::new(ErrorClass::Fatal, "exit code 1"),
        output: Some(json!({"exit_code": code, "stdout": "", "stderr": ""})),
        retry_after: None,
    };
    let events = simulate_events(&workflow(COMMAND, EXIT_CODE), &|path, _, _| match path {
        "fix_until_green[0].test" => exit(1),
        p if p.ends_with(".test") => Outcome::Succeeded(json!({"exit_code": 0, "stdout": "", "stderr": ""})),
        _ => Outcome::Succeeded(json!("diff")),
    });
    let log = lines(&events);
    assert!(log.contains("iteration_started fix_until_green[1]"), "{log}");
    assert!(log.contains("step_succeeded fix_until_green -> "), "{log}");

    let wrong_field = "{{ steps.test.output.code.value == 0 }}";
    let events = simulate_events(&workflow(COMMAND, wrong_field), &|path, _, _| {
        if path.ends_with(".test") { exit(0) } else { Outcome::Succeeded(json!("diff")) }
    });
    let error = error_of(&events, "fix_until_green");
    assert!(
        error.message.starts_with("its `until` cannot be rendered: undefined value"),
        "{}",
        error.message
    );
}
