//! Who may do what. One table ([`ROUTES`]) names every endpoint with the
//! operation it is and what that needs; the router is built from it, so no
//! endpoint exists without a row, and the authorization test walks it.
//! A request's identity comes from its bearer token, else from a browser
//! session's cookie (whose unsafe requests must carry the session's CSRF
//! token), or, on a server started with `--auth none`, from nobody in
//! particular; the actor of every event a request causes is that
//! identity's name.

use axum::extract::{Request, State};
use axum::http::{HeaderMap, Method, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use cairn_domain::access::{Caller, GateRoles, Role};

use crate::Shared;
use crate::problem::Problem;

/// What an operation needs of the caller.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Need {
    /// Nothing: anyone may call it (health, the API document).
    Anyone,
    /// A token with at least this role.
    Role(Role),
    /// A token whose gate roles include the role it decides as (checked
    /// against the gate by the handler): no API role replaces that.
    GateRole,
}

/// Each endpoint of the API, named: the router gives each its handler.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[allow(missing_docs)]
pub enum Endpoint {
    Health,
    OpenApi,
    Validate,
    StartRun,
    ListRuns,
    GetRun,
    Pause,
    Resume,
    Cancel,
    Approve,
    Reject,
    Answer,
    Gates,
    ListWorkflows,
    GetWorkflow,
    RegisterWorkflow,
    Hook,
    Stats,
    Search,
    Events,
    EventStream,
    RunFeed,
    Checkpoints,
    Fork,
    CreateToken,
    ListTokens,
    RevokeToken,
    Definition,
    Prune,
    ExportRun,
    ImportRun,
    Metrics,
    SignIn,
    WhoAmI,
    SignOut,
}

/// One endpoint: its method, its path (axum's syntax), and what it needs.
#[derive(Debug, Clone)]
pub struct Route {
    /// The HTTP method.
    pub method: Method,
    /// The path under the server's root.
    pub path: &'static str,
    /// Which endpoint it is.
    pub endpoint: Endpoint,
    /// What the caller needs.
    pub need: Need,
}

const fn route(method: Method, path: &'static str, endpoint: Endpoint, need: Need) -> Route {
    Route { method, path, endpoint, need }
}

const VIEWER: Need = Need::Role(Role::Viewer);
const OPERATOR: Need = Need::Role(Role::Operator);
const ADMIN: Need = Need::Role(Role::Admin);

