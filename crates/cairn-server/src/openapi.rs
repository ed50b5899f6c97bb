//! What the OpenAPI 3.1 document of the API (`GET /api/v1/openapi.json`,
//! [`crate::openapi()`]) is made of besides the handlers' `#[utoipa::path]`
//! annotations: the schemas of the answers, the bearer scheme, links. The schemas describe exactly what the views of
//! `cairn_app::view` produce (the run JSON, summaries, events, tokens) and
//! what [`crate::problem::Problem`] answers; they are never built as
//! values, only described. The committed copy is `docs/openapi.json`; a
//! test fails when it drifts from this.

#![expect(dead_code, reason = "the schema structs describe JSON the views build; they are never constructed")]

use std::borrow::Cow;
use std::collections::BTreeMap;

use cairn_domain::access::Role as DomainRole;
use cairn_domain::state::ErrorClass as DomainErrorClass;
use serde_json::Value;
use strum::VariantArray as _;
use utoipa::openapi::Required;
use utoipa::openapi::schema::{
    AdditionalProperties, KnownFormat, ObjectBuilder, OneOf, SchemaFormat, SchemaType, Type,
};
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::openapi::{Ref, RefOr, Schema};
use utoipa::{Modify, PartialSchema, ToSchema};

/// Says where the ids an answer names lead: the run a start or a fork
/// made to every operation on `/runs/{id}`, a new token to its revocation
/// (so clients, and tools that walk the API, follow them). Written into
/// the JSON because utoipa 5 spells a link's `operationId` in snake case.
pub(crate) fn add_links(doc: &mut Value) {
    let Some(paths) = doc.get_mut("paths").and_then(Value::as_object_mut) else {
        return;
    };
    let on_a_run: Vec<String> = paths
        .iter()
        .filter(|(path, _)| path.contains("/runs/{id}"))
        .flat_map(|(_, item)| item.as_object().into_iter().flat_map(|ops| ops.values()))
        .filter_map(|operation| operation["operationId"].as_str().map(str::to_owned))
        .collect();
    let made = [
        ("start_run", "id", "$response.body#/run_id", on_a_run.clone()),
        ("fork_run", "id", "$response.body#/run_id", on_a_run),
        ("create_token", "name", "$response.body#/name", vec!["revoke_token".to_owned()]),
    ];
    for operation in paths.values_mut().filter_map(Value::as_object_mut).flat_map(|ops| ops.values_mut()) {
        let Some((_, parameter, value, targets)) =
            made.iter().find(|(id, ..)| operation["operationId"].as_str() == Some(*id))
        else {
            continue;
        };
        let links: serde_json::Map<String, Value> = targets
            .iter()
            .map(|target| {
                let link = serde_json::json!({"operationId": target, "parameters": {*parameter: value}});
                (target.clone(), link)
            })
            .collect();
        if let Some(created) = operation.pointer_mut("/responses/201").and_then(Value::as_object_mut) {
            created.insert("links".into(), Value::Object(links));
        }
    }
}

/// Adds the bearer scheme every guarded operation names, and the session
/// cookie each of them takes instead (the web UI's).
pub(crate) struct Bearer;

impl Modify for Bearer {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some("A token from `cairn token create`: `Authorization: Bearer TOKEN`"))
                    .build(),
            ),
        );
        components.add_security_scheme(
            "session",
            SecurityScheme::ApiKey(utoipa::openapi::security::ApiKey::Cookie(
                utoipa::openapi::security::ApiKeyValue::with_description(
                    crate::cookies::COOKIE,
                    "A browser session from `POST /api/v1/session`; requests that change something also send its CSRF token in `X-CSRF-Token`",
                ),
            )),
        );
        let session = utoipa::openapi::security::SecurityRequirement::new("session", Vec::<String>::new());
        for item in openapi.paths.paths.values_mut() {
            let operations =
                [&mut item.get, &mut item.put, &mut item.post, &mut item.delete, &mut item.patch];
            for security in operations.into_iter().flatten().filter_map(|o| o.security.as_mut()) {
                if !security.is_empty() {
                    security.push(session.clone());
                }
            }
        }
    }
}

/// Makes what may be left out absent rather than `null`: an optional
/// request body (approve, reject, resume) and an optional header are
/// either sent as their schema says or not sent; the server refuses a
/// `null` body and a header has no `null`. (utoipa writes `Option<T>` as
/// "T or null".)
pub(crate) struct Optional;

impl Modify for Optional {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        for item in openapi.paths.paths.values_mut() {
            let operations =
                [&mut item.get, &mut item.put, &mut item.post, &mut item.delete, &mut item.patch];
            for operation in operations.into_iter().flatten() {
                if let Some(body) = &mut operation.request_body
                    && body.required != Some(Required::True)
                {
                    for content in body.content.values_mut() {
                        if let Some(schema) = content.schema.take() {
                            content.schema = Some(without_null(schema));
                        }
                    }
                }
                for parameter in operation.parameters.iter_mut().flatten() {
                    if parameter.required != Required::True
                        && let Some(schema) = parameter.schema.take()
                    {
                        parameter.schema = Some(without_null(schema));
                    }
                }
            }
        }
    }
}

