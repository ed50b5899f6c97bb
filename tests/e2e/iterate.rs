//! `for_each` and `loop` through the binary: nested fan-out with scoped
//! documents, how `status` groups instance steps, and the guards on items.

use crate::support::{cairn_env, fresh_data_dir, redact_times, scratch};

const FAN_OUT: &str = r#"cairn: 1
id: breakdown
inputs:
  epics: { type: integer, default: 2 }
steps:
  - id: backlog
    set:
      epics: "{{ range(inputs.epics) | map('string') | list }}"
    produces: epic_backlog
  - id: per_epic
    for_each: { items: "{{ docs.epic_backlog.epics }}", as: epic, max_parallel: 2 }
    steps:
      - id: stories
        set: { epic: "{{ epic }}", stories: ["{{ epic }}-a", "{{ epic }}-b"] }
        produces: story_backlog
      - id: per_story
        for_each: { items: "{{ docs.story_backlog.stories }}", as: story, key: null }
        steps:
          - id: tasks
            set: "tasks of {{ story }} (epic {{ docs.story_backlog.epic }})"
            produces: task_list
  - id: polish
    loop: { max_iters: 3, until: "{{ steps.check.output == 'green' }}" }
    steps:
      - id: fix
        set: "fix after {{ steps.check.output }}"
      - id: check
        set: "{{ 'green' if loop.index == 1 else 'red' }}"
  - id: report
    set: { tasks: "{{ docs.task_list }}", last_fix: "{{ steps.polish.output.fix }}" }
"#;

fn setup(name: &str) -> std::path::PathBuf {
    let dir = scratch(name);
    std::fs::write(dir.join("wf.yaml"), FAN_OUT.replace(", key: null", "")).expect("write");
    dir
}

#[test]
fn a_nested_fan_out_runs_and_status_groups_its_instances() {
    let dir = setup("iterate-status");
    let data = fresh_data_dir();
    let data = data.to_str().expect("utf-8");
    let env = [("CAIRN_DATA_DIR", data)];
    let run = cairn_env(&dir, &["run", "wf.yaml", "--run-id", "fan-1"], &env);
    assert_eq!(run.code, 0, "{}{}", run.stdout, run.stderr);
    let status = cairn_env(&dir, &["status", "fan-1"], &env);
    insta::assert_snapshot!(redact_times(&status.stdout));
    let json = cairn_env(&dir, &["status", "fan-1", "--format", "json"], &env);
    let run: serde_json::Value = serde_json::from_str(&json.stdout).expect("json");
    let paths: Vec<String> = run["steps"]
        .as_array()
        .expect("steps")
        .iter()
        .map(|s| {
            let counts = s.get("instances").map(|i| format!(" {i}")).unwrap_or_default();
            format!("{} {}{counts}", s["path"].as_str().unwrap_or("?"), s["status"].as_str().unwrap_or("?"))
        })
        .collect();
    insta::assert_snapshot!(paths.join("\n"));
}

#[test]
fn long_fan_outs_are_summarised_in_status() {
    let dir = setup("iterate-long");
    let run = cairn_env(&dir, &["run", "wf.yaml", "--input", "epics=12"], &[]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    let text = redact_times(&run.stdout);
    assert!(text.contains("  per_epic[9].per_story[1].tasks  succeeded"), "{text}");
    assert!(!text.contains("per_epic[10]"), "{text}");
    assert!(text.contains("12/12 instances\n"), "{text}");
    assert!(text.contains("\n    … 2 more finished (`--format json` lists all)\n  polish "), "{text}");
}

#[test]
fn items_that_are_not_a_list_fail_the_run_clearly() {
    let dir = scratch("iterate-bad");
    std::fs::write(
        dir.join("wf.yaml"),
        "cairn: 1\nid: bad\nsteps:\n  - id: src\n    set: { epics: not-a-list }\n  - id: g\n    for_each: { items: \"{{ steps.src.output.epics }}\" }\n    steps:\n      - id: x\n        set: 1\n",
    )
    .expect("write");
    let run = cairn_env(&dir, &["run", "wf.yaml", "--run-id", "bad-1"], &[]);
    assert_eq!(run.code, 1);
    insta::assert_snapshot!(redact_times(&run.stdout));
}
