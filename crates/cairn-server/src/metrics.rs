//! `GET /metrics`: what the process counts, in the Prometheus text format
//! (the application's meter), with the runs in the store by status.

use axum::extract::State;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use cairn_domain::state::RunStatus;
use cairn_ports::RunQuery;

use crate::Shared;
use crate::problem::Problem;

/// `GET /metrics`.
#[utoipa::path(
    get,
    path = "/metrics",
    tag = "server",
    operation_id = "metrics",
    responses(
        (status = 200, description = "The counts, in the Prometheus text format", body = String, content_type = "text/plain"),
        (status = 400, description = "A credential in the query string", body = crate::openapi::Problem, content_type = "application/problem+json"),
        (status = 401, description = "No token, or an unknown or expired one", body = crate::openapi::Problem, content_type = "application/problem+json"),
        (status = 503, description = "The store failed", body = crate::openapi::Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
pub(crate) async fn metrics(State(shared): State<Shared>) -> Result<Response, Problem> {
    let app = shared.service.app();
    let all = app.list(&RunQuery::default()).await.map_err(Problem::from)?;
    let mut by_status: Vec<(RunStatus, u64)> = Vec::new();
    for listed in &all.runs {
        match by_status.iter_mut().find(|(s, _)| *s == listed.summary.status) {
            Some((_, n)) => *n += 1,
            None => by_status.push((listed.summary.status, 1)),
        }
    }
    by_status.sort_by_key(|(s, _)| cairn_domain::state::word(*s));
    let mut response = (StatusCode::OK, app.meter().render(&by_status)).into_response();
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"));
    Ok(response)
}
