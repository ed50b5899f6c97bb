//! The tools of Model Context Protocol servers, offered to agents beside
//! the built-in ones.
//!
//! What it is: [`McpTools`], the `Tools` port over another `Tools` (the
//! built-in file and command tools) and the host's `[mcp.NAME]` servers.
//! A server is a program spoken to over stdio (JSON-RPC 2.0, one message
//! per line, protocol version 2025-06-18, the `client` module). It is
//! started when an agent that lists it first asks for its tools: one per
//! run (killed, with its process group, when the run lets go) or, when the
//! host says `shared`, one for every run of this process. Its tools are
//! offered as `SERVER__TOOL`; a server that died is started anew when next
//! needed.
//!
//! What it deliberately does not do: fence the server's own work (a
//! server is the operator's program, configured in `cairn.toml`; it runs in
//! the first command root with a cleared environment and only the
//! variables the host names), or speak MCP over HTTP.
//!
//! May depend on: `cairn-domain`, `cairn-ports`, tokio (process), nix (to
//! kill a server's process group). Never on the engine or the app.
//!
//! Read first: [`McpTools`], [`McpServer`].

mod client;

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use async_trait::async_trait;
use cairn_domain::id::RunId;
use cairn_domain::state::ErrorClass;
use cairn_ports::{ContextFile, PortError, ToolChoice, ToolError, ToolInvocation, ToolSpec, Tools};
use tokio::sync::OnceCell;

use client::{Connection, Failure, Launch, ServerTool};

/// Between a server's name and its tool's in the name offered to models
/// (`tracker__get_ticket`); server names never hold it.
const SEPARATOR: &str = "__";

/// The variables every server gets from cairn's own environment.
const INHERITED_ENV: [&str; 3] = ["PATH", "HOME", "LANG"];

/// Whether `name` may name a server: 1 to 32 ASCII letters, digits and
/// `-` (never `_`, so a tool's offered name splits one way only).
pub fn is_server_name(name: &str) -> bool {
    (1..=32).contains(&name.len()) && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
}

/// `[mcp.NAME]`: how to run one server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct McpServer {
    /// The program and its arguments.
    pub command: Vec<String>,
    /// One server for every run of this process, rather than one per run.
    pub shared: bool,
    /// Variables passed from cairn's environment, by name and value; their
    /// values are hidden from the errors this adapter reports.
    pub env: Vec<(String, String)>,
    /// How long its handshake and each of its calls may take.
    pub timeout: Duration,
}

/// A started server and the tools it listed.
struct Started {
    connection: Connection,
    tools: Vec<ServerTool>,
}

/// The servers of one run (`Some`), or shared (`None`), by name.
type Key = (Option<RunId>, String);

/// Built-in tools and the tools of MCP servers, behind one port.
pub struct McpTools {
    inner: Arc<dyn Tools>,
    servers: BTreeMap<String, McpServer>,
    cwd: PathBuf,
    live: Mutex<HashMap<Key, Arc<OnceCell<Arc<Started>>>>>,
}

impl McpTools {
    /// `inner`'s tools and those of `servers`, which run in `cwd`.
    pub fn new(inner: Arc<dyn Tools>, servers: BTreeMap<String, McpServer>, cwd: PathBuf) -> Self {
        Self { inner, servers, cwd, live: Mutex::default() }
    }

    /// The server `name` for `run`, started (and its tools listed) if it
    /// is not running yet; otherwise why it could not be.
    async fn server(&self, run: &RunId, name: &str) -> Result<Arc<Started>, PortError> {
        let Some(config) = self.servers.get(name) else {
            return Err(PortError::new(ErrorClass::Fatal, format!("no MCP server `{name}` is configured")));
        };
        let key = (if config.shared { None } else { Some(run.clone()) }, name.to_owned());
        let cell = {
            let mut live = self.live.lock().unwrap_or_else(PoisonError::into_inner);
            if live.get(&key).and_then(|cell| cell.get()).is_some_and(|s| s.connection.is_closed()) {
                live.remove(&key);
            }
            Arc::clone(live.entry(key).or_default())
        };
        let launch = Launch {
            command: config.command.clone(),
            cwd: self.cwd.clone(),
            env: self.env(config),
            timeout: config.timeout,
        };
        let started = cell
            .get_or_try_init(|| async {
                let connection = Connection::start(&launch).await?;
                let tools = connection.tools().await.map_err(|e| connection.why(&e))?;
                Ok::<_, String>(Arc::new(Started { connection, tools }))
            })
            .await;
        started.map(Arc::clone).map_err(|why| {
            PortError::new(
                ErrorClass::Transient,
                hide(&format!("MCP server `{name}` did not start: {why}"), config),
            )
        })
    }

