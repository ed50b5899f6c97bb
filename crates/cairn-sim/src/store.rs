//! A [`RunStore`] with a disk that can lose power: appends are visible at
//! once (the page cache) but durable only once synced, and a power cut
//! keeps only what was synced. `append` and `create` sync before they
//! return (the `durability = "sync"` promise), so a power cut may lose
//! only appends that had not returned. Appends also fail from the seed:
//! refused before writing, torn (written, then rolled back), or
//! ambiguous (synced, yet reported failed); so do loads (an `EIO`).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use async_trait::async_trait;
use cairn_domain::id::RunId;
use cairn_domain::state::{Event, EventKind};
use cairn_ports::{NewRun, RunPage, RunQuery, RunStore, RunSummary, Snapshot, StoreError, StoredRun};

use crate::clock::SimClock;
use crate::rng::Rng;
use crate::trace::Trace;

/// How long one sync takes, in simulated time (a fast SSD's fsync).
const SYNC: Duration = Duration::from_micros(700);

/// A write that fails, drawn from the seed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WriteFault {
    /// Refused before anything is written (`EIO`, `ENOSPC`).
    Refused,
    /// Written, then found torn and rolled back; reported failed.
    Torn,
    /// Written and synced, but reported failed (the reply was lost).
    Ambiguous,
}

/// Which writes and reads fail: each with `percent` chance, at most `left`
/// more in all.
pub struct DiskFaults {
    rng: Rng,
    percent: u64,
    left: u32,
}

impl DiskFaults {
    /// Faults drawn from `seed`: each write or read fails with `percent`
    /// chance, `budget` times at most, so a run always gets through in the end.
    pub fn new(seed: u64, percent: u64, budget: u32) -> Self {
        Self { rng: Rng::new(seed), percent, left: budget }
    }

    /// Whether the next read fails.
    fn draw_read(&mut self) -> bool {
        if self.left == 0 || !self.rng.chance(self.percent) {
            return false;
        }
        self.left -= 1;
        true
    }

    fn draw(&mut self) -> Option<WriteFault> {
        if self.left == 0 || !self.rng.chance(self.percent) {
            return None;
        }
        self.left -= 1;
        Some(match self.rng.below(3) {
            0 => WriteFault::Refused,
            1 => WriteFault::Torn,
            _ => WriteFault::Ambiguous,
        })
    }
}

/// Keeps `successes` (`run/step`) up to date with one event: a success
/// adds its step; a rework, a reset or a `goto` takes the steps it opens
/// again (and everything below them) out, since they are to run again.
fn note_success(successes: &mut BTreeSet<String>, run: &RunId, kind: &EventKind) {
    if let EventKind::StepSucceeded { path, .. } = kind {
        successes.insert(format!("{run}/{path}"));
    }
    forget_reopened(successes, run, kind);
}

/// Takes the steps `kind` opens again out of `successes`.
fn forget_reopened(successes: &mut BTreeSet<String>, run: &RunId, kind: &EventKind) {
    let reopened = match kind {
        EventKind::StepReworked { path } | EventKind::StepReset { path } => vec![path],
        EventKind::GotoTaken { reset, .. } => reset.iter().collect(),
        _ => return,
    };
    for path in reopened {
        let step = format!("{run}/{path}");
        let below = format!("{step}/");
        successes.retain(|s| *s != step && !s.starts_with(&below));
    }
}

/// One run on the simulated disk.
struct Log {
    definition_name: String,
    definition: String,
    files: BTreeMap<String, String>,
    events: Vec<Event>,
    /// How many of `events` are durable.
    synced: usize,
    /// Whether the run's creation is durable.
    created: bool,
    snapshot: Option<Snapshot>,
    durable_snapshot: Option<Snapshot>,
}

#[derive(Default)]
struct Disk {
    runs: BTreeMap<RunId, Log>,
    /// `run/step` of every success that became durable: a model or a
    /// program called for one of these again breaks the contract.
    succeeded: BTreeSet<String>,
    /// `run/step` of every success an `append` returned `Ok` for: the
    /// engine may act on these, so they must never run again either.
    acknowledged: BTreeSet<String>,
    faults: Option<DiskFaults>,
}

impl Disk {
    /// Everything written becomes durable (one log, one fsync: group commit).
    fn settle(&mut self) {
        for (id, log) in &mut self.runs {
            for e in &log.events[log.synced..] {
                note_success(&mut self.succeeded, id, &e.kind);
                // A durable reset is acted on even when its append was
                // reported failed.
                forget_reopened(&mut self.acknowledged, id, &e.kind);
            }
            log.synced = log.events.len();
            log.created = true;
            log.durable_snapshot.clone_from(&log.snapshot);
        }
    }
}

