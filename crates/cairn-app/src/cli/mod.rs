//! The command line, as `spec/cli.md` fixes it: a front over [`App`]. Its
//! clap types are in [`args`]; each group of verbs has a module of its own
//! (defining, driving, gates, inspecting, steering); an [`Error`] is turned
//! into words, a hint and an exit code in one place ([`report`]).
//!
//! A binary runs it through [`Cli`], with the store, handlers and
//! providers it picks: every verb is kept.

/// Prints to stdout like `print!`. A reader that went away (a closed pipe:
/// `cairn runs | head -1`) ends the output quietly instead of a panic.
macro_rules! out {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = write!(std::io::stdout().lock(), $($arg)*);
    }};
}

/// [`out!`] with a newline, like `println!`.
macro_rules! outln {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stdout().lock(), $($arg)*);
    }};
}

mod args;
mod catalog;
mod define;
mod doctor;
mod drive;
mod gates;
mod init;
mod inspect;
mod meta;
mod prompt;
pub mod serve;
mod steer;
mod summary;
pub(crate) mod term;
mod token;
mod transfer;
mod words;

use std::ffi::OsString;
use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;

use cairn_domain::id::RunId;
use cairn_domain::state::RunStatus;
use cairn_domain::steer::Verdict;
use cairn_ports::{EventSink, LlmProvider, NoSink, StepHandler};
use clap::{CommandFactory, FromArgMatches};

pub use args::{
    CommandLine, Decide, DocFormat, EventsFormat, ListFormat, PlanFormat, ProblemFormat, RunFormat, Then,
    Verb,
};

use crate::app::{App, Run};
use crate::config::Loaded;
use crate::error::Error;
use crate::host::{Holder, Plugins, Setup, StoreFactory};
use crate::operations::{Operations, Target};
use crate::progress::Progress;
use crate::view;

/// Exit codes of the contract.
pub mod exit {
    /// The run completed, or the verb succeeded.
    pub const OK: u8 = 0;
    /// The run failed.
    pub const FAILED: u8 = 1;
    /// Bad usage, an invalid definition, an unknown run.
    pub const USAGE: u8 = 2;
    /// The run waits for a person.
    pub const WAITING: u8 = 3;
    /// The run was cancelled.
    pub const CANCELLED: u8 = 4;
    /// The run is paused.
    pub const PAUSED: u8 = 5;
}

/// The whole `cairn` command line over the store, handlers and providers a
/// binary picks:
///
/// ```no_run
/// fn main() -> std::process::ExitCode {
///     cairn_app::Cli::new(cairn_app::SledStores).run()
/// }
/// ```
pub struct Cli {
    plugins: Plugins,
}

impl Cli {
    /// The command line over the stores `stores` opens.
    pub fn new(stores: impl StoreFactory + 'static) -> Self {
        let plugins = Plugins {
            stores: Arc::new(stores),
            handlers: Vec::new(),
            providers: Vec::new(),
            front: None,
            client: None,
        };
        Self { plugins }
    }

    /// Plugs in the client every verb goes through while a server holds
    /// the data directory (or `--server` names one).
    pub fn client(mut self, client: impl crate::operations::Connect + 'static) -> Self {
        self.plugins.client = Some(Arc::new(client));
        self
    }

    /// Plugs in the front `cairn serve` runs (the HTTP server).
    pub fn front(mut self, front: impl crate::service::Front + 'static) -> Self {
        self.plugins.front = Some(Arc::new(front));
        self
    }

    /// Registers the handler `uses: NAME` steps call.
    pub fn handler(mut self, name: impl Into<String>, handler: impl StepHandler + 'static) -> Self {
        self.plugins.handlers.push((name.into(), Arc::new(handler)));
        self
    }

    /// Registers a provider agents name with `provider: NAME`, besides the
    /// config's.
    pub fn provider(mut self, name: impl Into<String>, provider: impl LlmProvider + 'static) -> Self {
        self.plugins.providers.push((name.into(), Arc::new(provider)));
        self
    }

    /// Parses this process's arguments, runs the verb, and returns its exit code.
    pub fn run(self) -> ExitCode {
        self.run_with(std::env::args_os())
    }

