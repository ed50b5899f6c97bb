//! The verbs that steer stored runs: `pause`, `cancel`, `fork`, `prune`.

use std::time::Duration;

use cairn_domain::id::RunId;
use cairn_domain::state::word;
use cairn_domain::steer::Request;

use super::{DocFormat, RunFormat, Verbs, exit, print_run};
use crate::error::Error;
use crate::host::whoami;

/// How long `pause` and `cancel` wait for the process driving the run to stop.
const WAIT_FOR_DRIVER: Duration = Duration::from_secs(600);

/// `cairn pause RUN` and `cairn cancel RUN`: signal the process driving the
/// run (SIGINT pauses, SIGTERM cancels) and wait for it to let go of the
/// store; a run nobody drives is marked directly.
pub(crate) fn stop(verbs: &Verbs<'_>, id: &RunId, cancel: bool, format: RunFormat) -> Result<u8, Error> {
    let verb = if cancel { "cancel" } else { "pause" };
    let request = if cancel { Request::Cancel } else { Request::Pause };
    let mut wait = crate::host::WAIT_FOR_STORE;
    if let Some(holder) = verbs.holder().filter(|h| h.run.is_some()) {
        if holder.run.as_deref() != Some(id.as_str()) {
            return Err(Error::Store(format!(
                "the store is in use by {}; {verb} that run or wait for it",
                holder.sentence()
            )));
        }
        let signal =
            if cancel { nix::sys::signal::Signal::SIGTERM } else { nix::sys::signal::Signal::SIGINT };
        let pid = nix::unistd::Pid::from_raw(i32::try_from(holder.pid).unwrap_or(0));
        nix::sys::signal::kill(pid, signal)
            .map_err(|e| Error::Store(format!("cannot signal {}: {e}", holder.sentence())))?;
        if !verbs.quiet {
            eprintln!("asked {} to {verb}; waiting for it to stop", holder.sentence());
        }
        // The store is let go when the driver exits: wait for that.
        wait = WAIT_FOR_DRIVER;
    }
    let opened = verbs.open_with(verb, None, std::sync::Arc::new(cairn_ports::NoSink), wait)?;
    let run = opened.runtime.block_on(opened.app.stop(id, request, &whoami()))?;
    Ok(print_run(&run, format))
}

/// `cairn fork RUN --checkpoint N`: a new run from checkpoint N, paused.
pub(crate) fn fork(verbs: &Verbs<'_>, id: &RunId, checkpoint: u64, format: RunFormat) -> Result<u8, Error> {
    let opened = verbs.open("fork")?;
    let run = opened.runtime.block_on(opened.app.fork(id, checkpoint, &whoami()))?;
    match format {
        RunFormat::Text => outln!("{}", run.state.run_id),
        RunFormat::Json => {
            print_run(&run, RunFormat::Json);
        }
    }
    Ok(exit::OK)
}

/// `cairn prune --older-than D`: deletes ended runs last updated before now − D.
pub(crate) fn prune(
    verbs: &Verbs<'_>,
    older_than: &str,
    dry_run: bool,
    format: DocFormat,
) -> Result<u8, Error> {
    let age = older_than
        .parse::<cairn_domain::duration::Duration>()
        .map_err(|e| Error::Config(format!("--older-than: {e}")))?;
    let opened = verbs.open("prune")?;
    let pruned = opened.runtime.block_on(opened.app.prune(age, dry_run))?;
    if format == DocFormat::Json {
        let deleted: Vec<&str> = pruned.iter().map(|r| r.run_id.as_str()).collect();
        outln!("{}", serde_json::json!({"deleted": deleted, "dry_run": dry_run}));
    } else if dry_run {
        for r in &pruned {
            outln!("{} ({}, {})", r.run_id, r.workflow, word(r.status));
        }
        outln!("would prune {} run(s) that ended more than {age} ago", pruned.len());
    } else {
        outln!("pruned {} run(s) that ended more than {age} ago", pruned.len());
    }
    Ok(exit::OK)
}
