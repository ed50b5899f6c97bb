//! The binary starts and answers `--version`. (Also makes `cargo test`
//! build `target/<profile>/cairn` for the end-to-end suite.)

use std::process::Command;

#[test]
fn prints_its_version() {
    let out = Command::new(env!("CARGO_BIN_EXE_cairn")).arg("--version").output().expect("runs");
    assert!(out.status.success());
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), format!("cairn {}", env!("CARGO_PKG_VERSION")));
}
