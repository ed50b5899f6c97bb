//! The local command runner: cairn's `CommandRunner` port on operating
//! system processes, behind a fence.
//!
//! What it is: argv-only process execution (never a shell), for programs on
//! an allowlist, in working directories that resolve (symlinks included)
//! inside allowed roots, with a cleared environment, bounded output, and the
//! whole process group killed when the attempt is dropped (timeout, cancel).
//!
//! What it deliberately does not do: interpret exit codes (the engine does),
//! retry, or render templates: it receives finished argument strings, each
//! passed to the program as exactly one argument.
//!
//! May depend on: `cairn-domain`, `cairn-ports`, tokio (process), nix (to
//! signal process groups). Never on the engine or the app.
//!
//! Read first: [`LocalCommands`], [`CommandPolicy`].

use std::path::{Path, PathBuf};
use std::process::Stdio;

use async_trait::async_trait;
use cairn_domain::event::Cause;
use cairn_domain::state::ErrorClass;
use cairn_ports::{CommandOutput, CommandRunner, CommandSpec, PortError};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};

/// The most output kept per stream by default: 1 MiB.
pub const DEFAULT_MAX_OUTPUT: usize = 1024 * 1024;

/// Variables a command inherits from cairn's own environment; everything
/// else is cleared.
pub const INHERITED_ENV: [&str; 3] = ["PATH", "HOME", "LANG"];

/// What commands may do: the `[commands]` section of `cairn.toml`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommandPolicy {
    /// Programs that may run: bare names (looked up on `PATH`) or absolute paths.
    pub allow: Vec<String>,
    /// Directories a command's working directory must resolve inside.
    pub roots: Vec<PathBuf>,
    /// Bytes kept of each of stdout and stderr.
    pub max_output: usize,
}

/// Runs allowed programs as local processes.
pub struct LocalCommands {
    allow: Vec<String>,
    /// Canonical roots; the first is the default working directory.
    roots: Vec<PathBuf>,
    max_output: usize,
}

impl LocalCommands {
    /// A runner for `policy`; relative roots are taken from `base`. Fails
    /// when a root does not exist.
    pub fn new(policy: CommandPolicy, base: &Path) -> Result<Self, String> {
        let mut roots = Vec::new();
        for root in &policy.roots {
            let full = base.join(root);
            let canonical = full
                .canonicalize()
                .map_err(|e| format!("command root `{}` cannot be used: {e}", root.display()))?;
            roots.push(canonical);
        }
        if roots.is_empty() {
            roots.push(base.canonicalize().map_err(|e| format!("`{}`: {e}", base.display()))?);
        }
        Ok(Self { allow: policy.allow, roots, max_output: policy.max_output })
    }

    /// Refuses what the fence does not allow; returns the working directory.
    fn check(&self, spec: &CommandSpec) -> Result<PathBuf, PortError> {
        let program = spec.program.as_str();
        let lower = program.to_ascii_lowercase();
        if lower.ends_with(".bat") || lower.ends_with(".cmd") {
            return Err(refuse(format!(
                "`{program}` is a batch file: batch files go through a shell and never run"
            )));
        }
        let is_path = program.contains('/') || program.contains('\\');
        if program.is_empty() || (is_path && !Path::new(program).is_absolute()) {
            return Err(refuse(format!("`{program}` must be a bare program name or an absolute path")));
        }
        if !self.allow.iter().any(|a| a == program) {
            return Err(refuse(format!("`{program}` is not an allowed program"))
                .with_cause(Cause::ProgramNotAllowed { program: program.to_owned() }));
        }
        let Some(cwd) = &spec.cwd else { return Ok(self.roots[0].clone()) };
        let wanted = Path::new(cwd);
        let joined = if wanted.is_absolute() { wanted.to_path_buf() } else { self.roots[0].join(wanted) };
        let resolved = joined
            .canonicalize()
            .map_err(|e| refuse(format!("working directory `{cwd}` cannot be resolved: {e}")))?;
        if !self.roots.iter().any(|root| resolved.starts_with(root)) {
            return Err(refuse(format!(
                "working directory `{cwd}` resolves to `{}`, outside the allowed roots",
                resolved.display()
            ))
            .with_cause(Cause::OutsideRoots { dir: cwd.clone() }));
        }
        Ok(resolved)
    }
}

fn refuse(message: String) -> PortError {
    PortError::new(ErrorClass::Permission, message)
}

/// Kills the whole process group when dropped, unless disarmed: a timeout
/// or a cancellation drops the attempt, and no grandchild survives it.
struct GroupGuard(Option<i32>);

impl Drop for GroupGuard {
    fn drop(&mut self) {
        if let Some(pgid) = self.0.take() {
            let _ =
                nix::sys::signal::killpg(nix::unistd::Pid::from_raw(pgid), nix::sys::signal::Signal::SIGKILL);
        }
    }
}

/// Reads a stream to its end, keeping at most `max` bytes.
async fn bounded(stream: Option<impl AsyncRead + Unpin>, max: usize) -> String {
    let Some(mut stream) = stream else { return String::new() };
    let mut kept = Vec::new();
    let mut dropped = 0usize;
    let mut buf = [0u8; 8192];
    loop {
        match stream.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                let room = max.saturating_sub(kept.len()).min(n);
                kept.extend_from_slice(&buf[..room]);
                dropped += n - room;
            }
        }
    }
    let mut text = String::from_utf8_lossy(&kept).into_owned();
    if dropped > 0 {
        text.push_str(&format!("\n… [{dropped} more bytes not kept]"));
    }
    text
}

#[async_trait]
impl CommandRunner for LocalCommands {
    async fn run(&self, spec: CommandSpec) -> Result<CommandOutput, PortError> {
        let cwd = self.check(&spec)?;
        let mut command = tokio::process::Command::new(&spec.program);
        command.args(&spec.args).current_dir(&cwd).env_clear();
        for name in INHERITED_ENV {
            if let Some(value) = std::env::var_os(name) {
                command.env(name, value);
            }
        }
        command.envs(spec.env.iter().map(|(k, v)| (k, v)));
        command.env("CAIRN_IDEMPOTENCY_KEY", &spec.idempotency_key);
        command.stdin(if spec.stdin.is_some() { Stdio::piped() } else { Stdio::null() });
        command.stdout(Stdio::piped()).stderr(Stdio::piped());
        command.process_group(0).kill_on_drop(true);
        let mut child = command.spawn().map_err(|e| {
            PortError::new(ErrorClass::Fatal, format!("`{}` could not start: {e}", spec.program))
                .with_hint("check that the program is installed and on PATH")
        })?;
        let guard = GroupGuard(child.id().and_then(|id| i32::try_from(id).ok()));
        if let (Some(input), Some(mut pipe)) = (spec.stdin, child.stdin.take()) {
            // A program that exits without reading its input is not an error.
            let _ = pipe.write_all(input.as_bytes()).await;
        }
        let (stdout, stderr, status) = tokio::join!(
            bounded(child.stdout.take(), self.max_output),
            bounded(child.stderr.take(), self.max_output),
            child.wait()
        );
        let status = status
            .map_err(|e| PortError::new(ErrorClass::Transient, format!("waiting for the program: {e}")))?;
        // The leader exited; the guard stops anything it left running in its group.
        drop(guard);
        Ok(CommandOutput { exit_code: status.code().unwrap_or(-1), stdout, stderr })
    }
}
