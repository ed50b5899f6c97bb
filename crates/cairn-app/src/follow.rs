//! Following runs as they happen, for any number of watchers (a server's
//! event streams): a [`Hub`] the engine tells what it records, and streams
//! over it that never miss or repeat an event.
//!
//! The hub is a bounded broadcast channel: publishing never blocks and
//! never waits for a watcher, so the engine runs as fast with a thousand
//! watchers as with none. A watcher that falls behind loses messages from
//! the channel; [`follow`] and [`follow_runs`] then go back to the store,
//! which has every event, so what they yield stays whole. Only streamed
//! text (tokens, never stored) is lost to a watcher that falls behind.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, OnceLock};

use cairn_domain::id::RunId;
use cairn_domain::state::{Event, EventKind, RunStatus, StepPath};
use cairn_ports::{EventSink, LiveEvent, RunQuery, RunStore, RunSummary, StoreError};
use futures_util::Stream;
use tokio::sync::broadcast;
use tokio::sync::broadcast::error::RecvError;

/// How many messages a [`Hub`] keeps for a watcher that has not read them
/// yet: a watcher further behind goes back to the store.
pub const CAPACITY: usize = 4096;

/// A recorded event as every watcher gets it: one copy shared by all of
/// them, encoded once, by the first watcher that shows it. (Encoding each
/// event again for each of a thousand watchers was most of what a stream
/// cost.)
#[derive(Debug)]
pub struct SharedEvent {
    event: Event,
    encoded: OnceLock<Encoded>,
}

/// An event as JSON ([`crate::view::event::json`], compact) and its type.
#[derive(Debug)]
pub struct Encoded {
    /// The event's `type`.
    pub kind: String,
    /// The event JSON, on one line.
    pub json: String,
}

impl SharedEvent {
    /// `event`, not encoded yet.
    pub fn new(event: Event) -> Arc<Self> {
        Arc::new(Self { event, encoded: OnceLock::new() })
    }

    /// The event.
    pub fn event(&self) -> &Event {
        &self.event
    }

    /// The event as JSON, encoded the first time it is asked for.
    pub fn encoded(&self) -> &Encoded {
        self.encoded.get_or_init(|| {
            let value = crate::view::event::json(&self.event);
            let kind = value["type"].as_str().unwrap_or("event").to_owned();
            Encoded { kind, json: value.to_string() }
        })
    }
}

impl PartialEq for SharedEvent {
    fn eq(&self, other: &Self) -> bool {
        self.event == other.event
    }
}

/// What a [`Hub`] publishes: what the engine recorded and the text models
/// stream. (Notes, the engine's live-only words for a terminal, are not
/// published: no follower shows them.)
#[derive(Debug, Clone)]
pub enum Live {
    /// The events one append recorded, in order (shared, not copied, by
    /// every watcher).
    Recorded {
        /// The run.
        run: RunId,
        /// The events, numbered on without gaps.
        events: Arc<[Arc<SharedEvent>]>,
    },
    /// A piece of a step's answer as the model streams it (never stored).
    Token {
        /// The run.
        run: RunId,
        /// The step.
        path: StepPath,
        /// The attempt, from 1.
        attempt: u32,
        /// The text, cleaned of the host's secrets by the engine.
        text: String,
    },
}

/// An [`EventSink`] that publishes what it is told to every watcher that
/// subscribed, without ever blocking the engine.
#[derive(Debug, Clone)]
pub struct Hub {
    sender: broadcast::Sender<Live>,
    /// How many streams ([`follow`], [`follow_runs`]) follow runs now.
    followers: Arc<std::sync::atomic::AtomicUsize>,
}

/// Counts one stream among a hub's followers while it lives.
#[derive(Debug)]
struct Following(Arc<std::sync::atomic::AtomicUsize>);

impl Drop for Following {
    fn drop(&mut self) {
        self.0.fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
    }
}

impl Default for Hub {
    fn default() -> Self {
        Self::new()
    }
}

impl Hub {
    /// A hub keeping [`CAPACITY`] messages for slow watchers.
    pub fn new() -> Self {
        Self::with_capacity(CAPACITY)
    }

