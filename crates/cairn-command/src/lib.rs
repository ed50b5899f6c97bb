//! The local command runner: cairn's `CommandRunner` port on operating
//! system processes, behind a fence.
//!
//! What it is: argv-only process execution (never a shell), for programs on
//! an allowlist, found on cairn's own `PATH` before the step's environment
//! applies, in working directories that resolve (symlinks included) inside
//! allowed roots, with a cleared environment that may not name the loader,
//! arguments whose leading `-` came from run data refused (unless the step
//! allows options), path-like arguments confined to the roots on request,
//! bounded output, and every process the command started killed when it
//! ends or the attempt is dropped (timeout, cancel): its process group, and
//! on Linux its cgroup where one can be made (the `cgroup` module) and, as
//! the subreaper of what it starts, every process that left the group
//! carrying the attempt's key (the `reaper` module). Behind the same
//! fence: the built-in tools agents call ([`BuiltinTools`]) and coding-agent
//! CLIs run as LLM providers ([`CliProvider`]).
//!
//! What it deliberately does not do: interpret exit codes (the engine does),
//! retry, or render templates: it receives finished argument strings, each
//! passed to the program as exactly one argument.
//!
//! May depend on: `cairn-domain`, `cairn-ports`, tokio (process), nix (to
//! signal process groups, become a subreaper and reap). Never on the engine
//! or the app. Its one `unsafe` is the hook that enters the cgroup between
//! fork and exec.
//!
//! Read first: [`LocalCommands`], [`CommandPolicy`], then [`BuiltinTools`]
//! and [`CliProvider`].

mod cli;
mod tools;

pub use cli::{CliFormat, CliProvider, CliSettings};
pub use tools::BuiltinTools;

use std::ffi::OsStr;
use std::os::unix::fs::PermissionsExt;
use std::path::{Component, Path, PathBuf};
use std::process::Stdio;

use async_trait::async_trait;
use cairn_domain::definition::env_name_refused;
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
        #[cfg(target_os = "linux")]
        reaper::adopt_orphans();
        Ok(Self { allow: policy.allow, roots, max_output: policy.max_output })
    }

    /// The canonical roots, never empty: the first is where a command runs
    /// when it names no folder.
    pub fn roots(&self) -> &[PathBuf] {
        &self.roots
    }

    /// Whether each attempt runs in a cgroup of its own here (Linux, with a
    /// writable cgroup v2 hierarchy), which also catches a process that
    /// clears its environment before it detaches.
    pub fn has_cgroups() -> bool {
        #[cfg(target_os = "linux")]
        return cgroup::available();
        #[cfg(not(target_os = "linux"))]
        return false;
    }

    /// Refuses what the fence does not allow; returns the working directory.
    fn check(&self, spec: &CommandSpec) -> Result<PathBuf, PortError> {
        let cwd = self.check_program_and_cwd(spec)?;
        if let Some((name, _)) = spec.env.iter().find(|(name, _)| env_name_refused(name)) {
            return Err(refuse(format!(
                "the step sets `{name}`, which changes which program or code runs: the fence refuses it"
            ))
            .with_cause(Cause::EnvNotAllowed { name: name.clone() }));
        }
        check_options(spec)?;
        if spec.confine_paths {
            self.confine(spec, &cwd)?;
        }
        Ok(cwd)
    }

    /// Refuses, with `confine_paths`, an argument that resolves outside the
    /// roots when read as a path from `cwd` (symlinks included); for an
    /// argument starting with `-`, also the text after its first `=` and
    /// after its first two characters (`--file=/etc/x`, `-C/etc`).
    fn confine(&self, spec: &CommandSpec, cwd: &Path) -> Result<(), PortError> {
        for (i, arg) in spec.args.iter().enumerate() {
            let mut candidates = vec![arg.as_str()];
            if arg.starts_with('-') {
                candidates.extend(arg.split_once('=').map(|(_, value)| value));
                candidates.extend(arg.get(2..).filter(|_| !arg.starts_with("--")));
            }
            let escapes = candidates.iter().any(|c| !c.is_empty() && !inside(&cwd.join(c), &self.roots));
            if escapes {
                return Err(refuse(format!(
                    "argument {} of `{}` (`{}`) resolves outside the allowed roots, and the step confines paths",
                    i + 1,
                    spec.program,
                    shown(arg)
                ))
                .with_cause(Cause::ArgOutsideRoots { index: i + 1 }));
            }
        }
        Ok(())
    }

    /// The allowlist and the working directory.
    fn check_program_and_cwd(&self, spec: &CommandSpec) -> Result<PathBuf, PortError> {
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

/// An argument as a message shows it: at most 60 characters.
fn shown(arg: &str) -> String {
    let mut text: String = arg.chars().take(60).collect();
    if text.len() < arg.len() {
        text.push('…');
    }
    text
}

/// Refuses an argument led by run data that starts with `-`, unless the
/// step allows options. Arguments after a literal `--` (one the author
/// wrote) are operands to programs that follow the convention, and pass.
fn check_options(spec: &CommandSpec) -> Result<(), PortError> {
    if spec.allow_option_args {
        return Ok(());
    }
    let operands = spec.args.iter().enumerate().position(|(i, a)| a == "--" && !spec.data_led.contains(&i));
    for &i in &spec.data_led {
        let Some(arg) = spec.args.get(i) else { continue };
        if arg.starts_with('-') && operands.is_none_or(|end| i < end) {
            return Err(refuse(format!(
                "argument {} of `{}` (`{}`) starts with `-` because of run data: it would be an option of the program",
                i + 1,
                spec.program,
                shown(arg)
            ))
            .with_cause(Cause::OptionFromData { index: i + 1 }));
        }
    }
    Ok(())
}

/// Whether `path` resolves inside one of `roots` (canonical). The longest
/// part of it that exists is resolved, symlinks included; the rest must be
/// plain names (a `..` there, or a symlink that points nowhere, is refused).
fn inside(path: &Path, roots: &[PathBuf]) -> bool {
    let parts: Vec<Component<'_>> = path.components().collect();
    for n in (1..=parts.len()).rev() {
        let prefix: PathBuf = parts[..n].iter().collect();
        match prefix.canonicalize() {
            Ok(mut real) => {
                for part in &parts[n..] {
                    match part {
                        Component::Normal(name) => real.push(name),
                        Component::CurDir => {}
                        _ => return false,
                    }
                }
                return roots.iter().any(|root| real.starts_with(root));
            }
            // A dangling symlink: where it would lead is not known.
            Err(_) if prefix.symlink_metadata().is_ok() => return false,
            Err(_) => {}
        }
    }
    false
}

/// Where a bare program name is found: the first executable file of that
/// name in an absolute folder of `path` (cairn's own `PATH`, never the
/// step's). Relative folders (`.`, empty entries) are skipped, so a file a
/// step wrote into its working directory is never taken for the program.
fn resolve(program: &str, path: Option<&OsStr>) -> Option<PathBuf> {
    if Path::new(program).is_absolute() {
        return Some(PathBuf::from(program));
    }
    std::env::split_paths(path?).filter(|dir| dir.is_absolute()).map(|dir| dir.join(program)).find(
        |candidate| candidate.metadata().is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0),
    )
}

