//! The conformance suite of the `TokenStore` contract. Every token store
//! runs it:
//!
//! ```text
//! cairn_testkit::run_token_store_suite!(MemoryStore::new());
//! ```

use cairn_domain::access::Role;
use cairn_domain::state::Timestamp;
use cairn_ports::{StoreError, TokenRecord, TokenStore, hash_secret};

/// A token `name` whose secret is `secret-NAME`, created at `at`
/// (milliseconds), for token store tests beyond this suite.
pub fn new_token(name: &str, role: Role, at: u64) -> TokenRecord {
    TokenRecord {
        name: name.into(),
        hash: hash_secret(&format!("secret-{name}")),
        role,
        gate_roles: vec!["tech_lead".into(), "qa".into()],
        created_at: Timestamp(at),
        expires_at: None,
        last_used_at: None,
    }
}

fn names(tokens: &[TokenRecord]) -> Vec<&str> {
    tokens.iter().map(|t| t.name.as_str()).collect()
}

/// `add_token` then `tokens` gives the record back as it was added.
pub async fn add_then_list(store: &dyn TokenStore) {
    assert_eq!(store.tokens().await.expect("tokens"), []);
    let mut token = new_token("ci", Role::Operator, 10);
    token.expires_at = Some(Timestamp(1_000));
    store.add_token(token.clone()).await.expect("add");
    assert_eq!(store.tokens().await.expect("tokens"), [token]);
}

/// A second token with a name the store holds is refused and changes
/// nothing, even with another secret and role.
pub async fn a_taken_name_is_refused(store: &dyn TokenStore) {
    let first = new_token("ci", Role::Viewer, 10);
    store.add_token(first.clone()).await.expect("add");
    let mut again = new_token("ci", Role::Admin, 20);
    again.hash = hash_secret("another secret");
    assert_eq!(store.add_token(again.clone()).await, Err(StoreError::AlreadyExists("ci".into())));
    assert_eq!(store.tokens().await.expect("tokens"), [first]);
    assert_eq!(store.token_by_hash(&again.hash).await.expect("lookup"), None);
}

/// `tokens` lists every token sorted by name, whatever the order added.
pub async fn tokens_are_listed_by_name(store: &dyn TokenStore) {
    for (name, at) in [("deploy", 1), ("alice", 2), ("ci", 3), ("Zed", 4), ("bob", 5)] {
        store.add_token(new_token(name, Role::Viewer, at)).await.expect("add");
    }
    assert_eq!(names(&store.tokens().await.expect("tokens")), ["Zed", "alice", "bob", "ci", "deploy"]);
}

/// `token_by_hash` finds the token whose secret hashes to the hash given,
/// and nothing for a secret no token has.
pub async fn a_token_is_found_by_the_hash_of_its_secret(store: &dyn TokenStore) {
    let ci = new_token("ci", Role::Operator, 1);
    let admin = new_token("admin", Role::Admin, 2);
    store.add_token(ci.clone()).await.expect("add");
    store.add_token(admin.clone()).await.expect("add");
    let found = store.token_by_hash(&hash_secret("secret-admin")).await.expect("lookup");
    assert_eq!(found, Some(admin));
    assert_eq!(store.token_by_hash(&ci.hash).await.expect("lookup"), Some(ci));
    assert_eq!(store.token_by_hash(&hash_secret("secret-nobody")).await.expect("lookup"), None);
    // A name is not a hash, nor is a secret.
    assert_eq!(store.token_by_hash("ci").await.expect("lookup"), None);
    assert_eq!(store.token_by_hash("secret-ci").await.expect("lookup"), None);
}

