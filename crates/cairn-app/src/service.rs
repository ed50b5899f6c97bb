//! Driving many runs at once in one long-lived process (`cairn serve`):
//! each run that should move is driven in a task of its own (at most a
//! limit at once, if one is set: the others wait their turn, higher
//! priority first), runs left
//! `running` by a process that stopped are driven on at start, and a run
//! waiting at a gate with a deadline is woken when the deadline passes.
//! Deadlines are read from what the run recorded, so a restart loses no
//! timer: no process has to come by for a deadline to fire. Registered
//! workflows with a schedule start a run at each tick.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, PoisonError};

use cairn_domain::id::{RunId, WorkflowId};
use cairn_domain::state::{RunState, RunStatus, Timestamp};
use cairn_domain::steer::Request;
use cairn_ports::RunQuery;
use tokio::task::JoinHandle;

use crate::app::{App, Run, Started};
use crate::error::Error;

mod work;

/// The runs one process drives, over one [`App`].
pub struct Service {
    app: Arc<App>,
    lanes: Mutex<Lanes>,
    /// The most runs driven at once (`None`: no limit).
    limit: Option<usize>,
    /// Wakes the scheduler when the catalog changed.
    catalog_changed: tokio::sync::Notify,
    /// Wakes the claiming of due runs (workers sharing a database).
    wakeup: Arc<tokio::sync::Notify>,
    /// Wakes the answering of requests handed to this worker.
    asked: Arc<tokio::sync::Notify>,
}

/// What is driven and what waits for a deadline.
#[derive(Default)]
struct Lanes {
    /// The drive of each run driven now.
    driving: HashMap<RunId, Lane>,
    /// The wake-up of each run waiting for a deadline.
    timers: HashMap<RunId, JoinHandle<()>>,
    /// Runs a request changes without their driver (see
    /// [`Service::steer`]): no drive starts under it.
    steering: HashMap<RunId, usize>,
    /// Runs asked to be driven while steered: driven when it is done.
    deferred: HashSet<RunId>,
    /// Pauses and cancels asked of a driven run, and by whom: its lane
    /// records one the driver ended before carrying out.
    stops: HashMap<RunId, (Request, String)>,
    /// Runs asked to be driven while the limit of drives is reached, in
    /// the order asked: each free lane takes the one of highest priority
    /// (the oldest run among equals).
    queued: Vec<RunId>,
    /// Set by [`Service::shutdown`]: nothing new is driven.
    stopping: bool,
    /// The task starting scheduled runs ([`Service::schedule`]).
    scheduler: Option<JoinHandle<()>>,
    /// The task keeping the search index up ([`Service::index`]).
    indexer: Option<JoinHandle<()>>,
    /// The tasks of this worker's part among others ([`Service::work`]).
    workers: Vec<JoinHandle<()>>,
    /// The requests handed to this worker it is answering now.
    answering: HashSet<u64>,
}

/// How often the scheduler reads the catalog again, at least: a workflow
/// registered with a schedule has its first tick looked at within this.
const SCHEDULES_READ_EVERY: std::time::Duration = std::time::Duration::from_secs(60);

/// How long the indexer lets events gather before it indexes the runs
/// they changed.
const INDEX_AFTER: std::time::Duration = std::time::Duration::from_secs(1);

/// One run's drive.
struct Lane {
    task: JoinHandle<()>,
    /// Asked to drive again while driven: what was asked may have come
    /// after the drive last looked (a decision recorded as it ended).
    again: bool,
}

impl Service {
    /// A service over `app`, driving nothing yet.
    pub fn new(app: Arc<App>) -> Arc<Self> {
        Self::limited(app, None)
    }

    /// A service over `app` that drives at most `limit` runs at once
    /// (`None`: no limit); the others wait their turn, higher priority
    /// first.
    pub fn limited(app: Arc<App>, limit: Option<usize>) -> Arc<Self> {
        Arc::new(Self {
            app,
            lanes: Mutex::new(Lanes::default()),
            limit: limit.map(|n| n.max(1)),
            catalog_changed: tokio::sync::Notify::new(),
            wakeup: Arc::default(),
            asked: Arc::default(),
        })
    }

