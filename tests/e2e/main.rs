//! End-to-end tests: each runs the real `cairn` binary as a user would.

mod plan;
mod run;
mod support;
mod validate;
