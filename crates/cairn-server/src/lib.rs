//! The HTTP front of cairn: the API of `cairn serve` (`spec/api.md`), its
//! live event streams, tokens and roles.
//!
//! What it is: an inbound adapter over the application layer. Every
//! handler calls the same operations the command line calls
//! ([`cairn_app::App`], through the [`cairn_app::Service`] that drives
//! many runs at once) and answers the same shapes (`cairn_app::view`): one
//! run JSON, one event JSON. Errors become problem documents in one place
//! ([`problem`]); who may call what is one table ([`access::ROUTES`]) the
//! router is built from.
//!
//! What it deliberately does not do: decide anything about runs. It adds
//! transport (HTTP, SSE, JSON bodies) and credentials, never rules.
//!
//! May depend on: `cairn-app`, `cairn-domain`, `cairn-ports`; axum and
//! tower-http for HTTP; tokio.
//!
//! Read first: [`router`], [`access`], [`Http`]. The OpenAPI document
//! of the API is generated from the handlers ([`openapi()`]).

pub mod access;
mod cookies;
mod gates;
mod hooks;
mod metrics;
mod openapi;
pub mod problem;
mod requests;
mod runs;
mod session;
mod stream;
mod tokens;
mod transfer;
mod workflows;

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::middleware::from_fn_with_state;
use axum::routing::{MethodRouter, delete, get, post};
use cairn_app::Service;
use tokio::sync::watch;

pub use access::{Auth, Endpoint, ROUTES};
use openapi::{Bearer, Optional};
pub use problem::Problem;

/// The largest request body: a definition at its size limit, written as
/// a JSON string (which may escape some of it), and room for inputs.
pub const MAX_BODY_BYTES: usize = 2 * cairn_domain::limits::MAX_FILE_BYTES as usize + 64 * 1024;

/// What every handler shares: the service, how callers are told apart,
/// and whether the server is closing (live streams end then).
#[derive(Clone)]
pub struct Shared {
    service: Arc<Service>,
    auth: Arc<Auth>,
    sessions: Arc<cookies::Sessions>,
    closing: watch::Receiver<bool>,
}

impl Shared {
    /// The state of a router over `service`, telling callers apart by
    /// `auth`; streams end when `closing` turns true.
    pub fn new(service: Arc<Service>, auth: Auth, closing: watch::Receiver<bool>) -> Self {
        Self { service, auth: Arc::new(auth), sessions: Arc::default(), closing }
    }
}

/// The API's router: every row of [`ROUTES`] with its handler, behind
/// the guard of what it needs.
pub fn router(shared: Shared) -> Router {
    let routes = ROUTES.iter().fold(Router::new(), |router, route| {
        let guard = from_fn_with_state((shared.clone(), route.need), access::guard);
        router.route(route.path, handler(route.endpoint).route_layer(guard))
    });
    routes
        .fallback(outside_the_api)
        .method_not_allowed_fallback(|| async {
            Problem::new(
                axum::http::StatusCode::METHOD_NOT_ALLOWED,
                "method_not_allowed",
                "this endpoint does not take that method",
            )
        })
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .layer(axum::middleware::from_fn(requests::identified))
        .with_state(shared)
}

/// A path no route takes: under `/api/` a `404` problem; anywhere else
/// the web UI (its page for every path it routes itself, or an asset).
async fn outside_the_api(
    method: axum::http::Method,
    uri: axum::http::Uri,
    headers: axum::http::HeaderMap,
) -> axum::response::Response {
    use axum::response::IntoResponse;
    if uri.path().starts_with("/api/") || uri.path() == "/api" {
        return Problem::not_found("no such endpoint").into_response();
    }
    cairn_web::serve(method, uri, headers).await
}

/// The handler of each endpoint.
fn handler(endpoint: Endpoint) -> MethodRouter<Shared> {
    match endpoint {
        Endpoint::Health => get(runs::health),
        Endpoint::OpenApi => get(openapi_json),
        Endpoint::Validate => post(runs::validate),
        Endpoint::StartRun => post(runs::start),
        Endpoint::ListRuns => get(runs::list),
        Endpoint::GetRun => get(runs::get),
        Endpoint::Pause => post(runs::pause),
        Endpoint::Resume => post(runs::resume),
        Endpoint::Cancel => post(runs::cancel),
        Endpoint::Approve => post(runs::approve),
        Endpoint::Reject => post(runs::reject),
        Endpoint::Answer => post(runs::answer),
        Endpoint::Gates => get(gates::list),
        Endpoint::ListWorkflows => get(workflows::list),
        Endpoint::GetWorkflow => get(workflows::get),
        Endpoint::RegisterWorkflow => post(workflows::register),
        Endpoint::Hook => post(hooks::deliver),
        Endpoint::Stats => get(workflows::stats),
        Endpoint::Search => get(workflows::search),
        Endpoint::Events => get(runs::events),
        Endpoint::EventStream => get(stream::run_events),
        Endpoint::RunFeed => get(stream::run_feed),
        Endpoint::Checkpoints => get(runs::checkpoints),
        Endpoint::Fork => post(runs::fork),
        Endpoint::CreateToken => post(tokens::create),
        Endpoint::ListTokens => get(tokens::list),
        Endpoint::RevokeToken => delete(tokens::revoke),
        Endpoint::Definition => get(runs::definition),
        Endpoint::Prune => post(runs::prune),
        Endpoint::ExportRun => get(transfer::export),
        Endpoint::ImportRun => {
            post(transfer::import).layer(DefaultBodyLimit::max(transfer::MAX_IMPORT_BYTES))
        }
        Endpoint::Metrics => get(metrics::metrics),
        Endpoint::SignIn => post(session::sign_in),
        Endpoint::WhoAmI => get(session::who),
        Endpoint::SignOut => delete(session::sign_out),
    }
}

