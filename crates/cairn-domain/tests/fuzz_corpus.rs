//! The committed fuzz corpus (`fuzz/corpus/definition`, `fuzz/corpus/template`)
//! replayed on stable through the very harnesses the fuzz targets run
//! (`fuzz/src/*.rs`, included here), so every CI run checks that no input
//! the fuzzer kept panics, without nightly or cargo-fuzz.

#[path = "../../../fuzz/src/definition.rs"]
mod definition;
#[path = "../../../fuzz/src/template.rs"]
mod template;

use std::path::Path;

/// Runs `harness` on every file of `fuzz/corpus/<target>`, naming the
/// input that panics; returns how many there were.
fn replay(target: &str, harness: fn(&[u8])) -> usize {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz/corpus").join(target);
    let mut inputs: Vec<_> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("reading {}: {e}", dir.display()))
        .flatten()
        .map(|e| e.path())
        .collect();
    inputs.sort();
    for input in &inputs {
        let bytes = std::fs::read(input).unwrap_or_else(|e| panic!("reading {}: {e}", input.display()));
        if std::panic::catch_unwind(|| harness(&bytes)).is_err() {
            panic!(
                "fuzz/corpus/{target}/{} panics: replay it with `cargo +nightly fuzz run {target} fuzz/corpus/{target}/{0}`",
                input.file_name().map(|n| n.to_string_lossy()).unwrap_or_default()
            );
        }
    }
    assert!(inputs.len() >= 10, "fuzz/corpus/{target} holds {} inputs: the corpus is missing", inputs.len());
    eprintln!("fuzz/corpus/{target}: {} inputs replayed", inputs.len());
    inputs.len()
}

#[test]
fn the_definition_corpus_loads_without_a_panic() {
    replay("definition", definition::run);
}

#[test]
fn the_template_corpus_renders_without_a_panic() {
    replay("template", template::run);
}
