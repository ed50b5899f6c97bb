//! The full-text index `cairn search` reads: one document per workflow
//! (its latest version's text) and per run (its inputs, outputs and
//! errors), ranked by relevance. It is derived data: the app rebuilds what
//! is missing from the stores, and the index records how far it has come
//! ([`IndexMark`]) in the same commit as the documents.

use std::collections::{BTreeMap, BTreeSet};

use async_trait::async_trait;
use cairn_domain::id::WorkflowId;
use cairn_domain::state::Timestamp;
use serde::{Deserialize, Serialize};

/// What a document stands for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DocKind {
    /// A workflow: its name, description, tags and step prompts.
    Workflow,
    /// A run: its inputs, outputs and error messages.
    Run,
}

impl DocKind {
    /// The name files, flags and JSON use.
    pub fn as_str(self) -> &'static str {
        match self {
            DocKind::Workflow => "workflow",
            DocKind::Run => "run",
        }
    }
}

/// The text fields of a document; a match in an earlier one weighs more.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TextField {
    /// The workflow's id or the run's id.
    Id,
    /// A workflow's display name.
    Name,
    /// A workflow's tags.
    Tags,
    /// A workflow's description.
    Description,
    /// A workflow's step prompts, agents' system prompts and judges' rubrics.
    Prompts,
    /// A run's error messages (its steps' and its own).
    Errors,
    /// A run's inputs.
    Inputs,
    /// A run's step outputs.
    Outputs,
}

impl TextField {
    /// Every field, in weight order.
    pub const ALL: [TextField; 8] = [
        TextField::Id,
        TextField::Name,
        TextField::Tags,
        TextField::Description,
        TextField::Prompts,
        TextField::Errors,
        TextField::Inputs,
        TextField::Outputs,
    ];

    /// The name the index and JSON use.
    pub fn as_str(self) -> &'static str {
        match self {
            TextField::Id => "id",
            TextField::Name => "name",
            TextField::Tags => "tags",
            TextField::Description => "description",
            TextField::Prompts => "prompts",
            TextField::Errors => "errors",
            TextField::Inputs => "inputs",
            TextField::Outputs => "outputs",
        }
    }
}

/// One document: a workflow or a run, with its text by field. Putting a
/// document replaces the one of the same kind and id.
#[derive(Debug, Clone, PartialEq)]
pub struct SearchDoc {
    /// A workflow or a run.
    pub kind: DocKind,
    /// The workflow's id or the run's id.
    pub id: String,
    /// The workflow (of a run, the one it runs).
    pub workflow: WorkflowId,
    /// The text, by field (a field may appear once; absent ones are empty).
    pub text: BTreeMap<TextField, String>,
}

/// What is searched for.
#[derive(Debug, Clone, PartialEq)]
pub struct SearchQuery {
    /// Words, `"a phrase"`, `+required`, `-excluded`, `field:word`; text
    /// the syntax cannot read is searched for as words, never refused.
    pub text: String,
    /// Workflows or runs only.
    pub kind: Option<DocKind>,
    /// One workflow's documents only.
    pub workflow: Option<WorkflowId>,
    /// At most this many hits.
    pub limit: usize,
}

/// A document that matched, best first.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SearchHit {
    /// A workflow or a run.
    pub kind: DocKind,
    /// The workflow's id or the run's id.
    pub id: String,
    /// The workflow (of a run, the one it runs).
    pub workflow: WorkflowId,
    /// Relevance (BM25, fields weighted); only the order means something.
    pub score: f32,
    /// The field the snippet comes from: the best weighted one that matched.
    pub field: TextField,
    /// A short passage of that field, the matching words marked.
    pub snippet: Vec<Fragment>,
}

/// A piece of a snippet: matched words or the text between them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Fragment {
    /// The text.
    pub text: String,
    /// Whether it matched the query.
    pub hit: bool,
}

/// How far an index has come, committed with its documents: the app
/// indexes what changed after it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct IndexMark {
    /// Every run whose last event is older than this is indexed as of
    /// that event.
    pub runs_until: Option<Timestamp>,
    /// The runs indexed whose last event is at `runs_until` itself: another
    /// run's event in that same millisecond is still to index.
    #[serde(default)]
    pub runs_at_until: BTreeSet<String>,
    /// The workflow versions indexed, by id (the version's hash).
    #[serde(default)]
    pub workflows: BTreeMap<WorkflowId, String>,
}

/// Why the index failed.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum SearchError {
    /// The index's files could not be read or written.
    #[error("the search index: {0}")]
    Io(String),
}

/// A full-text index of workflows and runs.
#[cfg_attr(feature = "test-util", mockall::automock)]
#[async_trait]
pub trait SearchIndex: Send + Sync {
    /// Puts `docs` (replacing those of the same kind and id), removes the
    /// runs `gone`, and records `mark`, in one commit: after a crash the
    /// index holds all of it or none.
    async fn commit(
        &self,
        docs: Vec<SearchDoc>,
        gone: Vec<String>,
        mark: IndexMark,
    ) -> Result<(), SearchError>;

    /// How far the last commit came (the default mark when none was made).
    async fn mark(&self) -> Result<IndexMark, SearchError>;

    /// The documents matching `query`, best first.
    async fn search(&self, query: &SearchQuery) -> Result<Vec<SearchHit>, SearchError>;
}
