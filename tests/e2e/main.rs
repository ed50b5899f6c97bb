//! End-to-end tests: each runs the real `cairn` binary as a user would.

mod catalog;
mod cli_help;
mod cli_init;
mod cli_output;
mod cli_terminal;
mod crash;
mod embed;
mod fence;
mod gates;
mod iterate;
mod llm;
mod plan;
mod postgres;
mod provenance;
mod retry_timing;
mod run;
mod secrets;
mod serve;
mod steer;
mod subworkflow;
mod support;
mod validate;
mod verbs_cancel;
mod verbs_examples;
mod verbs_global;
mod verbs_runs;
