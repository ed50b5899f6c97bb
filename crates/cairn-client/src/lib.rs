//! A client of `cairn serve`: the operations of the command line
//! ([`cairn_app::Operations`]) through the server's API, so every verb
//! works while a server holds the data directory, or against a remote one.
//!
//! What it is: an outbound adapter. It sends requests and rebuilds the
//! same typed values the application returns: a run is folded from its
//! events with the definition it recorded (so the command line prints it
//! exactly as it would from the store), and a problem document becomes
//! the typed error it was made from (a refusal, a missing run, an unmet
//! need), so the words and exit codes are the same either way.
//!
//! What it deliberately does not do: decide anything. The server drives
//! runs; [`Remote::drive`] only follows the run's event stream (feeding
//! the progress sink) until nothing moves without a person.
//!
//! May depend on: `cairn-app`, `cairn-domain`, `cairn-ports`; reqwest.
//!
//! Read first: [`Http`], [`Remote`].

mod sse;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration as StdDuration, UNIX_EPOCH};

use async_trait::async_trait;
use cairn_app::app::{Listed, Listing, NewToken, Run};
use cairn_app::catalog::{About, Entry, Stats};
use cairn_app::error::{CatalogError, TokenError};
use cairn_app::search::Found;
use cairn_app::stats::{Failing, Report, Spent, StatsQuery};
use cairn_app::transfer::{Exported, Imported};
use cairn_app::{EngineError, Error, Operations, Target};
use cairn_domain::Definition;
use cairn_domain::access::Role;
use cairn_domain::checkpoint::Checkpoint;
use cairn_domain::duration::Duration;
use cairn_domain::id::{RunId, WorkflowId};
use cairn_domain::label::Labels;
use cairn_domain::problem::{Location, Problem, Problems, Rule};
use cairn_domain::state::{Event, EventKind, Launch, RunState, RunStatus, StepPath, Timestamp, TokenUsage};
use cairn_domain::steer::{GateCall, Request, Verdict};
use cairn_ports::{
    Cursor, EventSink, LiveEvent, Registered, RunQuery, RunSummary, SearchHit, SearchQuery, StoreError,
    TokenRecord, WorkflowVersion,
};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

/// Connects the command line to servers.
#[derive(Debug, Clone, Copy, Default)]
pub struct Http;

impl cairn_app::Connect for Http {
    fn connect(&self, target: Target, sink: Arc<dyn EventSink>) -> Result<Arc<dyn Operations>, Error> {
        Ok(Arc::new(Remote::new(target, sink)?))
    }
}

/// The operations of one server.
pub struct Remote {
    http: reqwest::Client,
    target: Target,
    sink: Arc<dyn EventSink>,
    /// Runs this client handed to the server, which drives them on by
    /// itself (started: shown from their first event; decided at a gate:
    /// `true` when started).
    handed: std::sync::Mutex<std::collections::HashMap<RunId, bool>>,
}

/// How long one request may take (a stream is read in pieces, each within it).
const REQUEST_TIMEOUT: StdDuration = StdDuration::from_secs(60);

impl Remote {
    /// A client of the server at `target`, sending what it streams of the
    /// runs it waits for to `sink`.
    pub fn new(target: Target, sink: Arc<dyn EventSink>) -> Result<Self, Error> {
        let http = reqwest::Client::builder()
            .connect_timeout(StdDuration::from_secs(10))
            .build()
            .map_err(|e| Error::Config(format!("cannot make an HTTP client: {e}")))?;
        Ok(Self { http, target, sink, handed: std::sync::Mutex::default() })
    }

    /// A request to `path` (under `/api/v1`) with the credentials.
    fn request(&self, method: Method, path: &str) -> reqwest::RequestBuilder {
        self.request_by(method, path, None)
    }

    /// [`Remote::request`] recording what it causes as done by `by` (the
    /// verbs' `--by`) where the server takes the client's word for who
    /// acts (the local key, `--auth none`); a token's name is never
    /// overridden, so nothing is claimed with one.
    fn request_by(&self, method: Method, path: &str, by: Option<&str>) -> reqwest::RequestBuilder {
        let mut request = self.http.request(method, format!("{}/api/v1{path}", self.target.url));
        if let Some(token) = &self.target.token {
            request = request.bearer_auth(token);
        }
        if let Some(actor) = &self.target.actor {
            request = request.header("x-cairn-actor", by.unwrap_or(actor));
        }
        request
    }

    /// Sends a request and reads its JSON answer; a problem document
    /// becomes the typed error it stands for.
    async fn call(&self, method: Method, path: &str, body: Option<Value>) -> Result<Value, Error> {
        self.call_by(method, path, body, None).await
    }

    /// [`Remote::call`] as done by `by` ([`Remote::request_by`]).
    async fn call_by(
        &self,
        method: Method,
        path: &str,
        body: Option<Value>,
        by: Option<&str>,
    ) -> Result<Value, Error> {
        let mut request = self.request_by(method, path, by);
        if let Some(body) = body {
            request = request.json(&body);
        }
        self.answer(request).await
    }

