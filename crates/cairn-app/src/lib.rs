//! The `cairn` application: configuration, wiring of adapters into the
//! engine, and the command line.
//!
//! What it is: the one crate that sees every other. It reads files, picks
//! adapters, and turns results into text, JSON and exit codes.
//!
//! What it deliberately does not do: decide anything about workflows. Parsing,
//! validation and plans are `cairn-domain`'s; running is `cairn-engine`'s.
//! A team writing its own binary does what this crate does.
//!
//! May depend on: every cairn crate, clap, anyhow.
//!
//! Read first: [`cli`], [`files`].

pub mod cassette;
pub mod cli;
pub mod config;
pub mod files;
pub mod gate;
pub mod progress;
pub mod render;
pub mod run;
pub mod runview;
pub mod session;
pub mod steer;
