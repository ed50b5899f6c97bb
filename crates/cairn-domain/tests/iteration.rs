//! `for_each` and `loop` in the pure core: event sequences of nested
//! fan-outs and loops on the fake clock, scope resolution, the guards on
//! items and keys, and a property: every instance reads only its own
//! ancestors' documents.

mod common;

use cairn_domain::decide::{Action, Program, decide};
use cairn_domain::id::Name;
use cairn_domain::program::{Frame, segments};
use cairn_domain::render::Renderer;
use cairn_domain::scope::ScopeKey;
use cairn_domain::state::{ErrorClass, Event, EventKind, RunState, RunStatus, StepPath};
use common::{fail, line, ok, simulate_events};
use proptest::prelude::*;
use serde_json::{Value, json};

/// Set steps compute their value; `uses: broken` fails; anything else succeeds.
fn run(yaml: &str) -> Vec<Event> {
    simulate_events(yaml, &|p, n, set| match set {
        Some(v) => cairn_domain::decide::Outcome::Succeeded(v),
        None if p.ends_with("broken") => fail(ErrorClass::Fatal, &format!("{p} broke")),
        None => ok(&format!("{p}#{n}")),
    })
}

fn lines(events: &[Event]) -> String {
    events.iter().map(line).collect::<Vec<_>>().join("\n")
}

fn state_of(events: &[Event]) -> RunState {
    RunState::fold(events).expect("legal").expect("created")
}

const NESTED: &str = r#"cairn: 1
id: nested
steps:
  - id: backlog
    set:
      epics:
        - { id: e-auth, title: Auth, stories: [login, logout] }
        - { id: e-pay, title: Pay, stories: [card] }
    produces: epic_backlog
  - id: per_epic
    for_each: { items: "{{ docs.epic_backlog.epics }}", as: epic, key: id }
    steps:
      - id: stories
        set: { epic: "{{ epic.title }}", stories: "{{ epic.stories }}" }
        produces: story_backlog
      - id: per_story
        for_each: { items: "{{ docs.story_backlog.stories }}", as: story }
        steps:
          - id: tasks
            set: "{{ story }} of {{ docs.story_backlog.epic }}"
            produces: task_list
  - id: report
    set: { stories: "{{ docs.story_backlog }}", tasks: "{{ docs.task_list }}", out: "{{ steps.per_epic.output }}" }
"#;

#[test]
fn nested_fan_out_runs_every_instance_in_its_own_scope() {
    let events = run(NESTED);
    let state = state_of(&events);
    assert_eq!(
        state.steps[&StepPath::new("report")].output,
        Some(json!({
            "stories": [{"epic": "Auth", "stories": ["login", "logout"]}, {"epic": "Pay", "stories": ["card"]}],
            "tasks": [["login of Auth", "logout of Auth"], ["card of Pay"]],
            "out": [
                {"stories": {"epic": "Auth", "stories": ["login", "logout"]},
                 "per_story": [{"tasks": "login of Auth"}, {"tasks": "logout of Auth"}]},
                {"stories": {"epic": "Pay", "stories": ["card"]}, "per_story": [{"tasks": "card of Pay"}]},
            ],
        }))
    );
    insta::assert_snapshot!(lines(&events));
}

#[test]
fn scopes_resolve_outward_and_never_sideways() {
    let state = state_of(&run(NESTED));
    let root = ScopeKey::root();
    let mut out = String::new();
    for scope in [
        root.clone(),
        root.child("epic", "e-auth"),
        root.child("epic", "e-pay"),
        root.child("epic", "e-auth").child("story", "1"),
        root.child("epic", "e-pay").child("story", "0"),
    ] {
        let entity = state.scopes.entity(&scope).cloned().unwrap_or(Value::Null);
        out.push_str(&format!("[{scope}] entity: {entity}\n"));
        for (name, doc) in state.scopes.visible(&scope) {
            out.push_str(&format!("  {name} = {doc}\n"));
        }
    }
    insta::assert_snapshot!(out);
}

