//! The tool port: the tools an agent's model may call (the built-in file
//! and command tools, the tools of MCP servers), offered by their specs
//! and run under the host's fence.

use async_trait::async_trait;
use cairn_domain::id::RunId;
use serde_json::Value;

use crate::{PortError, ToolSpec};

/// The tools an agent lists: built-in names and MCP server names.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ToolChoice {
    /// Built-in tools (`read_file`, ...).
    pub builtin: Vec<String>,
    /// MCP servers, every tool of each.
    pub servers: Vec<String>,
}

impl ToolChoice {
    /// Whether the agent lists no tool at all.
    pub fn is_empty(&self) -> bool {
        self.builtin.is_empty() && self.servers.is_empty()
    }

    /// The specs of the built-in tools it lists, on a host with no MCP
    /// server: refused when it lists one.
    pub fn builtin_only(&self) -> Result<Vec<ToolSpec>, PortError> {
        if let Some(server) = self.servers.first() {
            return Err(PortError::new(
                cairn_domain::state::ErrorClass::Permission,
                format!("this host has no MCP server `{server}`"),
            ));
        }
        Ok(builtin_specs(&self.builtin))
    }
}

/// One call to run.
#[derive(Debug, Clone, PartialEq)]
pub struct ToolInvocation {
    /// The run it is made for (a per-run MCP server is that run's).
    pub run: RunId,
    /// The tool's name, as offered.
    pub name: String,
    /// Its arguments, parsed and checked against the tool's schema.
    pub arguments: Value,
    /// `run/step/attempt/tool/CALL`: the same for the same call after a
    /// crash, exported to programs as `CAIRN_IDEMPOTENCY_KEY`.
    pub idempotency_key: String,
}

/// Why a call returned no result.
#[derive(Debug, Clone, PartialEq)]
pub enum ToolError {
    /// Refused or failed in a way the model can act on (a path outside the
    /// roots, a program not allowed, a missing file): the model reads this
    /// as the call's result, and may try something else.
    Refused(String),
    /// The tooling itself failed (a server that died): the attempt fails
    /// with this error's class.
    Broken(PortError),
}

/// Files of the project an agent is given before its system prompt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContextFile {
    /// The path, relative to the root it was found in.
    pub path: String,
    /// Its text.
    pub text: String,
}

/// Where agents' tools run.
///
/// Contract: `specs` offers exactly the tools the choice lists (an MCP
/// server is started, lazily, to list its own); `call` runs one call under
/// the host's fence and never runs a tool it did not offer; `release` stops
/// what a run started (its MCP servers) and is safe to call twice.
#[cfg_attr(feature = "test-util", mockall::automock)]
#[async_trait]
pub trait Tools: Send + Sync {
    /// The specs of the tools `choice` lists, for `run`.
    async fn specs(&self, run: &RunId, choice: &ToolChoice) -> Result<Vec<ToolSpec>, PortError>;
    /// Runs one call; its result is text the model reads.
    async fn call(&self, call: ToolInvocation) -> Result<String, ToolError>;
    /// The files that `patterns` (globs inside the roots) name, each at most
    /// `max_bytes`; a pattern that names nothing, or a file too big, is an
    /// error naming it.
    async fn context(&self, patterns: &[String], max_bytes: usize) -> Result<Vec<ContextFile>, PortError>;
    /// The run stopped (ended, paused, or its driver let go): what it
    /// started stops too.
    async fn release(&self, run: &RunId);
}

/// The specs of the built-in tools under `names` (unknown names are left
/// out): what every host offers, whoever runs them.
fn builtin_specs(names: &[String]) -> Vec<ToolSpec> {
    let string = serde_json::json!({"type": "string"});
    let object = |required: &[&str], properties: Value| serde_json::json!({"type": "object", "required": required, "properties": properties, "additionalProperties": false});
    names
        .iter()
        .filter_map(|name| {
            let (description, parameters) = match name.as_str() {
                "read_file" => (
                    "Reads a text file inside the project. `path` is relative to the project root.",
                    object(&["path"], serde_json::json!({"path": string})),
                ),
                "write_file" => (
                    "Writes a text file inside the project (made or replaced), with the folders it needs.",
                    object(&["path", "content"], serde_json::json!({"path": string, "content": string})),
                ),
                "list_files" => (
                    "Lists the files and folders of a folder inside the project (folders end with `/`).",
                    object(&[], serde_json::json!({"path": string})),
                ),
                "search" => (
                    "Finds the lines that contain `pattern` (plain text) in the files under `path`.",
                    object(&["pattern"], serde_json::json!({"pattern": string, "path": string})),
                ),
                "run_command" => (
                    "Runs an allowed program with its arguments (no shell) in a folder of the project; \
                     answers its exit code, stdout and stderr.",
                    object(
                        &["program"],
                        serde_json::json!({"program": string, "args": {"type": "array", "items": string}, "cwd": string}),
                    ),
                ),
                _ => return None,
            };
            Some(ToolSpec { name: name.clone(), description: description.into(), parameters })
        })
        .collect()
}