/// The OpenAPI document: every endpoint of [`ROUTES`], from the handlers'
/// annotations and the schemas of [`openapi`](mod@openapi).
#[derive(utoipa::OpenApi)]
#[openapi(
    info(
        title = "cairn",
        description = "The HTTP API of `cairn serve`: runs, their events and live streams, checkpoints, forks, gate decisions and API tokens."
    ),
    paths(
        runs::health,
        openapi_json,
        runs::validate,
        runs::start,
        runs::list,
        runs::get,
        runs::pause,
        runs::resume,
        runs::cancel,
        runs::approve,
        runs::reject,
        runs::answer,
        gates::list,
        workflows::list,
        workflows::get,
        workflows::register,
        hooks::deliver,
        workflows::stats,
        workflows::search,
        runs::events,
        stream::run_events,
        stream::run_feed,
        runs::checkpoints,
        runs::fork,
        tokens::create,
        tokens::list,
        tokens::revoke,
        runs::definition,
        runs::prune,
        transfer::export,
        transfer::import,
        metrics::metrics,
        session::sign_in,
        session::who,
        session::sign_out,
    ),
    components(schemas(openapi::ScopePlan)),
    modifiers(&Bearer, &Optional),
    tags(
        (name = "server", description = "Health and this document"),
        (name = "runs", description = "Runs, definitions and gate decisions"),
        (name = "workflows", description = "The workflow catalog: registered definitions and their figures"),
        (name = "events", description = "Event logs and live streams"),
        (name = "tokens", description = "API tokens (admin)"),
        (name = "session", description = "Browser sessions: a token exchanged for a cookie"),
    )
)]
struct ApiDoc;

/// The OpenAPI 3.1 document of the API, as JSON: what `GET
/// /api/v1/openapi.json` answers and `docs/openapi.json` holds.
pub fn openapi() -> serde_json::Value {
    let mut doc = serde_json::to_value(<ApiDoc as utoipa::OpenApi>::openapi()).unwrap_or_default();
    openapi::add_links(&mut doc);
    doc
}

/// `GET /openapi.json`: this document.
#[utoipa::path(
    get,
    path = "/api/v1/openapi.json",
    tag = "server",
    operation_id = "openapi",
    responses(
        (status = 200, description = "The OpenAPI 3.1 document of every endpoint", body = Object),
        (status = 400, description = "A credential in the query string", body = openapi::Problem, content_type = "application/problem+json"),
    )
)]
async fn openapi_json() -> axum::Json<serde_json::Value> {
    axum::Json(openapi())
}

/// The HTTP front the `cairn` binary plugs into its command line: `cairn
/// serve` runs it.
#[derive(Debug, Clone, Copy, Default)]
pub struct Http;

impl cairn_app::service::Front for Http {
    fn serve(
        &self,
        service: Arc<Service>,
        listener: tokio::net::TcpListener,
        auth: cairn_app::service::FrontAuth,
        shutdown: Pin<Box<dyn Future<Output = ()> + Send>>,
    ) -> cairn_app::service::Serving {
        let auth = match auth {
            cairn_app::service::FrontAuth::None => Auth::None,
            cairn_app::service::FrontAuth::Token { local_key } => Auth::Token { local_key },
        };
        Box::pin(serve(listener, service, auth, shutdown))
    }
}

/// Serves the API on `listener` until `shutdown` resolves: then it stops
/// accepting, ends the live streams, and lets the requests in progress
/// finish.
pub async fn serve(
    listener: tokio::net::TcpListener,
    service: Arc<Service>,
    auth: Auth,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let (close, closing) = watch::channel(false);
    let app = router(Shared::new(service, auth, closing));
    axum::serve(listener, app)
        .with_graceful_shutdown(async move {
            shutdown.await;
            let _ = close.send(true);
        })
        .await
}