#[test]
fn an_empty_list_completes_the_group_at_once() {
    let yaml = "cairn: 1\nid: e\nsteps:\n  - id: g\n    for_each: { items: \"{{ [] }}\" }\n    steps:\n      - id: x\n        set: 1\n        produces: d\n  - id: after\n    set: \"{{ docs.d | length }} {{ steps.g.output }}\"\n";
    let state = state_of(&run(yaml));
    assert_eq!(state.steps[&StepPath::new("after")].output, Some(json!("0 []")));
    assert_eq!(state.status, RunStatus::Completed);
}

#[test]
fn bad_items_fail_the_group_with_what_and_where() {
    let cases = [
        ("not a list", "{{ 'abc' }}", ""),
        ("a missing key", "{{ [{'id': 'a'}, {'name': 'b'}] }}", "key: id"),
        ("a duplicate key", "{{ [{'id': 'a'}, {'id': 'b'}, {'id': 'a'}] }}", "key: id"),
        ("a key of the wrong type", "{{ [{'id': ['x']}] }}", "key: id"),
        ("a key with brackets", "{{ [{'id': 'a[1]'}] }}", "key: id"),
        ("a template error", "{{ [1, 2][5] }}", ""),
    ];
    let mut out = String::new();
    for (what, items, key) in cases {
        let yaml = format!(
            "cairn: 1\nid: bad\nsteps:\n  - id: g\n    for_each: {{ items: \"{items}\", {key} }}\n    steps:\n      - id: x\n        set: 1\n"
        );
        let yaml = yaml.replace(", }", " }");
        let state = state_of(&run(&yaml));
        let error = state.error.expect("the run failed");
        out.push_str(&format!(
            "{what}: {}: {}\n  hint: {}\n",
            error.class,
            error.message,
            error.hint.unwrap_or_default()
        ));
    }
    insta::assert_snapshot!(out);
}

#[test]
fn too_many_items_are_refused_before_any_instance() {
    let zeros = vec!["0"; 100_001].join(",");
    let yaml = format!(
        "cairn: 1\nid: big\ninputs:\n  xs: {{ type: array, default: [{zeros}] }}\nsteps:\n  - id: g\n    for_each: {{ items: \"{{{{ inputs.xs }}}}\" }}\n    steps:\n      - id: x\n        set: 1\n"
    );
    let yaml = yaml.as_str();
    let events = run(yaml);
    assert!(!events.iter().any(|e| matches!(e.kind, EventKind::GroupExpanded { .. })));
    let error = state_of(&events).error.expect("failed");
    assert!(error.message.contains("100001 items; a group runs at most 100000"), "{}", error.message);
}

#[test]
fn a_stopping_failure_in_one_instance_stops_the_group_and_the_run() {
    let yaml = "cairn: 1\nid: stop\nsteps:\n  - id: g\n    for_each: { items: \"{{ ['a', 'b', 'c'] }}\", as: it, key: null }\n    steps:\n      - id: work\n        uses: slow\n      - id: broken\n        uses: broken\n";
    let yaml = yaml.replace(", key: null", "");
    let log = lines(&run(&yaml));
    insta::assert_snapshot!(log);
}

#[test]
fn a_continued_failure_lets_the_other_instances_finish_then_fails_the_group() {
    let yaml = "cairn: 1\nid: cont\nsteps:\n  - id: g\n    on_failure: continue\n    for_each: { items: \"{{ ['a', 'b'] }}\" }\n    steps:\n      - id: broken\n        uses: broken\n        on_failure: continue\n  - id: after\n    set: \"{{ steps.g.status }}\"\n";
    let events = run(yaml);
    let state = state_of(&events);
    assert_eq!(state.steps[&StepPath::new("after")].output, Some(json!("failed")));
    let g = &state.steps[&StepPath::new("g")];
    assert!(g.error.as_ref().is_some_and(|e| e.message.contains("g[0].broken")), "{:?}", g.error);
    assert_eq!(state.groups[&StepPath::new("g")].finished, 2);
}

