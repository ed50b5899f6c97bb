//! Every request gets an id: the client's `X-Request-Id` when it sends a
//! sane one, else a new one. The id is in the answer's header, in the
//! problem document of an error (`request_id`), and in the log line of the
//! request, so a person can find one from the other. A log line names the
//! method and path only: never a query string or a header, where a
//! credential could be.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use axum::body::Body;
use axum::extract::Request;
use axum::http::{HeaderValue, header};
use axum::middleware::Next;
use axum::response::Response;
use tracing::Instrument as _;

/// The header that carries a request's id.
pub const REQUEST_ID: &str = "x-request-id";

/// The largest problem document the id is written into.
const MAX_PROBLEM_BYTES: usize = 1 << 20;

/// Gives the request its id, logs its answer, and writes the id into the
/// answer.
pub(crate) async fn identified(request: Request, next: Next) -> Response {
    let id = request
        .headers()
        .get(REQUEST_ID)
        .and_then(|v| v.to_str().ok())
        .filter(|v| sane(v))
        .map_or_else(new_id, str::to_owned);
    let span =
        tracing::info_span!("request", id = %id, method = %request.method(), path = %request.uri().path());
    let started = Instant::now();
    let response = next.run(request).instrument(span.clone()).await;
    let status = response.status();
    span.in_scope(|| {
        let ms = started.elapsed().as_millis();
        if status.is_server_error() {
            tracing::warn!(status = status.as_u16(), ms, "answered");
        } else {
            tracing::info!(status = status.as_u16(), ms, "answered");
        }
    });
    let mut response = with_id_in_problem(response, &id).await;
    if let Ok(value) = HeaderValue::from_str(&id) {
        response.headers_mut().insert(REQUEST_ID, value);
    }
    response
}

/// An id a client may choose: short, and nothing but letters, digits,
/// `-`, `_` and `.`.
fn sane(id: &str) -> bool {
    !id.is_empty() && id.len() <= 64 && id.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
}

/// A new id: when this process started, and a count.
fn new_id() -> String {
    static NEXT: AtomicU64 = AtomicU64::new(1);
    static STARTED: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    let started =
        *STARTED.get_or_init(|| SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs()));
    format!("r{started:x}-{}", NEXT.fetch_add(1, Ordering::Relaxed))
}

/// A problem document with `request_id` in it; any other answer as it is.
async fn with_id_in_problem(response: Response, id: &str) -> Response {
    let is_problem = response
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/problem+json"));
    if !is_problem {
        return response;
    }
    let (mut parts, body) = response.into_parts();
    let Ok(bytes) = axum::body::to_bytes(body, MAX_PROBLEM_BYTES).await else {
        return Response::from_parts(parts, Body::empty());
    };
    let body = match serde_json::from_slice::<serde_json::Value>(&bytes) {
        Ok(mut problem) => {
            if let Some(fields) = problem.as_object_mut() {
                fields.insert("request_id".into(), id.into());
            }
            problem.to_string().into_bytes()
        }
        Err(_) => bytes.to_vec(),
    };
    parts.headers.remove(header::CONTENT_LENGTH);
    Response::from_parts(parts, Body::from(body))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_client_id_is_kept_only_when_sane() {
        assert!(sane("abc-123_x.y"));
        assert!(!sane(""));
        assert!(!sane("a b"));
        assert!(!sane("tok\nen"));
        assert!(!sane(&"a".repeat(65)));
        assert_ne!(new_id(), new_id(), "each request its own");
    }
}
