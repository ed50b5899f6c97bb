//! `cargo xtask litellm`: cairn against a real OpenAI-compatible server
//! process on loopback, the LiteLLM proxy (pinned in
//! `xtask/litellm/requirements.txt`, installed into `target/litellm-venv`),
//! whose models answer fixed texts (`mock_response` in
//! `xtask/litellm/config.yaml`), so no model or network is needed once it
//! is installed. Runs `xtask/litellm/workflow.yaml` through the release
//! binary and checks that the run completes with a structured answer that
//! passed its schema, a reused session whose second call carried the first,
//! and token usage reported by the server (not estimated). Not part of
//! `ci`: it installs a Python package.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use serde_json::Value;

use crate::{cargo, python_venv, root};

/// The proxy's key for this check only.
const KEY: &str = "sk-cairn-litellm-check";

/// Stops the proxy however the check ends.
struct Proxy(Child);

impl Drop for Proxy {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

pub fn run() -> Result<()> {
    let venv = python_venv("litellm-venv", "xtask/litellm/requirements.txt")?;
    cargo(&["build", "--release", "--locked", "-p", "cairn", "--bin", "cairn"])?;

    let port = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
    let work = root().join("target/litellm");
    let _ = std::fs::remove_dir_all(&work);
    std::fs::create_dir_all(&work)?;
    let log = std::fs::File::create(work.join("proxy.log"))?;
    eprintln!("starting the LiteLLM proxy on 127.0.0.1:{port} (log: target/litellm/proxy.log)");
    let _proxy = Proxy(
        Command::new(venv.join("bin/litellm"))
            .arg("--config")
            .arg(root().join("xtask/litellm/config.yaml"))
            .args(["--host", "127.0.0.1", "--port", &port.to_string()])
            .env("LITELLM_MASTER_KEY", KEY)
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .context("starting litellm")?,
    );
    wait_until_live(port)?;

    let out = Command::new(root().join("target/release/cairn"))
        .arg("run")
        .arg(root().join("xtask/litellm/workflow.yaml"))
        .args(["--run-id", "check", "--format", "json"])
        .env("CAIRN_DATA_DIR", work.join("data"))
        .env("CAIRN_LLM_BASE_URL", format!("http://127.0.0.1:{port}/v1"))
        .env("CAIRN_LLM_API_KEY", KEY)
        .stdin(Stdio::null())
        .output()
        .context("running cairn")?;
    let text = String::from_utf8_lossy(&out.stdout);
    let run: Value = serde_json::from_str(&text)
        .with_context(|| format!("cairn printed no run: {}", String::from_utf8_lossy(&out.stderr)))?;
    ensure!(run["status"] == "completed", "the run did not complete: {run}");
    ensure!(run["usage"]["estimated"] == false, "usage was estimated, not reported: {}", run["usage"]);
    let steps = run["steps"].as_array().context("steps")?;
    let step = |id: &str| steps.iter().find(|s| s["id"] == id).cloned().unwrap_or(Value::Null);
    ensure!(step("classify")["output"]["category"].is_string(), "no structured answer: {}", step("classify"));
    let prompt = |id: &str| step(id)["usage"]["prompt_tokens"].as_u64().unwrap_or(0);
    ensure!(
        prompt("shorten") > prompt("draft"),
        "the reused session did not carry the first call ({} then {} prompt tokens)",
        prompt("draft"),
        prompt("shorten")
    );
    let secret = std::fs::read_dir(work.join("data"))?
        .flatten()
        .filter(|e| e.path().is_file())
        .any(|e| std::fs::read(e.path()).is_ok_and(|b| b.windows(KEY.len()).any(|w| w == KEY.as_bytes())));
    ensure!(!secret && !text.contains(KEY), "the key was written somewhere");
    println!(
        "litellm: run completed against the proxy; classify -> {}; usage {} prompt + {} completion tokens (reported); session: draft {} then shorten {} prompt tokens",
        step("classify")["output"],
        run["usage"]["prompt_tokens"],
        run["usage"]["completion_tokens"],
        prompt("draft"),
        prompt("shorten"),
    );
    Ok(())
}

/// Polls the proxy's liveness endpoint for up to two minutes (it imports
/// a great deal on start-up).
fn wait_until_live(port: u16) -> Result<()> {
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(120) {
        if let Ok(mut stream) = TcpStream::connect(("127.0.0.1", port)) {
            let request = format!(
                "GET /health/liveliness HTTP/1.1\r\nhost: 127.0.0.1:{port}\r\nconnection: close\r\n\r\n"
            );
            let mut answer = String::new();
            if stream.write_all(request.as_bytes()).is_ok()
                && stream.read_to_string(&mut answer).is_ok()
                && answer.starts_with("HTTP/1.1 200")
            {
                return Ok(());
            }
        }
        std::thread::sleep(Duration::from_millis(250));
    }
    bail!("the LiteLLM proxy did not come up; see target/litellm/proxy.log")
}
