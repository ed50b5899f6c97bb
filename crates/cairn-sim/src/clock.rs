//! Simulated time: a clock that moves only when the executor fires its
//! next timer, so every run of a seed sees the same times.

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use async_trait::async_trait;
use cairn_domain::state::Timestamp;
use cairn_ports::Clock;

/// When the simulated epoch starts, in milliseconds since 1970 (January
/// 2027), so recorded times look like real ones.
const EPOCH_MS: u64 = 1_800_000_000_000;

/// A timer: its deadline, the duration asked, and the order it was set in.
/// Timers fire in this order; the duration breaks ties between timers
/// that fall due together before the order of setting does, because the
/// order of setting depends on which branch a `tokio::select!` polled
/// first, and that order is random.
type Key = (u64, u64, u64);

#[derive(Default)]
struct Timers {
    now_ns: u64,
    next: u64,
    pending: BTreeMap<Key, Waker>,
}

/// The [`Clock`] of a simulation: `now` is virtual, and `sleep` waits for
/// [`SimClock::fire_next`], which the executor calls only when nothing
/// else can run.
#[derive(Default)]
pub struct SimClock {
    timers: Mutex<Timers>,
}

impl SimClock {
    /// A clock at the simulated epoch, with no timers.
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> MutexGuard<'_, Timers> {
        // A poisoned lock only means a panic elsewhere; the timers are intact.
        self.timers.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Moves time to the earliest pending timer and wakes its sleeper;
    /// `false` when no timer is pending (nothing will ever happen again).
    pub fn fire_next(&self) -> bool {
        let mut timers = self.lock();
        let Some((key, waker)) = timers.pending.pop_first() else { return false };
        timers.now_ns = timers.now_ns.max(key.0);
        drop(timers);
        waker.wake();
        true
    }

    /// Simulated nanoseconds since the epoch.
    pub fn now_ns(&self) -> u64 {
        self.lock().now_ns
    }
}

#[async_trait]
impl Clock for SimClock {
    fn now(&self) -> Timestamp {
        Timestamp(EPOCH_MS + self.now_ns() / 1_000_000)
    }

    async fn sleep(&self, duration: Duration) {
        let duration = u64::try_from(duration.as_nanos()).unwrap_or(u64::MAX / 2);
        Sleep { clock: self, duration, key: None }.await;
    }
}

/// One `sleep`: a timer set at its first poll, removed when dropped, so a
/// sleep given up (the other branch of a `select!` won) never moves time.
struct Sleep<'a> {
    clock: &'a SimClock,
    duration: u64,
    key: Option<Key>,
}

impl Future for Sleep<'_> {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let mut timers = self.clock.lock();
        match self.key {
            None => {
                let key = (timers.now_ns.saturating_add(self.duration), self.duration, timers.next);
                timers.next += 1;
                timers.pending.insert(key, cx.waker().clone());
                drop(timers);
                self.key = Some(key);
                Poll::Pending
            }
            Some(key) => match timers.pending.get_mut(&key) {
                Some(waker) => {
                    waker.clone_from(cx.waker());
                    Poll::Pending
                }
                None => Poll::Ready(()),
            },
        }
    }
}

impl Drop for Sleep<'_> {
    fn drop(&mut self) {
        if let Some(key) = self.key {
            self.clock.lock().pending.remove(&key);
        }
    }
}