/// Whether a store keeps the `durability = "sync"` promise.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Durability {
    /// A write returns once synced.
    Sync,
    /// A write returns before it is synced (what a store that skips its
    /// fsync does): a power cut takes back writes already acknowledged.
    /// Only for proving that the checks catch such a store.
    Lying,
}

/// The simulated store: see the module doc.
pub struct SimStore {
    durability: Durability,
    clock: Arc<SimClock>,
    trace: Arc<Trace>,
    disk: Mutex<Disk>,
}

impl SimStore {
    /// An empty disk on `clock`, whose writes fail as `faults` draws
    /// (never when `None`).
    pub fn new(clock: Arc<SimClock>, trace: Arc<Trace>, faults: Option<DiskFaults>) -> Self {
        Self::with_durability(Durability::Sync, clock, trace, faults)
    }

    /// [`SimStore::new`], keeping `durability`.
    pub fn with_durability(
        durability: Durability,
        clock: Arc<SimClock>,
        trace: Arc<Trace>,
        faults: Option<DiskFaults>,
    ) -> Self {
        Self { durability, clock, trace, disk: Mutex::new(Disk { faults, ..Disk::default() }) }
    }

    fn lock(&self) -> MutexGuard<'_, Disk> {
        self.disk.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Whether `run` exists (durably or not).
    pub fn exists(&self, run: &RunId) -> bool {
        self.lock().runs.contains_key(run)
    }

    /// Whether the success of `run/step` is durable (`"durable"`) or was
    /// acknowledged by an `append` (`"acknowledged"`): either way, the
    /// step must never run again.
    pub fn succeeded(&self, run_and_step: &str) -> Option<&'static str> {
        let disk = self.lock();
        if disk.succeeded.contains(run_and_step) {
            Some("durable")
        } else {
            disk.acknowledged.contains(run_and_step).then_some("acknowledged")
        }
    }

    /// Stops injecting faults: what the simulation reads at its end is read
    /// as it is.
    pub fn heal(&self) {
        self.lock().faults = None;
    }

    /// The power fails: everything not synced is lost.
    pub fn power_cut(&self) {
        let mut disk = self.lock();
        disk.runs.retain(|_, log| log.created);
        let mut lost = 0;
        for log in disk.runs.values_mut() {
            lost += log.events.len() - log.synced;
            log.events.truncate(log.synced);
            log.snapshot.clone_from(&log.durable_snapshot);
        }
        drop(disk);
        self.trace.note(format!("power cut: {lost} unsynced events lost"));
    }

    /// A process opens the store after another one died: the page cache
    /// survived, and recovery makes what it reads durable before serving it
    /// (as the sled store flushes what it replays from its log), so no
    /// later reader sees a state a power cut could still take back.
    pub fn recover(&self) {
        let mut disk = self.lock();
        let unsynced: usize = disk.runs.values().map(|log| log.events.len() - log.synced).sum();
        disk.settle();
        drop(disk);
        self.trace.note(format!("process crash: recovery syncs {unsynced} events the page cache kept"));
    }

    /// Waits for a sync, then makes everything written durable (a lying
    /// store skips it).
    async fn sync(&self) {
        if self.durability == Durability::Lying {
            return;
        }
        cairn_ports::Clock::sleep(&*self.clock, SYNC).await;
        self.lock().settle();
    }

    /// The fault the next write suffers, if any, noted in the trace.
    fn fault(&self, what: &str) -> Option<WriteFault> {
        let fault = self.lock().faults.as_mut().and_then(DiskFaults::draw);
        if let Some(f) = fault {
            self.trace.note(format!("store: {what} fails {f:?}"));
        }
        fault
    }

    /// Syncs, or fails a written change as `fault` says; `undo` rolls a
    /// torn change back.
    async fn finish(
        &self,
        fault: Option<WriteFault>,
        undo: impl FnOnce(&mut Disk),
    ) -> Result<(), StoreError> {
        match fault {
            None => {
                self.sync().await;
                Ok(())
            }
            Some(WriteFault::Torn) => {
                cairn_ports::Clock::sleep(&*self.clock, SYNC).await;
                undo(&mut self.lock());
                Err(StoreError::Io("a torn write was found and rolled back".into()))
            }
            Some(WriteFault::Ambiguous) => {
                self.sync().await;
                Err(StoreError::Io("the sync failed after the write reached the disk".into()))
            }
            Some(WriteFault::Refused) => Err(StoreError::Io("the disk refused the write".into())),
        }
    }
}

