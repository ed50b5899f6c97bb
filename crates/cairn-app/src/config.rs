//! The config file (`cairn.toml`) and the environment variables that
//! override it. API keys are read from the environment only, never from the
//! file, and never printed.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use cairn_command::{CommandPolicy, DEFAULT_MAX_OUTPUT};
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
}

/// `[providers.NAME]`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProviderConfig {
    /// The `/v1` base URL.
    pub base_url: String,
    /// The environment variable holding the key.
    pub api_key_env: Option<String>,
    /// The default model.
    pub model: Option<String>,
    /// Request timeout (`120s`).
    pub timeout: Option<String>,
    /// Requests in flight to this provider.
    pub max_concurrency: Option<u32>,
    /// Request rate limit.
    pub requests_per_minute: Option<u32>,
    /// Stream answers.
    pub stream: Option<bool>,
    /// The limit on connecting (default 10s).
    pub connect_timeout: Option<String>,
    /// The limit on the wait for an answer to start (default: `timeout`).
    pub first_byte_timeout: Option<String>,
    /// The limit on a silence inside a streamed answer (default 60s).
    pub idle_timeout: Option<String>,
    /// How structured output is requested.
    pub structured_output: Option<String>,
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
    pub durability: Option<String>,
    /// Checkpoints kept per run.
    pub keep_checkpoints: Option<u32>,
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
    /// Reads `explicit` (which must exist), else `./cairn.toml` when present,
    /// else the defaults.
    pub fn load(explicit: Option<&Path>) -> Result<Self, String> {
        let (path, required) = match explicit {
            Some(p) => (p.to_path_buf(), true),
            None => (PathBuf::from("cairn.toml"), false),
        };
        let text = match std::fs::read_to_string(&path) {
            Ok(text) => text,
            Err(e) if !required && e.kind() == std::io::ErrorKind::NotFound => {
                return Ok(Self { config: Config::default(), base: PathBuf::from(".") });
            }
            Err(e) => return Err(format!("{}: cannot read the config: {e}", path.display())),
        };
        let config: Config =
            toml::from_str(&text).map_err(|e| format!("{}: {}", path.display(), e.to_string().trim()))?;
        let base =
            path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new(".")).to_path_buf();
        Ok(Self { config, base })
    }

    /// The providers, with `CAIRN_LLM_*` applied to `default`; keys read
    /// from the variables the config names.
    pub fn providers(&self) -> Result<Vec<ProviderSettings>, String> {
        let mut providers = self.config.providers.clone();
        let env = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
        if let Some(url) = env(ENV_BASE_URL) {
            providers.entry("default".into()).or_default().base_url = url;
        }
        if let (Some(model), Some(p)) = (env(ENV_MODEL), providers.get_mut("default")) {
            p.model = Some(model);
        }
        let mut out = Vec::new();
        for (name, p) in providers {
            if p.base_url.is_empty() {
                return Err(format!("provider `{name}` has no base_url"));
            }
            let from_env_key = name == "default" && env(ENV_API_KEY).is_some();
            let setting =
                if from_env_key { ENV_API_KEY.to_owned() } else { p.api_key_env.clone().unwrap_or_default() };
            let api_key = if setting.is_empty() { None } else { env(&setting).map(ApiKey::new) };
            let duration = |key: &str, value: &Option<String>| -> Result<Option<Duration>, String> {
                value
                    .as_deref()
                    .map(|t| {
                        t.parse::<cairn_domain::duration::Duration>()
                            .map(|d| d.to_std())
                            .map_err(|e| format!("provider `{name}`: {key}: {e}"))
                    })
                    .transpose()
            };
            let mut settings = ProviderSettings::new(name.clone(), p.base_url.clone());
            settings.api_key = api_key;
            settings.api_key_setting = if setting.is_empty() { ENV_API_KEY.to_owned() } else { setting };
            settings.model = p.model.clone();
            if let Some(t) = duration("timeout", &p.timeout)? {
                settings.timeout = t;
                settings.first_byte_timeout = t;
            }
            if let Some(t) = duration("connect_timeout", &p.connect_timeout)? {
                settings.connect_timeout = t;
            }
            if let Some(t) = duration("first_byte_timeout", &p.first_byte_timeout)? {
                settings.first_byte_timeout = t;
            }
            if let Some(t) = duration("idle_timeout", &p.idle_timeout)? {
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
                            "provider `{name}`: structured_output `{mode}`: use `json_schema`, `json_object` or `prompt`"
                        )
                    })?;
            }
            settings.max_concurrency = p.max_concurrency;
            settings.requests_per_minute = p.requests_per_minute;
            out.push(settings);
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

    /// The cost in USD of `usage` by model, when every model has a price.
    pub fn cost(&self, usage: &BTreeMap<String, cairn_domain::state::TokenUsage>) -> Option<f64> {
        let (sum, every_model_priced) = cairn_domain::program::priced(usage, &self.prices());
        every_model_priced.then_some(sum)
    }
}