    /// A hub keeping `capacity` messages (at least one) for slow watchers:
    /// a small one makes falling behind easy to test.
    pub fn with_capacity(capacity: usize) -> Self {
        let (sender, _) = broadcast::channel(capacity.max(1));
        Self { sender, followers: Arc::default() }
    }

    /// Whether a stream follows runs now: what other processes append is
    /// read for this one's streams only then.
    pub(crate) fn followed(&self) -> bool {
        self.followers.load(std::sync::atomic::Ordering::Relaxed) > 0
    }

    fn following(&self) -> Following {
        self.followers.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        Following(Arc::clone(&self.followers))
    }

    /// A receiver of every message published from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<Live> {
        self.sender.subscribe()
    }

    /// Whether anyone listens: with nobody, publishing is skipped before
    /// anything is copied.
    fn heard(&self) -> bool {
        self.sender.receiver_count() > 0
    }

    fn publish(&self, live: Live) {
        // Fails only when nobody listens any more: nothing to do then.
        let _ = self.sender.send(live);
    }
}

impl EventSink for Hub {
    fn emit(&self, run: &RunId, event: &LiveEvent<'_>) {
        if !self.heard() {
            return;
        }
        match event {
            LiveEvent::Recorded(event) => {
                let events = Arc::from([SharedEvent::new((*event).clone())]);
                self.publish(Live::Recorded { run: run.clone(), events });
            }
            LiveEvent::Token { path, attempt, text } => self.publish(Live::Token {
                run: run.clone(),
                path: (*path).clone(),
                attempt: *attempt,
                text: (*text).to_owned(),
            }),
            LiveEvent::Note { .. } => {}
        }
    }

    fn recorded(&self, run: &RunId, events: &[Event]) {
        if !events.is_empty() && self.heard() {
            let events = events.iter().cloned().map(SharedEvent::new).collect();
            self.publish(Live::Recorded { run: run.clone(), events });
        }
    }
}

/// Two sinks told the same things, in order: the engine takes one sink,
/// and a host may want a terminal's progress and a [`Hub`] both.
pub struct Both(pub Arc<dyn EventSink>, pub Arc<dyn EventSink>);

impl EventSink for Both {
    fn emit(&self, run: &RunId, event: &LiveEvent<'_>) {
        self.0.emit(run, event);
        self.1.emit(run, event);
    }

    fn recorded(&self, run: &RunId, events: &[Event]) {
        self.0.recorded(run, events);
        self.1.recorded(run, events);
    }
}

/// What following one run yields.
#[derive(Debug, Clone, PartialEq)]
pub enum Followed {
    /// A stored event, each once, in order of its `seq`.
    Event(Arc<SharedEvent>),
    /// A piece of a step's answer as the model streams it: live only,
    /// never stored, never yielded again after a reconnect.
    Token {
        /// The step.
        path: StepPath,
        /// The attempt, from 1.
        attempt: u32,
        /// The text.
        text: String,
    },
    /// The run ended with this status (completed, failed or cancelled);
    /// nothing follows.
    End(RunStatus),
}

/// One run's stored events after `after`, then its new ones as they are
/// stored, each exactly once and in order, with its streamed text as it
/// comes; `End` once the run has ended (at once for a run that had), and
/// then nothing.
///
/// It subscribes before it reads the store, so no event falls between the
/// two; an event it has yielded is skipped when the hub brings it again,
/// and a gap in what the hub brings (the watcher fell behind) is filled
/// from the store. A run that waits for a person keeps the stream open.
/// An unknown run yields the store's `NotFound`; any store error is
/// yielded and ends the stream (follow again from the last event yielded).
pub fn follow(
    store: Arc<dyn RunStore>,
    hub: &Hub,
    run: RunId,
    after: u64,
) -> impl Stream<Item = Result<Followed, StoreError>> + Send + 'static {
    let follower = Follower {
        _following: hub.following(),
        store,
        live: hub.subscribe(),
        run,
        last: after,
        phase: Phase::Start,
        queue: VecDeque::new(),
    };
    futures_util::stream::unfold(follower, |mut follower| async move {
        let item = follower.next().await?;
        Some((item, follower))
    })
}

