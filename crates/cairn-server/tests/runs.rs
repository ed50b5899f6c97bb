//! Runs through the API: started, driven to the end in the background,
//! listed a page at a time, their events paged, checkpointed and forked;
//! starts made safe to retry with `Idempotency-Key`; and gates decided
//! only by a token with the gate's role, recorded under the token's name.

mod support;

use std::collections::BTreeSet;

use axum::http::{Method, StatusCode, header};
use cairn_domain::access::Role;
use serde_json::{Value, json};
use support::{GATED, HELLO, Server, read, request};

/// A server and an operator's token.
async fn server() -> (Server, String) {
    let server = Server::on_system_clock();
    let operator = server.token("ops", Role::Operator, &[]).await;
    (server, operator)
}

/// `POST /runs` with an `Idempotency-Key`.
async fn start_with_key(server: &Server, token: &str, key: &str, body: Value) -> support::Answer {
    let mut call = request(Method::POST, "/api/v1/runs", Some(token), Some(body));
    call.headers_mut().insert("idempotency-key", key.parse().expect("a header value"));
    read(server.send(call).await).await
}

/// The ids `GET /runs` lists (one page of at most 500).
async fn listed(server: &Server, token: &str, query: &str) -> Vec<String> {
    let answer = server.get(&format!("/api/v1/runs?limit=500{query}"), token).await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.body);
    answer.body["runs"]
        .as_array()
        .expect("a list of runs")
        .iter()
        .map(|r| r["run_id"].as_str().expect("each has its id").to_owned())
        .collect()
}