/// Every endpoint of the API and what it needs: the one table the router
/// is built from.
pub const ROUTES: &[Route] = &[
    route(Method::GET, "/api/v1/health", Endpoint::Health, Need::Anyone),
    route(Method::GET, "/api/v1/openapi.json", Endpoint::OpenApi, Need::Anyone),
    route(Method::POST, "/api/v1/workflows/validate", Endpoint::Validate, VIEWER),
    route(Method::POST, "/api/v1/runs", Endpoint::StartRun, OPERATOR),
    route(Method::GET, "/api/v1/runs", Endpoint::ListRuns, VIEWER),
    route(Method::GET, "/api/v1/runs/{id}", Endpoint::GetRun, VIEWER),
    route(Method::POST, "/api/v1/runs/{id}/pause", Endpoint::Pause, OPERATOR),
    route(Method::POST, "/api/v1/runs/{id}/resume", Endpoint::Resume, OPERATOR),
    route(Method::POST, "/api/v1/runs/{id}/cancel", Endpoint::Cancel, OPERATOR),
    route(Method::POST, "/api/v1/runs/{id}/approve", Endpoint::Approve, Need::GateRole),
    route(Method::POST, "/api/v1/runs/{id}/reject", Endpoint::Reject, Need::GateRole),
    route(Method::POST, "/api/v1/runs/{id}/answer", Endpoint::Answer, OPERATOR),
    route(Method::GET, "/api/v1/gates", Endpoint::Gates, VIEWER),
    route(Method::GET, "/api/v1/workflows", Endpoint::ListWorkflows, VIEWER),
    route(Method::GET, "/api/v1/workflows/{id}", Endpoint::GetWorkflow, VIEWER),
    route(Method::POST, "/api/v1/workflows", Endpoint::RegisterWorkflow, OPERATOR),
    // The delivery's signature is its credential (checked by the handler).
    route(Method::POST, "/api/v1/hooks/{workflow}", Endpoint::Hook, Need::Anyone),
    route(Method::GET, "/api/v1/stats", Endpoint::Stats, VIEWER),
    route(Method::GET, "/api/v1/search", Endpoint::Search, VIEWER),
    route(Method::GET, "/api/v1/runs/{id}/events", Endpoint::Events, VIEWER),
    route(Method::GET, "/api/v1/runs/{id}/events/stream", Endpoint::EventStream, VIEWER),
    route(Method::GET, "/api/v1/events/stream", Endpoint::RunFeed, VIEWER),
    route(Method::GET, "/api/v1/runs/{id}/checkpoints", Endpoint::Checkpoints, VIEWER),
    route(Method::POST, "/api/v1/runs/{id}/fork", Endpoint::Fork, OPERATOR),
    route(Method::POST, "/api/v1/tokens", Endpoint::CreateToken, ADMIN),
    route(Method::GET, "/api/v1/tokens", Endpoint::ListTokens, ADMIN),
    route(Method::DELETE, "/api/v1/tokens/{name}", Endpoint::RevokeToken, ADMIN),
    route(Method::GET, "/api/v1/runs/{id}/definition", Endpoint::Definition, VIEWER),
    route(Method::POST, "/api/v1/prune", Endpoint::Prune, ADMIN),
    route(Method::GET, "/api/v1/runs/{id}/export", Endpoint::ExportRun, VIEWER),
    // An import writes history as others made it (their names, their times).
    route(Method::POST, "/api/v1/runs/import", Endpoint::ImportRun, ADMIN),
    route(Method::GET, "/metrics", Endpoint::Metrics, VIEWER),
    route(Method::POST, "/api/v1/session", Endpoint::SignIn, Need::Anyone),
    route(Method::GET, "/api/v1/session", Endpoint::WhoAmI, VIEWER),
    route(Method::DELETE, "/api/v1/session", Endpoint::SignOut, Need::Anyone),
];

/// How the server tells who calls.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Auth {
    /// Bearer tokens; `local_key` also admits the command line of the
    /// server's own data directory (the key is in a file only its owner
    /// reads), acting as the user it names.
    Token {
        /// The key in the data directory, if the server wrote one.
        local_key: Option<String>,
    },
    /// Nobody is asked (loopback only): every request acts as the user it
    /// names, or `anonymous`.
    None,
}

/// The header a trusted local client names its user with (`--auth none`
/// or the local key only; a token's name is never overridden).
pub const ACTOR_HEADER: &str = "x-cairn-actor";

/// The middleware of one route: refuses a caller without what the route
/// needs, and hands the handler its [`Caller`].
pub async fn guard(
    State((shared, need)): State<(Shared, Need)>,
    mut request: Request,
    next: Next,
) -> Response {
    if token_in_query(request.uri().query()) {
        return Problem::bad_request(
            "tokens go in the `Authorization: Bearer` header, never in the URL (URLs are logged)",
        )
        .into_response();
    }
    if need == Need::Anyone {
        return next.run(request).await;
    }
    let (identity, credential) = match identify(&shared, request.headers()).await {
        Ok(found) => found,
        Err(problem) => return problem.into_response(),
    };
    if let Credential::Session { csrf } = &credential
        && !matches!(*request.method(), Method::GET | Method::HEAD)
        && !request
            .headers()
            .get(crate::cookies::CSRF_HEADER)
            .is_some_and(|sent| equal_in_constant_time(sent.as_bytes(), csrf.as_bytes()))
    {
        return Problem::forbidden(format!(
            "a request of a signed-in session that changes something must send the session's CSRF token in `{}`",
            crate::cookies::CSRF_HEADER
        ))
        .into_response();
    }
    if let Need::Role(needed) = need
        && !identity.role.allows(needed)
    {
        return Problem::forbidden(format!(
            "token `{}` is {}; this needs {}",
            identity.name,
            identity.role.word(),
            needed.word()
        ))
        .into_response();
    }
    request.extensions_mut().insert(identity);
    request.extensions_mut().insert(credential);
    next.run(request).await
}

