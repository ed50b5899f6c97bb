//! `cairn plan`: levels in text, JSON and Mermaid.

use crate::support::cairn;

#[test]
fn json_levels_follow_needs() {
    let run = cairn(&["plan", "examples/code-review.yaml", "--format", "json"]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    let plan: serde_json::Value = serde_json::from_str(&run.stdout).expect("one JSON document");
    assert_eq!(
        plan["levels"],
        serde_json::json!([["parse"], ["security_scan", "quality_check", "style"], ["report"]])
    );
    assert_eq!(plan["critical_path"], 3);
}

#[test]
fn text_and_mermaid_plans_of_every_example() {
    let examples = crate::support::examples();
    assert!(examples.len() >= 6, "{examples:?}");
    for path in examples {
        let example = path.file_stem().and_then(|s| s.to_str()).expect("a name");
        let file = format!("examples/{example}.yaml");
        for format in ["text", "mermaid"] {
            let run = cairn(&["plan", &file, "--format", format]);
            assert_eq!(run.code, 0, "{}", run.stderr);
            insta::assert_snapshot!(format!("{example}.{format}"), run.stdout);
        }
    }
}

#[test]
fn an_invalid_definition_has_no_plan() {
    let dir = crate::support::scratch("plan_invalid");
    std::fs::write(dir.join("wf.yaml"), "cairn: 1\nid: x\nsteps:\n  - id: a\n    needs: [a]\n    set: 1\n")
        .expect("write");
    let run = crate::support::cairn_in(&dir, &["plan", "wf.yaml"]);
    assert_eq!((run.code, run.stdout.as_str()), (2, ""));
    assert_eq!(run.stderr, "wf.yaml:5:13: a.needs[0]: dependency cycle: a -> a\n");
}
