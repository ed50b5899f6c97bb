//! The workflow catalog through the API: definitions registered as
//! versions (the same text once, a version one text, recorded as the
//! token's), listed with their figures, read back by version, and runs
//! started from a registered id; and what a run records of who started
//! it, its priority and its parent, which listings filter on.

mod support;

use axum::http::{StatusCode, header};
use cairn_domain::access::Role;
use serde_json::{Value, json};
use support::{HELLO, Server};

/// `HELLO` as version `v`.
fn hello(v: &str) -> String {
    format!("{HELLO}version: \"{v}\"\n")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn versions_are_registered_once_read_back_and_started_by_id() {
    let server = Server::on_system_clock();
    let operator = server.token("ops", Role::Operator, &[]).await;
    let viewer = server.token("vic", Role::Viewer, &[]).await;

    let added = server.post("/api/v1/workflows", &operator, json!({"definition": hello("1")})).await;
    assert_eq!(added.status, StatusCode::CREATED, "{}", added.body);
    assert_eq!(
        (&added.body["workflow"], &added.body["version"], &added.body["number"], &added.body["added"]),
        (&json!("hello"), &json!("1"), &json!(1), &json!(true))
    );
    assert_eq!(added.body["registered_by"], "ops", "the token's name");
    let location = added.headers.get(header::LOCATION).and_then(|v| v.to_str().ok());
    assert_eq!(location, Some("/api/v1/workflows/hello"));
    let again = server.post("/api/v1/workflows", &operator, json!({"definition": hello("1")})).await;
    assert_eq!(
        (again.status, &again.body["added"], &again.body["number"]),
        (StatusCode::OK, &json!(false), &json!(1))
    );
    let taken =
        server.post("/api/v1/workflows", &operator, json!({"definition": hello("1") + "# changed\n"})).await;
    taken.problem(StatusCode::CONFLICT, "version_taken");
    assert_eq!((&taken.body["workflow"], &taken.body["version"]), (&json!("hello"), &json!("1")));
    let second = server.post("/api/v1/workflows", &operator, json!({"definition": hello("2")})).await;
    assert_eq!((second.status, &second.body["number"]), (StatusCode::CREATED, &json!(2)));
    let invalid =
        server.post("/api/v1/workflows", &operator, json!({"definition": "cairn: 1\nid: x\n"})).await;
    invalid.problem(StatusCode::UNPROCESSABLE_ENTITY, "invalid_definition");
    server
        .post("/api/v1/workflows", &viewer, json!({"definition": hello("3")}))
        .await
        .problem(StatusCode::FORBIDDEN, "forbidden");

    // Started by id: the latest, or the version asked for.
    let latest = server.post("/api/v1/runs", &operator, json!({"workflow": "hello"})).await;
    assert_eq!(latest.status, StatusCode::CREATED, "{}", latest.body);
    assert_eq!(latest.body["version"], "2");
    let first = server.post("/api/v1/runs", &operator, json!({"workflow": "hello", "version": "1"})).await;
    assert_eq!((first.status, &first.body["version"]), (StatusCode::CREATED, &json!("1")));
    for id in [&latest.body["run_id"], &first.body["run_id"]] {
        server.wait_for(id.as_str().expect("an id"), &operator, "completed").await;
    }
    server
        .post("/api/v1/runs", &operator, json!({"workflow": "nope"}))
        .await
        .problem(StatusCode::NOT_FOUND, "not_found");
    let unknown_version =
        server.post("/api/v1/runs", &operator, json!({"workflow": "hello", "version": "7.7"})).await;
    unknown_version.problem(StatusCode::NOT_FOUND, "not_found");
    assert_eq!(unknown_version.body["version"], "7.7");
    for both in [
        json!({"workflow": "hello", "definition": HELLO}),
        json!({}),
        json!({"definition": HELLO, "version": "1"}),
    ] {
        server
            .post("/api/v1/runs", &operator, both)
            .await
            .problem(StatusCode::UNPROCESSABLE_ENTITY, "invalid_request");
    }

    // Listed with its figures; read back by version.
    let catalog = server.get("/api/v1/workflows", &viewer).await;
    assert_eq!(catalog.status, StatusCode::OK, "{}", catalog.body);
    let entry = &catalog.body["workflows"][0];
    assert_eq!((&entry["workflow"], &entry["latest"]["version"]), (&json!("hello"), &json!("2")));
    let stats = &entry["stats"];
    assert_eq!(
        (&stats["runs"], &stats["by_status"], &stats["success_rate"]),
        (&json!(2), &json!({"completed": 2}), &json!(1.0))
    );
    assert!(stats["usage"]["prompt_tokens"].as_u64().is_some_and(|n| n > 0), "the mock's tokens: {stats}");
    let one = server.get("/api/v1/workflows/hello?version=1", &viewer).await;
    assert_eq!(one.status, StatusCode::OK, "{}", one.body);
    assert_eq!(one.body["definition"]["definition"], hello("1"));
    let versions: Vec<&Value> =
        one.body["versions"].as_array().expect("versions").iter().map(|v| &v["version"]).collect();
    assert_eq!(versions, [&json!("1"), &json!("2")]);
    server
        .get("/api/v1/workflows/hello?version=9", &viewer)
        .await
        .problem(StatusCode::NOT_FOUND, "not_found");
    server.get("/api/v1/workflows/nope", &viewer).await.problem(StatusCode::NOT_FOUND, "not_found");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_workflow_only_run_from_text_is_in_the_catalog_without_versions() {
    let server = Server::on_system_clock();
    let operator = server.token("ops", Role::Operator, &[]).await;
    let run = server.start(&operator, HELLO).await;
    server.wait_for(&run, &operator, "completed").await;
    let hello = server.get("/api/v1/workflows/hello", &operator).await;
    assert_eq!(hello.status, StatusCode::OK, "{}", hello.body);
    assert_eq!(
        (&hello.body["latest"], &hello.body["versions"], &hello.body["definition"]),
        (&Value::Null, &json!([]), &Value::Null)
    );
    assert_eq!(hello.body["stats"]["runs"], 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_is_the_tokens_with_its_priority_and_listings_filter_on_them() {
    let server = Server::on_system_clock();
    let operator = server.token("ops", Role::Operator, &[]).await;
    let ci = server.token("ci", Role::Operator, &[]).await;
    let urgent = server.post("/api/v1/runs", &operator, json!({"definition": HELLO, "priority": 9})).await;
    assert_eq!(urgent.status, StatusCode::CREATED, "{}", urgent.body);
    assert_eq!((&urgent.body["triggered_by"], &urgent.body["priority"]), (&json!("ops"), &json!(9)));
    let other = server.start(&ci, HELLO).await;
    let id = urgent.body["run_id"].as_str().expect("an id").to_owned();
    server.wait_for(&id, &operator, "completed").await;
    server.wait_for(&other, &operator, "completed").await;
    let ids = |answer: &support::Answer| -> Vec<String> {
        let runs = answer.body["runs"].as_array().cloned().unwrap_or_default();
        runs.iter().filter_map(|r| r["run_id"].as_str().map(str::to_owned)).collect()
    };
    assert_eq!(ids(&server.get("/api/v1/runs?triggered_by=ci", &operator).await), [other]);
    assert_eq!(ids(&server.get("/api/v1/runs?priority=9", &operator).await), std::slice::from_ref(&id));
    let listed = server.get("/api/v1/runs?priority=9", &operator).await;
    assert_eq!(
        (&listed.body["runs"][0]["triggered_by"], &listed.body["runs"][0]["priority"]),
        (&json!("ops"), &json!(9))
    );

    let checkpoints = server.get(&format!("/api/v1/runs/{id}/checkpoints"), &operator).await;
    let seq = checkpoints.body[0]["seq"].as_u64().expect("a checkpoint");
    let fork = server.post(&format!("/api/v1/runs/{id}/fork"), &ci, json!({"checkpoint": seq})).await;
    assert_eq!(fork.status, StatusCode::CREATED, "{}", fork.body);
    assert_eq!(fork.body["parent"], json!({"run_id": id, "checkpoint": seq}));
    assert_eq!((&fork.body["triggered_by"], &fork.body["priority"]), (&json!("ci"), &json!(9)));
    let forks = server.get(&format!("/api/v1/runs?parent={id}"), &operator).await;
    assert_eq!(ids(&forks), [fork.body["run_id"].as_str().expect("an id").to_owned()]);
    assert_eq!(forks.body["runs"][0]["parent"], json!(id));
    server
        .get("/api/v1/runs?priority=high", &operator)
        .await
        .problem(StatusCode::BAD_REQUEST, "invalid_query");
}

/// Takes webhooks; echoes its input.
const HOOKED: &str = "cairn: 1\nid: hooked\non: { webhook: true }\ninputs:\n  ticket: { type: string }\nsteps:\n  - id: echo\n    set: \"{{ inputs.ticket }}\"\n";

/// A webhook delivery of `body` to `workflow`, signed by `signature`
/// (none: unsigned), with the delivery id `delivery`; no token.
async fn deliver(
    server: &Server,
    workflow: &str,
    body: &Value,
    signature: Option<String>,
    delivery: Option<&str>,
) -> support::Answer {
    let mut call = support::request(
        axum::http::Method::POST,
        &format!("/api/v1/hooks/{workflow}"),
        None,
        Some(body.clone()),
    );
    if let Some(signature) = signature {
        call.headers_mut().insert("x-cairn-signature", signature.parse().expect("a header value"));
    }
    if let Some(delivery) = delivery {
        call.headers_mut().insert("x-cairn-delivery", delivery.parse().expect("a header value"));
    }
    support::read(server.send(call).await).await
}

fn signed(body: &Value) -> Option<String> {
    Some(cairn_app::triggers::signature(support::HOOK_KEY.as_bytes(), body.to_string().as_bytes()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_signed_webhook_delivery_starts_one_run_and_a_replay_answers_it() {
    let server = Server::on_system_clock();
    let operator = server.token("ops", Role::Operator, &[]).await;
    for definition in [HOOKED.to_owned(), HOOKED.replace("id: hooked", "id: unkeyed"), hello("1")] {
        let added = server.post("/api/v1/workflows", &operator, json!({ "definition": definition })).await;
        assert_eq!(added.status, StatusCode::CREATED, "{}", added.body);
    }
    let body = json!({"ticket": "T-1"});
    let first = deliver(&server, "hooked", &body, signed(&body), Some("d-1")).await;
    assert_eq!(first.status, StatusCode::CREATED, "{}", first.body);
    assert_eq!((&first.body["triggered_by"], &first.body["inputs"]), (&json!("webhook"), &body));
    let run = first.body["run_id"].as_str().expect("a run").to_owned();
    let replay = deliver(&server, "hooked", &body, signed(&body), Some("d-1")).await;
    assert_eq!(
        (replay.status, &replay.body["run_id"]),
        (StatusCode::OK, &json!(run)),
        "a replay starts nothing"
    );
    let done = server.wait_for(&run, &operator, "completed").await;
    assert_eq!(done["steps"][0]["output"], "T-1");

    let other = json!({"ticket": "T-2"});
    let refusals = [
        (
            deliver(&server, "hooked", &body, None, Some("d-2")).await,
            StatusCode::UNAUTHORIZED,
            "bad_signature",
        ),
        (
            deliver(&server, "hooked", &other, signed(&body), Some("d-2")).await,
            StatusCode::UNAUTHORIZED,
            "bad_signature",
        ),
        (
            deliver(&server, "hooked", &body, signed(&body), None).await,
            StatusCode::BAD_REQUEST,
            "bad_request",
        ),
        (
            deliver(&server, "hooked", &other, signed(&other), Some("d-1")).await,
            StatusCode::UNPROCESSABLE_ENTITY,
            "idempotency_key_reused",
        ),
        (
            deliver(&server, "hello", &body, signed(&body), Some("d-3")).await,
            StatusCode::NOT_FOUND,
            "not_found",
        ),
        (
            deliver(&server, "nobody", &body, signed(&body), Some("d-3")).await,
            StatusCode::NOT_FOUND,
            "not_found",
        ),
        (
            deliver(&server, "unkeyed", &body, signed(&body), Some("d-3")).await,
            StatusCode::SERVICE_UNAVAILABLE,
            "no_hook_key",
        ),
        (
            deliver(&server, "hooked", &json!({"tikcet": 1}), signed(&json!({"tikcet": 1})), Some("d-4"))
                .await,
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_inputs",
        ),
    ];
    for (i, (answer, status, code)) in refusals.iter().enumerate() {
        assert_eq!(
            (answer.status, answer.body["code"].as_str()),
            (*status, Some(*code)),
            "refusal {i}: {}",
            answer.body
        );
    }
    let runs = server.get("/api/v1/runs?workflow=hooked", &operator).await;
    assert_eq!(runs.body["runs"].as_array().map(Vec::len), Some(1), "only the first delivery started a run");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn search_answers_hits_with_snippets_and_refuses_what_it_cannot_read() {
    let server = Server::on_system_clock();
    let viewer = server.token("vic", Role::Viewer, &[]).await;
    let operator = server.token("ops", Role::Operator, &[]).await;
    let run = server.start(&operator, HELLO).await;
    server.wait_for(&run, &operator, "completed").await;

    let found = server.get("/api/v1/search?q=hello%20rivers", &viewer).await;
    assert_eq!(found.status, StatusCode::OK, "{}", found.body);
    let hits = found.body["hits"].as_array().expect("hits");
    let kinds: Vec<&str> = hits.iter().filter_map(|h| h["kind"].as_str()).collect();
    assert_eq!(kinds, ["workflow", "run"], "{hits:?}");
    assert_eq!(hits[1]["id"], run.as_str());
    assert_eq!(hits[1]["run"]["status"], "completed");
    assert!(hits[0]["run"].is_null());
    let runs_only =
        server.get("/api/v1/search?q=hello%20rivers&kind=run&limit=1&workflow=hello", &viewer).await;
    assert_eq!(runs_only.body["hits"].as_array().map(Vec::len), Some(1), "{}", runs_only.body);

    for (query, code) in [
        ("", "invalid_query"),
        ("?q=%20", "blank_query"),
        ("?q=x&kind=job", "invalid_query"),
        ("?q=x&limit=0", "invalid_query"),
        ("?q=x&limit=1001", "invalid_query"),
        ("?q=x&limit=many", "invalid_query"),
        ("?q=x&workflow=Not%20An%20Id", "invalid_query"),
    ] {
        let refused = server.get(&format!("/api/v1/search{query}"), &viewer).await;
        refused.problem(StatusCode::BAD_REQUEST, code);
    }
}
