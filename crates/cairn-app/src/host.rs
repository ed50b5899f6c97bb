//! Host wiring: what a binary plugs in (a store, step handlers, providers)
//! and what the config names (HTTP providers, the command fence, prices),
//! put together into an [`App`]. The store is opened through a
//! [`StoreFactory`], so a binary picks its store; [`SledStores`] is the
//! embedded one, which one process holds at a time.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use cairn_command::{CliProvider, LocalCommands};
use cairn_engine::{EngineBuilder, MockLlm, SystemClock};
use cairn_llm_http::HttpProvider;
use cairn_mcp::McpTools;
use cairn_ports::{
    Clock, EventSink, Leases, LlmProvider, RunStore, SearchIndex, Secrets, StepHandler, TokenStore, Tools,
    WorkflowStore,
};
use cairn_search_tantivy::TantivyIndex;
use cairn_store_postgres::PostgresStore;
use cairn_store_sled::{Durability, OpenError, SledStore};
use serde::{Deserialize, Serialize};

use crate::app::{App, Parts};
use crate::config::{Loaded, StoreConfig};
use crate::error::Error;
use crate::follow::{Both, Hub};
use crate::meter::{Meter, MeteredStore};

/// A provider or handler under the name workflows use for it.
pub(crate) type Named<T> = (String, Arc<T>);

/// What a process says of itself while it holds a store, for others that
/// find it held.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Holder {
    /// Its process id.
    pub pid: u32,
    /// The verb it runs.
    pub verb: String,
    /// The run it drives, if any.
    pub run: Option<String>,
    /// The address of the API it serves (`cairn serve`), if any: other
    /// verbs go through it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub address: Option<String>,
}

impl Holder {
    /// This process, running `verb` (on `run`).
    pub fn me(verb: &str, run: Option<&str>) -> Self {
        Self { pid: std::process::id(), verb: verb.into(), run: run.map(str::to_owned), address: None }
    }

    /// `cairn run (pid 123, run r1)`.
    pub fn sentence(&self) -> String {
        match &self.run {
            Some(run) => format!("cairn {} (pid {}, run {run})", self.verb, self.pid),
            None => format!("cairn {} (pid {})", self.verb, self.pid),
        }
    }
}

/// The stores of a data directory: its runs, its API tokens and its
/// workflow catalog (one store may be all three).
#[derive(Clone)]
pub struct Stores {
    /// Where runs live.
    pub runs: Arc<dyn RunStore>,
    /// Where API tokens live.
    pub tokens: Arc<dyn TokenStore>,
    /// Where the workflow catalog lives.
    pub workflows: Arc<dyn WorkflowStore>,
    /// The full-text index of workflows and runs (derived from the others).
    pub search: Arc<dyn SearchIndex>,
    /// The leases of a store many processes share (`None`: one process
    /// holds the store at a time).
    pub leases: Option<Arc<dyn Leases>>,
}

impl Stores {
    /// One store that keeps runs, tokens and the catalog, searched through
    /// an index in memory (filled from the store when first searched).
    pub fn both<S: RunStore + TokenStore + WorkflowStore + 'static>(store: S) -> Self {
        let store = Arc::new(store);
        let search = Arc::new(TantivyIndex::in_memory());
        Self { runs: store.clone(), tokens: store.clone(), workflows: store, search, leases: None }
    }

    /// These stores, searched through `search`.
    pub fn searched_by(self, search: Arc<dyn SearchIndex>) -> Self {
        Self { search, ..self }
    }
}

/// Opens the store a data directory holds. A binary passes one to the CLI
/// (`main.rs` picks [`SledStores`]); a store that admits one process at a
/// time also says which process holds it.
pub trait StoreFactory: Send + Sync {
    /// Opens (or creates) the store at `dir` with the `[store]` settings,
    /// as `holder`; waits up to `wait` for another process to let go of it.
    fn open(
        &self,
        dir: &Path,
        settings: &StoreConfig,
        holder: &Holder,
        wait: Duration,
    ) -> Result<Stores, Error>;

    /// The other live process holding the store at `dir`, if one does.
    fn holder(&self, dir: &Path) -> Option<Holder> {
        let _ = dir;
        None
    }

    /// Whether a store exists at `dir`: a verb that only reads opens none
    /// where none exists (and creates no directory).
    fn exists(&self, dir: &Path) -> bool {
        let _ = dir;
        true
    }
}

/// Where in a data directory the search index lives, beside sled's files.
pub const SEARCH_DIR: &str = "search";

