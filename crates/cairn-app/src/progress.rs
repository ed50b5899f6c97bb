//! Live progress on stderr: each step starting, finishing, retrying, with
//! durations. Stdout stays free for the result (and for `--format json`).
//!
//! On a terminal ([`Look`]) the marks are coloured (green done, red failed,
//! yellow waiting) and a live line under them shows the steps running now
//! with a spinner and their time, redrawn every 100 ms. Anywhere else the
//! lines are plain, one per transition, and nothing is redrawn.

use std::collections::HashMap;
use std::io::Write;
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use anstyle::{AnsiColor, Style};
use cairn_domain::id::RunId;
use cairn_domain::state::{Event, EventKind, RunStatus, StepPath, Timestamp, word};
use cairn_ports::{EventSink, LiveEvent};

use crate::cli::term::{Look, stderr_width};
use crate::view::time;

/// How often the live line is redrawn.
const TICK: Duration = Duration::from_millis(100);
/// How long a step runs before the live line shows it: quick steps never flicker.
const SHOW_AFTER: Duration = Duration::from_millis(500);
/// The spinner's frames.
const FRAMES: [char; 10] = ['⠋', '⠙', '⠹', '⠸', '⠼', '⠴', '⠦', '⠧', '⠇', '⠏'];
/// Erases the terminal line the cursor is on and goes to its start.
const ERASE: &str = "\r\x1b[2K";

/// Prints one line per step transition to stderr.
#[derive(Default)]
pub struct Progress {
    started: Mutex<HashMap<StepPath, Timestamp>>,
    look: Look,
    /// The live line, shared with the thread that redraws it.
    screen: Arc<Mutex<Screen>>,
}

/// What the live line shows, and whether it is on the terminal now.
#[derive(Default)]
struct Screen {
    /// The steps running now, and when this process saw each start.
    running: Vec<(StepPath, Instant)>,
    /// The live line is on the terminal (the cursor at its end).
    drawn: bool,
    /// The spinner's next frame.
    frame: usize,
    /// Colour the spinner.
    colour: bool,
    /// Nothing more is drawn: the progress went away.
    closed: bool,
}

impl Progress {
    /// Progress that looks as `look` says: plain lines, or coloured with a
    /// live line redrawn by a thread of its own.
    pub fn new(look: Look) -> Self {
        let screen = Arc::new(Mutex::new(Screen { colour: look.colour, ..Screen::default() }));
        if look.live {
            let weak = Arc::downgrade(&screen);
            let _ = std::thread::Builder::new().name("cairn-progress".into()).spawn(move || redraw(&weak));
        }
        Self { started: Mutex::default(), look, screen }
    }

    fn line(&self, run: &RunId, e: &Event) -> Option<String> {
        let (kind, at) = (&e.kind, e.at);
        let mut started = self.started.lock().ok()?;
        let took = |path: &StepPath| started.get(path).map(|t| time::between(*t, at)).unwrap_or_default();
        let paint = |style: Style, text: &str| -> String {
            if self.look.colour {
                format!("{}{text}{}", style.render(), style.render_reset())
            } else {
                text.to_owned()
            }
        };
        let (green, red, yellow, dim) =
            (fg(AnsiColor::Green), fg(AnsiColor::Red), fg(AnsiColor::Yellow), Style::new().dimmed());
        Some(match kind {
            // The first start follows `run_created`; later ones (a resume,
            // a decision driven on) go on.
            EventKind::RunStarted if e.seq == 2 => format!("run {run} started"),
            EventKind::RunStarted => format!("run {run} goes on"),
            EventKind::StepStarted { path, attempt } => {
                started.insert(path.clone(), at);
                if *attempt > 1 {
                    format!("  {} {path} (attempt {attempt})", paint(dim, "▸"))
                } else {
                    format!("  {} {path}", paint(dim, "▸"))
                }
            }
            EventKind::StepSucceeded { path, .. } => match took(path) {
                // A step re-run after a restart started in an earlier process.
                t if t.is_empty() => format!("  {} {path}", paint(green, "✓")),
                t => format!("  {} {path} ({t})", paint(green, "✓")),
            },
            EventKind::StepFailed { path, attempt, error, retry_at, .. } => {
                // How long the attempt took, when this process saw it start.
                let took = match took(path) {
                    t if t.is_empty() => t,
                    t => format!(" ({t})"),
                };
                let mut line = match retry_at {
                    Some(due) => format!(
                        "  {} {path} attempt {attempt}{took}: {}: {}; retrying in {}",
                        paint(yellow, "✗"),
                        error.class,
                        error.message,
                        time::between(at, *due)
                    ),
                    None => format!(
                        "  {} {path} {}{took}: {}: {}",
                        paint(red, "✗"),
                        paint(red, "failed"),
                        error.class,
                        error.message
                    ),
                };
                if let (None, Some(hint)) = (retry_at, crate::view::hint(error)) {
                    line.push_str(&format!("\n    hint: {hint}"));
                }
                line
            }
            EventKind::StepSkipped { path, reason, .. } => {
                format!("  {} {path} skipped: {reason}", paint(dim, "↷"))
            }
            EventKind::StepCancelled { path } => format!("  {} {path} cancelled", paint(dim, "■")),
            EventKind::StepWaiting { path, wait, .. } => {
                format!(
                    "  {} {path} {}",
                    paint(yellow, "⏸"),
                    paint(yellow, &format!("waits for {}", word(*wait)))
                )
            }
            EventKind::GotoTaken { from, to, .. } => format!("  ↺ {from} failed: running again from {to}"),
            _ => return None,
        })
    }

