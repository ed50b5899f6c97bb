//! End-to-end tests: each runs the real `cairn` binary as a user would.

mod crash;
mod embed;
mod gates;
mod iterate;
mod llm;
mod plan;
mod run;
mod steer;
mod support;
mod validate;
