//! Tidy checks: the architecture as written in `docs/ARCHITECTURE.md` is
//! the architecture of the code.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::path::{Path, PathBuf};
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
        // A binary crate says it in its main.rs.
        let lib =
            ["src/lib.rs", "src/main.rs"].map(|f| entry.path().join(f)).into_iter().find(|p| p.exists());
        let lib = lib.unwrap_or_else(|| entry.path().join("src/lib.rs"));
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

/// Inside each crate (`crates/*/src`, `xtask/src`) the modules depend on
/// each other without a cycle. A module is a file (`lib.rs`/`main.rs` the
/// root, `a.rs` or `a/mod.rs` is `a`, `a/b.rs` is `a::b`); inline `mod x {}`
/// blocks count as part of their file. Module `a` depends on `b` when its
/// code, outside comments and its `#[cfg(test)] mod tests`, names a
/// `crate::`, `super::` or `self::` path whose longest module prefix is `b`,
/// and `b` is neither `a` nor an ancestor or descendant of it.
#[test]
fn no_module_cycles_inside_a_crate() {
    let crates = std::fs::read_dir(root().join("crates")).expect("crates/");
    let mut srcs: Vec<PathBuf> = crates.flatten().map(|e| e.path().join("src")).collect();
    srcs.sort();
    srcs.push(root().join("xtask/src"));
    let mut found = Vec::new();
    for src in srcs {
        let krate = src.parent().expect("a crate").strip_prefix(root()).expect("in the workspace").to_owned();
        for cycle in cycles(&module_graph(&src)) {
            let names: Vec<String> = cycle.iter().map(|m| m.join("::")).collect();
            found.push(format!("{}: {}", krate.display(), names.join(" -> ")));
        }
    }
    assert!(found.is_empty(), "module cycles:\n{}", found.join("\n"));
}

/// The scanner finds paths in `use` trees and in expressions, and stops
/// at what is not a path.
#[test]
fn no_module_cycles_scanner_expands_use_trees() {
    let code = "use crate::{a::B, c::{d, e as f}, g::{self, *}};\n\
                let x = super::super::h::i::<u8>(self::j::K) + $crate::l::m + my_crate::n::o;";
    let expected = [
        "crate::a::B",
        "crate::c::d",
        "crate::c::e",
        "crate::g",
        "crate::g",
        "super::super::h::i",
        "self::j::K",
    ];
    assert_eq!(paths(code), expected);
    let tests = "use crate::a;\n// crate::b\nfn f() {} /// crate::c\n#[cfg(test)]\nmod tests {\n    use crate::d;\n}\n";
    assert_eq!(paths(&strip(tests)), ["crate::a"]);
}

/// A module of a crate, as its path segments; the crate root is empty.
type Module = Vec<String>;

/// The modules each module of a crate depends on (see
/// `no_module_cycles_inside_a_crate`); every module is a key.
type Graph = BTreeMap<Module, BTreeSet<Module>>;

/// The module graph of the crate whose sources are in `src`.
fn module_graph(src: &Path) -> Graph {
    let mut files = Vec::new();
    visit(src, &mut |path| {
        if path.extension().is_some_and(|e| e == "rs") {
            files.push((module_of(src, path), strip(&read(path))));
        }
    });
    let mut graph: Graph = files.iter().map(|(m, _)| (m.clone(), BTreeSet::new())).collect();
    let modules: BTreeSet<Module> = graph.keys().cloned().collect();
    for (from, code) in &files {
        for path in paths(code) {
            let to = resolve(&path, from, &modules);
            // The root is everyone's ancestor, so paths to it count for nothing.
            if !to.starts_with(from) && !from.starts_with(&to) {
                graph.get_mut(from).expect("a module").insert(to);
            }
        }
    }
    graph
}

/// The module the file `file` under `src` is: `a/b.rs` and `a/b/mod.rs`
/// are `a::b`, `lib.rs` and `main.rs` the root.
fn module_of(src: &Path, file: &Path) -> Module {
    let rel = file.strip_prefix(src).expect("under src").with_extension("");
    let mut module: Module = rel.iter().map(|c| c.to_string_lossy().into_owned()).collect();
    if module.last().is_some_and(|l| l == "mod") || module == ["lib"] || module == ["main"] {
        module.pop();
    }
    module
}

/// `text` without `//` comments (doc comments too), cut at a
/// `#[cfg(test)]` whose item is `mod tests`.
fn strip(text: &str) -> String {
    let lines: Vec<&str> = text.lines().map(|l| l.find("//").map_or(l, |i| &l[..i])).collect();
    let mut code = String::new();
    for (i, line) in lines.iter().enumerate() {
        if line.trim() == "#[cfg(test)]" {
            let mut item = lines[i + 1..].iter().map(|l| l.trim()).filter(|l| !l.starts_with("#["));
            if item.find(|l| !l.is_empty()).is_some_and(|l| l.starts_with("mod tests")) {
                break;
            }
        }
        code.push_str(line);
        code.push('\n');
    }
    code
}

