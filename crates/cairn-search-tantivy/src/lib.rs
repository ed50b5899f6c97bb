//! Full-text search of workflows and runs, on tantivy.
//!
//! What it is: [`TantivyIndex`], the `SearchIndex` port in a directory of
//! its own (beside the embedded store) or in memory. Text is split into
//! words, lowercased, folded to ASCII and stemmed (English), so `failing`
//! finds `failed`; hits are ranked by BM25 with the fields weighted (an
//! id or name weighs more than an output), and each hit carries a snippet
//! of its best field with the matching words marked.
//!
//! What it deliberately does not do: decide what a document holds (the app
//! builds them from runs and workflows), or keep anything the stores do not
//! (the index is derived: one that cannot be opened, or was written by a
//! version with other fields, is emptied and the app fills it again).
//!
//! May depend on: `cairn-domain`, `cairn-ports`, tantivy, tokio (to run
//! the index's blocking work off the async threads). Never on the engine
//! or the app.
//!
//! Read first: [`TantivyIndex`].

use std::path::Path;
use std::sync::{Arc, Mutex, PoisonError};

use async_trait::async_trait;
use cairn_domain::id::WorkflowId;
use cairn_ports::{
    DocKind, Fragment, IndexMark, SearchDoc, SearchError, SearchHit, SearchIndex, SearchQuery, TextField,
};
use tantivy::collector::TopDocs;
use tantivy::directory::MmapDirectory;
use tantivy::query::{BooleanQuery, Occur, Query, QueryParser, TermQuery};
use tantivy::schema::{
    Field, IndexRecordOption, STORED, STRING, Schema, TextFieldIndexing, TextOptions, Value,
};
use tantivy::snippet::{Snippet, SnippetGenerator};
use tantivy::tokenizer::{
    AsciiFoldingFilter, Language, LowerCaser, RemoveLongFilter, SimpleTokenizer, Stemmer, TextAnalyzer,
};
use tantivy::{Index, IndexReader, IndexWriter, ReloadPolicy, TantivyDocument, Term};

/// The text of one field is indexed up to this many bytes (cut at a
/// character boundary): enough for any prompt or error, and an output of
/// megabytes does not bloat the index.
const MAX_FIELD_BYTES: usize = 32 * 1024;

/// A snippet is at most this many characters.
const SNIPPET_CHARS: usize = 160;

/// Memory the writer may fill before it writes a segment (tantivy's floor
/// is 15 MB per thread).
const WRITER_BYTES: usize = 20_000_000;

/// The analyzer text fields use, registered on every open.
const ANALYZER: &str = "cairn";

/// How much a match in each field weighs.
fn boost(field: TextField) -> f32 {
    match field {
        TextField::Id | TextField::Name => 3.0,
        TextField::Tags => 2.5,
        TextField::Description => 2.0,
        TextField::Errors => 1.5,
        TextField::Prompts | TextField::Inputs => 1.0,
        TextField::Outputs => 0.8,
    }
}

/// A `SearchIndex` on tantivy: in a directory, or in memory.
#[derive(Clone)]
pub struct TantivyIndex {
    inner: Arc<Inner>,
}

struct Inner {
    index: Index,
    fields: Fields,
    reader: IndexReader,
    /// Made at the first commit, so a process that only reads takes no
    /// writer lock and no writer memory.
    writer: Mutex<Option<IndexWriter>>,
}

/// The schema's fields.
#[derive(Clone, Copy)]
struct Fields {
    /// `run:ID` or `workflow:ID`, the key a put replaces by.
    key: Field,
    /// `run` or `workflow`, for the kind filter.
    kind: Field,
    /// The workflow, for the workflow filter.
    workflow: Field,
    /// The text fields, in [`TextField::ALL`] order.
    text: [Field; TextField::ALL.len()],
}

impl Fields {
    fn schema() -> (Schema, Fields) {
        let mut builder = Schema::builder();
        let key = builder.add_text_field("key", STRING);
        let kind = builder.add_text_field("kind", STRING | STORED);
        let workflow = builder.add_text_field("workflow", STRING | STORED);
        let indexing = TextFieldIndexing::default()
            .set_tokenizer(ANALYZER)
            .set_index_option(IndexRecordOption::WithFreqsAndPositions);
        let options = TextOptions::default().set_indexing_options(indexing).set_stored();
        let text = TextField::ALL.map(|f| builder.add_text_field(f.as_str(), options.clone()));
        (builder.build(), Fields { key, kind, workflow, text })
    }

    fn text(&self, field: TextField) -> Field {
        self.text[field as usize]
    }
}

fn io(e: impl std::fmt::Display) -> SearchError {
    SearchError::Io(e.to_string())
}

fn key(kind: DocKind, id: &str) -> String {
    format!("{}:{id}", kind.as_str())
}