/// The embedded sled store of a data directory ([`SledStore`]): one process
/// holds it at a time and names itself in its holder file.
#[derive(Debug, Clone, Copy, Default)]
pub struct SledStores;

impl StoreFactory for SledStores {
    fn open(
        &self,
        dir: &Path,
        settings: &StoreConfig,
        holder: &Holder,
        wait: Duration,
    ) -> Result<Stores, Error> {
        let durability = match settings.durability.as_deref() {
            None | Some("sync") => Durability::Sync,
            Some("batch") => Durability::Batch { window_ms: 50 },
            Some("none") => Durability::None,
            Some(other) => {
                return Err(Error::Config(format!(
                    "[store] durability `{other}`: use `sync`, `batch` or `none`"
                )));
            }
        };
        let keep = settings.keep_checkpoints.map_or(cairn_store_sled::DEFAULT_KEEP_SNAPSHOTS, |n| n as usize);
        if dir.exists() && !dir.is_dir() {
            return Err(Error::Store(format!(
                "the data directory `{}` is a file, not a directory",
                dir.display()
            )));
        }
        std::fs::create_dir_all(dir).map_err(|e| {
            Error::Store(format!("cannot create the data directory `{}`: {e}", dir.display()))
        })?;
        let described = serde_json::to_string(holder).unwrap_or_default();
        let deadline = std::time::Instant::now() + wait;
        loop {
            match SledStore::open(dir, durability, &described) {
                Ok(store) => {
                    let search =
                        TantivyIndex::open(&dir.join(SEARCH_DIR)).map_err(|e| Error::Store(e.to_string()))?;
                    return Ok(Stores::both(store.keep_snapshots(keep)).searched_by(Arc::new(search)));
                }
                Err(OpenError::Locked { .. }) if std::time::Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(100));
                }
                Err(OpenError::Locked { path, .. }) => {
                    let holder = self.holder(dir).map(|h| h.sentence()).unwrap_or_default();
                    return Err(Error::Store(OpenError::Locked { path, holder }.to_string()));
                }
                // Typed, so the front says what is damaged and what to do.
                Err(OpenError::Damaged(damage)) => {
                    return Err(Error::Engine(cairn_engine::EngineError::Store(
                        cairn_ports::StoreError::Damaged(damage),
                    )));
                }
                Err(e) => {
                    return Err(Error::Store(format!("the data directory `{}`: {e}", dir.display())));
                }
            }
        }
    }

    fn exists(&self, dir: &Path) -> bool {
        dir.is_dir()
    }

    fn holder(&self, dir: &Path) -> Option<Holder> {
        let text = std::fs::read_to_string(dir.join(cairn_store_sled::HOLDER_FILE)).ok()?;
        let holder: Holder = serde_json::from_str(&text).ok()?;
        (holder.pid != std::process::id() && process_alive(holder.pid)).then_some(holder)
    }
}

/// The stores the `cairn` binary opens: PostgreSQL when `[store] url` (or
/// `--store`) names a database, else the embedded sled store of the data
/// directory ([`SledStores`]).
#[derive(Debug, Clone, Copy, Default)]
pub struct DefaultStores;

impl StoreFactory for DefaultStores {
    fn open(
        &self,
        dir: &Path,
        settings: &StoreConfig,
        holder: &Holder,
        wait: Duration,
    ) -> Result<Stores, Error> {
        let Some(url) = settings.database() else { return SledStores.open(dir, settings, holder, wait) };
        let opened = tokio::runtime::Handle::try_current()
            .map_err(|e| Error::Store(format!("opening PostgreSQL needs a runtime: {e}")))?
            .block_on(PostgresStore::open(url))
            .map_err(|e| Error::Store(e.to_string()))?;
        let opened = Arc::new(opened.with_term(settings.lease.unwrap_or(cairn_store_postgres::DEFAULT_TERM)));
        // The database is its own search index too, and the workers'
        // leases.
        Ok(Stores {
            runs: opened.clone(),
            tokens: opened.clone(),
            workflows: opened.clone(),
            search: opened.clone(),
            leases: Some(opened),
        })
    }

    fn holder(&self, dir: &Path) -> Option<Holder> {
        SledStores.holder(dir)
    }

    fn exists(&self, dir: &Path) -> bool {
        SledStores.exists(dir)
    }
}

fn process_alive(pid: u32) -> bool {
    let Ok(raw) = i32::try_from(pid) else { return false };
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(raw), None).is_ok()
}

