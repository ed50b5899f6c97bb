//! `cargo xtask faults [damage|disk]`: fault checks longer than `ci`
//! runs, or that need root.
//!
//! - `damage` (no root): the battery of `crates/cairn-store-sled/tests/
//!   damage.rs` at [`DAMAGE_OFFSETS`] seeded offsets (CI runs 240): byte
//!   flips, cuts and zeroed ranges across the write-ahead log and sled's
//!   files of a crashed and of a cleanly closed store, each refused with
//!   an error that names the damage or harmless; a silent loss fails it.
//! - `disk` (root: it mounts a tiny tmpfs): a disk that fills up mid-run
//!   must stop the run with a clear error and exit 2, keep every
//!   committed step, and let `resume` finish once there is space again.
//!
//! With no argument, both run, the damage battery first.

use std::process::{Command, Output};

use anyhow::{Context, Result, bail, ensure};

use crate::root;

fn sh(program: &str, args: &[&str]) -> Result<Output> {
    Command::new(program).args(args).output().with_context(|| format!("running {program}"))
}

/// Unmounts the tmpfs however the check ends.
struct Mount(String);

impl Drop for Mount {
    fn drop(&mut self) {
        let _ = sh("umount", &[&self.0]);
    }
}

/// Offsets the full damage battery tries (half on each store).
const DAMAGE_OFFSETS: &str = "1200";

pub fn run(args: &[String]) -> Result<()> {
    match args {
        [] => {
            damage()?;
            disk_full()
        }
        [which] if which == "damage" => damage(),
        [which] if which == "disk" => disk_full(),
        _ => bail!("usage: cargo xtask faults [damage|disk]"),
    }
}

/// The damage battery at [`DAMAGE_OFFSETS`] offsets; it prints its report.
fn damage() -> Result<()> {
    let cargo_bin = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    eprintln!(
        "$ CAIRN_DAMAGE_OFFSETS={DAMAGE_OFFSETS} cargo test -p cairn-store-sled --test damage -- --nocapture"
    );
    let status = Command::new(cargo_bin)
        .args(["test", "--locked", "-p", "cairn-store-sled", "--test", "damage", "--", "--nocapture"])
        .env("CAIRN_DAMAGE_OFFSETS", DAMAGE_OFFSETS)
        .current_dir(root())
        .status()
        .context("running cargo")?;
    ensure!(status.success(), "the damage battery failed");
    Ok(())
}

fn disk_full() -> Result<()> {
    crate::build_debug_binaries()?;
    let cairn = root().join("target/debug/cairn");
    let work = root().join("target/faults");
    let _ = std::fs::remove_dir_all(&work);
    let disk = work.join("disk");
    std::fs::create_dir_all(&disk)?;
    let mut wf = String::from("cairn: 1\nid: big\nsteps:\n");
    for i in 0..40 {
        wf.push_str(&format!("  - id: s{i}\n    set: \"{{{{ range(3000) | join(',') }}}}\"\n"));
    }
    std::fs::write(work.join("big.yaml"), wf)?;
    let mountpoint = disk.to_string_lossy().into_owned();
    let out = sh("mount", &["-t", "tmpfs", "-o", "size=1200k", "tmpfs", &mountpoint])?;
    if !out.status.success() {
        bail!("cannot mount a tmpfs (run as root): {}", String::from_utf8_lossy(&out.stderr));
    }
    let _mount = Mount(mountpoint.clone());
    let data = disk.join("data");
    let run = |args: &[&str]| -> Result<Output> {
        Command::new(&cairn)
            .args(args)
            .current_dir(&work)
            .env("CAIRN_DATA_DIR", &data)
            .output()
            .context("cairn")
    };
    let first = run(&["run", "big.yaml", "--run-id", "full"])?;
    let stderr = String::from_utf8_lossy(&first.stderr);
    ensure!(
        first.status.code() == Some(2),
        "a full disk should exit 2, got {:?}: {stderr}",
        first.status.code()
    );
    ensure!(stderr.contains("No space left on device") && stderr.contains("cairn resume full"), "{stderr}");
    let out = sh("mount", &["-o", "remount,size=16m", &mountpoint])?;
    ensure!(out.status.success(), "remount: {}", String::from_utf8_lossy(&out.stderr));
    let status = run(&["status", "full", "--format", "json"])?;
    let json: serde_json::Value = serde_json::from_slice(&status.stdout).context("status json")?;
    let done =
        json["steps"].as_array().map_or(0, |s| s.iter().filter(|s| s["status"] == "succeeded").count());
    ensure!(done > 0, "no committed step survived: {json}");
    let resumed = run(&["resume", "full", "--format", "json"])?;
    let json: serde_json::Value = serde_json::from_slice(&resumed.stdout).context("resume json")?;
    ensure!(json["status"] == "completed", "resume did not complete: {json}");
    eprintln!(
        "faults: disk full after {done} committed steps: exit 2 with a hint; after freeing space, resume completed"
    );
    Ok(())
}