#[test]
fn max_parallel_bounds_the_open_instances_of_a_group() {
    let yaml = "cairn: 1\nid: par\ndefaults: { max_parallel: 10 }\nsteps:\n  - id: g\n    for_each: { items: \"{{ range(5) | list }}\", max_parallel: 2 }\n    steps:\n      - id: work\n        uses: slow\n";
    let events = run(yaml);
    let mut running = 0i32;
    let mut most = 0;
    for e in &events {
        match &e.kind {
            EventKind::StepStarted { path, .. } if path.as_str() != "g" => running += 1,
            EventKind::StepSucceeded { path, .. } if path.as_str() != "g" => running -= 1,
            _ => {}
        }
        most = most.max(running);
    }
    assert_eq!(most, 2);
}

const LOOP: &str = r#"cairn: 1
id: loopy
steps:
  - id: fix
    loop:
      max_iters: 5
      until: "{{ steps.check.output.passed }}"
    steps:
      - id: attempt
        set: "iteration {{ loop.index }} saw {{ steps.check.output }}"
      - id: check
        set: { passed: "{{ loop.index >= 2 }}", n: "{{ loop.index }}" }
  - id: after
    set: "{{ steps.fix.output }}"
"#;

#[test]
fn a_loop_repeats_until_its_condition_and_reads_the_previous_iteration() {
    let events = run(LOOP);
    let state = state_of(&events);
    assert_eq!(
        state.steps[&StepPath::new("after")].output,
        Some(
            json!({"attempt": "iteration 2 saw {\"n\":1,\"passed\":false}", "check": {"passed": true, "n": 2}})
        )
    );
    insta::assert_snapshot!(lines(&events));
}

#[test]
fn an_exhausted_loop_fails_or_goes_on_as_told() {
    for (on_exhausted, expect) in [("fail", RunStatus::Failed), ("continue", RunStatus::Completed)] {
        let yaml = LOOP.replace("max_iters: 5", &format!("max_iters: 2\n      on_exhausted: {on_exhausted}"));
        let state = state_of(&run(&yaml));
        assert_eq!(state.status, expect);
        if on_exhausted == "fail" {
            let error = state.error.expect("failed");
            assert_eq!(error.message, "step `fix` failed: `until` did not hold after 2 iterations");
        }
    }
}

#[test]
fn a_resumed_run_expands_to_the_recorded_instances() {
    let events = run(NESTED);
    let expanded = events
        .iter()
        .position(|e| matches!(&e.kind, EventKind::GroupExpanded { path, .. } if path.as_str() == "per_epic"))
        .expect("expanded");
    let mut state = state_of(&events[..=expanded]);
    // The source document now says something else: the instances stay.
    let changed = Event {
        seq: state.seq + 1,
        at: state.updated_at,
        actor: "test".into(),
        kind: EventKind::DocumentStored {
            scope: ScopeKey::root(),
            doc_type: Name::new("epic_backlog").expect("name"),
            value: json!({"epics": [{"id": "other", "title": "Other", "stories": []}]}),
        },
    };
    state.apply(&changed).expect("legal");
    let program = Program::new(cairn_testkit_workflow(NESTED)).expect("acyclic");
    let actions = decide(&state, &program, &Renderer::default(), state.updated_at);
    let started: Vec<String> = actions
        .iter()
        .filter_map(|a| match a {
            Action::Start { path, .. } => Some(path.to_string()),
            _ => None,
        })
        .collect();
    assert_eq!(started, ["per_epic[e-auth].stories", "per_epic[e-pay].stories"]);
}

fn cairn_testkit_workflow(yaml: &str) -> cairn_domain::definition::Workflow {
    let mut no_files = |_: &str| Err("no files".to_owned());
    cairn_domain::load("wf.yaml", yaml.as_bytes(), &mut no_files).expect("valid")
}

