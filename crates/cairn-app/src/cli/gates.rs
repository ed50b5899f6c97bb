//! The decision verbs: `approve`, `reject` and `answer` record a person's
//! decision at a gate, say which gate it was, then (unless `--detach`)
//! drive the run on in this process, like `resume`.

use cairn_domain::id::RunId;
use cairn_domain::steer::{self, GateCall, Refusal, Verdict};
use cairn_engine::EngineError;

use super::{Then, Verbs, drive, exit, print_run};
use crate::error::Error;

/// `cairn approve|reject|answer RUN`.
pub(crate) fn decide(verbs: &Verbs<'_>, id: &RunId, call: GateCall, then: &Then) -> Result<u8, Error> {
    let verb = match call.verdict {
        Verdict::Approve => "approve",
        Verdict::Reject => "reject",
        _ => "answer",
    };
    let opened = if then.detach { verbs.open(verb)? } else { verbs.open_driving(verb, id)? };
    if !then.detach {
        // Nothing is recorded that this process could not drive on.
        opened.runtime.block_on(opened.app.check(id))?;
    }
    match opened.runtime.block_on(opened.app.decide(id, call.clone(), &then.by())) {
        Ok(run) => {
            if let Some(gate) = steer::decided_gate(&run.state, &call) {
                verbs.notice(decided(&call, gate.as_str()));
            }
            if then.detach {
                if opened.app.served() {
                    verbs.notice("recorded; the server drives the run on");
                } else {
                    verbs.notice(format_args!("recorded; `cairn resume {id}` drives the run on"));
                }
                print_run(&run, then.format);
                return Ok(exit::OK);
            }
        }
        // A repeated decision: recorded once already, so nothing is
        // recorded again, and the verb goes on as if it had been.
        Err(Error::Engine(EngineError::Refused { refusal: r @ Refusal::AlreadyDecided { .. }, .. })) => {
            verbs.notice(r);
            if then.detach {
                let run = opened.runtime.block_on(opened.app.status(id))?;
                print_run(&run, then.format);
                return Ok(exit::OK);
            }
        }
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

/// What a person is told their decision did: `approved `epics` as
/// product_owner`, so a decision taken without `--gate` names its gate.
fn decided(call: &GateCall, gate: &str) -> String {
    let role = call.role.as_ref().map(|r| format!(" as {r}")).unwrap_or_default();
    match call.verdict {
        Verdict::Approve => format!("approved `{gate}`{role}"),
        Verdict::Reject => format!("rejected `{gate}`{role}"),
        Verdict::Answer(_) => format!("answered `{gate}`"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_decision_names_its_gate_and_role() {
        let call = |verdict, role: Option<&str>| GateCall {
            gate: None,
            verdict,
            role: role.map(str::to_owned),
            comment: None,
        };
        let said = [
            decided(&call(Verdict::Approve, Some("product_owner")), "epics"),
            decided(&call(Verdict::Reject, None), "per_epic[e1].stories"),
            decided(&call(Verdict::Answer("yes".into()), None), "plan"),
        ];
        insta::assert_snapshot!(said.join("\n"), @r"
        approved `epics` as product_owner
        rejected `per_epic[e1].stories`
        answered `plan`
        ");
    }
}