/// What a binary plugs in: its store, its step handlers, its own providers.
#[derive(Clone)]
pub(crate) struct Plugins {
    /// Opens the store of a data directory.
    pub(crate) stores: Arc<dyn StoreFactory>,
    /// `uses:` handlers, by name.
    pub(crate) handlers: Vec<Named<dyn StepHandler>>,
    /// Providers besides the config's, by the name agents use.
    pub(crate) providers: Vec<Named<dyn LlmProvider>>,
    /// The front `cairn serve` runs, if the binary has one.
    pub(crate) front: Option<Arc<dyn crate::service::Front>>,
    /// The client verbs use when a server holds the store, if the binary
    /// has one.
    pub(crate) client: Option<Arc<dyn crate::operations::Connect>>,
}

/// How one process is to run: the data directory, the config, the
/// `--llm` choice, and where live events go.
pub(crate) struct Setup<'a> {
    /// Where the store lives.
    pub(crate) data_dir: &'a Path,
    /// The config.
    pub(crate) loaded: &'a Loaded,
    /// `--llm`: `mock`, `record:FILE`, `replay:FILE`, or a configured provider's name.
    pub(crate) llm: Option<&'a str>,
    /// Where live events go (progress on a terminal).
    pub(crate) sink: Arc<dyn EventSink>,
    /// What this process says of itself to others that find the store held.
    pub(crate) holder: Holder,
    /// The verb only reads: where no store exists it sees an empty one
    /// and creates nothing.
    pub(crate) reads_only: bool,
}

/// How long a verb waits for a store another process holds.
pub(crate) const WAIT_FOR_STORE: Duration = Duration::from_secs(3);

impl Plugins {
    /// The application over the store at `setup.data_dir`, with every
    /// provider and handler this process has, waiting up to `wait` for a
    /// store another process holds.
    pub(crate) fn app(&self, setup: &Setup<'_>, wait: Duration) -> Result<App, Error> {
        let loaded = setup.loaded;
        let clock: Arc<dyn Clock> = Arc::new(SystemClock);
        let commands =
            LocalCommands::new(loaded.command_policy(), &loaded.base).map(Arc::new).map_err(Error::Config);
        let providers = providers(loaded, setup.llm, &clock, commands.as_ref().ok());
        // A verb that only reads runs never fails on settings that only
        // driving a run uses (a provider's URL, a command root).
        let (commands, (every, named)) = if setup.reads_only {
            (commands.ok(), providers.unwrap_or_default())
        } else {
            (Some(commands?), providers?)
        };
        let database = loaded.config.store.database().is_some();
        let stores = if setup.reads_only && !database && !self.stores.exists(setup.data_dir) {
            Stores::both(cairn_engine::MemoryStore::default())
        } else {
            self.stores.open(setup.data_dir, &loaded.config.store, &setup.holder, wait)?
        };
        let hub = Arc::new(Hub::new());
        let sink: Arc<dyn EventSink> = Arc::new(Both(Arc::clone(&setup.sink), hub.clone()));
        let meter = Meter::new();
        let runs: Arc<dyn RunStore> = Arc::new(MeteredStore::new(stores.runs, Arc::clone(&meter)));
        let mut builder = EngineBuilder::new(Arc::clone(&runs))
            .clock(Arc::clone(&clock))
            .sink(sink)
            .prices(loaded.prices())
            .secrets(secrets(loaded))
            .workflows(Arc::clone(&stores.workflows));
        if let Some(leases) = &stores.leases {
            builder = builder.leases(Arc::clone(leases));
        }
        if let Some(commands) = commands {
            // The built-in tools of agents are fenced as command steps are;
            // MCP servers run in the first root.
            let mut tools: Arc<dyn Tools> = Arc::new(cairn_command::BuiltinTools::new(Arc::clone(&commands)));
            let servers = loaded.mcp_servers();
            if !servers.is_empty() {
                tools = Arc::new(McpTools::new(tools, servers, commands.roots()[0].clone()));
            }
            builder = builder.tools(tools).commands(commands);
        }
        for (name, provider) in named.into_iter().chain(self.providers.iter().cloned()) {
            builder = builder.provider(name, provider);
        }
        if let Some(provider) = every {
            builder = builder.every_provider(provider);
        }
        for (name, handler) in &self.handlers {
            builder = builder.handler(name.clone(), Arc::clone(handler));
        }
        let parts = Parts {
            store: runs,
            tokens: stores.tokens,
            workflows: stores.workflows,
            clock,
            prices: loaded.prices(),
            secrets: secrets(loaded),
            hub,
            meter,
            search: stores.search,
        };
        // A verb that only reads never fails on the webhooks' settings.
        let hooks = match loaded.hook_keys() {
            Ok(hooks) => hooks,
            Err(_) if setup.reads_only => crate::hooks::HookKeys::default(),
            Err(e) => return Err(Error::Config(e)),
        };
        Ok(App::new(builder.build(), parts).with_hooks(hooks).with_leases(stores.leases))
    }
}

