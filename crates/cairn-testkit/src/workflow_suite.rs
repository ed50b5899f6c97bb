//! The conformance suite of the `WorkflowStore` contract. Every workflow
//! store runs it:
//!
//! ```text
//! cairn_testkit::run_workflow_store_suite!(MemoryStore::new());
//! ```

use std::collections::BTreeMap;

use cairn_domain::id::WorkflowId;
use cairn_domain::state::Timestamp;
use cairn_ports::{RegisterError, Registered, WorkflowStore, WorkflowVersion};

/// A version `version` of workflow `id` with `text`, registered at `at`
/// (milliseconds), for workflow store tests beyond this suite.
pub fn new_version(id: &str, version: &str, text: &str, at: u64) -> WorkflowVersion {
    let files: BTreeMap<String, String> =
        [("schema.json".to_owned(), format!("{{\"for\": \"{text}\"}}"))].into();
    WorkflowVersion {
        workflow: WorkflowId::new(id).expect("a workflow id"),
        version: version.into(),
        number: 0,
        definition_name: format!("{id}.yaml"),
        definition: text.into(),
        hash: cairn_domain::content_hash(text, &files),
        files,
        registered_at: Timestamp(at),
        registered_by: "pat".into(),
    }
}

async fn added(store: &dyn WorkflowStore, v: WorkflowVersion) -> WorkflowVersion {
    match store.register(v).await.expect("register") {
        Registered::Added(v) => v,
        other => panic!("not added: {other:?}"),
    }
}

/// A version registered reads back whole, numbered from 1.
pub async fn register_then_read(store: &dyn WorkflowStore) {
    let v = new_version("wf", "1.0", "cairn: 1\nid: wf", 10);
    let stored = added(store, v.clone()).await;
    assert_eq!(stored, WorkflowVersion { number: 1, ..v.clone() });
    assert_eq!(store.versions(&v.workflow).await.expect("versions"), vec![stored.clone()]);
    assert_eq!(store.latest().await.expect("latest"), vec![stored]);
}

/// The same text registered again is the version stored: nothing new.
pub async fn the_same_text_is_stored_once(store: &dyn WorkflowStore) {
    let first = added(store, new_version("wf", "a", "text", 10)).await;
    let again = store.register(new_version("wf", "b", "text", 20)).await.expect("register");
    assert_eq!(again, Registered::Unchanged(first.clone()));
    assert_eq!(store.versions(&first.workflow).await.expect("versions"), vec![first]);
}

/// A version named again with other text is refused, and nothing stored.
pub async fn a_version_is_one_text(store: &dyn WorkflowStore) {
    let first = added(store, new_version("wf", "1.0", "one", 10)).await;
    let refused = store.register(new_version("wf", "1.0", "two", 20)).await;
    assert_eq!(
        refused,
        Err(RegisterError::VersionTaken { workflow: first.workflow.clone(), version: "1.0".into() })
    );
    assert_eq!(store.versions(&first.workflow).await.expect("versions"), vec![first]);
}

/// Versions come oldest first, numbered in order; `latest` gives the last
/// of each workflow, by id; an unknown id has none.
pub async fn versions_are_kept_in_order(store: &dyn WorkflowStore) {
    let b1 = added(store, new_version("b", "1", "b one", 10)).await;
    let a1 = added(store, new_version("a", "1", "a one", 11)).await;
    let b2 = added(store, new_version("b", "2", "b two", 12)).await;
    let b3 = added(store, new_version("b", "3", "b three", 13)).await;
    assert_eq!((b1.number, b2.number, b3.number, a1.number), (1, 2, 3, 1));
    assert_eq!(store.versions(&b1.workflow).await.expect("versions"), vec![b1, b2, b3.clone()]);
    assert_eq!(store.latest().await.expect("latest"), vec![a1, b3]);
    let unknown = WorkflowId::new("nope").expect("an id");
    assert_eq!(store.versions(&unknown).await.expect("versions"), vec![]);
}

/// An id that is a prefix of another keeps its own versions.
pub async fn ids_that_share_a_prefix_stay_apart(store: &dyn WorkflowStore) {
    let short = added(store, new_version("wf", "1", "short", 10)).await;
    let long = added(store, new_version("wf-2", "1", "long", 11)).await;
    assert_eq!(store.versions(&short.workflow).await.expect("versions"), vec![short.clone()]);
    assert_eq!(store.versions(&long.workflow).await.expect("versions"), vec![long.clone()]);
    assert_eq!(store.latest().await.expect("latest"), vec![short, long]);
}

/// Registrations at once never share a number.
pub async fn registrations_at_once_get_their_own_numbers(store: &dyn WorkflowStore) {
    let texts: Vec<String> = (0..8).map(|i| format!("text {i}")).collect();
    let all = texts.iter().enumerate().map(|(i, t)| store.register(new_version("wf", &i.to_string(), t, 10)));
    // Polled together: each registration may interleave with the others.
    let mut numbers: Vec<u32> = futures_util::future::join_all(all)
        .await
        .into_iter()
        .map(|r| r.expect("register").version().number)
        .collect();
    numbers.sort_unstable();
    assert_eq!(numbers, (1..=8).collect::<Vec<u32>>());
}

/// Generates one `#[tokio::test]` per rule of the `WorkflowStore`
/// contract, each on a fresh store made by the given expression.
#[macro_export]
macro_rules! run_workflow_store_suite {
    ($make:expr) => {
        mod workflow_store_conformance {
            #[allow(unused_imports)]
            use super::*;
            $crate::run_workflow_store_suite!(@tests $make;
                register_then_read, the_same_text_is_stored_once, a_version_is_one_text,
                versions_are_kept_in_order, ids_that_share_a_prefix_stay_apart,
                registrations_at_once_get_their_own_numbers);
        }
    };
    (@tests $make:expr; $($name:ident),*) => {
        $(
            #[tokio::test]
            async fn $name() {
                let store = $make;
                $crate::workflow_suite::$name(&store).await;
            }
        )*
    };
}
