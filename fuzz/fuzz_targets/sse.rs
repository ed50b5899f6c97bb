//! Fuzz target `sse`: the harness in `src/sse.rs`, which the stable
//! replay test of the committed corpus runs too.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| cairn_fuzz::sse::run(data));