/// `schema` without its `null` alternative.
fn without_null(schema: RefOr<Schema>) -> RefOr<Schema> {
    let is_null = |s: &RefOr<Schema>| matches!(s, RefOr::T(Schema::Object(o)) if o.schema_type == SchemaType::Type(Type::Null));
    match schema {
        RefOr::T(Schema::OneOf(one_of)) if one_of.items.iter().any(is_null) => {
            let mut rest: Vec<RefOr<Schema>> = one_of.items.into_iter().filter(|s| !is_null(s)).collect();
            match (rest.pop(), rest.is_empty()) {
                (Some(only), true) => only,
                (last, _) => {
                    rest.extend(last);
                    RefOr::T(Schema::OneOf(OneOf { items: rest, ..OneOf::new() }))
                }
            }
        }
        RefOr::T(Schema::Object(mut object)) => {
            if let SchemaType::Array(types) = &object.schema_type {
                let kept: Vec<Type> = types.iter().filter(|t| **t != Type::Null).cloned().collect();
                object.schema_type = match kept.as_slice() {
                    [one] => SchemaType::Type(one.clone()),
                    _ => SchemaType::Array(kept),
                };
            }
            RefOr::T(Schema::Object(object))
        }
        other => other,
    }
}

/// The pattern of ids and names (run ids, workflow ids, token names).
pub(crate) const SLUG: &str = "^[a-z0-9][a-z0-9_-]{0,63}$";

/// A string schema that takes one of `words`.
fn words<'a>(description: &str, words: impl IntoIterator<Item = &'a str>) -> RefOr<Schema> {
    ObjectBuilder::new()
        .schema_type(Type::String)
        .description(Some(description))
        .enum_values(Some(words))
        .into()
}

/// An object with `required` fields of these schemas, open to more fields.
fn open_object(description: &str, fields: &[(&str, RefOr<Schema>)]) -> RefOr<Schema> {
    let mut object = ObjectBuilder::new()
        .schema_type(Type::Object)
        .description(Some(description))
        .additional_properties(Some(AdditionalProperties::FreeForm(true)));
    for (name, schema) in fields {
        object = object.property(*name, schema.clone()).required(*name);
    }
    object.into()
}

fn string() -> RefOr<Schema> {
    ObjectBuilder::new().schema_type(Type::String).into()
}

fn date_time() -> RefOr<Schema> {
    ObjectBuilder::new()
        .schema_type(Type::String)
        .format(Some(SchemaFormat::KnownFormat(KnownFormat::DateTime)))
        .into()
}

/// Declares a schema built by hand under its type's name.
macro_rules! by_hand {
    ($ty:ident, $body:expr) => {
        impl PartialSchema for $ty {
            fn schema() -> RefOr<Schema> {
                $body
            }
        }
        impl ToSchema for $ty {
            fn name() -> Cow<'static, str> {
                Cow::Borrowed(stringify!($ty))
            }
        }
    };
}

/// The status of a run.
pub(crate) struct RunStatus;

/// Every run status, as JSON spells it.
pub(crate) const RUN_STATUSES: &[&str] = &[
    "pending",
    "running",
    "waiting_acceptance",
    "waiting_approval",
    "waiting_clarification",
    "waiting_conversation",
    "blocked",
    "paused",
    "completed",
    "failed",
    "cancelled",
];

by_hand!(RunStatus, words("The status of a run", RUN_STATUSES.iter().copied()));

/// What a search hit is.
pub(crate) struct HitKind;

by_hand!(HitKind, words("A workflow or a run", ["workflow", "run"].into_iter()));

/// The field a hit's snippet comes from.
pub(crate) struct HitField;

by_hand!(HitField, words("A searched field", cairn_ports::TextField::ALL.iter().map(|f| f.as_str())));

/// The status of a step.
pub(crate) struct StepStatus;

/// Every step status, as JSON spells it.
pub(crate) const STEP_STATUSES: &[&str] =
    &["pending", "running", "waiting", "succeeded", "failed", "skipped", "cancelled"];

by_hand!(StepStatus, words("The status of a step", STEP_STATUSES.iter().copied()));

/// What a gate waits for.
pub(crate) struct WaitKind;

/// Every kind of wait, as JSON spells it.
pub(crate) const WAIT_KINDS: &[&str] = &["acceptance", "approval", "clarification", "block", "conversation"];

by_hand!(WaitKind, words("What a gate waits for", WAIT_KINDS.iter().copied()));

/// The role of an API token.
pub(crate) struct Role;

by_hand!(Role, words("The role of an API token", DomainRole::VARIANTS.iter().map(|r| r.word())));

/// The class of an error.
pub(crate) struct ErrorClass;

by_hand!(
    ErrorClass,
    words(
        "The class of an error, which decides retries",
        DomainErrorClass::VARIANTS.iter().map(|c| c.as_str())
    )
);