    /// Sends `request` and reads its JSON answer; a problem document
    /// becomes the typed error it stands for.
    async fn answer(&self, request: reqwest::RequestBuilder) -> Result<Value, Error> {
        let response = request.timeout(REQUEST_TIMEOUT).send().await.map_err(|e| self.unreachable(e))?;
        let status = response.status();
        let text = response.text().await.map_err(|e| self.unreachable(e))?;
        if status == StatusCode::NO_CONTENT {
            return Ok(Value::Null);
        }
        let value: Value = serde_json::from_str(&text).map_err(|e| Error::Server {
            status: status.as_u16(),
            code: "bad_answer".into(),
            detail: format!("the server's answer is not JSON ({e})"),
        })?;
        if status.is_success() { Ok(value) } else { Err(typed(status, &value)) }
    }

    async fn get(&self, path: &str) -> Result<Value, Error> {
        self.call(Method::GET, path, None).await
    }

    async fn post(&self, path: &str, body: Value) -> Result<Value, Error> {
        self.call(Method::POST, path, Some(body)).await
    }

    /// A `POST` whose effects are recorded as done by `by`.
    async fn post_by(&self, path: &str, body: Value, by: &str) -> Result<Value, Error> {
        self.call_by(Method::POST, path, Some(body), Some(by)).await
    }

    /// The server cannot be reached (named, never with a token).
    fn unreachable(&self, e: reqwest::Error) -> Error {
        let why =
            if e.is_timeout() { "it did not answer in time".to_owned() } else { e.without_url().to_string() };
        Error::Store(format!("cannot reach the server at {}: {why}", self.target.url))
    }

    /// Every event of a run after `after`, page by page.
    async fn events_after(&self, id: &RunId, mut after: u64) -> Result<Vec<Event>, Error> {
        let mut all = Vec::new();
        loop {
            let page = self.get(&format!("/runs/{id}/events?after={after}&limit=1000")).await?;
            let events = page.get("events").and_then(Value::as_array).cloned().unwrap_or_default();
            for event in events {
                all.push(event_of(event).map_err(Error::Config)?);
            }
            match page.get("next").and_then(Value::as_u64) {
                Some(next) if next > after => after = next,
                _ => return Ok(all),
            }
        }
    }

    /// A run as the application shows it: folded from its events, with
    /// the definition it recorded and the server's view of its cost and
    /// driver.
    async fn run(&self, id: &RunId) -> Result<Run, Error> {
        self.run_until(id, |_| false).await
    }

    /// [`Remote::run`] as it stood at the last event `stop_at` picks (all of
    /// it when it picks none): a decision's answer shows the run as the
    /// decision left it, whatever the server drove on since.
    async fn run_until(&self, id: &RunId, stop_at: impl Fn(&Event) -> bool) -> Result<Run, Error> {
        let view = self.get(&format!("/runs/{id}")).await?;
        let mut events = self.events_after(id, 0).await?;
        if let Some(last) = events.iter().rposition(stop_at) {
            events.truncate(last + 1);
        }
        let mut state: Option<RunState> = None;
        for event in &events {
            match &mut state {
                None => state = Some(RunState::create(event).map_err(EngineError::from)?),
                Some(s) => s.apply(event).map_err(EngineError::from)?,
            }
        }
        let state = state.ok_or_else(|| {
            Error::Engine(EngineError::Store(StoreError::Corrupt(format!("run `{id}` has no events"))))
        })?;
        let recorded = self.get(&format!("/runs/{id}/definition")).await?;
        let name: String = field(&recorded, "name").map_err(Error::Config)?;
        let text: String = field(&recorded, "text").map_err(Error::Config)?;
        let files: BTreeMap<String, String> = field(&recorded, "files").map_err(Error::Config)?;
        let definition = Definition::from_recorded(&name, &text, &files)
            .map_err(|problems| EngineError::Definition { run: id.clone(), problems })?;
        Ok(Run {
            state,
            definition,
            cost_usd: view.pointer("/usage/cost_usd").and_then(Value::as_f64),
            inherited_cost_usd: view.pointer("/inherited_usage/cost_usd").and_then(Value::as_f64),
            driven: view.get("driven").and_then(Value::as_bool).unwrap_or(false),
        })
    }

    /// Follows a run's stream after event `last` (progress to the sink)
    /// until the server no longer drives it and it does not move without
    /// a person.
    async fn wait(&self, id: &RunId, mut last: u64) -> Result<(), Error> {
        let mut stalled_since: Option<std::time::Instant> = None;
        loop {
            // Read what the stream brings for a while, then look at the run.
            let mut reader = self.stream(id, last).await?;
            let look_again = tokio::time::sleep(StdDuration::from_millis(500));
            tokio::pin!(look_again);
            loop {
                tokio::select! {
                    frame = reader.next() => match frame.map_err(|e| self.unreachable(e))? {
                        None => break,
                        Some(frame) => match frame.event.as_str() {
                            "end" => return Ok(()),
                            "token" => self.token(id, &frame.data),
                            _ => {
                                let parsed = serde_json::from_str::<Value>(&frame.data).map_err(|e| e.to_string());
                                if let Ok(event) = parsed.and_then(event_of) {
                                    last = last.max(event.seq);
                                    self.sink.recorded(id, std::slice::from_ref(&event));
                                }
                            }
                        },
                    },
                    () = &mut look_again => break,
                }
            }
            let view = self.get(&format!("/runs/{id}")).await?;
            let driven = view.get("driven").and_then(Value::as_bool).unwrap_or(false);
            let status: RunStatus = field(&view, "status").map_err(Error::Config)?;
            match (driven, status) {
                (true, _) | (false, RunStatus::Pending) => stalled_since = None,
                // Between two drives, or left by a drive that failed: a
                // while without a driver says which.
                (false, RunStatus::Running) => {
                    let since = *stalled_since.get_or_insert_with(std::time::Instant::now);
                    if since.elapsed() > StdDuration::from_secs(3) {
                        return Ok(());
                    }
                }
                (false, _) => return Ok(()),
            }
        }
    }

