//! The pure core of cairn.
//!
//! What it is: workflow definitions (parsed from YAML or JSON into typed
//! structs, validated with every problem located), execution plans, run
//! state as a fold of events, scopes and documents, and templates.
//!
//! What it deliberately does not do: no I/O, no clocks, no async, no threads.
//! Files a definition names (schemas) are read through a function the caller
//! passes in; times are values the caller passes in. Everything here is
//! testable with plain values.
//!
//! May depend on: serde, serde_json, serde_yaml and saphyr-parser (behind
//! [`source`]), minijinja, jsonschema, strsim, thiserror. Never on another
//! cairn crate.
//!
//! Read first: [`load`], [`definition::Workflow`], [`plan::Plan`],
//! [`state::RunState::apply`].

pub mod checkpoint;
pub mod dag;
pub mod decide;
pub mod definition;
pub mod duration;
pub mod event;
pub mod id;
pub mod inputs;
pub mod limits;
mod loading;
pub mod needs;
pub mod plan;
pub mod problem;
pub mod program;
pub mod read;
pub mod render;
pub mod scope;
pub mod source;
pub mod state;
pub mod steer;
pub mod template;
pub mod validate;

pub use loading::{Definition, load};
pub use validate::ReadFile;
