//! The config file (`cairn.toml`) and the environment variables that
//! override it. API keys are read from the environment only, never from the
//! file, and never printed.
//!
//! Without `--config` (or `CAIRN_CONFIG`), the file is found the way cargo
//! finds its manifest: `cairn.toml` in the current directory, else in the
//! nearest folder above it. A file with a problem is refused with
//! `FILE:LINE:COL: key.path: message`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use cairn_command::{CliFormat, CliSettings, CommandPolicy, DEFAULT_MAX_OUTPUT};
use cairn_llm_http::{ApiKey, ProviderSettings, StructuredOutput};
use serde::Deserialize;

/// The whole config file.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// OpenAI-compatible servers, by name.
    #[serde(default)]
    pub providers: BTreeMap<String, ProviderConfig>,
    /// USD per million tokens, by model.
    #[serde(default)]
    pub prices: BTreeMap<String, Price>,
    /// What command steps may run.
    #[serde(default)]
    pub commands: CommandsConfig,
    /// Store settings.
    #[serde(default)]
    pub store: StoreConfig,
    /// MCP tool servers, by name.
    #[serde(default, deserialize_with = "mcp_names")]
    pub mcp: BTreeMap<String, McpConfig>,
    /// Webhooks of registered workflows, by workflow id.
    #[serde(default)]
    pub hooks: BTreeMap<String, HookConfig>,
}

/// `[hooks.WORKFLOW]`: how deliveries to `POST /api/v1/hooks/WORKFLOW`
/// are signed.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HookConfig {
    /// The variable holding the HMAC-SHA256 key (never written anywhere).
    pub secret_env: String,
}

/// `[mcp.NAME]`: a Model Context Protocol tool server over stdio.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct McpConfig {
    /// The program and its arguments.
    #[serde(deserialize_with = "program_and_args")]
    pub command: Vec<String>,
    /// One server for every run of this process, rather than one per run.
    #[serde(default)]
    pub shared: bool,
    /// Variables of cairn's environment the server gets (its environment
    /// is otherwise `PATH`, `HOME` and `LANG`).
    #[serde(default)]
    pub env: Vec<String>,
    /// How long its start and each call may take (default 60s).
    #[serde(default, deserialize_with = "duration")]
    pub timeout: Option<Duration>,
}

/// `[providers.NAME]`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProviderConfig {
    /// `http` (an OpenAI-compatible server, the default) or `cli` (a
    /// coding-agent CLI run under the command fence).
    #[serde(default, deserialize_with = "kind_text")]
    pub kind: Option<String>,
    /// A `cli` provider's preset: `claude-code`, `codex` or `gemini`.
    #[serde(default, deserialize_with = "preset_text")]
    pub preset: Option<String>,
    /// A `cli` provider's program and arguments: the whole command (the
    /// prompt on stdin, the answer on stdout), or with a preset the
    /// program run in place of the preset's.
    pub command: Option<Vec<String>>,
    /// Variables of cairn's environment a `cli` provider is given (its keys).
    pub env: Option<Vec<String>>,
    /// The `/v1` base URL (an `http` provider's, required there).
    #[serde(default)]
    pub base_url: String,
    /// The environment variable holding the key.
    pub api_key_env: Option<String>,
    /// The default model.
    pub model: Option<String>,
    /// Request timeout (`120s`).
    #[serde(default, deserialize_with = "duration")]
    pub timeout: Option<Duration>,
    /// Requests in flight to this provider.
    pub max_concurrency: Option<u32>,
    /// Request rate limit.
    pub requests_per_minute: Option<u32>,
    /// Stream answers.
    pub stream: Option<bool>,
    /// The limit on connecting (default 10s).
    #[serde(default, deserialize_with = "duration")]
    pub connect_timeout: Option<Duration>,
    /// The limit on the wait for an answer to start (default: `timeout`).
    #[serde(default, deserialize_with = "duration")]
    pub first_byte_timeout: Option<Duration>,
    /// The limit on a silence inside a streamed answer (default 60s).
    #[serde(default, deserialize_with = "duration")]
    pub idle_timeout: Option<Duration>,
    /// How structured output is requested.
    #[serde(default, deserialize_with = "structured_output_text")]
    pub structured_output: Option<String>,
    /// The longest `Retry-After` obeyed (default 5m): a server that asks
    /// for longer fails the call at once instead of holding the step.
    #[serde(default, deserialize_with = "duration")]
    pub max_retry_after: Option<Duration>,
    /// Bytes of an answer's text kept at most (default 4 MiB), so a server
    /// that never stops cannot fill memory; a longer answer fails.
    #[serde(default, deserialize_with = "answer_bytes")]
    pub max_answer_bytes: Option<usize>,
}

/// `[prices."MODEL"]`: USD per million tokens.
#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Price {
    /// Per million prompt tokens.
    pub prompt: f64,
    /// Per million completion tokens.
    pub completion: f64,
}

/// `[commands]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CommandsConfig {
    /// Programs a command step may run.
    #[serde(default)]
    pub allow: Vec<String>,
    /// Directories a command's working directory must resolve inside.
    #[serde(default = "default_roots")]
    pub roots: Vec<String>,
    /// Bytes kept of each output stream.
    pub max_output: Option<usize>,
}

fn default_roots() -> Vec<String> {
    vec![".".into()]
}

impl Default for CommandsConfig {
    fn default() -> Self {
        Self { allow: Vec::new(), roots: default_roots(), max_output: None }
    }
}