#[async_trait]
impl RunStore for SimStore {
    async fn create(&self, run: NewRun) -> Result<(), StoreError> {
        if run.created.seq != 1 || !matches!(run.created.kind, EventKind::RunCreated { .. }) {
            return Err(StoreError::Corrupt("a run starts with run_created, numbered 1".into()));
        }
        if self.exists(&run.run_id) {
            return Err(StoreError::AlreadyExists(run.run_id.to_string()));
        }
        let fault = self.fault("create");
        if fault == Some(WriteFault::Refused) {
            return self.finish(fault, |_| {}).await;
        }
        let id = run.run_id.clone();
        let log = Log {
            definition_name: run.definition_name,
            definition: run.definition,
            files: run.files,
            events: vec![run.created],
            synced: 0,
            created: false,
            snapshot: None,
            durable_snapshot: None,
        };
        self.lock().runs.insert(id.clone(), log);
        self.finish(fault, |disk| {
            disk.runs.remove(&id);
        })
        .await
    }

    async fn append(&self, run: &RunId, expected_seq: u64, events: &[Event]) -> Result<(), StoreError> {
        let before = {
            let disk = self.lock();
            let log = disk.runs.get(run).ok_or_else(|| StoreError::NotFound(run.to_string()))?;
            let actual = log.events.last().map_or(0, |e| e.seq);
            if actual != expected_seq {
                return Err(StoreError::Conflict { run: run.to_string(), expected: expected_seq, actual });
            }
            cairn_ports::follows(expected_seq, events)?;
            log.events.len()
        };
        let fault = self.fault("append");
        if fault == Some(WriteFault::Refused) {
            return self.finish(fault, |_| {}).await;
        }
        if let Some(log) = self.lock().runs.get_mut(run) {
            log.events.extend_from_slice(events);
        }
        self.finish(fault, |disk| {
            if let Some(log) = disk.runs.get_mut(run) {
                log.events.truncate(before);
            }
        })
        .await?;
        let mut disk = self.lock();
        for e in events {
            note_success(&mut disk.acknowledged, run, &e.kind);
        }
        Ok(())
    }

    async fn load(&self, run: &RunId, from_seq: u64) -> Result<StoredRun, StoreError> {
        let mut disk = self.lock();
        if disk.faults.as_mut().is_some_and(DiskFaults::draw_read) {
            drop(disk);
            self.trace.note("store: load fails".to_owned());
            return Err(StoreError::Io("the disk failed a read".into()));
        }
        let log = disk.runs.get(run).ok_or_else(|| StoreError::NotFound(run.to_string()))?;
        Ok(StoredRun {
            definition_name: log.definition_name.clone(),
            definition: log.definition.clone(),
            files: log.files.clone(),
            events: log.events.iter().filter(|e| e.seq >= from_seq).cloned().collect(),
        })
    }

    async fn list(&self, query: &RunQuery) -> Result<RunPage, StoreError> {
        let disk = self.lock();
        let summaries = disk.runs.values().filter_map(|log| RunSummary::fold(&log.events).ok());
        Ok(query.page(summaries.collect::<Vec<_>>()))
    }

    async fn put_snapshot(&self, run: &RunId, snapshot: Snapshot) -> Result<(), StoreError> {
        {
            let mut disk = self.lock();
            let log = disk.runs.get_mut(run).ok_or_else(|| StoreError::NotFound(run.to_string()))?;
            if log.snapshot.as_ref().is_none_or(|s| s.seq <= snapshot.seq) {
                log.snapshot = Some(snapshot);
            }
        }
        self.sync().await;
        Ok(())
    }

    async fn latest_snapshot(&self, run: &RunId) -> Result<Option<Snapshot>, StoreError> {
        let disk = self.lock();
        let log = disk.runs.get(run).ok_or_else(|| StoreError::NotFound(run.to_string()))?;
        Ok(log.snapshot.clone())
    }

