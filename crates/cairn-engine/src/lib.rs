//! The cairn engine: the executor that turns the domain's decisions into
//! effects through the ports.
//!
//! What it is: the imperative shell around `cairn-domain`'s pure core. Its
//! loop is: decide, record the transitions, start the steps through ports,
//! turn each outcome into events, record them durably, apply them, decide
//! again. Every event is appended to the store before it takes effect.
//! Also here: the port implementations that need no outside technology —
//! an in-memory [`MemoryStore`], the [`SystemClock`], the deterministic
//! [`MockLlm`].
//!
//! What it deliberately does not do: know any technology. It never names
//! sled, reqwest, a process or a terminal; it sees only `cairn-ports` traits.
//!
//! May depend on: `cairn-domain`, `cairn-ports`, tokio (runtime-agnostic
//! parts: tasks, sync, time), jsonschema, ulid. Never on an adapter or the app.
//!
//! Read first: [`Engine`], [`Engine::run`].

mod clock;
mod control;
mod error;
mod executor;
mod job;
mod memory;
mod mock;
mod tooling;

pub use clock::SystemClock;
pub use control::RunControl;
pub use error::{EngineError, Unmet};
pub use executor::{Engine, EngineBuilder, SNAPSHOT_EVERY, new_run_id};
pub use memory::MemoryStore;
pub use mock::MockLlm;
