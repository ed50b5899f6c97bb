//! Locating and running the `cairn` binary.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;

/// The workspace root.
pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().map(Path::to_path_buf).unwrap_or_default()
}

/// The `cairn` binary of this build: `target/<profile>/cairn`, next to the
/// folder of this test executable. `cargo test --workspace` builds it (the
/// app crate has an integration test); otherwise it is built here, once.
pub fn cairn_bin() -> &'static Path {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        let exe = std::env::current_exe().expect("test executable path");
        let profile_dir = exe.parent().and_then(Path::parent).expect("target/<profile>");
        let bin = profile_dir.join(format!("cairn{}", std::env::consts::EXE_SUFFIX));
        if !bin.exists() {
            let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
            let status = Command::new(cargo)
                .args(["build", "-p", "cairn-app", "--bin", "cairn"])
                .current_dir(root())
                .status()
                .expect("cargo build runs");
            assert!(status.success(), "building cairn failed");
        }
        bin
    })
}

/// The result of one `cairn` invocation.
pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl From<Output> for Run {
    fn from(out: Output) -> Self {
        Self {
            code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }
}

/// Runs `cairn ARGS` in `dir`.
pub fn cairn_in(dir: &Path, args: &[&str]) -> Run {
    Command::new(cairn_bin())
        .args(args)
        .current_dir(dir)
        .env_remove("CAIRN_CONFIG")
        .env_remove("CAIRN_DATA_DIR")
        .output()
        .expect("cairn runs")
        .into()
}

/// Runs `cairn ARGS` in the workspace root.
pub fn cairn(args: &[&str]) -> Run {
    cairn_in(&root(), args)
}

/// A fresh, empty folder for one test.
pub fn scratch(name: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("e2e").join(name);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("scratch dir");
    dir
}