    /// Writes `lines` to stderr in one write (stderr is unbuffered): the
    /// lines of one append cost one system call, not one each. On a
    /// terminal the live line is erased first and drawn again after them,
    /// as `events` moved the steps running.
    fn write(&self, lines: impl IntoIterator<Item = String>, events: &[&EventKind]) {
        let mut text = String::new();
        for line in lines {
            text.push_str(&line);
            text.push('\n');
        }
        if !self.look.live {
            if !text.is_empty() {
                let _ = std::io::stderr().lock().write_all(text.as_bytes());
            }
            return;
        }
        let Ok(mut screen) = self.screen.lock() else { return };
        for kind in events {
            screen.follow(kind, Instant::now());
        }
        let mut out = String::new();
        if screen.drawn && !text.is_empty() {
            out.push_str(ERASE);
            screen.drawn = false;
        }
        out.push_str(&text);
        out.push_str(&screen.draw(Instant::now()));
        if !out.is_empty() {
            let _ = std::io::stderr().lock().write_all(out.as_bytes());
        }
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        if let Ok(mut screen) = self.screen.lock() {
            screen.closed = true;
            screen.running.clear();
            let erase = screen.draw(Instant::now());
            if !erase.is_empty() {
                let _ = std::io::stderr().lock().write_all(erase.as_bytes());
            }
        }
    }
}

impl Screen {
    /// Follows the steps running as `kind` moves them.
    fn follow(&mut self, kind: &EventKind, now: Instant) {
        match kind {
            EventKind::StepStarted { path, .. } => {
                self.running.retain(|(p, _)| p != path);
                self.running.push((path.clone(), now));
            }
            EventKind::StepSucceeded { path, .. }
            | EventKind::StepFailed { path, .. }
            | EventKind::StepSkipped { path, .. }
            | EventKind::StepCancelled { path }
            | EventKind::StepWaiting { path, .. } => self.running.retain(|(p, _)| p != path),
            // The run stopped moving: nothing runs any more.
            other if other.run_status().is_some_and(|s| s != RunStatus::Running) => self.running.clear(),
            _ => {}
        }
    }

    /// What to write to bring the terminal up to date: the live line drawn
    /// again (after erasing the last one), or erased when nothing has run
    /// long enough to show; empty when nothing changes.
    fn draw(&mut self, now: Instant) -> String {
        let shown = self.running.iter().find(|(_, since)| now.duration_since(*since) >= SHOW_AFTER);
        let Some((path, since)) = shown.filter(|_| !self.closed) else {
            let erase = if self.drawn { ERASE.to_owned() } else { String::new() };
            self.drawn = false;
            return erase;
        };
        let frame = FRAMES[self.frame % FRAMES.len()];
        self.frame += 1;
        let took = time::duration(u64::try_from(now.duration_since(*since).as_millis()).unwrap_or(u64::MAX));
        let more = match self.running.len() - 1 {
            0 => String::new(),
            n => format!(" (+{n} more running)"),
        };
        let mut rest = format!(" {path} {took}{more}");
        // A line wider than the terminal wraps, and erasing it would leave its first part.
        if let Some(width) = stderr_width() {
            rest = fit(&rest, width.saturating_sub(2));
        }
        let line = if self.colour {
            let style = fg(AnsiColor::Cyan);
            format!("{}{frame}{}{rest}", style.render(), style.render_reset())
        } else {
            format!("{frame}{rest}")
        };
        self.drawn = true;
        format!("{ERASE}{line}")
    }
}

/// `text` cut to at most `width` columns.
fn fit(text: &str, width: usize) -> String {
    use unicode_width::UnicodeWidthChar;
    let mut used = 0;
    text.chars()
        .take_while(|c| {
            used += c.width().unwrap_or(0);
            used <= width
        })
        .collect()
}

fn fg(colour: AnsiColor) -> Style {
    Style::new().fg_color(Some(colour.into()))
}

