//! Live streams (Server-Sent Events): one run's events, and every run's
//! changes. A stream first sends what is stored after the client's cursor
//! (`Last-Event-ID` or `?after=`), then follows what is stored next: none
//! twice, none missing ([`cairn_app::follow`]). Streamed model text comes
//! as `token` events with no id (live only); a comment keeps idle
//! connections open; every stream ends when the server closes.

use std::convert::Infallible;
use std::time::Duration;

use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::HeaderMap;
use axum::response::sse::{Event as Sse, KeepAlive};
use axum::response::{IntoResponse, Response};
use cairn_app::follow::{self, Followed};
use cairn_app::view;
use futures_util::{Stream, StreamExt};
use serde::Deserialize;
use serde_json::json;
use tokio::sync::watch;
use utoipa::IntoParams;

use crate::Shared;
use crate::problem::Problem;
use crate::runs::{Answer, run_id};

/// How often an idle stream sends a comment.
const KEEP_ALIVE: Duration = Duration::from_secs(15);

/// The query of a run's stream.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub(crate) struct StreamQuery {
    /// Start after this sequence number (`Last-Event-ID` wins when sent).
    after: Option<u64>,
}

/// `GET /runs/{id}/events/stream`.
#[utoipa::path(
    get,
    path = "/api/v1/runs/{id}/events/stream",
    tag = "events",
    operation_id = "stream_events",
    params(
        ("id" = String, Path, description = "The run's id"),
        StreamQuery,
        ("Last-Event-ID" = Option<u64>, Header, description = "Resume after this sequence number"),
    ),
    responses(
        (status = 200, description = "Server-Sent Events: the run's stored events after the cursor, then new ones as they are stored (`id` the event's seq, `event` its type, `data` the event JSON); `token` events carry streamed model text; `end` when the run ends", body = crate::openapi::RunStreamEvent, content_type = "text/event-stream"),
        (status = 400, description = "A bad query, path or Last-Event-ID, or a credential in the query string", body = crate::openapi::Problem, content_type = "application/problem+json"),
        (status = 401, description = "No token, or an unknown or expired one", body = crate::openapi::Problem, content_type = "application/problem+json"),
        (status = 403, description = "The token's role is too low", body = crate::openapi::Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such run", body = crate::openapi::Problem, content_type = "application/problem+json"),
        (status = 503, description = "The store failed", body = crate::openapi::Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
pub(crate) async fn run_events(
    State(shared): State<Shared>,
    path: Result<Path<String>, PathRejection>,
    query: Result<Query<StreamQuery>, QueryRejection>,
    headers: HeaderMap,
) -> Answer {
    let id = run_id(path)?;
    let Query(q) = query.map_err(Problem::from)?;
    let last_event_id = match headers.get("last-event-id") {
        None => None,
        Some(v) => Some(
            v.to_str()
                .ok()
                .and_then(|t| t.trim().parse::<u64>().ok())
                .ok_or_else(|| Problem::bad_request("Last-Event-ID must be the number of an event"))?,
        ),
    };
    let after = last_event_id.or(q.after).unwrap_or(0);
    let app = shared.service.app();
    // An unknown run is a 404 before the stream starts.
    app.status(&id).await.map_err(Problem::from)?;
    let secrets = app.secrets().clone();
    // Counted as a follower for as long as the stream lives.
    let following = app.meter().follower();
    let events = follow::follow(app.store().clone(), app.hub(), id, after).map(move |item| {
        let _following = &following;
        Ok::<_, Infallible>(match item {
            Ok(Followed::Event(e)) => {
                let encoded = e.encoded();
                Sse::default().id(e.event().seq.to_string()).event(&encoded.kind).data(&encoded.json)
            }
            Ok(Followed::Token { path, attempt, text }) => {
                let data = json!({"path": path, "attempt": attempt, "text": text}).to_string();
                Sse::default().event("token").data(data)
            }
            Ok(Followed::End(status)) => {
                Sse::default().event("end").data(json!({"status": status}).to_string())
            }
            Err(e) => Sse::default()
                .event("error")
                .data(json!({"detail": secrets.redact(&e.to_string())}).to_string()),
        })
    });
    Ok(sse(until_closed(events, shared.closing.clone())))
}

/// `GET /events/stream`: every run's summary each time it changes.
#[utoipa::path(
    get,
    path = "/api/v1/events/stream",
    tag = "events",
    operation_id = "stream_runs",
    responses(
        (status = 200, description = "Server-Sent Events: `event: run` with the run summary as `data`, each time a run changes", body = crate::openapi::RunFeedEvent, content_type = "text/event-stream"),
        (status = 400, description = "A credential in the query string", body = crate::openapi::Problem, content_type = "application/problem+json"),
        (status = 401, description = "No token, or an unknown or expired one", body = crate::openapi::Problem, content_type = "application/problem+json"),
        (status = 403, description = "The token's role is too low", body = crate::openapi::Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
pub(crate) async fn run_feed(State(shared): State<Shared>) -> Response {
    let app = shared.service.app().clone();
    let following = app.meter().follower();
    let feed = follow::follow_runs(app.store().clone(), app.hub()).filter_map(move |item| {
        let _following = &following;
        let event = match item {
            Ok(summary) => {
                let data = view::list::summary_json(&app.listed(summary)).to_string();
                Some(Sse::default().event("run").data(data))
            }
            Err(e) => {
                tracing::warn!(error = %app.secrets().redact(&e.to_string()), "the run feed could not read the store");
                None
            }
        };
        std::future::ready(event.map(Ok::<_, Infallible>))
    });
    sse(until_closed(feed, shared.closing.clone()))
}

/// `stream`, ended when the server starts closing.
fn until_closed<S: Stream + Send + 'static>(
    stream: S,
    mut closing: watch::Receiver<bool>,
) -> impl Stream<Item = S::Item> + Send {
    stream.take_until(async move {
        let _ = closing.wait_for(|closed| *closed).await;
    })
}

/// An SSE response with keep-alive comments.
fn sse<S>(stream: S) -> Response
where
    S: Stream<Item = Result<Sse, Infallible>> + Send + 'static,
{
    axum::response::Sse::new(stream)
        .keep_alive(KeepAlive::new().interval(KEEP_ALIVE).text("keep-alive"))
        .into_response()
}
