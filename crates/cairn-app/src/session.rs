//! What every run-steering verb shares: the store in the data directory
//! (one process at a time, the holder named to others), the runtime, the
//! engine wired from the config, and signals that pause or cancel.

use std::collections::BTreeSet;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use cairn_command::LocalCommands;
use cairn_domain::definition::Workflow;
use cairn_domain::id::RunId;
use cairn_engine::{Control, Engine, EngineBuilder, MockLlm, SystemClock};
use cairn_llm_http::HttpProvider;
use cairn_ports::{Clock, LlmProvider};
use cairn_store_sled::{Durability, OpenError, SledStore};
use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use crate::config::Loaded;
use crate::progress::Progress;

/// How long a verb waits for a store another process holds.
const WAIT_FOR_STORE: Duration = Duration::from_secs(3);

/// What the holding process says of itself, in the data directory.
#[derive(Debug, Serialize, Deserialize)]
pub struct Holder {
    /// Its process id.
    pub pid: u32,
    /// The verb it runs.
    pub verb: String,
    /// The run it drives, if any.
    pub run: Option<String>,
}

impl Holder {
    fn describe(verb: &str, run: Option<&RunId>) -> String {
        let me = Holder { pid: std::process::id(), verb: verb.into(), run: run.map(ToString::to_string) };
        serde_json::to_string(&me).unwrap_or_default()
    }

    /// The holder of the store at `dir`, if it said who it is.
    pub fn of(dir: &Path) -> Option<Holder> {
        let text = std::fs::read_to_string(dir.join(cairn_store_sled::HOLDER_FILE)).ok()?;
        serde_json::from_str(&text).ok()
    }

    /// `cairn run (pid 123, run r1)`.
    pub fn sentence(&self) -> String {
        match &self.run {
            Some(run) => format!("cairn {} (pid {}, run {run})", self.verb, self.pid),
            None => format!("cairn {} (pid {})", self.verb, self.pid),
        }
    }
}

/// The `[store]` settings.
#[derive(Debug, Clone, Copy)]
pub struct StoreSettings {
    /// When appends reach the disk.
    pub durability: Durability,
    /// Snapshots kept per run (`keep_checkpoints`).
    pub keep_snapshots: usize,
}

/// The store settings the config asks for.
pub fn store_settings(loaded: &Loaded) -> Result<StoreSettings, String> {
    let durability = match loaded.config.store.durability.as_deref() {
        None | Some("sync") => Durability::Sync,
        Some("batch") => Durability::Batch { window_ms: 50 },
        Some("none") => Durability::None,
        Some(other) => return Err(format!("[store] durability `{other}`: use `sync`, `batch` or `none`")),
    };
    let keep =
        loaded.config.store.keep_checkpoints.map_or(cairn_store_sled::DEFAULT_KEEP_SNAPSHOTS, |n| n as usize);
    Ok(StoreSettings { durability, keep_snapshots: keep })
}

/// Opens the store, waiting briefly when another process holds it.
pub fn open_store(
    dir: &Path,
    settings: StoreSettings,
    verb: &str,
    run: Option<&RunId>,
) -> Result<SledStore, OpenError> {
    open_store_within(dir, settings, verb, run, WAIT_FOR_STORE)
}

/// Opens the store, waiting up to `wait` for another process to let go of it.
pub fn open_store_within(
    dir: &Path,
    settings: StoreSettings,
    verb: &str,
    run: Option<&RunId>,
    wait: Duration,
) -> Result<SledStore, OpenError> {
    std::fs::create_dir_all(dir)
        .map_err(|e| OpenError::Corrupt { path: dir.to_path_buf(), reason: e.to_string() })?;
    let holder = Holder::describe(verb, run);
    let deadline = std::time::Instant::now() + wait;
    loop {
        match SledStore::open(dir, settings.durability, &holder)
            .map(|s| s.keep_snapshots(settings.keep_snapshots))
        {
            Err(OpenError::Locked { .. }) if std::time::Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(100));
            }
            Err(OpenError::Locked { path, .. }) => {
                let holder = Holder::of(dir).map(|h| h.sentence()).unwrap_or_default();
                return Err(OpenError::Locked { path, holder });
            }
            other => return other,
        }
    }
}

/// A runtime for one verb.
pub fn runtime() -> Result<tokio::runtime::Runtime, String> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the runtime: {e}"))
}

