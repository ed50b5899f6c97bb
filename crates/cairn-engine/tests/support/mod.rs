//! What the engine's test files share: definitions, the harness over an
//! in-memory store and a fake clock, and handlers that observe calls.
#![allow(dead_code)]

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use cairn_domain::Definition;
use cairn_domain::id::RunId;
use cairn_domain::steer::Request;
use cairn_engine::{EngineBuilder, MemoryStore, MockLlm, RunControl};
use cairn_ports::{Clock, HandlerCall, PortError, RunStore, StepHandler};
use cairn_testkit::{FakeClock, event_line};
use serde_json::{Value, json};

pub fn definition(yaml: &str) -> Definition {
    Definition {
        name: "wf.yaml".into(),
        text: yaml.into(),
        workflow: cairn_testkit::workflow(yaml),
        files: Default::default(),
    }
}

pub fn run_id() -> RunId {
    RunId::new("run-1").expect("id")
}

pub struct Harness {
    pub store: Arc<MemoryStore>,
    pub clock: Arc<FakeClock>,
}

impl Harness {
    pub fn new() -> Self {
        Self { store: Arc::new(MemoryStore::new()), clock: Arc::new(FakeClock::default()) }
    }

    pub fn builder(&self, llm_latency: Duration) -> EngineBuilder {
        let clock: Arc<dyn Clock> = self.clock.clone();
        EngineBuilder::new(self.store.clone())
            .clock(clock.clone())
            .provider("default", Arc::new(MockLlm::new(clock, llm_latency)))
    }

    pub async fn log(&self) -> String {
        let events = self.store.load(&run_id(), 0).await.expect("run stored").events;
        events.iter().map(event_line).collect::<Vec<_>>().join("\n")
    }
}

/// Counts how many calls are in flight at once.
#[derive(Default)]
pub struct Gauge {
    pub now: AtomicUsize,
    pub max: AtomicUsize,
}

#[async_trait]
impl StepHandler for Gauge {
    async fn call(&self, _: HandlerCall) -> Result<Value, PortError> {
        let n = self.now.fetch_add(1, Ordering::SeqCst) + 1;
        self.max.fetch_max(n, Ordering::SeqCst);
        tokio::time::sleep(Duration::from_millis(100)).await;
        self.now.fetch_sub(1, Ordering::SeqCst);
        Ok(json!(n))
    }
}

/// Records the idempotency key of every call, and can pause or cancel the
/// run from inside a call (through the control set after the engine is built).
pub struct Recorder {
    pub keys: std::sync::Mutex<Vec<String>>,
    request: Option<Request>,
    pub control: std::sync::OnceLock<RunControl>,
    hang: bool,
}

#[async_trait]
impl StepHandler for Recorder {
    async fn call(&self, call: HandlerCall) -> Result<Value, PortError> {
        self.keys.lock().expect("lock").push(call.idempotency_key.clone());
        match (&self.request, self.control.get()) {
            (Some(Request::Pause), Some(control)) => control.pause(),
            (Some(Request::Cancel), Some(control)) => control.cancel(),
            _ => {}
        }
        if self.hang {
            tokio::time::sleep(Duration::from_secs(3600)).await;
        }
        Ok(json!(call.path.as_str()))
    }
}

pub fn recorder(request: Option<Request>, hang: bool) -> Arc<Recorder> {
    Arc::new(Recorder { keys: Default::default(), request, control: Default::default(), hang })
}
