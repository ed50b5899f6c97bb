//! Per-run control: the handle a host uses to pause or cancel a run while
//! this engine drives it (a signal handler, a server's request). It holds
//! no runtime type in its API.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};

use cairn_domain::id::RunId;
use tokio::sync::watch;

/// What a driver is asked to do from outside.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) enum Control {
    /// Drive on.
    #[default]
    Run,
    /// Start nothing new; let running steps finish; record `run_paused`.
    Pause,
    /// Stop running steps; record them and the run `cancelled`.
    Cancel,
}

/// Pauses or cancels one run while an engine drives it. Cheap to clone;
/// a request made before the run is driven applies when it is.
#[derive(Clone)]
pub struct RunControl(Arc<watch::Sender<Control>>);

impl RunControl {
    fn new() -> Self {
        Self(Arc::new(watch::Sender::new(Control::Run)))
    }

    /// The driver starts nothing new, lets what runs finish, and records
    /// the run paused.
    pub fn pause(&self) {
        self.request(Control::Pause);
    }

    /// The driver stops what runs and records the run cancelled.
    pub fn cancel(&self) {
        self.request(Control::Cancel);
    }

    /// Whether a pause or cancel is asked and not yet carried out.
    pub fn is_requested(&self) -> bool {
        *self.0.borrow() != Control::Run
    }

    fn request(&self, control: Control) {
        // A cancel is never downgraded to a pause.
        self.0.send_if_modified(|now| {
            let changed = *now != control && *now != Control::Cancel;
            if changed {
                *now = control;
            }
            changed
        });
    }

    /// What the driver watches.
    pub(crate) fn watch(&self) -> watch::Receiver<Control> {
        self.0.subscribe()
    }

    /// The request was carried out: the next drive starts afresh.
    pub(crate) fn done(&self) {
        self.0.send_replace(Control::Run);
    }
}

/// The handles of the runs of one engine, by run, and the runs it drives now.
#[derive(Default)]
pub(crate) struct Controls {
    handles: Mutex<HashMap<RunId, RunControl>>,
    driven: Arc<Mutex<HashSet<RunId>>>,
}

impl Controls {
    /// The handle of `run`, made on first use.
    pub(crate) fn of(&self, run: &RunId) -> RunControl {
        let mut all = self.handles.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        all.entry(run.clone()).or_insert_with(RunControl::new).clone()
    }

    /// Marks `run` driven by this engine until the guard is dropped.
    pub(crate) fn driving(&self, run: &RunId) -> Driving {
        lock(&self.driven).insert(run.clone());
        Driving { run: run.clone(), driven: Arc::clone(&self.driven) }
    }

    /// Whether this engine drives `run` now.
    pub(crate) fn drives(&self, run: &RunId) -> bool {
        lock(&self.driven).contains(run)
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// A run marked driven; unmarked when dropped, however the drive ends.
pub(crate) struct Driving {
    run: RunId,
    driven: Arc<Mutex<HashSet<RunId>>>,
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
        handle.cancel();
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
        let guard = controls.driving(&run);
        assert!(controls.drives(&run));
        drop(guard);
        assert!(!controls.drives(&run));
    }
}
