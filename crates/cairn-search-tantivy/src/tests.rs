use std::path::PathBuf;

use cairn_domain::state::Timestamp;

use super::*;

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("cairn-search-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

fn wf(id: &str) -> WorkflowId {
    WorkflowId::new(id).unwrap_or_else(|e| panic!("{e}"))
}

fn doc(kind: DocKind, id: &str, workflow: &str, text: &[(TextField, &str)]) -> SearchDoc {
    SearchDoc {
        kind,
        id: id.into(),
        workflow: wf(workflow),
        text: text.iter().map(|(f, t)| (*f, (*t).to_owned())).collect(),
    }
}

fn query(text: &str) -> SearchQuery {
    SearchQuery { text: text.into(), kind: None, workflow: None, limit: 10 }
}

fn ids(hits: &[SearchHit]) -> Vec<&str> {
    hits.iter().map(|h| h.id.as_str()).collect()
}

/// The snippet with its hits in brackets.
fn marked(hit: &SearchHit) -> String {
    hit.snippet.iter().map(|f| if f.hit { format!("[{}]", f.text) } else { f.text.clone() }).collect()
}

fn corpus() -> Vec<SearchDoc> {
    vec![
        doc(
            DocKind::Workflow,
            "ticket-triage",
            "ticket-triage",
            &[
                (TextField::Name, "Ticket triage"),
                (TextField::Tags, "support"),
                (TextField::Description, "Sorts incoming support tickets by urgency."),
                (TextField::Prompts, "Classify this ticket: {{ inputs.ticket }}"),
            ],
        ),
        doc(
            DocKind::Run,
            "r-1",
            "ticket-triage",
            &[
                (TextField::Inputs, "ticket: The printer on floor 3 is on fire"),
                (TextField::Outputs, "urgency: high; team: facilities"),
            ],
        ),
        doc(
            DocKind::Run,
            "r-2",
            "release-notes",
            &[
                (TextField::Inputs, "version: 2.1"),
                (TextField::Errors, "step `draft` failed: the provider timed out after 30s"),
            ],
        ),
    ]
}

async fn filled() -> TantivyIndex {
    let index = TantivyIndex::in_memory();
    index.commit(corpus(), Vec::new(), IndexMark::default()).await.unwrap_or_else(|e| panic!("{e}"));
    index
}

#[tokio::test]
async fn a_match_in_a_name_ranks_above_one_in_an_output_and_the_snippet_marks_it() {
    let index = filled().await;
    let hits = index.search(&query("ticket")).await.unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(ids(&hits), ["ticket-triage", "r-1"]);
    assert_eq!(hits[0].kind, DocKind::Workflow);
    // The id matched too, but the name says more.
    assert_eq!((hits[0].field, marked(&hits[0]).as_str()), (TextField::Name, "[Ticket] triage"));
    assert_eq!(hits[1].field, TextField::Inputs);
    assert_eq!(marked(&hits[1]), "[ticket]: The printer on floor 3 is on fire");
    assert!(hits[0].score > hits[1].score);
}

#[tokio::test]
async fn words_are_stemmed_and_folded_so_failing_finds_failed() {
    let index = filled().await;
    let hits = index.search(&query("FAILING Prövider")).await.unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(ids(&hits), ["r-2"]);
    assert_eq!(hits[0].field, TextField::Errors);
    assert_eq!(marked(&hits[0]), "step `draft` [failed]: the [provider] timed out after 30s");
}

#[tokio::test]
async fn kind_and_workflow_narrow_the_hits() {
    let index = filled().await;
    let runs = SearchQuery { kind: Some(DocKind::Run), ..query("ticket") };
    assert_eq!(ids(&index.search(&runs).await.unwrap_or_else(|e| panic!("{e}"))), ["r-1"]);
    let other = SearchQuery { workflow: Some(wf("release-notes")), ..query("ticket") };
    assert!(index.search(&other).await.unwrap_or_else(|e| panic!("{e}")).is_empty());
    let one = SearchQuery { limit: 1, ..query("ticket") };
    assert_eq!(index.search(&one).await.unwrap_or_else(|e| panic!("{e}")).len(), 1);
}

#[tokio::test]
async fn the_syntax_reads_phrases_and_exclusions_and_never_refuses_text() {
    let index = filled().await;
    let phrase = index.search(&query("\"on fire\"")).await.unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(ids(&phrase), ["r-1"]);
    let excluded = index.search(&query("ticket -printer")).await.unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(ids(&excluded), ["ticket-triage"]);
    let scoped = index.search(&query("errors:provider")).await.unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(ids(&scoped), ["r-2"]);
    for broken in ["\"unclosed", "name:(", "((", ":", "-", "nosuchfield:x ticket", ""] {
        let hits = index.search(&query(broken)).await;
        assert!(hits.is_ok(), "{broken}: {hits:?}");
    }
}

#[tokio::test]
async fn a_put_replaces_the_document_and_gone_runs_leave() {
    let index = filled().await;
    let again = doc(DocKind::Run, "r-1", "ticket-triage", &[(TextField::Outputs, "urgency: low")]);
    index
        .commit(vec![again], vec!["r-2".into()], IndexMark::default())
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(index.search(&query("printer")).await.unwrap_or_else(|e| panic!("{e}")).is_empty());
    let urgency = index.search(&query("urgency")).await.unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(ids(&urgency), ["ticket-triage", "r-1"]);
    assert_eq!(marked(&urgency[1]), "[urgency]: low");
    assert!(index.search(&query("timeout")).await.unwrap_or_else(|e| panic!("{e}")).is_empty());
}

#[tokio::test]
async fn markup_comes_back_as_plain_text() {
    let index = TantivyIndex::in_memory();
    let hostile =
        doc(DocKind::Run, "r-x", "w", &[(TextField::Outputs, "<script>alert(1)</script> <img onerror=x>")]);
    index.commit(vec![hostile], Vec::new(), IndexMark::default()).await.unwrap_or_else(|e| panic!("{e}"));
    let hits = index.search(&query("alert")).await.unwrap_or_else(|e| panic!("{e}"));
    // The snippet ends with its last word; the markup is text like any other.
    assert_eq!(marked(&hits[0]), "<script>[alert](1)</script> <img onerror=x");
}

#[tokio::test]
async fn a_field_is_indexed_up_to_its_limit() {
    let index = TantivyIndex::in_memory();
    let long = format!("{} needle", "é".repeat(MAX_FIELD_BYTES));
    let big = doc(
        DocKind::Run,
        "r-big",
        "w",
        &[(TextField::Outputs, long.as_str()), (TextField::Inputs, "haystack")],
    );
    index.commit(vec![big], Vec::new(), IndexMark::default()).await.unwrap_or_else(|e| panic!("{e}"));
    assert!(index.search(&query("needle")).await.unwrap_or_else(|e| panic!("{e}")).is_empty());
    assert_eq!(index.search(&query("haystack")).await.unwrap_or_else(|e| panic!("{e}")).len(), 1);
}

#[tokio::test]
async fn documents_and_the_mark_outlive_the_process_and_a_damaged_index_starts_empty() {
    let dir = scratch("reopen");
    let mark = IndexMark {
        runs_until: Some(Timestamp(1_700_000_000_000)),
        runs_at_until: ["r-1".to_owned()].into(),
        workflows: [(wf("ticket-triage"), "abc".to_owned())].into(),
    };
    {
        let index = TantivyIndex::open(&dir).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(index.mark().await.unwrap_or_else(|e| panic!("{e}")), IndexMark::default());
        index.commit(corpus(), Vec::new(), mark.clone()).await.unwrap_or_else(|e| panic!("{e}"));
    }
    let index = TantivyIndex::open(&dir).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(index.mark().await.unwrap_or_else(|e| panic!("{e}")), mark);
    assert_eq!(index.search(&query("ticket")).await.unwrap_or_else(|e| panic!("{e}")).len(), 2);
    drop(index);

    std::fs::write(dir.join("meta.json"), b"{ not json").unwrap_or_else(|e| panic!("{e}"));
    let index = TantivyIndex::open(&dir).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(index.mark().await.unwrap_or_else(|e| panic!("{e}")), IndexMark::default());
    assert!(index.search(&query("ticket")).await.unwrap_or_else(|e| panic!("{e}")).is_empty());
    index.commit(corpus(), Vec::new(), mark.clone()).await.unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(index.search(&query("ticket")).await.unwrap_or_else(|e| panic!("{e}")).len(), 2);
    let _ = std::fs::remove_dir_all(&dir);
}
