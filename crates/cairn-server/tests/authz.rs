//! Who may call what, over the whole table: every row of `ROUTES` is
//! called with no token, a wrong one, a malformed header, an expired
//! token, and tokens of each role (and, at gates, with and without the
//! gate's role); each must be refused or let through as its row says. And
//! the table holds every endpoint `spec/api.md` promises, needing what the
//! spec says.

mod support;

use std::sync::Arc;
use std::time::Duration;

use axum::http::{Method, StatusCode, header};
use cairn_domain::access::Role;
use cairn_server::ROUTES;
use cairn_server::access::{Endpoint, Need, Route};
use cairn_testkit::FakeClock;
use serde_json::{Value, json};
use support::{GATED, HELLO, Server, read, request};

/// The endpoints of `spec/api.md` (method, path, what it needs), as its
/// table lists them; the paths under `/api/v1`.
const SPEC: &[(&str, &str, Need)] = &[
    ("GET", "/api/v1/health", Need::Anyone),
    ("GET", "/api/v1/openapi.json", Need::Anyone),
    ("POST", "/api/v1/workflows/validate", Need::Role(Role::Viewer)),
    ("POST", "/api/v1/runs", Need::Role(Role::Operator)),
    ("GET", "/api/v1/runs", Need::Role(Role::Viewer)),
    ("GET", "/api/v1/runs/{id}", Need::Role(Role::Viewer)),
    ("POST", "/api/v1/runs/{id}/pause", Need::Role(Role::Operator)),
    ("POST", "/api/v1/runs/{id}/resume", Need::Role(Role::Operator)),
    ("POST", "/api/v1/runs/{id}/cancel", Need::Role(Role::Operator)),
    ("POST", "/api/v1/runs/{id}/approve", Need::GateRole),
    ("POST", "/api/v1/runs/{id}/reject", Need::GateRole),
    ("POST", "/api/v1/runs/{id}/answer", Need::Role(Role::Operator)),
    ("GET", "/api/v1/runs/{id}/events", Need::Role(Role::Viewer)),
    ("GET", "/api/v1/runs/{id}/events/stream", Need::Role(Role::Viewer)),
    ("GET", "/api/v1/events/stream", Need::Role(Role::Viewer)),
    ("GET", "/api/v1/runs/{id}/checkpoints", Need::Role(Role::Viewer)),
    ("POST", "/api/v1/runs/{id}/fork", Need::Role(Role::Operator)),
    ("POST", "/api/v1/tokens", Need::Role(Role::Admin)),
    ("GET", "/api/v1/tokens", Need::Role(Role::Admin)),
    ("DELETE", "/api/v1/tokens/{name}", Need::Role(Role::Admin)),
];

/// The row of `ROUTES` for `method path`, if there is one.
fn find(method: &str, path: &str) -> Option<&'static Route> {
    ROUTES.iter().find(|r| r.method.as_str() == method && r.path == path)
}

