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
mod define;
mod drive;
mod gates;
mod inspect;
mod prompt;
mod steer;
mod summary;
mod words;

use std::ffi::OsString;
use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;

use cairn_domain::id::RunId;
use cairn_domain::state::RunStatus;
use cairn_domain::steer::Verdict;
use cairn_ports::{EventSink, LlmProvider, NoSink, StepHandler};
use clap::Parser;

pub use args::{
    CommandLine, Decide, EventsFormat, ListFormat, PlanFormat, ProblemFormat, RunFormat, Then, Verb,
};

use crate::app::{App, Run};
use crate::config::Loaded;
use crate::error::Error;
use crate::host::{Holder, Plugins, Setup, StoreFactory};
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
        Self { plugins: Plugins { stores: Arc::new(stores), handlers: Vec::new(), providers: Vec::new() } }
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
        let line = match CommandLine::try_parse_from(args) {
            Ok(line) => line,
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
        };
        let code = verbs.dispatch(line.verb).unwrap_or_else(|e| report(&e));
        ExitCode::from(code)
    }
}

/// What every verb shares: the plugins and the global flags.
pub(crate) struct Verbs<'a> {
    plugins: &'a Plugins,
    data_dir: &'a Path,
    config: Option<&'a Path>,
    llm: Option<&'a str>,
}

/// The application of one verb, and its runtime.
pub(crate) struct Opened {
    pub app: App,
    pub runtime: tokio::runtime::Runtime,
}

impl Verbs<'_> {
    fn dispatch(&self, verb: Verb) -> Result<u8, Error> {
        match verb {
            Verb::Validate { files, format } => define::validate(&files, format),
            Verb::Plan { file, format } => define::plan(&file, format),
            Verb::Run { file, inputs, inputs_file, run_id, non_interactive, format } => {
                let request = drive::Start { file, inputs, inputs_file, run_id };
                drive::run(self, request, !non_interactive, format)
            }
            Verb::Resume { run, non_interactive, format } => {
                drive::resume(self, &run_id(&run)?, !non_interactive, format)
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
            Verb::Runs { status, workflow, limit, cursor, format } => {
                let page = inspect::Page { status, workflow, limit, cursor };
                inspect::runs(self, page, format)
            }
            Verb::Status { run, format } => inspect::status(self, &run_id(&run)?, format),
            Verb::Events { run, format } => inspect::events(self, &run_id(&run)?, format),
            Verb::Checkpoints { run, format } => inspect::checkpoints(self, &run_id(&run)?, format),
            Verb::Pause { run } => steer::stop(self, &run_id(&run)?, false),
            Verb::Cancel { run } => steer::stop(self, &run_id(&run)?, true),
            Verb::Fork { run, checkpoint, format } => steer::fork(self, &run_id(&run)?, checkpoint, format),
            Verb::Prune { older_than, dry_run } => steer::prune(self, &older_than, dry_run),
        }
    }

    /// The config this process reads.
    fn loaded(&self) -> Result<Loaded, Error> {
        Loaded::load(self.config).map_err(Error::Config)
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
        let loaded = self.loaded()?;
        let runtime = crate::host::runtime()?;
        let holder = Holder::me(verb, drives.map(RunId::as_str));
        let setup = Setup { data_dir: self.data_dir, loaded: &loaded, llm: self.llm, sink, holder };
        // The store's files are opened inside the runtime: sled's threads
        // and the write-ahead log start with it.
        let app = {
            let _entered = runtime.enter();
            self.plugins.app(&setup, wait)?
        };
        Ok(Opened { app, runtime })
    }

    /// The application for a verb that only reads or records.
    fn open(&self, verb: &str) -> Result<Opened, Error> {
        self.open_with(verb, None, Arc::new(NoSink), crate::host::WAIT_FOR_STORE)
    }

    /// The application for a verb that drives `run`: progress on stderr.
    fn open_driving(&self, verb: &str, run: &RunId) -> Result<Opened, Error> {
        self.open_with(verb, Some(run), Arc::new(Progress::default()), crate::host::WAIT_FOR_STORE)
    }

    /// The process holding the data directory's store, if another does.
    fn holder(&self) -> Option<Holder> {
        self.plugins.stores.holder(self.data_dir)
    }
}

/// A run id from the command line.
fn run_id(text: &str) -> Result<RunId, Error> {
    RunId::new(text).map_err(|e| Error::Config(e.to_string()))
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
/// become words.
pub(crate) fn report(e: &Error) -> u8 {
    let said = words::said(e);
    if said.bare {
        eprintln!("{}", said.message);
    } else {
        eprintln!("error: {}", said.message);
    }
    if let Some(hint) = &said.hint {
        eprintln!("hint: {hint}");
    }
    said.code
}
