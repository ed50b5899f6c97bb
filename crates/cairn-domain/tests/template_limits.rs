//! Templates that would build huge values are refused with the size limit,
//! in little memory: each hostile template here asks for gigabytes (or, as
//! a repeat of repeats, for more than any machine has), and must fail with
//! the limit while it is written out, not after it was built. The results
//! are measured, not the process: a template that built its value first
//! would take the test down with it.

use cairn_domain::definition::Template;
use cairn_domain::id::{RunId, WorkflowId};
use cairn_domain::program::{Frame, Program};
use cairn_domain::render::{MAX_RENDERED_BYTES, Reads, Renderer};
use cairn_domain::state::{Event, EventKind, RunState, Timestamp};
use serde_json::json;

#[test]
fn huge_values_fail_with_the_limit_in_little_memory() {
    let yaml = "cairn: 1\nid: big\nsteps:\n  - id: a\n    set: 1\n";
    let mut no_files = |_: &str| Err("none".to_owned());
    let program =
        Program::new(cairn_domain::load("big.yaml", yaml.as_bytes(), &mut no_files).expect("valid"))
            .expect("acyclic");
    let state = RunState::fold([&created_with(json!({}))]).expect("legal").expect("created");
    let renderer = Renderer::default();
    let ctx = renderer.context(&state, &program, &Frame::root(), &Reads::all(), None, &[]);

    let limit = format!("more than {MAX_RENDERED_BYTES} bytes");
    let values = [
        // The two: a value that would take 5.6 GB, and one that aborted.
        "{{ [0] * 20000000 }}",
        "{{ [1, 2, 3] * 10000000 }}",
        // Repeats of repeats, walked only as far as the limit.
        "{{ [[0] * 100000000] * 100000000 }}",
        "{{ ([0] * 20000000) | tojson }}",
        "{{ {'a': [0] * 20000000} }}",
    ];
    let texts = [
        "text {{ [0] * 20000000 }}",
        "text {{ [[0] * 100000000] * 100000000 }}",
        "{% for x in [[0] * 100000000] %}{{ x }}{% endfor %}",
        "text {{ ([[0] * 100000000] * 100000000) | tojson(2) }}",
    ];
    let mut failures = Vec::new();
    for (source, as_text) in values.iter().map(|s| (*s, false)).chain(texts.iter().map(|s| (*s, true))) {
        let template = Template(source.into());
        let result = if as_text {
            renderer.text(&template, &ctx).map(|t| t.len())
        } else {
            renderer.value(&template, &ctx).map(|v| v.to_string().len())
        };
        match result {
            Err(e) if e.contains(&limit) => {}
            other => failures.push(format!("{source}: {other:?}")),
        }
    }

    // Many templates under the limit each cannot add up past the limit of a
    // whole `set` value.
    let many = json!(vec!["{{ 'x' * 4000000 }}"; 1000]);
    match renderer.deep(&many, &ctx).map(|v| v.to_string().len()) {
        Err(e) if e.contains("the rendered value is more than") => {}
        other => failures.push(format!("1000 x 4 MB in one `set`: {other:?}")),
    }
    // The same through values read whole, which are not computed: each is
    // counted all the same.
    let state_with_big = RunState::fold([&created_with(json!({"big": "x".repeat(2_000_000)}))])
        .expect("legal")
        .expect("created");
    let ctx_big = renderer.context(&state_with_big, &program, &Frame::root(), &Reads::all(), None, &[]);
    let copies = json!(vec!["{{ inputs.big }}"; 1000]);
    match renderer.deep(&copies, &ctx_big).map(|v| v.to_string().len()) {
        Err(e) if e.contains("the rendered value is more than") => {}
        other => failures.push(format!("1000 copies of a 2 MB input in one `set`: {other:?}")),
    }

    // What fits still renders, as a value and as text.
    let fits = renderer.value(&Template("{{ [0] * 1000 }}".into()), &ctx).map(|v| v.as_array().map(Vec::len));
    assert_eq!(fits, Ok(Some(1000)));
    let text = renderer.text(&Template("n={{ [1, 2] * 2 }}".into()), &ctx);
    assert_eq!(text.as_deref(), Ok("n=[1,2,1,2]"));
    assert!(failures.is_empty(), "not refused with the limit in little memory:\n{}", failures.join("\n"));
}

/// The first event of a run with these inputs.
fn created_with(inputs: serde_json::Value) -> Event {
    Event {
        seq: 1,
        at: Timestamp(0),
        actor: "engine".into(),
        kind: EventKind::RunCreated {
            run_id: RunId::new("r1").expect("id"),
            workflow: WorkflowId::new("big").expect("id"),
            definition_hash: String::new(),
            inputs,
            version: None,
            labels: Default::default(),
            priority: 0,
            parent: None,
        },
    }
}
