//! The handlers of runs and definitions: each parses its request, calls
//! one operation of the application and answers the shape the command
//! line prints (`cairn_app::view`).

use std::collections::BTreeMap;

use axum::Extension;
use axum::Json;
use axum::extract::rejection::{JsonRejection, PathRejection, QueryRejection};
use axum::extract::{Path, Query, RawQuery, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use cairn_app::{Error, Run, Started, view};
use cairn_domain::Definition;
use cairn_domain::access::Caller;
use cairn_domain::id::{RunId, WorkflowId};
use cairn_domain::label::Labels;
use cairn_domain::limits::MAX_FILE_BYTES;
use cairn_domain::plan::Plan;
use cairn_domain::problem::{Problem as DefinitionProblem, Problems, Rule};
use cairn_domain::state::{Launch, RunStatus};
use cairn_domain::steer::{GateCall, Request, Verdict};
use cairn_ports::{Ask, Cursor, RunQuery};
use serde::Deserialize;
use serde_json::{Map, Value, json};
use utoipa::openapi::schema::{AdditionalProperties, ObjectBuilder, Type};
use utoipa::openapi::{RefOr, Schema};
use utoipa::{IntoParams, PartialSchema, ToSchema};

use crate::Shared;
use crate::problem::Problem;

/// What a handler answers: a response, or a problem document.
pub(crate) type Answer = Result<Response, Problem>;

/// A JSON body, or the problem its rejection is.
pub(crate) fn body<T>(body: Result<Json<T>, JsonRejection>) -> Result<T, Problem> {
    body.map(|Json(t)| t).map_err(Problem::from)
}

/// A run id from the path, or the problem it is.
pub(crate) fn run_id(path: Result<Path<String>, PathRejection>) -> Result<RunId, Problem> {
    let Path(text) = path.map_err(Problem::from)?;
    RunId::new(&text).map_err(|e| Problem::not_found(format!("no run `{text}`: {e}")))
}

/// A workflow id from a path or a body, or the `404` it is.
pub(crate) fn workflow_id(text: &str) -> Result<WorkflowId, Problem> {
    WorkflowId::new(text).map_err(|e| Problem::not_found(format!("no workflow `{text}`: {e}")))
}

/// A run, as the run JSON, with `status`.
pub(crate) fn run_json(shared: &Shared, run: &Run, status: StatusCode) -> Response {
    let now = shared.service.app().now();
    (status, Json(view::run::run_json(run, now))).into_response()
}

/// `201` with the run JSON and where the run lives.
pub(crate) fn created(shared: &Shared, run: &Run) -> Response {
    let mut response = run_json(shared, run, StatusCode::CREATED);
    let location = format!("/api/v1/runs/{}", run.state.run_id);
    if let Ok(value) = HeaderValue::from_str(&location) {
        response.headers_mut().insert(header::LOCATION, value);
    }
    response
}

/// A definition sent as text: its name (which picks YAML or JSON; YAML by
/// default) and the files it names (schemas), sent along since the server
/// reads no client's disk.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(examples(json!({"definition": EXAMPLE})))]
pub(crate) struct Source {
    /// The definition's text, YAML or JSON.
    definition: String,
    /// Its file name: `.json` reads it as JSON, anything else as YAML
    /// (default `workflow.yaml`).
    #[serde(default)]
    name: Option<String>,
    /// The files it names (output schemas), by the name it uses.
    #[serde(default)]
    files: BTreeMap<String, String>,
}

impl Source {
    /// The definition, loaded and validated as a file would be.
    pub(crate) fn load(&self) -> Result<Definition, Problems> {
        if self.definition.len() as u64 > MAX_FILE_BYTES {
            return Err(Problems(vec![DefinitionProblem::at(
                Rule::Limit,
                None,
                format!(
                    "the definition is {} bytes; definitions are limited to {MAX_FILE_BYTES} bytes",
                    self.definition.len()
                ),
            )]));
        }
        let name = self.name.as_deref().unwrap_or("workflow.yaml");
        Definition::from_recorded(name, &self.definition, &self.files)
    }
}

/// `GET /health`: whether the server and its store answer.
#[utoipa::path(
    get,
    path = "/api/v1/health",
    tag = "server",
    operation_id = "health",
    responses(
        (status = 200, description = "The server and its store answer", body = crate::openapi::Health),
        (status = 400, description = "Malformed JSON, a bad query or path, or a credential in the query string", body = crate::openapi::Problem, content_type = "application/problem+json"),
        (status = 503, description = "The store failed", body = crate::openapi::Health),
    ),
)]
pub(crate) async fn health(State(shared): State<Shared>) -> Response {
    let query = RunQuery { limit: Some(1), ..RunQuery::default() };
    match shared.service.app().list(&query).await {
        Ok(_) => Json(json!({"status": "ok"})).into_response(),
        Err(e) => {
            let detail = shared.service.app().secrets().redact(&e.to_string()).into_owned();
            (StatusCode::SERVICE_UNAVAILABLE, Json(json!({"status": "store_failed", "detail": detail})))
                .into_response()
        }
    }
}