/// Where a [`Follower`] is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// The stored events are not read yet.
    Start,
    /// Following the hub.
    Live,
    /// The run ended, or the store failed, or the hub is gone.
    Done,
}

/// The state of one [`follow`] stream.
struct Follower {
    _following: Following,
    store: Arc<dyn RunStore>,
    live: broadcast::Receiver<Live>,
    run: RunId,
    /// The last event yielded (or the one the caller had).
    last: u64,
    phase: Phase,
    /// What to yield before reading more.
    queue: VecDeque<Result<Followed, StoreError>>,
}

impl Follower {
    async fn next(&mut self) -> Option<Result<Followed, StoreError>> {
        loop {
            if let Some(item) = self.queue.pop_front() {
                return Some(item);
            }
            match self.phase {
                Phase::Done => return None,
                Phase::Start => {
                    self.phase = Phase::Live;
                    self.start().await;
                }
                Phase::Live => match self.live.recv().await {
                    Ok(Live::Recorded { run, events }) if run == self.run => self.take(&events).await,
                    Ok(Live::Token { run, path, attempt, text }) if run == self.run => {
                        self.queue.push_back(Ok(Followed::Token { path, attempt, text }));
                    }
                    Ok(_) => {}
                    Err(RecvError::Lagged(_)) => self.catch_up().await,
                    Err(RecvError::Closed) => self.phase = Phase::Done,
                },
            }
        }
    }

    /// Reads the stored events after `last` (and the one at `last`, to
    /// tell whether the run had ended already).
    async fn start(&mut self) {
        let stored = match self.store.load(&self.run, self.last.max(1)).await {
            Ok(stored) => stored.events,
            Err(e) => return self.fail(e),
        };
        let Some(newest) = stored.last() else {
            // `after` is past the run's end: look at its end for whether it ended.
            match self.store.load(&self.run, 1).await {
                Ok(all) => self.end_if_ended(all.events.last()),
                Err(e) => self.fail(e),
            }
            return;
        };
        if newest.seq <= self.last {
            // The caller has every event: it may still need to hear the run ended.
            self.end_if_ended(Some(newest));
            return;
        }
        for event in stored {
            if event.seq == self.last + 1 {
                self.push(SharedEvent::new(event));
            }
        }
    }

    /// Events the hub brought: the next ones are yielded, those yielded
    /// already skipped, and a gap sends it to the store.
    async fn take(&mut self, events: &[Arc<SharedEvent>]) {
        for shared in events {
            if self.phase == Phase::Done {
                return;
            }
            let seq = shared.event.seq;
            if seq == self.last + 1 {
                self.push(Arc::clone(shared));
            } else if seq > self.last + 1 {
                return self.catch_up().await;
            }
        }
    }

    /// Reads what the hub did not bring from the store.
    async fn catch_up(&mut self) {
        match self.store.load(&self.run, self.last + 1).await {
            Ok(stored) => {
                for event in stored.events {
                    if event.seq == self.last + 1 && self.phase != Phase::Done {
                        self.push(SharedEvent::new(event));
                    }
                }
            }
            Err(e) => self.fail(e),
        }
    }

    /// Queues the next event, and the end when it ends the run.
    fn push(&mut self, event: Arc<SharedEvent>) {
        self.last = event.event.seq;
        let ended = ended(&event.event.kind);
        self.queue.push_back(Ok(Followed::Event(event)));
        if let Some(status) = ended {
            self.queue.push_back(Ok(Followed::End(status)));
            self.phase = Phase::Done;
        }
    }

    /// Ends the stream when `newest`, a run's last event, ended it.
    fn end_if_ended(&mut self, newest: Option<&Event>) {
        if let Some(status) = newest.and_then(|e| ended(&e.kind)) {
            self.queue.push_back(Ok(Followed::End(status)));
            self.phase = Phase::Done;
        }
    }

    fn fail(&mut self, error: StoreError) {
        self.queue.push_back(Err(error));
        self.phase = Phase::Done;
    }
}

/// The status a run ends with when `kind` ends it (no event follows one).
fn ended(kind: &EventKind) -> Option<RunStatus> {
    kind.run_status().filter(|s| s.is_terminal())
}

