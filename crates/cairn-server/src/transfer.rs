//! The handlers that move runs between stores: `GET /runs/{id}/export`
//! answers a run as the record `cairn export` writes, and `POST
//! /runs/import` adds one (`cairn import` through a server).

use axum::Json;
use axum::extract::rejection::{JsonRejection, PathRejection};
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use cairn_app::transfer::Exported;
use serde_json::json;

use crate::Shared;
use crate::problem::Problem;
use crate::runs::{Answer, body, run_id};

/// The largest record `POST /runs/import` takes: a run's whole log.
pub const MAX_IMPORT_BYTES: usize = 256 * 1024 * 1024;

/// `GET /runs/{id}/export`.
#[utoipa::path(
    get,
    path = "/api/v1/runs/{id}/export",
    tag = "runs",
    operation_id = "export_run",
    params(("id" = String, Path, description = "The run's id")),
    responses(
        (status = 200, description = "The run as a record to import elsewhere: its recorded definition and every event, as stored", body = crate::openapi::Export),
        (status = 404, description = "No such run", body = crate::openapi::Problem, content_type = "application/problem+json"),
        crate::openapi::Refusals,
    ),
    security(("bearer" = []))
)]
pub(crate) async fn export(
    State(shared): State<Shared>,
    path: Result<Path<String>, PathRejection>,
) -> Answer {
    let id = run_id(path)?;
    let record = shared.service.app().export(&id).await.map_err(Problem::from)?;
    Ok(Json(record).into_response())
}

/// `POST /runs/import`.
#[utoipa::path(
    post,
    path = "/api/v1/runs/import",
    tag = "runs",
    operation_id = "import_run",
    request_body = crate::openapi::Export,
    responses(
        (status = 200, description = "What importing did: `added`, `completed` (the store held the start of this log) or `present` (it held all of it)", body = crate::openapi::Imported),
        (status = 409, description = "The store holds another run under this id", body = crate::openapi::Problem, content_type = "application/problem+json"),
        (status = 413, description = "The body is too large", body = crate::openapi::Problem, content_type = "application/problem+json"),
        (status = 415, description = "The body is not sent as JSON", body = crate::openapi::Problem, content_type = "application/problem+json"),
        (status = 422, description = "The body is not a run's record, or its log does not fold into a run", body = crate::openapi::Problem, content_type = "application/problem+json"),
        crate::openapi::Refusals,
    ),
    security(("bearer" = []))
)]
pub(crate) async fn import(
    State(shared): State<Shared>,
    payload: Result<Json<Exported>, JsonRejection>,
) -> Answer {
    let record = body(payload)?;
    let (run, events) = (record.run_id.clone(), record.events.len());
    let imported = shared.service.app().import(record).await.map_err(Problem::from)?;
    // A run that was going on when it was exported goes on here.
    if imported != cairn_app::transfer::Imported::Present {
        shared.service.adopt(&run).await;
    }
    Ok((StatusCode::OK, Json(json!({"run_id": run, "imported": imported, "events": events}))).into_response())
}
