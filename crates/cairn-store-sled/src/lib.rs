//! The embedded, durable run store: cairn's `RunStore` port on sled.
//!
//! What it is: event logs per run, ordered by sequence number, snapshots
//! (checkpoints), a run index for listing, and each run's exact definition,
//! in versioned record types private to this crate.
//!
//! What it deliberately does not do: interpret events (folding state is the
//! domain's), or schedule anything (that is the engine's). Domain types are
//! never its on-disk format.
//!
//! May depend on: `cairn-domain`, `cairn-ports`, sled, serde. Never on the
//! engine or the app.