/// The events of `run` of type `kind`.
async fn events_of(server: &Server, run: &str, token: &str, kind: &str) -> Vec<Value> {
    server.events(run, token).await.into_iter().filter(|e| e["type"] == kind).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_started_run_is_created_located_and_driven_to_completion_with_its_inputs() {
    let (server, operator) = server().await;
    let answer = server
        .post("/api/v1/runs", &operator, json!({"definition": HELLO, "inputs": {"topic": "lakes"}}))
        .await;
    assert_eq!(answer.status, StatusCode::CREATED, "{}", answer.body);
    let id = answer.body["run_id"].as_str().expect("the run JSON has its id").to_owned();
    assert_eq!(answer.body["workflow"], "hello");
    let location = answer.headers.get(header::LOCATION).and_then(|v| v.to_str().ok()).expect("a Location");
    assert_eq!(location, format!("/api/v1/runs/{id}"));

    let run = server.wait_for(&id, &operator, "completed").await;
    let steps = run["steps"].as_array().expect("the run's steps");
    let output = |step: &str| steps.iter().find(|s| s["id"] == step).map(|s| s["output"].clone());
    let draft = output("draft").expect("the draft step");
    assert!(
        draft.as_str().is_some_and(|t| t.contains("Write about lakes.")),
        "the mock saw the input: {draft}"
    );
    assert_eq!(output("publish"), Some(draft), "the last step read the first one's output");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_repeated_idempotency_key_answers_the_first_run_and_makes_no_second() {
    let (server, operator) = server().await;
    let body = json!({"definition": HELLO, "inputs": {"topic": "lakes"}});
    let first = start_with_key(&server, &operator, "order-42", body.clone()).await;
    assert_eq!(first.status, StatusCode::CREATED, "{}", first.body);
    let id = first.body["run_id"].as_str().expect("an id").to_owned();

    let again = start_with_key(&server, &operator, "order-42", body.clone()).await;
    assert_eq!(again.status, StatusCode::OK, "a repeat answers the first run: {}", again.body);
    assert_eq!(again.body["run_id"], id.as_str());
    assert_eq!(listed(&server, &operator, "").await, vec![id.clone()], "one run, not two");

    let other_inputs = json!({"definition": HELLO, "inputs": {"topic": "seas"}});
    start_with_key(&server, &operator, "order-42", other_inputs)
        .await
        .problem(StatusCode::UNPROCESSABLE_ENTITY, "idempotency_key_reused");
    let other_definition = json!({"definition": GATED});
    start_with_key(&server, &operator, "order-42", other_definition)
        .await
        .problem(StatusCode::UNPROCESSABLE_ENTITY, "idempotency_key_reused");
    assert_eq!(listed(&server, &operator, "").await, vec![id.clone()], "refused repeats make no run");

    let other_key = start_with_key(&server, &operator, "order-43", body).await;
    assert_eq!(other_key.status, StatusCode::CREATED, "another key is another run: {}", other_key.body);
    assert_ne!(other_key.body["run_id"], id.as_str());
    server.wait_for(&id, &operator, "completed").await;
}

/// A repeat that leaves out an input the first request gave is another
/// request (it would run with the default), not the same one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_repeat_that_leaves_out_inputs_is_not_the_same_request() {
    let (server, operator) = server().await;
    let first =
        start_with_key(&server, &operator, "k", json!({"definition": HELLO, "inputs": {"topic": "lakes"}}))
            .await;
    assert_eq!(first.status, StatusCode::CREATED, "{}", first.body);
    start_with_key(&server, &operator, "k", json!({"definition": HELLO}))
        .await
        .problem(StatusCode::UNPROCESSABLE_ENTITY, "idempotency_key_reused");
}

/// A repeat of the very same body is the same request, even when an input
/// is written as a number where the workflow takes text (the run keeps it
/// as text).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_repeat_of_the_same_body_is_the_same_request_whatever_the_inputs_types() {
    let (server, operator) = server().await;
    let body = json!({"definition": HELLO, "inputs": {"topic": 12}});
    let first = start_with_key(&server, &operator, "k", body.clone()).await;
    assert_eq!(first.status, StatusCode::CREATED, "{}", first.body);
    let again = start_with_key(&server, &operator, "k", body).await;
    assert_eq!(again.status, StatusCode::OK, "{}", again.body);
    assert_eq!(again.body["run_id"], first.body["run_id"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn labels_given_at_start_are_kept_listed_and_filtered_on_and_bad_ones_refused() {
    let (server, operator) = server().await;
    let labelled = HELLO.replace("id: hello\n", "id: hello\nlabels: { team: docs }\n");
    let start = |labels: Value| json!({"definition": labelled, "labels": labels});
    let first = server.post("/api/v1/runs", &operator, start(json!({"pr": "7"}))).await;
    assert_eq!(first.status, StatusCode::CREATED, "{}", first.body);
    assert_eq!(first.body["labels"], json!({"pr": "7", "team": "docs"}));
    let second = server.post("/api/v1/runs", &operator, start(json!({"team": "search"}))).await;
    assert_eq!(second.body["labels"], json!({"team": "search"}), "given over the definition's");
    let (first, second) =
        (first.body["run_id"].as_str().expect("an id"), second.body["run_id"].as_str().expect("an id"));
    assert_eq!(listed(&server, &operator, "&label=pr%3D7").await, [first]);
    assert_eq!(listed(&server, &operator, "&label=team=search").await, [second]);
    assert_eq!(listed(&server, &operator, "&label=team=docs&label=pr=7").await, [first]);
    assert_eq!(listed(&server, &operator, "&label=team=docs&label=pr=8").await, Vec::<String>::new());
    let page = server.get("/api/v1/runs?label=pr=7", &operator).await;
    assert_eq!(page.body["runs"][0]["labels"], json!({"pr": "7", "team": "docs"}));

    for (labels, says) in [
        (json!({"has space": "x"}), "`has space` is not a valid label key"),
        (json!({"k": "a\u{7}b"}), "the value of label `k`"),
        (json!({"k": 1}), "invalid type"),
    ] {
        let refused = server.post("/api/v1/runs", &operator, start(labels.clone())).await;
        assert!(refused.status.is_client_error(), "{labels}: {}", refused.body);
        assert!(
            refused.body["detail"].as_str().is_some_and(|d| d.contains(says)),
            "{labels}: {}",
            refused.body
        );
    }
    let many: serde_json::Map<String, Value> = (0..40).map(|i| (format!("k{i}"), json!("v"))).collect();
    server
        .post("/api/v1/runs", &operator, start(Value::Object(many)))
        .await
        .problem(StatusCode::UNPROCESSABLE_ENTITY, "invalid_labels");
    for bad in ["label=nope", "label=a%20b%3Dc"] {
        server
            .get(&format!("/api/v1/runs?{bad}"), &operator)
            .await
            .problem(StatusCode::BAD_REQUEST, "invalid_query");
    }
    assert_eq!(listed(&server, &operator, "").await.len(), 2, "refused starts make no run");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_explicit_run_id_is_used_once_and_a_second_use_is_a_409() {
    let (server, operator) = server().await;
    let first =
        server.post("/api/v1/runs", &operator, json!({"definition": HELLO, "run_id": "nightly-1"})).await;
    assert_eq!(first.status, StatusCode::CREATED, "{}", first.body);
    assert_eq!(first.body["run_id"], "nightly-1");
    let again =
        server.post("/api/v1/runs", &operator, json!({"definition": HELLO, "run_id": "nightly-1"})).await;
    again.problem(StatusCode::CONFLICT, "conflict");
    let bad =
        server.post("/api/v1/runs", &operator, json!({"definition": HELLO, "run_id": "../escape"})).await;
    assert!(
        matches!(bad.status, StatusCode::BAD_REQUEST | StatusCode::UNPROCESSABLE_ENTITY),
        "an id that is not one is refused: {} {}",
        bad.status,
        bad.body
    );
    support::assert_problem_shape(&bad);
    assert_eq!(listed(&server, &operator, "").await, vec!["nightly-1".to_owned()]);
}

/// Every run id the API accepts is one its routes reach, including ids
/// that are also words of other paths (`prune`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_whose_id_is_a_word_of_another_path_is_still_reachable() {
    let (server, operator) = server().await;
    let made = server.post("/api/v1/runs", &operator, json!({"definition": HELLO, "run_id": "prune"})).await;
    assert_eq!(made.status, StatusCode::CREATED, "{}", made.body);
    let got = server.get("/api/v1/runs/prune", &operator).await;
    assert_eq!(got.status, StatusCode::OK, "GET /api/v1/runs/prune: {}", got.body);
    assert_eq!(got.body["run_id"], "prune");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runs_are_listed_a_page_at_a_time_newest_first_and_filtered() {
    let (server, operator) = server().await;
    let mut started = Vec::new();
    for _ in 0..3 {
        started.push(server.start(&operator, HELLO).await);
        // Apart in time, so newest first is an order the test knows.
        tokio::time::sleep(std::time::Duration::from_millis(3)).await;
    }
    let gated = server.start(&operator, GATED).await;
    started.push(gated.clone());

    let mut pages = Vec::new();
    let mut uri = "/api/v1/runs?limit=1".to_owned();
    loop {
        let page = server.get(&uri, &operator).await;
        assert_eq!(page.status, StatusCode::OK, "{}", page.body);
        let runs = page.body["runs"].as_array().expect("a list").clone();
        assert_eq!(runs.len(), 1, "one run a page: {}", page.body);
        pages.push(runs[0]["run_id"].as_str().expect("an id").to_owned());
        match page.body["next_cursor"].as_str() {
            Some(cursor) => uri = format!("/api/v1/runs?limit=1&cursor={cursor}"),
            None => break,
        }
        assert!(pages.len() <= started.len(), "the pages end: {pages:?}");
    }
    let newest_first: Vec<String> = started.iter().rev().cloned().collect();
    assert_eq!(pages, newest_first, "every run once, newest first");

    let two = server.get("/api/v1/runs?limit=2", &operator).await;
    assert_eq!(two.body["runs"].as_array().map(Vec::len), Some(2));
    let all = server.get("/api/v1/runs", &operator).await;
    assert_eq!(all.body["next_cursor"], Value::Null, "no next page when all fit");

    server.wait_for(&gated, &operator, "waiting_approval").await;
    assert_eq!(listed(&server, &operator, "&workflow=gated").await, vec![gated.clone()]);
    assert_eq!(listed(&server, &operator, "&status=waiting_approval").await, vec![gated]);
    for id in &started[..3] {
        server.wait_for(id, &operator, "completed").await;
    }
    let completed: BTreeSet<String> =
        listed(&server, &operator, "&status=completed").await.into_iter().collect();
    assert_eq!(completed, started[..3].iter().cloned().collect());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_are_paged_after_a_sequence_number_with_none_missing() {
    let (server, operator) = server().await;
    let id = server.start(&operator, HELLO).await;
    server.wait_for(&id, &operator, "completed").await;
    let all = server.events(&id, &operator).await;
    assert!(all.len() >= 5, "a run of two steps has events: {all:?}");
    for (i, event) in all.iter().enumerate() {
        assert_eq!(event["seq"].as_u64(), Some(i as u64 + 1), "numbered from 1 without gaps");
        for key in ["at", "actor", "type"] {
            assert!(event[key].is_string(), "`{key}` in {event}");
        }
    }
    assert_eq!(all[0]["type"], "run_created");
    assert_eq!(all.last().map(|e| e["type"].clone()), Some(json!("run_completed")));

    let mut paged = Vec::new();
    let mut after = 0;
    loop {
        let page = server.get(&format!("/api/v1/runs/{id}/events?after={after}&limit=2"), &operator).await;
        assert_eq!(page.status, StatusCode::OK, "{}", page.body);
        let events = page.body["events"].as_array().expect("a list").clone();
        assert!(events.len() <= 2, "at most the limit: {}", page.body);
        paged.extend(events.iter().cloned());
        match page.body["next"].as_u64() {
            Some(next) => {
                assert_eq!(
                    Some(next),
                    events.last().and_then(|e| e["seq"].as_u64()),
                    "next is the last seq given"
                );
                after = next;
            }
            None => break,
        }
        assert!(paged.len() <= all.len(), "the pages end");
    }
    assert_eq!(paged, all, "the pages hold every event once, in order");

    let past = server.get(&format!("/api/v1/runs/{id}/events?after={}", all.len()), &operator).await;
    assert_eq!(past.body, json!({"events": [], "next": null}));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fork_from_a_checkpoint_is_a_new_paused_run_that_resumes_to_completion() {
    let (server, operator) = server().await;
    let id = server.start(&operator, HELLO).await;
    server.wait_for(&id, &operator, "completed").await;
    let checkpoints = server.get(&format!("/api/v1/runs/{id}/checkpoints"), &operator).await;
    assert_eq!(checkpoints.status, StatusCode::OK, "{}", checkpoints.body);
    let list = checkpoints.body.as_array().expect("a list of checkpoints").clone();
    assert!(!list.is_empty(), "a completed run has checkpoints");
    for c in &list {
        assert!(c["seq"].is_u64() && c["at"].is_string() && c["label"].is_string(), "{c}");
    }
    let seq = list[0]["seq"].as_u64().expect("a seq");

    let fork = server.post(&format!("/api/v1/runs/{id}/fork"), &operator, json!({"checkpoint": seq})).await;
    assert_eq!(fork.status, StatusCode::CREATED, "{}", fork.body);
    let new = fork.body["run_id"].as_str().expect("the new run's id").to_owned();
    assert_ne!(new, id);
    assert_eq!(fork.body["forked_from"], json!({"run_id": id, "checkpoint": seq}));
    assert_eq!(fork.body["status"], "paused", "not driven until resumed");
    let location = fork.headers.get(header::LOCATION).and_then(|v| v.to_str().ok());
    assert_eq!(location, Some(format!("/api/v1/runs/{new}").as_str()));
    let first = server.events(&new, &operator).await;
    assert!(first.iter().any(|e| e["actor"] == "ops"), "the fork is recorded as the token's: {first:?}");

    let resumed =
        server.call(Method::POST, &format!("/api/v1/runs/{new}/resume"), Some(&operator), None).await;
    assert_eq!(resumed.status, StatusCode::ACCEPTED, "{}", resumed.body);
    server.wait_for(&new, &operator, "completed").await;

    let nowhere =
        server.post(&format!("/api/v1/runs/{id}/fork"), &operator, json!({"checkpoint": 9999})).await;
    nowhere.problem(StatusCode::NOT_FOUND, "not_found");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gate_is_decided_only_with_its_role_and_the_decision_is_the_tokens() {
    let (server, operator) = server().await;
    let qa = server.token("quinn", Role::Admin, &["qa"]).await;
    let lead = server.token("lee", Role::Viewer, &["lead"]).await;
    let id = server.start(&operator, GATED).await;
    let waiting = server.wait_for(&id, &operator, "waiting_approval").await;
    assert_eq!(waiting["waiting"]["approvers"], json!(["lead"]));
    let approve = format!("/api/v1/runs/{id}/approve");

    for (token, body) in [
        (&operator, json!({})),
        (&operator, json!({"as": "lead"})),
        (&qa, json!({})),
        (&qa, json!({"as": "lead"})),
        (&lead, json!({"as": "qa"})),
    ] {
        let answer = server.post(&approve, token, body.clone()).await;
        answer.problem(StatusCode::FORBIDDEN, "forbidden");
    }
    assert!(
        events_of(&server, &id, &operator, "gate_decided").await.is_empty(),
        "no refused call was recorded"
    );
    assert_eq!(server.get(&format!("/api/v1/runs/{id}"), &operator).await.body["status"], "waiting_approval");

    // The token's name is the actor, whatever name the caller claims.
    let mut call = request(Method::POST, &approve, Some(&lead), Some(json!({"comment": "ship it"})));
    call.headers_mut().insert(cairn_server::access::ACTOR_HEADER, "mallory".parse().expect("a header value"));
    let answer = read(server.send(call).await).await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.body);
    assert_eq!(answer.body["run_id"], id.as_str());

    server.wait_for(&id, &operator, "completed").await;
    let decided = events_of(&server, &id, &operator, "gate_decided").await;
    assert_eq!(decided.len(), 1, "{decided:?}");
    assert_eq!(decided[0]["actor"], "lee", "{}", decided[0]);
    assert_eq!(decided[0]["role"], "lead", "{}", decided[0]);
    assert_eq!(decided[0]["comment"], "ship it", "{}", decided[0]);

    let late = server.post(&approve, &lead, json!({})).await;
    late.problem(StatusCode::CONFLICT, "conflict");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_gates_say_who_may_decide_there_and_the_inbox_keeps_the_callers() {
    let (server, operator) = server().await;
    let qa = server.token("quinn", Role::Admin, &["qa"]).await;
    let lead = server.token("lee", Role::Viewer, &["lead"]).await;
    let id = server.start(&operator, GATED).await;
    server.wait_for(&id, &operator, "waiting_approval").await;
    server.start(&operator, HELLO).await;

    let inbox = server.get("/api/v1/gates?mine=true", &lead).await;
    assert_eq!(inbox.status, StatusCode::OK, "{}", inbox.body);
    let gates = inbox.body["gates"].as_array().expect("gates").clone();
    assert_eq!(gates.len(), 1, "{gates:?}");
    let gate = &gates[0];
    assert_eq!(
        (&gate["run_id"], &gate["workflow"], &gate["gate"], &gate["kind"], &gate["decide_as"]),
        (&json!(id), &json!("gated"), &json!("sign_off"), &json!("approval"), &json!("lead")),
        "{gate}"
    );
    assert_eq!(gate["message"], "Ship it?");
    assert!(gate.get("cannot").is_none(), "{gate}");

    for token in [&qa, &operator] {
        let mine = server.get("/api/v1/gates?mine=true", token).await;
        assert_eq!(mine.body["gates"], json!([]), "only the lead decides: {}", mine.body);
        let all = server.get(&format!("/api/v1/gates?run={id}"), token).await;
        assert_eq!(all.body["gates"][0]["cannot"], "the gate waits for lead", "{}", all.body);
        assert!(all.body["gates"][0].get("decide_as").is_none(), "{}", all.body);
    }
    server.get("/api/v1/gates?run=nope", &lead).await.problem(StatusCode::NOT_FOUND, "not_found");
    server.get("/api/v1/gates?mine=maybe", &lead).await.problem(StatusCode::BAD_REQUEST, "invalid_query");

    // A run that does not wait as a whole (paused here; running on in
    // other steps alike) still lists its gate: a decision is taken there.
    let paused = server.call(Method::POST, &format!("/api/v1/runs/{id}/pause"), Some(&operator), None).await;
    assert_eq!(paused.status, StatusCode::ACCEPTED, "{}", paused.body);
    let waiting = server.wait_for(&id, &operator, "paused").await;
    assert_eq!(
        (&waiting["waiting"], &waiting["gates"][0]["gate"]),
        (&Value::Null, &json!("sign_off")),
        "{waiting}"
    );
    let inbox = server.get("/api/v1/gates?mine=true", &lead).await;
    assert_eq!(inbox.body["gates"][0]["run_status"], "paused", "{}", inbox.body);

    let resumed =
        server.call(Method::POST, &format!("/api/v1/runs/{id}/resume"), Some(&operator), None).await;
    assert_eq!(resumed.status, StatusCode::ACCEPTED, "{}", resumed.body);
    server.wait_for(&id, &operator, "waiting_approval").await;
    let approved = server.post(&format!("/api/v1/runs/{id}/approve"), &lead, json!({})).await;
    assert_eq!(approved.status, StatusCode::OK, "{}", approved.body);
    server.wait_for(&id, &operator, "completed").await;
    assert_eq!(server.get("/api/v1/gates", &lead).await.body["gates"], json!([]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rejected_gate_fails_the_run_as_the_token() {
    let (server, operator) = server().await;
    let lead = server.token("lee", Role::Viewer, &["lead"]).await;
    let id = server.start(&operator, GATED).await;
    server.wait_for(&id, &operator, "waiting_approval").await;
    let answer =
        server.post(&format!("/api/v1/runs/{id}/reject"), &lead, json!({"comment": "not yet"})).await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.body);
    server.wait_for(&id, &operator, "failed").await;
    let decided = events_of(&server, &id, &operator, "gate_decided").await;
    assert_eq!(decided.len(), 1, "{decided:?}");
    assert_eq!((decided[0]["actor"].clone(), decided[0]["approve"].clone()), (json!("lee"), json!(false)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pause_resume_and_cancel_are_recorded_as_the_token_and_an_ended_run_refuses_them() {
    let (server, operator) = server().await;
    let id = server.start(&operator, GATED).await;
    server.wait_for(&id, &operator, "waiting_approval").await;
    // Once its drive has ended (see the test after this one for why).
    server.wait_idle(&id).await;
    let at = |verb: &str| format!("/api/v1/runs/{id}/{verb}");

    let paused = server.call(Method::POST, &at("pause"), Some(&operator), None).await;
    assert_eq!(paused.status, StatusCode::ACCEPTED, "{}", paused.body);
    assert_eq!(paused.body["status"], "paused", "recorded by the request: {}", paused.body);
    let resumed = server.call(Method::POST, &at("resume"), Some(&operator), None).await;
    assert_eq!(resumed.status, StatusCode::ACCEPTED, "{}", resumed.body);
    server.wait_for(&id, &operator, "waiting_approval").await;
    server.wait_idle(&id).await;
    let cancelled = server.call(Method::POST, &at("cancel"), Some(&operator), None).await;
    assert_eq!(cancelled.status, StatusCode::ACCEPTED, "{}", cancelled.body);
    assert_eq!(cancelled.body["status"], "cancelled", "recorded by the request: {}", cancelled.body);

    let events = server.events(&id, &operator).await;
    for kind in ["run_paused", "run_cancelled"] {
        let event =
            events.iter().find(|e| e["type"] == kind).unwrap_or_else(|| panic!("a {kind} event: {events:?}"));
        assert_eq!(event["actor"], "ops", "{kind} is recorded as the token's: {event}");
    }

    for verb in ["pause", "resume"] {
        let answer = server.call(Method::POST, &at(verb), Some(&operator), None).await;
        assert_eq!(answer.status, StatusCode::CONFLICT, "{verb} a cancelled run: {}", answer.body);
        answer.problem(StatusCode::CONFLICT, "conflict");
    }
    // Cancelling a cancelled run is no change (the domain's rule): it
    // answers the run and records nothing.
    let again = server.call(Method::POST, &at("cancel"), Some(&operator), None).await;
    assert_eq!(again.status, StatusCode::ACCEPTED, "{}", again.body);
    assert_eq!(server.events(&id, &operator).await, events, "nothing more is recorded");
}

/// A cancel accepted (`202`) is carried out, even when it comes just as
/// the run's drive reaches a gate: tried many times, since it is a race.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancel_as_the_run_reaches_a_gate_is_carried_out() {
    let (server, operator) = server().await;
    for _ in 0..30 {
        let id = server.start(&operator, GATED).await;
        server.wait_for(&id, &operator, "waiting_approval").await;
        let answer =
            server.call(Method::POST, &format!("/api/v1/runs/{id}/cancel"), Some(&operator), None).await;
        assert_eq!(answer.status, StatusCode::ACCEPTED, "{}", answer.body);
        server.wait_for(&id, &operator, "cancelled").await;
    }
}

/// The run a request creates is recorded as the token's, like every
/// other event a request causes (`spec/api.md`, Tokens and roles).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_run_a_request_creates_is_recorded_as_the_token() {
    let (server, operator) = server().await;
    let id = server.start(&operator, HELLO).await;
    let created = events_of(&server, &id, &operator, "run_created").await;
    assert_eq!(created.len(), 1);
    assert_eq!(created[0]["actor"], "ops", "{}", created[0]);
}
