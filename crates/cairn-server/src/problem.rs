//! Errors as the API answers them: `application/problem+json` (RFC 9457)
//! with a stable `code` a client matches on. Every refusal of the
//! application becomes one here, in one place, with its status.

use axum::extract::rejection::{JsonRejection, PathRejection, QueryRejection};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use cairn_app::EngineError;
use cairn_app::Error;
use cairn_app::error::ImportError;
use cairn_app::error::{CatalogError, HookError, TokenError};
use cairn_domain::access::Denied;
use cairn_domain::problem::Problems;
use cairn_domain::steer::Refusal;
use cairn_ports::StoreError;
use serde_json::{Value, json};

/// One problem document.
#[derive(Debug, Clone)]
pub struct Problem {
    /// The HTTP status.
    pub status: StatusCode,
    /// A stable snake_case word for clients to match on.
    pub code: &'static str,
    /// What happened, for people.
    pub detail: String,
    /// More fields (`problems` of an invalid definition, the typed
    /// `refusal` of a request, ...): a client rebuilds the typed error
    /// from them.
    pub extra: Vec<(&'static str, Value)>,
}

impl Problem {
    /// A problem with `status`, `code` and `detail`.
    pub fn new(status: StatusCode, code: &'static str, detail: impl Into<String>) -> Self {
        Self { status, code, detail: detail.into(), extra: Vec::new() }
    }

    /// This problem with one more field.
    pub fn with(mut self, key: &'static str, value: Value) -> Self {
        self.extra.push((key, value));
        self
    }

    /// `401 unauthorized`.
    pub fn unauthorized(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, "unauthorized", detail)
    }

    /// `403 forbidden`.
    pub fn forbidden(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, "forbidden", detail)
    }

    /// `404 not_found`.
    pub fn not_found(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "not_found", detail)
    }

    /// `400 bad_request`.
    pub fn bad_request(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "bad_request", detail)
    }

    /// The document, as JSON.
    pub fn body(&self) -> Value {
        let title = self.status.canonical_reason().unwrap_or("Error");
        let mut body = json!({
            "type": format!("urn:cairn:problem:{}", self.code),
            "title": title,
            "status": self.status.as_u16(),
            "detail": self.detail,
            "code": self.code,
        });
        if let Some(map) = body.as_object_mut() {
            for (key, value) in &self.extra {
                map.insert((*key).to_owned(), value.clone());
            }
        }
        body
    }
}

impl IntoResponse for Problem {
    fn into_response(self) -> Response {
        let mut response = (self.status, self.body().to_string()).into_response();
        response
            .headers_mut()
            .insert(header::CONTENT_TYPE, HeaderValue::from_static("application/problem+json"));
        response
    }
}

impl From<Error> for Problem {
    fn from(e: Error) -> Self {
        let detail = e.to_string();
        match e {
            Error::Definition { problems, .. } => {
                let listed = problems_json(&problems);
                Self::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid_definition", detail)
                    .with("problems", listed)
            }
            Error::File { .. } | Error::Config(_) => {
                Self::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid_request", detail)
            }
            Error::BlankSearch => Self::new(StatusCode::BAD_REQUEST, "blank_query", detail),
            Error::Import(import) => {
                let typed = serde_json::to_value(&import).unwrap_or(Value::Null);
                match import {
                    ImportError::Differs { run } => {
                        Self::new(StatusCode::CONFLICT, "run_differs", detail).with("run", json!(run))
                    }
                    _ => Self::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid_export", detail),
                }
                .with("import", typed)
            }
            Error::Index(_) => Self::new(StatusCode::SERVICE_UNAVAILABLE, "search_unavailable", detail),
            Error::Store(_) | Error::Interrupted { .. } => {
                Self::new(StatusCode::SERVICE_UNAVAILABLE, "store_unavailable", detail)
            }
            Error::Token(token) => match token {
                TokenError::Unknown => Self::unauthorized(detail),
                TokenError::Expired(name) => Self::unauthorized(detail).with("expired_token", json!(name)),
                TokenError::NameTaken(_) => Self::new(StatusCode::CONFLICT, "conflict", detail),
                TokenError::NoSuchToken(_) => Self::not_found(detail),
                TokenError::BadName(_) => {
                    Self::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid_request", detail)
                }
                _ => Self::bad_request(detail),
            },
            Error::Engine(engine) => Self::engine(engine, detail),
            Error::Catalog(catalog) => match catalog {
                CatalogError::UnknownWorkflow(workflow) => {
                    Self::not_found(detail).with("workflow", json!(workflow))
                }
                CatalogError::UnknownVersion { workflow, version } => {
                    Self::not_found(detail).with("workflow", json!(workflow)).with("version", json!(version))
                }
                CatalogError::VersionTaken { workflow, version } => {
                    Self::new(StatusCode::CONFLICT, "version_taken", detail)
                        .with("workflow", json!(workflow))
                        .with("version", json!(version))
                }
                CatalogError::UnknownCallee { caller, callee } => {
                    Self::new(StatusCode::UNPROCESSABLE_ENTITY, "unregistered_callee", detail)
                        .with("workflow", json!(caller))
                        .with("callee", json!(callee))
                }
                CatalogError::Recursion { chain } => {
                    Self::new(StatusCode::UNPROCESSABLE_ENTITY, "recursion", detail)
                        .with("chain", json!(chain))
                }
                _ => Self::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid_request", detail),
            },
            Error::Hook(hook) => match hook {
                HookError::NotTaken(workflow) => Self::not_found(detail).with("workflow", json!(workflow)),
                HookError::NoKey { workflow, .. } => {
                    Self::new(StatusCode::SERVICE_UNAVAILABLE, "no_hook_key", detail)
                        .with("workflow", json!(workflow))
                }
                HookError::BadSignature => Self::new(StatusCode::UNAUTHORIZED, "bad_signature", detail),
                HookError::NoDelivery => Self::bad_request(detail),
                _ => Self::bad_request(detail),
            },
            Error::Denied { caller, role, denied } => Self::forbidden(match denied {
                Denied::OperatorsDecide => format!(
                    "token `{caller}` is {role}; a gate that lists no approvers takes an operator's decision"
                ),
                Denied::NotItsGateRole(gate_role) => {
                    format!("token `{caller}` may not decide as `{gate_role}`: it has no such gate role")
                }
                Denied::NoGateRole => {
                    format!("token `{caller}` names no gate role to decide as, and is not an operator")
                }
                other => format!("token `{caller}` is {role}: {other}"),
            }),
            Error::KeyReused { run } => Self::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "idempotency_key_reused",
                format!("Idempotency-Key was used for run `{run}` with another definition or other inputs"),
            )
            .with("run", json!(run)),
            _ => Self::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", detail),
        }
    }
}