    /// The operations the service drives runs with.
    pub fn app(&self) -> &Arc<App> {
        &self.app
    }

    fn lanes(&self) -> std::sync::MutexGuard<'_, Lanes> {
        self.lanes.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Drives `run` in the background until nothing moves without a
    /// person; a run driven already is looked at again when its drive ends.
    pub fn drive(self: &Arc<Self>, run: &RunId) {
        let mut lanes = self.lanes();
        if lanes.stopping {
            return;
        }
        if let Some(lane) = lanes.driving.get_mut(run) {
            lane.again = true;
            return;
        }
        if lanes.steering.contains_key(run) {
            lanes.deferred.insert(run.clone());
            return;
        }
        if let Some(timer) = lanes.timers.remove(run) {
            timer.abort();
        }
        if self.limit.is_some_and(|limit| lanes.driving.len() >= limit) {
            match self.app.leases() {
                // Due now in the database: this worker's next free lane,
                // or another worker's, claims it.
                Some(leases) => {
                    let (leases, run) = (Arc::clone(leases), run.clone());
                    tokio::spawn(async move {
                        if let Err(e) = leases.wake(&run).await {
                            tracing::warn!(run = %run, error = %e, "a run could not be queued");
                        }
                    });
                }
                None if !lanes.queued.contains(run) => lanes.queued.push(run.clone()),
                None => {}
            }
            return;
        }
        lanes.queued.retain(|queued| queued != run);
        let task = tokio::spawn(Arc::clone(self).lane(run.clone()));
        lanes.driving.insert(run.clone(), Lane { task, again: false });
    }

    /// Runs `change` (a request recorded on `run`: a decision, a raised
    /// budget) while no drive of `run` may start, so the request and a
    /// driver never append at once; a drive asked meanwhile starts after
    /// it. A drive already going takes decisions itself (the engine hands
    /// them to it), so `change` may run beside it.
    pub async fn steer<T>(self: &Arc<Self>, run: &RunId, change: impl std::future::Future<Output = T>) -> T {
        let _held = self.hold(run);
        change.await
    }

    /// Pauses or cancels `run` as `by`: through its driver when it is
    /// driven (the driver records it at a safe point), else recorded here
    /// while no drive may start. Returns the run as it stands after.
    pub async fn stop(self: &Arc<Self>, run: &RunId, request: Request, by: &str) -> Result<Run, Error> {
        let held = {
            let mut lanes = self.lanes();
            if lanes.driving.contains_key(run) {
                // Noted and asked under the lock the lane takes when the
                // drive ends: a drive that ends before it looks leaves the
                // request to its lane, never to nobody.
                let stronger = lanes.stops.get(run).is_some_and(|(r, _)| *r == Request::Cancel);
                if !stronger {
                    lanes.stops.insert(run.clone(), (request, by.to_owned()));
                }
                self.app.control(run).ask(request, Some(by));
                None
            } else {
                // A run stopped while it waits its turn is not driven on.
                lanes.queued.retain(|queued| queued != run);
                *lanes.steering.entry(run.clone()).or_insert(0) += 1;
                Some(Held { service: Arc::clone(self), run: run.clone() })
            }
        };
        match held {
            None => self.app.status(run).await,
            Some(_held) => self.app.stop(run, request, by).await,
        }
    }

    /// Keeps drives of `run` from starting while the guard lives. A
    /// request whose caller went away drops the guard too.
    fn hold(self: &Arc<Self>, run: &RunId) -> Held {
        *self.lanes().steering.entry(run.clone()).or_insert(0) += 1;
        Held { service: Arc::clone(self), run: run.clone() }
    }

    /// Ends one hold; drives the run if asked meanwhile.
    fn release(self: &Arc<Self>, run: &RunId) {
        let deferred = {
            let mut lanes = self.lanes();
            if let Some(n) = lanes.steering.get_mut(run) {
                *n = n.saturating_sub(1);
                if *n == 0 {
                    lanes.steering.remove(run);
                }
            }
            !lanes.steering.contains_key(run) && lanes.deferred.remove(run)
        };
        if deferred {
            self.drive(run);
        }
    }

