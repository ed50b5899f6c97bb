//! The committed fuzz corpus of the SSE parser (`fuzz/corpus/sse`) replayed
//! on stable through the very harness the fuzz target runs
//! (`fuzz/src/sse.rs`, included here), so every CI run checks that no body
//! the fuzzer kept panics or reads differently when split, without nightly.

#[path = "../../../fuzz/src/sse.rs"]
mod sse;

use std::path::Path;

#[test]
fn the_sse_corpus_reads_the_same_however_split_without_a_panic() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz/corpus/sse");
    let mut inputs: Vec<_> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("reading {}: {e}", dir.display()))
        .flatten()
        .map(|e| e.path())
        .collect();
    inputs.sort();
    for input in &inputs {
        let bytes = std::fs::read(input).unwrap_or_else(|e| panic!("reading {}: {e}", input.display()));
        if std::panic::catch_unwind(|| sse::run(&bytes)).is_err() {
            panic!("{} panics: replay it with `cargo +nightly fuzz run sse {0}`", input.display());
        }
    }
    assert!(inputs.len() >= 10, "fuzz/corpus/sse holds {} inputs: the corpus is missing", inputs.len());
    eprintln!("fuzz/corpus/sse: {} inputs replayed", inputs.len());
}
