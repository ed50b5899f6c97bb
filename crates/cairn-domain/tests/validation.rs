//! One snapshot per validation rule: each fixture under `tests/invalid/`
//! breaks one rule (some in several ways), and the snapshot is exactly what
//! `cairn validate` prints for it.

use std::path::Path;

use cairn_domain::limits::MAX_STEPS;
use cairn_domain::problem::Rule;

/// The problems of a definition, rendered as `cairn validate` prints them.
fn check(name: &str, bytes: &[u8]) -> String {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/invalid");
    let mut read = |rel: &str| std::fs::read_to_string(dir.join(rel)).map_err(|e| e.to_string());
    match cairn_domain::load(name, bytes, &mut read) {
        Ok(_) => "valid".into(),
        Err(problems) => problems.0.iter().map(|p| p.render(name) + "\n").collect(),
    }
}

#[test]
fn every_rule_has_a_clear_located_message() {
    insta::glob!("invalid/*.yaml", |path| {
        let bytes = std::fs::read(path).expect("fixture");
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or_default();
        insta::assert_snapshot!(check(name, &bytes));
    });
}

#[test]
fn more_labels_than_a_run_carries_is_one_problem_and_fewer_load() {
    let labelled = |n: usize| {
        let pairs: Vec<String> = (0..n).map(|i| format!("k{i}: v")).collect();
        format!("cairn: 1\nid: labelled\nlabels: {{{}}}\nsteps:\n  - id: a\n    set: 1\n", pairs.join(", "))
    };
    let mut read = |_: &str| Err::<String, String>("no files".into());
    let limit = cairn_domain::label::MAX_LABELS;
    let def = cairn_domain::load("ok.yaml", labelled(limit).as_bytes(), &mut read).expect("at the limit");
    assert_eq!(def.labels.len(), limit);
    let problems =
        cairn_domain::load("many.yaml", labelled(limit + 1).as_bytes(), &mut read).expect_err("over");
    assert_eq!(problems.len(), 1, "{problems:?}");
    assert_eq!(
        problems.0[0].render("many.yaml"),
        "many.yaml:3:1: labels: 33 labels are more than the 32 a run carries"
    );
}

#[test]
fn too_many_steps_is_one_problem() {
    let mut text = String::from("cairn: 1\nid: many\nsteps:\n");
    for i in 0..=MAX_STEPS {
        text.push_str(&format!("  - id: s{i}\n    set: {i}\n"));
    }
    let dir = Path::new(".");
    let mut read = |rel: &str| std::fs::read_to_string(dir.join(rel)).map_err(|e| e.to_string());
    let problems = cairn_domain::load("many.yaml", text.as_bytes(), &mut read).expect_err("over the limit");
    assert_eq!(problems.len(), 1, "{problems:?}");
    assert_eq!(problems.0[0].rule, Rule::Limit);
    assert_eq!(
        problems.0[0].render("many.yaml"),
        format!(
            "many.yaml:{}:5: s{MAX_STEPS}: more than {MAX_STEPS} steps in one definition",
            4 + 2 * MAX_STEPS
        )
    );
}

#[test]
fn a_long_cycle_is_named_by_its_first_steps_and_its_length() {
    // Each step needs the next, and the last needs the first: one cycle
    // through all 15,000 steps.
    let n = 15_000;
    let mut text = String::from("cairn: 1\nid: ring\nsteps:\n");
    for i in 0..n {
        text.push_str(&format!("  - id: s{i}\n    needs: s{}\n    set: {i}\n", (i + 1) % n));
    }
    let rendered = check("ring.yaml", text.as_bytes());
    assert_eq!(rendered.lines().count(), 1, "one problem");
    assert!(rendered.len() < 200, "one short line, not {} bytes", rendered.len());
    insta::assert_snapshot!(rendered, @"ring.yaml:45002:5: s14999.needs: dependency cycle of 15000 steps: s14999 -> s14998 -> s14997 -> s14996 -> s14995 -> s14994 -> ... -> s14999");
    let short = "cairn: 1\nid: tri\nsteps:\n  - id: a\n    needs: c\n    set: 1\n  - id: b\n    set: 2\n  - id: c\n    set: 3\n";
    let tri = check("tri.yaml", short.as_bytes());
    assert_eq!(
        tri, "tri.yaml:7:5: b.needs: dependency cycle: b -> c -> a -> b\n",
        "short cycles are named whole"
    );
}
