//! `cargo xtask ui [--shots] [--perf]`: the web UI's checks. The pinned
//! packages are installed from `ui/package-lock.json` (`npm ci`); the typed
//! client must be what `docs/openapi.json` generates, and the committed
//! assets (`crates/cairn-web/dist`) what `ui/` builds (into
//! `target/ui-dist`), byte for byte; then
//! the component tests (Vitest) and the browser tests (playwright-core
//! driving Chromium against a real `cairn serve`).
//!
//! `--shots` writes the browser tests' screenshots into `docs/ui/`
//! (else `target/ui-shots/`). `--perf` measures, with a release binary,
//! what the performance targets of the UI name and prints it against them.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};

use crate::{build_debug_binaries, cargo, root};

/// The targets of the UI's performance (issue #19), in milliseconds and bytes.
const FIRST_RENDER_MS: f64 = 1000.0;
const LONG_TASK_MS: f64 = 50.0;
const FIRST_LOAD_GZIP_BYTES: usize = 400 * 1024;

/// Runs `program args` in `dir` with `envs`, failing on a non-zero exit.
fn run_in(dir: &Path, program: &str, args: &[&str], envs: &[(&str, &Path)]) -> Result<()> {
    eprintln!("$ (cd {}; {program} {})", dir.display(), args.join(" "));
    let mut command = Command::new(program);
    command.args(args).current_dir(dir);
    for (name, value) in envs {
        command.env(name, value);
    }
    let status = command.status().with_context(|| format!("running {program} (is it installed?)"))?;
    if !status.success() {
        bail!("`{program} {}` failed with {status}", args.join(" "));
    }
    Ok(())
}

/// Every file under `dir`, by its path inside it, with its bytes.
fn files(dir: &Path) -> Result<BTreeMap<PathBuf, Vec<u8>>> {
    let mut out = BTreeMap::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(at) = todo.pop() {
        for entry in std::fs::read_dir(&at).with_context(|| format!("reading {}", at.display()))? {
            let path = entry?.path();
            if path.is_dir() {
                todo.push(path);
            } else {
                let bytes = std::fs::read(&path)?;
                out.insert(path.strip_prefix(dir).unwrap_or(&path).to_path_buf(), bytes);
            }
        }
    }
    Ok(out)
}

