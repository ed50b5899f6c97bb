//! The cairn application: the operations every front calls, the hosting
//! that puts a store, providers and handlers together, the views every
//! front shows, and the command line.
//!
//! What it is: a library. [`App`] holds the operations on runs (start,
//! drive, status, list, decide, stop, fork, prune), each on one run by id;
//! [`Cli`] is the `cairn` command line over them, for any binary that
//! picks its store and registers its handlers and providers:
//!
//! ```no_run
//! fn main() -> std::process::ExitCode {
//!     cairn_app::Cli::new(cairn_app::SledStores).run()
//! }
//! ```
//!
//! What it deliberately does not do: decide anything about workflows.
//! Parsing, validation and plans are `cairn-domain`'s; running is
//! `cairn-engine`'s. Fronts add transport and words, never rules.
//!
//! May depend on: every cairn crate but the test kit; clap (with
//! clap_complete and clap_mangen), tokio, and for the terminal anstyle,
//! terminal_size and unicode-width.
//!
//! Read first: [`App`], [`Cli`], [`host`].

pub mod app;
pub mod cassette;
pub mod catalog;
pub mod cli;
pub mod config;
pub mod decide;
pub mod error;
pub mod files;
pub mod follow;
pub mod hooks;
pub mod host;
pub mod meter;
pub mod operations;
pub mod progress;
mod relay;
pub mod search;
pub mod service;
pub mod stats;
pub mod transfer;
pub mod triggers;
pub mod view;

pub use app::{App, Run, Started};
pub use cairn_engine::EngineError;
pub use cli::Cli;
pub use error::Error;
pub use host::{DefaultStores, SledStores, StoreFactory, Stores};
pub use operations::{Connect, Operations, Target};
pub use service::Service;
