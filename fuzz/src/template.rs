//! The template renderer, through the path a step's templates take: a
//! context built by `Renderer::context` from a run's state, then
//! `Renderer::value` with the one environment's limits on (fuel, recursion,
//! the rendered size). Whatever the template and the context, a value or an
//! error, never a panic, a hang or a huge allocation; and a value written
//! as text stays within `MAX_RENDERED_BYTES`, since the context the
//! fuzzer gives is small: anything larger was made by the template.

use std::sync::OnceLock;

use cairn_domain::definition::Template;
use cairn_domain::event::{Event, EventKind, Timestamp};
use cairn_domain::id::RunId;
use cairn_domain::program::{Frame, Program};
use cairn_domain::render::{MAX_RENDERED_BYTES, Reads, Renderer, truthy};
use cairn_domain::state::{RunState, StepPath, text_of};
use serde_json::{Value, json};

/// Where the template ends and the context (JSON) begins, when present.
const SEPARATOR: u8 = 0;

/// The most names the context adds from the input, as a step's few.
const MAX_NAMES: usize = 8;

/// What every render shares: built once, as an engine builds it once per run.
struct Fixture {
    renderer: Renderer,
    program: Program,
    state: RunState,
}

fn fixture() -> &'static Fixture {
    static FIXTURE: OnceLock<Fixture> = OnceLock::new();
    FIXTURE.get_or_init(|| {
        let yaml = "cairn: 1\nid: fuzz\ninputs:\n  n: integer\n  s: string\nsteps:\n  - id: a\n    set: 1\n  - id: b\n    needs: [a]\n    set: 2\n";
        let mut no_files = |_: &str| Err("no files here".to_owned());
        let workflow = cairn_domain::load("fuzz.yaml", yaml.as_bytes(), &mut no_files)
            .unwrap_or_else(|p| panic!("the fixture loads: {p}"));
        let event = |seq, kind| Event { seq, at: Timestamp(0), actor: "engine".into(), kind };
        let run_id = RunId::new("fuzz").unwrap_or_else(|e| panic!("a run id: {e:?}"));
        let inputs = json!({"n": 3, "s": "a <b> & 'c' é {{ n }}"});
        let output = json!({"items": [1, "two", null, true, 2.5, {"k": [3]}], "text": "{{ inputs.n }}"});
        let events = [
            EventKind::RunCreated {
                run_id,
                workflow: workflow.id.clone(),
                definition_hash: String::new(),
                inputs,
                version: None,
                labels: Default::default(),
                priority: 0,
                parent: None,
            },
            EventKind::RunStarted,
            EventKind::StepStarted { path: StepPath::new("a"), attempt: 1 },
            EventKind::StepSucceeded { path: StepPath::new("a"), output },
        ];
        let events: Vec<Event> = events.into_iter().zip(1..).map(|(kind, seq)| event(seq, kind)).collect();
        let state = match RunState::fold(&events) {
            Ok(Some(state)) => state,
            other => panic!("the fixture's events fold: {other:?}"),
        };
        let program = Program::new(workflow).unwrap_or_else(|e| panic!("the fixture has no cycle: {e:?}"));
        Fixture { renderer: Renderer::default(), program, state }
    })
}

/// The names the context adds when the input gives none.
fn default_names() -> Value {
    json!({
        "x": {"a": [1, "two", null, true, 2.5], "s": "it's <b> {{ not rendered }}", "e": {}},
        "items": ["p", "q", "r"],
        "n": 7,
    })
}

/// Renders the template `data` holds (before a NUL byte, as UTF-8 with
/// replacements) against a run's context plus the names of the JSON
/// object after the NUL, if any (a value that is not an object is `x`).
pub fn run(data: &[u8]) {
    let (source, names) = match data.iter().position(|b| *b == SEPARATOR) {
        Some(at) => (&data[..at], serde_json::from_slice(&data[at + 1..]).ok()),
        None => (data, None),
    };
    let template = Template(String::from_utf8_lossy(source).into_owned());
    let names = names.unwrap_or_else(default_names);
    let extra: Vec<(&str, Value)> = match &names {
        Value::Object(map) => map.iter().take(MAX_NAMES).map(|(k, v)| (k.as_str(), v.clone())).collect(),
        other => vec![("x", other.clone())],
    };
    let f = fixture();
    let reads = Reads::all();
    let ctx =
        f.renderer.context(&f.state, &f.program, &Frame::root(), &reads, Some("more {{ detail }}"), &extra);
    let _ = f.renderer.references(&template);
    if let Ok(value) = f.renderer.value(&template, &ctx) {
        let _ = truthy(&value);
        let text = text_of(&value);
        assert!(
            text.len() <= MAX_RENDERED_BYTES,
            "the template made {} bytes from a small context, over the {MAX_RENDERED_BYTES} limit",
            text.len()
        );
    }
}