/// The browser to drive: `$CHROMIUM`, else Chromium on `PATH`.
fn chromium() -> Result<PathBuf> {
    if let Some(path) = std::env::var_os("CHROMIUM") {
        return Ok(PathBuf::from(path));
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    for dir in std::env::split_paths(&path) {
        for name in ["chromium", "chromium-browser"] {
            let candidate = dir.join(name);
            if candidate.is_file() {
                return Ok(candidate);
            }
        }
    }
    bail!("no Chromium on PATH: install it (`apt-get install -y chromium`) or set CHROMIUM")
}

pub fn run(args: &[String]) -> Result<()> {
    let (mut shots, mut perf) = (false, false);
    for arg in args {
        match arg.as_str() {
            "--shots" => shots = true,
            "--perf" => perf = true,
            _ => bail!("usage: cargo xtask ui [--shots] [--perf]"),
        }
    }
    let root = root();
    let ui = root.join("ui");
    let dist = root.join("crates/cairn-web/dist");
    let client = ui.join("src/lib/schema.ts");
    run_in(&ui, "npm", &["ci", "--no-audit", "--no-fund"], &[])?;

    let committed = std::fs::read(&client).context("reading the typed client")?;
    run_in(&ui, "npm", &["run", "gen"], &[])?;
    if std::fs::read(&client)? != committed {
        bail!(
            "ui/src/lib/schema.ts is not what docs/openapi.json generates: run `npm run gen` in ui/ and commit it"
        );
    }
    // Built aside: the committed assets keep their times, so cargo does not
    // rebuild what embeds them.
    let aside = root.join("target/ui-dist");
    let _ = std::fs::remove_dir_all(&aside);
    run_in(&ui, "npm", &["run", "build"], &[("CAIRN_UI_OUT", aside.as_path())])?;
    let (committed, built) = (files(&dist)?, files(&aside)?);
    if built != committed {
        let differ: Vec<String> = built
            .keys()
            .chain(committed.keys())
            .filter(|p| built.get(*p) != committed.get(*p))
            .map(|p| p.display().to_string())
            .collect();
        bail!(
            "crates/cairn-web/dist is not what ui/ builds ({}): run `npm run build` in ui/ and commit it",
            differ.join(", ")
        );
    }
    run_in(&ui, "npm", &["test"], &[])?;

    let browser = chromium()?;
    let shots_dir = if shots { root.join("docs/ui") } else { root.join("target/ui-shots") };
    build_debug_binaries()?;
    let bin = root.join("target/debug/cairn");
    let envs = [
        ("CAIRN_BIN", bin.as_path()),
        ("CHROMIUM", browser.as_path()),
        ("CAIRN_UI_SHOTS", shots_dir.as_path()),
    ];
    run_in(&ui, "node", &["--test", "--test-concurrency=1", "e2e/"], &envs)?;
    if perf {
        measure(&root, &ui, &browser)?;
    }
    Ok(())
}

/// The performance figures with a release binary, against the targets.
fn measure(root: &Path, ui: &Path, browser: &Path) -> Result<()> {
    cargo(&["build", "--locked", "--release", "-p", "cairn", "--bin", "cairn"])?;
    let bin = root.join("target/release/cairn");
    let out = root.join("target/ui-perf.json");
    let shots = root.join("target/ui-shots");
    let envs = [
        ("CAIRN_BIN", bin.as_path()),
        ("CHROMIUM", browser),
        ("CAIRN_UI_SHOTS", shots.as_path()),
        ("CAIRN_UI_PERF_OUT", out.as_path()),
    ];
    run_in(ui, "node", &["--test", "--test-name-pattern=10,000 events", "e2e/"], &envs)?;
    let figures: serde_json::Value = serde_json::from_slice(&std::fs::read(&out)?)?;
    let first = figures["first_render_ms"].as_f64().unwrap_or(f64::NAN);
    // The browser reports only tasks past 50 ms: none is the target met.
    let long: Vec<f64> = figures["long_tasks_while_scrolling_ms"]
        .as_array()
        .map(|tasks| tasks.iter().filter_map(serde_json::Value::as_f64).collect())
        .unwrap_or_default();
    let first_load = first_load_gzip(&root.join("crates/cairn-web/dist"))?;
    let verdict = |met: bool| if met { "met" } else { "MISSED" };
    println!(
        "ui performance (release binary, {} events, {} instances):",
        figures["events"], figures["instances"]
    );
    println!(
        "  first render: {first:.0} ms (target < {FIRST_RENDER_MS} ms): {}",
        verdict(first < FIRST_RENDER_MS)
    );
    println!(
        "  tasks over {LONG_TASK_MS} ms while scrolling the events: {} {long:?} (target: none): {}",
        long.len(),
        verdict(long.iter().all(|t| *t <= LONG_TASK_MS))
    );
    println!(
        "  first load: {} KB of gzipped JavaScript and CSS (target < {} KB): {}",
        first_load / 1024,
        FIRST_LOAD_GZIP_BYTES / 1024,
        verdict(first_load < FIRST_LOAD_GZIP_BYTES)
    );
    println!("  all events streamed in: {} ms", figures["all_events_ms"]);
    Ok(())
}

/// Gzipped bytes of what `index.html` loads (lazy chunks not included).
fn first_load_gzip(dist: &Path) -> Result<usize> {
    let index = std::fs::read_to_string(dist.join("index.html"))?;
    let mut total = 0;
    for part in index.split("\"/assets/").skip(1) {
        let name = part.split('"').next().unwrap_or_default();
        total += std::fs::metadata(dist.join("assets").join(format!("{name}.gz")))
            .with_context(|| format!("{name}.gz"))?
            .len() as usize;
    }
    Ok(total)
}