/// Turns SIGINT into a pause and SIGTERM into a cancel of the run being driven.
pub fn signals(runtime: &tokio::runtime::Runtime) -> watch::Receiver<Control> {
    let (tx, rx) = watch::channel(Control::Run);
    runtime.spawn(async move {
        use tokio::signal::unix::{SignalKind, signal};
        let (Ok(mut interrupt), Ok(mut terminate)) =
            (signal(SignalKind::interrupt()), signal(SignalKind::terminate()))
        else {
            return;
        };
        loop {
            let request = tokio::select! {
                _ = interrupt.recv() => Control::Pause,
                _ = terminate.recv() => Control::Cancel,
            };
            if request == Control::Pause {
                eprintln!("pausing: running steps finish, nothing new starts (SIGTERM cancels)");
            }
            let _ = tx.send(request);
        }
    });
    rx
}

/// The engine for driving runs of `wf`: providers from the config (or the
/// mock), fenced commands, progress on stderr, control from signals.
pub fn engine(
    store: Arc<SledStore>,
    loaded: &Loaded,
    llm: Option<&str>,
    wf: &Workflow,
    control: watch::Receiver<Control>,
) -> Result<Engine, String> {
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let commands = LocalCommands::new(loaded.command_policy(), &loaded.base)?;
    let mut builder = EngineBuilder::new(store)
        .clock(Arc::clone(&clock))
        .sink(Arc::new(Progress::default()))
        .commands(Arc::new(commands))
        .control(control)
        .prices(loaded.prices());
    for (name, provider) in providers(loaded, llm, wf, &clock)? {
        builder = builder.provider(name, provider);
    }
    Ok(builder.build())
}

/// A provider under the name agents use for it.
type Named = (String, Arc<dyn LlmProvider>);

/// The providers every agent of `wf` may name, by name.
fn providers(
    loaded: &Loaded,
    llm: Option<&str>,
    wf: &Workflow,
    clock: &Arc<dyn Clock>,
) -> Result<Vec<Named>, String> {
    let mut names: BTreeSet<String> = wf.agents.values().map(|a| a.provider.to_string()).collect();
    names.insert("default".into());
    let settings = loaded.providers()?;
    let every =
        |p: Arc<dyn LlmProvider>| names.iter().map(|n| (n.clone(), Arc::clone(&p))).collect::<Vec<_>>();
    match llm {
        Some("mock") => {
            let latency = match std::env::var("CAIRN_MOCK_LATENCY") {
                Ok(text) => text
                    .parse::<cairn_domain::duration::Duration>()
                    .map_err(|e| format!("CAIRN_MOCK_LATENCY: {e}"))?
                    .to_std(),
                Err(_) => Duration::ZERO,
            };
            Ok(every(Arc::new(MockLlm::new(Arc::clone(clock), latency))))
        }
        Some(spec) if spec.starts_with("replay:") => {
            let path = std::path::Path::new(&spec["replay:".len()..]);
            Ok(every(Arc::new(crate::cassette::Replayer::open(path)?)))
        }
        Some(spec) if spec.starts_with("record:") => {
            let path = std::path::Path::new(&spec["record:".len()..]);
            providers(loaded, None, wf, clock)?
                .into_iter()
                .map(|(name, inner)| {
                    let recorder = crate::cassette::Recorder::new(inner, path)?;
                    Ok((name, Arc::new(recorder) as Arc<dyn LlmProvider>))
                })
                .collect()
        }
        Some(name) => {
            let Some(s) = settings.into_iter().find(|s| s.name == name) else {
                return Err(format!("--llm {name}: no provider `{name}` is configured (or use --llm mock)"));
            };
            Ok(every(Arc::new(HttpProvider::new(s)?)))
        }
        None => settings
            .into_iter()
            .map(|s| Ok((s.name.clone(), Arc::new(HttpProvider::new(s)?) as Arc<dyn LlmProvider>)))
            .collect(),
    }
}

/// Who runs cairn, for the audit trail.
pub fn whoami() -> String {
    ["USER", "LOGNAME", "USERNAME"]
        .iter()
        .find_map(|name| std::env::var(name).ok().filter(|v| !v.is_empty()))
        .unwrap_or_else(|| "unknown".into())
}
