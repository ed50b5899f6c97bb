//! Webhooks: `POST /hooks/{workflow}` starts a run of a registered
//! workflow that takes them, signed with the workflow's key
//! (`cairn_app::triggers`). No token is asked: the signature is the
//! credential.

use axum::body::Bytes;
use axum::extract::rejection::PathRejection;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use cairn_app::app::Started;

use crate::Shared;
use crate::problem::Problem;
use crate::runs::{Answer, created, run_json, workflow_id};

/// The header carrying `sha256=` and the hex HMAC-SHA256 of the body.
const SIGNATURE: &str = "x-cairn-signature";
/// The header naming the delivery: a replay carries the same.
const DELIVERY: &str = "x-cairn-delivery";

/// `POST /hooks/{workflow}`: a webhook delivery starts a run of the
/// workflow's latest version, its JSON body the inputs; a delivery id seen
/// before answers its run.
#[utoipa::path(
    post,
    path = "/api/v1/hooks/{workflow}",
    tag = "workflows",
    operation_id = "deliver_hook",
    params(
        ("workflow" = String, Path, description = "The registered workflow, whose latest version has `on: { webhook: true }`"),
        ("X-Cairn-Signature" = String, Header, description = "`sha256=` and the hex HMAC-SHA256 of the body under the key of `[hooks.WORKFLOW] secret_env`"),
        ("X-Cairn-Delivery" = String, Header, description = "The delivery's id (1 to 200 visible characters): a replay with the same id starts nothing"),
    ),
    request_body(content = Object, description = "The run's inputs, a JSON object (an empty body: none)", content_type = "application/json"),
    responses(
        (status = 201, description = "The run, started", body = crate::openapi::Run, headers(("Location" = String, description = "Where the run lives"))),
        (status = 200, description = "The run the same delivery started before", body = crate::openapi::Run),
        (status = 400, description = "No delivery id", body = crate::openapi::Problem, content_type = "application/problem+json"),
        (status = 401, description = "No signature, or not the body's", body = crate::openapi::Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such workflow, or it takes no webhook", body = crate::openapi::Problem, content_type = "application/problem+json"),
        (status = 413, description = "The body is too large", body = crate::openapi::Problem, content_type = "application/problem+json"),
        (status = 422, description = "Inputs the workflow does not take, or a delivery id used before with another body", body = crate::openapi::Problem, content_type = "application/problem+json"),
        (status = 503, description = "The server has no key for the workflow's webhook, or the store cannot be reached", body = crate::openapi::Problem, content_type = "application/problem+json"),
    ),
)]
pub(crate) async fn deliver(
    State(shared): State<Shared>,
    path: Result<Path<String>, PathRejection>,
    headers: HeaderMap,
    body: Bytes,
) -> Answer {
    let Path(text) = path.map_err(Problem::from)?;
    let workflow = workflow_id(&text)?;
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    let app = shared.service.app();
    let (run, started) =
        app.hook(&workflow, &body, header(SIGNATURE), header(DELIVERY)).await.map_err(Problem::from)?;
    match started {
        Started::New => {
            shared.service.drive(&run.state.run_id);
            Ok(created(&shared, &run))
        }
        Started::Repeat => Ok(run_json(&shared, &run, StatusCode::OK)),
    }
}
