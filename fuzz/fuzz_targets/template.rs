//! Fuzz target `template`: the harness in `src/template.rs`, which the stable
//! replay test of the committed corpus runs too.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| cairn_fuzz::template::run(data));