/// One event of a run's log.
pub(crate) struct Event;

by_hand!(
    Event,
    open_object(
        "One event of a run's log, as a line of `cairn events --format jsonl`: `seq`, `at`, `actor`, `type` and the fields of its type",
        &[
            ("seq", ObjectBuilder::new().schema_type(Type::Integer).minimum(Some(1)).into()),
            ("at", date_time()),
            ("actor", string()),
            ("type", string()),
        ],
    )
);

/// One Server-Sent Event as OpenAPI 3.1 tools read a `text/event-stream`
/// schema (the shape OpenAPI 3.2 gives `itemSchema`): `event`, `id`,
/// `retry`, and `data`, JSON text of the `content` schema.
fn sse_event(description: &str, events: &[&str], content: Value) -> RefOr<Schema> {
    let data = ObjectBuilder::new()
        .schema_type(Type::String)
        .description(Some("The event's JSON"))
        .content_media_type("application/json")
        .extensions(Some(utoipa::openapi::extensions::Extensions::from_iter([("contentSchema", content)])));
    let event = if events.is_empty() {
        ObjectBuilder::new().schema_type(Type::String).description(Some("The event's type")).into()
    } else {
        words("The event's type", events.iter().copied())
    };
    ObjectBuilder::new()
        .schema_type(Type::Object)
        .description(Some(description))
        .property("event", event)
        .required("event")
        .property("id", ObjectBuilder::new().schema_type(Type::String).description(Some("The event's `seq`")))
        .property("retry", ObjectBuilder::new().schema_type(Type::Integer))
        .property("data", data)
        .required("data")
        .into()
}

/// The address of a component schema, as JSON.
fn reference(name: &str) -> Value {
    serde_json::json!({"$ref": format!("#/components/schemas/{name}")})
}

/// One event of a run's stream: a stored event (its `type` as the event
/// name, its `seq` as the id), `token` (streamed model text), `end` (the
/// run ended) or `error` (the store failed).
pub(crate) struct RunStreamEvent;

impl PartialSchema for RunStreamEvent {
    fn schema() -> RefOr<Schema> {
        let text = serde_json::json!({
            "type": "object",
            "required": ["path", "attempt", "text"],
            "properties": {"path": {"type": "string"}, "attempt": {"type": "integer"}, "text": {"type": "string"}},
        });
        let end = serde_json::json!({"type": "object", "required": ["status"], "properties": {"status": reference("RunStatus")}});
        let failed = serde_json::json!({"type": "object", "required": ["detail"], "properties": {"detail": {"type": "string"}}});
        sse_event(
            "One event of a run's stream: a stored event, `token` (streamed model text, live only), `end` (the run ended) or `error`",
            &[],
            serde_json::json!({"anyOf": [reference("Event"), text, end, failed]}),
        )
    }
}

impl ToSchema for RunStreamEvent {
    fn name() -> Cow<'static, str> {
        Cow::Borrowed("RunStreamEvent")
    }

    fn schemas(schemas: &mut Vec<(String, RefOr<Schema>)>) {
        schemas.push((Event::name().into_owned(), Event::schema()));
        schemas.push((RunStatus::name().into_owned(), RunStatus::schema()));
    }
}

/// One event of the run feed: `run`, with the run's summary.
pub(crate) struct RunFeedEvent;

impl PartialSchema for RunFeedEvent {
    fn schema() -> RefOr<Schema> {
        sse_event("A run changed: `event: run`, its summary as `data`", &["run"], reference("RunSummary"))
    }
}

impl ToSchema for RunFeedEvent {
    fn name() -> Cow<'static, str> {
        Cow::Borrowed("RunFeedEvent")
    }

    fn schemas(schemas: &mut Vec<(String, RefOr<Schema>)>) {
        schemas.push((RunSummary::name().into_owned(), RunSummary::schema()));
        let mut more = Vec::new();
        <RunSummary as ToSchema>::schemas(&mut more);
        schemas.extend(more);
    }
}

/// Why a request does not fit the run, typed.
pub(crate) struct Refusal;

by_hand!(
    Refusal,
    open_object("Why a request does not fit the run: `kind` and its fields", &[("kind", string())])
);

/// Something a workflow needs that the server lacks.
pub(crate) struct Unmet;

by_hand!(
    Unmet,
    open_object(
        "Something a workflow needs that the server lacks: `kind` and its fields",
        &[("kind", string())]
    )
);

/// One problem a problem document lists: a problem of a definition, or
/// the words of a problem with inputs.
pub(crate) struct ListedProblem;

impl PartialSchema for ListedProblem {
    fn schema() -> RefOr<Schema> {
        OneOf::builder()
            .item(Ref::from_schema_name("DefinitionProblem"))
            .item(string())
            .description(Some("A problem of the definition, or the words of a problem with the inputs"))
            .into()
    }
}