impl TantivyIndex {
    /// The index in `dir`, created when missing; one that cannot be opened
    /// (damaged, or of another schema) is emptied, to be filled again.
    pub fn open(dir: &Path) -> Result<Self, SearchError> {
        let (schema, fields) = Fields::schema();
        let open = |schema: Schema| -> tantivy::Result<Index> {
            std::fs::create_dir_all(dir)?;
            let index = Index::open_or_create(MmapDirectory::open(dir)?, schema.clone())?;
            // An index of the same field names but other options is another schema.
            if index.schema() != schema {
                return Err(tantivy::TantivyError::SchemaError("another schema".into()));
            }
            Ok(index)
        };
        let index = match open(schema.clone()) {
            Ok(index) => index,
            Err(_) => {
                std::fs::remove_dir_all(dir).map_err(|e| {
                    SearchError::Io(format!("cannot empty the unreadable index `{}`: {e}", dir.display()))
                })?;
                open(schema).map_err(|e| SearchError::Io(format!("`{}`: {e}", dir.display())))?
            }
        };
        Self::over(index, fields)
    }

    /// An index in memory, gone with the process.
    pub fn in_memory() -> Self {
        let (schema, fields) = Fields::schema();
        // In memory, nothing can fail but a bug.
        Self::over(Index::create_in_ram(schema), fields).unwrap_or_else(|e| panic!("an in-memory index: {e}"))
    }

    fn over(index: Index, fields: Fields) -> Result<Self, SearchError> {
        let analyzer = TextAnalyzer::builder(SimpleTokenizer::default())
            .filter(RemoveLongFilter::limit(64))
            .filter(LowerCaser)
            .filter(AsciiFoldingFilter)
            .filter(Stemmer::new(Language::English))
            .build();
        index.tokenizers().register(ANALYZER, analyzer);
        let reader = index.reader_builder().reload_policy(ReloadPolicy::Manual).try_into().map_err(io)?;
        Ok(Self { inner: Arc::new(Inner { index, fields, reader, writer: Mutex::new(None) }) })
    }

    /// Runs `work` on a blocking thread.
    async fn blocking<T: Send + 'static>(
        &self,
        work: impl FnOnce(&Inner) -> Result<T, SearchError> + Send + 'static,
    ) -> Result<T, SearchError> {
        let inner = self.inner.clone();
        tokio::task::spawn_blocking(move || work(&inner)).await.map_err(io)?
    }
}

impl Inner {
    fn commit(&self, docs: Vec<SearchDoc>, gone: Vec<String>, mark: &IndexMark) -> Result<(), SearchError> {
        let mut slot = self.writer.lock().unwrap_or_else(PoisonError::into_inner);
        if slot.is_none() {
            *slot = Some(self.index.writer_with_num_threads(1, WRITER_BYTES).map_err(io)?);
        }
        let Some(writer) = slot.as_mut() else { return Err(io("no writer")) };
        let outcome = self.write(writer, docs, gone, mark);
        if outcome.is_err() {
            // What was added but not committed must not ride on the next commit.
            let _ = writer.rollback();
        }
        outcome?;
        self.reader.reload().map_err(io)
    }

    fn write(
        &self,
        writer: &mut IndexWriter,
        docs: Vec<SearchDoc>,
        gone: Vec<String>,
        mark: &IndexMark,
    ) -> Result<(), SearchError> {
        let f = self.fields;
        for id in gone {
            writer.delete_term(Term::from_field_text(f.key, &key(DocKind::Run, &id)));
        }
        for doc in docs {
            let key = key(doc.kind, &doc.id);
            writer.delete_term(Term::from_field_text(f.key, &key));
            let mut indexed = TantivyDocument::default();
            indexed.add_text(f.key, &key);
            indexed.add_text(f.kind, doc.kind.as_str());
            indexed.add_text(f.workflow, doc.workflow.as_str());
            indexed.add_text(f.text(TextField::Id), &doc.id);
            for (field, text) in &doc.text {
                if *field != TextField::Id {
                    indexed.add_text(f.text(*field), cut(text));
                }
            }
            writer.add_document(indexed).map_err(io)?;
        }
        let mut prepared = writer.prepare_commit().map_err(io)?;
        prepared.set_payload(&serde_json::to_string(mark).map_err(io)?);
        prepared.commit().map_err(io)?;
        Ok(())
    }

    fn mark(&self) -> Result<IndexMark, SearchError> {
        let metas = self.index.load_metas().map_err(io)?;
        // A mark this version cannot read means: index everything again.
        Ok(metas.payload.and_then(|p| serde_json::from_str(&p).ok()).unwrap_or_default())
    }

