//! People at gates: the `approve`, `reject` and `answer` verbs, and the
//! prompt a run shows at a gate when a person sits at the terminal. Both
//! record the decision through `Engine::decide_gate` and drive the run on
//! in the same process, so a decision made at the prompt is exactly the
//! one the verbs would record.

use std::io::{BufRead, IsTerminal, Write};
use std::sync::mpsc;
use std::time::Duration;

use cairn_domain::definition::Workflow;
use cairn_domain::id::RunId;
use cairn_domain::state::{RunState, WaitKind, text_of};
use cairn_engine::{Engine, EngineError, GateCall, GateDecision, SystemClock};
use cairn_ports::Clock;

use crate::cli::{RunFormat, exit};
use crate::run::{print_run, store_failed, usage};
use crate::runview::{self, Gate};
use crate::steer::{self, Common};

/// What a decision verb was asked.
pub struct Request {
    /// The run.
    pub run: String,
    /// `approve`, `reject` or `answer`.
    pub verb: &'static str,
    /// The decision, the gate, the role, the comment and the person.
    pub call: GateCall,
    /// Record it, but do not drive the run on.
    pub detach: bool,
    /// Never prompt at the terminal for a later gate.
    pub non_interactive: bool,
    /// Output format.
    pub format: RunFormat,
}

/// `cairn approve|reject|answer RUN`: records the decision, then (unless
/// `--detach`) drives the run on like `resume`.
pub fn decide(common: &Common<'_>, req: Request) -> Result<u8, u8> {
    let (o, id) = steer::open_for(common, req.verb, &req.run)?;
    let (_, workflow, _) = steer::load(&o, &id)?;
    let engine = steer::driving_engine(common, &o, &workflow)?;
    let recorded = o.runtime.block_on(engine.decide_gate(&id, &workflow, req.call));
    match recorded {
        Ok(state) if req.detach => {
            eprintln!("recorded; `cairn resume {id}` drives the run on");
            print_run(&state, &workflow, &o.loaded, req.format);
            return Ok(exit::OK);
        }
        Ok(_) => {}
        Err(e @ EngineError::DeadlinePassed { .. }) if !req.detach => eprintln!("warning: {e}"),
        Err(
            e @ (EngineError::Refused(_) | EngineError::Finished { .. } | EngineError::DeadlinePassed { .. }),
        ) => {
            return Err(usage(e));
        }
        Err(EngineError::Store(e)) => return Err(usage(store_failed(&e, id.as_str()))),
        Err(e) => return Err(usage(e)),
    }
    let state = drive_on(&o.runtime, &engine, &id, &workflow, !req.non_interactive);
    Ok(finish(state, &id, &workflow, &o.loaded, req.format))
}

/// The exit of a driven run: its summary and status code, or the error.
pub fn finish(
    state: Result<RunState, EngineError>,
    id: &RunId,
    workflow: &Workflow,
    loaded: &crate::config::Loaded,
    format: RunFormat,
) -> u8 {
    match state {
        Ok(state) => print_run(&state, workflow, loaded, format),
        Err(e @ EngineError::Finished { .. }) => usage(e),
        Err(EngineError::Store(e)) => usage(store_failed(&e, id.as_str())),
        Err(e) => {
            eprintln!("error: {e}");
            exit::FAILED
        }
    }
}

/// Resumes a stored run, then converses at its gates.
pub fn drive_on(
    runtime: &tokio::runtime::Runtime,
    engine: &Engine,
    id: &RunId,
    workflow: &Workflow,
    interactive: bool,
) -> Result<RunState, EngineError> {
    let state = runtime.block_on(engine.resume(id, workflow.clone()))?;
    converse(runtime, engine, state, workflow, interactive)
}