/// `[store]`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StoreConfig {
    /// `sync`, `batch` or `none`.
    #[serde(default, deserialize_with = "durability_text")]
    pub durability: Option<String>,
    /// Checkpoints kept per run.
    pub keep_checkpoints: Option<u32>,
    /// A PostgreSQL database (`postgres://USER@HOST/DB`) that holds the
    /// runs instead of the data directory; `--store` overrides it.
    #[serde(default, deserialize_with = "store_url")]
    pub url: Option<String>,
    /// How long a worker's lease on a run lasts unless renewed (`10s`):
    /// how soon another worker takes over the runs of one that died.
    #[serde(default, deserialize_with = "duration")]
    pub lease: Option<Duration>,
}

impl StoreConfig {
    /// The PostgreSQL URL runs are kept at, if any.
    pub fn database(&self) -> Option<&str> {
        self.url.as_deref()
    }
}

/// Whether `text` names a PostgreSQL database, the one store a URL selects.
pub(crate) fn is_database_url(text: &str) -> bool {
    text.starts_with("postgres://") || text.starts_with("postgresql://")
}

/// A store URL, checked as the file is read.
fn store_url<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    let url = String::deserialize(d)?;
    if !is_database_url(&url) {
        return Err(serde::de::Error::custom(
            "a store URL starts with `postgres://` (a PostgreSQL database)",
        ));
    }
    Ok(Some(url))
}

/// A duration (`120s`, `2m`), read as the file is read.
fn duration<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
    let text = String::deserialize(d)?;
    let read = text.parse::<cairn_domain::duration::Duration>().map_err(serde::de::Error::custom)?;
    Ok(Some(read.to_std()))
}

/// A limit on an answer's bytes, checked as the file is read: 0 would
/// refuse every answer, so it is a mistake, not a setting.
fn answer_bytes<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<usize>, D::Error> {
    match usize::deserialize(d)? {
        0 => Err(serde::de::Error::custom("0 would refuse every answer: give at least 1 byte")),
        bytes => Ok(Some(bytes)),
    }
}

/// The `[mcp]` servers, their names checked as the file is read.
fn mcp_names<'de, D: serde::Deserializer<'de>>(d: D) -> Result<BTreeMap<String, McpConfig>, D::Error> {
    let servers = BTreeMap::<String, McpConfig>::deserialize(d)?;
    match servers.keys().find(|name| !cairn_mcp::is_server_name(name)) {
        Some(bad) => Err(serde::de::Error::custom(format!(
            "`{bad}`: a server's name has 1 to 32 letters, digits and `-` (no `_`)"
        ))),
        None => Ok(servers),
    }
}

/// A program and its arguments: at least the program.
fn program_and_args<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    let command = Vec::<String>::deserialize(d)?;
    match command.first() {
        Some(program) if !program.is_empty() => Ok(command),
        _ => Err(serde::de::Error::custom("give the program to run first: `[\"server\", \"--flag\"]`")),
    }
}

/// One of `words`, checked as the file is read.
fn one_of<'de, D: serde::Deserializer<'de>>(d: D, words: &[&str]) -> Result<Option<String>, D::Error> {
    let text = String::deserialize(d)?;
    if words.contains(&text.as_str()) {
        return Ok(Some(text));
    }
    let choices: Vec<String> = words.iter().map(|w| format!("`{w}`")).collect();
    Err(serde::de::Error::custom(format!("`{text}` is not one of {}", choices.join(", "))))
}

fn structured_output_text<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    let words: Vec<&str> = StructuredOutput::ALL.iter().map(|(word, _)| *word).collect();
    one_of(d, &words)
}

fn kind_text<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    one_of(d, &["http", "cli"])
}

fn preset_text<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    let words: Vec<&str> = CliFormat::PRESETS.iter().map(|(word, _)| *word).collect();
    one_of(d, &words)
}

fn durability_text<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    one_of(d, &["sync", "batch", "none"])
}

/// How long a coding-agent CLI may take over one call by default.
const DEFAULT_CLI_TIMEOUT: Duration = Duration::from_secs(30 * 60);

/// How long an MCP server's start and each call may take by default.
const DEFAULT_MCP_TIMEOUT: Duration = Duration::from_secs(60);

/// The file looked for when no `--config` is given.
pub const FILE_NAME: &str = "cairn.toml";

/// The `cairn.toml` in `start` or in the nearest folder above it, up to the
/// root of the file system, as cargo finds its manifest.
pub fn find(start: &Path) -> Option<PathBuf> {
    start.ancestors().map(|dir| dir.join(FILE_NAME)).find(|candidate| candidate.is_file())
}

/// The loaded config, and the folder relative paths in it are taken from.
pub struct Loaded {
    /// The settings.
    pub config: Config,
    /// The config file's folder (the current directory without a file).
    pub base: PathBuf,
}

/// The settings of the environment that override `[providers.default]`.
pub const ENV_BASE_URL: &str = "CAIRN_LLM_BASE_URL";
/// The default provider's key.
pub const ENV_API_KEY: &str = "CAIRN_LLM_API_KEY";
/// The default provider's model.
pub const ENV_MODEL: &str = "CAIRN_LLM_MODEL";

impl Loaded {
    /// Reads `explicit` (which must exist), else the `cairn.toml` of the
    /// current directory or the nearest folder above it ([`find`]), else
    /// the defaults.
    pub fn load(explicit: Option<&Path>) -> Result<Self, String> {
        let cwd = std::env::current_dir().map_err(|e| format!("cannot read the current directory: {e}"))?;
        Self::load_from(explicit, &cwd)
    }