/// `POST /workflows/validate`: problems, each at its line and column, and
/// the plan of a valid definition.
#[utoipa::path(
    post,
    path = "/api/v1/workflows/validate",
    tag = "runs",
    operation_id = "validate",
    request_body = Source,
    responses(
        (status = 200, description = "What validating found: problems, or the plan", body = crate::openapi::Validation),
        (status = 400, description = "Malformed JSON, a bad query or path, or a credential in the query string", body = crate::openapi::Problem, content_type = "application/problem+json"),
        (status = 401, description = "No token, or an unknown or expired one", body = crate::openapi::Problem, content_type = "application/problem+json"),
        (status = 403, description = "The token's role is too low", body = crate::openapi::Problem, content_type = "application/problem+json"),
        (status = 413, description = "The body is too large", body = crate::openapi::Problem, content_type = "application/problem+json"),
        (status = 415, description = "The body is not sent as JSON", body = crate::openapi::Problem, content_type = "application/problem+json"),
        (status = 422, description = "The body has wrong or unknown fields", body = crate::openapi::Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
pub(crate) async fn validate(payload: Result<Json<Source>, JsonRejection>) -> Answer {
    let source = body(payload)?;
    let answer = match source.load() {
        Ok(definition) => {
            let plan = Plan::build(&definition.workflow)
                .ok()
                .and_then(|p| serde_json::to_value(p).ok())
                .unwrap_or(Value::Null);
            json!({"valid": true, "problems": [], "plan": plan})
        }
        Err(problems) => {
            json!({"valid": false, "problems": crate::problem::problems_json(&problems), "plan": null})
        }
    };
    Ok(Json(answer).into_response())
}

/// The body of `POST /runs`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct StartBody {
    // Flattened, so the body is read as an object only (never an array).
    #[serde(flatten)]
    origin: Origin,
    #[serde(default)]
    inputs: Map<String, Value>,
    #[serde(default)]
    run_id: Option<String>,
    #[serde(default)]
    labels: BTreeMap<String, String>,
    #[serde(default)]
    priority: i32,
}

/// What a run starts from: a definition's text (with its file name and
/// the files it names), or a registered workflow (and its version).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Origin {
    #[serde(default)]
    definition: Option<String>,
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    files: BTreeMap<String, String>,
    #[serde(default)]
    workflow: Option<String>,
    #[serde(default)]
    version: Option<String>,
}

/// The definition the document shows as an example: an agent step, then
/// an approval by the gate role `product_owner`.
const EXAMPLE: &str = "cairn: 1
id: example
inputs:
  topic: { type: string, default: rivers }
agents:
  w: { system: You write. }
steps:
  - id: draft
    agent: w
    prompt: \"Write about {{ inputs.topic }}.\"
  - id: sign_off
    approval:
      message: Ship it?
      approvers: [product_owner]
  - id: publish
    set: \"{{ steps.draft.output }}\"
";

/// The schema of [`StartBody`]: the fields of [`Source`] and its own in one
/// closed object (a derived one would put `source` in an `allOf` of two
/// closed objects, which no body could satisfy).
impl PartialSchema for StartBody {
    fn schema() -> RefOr<Schema> {
        let RefOr::T(Schema::Object(mut object)) = Source::schema() else {
            return Source::schema();
        };
        object.description =
            Some("A definition as text, or a registered workflow by id, and the run's inputs".into());
        object.required.retain(|field| field != "definition");
        let workflow = ObjectBuilder::new()
            .schema_type(Type::String)
            .description(Some("A registered workflow to start, by id (instead of `definition`)"))
            .pattern(Some(crate::openapi::SLUG));
        object.properties.insert("workflow".into(), workflow.into());
        let version = ObjectBuilder::new()
            .schema_type(utoipa::openapi::schema::SchemaType::from_iter([Type::String, Type::Null]))
            .description(Some(
                "The registered version to start (its `version` or number; default: the latest)",
            ));
        object.properties.insert("version".into(), version.into());
        let inputs = ObjectBuilder::new()
            .schema_type(Type::Object)
            .description(Some("The run's inputs, by name (any JSON values)"))
            .additional_properties(Some(AdditionalProperties::FreeForm(true)));
        object.properties.insert("inputs".into(), inputs.into());
        let run_id = ObjectBuilder::new()
            .schema_type(utoipa::openapi::schema::SchemaType::from_iter([Type::String, Type::Null]))
            .description(Some("The run's id (default: a new one); an id that exists is refused"))
            .pattern(Some(crate::openapi::SLUG));
        object.properties.insert("run_id".into(), run_id.into());
        let value = ObjectBuilder::new()
            .schema_type(Type::String)
            .max_length(Some(cairn_domain::label::MAX_VALUE_BYTES));
        let labels = ObjectBuilder::new()
            .schema_type(Type::Object)
            .description(Some(
                "The run's labels, over the definition's `labels:` (keys of 1 to 63 of A-Z, a-z, 0-9, `_`, `.`, `-`)",
            ))
            .max_properties(Some(cairn_domain::label::MAX_LABELS))
            .additional_properties(Some(AdditionalProperties::RefOr(RefOr::T(Schema::Object(value.build())))));
        object.properties.insert("labels".into(), labels.into());
        let priority = ObjectBuilder::new()
            .schema_type(Type::Integer)
            .format(Some(utoipa::openapi::schema::SchemaFormat::KnownFormat(
                utoipa::openapi::schema::KnownFormat::Int32,
            )))
            .description(Some(
                "The run's priority: of the runs waiting to be driven, higher ones go first (default 0)",
            ));
        object.properties.insert("priority".into(), priority.into());
        object.examples =
            vec![json!({"definition": EXAMPLE, "inputs": {"topic": "rivers"}, "labels": {"team": "docs"}})];
        RefOr::T(Schema::Object(object))
    }
}