/// Starts the program and returns it with its pid, the id of its process
/// group; on Linux, known as a running leader before any sweep can see it,
/// and born inside the attempt's cgroup where one can be made.
fn spawn(
    command: &mut tokio::process::Command,
    key: &str,
) -> std::io::Result<(tokio::process::Child, GroupGuard)> {
    #[cfg(target_os = "linux")]
    let cgroup = cgroup::AttemptGroup::make();
    #[cfg(target_os = "linux")]
    if let Some(group) = &cgroup {
        enter_before_exec(command, group);
    }
    #[cfg(target_os = "linux")]
    let mut live = reaper::live();
    let child = command.spawn()?;
    let leader = child.id().and_then(|id| i32::try_from(id).ok());
    #[cfg(target_os = "linux")]
    live.extend(leader);
    let guard = GroupGuard {
        leader,
        key: key.to_owned(),
        #[cfg(target_os = "linux")]
        cgroup,
    };
    Ok((child, guard))
}

/// Has the child write itself into the attempt's cgroup between `fork` and
/// `exec`, so nothing the program starts is ever outside it.
#[cfg(target_os = "linux")]
#[allow(unsafe_code)]
fn enter_before_exec(command: &mut tokio::process::Command, group: &cgroup::AttemptGroup) {
    // SAFETY: the hook runs in the forked child, where only
    // async-signal-safe calls are sound: it makes one `write(2)` to a file
    // descriptor opened before the fork (close-on-exec) and touches no
    // lock and no allocator.
    unsafe {
        command.pre_exec(group.entry());
    }
}

/// Kills every process of the attempt when dropped: when the program ends,
/// and when a timeout or a cancellation drops the attempt. The process
/// group (the leader's pid), and on Linux the attempt's cgroup and whatever
/// left the group (`reaper`).
pub(crate) struct GroupGuard {
    leader: Option<i32>,
    /// The attempt's idempotency key: what marks the processes it started.
    #[cfg_attr(not(target_os = "linux"), allow(dead_code))]
    key: String,
    /// The attempt's cgroup, where one could be made.
    #[cfg(target_os = "linux")]
    cgroup: Option<cgroup::AttemptGroup>,
}