    /// [`Loaded::load`] as if the current directory were `start` (an
    /// absolute path): a relative `explicit` is taken from `start`.
    pub fn load_from(explicit: Option<&Path>, start: &Path) -> Result<Self, String> {
        let (path, shown) = match explicit {
            Some(p) => {
                let path = start.join(p);
                if !path.exists() {
                    return Err(format!(
                        "{}: no such config file (given by --config or CAIRN_CONFIG)",
                        p.display()
                    ));
                }
                (path, p.display().to_string())
            }
            None => match find(start) {
                Some(found) => {
                    let shown = found.strip_prefix(start).unwrap_or(&found).display().to_string();
                    (found, shown)
                }
                None => return Ok(Self { config: Config::default(), base: start.to_path_buf() }),
            },
        };
        let text =
            std::fs::read_to_string(&path).map_err(|e| format!("{shown}: cannot read the config: {e}"))?;
        let config: Config = toml::from_str(&text).map_err(|e| located(&shown, &text, &e))?;
        let base = path.parent().map_or_else(|| start.to_path_buf(), Path::to_path_buf);
        Ok(Self { config, base })
    }

    /// The providers, with `CAIRN_LLM_*` applied to `default`; keys read
    /// from the variables the config names.
    pub fn providers(&self) -> Result<Vec<ProviderSettings>, String> {
        self.providers_with(&|name: &str| std::env::var(name).ok())
    }

    /// [`Loaded::providers`] with the environment variables `var` gives.
    fn providers_with(&self, var: &dyn Fn(&str) -> Option<String>) -> Result<Vec<ProviderSettings>, String> {
        let mut providers = self.config.providers.clone();
        let env = |name: &str| var(name).filter(|v| !v.is_empty());
        if let Some(url) = env(ENV_BASE_URL) {
            providers.entry("default".into()).or_default().base_url = url;
        }
        if let (Some(model), Some(p)) = (env(ENV_MODEL), providers.get_mut("default")) {
            p.model = Some(model);
        }
        let mut out = Vec::new();
        for (name, p) in providers {
            if p.kind.as_deref() == Some("cli") {
                continue;
            }
            for (key, set) in
                [("preset", p.preset.is_some()), ("command", p.command.is_some()), ("env", p.env.is_some())]
            {
                if set {
                    return Err(format!("providers.{name}.{key}: only a `kind = \"cli\"` provider has one"));
                }
            }
            if p.base_url.is_empty() {
                return Err(format!("providers.{name}: the provider has no base_url"));
            }
            let from_env_key = name == "default" && env(ENV_API_KEY).is_some();
            let setting =
                if from_env_key { ENV_API_KEY.to_owned() } else { p.api_key_env.clone().unwrap_or_default() };
            let api_key = if setting.is_empty() { None } else { env(&setting).map(ApiKey::new) };
            let mut settings = ProviderSettings::new(name.clone(), p.base_url.clone());
            settings.api_key = api_key;
            settings.api_key_setting = if setting.is_empty() { ENV_API_KEY.to_owned() } else { setting };
            settings.model = p.model.clone();
            if let Some(t) = p.timeout {
                settings.timeout = t;
                settings.first_byte_timeout = t;
            }
            if let Some(t) = p.connect_timeout {
                settings.connect_timeout = t;
            }
            if let Some(t) = p.first_byte_timeout {
                settings.first_byte_timeout = t;
            }
            if let Some(t) = p.idle_timeout {
                settings.idle_timeout = t;
            }
            settings.stream = p.stream.unwrap_or(true);
            if let Some(mode) = &p.structured_output {
                settings.structured_output = StructuredOutput::ALL
                    .iter()
                    .find(|(word, _)| word == mode)
                    .map(|(_, m)| *m)
                    .ok_or_else(|| {
                        format!(
                            "providers.{name}.structured_output: `{mode}`: use `json_schema`, `json_object` or `prompt`"
                        )
                    })?;
            }
            if let Some(t) = p.max_retry_after {
                settings.max_retry_after = t;
            }
            if let Some(bytes) = p.max_answer_bytes {
                settings.max_answer_bytes = bytes;
            }
            settings.max_concurrency = p.max_concurrency;
            settings.requests_per_minute = p.requests_per_minute;
            out.push(settings);
        }
        Ok(out)
    }

    /// The coding-agent CLIs among the providers (`kind = "cli"`).
    pub fn cli_providers(&self) -> Result<Vec<CliSettings>, String> {
        let mut out = Vec::new();
        for (name, p) in &self.config.providers {
            if p.kind.as_deref() != Some("cli") {
                continue;
            }
            let http_only = [
                ("base_url", !p.base_url.is_empty()),
                ("api_key_env", p.api_key_env.is_some()),
                ("stream", p.stream.is_some()),
                ("structured_output", p.structured_output.is_some()),
                ("connect_timeout", p.connect_timeout.is_some()),
                ("first_byte_timeout", p.first_byte_timeout.is_some()),
                ("idle_timeout", p.idle_timeout.is_some()),
                ("max_retry_after", p.max_retry_after.is_some()),
                ("max_answer_bytes", p.max_answer_bytes.is_some()),
                ("max_concurrency", p.max_concurrency.is_some()),
                ("requests_per_minute", p.requests_per_minute.is_some()),
            ];
            if let Some((key, _)) = http_only.iter().find(|(_, set)| *set) {
                return Err(format!("providers.{name}.{key}: a `cli` provider has none (it runs a program)"));
            }
            let format = match &p.preset {
                Some(preset) => CliFormat::PRESETS.iter().find(|(word, _)| word == preset).map(|(_, f)| *f),
                None => Some(CliFormat::Plain),
            };
            let Some(format) = format else {
                return Err(format!(
                    "providers.{name}.preset: `{}` is not a preset",
                    p.preset.as_deref().unwrap_or_default()
                ));
            };
            let command = p.command.clone().unwrap_or_default();
            if command.first().is_none_or(String::is_empty)
                && (format == CliFormat::Plain || !command.is_empty())
            {
                return Err(format!(
                    "providers.{name}: a `cli` provider needs a `preset` or a `command` (the program first)"
                ));
            }
            out.push(CliSettings {
                name: name.clone(),
                format,
                command,
                model: p.model.clone(),
                timeout: p.timeout.unwrap_or(DEFAULT_CLI_TIMEOUT),
                env: p.env.clone().unwrap_or_default(),
            });
        }
        Ok(out)
    }

