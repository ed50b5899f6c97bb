//! The live streams (`spec/api.md`, Server-Sent Events): a run's stream
//! sends every stored event with `id:` its seq and `event:` its type, then
//! `end`, and closes; a reconnect with `Last-Event-ID: N` (or `?after=N`)
//! gets exactly the events after N; a run that waits keeps its stream open
//! and the stream follows it on once a person decides; a closing server
//! ends it. The run feed sends each run's summary as it changes.

mod support;

use std::time::Duration;

use axum::http::{Method, StatusCode};
use cairn_domain::access::Role;
use serde_json::{Value, json};
use support::{GATED, HELLO, Server, SseEvent, SseReader, read, request};

/// A server, an operator's token, and a token that may approve the gate
/// of [`GATED`].
async fn server() -> (Server, String, String) {
    let server = Server::on_system_clock();
    let operator = server.token("ops", Role::Operator, &[]).await;
    let lead = server.token("lee", Role::Viewer, &["lead"]).await;
    (server, operator, lead)
}

/// `GET /runs/{run}/events/stream{query}`, with `Last-Event-ID` when given.
fn stream_request(
    run: &str,
    token: &str,
    query: &str,
    last_event_id: Option<&str>,
) -> axum::http::Request<axum::body::Body> {
    let mut call =
        request(Method::GET, &format!("/api/v1/runs/{run}/events/stream{query}"), Some(token), None);
    if let Some(id) = last_event_id {
        call.headers_mut().insert("last-event-id", id.parse().expect("a header value"));
    }
    call
}

/// The whole stream of an ended run, parsed.
async fn whole_stream(
    server: &Server,
    run: &str,
    token: &str,
    query: &str,
    last: Option<&str>,
) -> Vec<SseEvent> {
    let response = server.send(stream_request(run, token, query, last)).await;
    assert_eq!(response.status(), StatusCode::OK);
    let content_type = response.headers().get("content-type").and_then(|v| v.to_str().ok()).unwrap_or("");
    assert!(content_type.starts_with("text/event-stream"), "an event stream: {content_type}");
    let answer = read(response).await;
    let text = answer.body.as_str().expect("SSE text, not JSON").to_owned();
    support::parse_sse(&text)
}

