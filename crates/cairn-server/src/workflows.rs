//! The handlers of the workflow catalog: registering definitions by id
//! and version, and listing them with their figures (`cairn_app::catalog`).

use axum::Extension;
use axum::Json;
use axum::extract::rejection::{JsonRejection, PathRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::IntoResponse;
use cairn_app::error::CatalogError;
use cairn_app::{Error, view};
use cairn_domain::access::Caller;
use cairn_ports::{DocKind, Registered, SearchQuery};
use serde::Deserialize;
use serde_json::{Value, json};
use utoipa::IntoParams;

use crate::Shared;
use crate::problem::Problem;
use crate::runs::{Answer, Source, body, workflow_id};

/// `GET /workflows`: the catalog.
#[utoipa::path(
    get,
    path = "/api/v1/workflows",
    tag = "workflows",
    operation_id = "list_workflows",
    responses(
        (status = 200, description = "Every workflow registered or run here, by id, with its figures", body = crate::openapi::Catalog),
        crate::openapi::Refusals,
    ),
    security(("bearer" = []))
)]
pub(crate) async fn list(State(shared): State<Shared>) -> Answer {
    let entries = shared.service.app().catalog().await.map_err(Problem::from)?;
    let workflows: Vec<Value> = entries.iter().map(view::catalog::entry_json).collect();
    Ok(Json(json!({ "workflows": workflows })).into_response())
}

/// The query of `GET /workflows/{id}`.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub(crate) struct VersionQuery {
    /// The version whose definition to send (its `version` or number;
    /// default: the latest).
    version: Option<String>,
}

/// `GET /workflows/{id}`: one workflow, its versions and a definition.
#[utoipa::path(
    get,
    path = "/api/v1/workflows/{id}",
    tag = "workflows",
    operation_id = "get_workflow",
    params(("id" = String, Path, description = "The workflow's id"), VersionQuery),
    responses(
        (status = 200, description = "The workflow's entry, its versions (oldest first) and the definition of the version asked for", body = crate::openapi::CatalogWorkflow),
        (status = 404, description = "No such workflow, or no such version of it", body = crate::openapi::Problem, content_type = "application/problem+json"),
        crate::openapi::Refusals,
    ),
    security(("bearer" = []))
)]
pub(crate) async fn get(
    State(shared): State<Shared>,
    path: Result<Path<String>, PathRejection>,
    query: Result<Query<VersionQuery>, QueryRejection>,
) -> Answer {
    let Path(text) = path.map_err(Problem::from)?;
    let Query(q) = query.map_err(Problem::from)?;
    let workflow = workflow_id(&text)?;
    let app = shared.service.app();
    let entry = app.catalog_entry(&workflow).await.map_err(Problem::from)?;
    let versions = match app.versions(&workflow).await {
        Ok(versions) => versions,
        // Run from files only: an entry without versions.
        Err(Error::Catalog(CatalogError::UnknownWorkflow(_))) if q.version.is_none() => Vec::new(),
        Err(e) => return Err(e.into()),
    };
    let definition = match versions.last() {
        None => Value::Null,
        Some(_) => view::catalog::definition_json(
            &app.registered(&workflow, q.version.as_deref()).await.map_err(Problem::from)?,
        ),
    };
    let mut answer = view::catalog::entry_json(&entry);
    answer["versions"] = json!(versions.iter().map(view::catalog::version_json).collect::<Vec<_>>());
    answer["definition"] = definition;
    Ok(Json(answer).into_response())
}

/// `POST /workflows`: registers a definition as a version of its workflow.
#[utoipa::path(
    post,
    path = "/api/v1/workflows",
    tag = "workflows",
    operation_id = "register_workflow",
    request_body = crate::runs::Source,
    responses(
        (status = 201, description = "Registered as a new version", body = crate::openapi::Registration, headers(("Location" = String, description = "Where the workflow lives"))),
        (status = 200, description = "The same text was registered already, as this version", body = crate::openapi::Registration),
        (status = 409, description = "The definition names a version the workflow has with other text", body = crate::openapi::Problem, content_type = "application/problem+json"),
        (status = 413, description = "The body is too large", body = crate::openapi::Problem, content_type = "application/problem+json"),
        (status = 415, description = "The body is not sent as JSON", body = crate::openapi::Problem, content_type = "application/problem+json"),
        (status = 422, description = "An invalid body or definition", body = crate::openapi::Problem, content_type = "application/problem+json"),
        crate::openapi::Refusals,
    ),
    security(("bearer" = []))
)]
pub(crate) async fn register(
    State(shared): State<Shared>,
    Extension(caller): Extension<Caller>,
    payload: Result<Json<Source>, JsonRejection>,
) -> Answer {
    let definition = body(payload)?
        .load()
        .map_err(|problems| Problem::from(Error::Definition { name: "definition".into(), problems }))?;
    let registered = shared.service.register(&definition, &caller.name).await.map_err(Problem::from)?;
    let status = match registered {
        Registered::Added(_) => StatusCode::CREATED,
        Registered::Unchanged(_) => StatusCode::OK,
    };
    let mut response = (status, Json(view::catalog::registered_json(&registered))).into_response();
    let location = format!("/api/v1/workflows/{}", registered.version().workflow);
    if let Ok(value) = HeaderValue::from_str(&location) {
        response.headers_mut().insert(header::LOCATION, value);
    }
    Ok(response)
}