    /// Drives the queued run of the highest priority (the oldest among
    /// equals), now that a lane is free.
    async fn next_in_line(self: &Arc<Self>) {
        let queued = self.lanes().queued.clone();
        let mut best: Option<(i32, std::cmp::Reverse<Timestamp>, RunId)> = None;
        for id in queued {
            match self.app.status(&id).await {
                Ok(run) => {
                    let key = (run.state.priority, std::cmp::Reverse(run.state.created_at), id);
                    if best.as_ref().is_none_or(|b| key > *b) {
                        best = Some(key);
                    }
                }
                // Gone (deleted): nothing to drive.
                Err(_) => self.lanes().queued.retain(|queued| *queued != id),
            }
        }
        if let Some((_, _, id)) = best {
            self.lanes().queued.retain(|queued| *queued != id);
            self.drive(&id);
        }
    }

    /// Whether the service drives `run` now.
    pub fn drives(&self, run: &RunId) -> bool {
        self.lanes().driving.contains_key(run)
    }

    /// How many runs are driven now.
    pub fn driven(&self) -> usize {
        self.lanes().driving.len()
    }

    async fn lane(self: Arc<Self>, run: RunId) {
        loop {
            let mut driven = self.app.drive_alone(&run).await;
            // A pause or cancel the drive ended before carrying out is
            // recorded here: the lane still counts as the run's driver.
            let stop = {
                let lanes = &mut self.lanes();
                let stop = lanes.stops.remove(&run);
                if stop.is_some() {
                    // Carried out or not, it is this lane's now.
                    self.app.control(&run).withdraw();
                }
                stop
            };
            if let Some((request, by)) = &stop
                && let Ok(ended) = &driven
                && !carried_out(&ended.state, *request)
            {
                driven = self.app.stop(&run, *request, by).await;
            }
            let again = {
                let mut lanes = self.lanes();
                let again = lanes.driving.get_mut(&run).is_some_and(|l| std::mem::take(&mut l.again));
                let again = again && !lanes.stopping && stop.is_none();
                if !again {
                    lanes.driving.remove(&run);
                }
                again
            };
            if again {
                continue;
            }
            match driven {
                Ok(run) => {
                    self.wake_at_deadline(&run);
                    // A sub-workflow's caller goes on in its own lane.
                    if let Some(parent) = self.app.parent_to_wake(&run.state).await {
                        self.drive(&parent);
                    }
                }
                // Another worker drives it (it was asked to, or claimed it first).
                Err(Error::Engine(cairn_engine::EngineError::Store(cairn_ports::StoreError::Leased {
                    worker,
                    ..
                }))) => tracing::debug!(run = %run, worker = %worker, "driven by another worker"),
                Err(e) => tracing::warn!(run = %run, error = %e, "the run was not driven on"),
            }
            if self.app.leases().is_some() {
                // A free lane: due runs are claimed from the database.
                self.wakeup.notify_one();
            } else {
                self.next_in_line().await;
            }
            return;
        }
    }

    /// Takes on a run this process did not start (one imported): drives
    /// it if it was going on, or sets its deadline's timer if it waits.
    /// Among workers, the run is due in the database already.
    pub async fn adopt(self: &Arc<Self>, run: &RunId) {
        if self.app.leases().is_some() {
            return;
        }
        match self.app.status(run).await {
            Ok(found) if matches!(found.state.status, RunStatus::Pending | RunStatus::Running) => {
                self.drive(run)
            }
            Ok(found) => self.wake_at_deadline(&found),
            Err(e) => tracing::warn!(run = %run, error = %e, "an imported run could not be read"),
        }
    }