impl ToSchema for ListedProblem {
    fn name() -> Cow<'static, str> {
        Cow::Borrowed("ListedProblem")
    }

    fn schemas(schemas: &mut Vec<(String, RefOr<Schema>)>) {
        schemas.push((DefinitionProblem::name().into_owned(), DefinitionProblem::schema()));
    }
}

/// A run (the run JSON of `spec/cli.md`).
#[derive(ToSchema)]
pub(crate) struct Run {
    /// Its id.
    run_id: String,
    /// The workflow's id.
    workflow: String,
    /// The workflow's `version:`, when it has one.
    #[schema(required = true)]
    version: Option<String>,
    /// Its labels: the definition's, with those given at start over them.
    labels: BTreeMap<String, String>,
    /// Who started it: a token's name, the command line's user.
    triggered_by: String,
    /// Its priority: of the runs waiting to be driven, higher ones go first.
    priority: i32,
    /// The run it was made from (a fork's source, at a checkpoint).
    #[schema(required = true)]
    parent: Option<RunParent>,
    /// Its status.
    status: RunStatus,
    /// Whether a driver is carrying it on.
    driven: bool,
    /// When it was created.
    #[schema(format = DateTime)]
    created_at: String,
    /// When its last event was recorded.
    #[schema(format = DateTime)]
    updated_at: String,
    /// Its inputs.
    inputs: Value,
    /// Every step with a state, instance steps by their paths.
    steps: Vec<Step>,
    /// The first gate it waits at, when it waits for a person.
    #[schema(required = true)]
    waiting: Option<Gate>,
    /// Every gate it waits at.
    gates: Vec<Gate>,
    /// Tokens its LLM calls used, and their cost.
    usage: Usage,
    /// Its budget in USD, when it has one.
    #[schema(required = true)]
    budget_usd: Option<f64>,
    /// Its error, once failed.
    #[schema(required = true)]
    error: Option<ErrorInfo>,
    /// Where a fork comes from (forks only).
    #[schema(nullable = false)]
    forked_from: Option<ForkedFrom>,
    /// What the fork's source used before the checkpoint (forks only).
    #[schema(nullable = false)]
    inherited_usage: Option<Usage>,
}

/// One step of a run.
#[derive(ToSchema)]
pub(crate) struct Step {
    /// Its path in the run (`per_epic[e1].stories`).
    path: String,
    /// Its id in the definition.
    id: String,
    /// Its status.
    status: StepStatus,
    /// Attempts started so far.
    attempts: u32,
    /// Its output, once succeeded (any JSON).
    #[schema(required = true)]
    output: Option<Value>,
    /// Its last error.
    #[schema(required = true)]
    error: Option<ErrorInfo>,
    /// When its latest attempt started.
    #[schema(required = true, format = DateTime)]
    started_at: Option<String>,
    /// When it last finished.
    #[schema(required = true, format = DateTime)]
    finished_at: Option<String>,
    /// How long its latest attempt took (so far), in milliseconds.
    #[schema(required = true)]
    duration_ms: Option<u64>,
    /// The instances of a `for_each` or `loop` step.
    #[schema(nullable = false)]
    instances: Option<Instances>,
    /// Tokens its LLM calls used, when any.
    #[schema(nullable = false)]
    usage: Option<StepUsage>,
    /// A `workflow:` step's child run (of its latest attempt).
    #[schema(nullable = false)]
    child: Option<String>,
}

/// The instances of a group step.
#[derive(ToSchema)]
pub(crate) struct Instances {
    /// How many.
    total: u64,
    /// How many have finished.
    finished: u64,
}

/// Tokens a step's LLM calls used.
#[derive(ToSchema)]
pub(crate) struct StepUsage {
    /// Prompt tokens.
    prompt_tokens: u64,
    /// Completion tokens.
    completion_tokens: u64,
    /// Some counts are estimates.
    estimated: bool,
    /// The cost a provider reported itself, in millionths of a USD (absent
    /// when none did).
    cost_micro_usd: Option<u64>,
}

/// Tokens a run's LLM calls used, and their cost.
#[derive(ToSchema)]
pub(crate) struct Usage {
    /// Prompt tokens.
    prompt_tokens: u64,
    /// Completion tokens.
    completion_tokens: u64,
    /// Some counts are estimates.
    estimated: bool,
    /// The cost in USD, when the models' prices are known.
    #[schema(required = true)]
    cost_usd: Option<f64>,
}

/// A gate a run waits at.
#[derive(ToSchema)]
pub(crate) struct Gate {
    /// The step's path.
    gate: String,
    /// What it waits for.
    kind: WaitKind,
    /// The roles that must approve (none: anyone, once).
    approvers: Vec<String>,
    /// The approvals so far.
    approved_by: Vec<Approval>,
    /// When its `on_timeout` applies.
    #[schema(nullable = false, format = DateTime)]
    deadline: Option<String>,
    /// Whether that deadline has passed.
    #[schema(nullable = false)]
    deadline_passed: Option<bool>,
    /// An approval's message.
    #[schema(nullable = false)]
    message: Option<String>,
    /// A clarification's questions.
    #[schema(nullable = false)]
    questions: Option<Vec<String>>,
    /// The output to accept (acceptance gates; any JSON).
    output: Option<Value>,
    /// The child run whose gate this is (a sub-workflow's step): decided there.
    #[schema(nullable = false)]
    child: Option<String>,
}