impl ToSchema for StartBody {
    fn name() -> std::borrow::Cow<'static, str> {
        std::borrow::Cow::Borrowed("StartBody")
    }
}

/// The header that makes a start safe to retry.
const IDEMPOTENCY_KEY: &str = "idempotency-key";

/// `POST /runs`: starts a run and drives it in the background.
/// With `Idempotency-Key`, the run's id is derived from the key, so a
/// repeat finds the run the first request made (also across restarts):
/// the same body answers it (`200`), another body is refused (`422`).
#[utoipa::path(
    post,
    path = "/api/v1/runs",
    tag = "runs",
    operation_id = "start_run",
    params(("Idempotency-Key" = Option<String>, Header, description = "Makes the start safe to retry: a repeat with the same key and body answers the first run")),
    request_body = StartBody,
    responses(
        (status = 201, description = "The run, started", body = crate::openapi::Run, headers(("Location" = String, description = "Where the run lives"))),
        (status = 200, description = "The run an earlier request with the same Idempotency-Key started", body = crate::openapi::Run),
        (status = 409, description = "A run with that id exists", body = crate::openapi::Problem, content_type = "application/problem+json"),
        (status = 413, description = "The body is too large", body = crate::openapi::Problem, content_type = "application/problem+json"),
        (status = 415, description = "The body is not sent as JSON", body = crate::openapi::Problem, content_type = "application/problem+json"),
        (status = 422, description = "An invalid body, definition, inputs or run id, needs the server lacks, or a reused Idempotency-Key", body = crate::openapi::Problem, content_type = "application/problem+json"),
        crate::openapi::Refusals,
    ),
    security(("bearer" = []))
)]
pub(crate) async fn start(
    State(shared): State<Shared>,
    Extension(caller): Extension<Caller>,
    headers: HeaderMap,
    payload: Result<Json<StartBody>, JsonRejection>,
) -> Answer {
    let start = body(payload)?;
    let app = shared.service.app();
    let origin = start.origin;
    let definition = match (origin.definition, &origin.workflow) {
        (Some(definition), None) if origin.version.is_none() => {
            Source { definition, name: origin.name, files: origin.files }.load().map_err(|problems| {
                Problem::from(Error::Definition { name: "definition".into(), problems })
            })?
        }
        (None, Some(workflow)) if origin.name.is_none() && origin.files.is_empty() => {
            let workflow = workflow_id(workflow)?;
            let version =
                app.registered(&workflow, origin.version.as_deref()).await.map_err(Problem::from)?;
            cairn_app::catalog::definition_of(&version).map_err(Problem::from)?
        }
        _ => {
            return Err(Problem::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "invalid_request",
                "give `definition` (with `name` and `files`) or `workflow` (with `version`), not both",
            ));
        }
    };
    let key = match headers.get(IDEMPOTENCY_KEY) {
        None => None,
        Some(value) => {
            Some(value.to_str().ok().filter(|k| !k.is_empty() && k.len() <= 255).ok_or_else(|| {
                Problem::bad_request("the Idempotency-Key header must be 1 to 255 visible ASCII characters")
            })?)
        }
    };
    let labels = start
        .labels
        .iter()
        .map(|(key, value)| cairn_domain::label::label(key, value))
        .collect::<Result<Labels, _>>()
        .map_err(|e| Problem::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid_labels", e.to_string()))?;
    let launch = Launch { labels, priority: start.priority, parent: None };
    let inputs = Value::Object(start.inputs);
    let run = match (start.run_id, key) {
        (Some(id), _) => {
            let id = RunId::new(id).map_err(|e| {
                Problem::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid_request", e.to_string())
            })?;
            app.start_by(definition, inputs, Some(id), &caller.name, launch).await
        }
        (None, Some(key)) => {
            match app.start_idempotent(definition, inputs, key, &caller.name, launch).await {
                Ok((run, Started::Repeat)) => return Ok(run_json(&shared, &run, StatusCode::OK)),
                started => started.map(|(run, _)| run),
            }
        }
        (None, None) => app.start_by(definition, inputs, None, &caller.name, launch).await,
    }
    .map_err(Problem::from)?;
    shared.service.drive(&run.state.run_id);
    Ok(created(&shared, &run))
}