    /// Parses `args` (the first is the program name), runs the verb, and
    /// returns its exit code.
    pub fn run_with(self, args: impl IntoIterator<Item = impl Into<OsString> + Clone>) -> ExitCode {
        let args: Vec<OsString> = args.into_iter().map(Into::into).collect();
        let mut cmd = command();
        let parsed = cmd
            .try_get_matches_from_mut(&args)
            .and_then(|m| Ok((CommandLine::from_arg_matches(&m).map_err(|e| e.format(&mut cmd))?, m)));
        let (line, matches) = match parsed {
            Ok(parsed) => parsed,
            Err(e) => {
                let _ = e.print();
                return ExitCode::from(if e.use_stderr() { exit::USAGE } else { exit::OK });
            }
        };
        let verbs = Verbs {
            plugins: &self.plugins,
            data_dir: &line.data_dir,
            config: line.config.as_deref(),
            llm: line.llm.as_deref(),
            quiet: line.quiet,
            server: line.server.as_deref(),
            token: line.token.as_deref(),
            store: line.store.as_deref(),
        };
        // The verb's name, as errors name what was asked (`cannot approve ...`).
        let asked = matches.subcommand_name().unwrap_or_default().to_owned();
        let code = verbs.dispatch(line.verb).unwrap_or_else(|e| report(&e, &asked, &verbs.secrets()));
        ExitCode::from(code)
    }
}

/// The global flags each verb does not read, hidden from its `--help`
/// (still accepted, so a script may pass them to every verb).
const NOT_READ: &[(&str, &[&str])] = &[
    ("validate", &["data_dir", "store", "config", "llm", "server", "token"]),
    ("plan", &["data_dir", "store", "config", "llm", "server", "token"]),
    ("init", &["data_dir", "store", "config", "llm", "server", "token"]),
    ("completions", &["data_dir", "store", "config", "llm", "quiet", "server", "token"]),
    ("man", &["data_dir", "store", "config", "llm", "quiet", "server", "token"]),
    ("version", &["data_dir", "store", "config", "llm", "quiet", "server", "token"]),
    ("runs", &["llm"]),
    ("events", &["llm"]),
    ("checkpoints", &["llm"]),
    ("fork", &["llm"]),
    ("prune", &["llm"]),
    ("export", &["llm"]),
    ("import", &["llm"]),
    ("pause", &["llm"]),
    ("cancel", &["llm"]),
    ("doctor", &["store", "config", "llm", "server", "token"]),
    ("migrate", &["data_dir", "llm", "server", "token"]),
    ("token", &["llm"]),
    ("workflows", &["llm"]),
    ("stats", &["llm"]),
    ("search", &["llm"]),
    ("serve", &["server", "token"]),
];

/// The command line as clap describes it (for parsing, help, completions
/// and the man page): the derived [`CommandLine`], each verb's help showing
/// only the global flags it reads.
pub fn command() -> clap::Command {
    let cmd = CommandLine::command();
    let globals: Vec<clap::Arg> = cmd.get_arguments().filter(|a| a.is_global_set()).cloned().collect();
    NOT_READ.iter().fold(cmd, |cmd, (verb, flags)| {
        cmd.mut_subcommand(verb, |sub| {
            // A verb that has a global flag of its own is not given the
            // parent's: this copy is the parent's, hidden.
            let hidden = globals.iter().filter(|a| flags.contains(&a.get_id().as_str()));
            hidden.fold(sub, |sub, a| sub.arg(a.clone().hide(true)))
        })
    })
}

/// What every verb shares: the plugins and the global flags.
pub(crate) struct Verbs<'a> {
    plugins: &'a Plugins,
    data_dir: &'a Path,
    config: Option<&'a Path>,
    llm: Option<&'a str>,
    /// `-q`: no progress on stderr.
    quiet: bool,
    /// `--server`: go through this server.
    server: Option<&'a str>,
    /// `--token`: the token to present to it.
    token: Option<&'a str>,
    /// `--store`: the database runs are kept in.
    store: Option<&'a str>,
}

/// The operations of one verb (this process's own, or a server's), and
/// its runtime.
pub(crate) struct Opened {
    pub app: Arc<dyn Operations>,
    pub runtime: tokio::runtime::Runtime,
}

