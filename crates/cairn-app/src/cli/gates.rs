//! The decision verbs: `approve`, `reject` and `answer` record a person's
//! decision at a gate, then (unless `--detach`) drive the run on in this
//! process, like `resume`.

use cairn_domain::id::RunId;
use cairn_domain::steer::{GateCall, Refusal};
use cairn_engine::EngineError;

use super::{Then, Verbs, drive, exit, print_run};
use crate::error::Error;

/// `cairn approve|reject|answer RUN`.
pub(crate) fn decide(verbs: &Verbs<'_>, id: &RunId, call: GateCall, then: &Then) -> Result<u8, Error> {
    let verb = match call.verdict {
        cairn_domain::steer::Verdict::Approve => "approve",
        cairn_domain::steer::Verdict::Reject => "reject",
        _ => "answer",
    };
    let opened = if then.detach { verbs.open(verb)? } else { verbs.open_driving(verb, id)? };
    if !then.detach {
        // Nothing is recorded that this process could not drive on.
        opened.runtime.block_on(opened.app.check(id))?;
    }
    match opened.runtime.block_on(opened.app.decide(id, call, &then.by())) {
        Ok(run) if then.detach => {
            verbs.notice(format_args!("recorded; `cairn resume {id}` drives the run on"));
            print_run(&run, then.format);
            return Ok(exit::OK);
        }
        Ok(_) => {}
        // Too late: the gate's `on_timeout` decides when the run is driven on.
        Err(Error::Engine(EngineError::Refused { refusal: r @ Refusal::DeadlinePassed { .. }, .. }))
            if !then.detach =>
        {
            eprintln!("warning: {r}");
        }
        Err(e) => return Err(e),
    }
    let run = drive::drive_on(&opened, id, !then.non_interactive)?;
    Ok(print_run(&run, then.format))
}