    /// The environment a server runs with.
    fn env(&self, config: &McpServer) -> Vec<(String, String)> {
        let inherited =
            INHERITED_ENV.iter().filter_map(|name| Some((name.to_string(), std::env::var(name).ok()?)));
        inherited.chain(config.env.iter().cloned()).collect()
    }

    /// The server and tool an offered name stands for, when it is a
    /// server's.
    fn route<'a>(&self, offered: &'a str) -> Option<(&str, &'a str)> {
        let (server, tool) = offered.split_once(SEPARATOR)?;
        self.servers.get_key_value(server).map(|(name, _)| (name.as_str(), tool))
    }
}

/// `text` with the values of the variables passed to a server hidden.
fn hide(text: &str, config: &McpServer) -> String {
    config
        .env
        .iter()
        .filter(|(_, value)| value.len() >= 4)
        .fold(text.to_owned(), |text, (name, value)| text.replace(value.as_str(), &format!("[{name}]")))
}

#[async_trait]
impl Tools for McpTools {
    async fn specs(&self, run: &RunId, choice: &ToolChoice) -> Result<Vec<ToolSpec>, PortError> {
        let builtin = ToolChoice { builtin: choice.builtin.clone(), servers: Vec::new() };
        let mut specs = self.inner.specs(run, &builtin).await?;
        for name in &choice.servers {
            let started = self.server(run, name).await?;
            specs.extend(started.tools.iter().map(|tool| ToolSpec {
                name: format!("{name}{SEPARATOR}{}", tool.name),
                description: tool.description.clone(),
                parameters: tool.input_schema.clone(),
            }));
        }
        Ok(specs)
    }

    async fn call(&self, call: ToolInvocation) -> Result<String, ToolError> {
        let Some((server, tool)) = self.route(&call.name) else { return self.inner.call(call).await };
        let started = self.server(&call.run, server).await.map_err(ToolError::Broken)?;
        if !started.tools.iter().any(|t| t.name == tool) {
            return Err(ToolError::Refused(format!("MCP server `{server}` has no tool `{tool}`")));
        }
        let config = &self.servers[server];
        match started.connection.call(tool, &call.arguments, &call.idempotency_key).await {
            Ok((text, false)) => Ok(text),
            Ok((text, true)) => Err(ToolError::Refused(text)),
            Err(failure @ (Failure::Rpc { .. } | Failure::TimedOut)) => {
                Err(ToolError::Refused(format!("`{tool}` of MCP server `{server}`: {failure}")))
            }
            Err(gone @ Failure::Gone(_)) => Err(ToolError::Broken(PortError::new(
                ErrorClass::Transient,
                hide(&format!("MCP server `{server}` stopped: {}", started.connection.why(&gone)), config),
            ))),
        }
    }

    async fn context(&self, patterns: &[String], max_bytes: usize) -> Result<Vec<ContextFile>, PortError> {
        self.inner.context(patterns, max_bytes).await
    }

    async fn release(&self, run: &RunId) {
        self.inner.release(run).await;
        let mut live = self.live.lock().unwrap_or_else(PoisonError::into_inner);
        live.retain(|(owner, _), cell| {
            let mine = owner.as_ref() == Some(run);
            if let (true, Some(started)) = (mine, cell.get()) {
                started.connection.kill();
            }
            !mine
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_names_never_hold_the_separator() {
        assert!(is_server_name("tracker"));
        assert!(is_server_name("git-hub2"));
        for bad in ["", "my_server", "a b", "x/y", &"a".repeat(33)] {
            assert!(!is_server_name(bad), "{bad:?}");
        }
    }

    #[test]
    fn passed_values_are_hidden_from_errors() {
        let config = McpServer {
            command: vec!["x".into()],
            shared: false,
            env: vec![("TRACKER_TOKEN".into(), "tok-123456".into())],
            timeout: Duration::from_secs(1),
        };
        assert_eq!(hide("auth tok-123456 refused", &config), "auth [TRACKER_TOKEN] refused");
    }
}
