//! Browser sessions: a token exchanged for an `HttpOnly` cookie; requests
//! with the cookie act as the token, those that change something only with
//! the session's CSRF token; revoking the token or signing out ends it.

mod support;

use axum::body::Body;
use axum::http::{Method, Request, StatusCode, header};
use cairn_domain::access::Role;
use serde_json::{Value, json};
use support::{Answer, HELLO, Server, read};

/// A request carrying the session `cookie`, and `csrf` in its header when given.
async fn with_cookie(
    server: &Server,
    method: Method,
    uri: &str,
    cookie: &str,
    csrf: Option<&str>,
    body: Option<Value>,
) -> Answer {
    let mut builder = Request::builder().method(method).uri(uri).header(header::COOKIE, cookie);
    if let Some(csrf) = csrf {
        builder = builder.header("x-csrf-token", csrf);
    }
    let body = match body {
        Some(value) => {
            builder = builder.header(header::CONTENT_TYPE, "application/json");
            Body::from(value.to_string())
        }
        None => Body::empty(),
    };
    read(server.send(builder.body(body).expect("a request")).await).await
}

/// Signs in with `secret`: the cookie to send back and the CSRF token.
async fn sign_in(server: &Server, secret: &str) -> (String, String) {
    let answer = server.call(Method::POST, "/api/v1/session", None, Some(json!({"token": secret}))).await;
    assert_eq!(answer.status, StatusCode::CREATED, "{}", answer.body);
    let set = answer.headers.get(header::SET_COOKIE).and_then(|v| v.to_str().ok()).expect("a cookie");
    assert!(set.contains("HttpOnly") && set.contains("SameSite=Strict") && set.contains("Path=/"), "{set}");
    let cookie = set.split(';').next().expect("name=value").to_owned();
    let csrf = answer.body["csrf"].as_str().expect("a CSRF token").to_owned();
    (cookie, csrf)
}

#[tokio::test]
async fn a_session_acts_as_its_token_and_changes_things_only_with_its_csrf_token() {
    let server = Server::on_system_clock();
    let secret = server.token("ana", Role::Operator, &["lead"]).await;
    let (cookie, csrf) = sign_in(&server, &secret).await;

    let who = with_cookie(&server, Method::GET, "/api/v1/session", &cookie, None, None).await;
    assert_eq!(who.status, StatusCode::OK, "{}", who.body);
    assert_eq!(who.body["name"], "ana");
    assert_eq!(who.body["role"], "operator");
    assert_eq!(who.body["gate_roles"], json!(["lead"]));
    assert_eq!(who.body["any_gate_role"], false);
    assert_eq!(who.body["csrf"], csrf.as_str());
    assert!(!who.body.to_string().contains(&secret), "the token never comes back");

    let listed = with_cookie(&server, Method::GET, "/api/v1/runs", &cookie, None, None).await;
    assert_eq!(listed.status, StatusCode::OK, "reading needs no CSRF token");

    let start = json!({"definition": HELLO});
    let refused =
        with_cookie(&server, Method::POST, "/api/v1/runs", &cookie, None, Some(start.clone())).await;
    refused.problem(StatusCode::FORBIDDEN, "forbidden");
    assert!(
        refused.body["detail"]
            .as_str()
            .is_some_and(|d| d.contains("X-CSRF-Token") || d.contains("x-csrf-token"))
    );
    let wrong =
        with_cookie(&server, Method::POST, "/api/v1/runs", &cookie, Some("guess"), Some(start.clone())).await;
    wrong.problem(StatusCode::FORBIDDEN, "forbidden");

    let started = with_cookie(&server, Method::POST, "/api/v1/runs", &cookie, Some(&csrf), Some(start)).await;
    assert_eq!(started.status, StatusCode::CREATED, "{}", started.body);
    let run = started.body["run_id"].as_str().expect("a run id");
    let events = server.events(run, &secret).await;
    assert_eq!(events[0]["actor"], "ana", "what a session does is recorded as its token's name");

    // A bearer token needs no CSRF token: no browser sends it by itself.
    let by_token = server.post("/api/v1/runs", &secret, json!({"definition": HELLO})).await;
    assert_eq!(by_token.status, StatusCode::CREATED, "{}", by_token.body);
}

#[tokio::test]
async fn signing_out_or_revoking_the_token_ends_the_session() {
    let server = Server::on_system_clock();
    let admin = server.token("root", Role::Admin, &[]).await;
    let secret = server.token("bo", Role::Viewer, &[]).await;

    let (cookie, csrf) = sign_in(&server, &secret).await;
    let out = with_cookie(&server, Method::DELETE, "/api/v1/session", &cookie, Some(&csrf), None).await;
    assert_eq!(out.status, StatusCode::NO_CONTENT);
    let cleared = out.headers.get(header::SET_COOKIE).and_then(|v| v.to_str().ok()).unwrap_or_default();
    assert!(cleared.starts_with("cairn_session=;") && cleared.contains("Max-Age=0"), "{cleared}");
    let after = with_cookie(&server, Method::GET, "/api/v1/session", &cookie, None, None).await;
    after.problem(StatusCode::UNAUTHORIZED, "unauthorized");
    assert!(after.body["detail"].as_str().is_some_and(|d| d.contains("sign in again")), "{}", after.body);

    let (cookie, _) = sign_in(&server, &secret).await;
    let revoked = server.call(Method::DELETE, "/api/v1/tokens/bo", Some(&admin), None).await;
    assert_eq!(revoked.status, StatusCode::NO_CONTENT, "{}", revoked.body);
    let after = with_cookie(&server, Method::GET, "/api/v1/runs", &cookie, None, None).await;
    after.problem(StatusCode::UNAUTHORIZED, "unauthorized");
}

#[tokio::test]
async fn a_bad_token_opens_no_session_and_a_made_up_cookie_is_refused() {
    let server = Server::on_system_clock();
    let answer =
        server.call(Method::POST, "/api/v1/session", None, Some(json!({"token": "cairn_nope"}))).await;
    answer.problem(StatusCode::UNAUTHORIZED, "unauthorized");
    assert!(answer.headers.get(header::SET_COOKIE).is_none());
    let missing = server.call(Method::POST, "/api/v1/session", None, Some(json!({}))).await;
    assert_eq!(missing.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", missing.body);

    let made_up =
        with_cookie(&server, Method::GET, "/api/v1/runs", "cairn_session=made-up", None, None).await;
    made_up.problem(StatusCode::UNAUTHORIZED, "unauthorized");
}
