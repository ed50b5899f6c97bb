//! The handlers of API tokens (admin only): the same operations as the
//! `cairn token` verbs.

use axum::Json;
use axum::extract::rejection::{JsonRejection, PathRejection};
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use cairn_app::view;
use cairn_domain::access::Role;
use serde::Deserialize;
use serde_json::Value;
use utoipa::ToSchema;

use crate::Shared;
use crate::problem::Problem;
use crate::runs::{Answer, body};

/// The body of `POST /tokens`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct CreateBody {
    /// Its name: the actor of everything it does.
    #[schema(pattern = "^[a-z0-9][a-z0-9_-]{0,63}$")]
    name: String,
    /// Its role (default `viewer`).
    #[serde(default)]
    #[schema(value_type = Option<crate::openapi::Role>)]
    role: Option<Role>,
    /// The gate roles it may decide as.
    #[serde(default)]
    gate_roles: Vec<String>,
    /// How long it is valid: `30d`, `12h` ...
    #[serde(default)]
    #[schema(pattern = "^\\s*([0-9]+(ms|s|m|h|d))+\\s*$")]
    expires: Option<String>,
}

/// `POST /tokens`: a new token; its secret is in the answer, this once.
#[utoipa::path(
    post,
    path = "/api/v1/tokens",
    tag = "tokens",
    operation_id = "create_token",
    request_body = CreateBody,
    responses(
        (status = 201, description = "The new token, with its secret (shown this once)", body = crate::openapi::NewToken),
        (status = 409, description = "A token with that name exists", body = crate::openapi::Problem, content_type = "application/problem+json"),
        (status = 413, description = "The body is too large", body = crate::openapi::Problem, content_type = "application/problem+json"),
        (status = 415, description = "The body is not sent as JSON", body = crate::openapi::Problem, content_type = "application/problem+json"),
        (status = 422, description = "The body has wrong or unknown fields, or a bad name or duration", body = crate::openapi::Problem, content_type = "application/problem+json"),
        crate::openapi::Refusals,
    ),
    security(("bearer" = []))
)]
pub(crate) async fn create(
    State(shared): State<Shared>,
    payload: Result<Json<CreateBody>, JsonRejection>,
) -> Answer {
    let b = body(payload)?;
    let expires = match b.expires {
        Some(text) => Some(text.parse::<cairn_domain::duration::Duration>().map_err(|e| {
            Problem::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid_request", format!("expires: {e}"))
        })?),
        None => None,
    };
    let role = b.role.unwrap_or(Role::Viewer);
    let made = shared
        .service
        .app()
        .create_token(&b.name, role, b.gate_roles, expires)
        .await
        .map_err(Problem::from)?;
    let mut answer = view::token::json(&made.record);
    if let Value::Object(map) = &mut answer {
        map.insert("token".into(), Value::String(made.secret));
    }
    Ok((StatusCode::CREATED, Json(answer)).into_response())
}

/// `GET /tokens`: every token, by name (never a secret or a hash).
#[utoipa::path(
    get,
    path = "/api/v1/tokens",
    tag = "tokens",
    operation_id = "list_tokens",
    responses(
        (status = 200, description = "Every token, by name", body = Vec<crate::openapi::Token>),
        crate::openapi::Refusals,
    ),
    security(("bearer" = []))
)]
pub(crate) async fn list(State(shared): State<Shared>) -> Answer {
    let tokens = shared.service.app().tokens().await.map_err(Problem::from)?;
    Ok(Json(Value::Array(tokens.iter().map(view::token::json).collect())).into_response())
}

/// `DELETE /tokens/{name}`: revokes a token.
#[utoipa::path(
    delete,
    path = "/api/v1/tokens/{name}",
    tag = "tokens",
    operation_id = "revoke_token",
    params(("name" = String, Path, description = "The token's name")),
    responses(
        (status = 204, description = "The token is revoked"),
        (status = 404, description = "No such token", body = crate::openapi::Problem, content_type = "application/problem+json"),
        crate::openapi::Refusals,
    ),
    security(("bearer" = []))
)]
pub(crate) async fn revoke(
    State(shared): State<Shared>,
    path: Result<Path<String>, PathRejection>,
) -> Answer {
    let Path(name) = path.map_err(Problem::from)?;
    shared.service.app().revoke_token(&name).await.map_err(Problem::from)?;
    Ok(StatusCode::NO_CONTENT.into_response())
}