    /// The configured prices, as the engine reads them for budgets.
    pub fn prices(&self) -> BTreeMap<String, cairn_domain::program::Price> {
        self.config
            .prices
            .iter()
            .map(|(m, p)| {
                (m.clone(), cairn_domain::program::Price { prompt: p.prompt, completion: p.completion })
            })
            .collect()
    }

    /// The command fence.
    pub fn command_policy(&self) -> CommandPolicy {
        let c = &self.config.commands;
        CommandPolicy {
            allow: c.allow.clone(),
            roots: c.roots.iter().map(PathBuf::from).collect(),
            max_output: c.max_output.unwrap_or(DEFAULT_MAX_OUTPUT),
        }
    }

    /// The keys webhook deliveries are signed with, read from the
    /// variables the config names; refused for a name that is not a
    /// workflow id.
    pub fn hook_keys(&self) -> Result<crate::hooks::HookKeys, String> {
        let mut keys = BTreeMap::new();
        for (workflow, hook) in &self.config.hooks {
            let id = cairn_domain::id::WorkflowId::new(workflow.as_str())
                .map_err(|e| format!("[hooks.{workflow}]: {e}"))?;
            let key = match std::env::var(&hook.secret_env) {
                Ok(value) if !value.is_empty() => crate::hooks::HookKey::Set(value),
                _ => crate::hooks::HookKey::Unset { env: hook.secret_env.clone() },
            };
            keys.insert(id, key);
        }
        Ok(crate::hooks::HookKeys::new(keys))
    }

    /// The MCP servers, with the variables they are given read from the
    /// environment (one that is not set is not given).
    pub fn mcp_servers(&self) -> BTreeMap<String, cairn_mcp::McpServer> {
        self.config
            .mcp
            .iter()
            .map(|(name, c)| {
                let server = cairn_mcp::McpServer {
                    command: c.command.clone(),
                    shared: c.shared,
                    env: c.env.iter().filter_map(|v| Some((v.clone(), std::env::var(v).ok()?))).collect(),
                    timeout: c.timeout.unwrap_or(DEFAULT_MCP_TIMEOUT),
                };
                (name.clone(), server)
            })
            .collect()
    }

    /// The cost in USD of `usage` by model, when every model has a price.
    pub fn cost(&self, usage: &BTreeMap<String, cairn_domain::state::TokenUsage>) -> Option<f64> {
        let (sum, every_model_priced) = cairn_domain::program::priced(usage, &self.prices());
        every_model_priced.then_some(sum)
    }
}