/// Asserts `events` are stored events numbered `from..=to` in order, each
/// with `id:` its seq and `event:` its type, then `end` (no id) with
/// `status`.
#[track_caller]
fn assert_events_then_end(events: &[SseEvent], from: u64, to: u64, status: &str) {
    let (end, stored) = events.split_last().expect("at least the end");
    assert_eq!(end.event.as_deref(), Some("end"), "the last is `end`: {end:?}");
    assert_eq!(end.id, None, "`end` has no id (it is not an event of the run)");
    assert_eq!(end.json(), json!({"status": status}));
    let ids: Vec<u64> =
        stored.iter().map(|e| e.id.as_deref().and_then(|i| i.parse().ok()).expect("an id")).collect();
    assert_eq!(ids, (from..=to).collect::<Vec<_>>(), "exactly the events after {}", from.saturating_sub(1));
    for e in stored {
        let data = e.json();
        assert_eq!(
            e.id.as_deref(),
            data["seq"].as_u64().map(|s| s.to_string()).as_deref(),
            "id is seq: {e:?}"
        );
        assert_eq!(e.event.as_deref(), data["type"].as_str(), "event is the type: {e:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_ended_runs_stream_sends_every_event_then_end_and_closes() {
    let (server, operator, _) = server().await;
    let id = server.start(&operator, HELLO).await;
    server.wait_for(&id, &operator, "completed").await;
    let stored = server.events(&id, &operator).await;
    let last = stored.len() as u64;

    let events = whole_stream(&server, &id, &operator, "", None).await;
    assert_events_then_end(&events, 1, last, "completed");
    let sent: Vec<Value> = events[..events.len() - 1].iter().map(SseEvent::json).collect();
    assert_eq!(sent, stored, "each event's data is the event as GET /events gives it");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reconnect_gets_exactly_the_events_after_its_last_id() {
    let (server, operator, _) = server().await;
    let id = server.start(&operator, HELLO).await;
    server.wait_for(&id, &operator, "completed").await;
    let last = server.events(&id, &operator).await.len() as u64;

    for n in [0, 1, 2, last / 2, last - 1, last] {
        let by_header = whole_stream(&server, &id, &operator, "", Some(&n.to_string())).await;
        assert_events_then_end(&by_header, n + 1, last, "completed");
        let by_query = whole_stream(&server, &id, &operator, &format!("?after={n}"), None).await;
        assert_eq!(by_query, by_header, "?after={n} is Last-Event-ID: {n}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_refuses_an_unknown_run_and_a_bad_last_event_id() {
    let (server, operator, _) = server().await;
    read(server.send(stream_request("no-such-run", &operator, "", None)).await)
        .await
        .problem(StatusCode::NOT_FOUND, "not_found");
    let id = server.start(&operator, HELLO).await;
    for bad in ["seven", "-1", "1.5"] {
        read(server.send(stream_request(&id, &operator, "", Some(bad))).await)
            .await
            .problem(StatusCode::BAD_REQUEST, "bad_request");
    }
}

/// Reads `reader` until an event of `kind`; returns every event read.
async fn read_until(reader: &mut SseReader, kind: &str) -> Vec<SseEvent> {
    let mut read = Vec::new();
    while let Some(event) = reader.next().await {
        let done = event.event.as_deref() == Some(kind);
        assert_ne!(event.event.as_deref(), Some("end"), "the stream ended before `{kind}`: {read:?}");
        read.push(event);
        if done {
            return read;
        }
    }
    panic!("the stream closed before `{kind}`: {read:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_waiting_runs_stream_stays_open_and_follows_the_run_on_after_a_decision() {
    let (server, operator, lead) = server().await;
    let id = server.start(&operator, GATED).await;
    server.wait_for(&id, &operator, "waiting_approval").await;

    let mut reader = SseReader::new(server.send(stream_request(&id, &operator, "", None)).await);
    let mut events = read_until(&mut reader, "run_waiting").await;
    let quiet = reader.next_within(Duration::from_millis(300)).await;
    assert!(quiet.is_err(), "nothing more while the run waits, and the stream stays open: {quiet:?}");

    let approved = server.post(&format!("/api/v1/runs/{id}/approve"), &lead, json!({})).await;
    assert_eq!(approved.status, StatusCode::OK, "{}", approved.body);
    while let Some(event) = reader.next().await {
        events.push(event);
    }
    assert_events_then_end(&events, 1, events.len() as u64 - 1, "completed");
    let decided: Vec<Value> =
        events.iter().filter(|e| e.event.as_deref() == Some("gate_decided")).map(SseEvent::json).collect();
    assert_eq!(decided.len(), 1, "{decided:?}");
    assert_eq!(decided[0]["actor"], "lee");
    let stored = server.events(&id, &operator).await;
    assert_eq!(events.len(), stored.len() + 1, "every stored event was streamed, once");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reconnect_in_the_middle_of_a_live_run_misses_nothing() {
    let (server, operator, lead) = server().await;
    let id = server.start(&operator, GATED).await;
    server.wait_for(&id, &operator, "waiting_approval").await;

    // The first connection reads up to the wait and drops.
    let mut first = SseReader::new(server.send(stream_request(&id, &operator, "", None)).await);
    let seen = read_until(&mut first, "run_waiting").await;
    drop(first);
    let last = seen.last().and_then(|e| e.id.clone()).expect("the wait has an id");

    // The run moves on while nobody listens; the reconnect picks up after it.
    let approved = server.post(&format!("/api/v1/runs/{id}/approve"), &lead, json!({})).await;
    assert_eq!(approved.status, StatusCode::OK, "{}", approved.body);
    let mut second = SseReader::new(server.send(stream_request(&id, &operator, "", Some(&last))).await);
    let mut rest = Vec::new();
    while let Some(event) = second.next().await {
        rest.push(event);
    }
    let from: u64 = last.parse().expect("a number");
    assert_events_then_end(&rest, from + 1, from + rest.len() as u64 - 1, "completed");
    let stored = server.events(&id, &operator).await;
    assert_eq!(
        seen.len() + rest.len(),
        stored.len() + 1,
        "the two connections together hold every event once"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_closing_server_ends_the_open_streams() {
    let (server, operator, _) = server().await;
    let id = server.start(&operator, GATED).await;
    server.wait_for(&id, &operator, "waiting_approval").await;
    let mut reader = SseReader::new(server.send(stream_request(&id, &operator, "", None)).await);
    read_until(&mut reader, "run_waiting").await;
    server.closing.send(true).expect("the router still listens");
    let next = reader.next_within(support::PATIENCE).await.expect("the stream ends in time");
    assert_eq!(next, None, "the stream closed without an `end` (the run did not end)");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_run_feed_sends_a_runs_summary_as_it_changes() {
    let (server, operator, _) = server().await;
    let response = server.send(request(Method::GET, "/api/v1/events/stream", Some(&operator), None)).await;
    assert_eq!(response.status(), StatusCode::OK);
    let mut reader = SseReader::new(response);
    let id = server.start(&operator, HELLO).await;
    let mut statuses = Vec::new();
    loop {
        let event = reader.next().await.expect("the feed stays open");
        assert_eq!(event.event.as_deref(), Some("run"), "{event:?}");
        assert_eq!(event.id, None, "the feed's events have no id: {event:?}");
        let summary = event.json();
        if summary["run_id"] != id.as_str() {
            continue;
        }
        assert_eq!(summary["workflow"], "hello");
        let status = summary["status"].as_str().expect("a status").to_owned();
        let done = status == "completed";
        statuses.push(status);
        if done {
            break;
        }
    }
    assert!(statuses.len() >= 2, "the feed saw the run change, not only its end: {statuses:?}");
}