    /// Wakes `run` when the first deadline of a gate it waits at passes.
    fn wake_at_deadline(self: &Arc<Self>, run: &Run) {
        let Some(deadline) = next_deadline(run) else { return };
        let wait = deadline.0.saturating_sub(self.app.now().0);
        let id = run.state.run_id.clone();
        let mut lanes = self.lanes();
        if lanes.stopping || lanes.driving.contains_key(&id) {
            return;
        }
        let this = Arc::clone(self);
        let woken = id.clone();
        let timer = tokio::spawn(async move {
            tokio::time::sleep(std::time::Duration::from_millis(wait)).await;
            this.lanes().timers.remove(&woken);
            this.drive(&woken);
        });
        if let Some(old) = lanes.timers.insert(id, timer) {
            old.abort();
        }
    }

    /// At start: drives on every run left `pending` or `running` by a
    /// process that stopped, and (in the background, so a store of many
    /// waiting runs does not hold the start back) sets a timer for every
    /// run waiting at a gate with a deadline. Returns how many runs it
    /// drives.
    pub async fn recover(self: &Arc<Self>) -> Result<usize, Error> {
        // Among workers, claiming due runs ([`Service::work`]) does this.
        if self.app.leases().is_some() {
            return Ok(0);
        }
        let mut query = RunQuery { limit: Some(500), ..RunQuery::default() };
        let mut driven = 0;
        let mut waiting = Vec::new();
        loop {
            let page = self.app.list(&query).await?;
            for listed in &page.runs {
                let summary = &listed.summary;
                match summary.status {
                    RunStatus::Pending | RunStatus::Running => {
                        self.drive(&summary.run_id);
                        driven += 1;
                    }
                    status if status.is_waiting() => waiting.push(summary.run_id.clone()),
                    _ => {}
                }
            }
            match page.next {
                Some(next) => query.after = Some(next),
                None => break,
            }
        }
        let this = Arc::clone(self);
        tokio::spawn(async move {
            for run in waiting {
                match this.app.status(&run).await {
                    Ok(run) => this.wake_at_deadline(&run),
                    Err(e) => tracing::warn!(run = %run, error = %e, "no deadline could be read"),
                }
            }
        });
        Ok(driven)
    }

    /// Starts, until shutdown, a run of each registered workflow whose
    /// latest version has a schedule at each of its ticks (UTC), and drives
    /// it. At start, the latest tick missed while no server ran starts
    /// once. Each tick's run id is derived from the workflow and the tick,
    /// so no tick starts twice, also across servers on one store.
    pub fn schedule(self: &Arc<Self>) {
        let task = tokio::spawn(Arc::clone(self).scheduler());
        if let Some(old) = self.lanes().scheduler.replace(task) {
            old.abort();
        }
    }

    /// Keeps the search index up with the runs, until shutdown: after
    /// events, once they pause for [`INDEX_AFTER`] or at that pace while
    /// they keep coming, so a search seldom has runs to index first.
    pub fn index(self: &Arc<Self>) {
        let task = tokio::spawn(Arc::clone(self).indexer());
        if let Some(old) = self.lanes().indexer.replace(task) {
            old.abort();
        }
    }

    async fn indexer(self: Arc<Self>) {
        use tokio::sync::broadcast::error::{RecvError, TryRecvError};
        let mut live = self.app.hub().subscribe();
        loop {
            // Lagging behind the hub still means runs changed.
            if let Err(RecvError::Closed) = live.recv().await {
                return;
            }
            tokio::time::sleep(INDEX_AFTER).await;
            // What came meanwhile is indexed by this round.
            while !matches!(live.try_recv(), Err(TryRecvError::Empty | TryRecvError::Closed)) {}
            if let Err(e) = self.app.index_changes().await {
                tracing::warn!(error = %e, "the search index could not be brought up to the runs");
            }
        }
    }

