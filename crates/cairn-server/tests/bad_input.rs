//! What the API answers to input it cannot take: every refusal is a
//! problem document (`application/problem+json` with `type`, `title`,
//! `status`, `detail` and `code`) with the status `spec/api.md` gives, and
//! none is a `500`. And how definitions are checked: located problems for
//! a broken one, a plan for a good one.

mod support;

use axum::body::Body;
use axum::http::{Method, Request, StatusCode, header};
use cairn_domain::access::Role;
use cairn_server::MAX_BODY_BYTES;
use serde_json::{Value, json};
use support::{HELLO, Server, read};

/// A definition with problems the validator places: an agent nobody
/// declared (line 6), and a step id used twice.
const BROKEN: &str = r#"cairn: 1
id: broken
agents:
  w: { system: You write. }
steps:
  - id: draft
    agent: nobody
    prompt: "Write it."
  - id: draft
    set: "again"
"#;

/// A server and an operator's token.
async fn server() -> (Server, String) {
    let server = Server::on_system_clock();
    let operator = server.token("ops", Role::Operator, &[]).await;
    (server, operator)
}

/// A request as `token` with `body` sent as raw bytes with `content_type`.
fn raw(
    method: Method,
    uri: &str,
    token: &str,
    content_type: Option<&str>,
    body: impl Into<Body>,
) -> Request<Body> {
    let mut builder =
        Request::builder().method(method).uri(uri).header(header::AUTHORIZATION, format!("Bearer {token}"));
    if let Some(content_type) = content_type {
        builder = builder.header(header::CONTENT_TYPE, content_type);
    }
    builder.body(body.into()).expect("a well-formed request")
}