/// Whether `c` can be part of an identifier.
fn ident(c: u8) -> bool {
    c.is_ascii_alphanumeric() || c == b'_'
}

/// Every `crate::`, `super::` and `self::` path in `code`, `use` trees
/// expanded: `use crate::{a::B, c::{d, e}}` gives `crate::a::B`,
/// `crate::c::d` and `crate::c::e`; `crate::a::f()` gives `crate::a::f`.
fn paths(code: &str) -> Vec<String> {
    let b = code.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        let starts = i == 0 || !(ident(b[i - 1]) || b[i - 1] == b'$');
        if starts && ["crate::", "super::", "self::"].iter().any(|a| b[i..].starts_with(a.as_bytes())) {
            i = tree(code, i, &[], &mut out);
        } else {
            i += 1;
        }
    }
    out
}

/// Reads the path or `use` tree at `code[i..]` below `prefix`, pushing
/// each leaf's path to `out`; returns where it ends.
fn tree<'a>(code: &'a str, mut i: usize, prefix: &[&'a str], out: &mut Vec<String>) -> usize {
    let b = code.as_bytes();
    let mut path = prefix.to_vec();
    loop {
        while b.get(i).is_some_and(u8::is_ascii_whitespace) {
            i += 1;
        }
        if b.get(i) == Some(&b'{') {
            i += 1;
            while b.get(i).is_some_and(|&c| c != b'}') {
                if b[i] == b',' || b[i].is_ascii_whitespace() {
                    i += 1;
                    continue;
                }
                i = tree(code, i, &path, out);
                // Past an `as name`, a `*` or anything else up to the next item.
                while b.get(i).is_some_and(|c| !matches!(c, b',' | b'}')) {
                    i += 1;
                }
            }
            return i + 1;
        }
        let start = i;
        while b.get(i).is_some_and(|&c| ident(c)) {
            i += 1;
        }
        let segment = &code[start..i];
        if !segment.is_empty() && (segment != "self" || path.is_empty()) {
            path.push(segment);
        }
        if segment.is_empty() || !b[i..].starts_with(b"::") {
            out.push(path.join("::"));
            return i;
        }
        i += 2;
    }
}

/// The module `path`, written in module `at`, points into: the longest
/// prefix of it that is one of `modules`.
fn resolve(path: &str, at: &Module, modules: &BTreeSet<Module>) -> Module {
    let mut full = at.clone();
    for segment in path.split("::") {
        match segment {
            "crate" => full.clear(),
            "super" => {
                full.pop();
            }
            "self" => {}
            name => full.push(name.to_owned()),
        }
    }
    while !full.is_empty() && !modules.contains(&full) {
        full.pop();
    }
    full
}

/// One shortest cycle through each strongly connected component of more
/// than one module, from its smallest module back to it.
fn cycles(graph: &Graph) -> Vec<Vec<Module>> {
    let reach: BTreeMap<&Module, BTreeSet<&Module>> =
        graph.keys().map(|m| (m, reachable(graph, m))).collect();
    let mut done: BTreeSet<&Module> = BTreeSet::new();
    let mut found = Vec::new();
    for (&m, from_m) in &reach {
        if done.contains(m) || !from_m.contains(m) {
            continue;
        }
        done.extend(from_m.iter().filter(|n| reach[*n].contains(m)));
        found.push(shortest_cycle(graph, m));
    }
    found
}

/// The modules reachable from `from` through one edge or more, by
/// depth-first search.
fn reachable<'a>(graph: &'a Graph, from: &'a Module) -> BTreeSet<&'a Module> {
    let mut seen = BTreeSet::new();
    let mut stack = vec![from];
    while let Some(m) = stack.pop() {
        for next in &graph[m] {
            if seen.insert(next) {
                stack.push(next);
            }
        }
    }
    seen
}

/// A shortest cycle `start -> ... -> start`, by breadth-first search; it
/// must exist.
fn shortest_cycle(graph: &Graph, start: &Module) -> Vec<Module> {
    let mut parent: BTreeMap<&Module, &Module> = BTreeMap::new();
    let mut queue = VecDeque::from([start]);
    while let Some(m) = queue.pop_front() {
        for next in &graph[m] {
            if next == start {
                let mut cycle = vec![m.clone()];
                let mut at = m;
                while at != start {
                    at = parent[at];
                    cycle.push(at.clone());
                }
                cycle.reverse();
                cycle.push(start.clone());
                return cycle;
            }
            if !parent.contains_key(next) {
                parent.insert(next, m);
                queue.push_back(next);
            }
        }
    }
    panic!("no cycle through {start:?}");
}
