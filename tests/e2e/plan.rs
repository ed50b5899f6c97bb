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
