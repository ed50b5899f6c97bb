//! The ports of cairn: the traits the engine needs from the outside world,
//! each documented as a contract, with the error types that cross them.
//!
//! What it is: the seam between the engine and adapters. An adapter author
//! on another team compiles this crate and `cairn-domain`, never the engine.
//!
//! What it deliberately does not do: implement anything against a real
//! technology (that is each adapter crate's job), or decide policy (retries
//! are decided in the engine from the error class a port returns).
//!
//! May depend on: `cairn-domain`, and small trait-support crates
//! (async-trait, thiserror). Never on the engine, an adapter or the app.
//!
//! The traits (`RunStore`, `LlmProvider`, `CommandRunner`, `Clock`,
//! `EventSink`, `StepHandler`) arrive with the executor that calls them.
