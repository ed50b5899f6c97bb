//! Test support shared by cairn's crates: fixtures, snapshot redactions, and
//! the conformance suites every port implementation must pass.
//!
//! What it is: code used only from tests (`[dev-dependencies]`).
//!
//! What it deliberately does not do: ship in a binary, or hold production
//! logic: a fake here stands in for a port, it never replaces one.
//!
//! May depend on: `cairn-domain`, `cairn-ports`, insta. Never on the engine,
//! an adapter or the app (adapters depend on it, to run its suites).
//!
//! The fakes and suites arrive with the ports they exercise.