impl Problem {
    fn engine(e: EngineError, detail: String) -> Self {
        match e {
            EngineError::Store(StoreError::NotFound(run)) => Self::not_found(detail).with("run", json!(run)),
            // The run that exists is named, so a client can say which.
            EngineError::Store(StoreError::AlreadyExists(run)) => {
                Self::new(StatusCode::CONFLICT, "conflict", detail).with("run", json!(run))
            }
            EngineError::Store(StoreError::Conflict { .. } | StoreError::Leased { .. }) => {
                Self::new(StatusCode::CONFLICT, "conflict", detail)
            }
            EngineError::Store(_) | EngineError::Log(_) | EngineError::Definition { .. } => {
                Self::new(StatusCode::SERVICE_UNAVAILABLE, "store_unavailable", detail)
            }
            EngineError::Labels(_) => Self::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid_labels", detail),
            EngineError::Inputs(problems) => {
                Self::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid_inputs", detail)
                    .with("problems", json!(problems))
            }
            EngineError::Refused { run, refusal } => {
                let typed = serde_json::to_value(&refusal).unwrap_or(Value::Null);
                let problem = match refusal {
                    Refusal::NotAnApprover { .. } | Refusal::RoleNeeded { .. } => Self::forbidden(detail),
                    Refusal::NoCheckpoint { .. } => Self::not_found(detail),
                    _ => Self::new(StatusCode::CONFLICT, "conflict", detail),
                };
                problem.with("run", json!(run)).with("refusal", typed)
            }
            EngineError::Unmet { run, unmet } => {
                Self::new(StatusCode::UNPROCESSABLE_ENTITY, "unmet_needs", detail)
                    .with("run", json!(run))
                    .with("unmet", serde_json::to_value(&unmet).unwrap_or(Value::Null))
            }
            EngineError::Program(_) => {
                Self::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid_definition", detail)
            }
            _ => Self::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", detail),
        }
    }
}

impl From<JsonRejection> for Problem {
    fn from(r: JsonRejection) -> Self {
        match r {
            JsonRejection::JsonDataError(e) => {
                Self::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid_body", e.body_text())
            }
            JsonRejection::JsonSyntaxError(e) => {
                Self::new(StatusCode::BAD_REQUEST, "malformed_json", e.body_text())
            }
            JsonRejection::MissingJsonContentType(_) => Self::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported_media_type",
                "send the body as JSON with `Content-Type: application/json`",
            ),
            JsonRejection::BytesRejection(e) if e.status() == StatusCode::PAYLOAD_TOO_LARGE => Self::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "payload_too_large",
                format!("the body is larger than the {} bytes a request may have", crate::MAX_BODY_BYTES),
            ),
            other => Self::bad_request(other.body_text()),
        }
    }
}

impl From<QueryRejection> for Problem {
    fn from(r: QueryRejection) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "invalid_query", r.body_text())
    }
}

impl From<PathRejection> for Problem {
    fn from(r: PathRejection) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "invalid_path", r.body_text())
    }
}

/// Problems of a definition as the API lists them.
pub fn problems_json(problems: &Problems) -> Value {
    Value::Array(
        problems
            .0
            .iter()
            .map(|p| {
                json!({
                    "line": p.location.map(|l| l.line),
                    "column": p.location.map(|l| l.column),
                    "path": p.subject,
                    "rule": p.rule,
                    "message": p.message,
                })
            })
            .collect(),
    )
}