impl Drop for GroupGuard {
    fn drop(&mut self) {
        if let Some(pgid) = self.leader.take() {
            #[cfg(target_os = "linux")]
            reaper::live().retain(|pid| *pid != pgid);
            let _ =
                nix::sys::signal::killpg(nix::unistd::Pid::from_raw(pgid), nix::sys::signal::Signal::SIGKILL);
            #[cfg(target_os = "linux")]
            reaper::sweep(pgid, &self.key, self.cgroup.as_ref());
        }
    }
}

#[cfg(target_os = "linux")]
mod cgroup;

#[cfg(target_os = "linux")]
mod reaper {
    //! Descendants that leave the process group (`setsid cmd &`, a double
    //! fork) outlive a `killpg`. cairn makes itself their subreaper
    //! (`PR_SET_CHILD_SUBREAPER`), so when their parent dies they become
    //! cairn's children instead of init's, and an attempt's end kills every
    //! such orphan whose environment carries the attempt's
    //! `CAIRN_IDEMPOTENCY_KEY`, with everything below it, then reaps them.
    //!
    //! Only processes found to be the attempt's are reaped, one pid at a
    //! time, and never an attempt's leader: tokio waits for those itself, so
    //! exit codes still reach the engine. Where the attempt has a cgroup
    //! (`cgroup`), everything in it is the attempt's too, so a process that
    //! cleared its environment before it detached is found as well.

    use std::collections::{HashMap, HashSet};
    use std::sync::{Mutex, MutexGuard, Once};

    use nix::sys::signal::{Signal, kill};
    use nix::sys::wait::{WaitPidFlag, waitpid};
    use nix::unistd::Pid;

    use crate::cgroup::AttemptGroup;

    /// How many times an attempt's end looks for its processes before it
    /// gives up on one that will not die (a process in uninterruptible sleep).
    const ROUNDS: usize = 2000;

    /// The leaders of attempts that run: tokio owns and reaps them.
    static LIVE: Mutex<Vec<i32>> = Mutex::new(Vec::new());

    /// Makes this process the subreaper of every process its commands start
    /// (process-wide, once). Failing to is not fatal: the group is still killed.
    pub(crate) fn adopt_orphans() {
        static ONCE: Once = Once::new();
        ONCE.call_once(|| {
            let _ = nix::sys::prctl::set_child_subreaper(true);
        });
    }

    /// The running leaders, locked: hold it while spawning, so a sweep never
    /// sees a leader before it is known.
    pub(crate) fn live() -> MutexGuard<'static, Vec<i32>> {
        LIVE.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// One process, as `/proc/PID/stat` says.
    struct Proc {
        ppid: i32,
        pgid: i32,
        zombie: bool,
    }

    /// `pid (comm) S ppid pgrp ...`: the fields after the last `)`.
    fn stat(pid: i32) -> Option<Proc> {
        let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        let (_, rest) = text.rsplit_once(") ")?;
        let mut fields = rest.split(' ');
        let state = fields.next()?;
        let ppid = fields.next()?.parse().ok()?;
        let pgid = fields.next()?.parse().ok()?;
        Some(Proc { ppid, pgid, zombie: state == "Z" || state == "X" })
    }

    fn processes() -> HashMap<i32, Proc> {
        let Ok(dir) = std::fs::read_dir("/proc") else { return HashMap::new() };
        dir.filter_map(|entry| entry.ok()?.file_name().to_str()?.parse::<i32>().ok())
            .filter_map(|pid| Some((pid, stat(pid)?)))
            .collect()
    }

    /// Whether a process's environment names attempt `key`.
    fn carries(pid: i32, key: &str) -> bool {
        let Ok(environ) = std::fs::read(format!("/proc/{pid}/environ")) else { return false };
        let wanted = format!("CAIRN_IDEMPOTENCY_KEY={key}");
        environ.split(|b| *b == 0).any(|var| var == wanted.as_bytes())
    }

