//! The executor of a simulation: polls one future on the calling thread,
//! moves simulated time only when nothing can run, and can drop the
//! future after a given number of polls: a crash at an await point.

use std::future::Future;
use std::pin::pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll, Wake, Waker};

use crate::clock::SimClock;

/// Polls after which a drive counts as running away (a livelock).
pub const MAX_POLLS: u64 = 200_000;

/// How a future ended under [`run`].
#[derive(Debug)]
pub enum Ran<T> {
    /// It finished with this value.
    Done(T),
    /// It was dropped at the await point its poll number `crash_after`
    /// left it at (the crash point).
    Crashed,
    /// It waits with no timer pending: nothing will ever wake it.
    Stalled,
    /// It was polled [`MAX_POLLS`] times without finishing.
    RanAway,
}

/// Set when anything wakes the future.
#[derive(Default)]
struct Woken(AtomicBool);

impl Wake for Woken {
    fn wake(self: Arc<Self>) {
        self.0.store(true, Ordering::SeqCst);
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.0.store(true, Ordering::SeqCst);
    }
}

/// Polls `future` to its end on `clock`'s time, or drops it right after
/// its `crash_after`-th poll left it waiting at an await point. `polls`
/// counts every poll made.
pub fn run<T>(
    clock: &SimClock,
    future: impl Future<Output = T>,
    crash_after: Option<u64>,
    polls: &mut u64,
) -> Ran<T> {
    let mut future = pin!(future);
    let woken = Arc::new(Woken::default());
    let waker = Waker::from(Arc::clone(&woken));
    let mut cx = Context::from_waker(&waker);
    let mut n = 0;
    loop {
        if n == MAX_POLLS {
            return Ran::RanAway;
        }
        n += 1;
        *polls += 1;
        if let Poll::Ready(value) = future.as_mut().poll(&mut cx) {
            return Ran::Done(value);
        }
        if crash_after == Some(n) {
            return Ran::Crashed;
        }
        // Time moves only when nothing is ready, one timer at a time.
        while !woken.0.swap(false, Ordering::SeqCst) {
            if !clock.fire_next() {
                return Ran::Stalled;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use cairn_ports::Clock;

    use super::*;

    #[test]
    fn sleeps_take_simulated_time_only_and_crashes_drop_the_future() {
        let clock = SimClock::new();
        let mut polls = 0;
        let slept = run(
            &clock,
            async {
                clock.sleep(Duration::from_secs(3600)).await;
                clock.now()
            },
            None,
            &mut polls,
        );
        assert!(matches!(slept, Ran::Done(t) if t.0 == 1_800_003_600_000), "{slept:?}");
        let crashed = run(&clock, clock.sleep(Duration::from_secs(1)), Some(1), &mut polls);
        assert!(matches!(crashed, Ran::Crashed));
        // The dropped sleep left no timer behind: time stands still.
        assert!(!clock.fire_next());
        let stalled = run(&clock, std::future::pending::<()>(), None, &mut polls);
        assert!(matches!(stalled, Ran::Stalled));
        assert_eq!(clock.now().0, 1_800_003_600_000);
    }
}