impl Verbs<'_> {
    fn dispatch(&self, verb: Verb) -> Result<u8, Error> {
        match verb {
            Verb::Validate { files, format } => define::validate(&files, format),
            Verb::Plan { file, format } => define::plan(&file, format),
            Verb::Run {
                file,
                inputs,
                inputs_file,
                run_id,
                labels,
                priority,
                non_interactive,
                detach,
                format,
            } => {
                let request = drive::Start { file, inputs, inputs_file, run_id, labels, priority };
                if detach {
                    drive::detach(self, request, format)
                } else {
                    drive::run(self, request, !non_interactive, format)
                }
            }
            Verb::Resume { run, budget_usd, by, non_interactive, format } => {
                let budget = budget_usd.map(|usd| (usd, by.unwrap_or_else(crate::host::whoami)));
                drive::resume(self, &run_id(&run)?, budget, !non_interactive, format)
            }
            Verb::Approve(d) => gates::decide(self, &run_id(&d.run)?, d.call(Verdict::Approve), &d.then),
            Verb::Reject(d) => gates::decide(self, &run_id(&d.run)?, d.call(Verdict::Reject), &d.then),
            Verb::Answer { run, gate, text, then } => {
                let call = cairn_domain::steer::GateCall {
                    gate,
                    verdict: Verdict::Answer(text),
                    role: None,
                    comment: None,
                };
                gates::decide(self, &run_id(&run)?, call, &then)
            }
            Verb::Runs {
                status,
                workflow,
                labels,
                triggered_by,
                priority,
                parent,
                limit,
                cursor,
                format,
            } => {
                let page =
                    inspect::Page { status, workflow, labels, triggered_by, priority, parent, limit, cursor };
                inspect::runs(self, page, format)
            }
            Verb::Status { run, format } => inspect::status(self, &run_id(&run)?, format),
            Verb::Events { run, follow, format } => inspect::events(self, &run_id(&run)?, follow, format),
            Verb::Checkpoints { run, format } => inspect::checkpoints(self, &run_id(&run)?, format),
            Verb::Pause { run, format } => steer::stop(self, &run_id(&run)?, false, format),
            Verb::Cancel { run, format } => steer::stop(self, &run_id(&run)?, true, format),
            Verb::Fork { run, checkpoint, format } => steer::fork(self, &run_id(&run)?, checkpoint, format),
            Verb::Prune { older_than, dry_run, format } => steer::prune(self, &older_than, dry_run, format),
            Verb::Export { runs, all } => transfer::export(self, &runs, all),
            Verb::Import { file, format } => transfer::import(self, &file, format),
            Verb::Init { dir, format } => init::init(&dir, format),
            Verb::Completions { shell } => meta::completions(shell),
            Verb::Man { verb } => meta::man(verb.as_deref()),
            Verb::Version { format } => meta::version(format),
            Verb::Migrate { format } => doctor::migrate(self, format),
            Verb::Doctor { format } => doctor::doctor(self, format),
            Verb::Serve { listen, auth, log_format, max_runs } => {
                serve::serve(self, &listen, auth, log_format, max_runs.map(|n| n as usize))
            }
            Verb::Token(verb) => token::token(self, verb),
            Verb::Workflows { verb, format } => catalog::workflows(self, verb, format),
            Verb::Stats { workflow, since, format } => {
                catalog::stats(self, workflow.as_deref(), since.as_deref(), format)
            }
            Verb::Search { words, kind, workflow, limit, format } => {
                catalog::search(self, &words.join(" "), kind, workflow.as_deref(), limit.into(), format)
            }
        }
    }

    /// Tells the person at the terminal something that is not the result
    /// (a note, what to do next) on stderr, unless `--quiet`.
    fn notice(&self, text: impl std::fmt::Display) {
        if !self.quiet {
            eprintln!("{text}");
        }
    }

    /// The secrets of the config this process reads (none when it does
    /// not load), hidden from an error before it is printed.
    fn secrets(&self) -> cairn_ports::Secrets {
        self.loaded().map(|l| crate::host::secrets(&l)).unwrap_or_default()
    }

    /// The config this process reads.
    fn loaded(&self) -> Result<Loaded, Error> {
        let mut loaded = Loaded::load(self.config).map_err(Error::Config)?;
        if let Some(url) = self.store {
            if !crate::config::is_database_url(url) {
                return Err(Error::Config(
                    "--store: a store URL starts with `postgres://` (a PostgreSQL database)".into(),
                ));
            }
            loaded.config.store.url = Some(url.to_owned());
        }
        Ok(loaded)
    }

    /// The application for `verb`, sending live events to `sink`, waiting
    /// up to `wait` for the store; `drives` names the run this process
    /// drives, so `pause` and `cancel` from elsewhere signal it.
    fn open_with(
        &self,
        verb: &str,
        drives: Option<&RunId>,
        sink: Arc<dyn EventSink>,
        wait: std::time::Duration,
    ) -> Result<Opened, Error> {
        self.open_as(Holder::me(verb, drives.map(RunId::as_str)), sink, wait)
    }

    /// The operations for the process `holder` describes (its verb and
    /// run), sending live events to `sink`: a server's, when one holds
    /// the data directory or `--server` names one, else this process's.
    fn open_as(
        &self,
        holder: Holder,
        sink: Arc<dyn EventSink>,
        wait: std::time::Duration,
    ) -> Result<Opened, Error> {
        if let Some(target) = self.remote() {
            let Some(client) = self.plugins.client.clone() else {
                return Err(Error::Config(format!(
                    "a server ({}) holds the data directory, and this binary cannot speak to one",
                    target.url
                )));
            };
            let runtime = crate::host::runtime()?;
            let app = {
                let _entered = runtime.enter();
                client.connect(target, sink)?
            };
            return Ok(Opened { app, runtime });
        }
        let (app, runtime) = self.open_app(holder, sink, wait)?;
        Ok(Opened { app: Arc::new(app), runtime })
    }

    /// The server verbs go through: `--server` (with `--token`), or the
    /// server holding the data directory (with its local key, acting as
    /// this user).
    fn remote(&self) -> Option<Target> {
        if let Some(url) = self.server {
            return Some(Target {
                url: url.trim_end_matches('/').to_owned(),
                token: self.token.map(str::to_owned),
                actor: None,
            });
        }
        let url = self.holder()?.address?;
        // A token given is presented as it is: the token's name is the actor.
        if let Some(token) = self.token {
            return Some(Target { url, token: Some(token.to_owned()), actor: None });
        }
        let key = std::fs::read_to_string(self.data_dir.join(serve::LOCAL_KEY_FILE)).ok();
        Some(Target { url, token: key.map(|k| k.trim().to_owned()), actor: Some(crate::host::whoami()) })
    }

    /// This process's own application over the data directory's store, as
    /// `holder`, and its runtime.
    pub(crate) fn open_app(
        &self,
        holder: Holder,
        sink: Arc<dyn EventSink>,
        wait: std::time::Duration,
    ) -> Result<(App, tokio::runtime::Runtime), Error> {
        let loaded = self.loaded()?;
        let runtime = crate::host::runtime()?;
        let reads_only = READING_VERBS.contains(&holder.verb.as_str());
        let setup =
            Setup { data_dir: self.data_dir, loaded: &loaded, llm: self.llm, sink, holder, reads_only };
        // The store's files are opened inside the runtime: sled's threads
        // and the write-ahead log start with it.
        let app = {
            let _entered = runtime.enter();
            self.plugins.app(&setup, wait)?
        };
        Ok((app, runtime))
    }

    /// The application for a verb that only reads or records.
    fn open(&self, verb: &str) -> Result<Opened, Error> {
        self.open_with(verb, None, Arc::new(NoSink), crate::host::WAIT_FOR_STORE)
    }

    /// The application for a verb that drives `run`: progress on stderr
    /// (none with `-q`), coloured and live on a terminal.
    fn open_driving(&self, verb: &str, run: &RunId) -> Result<Opened, Error> {
        let sink: Arc<dyn EventSink> =
            if self.quiet { Arc::new(NoSink) } else { Arc::new(Progress::new(term::Look::stderr(false))) };
        self.open_with(verb, Some(run), sink, crate::host::WAIT_FOR_STORE)
    }

    /// Starts `cairn resume RUN` in the background, in a process group of
    /// its own (a Ctrl-C at this terminal does not reach it), with this
    /// process's global flags; what it says goes to `logs/RUN.log` in the
    /// data directory.
    fn resume_in_background(&self, run: &RunId) -> Result<(), Error> {
        use std::os::unix::process::CommandExt as _;
        let failed =
            |e: std::io::Error| Error::Config(format!("cannot start a process to drive run `{run}`: {e}"));
        let exe = std::env::current_exe().map_err(failed)?;
        let logs = self.data_dir.join("logs");
        std::fs::create_dir_all(&logs).map_err(failed)?;
        let log = std::fs::File::create(logs.join(format!("{run}.log"))).map_err(failed)?;
        let mut command = std::process::Command::new(exe);
        command.arg("--data-dir").arg(self.data_dir);
        if let Some(config) = self.config {
            command.arg("--config").arg(config);
        }
        if let Some(llm) = self.llm {
            command.arg("--llm").arg(llm);
        }
        // In the environment, not the arguments: a URL may hold a password.
        if let Some(store) = self.store {
            command.env("CAIRN_STORE", store);
        }
        command
            .args(["resume", run.as_str(), "--non-interactive"])
            .stdin(std::process::Stdio::null())
            .stdout(log.try_clone().map_err(failed)?)
            .stderr(log)
            .process_group(0)
            .spawn()
            .map_err(failed)?;
        Ok(())
    }

    /// The process holding the data directory's store, if another does.
    fn holder(&self) -> Option<Holder> {
        self.plugins.stores.holder(self.data_dir)
    }
}

