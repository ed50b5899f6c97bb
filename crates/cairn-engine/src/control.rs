//! Per-run control: the handle a host uses to pause or cancel a run while
//! this engine drives it (a signal handler, a server's request). It holds
//! no runtime type in its API.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use cairn_domain::id::RunId;
use cairn_domain::state::RunState;
use cairn_domain::steer::{GateCall, Request};
use tokio::sync::{mpsc, oneshot, watch};

use crate::EngineError;

/// What a driver is asked to do from outside.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) enum Control {
    /// Drive on.
    #[default]
    Run,
    /// Start nothing new; let running steps finish; record `run_paused`.
    Pause,
    /// Stop running steps and record nothing: the process is going away,
    /// and the next drive runs them again as the same attempts.
    Interrupt,
    /// Stop running steps; record them and the run `cancelled`.
    Cancel,
}

impl Control {
    /// Which request overrides which: a later request never weakens an
    /// earlier one (a cancel stays a cancel).
    fn strength(self) -> u8 {
        match self {
            Self::Run => 0,
            Self::Pause => 1,
            Self::Interrupt => 2,
            Self::Cancel => 3,
        }
    }
}

/// Pauses or cancels one run while an engine drives it. Cheap to clone;
/// a request made before the run is driven applies when it is.
#[derive(Clone)]
pub struct RunControl {
    asked: Arc<watch::Sender<Control>>,
    /// Who asked for the pause or cancel in force: the actor of what the
    /// driver records for it (the engine's own when nobody said).
    by: Arc<Mutex<Option<String>>>,
}

impl RunControl {
    fn new() -> Self {
        Self { asked: Arc::new(watch::Sender::new(Control::Run)), by: Arc::default() }
    }

    /// The driver starts nothing new, lets what runs finish, and records
    /// the run paused.
    pub fn pause(&self) {
        let _ = self.request(Control::Pause);
    }

    /// The driver stops what runs and records the run cancelled.
    pub fn cancel(&self) {
        let _ = self.request(Control::Cancel);
    }

    /// Asks for `request` (a pause or a cancel), recorded as done by `by`
    /// when given (else by the engine).
    pub fn ask(&self, request: Request, by: Option<&str>) {
        let control = match request {
            Request::Pause => Control::Pause,
            Request::Cancel => Control::Cancel,
        };
        if self.request(control) {
            *lock(&self.by) = by.map(str::to_owned);
        }
    }

    /// Who asked for the request in force, if anyone said.
    pub(crate) fn requester(&self) -> Option<String> {
        lock(&self.by).clone()
    }

    /// The driver stops what runs at once and records nothing, leaving the
    /// run `running`: for a process that shuts down, whose successor drives
    /// the run on (the attempts in flight run again with the same keys).
    pub fn interrupt(&self) {
        let _ = self.request(Control::Interrupt);
    }

    /// Whether a pause or cancel is asked and not yet carried out.
    pub fn is_requested(&self) -> bool {
        *self.asked.borrow() != Control::Run
    }

    /// Asks for `control` unless a stronger request is in force; says
    /// whether it now is the one in force.
    fn request(&self, control: Control) -> bool {
        // A cancel is never downgraded to a pause.
        self.asked.send_if_modified(|now| {
            let changed = control.strength() > now.strength();
            if changed {
                *now = control;
            }
            changed
        })
    }

    /// What the driver watches.
    pub(crate) fn watch(&self) -> watch::Receiver<Control> {
        self.asked.subscribe()
    }

    /// Withdraws a pause or cancel not carried out (its asker recorded it
    /// another way): the next drive starts afresh.
    pub fn withdraw(&self) {
        self.done();
    }

    /// The request was carried out: the next drive starts afresh.
    pub(crate) fn done(&self) {
        self.asked.send_replace(Control::Run);
        *lock(&self.by) = None;
    }
}

/// A decision at a gate of a run this engine drives, handed to its driver
/// so that only one writer appends to the run: the driver records it
/// between rounds and answers with the state after it.
pub(crate) struct Asked {
    /// The decision.
    pub(crate) call: GateCall,
    /// Who decided.
    pub(crate) by: String,
    /// Where the driver answers.
    pub(crate) answer: oneshot::Sender<Result<RunState, EngineError>>,
}

/// Where a driver takes [`Asked`] decisions.
pub(crate) type Mailbox = mpsc::UnboundedReceiver<Asked>;

/// The handles of the runs of one engine, by run, and the runs it drives
/// now with the mailbox of each driver.
#[derive(Default)]
pub(crate) struct Controls {
    handles: Mutex<HashMap<RunId, RunControl>>,
    driven: Arc<Mutex<HashMap<RunId, mpsc::UnboundedSender<Asked>>>>,
}

impl Controls {
    /// The handle of `run`, made on first use.
    pub(crate) fn of(&self, run: &RunId) -> RunControl {
        let mut all = self.handles.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        all.entry(run.clone()).or_insert_with(RunControl::new).clone()
    }

    /// Marks `run` driven by this engine until the guard is dropped; the
    /// driver takes decisions from the mailbox.
    pub(crate) fn driving(&self, run: &RunId) -> (Driving, Mailbox) {
        let (send, mailbox) = mpsc::unbounded_channel();
        lock(&self.driven).insert(run.clone(), send);
        (Driving { run: run.clone(), driven: Arc::clone(&self.driven) }, mailbox)
    }

    /// Whether this engine drives `run` now.
    pub(crate) fn drives(&self, run: &RunId) -> bool {
        lock(&self.driven).contains_key(run)
    }

    /// Where decisions about `run` go while this engine drives it.
    pub(crate) fn mailbox(&self, run: &RunId) -> Option<mpsc::UnboundedSender<Asked>> {
        lock(&self.driven).get(run).cloned()
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// A run marked driven; unmarked when dropped, however the drive ends.
pub(crate) struct Driving {
    run: RunId,
    driven: Arc<Mutex<HashMap<RunId, mpsc::UnboundedSender<Asked>>>>,
}

impl Drop for Driving {
    fn drop(&mut self) {
        lock(&self.driven).remove(&self.run);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cancel_is_never_downgraded_and_done_starts_afresh() {
        let controls = Controls::default();
        let run = RunId::new("r1").expect("id");
        let handle = controls.of(&run);
        let watched = controls.of(&run).watch();
        assert!(!handle.is_requested());
        handle.pause();
        handle.interrupt();
        assert_eq!(*watched.borrow(), Control::Interrupt, "an interrupt overrides a pause");
        handle.pause();
        assert_eq!(*watched.borrow(), Control::Interrupt, "and is not weakened by one");
        handle.cancel();
        handle.interrupt();
        handle.pause();
        assert_eq!(*watched.borrow(), Control::Cancel);
        handle.done();
        assert_eq!(*watched.borrow(), Control::Run);
        assert!(!controls.of(&run).is_requested());
    }

    #[test]
    fn a_run_is_driven_while_its_guard_lives() {
        let controls = Controls::default();
        let run = RunId::new("r1").expect("id");
        assert!(!controls.drives(&run));
        let (guard, _mailbox) = controls.driving(&run);
        assert!(controls.drives(&run));
        drop(guard);
        assert!(!controls.drives(&run));
    }
}
