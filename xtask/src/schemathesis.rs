//! `cargo xtask schemathesis [--quick]`: fuzzes every operation of the
//! API with schemathesis (pinned below, installed from PyPI into
//! `target/schemathesis-venv`) against a live `cairn serve` on loopback,
//! generated from its own OpenAPI document (`/api/v1/openapi.json`), with
//! an admin token that holds a gate role. Fails on any server error (5xx)
//! or any answer that does not conform to the documented schema. `--quick`
//! runs fewer examples per operation, for CI. The server's log and the
//! JUnit report are in `target/schemathesis/`.

use std::io::{BufRead, BufReader, Read};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use anyhow::{Context, Result, bail, ensure};

use crate::{root, run_cmd};

/// The schemathesis release this check runs.
const SCHEMATHESIS: &str = "4.32.5";

/// Examples per operation: the full run, and `--quick`.
const EXAMPLES: (&str, &str) = ("50", "10");

/// What the server prints once it accepts connections.
const LISTENING: &str = "cairn serve listening on ";

/// Stops the server however the check ends.
struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

pub fn run(args: &[String]) -> Result<()> {
    let quick = match args {
        [] => false,
        [flag] if flag == "--quick" => true,
        _ => bail!("usage: cargo xtask schemathesis [--quick]"),
    };
    let schemathesis = install()?;
    crate::build_debug_binaries()?;
    let cairn = root().join("target/debug/cairn");

    let work = root().join("target/schemathesis");
    let _ = std::fs::remove_dir_all(&work);
    std::fs::create_dir_all(&work)?;
    let data = work.join("data");

    let made = Command::new(&cairn)
        .arg("--data-dir")
        .arg(&data)
        .args(["token", "create", "fuzz", "--role", "admin", "--gate-role", "product_owner"])
        .stdin(Stdio::null())
        .output()
        .context("running `cairn token create`")?;
    ensure!(made.status.success(), "`cairn token create` failed: {}", String::from_utf8_lossy(&made.stderr));
    let token = String::from_utf8(made.stdout).context("the token is not UTF-8")?.trim().to_owned();
    ensure!(!token.is_empty(), "`cairn token create` printed no token");

    let (server, url) = serve(&cairn, &data, &work.join("server.log"))?;
    eprintln!("schemathesis: the server listens on {url} (log: target/schemathesis/server.log)");

    let examples = if quick { EXAMPLES.1 } else { EXAMPLES.0 };
    // Two passes: everything but revoking tokens, then making and revoking
    // tokens alone, since schemathesis learns the fuzzing token's name
    // from `GET /tokens` and revokes it, after which every call is a 401.
    let passes: [(&str, &[&str]); 2] = [
        ("all but revoke_token", &["--exclude-operation-id", "revoke_token"]),
        (
            "create_token and revoke_token",
            &["--include-operation-id", "create_token", "--include-operation-id", "revoke_token"],
        ),
    ];
    let mut failed = Vec::new();
    for (i, (pass, filter)) in passes.into_iter().enumerate() {
        let mut fuzz = Command::new(&schemathesis);
        fuzz.arg("run")
            .arg(format!("{url}/api/v1/openapi.json"))
            .args(["--checks", "not_a_server_error,response_schema_conformance"])
            .args(filter)
            .args(["--max-examples", examples])
            .args(["--request-timeout", "5"])
            .args(["--generation-database", "none"])
            .args(["--report", "junit"])
            .arg("--report-dir")
            .arg(work.join(format!("report-{}", i + 1)))
            .args(["--no-color", "--output-sanitize", "true"])
            .arg("--header")
            .arg(format!("Authorization: Bearer {token}"))
            .current_dir(&work);
        // The command (with the token) is not echoed: the token stays out of CI logs.
        eprintln!(
            "$ schemathesis run {url}/api/v1/openapi.json --checks not_a_server_error,response_schema_conformance {} --max-examples {examples} --header 'Authorization: Bearer ***' ...   # pass {}: {pass}",
            filter.join(" "),
            i + 1
        );
        let status = fuzz.status().context("running schemathesis")?;
        if !status.success() {
            failed.push(format!("pass {} ({pass}): exit {status}", i + 1));
        }
    }
    drop(server);
    if !failed.is_empty() {
        bail!(
            "schemathesis found failures in {}; the server's log is target/schemathesis/server.log",
            failed.join(", ")
        );
    }
    eprintln!("schemathesis: every operation fuzzed, no server errors, every answer as documented");
    Ok(())
}

/// The schemathesis of `target/schemathesis-venv`, installed (pinned) when
/// it is missing or another version.
fn install() -> Result<std::path::PathBuf> {
    let venv = root().join("target/schemathesis-venv");
    let python = venv.join("bin/python");
    let schemathesis = venv.join("bin/schemathesis");
    if !python.exists() {
        run_cmd(Command::new("python3").args(["-m", "venv"]).arg(&venv))?;
    }
    let installed = Command::new(&schemathesis)
        .arg("--version")
        .output()
        .is_ok_and(|out| String::from_utf8_lossy(&out.stdout).trim().ends_with(SCHEMATHESIS));
    if !installed {
        run_cmd(
            Command::new(&python)
                .args(["-m", "pip", "install", "--quiet", "--disable-pip-version-check"])
                .arg(format!("schemathesis=={SCHEMATHESIS}")),
        )?;
    }
    Ok(schemathesis)
}

/// Starts `cairn serve` on a free loopback port with tokens required, and
/// waits for the line that says where it listens; the rest of its stderr
/// goes to `log`.
fn serve(cairn: &Path, data: &Path, log: &Path) -> Result<(Server, String)> {
    let mut child = Command::new(cairn)
        .args(["--llm", "mock", "--data-dir"])
        .arg(data)
        .args(["serve", "--listen", "127.0.0.1:0", "--auth", "token"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .context("starting `cairn serve`")?;
    let stderr = child.stderr.take().context("the server's stderr")?;
    let server = Server(child);
    let mut log = std::fs::File::create(log)?;
    let (found, url) = mpsc::channel();
    std::thread::spawn(move || {
        use std::io::Write as _;
        let mut lines = BufReader::new(stderr);
        let mut line = String::new();
        let mut sent = false;
        while lines.read_line(&mut line).is_ok_and(|n| n > 0) {
            let _ = log.write_all(line.as_bytes());
            if !sent && let Some(url) = line.trim().strip_prefix(LISTENING) {
                let _ = found.send(url.to_owned());
                sent = true;
            }
            line.clear();
        }
        // Drain what is left so the server never blocks on a full pipe.
        let mut rest = Vec::new();
        let _ = lines.read_to_end(&mut rest);
        let _ = log.write_all(&rest);
    });
    let url = url
        .recv_timeout(Duration::from_secs(60))
        .context("the server did not say where it listens; see target/schemathesis/server.log")?;
    Ok((server, url))
}