/// The endpoints that take a JSON body, with a valid path.
fn bodied(run: &str) -> Vec<(Method, String)> {
    vec![
        (Method::POST, "/api/v1/workflows/validate".into()),
        (Method::POST, "/api/v1/runs".into()),
        (Method::POST, format!("/api/v1/runs/{run}/approve")),
        (Method::POST, format!("/api/v1/runs/{run}/answer")),
        (Method::POST, format!("/api/v1/runs/{run}/fork")),
        (Method::POST, "/api/v1/tokens".into()),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_json_is_a_400_on_every_endpoint_that_takes_a_body() {
    let server = Server::on_system_clock();
    let admin = server.token("root", Role::Admin, &["lead"]).await;
    let run = server.start(&admin, HELLO).await;
    for (method, uri) in bodied(&run) {
        // Each breaks before any key, so no endpoint can see a field first.
        for text in ["{", "not json at all", "{,}", r#"{""#, r#"{"definition"#] {
            let answer =
                read(server.send(raw(method.clone(), &uri, &admin, Some("application/json"), text)).await)
                    .await;
            assert_eq!(
                answer.status,
                StatusCode::BAD_REQUEST,
                "{method} {uri} with {text:?}: {}",
                answer.body
            );
            answer.problem(StatusCode::BAD_REQUEST, "malformed_json");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_fields_are_refused_on_every_endpoint_that_takes_a_body() {
    let server = Server::on_system_clock();
    let admin = server.token("root", Role::Admin, &["lead"]).await;
    let run = server.start(&admin, HELLO).await;
    let bodies = [
        json!({"definition": HELLO, "defintion_typo": 1}),
        json!({"definition": HELLO, "inputs": {}, "runid": "x"}),
        json!({"gate": "sign_off", "approve": true}),
        json!({"text": "blue", "txt": "blue"}),
        json!({"checkpoint": 1, "from": "here"}),
        json!({"name": "t", "rol": "admin"}),
    ];
    let uris = bodied(&run);
    assert_eq!(bodies.len(), uris.len(), "a body for each endpoint");
    for (body, (method, uri)) in bodies.iter().zip(uris) {
        let answer = server.call(method.clone(), &uri, Some(&admin), Some(body.clone())).await;
        assert!(
            matches!(answer.status, StatusCode::BAD_REQUEST | StatusCode::UNPROCESSABLE_ENTITY),
            "{method} {uri} with an unknown field answers {}: {}",
            answer.status,
            answer.body
        );
        support::assert_problem_shape(&answer);
        let detail = answer.body["detail"].as_str().unwrap_or_default();
        assert!(detail.contains("unknown field"), "the detail names the unknown field: {detail}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_types_are_a_422() {
    let (server, operator) = server().await;
    for body in [
        json!({"definition": 42}),
        json!({"definition": HELLO, "inputs": "topic=rivers"}),
        json!({"definition": HELLO, "run_id": 7}),
        json!(["definition", HELLO]),
    ] {
        let answer = server.post("/api/v1/runs", &operator, body.clone()).await;
        answer.problem(StatusCode::UNPROCESSABLE_ENTITY, "invalid_body");
    }
    let answer = server.post("/api/v1/workflows/validate", &operator, json!({"definition": true})).await;
    answer.problem(StatusCode::UNPROCESSABLE_ENTITY, "invalid_body");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_that_is_not_json_by_its_type_is_a_415() {
    let (server, operator) = server().await;
    let body = json!({"definition": HELLO}).to_string();
    for content_type in [None, Some("text/plain")] {
        let request = raw(Method::POST, "/api/v1/runs", &operator, content_type, body.clone());
        read(server.send(request).await)
            .await
            .problem(StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupported_media_type");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_over_the_limit_is_a_413_and_one_at_the_limit_is_read() {
    let (server, operator) = server().await;
    let head = r#"{"definition": ""#;
    let tail = r#""}"#;
    let filler = |total: usize| "a".repeat(total - head.len() - tail.len());

    let over = format!("{head}{}{tail}", filler(MAX_BODY_BYTES + 1));
    assert_eq!(over.len(), MAX_BODY_BYTES + 1);
    let request = raw(Method::POST, "/api/v1/runs", &operator, Some("application/json"), over);
    read(server.send(request).await).await.problem(StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large");

    // At the limit the body is read: the definition in it is refused for
    // its own size, as a definition problem.
    let at = format!("{head}{}{tail}", filler(MAX_BODY_BYTES));
    let request = raw(Method::POST, "/api/v1/runs", &operator, Some("application/json"), at);
    let answer = read(server.send(request).await).await;
    let body = answer.problem(StatusCode::UNPROCESSABLE_ENTITY, "invalid_definition");
    assert_eq!(body["problems"][0]["rule"], "limit", "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unknown_run_is_a_404_on_every_route_of_a_run() {
    let server = Server::on_system_clock();
    let admin = server.token("root", Role::Admin, &["lead"]).await;
    let mut seen = 0;
    for route in cairn_server::ROUTES.iter().filter(|r| r.path.contains("{id}")) {
        let uri = route.path.replace("{id}", "no-such-run");
        let body = match route.endpoint {
            cairn_server::Endpoint::Fork => Some(json!({"checkpoint": 1})),
            cairn_server::Endpoint::Answer => Some(json!({"text": "blue"})),
            cairn_server::Endpoint::Approve | cairn_server::Endpoint::Reject => Some(json!({})),
            _ => None,
        };
        let answer = server.call(route.method.clone(), &uri, Some(&admin), body).await;
        assert_eq!(answer.status, StatusCode::NOT_FOUND, "{} {uri}: {}", route.method, answer.body);
        answer.problem(StatusCode::NOT_FOUND, "not_found");
        seen += 1;
    }
    assert!(seen >= 10, "every route of a run is tried ({seen})");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ids_that_try_to_leave_their_place_are_refused_never_a_500() {
    let server = Server::on_system_clock();
    let admin = server.token("root", Role::Admin, &["lead"]).await;
    let ids = ["..%2F..%2Fetc", "a%2Fb", "..", "%2E%2E", "a%00b", "%2Fetc%2Fpasswd", "a%5Cb", "%E2%80%AE"];
    let mut uris = Vec::new();
    for id in ids {
        uris.push((Method::GET, format!("/api/v1/runs/{id}")));
        uris.push((Method::GET, format!("/api/v1/runs/{id}/events")));
        uris.push((Method::GET, format!("/api/v1/runs/{id}/events/stream")));
        uris.push((Method::POST, format!("/api/v1/runs/{id}/cancel")));
        uris.push((Method::DELETE, format!("/api/v1/tokens/{id}")));
    }
    uris.push((Method::GET, "/api/v1/runs/../../etc/passwd".into()));
    uris.push((Method::GET, "/api/v1/../v1/runs".into()));
    for (method, uri) in uris {
        let answer = server.call(method.clone(), &uri, Some(&admin), None).await;
        assert!(
            matches!(answer.status, StatusCode::NOT_FOUND | StatusCode::BAD_REQUEST),
            "{method} {uri} answers {}: {}",
            answer.status,
            answer.body
        );
        support::assert_problem_shape(&answer);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_in_the_query_string_is_refused_even_where_none_is_needed() {
    let (server, operator) = server().await;
    for uri in [
        format!("/api/v1/runs?token={operator}"),
        format!("/api/v1/runs?limit=1&access_token={operator}"),
        format!("/api/v1/health?api_key={operator}"),
    ] {
        // With the header too: the secret in the URL is refused, not used.
        let answer = server.get(&uri, &operator).await;
        answer.problem(StatusCode::BAD_REQUEST, "bad_request");
        let anonymous = server.call(Method::GET, &uri, None, None).await;
        anonymous.problem(StatusCode::BAD_REQUEST, "bad_request");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_query_values_are_a_400() {
    let (server, operator) = server().await;
    for uri in [
        "/api/v1/runs?limit=many",
        "/api/v1/runs?status=sleeping",
        "/api/v1/runs?cursor=not-a-cursor",
        "/api/v1/runs?workflow=Not%20An%20Id",
        "/api/v1/runs/some-run/events?after=-1",
    ] {
        let answer = server.get(uri, &operator).await;
        assert_eq!(answer.status, StatusCode::BAD_REQUEST, "{uri}: {}", answer.body);
        answer.problem(StatusCode::BAD_REQUEST, "invalid_query");
    }
}

/// Asserts every problem of a definition is placed: a line and column
/// (from 1), a rule and a message.
#[track_caller]
fn assert_located(problems: &Value) {
    let list = problems.as_array().expect("problems are a list");
    assert!(!list.is_empty(), "a broken definition has problems");
    for p in list {
        assert!(p["line"].as_u64().is_some_and(|l| l >= 1), "a line: {p}");
        assert!(p["column"].as_u64().is_some_and(|c| c >= 1), "a column: {p}");
        assert!(p["rule"].as_str().is_some_and(|r| !r.is_empty()), "a rule: {p}");
        assert!(p["message"].as_str().is_some_and(|m| !m.is_empty()), "a message: {p}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_invalid_definition_is_a_422_with_located_problems_and_starts_nothing() {
    let (server, operator) = server().await;
    let answer = server.post("/api/v1/runs", &operator, json!({"definition": BROKEN})).await;
    let body = answer.problem(StatusCode::UNPROCESSABLE_ENTITY, "invalid_definition");
    assert_located(&body["problems"]);
    let lines: Vec<u64> =
        body["problems"].as_array().into_iter().flatten().filter_map(|p| p["line"].as_u64()).collect();
    assert!(lines.contains(&7), "the unknown agent is placed on its line (7): {body}");

    let not_yaml = server.post("/api/v1/runs", &operator, json!({"definition": "steps: [unclosed"})).await;
    not_yaml.problem(StatusCode::UNPROCESSABLE_ENTITY, "invalid_definition");

    let listed = server.get("/api/v1/runs", &operator).await;
    assert_eq!(listed.body["runs"], json!([]), "no run was made");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_inputs_are_a_422() {
    let (server, operator) = server().await;
    let answer = server
        .post("/api/v1/runs", &operator, json!({"definition": HELLO, "inputs": {"topic": ["a", "list"]}}))
        .await;
    answer.problem(StatusCode::UNPROCESSABLE_ENTITY, "invalid_inputs");
    let answer = server
        .post("/api/v1/runs", &operator, json!({"definition": HELLO, "inputs": {"undeclared": "x"}}))
        .await;
    answer.problem(StatusCode::UNPROCESSABLE_ENTITY, "invalid_inputs");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn validate_places_the_problems_of_a_broken_definition_and_plans_a_good_one() {
    let (server, viewer) = {
        let server = Server::on_system_clock();
        let viewer = server.token("eyes", Role::Viewer, &[]).await;
        (server, viewer)
    };
    let broken = server.post("/api/v1/workflows/validate", &viewer, json!({"definition": BROKEN})).await;
    assert_eq!(broken.status, StatusCode::OK, "{}", broken.body);
    assert_eq!(broken.body["valid"], false);
    assert_located(&broken.body["problems"]);
    assert_eq!(broken.body["plan"], Value::Null);

    let good = server.post("/api/v1/workflows/validate", &viewer, json!({"definition": HELLO})).await;
    assert_eq!(good.status, StatusCode::OK, "{}", good.body);
    assert_eq!(good.body["valid"], true);
    assert_eq!(good.body["problems"], json!([]));
    assert_eq!(good.body["plan"]["levels"], json!([["draft"], ["publish"]]), "{}", good.body);

    let as_json = json!({"cairn": 1, "id": "j", "steps": [{"id": "only", "set": "x"}]}).to_string();
    let good = server
        .post("/api/v1/workflows/validate", &viewer, json!({"definition": as_json, "name": "j.json"}))
        .await;
    assert_eq!(good.body["valid"], true, "{}", good.body);
    assert_eq!(good.body["plan"]["levels"], json!([["only"]]), "{}", good.body);
}

/// A path that exists, with a method it does not take: a problem
/// document too (every error is one), never an empty body.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_method_a_path_does_not_take_is_a_405_problem() {
    let (server, operator) = server().await;
    for (method, uri) in
        [(Method::POST, "/api/v1/health"), (Method::DELETE, "/api/v1/runs"), (Method::PUT, "/api/v1/tokens")]
    {
        let answer = server.call(method.clone(), uri, Some(&operator), None).await;
        assert_eq!(answer.status, StatusCode::METHOD_NOT_ALLOWED, "{method} {uri}: {}", answer.body);
        support::assert_problem_shape(&answer);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unknown_path_is_a_404_problem() {
    let (server, operator) = server().await;
    for uri in ["/api/v1/nothing", "/api/v2/runs", "/api/v1/runs/x/y/z"] {
        server.get(uri, &operator).await.problem(StatusCode::NOT_FOUND, "not_found");
    }
}