/// A refusal of the config file at `shown`: where it is, the dotted key it
/// is about, and what is wrong (`cairn.toml:3:19: providers.default.timeout: ...`).
fn located(shown: &str, text: &str, e: &toml::de::Error) -> String {
    let message = e.message().trim();
    let Some(span) = e.span() else { return format!("{shown}: {message}") };
    let before = &text[..span.start.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    let key = key_at(text, span.start);
    if key.is_empty() {
        format!("{shown}:{line}:{column}: {message}")
    } else {
        format!("{shown}:{line}:{column}: {key}: {message}")
    }
}

/// The dotted path of the innermost key whose name or value holds the byte `at`.
fn key_at(text: &str, at: usize) -> String {
    fn walk(table: &toml::de::DeTable<'_>, at: usize, path: &mut Vec<String>) -> bool {
        let holds = |span: std::ops::Range<usize>| span.start <= at && at < span.end.max(span.start + 1);
        for (key, value) in table {
            let name = key.get_ref();
            let plain =
                !name.is_empty() && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
            path.push(if plain { name.to_string() } else { format!("\"{name}\"") });
            // A table's span need not cover its keys (a `[header]` table's
            // keys follow it): look inside every table.
            if holds(key.span()) {
                return true;
            }
            let inside = matches!(value.get_ref(), toml::de::DeValue::Table(inner) if walk(inner, at, path));
            if inside || holds(value.span()) {
                return true;
            }
            path.pop();
        }
        false
    }
    let mut path = Vec::new();
    if let Ok(doc) = toml::de::DeTable::parse(text) {
        walk(doc.get_ref(), at, &mut path);
    }
    path.join(".")
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;
    use std::path::{Path, PathBuf};
    use std::time::Duration;

    use cairn_command::{CliFormat, DEFAULT_MAX_OUTPUT};
    use cairn_llm_http::{ProviderSettings, StructuredOutput};

    use super::{DEFAULT_CLI_TIMEOUT, FILE_NAME, Loaded, find};

    /// A fresh folder of this test process for `name`.
    fn temp(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("cairn-config-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("temp dir");
        dir
    }

    /// `text` loaded as the `cairn.toml` of a fresh folder.
    fn load(name: &str, text: &str) -> Result<Loaded, String> {
        let dir = temp(name);
        std::fs::write(dir.join(FILE_NAME), text).expect("write");
        Loaded::load_from(None, &dir)
    }

    /// The providers of `loaded` with only the variables `vars` set.
    fn providers(loaded: &Loaded, vars: &[(&str, &str)]) -> Vec<ProviderSettings> {
        let vars: HashMap<String, String> =
            vars.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect();
        loaded.providers_with(&|name: &str| vars.get(name).cloned()).expect("providers")
    }

    const EVERY_KEY: &str = r#"
[providers.default]
base_url = "http://127.0.0.1:8000/v1"
api_key_env = "MY_KEY"
model = "gpt-4o-mini"
timeout = "90s"
connect_timeout = "5s"
first_byte_timeout = "30s"
idle_timeout = "2m"
stream = false
structured_output = "json_object"
max_concurrency = 8
requests_per_minute = 600
max_retry_after = "90s"
max_answer_bytes = 65536

[providers.local]
base_url = "http://127.0.0.1:11434/v1"
model = "qwen2.5:7b"
structured_output = "prompt"

[prices."gpt-4o-mini"]
prompt = 0.15
completion = 0.60

[commands]
allow = ["cargo", "git", "echo"]
roots = [".", "work"]
max_output = 4096

[store]
durability = "batch"
keep_checkpoints = 7
"#;

    #[test]
    fn every_key_of_the_file_is_read() {
        let loaded = load("every_key", EVERY_KEY).expect("a valid config");
        let all = providers(&loaded, &[("MY_KEY", "sk-test")]);
        let names: Vec<&str> = all.iter().map(|p| p.name.as_str()).collect();
        assert_eq!(names, ["default", "local"]);
        let p = &all[0];
        assert_eq!(p.base_url, "http://127.0.0.1:8000/v1");
        assert!(p.api_key.is_some(), "the key is read from MY_KEY");
        assert_eq!(p.api_key_setting, "MY_KEY");
        assert_eq!(p.model.as_deref(), Some("gpt-4o-mini"));
        assert_eq!(p.timeout, Duration::from_secs(90));
        assert_eq!(p.connect_timeout, Duration::from_secs(5));
        assert_eq!(p.first_byte_timeout, Duration::from_secs(30));
        assert_eq!(p.idle_timeout, Duration::from_secs(120));
        assert!(!p.stream);
        assert_eq!(p.structured_output, StructuredOutput::JsonObject);
        assert_eq!(p.max_concurrency, Some(8));
        assert_eq!(p.requests_per_minute, Some(600));
        assert_eq!(p.max_retry_after, Duration::from_secs(90));
        assert_eq!(p.max_answer_bytes, 65536);
        let local = &all[1];
        assert_eq!(
            (local.base_url.as_str(), local.model.as_deref(), local.structured_output),
            ("http://127.0.0.1:11434/v1", Some("qwen2.5:7b"), StructuredOutput::Prompt)
        );
        assert!(local.api_key.is_none());
        let prices = loaded.prices();
        assert_eq!(prices.len(), 1);
        let price = prices["gpt-4o-mini"];
        assert_eq!((price.prompt, price.completion), (0.15, 0.60));
        let policy = loaded.command_policy();
        assert_eq!(policy.allow, ["cargo", "git", "echo"]);
        assert_eq!(policy.roots, [PathBuf::from("."), PathBuf::from("work")]);
        assert_eq!(policy.max_output, 4096);
        assert_eq!(loaded.config.store.durability.as_deref(), Some("batch"));
        assert_eq!(loaded.config.store.keep_checkpoints, Some(7));
    }

    #[test]
    fn keys_left_out_take_their_defaults() {
        let loaded = load("defaults", "[providers.default]\nbase_url = \"http://h/v1\"\n").expect("valid");
        let p = &providers(&loaded, &[])[0];
        let built_in = ProviderSettings::new("default", "http://h/v1");
        assert_eq!(
            (p.timeout, p.connect_timeout, p.first_byte_timeout, p.idle_timeout),
            (built_in.timeout, built_in.connect_timeout, built_in.first_byte_timeout, built_in.idle_timeout)
        );
        assert!(p.stream && p.api_key.is_none() && p.model.is_none());
        assert_eq!(p.api_key_setting, "CAIRN_LLM_API_KEY");
        assert_eq!(p.structured_output, StructuredOutput::JsonSchema);
        assert_eq!((p.max_concurrency, p.requests_per_minute), (None, None));
        assert_eq!(
            (p.max_retry_after, p.max_answer_bytes),
            (built_in.max_retry_after, built_in.max_answer_bytes)
        );
        let policy = loaded.command_policy();
        assert!(policy.allow.is_empty());
        assert_eq!(policy.roots, [PathBuf::from(".")]);
        assert_eq!(policy.max_output, DEFAULT_MAX_OUTPUT);
        assert!(loaded.prices().is_empty());
        assert_eq!(
            (loaded.config.store.durability.as_deref(), loaded.config.store.keep_checkpoints),
            (None, None)
        );
    }

    #[test]
    fn timeout_also_bounds_the_first_byte_unless_that_is_set() {
        let loaded = load("timeout", "[providers.default]\nbase_url = \"http://h/v1\"\ntimeout = \"7s\"\n")
            .expect("ok");
        let p = &providers(&loaded, &[])[0];
        assert_eq!((p.timeout, p.first_byte_timeout), (Duration::from_secs(7), Duration::from_secs(7)));
    }

    #[test]
    fn max_retry_after_and_max_answer_bytes_reach_the_provider() {
        let text = "[providers.default]\nbase_url = \"http://h/v1\"\nmax_retry_after = \"1h30m\"\nmax_answer_bytes = 1048576\n\n[providers.other]\nbase_url = \"http://o/v1\"\nmax_retry_after = \"0s\"\n";
        let loaded = load("limits", text).expect("valid");
        let all = providers(&loaded, &[]);
        assert_eq!((all[0].max_retry_after, all[0].max_answer_bytes), (Duration::from_secs(5400), 1 << 20));
        let built_in = ProviderSettings::new("other", "http://o/v1");
        assert_eq!(
            (all[1].max_retry_after, all[1].max_answer_bytes),
            (Duration::ZERO, built_in.max_answer_bytes),
            "each provider its own; `0s` obeys no wait at all"
        );
    }

    #[test]
    fn the_environment_overrides_the_default_provider() {
        let loaded = load("env", EVERY_KEY).expect("valid");
        let all = providers(
            &loaded,
            &[
                ("CAIRN_LLM_BASE_URL", "http://elsewhere/v1"),
                ("CAIRN_LLM_MODEL", "other-model"),
                ("CAIRN_LLM_API_KEY", "sk-env"),
            ],
        );
        let p = &all[0];
        assert_eq!((p.base_url.as_str(), p.model.as_deref()), ("http://elsewhere/v1", Some("other-model")));
        assert!(p.api_key.is_some());
        assert_eq!(p.api_key_setting, "CAIRN_LLM_API_KEY", "the key came from the environment");
        assert_eq!(all[1].base_url, "http://127.0.0.1:11434/v1", "other providers are left alone");
        // Without a file, the environment alone makes the default provider.
        let bare = Loaded::load_from(None, &temp("env_bare")).expect("no file");
        let p = providers(&bare, &[("CAIRN_LLM_BASE_URL", "http://only/v1"), ("CAIRN_LLM_MODEL", "m")]);
        assert_eq!(p.len(), 1);
        assert_eq!((p[0].name.as_str(), p[0].base_url.as_str()), ("default", "http://only/v1"));
        assert_eq!(p[0].model.as_deref(), Some("m"));
        // An empty variable counts as unset.
        let p = providers(&loaded, &[("CAIRN_LLM_BASE_URL", ""), ("MY_KEY", "")]);
        assert_eq!(p[0].base_url, "http://127.0.0.1:8000/v1");
        assert!(p[0].api_key.is_none());
    }

    #[test]
    fn cli_providers_are_read_apart_from_the_http_ones() {
        let text = "[providers.claude]\nkind = \"cli\"\npreset = \"claude-code\"\nmodel = \"sonnet\"\nenv = [\"ANTHROPIC_API_KEY\"]\n\n[providers.mine]\nkind = \"cli\"\ncommand = [\"my-agent\", \"--json\"]\ntimeout = \"5m\"\n\n[providers.default]\nbase_url = \"http://h/v1\"\n";
        let loaded = load("cli", text).expect("valid");
        let http: Vec<String> = providers(&loaded, &[]).into_iter().map(|p| p.name).collect();
        assert_eq!(http, ["default"]);
        let cli = loaded.cli_providers().expect("cli");
        assert_eq!(cli.len(), 2);
        assert_eq!(
            (cli[0].name.as_str(), cli[0].format, cli[0].model.as_deref()),
            ("claude", CliFormat::ClaudeCode, Some("sonnet"))
        );
        assert!(cli[0].command.is_empty(), "the preset's own program");
        assert_eq!(
            (cli[0].timeout, cli[0].env.as_slice()),
            (DEFAULT_CLI_TIMEOUT, ["ANTHROPIC_API_KEY".to_owned()].as_slice())
        );
        assert_eq!(
            (cli[1].format, cli[1].command.as_slice()),
            (CliFormat::Plain, ["my-agent".to_owned(), "--json".to_owned()].as_slice())
        );
        assert_eq!(cli[1].timeout, Duration::from_secs(300));
        let refused = [
            (
                "[providers.c]\nkind = \"cli\"\n",
                "providers.c: a `cli` provider needs a `preset` or a `command`",
            ),
            (
                "[providers.c]\nkind = \"cli\"\ncommand = []\n",
                "providers.c: a `cli` provider needs a `preset` or a `command`",
            ),
            (
                "[providers.c]\nkind = \"cli\"\npreset = \"codex\"\nbase_url = \"http://h/v1\"\n",
                "providers.c.base_url: a `cli` provider has none",
            ),
            (
                "[providers.c]\nkind = \"cli\"\npreset = \"codex\"\nstream = false\n",
                "providers.c.stream: a `cli` provider has none",
            ),
        ];
        for (text, error) in refused {
            let loaded = load("cli_bad", text).expect("parses");
            let got = loaded.cli_providers().expect_err(text);
            assert!(got.starts_with(error), "{got}");
        }
        let http = load("cli_http", "[providers.h]\nbase_url = \"http://h/v1\"\npreset = \"codex\"\n")
            .expect("parses");
        let got = http.providers().expect_err("preset on http");
        assert_eq!(got, "providers.h.preset: only a `kind = \"cli\"` provider has one");
    }

    #[test]
    fn mcp_servers_get_their_command_the_named_variables_and_a_timeout() {
        let text = "[mcp.tracker]\ncommand = [\"tracker-mcp\", \"--read-only\"]\nenv = [\"PATH\", \"CAIRN_UNSET_FOR_TEST\"]\nshared = true\ntimeout = \"5s\"\n\n[mcp.git]\ncommand = [\"git-mcp\"]\n";
        let servers = load("mcp", text).expect("valid").mcp_servers();
        let tracker = &servers["tracker"];
        assert_eq!(tracker.command, ["tracker-mcp", "--read-only"]);
        assert!(tracker.shared);
        assert_eq!(tracker.timeout, Duration::from_secs(5));
        let given: Vec<&str> = tracker.env.iter().map(|(name, _)| name.as_str()).collect();
        assert_eq!(given, ["PATH"], "a variable that is not set is not given");
        let git = &servers["git"];
        assert_eq!((git.shared, git.timeout, git.env.len()), (false, Duration::from_secs(60), 0));
    }

    #[test]
    fn bad_values_are_refused_naming_the_key_and_where_it_is() {
        let provider = "[providers.default]\nbase_url = \"http://h/v1\"\n";
        let cases: Vec<(String, &str)> = vec![
            (
                format!("{provider}max_concurrency = \"eight\"\n"),
                "cairn.toml:3:19: providers.default.max_concurrency: invalid type: string \"eight\"",
            ),
            (
                format!("{provider}requests_per_minute = -1\n"),
                "cairn.toml:3:23: providers.default.requests_per_minute: invalid value: integer `-1`",
            ),
            (format!("{provider}timeout = \"soon\"\n"), "cairn.toml:3:11: providers.default.timeout: `soon`"),
            (
                format!("{provider}timeout = 120\n"),
                "cairn.toml:3:11: providers.default.timeout: invalid type",
            ),
            (
                format!("{provider}timeout = \"400d\"\n"),
                "cairn.toml:3:11: providers.default.timeout: `400d` is longer than 365 days",
            ),
            (format!("{provider}connect_timeout = \"1 minute\"\n"), "providers.default.connect_timeout: "),
            (format!("{provider}first_byte_timeout = \"x\"\n"), "providers.default.first_byte_timeout: "),
            (format!("{provider}idle_timeout = \"-3s\"\n"), "providers.default.idle_timeout: "),
            (
                format!("{provider}max_retry_after = \"a while\"\n"),
                "cairn.toml:3:19: providers.default.max_retry_after: `a while`",
            ),
            (
                format!("{provider}max_retry_after = 300\n"),
                "cairn.toml:3:19: providers.default.max_retry_after: invalid type: integer `300`",
            ),
            (
                format!("{provider}max_answer_bytes = \"4MiB\"\n"),
                "cairn.toml:3:20: providers.default.max_answer_bytes: invalid type: string \"4MiB\"",
            ),
            (
                format!("{provider}max_answer_bytes = -1\n"),
                "cairn.toml:3:20: providers.default.max_answer_bytes: invalid value: integer `-1`",
            ),
            (
                format!("{provider}max_answer_bytes = 0\n"),
                "cairn.toml:3:20: providers.default.max_answer_bytes: 0 would refuse every answer",
            ),
            (
                "[providers.local]\nbase_url = \"http://h/v1\"\nmax_retry_after = \"2 hours\"\n".into(),
                "cairn.toml:3:19: providers.local.max_retry_after: `2 hours`",
            ),
            (
                format!("{provider}stream = \"yes\"\n"),
                "cairn.toml:3:10: providers.default.stream: invalid type",
            ),
            (
                format!("{provider}structured_output = \"xml\"\n"),
                "cairn.toml:3:21: providers.default.structured_output: `xml` is not one of `json_schema`, `json_object`, `prompt`",
            ),
            (format!("{provider}model = 4\n"), "cairn.toml:3:9: providers.default.model: invalid type"),
            (format!("{provider}api_key_env = [\"A\"]\n"), "providers.default.api_key_env: invalid type"),
            (
                format!("{provider}modle = \"m\"\n"),
                "cairn.toml:3:1: providers.default.modle: unknown field `modle`",
            ),
            (
                format!("{provider}api_key = \"sk-in-the-file\"\n"),
                "cairn.toml:3:1: providers.default.api_key: unknown field `api_key`",
            ),
            (
                "[providers.default]\nbase_url = 5\n".into(),
                "cairn.toml:2:12: providers.default.base_url: invalid type",
            ),
            ("[provider.default]\nbase_url = \"u\"\n".into(), "provider: unknown field `provider`"),
            (
                "[prices.\"gpt-4.1\"]\nprompt = \"cheap\"\ncompletion = 1.0\n".into(),
                "cairn.toml:2:10: prices.\"gpt-4.1\".prompt: invalid type: string \"cheap\"",
            ),
            ("[prices.m]\nprompt = 1.0\n".into(), "prices.m: missing field `completion`"),
            (
                "[prices.m]\nprompt = 1.0\ncompletion = 2.0\ncached = 0.1\n".into(),
                "prices.m.cached: unknown field",
            ),
            (
                "[providers.c]\nkind = \"grpc\"\n".into(),
                "cairn.toml:2:8: providers.c.kind: `grpc` is not one of `http`, `cli`",
            ),
            (
                "[providers.c]\nkind = \"cli\"\npreset = \"cursor\"\n".into(),
                "cairn.toml:3:10: providers.c.preset: `cursor` is not one of `claude-code`, `codex`, `gemini`",
            ),
            ("[mcp.my_server]\ncommand = [\"x\"]\n".into(), "mcp: `my_server`: a server's name has 1 to 32"),
            (
                "[mcp.t]\ncommand = []\n".into(),
                "cairn.toml:2:11: mcp.t.command: give the program to run first",
            ),
            ("[mcp.t]\nenv = [\"A\"]\n".into(), "mcp.t: missing field `command`"),
            (
                "[mcp.t]\ncommand = [\"x\"]\ntimeout = \"soon\"\n".into(),
                "cairn.toml:3:11: mcp.t.timeout: `soon`",
            ),
            ("[mcp.t]\ncommand = [\"x\"]\nshared = \"yes\"\n".into(), "mcp.t.shared: invalid type"),
            (
                "[commands]\nallow = \"echo\"\n".into(),
                "cairn.toml:2:9: commands.allow: invalid type: string \"echo\"",
            ),
            ("[commands]\nroots = [1]\n".into(), "commands.roots: invalid type: integer `1`"),
            ("[commands]\nmax_output = -5\n".into(), "commands.max_output: invalid value: integer `-5`"),
            (
                "[commands]\nallowed = [\"echo\"]\n".into(),
                "cairn.toml:2:1: commands.allowed: unknown field `allowed`",
            ),
            (
                "[store]\ndurability = \"fast\"\n".into(),
                "cairn.toml:2:14: store.durability: `fast` is not one of `sync`, `batch`, `none`",
            ),
            ("[store]\ndurability = true\n".into(), "store.durability: invalid type: boolean `true`"),
            ("[store]\nkeep_checkpoints = \"all\"\n".into(), "store.keep_checkpoints: invalid type"),
            ("[store]\npath = \"x\"\n".into(), "store.path: unknown field `path`"),
            ("[store]\nlease = \"soon\"\n".into(), "cairn.toml:2:9: store.lease: "),
            ("[store]\ndurability = \n".into(), "cairn.toml:2:14: "),
        ];
        for (i, (text, expected)) in cases.iter().enumerate() {
            let err = load(&format!("bad_{i}"), text).err().unwrap_or_else(|| panic!("accepted:\n{text}"));
            assert!(
                err.starts_with(expected) || err.contains(expected),
                "{text}\ngot: {err}\nwanted: {expected}"
            );
            assert!(!err.contains('\n'), "one line: {err}");
        }
    }

    #[test]
    fn a_provider_without_a_base_url_is_refused_naming_it() {
        let mut loaded = load("no_url", "").expect("empty is valid");
        loaded.config.providers.insert("x".into(), super::ProviderConfig::default());
        let err = loaded.providers_with(&|_: &str| None).expect_err("no base_url");
        assert!(err.starts_with("providers.x: "), "{err}");
    }

    #[test]
    fn an_explicit_config_that_does_not_exist_is_an_error_naming_it() {
        let dir = temp("explicit_missing");
        std::fs::write(dir.join(FILE_NAME), "").expect("a file that must not be read instead");
        let err = Loaded::load_from(Some(Path::new("nope/cairn.toml")), &dir).err().expect("refused");
        assert!(err.starts_with("nope/cairn.toml: no such config file"), "{err}");
        let absolute = dir.join("gone.toml");
        let err = Loaded::load_from(Some(&absolute), &dir).err().expect("refused");
        assert!(err.starts_with(&format!("{}: ", absolute.display())), "{err}");
    }

    #[test]
    fn an_explicit_config_is_read_from_where_it_says_and_relative_paths_are_its_folders() {
        let dir = temp("explicit");
        std::fs::create_dir_all(dir.join("conf")).expect("mkdir");
        std::fs::write(dir.join(FILE_NAME), "[commands]\nallow = [\"ls\"]\n").expect("write");
        std::fs::write(dir.join("conf/other.toml"), "[commands]\nallow = [\"echo\"]\n").expect("write");
        let loaded = Loaded::load_from(Some(Path::new("conf/other.toml")), &dir).expect("read");
        assert_eq!(loaded.config.commands.allow, ["echo"], "the named file, not ./cairn.toml");
        assert_eq!(loaded.base, dir.join("conf"));
    }

    #[test]
    fn the_file_is_found_in_the_nearest_folder_up_to_the_root() {
        let tree = temp("upward");
        let deep = tree.join("a/b/c");
        std::fs::create_dir_all(&deep).expect("mkdir");
        let write = |dir: &Path, allow: &str| {
            std::fs::write(dir.join(FILE_NAME), format!("[commands]\nallow = [\"{allow}\"]\n"))
                .expect("write")
        };
        // Nothing in the tree: whatever is found lies outside it.
        assert!(find(&deep).is_none_or(|p| !p.starts_with(&tree)));
        write(&tree, "top");
        write(&tree.join("a/b"), "middle");
        assert_eq!(find(&deep), Some(tree.join("a/b").join(FILE_NAME)), "the nearest one");
        let loaded = Loaded::load_from(None, &deep).expect("found");
        assert_eq!(loaded.config.commands.allow, ["middle"]);
        assert_eq!(loaded.base, tree.join("a/b"), "relative paths are taken from the file's folder");
        std::fs::remove_file(tree.join("a/b").join(FILE_NAME)).expect("rm");
        assert_eq!(find(&deep), Some(tree.join(FILE_NAME)), "up to the top of the tree");
        assert_eq!(Loaded::load_from(None, &deep).expect("found").config.commands.allow, ["top"]);
        write(&deep, "here");
        assert_eq!(find(&deep), Some(deep.join(FILE_NAME)), "the start folder first");
        // A folder named cairn.toml is not a config file.
        std::fs::remove_file(deep.join(FILE_NAME)).expect("rm");
        std::fs::create_dir(deep.join(FILE_NAME)).expect("a folder of that name");
        assert_eq!(find(&deep), Some(tree.join(FILE_NAME)));
    }

    #[test]
    fn an_error_in_a_file_found_above_names_its_path() {
        let tree = temp("upward_error");
        let deep = tree.join("x/y");
        std::fs::create_dir_all(&deep).expect("mkdir");
        std::fs::write(tree.join(FILE_NAME), "[store]\ndurability = \"fast\"\n").expect("write");
        let err = Loaded::load_from(None, &deep).err().expect("refused");
        assert!(
            err.starts_with(&format!("{}:2:14: store.durability", tree.join(FILE_NAME).display())),
            "{err}"
        );
        std::fs::write(deep.join(FILE_NAME), "[store]\ndurability = \"slow\"\n").expect("write");
        let err = Loaded::load_from(None, &deep).err().expect("refused");
        assert!(err.starts_with("cairn.toml:2:14: store.durability: `slow`"), "{err}");
    }

    #[test]
    fn without_a_file_the_defaults_hold_and_the_base_is_the_start() {
        let dir = temp("none");
        // An explicit empty file is a valid, empty config.
        std::fs::write(dir.join("empty.toml"), "").expect("write");
        let loaded = Loaded::load_from(Some(Path::new("empty.toml")), &dir).expect("empty is fine");
        assert!(loaded.config.providers.is_empty() && loaded.config.commands.allow.is_empty());
        assert_eq!(loaded.base, dir);
    }
}