/// Redraws the live line every [`TICK`] until its progress goes away.
fn redraw(screen: &Weak<Mutex<Screen>>) {
    loop {
        std::thread::sleep(TICK);
        let Some(screen) = screen.upgrade() else { return };
        let Ok(mut screen) = screen.lock() else { return };
        if screen.closed {
            return;
        }
        let out = screen.draw(Instant::now());
        if !out.is_empty() {
            let _ = std::io::stderr().lock().write_all(out.as_bytes());
        }
    }
}

impl EventSink for Progress {
    fn emit(&self, run: &RunId, event: &LiveEvent<'_>) {
        match event {
            LiveEvent::Recorded(e) => self.write(self.line(run, e), &[&e.kind]),
            LiveEvent::Note { path, text } => self.write(Some(format!("    {path}: {text}")), &[]),
            // Streamed text is for hosts that show it; the summary prints answers.
            LiveEvent::Token { .. } => {}
        }
    }

    fn recorded(&self, run: &RunId, events: &[Event]) {
        let kinds: Vec<&EventKind> = events.iter().map(|e| &e.kind).collect();
        self.write(events.iter().filter_map(|e| self.line(run, e)), &kinds);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cairn_domain::state::{ErrorClass, StepError};

    /// An event of `kind` at `ms`, past the run's start.
    fn ev(kind: EventKind, ms: u64) -> Event {
        Event { seq: 9, at: Timestamp(ms), actor: "engine".into(), kind }
    }

    #[test]
    fn only_the_first_start_of_a_run_says_started() {
        let progress = Progress::new(Look::default());
        let run = RunId::new("r1").expect("id");
        let first = Event { seq: 2, ..ev(EventKind::RunStarted, 0) };
        assert_eq!(progress.line(&run, &first).as_deref(), Some("run r1 started"));
        assert_eq!(progress.line(&run, &ev(EventKind::RunStarted, 5)).as_deref(), Some("run r1 goes on"));
    }

    #[test]
    fn a_failure_whose_start_this_process_did_not_see_has_no_empty_time() {
        let progress = Progress::new(Look::default());
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
            progress.line(&run, &ev(failed(0), 5)).as_deref(),
            Some("  ✗ draft failed: fatal: it broke")
        );
        progress.line(&run, &ev(EventKind::StepStarted { path: path.clone(), attempt: 1 }, 1_000));
        assert_eq!(
            progress.line(&run, &ev(failed(1), 1_250)).as_deref(),
            Some("  ✗ draft failed (250ms): fatal: it broke")
        );
    }

    #[test]
    fn on_a_terminal_the_marks_are_coloured_and_elsewhere_plain() {
        let run = RunId::new("r1").expect("id");
        let path = StepPath::new("draft");
        let done = EventKind::StepSucceeded { path: path.clone(), output: serde_json::Value::Null };
        let waits = EventKind::StepWaiting {
            path: path.clone(),
            wait: cairn_domain::state::WaitKind::Approval,
            message: None,
            questions: Vec::new(),
            deadline: None,
        };
        let plain = Progress::new(Look::default());
        assert_eq!(plain.line(&run, &ev(done.clone(), 5)).as_deref(), Some("  ✓ draft"));
        let painted = Progress::new(Look { colour: true, live: false });
        assert_eq!(painted.line(&run, &ev(done.clone(), 5)).as_deref(), Some("  \u{1b}[32m✓\u{1b}[0m draft"));
        assert_eq!(
            painted.line(&run, &ev(waits.clone(), 5)).as_deref(),
            Some("  \u{1b}[33m⏸\u{1b}[0m draft \u{1b}[33mwaits for approval\u{1b}[0m")
        );
        assert!(!plain.line(&run, &ev(waits.clone(), 5)).unwrap_or_default().contains('\u{1b}'));
    }

    #[test]
    fn the_live_line_shows_a_long_running_step_and_goes_when_nothing_runs() {
        let t0 = Instant::now();
        let at = |ms: u64| t0 + Duration::from_millis(ms);
        let started = |p: &str| EventKind::StepStarted { path: StepPath::new(p), attempt: 1 };
        let mut screen = Screen::default();
        screen.follow(&started("draft"), at(0));
        assert_eq!(screen.draw(at(100)), "", "a quick step never shows");
        assert_eq!(screen.draw(at(1_200)), "\r\x1b[2K⠋ draft 1.2s");
        screen.follow(&started("review"), at(1_000));
        assert_eq!(screen.draw(at(1_300)), "\r\x1b[2K⠙ draft 1.3s (+1 more running)");
        let done = EventKind::StepSucceeded { path: StepPath::new("draft"), output: serde_json::Value::Null };
        screen.follow(&done, at(1_400));
        assert_eq!(screen.draw(at(1_600)), "\r\x1b[2K⠹ review 600ms");
        screen.follow(&EventKind::RunCompleted, at(1_700));
        assert_eq!(screen.draw(at(1_800)), "\r\x1b[2K", "erased when the run stops moving");
        assert_eq!(screen.draw(at(1_900)), "", "and not drawn again");
    }
}