/// Every secret the config's providers hold (their keys, the credentials
/// in their URLs, the variables passed to CLIs and MCP servers): hidden from whatever this process stores or prints.
/// A config that does not load holds none that could be used.
pub(crate) fn secrets(loaded: &Loaded) -> Secrets {
    let passed = loaded.cli_providers().unwrap_or_default().into_iter().flat_map(|p| p.env);
    let passed = passed.chain(loaded.config.mcp.values().flat_map(|m| m.env.clone()));
    let values = Secrets::new(passed.filter_map(|name| std::env::var(name).ok()));
    let values = loaded.providers().unwrap_or_default().iter().fold(values, |all, p| all.with(&p.secrets()));
    let hooks = loaded.hook_keys().unwrap_or_default();
    values.with(&Secrets::new(hooks.values().map(str::to_owned)))
}

/// The providers `--llm` and the config give: one for every agent (the
/// mock, a replayed cassette, or a configured provider named by `--llm`),
/// and the configured ones by name.
type Providers = (Option<Arc<dyn LlmProvider>>, Vec<Named<dyn LlmProvider>>);

/// The providers, the coding-agent CLIs among them run inside `commands`'
/// fence (none without one: a verb that only reads calls no model).
fn providers(
    loaded: &Loaded,
    llm: Option<&str>,
    clock: &Arc<dyn Clock>,
    commands: Option<&Arc<LocalCommands>>,
) -> Result<Providers, Error> {
    let http_settings = loaded.providers().map_err(Error::Config)?;
    let cli_settings = loaded.cli_providers().map_err(Error::Config)?;
    let mut configured: Vec<Named<dyn LlmProvider>> = Vec::new();
    for s in http_settings {
        configured.push((s.name.clone(), Arc::new(HttpProvider::new(s).map_err(Error::Config)?)));
    }
    if let Some(commands) = commands {
        for s in cli_settings {
            configured.push((s.name.clone(), Arc::new(CliProvider::new(Arc::clone(commands), s))));
        }
    }
    match llm {
        Some("mock") => {
            let latency = match std::env::var("CAIRN_MOCK_LATENCY") {
                Ok(text) => text
                    .parse::<cairn_domain::duration::Duration>()
                    .map_err(|e| Error::Config(format!("CAIRN_MOCK_LATENCY: {e}")))?
                    .to_std(),
                Err(_) => Duration::ZERO,
            };
            Ok((Some(Arc::new(MockLlm::new(Arc::clone(clock), latency))), Vec::new()))
        }
        Some(spec) if spec.starts_with("replay:") => {
            let path = PathBuf::from(&spec["replay:".len()..]);
            let replayer = crate::cassette::Replayer::open(&path).map_err(Error::Config)?;
            Ok((Some(Arc::new(replayer)), Vec::new()))
        }
        Some(spec) if spec.starts_with("record:") => {
            let path = PathBuf::from(&spec["record:".len()..]);
            // Opened before anything else, so a cassette that cannot be
            // written is refused before a run exists.
            let cassette = crate::cassette::Cassette::open(&path, secrets(loaded)).map_err(Error::Config)?;
            let cassette = Arc::new(cassette);
            let (every, named) = providers(loaded, None, clock, commands)?;
            let record = |inner: Arc<dyn LlmProvider>| -> Arc<dyn LlmProvider> {
                Arc::new(crate::cassette::Recorder::new(inner, Arc::clone(&cassette)))
            };
            let named = named.into_iter().map(|(n, p)| (n, record(p))).collect();
            Ok((every.map(record), named))
        }
        Some(name) => {
            let Some((_, provider)) = configured.into_iter().find(|(n, _)| n == name) else {
                return Err(Error::Config(format!(
                    "--llm {name}: no provider `{name}` is configured (or use --llm mock)"
                )));
            };
            Ok((Some(provider), Vec::new()))
        }
        None => Ok((None, configured)),
    }
}

/// A runtime for one verb.
pub(crate) fn runtime() -> Result<tokio::runtime::Runtime, Error> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| Error::Config(format!("cannot start the runtime: {e}")))
}

/// Who runs cairn, for the audit trail.
pub fn whoami() -> String {
    ["USER", "LOGNAME", "USERNAME"]
        .iter()
        .find_map(|name| std::env::var(name).ok().filter(|v| !v.is_empty()))
        .unwrap_or_else(|| "unknown".into())
}