#[test]
fn frames_rebuild_from_paths() {
    let events = run(NESTED);
    let state = state_of(&events);
    let program = Program::new(cairn_testkit_workflow(NESTED)).expect("acyclic");
    let path = StepPath::new("per_epic[e-pay].per_story[0].tasks");
    let (frame, i) = Frame::of(&program, &state, &path).expect("frame");
    assert_eq!(program.block(frame.block()).steps[i].id.as_str(), "tasks");
    assert_eq!(frame.scope.to_string(), "epic/e-pay/story/0");
    assert_eq!(
        frame.vars,
        vec![
            ("epic".to_owned(), json!({"id": "e-pay", "title": "Pay", "stories": ["card"]})),
            ("story".to_owned(), json!("card"))
        ]
    );
    assert_eq!(program.scope_of(&path), frame.scope);
    assert!(Frame::of(&program, &state, &StepPath::new("per_epic.stories")).is_none());
    assert!(Frame::of(&program, &state, &StepPath::new("nothing[1].x")).is_none());
}

/// A workflow of `widths.len()` nested groups, level `l` with `widths[l]`
/// items per instance. Each instance stores its key path as a document and
/// then reads the documents of every level up to its own.
fn nested_groups(widths: &[usize]) -> String {
    fn tree(widths: &[usize], prefix: &str) -> Value {
        let Some((&w, rest)) = widths.split_first() else { return json!([]) };
        Value::Array(
            (0..w)
                .map(|i| {
                    let path = if prefix.is_empty() { format!("k{i}") } else { format!("{prefix}/k{i}") };
                    json!({"k": format!("k{i}"), "path": path, "children": tree(rest, &path)})
                })
                .collect(),
        )
    }
    fn body(level: usize, depth: usize, indent: &str) -> String {
        let reads: Vec<String> = (1..=level).map(|l| format!("{{{{ docs.doc{l} }}}}")).collect();
        let mut s = format!(
            "{indent}- id: mk\n{indent}  set: \"{{{{ it{level}.path }}}}\"\n{indent}  produces: doc{level}\n{indent}- id: read\n{indent}  set: \"{}\"\n",
            reads.join("|")
        );
        if level < depth {
            s.push_str(&format!(
                "{indent}- id: g{next}\n{indent}  for_each: {{ items: \"{{{{ it{level}.children }}}}\", as: it{next}, key: k }}\n{indent}  steps:\n{}",
                body(level + 1, depth, &format!("{indent}    ")),
                next = level + 1,
            ));
        }
        s
    }
    format!(
        "cairn: 1\nid: prop\ninputs:\n  tree: {{ type: array, default: {} }}\ndefaults: {{ max_parallel: 3 }}\nsteps:\n  - id: g1\n    for_each: {{ items: \"{{{{ inputs.tree }}}}\", as: it1, key: k }}\n    steps:\n{}",
        tree(widths, ""),
        body(1, widths.len(), "      ")
    )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]

    #[test]
    fn every_instance_reads_only_its_own_ancestors_documents(widths in prop::collection::vec(1usize..=3, 1..=3)) {
        let yaml = nested_groups(&widths);
        let state = state_of(&run(&yaml));
        prop_assert_eq!(state.status, RunStatus::Completed, "{:?}\n{}", state.error, yaml);
        let mut reads = 0;
        for (path, step) in &state.steps {
            let parts = segments(path.as_str()).expect("path");
            if parts.last().map(|(id, _)| *id) != Some("read") {
                continue;
            }
            reads += 1;
            let keys: Vec<&str> = parts.iter().filter_map(|(_, k)| *k).collect();
            let expected: Vec<String> = (1..=keys.len()).map(|l| keys[..l].join("/")).collect();
            prop_assert_eq!(step.output.clone(), Some(json!(expected.join("|"))), "{}", path);
        }
        let total: usize = (1..=widths.len()).map(|l| widths[..l].iter().product::<usize>()).sum();
        prop_assert_eq!(reads, total);
    }
}