/// Every run's summary each time it changes: after each append the hub
/// brings, the run's summary as the store's `list` would show it then.
///
/// Summaries are kept up to date from the events themselves (folded as
/// every store folds them: status, `updated_at`, usage); a run first seen
/// in the middle of its log is read from the store once. A watcher that
/// falls behind cannot tell which runs changed meanwhile: it lists every
/// run and yields each whose summary differs from the one it last yielded
/// (every run it had not yielded yet, then), skipping intermediate states.
/// It keeps one summary per run it has yielded. A store error is yielded
/// and the feed goes on; a run deleted meanwhile is left out.
pub fn follow_runs(
    store: Arc<dyn RunStore>,
    hub: &Hub,
) -> impl Stream<Item = Result<RunSummary, StoreError>> + Send + 'static {
    let watcher = Watcher {
        _following: hub.following(),
        store,
        live: hub.subscribe(),
        seen: HashMap::new(),
        queue: VecDeque::new(),
    };
    futures_util::stream::unfold(watcher, |mut watcher| async move {
        let item = watcher.next().await?;
        Some((item, watcher))
    })
}

/// A run's summary as a [`Watcher`] last yielded it.
struct Seen {
    summary: RunSummary,
    /// The last event the summary holds; `None` when it came from a
    /// listing, which does not say.
    seq: Option<u64>,
}

/// The state of one [`follow_runs`] stream.
struct Watcher {
    _following: Following,
    store: Arc<dyn RunStore>,
    live: broadcast::Receiver<Live>,
    seen: HashMap<RunId, Seen>,
    queue: VecDeque<Result<RunSummary, StoreError>>,
}

impl Watcher {
    async fn next(&mut self) -> Option<Result<RunSummary, StoreError>> {
        loop {
            if let Some(item) = self.queue.pop_front() {
                return Some(item);
            }
            match self.live.recv().await {
                Ok(Live::Recorded { run, events }) => self.take(run, &events).await,
                Ok(Live::Token { .. }) => {}
                Err(RecvError::Lagged(_)) => self.catch_up().await,
                Err(RecvError::Closed) => return None,
            }
        }
    }

    /// Brings a run's summary past `events`, and queues it when it changed.
    async fn take(&mut self, run: RunId, events: &[Arc<SharedEvent>]) {
        let (Some(first), Some(last)) = (events.first(), events.last()) else { return };
        let (first, last) = (first.event(), last.event());
        let events = events.iter().map(|e| e.event());
        let summary = match self.seen.get(&run) {
            Some(Seen { seq: Some(seq), .. }) if last.seq <= *seq => return,
            Some(Seen { summary, seq: Some(seq) }) if first.seq <= *seq + 1 => {
                let mut summary = summary.clone();
                summary.advance(events.filter(|e| e.seq > *seq));
                summary
            }
            _ if first.seq == 1 => match RunSummary::fold(events) {
                Ok(summary) => summary,
                Err(e) => return self.queue.push_back(Err(e)),
            },
            // Seen in the middle of its log, after a gap, or from a listing.
            _ => match self.store.load(&run, 1).await {
                Ok(stored) => match RunSummary::fold(&stored.events) {
                    Ok(summary) => return self.show(summary, stored.events.last().map(|e| e.seq)),
                    Err(e) => return self.queue.push_back(Err(e)),
                },
                Err(StoreError::NotFound(_)) => return,
                Err(e) => return self.queue.push_back(Err(e)),
            },
        };
        self.show(summary, Some(last.seq));
    }

    /// After falling behind: every run whose summary is not the one last yielded.
    async fn catch_up(&mut self) {
        let page = match self.store.list(&RunQuery::default()).await {
            Ok(page) => page,
            Err(e) => return self.queue.push_back(Err(e)),
        };
        for summary in page.runs {
            self.show(summary, None);
        }
    }

