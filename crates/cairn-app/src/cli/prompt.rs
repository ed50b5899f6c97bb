//! A person at the terminal, asked at a run's gates: what a driving verb
//! does when the run waits and stdin is a TTY. A decision made here is
//! recorded exactly as `approve`, `reject` and `answer` record theirs.

use std::io::{BufRead, IsTerminal, Write};
use std::sync::mpsc;
use std::time::Duration;

use cairn_domain::event::END_CONVERSATION;
use cairn_domain::id::RunId;
use cairn_domain::state::{WaitKind, text_of};
use cairn_domain::steer::{GateCall, Refusal, Verdict};
use cairn_engine::{EngineError, SystemClock};
use cairn_ports::Clock;

use super::Opened;
use super::summary::gate_text;
use crate::app::Run;
use crate::error::Error;
use crate::view::run::{Gate, gates_of};

/// While the run waits at a gate and a person is at the terminal (stdin is
/// a TTY, and `--non-interactive` was not given): shows the gate, asks,
/// records the answer as the verbs would, and drives the run on. Returns
/// the run as it stands when nobody is asked any more.
pub(crate) fn converse(opened: &Opened, mut run: Run, interactive: bool) -> Result<Run, Error> {
    if !interactive || !std::io::stdin().is_terminal() {
        return Ok(run);
    }
    let lines = stdin_lines();
    let by = crate::host::whoami();
    while run.state.status.is_waiting() {
        let gates = gates_of(&run.state, &run.definition.workflow);
        let Some(gate) = gates.first() else { break };
        let id = run.state.run_id.clone();
        // A sub-workflow's gate is its child run's: asked there, and the
        // child's drive drives this run on.
        if let Some(child) = gate.state.child.clone().filter(|_| gate.state.waits_on_child) {
            let child = opened.runtime.block_on(opened.app.status(&child))?;
            eprintln!("step `{}` waits on its sub-workflow's run {}", gate.path, child.state.run_id);
            if converse(opened, child, interactive)?.state.status.is_waiting() {
                break;
            }
            run = opened.runtime.block_on(opened.app.status(&id))?;
            continue;
        }
        // With several gates waiting, the commands shown name theirs.
        match ask(&id, gate, gates.len() > 1, &lines) {
            Asked::Leave => break,
            Asked::DeadlinePassed => eprintln!("the deadline passed: the gate's `on_timeout` applies"),
            Asked::Decided(call) => match opened.runtime.block_on(opened.app.decide(&id, call, &by)) {
                Ok(_) => {}
                Err(Error::Engine(EngineError::Refused {
                    refusal: Refusal::DeadlinePassed { .. }, ..
                })) => {
                    eprintln!("the deadline passed: the gate's `on_timeout` applies");
                }
                Err(Error::Engine(EngineError::Refused { refusal, .. })) => {
                    eprintln!("refused: {refusal}");
                    continue;
                }
                Err(e) => return Err(e),
            },
        }
        run = opened.runtime.block_on(opened.app.drive(&id))?;
    }
    Ok(run)
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
fn ask(id: &RunId, gate: &Gate<'_>, named: bool, lines: &mpsc::Receiver<String>) -> Asked {
    let now = SystemClock.now();
    let mut err = std::io::stderr();
    let _ = write!(err, "\n{}", gate_text(id.as_str(), gate, now, named));
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
    let asked = (|| -> Result<Asked, Asked> {
        match gate.kind {
            WaitKind::Acceptance | WaitKind::Approval => {
                let verdict = match read("approve, reject, or leave it waiting? [a/r/w] ")?.as_deref() {
                    Some("a" | "approve" | "y" | "yes") => Verdict::Approve,
                    Some("r" | "reject" | "n" | "no") => Verdict::Reject,
                    _ => return Ok(Asked::Leave),
                };
                let role = match gate.approvers.as_slice() {
                    [] => None,
                    [one] => Some(one.clone()),
                    many => read(&format!("as which role ({})? ", many.join(", ")))?,
                };
                let comment = read("comment (optional): ")?;
                Ok(Asked::Decided(GateCall { gate: Some(gate.path.to_string()), verdict, role, comment }))
            }
            WaitKind::Clarification | WaitKind::Conversation => {
                let conversation = gate.kind == WaitKind::Conversation;
                if conversation {
                    eprintln!("{}", gate.state.message.as_deref().unwrap_or_default());
                    eprintln!(
                        "your turn (an empty line ends it; `{END_CONVERSATION}` alone ends the conversation):"
                    );
                } else {
                    eprintln!("your answers (an empty line ends them):");
                }
                let mut text = Vec::new();
                while let Some(line) = read("> ")? {
                    let done = conversation && text.is_empty() && line == END_CONVERSATION;
                    text.push(line);
                    if done {
                        break;
                    }
                }
                if text.is_empty() {
                    return Ok(Asked::Leave);
                }
                let verdict = Verdict::Answer(text.join("\n"));
                Ok(Asked::Decided(GateCall {
                    gate: Some(gate.path.to_string()),
                    verdict,
                    role: None,
                    comment: None,
                }))
            }
            // A blocked step (or a wait this prompt does not know) is left as it is.
            _ => Ok(Asked::Leave),
        }
    })();
    asked.unwrap_or_else(|stop| stop)
}