/// The query of `GET /search`.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub(crate) struct SearchParams {
    /// The words to find (`"a phrase"`, `+required`, `-excluded`, `field:word` narrow it).
    #[param(min_length = 1)]
    q: String,
    /// Workflows or runs only.
    #[param(value_type = Option<crate::openapi::HitKind>)]
    kind: Option<String>,
    /// One workflow's documents only.
    #[param(pattern = "^[a-z0-9][a-z0-9_-]{0,63}$")]
    workflow: Option<String>,
    /// At most this many hits (default 20).
    #[param(minimum = 1, maximum = 1000)]
    limit: Option<u32>,
}

/// `GET /search`: workflows and runs by text, best first.
#[utoipa::path(
    get,
    path = "/api/v1/search",
    tag = "workflows",
    operation_id = "search",
    params(SearchParams),
    responses(
        (status = 200, description = "Workflows (name, description, tags, prompts) and runs (inputs, outputs, errors) that match, best first, each with a snippet", body = crate::openapi::SearchHits),
        crate::openapi::Refusals,
    ),
    security(("bearer" = []))
)]
pub(crate) async fn search(
    State(shared): State<Shared>,
    query: Result<Query<SearchParams>, QueryRejection>,
) -> Answer {
    let Query(q) = query.map_err(Problem::from)?;
    let bad = |what: String| Problem::new(StatusCode::BAD_REQUEST, "invalid_query", what);
    let kind = match q.kind.as_deref() {
        None => None,
        Some("workflow") => Some(DocKind::Workflow),
        Some("run") => Some(DocKind::Run),
        Some(other) => return Err(bad(format!("kind: `{other}` is neither `workflow` nor `run`"))),
    };
    let workflow = workflow_param(q.workflow)?;
    let limit = match q.limit {
        None => DEFAULT_HITS,
        Some(n @ 1..=1000) => n as usize,
        Some(n) => return Err(bad(format!("limit: {n} is not from 1 to 1000"))),
    };
    let query = SearchQuery { text: q.q, kind, workflow, limit };
    let found = shared.service.app().search(&query).await.map_err(Problem::from)?;
    Ok(Json(json!({"hits": view::search::hits_json(&found)})).into_response())
}

/// The `workflow` query parameter, read.
fn workflow_param(workflow: Option<String>) -> Result<Option<cairn_domain::id::WorkflowId>, Problem> {
    workflow
        .map(|w| {
            cairn_domain::id::WorkflowId::new(w)
                .map_err(|e| Problem::new(StatusCode::BAD_REQUEST, "invalid_query", format!("workflow: {e}")))
        })
        .transpose()
}

/// Hits a search answers when it names no limit.
const DEFAULT_HITS: usize = 20;

/// The query of `GET /stats`.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub(crate) struct StatsParams {
    /// One workflow's runs only.
    #[param(pattern = "^[a-z0-9][a-z0-9_-]{0,63}$")]
    workflow: Option<String>,
    /// Runs created this long ago at most (`7d`, `24h`).
    since: Option<String>,
}

/// `GET /stats`: figures over the stored runs, from the run index.
#[utoipa::path(
    get,
    path = "/api/v1/stats",
    tag = "workflows",
    operation_id = "stats",
    params(StatsParams),
    responses(
        (status = 200, description = "By status, success rate, durations, the steps that fail most, tokens and cost by workflow, agent and model", body = crate::openapi::StatsReport),
        crate::openapi::Refusals,
    ),
    security(("bearer" = []))
)]
pub(crate) async fn stats(
    State(shared): State<Shared>,
    query: Result<Query<StatsParams>, QueryRejection>,
) -> Answer {
    let Query(q) = query.map_err(Problem::from)?;
    let workflow = workflow_param(q.workflow)?;
    let since = q
        .since
        .map(|d| {
            d.parse::<cairn_domain::duration::Duration>()
                .map_err(|e| Problem::new(StatusCode::BAD_REQUEST, "invalid_query", format!("since: {e}")))
        })
        .transpose()?;
    let query = cairn_app::stats::StatsQuery { workflow, since };
    let report = shared.service.app().run_stats(&query).await.map_err(Problem::from)?;
    Ok(Json(view::catalog::report_json(&report)).into_response())
}