/// A gate waiting for a person, with its run and what the caller may do there.
#[derive(ToSchema)]
pub(crate) struct WaitingGate {
    #[serde(flatten)]
    gate: Gate,
    /// The run it waits in.
    run_id: String,
    /// The run's workflow.
    workflow: String,
    /// The run's status (a run may run on while a gate waits).
    run_status: RunStatus,
    /// When the run last changed.
    #[schema(format = DateTime)]
    updated_at: String,
    /// The gate role the caller decides as there (`null`: an operator's
    /// decision or answer); absent when it may not act there.
    decide_as: Option<Option<String>>,
    /// Why the caller may not act there; absent when it may.
    #[schema(nullable = false)]
    cannot: Option<String>,
}

/// The gates waiting for a person.
#[derive(ToSchema)]
pub(crate) struct GatesPage {
    /// The gates, newest run first, then in step order.
    gates: Vec<WaitingGate>,
}

/// One approval at a gate.
#[derive(ToSchema)]
pub(crate) struct Approval {
    /// Who approved.
    by: String,
    /// As which role.
    #[schema(required = true)]
    role: Option<String>,
    /// Their comment.
    #[schema(required = true)]
    comment: Option<String>,
    /// When.
    #[schema(format = DateTime)]
    at: String,
}

/// The error of a failed step or run.
#[derive(ToSchema)]
pub(crate) struct ErrorInfo {
    /// Its class.
    class: ErrorClass,
    /// What happened.
    message: String,
    /// What a person can do about it.
    #[schema(required = true)]
    hint: Option<String>,
}

/// Where a fork comes from.
#[derive(ToSchema)]
pub(crate) struct ForkedFrom {
    /// The source run.
    run_id: String,
    /// The source's checkpoint.
    checkpoint: u64,
}

/// The run a run was made from.
#[derive(ToSchema)]
pub(crate) struct RunParent {
    /// The parent run.
    run_id: String,
    /// The checkpoint a fork starts at.
    #[schema(nullable = false)]
    checkpoint: Option<u64>,
    /// The parent's step whose run this is.
    #[schema(nullable = false)]
    step: Option<String>,
    /// How many sub-workflow calls deep the run is (absent: not a child).
    #[schema(nullable = false)]
    depth: Option<u32>,
}

/// A run summary (`cairn runs --format json`).
#[derive(ToSchema)]
pub(crate) struct RunSummary {
    /// Its id.
    run_id: String,
    /// The workflow's id.
    workflow: String,
    /// Its status.
    status: RunStatus,
    /// Whether a driver is carrying it on.
    driven: bool,
    /// Its labels.
    labels: BTreeMap<String, String>,
    /// Who started it.
    triggered_by: String,
    /// Its priority.
    priority: i32,
    /// The id of the run it was made from.
    #[schema(required = true)]
    parent: Option<String>,
    /// When it was created.
    #[schema(format = DateTime)]
    created_at: String,
    /// When its last event was recorded.
    #[schema(format = DateTime)]
    updated_at: String,
    /// Tokens its LLM calls used, and their cost.
    usage: Usage,
}

/// A registered version of a workflow (without its text).
#[derive(ToSchema)]
pub(crate) struct WorkflowVersion {
    /// The workflow's id.
    workflow: String,
    /// Its version: the definition's `version`, else the first 12 hex
    /// digits of its hash.
    version: String,
    /// Its place among the workflow's versions, from 1.
    number: u32,
    /// The definition's file name, as registered.
    definition_name: String,
    /// SHA-256 of its text and files, hex.
    hash: String,
    /// When it was registered.
    #[schema(format = DateTime)]
    registered_at: String,
    /// Who registered it.
    registered_by: String,
}

/// A registered version with its text and the files it names.
#[derive(ToSchema)]
pub(crate) struct WorkflowDefinition {
    #[serde(flatten)]
    version: WorkflowVersion,
    /// The definition's exact text.
    definition: String,
    /// The files it names, by the name it uses.
    files: BTreeMap<String, String>,
}

/// What registering did.
#[derive(ToSchema)]
pub(crate) struct Registration {
    #[serde(flatten)]
    version: WorkflowVersion,
    /// Stored as a new version (false: the same text was registered already, as this version).
    added: bool,
}

