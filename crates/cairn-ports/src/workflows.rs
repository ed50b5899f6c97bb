//! The workflow catalog port: definitions registered by id, every version
//! kept, runs started from them by id.

use std::collections::BTreeMap;

use async_trait::async_trait;
use cairn_domain::id::WorkflowId;
use cairn_domain::state::Timestamp;

use crate::StoreError;

/// One registered version of a workflow: the exact text and the files it
/// names, as a run started from it records them.
#[derive(Debug, Clone, PartialEq)]
pub struct WorkflowVersion {
    /// The workflow's id (the definition's `id`).
    pub workflow: WorkflowId,
    /// Its version: the definition's `version` when it has one, else the
    /// first 12 hex digits of [`WorkflowVersion::hash`].
    pub version: String,
    /// Its place among the workflow's versions, from 1, in the order they
    /// were registered.
    pub number: u32,
    /// The definition's file name, as registered.
    pub definition_name: String,
    /// The definition's exact text.
    pub definition: String,
    /// Files the definition names (schemas, includes), by the path it
    /// names them with.
    pub files: BTreeMap<String, String>,
    /// `cairn_domain::content_hash` of the text and files: the same hash
    /// is the same version, never stored twice.
    pub hash: String,
    /// When it was registered.
    pub registered_at: Timestamp,
    /// Who registered it.
    pub registered_by: String,
}

/// What registering a version did.
#[derive(Debug, Clone, PartialEq)]
pub enum Registered {
    /// It was stored as a new version.
    Added(WorkflowVersion),
    /// The same text (and files) was stored already, as this version:
    /// nothing was stored.
    Unchanged(WorkflowVersion),
}

impl Registered {
    /// The version registered, new or found.
    pub fn version(&self) -> &WorkflowVersion {
        match self {
            Registered::Added(v) | Registered::Unchanged(v) => v,
        }
    }
}

/// Why a version was not registered.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum RegisterError {
    /// The definition names a version the workflow has with other text: a
    /// version is one text, so a changed definition needs a new `version`.
    #[error("workflow `{workflow}` has a version `{version}` with other text")]
    VersionTaken {
        /// The workflow.
        workflow: WorkflowId,
        /// The version named.
        version: String,
    },
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Where `new` goes among a workflow's stored `versions` (oldest first):
/// the stored version with its hash, or a refusal for a version taken,
/// or `new` numbered after the last. Every store registers by this rule.
pub fn place(versions: &[WorkflowVersion], mut new: WorkflowVersion) -> Result<Registered, RegisterError> {
    if let Some(same) = versions.iter().find(|v| v.hash == new.hash) {
        return Ok(Registered::Unchanged(same.clone()));
    }
    if versions.iter().any(|v| v.version == new.version) {
        return Err(RegisterError::VersionTaken { workflow: new.workflow, version: new.version });
    }
    new.number = versions.last().map_or(1, |v| v.number + 1);
    Ok(Registered::Added(new))
}

/// Where workflow definitions are registered. Registering is atomic per
/// workflow: two registrations of one id never get the same number, and
/// one that returns is durable.
#[cfg_attr(feature = "test-util", mockall::automock)]
#[async_trait]
pub trait WorkflowStore: Send + Sync {
    /// Registers `version` by [`place`] (its `number` is assigned here).
    async fn register(&self, version: WorkflowVersion) -> Result<Registered, RegisterError>;
    /// Every version of `workflow`, oldest first (none for an unknown id).
    async fn versions(&self, workflow: &WorkflowId) -> Result<Vec<WorkflowVersion>, StoreError>;
    /// The latest version of every registered workflow, by id.
    async fn latest(&self) -> Result<Vec<WorkflowVersion>, StoreError>;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn version(v: &str, text: &str) -> WorkflowVersion {
        WorkflowVersion {
            workflow: WorkflowId::new("wf").expect("an id"),
            version: v.into(),
            number: 0,
            definition_name: "wf.yaml".into(),
            definition: text.into(),
            files: BTreeMap::new(),
            hash: cairn_domain::content_hash(text, &BTreeMap::new()),
            registered_at: Timestamp(1),
            registered_by: "pat".into(),
        }
    }

    #[test]
    fn the_same_text_is_the_version_stored_and_a_version_is_one_text() {
        let first = match place(&[], version("1", "a")) {
            Ok(Registered::Added(v)) => v,
            other => panic!("{other:?}"),
        };
        assert_eq!(first.number, 1);
        let stored = [first.clone()];
        assert_eq!(place(&stored, version("1", "a")), Ok(Registered::Unchanged(first.clone())));
        assert_eq!(
            place(&stored, version("1", "b")),
            Err(RegisterError::VersionTaken { workflow: first.workflow.clone(), version: "1".into() })
        );
        match place(&stored, version("2", "b")) {
            Ok(Registered::Added(v)) => assert_eq!(v.number, 2),
            other => panic!("{other:?}"),
        }
    }
}