    /// The run's event stream after event `last`.
    async fn stream(&self, id: &RunId, last: u64) -> Result<sse::Reader, Error> {
        let response = self
            .request(Method::GET, &format!("/runs/{id}/events/stream?after={last}"))
            .send()
            .await
            .map_err(|e| self.unreachable(e))?;
        if !response.status().is_success() {
            let status = response.status();
            let value: Value = response.json().await.unwrap_or(Value::Null);
            return Err(typed(status, &value));
        }
        Ok(sse::Reader::new(response))
    }

    /// Notes that the server drives `run` on by itself (`started`: from
    /// its first event).
    fn hand(&self, run: &RunId, started: bool) {
        self.handed.lock().unwrap_or_else(std::sync::PoisonError::into_inner).insert(run.clone(), started);
    }

    /// The number of a run's last event.
    async fn last_seq(&self, id: &RunId) -> Result<u64, Error> {
        Ok(self.events_after(id, 0).await?.last().map_or(0, |e| e.seq))
    }

    /// Hands streamed model text to the sink.
    fn token(&self, id: &RunId, data: &str) {
        let Ok(value) = serde_json::from_str::<Value>(data) else { return };
        let (Some(path), Some(text)) =
            (value.get("path").and_then(Value::as_str), value.get("text").and_then(Value::as_str))
        else {
            return;
        };
        let attempt =
            value.get("attempt").and_then(Value::as_u64).and_then(|a| u32::try_from(a).ok()).unwrap_or(1);
        let path = StepPath::new(path);
        self.sink.emit(id, &LiveEvent::Token { path: &path, attempt, text });
    }
}

#[async_trait]
impl Operations for Remote {
    async fn start(
        &self,
        definition: Definition,
        inputs: Value,
        run_id: Option<RunId>,
        by: &str,
        launch: Launch,
    ) -> Result<Run, Error> {
        let body = json!({
            "definition": definition.text,
            "name": definition.name,
            "files": definition.files,
            "inputs": inputs,
            "run_id": run_id,
            "labels": launch.labels,
            "priority": launch.priority,
        });
        let started = self.post_by("/runs", body, by).await.map_err(|e| match e {
            // Said of the file, as the local start says it.
            Error::Definition { problems, .. } => {
                Error::Definition { name: definition.name.clone(), problems }
            }
            other => other,
        })?;
        let id: RunId = field(&started, "run_id").map_err(Error::Config)?;
        self.hand(&id, true);
        self.run(&id).await
    }

    async fn drive(&self, id: &RunId) -> Result<Run, Error> {
        let view = self.get(&format!("/runs/{id}")).await?;
        let driven = view.get("driven").and_then(Value::as_bool).unwrap_or(false);
        let status: RunStatus = field(&view, "status").map_err(Error::Config)?;
        // A run just started is followed from its first event; one that
        // goes on, from where it is.
        let handed = self.handed.lock().unwrap_or_else(std::sync::PoisonError::into_inner).remove(id);
        let last = if handed == Some(true) { 0 } else { self.last_seq(id).await? };
        // A run handed over goes on by itself; any other is resumed (an
        // ended one is refused by the server, as it is here, also while
        // its last drive is still letting go of it).
        if handed.is_none() && (status.is_terminal() || (!driven && status != RunStatus::Pending)) {
            self.post(&format!("/runs/{id}/resume"), json!({})).await?;
        }
        self.wait(id, last).await?;
        self.run(id).await
    }

    async fn status(&self, id: &RunId) -> Result<Run, Error> {
        self.run(id).await
    }