/// The query of `GET /runs`.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub(crate) struct ListQuery {
    /// Only runs with this status.
    #[param(value_type = Option<crate::openapi::RunStatus>)]
    status: Option<RunStatus>,
    /// Only runs of this workflow.
    #[param(pattern = "^[a-z0-9][a-z0-9_-]{0,63}$")]
    workflow: Option<String>,
    /// The most runs to list (1 to 500; default 50).
    #[param(minimum = 0)]
    limit: Option<usize>,
    /// Where the page starts: a `next_cursor` of an earlier page.
    cursor: Option<String>,
    /// Only runs started by this actor (a token's name, a user's).
    triggered_by: Option<String>,
    /// Only runs of this priority.
    priority: Option<i32>,
    /// Only runs made from this run (its forks).
    parent: Option<String>,
}

/// The most runs one page lists.
const MAX_PAGE: usize = 500;

/// `GET /runs`: a page of run summaries, newest first.
#[utoipa::path(
    get,
    path = "/api/v1/runs",
    tag = "runs",
    operation_id = "list_runs",
    params(
        ListQuery,
        ("label" = Option<Vec<String>>, Query, style = Form, explode, description = "Only runs with this label, `KEY=VALUE` (repeatable: every one must match)"),
    ),
    responses(
        (status = 200, description = "A page of runs, newest first", body = crate::openapi::RunsPage),
        crate::openapi::Refusals,
    ),
    security(("bearer" = []))
)]
pub(crate) async fn list(
    State(shared): State<Shared>,
    query: Result<Query<ListQuery>, QueryRejection>,
    RawQuery(raw): RawQuery,
) -> Answer {
    let Query(q) = query.map_err(Problem::from)?;
    let invalid = |e: String| Problem::new(StatusCode::BAD_REQUEST, "invalid_query", e);
    let pairs: Vec<(String, String)> =
        serde_urlencoded::from_str(raw.as_deref().unwrap_or_default()).map_err(|e| invalid(e.to_string()))?;
    let labels = pairs
        .iter()
        .filter(|(key, _)| key == "label")
        .map(|(_, pair)| cairn_domain::label::pair(pair).map_err(|e| invalid(format!("label: {e}"))))
        .collect::<Result<Labels, _>>()?;
    let workflow = match q.workflow {
        Some(w) => Some(
            cairn_domain::id::WorkflowId::new(&w)
                .map_err(|e| Problem::new(StatusCode::BAD_REQUEST, "invalid_query", e.to_string()))?,
        ),
        None => None,
    };
    let after = match q.cursor {
        Some(c) => Some(
            c.parse::<Cursor>()
                .map_err(|e| Problem::new(StatusCode::BAD_REQUEST, "invalid_query", e.to_string()))?,
        ),
        None => None,
    };
    let limit = q.limit.unwrap_or(50).clamp(1, MAX_PAGE);
    let parent = match q.parent {
        Some(p) => Some(RunId::new(&p).map_err(|e| invalid(format!("parent: {e}")))?),
        None => None,
    };
    let query = RunQuery {
        status: q.status,
        workflow,
        labels,
        triggered_by: q.triggered_by,
        priority: q.priority,
        parent,
        limit: Some(limit),
        after,
    };
    let listing = shared.service.app().list(&query).await.map_err(Problem::from)?;
    let next = listing.next.map(|c| c.to_string());
    Ok(Json(json!({"runs": view::list::json(&listing.runs), "next_cursor": next})).into_response())
}

