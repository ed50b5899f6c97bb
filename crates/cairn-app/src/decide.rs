//! Decisions at gates made for a caller a front established: the gate
//! role it decides as is one it holds (apart from `app`, which the run
//! view this reads the gates from depends on).

use cairn_domain::access::Caller;
use cairn_domain::id::RunId;
use cairn_domain::steer::GateCall;

use crate::app::{App, Run};
use crate::error::Error;

impl App {
    /// [`App::decide`] for `caller`, as the gate role it may decide as
    /// ([`Caller::decision_role`]: the one the call names, else its only
    /// one; gates that list no approvers take an operator's decision).
    pub async fn decide_as(&self, id: &RunId, mut call: GateCall, caller: &Caller) -> Result<Run, Error> {
        let run = self.status(id).await?;
        let gates = crate::view::run::gates_of(&run.state, &run.definition.workflow);
        let decided: Vec<_> = gates
            .iter()
            .filter(|g| call.gate.as_deref().is_none_or(|gate| g.path.as_str() == gate))
            .collect();
        let operators_decide = !decided.is_empty() && decided.iter().all(|g| g.approvers.is_empty());
        call.role = caller
            .decision_role(call.role.take(), operators_decide)
            .map_err(|denied| Error::Denied { caller: caller.name.clone(), role: caller.role, denied })?;
        self.decide(id, call, &caller.name).await
    }
}
