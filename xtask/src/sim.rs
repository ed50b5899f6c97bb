//! `cargo xtask sim [--seeds N] [--from S] [--seed S] [--release]`: the
//! deterministic simulation (`crates/cairn-sim`) over more seeds than CI
//! runs, or one seed replayed with its trace.

use std::process::Command;

use anyhow::{Context, Result, bail};

use crate::root;

pub fn run(args: &[String]) -> Result<()> {
    let mut cargo_args = vec!["run".to_owned(), "--locked".to_owned(), "--quiet".to_owned()];
    let mut sim_args = Vec::new();
    let mut it = args.iter();
    while let Some(flag) = it.next() {
        match flag.as_str() {
            "--release" => cargo_args.push("--release".to_owned()),
            "--seeds" | "--from" | "--seed" => match it.next() {
                Some(n) if n.parse::<u64>().is_ok() => sim_args.extend([flag.clone(), n.clone()]),
                _ => bail!("{flag} takes a number"),
            },
            _ => bail!("usage: cargo xtask sim [--seeds N] [--from S] [--seed S] [--release]"),
        }
    }
    cargo_args.extend(["-p", "cairn-sim", "--bin", "cairn-sim", "--"].map(str::to_owned));
    cargo_args.extend(sim_args);
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    eprintln!("$ cargo {}", cargo_args.join(" "));
    let status =
        Command::new(cargo).args(&cargo_args).current_dir(root()).status().context("running cargo")?;
    if !status.success() {
        bail!("the simulation failed");
    }
    Ok(())
}
