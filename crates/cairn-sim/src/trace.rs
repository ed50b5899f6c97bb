//! What happened in a simulation, line by line with its simulated time:
//! printed when a seed fails, and compared byte for byte to prove that a
//! seed replays exactly.

use std::fmt::Display;
use std::sync::{Arc, Mutex};

use crate::clock::SimClock;

/// The lines of one simulation, in the order things happened.
pub struct Trace {
    clock: Arc<SimClock>,
    lines: Mutex<Vec<String>>,
}

impl Trace {
    /// An empty trace timed by `clock`.
    pub fn new(clock: Arc<SimClock>) -> Self {
        Self { clock, lines: Mutex::default() }
    }

    /// Adds a line, stamped with the simulated time.
    pub fn note(&self, line: impl Display) {
        let ns = self.clock.now_ns();
        let line = format!("{:>6}.{:06}s {line}", ns / 1_000_000_000, ns % 1_000_000_000 / 1_000);
        self.lines.lock().unwrap_or_else(std::sync::PoisonError::into_inner).push(line);
    }

    /// Every line so far.
    pub fn lines(&self) -> Vec<String> {
        self.lines.lock().unwrap_or_else(std::sync::PoisonError::into_inner).clone()
    }
}
