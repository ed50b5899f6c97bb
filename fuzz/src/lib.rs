//! The fuzz harnesses of cairn: one `run(&[u8])` per target, each driving
//! a parser through the entry point production uses and asserting what must
//! hold whatever the bytes.
//!
//! What it is: the bodies of the `cargo fuzz` targets in `fuzz_targets/`.
//! Each module is one file that names only the public API of the crate it
//! tests, so the stable replay tests (`crates/cairn-domain/tests/fuzz_corpus.rs`,
//! `crates/cairn-llm-http/tests/fuzz_corpus.rs`) include the same file with
//! `#[path]` and replay the committed corpus (`corpus/<target>/`) through
//! exactly what the fuzzer ran, on every CI run, without nightly.
//!
//! What it deliberately does not do: build on stable as a workspace member
//! (libfuzzer-sys needs nightly and a sanitizer), or hold its own copies of
//! parsing logic.

pub mod definition;
pub mod sse;
pub mod template;