    async fn delete(&self, run: &RunId) -> Result<(), StoreError> {
        self.lock().runs.remove(run).ok_or_else(|| StoreError::NotFound(run.to_string()))?;
        self.sync().await;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use cairn_domain::id::WorkflowId;
    use cairn_domain::state::{StepPath, Timestamp};
    use serde_json::json;

    use super::*;
    use crate::exec::{self, Ran};

    fn event(seq: u64, kind: EventKind) -> Event {
        Event { seq, at: Timestamp(seq), actor: "sim".into(), kind }
    }

    fn started(seq: u64) -> Event {
        event(seq, EventKind::StepStarted { path: StepPath::new(format!("s{seq}")), attempt: 1 })
    }

    fn new_run(id: &RunId) -> NewRun {
        let workflow = WorkflowId::new("wf").expect("id");
        let created = EventKind::RunCreated {
            run_id: id.clone(),
            workflow: workflow.clone(),
            definition_hash: "h".into(),
            inputs: json!({}),
            version: None,
            labels: Default::default(),
            priority: 0,
            parent: None,
        };
        NewRun {
            run_id: id.clone(),
            workflow,
            definition_name: "wf.yaml".into(),
            definition: "cairn: 1\n".into(),
            files: BTreeMap::new(),
            definition_hash: "h".into(),
            created: event(1, created),
        }
    }

    /// A simulated clock and the trace on it.
    fn clocked() -> (Arc<SimClock>, Arc<Trace>) {
        let clock = Arc::new(SimClock::new());
        let trace = Arc::new(Trace::new(clock.clone()));
        (clock, trace)
    }

    /// A store without faults holding one created run, `r`.
    fn created(clock: &Arc<SimClock>, trace: &Arc<Trace>) -> (SimStore, RunId) {
        let store = SimStore::new(clock.clone(), trace.clone(), None);
        let id = RunId::new("r").expect("id");
        let ran = exec::run(clock, store.create(new_run(&id)), None, &mut 0);
        assert!(matches!(ran, Ran::Done(Ok(()))), "{ran:?}");
        (store, id)
    }

    /// What a load would return, read past any fault.
    fn seqs(store: &SimStore, id: &RunId) -> Vec<u64> {
        store.lock().runs.get(id).map(|log| log.events.iter().map(|e| e.seq).collect()).unwrap_or_default()
    }

    #[test]
    fn reads_fail_as_the_seed_draws_until_healed() {
        let (clock, trace) = clocked();
        let (store, id) = created(&clock, &trace);
        store.lock().faults = Some(DiskFaults::new(3, 100, 30));
        let ran = exec::run(&clock, store.load(&id, 0), None, &mut 0);
        assert!(matches!(ran, Ran::Done(Err(StoreError::Io(_)))), "{ran:?}");
        store.heal();
        let ran = exec::run(&clock, store.load(&id, 0), None, &mut 0);
        assert!(matches!(&ran, Ran::Done(Ok(run)) if run.events.len() == 1), "{ran:?}");
    }

    #[test]
    fn a_power_cut_loses_only_appends_that_had_not_returned() {
        let (clock, trace) = clocked();
        let (store, id) = created(&clock, &trace);
        let ran = exec::run(&clock, store.append(&id, 1, &[started(2)]), None, &mut 0);
        assert!(matches!(ran, Ran::Done(Ok(()))), "{ran:?}");
        // Dropped while it waits for its sync: written, not durable.
        let ran = exec::run(&clock, store.append(&id, 2, &[started(3)]), Some(1), &mut 0);
        assert!(matches!(ran, Ran::Crashed), "{ran:?}");
        assert_eq!(seqs(&store, &id), [1, 2, 3], "the page cache shows it");
        store.power_cut();
        assert_eq!(seqs(&store, &id), [1, 2]);
        // After a process crash, recovery makes what it read durable.
        let ran = exec::run(&clock, store.append(&id, 2, &[started(3)]), Some(1), &mut 0);
        assert!(matches!(ran, Ran::Crashed), "{ran:?}");
        store.recover();
        store.power_cut();
        assert_eq!(seqs(&store, &id), [1, 2, 3]);
    }

    #[test]
    fn a_failed_append_leaves_nothing_unless_it_was_ambiguous() {
        let (clock, trace) = clocked();
        let (store, id) = created(&clock, &trace);
        // From now on every write fails, as the seed draws.
        store.lock().faults = Some(DiskFaults::new(3, 100, 30));
        let mut seen = BTreeSet::new();
        for _ in 0..30 {
            let last = *seqs(&store, &id).last().expect("events");
            let ran = exec::run(&clock, store.append(&id, last, &[started(last + 1)]), None, &mut 0);
            assert!(matches!(ran, Ran::Done(Err(StoreError::Io(_)))), "{ran:?}");
            let fault = trace.lines().last().cloned().unwrap_or_default();
            store.power_cut();
            let kept = seqs(&store, &id).last() == Some(&(last + 1));
            assert_eq!(kept, fault.ends_with("Ambiguous"), "{fault}");
            seen.insert(fault.rsplit(' ').next().unwrap_or_default().to_owned());
        }
        assert_eq!(seen.len(), 3, "{seen:?}");
    }
}
