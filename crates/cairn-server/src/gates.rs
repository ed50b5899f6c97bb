//! The gates waiting for people across the store: the inbox of a caller,
//! and what it may do at each gate of a run, so a front shows a button
//! only where the decision will be taken.

use axum::Extension;
use axum::Json;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::response::IntoResponse;
use cairn_app::decide::gates_for;
use cairn_app::view;
use cairn_domain::access::Caller;
use cairn_domain::id::RunId;
use serde::Deserialize;
use serde_json::{Value, json};
use utoipa::IntoParams;

use crate::Shared;
use crate::problem::Problem;
use crate::runs::Answer;

/// The query of `GET /gates`.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub(crate) struct GatesQuery {
    /// Only the gates of this run (`404` when there is no such run).
    run: Option<String>,
    /// Only the gates the caller may act at: its inbox.
    #[serde(default)]
    mine: bool,
}

/// `GET /gates`: the gates waiting for a person, in every run not ended
/// (newest run first, then step order), each with what the caller may
/// do there.
#[utoipa::path(
    get,
    path = "/api/v1/gates",
    tag = "runs",
    operation_id = "list_gates",
    params(GatesQuery),
    responses(
        (status = 200, description = "The waiting gates", body = crate::openapi::GatesPage),
        (status = 404, description = "No such run", body = crate::openapi::Problem, content_type = "application/problem+json"),
        crate::openapi::Refusals,
    ),
    security(("bearer" = []))
)]
pub(crate) async fn list(
    State(shared): State<Shared>,
    Extension(caller): Extension<Caller>,
    query: Result<Query<GatesQuery>, QueryRejection>,
) -> Answer {
    let Query(q) = query.map_err(Problem::from)?;
    let run = match q.run {
        Some(text) => {
            Some(RunId::new(&text).map_err(|e| Problem::not_found(format!("no run `{text}`: {e}")))?)
        }
        None => None,
    };
    let app = shared.service.app();
    let runs = app.waiting_runs(run.as_ref()).await.map_err(Problem::from)?;
    let now = app.now();
    let gates: Vec<Value> =
        gates_for(&runs, &caller, q.mine).iter().map(|g| view::run::waiting_gate_json(g, now)).collect();
    Ok(Json(json!({ "gates": gates })).into_response())
}