    async fn list(&self, query: &RunQuery) -> Result<Listing, Error> {
        let mut params: Vec<(&str, String)> = Vec::new();
        if let Some(status) = query.status {
            params.push(("status", cairn_domain::state::word(status).to_owned()));
        }
        if let Some(workflow) = &query.workflow {
            params.push(("workflow", workflow.to_string()));
        }
        for (key, value) in &query.labels {
            params.push(("label", format!("{key}={value}")));
        }
        if let Some(by) = &query.triggered_by {
            params.push(("triggered_by", by.clone()));
        }
        if let Some(priority) = query.priority {
            params.push(("priority", priority.to_string()));
        }
        if let Some(parent) = &query.parent {
            params.push(("parent", parent.to_string()));
        }
        params.push(("limit", query.limit.unwrap_or(500).to_string()));
        if let Some(after) = &query.after {
            params.push(("cursor", after.to_string()));
        }
        let mut runs = Vec::new();
        let mut cursor: Option<String> = None;
        loop {
            let mut page_params = params.clone();
            if let Some(c) = &cursor {
                page_params.retain(|(k, _)| *k != "cursor");
                page_params.push(("cursor", c.clone()));
            }
            let request = self.request(Method::GET, "/runs").query(&page_params).timeout(REQUEST_TIMEOUT);
            let response = request.send().await.map_err(|e| self.unreachable(e))?;
            let status = response.status();
            let page: Value = response.json().await.map_err(|e| self.unreachable(e))?;
            if !status.is_success() {
                return Err(typed(status, &page));
            }
            let listed = page.get("runs").and_then(Value::as_array).cloned().unwrap_or_default();
            for summary in &listed {
                runs.push(listed_of(summary).map_err(Error::Config)?);
            }
            let next = page.get("next_cursor").and_then(Value::as_str).map(str::to_owned);
            // A page size asks for one page; no size asks for all of them.
            if query.limit.is_some() || next.is_none() {
                let next = next
                    .map(|c| c.parse::<Cursor>())
                    .transpose()
                    .map_err(|e| Error::Config(e.to_string()))?;
                return Ok(Listing { runs, next });
            }
            cursor = next;
        }
    }

    async fn events(&self, id: &RunId) -> Result<Vec<Event>, Error> {
        self.get(&format!("/runs/{id}")).await?;
        self.events_after(id, 0).await
    }

    async fn checkpoints(&self, id: &RunId) -> Result<Vec<Checkpoint>, Error> {
        Ok(cairn_domain::checkpoint::checkpoints(&self.events(id).await?))
    }

    async fn check(&self, id: &RunId) -> Result<(), Error> {
        // The server checks what driving needs when it is asked to drive.
        self.get(&format!("/runs/{id}")).await.map(|_| ())
    }

    async fn decide(&self, id: &RunId, call: GateCall, by: &str) -> Result<Run, Error> {
        let (verb, body) = match call.verdict {
            Verdict::Approve => {
                ("approve", json!({"gate": call.gate, "as": call.role, "comment": call.comment}))
            }
            Verdict::Reject => {
                ("reject", json!({"gate": call.gate, "as": call.role, "comment": call.comment}))
            }
            Verdict::Answer(text) => ("answer", json!({"gate": call.gate, "text": text})),
        };
        self.post_by(&format!("/runs/{id}/{verb}"), body, by).await?;
        self.hand(id, false);
        self.run_until(id, |e| matches!(e.kind, EventKind::GateDecided { .. } | EventKind::Answered { .. }))
            .await
    }

    async fn stop(&self, id: &RunId, request: Request, by: &str) -> Result<Run, Error> {
        let last = self.last_seq(id).await?;
        self.post_by(&format!("/runs/{id}/{}", verb_of(request)), json!({}), by).await?;
        // A driven run stops at its next safe point: wait for that.
        self.wait(id, last).await?;
        self.run(id).await
    }

    async fn raise_budget(&self, id: &RunId, budget_usd: f64, by: &str) -> Result<Run, Error> {
        self.post_by(&format!("/runs/{id}/resume"), json!({"budget_usd": budget_usd}), by).await?;
        self.hand(id, false);
        self.run(id).await
    }

    async fn fork(&self, id: &RunId, seq: u64, by: &str) -> Result<Run, Error> {
        let forked = self.post_by(&format!("/runs/{id}/fork"), json!({"checkpoint": seq}), by).await?;
        let new_id: RunId = field(&forked, "run_id").map_err(Error::Config)?;
        self.run(&new_id).await
    }

    async fn prune(&self, age: Duration, dry_run: bool) -> Result<Vec<RunSummary>, Error> {
        let answer = self.post("/prune", json!({"older_than": age.to_string(), "dry_run": dry_run})).await?;
        let runs = answer.get("runs").and_then(Value::as_array).cloned().unwrap_or_default();
        runs.iter().map(|r| listed_of(r).map(|l| l.summary).map_err(Error::Config)).collect()
    }

    async fn export(&self, id: &RunId) -> Result<Exported, Error> {
        let record = self.get(&format!("/runs/{id}/export")).await?;
        serde_json::from_value(record)
            .map_err(|e| Error::Config(format!("the server's record of run `{id}` does not read: {e}")))
    }

    async fn import(&self, record: Exported) -> Result<Imported, Error> {
        let body = serde_json::to_value(&record).map_err(|e| Error::Config(e.to_string()))?;
        let answer = self.post("/runs/import", body).await?;
        field(&answer, "imported").map_err(Error::Config)
    }

    async fn create_token(
        &self,
        name: &str,
        role: Role,
        gate_roles: Vec<String>,
        expires: Option<Duration>,
    ) -> Result<NewToken, Error> {
        let body = json!({
            "name": name,
            "role": role.word(),
            "gate_roles": gate_roles,
            "expires": expires.map(|d| d.to_string()),
        });
        let made = self.post("/tokens", body).await?;
        let secret: String = field(&made, "token").map_err(Error::Config)?;
        Ok(NewToken { record: token_of(&made).map_err(Error::Config)?, secret })
    }

