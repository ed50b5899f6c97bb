//! `cairn search` on PostgreSQL's own full-text search: each workflow or
//! run a row of `cairn_search` with a weighted document (English stemming),
//! matched by `websearch_to_tsquery` (words, `"phrases"`, `-excluded`,
//! `or`; it never refuses text), ranked by `ts_rank_cd`, each hit's snippet
//! cut by `ts_headline` from the best weighted field that matched. The
//! mark of how far the index came is a row of `cairn_meta`, written in the
//! same transaction as the documents.

use async_trait::async_trait;
use cairn_domain::id::WorkflowId;
use cairn_ports::{
    DocKind, Fragment, IndexMark, SearchDoc, SearchError, SearchHit, SearchIndex, SearchQuery, TextField,
};
use tokio_postgres::types::ToSql;

use crate::PostgresStore;

/// Where matched words start and end in a headline: characters stripped
/// from indexed text, so no text can fake them.
const START: char = '\u{1}';
const STOP: char = '\u{2}';

/// The text fields after the id, in weight order, as columns.
const FIELDS: [TextField; 7] = [
    TextField::Name,
    TextField::Tags,
    TextField::Description,
    TextField::Errors,
    TextField::Prompts,
    TextField::Inputs,
    TextField::Outputs,
];

fn failed(e: impl std::fmt::Display) -> SearchError {
    SearchError::Io(e.to_string())
}

fn kind_of(text: &str) -> DocKind {
    if text == DocKind::Workflow.as_str() { DocKind::Workflow } else { DocKind::Run }
}

/// `text` without the headline markers.
fn clean(text: &str) -> String {
    text.replace([START, STOP], " ")
}

/// A headline as pieces, matched or not.
fn fragments(headline: &str) -> Vec<Fragment> {
    let mut pieces = Vec::new();
    let mut hit = false;
    for part in headline.split([START, STOP]) {
        if !part.is_empty() {
            pieces.push(Fragment { text: part.to_owned(), hit });
        }
        hit = !hit;
    }
    pieces
}

#[async_trait]
impl SearchIndex for PostgresStore {
    async fn commit(
        &self,
        docs: Vec<SearchDoc>,
        gone: Vec<String>,
        mark: IndexMark,
    ) -> Result<(), SearchError> {
        let mut client = self.pool.get().await.map_err(failed)?;
        let tx = client.transaction().await.map_err(failed)?;
        for id in &gone {
            tx.execute("DELETE FROM cairn_search WHERE kind = 'run' AND id = $1", &[id])
                .await
                .map_err(failed)?;
        }
        let upsert = tx
            .prepare(
                "INSERT INTO cairn_search (kind, id, workflow, name, tags, description, errors, prompts, inputs, outputs, doc) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, \
                   setweight(to_tsvector('english', $2), 'A') || setweight(to_tsvector('english', $4), 'A') \
                   || setweight(to_tsvector('english', $5), 'B') || setweight(to_tsvector('english', $6), 'B') \
                   || setweight(to_tsvector('english', $7), 'C') || setweight(to_tsvector('english', $8), 'C') \
                   || setweight(to_tsvector('english', $9), 'D') || setweight(to_tsvector('english', $10), 'D')) \
                 ON CONFLICT (kind, id) DO UPDATE SET workflow = EXCLUDED.workflow, name = EXCLUDED.name, \
                   tags = EXCLUDED.tags, description = EXCLUDED.description, prompts = EXCLUDED.prompts, \
                   errors = EXCLUDED.errors, inputs = EXCLUDED.inputs, outputs = EXCLUDED.outputs, doc = EXCLUDED.doc",
            )
            .await
            .map_err(failed)?;
        for doc in &docs {
            let text = |field: TextField| clean(doc.text.get(&field).map_or("", String::as_str));
            let columns: Vec<String> = FIELDS.iter().map(|f| text(*f)).collect();
            let (kind, workflow) = (doc.kind.as_str(), doc.workflow.as_str());
            // `$4` to `$10` are the columns of `FIELDS`, in its order.
            let mut params: Vec<&(dyn ToSql + Sync)> = vec![&kind, &doc.id, &workflow];
            params.extend(columns.iter().map(|c| c as &(dyn ToSql + Sync)));
            tx.execute(&upsert, &params).await.map_err(failed)?;
        }
        let mark = serde_json::to_string(&mark).map_err(failed)?;
        tx.execute(
            "INSERT INTO cairn_meta (key, value) VALUES ('search_mark', $1) \
             ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value",
            &[&mark],
        )
        .await
        .map_err(failed)?;
        tx.commit().await.map_err(failed)
    }

    async fn mark(&self) -> Result<IndexMark, SearchError> {
        let client = self.pool.get().await.map_err(failed)?;
        let row = client
            .query_opt("SELECT value FROM cairn_meta WHERE key = 'search_mark'", &[])
            .await
            .map_err(failed)?;
        // A mark this version cannot read means: index everything again.
        Ok(row.and_then(|r| serde_json::from_str(&r.get::<_, String>(0)).ok()).unwrap_or_default())
    }

    async fn search(&self, query: &SearchQuery) -> Result<Vec<SearchHit>, SearchError> {
        let client = self.pool.get().await.map_err(failed)?;
        let limit = i64::try_from(query.limit.max(1)).unwrap_or(i64::MAX);
        let kind = query.kind.map(DocKind::as_str);
        let workflow = query.workflow.as_ref().map(WorkflowId::as_str);
        // Which fields match, in weight order, to pick the snippet's.
        let matches: Vec<String> = std::iter::once("id")
            .chain(FIELDS.iter().map(|f| f.as_str()))
            .map(|column| format!("to_tsvector('english', {column}) @@ q"))
            .collect();
        let sql = format!(
            "SELECT kind, id, workflow, ts_rank_cd(doc, q)::float8, ARRAY[{}] \
             FROM cairn_search, websearch_to_tsquery('english', $1) AS q \
             WHERE doc @@ q AND ($2::text IS NULL OR kind = $2) AND ($3::text IS NULL OR workflow = $3) \
             ORDER BY 4 DESC, id LIMIT $4",
            matches.join(", ")
        );
        let rows = client.query(&sql, &[&query.text, &kind, &workflow, &limit]).await.map_err(failed)?;
        let mut hits = Vec::with_capacity(rows.len());
        for row in rows {
            let Ok(workflow) = WorkflowId::new(row.get::<_, String>(2)) else { continue };
            let matched: Vec<bool> = row.get(4);
            // The id is shown anyway: another field that matched says more.
            let all = std::iter::once(TextField::Id).chain(FIELDS);
            let field = all
                .clone()
                .zip(matched.iter().copied())
                .filter(|(_, m)| *m)
                .map(|(f, _)| f)
                .find(|f| *f != TextField::Id)
                .unwrap_or(TextField::Id);
            let (kind, id): (String, String) = (row.get(0), row.get(1));
            let headline = client
                .query_one(
                    &format!(
                        "SELECT ts_headline('english', {}, websearch_to_tsquery('english', $1), \
                         'StartSel=' || chr(1) || ', StopSel=' || chr(2) || ', MaxWords=30, MinWords=12') \
                         FROM cairn_search WHERE kind = $2 AND id = $3",
                        field.as_str()
                    ),
                    &[&query.text, &kind, &id],
                )
                .await
                .map_err(failed)?;
            hits.push(SearchHit {
                kind: kind_of(&kind),
                id,
                workflow,
                score: row.get::<_, f64>(3) as f32,
                field,
                snippet: fragments(&headline.get::<_, String>(0)),
            });
        }
        Ok(hits)
    }
}