/// `revoke_token` removes the token (it is no longer listed or found) and
/// says so; a second revoke, or one of a name never added, says `false`.
/// The name can then be given to a new token.
pub async fn revoke_removes_once(store: &dyn TokenStore) {
    let ci = new_token("ci", Role::Operator, 1);
    store.add_token(ci.clone()).await.expect("add");
    store.add_token(new_token("other", Role::Viewer, 2)).await.expect("add");
    assert_eq!(store.revoke_token("ci").await, Ok(true));
    assert_eq!(store.revoke_token("ci").await, Ok(false));
    assert_eq!(store.revoke_token("never").await, Ok(false));
    assert_eq!(names(&store.tokens().await.expect("tokens")), ["other"]);
    assert_eq!(store.token_by_hash(&ci.hash).await.expect("lookup"), None);
    let mut reused = new_token("ci", Role::Viewer, 3);
    reused.hash = hash_secret("a new secret");
    store.add_token(reused.clone()).await.expect("the name is free again");
    assert_eq!(store.token_by_hash(&ci.hash).await.expect("lookup"), None);
    assert_eq!(store.token_by_hash(&reused.hash).await.expect("lookup"), Some(reused));
}

/// `touch_token` sets `last_used_at`, never moves it back, and changes
/// nothing else; touching a name the store does not hold is no error and
/// adds no token.
pub async fn touch_records_the_last_use(store: &dyn TokenStore) {
    let ci = new_token("ci", Role::Operator, 1);
    store.add_token(ci.clone()).await.expect("add");
    store.add_token(new_token("idle", Role::Viewer, 2)).await.expect("add");
    store.touch_token("ci", Timestamp(50)).await.expect("touch");
    let touched = store.token_by_hash(&ci.hash).await.expect("lookup").expect("found");
    assert_eq!(touched, TokenRecord { last_used_at: Some(Timestamp(50)), ..ci.clone() });
    store.touch_token("ci", Timestamp(70)).await.expect("touch");
    store.touch_token("ci", Timestamp(60)).await.expect("a late touch");
    let listed = store.tokens().await.expect("tokens");
    let last_used: Vec<_> = listed.iter().map(|t| (t.name.as_str(), t.last_used_at)).collect();
    assert_eq!(last_used, [("ci", Some(Timestamp(70))), ("idle", None)]);
    store.touch_token("gone", Timestamp(80)).await.expect("no error for a name not held");
    store.revoke_token("idle").await.expect("revoke");
    store.touch_token("idle", Timestamp(90)).await.expect("no error after a revoke");
    assert_eq!(names(&store.tokens().await.expect("tokens")), ["ci"]);
}

/// A token with an expiry is stored with it and, by
/// [`TokenRecord::expired`], is refused from that millisecond on; one
/// without never expires.
pub async fn expiry_is_kept_and_checked(store: &dyn TokenStore) {
    let mut brief = new_token("brief", Role::Viewer, 100);
    brief.expires_at = Some(Timestamp(200));
    store.add_token(brief.clone()).await.expect("add");
    store.add_token(new_token("forever", Role::Viewer, 100)).await.expect("add");
    let found = store.token_by_hash(&brief.hash).await.expect("lookup").expect("found");
    assert_eq!(found.expires_at, Some(Timestamp(200)));
    assert!(!found.expired(Timestamp(199)));
    assert!(found.expired(Timestamp(200)));
    let forever = store.token_by_hash(&hash_secret("secret-forever")).await.expect("lookup").expect("found");
    assert!(!forever.expired(Timestamp(u64::MAX)));
}

/// Generates one `#[tokio::test]` per rule of the `TokenStore` contract,
/// each on a fresh store made by the given expression.
#[macro_export]
macro_rules! run_token_store_suite {
    ($make:expr) => {
        mod token_store_conformance {
            #[allow(unused_imports)]
            use super::*;
            $crate::run_token_store_suite!(@tests $make;
                add_then_list, a_taken_name_is_refused, tokens_are_listed_by_name,
                a_token_is_found_by_the_hash_of_its_secret, revoke_removes_once,
                touch_records_the_last_use, expiry_is_kept_and_checked);
        }
    };
    (@tests $make:expr; $($name:ident),*) => {
        $(
            #[tokio::test]
            async fn $name() {
                let store = $make;
                $crate::token_suite::$name(&store).await;
            }
        )*
    };
}