    async fn scheduler(self: Arc<Self>) {
        let mut done: HashMap<WorkflowId, Timestamp> = HashMap::new();
        loop {
            let now = self.app.now();
            let scheduled = match self.app.scheduled().await {
                Ok(scheduled) => scheduled,
                Err(e) => {
                    tracing::warn!(error = %e, "the catalog could not be read for schedules");
                    Vec::new()
                }
            };
            let mut next: Option<Timestamp> = None;
            for workflow in &scheduled {
                let id = &workflow.definition.workflow.id;
                if let Some(tick) = workflow.due(now, done.get(id).copied()) {
                    match self.app.start_tick(workflow, tick).await {
                        Ok((run, started)) => {
                            done.insert(id.clone(), tick);
                            if started == Started::New {
                                tracing::info!(workflow = %id, run = %run.state.run_id, "a scheduled run started");
                                self.drive(&run.state.run_id);
                            }
                        }
                        // Tried again on the next round.
                        Err(e) => tracing::warn!(workflow = %id, error = %e, "a scheduled run did not start"),
                    }
                }
                if let Some(tick) = workflow.schedule.next_after(now) {
                    next = Some(next.map_or(tick, |n| n.min(tick)));
                }
            }
            let until_next = next.map(|t| std::time::Duration::from_millis(t.0.saturating_sub(now.0)));
            let wait = until_next.map_or(SCHEDULES_READ_EVERY, |d| d.min(SCHEDULES_READ_EVERY));
            tokio::select! {
                () = tokio::time::sleep(wait) => {}
                () = self.catalog_changed.notified() => {}
            }
        }
    }

    /// [`App::register`], and the scheduler reads the catalog again at
    /// once (a new schedule's first tick is not missed).
    pub async fn register(
        &self,
        definition: &cairn_domain::Definition,
        by: &str,
    ) -> Result<cairn_ports::Registered, Error> {
        let registered = self.app.register(definition, by).await?;
        self.catalog_changed.notify_one();
        Ok(registered)
    }

    /// Stops driving: nothing new is driven, every drive is interrupted
    /// (what ran is kept; what was in flight runs again, as the same
    /// attempt, when a later process drives the run on) and awaited.
    pub async fn shutdown(&self) {
        let (drives, timers) = {
            let mut lanes = self.lanes();
            lanes.stopping = true;
            lanes.queued.clear();
            let drives: Vec<(RunId, Lane)> = lanes.driving.drain().collect();
            let mut timers: Vec<JoinHandle<()>> = lanes.timers.drain().map(|(_, t)| t).collect();
            timers.extend(lanes.scheduler.take());
            timers.extend(lanes.indexer.take());
            timers.append(&mut lanes.workers);
            (drives, timers)
        };
        for timer in timers {
            timer.abort();
        }
        for (run, _) in &drives {
            self.app.control(run).interrupt();
        }
        for (_, lane) in drives {
            let _ = lane.task.await;
        }
    }
}

/// A hold on a run's drives ([`Service::steer`]), released when dropped.
struct Held {
    service: Arc<Service>,
    run: RunId,
}

impl Drop for Held {
    fn drop(&mut self) {
        self.service.release(&self.run);
    }
}

/// Whether `state` shows `request` done (or the run ended, so nothing is
/// left to do).
fn carried_out(state: &RunState, request: Request) -> bool {
    state.status.is_terminal()
        || match request {
            Request::Pause => state.status == RunStatus::Paused,
            Request::Cancel => state.status == RunStatus::Cancelled,
        }
}

/// The first deadline of a run waiting for people: of a gate it waits
/// at, or its own (`timeout:`). A paused run waits for nobody's
/// deadline: resumed past it, it times out then.
fn next_deadline(run: &Run) -> Option<Timestamp> {
    let state = &run.state;
    if !state.status.is_waiting() {
        return None;
    }
    cairn_domain::steer::next_wake(state, &run.definition.workflow, Timestamp(0))
}

/// How a network front tells its callers apart.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FrontAuth {
    /// Nobody is asked (loopback addresses only).
    None,
    /// Bearer tokens; `local_key` also admits the command line of the
    /// served data directory.
    Token {
        /// The key the server wrote in its data directory, if any.
        local_key: Option<String>,
    },
}

/// A future a front runs, boxed so the trait stays object safe.
pub type Serving = std::pin::Pin<Box<dyn std::future::Future<Output = std::io::Result<()>> + Send>>;