    async fn tokens(&self) -> Result<Vec<TokenRecord>, Error> {
        let list = self.get("/tokens").await?;
        let list = list.as_array().cloned().unwrap_or_default();
        list.iter().map(|t| token_of(t).map_err(Error::Config)).collect()
    }

    async fn revoke_token(&self, name: &str) -> Result<(), Error> {
        self.call(Method::DELETE, &format!("/tokens/{name}"), None).await.map(|_| ())
    }

    async fn register(&self, definition: &Definition, by: &str) -> Result<Registered, Error> {
        let body = json!({"definition": definition.text, "name": definition.name, "files": definition.files});
        let answer = self.post_by("/workflows", body, by).await.map_err(|e| match e {
            Error::Definition { problems, .. } => {
                Error::Definition { name: definition.name.clone(), problems }
            }
            other => other,
        })?;
        let version = version_of(&answer).map_err(Error::Config)?;
        Ok(if answer.get("added").and_then(Value::as_bool).unwrap_or(false) {
            Registered::Added(version)
        } else {
            Registered::Unchanged(version)
        })
    }

    async fn catalog(&self) -> Result<Vec<Entry>, Error> {
        let answer = self.get("/workflows").await?;
        let listed = answer.get("workflows").and_then(Value::as_array).cloned().unwrap_or_default();
        listed.iter().map(|e| entry_of(e).map_err(Error::Config)).collect()
    }

    async fn stats(&self, query: &StatsQuery) -> Result<Report, Error> {
        // An id and a duration need no escaping in a query.
        let mut params: Vec<String> = Vec::new();
        if let Some(workflow) = &query.workflow {
            params.push(format!("workflow={workflow}"));
        }
        if let Some(since) = query.since {
            params.push(format!("since={since}"));
        }
        let path =
            if params.is_empty() { "/stats".to_owned() } else { format!("/stats?{}", params.join("&")) };
        let answer = self.get(&path).await?;
        report_of(&answer).map_err(Error::Config)
    }

    async fn search(&self, query: &SearchQuery) -> Result<Vec<Found>, Error> {
        let mut params: Vec<(&str, String)> =
            vec![("q", query.text.clone()), ("limit", query.limit.to_string())];
        if let Some(kind) = query.kind {
            params.push(("kind", kind.as_str().to_owned()));
        }
        if let Some(workflow) = &query.workflow {
            params.push(("workflow", workflow.to_string()));
        }
        let answer = self.answer(self.request(Method::GET, "/search").query(&params)).await?;
        let hits = answer.get("hits").and_then(Value::as_array).cloned().unwrap_or_default();
        hits.iter().map(|h| found_of(h).map_err(Error::Config)).collect()
    }

    async fn registered(
        &self,
        workflow: &WorkflowId,
        version: Option<&str>,
    ) -> Result<WorkflowVersion, Error> {
        let request = self.request(Method::GET, &format!("/workflows/{workflow}"));
        let request = match version {
            Some(v) => request.query(&[("version", v)]),
            None => request,
        };
        let answer = self.answer(request).await?;
        match answer.get("definition") {
            Some(found) if !found.is_null() => version_of(found).map_err(Error::Config),
            _ => Err(CatalogError::UnknownWorkflow(workflow.clone()).into()),
        }
    }

    async fn versions(&self, workflow: &WorkflowId) -> Result<Vec<WorkflowVersion>, Error> {
        let answer = self.get(&format!("/workflows/{workflow}")).await?;
        let listed = answer.get("versions").and_then(Value::as_array).cloned().unwrap_or_default();
        if listed.is_empty() {
            return Err(CatalogError::UnknownWorkflow(workflow.clone()).into());
        }
        listed.iter().map(|v| version_of(v).map_err(Error::Config)).collect()
    }

    async fn follow(
        &self,
        id: &RunId,
        after: u64,
        each: &mut (dyn for<'e> FnMut(&'e Event) + Send),
    ) -> Result<(), Error> {
        let mut last = after;
        // A stream the server or the network closed early is opened again
        // after the last event shown: nothing is shown twice.
        loop {
            let mut reader = self.stream(id, last).await?;
            while let Some(frame) = reader.next().await.map_err(|e| self.unreachable(e))? {
                match frame.event.as_str() {
                    "end" => return Ok(()),
                    "token" | "error" => {}
                    _ => {
                        let parsed = serde_json::from_str::<Value>(&frame.data).map_err(|e| e.to_string());
                        let event = parsed.and_then(event_of).map_err(Error::Config)?;
                        if event.seq > last {
                            last = event.seq;
                            each(&event);
                        }
                    }
                }
            }
            tokio::time::sleep(StdDuration::from_millis(200)).await;
        }
    }

    fn served(&self) -> bool {
        true
    }

    async fn interrupt(&self, id: &RunId, request: Request) {
        let _ = self.post(&format!("/runs/{id}/{}", verb_of(request)), json!({})).await;
    }

    fn now(&self) -> Timestamp {
        let since = std::time::SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default();
        Timestamp(u64::try_from(since.as_millis()).unwrap_or(u64::MAX))
    }
}

/// The endpoint of a pause or cancel.
fn verb_of(request: Request) -> &'static str {
    match request {
        Request::Pause => "pause",
        Request::Cancel => "cancel",
    }
}

