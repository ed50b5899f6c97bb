//! Live progress on stderr: each step starting, finishing, retrying, with
//! durations. Stdout stays free for the result (and for `--format json`).

use std::collections::HashMap;
use std::io::Write;
use std::sync::Mutex;

use cairn_domain::id::RunId;
use cairn_domain::state::{Event, EventKind, StepPath, Timestamp, word};
use cairn_ports::{EventSink, LiveEvent};

use crate::view::elapsed;

/// Prints one line per step transition to stderr.
#[derive(Default)]
pub struct Progress {
    started: Mutex<HashMap<StepPath, Timestamp>>,
}

impl Progress {
    fn line(&self, run: &RunId, kind: &EventKind, at: Timestamp) -> Option<String> {
        let mut started = self.started.lock().ok()?;
        let took = |path: &StepPath| started.get(path).map(|t| elapsed(*t, at)).unwrap_or_default();
        Some(match kind {
            EventKind::RunStarted => format!("run {run} started"),
            EventKind::StepStarted { path, attempt } => {
                started.insert(path.clone(), at);
                if *attempt > 1 {
                    format!("  ▸ {path} (attempt {attempt})")
                } else {
                    format!("  ▸ {path}")
                }
            }
            EventKind::StepSucceeded { path, .. } => match took(path) {
                // A step re-run after a restart started in an earlier process.
                t if t.is_empty() => format!("  ✓ {path}"),
                t => format!("  ✓ {path} ({t})"),
            },
            EventKind::StepFailed { path, attempt, error, retry_at, .. } => {
                // How long the attempt took, when this process saw it start.
                let took = match took(path) {
                    t if t.is_empty() => t,
                    t => format!(" ({t})"),
                };
                let mut line = match retry_at {
                    Some(due) => format!(
                        "  ✗ {path} attempt {attempt}{took}: {}: {}; retrying in {}",
                        error.class,
                        error.message,
                        elapsed(at, *due)
                    ),
                    None => format!("  ✗ {path} failed{took}: {}: {}", error.class, error.message),
                };
                if let (None, Some(hint)) = (retry_at, crate::view::hint(error)) {
                    line.push_str(&format!("\n    hint: {hint}"));
                }
                line
            }
            EventKind::StepSkipped { path, reason, .. } => format!("  ↷ {path} skipped: {reason}"),
            EventKind::StepCancelled { path } => format!("  ■ {path} cancelled"),
            EventKind::StepWaiting { path, wait, .. } => format!("  ⏸ {path} waits for {}", word(*wait)),
            EventKind::GotoTaken { from, to, .. } => format!("  ↺ {from} failed: running again from {to}"),
            _ => return None,
        })
    }
}

impl EventSink for Progress {
    fn emit(&self, run: &RunId, event: &LiveEvent<'_>) {
        let line = match event {
            LiveEvent::Recorded(e) => self.line(run, &e.kind, e.at),
            LiveEvent::Note { path, text } => Some(format!("    {path}: {text}")),
            // Streamed text is for hosts that show it; the summary prints answers.
            LiveEvent::Token { .. } => None,
        };
        write_lines(line);
    }

    fn recorded(&self, run: &RunId, events: &[Event]) {
        write_lines(events.iter().filter_map(|e| self.line(run, &e.kind, e.at)));
    }
}

/// Writes `lines` to stderr in one write (stderr is unbuffered): the lines
/// of one append cost one system call, not one each.
fn write_lines(lines: impl IntoIterator<Item = String>) {
    let mut text = String::new();
    for line in lines {
        text.push_str(&line);
        text.push('\n');
    }
    if !text.is_empty() {
        let _ = std::io::stderr().lock().write_all(text.as_bytes());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cairn_domain::state::{ErrorClass, StepError};

    #[test]
    fn a_failure_whose_start_this_process_did_not_see_has_no_empty_time() {
        let progress = Progress::default();
        let run = RunId::new("r1").expect("id");
        let path = StepPath::new("draft");
        let failed = |attempt| EventKind::StepFailed {
            path: path.clone(),
            attempt,
            error: StepError::new(ErrorClass::Fatal, "it broke"),
            output: None,
            retry_at: None,
        };
        assert_eq!(
            progress.line(&run, &failed(0), Timestamp(5)).as_deref(),
            Some("  ✗ draft failed: fatal: it broke")
        );
        progress.line(&run, &EventKind::StepStarted { path: path.clone(), attempt: 1 }, Timestamp(1_000));
        assert_eq!(
            progress.line(&run, &failed(1), Timestamp(1_250)).as_deref(),
            Some("  ✗ draft failed (250ms): fatal: it broke")
        );
    }
}