    /// Queues `summary` unless it is the one last yielded, and keeps it.
    fn show(&mut self, summary: RunSummary, seq: Option<u64>) {
        let run = summary.run_id.clone();
        let changed = self.seen.get(&run).is_none_or(|seen| seen.summary != summary);
        if changed {
            self.queue.push_back(Ok(summary.clone()));
        }
        // A listing says nothing of the events: an unchanged summary keeps its number.
        let seq = seq.or_else(|| self.seen.get(&run).filter(|_| !changed).and_then(|seen| seen.seq));
        self.seen.insert(run, Seen { summary, seq });
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use cairn_domain::state::{Timestamp, TokenUsage, WaitKind};
    use cairn_engine::MemoryStore;
    use cairn_testkit::store_suite::new_run;
    use futures_util::StreamExt;
    use serde_json::json;

    use super::*;

    /// Long enough for anything that is coming to come.
    const PATIENCE: Duration = Duration::from_secs(10);

    fn id(s: &str) -> RunId {
        RunId::new(s).expect("id")
    }

    /// A store and a hub, told of each append as the engine tells its sink.
    struct Fixture {
        store: Arc<MemoryStore>,
        hub: Hub,
    }

    impl Fixture {
        fn new(capacity: usize) -> Self {
            Self { store: Arc::new(MemoryStore::new()), hub: Hub::with_capacity(capacity) }
        }

        fn store(&self) -> Arc<dyn RunStore> {
            self.store.clone()
        }

        async fn create(&self, run: &str) {
            let new = new_run(run, 1_000);
            let created = new.created.clone();
            self.store.create(new).await.expect("created");
            self.hub.recorded(&id(run), &[created]);
        }

        /// Appends `kinds` in one append, and tells the hub.
        async fn record(&self, run: &str, kinds: Vec<EventKind>) -> u64 {
            let last = self.store.load(&id(run), 0).await.expect("stored").events.len() as u64;
            let events: Vec<Event> = kinds
                .into_iter()
                .zip(last + 1..)
                .map(|(kind, seq)| Event { seq, at: Timestamp(1_000 + seq), actor: "engine".into(), kind })
                .collect();
            self.store.append(&id(run), last, &events).await.expect("appended");
            self.hub.recorded(&id(run), &events);
            last + events.len() as u64
        }

        async fn steps(&self, run: &str, n: u32) -> u64 {
            let kinds = (1..=n).map(|attempt| EventKind::StepStarted { path: StepPath::new("a"), attempt });
            self.record(run, kinds.collect()).await
        }
    }

    /// The next item, failing the test when none comes.
    async fn next<S: Stream<Item = T> + Unpin, T>(stream: &mut S) -> T {
        tokio::time::timeout(PATIENCE, stream.next()).await.expect("an item in time").expect("an item")
    }

    /// The `seq` of the next item, which must be an event.
    async fn seq<S: Stream<Item = Result<Followed, StoreError>> + Unpin>(stream: &mut S) -> u64 {
        match next(stream).await {
            Ok(Followed::Event(e)) => e.event().seq,
            other => panic!("an event, not {other:?}"),
        }
    }

    /// Whether the stream stays quiet a while (open, nothing to say).
    async fn quiet<S: Stream + Unpin>(stream: &mut S) -> bool {
        tokio::time::timeout(Duration::from_millis(50), stream.next()).await.is_err()
    }

    #[tokio::test]
    async fn events_stored_before_and_after_subscribing_come_once_in_order() {
        let f = Fixture::new(CAPACITY);
        f.create("r").await;
        f.steps("r", 2).await;
        let mut stream = Box::pin(follow(f.store(), &f.hub, id("r"), 0));
        // Stored after subscribing, before the stream first reads: in the
        // store and on the hub both, yielded once.
        f.steps("r", 2).await;
        for want in 1..=5 {
            assert_eq!(seq(&mut stream).await, want);
        }
        assert!(quiet(&mut stream).await, "a running run keeps its stream open");
        f.record("r", vec![EventKind::RunStarted]).await;
        f.steps("r", 1).await;
        assert_eq!(seq(&mut stream).await, 6);
        assert_eq!(seq(&mut stream).await, 7);
        assert!(quiet(&mut stream).await);
    }

    #[tokio::test]
    async fn resuming_after_n_yields_exactly_the_events_after_n() {
        let f = Fixture::new(CAPACITY);
        f.create("r").await;
        f.steps("r", 5).await;
        let mut stream = Box::pin(follow(f.store(), &f.hub, id("r"), 4));
        assert_eq!(seq(&mut stream).await, 5);
        assert_eq!(seq(&mut stream).await, 6);
        f.steps("r", 1).await;
        assert_eq!(seq(&mut stream).await, 7);
        assert!(quiet(&mut stream).await);
        // Resuming at the end: nothing until something new.
        let mut stream = Box::pin(follow(f.store(), &f.hub, id("r"), 7));
        assert!(quiet(&mut stream).await);
        f.steps("r", 1).await;
        assert_eq!(seq(&mut stream).await, 8);
    }

    #[tokio::test]
    async fn a_watcher_that_falls_behind_still_gets_every_event_once_in_order() {
        let f = Fixture::new(2);
        f.create("r").await;
        f.create("other").await;
        let mut stream = Box::pin(follow(f.store(), &f.hub, id("r"), 0));
        assert_eq!(seq(&mut stream).await, 1);
        // Far more appends than the hub keeps, other runs' and tokens between.
        for _ in 0..20 {
            f.steps("r", 2).await;
            f.steps("other", 1).await;
            let token = LiveEvent::Token { path: &StepPath::new("a"), attempt: 1, text: "lost" };
            f.hub.emit(&id("r"), &token);
        }
        let mut tokens = 0;
        let mut want = 2;
        while want <= 41 {
            match next(&mut stream).await.expect("no store error") {
                Followed::Event(e) => {
                    assert_eq!(e.event().seq, want, "every event once, in order");
                    want += 1;
                }
                Followed::Token { .. } => tokens += 1,
                Followed::End(status) => panic!("the run has not ended: {status:?}"),
            }
        }
        assert!(tokens < 20, "tokens lost to the lag are not replayed");
        f.steps("r", 1).await;
        loop {
            match next(&mut stream).await.expect("no store error") {
                Followed::Event(e) => break assert_eq!(e.event().seq, 42),
                Followed::Token { .. } => {}
                Followed::End(status) => panic!("the run has not ended: {status:?}"),
            }
        }
    }

    #[tokio::test]
    async fn watchers_share_one_copy_of_each_live_event_encoded_once() {
        let f = Fixture::new(CAPACITY);
        f.create("r").await;
        let mut one = Box::pin(follow(f.store(), &f.hub, id("r"), 1));
        let mut two = Box::pin(follow(f.store(), &f.hub, id("r"), 1));
        assert!(quiet(&mut one).await && quiet(&mut two).await, "both have read the store");
        f.steps("r", 1).await;
        let (Ok(Followed::Event(a)), Ok(Followed::Event(b))) = (next(&mut one).await, next(&mut two).await)
        else {
            panic!("an event for each");
        };
        assert!(Arc::ptr_eq(&a, &b), "one copy for every watcher");
        assert!(std::ptr::eq(a.encoded(), b.encoded()), "encoded once");
        assert_eq!(a.encoded().kind, "step_started");
        let decoded: serde_json::Value = serde_json::from_str(&a.encoded().json).expect("JSON");
        assert_eq!(decoded, crate::view::event::json(a.event()), "the one event JSON");
    }

    #[tokio::test]
    async fn tokens_of_the_run_come_through_live_with_step_attempt_and_text() {
        let f = Fixture::new(CAPACITY);
        f.create("r").await;
        let mut stream = Box::pin(follow(f.store(), &f.hub, id("r"), 0));
        assert_eq!(seq(&mut stream).await, 1);
        let path = StepPath::new("ask");
        f.hub.emit(&id("other"), &LiveEvent::Token { path: &path, attempt: 1, text: "not mine" });
        f.hub.emit(&id("r"), &LiveEvent::Note { path: &path, text: "a note" });
        f.hub.emit(&id("r"), &LiveEvent::Token { path: &path, attempt: 2, text: "Hel" });
        f.hub.emit(&id("r"), &LiveEvent::Token { path: &path, attempt: 2, text: "lo" });
        for text in ["Hel", "lo"] {
            let token = next(&mut stream).await.expect("no store error");
            assert_eq!(token, Followed::Token { path: path.clone(), attempt: 2, text: text.into() });
        }
        assert!(quiet(&mut stream).await, "another run's tokens and notes are not yielded");
        // Tokens are never replayed: following again yields only events.
        let mut again = Box::pin(follow(f.store(), &f.hub, id("r"), 0));
        assert_eq!(seq(&mut again).await, 1);
        assert!(quiet(&mut again).await);
    }

    #[tokio::test]
    async fn an_ended_run_ends_its_stream_after_its_last_event() {
        let f = Fixture::new(CAPACITY);
        f.create("r").await;
        f.record("r", vec![EventKind::RunStarted]).await;
        let mut stream = Box::pin(follow(f.store(), &f.hub, id("r"), 0));
        assert_eq!(seq(&mut stream).await, 1);
        assert_eq!(seq(&mut stream).await, 2);
        f.record("r", vec![EventKind::RunWaiting { wait: WaitKind::Approval }]).await;
        assert_eq!(seq(&mut stream).await, 3);
        assert!(quiet(&mut stream).await, "a run that waits for a person keeps its stream open");
        f.record("r", vec![EventKind::RunStarted, EventKind::RunCancelled]).await;
        assert_eq!(seq(&mut stream).await, 4);
        assert_eq!(seq(&mut stream).await, 5);
        assert_eq!(next(&mut stream).await.expect("no store error"), Followed::End(RunStatus::Cancelled));
        assert!(tokio::time::timeout(PATIENCE, stream.next()).await.expect("finished").is_none());

        // Already ended: its stored events, then the end at once.
        for (after, events) in [(0, 5), (3, 2), (5, 0), (9, 0)] {
            let mut stream = Box::pin(follow(f.store(), &f.hub, id("r"), after));
            let items: Vec<_> =
                tokio::time::timeout(PATIENCE, (&mut stream).collect::<Vec<_>>()).await.expect("finishes");
            assert_eq!(items.len(), events + 1, "after {after}: {items:?}");
            assert!(matches!(items.last(), Some(Ok(Followed::End(RunStatus::Cancelled)))), "after {after}");
        }
    }

    #[tokio::test]
    async fn an_unknown_run_yields_not_found_and_finishes() {
        let f = Fixture::new(CAPACITY);
        let mut stream = Box::pin(follow(f.store(), &f.hub, id("nope"), 0));
        assert!(matches!(next(&mut stream).await, Err(StoreError::NotFound(_))));
        assert!(tokio::time::timeout(PATIENCE, stream.next()).await.expect("finished").is_none());
    }

    #[tokio::test]
    async fn a_run_the_engine_drives_is_followed_to_its_end_through_a_fan_out() {
        use cairn_engine::{EngineBuilder, MockLlm};
        let store = Arc::new(MemoryStore::new());
        let hub = Arc::new(Hub::new());
        let clock: Arc<dyn cairn_ports::Clock> = Arc::new(cairn_engine::SystemClock);
        let engine = EngineBuilder::new(store.clone())
            .sink(Arc::new(Both(Arc::new(cairn_ports::NoSink), hub.clone())))
            .every_provider(Arc::new(MockLlm::new(clock, Duration::from_millis(20))))
            .build();
        let yaml = "cairn: 1\nid: two\nagents:\n  w: {}\nsteps:\n  - id: a\n    agent: w\n    prompt: One.\n  - id: b\n    agent: w\n    prompt: Two.\n    needs: [a]\n";
        let definition = cairn_domain::Definition {
            name: "two.yaml".into(),
            text: yaml.into(),
            workflow: cairn_testkit::workflow(yaml),
            files: Default::default(),
        };
        let driving = tokio::spawn(async move { engine.run(definition, json!({}), id("r")).await });
        let store: Arc<dyn RunStore> = store;
        while store.load(&id("r"), 0).await.is_err() {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        let stream = follow(Arc::clone(&store), &hub, id("r"), 0);
        let items: Vec<_> =
            tokio::time::timeout(PATIENCE, stream.collect::<Vec<_>>()).await.expect("finishes");
        let state = driving.await.expect("joins").expect("runs");
        assert_eq!(state.status, RunStatus::Completed);
        let stored = store.load(&id("r"), 0).await.expect("stored").events;
        let mut want: Vec<Followed> =
            stored.into_iter().map(|e| Followed::Event(SharedEvent::new(e))).collect();
        want.push(Followed::End(RunStatus::Completed));
        assert_eq!(items.into_iter().collect::<Result<Vec<_>, _>>().expect("no store error"), want);
    }

    #[tokio::test]
    async fn every_change_of_a_run_yields_its_summary() {
        let f = Fixture::new(CAPACITY);
        f.create("old").await;
        f.steps("old", 1).await;
        let mut runs = Box::pin(follow_runs(f.store(), &f.hub));
        f.create("new").await;
        let summary = next(&mut runs).await.expect("no store error");
        assert_eq!((summary.run_id.as_str(), summary.status), ("new", RunStatus::Pending));
        let usage =
            TokenUsage { prompt_tokens: 3, completion_tokens: 4, estimated: false, cost_micro_usd: 0 };
        let path = StepPath::new("a");
        f.record(
            "new",
            vec![
                EventKind::RunStarted,
                EventKind::UsageRecorded {
                    path: path.clone(),
                    attempt: 1,
                    agent: None,
                    model: "m".into(),
                    usage,
                },
            ],
        )
        .await;
        let summary = next(&mut runs).await.expect("no store error");
        assert_eq!(summary.status, RunStatus::Running);
        assert_eq!(summary.usage(), usage);
        // A run seen in the middle of its log: read from the store once.
        f.record("old", vec![EventKind::RunStarted]).await;
        let summary = next(&mut runs).await.expect("no store error");
        assert_eq!((summary.run_id.as_str(), summary.status), ("old", RunStatus::Running));
        f.record("old", vec![EventKind::RunCompleted]).await;
        let summary = next(&mut runs).await.expect("no store error");
        assert_eq!(summary.status, RunStatus::Completed);
        // Every summary is the one the store lists.
        let listed = f.store.list(&RunQuery::default()).await.expect("lists").runs;
        assert!(listed.contains(&summary));
        assert!(quiet(&mut runs).await);
    }

    #[tokio::test]
    async fn a_run_feed_that_falls_behind_yields_the_latest_summary_of_each_changed_run() {
        let f = Fixture::new(2);
        f.create("a").await;
        f.create("b").await;
        f.create("c").await;
        let mut runs = Box::pin(follow_runs(f.store(), &f.hub));
        f.steps("c", 1).await;
        let c = next(&mut runs).await.expect("no store error");
        assert_eq!(c.run_id.as_str(), "c");
        for _ in 0..10 {
            f.steps("a", 1).await;
            f.steps("b", 1).await;
        }
        f.record("a", vec![EventKind::RunStarted, EventKind::RunFailed { error: failure() }]).await;
        let listed = f.store.list(&RunQuery::default()).await.expect("lists").runs;
        let mut latest: HashMap<RunId, RunSummary> = HashMap::new();
        while latest.get(&id("a")) != listed.iter().find(|s| s.run_id.as_str() == "a")
            || latest.get(&id("b")) != listed.iter().find(|s| s.run_id.as_str() == "b")
        {
            let summary = next(&mut runs).await.expect("no store error");
            assert_ne!(summary.run_id.as_str(), "c", "c did not change: {summary:?}");
            latest.insert(summary.run_id.clone(), summary);
        }
        assert_eq!(latest[&id("a")].status, RunStatus::Failed);
        assert!(quiet(&mut runs).await);
        // After the lag it goes on from the events again.
        f.steps("b", 1).await;
        let b = next(&mut runs).await.expect("no store error");
        assert_eq!(
            Some(&b),
            f.store
                .list(&RunQuery::default())
                .await
                .expect("lists")
                .runs
                .iter()
                .find(|s| s.run_id == b.run_id)
        );
    }

    fn failure() -> cairn_domain::state::StepError {
        cairn_domain::state::StepError {
            class: cairn_domain::state::ErrorClass::Fatal,
            message: "no".into(),
            hint: None,
            cause: None,
        }
    }
}
