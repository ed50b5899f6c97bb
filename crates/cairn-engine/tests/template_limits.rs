//! A step whose template would build a huge value fails with the size
//! limit, class `invalid_output` (the data is too much; the template is
//! not wrong), and leaves a run its next driver can load and drive: the
//! value is refused while it is measured, so no process holds gigabytes
//! or aborts, and resuming renders the template again only to fail the
//! same way.

mod support;

use std::time::Duration;

use cairn_domain::render::{MAX_RENDERED_BYTES, MAX_VALUE_BYTES};
use cairn_domain::state::{ErrorClass, RunStatus, StepPath};
use cairn_domain::steer::Refusal;
use cairn_engine::EngineError;
use serde_json::json;
use support::{Harness, definition, run_id};

fn workflow(on_failure: &str) -> String {
    format!(
        r#"cairn: 1
id: big
steps:
  - id: huge
    set: "{{{{ [1, 2, 3] * 10000000 }}}}"
    on_failure: {on_failure}
  - id: fan
    for_each: {{ items: "{{{{ [0] * 20000000 }}}}" }}
    steps:
      - id: each
        set: 1
"#
    )
}

#[tokio::test(start_paused = true)]
async fn a_huge_value_fails_its_step_with_the_limit_and_resuming_fails_it_again() {
    let h = Harness::new();
    let engine = h.builder(Duration::ZERO).build();
    let limit = format!("more than {MAX_RENDERED_BYTES} bytes");
    let state = engine.run(definition(&workflow("block")), json!({}), run_id()).await.expect("runs");
    assert_eq!(state.status, RunStatus::Blocked);
    let error = state.steps[&StepPath::new("huge")].error.clone().expect("failed");
    assert_eq!(error.class, ErrorClass::InvalidOutput, "{error:?}");
    assert!(error.message.contains(&limit), "{}", error.message);
    // The next driver renders it again, and fails it the same way.
    let again = engine.resume(&run_id()).await.expect("resumes");
    assert_eq!(again.status, RunStatus::Blocked);
    let error = again.steps[&StepPath::new("huge")].error.clone().expect("failed again");
    assert_eq!(error.class, ErrorClass::InvalidOutput, "{error:?}");
    assert!(error.message.contains(&limit), "{}", error.message);
    assert_eq!(again.steps[&StepPath::new("huge")].attempts, 2);
}

#[tokio::test(start_paused = true)]
async fn huge_items_fail_the_group_and_the_ended_run_is_refused_not_crashed() {
    let h = Harness::new();
    let engine = h.builder(Duration::ZERO).build();
    let limit = format!("more than {MAX_RENDERED_BYTES} bytes");
    let state = engine.run(definition(&workflow("continue")), json!({}), run_id()).await.expect("runs");
    assert_eq!(state.status, RunStatus::Failed);
    let group = state.steps[&StepPath::new("fan")].error.clone().expect("the group failed");
    assert!(group.message.contains(&limit), "{}", group.message);
    let resumed = engine.resume(&run_id()).await;
    assert!(
        matches!(resumed, Err(EngineError::Refused { refusal: Refusal::Ended { .. }, .. })),
        "{resumed:?}"
    );
    let loaded = engine.load(&run_id()).await.expect("loads");
    assert_eq!(loaded.status, RunStatus::Failed);
}

/// The issue's template in a `set`, in a prompt (written into text), and
/// spread over a whole `set` value: each step fails before any effect with
/// class `invalid_output` and a message naming its limit (a wrong template
/// stays `fatal`), and its blocked run resumes to fail it the same way,
/// never crashing.
#[tokio::test(start_paused = true)]
async fn a_value_past_a_limit_fails_invalid_output_wherever_it_is_rendered_and_resumes() {
    let one = format!("the template produced more than {MAX_RENDERED_BYTES} bytes");
    let whole = format!("the rendered value is more than {MAX_VALUE_BYTES} bytes");
    let big = "\"{{ 'x' * 4000000 }}\"";
    let cases = [
        (
            r#"set: "{{ [0] * 20000000 }}""#.to_owned(),
            format!("cannot render `set`: {one}"),
            ErrorClass::InvalidOutput,
        ),
        (
            "agent: w\n    prompt: \"items: {{ [0] * 20000000 }}\"".to_owned(),
            format!("cannot render the prompt: {one}"),
            ErrorClass::InvalidOutput,
        ),
        (
            format!("set: [{}]", [big; 5].join(", ")),
            format!("cannot render `set`: {whole}"),
            ErrorClass::InvalidOutput,
        ),
        (
            r#"set: "{{ 1 + 'a' }}""#.to_owned(),
            "cannot render `set`: invalid operation".to_owned(),
            ErrorClass::Fatal,
        ),
    ];
    for (step, message, class) in cases {
        let yaml = format!(
            "cairn: 1\nid: limits\nagents:\n  w: {{ system: Be brief. }}\nsteps:\n  - id: s\n    on_failure: block\n    {step}\n"
        );
        let h = Harness::new();
        let engine = h.builder(Duration::ZERO).build();
        let first = engine.run(definition(&yaml), json!({}), run_id()).await.expect("runs");
        let again = engine.resume(&run_id()).await.expect("resumes");
        for (attempt, state) in [(1, first), (2, again)] {
            assert_eq!(state.status, RunStatus::Blocked, "{step}: attempt {attempt}");
            let s = &state.steps[&StepPath::new("s")];
            let error = s.error.clone().expect("failed");
            assert_eq!(error.class, class, "{step}: {error:?}");
            assert!(error.message.starts_with(&message), "{step}: {}", error.message);
            if class == ErrorClass::InvalidOutput {
                assert_eq!(error.message, message, "{step}");
                assert!(error.hint.is_some_and(|h| h.contains("yield less")), "{step}");
            }
            assert_eq!((s.attempts, &s.output), (attempt, &None), "{step}: no value was kept");
        }
    }
}

/// A step's own templates past the size limit, its `when`, its
/// `for_each.items`, a loop's `until`, fail it `invalid_output` too, with
/// the limit in the message and the hint to yield less.
#[tokio::test(start_paused = true)]
async fn a_when_items_or_until_past_the_limit_fails_invalid_output() {
    let one = format!("the template produced more than {MAX_RENDERED_BYTES} bytes");
    let huge = "\"{{ [0] * 20000000 }}\"";
    let cases = [
        (format!("set: 1\n    when: {huge}"), "its `when`"),
        (
            format!("for_each:\n      items: {huge}\n      as: x\n    steps:\n      - id: i\n        set: 1"),
            "`for_each.items`",
        ),
        (
            format!(
                "loop:\n      max_iters: 2\n      until: {huge}\n    steps:\n      - id: i\n        set: 1"
            ),
            "its `until`",
        ),
    ];
    for (step, what) in cases {
        let yaml = format!("cairn: 1\nid: limits\nsteps:\n  - id: s\n    on_failure: block\n    {step}\n");
        let h = Harness::new();
        let engine = h.builder(Duration::ZERO).build();
        let state = engine.run(definition(&yaml), json!({}), run_id()).await.expect("runs");
        assert_eq!(state.status, RunStatus::Blocked, "{step}");
        let error = state.steps[&StepPath::new("s")].error.clone().expect("failed");
        assert_eq!(error.class, ErrorClass::InvalidOutput, "{step}: {error:?}");
        assert_eq!(error.message, format!("{what} cannot be rendered: {one}"), "{step}");
        assert!(error.hint.is_some_and(|h| h.contains("yield less")), "{step}");
    }
}
