//! Log chunks written into sled off the appending task.
//!
//! An append hands its chunk (as JSON) to this queue, and a thread of the
//! store's own compresses it and inserts it into sled, on the other core
//! while the appender goes on (with `Durability::Sync`, waits for the
//! write-ahead log's sync, which is what makes the append durable). The
//! thread lets chunks gather for [`GATHER`] after it is woken, so one
//! wake-up serves a burst of appends. Whoever reads the event tree first
//! applies what is still queued ([`Applier::settle`]), so reads always see
//! every append that returned. Chunks are applied in the order they were
//! queued (under the log's lock, so in log order).

use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::thread::JoinHandle;

use cairn_ports::StoreError;
use sled::IVec;

use crate::lock;
use crate::records::pack;

/// Queued chunks past which an appender applies them itself, so a thread
/// that falls behind costs speed, never unbounded memory.
const MOST_QUEUED: usize = 4096;

/// How long the thread, once woken, lets chunks gather before applying
/// them: one wake-up (a futex call and an interrupt to the other core on
/// the appender's path) then serves every append of those milliseconds,
/// not each one.
const GATHER: std::time::Duration = std::time::Duration::from_millis(5);

/// The queue and the thread that empties it.
pub(crate) struct Applier {
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
}

struct Shared {
    events: sled::Tree,
    queue: Mutex<Queue>,
    wake: Condvar,
    /// Held while chunks taken from the queue are applied, so that batches
    /// are applied in the order they were taken.
    applying: Mutex<()>,
}

#[derive(Default)]
struct Queue {
    chunks: Vec<(IVec, IVec)>,
    /// The thread waits for work and must be woken for it.
    idle: bool,
    stop: bool,
    /// Why an insert failed: sled no longer holds every append.
    failed: Option<String>,
}

fn failed_earlier(why: &str) -> StoreError {
    StoreError::Io(format!("writing the event log into sled failed earlier: {why}"))
}

impl Shared {
    /// Applies everything queued so far, in order.
    fn drain(&self) -> Result<(), StoreError> {
        let _applying = lock(&self.applying);
        let chunks = {
            let mut queue = lock(&self.queue);
            if let Some(why) = &queue.failed {
                return Err(failed_earlier(why));
            }
            std::mem::take(&mut queue.chunks)
        };
        for (key, json) in chunks {
            if let Err(e) = self.events.insert(key, pack(&json)) {
                lock(&self.queue).failed = Some(e.to_string());
                return Err(StoreError::Io(format!("writing the event log into sled: {e}")));
            }
        }
        Ok(())
    }

    fn run(&self) {
        loop {
            {
                let mut queue = lock(&self.queue);
                while queue.chunks.is_empty() && !queue.stop {
                    queue.idle = true;
                    queue = self.wake.wait(queue).unwrap_or_else(PoisonError::into_inner);
                }
                queue.idle = false;
                if queue.stop {
                    return;
                }
                // Woken by a stop, at worst, which drains and returns early.
                queue = self.wake.wait_timeout(queue, GATHER).unwrap_or_else(PoisonError::into_inner).0;
                if queue.stop {
                    return;
                }
            }
            // A failure is kept in the queue and reported to the next caller.
            let _ = self.drain();
        }
    }
}

impl Applier {
    /// Starts the thread that writes chunks into `events`.
    pub fn start(events: sled::Tree) -> std::io::Result<Self> {
        let shared = Arc::new(Shared {
            events,
            queue: Mutex::default(),
            wake: Condvar::new(),
            applying: Mutex::new(()),
        });
        let worker = shared.clone();
        let thread =
            std::thread::Builder::new().name("cairn-store-apply".into()).spawn(move || worker.run())?;
        Ok(Self { shared, thread: Some(thread) })
    }

    /// Queues a chunk (its key and JSON) to be compressed and inserted;
    /// refused once an insert has failed.
    pub fn queue(&self, key: IVec, json: IVec) -> Result<(), StoreError> {
        let backlog = {
            let mut queue = lock(&self.shared.queue);
            if let Some(why) = &queue.failed {
                return Err(failed_earlier(why));
            }
            queue.chunks.push((key, json));
            if queue.idle {
                queue.idle = false;
                self.shared.wake.notify_one();
            }
            queue.chunks.len()
        };
        if backlog > MOST_QUEUED { self.settle() } else { Ok(()) }
    }

    /// Applies everything queued, on the calling thread: after this, sled
    /// holds every chunk queued before it.
    pub fn settle(&self) -> Result<(), StoreError> {
        self.shared.drain()
    }
}

impl Drop for Applier {
    fn drop(&mut self) {
        lock(&self.shared.queue).stop = true;
        self.shared.wake.notify_one();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
        let _ = self.shared.drain();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queued_chunks_are_in_sled_after_settle_and_after_drop() {
        let db = sled::Config::new().temporary(true).open().expect("sled");
        let events = db.open_tree("events").expect("tree");
        let applier = Applier::start(events.clone()).expect("start");
        for i in 0..5000u32 {
            let json = IVec::from(format!(r#"{{"v":1,"events":[],"n":{i}}}"#).as_bytes());
            applier.queue(IVec::from(&i.to_be_bytes()[..]), json).expect("queue");
        }
        applier.settle().expect("settle");
        assert_eq!(events.len(), 5000);
        let stored = events.get(4999u32.to_be_bytes()).expect("get").expect("present");
        let json = crate::records::unpack(&stored).expect("unpack");
        assert_eq!(&json[..], br#"{"v":1,"events":[],"n":4999}"#);
        applier.queue(IVec::from(&b"last"[..]), IVec::from(&b"{}"[..])).expect("queue");
        drop(applier);
        assert!(events.get("last").expect("get").is_some(), "dropping applies what is queued");
    }
}