/// A front a binary plugs into the command line for `cairn serve`: the
/// HTTP server lives in a crate of its own, over this library, and the
/// command line opens the store, drives the runs and handles signals.
pub trait Front: Send + Sync {
    /// Serves `service` on `listener` until `shutdown` resolves, then lets
    /// the requests in progress finish and returns.
    fn serve(
        &self,
        service: Arc<Service>,
        listener: tokio::net::TcpListener,
        auth: FrontAuth,
        shutdown: std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>,
    ) -> Serving;
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use cairn_domain::Definition;
    use cairn_domain::state::Launch;
    use cairn_engine::{EngineBuilder, MemoryStore};
    use cairn_ports::{Clock, NoSink};
    use cairn_testkit::FakeClock;
    use serde_json::json;

    use super::*;
    use crate::app::Parts;
    use crate::follow::{Both, Hub};

    fn service(clock: Arc<dyn Clock>) -> Arc<Service> {
        let store = Arc::new(MemoryStore::new());
        let engine = EngineBuilder::new(store.clone()).clock(Arc::clone(&clock));
        service_of(store, engine, clock, None)
    }

    /// A service over `engine` (built on `store`), driving at most `limit`
    /// runs at once.
    fn service_of(
        store: Arc<MemoryStore>,
        engine: EngineBuilder,
        clock: Arc<dyn Clock>,
        limit: Option<usize>,
    ) -> Arc<Service> {
        let hub = Arc::new(Hub::new());
        let engine = engine.sink(Arc::new(Both(Arc::new(NoSink), hub.clone()))).build();
        let parts = Parts {
            store: store.clone(),
            tokens: store.clone(),
            workflows: store,
            clock,
            prices: Default::default(),
            secrets: Default::default(),
            hub,
            meter: crate::meter::Meter::new(),
            search: Arc::new(cairn_search_tantivy::TantivyIndex::in_memory()),
        };
        Service::limited(Arc::new(App::new(engine, parts)), limit)
    }

    /// Notes the run of each call, in the order called, and takes a second.
    #[derive(Default)]
    struct Order(Mutex<Vec<String>>);

    #[async_trait::async_trait]
    impl cairn_ports::StepHandler for Order {
        async fn call(
            &self,
            call: cairn_ports::HandlerCall,
        ) -> Result<serde_json::Value, cairn_ports::PortError> {
            self.0.lock().unwrap_or_else(PoisonError::into_inner).push(call.run_id.to_string());
            tokio::time::sleep(Duration::from_secs(1)).await;
            Ok(json!(null))
        }
    }

    #[tokio::test(start_paused = true)]
    async fn with_a_limit_runs_wait_their_turn_higher_priority_first() {
        let clock: Arc<dyn Clock> = Arc::new(FakeClock::default());
        let order = Arc::new(Order::default());
        let store = Arc::new(MemoryStore::new());
        let engine = EngineBuilder::new(store.clone())
            .clock(Arc::clone(&clock))
            .handler("note", Arc::clone(&order) as Arc<dyn cairn_ports::StepHandler>);
        let service = service_of(store, engine, clock, Some(1));
        let noted = "cairn: 1\nid: noted\nsteps:\n  - id: a\n    uses: note\n";
        let app = service.app();
        let mut ids = Vec::new();
        for (name, priority) in [("first", 0), ("low", -1), ("plain", 0), ("urgent", 5)] {
            let launch = Launch { priority, ..Launch::default() };
            let id = RunId::new(name).expect("an id");
            app.start_by(definition(noted), json!({}), Some(id.clone()), "t", launch).await.expect("starts");
            ids.push(id);
        }
        for id in &ids {
            service.drive(id);
        }
        assert_eq!((service.driven(), service.lanes().queued.len()), (1, 3), "one lane; the rest wait");
        for id in &ids {
            settled(&service, id, RunStatus::Completed).await;
        }
        let called = order.0.lock().unwrap_or_else(PoisonError::into_inner).clone();
        assert_eq!(called, ["first", "urgent", "plain", "low"], "by priority, then the oldest");
    }