/// A field of an answer, typed.
fn field<T: serde::de::DeserializeOwned>(value: &Value, key: &str) -> Result<T, String> {
    let found = value.get(key).cloned().unwrap_or(Value::Null);
    serde_json::from_value(found).map_err(|e| format!("the server's answer has no usable `{key}`: {e}"))
}

/// A time the server wrote in RFC 3339.
fn time_of(value: &Value, key: &str) -> Result<Option<Timestamp>, String> {
    match value.get(key).and_then(Value::as_str) {
        None => Ok(None),
        Some(text) => {
            let at = humantime::parse_rfc3339(text).map_err(|e| format!("`{key}` is not a time: {e}"))?;
            let ms = at.duration_since(UNIX_EPOCH).map_err(|e| e.to_string())?.as_millis();
            Ok(Some(Timestamp(u64::try_from(ms).unwrap_or(u64::MAX))))
        }
    }
}

/// An event as the server sent it (one line of `events --format jsonl`,
/// its times in RFC 3339), as it was stored.
fn event_of(mut value: Value) -> Result<Event, String> {
    for key in ["at", "retry_at", "deadline"] {
        if let Some(at) = time_of(&value, key)?
            && let Some(fields) = value.as_object_mut()
        {
            fields.insert(key.into(), json!(at.0));
        }
    }
    serde_json::from_value(value)
        .map_err(|e| format!("the server sent an event this client cannot read: {e}"))
}

/// A run summary of a listing, as the server sent it.
/// A search hit the server sent, with its run's summary for a run.
fn found_of(value: &Value) -> Result<Found, String> {
    let run = match value.get("run") {
        None | Some(Value::Null) => None,
        Some(run) => Some(listed_of(run)?),
    };
    let hit = SearchHit {
        kind: field(value, "kind")?,
        id: field(value, "id")?,
        workflow: field(value, "workflow")?,
        score: field(value, "score")?,
        field: field(value, "field")?,
        snippet: field(value, "snippet")?,
    };
    Ok(Found { hit, run })
}

fn listed_of(value: &Value) -> Result<Listed, String> {
    let usage = value.get("usage").unwrap_or(&Value::Null);
    let total = usage_of(usage);
    let summary = RunSummary {
        run_id: field(value, "run_id")?,
        workflow: field::<WorkflowId>(value, "workflow")?,
        status: field(value, "status")?,
        created_at: time_of(value, "created_at")?.unwrap_or_default(),
        updated_at: time_of(value, "updated_at")?.unwrap_or_default(),
        // The server sends the total; a listing shows nothing finer.
        usage_by_model: BTreeMap::from([(String::new(), total)]),
        // Absent from servers that kept no labels.
        labels: value.get("labels").map_or(Ok(Labels::new()), |_| field(value, "labels"))?,
        // Absent from servers that kept none of these.
        triggered_by: value.get("triggered_by").and_then(Value::as_str).unwrap_or_default().to_owned(),
        priority: value
            .get("priority")
            .and_then(Value::as_i64)
            .and_then(|p| i32::try_from(p).ok())
            .unwrap_or(0),
        parent: value.get("parent").and_then(Value::as_str).and_then(|p| RunId::new(p).ok()),
        // A listing sends no figures: stats come from the server.
        figures: Default::default(),
    };
    Ok(Listed {
        summary,
        cost_usd: usage.get("cost_usd").and_then(Value::as_f64),
        driven: value.get("driven").and_then(Value::as_bool).unwrap_or(false),
    })
}

/// A registered version as the server sends it (its text and files only
/// where the answer carries them).
fn version_of(value: &Value) -> Result<WorkflowVersion, String> {
    Ok(WorkflowVersion {
        workflow: field(value, "workflow")?,
        version: field(value, "version")?,
        number: field(value, "number")?,
        definition_name: field(value, "definition_name")?,
        definition: value.get("definition").map_or(Ok(String::new()), |_| field(value, "definition"))?,
        files: value.get("files").map_or(Ok(BTreeMap::new()), |_| field(value, "files"))?,
        hash: field(value, "hash")?,
        registered_at: time_of(value, "registered_at")?.unwrap_or_default(),
        registered_by: field(value, "registered_by")?,
    })
}

/// A workflow of the catalog as the server lists it.
fn entry_of(value: &Value) -> Result<Entry, String> {
    Ok(Entry {
        workflow: field(value, "workflow")?,
        latest: match value.get("latest") {
            Some(v) if !v.is_null() => Some(version_of(v)?),
            _ => None,
        },
        about: About {
            name: field(value, "name")?,
            description: field(value, "description")?,
            tags: value.get("tags").map_or(Ok(Vec::new()), |_| field(value, "tags"))?,
        },
        stats: stats_of(value.get("stats").unwrap_or(&Value::Null))?,
    })
}

/// Tokens as the server sends them (`prompt_tokens`, `completion_tokens`,
/// `estimated`, and `cost_micro_usd` where a provider reported one).
fn usage_of(usage: &Value) -> TokenUsage {
    let count = |key: &str| usage.get(key).and_then(Value::as_u64).unwrap_or(0);
    TokenUsage {
        prompt_tokens: count("prompt_tokens"),
        completion_tokens: count("completion_tokens"),
        estimated: usage.get("estimated").and_then(Value::as_bool).unwrap_or(false),
        cost_micro_usd: count("cost_micro_usd"),
    }
}

