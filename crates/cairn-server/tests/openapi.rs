//! The OpenAPI document: the committed `docs/openapi.json` is the one the
//! handlers generate (regenerate it with `CAIRN_BLESS=1 cargo test -p
//! cairn-server --test openapi`), and it has one operation for each row
//! of `ROUTES`, no more, no less; the server answers it to anyone.

mod support;

use std::collections::BTreeSet;
use std::path::PathBuf;

use axum::http::{Method, StatusCode};
use serde_json::Value;
use support::Server;

/// Where the committed document lives.
fn committed_path() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../docs/openapi.json")
}

/// The generated document as the committed file spells it: pretty, with a
/// trailing newline.
fn generated_text() -> String {
    let doc = cairn_server::openapi();
    let mut text = serde_json::to_string_pretty(&doc).unwrap_or_default();
    text.push('\n');
    text
}

#[test]
fn the_committed_document_is_the_generated_one() {
    let path = committed_path();
    let generated = generated_text();
    if std::env::var_os("CAIRN_BLESS").is_some_and(|v| v == "1") {
        std::fs::write(&path, &generated).unwrap_or_else(|e| panic!("writing {}: {e}", path.display()));
        return;
    }
    let committed = std::fs::read_to_string(&path).unwrap_or_default();
    if committed != generated {
        let line = committed
            .lines()
            .zip(generated.lines())
            .position(|(a, b)| a != b)
            .map_or_else(|| committed.lines().count().min(generated.lines().count()) + 1, |i| i + 1);
        panic!(
            "docs/openapi.json differs from the document the handlers generate (first at line {line}).\n\
             Regenerate it with: CAIRN_BLESS=1 cargo test -p cairn-server --test openapi"
        );
    }
}

#[test]
fn every_route_has_an_operation_and_every_operation_a_route() {
    let doc = cairn_server::openapi();
    let Some(paths) = doc["paths"].as_object() else {
        panic!("the document has no paths: {doc}");
    };
    let documented: BTreeSet<(String, String)> = paths
        .iter()
        .flat_map(|(path, item)| {
            let methods = item.as_object().map(|m| m.keys().cloned().collect::<Vec<_>>()).unwrap_or_default();
            methods
                .into_iter()
                .filter(|m| {
                    ["get", "put", "post", "delete", "patch", "head", "options", "trace"]
                        .contains(&m.as_str())
                })
                .map(move |m| (m.to_uppercase(), path.clone()))
        })
        .collect();
    // axum's `{id}` and OpenAPI's `{id}` are the same syntax.
    let routed: BTreeSet<(String, String)> =
        cairn_server::ROUTES.iter().map(|r| (r.method.as_str().to_owned(), r.path.to_owned())).collect();
    let undocumented: Vec<_> = routed.difference(&documented).collect();
    let unrouted: Vec<_> = documented.difference(&routed).collect();
    assert!(undocumented.is_empty(), "routes without an operation in the document: {undocumented:?}");
    assert!(unrouted.is_empty(), "operations in the document without a route: {unrouted:?}");
    assert_eq!(routed.len(), cairn_server::ROUTES.len(), "a route is listed twice");
}

#[test]
fn every_guarded_operation_needs_the_bearer_token_and_public_ones_none() {
    let doc = cairn_server::openapi();
    assert_eq!(doc["components"]["securitySchemes"]["bearer"]["type"], "http");
    assert_eq!(doc["components"]["securitySchemes"]["bearer"]["scheme"], "bearer");
    for route in cairn_server::ROUTES {
        let operation = &doc["paths"][route.path][route.method.as_str().to_lowercase()];
        let security = &operation["security"];
        if route.need == cairn_server::access::Need::Anyone {
            assert!(
                security.is_null(),
                "{} {} needs nothing, yet names {security}",
                route.method,
                route.path
            );
        } else {
            assert_eq!(
                security,
                &serde_json::json!([{"bearer": []}, {"session": []}]),
                "{} {} must name the bearer scheme, and the session cookie instead",
                route.method,
                route.path
            );
        }
        let responses = operation["responses"].as_object().map(|r| r.len()).unwrap_or(0);
        assert!(responses > 0, "{} {} lists no responses", route.method, route.path);
    }
}

#[test]
fn the_document_is_openapi_3_1() {
    let doc = cairn_server::openapi();
    assert!(doc["openapi"].as_str().is_some_and(|v| v.starts_with("3.1.")), "{}", doc["openapi"]);
    let start = &doc["components"]["schemas"]["StartBody"];
    for field in ["definition", "name", "files", "workflow", "version", "inputs", "run_id"] {
        assert!(!start["properties"][field].is_null(), "StartBody lacks `{field}`: {start}");
    }
    // A definition's text or a registered workflow: neither is required alone.
    assert!(start["required"].as_array().is_none_or(Vec::is_empty), "{start}");
    assert!(!doc["components"]["schemas"]["DecideBody"]["properties"]["as"].is_null());
    assert_eq!(doc["components"]["schemas"]["Event"]["additionalProperties"], Value::Bool(true));
}

#[tokio::test]
async fn the_server_answers_the_document_to_anyone() {
    let server = Server::on_system_clock();
    let answer = server.call(Method::GET, "/api/v1/openapi.json", None, None).await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.body);
    assert!(answer.content_type().starts_with("application/json"), "{}", answer.content_type());
    assert_eq!(answer.body, cairn_server::openapi());
}
