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
//! Its public surface is small on purpose: loading ([`load`],
//! [`Definition`]), definitions, problems and plans, the persisted event
//! format ([`event`]), read-only run state ([`state`]), and the decision
//! machine ([`decide`], [`steer`], [`program`], [`render`]). Parsing,
//! validation, graphs and template analysis are private.
//!
//! May depend on: serde, serde_json, serde_yaml and saphyr-parser (behind
//! the private `source`), minijinja, jsonschema, sha2, strsim, thiserror.
//! Never on another cairn crate.
//!
//! Read first: [`load`], [`definition::Workflow`], [`plan::Plan`],
//! [`state::RunState::apply`].

#![warn(unreachable_pub)]

pub mod access;
pub mod checkpoint;
mod dag;
pub mod decide;
pub mod definition;
pub mod duration;
pub mod event;
pub mod id;
mod include;
pub mod inputs;
pub mod label;
pub mod limits;
mod loading;
pub mod needs;
pub mod plan;
pub mod problem;
pub mod program;
mod read;
pub mod render;
pub mod schedule;
pub mod scope;
mod source;
pub mod state;
pub mod steer;
mod template;
mod validate;

pub use loading::{Definition, content_hash, load};
pub use validate::ReadFile;
