//! The command line's words: verbs, flags and exit codes, as clap parses
//! them. Dispatch is in the parent module.

use std::path::PathBuf;

use cairn_domain::steer::{GateCall, Verdict};
use clap::{Parser, Subcommand, ValueEnum};

/// cairn runs durable LLM-agent workflows described in YAML or JSON.
#[derive(Debug, Parser)]
#[command(name = "cairn", version, about, max_term_width = 100)]
pub struct CommandLine {
    /// Where the embedded store lives.
    #[arg(long, global = true, env = "CAIRN_DATA_DIR", default_value = "./.cairn")]
    pub data_dir: PathBuf,
    /// The config file (providers, command allowlist, store settings).
    #[arg(long, global = true, env = "CAIRN_CONFIG")]
    pub config: Option<PathBuf>,
    /// Use this provider for every agent (`mock`: the built-in deterministic
    /// one; `record:FILE` records the configured providers' answers;
    /// `replay:FILE` answers from such a file, without a network).
    #[arg(long, global = true)]
    pub llm: Option<String>,
    /// What to do.
    #[command(subcommand)]
    pub verb: Verb,
}

/// What `approve` and `reject` take.
#[derive(Debug, clap::Args)]
pub struct Decide {
    /// The run.
    pub run: String,
    /// The waiting step (its path); needed when several wait.
    #[arg(long)]
    pub gate: Option<String>,
    /// The role you decide as; required when the gate lists approvers.
    #[arg(long = "as", value_name = "ROLE")]
    pub role: Option<String>,
    /// Why; a rejection's comment is the rework's `{{ feedback }}`.
    #[arg(long)]
    pub comment: Option<String>,
    /// Who decides, and what happens next.
    #[command(flatten)]
    pub then: Then,
}

/// What every decision verb (`approve`, `reject`, `answer`) takes besides the decision.
#[derive(Debug, clap::Args)]
pub struct Then {
    /// Who decides, for the audit trail (default: the OS user).
    #[arg(long)]
    pub by: Option<String>,
    /// Record it without driving the run on.
    #[arg(long)]
    pub detach: bool,
    /// Never ask at the terminal: a later gate persists the wait and exits 3.
    #[arg(long)]
    pub non_interactive: bool,
    /// Output format.
    #[arg(long, value_enum, default_value_t = RunFormat::Text)]
    pub format: RunFormat,
}

impl Then {
    /// Who decides: `--by`, else the OS user.
    pub fn by(&self) -> String {
        self.by.clone().unwrap_or_else(crate::host::whoami)
    }
}

impl Decide {
    /// The gate call of `approve` or `reject`.
    pub fn call(&self, verdict: Verdict) -> GateCall {
        GateCall { gate: self.gate.clone(), verdict, role: self.role.clone(), comment: self.comment.clone() }
    }
}