#[test]
fn every_endpoint_of_the_spec_is_routed_and_needs_what_the_spec_says() {
    let mut wrong = Vec::new();
    for (method, path, need) in SPEC {
        match find(method, path) {
            None => wrong.push(format!("{method} {path} is in spec/api.md but not in ROUTES")),
            Some(route) if route.need != *need => {
                wrong.push(format!("{method} {path} needs {:?}; spec/api.md says {need:?}", route.need));
            }
            Some(_) => {}
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}

#[test]
fn no_endpoint_is_listed_twice() {
    for (i, a) in ROUTES.iter().enumerate() {
        for b in &ROUTES[i + 1..] {
            assert!(!(a.method == b.method && a.path == b.path), "{} {} is listed twice", a.method, a.path);
            assert_ne!(a.endpoint, b.endpoint, "{:?} has two rows", a.endpoint);
        }
    }
}

/// How a request presents itself.
#[derive(Debug, Clone)]
enum Credential {
    /// No `Authorization` header.
    Nothing,
    /// A bearer token no token has.
    Wrong,
    /// An `Authorization` header that is not a bearer token.
    NotBearer,
    /// A token past its expiry (it worked before).
    Expired(String),
    /// A live token: its name, secret, role and gate roles.
    Token { name: &'static str, secret: String, role: Role, gate_roles: &'static [&'static str] },
}

impl Credential {
    /// What a failure message calls it.
    fn label(&self) -> String {
        match self {
            Self::Nothing => "no token".into(),
            Self::Wrong => "a wrong token".into(),
            Self::NotBearer => "a Basic header".into(),
            Self::Expired(_) => "an expired token".into(),
            Self::Token { name, .. } => format!("token `{name}`"),
        }
    }

    /// What a route needing `need` must do with this credential: `None`
    /// lets it through, else the status and code of the refusal.
    fn refusal(&self, need: Need) -> Option<(StatusCode, &'static str)> {
        let unauthorized = Some((StatusCode::UNAUTHORIZED, "unauthorized"));
        let forbidden = Some((StatusCode::FORBIDDEN, "forbidden"));
        match (self, need) {
            (_, Need::Anyone) => None,
            (Self::Nothing | Self::Wrong | Self::NotBearer | Self::Expired(_), _) => unauthorized,
            (Self::Token { role, .. }, Need::Role(needed)) => {
                if role.allows(needed) {
                    None
                } else {
                    forbidden
                }
            }
            // The gate waits for `lead`: only a token with that gate role
            // decides, whatever its API role.
            (Self::Token { gate_roles, .. }, Need::GateRole) => {
                if gate_roles.contains(&"lead") {
                    None
                } else {
                    forbidden
                }
            }
        }
    }
}

/// The server, its clock and the fixtures the matrix calls routes on.
struct Matrix {
    server: Server,
    admin: String,
    /// A completed run of [`HELLO`].
    done: String,
    /// A checkpoint of `done`, to fork from.
    checkpoint: u64,
    /// Names made unique across the test.
    counter: usize,
}

impl Matrix {
    /// The path of `route`, the body to send and the status a caller let
    /// through gets. Gates and tokens that a call uses up are made fresh
    /// for each call, so no call depends on the ones before it.
    async fn fixture(&mut self, route: &Route) -> (String, Option<Value>, StatusCode) {
        self.counter += 1;
        let n = self.counter;
        let done = self.done.clone();
        let (subject, body, status) = match route.endpoint {
            Endpoint::Health | Endpoint::OpenApi => (None, None, StatusCode::OK),
            Endpoint::Validate => (None, Some(json!({"definition": HELLO})), StatusCode::OK),
            Endpoint::StartRun => (None, Some(json!({"definition": HELLO})), StatusCode::CREATED),
            Endpoint::ListRuns
            | Endpoint::RunFeed
            | Endpoint::Gates
            | Endpoint::ListWorkflows
            | Endpoint::Stats
            | Endpoint::Search => (None, None, StatusCode::OK),
            // `hello` has run: the catalog knows it.
            Endpoint::GetWorkflow => (Some("hello".to_owned()), None, StatusCode::OK),
            // A new version each call, so each is added.
            Endpoint::RegisterWorkflow => {
                (None, Some(json!({"definition": format!("{HELLO}version: m{n}\n")})), StatusCode::CREATED)
            }
            Endpoint::GetRun
            | Endpoint::ExportRun
            | Endpoint::Events
            | Endpoint::EventStream
            | Endpoint::Checkpoints
            | Endpoint::Definition => (Some(done), None, StatusCode::OK),
            // A completed run takes none of these: the caller gets past the
            // guard and is refused by the run.
            Endpoint::Pause | Endpoint::Resume | Endpoint::Cancel => (Some(done), None, StatusCode::CONFLICT),
            Endpoint::Answer => (Some(done), Some(json!({"text": "blue"})), StatusCode::CONFLICT),
            Endpoint::Approve | Endpoint::Reject => {
                let run = self.server.start(&self.admin, GATED).await;
                self.server.wait_for(&run, &self.admin, "waiting_approval").await;
                (Some(run), Some(json!({"comment": "matrix"})), StatusCode::OK)
            }
            Endpoint::Fork => (Some(done), Some(json!({"checkpoint": self.checkpoint})), StatusCode::CREATED),
            Endpoint::CreateToken => (None, Some(json!({"name": format!("made-{n}")})), StatusCode::CREATED),
            Endpoint::ListTokens => (None, None, StatusCode::OK),
            // A dry run, so the runs the matrix uses stay.
            Endpoint::Metrics => (None, None, StatusCode::OK),
            Endpoint::Prune => (None, Some(json!({"older_than": "1ms", "dry_run": true})), StatusCode::OK),
            // The record of a run the store holds: present, nothing written.
            Endpoint::ImportRun => {
                let record = self.server.get(&format!("/api/v1/runs/{done}/export"), &self.admin).await;
                (None, Some(record.body), StatusCode::OK)
            }
            // Signing in takes its token from the body, whatever else is sent.
            Endpoint::SignIn => (None, Some(json!({"token": self.admin})), StatusCode::CREATED),
            Endpoint::WhoAmI => (None, None, StatusCode::OK),
            Endpoint::SignOut => (None, None, StatusCode::NO_CONTENT),
            // No token is asked: the delivery's signature is. `hello` takes
            // no webhook, so one let through is told so.
            Endpoint::Hook => (Some("hello".to_owned()), Some(json!({})), StatusCode::NOT_FOUND),
            Endpoint::RevokeToken => {
                let name = format!("victim-{n}");
                self.server.token(&name, Role::Viewer, &[]).await;
                (Some(name), None, StatusCode::NO_CONTENT)
            }
        };
        let path = match subject {
            Some(subject) => route
                .path
                .replace("{id}", &subject)
                .replace("{name}", &subject)
                .replace("{workflow}", &subject),
            None => route.path.to_owned(),
        };
        assert!(!path.contains('{'), "every path parameter of {} is given a value: {path}", route.path);
        // A search must say what it looks for.
        let path = if matches!(route.endpoint, Endpoint::Search) { format!("{path}?q=hello") } else { path };
        (path, body, status)
    }
}

/// Every route with every kind of credential, on a clock the test moves
/// (to expire a token).
#[tokio::test(start_paused = true)]
async fn every_route_refuses_or_admits_each_credential_as_its_row_says() {
    let clock = Arc::new(FakeClock::starting_at(1_767_225_600_000));
    let server = Server::new(clock);
    let admin = server.token("root", Role::Admin, &[]).await;

    let expiring = server
        .app()
        .create_token("brief", Role::Admin, Vec::new(), Some("1s".parse().expect("a duration")))
        .await
        .expect("the token is made")
        .secret;
    let before = server.get("/api/v1/runs", &expiring).await;
    assert_eq!(before.status, StatusCode::OK, "the expiring token works before it expires: {}", before.body);

    let done = server.start(&admin, HELLO).await;
    server.wait_for(&done, &admin, "completed").await;
    // Its drive over too, so a pause or cancel meets the run, not a driver
    // that is ending (a race of its own, tested in runs.rs).
    server.wait_idle(&done).await;
    let checkpoints = server.get(&format!("/api/v1/runs/{done}/checkpoints"), &admin).await;
    let checkpoint = checkpoints.body[0]["seq"].as_u64().expect("a completed run has a checkpoint");

    tokio::time::advance(Duration::from_secs(2)).await;

    let tokens = [
        ("viewer", Role::Viewer, &[][..]),
        ("operator", Role::Operator, &[][..]),
        ("admin", Role::Admin, &[][..]),
        ("qa", Role::Operator, &["qa"][..]),
        ("lead", Role::Viewer, &["lead"][..]),
    ];
    let mut credentials =
        vec![Credential::Nothing, Credential::Wrong, Credential::NotBearer, Credential::Expired(expiring)];
    for (name, role, gate_roles) in tokens {
        let secret = server.token(name, role, gate_roles).await;
        credentials.push(Credential::Token { name, secret, role, gate_roles });
    }

    let mut matrix = Matrix { server, admin, done, checkpoint, counter: 0 };
    let mut wrong = Vec::new();
    let mut calls = 0;
    for route in ROUTES {
        for credential in &credentials {
            let (path, body, admitted) = matrix.fixture(route).await;
            let mut call = request(route.method.clone(), &path, None, body);
            let value = match credential {
                Credential::Nothing => None,
                Credential::Wrong => Some("Bearer not-a-token-anyone-has".to_owned()),
                Credential::NotBearer => Some("Basic cm9vdDpyb290".to_owned()),
                Credential::Expired(secret) | Credential::Token { secret, .. } => {
                    Some(format!("Bearer {secret}"))
                }
            };
            if let Some(value) = value {
                call.headers_mut().insert(header::AUTHORIZATION, value.parse().expect("a header value"));
            }
            let response = matrix.server.send(call).await;
            calls += 1;
            let status = response.status();
            let what = format!("{} {path} with {}", route.method, credential.label());
            match credential.refusal(route.need) {
                Some((refused, code)) => {
                    let answer = read(response).await;
                    let names_expired = matches!(credential, Credential::Expired(_))
                        == (answer.body["expired_token"] == "brief");
                    if answer.status != refused || answer.body["code"] != code || !names_expired {
                        wrong.push(format!(
                            "{what}: {} {} (wanted {refused} {code})",
                            answer.status, answer.body
                        ));
                    } else {
                        support::assert_problem_shape(&answer);
                    }
                }
                // Streams stay open: only the status is looked at.
                None if status != admitted => {
                    let detail = match route.endpoint {
                        Endpoint::EventStream | Endpoint::RunFeed => Value::Null,
                        _ => read(response).await.body,
                    };
                    wrong.push(format!("{what}: {status} {detail} (wanted {admitted})"));
                }
                None => {}
            }
        }
    }
    assert_eq!(calls, ROUTES.len() * credentials.len());
    assert!(
        wrong.is_empty(),
        "{} of {calls} calls were answered wrongly:\n{}",
        wrong.len(),
        wrong.join("\n")
    );
}

/// A token that is revoked is refused from then on, like one nobody has.
#[tokio::test(start_paused = true)]
async fn a_revoked_token_is_refused() {
    let server = Server::new(Arc::new(FakeClock::starting_at(1_767_225_600_000)));
    let admin = server.token("root", Role::Admin, &[]).await;
    let viewer = server.token("reader", Role::Viewer, &[]).await;
    assert_eq!(server.get("/api/v1/runs", &viewer).await.status, StatusCode::OK);
    let revoked = server.call(Method::DELETE, "/api/v1/tokens/reader", Some(&admin), None).await;
    assert_eq!(revoked.status, StatusCode::NO_CONTENT, "{}", revoked.body);
    server.get("/api/v1/runs", &viewer).await.problem(StatusCode::UNAUTHORIZED, "unauthorized");
    let again = server.call(Method::DELETE, "/api/v1/tokens/reader", Some(&admin), None).await;
    again.problem(StatusCode::NOT_FOUND, "not_found");
}

/// A token made through the API works at once, with the role it was given,
/// and its secret is shown only in the answer that made it.
#[tokio::test(start_paused = true)]
async fn a_token_made_through_the_api_acts_as_its_role() {
    let server = Server::new(Arc::new(FakeClock::starting_at(1_767_225_600_000)));
    let admin = server.token("root", Role::Admin, &[]).await;
    let made = server.post("/api/v1/tokens", &admin, json!({"name": "ci", "role": "operator"})).await;
    assert_eq!(made.status, StatusCode::CREATED, "{}", made.body);
    let secret = made.body["token"].as_str().expect("the secret is in the answer").to_owned();
    assert_eq!(server.get("/api/v1/runs", &secret).await.status, StatusCode::OK);
    server.get("/api/v1/tokens", &secret).await.problem(StatusCode::FORBIDDEN, "forbidden");
    let listed = server.get("/api/v1/tokens", &admin).await;
    assert_eq!(listed.status, StatusCode::OK);
    let text = listed.body.to_string();
    assert!(text.contains("\"ci\""), "the new token is listed: {text}");
    assert!(!text.contains(&secret), "a listing never shows a secret: {text}");
    let taken = server.post("/api/v1/tokens", &admin, json!({"name": "ci"})).await;
    taken.problem(StatusCode::CONFLICT, "conflict");
}
