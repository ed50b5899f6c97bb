//! Decisions at gates made for a caller a front established: the gate
//! role it decides as is one it holds (apart from `app`, which the run
//! view this reads the gates from depends on).

use cairn_domain::access::Caller;
use cairn_domain::id::RunId;
use cairn_domain::steer::GateCall;
use cairn_engine::EngineError;
use cairn_ports::RunQuery;

use crate::app::{App, Run};
use crate::error::Error;
use crate::view::run::{WaitingGate, gates_of};

impl App {
    /// `call` made by `caller`, as the gate role it may decide as
    /// ([`Caller::decision_role`]: the one the call names, else its only
    /// one; gates that list no approvers take an operator's decision);
    /// refused when it may not decide.
    pub async fn decision_as(
        &self,
        id: &RunId,
        mut call: GateCall,
        caller: &Caller,
    ) -> Result<GateCall, Error> {
        let run = self.status(id).await?;
        let gates = gates_of(&run.state, &run.definition.workflow);
        let decided: Vec<_> = gates
            .iter()
            .filter(|g| call.gate.as_deref().is_none_or(|gate| g.path.as_str() == gate))
            .collect();
        let operators_decide = !decided.is_empty() && decided.iter().all(|g| g.approvers.is_empty());
        call.role = caller
            .decision_role(call.role.take(), operators_decide)
            .map_err(|denied| Error::Denied { caller: caller.name.clone(), role: caller.role, denied })?;
        Ok(call)
    }

    /// The runs that may wait for a person: `run` alone, else every run
    /// of the store not ended, newest first. Read with [`App::gates_for`].
    pub async fn waiting_runs(&self, run: Option<&RunId>) -> Result<Vec<Run>, Error> {
        if let Some(id) = run {
            return Ok(vec![self.status(id).await?]);
        }
        let page = self.store().list(&RunQuery::default()).await.map_err(EngineError::from)?;
        let mut runs = Vec::new();
        for summary in page.runs.into_iter().filter(|s| !s.status.is_terminal()) {
            match self.status(&summary.run_id).await {
                Ok(run) => runs.push(run),
                // Deleted since it was listed.
                Err(Error::Engine(EngineError::Store(cairn_ports::StoreError::NotFound(_)))) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(runs)
    }
}

/// The gates waiting in `runs` ([`App::waiting_runs`]), in run then step
/// order, with what `caller` may do at each; `mine` keeps only those it
/// may act at (its inbox).
pub fn gates_for<'a>(runs: &'a [Run], caller: &Caller, mine: bool) -> Vec<WaitingGate<'a>> {
    runs.iter()
        .flat_map(|run| {
            // A sub-workflow's gate is listed with its child run.
            let own = gates_of(&run.state, &run.definition.workflow)
                .into_iter()
                .filter(|g| !g.state.waits_on_child);
            own.map(move |gate| {
                let role = caller.role_at(gate.kind, &gate.approvers, &gate.approved());
                WaitingGate { run, gate, role }
            })
        })
        .filter(|g| !mine || g.role.is_ok())
        .collect()
}
