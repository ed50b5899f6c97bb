//! A step whose template would build a huge value fails with the size
//! limit, and leaves a run its next driver can load and drive: the value
//! is refused while it is measured, so no process holds gigabytes or
//! aborts, and resuming renders the template again only to fail the same
//! way.

mod support;

use std::time::Duration;

use cairn_domain::render::MAX_RENDERED_BYTES;
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
    assert_eq!(error.class, ErrorClass::Fatal, "{error:?}");
    assert!(error.message.contains(&limit), "{}", error.message);
    // The next driver renders it again, and fails it the same way.
    let again = engine.resume(&run_id()).await.expect("resumes");
    assert_eq!(again.status, RunStatus::Blocked);
    let error = again.steps[&StepPath::new("huge")].error.clone().expect("failed again");
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