/// `GET /runs/{id}`: one run.
#[utoipa::path(
    get,
    path = "/api/v1/runs/{id}",
    tag = "runs",
    operation_id = "get_run",
    params(("id" = String, Path, description = "The run's id")),
    responses(
        (status = 200, description = "The run", body = crate::openapi::Run),
        (status = 404, description = "No such run", body = crate::openapi::Problem, content_type = "application/problem+json"),
        crate::openapi::Refusals,
    ),
    security(("bearer" = []))
)]
pub(crate) async fn get(State(shared): State<Shared>, path: Result<Path<String>, PathRejection>) -> Answer {
    let id = run_id(path)?;
    let run = shared.service.app().status(&id).await.map_err(Problem::from)?;
    Ok(run_json(&shared, &run, StatusCode::OK))
}

/// `POST /runs/{id}/pause`.
#[utoipa::path(
    post,
    path = "/api/v1/runs/{id}/pause",
    tag = "runs",
    operation_id = "pause_run",
    params(("id" = String, Path, description = "The run's id")),
    responses(
        (status = 202, description = "The run, pausing at its next safe point", body = crate::openapi::Run),
        (status = 404, description = "No such run", body = crate::openapi::Problem, content_type = "application/problem+json"),
        (status = 409, description = "The run cannot take this request now", body = crate::openapi::Problem, content_type = "application/problem+json"),
        crate::openapi::Refusals,
    ),
    security(("bearer" = []))
)]
pub(crate) async fn pause(
    State(shared): State<Shared>,
    Extension(caller): Extension<Caller>,
    path: Result<Path<String>, PathRejection>,
) -> Answer {
    stop(&shared, &caller, run_id(path)?, Request::Pause).await
}

/// `POST /runs/{id}/cancel`.
#[utoipa::path(
    post,
    path = "/api/v1/runs/{id}/cancel",
    tag = "runs",
    operation_id = "cancel_run",
    params(("id" = String, Path, description = "The run's id")),
    responses(
        (status = 202, description = "The run, cancelled (or cancelling)", body = crate::openapi::Run),
        (status = 404, description = "No such run", body = crate::openapi::Problem, content_type = "application/problem+json"),
        (status = 409, description = "The run cannot take this request now", body = crate::openapi::Problem, content_type = "application/problem+json"),
        crate::openapi::Refusals,
    ),
    security(("bearer" = []))
)]
pub(crate) async fn cancel(
    State(shared): State<Shared>,
    Extension(caller): Extension<Caller>,
    path: Result<Path<String>, PathRejection>,
) -> Answer {
    stop(&shared, &caller, run_id(path)?, Request::Cancel).await
}

async fn stop(shared: &Shared, caller: &Caller, id: RunId, request: Request) -> Answer {
    let run = shared.service.stop(&id, request, &caller.name).await.map_err(Problem::from)?;
    Ok(run_json(shared, &run, StatusCode::ACCEPTED))
}

/// The body of `POST /runs/{id}/resume` (optional).
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct ResumeBody {
    /// Raise the run's budget to this many USD first.
    #[serde(default)]
    budget_usd: Option<f64>,
}

/// `POST /runs/{id}/resume`: drives a run on (raising its budget first
/// when asked); an ended run is refused.
#[utoipa::path(
    post,
    path = "/api/v1/runs/{id}/resume",
    tag = "runs",
    operation_id = "resume_run",
    params(("id" = String, Path, description = "The run's id")),
    request_body = Option<ResumeBody>,
    responses(
        (status = 202, description = "The run, driven on", body = crate::openapi::Run),
        (status = 404, description = "No such run", body = crate::openapi::Problem, content_type = "application/problem+json"),
        (status = 409, description = "The run cannot take this request now", body = crate::openapi::Problem, content_type = "application/problem+json"),
        (status = 413, description = "The body is too large", body = crate::openapi::Problem, content_type = "application/problem+json"),
        (status = 422, description = "An invalid body, or needs the server lacks", body = crate::openapi::Problem, content_type = "application/problem+json"),
        crate::openapi::Refusals,
    ),
    security(("bearer" = []))
)]
pub(crate) async fn resume(
    State(shared): State<Shared>,
    Extension(caller): Extension<Caller>,
    path: Result<Path<String>, PathRejection>,
    headers: HeaderMap,
    payload: Result<Json<ResumeBody>, JsonRejection>,
) -> Answer {
    let id = run_id(path)?;
    let resume = optional(&headers, payload)?;
    let app = shared.service.app();
    app.resumable(&id).await.map_err(Problem::from)?;
    match resume.budget_usd {
        Some(usd) => {
            let ask = Ask::RaiseBudget { usd, by: caller.name.clone() };
            shared.service.request(&id, ask).await.map_err(Problem::from)?;
        }
        None => shared.service.drive(&id),
    }
    let run = app.status(&id).await.map_err(Problem::from)?;
    Ok(run_json(&shared, &run, StatusCode::ACCEPTED))
}