/// The verbs that only read runs: they create no data directory (where
/// there is none they see no runs).
const READING_VERBS: &[&str] = &["runs", "status", "events", "checkpoints"];

/// A run id from the command line.
fn run_id(text: &str) -> Result<RunId, Error> {
    RunId::new(text).map_err(|e| Error::Config(e.to_string()))
}

/// The `--label K=V` flags as labels (a later key wins).
fn labels(flags: &[String]) -> Result<cairn_domain::label::Labels, Error> {
    let pair =
        |flag: &String| cairn_domain::label::pair(flag).map_err(|e| Error::Config(format!("--label: {e}")));
    flags.iter().map(pair).collect()
}

/// Prints a run as `--format` asks; returns the exit code of its status.
pub(crate) fn print_run(run: &Run, format: RunFormat) -> u8 {
    let now = cairn_ports::Clock::now(&cairn_engine::SystemClock);
    match format {
        RunFormat::Text => out!("{}", summary::summary(run, now)),
        RunFormat::Json => outln!("{}", view::run::run_json(run, now)),
    }
    exit_code(run.state.status)
}

/// The exit code of a run's status.
pub(crate) fn exit_code(status: RunStatus) -> u8 {
    match status {
        RunStatus::Completed => exit::OK,
        RunStatus::Failed => exit::FAILED,
        RunStatus::Cancelled => exit::CANCELLED,
        RunStatus::Paused | RunStatus::Pending | RunStatus::Running => exit::PAUSED,
        _ => exit::WAITING,
    }
}

