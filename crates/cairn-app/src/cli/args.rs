//! The command line's words: verbs, flags and exit codes, as clap parses
//! them. Dispatch is in the parent module.

use std::path::PathBuf;

use cairn_domain::steer::{GateCall, Verdict};
use clap::{Parser, Subcommand, ValueEnum};

/// The heading of the flags every verb takes.
const GLOBAL: &str = "Global options";

/// What `cairn --help` says after the flags.
const AFTER_HELP: &str = "\
Examples:
  cairn init                                   write a starter workflow.yaml and cairn.toml
  cairn validate workflow.yaml                 check a definition
  cairn --llm mock run workflow.yaml           run it offline, with the built-in mock model
  cairn runs                                   list runs, newest first
  cairn status RUN                             one run, with every step and what it waits for
  cairn approve RUN --as ROLE                  decide at a gate; the run goes on

Environment:
  CAIRN_DATA_DIR       where runs are kept, as --data-dir (default ./.cairn)
  CAIRN_CONFIG         the config file, as --config (default: the nearest cairn.toml)
  CAIRN_LLM_BASE_URL   the default provider's OpenAI-compatible /v1 base URL
  CAIRN_LLM_API_KEY    the default provider's API key (never printed, never stored)
  CAIRN_LLM_MODEL      the default provider's model
  CAIRN_MOCK_LATENCY   how long each answer of --llm mock takes (`2s`), for demos and tests
  NO_COLOR             set (and not empty): no colour and no live line on a terminal
  Command steps get CAIRN_IDEMPOTENCY_KEY, the attempt's key (`run/step/attempt`).

Exit codes:
  0 completed (or the verb succeeded)   1 failed   2 bad usage, invalid definition, unknown run
  3 waits for a person   4 cancelled   5 paused

Docs: docs/cli.md (every verb, flag and JSON shape), docs/workflow-format.md (the format),
docs/running.md (runs, config, failures).";