/// A workflow's figures over the runs the store keeps.
#[derive(ToSchema)]
pub(crate) struct WorkflowStats {
    /// Runs stored.
    runs: u64,
    /// Runs by status.
    by_status: BTreeMap<String, u64>,
    /// Of the runs ended, the share that completed (0 to 1).
    #[schema(required = true)]
    success_rate: Option<f64>,
    /// The median time from creation to end of the runs ended, in ms.
    #[schema(required = true)]
    median_ms: Option<u64>,
    /// The 95th percentile of that time, in ms.
    #[schema(required = true)]
    p95_ms: Option<u64>,
    /// Tokens used by every run together, and their cost.
    usage: Usage,
    /// When the latest run was created.
    #[schema(required = true, format = DateTime)]
    last_run_at: Option<String>,
}

/// Figures over the stored runs (`cairn stats`).
#[derive(ToSchema)]
pub(crate) struct StatsReport {
    /// The workflow asked for.
    #[schema(required = true)]
    workflow: Option<String>,
    /// The earliest creation time counted (`null`: every run).
    #[schema(required = true, format = DateTime)]
    since: Option<String>,
    /// Over every run counted.
    overall: WorkflowStats,
    /// By workflow, the most runs first.
    by_workflow: Vec<WorkflowFigures>,
    /// The steps that failed for good (retries spent) most often, at most 10.
    failing_steps: Vec<FailingStep>,
    /// Tokens and cost by agent, the most tokens first.
    by_agent: Vec<Spent>,
    /// Tokens and cost by model, the most tokens first.
    by_model: Vec<Spent>,
}

/// One workflow's figures in a stats report.
#[derive(ToSchema)]
pub(crate) struct WorkflowFigures {
    /// The workflow.
    workflow: String,
    #[serde(flatten)]
    stats: WorkflowStats,
}

/// A step that failed for good, over the runs counted.
#[derive(ToSchema)]
pub(crate) struct FailingStep {
    /// Its workflow.
    workflow: String,
    /// The step, as the definition names it (`per_epic.stories`).
    step: String,
    /// Failures for good.
    failures: u64,
    /// The runs it failed in.
    runs: u64,
    /// The failures by error class.
    classes: BTreeMap<String, u64>,
}

/// Tokens and cost of an agent or a model.
#[derive(ToSchema)]
pub(crate) struct Spent {
    /// The agent's or model's name.
    name: String,
    #[serde(flatten)]
    usage: Usage,
}

/// Search hits, best first (`cairn search`).
#[derive(ToSchema)]
pub(crate) struct SearchHits {
    /// The hits.
    hits: Vec<SearchHit>,
}

/// A workflow or run that matched.
#[derive(ToSchema)]
pub(crate) struct SearchHit {
    /// A workflow or a run.
    kind: HitKind,
    /// The workflow's id or the run's id.
    id: String,
    /// The workflow (of a run, the one it runs).
    workflow: String,
    /// Relevance (BM25, fields weighted): only the order means something.
    score: f64,
    /// The field the snippet comes from.
    field: HitField,
    /// A short passage of that field, in pieces.
    snippet: Vec<SnippetPiece>,
    /// The run's summary, for a run (`null` for a workflow).
    #[schema(required = true)]
    run: Option<RunSummary>,
}

/// A piece of a snippet: matched words or the text between them.
#[derive(ToSchema)]
pub(crate) struct SnippetPiece {
    /// The text, as stored (show it as text, never as markup).
    text: String,
    /// Whether it matched the query.
    hit: bool,
}

/// A workflow of the catalog.
#[derive(ToSchema)]
pub(crate) struct CatalogEntry {
    /// Its id.
    workflow: String,
    /// Its display name.
    #[schema(required = true)]
    name: Option<String>,
    /// What it does.
    #[schema(required = true)]
    description: Option<String>,
    /// Its tags.
    tags: Vec<String>,
    /// Its latest registered version (`null`: only run from files).
    #[schema(required = true)]
    latest: Option<WorkflowVersion>,
    /// Its figures.
    stats: WorkflowStats,
}

/// The catalog: every workflow registered or run here, by id.
#[derive(ToSchema)]
pub(crate) struct Catalog {
    /// The workflows.
    workflows: Vec<CatalogEntry>,
}

/// One workflow: its entry, versions and a definition.
#[derive(ToSchema)]
pub(crate) struct CatalogWorkflow {
    #[serde(flatten)]
    entry: CatalogEntry,
    /// Every registered version, oldest first.
    versions: Vec<WorkflowVersion>,
    /// The version asked for (default: the latest), with its text;
    /// `null` for a workflow never registered.
    #[schema(required = true)]
    definition: Option<WorkflowDefinition>,
}

/// A page of runs, newest first.
#[derive(ToSchema)]
pub(crate) struct RunsPage {
    /// The runs.
    runs: Vec<RunSummary>,
    /// The cursor of the next page, when there is one.
    #[schema(required = true)]
    next_cursor: Option<String>,
}

/// One event as the store keeps it (and `export` writes it): `at` in
/// milliseconds since the epoch.
pub(crate) struct StoredEvent;