/// Prints an error as people read it (`error: ...`, then `hint: ...`
/// when there is one) and returns its exit code: the one place errors
/// become words. No secret, and no credential of a URL, is printed.
pub(crate) fn report(e: &Error, verb: &str, secrets: &cairn_ports::Secrets) -> u8 {
    let said = words::said(e, verb);
    let message = secrets.redact(&said.message);
    if said.bare {
        eprintln!("{message}");
    } else {
        eprintln!("error: {message}");
    }
    if let Some(hint) = &said.hint {
        eprintln!("hint: {}", secrets.redact(hint));
    }
    said.code
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_command_line_holds_together_and_each_verb_shows_the_globals_it_reads() {
        let mut cmd = command();
        cmd.build();
        cmd.clone().debug_assert();
        let hidden = |verb: &str| -> Vec<String> {
            let sub = cmd.find_subcommand(verb).unwrap_or_else(|| panic!("{verb} is a verb"));
            sub.get_arguments().filter(|a| a.is_hide_set()).map(|a| a.get_id().to_string()).collect()
        };
        assert_eq!(hidden("validate"), ["data_dir", "config", "llm", "server", "store", "token"]);
        assert_eq!(hidden("runs"), ["llm"]);
        assert!(hidden("status").is_empty(), "status says what going on needs, with --llm");
        assert!(hidden("run").is_empty(), "run reads every global flag");
        // Hidden flags still parse, wherever they stand.
        let line = CommandLine::from_arg_matches(
            &cmd.try_get_matches_from_mut(["cairn", "validate", "wf.yaml", "--data-dir", "d", "-q"])
                .expect("parses"),
        )
        .expect("a command line");
        assert_eq!((line.data_dir.as_path(), line.quiet), (Path::new("d"), true));
    }
}