/// The body of `POST /runs/{id}/approve` and `/reject`.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct DecideBody {
    /// The gate's step path (default: the one gate the run waits at).
    #[serde(default)]
    gate: Option<String>,
    /// The gate role to decide as (default: the token's only gate role).
    #[serde(default, rename = "as")]
    role: Option<String>,
    /// A comment (a rejection's becomes the rework's feedback).
    #[serde(default)]
    comment: Option<String>,
}

/// `POST /runs/{id}/approve`.
#[utoipa::path(
    post,
    path = "/api/v1/runs/{id}/approve",
    tag = "runs",
    operation_id = "approve",
    params(("id" = String, Path, description = "The run's id")),
    request_body = Option<DecideBody>,
    responses(
        (status = 200, description = "The run, with the approval recorded", body = crate::openapi::Run),
        (status = 400, description = "Malformed JSON, a bad query or path, or a credential in the query string", body = crate::openapi::Problem, content_type = "application/problem+json"),
        (status = 401, description = "No token, or an unknown or expired one", body = crate::openapi::Problem, content_type = "application/problem+json"),
        (status = 403, description = "The token may not decide as that role", body = crate::openapi::Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such run, or no such step", body = crate::openapi::Problem, content_type = "application/problem+json"),
        (status = 409, description = "No such waiting gate", body = crate::openapi::Problem, content_type = "application/problem+json"),
        (status = 413, description = "The body is too large", body = crate::openapi::Problem, content_type = "application/problem+json"),
        (status = 422, description = "The body has wrong or unknown fields", body = crate::openapi::Problem, content_type = "application/problem+json"),
        (status = 503, description = "The store failed", body = crate::openapi::Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
pub(crate) async fn approve(
    State(shared): State<Shared>,
    Extension(caller): Extension<Caller>,
    path: Result<Path<String>, PathRejection>,
    headers: HeaderMap,
    payload: Result<Json<DecideBody>, JsonRejection>,
) -> Answer {
    decide(&shared, &caller, run_id(path)?, Verdict::Approve, optional(&headers, payload)?).await
}

/// `POST /runs/{id}/reject`.
#[utoipa::path(
    post,
    path = "/api/v1/runs/{id}/reject",
    tag = "runs",
    operation_id = "reject",
    params(("id" = String, Path, description = "The run's id")),
    request_body = Option<DecideBody>,
    responses(
        (status = 200, description = "The run, with the rejection recorded", body = crate::openapi::Run),
        (status = 400, description = "Malformed JSON, a bad query or path, or a credential in the query string", body = crate::openapi::Problem, content_type = "application/problem+json"),
        (status = 401, description = "No token, or an unknown or expired one", body = crate::openapi::Problem, content_type = "application/problem+json"),
        (status = 403, description = "The token may not decide as that role", body = crate::openapi::Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such run, or no such step", body = crate::openapi::Problem, content_type = "application/problem+json"),
        (status = 409, description = "No such waiting gate", body = crate::openapi::Problem, content_type = "application/problem+json"),
        (status = 413, description = "The body is too large", body = crate::openapi::Problem, content_type = "application/problem+json"),
        (status = 422, description = "The body has wrong or unknown fields", body = crate::openapi::Problem, content_type = "application/problem+json"),
        (status = 503, description = "The store failed", body = crate::openapi::Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
pub(crate) async fn reject(
    State(shared): State<Shared>,
    Extension(caller): Extension<Caller>,
    path: Result<Path<String>, PathRejection>,
    headers: HeaderMap,
    payload: Result<Json<DecideBody>, JsonRejection>,
) -> Answer {
    decide(&shared, &caller, run_id(path)?, Verdict::Reject, optional(&headers, payload)?).await
}

/// A body that may be left out: none (an empty body) is the default; a
/// body sent without the JSON content type is refused, never ignored.
fn optional<T: Default>(headers: &HeaderMap, payload: Result<Json<T>, JsonRejection>) -> Result<T, Problem> {
    let empty = headers
        .get(header::CONTENT_LENGTH)
        .is_none_or(|length| length.to_str().ok().and_then(|l| l.trim().parse::<u64>().ok()) == Some(0))
        && !headers.contains_key(header::TRANSFER_ENCODING);
    match payload {
        Err(JsonRejection::MissingJsonContentType(_)) if empty => Ok(T::default()),
        other => body(other),
    }
}

/// Records an approval or rejection as the caller, deciding as the gate
/// role it names or holds alone ([`cairn_app::App::decision_as`]).
async fn decide(shared: &Shared, caller: &Caller, id: RunId, verdict: Verdict, b: DecideBody) -> Answer {
    let call = GateCall { gate: b.gate, verdict, role: b.role, comment: b.comment };
    let call = shared.service.app().decision_as(&id, call, caller).await.map_err(Problem::from)?;
    let ask = Ask::Decide { call, by: caller.name.clone() };
    let run = shared.service.request(&id, ask).await.map_err(Problem::from)?;
    Ok(run_json(shared, &run, StatusCode::OK))
}

/// The body of `POST /runs/{id}/answer`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct AnswerBody {
    /// The gate's step path (default: the one that asks).
    #[serde(default)]
    gate: Option<String>,
    /// The answer.
    text: String,
}

/// `POST /runs/{id}/answer`: answers a clarification.
#[utoipa::path(
    post,
    path = "/api/v1/runs/{id}/answer",
    tag = "runs",
    operation_id = "answer",
    params(("id" = String, Path, description = "The run's id")),
    request_body = AnswerBody,
    responses(
        (status = 200, description = "The run, with the answer recorded", body = crate::openapi::Run),
        (status = 404, description = "No such run, or no such step", body = crate::openapi::Problem, content_type = "application/problem+json"),
        (status = 409, description = "No step waits for an answer", body = crate::openapi::Problem, content_type = "application/problem+json"),
        (status = 413, description = "The body is too large", body = crate::openapi::Problem, content_type = "application/problem+json"),
        (status = 415, description = "The body is not sent as JSON", body = crate::openapi::Problem, content_type = "application/problem+json"),
        (status = 422, description = "The body has wrong or unknown fields", body = crate::openapi::Problem, content_type = "application/problem+json"),
        crate::openapi::Refusals,
    ),
    security(("bearer" = []))
)]
pub(crate) async fn answer(
    State(shared): State<Shared>,
    Extension(caller): Extension<Caller>,
    path: Result<Path<String>, PathRejection>,
    payload: Result<Json<AnswerBody>, JsonRejection>,
) -> Answer {
    let id = run_id(path)?;
    let b = body(payload)?;
    let call = GateCall { gate: b.gate, verdict: Verdict::Answer(b.text), role: None, comment: None };
    let run = shared
        .service
        .request(&id, Ask::Decide { call, by: caller.name.clone() })
        .await
        .map_err(Problem::from)?;
    Ok(run_json(&shared, &run, StatusCode::OK))
}

/// The query of `GET /runs/{id}/events`.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub(crate) struct EventsQuery {
    /// Only events after this sequence number.
    after: Option<u64>,
    /// The most events to list (1 to 1000; default 1000).
    #[param(minimum = 0)]
    limit: Option<usize>,
}

/// The most events one page holds.
const MAX_EVENTS: usize = 1000;

/// `GET /runs/{id}/events`: a page of the run's events after `after`.
#[utoipa::path(
    get,
    path = "/api/v1/runs/{id}/events",
    tag = "events",
    operation_id = "list_events",
    params(("id" = String, Path, description = "The run's id"), EventsQuery),
    responses(
        (status = 200, description = "A page of the run's events", body = crate::openapi::EventsPage),
        (status = 404, description = "No such run", body = crate::openapi::Problem, content_type = "application/problem+json"),
        crate::openapi::Refusals,
    ),
    security(("bearer" = []))
)]
pub(crate) async fn events(
    State(shared): State<Shared>,
    path: Result<Path<String>, PathRejection>,
    query: Result<Query<EventsQuery>, QueryRejection>,
) -> Answer {
    let id = run_id(path)?;
    let Query(q) = query.map_err(Problem::from)?;
    let limit = q.limit.unwrap_or(MAX_EVENTS).clamp(1, MAX_EVENTS);
    let (events, more) =
        shared.service.app().events_after(&id, q.after.unwrap_or(0), limit).await.map_err(Problem::from)?;
    let next = if more { events.last().map(|e| e.seq) } else { None };
    let events: Vec<Value> = events.iter().map(view::event::json).collect();
    Ok(Json(json!({"events": events, "next": next})).into_response())
}

