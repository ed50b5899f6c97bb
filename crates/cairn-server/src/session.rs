//! Browser sessions: the web UI signs in with an API token once and gets
//! an `HttpOnly` cookie, so no script holds the token afterwards, and a
//! CSRF token that every request changing something sends back in a
//! header (the guard in [`crate::access`] checks it). The cookie is
//! `SameSite=Strict`, so other sites' pages do not send it at all.
//!
//! A session keeps the token it was opened with and authenticates it again
//! on every request, so revoking or expiring the token ends its sessions
//! at once. Sessions live in the server's memory: a restart signs every
//! browser out (they sign in again), and nothing about them is stored.

use std::time::Duration;

use axum::Json;
use axum::extract::State;
use axum::extract::rejection::JsonRejection;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use cairn_domain::access::{Caller, GateRoles, Role};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::Shared;
use crate::access::{Credential, by_secret};
use crate::cookies::{LIFETIME, cookie, set_cookie};
use crate::runs::{Answer, body};

/// The body of `POST /session`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct SignInBody {
    /// An API token's secret (`cairn_...`).
    token: String,
}

/// Who a session is: what the UI shows and may offer.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct Session {
    /// The name every event it causes is recorded under.
    name: String,
    /// Its role.
    #[schema(value_type = crate::openapi::Role)]
    role: Role,
    /// The gate roles it may decide as (when `any_gate_role` is false).
    gate_roles: Vec<String>,
    /// Whether it may decide as any gate role (the local key, `--auth none`).
    any_gate_role: bool,
    /// The token to send in `X-CSRF-Token` with every request that changes
    /// something (`null` when the request did not come with the cookie).
    csrf: Option<String>,
}

impl Session {
    fn of(caller: Caller, csrf: Option<String>) -> Self {
        let (gate_roles, any_gate_role) = match caller.gate_roles {
            GateRoles::Any => (Vec::new(), true),
            GateRoles::Only(roles) => (roles, false),
        };
        Self { name: caller.name, role: caller.role, gate_roles, any_gate_role, csrf }
    }
}

/// `POST /session`: signs a browser in with an API token.
#[utoipa::path(
    post,
    path = "/api/v1/session",
    tag = "session",
    operation_id = "sign_in",
    request_body = SignInBody,
    responses(
        (status = 201, description = "Signed in: the session cookie is set (`HttpOnly`, `SameSite=Strict`, 12 hours), and the answer says who it is and its CSRF token", body = Session,
            headers(("Set-Cookie" = String, description = "`cairn_session=...`"))),
        (status = 400, description = "Malformed JSON, or a credential in the query string", body = crate::openapi::Problem, content_type = "application/problem+json"),
        (status = 401, description = "An unknown or expired token", body = crate::openapi::Problem, content_type = "application/problem+json"),
        (status = 413, description = "The body is too large", body = crate::openapi::Problem, content_type = "application/problem+json"),
        (status = 415, description = "The body is not sent as JSON", body = crate::openapi::Problem, content_type = "application/problem+json"),
        (status = 422, description = "The body has wrong or unknown fields", body = crate::openapi::Problem, content_type = "application/problem+json"),
        (status = 503, description = "The store failed, or the system gave no random bytes", body = crate::openapi::Problem, content_type = "application/problem+json"),
    )
)]
pub(crate) async fn sign_in(
    State(shared): State<Shared>,
    headers: HeaderMap,
    payload: Result<Json<SignInBody>, JsonRejection>,
) -> Answer {
    let b = body(payload)?;
    let secret = b.token.trim();
    let caller = by_secret(&shared, secret, None).await?;
    let (id, csrf) = shared.sessions.open(secret)?;
    let mut answer = (StatusCode::CREATED, Json(Session::of(caller, Some(csrf)))).into_response();
    if let Some(cookie) = set_cookie(&id, LIFETIME, &headers) {
        answer.headers_mut().insert(header::SET_COOKIE, cookie);
    }
    Ok(answer)
}

/// `GET /session`: who the caller is (a session, a token, or nobody on a
/// server that asks for nothing).
#[utoipa::path(
    get,
    path = "/api/v1/session",
    tag = "session",
    operation_id = "who_am_i",
    responses(
        (status = 200, description = "Who the caller is, with the session's CSRF token when it came with the cookie", body = Session),
        (status = 400, description = "A credential in the query string", body = crate::openapi::Problem, content_type = "application/problem+json"),
        (status = 401, description = "No session or token, or an ended one", body = crate::openapi::Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
pub(crate) async fn who(
    axum::Extension(caller): axum::Extension<Caller>,
    axum::Extension(credential): axum::Extension<Credential>,
) -> Json<Session> {
    let csrf = match credential {
        Credential::Session { csrf } => Some(csrf),
        Credential::Bearer => None,
    };
    Json(Session::of(caller, csrf))
}

/// `DELETE /session`: signs the browser out (its cookie is cleared).
#[utoipa::path(
    delete,
    path = "/api/v1/session",
    tag = "session",
    operation_id = "sign_out",
    responses(
        (status = 204, description = "Signed out (also when no session was open)"),
        (status = 400, description = "A credential in the query string", body = crate::openapi::Problem, content_type = "application/problem+json"),
    )
)]
pub(crate) async fn sign_out(State(shared): State<Shared>, headers: HeaderMap) -> Response {
    if let Some(id) = cookie(&headers) {
        shared.sessions.close(id);
    }
    let mut answer = StatusCode::NO_CONTENT.into_response();
    if let Some(cookie) = set_cookie("", Duration::ZERO, &headers) {
        answer.headers_mut().insert(header::SET_COOKIE, cookie);
    }
    answer
}
