//! The keys webhook deliveries are signed with (`[hooks.WORKFLOW]
//! secret_env`): read from the environment, kept out of every `Debug`.

use std::collections::BTreeMap;

use cairn_domain::id::WorkflowId;

/// A workflow's webhook key.
#[derive(Clone)]
pub enum HookKey {
    /// The key.
    Set(String),
    /// The config names this variable, and it is not set.
    Unset {
        /// The variable.
        env: String,
    },
}

impl std::fmt::Debug for HookKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            HookKey::Set(_) => f.write_str("Set(<hidden>)"),
            HookKey::Unset { env } => write!(f, "Unset({env})"),
        }
    }
}

/// The webhook keys of the workflows the config names.
#[derive(Debug, Clone, Default)]
pub struct HookKeys(BTreeMap<WorkflowId, HookKey>);

impl HookKeys {
    /// The keys, by workflow.
    pub fn new(keys: BTreeMap<WorkflowId, HookKey>) -> Self {
        Self(keys)
    }

    /// The key of `workflow`'s webhook, if the config names one.
    pub fn of(&self, workflow: &WorkflowId) -> Option<&HookKey> {
        self.0.get(workflow)
    }

    /// Every key that is set: secrets the host hides.
    pub fn values(&self) -> impl Iterator<Item = &str> {
        self.0.values().filter_map(|k| match k {
            HookKey::Set(value) => Some(value.as_str()),
            HookKey::Unset { .. } => None,
        })
    }
}