/// `GET /runs/{id}/checkpoints`.
#[utoipa::path(
    get,
    path = "/api/v1/runs/{id}/checkpoints",
    tag = "runs",
    operation_id = "list_checkpoints",
    params(("id" = String, Path, description = "The run's id")),
    responses(
        (status = 200, description = "The run's checkpoints, oldest first", body = Vec<crate::openapi::Checkpoint>),
        (status = 404, description = "No such run", body = crate::openapi::Problem, content_type = "application/problem+json"),
        crate::openapi::Refusals,
    ),
    security(("bearer" = []))
)]
pub(crate) async fn checkpoints(
    State(shared): State<Shared>,
    path: Result<Path<String>, PathRejection>,
) -> Answer {
    let id = run_id(path)?;
    let list = shared.service.app().checkpoints(&id).await.map_err(Problem::from)?;
    Ok(Json(view::list::checkpoints_json(&list)).into_response())
}

/// The body of `POST /runs/{id}/fork`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct ForkBody {
    /// The checkpoint's sequence number.
    checkpoint: u64,
}

/// `POST /runs/{id}/fork`: a new run from a checkpoint, not driven until
/// resumed.
#[utoipa::path(
    post,
    path = "/api/v1/runs/{id}/fork",
    tag = "runs",
    operation_id = "fork_run",
    params(("id" = String, Path, description = "The run's id")),
    request_body = ForkBody,
    responses(
        (status = 201, description = "The new run, not driven until resumed", body = crate::openapi::Run, headers(("Location" = String, description = "Where the new run lives"))),
        (status = 404, description = "No such run, or no such checkpoint", body = crate::openapi::Problem, content_type = "application/problem+json"),
        (status = 409, description = "The run cannot take this request now", body = crate::openapi::Problem, content_type = "application/problem+json"),
        (status = 413, description = "The body is too large", body = crate::openapi::Problem, content_type = "application/problem+json"),
        (status = 415, description = "The body is not sent as JSON", body = crate::openapi::Problem, content_type = "application/problem+json"),
        (status = 422, description = "An invalid body, or a definition this server cannot run", body = crate::openapi::Problem, content_type = "application/problem+json"),
        crate::openapi::Refusals,
    ),
    security(("bearer" = []))
)]
pub(crate) async fn fork(
    State(shared): State<Shared>,
    Extension(caller): Extension<Caller>,
    path: Result<Path<String>, PathRejection>,
    payload: Result<Json<ForkBody>, JsonRejection>,
) -> Answer {
    let id = run_id(path)?;
    let b = body(payload)?;
    let run = shared.service.app().fork(&id, b.checkpoint, &caller.name).await.map_err(Problem::from)?;
    Ok(created(&shared, &run))
}