/// A workflow's figures as the server sends them.
fn stats_of(stats: &Value) -> Result<Stats, String> {
    let usage = stats.get("usage").unwrap_or(&Value::Null);
    Ok(Stats {
        runs: usize::try_from(stats.get("runs").and_then(Value::as_u64).unwrap_or(0)).unwrap_or(usize::MAX),
        by_status: field(stats, "by_status")?,
        success_rate: stats.get("success_rate").and_then(Value::as_f64),
        median_ms: stats.get("median_ms").and_then(Value::as_u64),
        p95_ms: stats.get("p95_ms").and_then(Value::as_u64),
        usage: usage_of(usage),
        cost_usd: usage.get("cost_usd").and_then(Value::as_f64),
        last_run_at: time_of(stats, "last_run_at")?,
    })
}

/// A stats report as the server sends it.
fn report_of(value: &Value) -> Result<Report, String> {
    let list = |key: &str| value.get(key).and_then(Value::as_array).cloned().unwrap_or_default();
    let spent = |key: &str| -> Vec<Spent> {
        list(key)
            .iter()
            .map(|s| Spent {
                name: s.get("name").and_then(Value::as_str).unwrap_or_default().to_owned(),
                usage: usage_of(s),
                cost_usd: s.get("cost_usd").and_then(Value::as_f64),
            })
            .collect()
    };
    Ok(Report {
        workflow: value
            .get("workflow")
            .filter(|w| !w.is_null())
            .map(|_| field(value, "workflow"))
            .transpose()?,
        since: time_of(value, "since")?,
        overall: stats_of(value.get("overall").unwrap_or(&Value::Null))?,
        by_workflow: list("by_workflow")
            .iter()
            .map(|s| Ok((field(s, "workflow")?, stats_of(s)?)))
            .collect::<Result<_, String>>()?,
        failing: list("failing_steps")
            .iter()
            .map(|f| {
                Ok(Failing {
                    workflow: field(f, "workflow")?,
                    step: field(f, "step")?,
                    failures: field(f, "failures")?,
                    runs: field(f, "runs")?,
                    classes: field(f, "classes")?,
                })
            })
            .collect::<Result<_, String>>()?,
        by_agent: spent("by_agent"),
        by_model: spent("by_model"),
    })
}

/// A token as the server lists it (never its hash).
fn token_of(value: &Value) -> Result<TokenRecord, String> {
    Ok(TokenRecord {
        name: field(value, "name")?,
        hash: String::new(),
        role: field(value, "role")?,
        gate_roles: field(value, "gate_roles")?,
        created_at: time_of(value, "created_at")?.unwrap_or_default(),
        expires_at: time_of(value, "expires_at")?,
        last_used_at: time_of(value, "last_used_at")?,
    })
}

/// The typed error a problem document stands for: what the application
/// would have returned had it run here.
fn typed(status: StatusCode, problem: &Value) -> Error {
    let text = |key: &str| problem.get(key).and_then(Value::as_str).unwrap_or_default().to_owned();
    let (code, detail) = (text("code"), text("detail"));
    let run = problem.get("run").and_then(Value::as_str).and_then(|r| RunId::new(r).ok());
    if let (Some(run), Some(refusal)) = (&run, problem.get("refusal"))
        && let Ok(refusal) = serde_json::from_value(refusal.clone())
    {
        return Error::Engine(EngineError::Refused { run: run.clone(), refusal });
    }
    if let Some(import) = problem.get("import").and_then(|i| serde_json::from_value(i.clone()).ok()) {
        return Error::Import(import);
    }
    if let Some(unmet) = problem.get("unmet").and_then(|u| serde_json::from_value(u.clone()).ok()) {
        return Error::Engine(EngineError::Unmet { run, unmet });
    }
    match code.as_str() {
        "not_found" if run.is_some() => Error::Engine(EngineError::Store(StoreError::NotFound(
            run.map(|r| r.to_string()).unwrap_or_default(),
        ))),
        // A conflict that names a run without a refusal: the run exists.
        "conflict" if run.is_some() => Error::Engine(EngineError::Store(StoreError::AlreadyExists(
            run.map(|r| r.to_string()).unwrap_or_default(),
        ))),
        "invalid_definition" => {
            Error::Definition { name: "definition".into(), problems: problems_of(problem) }
        }
        "invalid_inputs" => {
            let problems: Vec<String> = field(problem, "problems").unwrap_or_default();
            Error::Engine(EngineError::Inputs(problems))
        }
        "version_taken" => match (field(problem, "workflow"), field(problem, "version")) {
            (Ok(workflow), Ok(version)) => Error::Catalog(CatalogError::VersionTaken { workflow, version }),
            _ => Error::Server { status: status.as_u16(), code, detail },
        },
        "unregistered_callee" => match (field(problem, "workflow"), field(problem, "callee")) {
            (Ok(caller), Ok(callee)) => Error::Catalog(CatalogError::UnknownCallee { caller, callee }),
            _ => Error::Server { status: status.as_u16(), code, detail },
        },
        "recursion" => match field(problem, "chain") {
            Ok(chain) => Error::Catalog(CatalogError::Recursion { chain }),
            Err(_) => Error::Server { status: status.as_u16(), code, detail },
        },
        "not_found" if problem.get("workflow").is_some() => {
            match (field::<WorkflowId>(problem, "workflow"), field::<String>(problem, "version")) {
                (Ok(workflow), Ok(version)) => {
                    Error::Catalog(CatalogError::UnknownVersion { workflow, version })
                }
                (Ok(workflow), Err(_)) => Error::Catalog(CatalogError::UnknownWorkflow(workflow)),
                _ => Error::Server { status: status.as_u16(), code, detail },
            }
        }
        "blank_query" => Error::BlankSearch,
        "unauthorized" if problem.get("expired_token").is_some() => {
            Error::Token(TokenError::Expired(text("expired_token")))
        }
        _ => Error::Server { status: status.as_u16(), code, detail },
    }
}