/// Whether a query string carries something that looks like a credential.
fn token_in_query(query: Option<&str>) -> bool {
    query.is_some_and(|q| {
        q.split('&').filter_map(|pair| pair.split('=').next()).any(|key| {
            matches!(
                key.to_ascii_lowercase().as_str(),
                "token" | "access_token" | "api_key" | "key" | "bearer"
            )
        })
    })
}

/// How a request proved who it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Credential {
    /// A bearer token (or nothing, on a server that asks for nothing).
    Bearer,
    /// A browser session's cookie; unsafe requests must carry its CSRF token.
    Session {
        /// The session's CSRF token.
        csrf: String,
    },
}

/// The identity of a request's credentials: its bearer token, or else its
/// session cookie.
async fn identify(shared: &Shared, headers: &HeaderMap) -> Result<(Caller, Credential), Problem> {
    let claimed = || {
        headers
            .get(ACTOR_HEADER)
            .and_then(|v| v.to_str().ok())
            .filter(|v| cairn_domain::id::is_label(v))
            .map(str::to_owned)
    };
    if *shared.auth == Auth::None {
        let name = claimed().unwrap_or_else(|| "anonymous".into());
        return Ok((Caller { name, role: Role::Admin, gate_roles: GateRoles::Any }, Credential::Bearer));
    }
    let Some(value) = headers.get(header::AUTHORIZATION) else {
        if let Some(id) = crate::cookies::cookie(headers) {
            let (secret, csrf) = shared.sessions.secret(id).ok_or_else(|| {
                Problem::unauthorized(
                    "the session has ended (signed out, expired, or the server restarted): sign in again",
                )
            })?;
            let caller = by_secret(shared, &secret, None).await?;
            return Ok((caller, Credential::Session { csrf }));
        }
        return Err(Problem::unauthorized("send a token: `Authorization: Bearer TOKEN`"));
    };
    let secret = value
        .to_str()
        .ok()
        .and_then(|v| v.strip_prefix("Bearer ").or_else(|| v.strip_prefix("bearer ")))
        .map(str::trim)
        .ok_or_else(|| Problem::unauthorized("the Authorization header must be `Bearer TOKEN`"))?;
    Ok((by_secret(shared, secret, claimed()).await?, Credential::Bearer))
}

/// Who a secret is: the local key (acting as the user `claimed` names, or
/// `local`) or an API token. Only the local key may claim a name.
pub(crate) async fn by_secret(
    shared: &Shared,
    secret: &str,
    claimed: Option<String>,
) -> Result<Caller, Problem> {
    if let Auth::Token { local_key: Some(key) } = shared.auth.as_ref()
        && equal_in_constant_time(secret.as_bytes(), key.as_bytes())
    {
        let name = claimed.unwrap_or_else(|| "local".into());
        return Ok(Caller { name, role: Role::Admin, gate_roles: GateRoles::Any });
    }
    let token = shared.service.app().authenticate(secret).await.map_err(Problem::from)?;
    Ok(Caller { name: token.name, role: token.role, gate_roles: GateRoles::Only(token.gate_roles) })
}

/// Compares two secrets without a timing that says how much matched.
fn equal_in_constant_time(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_in_a_query_string_are_spotted() {
        assert!(token_in_query(Some("token=abc")));
        assert!(token_in_query(Some("after=3&access_token=abc")));
        assert!(token_in_query(Some("API_KEY=x")));
        assert!(!token_in_query(Some("after=3&limit=10")));
        assert!(!token_in_query(None));
    }

    #[test]
    fn secrets_compare_equal_only_when_equal() {
        assert!(equal_in_constant_time(b"abc", b"abc"));
        assert!(!equal_in_constant_time(b"abc", b"abd"));
        assert!(!equal_in_constant_time(b"abc", b"abcd"));
    }
}