/// The verbs.
#[derive(Debug, Subcommand)]
pub enum Verb {
    /// Check definitions; prints `FILE:LINE:COL: message` per problem.
    Validate {
        /// Definition files (YAML or JSON).
        #[arg(required = true)]
        files: Vec<PathBuf>,
        /// Output format.
        #[arg(long, value_enum, default_value_t = ProblemFormat::Text)]
        format: ProblemFormat,
    },
    /// Start a run and drive it until it completes, fails, or waits for a person.
    Run {
        /// A definition file.
        file: PathBuf,
        /// A run input, `KEY=VALUE` (VALUE is read as JSON when it is JSON).
        #[arg(long = "input", value_name = "KEY=VALUE")]
        inputs: Vec<String>,
        /// A YAML or JSON file of run inputs (`--input` overrides it).
        #[arg(long = "inputs", value_name = "FILE")]
        inputs_file: Option<PathBuf>,
        /// The run's id; an id that exists already is refused.
        #[arg(long)]
        run_id: Option<String>,
        /// Never ask at the terminal: a gate persists the wait and exits 3.
        #[arg(long)]
        non_interactive: bool,
        /// Output format.
        #[arg(long, value_enum, default_value_t = RunFormat::Text)]
        format: RunFormat,
    },
    /// List runs, newest first.
    Runs {
        /// Only runs with this status.
        #[arg(long)]
        status: Option<String>,
        /// Only runs of this workflow.
        #[arg(long)]
        workflow: Option<String>,
        /// At most this many runs (the next page's `--cursor` goes to stderr).
        #[arg(long, value_name = "N")]
        limit: Option<usize>,
        /// Start after this cursor, as a page printed it.
        #[arg(long)]
        cursor: Option<String>,
        /// Output format.
        #[arg(long, value_enum, default_value_t = ListFormat::Table)]
        format: ListFormat,
    },
    /// Show one run, with every step.
    Status {
        /// The run.
        run: String,
        /// Output format.
        #[arg(long, value_enum, default_value_t = RunFormat::Text)]
        format: RunFormat,
    },
    /// Pause a run: its driver finishes the running steps and stops (exit 5).
    Pause {
        /// The run.
        run: String,
    },
    /// Drive a paused, blocked, waiting or interrupted run on, like `run`.
    Resume {
        /// The run.
        run: String,
        /// Never ask at the terminal: a gate persists the wait and exits 3.
        #[arg(long)]
        non_interactive: bool,
        /// Output format.
        #[arg(long, value_enum, default_value_t = RunFormat::Text)]
        format: RunFormat,
    },
    /// Approve at a gate; when the gate is satisfied the run goes on.
    Approve(Decide),
    /// Reject at a gate: the step is reworked or fails, as the gate says.
    Reject(Decide),
    /// Answer a model's questions; the step runs again with them.
    Answer {
        /// The run.
        run: String,
        /// The waiting step (its path); needed when several wait.
        #[arg(long)]
        gate: Option<String>,
        /// The answers.
        #[arg(long)]
        text: String,
        /// Who answers, and what happens next.
        #[command(flatten)]
        then: Then,
    },
    /// Cancel a run: running steps are stopped, the run is `cancelled` (exit 4).
    Cancel {
        /// The run.
        run: String,
    },
    /// List a run's checkpoints: one after every finished step.
    Checkpoints {
        /// The run.
        run: String,
        /// Output format.
        #[arg(long, value_enum, default_value_t = ListFormat::Table)]
        format: ListFormat,
    },
    /// Make a new run from checkpoint N of RUN (not yet driven: `resume` it).
    Fork {
        /// The run.
        run: String,
        /// The checkpoint's sequence number (see `checkpoints`).
        #[arg(long)]
        checkpoint: u64,
        /// Output format: the new run id, or its JSON.
        #[arg(long, value_enum, default_value_t = RunFormat::Text)]
        format: RunFormat,
    },
    /// Print a run's event log: the audit trail.
    Events {
        /// The run.
        run: String,
        /// Output format.
        #[arg(long, value_enum, default_value_t = EventsFormat::Text)]
        format: EventsFormat,
    },
    /// Delete ended runs last updated longer ago than the given duration.
    Prune {
        /// A duration such as `30d`.
        #[arg(long, value_name = "DURATION")]
        older_than: String,
        /// List what would be deleted, and delete nothing.
        #[arg(long)]
        dry_run: bool,
    },
    /// Print the execution plan: levels of steps that can run together.
    Plan {
        /// A definition file.
        file: PathBuf,
        /// Output format.
        #[arg(long, value_enum, default_value_t = PlanFormat::Text)]
        format: PlanFormat,
    },
}

/// How `validate` prints.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ProblemFormat {
    /// `FILE:LINE:COL: message` lines.
    Text,
    /// One JSON array of `{file, line, column, path, rule, message}`.
    Json,
}

/// How `run` prints its result (progress always goes to stderr).
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum RunFormat {
    /// A summary table and the final outputs.
    Text,
    /// The run JSON.
    Json,
}

/// How listing verbs print.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ListFormat {
    /// Aligned columns.
    Table,
    /// A JSON array.
    Json,
}

/// How `events` prints.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum EventsFormat {
    /// One line per event.
    Text,
    /// One JSON object per line.
    Jsonl,
}

/// How `plan` prints.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum PlanFormat {
    /// Indented levels.
    Text,
    /// The plan object (`levels`, `steps`, ...).
    Json,
    /// A Mermaid flowchart.
    Mermaid,
}
