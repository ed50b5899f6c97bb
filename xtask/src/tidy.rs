//! Tidy checks: the architecture as written in `docs/ARCHITECTURE.md` is
//! the architecture of the code.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::Command;

use crate::root;

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
}

/// The internal edges `docs/ARCHITECTURE.md` allows: its table rows
/// `| \`crate\` | \`dep\`, \`dep\` | ... |`.
fn allowed_edges() -> BTreeMap<String, BTreeSet<String>> {
    let doc = read(&root().join("docs/ARCHITECTURE.md"));
    let mut allowed = BTreeMap::new();
    for line in doc.lines().filter(|l| l.starts_with("| `cairn-")) {
        let cells: Vec<&str> = line.split('|').map(str::trim).collect();
        let krate = cells[1].trim_matches('`').to_owned();
        let deps = cells[2]
            .split(',')
            .map(|d| d.trim().trim_matches('`').to_owned())
            .filter(|d| d.starts_with("cairn-"))
            .collect();
        allowed.insert(krate, deps);
    }
    allowed
}

/// The internal edges `cargo metadata` reports, every dependency kind.
fn actual_edges() -> BTreeMap<String, BTreeSet<String>> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let out = Command::new(cargo)
        .args(["metadata", "--format-version", "1", "--no-deps", "--offline"])
        .current_dir(root())
        .output()
        .expect("cargo metadata runs");
    assert!(out.status.success(), "cargo metadata: {}", String::from_utf8_lossy(&out.stderr));
    let meta: serde_json::Value = serde_json::from_slice(&out.stdout).expect("metadata is JSON");
    let mut edges = BTreeMap::new();
    for pkg in meta["packages"].as_array().expect("packages") {
        let name = pkg["name"].as_str().expect("name").to_owned();
        let deps: BTreeSet<String> = pkg["dependencies"]
            .as_array()
            .expect("dependencies")
            .iter()
            .filter_map(|d| d["name"].as_str())
            .filter(|d| d.starts_with("cairn-"))
            .map(str::to_owned)
            .collect();
        edges.insert(name, deps);
    }
    edges
}

#[test]
fn internal_dependencies_match_the_architecture_table() {
    let allowed = allowed_edges();
    assert!(allowed.len() >= 7, "docs/ARCHITECTURE.md lists too few crates: {allowed:?}");
    let mut wrong = Vec::new();
    for (krate, deps) in actual_edges() {
        if !krate.starts_with("cairn-") {
            continue;
        }
        let Some(ok) = allowed.get(&krate) else {
            wrong.push(format!("{krate} is not in the table of docs/ARCHITECTURE.md"));
            continue;
        };
        for dep in deps.difference(ok) {
            wrong.push(format!("{krate} -> {dep} is not allowed by docs/ARCHITECTURE.md"));
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}

#[test]
fn every_crate_says_what_it_is_and_is_not() {
    let crates = std::fs::read_dir(root().join("crates")).expect("crates/");
    let mut missing = Vec::new();
    for entry in crates.flatten() {
        let lib = entry.path().join("src/lib.rs");
        let text = read(&lib);
        let doc: String = text.lines().take_while(|l| l.starts_with("//!")).collect::<Vec<_>>().join("\n");
        for needle in ["does not", "May depend on"] {
            if !doc.contains(needle) {
                missing.push(format!("{}: the //! doc does not say `{needle}`", lib.display()));
            }
        }
    }
    assert!(missing.is_empty(), "{}", missing.join("\n"));
}

#[test]
fn no_test_is_ignored_or_expected_to_panic() {
    let banned = [concat!("#[", "ignore"), concat!("#[", "should_panic")];
    let mut found = Vec::new();
    for dir in ["crates", "tests", "xtask"] {
        visit(&root().join(dir), &mut |path| {
            if path.extension().is_some_and(|e| e == "rs") {
                let text = read(path);
                for b in banned {
                    if text.contains(b) {
                        found.push(format!("{}: {b}]", path.display()));
                    }
                }
            }
        });
    }
    assert!(found.is_empty(), "{}", found.join("\n"));
}

fn visit(dir: &Path, f: &mut dyn FnMut(&Path)) {
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let path = entry.path();
        if path.is_dir() {
            if path.file_name().is_some_and(|n| n != "target" && n != "snapshots") {
                visit(&path, f);
            }
        } else {
            f(&path);
        }
    }
}
