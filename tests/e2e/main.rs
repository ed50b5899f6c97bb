//! End-to-end tests: each runs the real `cairn` binary as a user would.

mod plan;
mod support;
mod validate;