/// While the run waits at a gate and a person is at the terminal (stdin is
/// a TTY, and `--non-interactive` was not given): shows the gate, asks,
/// records the answer as the verbs would, and drives the run on. Returns
/// the run as it stands when nobody is asked any more.
pub fn converse(
    runtime: &tokio::runtime::Runtime,
    engine: &Engine,
    mut state: RunState,
    workflow: &Workflow,
    interactive: bool,
) -> Result<RunState, EngineError> {
    if !interactive || !std::io::stdin().is_terminal() {
        return Ok(state);
    }
    let lines = stdin_lines();
    while state.status.is_waiting() {
        let Some(gate) = runview::gate_of(&state, workflow) else { break };
        let id = state.run_id.clone();
        match ask(&id, &gate, &lines) {
            Asked::Leave => break,
            Asked::DeadlinePassed => eprintln!("the deadline passed: the gate's `on_timeout` applies"),
            Asked::Decided(call) => match runtime.block_on(engine.decide_gate(&id, workflow, call)) {
                Ok(_) => {}
                Err(e @ EngineError::DeadlinePassed { .. }) => eprintln!("{e}"),
                Err(EngineError::Refused(why)) => {
                    eprintln!("refused: {why}");
                    continue;
                }
                Err(e) => return Err(e),
            },
        }
        state = runtime.block_on(engine.resume(&id, workflow.clone()))?;
    }
    Ok(state)
}

/// How a prompt ended.
enum Asked {
    /// The person decided.
    Decided(GateCall),
    /// The person left the gate waiting (or closed the terminal).
    Leave,
    /// Nobody answered before the gate's deadline.
    DeadlinePassed,
}

/// Lines typed at the terminal, read on a thread of their own so a prompt
/// can give up at a gate's deadline.
fn stdin_lines() -> mpsc::Receiver<String> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::stdin().lock().lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    rx
}

/// Shows a gate on stderr and asks about it.
fn ask(id: &RunId, gate: &Gate<'_>, lines: &mpsc::Receiver<String>) -> Asked {
    let now = SystemClock.now();
    let mut err = std::io::stderr();
    let _ = write!(err, "\n{}", runview::gate_text(id.as_str(), gate, now, false));
    if gate.kind == WaitKind::Acceptance
        && let Some(output) = &gate.state.output
    {
        let _ = writeln!(err, "  output under review:");
        for line in text_of(output).lines().take(60) {
            let _ = writeln!(err, "  | {line}");
        }
    }
    let deadline = gate.state.deadline.map(|d| Duration::from_millis(d.0.saturating_sub(now.0)));
    let read = |prompt: &str| -> Result<Option<String>, Asked> {
        let mut err = std::io::stderr();
        let _ = write!(err, "{prompt}");
        let _ = err.flush();
        let line = match deadline {
            Some(left) => lines.recv_timeout(left).map_err(|e| match e {
                mpsc::RecvTimeoutError::Timeout => Asked::DeadlinePassed,
                mpsc::RecvTimeoutError::Disconnected => Asked::Leave,
            })?,
            None => lines.recv().map_err(|_| Asked::Leave)?,
        };
        let line = line.trim().to_owned();
        Ok((!line.is_empty()).then_some(line))
    };
    let by = crate::session::whoami();
    let asked = (|| -> Result<Asked, Asked> {
        match gate.kind {
            WaitKind::Acceptance | WaitKind::Approval => {
                let decision = match read("approve, reject, or leave it waiting? [a/r/w] ")?.as_deref() {
                    Some("a" | "approve" | "y" | "yes") => GateDecision::Approve,
                    Some("r" | "reject" | "n" | "no") => GateDecision::Reject,
                    _ => return Ok(Asked::Leave),
                };
                let role = match gate.approvers.as_slice() {
                    [] => None,
                    [one] => Some(one.clone()),
                    many => read(&format!("as which role ({})? ", many.join(", ")))?,
                };
                let comment = read("comment (optional): ")?;
                Ok(Asked::Decided(GateCall {
                    gate: Some(gate.path.to_string()),
                    decision,
                    role,
                    comment,
                    by,
                }))
            }
            WaitKind::Clarification => {
                eprintln!("your answers (an empty line ends them):");
                let mut text = Vec::new();
                while let Some(line) = read("> ")? {
                    text.push(line);
                }
                if text.is_empty() {
                    return Ok(Asked::Leave);
                }
                let decision = GateDecision::Answer(text.join("\n"));
                Ok(Asked::Decided(GateCall {
                    gate: Some(gate.path.to_string()),
                    decision,
                    role: None,
                    comment: None,
                    by,
                }))
            }
            WaitKind::Block => Ok(Asked::Leave),
        }
    })();
    asked.unwrap_or_else(|stop| stop)
}