/// The problems of an invalid definition, as the server located them.
fn problems_of(problem: &Value) -> Problems {
    let listed = problem.get("problems").and_then(Value::as_array).cloned().unwrap_or_default();
    Problems(
        listed
            .iter()
            .map(|p| {
                let rule: Rule = field(p, "rule").unwrap_or(Rule::Syntax);
                let message: String = field(p, "message").unwrap_or_default();
                let location =
                    match (p.get("line").and_then(Value::as_u64), p.get("column").and_then(Value::as_u64)) {
                        (Some(line), Some(column)) => Some(Location {
                            line: usize::try_from(line).unwrap_or(0),
                            column: usize::try_from(column).unwrap_or(0),
                        }),
                        _ => None,
                    };
                let mut problem = Problem::at(rule, location, message);
                problem.subject = field(p, "path").unwrap_or_default();
                problem
            })
            .collect(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_problem_becomes_the_typed_error_it_was_made_from() {
        let refused = json!({"code": "conflict", "detail": "d", "run": "r1", "refusal": {"kind": "ended", "status": "completed"}});
        assert!(matches!(
            typed(StatusCode::CONFLICT, &refused),
            Error::Engine(EngineError::Refused {
                refusal: cairn_domain::steer::Refusal::Ended { status: RunStatus::Completed },
                ..
            })
        ));
        let missing = json!({"code": "not_found", "detail": "no run `r9`", "run": "r9"});
        assert!(matches!(
            typed(StatusCode::NOT_FOUND, &missing),
            Error::Engine(EngineError::Store(StoreError::NotFound(run))) if run == "r9"
        ));
        let invalid = json!({"code": "invalid_definition", "detail": "d", "problems": [
            {"line": 3, "column": 5, "path": "steps[0].id", "rule": "syntax", "message": "bad"}]});
        let Error::Definition { problems, .. } = typed(StatusCode::UNPROCESSABLE_ENTITY, &invalid) else {
            panic!("a definition error");
        };
        assert_eq!(problems.0[0].render("wf.yaml"), "wf.yaml:3:5: steps[0].id: bad");
        let exists = json!({"code": "conflict", "detail": "d", "run": "once"});
        assert!(matches!(
            typed(StatusCode::CONFLICT, &exists),
            Error::Engine(EngineError::Store(StoreError::AlreadyExists(run))) if run == "once"
        ));
        let expired = json!({"code": "unauthorized", "detail": "no longer", "expired_token": "ci"});
        assert!(matches!(
            typed(StatusCode::UNAUTHORIZED, &expired),
            Error::Token(TokenError::Expired(name)) if name == "ci"
        ));
        let other = json!({"code": "unauthorized", "detail": "send a token that has expired"});
        assert!(
            matches!(typed(StatusCode::UNAUTHORIZED, &other), Error::Server { status: 401, code, .. } if code == "unauthorized")
        );
    }

    #[test]
    fn an_event_as_the_server_sends_it_reads_back_as_stored() {
        let sent =
            json!({"seq": 2, "at": "2026-11-23T04:51:41.123Z", "actor": "engine", "type": "run_started"});
        let event = event_of(sent).expect("reads");
        assert_eq!((event.seq, event.at.0, event.actor.as_str()), (2, 1_795_409_501_123, "engine"));
        assert!(event_of(json!({"seq": 1, "at": "yesterday"})).is_err());
    }

    #[test]
    fn a_summary_reads_back_with_its_totals() {
        let sent = json!({"run_id": "r1", "workflow": "wf", "status": "completed", "driven": false,
            "created_at": "2026-11-23T04:51:41.123Z", "updated_at": "2026-11-23T04:51:42.000Z",
            "usage": {"prompt_tokens": 3, "completion_tokens": 4, "estimated": true, "cost_usd": 0.5}});
        let listed = listed_of(&sent).expect("reads");
        assert_eq!(listed.summary.usage().prompt_tokens, 3);
        assert_eq!(listed.summary.usage().completion_tokens, 4);
        assert_eq!(listed.cost_usd, Some(0.5));
        assert_eq!(listed.summary.status, RunStatus::Completed);
    }
}