by_hand!(
    StoredEvent,
    open_object(
        "One event as the store keeps it: `seq`, `at` (milliseconds since the epoch), `actor`, `type` and the fields of its type",
        &[
            ("seq", ObjectBuilder::new().schema_type(Type::Integer).minimum(Some(1)).into()),
            ("at", ObjectBuilder::new().schema_type(Type::Integer).minimum(Some(0)).into()),
            ("actor", string()),
            ("type", string()),
        ],
    )
);

/// A run as `cairn export` writes it and `cairn import` reads it.
#[derive(ToSchema)]
pub(crate) struct Export {
    /// The record's form (1).
    #[schema(minimum = 1)]
    cairn_export: u32,
    /// The run's id.
    run_id: String,
    /// Its workflow's id.
    workflow: String,
    /// The definition's file name, as given at start.
    definition_name: String,
    /// The definition's exact text, as recorded at start.
    definition: String,
    /// The files the definition names, as they were at start.
    files: BTreeMap<String, String>,
    /// The definition's hash, as recorded at start.
    definition_hash: String,
    /// Every event, numbered from 1, the first `run_created`.
    events: Vec<StoredEvent>,
}

/// What importing a run did.
#[derive(ToSchema)]
pub(crate) struct Imported {
    /// The run.
    run_id: String,
    /// `added`; `completed` (the store held the start of this log); `present` (it held all of it).
    #[schema(inline, value_type = String, pattern = "^(added|completed|present)$")]
    imported: String,
    /// The events the record holds.
    events: u64,
}

/// A page of a run's events.
#[derive(ToSchema)]
pub(crate) struct EventsPage {
    /// The events, in order.
    events: Vec<Event>,
    /// The `after` of the next page, when there is one.
    #[schema(required = true)]
    next: Option<u64>,
}

/// A checkpoint of a run.
#[derive(ToSchema)]
pub(crate) struct Checkpoint {
    /// The sequence number it folds to.
    seq: u64,
    /// When.
    #[schema(format = DateTime)]
    at: String,
    /// What it follows.
    label: String,
    /// Its size.
    size_bytes: u64,
}

/// An API token (never its secret or hash).
#[derive(ToSchema)]
pub(crate) struct Token {
    /// Its name: the actor of what it does.
    name: String,
    /// Its role.
    role: Role,
    /// The gate roles it may decide as.
    gate_roles: Vec<String>,
    /// When it was made.
    #[schema(format = DateTime)]
    created_at: String,
    /// When it expires, if ever.
    #[schema(required = true, format = DateTime)]
    expires_at: Option<String>,
    /// When it was last used.
    #[schema(required = true, format = DateTime)]
    last_used_at: Option<String>,
}

/// A new API token, with its secret: shown this once.
#[derive(ToSchema)]
pub(crate) struct NewToken {
    /// Its name: the actor of what it does.
    name: String,
    /// Its role.
    role: Role,
    /// The gate roles it may decide as.
    gate_roles: Vec<String>,
    /// When it was made.
    #[schema(format = DateTime)]
    created_at: String,
    /// When it expires, if ever.
    #[schema(required = true, format = DateTime)]
    expires_at: Option<String>,
    /// When it was last used.
    #[schema(required = true, format = DateTime)]
    last_used_at: Option<String>,
    /// The secret, for `Authorization: Bearer`.
    token: String,
}

/// Whether the server and its store answer.
#[derive(ToSchema)]
pub(crate) struct Health {
    /// `ok`, or `store_failed`.
    status: String,
    /// What failed.
    #[schema(nullable = false)]
    detail: Option<String>,
}

/// What validating a definition found.
#[derive(ToSchema)]
pub(crate) struct Validation {
    /// Whether it is valid.
    valid: bool,
    /// Its problems, each where it is.
    problems: Vec<DefinitionProblem>,
    /// The plan of a valid definition.
    #[schema(required = true)]
    plan: Option<Plan>,
}

/// One problem of a definition.
#[derive(ToSchema)]
pub(crate) struct DefinitionProblem {
    /// Its line, from 1, when known.
    #[schema(required = true)]
    line: Option<u64>,
    /// Its column, from 1, when known.
    #[schema(required = true)]
    column: Option<u64>,
    /// The key path it is at (empty for the whole file).
    path: String,
    /// The rule it breaks (`syntax`, `unknown_key`, ...).
    rule: String,
    /// What is wrong.
    message: String,
}

/// The plan of a workflow: its top-level steps level by level.
#[derive(ToSchema)]
pub(crate) struct Plan {
    /// The workflow's id.
    workflow: String,
    /// Steps in the whole definition.
    total_steps: u64,
    /// The inputs a run takes (absent when none).
    #[schema(nullable = false)]
    inputs: Option<Vec<PlanInput>>,
    /// Step ids, level by level.
    levels: Vec<Vec<String>>,
    /// Steps on the longest chain of `needs`.
    critical_path: u64,
    /// The steps, in topological order.
    steps: Vec<PlanStep>,
}