/// `GET /runs/{id}/definition`: the definition the run recorded when it
/// started (its name, exact text and the files it named), so a client
/// shows the run as this server does.
#[utoipa::path(
    get,
    path = "/api/v1/runs/{id}/definition",
    tag = "runs",
    operation_id = "get_definition",
    params(("id" = String, Path, description = "The run's id")),
    responses(
        (status = 200, description = "The definition the run recorded", body = crate::openapi::RecordedDefinition),
        (status = 404, description = "No such run", body = crate::openapi::Problem, content_type = "application/problem+json"),
        crate::openapi::Refusals,
    ),
    security(("bearer" = []))
)]
pub(crate) async fn definition(
    State(shared): State<Shared>,
    path: Result<Path<String>, PathRejection>,
) -> Answer {
    let id = run_id(path)?;
    let run = shared.service.app().status(&id).await.map_err(Problem::from)?;
    let d = &run.definition;
    Ok(Json(json!({"name": d.name, "text": d.text, "files": d.files})).into_response())
}

/// The body of `POST /prune`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct PruneBody {
    /// A duration such as `30d`.
    #[schema(pattern = "^\\s*([0-9]+(ms|s|m|h|d))+\\s*$")]
    older_than: String,
    /// List what would be deleted, and delete nothing.
    #[serde(default)]
    dry_run: bool,
}

/// `POST /prune`: deletes (unless `dry_run`) the ended runs last
/// updated longer ago than `older_than`; answers their ids.
#[utoipa::path(
    post,
    path = "/api/v1/prune",
    tag = "runs",
    operation_id = "prune_runs",
    request_body = PruneBody,
    responses(
        (status = 200, description = "The runs deleted (or that would be)", body = crate::openapi::Pruned),
        (status = 413, description = "The body is too large", body = crate::openapi::Problem, content_type = "application/problem+json"),
        (status = 415, description = "The body is not sent as JSON", body = crate::openapi::Problem, content_type = "application/problem+json"),
        (status = 422, description = "The body has wrong or unknown fields", body = crate::openapi::Problem, content_type = "application/problem+json"),
        crate::openapi::Refusals,
    ),
    security(("bearer" = []))
)]
pub(crate) async fn prune(
    State(shared): State<Shared>,
    payload: Result<Json<PruneBody>, JsonRejection>,
) -> Answer {
    let b = body(payload)?;
    let age = b.older_than.parse::<cairn_domain::duration::Duration>().map_err(|e| {
        Problem::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid_request", format!("older_than: {e}"))
    })?;
    let pruned = shared.service.app().prune(age, b.dry_run).await.map_err(Problem::from)?;
    let ids: Vec<&str> = pruned.iter().map(|r| r.run_id.as_str()).collect();
    let app = shared.service.app();
    let runs: Vec<cairn_app::app::Listed> = pruned.iter().map(|r| app.listed(r.clone())).collect();
    Ok(Json(json!({"deleted": ids, "dry_run": b.dry_run, "runs": view::list::json(&runs)})).into_response())
}