/// cairn runs durable LLM-agent workflows described in YAML or JSON.
#[derive(Debug, Parser)]
#[command(
    name = "cairn",
    version,
    about = "Durable LLM-agent workflows: check, plan, run, steer and inspect them",
    long_about = "Durable LLM-agent workflows: check, plan, run, steer and inspect them.\n\n\
                  A workflow is a YAML or JSON file of steps (model calls, commands, approvals, \
                  fan-outs, loops). Every run is kept in the data directory and survives a crash: \
                  any later cairn process can list, inspect, pause, resume, decide or fork it.",
    after_help = AFTER_HELP,
    max_term_width = 100
)]
pub struct CommandLine {
    /// Where runs are kept (the embedded store): a folder, relative to the
    /// current directory unless absolute. Read by every verb that reads or
    /// changes runs.
    #[arg(
        long,
        global = true,
        env = "CAIRN_DATA_DIR",
        hide_env_values = true,
        default_value = "./.cairn",
        value_name = "DIR",
        help_heading = GLOBAL
    )]
    pub data_dir: PathBuf,
    /// The config file: providers, command allowlist, prices, store
    /// settings (default: the cairn.toml of the current directory or the
    /// nearest folder above it, when there is one).
    #[arg(long, global = true, env = "CAIRN_CONFIG", hide_env_values = true, value_name = "FILE", help_heading = GLOBAL)]
    pub config: Option<PathBuf>,
    /// Use this provider for every agent (`mock`: the built-in deterministic
    /// one; `record:FILE` records the configured providers' answers;
    /// `replay:FILE` answers from such a file, without a network).
    #[arg(long, global = true, value_name = "PROVIDER", help_heading = GLOBAL)]
    pub llm: Option<String>,
    /// No progress on stderr (errors still print).
    #[arg(short, long, global = true, help_heading = GLOBAL)]
    pub quiet: bool,
    /// Go through the `cairn serve` at this URL (`http://HOST:PORT`) instead of a data
    /// directory. Without it, every verb goes through the server that holds the data
    /// directory, when one does.
    #[arg(long, global = true, env = "CAIRN_SERVER", value_name = "URL", help_heading = GLOBAL)]
    pub server: Option<String>,
    /// Keep runs in this PostgreSQL database (`postgres://USER@HOST/DB`) instead of the
    /// data directory; many processes may share it. Overrides `[store] url`.
    #[arg(long, global = true, env = "CAIRN_STORE", hide_env_values = true, value_name = "URL", help_heading = GLOBAL)]
    pub store: Option<String>,
    /// The API token to present to `--server` (never printed).
    #[arg(long, global = true, env = "CAIRN_TOKEN", hide_env_values = true, value_name = "TOKEN", help_heading = GLOBAL)]
    pub token: Option<String>,
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
    /// Check workflow files without running them.
    ///
    /// Prints `FILE: ok (N steps)` per valid file, else one
    /// `FILE:LINE:COL: step.path: message` line per problem (exit 2).
    #[command(after_help = "Examples:
  cairn validate workflow.yaml
  cairn validate examples/*.yaml
  cairn validate workflow.yaml --format json")]
    Validate {
        /// Definition files (YAML or JSON).
        #[arg(required = true)]
        files: Vec<PathBuf>,
        /// Output format.
        #[arg(long, value_enum, default_value_t = ProblemFormat::Text)]
        format: ProblemFormat,
    },
    /// Start a run and drive it until it completes, fails, or waits for a person.
    ///
    /// Progress goes to stderr, the result to stdout; the exit code says
    /// how the run ended (0 completed, 1 failed, 3 waiting, 4 cancelled, 5
    /// paused). At a gate on a terminal it asks you in place.
    #[command(after_help = "Examples:
  cairn --llm mock run workflow.yaml
  cairn run examples/ticket-triage.yaml --input ticket=\"I was charged twice\"
  cairn run review.yaml --inputs inputs.yaml --run-id pr-42 --format json
  cairn run review.yaml --label team=payments --label pr=42
  cairn run deploy.yaml --non-interactive      (a gate exits 3 instead of asking)")]
    Run {
        /// A definition file, or the id of a registered workflow (its latest version).
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
        /// A label of the run, `KEY=VALUE`, over the definition's `labels:`
        /// (repeatable; `cairn runs --label` filters on them).
        #[arg(long = "label", value_name = "KEY=VALUE")]
        labels: Vec<String>,
        /// The run's priority: of the runs waiting for a server's free lane (`serve --max-runs`),
        /// higher ones go first.
        #[arg(long, value_name = "N", allow_negative_numbers = true, default_value_t = 0)]
        priority: i32,
        /// Never ask at the terminal: a gate persists the wait and exits 3.
        #[arg(long)]
        non_interactive: bool,
        /// Return at once with the run id (json: the run's JSON); the run goes on in the
        /// server, or in a background process of its own.
        #[arg(long)]
        detach: bool,
        /// Output format.
        #[arg(long, value_enum, default_value_t = RunFormat::Text)]
        format: RunFormat,
    },
    /// List the runs in the data directory, newest first.
    #[command(after_help = "Examples:
  cairn runs
  cairn runs --status waiting_approval --workflow code-review
  cairn runs --label team=payments
  cairn runs --limit 20 --format json")]
    Runs {
        /// Only runs with this status: pending, running, waiting_acceptance,
        /// waiting_approval, waiting_clarification, waiting_conversation, blocked, paused,
        /// completed, failed or cancelled.
        #[arg(long)]
        status: Option<String>,
        /// Only runs of this workflow.
        #[arg(long)]
        workflow: Option<String>,
        /// Only runs with this label, `KEY=VALUE` (repeatable: every one must match).
        #[arg(long = "label", value_name = "KEY=VALUE")]
        labels: Vec<String>,
        /// Only runs started by this actor (a token's name, a user's).
        #[arg(long, value_name = "NAME")]
        triggered_by: Option<String>,
        /// Only runs of this priority.
        #[arg(long, value_name = "N", allow_negative_numbers = true)]
        priority: Option<i32>,
        /// Only runs made from this run (its forks).
        #[arg(long, value_name = "RUN")]
        parent: Option<String>,
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
    /// Show one run: every step, what it waits for, and the commands
    /// that decide it.
    #[command(after_help = "Examples:
  cairn status pr-42
  cairn status pr-42 --format json")]
    Status {
        /// The run.
        run: String,
        /// Output format.
        #[arg(long, value_enum, default_value_t = RunFormat::Text)]
        format: RunFormat,
    },
    /// Pause a run: running steps finish, nothing new starts (exit 5).
    ///
    /// A run another cairn process drives is signalled and paused there;
    /// `resume` carries it on.
    #[command(after_help = "Examples:
  cairn pause pr-42
  cairn pause pr-42 --format json")]
    Pause {
        /// The run.
        run: String,
        /// Output format.
        #[arg(long, value_enum, default_value_t = RunFormat::Text)]
        format: RunFormat,
    },
    /// Drive a paused, blocked, waiting or interrupted run on, like `run`.
    #[command(after_help = "Examples:
  cairn resume pr-42
  cairn --llm mock resume pr-42 --non-interactive
  cairn resume pr-42 --budget-usd 5            (a run stopped by its budget goes on)")]
    Resume {
        /// The run.
        run: String,
        /// Raise the run's budget to USD first (recorded with who raised
        /// it); a run blocked by its spent budget goes on.
        #[arg(long, value_name = "USD")]
        budget_usd: Option<f64>,
        /// Who raises the budget, for the audit trail (default: the OS user).
        #[arg(long, requires = "budget_usd")]
        by: Option<String>,
        /// Never ask at the terminal: a gate persists the wait and exits 3.
        #[arg(long)]
        non_interactive: bool,
        /// Output format.
        #[arg(long, value_enum, default_value_t = RunFormat::Text)]
        format: RunFormat,
    },
    /// Approve what a run waits for; when the gate is satisfied the run goes on.
    #[command(after_help = "Examples:
  cairn approve pr-42
  cairn approve pd --as product_owner --comment \"good epics\"
  cairn approve pd --gate 'per_epic[e1].backlog' --as product_owner --detach")]
    Approve(Decide),
    /// Reject what a run waits for: the step is reworked, or fails.
    ///
    /// The comment is the rework's `{{ feedback }}`; the gate's definition
    /// says whether a rejection reworks the step or fails it.
    #[command(after_help = "Examples:
  cairn reject pr-42 --comment \"cover the error paths\"
  cairn reject pd --as tech_lead --comment \"split the epic\" --detach")]
    Reject(Decide),
    /// Answer a model's clarification questions; the step runs again with them.
    #[command(after_help = "Examples:
  cairn answer pr-42 --text \"Postgres 16; keep the public API\"
  cairn answer pd --gate 'per_epic[e2].stories' --text \"yes, mobile first\"")]
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
    /// Cancel a run: running steps are stopped, it ends `cancelled` (exit 4).
    #[command(after_help = "Examples:
  cairn cancel pr-42
  cairn cancel pr-42 --format json")]
    Cancel {
        /// The run.
        run: String,
        /// Output format.
        #[arg(long, value_enum, default_value_t = RunFormat::Text)]
        format: RunFormat,
    },
    /// List a run's checkpoints (one after every finished step), to fork from.
    #[command(after_help = "Examples:
  cairn checkpoints pr-42
  cairn checkpoints pr-42 --format json")]
    Checkpoints {
        /// The run.
        run: String,
        /// Output format.
        #[arg(long, value_enum, default_value_t = ListFormat::Table)]
        format: ListFormat,
    },
    /// Make a new run from checkpoint N of RUN, to run again from there.
    ///
    /// Prints the new run's id; `resume` drives it.
    #[command(after_help = "Examples:
  cairn fork pr-42 --checkpoint 7
  cairn resume \"$(cairn fork pr-42 --checkpoint 7)\"")]
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
    /// Print a run's event log: the audit trail of what happened, and who did it.
    #[command(after_help = "Examples:
  cairn events pr-42
  cairn events pr-42 --format jsonl | grep gate_decided
  cairn events pr-42 --format json")]
    Events {
        /// The run.
        run: String,
        /// Keep printing new events as they are recorded, until the run ends.
        #[arg(long)]
        follow: bool,
        /// Output format.
        #[arg(long, value_enum, default_value_t = EventsFormat::Text)]
        format: EventsFormat,
    },
    /// Write runs as JSON lines, to import into another store.
    ///
    /// One run a line: the definition it recorded and every event, each
    /// with its actor and time, as stored.
    #[command(after_help = "Examples:
  cairn export pr-42 > pr-42.jsonl
  cairn export --all > runs.jsonl
  cairn --store postgres://cairn@db/cairn import runs.jsonl")]
    Export {
        /// The runs.
        #[arg(required_unless_present = "all")]
        runs: Vec<String>,
        /// Every run of the store, oldest first.
        #[arg(long, conflicts_with = "runs")]
        all: bool,
    },
    /// Add runs that `export` wrote to this store, their events as they were.
    ///
    /// Every line is read and checked before anything is written. A run
    /// the store holds already is left alone when it is the same, and
    /// finished when it holds the start of the same log (an import cut
    /// short); another run under the same id is refused.
    #[command(after_help = "Examples:
  cairn export --all > runs.jsonl && cairn --store postgres://cairn@db/cairn import runs.jsonl
  cairn --data-dir old export pr-42 | cairn import")]
    Import {
        /// The file that `export` wrote (`-`: standard input).
        #[arg(default_value = "-")]
        file: String,
        /// Output format (json: `[{"run_id", "imported", "events"}]`).
        #[arg(long, value_enum, default_value_t = DocFormat::Text)]
        format: DocFormat,
    },
    /// Delete ended runs last updated longer ago than a duration.
    ///
    /// Ended: completed, failed or cancelled. Runs that wait, are paused or
    /// run are never deleted.
    #[command(after_help = "Examples:
  cairn prune --older-than 30d --dry-run
  cairn prune --older-than 7d
  cairn prune --older-than 12h --format json")]
    Prune {
        /// A duration such as `30d`, `12h` or `90m`.
        #[arg(long, value_name = "DURATION")]
        older_than: String,
        /// List what would be deleted, and delete nothing.
        #[arg(long)]
        dry_run: bool,
        /// Output format (json: `{"deleted": [run ids], "dry_run": bool}`).
        #[arg(long, value_enum, default_value_t = DocFormat::Text)]
        format: DocFormat,
    },
    /// Show how a workflow file will run: levels of steps that run together.
    #[command(after_help = "Examples:
  cairn plan workflow.yaml
  cairn plan examples/code-review.yaml --format mermaid > plan.mmd
  cairn plan workflow.yaml --format json")]
    Plan {
        /// A definition file.
        file: PathBuf,
        /// Output format.
        #[arg(long, value_enum, default_value_t = PlanFormat::Text)]
        format: PlanFormat,
    },
    /// Write a starter workflow.yaml and a commented cairn.toml, to begin from.
    ///
    /// Writes into DIR (the current directory by default); an existing
    /// file is never overwritten (exit 2, naming it).
    #[command(after_help = "Examples:
  cairn init
  cairn init my-flow && cd my-flow && cairn --llm mock run workflow.yaml")]
    Init {
        /// The folder to write into (made when missing).
        #[arg(default_value = ".")]
        dir: PathBuf,
        /// Output format (json: `{"wrote": [files], "next": command}`).
        #[arg(long, value_enum, default_value_t = DocFormat::Text)]
        format: DocFormat,
    },
    /// Print a shell completion script for cairn.
    #[command(after_help = "Examples:
  cairn completions bash > ~/.local/share/bash-completion/completions/cairn
  cairn completions zsh > \"${fpath[1]}/_cairn\"
  cairn completions fish > ~/.config/fish/completions/cairn.fish
  cairn completions powershell >> $PROFILE")]
    Completions {
        /// The shell.
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Print cairn's manual page, or a verb's, in roff for `man`.
    #[command(after_help = "Examples:
  cairn man > cairn.1 && man ./cairn.1
  cairn man run > cairn-run.1
  cairn man > /usr/local/share/man/man1/cairn.1")]
    Man {
        /// A verb, for its own page (`cairn-VERB(1)`).
        verb: Option<String>,
    },
    /// Report damaged store files and what can be recovered, changing nothing
    ///
    /// Reads a copy of the data directory's files: each file's state (whole, a
    /// torn tail a crash left, or damaged where and how), whether the store
    /// opens, and the runs a store cut back to its whole records would hold.
    /// Exit 0 when nothing is damaged, 2 when something is.
    #[command(after_help = "Examples:
  cairn doctor
  cairn doctor --format json
  cairn --data-dir /backups/cairn doctor")]
    Doctor {
        /// Output format (json: one document with `files`, `damage` and `recoverable`).
        #[arg(long, value_enum, default_value_t = DocFormat::Text)]
        format: DocFormat,
    },
    /// Serve the HTTP API: drive every run of the data directory, many at once, and let any
    /// shell or browser watch and steer them.
    #[command(after_help = "Examples:
  cairn serve                                  on 127.0.0.1:7770, tokens required
  cairn token create ops --role operator       a token for a client (printed once)
  cairn serve --listen 127.0.0.1:0 --auth none a free port, no tokens (loopback only)

The server prints `cairn serve listening on http://HOST:PORT` on stderr once it accepts
connections. SIGTERM or Ctrl-C stops it: what runs is left to the next start, nothing
recorded is lost. The API is in docs/server.md.")]
    Serve {
        /// The address to listen on (`HOST:PORT`; port 0 picks a free one).
        #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:7770")]
        listen: String,
        /// How callers are told apart: bearer tokens (`cairn token create`), or none (only
        /// on a loopback address).
        #[arg(long, value_enum, default_value_t = AuthMode::Token)]
        auth: AuthMode,
        /// How the server logs: lines for people, or one JSON object per line.
        #[arg(long, value_enum, default_value_t = LogFormat::Text)]
        log_format: LogFormat,
        /// The most runs driven at once; the others wait their turn, higher `--priority`
        /// first (no limit when left out).
        #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
        max_runs: Option<u32>,
    },
    /// Make, list and revoke the API tokens `cairn serve` accepts.
    #[command(subcommand)]
    Token(TokenVerb),
    /// List the workflow catalog; `add` registers definitions, `show` prints one.
    ///
    /// The catalog is every workflow registered or run here, with its latest version, runs,
    /// success rate, median and p95 duration, tokens and cost.
    #[command(after_help = "Examples:
  cairn workflows
  cairn workflows add examples/*.yaml
  cairn workflows show ticket-triage --version 2
  cairn run ticket-triage --input ticket=\"I was charged twice\"   (the latest registered version)")]
    Workflows {
        /// Register or show a workflow (none: list the catalog).
        #[command(subcommand)]
        verb: Option<WorkflowsVerb>,
        /// Output format (json: an array of `{workflow, name, description, tags, latest, stats}`).
        #[arg(long, value_enum, default_value_t = ListFormat::Table)]
        format: ListFormat,
    },
    /// Figures over the stored runs: by status, success rate, durations, the steps that fail
    /// most, and tokens and cost by workflow, agent and model.
    ///
    /// Read from the store's run index (kept as runs go), never from the runs' logs.
    #[command(after_help = "Examples:
  cairn stats
  cairn stats --since 7d
  cairn stats --workflow ticket-triage --since 24h --format json")]
    Stats {
        /// One workflow's runs only.
        #[arg(long, value_name = "ID")]
        workflow: Option<String>,
        /// Runs created this long ago at most (`7d`, `24h`, `90m`).
        #[arg(long, value_name = "DURATION")]
        since: Option<String>,
        /// Output format (json: `{workflow, since, overall, by_workflow, failing_steps, by_agent, by_model}`).
        #[arg(long, value_enum, default_value_t = ListFormat::Table)]
        format: ListFormat,
    },
    /// Search workflows (name, description, tags, step prompts) and runs (inputs, outputs,
    /// error messages) by text, the best match first.
    ///
    /// Words are matched by stem (`failing` finds `failed`); `"a phrase"`, `+required`,
    /// `-excluded` and `field:word` (fields: id, name, tags, description, prompts, errors, inputs,
    /// outputs) narrow it.
    #[command(after_help = "Examples:
  cairn search timeout
  cairn search printer fire --kind run
  cairn search '\"release notes\" -draft' --workflow release --format json")]
    Search {
        /// The words to find.
        #[arg(required = true, value_name = "TEXT")]
        words: Vec<String>,
        /// Workflows or runs only.
        #[arg(long, value_enum)]
        kind: Option<SearchKind>,
        /// One workflow's documents only (it and its runs).
        #[arg(long, value_name = "ID")]
        workflow: Option<String>,
        /// At most this many hits.
        #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(u16).range(1..=1000))]
        limit: u16,
        /// Output format (json: an array of `{kind, id, workflow, score, field, snippet, run}`).
        #[arg(long, value_enum, default_value_t = ListFormat::Table)]
        format: ListFormat,
    },
    /// Bring a PostgreSQL store's schema up to this binary's, and nothing else.
    ///
    /// Every verb does it as it opens the store; this lets an operator do it first, alone.
    /// A database whose schema is newer than this binary's is refused.
    #[command(after_help = "Examples:
  cairn --store postgres://cairn@db.internal/cairn migrate
  CAIRN_STORE=postgres://cairn@db.internal/cairn cairn migrate --format json")]
    Migrate {
        /// Output format (json: `{"at", "from", "to"}`, schema versions).
        #[arg(long, value_enum, default_value_t = DocFormat::Text)]
        format: DocFormat,
    },
    /// Print cairn's version.
    #[command(after_help = "Examples:
  cairn version
  cairn version --format json")]
    Version {
        /// Output format (json: `{"version": "X.Y.Z"}`).
        #[arg(long, value_enum, default_value_t = DocFormat::Text)]
        format: DocFormat,
    },
}

/// The `workflows` verbs.
#[derive(Debug, Subcommand)]
pub enum WorkflowsVerb {
    /// Register definitions by id and version: each file's `version`, else the hash of its
    /// text. The same text again is the version stored; a version named again with other text
    /// is refused. A file with problems registers nothing.
    #[command(after_help = "Examples:
  cairn workflows add review.yaml
  cairn workflows add examples/*.yaml --format json")]
    Add {
        /// Definition files (YAML or JSON).
        #[arg(required = true)]
        files: Vec<PathBuf>,
        /// Output format (json: an array of `{workflow, version, number, ..., added}`).
        #[arg(long, value_enum, default_value_t = DocFormat::Text)]
        format: DocFormat,
    },
    /// Print a registered definition back: its exact text (yaml), or it with its version,
    /// files and every version of the workflow (json).
    #[command(after_help = "Examples:
  cairn workflows show review
  cairn workflows show review --version 1.2.0 --format json")]
    Show {
        /// The workflow's id.
        workflow: String,
        /// The version: its `version`, or its number (default: the latest).
        #[arg(long)]
        version: Option<String>,
        /// Output format.
        #[arg(long, value_enum, default_value_t = ShowFormat::Yaml)]
        format: ShowFormat,
    },
}

/// How `workflows show` prints a definition.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ShowFormat {
    /// The exact text registered.
    Yaml,
    /// One JSON document: the version, its text and files, and every version.
    Json,
}

/// The `token` verbs.
#[derive(Debug, Subcommand)]
pub enum TokenVerb {
    /// Make a token; its secret is printed alone on stdout, this once (the store keeps a hash).
    #[command(after_help = "Examples:
  cairn token create ci --role operator
  cairn token create lead-alice --gate-role tech_lead --expires 30d")]
    Create {
        /// Its name (1 to 64 of a-z, 0-9, `_`, `-`): recorded as the actor of what it does.
        name: String,
        /// What it may do: read (viewer), also start and steer runs (operator), also manage
        /// tokens (admin).
        #[arg(long, value_enum, default_value_t = RoleArg::Viewer)]
        role: RoleArg,
        /// A role of a gate's `approvers` it may decide as (repeat for more).
        #[arg(long = "gate-role", value_name = "ROLE")]
        gate_roles: Vec<String>,
        /// How long it is valid (`30d`, `12h`); forever when left out.
        #[arg(long, value_name = "DURATION")]
        expires: Option<String>,
    },
    /// List tokens: name, role, gate roles, created, expires, last used (never a secret).
    List {
        /// Output format (json: an array of `{name, role, gate_roles, created_at, expires_at,
        /// last_used_at}`).
        #[arg(long, value_enum, default_value_t = ListFormat::Table)]
        format: ListFormat,
    },
    /// Revoke a token: no request is accepted with it again.
    Revoke {
        /// The token's name.
        name: String,
    },
}

/// A token's role, as the command line names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum RoleArg {
    /// Reads runs, events, checkpoints, workflows; validates.
    Viewer,
    /// A viewer that also starts, pauses, resumes, cancels and forks runs and answers.
    Operator,
    /// An operator that also manages tokens.
    Admin,
}

impl From<RoleArg> for cairn_domain::access::Role {
    fn from(r: RoleArg) -> Self {
        match r {
            RoleArg::Viewer => Self::Viewer,
            RoleArg::Operator => Self::Operator,
            RoleArg::Admin => Self::Admin,
        }
    }
}

/// How `serve` tells callers apart.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum AuthMode {
    /// Every request but health and the API document needs `Authorization: Bearer TOKEN`.
    Token,
    /// Nobody is asked: only on a loopback address.
    None,
}

/// How `serve` logs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// Lines for people.
    Text,
    /// One JSON object per line.
    Json,
}

/// How `validate` prints.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ProblemFormat {
    /// `FILE:LINE:COL: message` lines.
    Text,
    /// One JSON array of `{file, line, column, path, rule, message}`.
    Json,
}

/// How a verb that prints one result prints it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum DocFormat {
    /// Lines people read.
    Text,
    /// One JSON document.
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

/// What `search` finds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum SearchKind {
    /// Workflows only.
    Workflow,
    /// Runs only.
    Run,
}

/// How listing verbs print.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ListFormat {
    /// Aligned columns, fitted to the terminal (`text` says the same).
    #[value(alias = "text")]
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
    /// One JSON array of the events.
    Json,
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