    fn definition(yaml: &str) -> Definition {
        Definition::from_recorded("wf.yaml", yaml, &Default::default()).expect("a valid definition")
    }

    async fn settled(service: &Service, run: &RunId, wanted: RunStatus) -> Run {
        for _ in 0..200 {
            let run = service.app().status(run).await.expect("the run exists");
            if run.state.status == wanted && !service.drives(&run.state.run_id) {
                return run;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("run `{run}` never became {wanted:?}");
    }

    const TIMED: &str = "cairn: 1\nid: timed\nsteps:\n  - id: go\n    approval: { message: Go?, timeout: 1h, on_timeout: approve }\n  - id: after\n    set: done\n";

    #[tokio::test(start_paused = true)]
    async fn a_gate_deadline_fires_on_time_with_no_request() {
        let service = service(Arc::new(FakeClock::default()));
        let run = service.app().start(definition(TIMED), json!({}), None).await.expect("starts");
        let id = run.state.run_id;
        service.drive(&id);
        settled(&service, &id, RunStatus::WaitingApproval).await;
        // Nobody comes by: the timer the service set from the recorded
        // deadline drives the run on when the hour is up.
        tokio::time::sleep(Duration::from_secs(3600)).await;
        let done = settled(&service, &id, RunStatus::Completed).await;
        assert_eq!(
            done.state.steps[&cairn_domain::state::StepPath::new("after")].output,
            Some(json!("done"))
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_run_waiting_at_a_gate_fails_at_its_own_timeout_with_no_request() {
        let service = service(Arc::new(FakeClock::default()));
        let forgotten =
            "cairn: 1\nid: forgotten\ntimeout: 10m\nsteps:\n  - id: go\n    approval: { message: Go? }\n";
        let run = service.app().start(definition(forgotten), json!({}), None).await.expect("starts");
        let id = run.state.run_id;
        service.drive(&id);
        settled(&service, &id, RunStatus::WaitingApproval).await;
        tokio::time::sleep(Duration::from_secs(600)).await;
        let failed = settled(&service, &id, RunStatus::Failed).await;
        assert_eq!(failed.state.error.map(|e| e.class), Some(cairn_domain::state::ErrorClass::Timeout));
    }

    #[tokio::test(start_paused = true)]
    async fn recovery_drives_runs_left_unfinished_and_sets_timers_for_waiting_ones() {
        let service = service(Arc::new(FakeClock::default()));
        let app = service.app();
        let left = app.start(definition(TIMED), json!({}), None).await.expect("starts").state.run_id;
        let id = "cairn: 1\nid: plain\nsteps:\n  - id: a\n    set: one\n";
        let plain = app.start(definition(id), json!({}), None).await.expect("starts").state.run_id;
        assert_eq!(service.recover().await.expect("recovers"), 2, "both were pending");
        settled(&service, &plain, RunStatus::Completed).await;
        settled(&service, &left, RunStatus::WaitingApproval).await;

        // A second service over the same store (a restart) sets the timer
        // from the recorded deadline.
        service.shutdown().await;
        let again = Service::new(Arc::clone(service.app()));
        assert_eq!(again.recover().await.expect("recovers"), 0, "nothing was left running");
        tokio::time::sleep(Duration::from_secs(3600)).await;
        settled(&again, &left, RunStatus::Completed).await;
    }

    #[tokio::test(start_paused = true)]
    async fn a_decision_asked_while_a_drive_starts_is_never_lost() {
        let service = service(Arc::new(FakeClock::default()));
        let gate = "cairn: 1\nid: gate\nsteps:\n  - id: go\n    approval: { message: Go? }\n  - id: after\n    set: done\n";
        let id = service.app().start(definition(gate), json!({}), None).await.expect("starts").state.run_id;
        service.drive(&id);
        settled(&service, &id, RunStatus::WaitingApproval).await;
        let call = cairn_domain::steer::GateCall {
            gate: None,
            verdict: cairn_domain::steer::Verdict::Approve,
            role: None,
            comment: None,
        };
        // The request holds drives off while it records; the drive asked
        // meanwhile starts after it.
        let app = Arc::clone(service.app());
        let decided = service.steer(&id, async {
            service.drive(&id);
            assert!(!service.drives(&id), "no drive starts while a request records");
            app.decide(&id, call, "alice").await
        });
        decided.await.expect("recorded");
        settled(&service, &id, RunStatus::Completed).await;
    }

    const EVERY_FIVE: &str =
        "cairn: 1\nid: every-five\non: { schedule: \"*/5 * * * *\" }\nsteps:\n  - id: a\n    set: done\n";

    /// The runs of `workflow`, oldest first, with who started each.
    async fn runs_of(service: &Service, workflow: &str) -> Vec<(Timestamp, String)> {
        let listing = service.app().list(&RunQuery::default()).await.expect("listed");
        let mut runs: Vec<(Timestamp, String)> = listing
            .runs
            .iter()
            .filter(|r| r.summary.workflow.as_str() == workflow)
            .map(|r| (r.summary.created_at, r.summary.triggered_by.clone()))
            .collect();
        runs.sort();
        runs
    }

    #[tokio::test(start_paused = true)]
    async fn a_schedule_starts_one_run_a_tick_and_the_tick_missed_while_down_once() {
        let clock: Arc<dyn Clock> = Arc::new(FakeClock::default());
        let store = Arc::new(MemoryStore::new());
        let engine = || EngineBuilder::new(store.clone()).clock(Arc::clone(&clock));
        let first = service_of(store.clone(), engine(), Arc::clone(&clock), None);
        first.app().register(&definition(EVERY_FIVE), "tess").await.expect("registered at 00:00");
        // No server runs from 00:00 to 00:17: three ticks go by (05, 10, 15).
        tokio::time::sleep(Duration::from_secs(17 * 60)).await;
        // Two servers on one store start together: each tick starts once.
        let second = service_of(store.clone(), engine(), Arc::clone(&clock), None);
        first.schedule();
        second.schedule();
        tokio::time::sleep(Duration::from_secs(60)).await;
        let minute = 60_000;
        let started = runs_of(&first, "every-five").await;
        assert_eq!(
            started,
            [(Timestamp(17 * minute), "schedule".to_owned())],
            "the latest missed tick, once"
        );
        tokio::time::sleep(Duration::from_secs(10 * 60)).await;
        let started: Vec<u64> =
            runs_of(&first, "every-five").await.iter().map(|(at, _)| at.0 / minute).collect();
        assert_eq!(started, [17, 20, 25], "then one run a tick, on the tick");
        first.shutdown().await;
        second.shutdown().await;
    }

    /// Real time: the index is written on blocking threads, which a paused
    /// clock does not wait for.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_indexer_indexes_runs_as_they_change_so_a_search_has_nothing_left_to_do() {
        let service = service(Arc::new(FakeClock::default()));
        service.index();
        let app = service.app();
        let otters = "cairn: 1\nid: otters\ninputs:\n  topic: { type: string, default: otters }\nsteps:\n  - id: a\n    set: \"{{ inputs.topic }} swim\"\n";
        let id = app.start(definition(otters), json!({}), None).await.expect("starts").state.run_id;
        service.drive(&id);
        settled(&service, &id, RunStatus::Completed).await;
        let query =
            cairn_ports::SearchQuery { text: "swimming".into(), kind: None, workflow: None, limit: 5 };
        let mut hits = Vec::new();
        for _ in 0..100 {
            hits = app.search_index().search(&query).await.expect("searches");
            if !hits.is_empty() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let ids: Vec<&str> = hits.iter().map(|h| h.id.as_str()).collect();
        assert_eq!(ids, [id.as_str()], "indexed with no search asking");
        // Every event of the fake clock is at one instant: the mark knows
        // which runs of that instant it holds.
        assert_eq!(app.index_changes().await.expect("indexes"), 0, "nothing left");
        service.shutdown().await;
    }
}
