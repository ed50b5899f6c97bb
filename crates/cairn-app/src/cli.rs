//! The command line, as `spec/cli.md` fixes it: verbs, flags and exit codes.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};

use crate::files::load_workflow;
use crate::{render, steer};
use cairn_domain::plan::Plan;

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

/// cairn runs durable LLM-agent workflows described in YAML or JSON.
#[derive(Debug, Parser)]
#[command(name = "cairn", version, about, max_term_width = 100)]
pub struct Cli {
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
    run: String,
    /// The waiting step (its path); needed when several wait.
    #[arg(long)]
    gate: Option<String>,
    /// The role you decide as; required when the gate lists approvers.
    #[arg(long = "as", value_name = "ROLE")]
    role: Option<String>,
    /// Why; a rejection's comment is the rework's `{{ feedback }}`.
    #[arg(long)]
    comment: Option<String>,
    /// Who decides, and what happens next.
    #[command(flatten)]
    then: Then,
}

/// What every decision verb (`approve`, `reject`, `answer`) takes besides the decision.
#[derive(Debug, clap::Args)]
pub struct Then {
    /// Who decides, for the audit trail (default: the OS user).
    #[arg(long)]
    by: Option<String>,
    /// Record it without driving the run on.
    #[arg(long)]
    detach: bool,
    /// Never ask at the terminal: a later gate persists the wait and exits 3.
    #[arg(long)]
    non_interactive: bool,
    /// Output format.
    #[arg(long, value_enum, default_value_t = RunFormat::Text)]
    format: RunFormat,
}

impl Then {
    /// The request of a decision verb.
    fn request(self, run: String, verb: &'static str, call: cairn_engine::GateCall) -> crate::gate::Request {
        crate::gate::Request {
            run,
            verb,
            call,
            detach: self.detach,
            non_interactive: self.non_interactive,
            format: self.format,
        }
    }

    fn by(&self) -> String {
        self.by.clone().unwrap_or_else(crate::session::whoami)
    }
}

impl Decide {
    /// The request of `approve` or `reject`.
    fn request(self, verb: &'static str, decision: cairn_engine::GateDecision) -> crate::gate::Request {
        let call = cairn_engine::GateCall {
            gate: self.gate,
            decision,
            role: self.role,
            comment: self.comment,
            by: self.then.by(),
        };
        self.then.request(self.run, verb, call)
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

/// Parses the arguments, runs the verb, and returns its exit code.
pub fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            return ExitCode::from(if e.use_stderr() { exit::USAGE } else { exit::OK });
        }
    };
    ExitCode::from(run(cli))
}

/// Runs a parsed command line; returns the exit code.
pub fn run(cli: Cli) -> u8 {
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    let code = match cli.verb {
        Verb::Validate { files, format } => validate(&files, format, &mut out),
        Verb::Plan { file, format } => plan(&file, format, &mut out),
        Verb::Run { file, inputs, inputs_file, run_id, non_interactive, format } => {
            crate::run::run(&crate::run::RunRequest {
                non_interactive,
                file: &file,
                inputs: &inputs,
                inputs_file: inputs_file.as_deref(),
                run_id: run_id.as_deref(),
                format,
                config: cli.config.as_deref(),
                llm: cli.llm.as_deref(),
                data_dir: &cli.data_dir,
            })
        }
        other => {
            let common = steer::Common {
                data_dir: &cli.data_dir,
                config: cli.config.as_deref(),
                llm: cli.llm.as_deref(),
            };
            let result = match other {
                Verb::Runs { status, workflow, format } => {
                    steer::runs(&common, status.as_deref(), workflow.as_deref(), format)
                }
                Verb::Status { run, format } => steer::status(&common, &run, format),
                Verb::Pause { run } => steer::pause_or_cancel(&common, &run, false),
                Verb::Cancel { run } => steer::pause_or_cancel(&common, &run, true),
                Verb::Resume { run, non_interactive, format } => {
                    steer::resume(&common, &run, non_interactive, format)
                }
                Verb::Approve(d) => {
                    crate::gate::decide(&common, d.request("approve", cairn_engine::GateDecision::Approve))
                }
                Verb::Reject(d) => {
                    crate::gate::decide(&common, d.request("reject", cairn_engine::GateDecision::Reject))
                }
                Verb::Answer { run, gate, text, then } => {
                    let decision = cairn_engine::GateDecision::Answer(text);
                    let call =
                        cairn_engine::GateCall { gate, decision, role: None, comment: None, by: then.by() };
                    crate::gate::decide(&common, then.request(run, "answer", call))
                }
                Verb::Checkpoints { run, format } => steer::checkpoints(&common, &run, format),
                Verb::Fork { run, checkpoint, format } => steer::fork(&common, &run, checkpoint, format),
                Verb::Events { run, format } => steer::events(&common, &run, format),
                Verb::Prune { older_than } => steer::prune(&common, &older_than),
                Verb::Validate { .. } | Verb::Plan { .. } | Verb::Run { .. } => Err(exit::USAGE),
            };
            result.unwrap_or_else(|code| code)
        }
    };
    let _ = out.flush();
    code
}

fn validate(files: &[PathBuf], format: ProblemFormat, out: &mut impl Write) -> u8 {
    let mut bad_files = 0;
    let mut count = 0;
    let mut json = Vec::new();
    for path in files {
        let name = path.display().to_string();
        match load_workflow(path) {
            Ok(wf) => {
                if format == ProblemFormat::Text {
                    let steps = Plan::build(&wf).map(|p| p.total_steps).unwrap_or(0);
                    let _ = writeln!(out, "{name}: ok ({steps} steps)");
                }
            }
            Err(problems) => {
                bad_files += 1;
                count += problems.len();
                for p in &problems.0 {
                    match format {
                        ProblemFormat::Text => {
                            let _ = writeln!(out, "{}", p.render(&name));
                        }
                        ProblemFormat::Json => json.push(serde_json::json!({
                            "file": name,
                            "line": p.location.map(|l| l.line),
                            "column": p.location.map(|l| l.column),
                            "path": p.subject,
                            "rule": p.rule,
                            "message": p.message,
                        })),
                    }
                }
            }
        }
    }
    if format == ProblemFormat::Json {
        let _ = writeln!(out, "{}", serde_json::Value::Array(json));
    }
    if bad_files == 0 {
        return exit::OK;
    }
    let plural = if count == 1 { "" } else { "s" };
    eprintln!("{count} problem{plural} in {bad_files} of {} file(s)", files.len());
    exit::USAGE
}

fn plan(path: &Path, format: PlanFormat, out: &mut impl Write) -> u8 {
    let name = path.display().to_string();
    let workflow = match load_workflow(path) {
        Ok(wf) => wf,
        Err(problems) => {
            for p in &problems.0 {
                eprintln!("{}", p.render(&name));
            }
            return exit::USAGE;
        }
    };
    let plan = match Plan::build(&workflow) {
        Ok(plan) => plan,
        Err(e) => {
            eprintln!("{name}: {e}");
            return exit::USAGE;
        }
    };
    let text = match format {
        PlanFormat::Text => render::plan_text(&plan),
        PlanFormat::Mermaid => render::plan_mermaid(&plan),
        PlanFormat::Json => match serde_json::to_string_pretty(&plan) {
            Ok(json) => json + "\n",
            Err(e) => {
                eprintln!("{name}: cannot print the plan: {e}");
                return exit::FAILED;
            }
        },
    };
    let _ = out.write_all(text.as_bytes());
    exit::OK
}