/// One input a workflow takes.
#[derive(ToSchema)]
pub(crate) struct PlanInput {
    /// Its name.
    name: String,
    /// Its type.
    #[schema(rename = "type")]
    ty: InputType,
    /// Whether a run must give it (it has no default).
    required: bool,
    /// Its default (any JSON), when it has one.
    #[schema(nullable = false)]
    default: Option<serde_json::Value>,
    /// What it is for.
    #[schema(nullable = false)]
    description: Option<String>,
}

/// The type of a run input.
pub(crate) struct InputType;

by_hand!(
    InputType,
    words("The type of a run input", cairn_domain::definition::InputType::ALL.iter().map(|(word, _)| *word))
);

/// The plan of the steps inside a `for_each` or `loop`.
#[derive(ToSchema)]
pub(crate) struct ScopePlan {
    /// Step ids, level by level.
    levels: Vec<Vec<String>>,
    /// Steps on the longest chain of `needs`.
    critical_path: u64,
    /// The steps, in topological order.
    steps: Vec<PlanStep>,
}

/// One step of a plan.
#[derive(ToSchema)]
pub(crate) struct PlanStep {
    /// Its id.
    id: String,
    /// Its kind (`agent`, `for_each`, ...).
    kind: String,
    /// The siblings it waits for.
    needs: Vec<String>,
    /// Its level.
    level: u64,
    /// The plan of its nested steps.
    #[schema(nullable = false, no_recursion)]
    body: Option<ScopePlan>,
}

/// The definition a run recorded when it started.
#[derive(ToSchema)]
pub(crate) struct RecordedDefinition {
    /// Its file name.
    name: String,
    /// Its exact text.
    text: String,
    /// The files it names, by name.
    files: std::collections::BTreeMap<String, String>,
}

/// What a prune deleted (or would delete).
#[derive(ToSchema)]
pub(crate) struct Pruned {
    /// The ids of the runs.
    deleted: Vec<String>,
    /// Whether nothing was deleted.
    dry_run: bool,
    /// The runs' summaries.
    runs: Vec<RunSummary>,
}

/// The refusals every endpoint behind a token answers: a request it
/// cannot read, no token (or an unknown or expired one), a role too low,
/// a store that failed. Listed once, named in each endpoint's responses.
#[derive(utoipa::IntoResponses)]
#[allow(dead_code)]
pub(crate) enum Refusals {
    #[response(
        status = 400,
        description = "Malformed JSON, a bad query or path, or a credential in the query string",
        content_type = "application/problem+json"
    )]
    BadRequest(Problem),
    #[response(
        status = 401,
        description = "No token, or an unknown or expired one",
        content_type = "application/problem+json"
    )]
    Unauthorized(Problem),
    #[response(
        status = 403,
        description = "The token's role is too low",
        content_type = "application/problem+json"
    )]
    Forbidden(Problem),
    #[response(status = 503, description = "The store failed", content_type = "application/problem+json")]
    Unavailable(Problem),
}

/// A problem document (RFC 9457, `application/problem+json`).
#[derive(ToSchema)]
pub(crate) struct Problem {
    /// `urn:cairn:problem:CODE`.
    #[schema(rename = "type")]
    kind: String,
    /// The HTTP status's reason phrase.
    title: String,
    /// The HTTP status.
    status: u16,
    /// What happened, for people.
    detail: String,
    /// A stable snake_case word for clients (`not_found`, `conflict`, ...).
    code: String,
    /// The request's id (also in `X-Request-Id`).
    #[schema(nullable = false)]
    request_id: Option<String>,
    /// The run it concerns.
    run: Option<String>,
    /// Why the request does not fit the run, typed.
    #[schema(nullable = false)]
    refusal: Option<Refusal>,
    /// What the workflow needs that the server lacks.
    #[schema(nullable = false)]
    unmet: Option<Vec<Unmet>>,
    /// The problems of a definition or of inputs.
    #[schema(nullable = false)]
    problems: Option<Vec<ListedProblem>>,
    /// The name of the expired token presented (a `401`).
    #[schema(nullable = false)]
    expired_token: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_status_words_are_the_domain_s() {
        for word in RUN_STATUSES {
            let parsed: Result<cairn_domain::state::RunStatus, _> =
                serde_json::from_value(Value::from(*word));
            assert!(parsed.is_ok(), "run status {word}");
        }
        for word in STEP_STATUSES {
            let parsed: Result<cairn_domain::state::StepStatus, _> =
                serde_json::from_value(Value::from(*word));
            assert!(parsed.is_ok(), "step status {word}");
        }
        for word in WAIT_KINDS {
            let parsed: Result<cairn_domain::state::WaitKind, _> = serde_json::from_value(Value::from(*word));
            assert!(parsed.is_ok(), "wait kind {word}");
        }
    }

    #[test]
    fn the_document_is_openapi_3_1_with_the_bearer_scheme() {
        let doc = crate::openapi();
        assert!(doc["openapi"].as_str().is_some_and(|v| v.starts_with("3.1")), "{}", doc["openapi"]);
        assert_eq!(doc["components"]["securitySchemes"]["bearer"]["scheme"], "bearer");
    }
}