    fn search(&self, query: &SearchQuery) -> Result<Vec<SearchHit>, SearchError> {
        let f = self.fields;
        let mut parser = QueryParser::for_index(&self.index, f.text.to_vec());
        for field in TextField::ALL {
            parser.set_field_boost(f.text(field), boost(field));
        }
        let (parsed, _unread) = parser.parse_query_lenient(&query.text);
        let mut clauses: Vec<(Occur, Box<dyn Query>)> = vec![(Occur::Must, parsed)];
        if let Some(kind) = query.kind {
            clauses.push((Occur::Must, exact(f.kind, kind.as_str())));
        }
        if let Some(workflow) = &query.workflow {
            clauses.push((Occur::Must, exact(f.workflow, workflow.as_str())));
        }
        let query_all = BooleanQuery::new(clauses);
        let searcher = self.reader.searcher();
        let top = searcher
            .search(&query_all, &TopDocs::with_limit(query.limit.max(1)).order_by_score())
            .map_err(io)?;
        let snippets: Vec<(TextField, SnippetGenerator)> = TextField::ALL
            .into_iter()
            .map(|field| {
                let mut generator =
                    SnippetGenerator::create(&searcher, &query_all, f.text(field)).map_err(io)?;
                generator.set_max_num_chars(SNIPPET_CHARS);
                Ok((field, generator))
            })
            .collect::<Result<_, SearchError>>()?;
        let mut hits = Vec::with_capacity(top.len());
        for (score, address) in top {
            let doc: TantivyDocument = searcher.doc(address).map_err(io)?;
            let stored =
                |field: Field| doc.get_first(field).and_then(|v| v.as_str()).unwrap_or_default().to_owned();
            let kind =
                if stored(f.kind) == DocKind::Workflow.as_str() { DocKind::Workflow } else { DocKind::Run };
            // Written by this index from a valid id; anything else is not ours.
            let Ok(workflow) = WorkflowId::new(stored(f.workflow)) else { continue };
            // The id is shown anyway: a snippet of another field says more.
            let matched: Vec<(TextField, Snippet)> = snippets
                .iter()
                .map(|(field, generator)| (*field, generator.snippet_from_doc(&doc)))
                .filter(|(_, snippet)| !snippet.highlighted().is_empty())
                .collect();
            let best = matched
                .iter()
                .find(|(field, _)| *field != TextField::Id)
                .or(matched.first())
                .map(|(field, snippet)| (*field, fragments(snippet)));
            let (field, snippet) = best.unwrap_or_else(|| self.opening(&doc));
            hits.push(SearchHit { kind, id: stored(f.text(TextField::Id)), workflow, score, field, snippet });
        }
        Ok(hits)
    }

    /// The start of the document's first non-empty field (after its id),
    /// when no field shows a matched word (the query matched only by id).
    fn opening(&self, doc: &TantivyDocument) -> (TextField, Vec<Fragment>) {
        for field in TextField::ALL.into_iter().skip(1) {
            if let Some(text) = doc.get_first(self.fields.text(field)).and_then(|v| v.as_str()) {
                let end = text.char_indices().nth(SNIPPET_CHARS).map_or(text.len(), |(i, _)| i);
                return (field, vec![Fragment { text: text[..end].to_owned(), hit: false }]);
            }
        }
        (TextField::Id, Vec::new())
    }
}

fn exact(field: Field, value: &str) -> Box<dyn Query> {
    Box::new(TermQuery::new(Term::from_field_text(field, value), IndexRecordOption::Basic))
}

/// `text` up to [`MAX_FIELD_BYTES`], cut at a character boundary.
fn cut(text: &str) -> &str {
    if text.len() <= MAX_FIELD_BYTES {
        return text;
    }
    let mut end = MAX_FIELD_BYTES;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

/// A snippet as plain pieces, matched or not: nothing for a client to
/// parse, no markup to escape.
fn fragments(snippet: &Snippet) -> Vec<Fragment> {
    let text = snippet.fragment();
    let mut pieces = Vec::new();
    let mut at = 0;
    for range in snippet.highlighted() {
        if range.start > at {
            pieces.push(Fragment { text: text[at..range.start].to_owned(), hit: false });
        }
        pieces.push(Fragment { text: text[range.clone()].to_owned(), hit: true });
        at = range.end;
    }
    if at < text.len() {
        pieces.push(Fragment { text: text[at..].to_owned(), hit: false });
    }
    pieces
}

#[async_trait]
impl SearchIndex for TantivyIndex {
    async fn commit(
        &self,
        docs: Vec<SearchDoc>,
        gone: Vec<String>,
        mark: IndexMark,
    ) -> Result<(), SearchError> {
        self.blocking(move |inner| inner.commit(docs, gone, &mark)).await
    }

    async fn mark(&self) -> Result<IndexMark, SearchError> {
        self.blocking(Inner::mark).await
    }

    async fn search(&self, query: &SearchQuery) -> Result<Vec<SearchHit>, SearchError> {
        let query = query.clone();
        self.blocking(move |inner| inner.search(&query)).await
    }
}

impl std::fmt::Debug for TantivyIndex {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TantivyIndex").finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests;