    /// Kills every process of the attempt led by `leader` with `key`: its
    /// cgroup, its group, the orphans cairn adopted that carry the key or
    /// died in its cgroup, and everything below them; reaps those that
    /// became cairn's, and returns once none is left (or after [`ROUNDS`]
    /// looks).
    pub(crate) fn sweep(leader: i32, key: &str, cgroup: Option<&AttemptGroup>) {
        let me = i32::try_from(std::process::id()).unwrap_or(i32::MAX);
        if let Some(group) = cgroup {
            group.kill();
        }
        // Every process found to be the attempt's, in any look: one that
        // died on its own is reaped too once it is cairn's.
        let mut ours: HashSet<i32> = HashSet::new();
        for _ in 0..ROUNDS {
            let pending = {
                let live = live();
                let procs = processes();
                let members: HashSet<i32> =
                    cgroup.map(AttemptGroup::members).unwrap_or_default().into_iter().collect();
                let spare = |pid: i32| pid == me || (pid != leader && live.contains(&pid));
                // A process of the cgroup is known by it also while it dies
                // (out of `cgroup.procs`, not yet a zombie) and once a zombie.
                let adopted = |pid: i32, p: &Proc| {
                    p.ppid == me && (cgroup.is_some_and(|g| g.holds(pid)) || (!p.zombie && carries(pid, key)))
                };
                let mut victims: HashSet<i32> = procs
                    .iter()
                    .filter(|(pid, p)| {
                        !spare(**pid) && (p.pgid == leader || members.contains(pid) || adopted(**pid, p))
                    })
                    .map(|(pid, _)| *pid)
                    .collect();
                loop {
                    let before = victims.len();
                    let below: Vec<i32> = procs
                        .iter()
                        .filter(|(pid, p)| victims.contains(&p.ppid) && !spare(**pid))
                        .map(|(pid, _)| *pid)
                        .collect();
                    victims.extend(below);
                    if victims.len() == before {
                        break;
                    }
                }
                ours.extend(&victims);
                ours.remove(&leader);
                for (pid, p) in &procs {
                    if victims.contains(pid) && !p.zombie {
                        let _ = kill(Pid::from_raw(*pid), Signal::SIGKILL);
                    }
                    if p.ppid == me && p.zombie && ours.contains(pid) && !spare(*pid) {
                        let _ = waitpid(Pid::from_raw(*pid), Some(WaitPidFlag::WNOHANG));
                    }
                }
                ours.iter().any(|pid| procs.contains_key(pid)) || cgroup.is_some_and(AttemptGroup::populated)
            };
            if !pending {
                return;
            }
            std::thread::sleep(std::time::Duration::from_millis(1));
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

/// A program started inside the fence: its pipes (stdin piped when the
/// spec has input), and the guard that kills every process it started
/// when dropped.
pub(crate) struct Started {
    pub(crate) child: tokio::process::Child,
    pub(crate) guard: GroupGuard,
}

impl LocalCommands {
    /// Checks `spec` against the fence and starts it, its stdout and
    /// stderr piped.
    pub(crate) fn start(&self, spec: &CommandSpec) -> Result<Started, PortError> {
        let cwd = self.check(spec)?;
        // Found on cairn's own PATH, before the step's environment applies.
        let path = std::env::var_os("PATH");
        let Some(program) = resolve(&spec.program, path.as_deref()) else {
            return Err(PortError::new(
                ErrorClass::Fatal,
                format!("`{}` could not start: it is not on PATH", spec.program),
            )
            .with_hint("check that the program is installed and on PATH"));
        };
        let mut command = tokio::process::Command::new(&program);
        command.arg0(&spec.program).args(&spec.args).current_dir(&cwd).env_clear();
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
        let (child, guard) = spawn(&mut command, &spec.idempotency_key).map_err(|e| {
            PortError::new(ErrorClass::Fatal, format!("`{}` could not start: {e}", spec.program))
                .with_hint("check that the program is installed and on PATH")
        })?;
        Ok(Started { child, guard })
    }
}

#[async_trait]
impl CommandRunner for LocalCommands {
    async fn run(&self, spec: CommandSpec) -> Result<CommandOutput, PortError> {
        let Started { mut child, guard } = self.start(&spec)?;
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
        // The leader exited; the guard stops anything it left running.
        drop(guard);
        Ok(CommandOutput { exit_code: status.code().unwrap_or(-1), stdout, stderr })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn programs_are_found_only_in_absolute_folders_of_cairns_path() {
        let dir = std::env::temp_dir().join(format!("cairn-resolve-{}", std::process::id()));
        std::fs::create_dir_all(dir.join("bin")).expect("dir");
        let fake = dir.join("bin/tool");
        std::fs::write(&fake, "#!/bin/sh\n").expect("fake");
        std::fs::set_permissions(&fake, std::fs::Permissions::from_mode(0o755)).expect("mode");
        let absolute = std::env::join_paths([dir.join("bin")]).expect("path");
        assert_eq!(resolve("tool", Some(&absolute)), Some(fake));
        // The same folder named relatively, as `.` or an empty entry would be, is skipped.
        let cwd = std::env::current_dir().expect("cwd");
        let up: PathBuf = cwd.components().skip(1).map(|_| "..").collect();
        let relative = up.join(dir.join("bin").strip_prefix("/").expect("absolute"));
        assert!(relative.join("tool").exists(), "the relative folder holds the tool");
        let path = std::env::join_paths([PathBuf::from("."), PathBuf::new(), relative]).expect("path");
        assert_eq!(resolve("tool", Some(&path)), None);
        assert_eq!(resolve("/bin/sh", None), Some(PathBuf::from("/bin/sh")));
        assert_eq!(resolve("tool", None), None);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
