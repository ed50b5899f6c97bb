//! API tokens in the store's own sled tree, `tokens`: the key is a token's
//! name, the value the JSON of a versioned [`TokenEntry`].
//!
//! Tokens are not runs: they stay out of the write-ahead log, the seal and
//! the index checks. Adding or revoking one writes the tree and then
//! flushes sled before returning, so a token created (or revoked) survives
//! the process being killed; a flush that holds more of the runs than the
//! last checkpoint is one the log's replay already expects, since sled may
//! write its pages at any time. A use (`touch_token`) is written without a
//! flush: the next flush takes it along, and a crash may lose it.

use async_trait::async_trait;
use cairn_domain::access::Role;
use cairn_domain::state::Timestamp;
use cairn_ports::{StoreError, TokenRecord, TokenStore};
use serde::{Deserialize, Serialize};
use sled::IVec;

use crate::{SledStore, io, off_the_runtime};

/// The name of the tree tokens are kept in.
pub(crate) const TOKENS_TREE: &str = "tokens";

/// The version every token entry is written with.
const VERSION: u32 = 1;

/// A token as stored: this crate's own format, not the port's type, so the
/// port may change without the store's files changing with it.
#[derive(Serialize, Deserialize)]
struct TokenEntry {
    v: u32,
    name: String,
    hash: String,
    /// The role's word (`viewer`, `operator`, `admin`).
    role: String,
    #[serde(default)]
    gate_roles: Vec<String>,
    created_at: u64,
    #[serde(default)]
    expires_at: Option<u64>,
    #[serde(default)]
    last_used_at: Option<u64>,
}

impl TokenEntry {
    fn new(token: &TokenRecord) -> Self {
        Self {
            v: VERSION,
            name: token.name.clone(),
            hash: token.hash.clone(),
            role: token.role.word().to_owned(),
            gate_roles: token.gate_roles.clone(),
            created_at: token.created_at.0,
            expires_at: token.expires_at.map(|t| t.0),
            last_used_at: token.last_used_at.map(|t| t.0),
        }
    }

    fn bytes(&self) -> Result<Vec<u8>, StoreError> {
        serde_json::to_vec(self).map_err(|e| StoreError::Io(format!("token `{}`: {e}", self.name)))
    }

    /// The entry stored under `key`; anything that does not read as one
    /// (bad JSON, another version, an unknown role, a name other than its
    /// key) is `Corrupt`, naming the token.
    fn read(key: &[u8], bytes: &[u8]) -> Result<Self, StoreError> {
        let name = String::from_utf8_lossy(key);
        let corrupt = |why: String| StoreError::Corrupt(format!("token `{name}` cannot be read: {why}"));
        let entry: TokenEntry = serde_json::from_slice(bytes).map_err(|e| corrupt(e.to_string()))?;
        if entry.v != VERSION {
            return Err(corrupt(format!("record version {} is not {VERSION}", entry.v)));
        }
        if entry.name.as_bytes() != key {
            return Err(corrupt(format!("it is stored as `{}`", entry.name)));
        }
        entry.role.parse::<Role>().map_err(|e| corrupt(e.to_string()))?;
        Ok(entry)
    }

    fn record(self) -> Result<TokenRecord, StoreError> {
        let role = self
            .role
            .parse::<Role>()
            .map_err(|e| StoreError::Corrupt(format!("token `{}` cannot be read: {e}", self.name)))?;
        Ok(TokenRecord {
            name: self.name,
            hash: self.hash,
            role,
            gate_roles: self.gate_roles,
            created_at: Timestamp(self.created_at),
            expires_at: self.expires_at.map(Timestamp),
            last_used_at: self.last_used_at.map(Timestamp),
        })
    }
}

impl SledStore {
    /// Makes every token change so far durable: a flush of sled, off the
    /// async threads.
    async fn flush_tokens(&self) -> Result<(), StoreError> {
        let db = self.db.clone();
        off_the_runtime(move || db.flush().map(drop).map_err(io)).await
    }

    /// Every stored token in name order, each read or refused as corrupt.
    fn entries(&self) -> impl Iterator<Item = Result<TokenEntry, StoreError>> + '_ {
        self.tokens.iter().map(|item| {
            let (key, bytes) = item.map_err(io)?;
            TokenEntry::read(&key, &bytes)
        })
    }
}

#[async_trait]
impl TokenStore for SledStore {
    async fn add_token(&self, token: TokenRecord) -> Result<(), StoreError> {
        let bytes = TokenEntry::new(&token).bytes()?;
        // Inserted only where the name is free: two adds of one name race
        // here and one of them finds it taken.
        let swapped =
            self.tokens.compare_and_swap(token.name.as_bytes(), None::<&[u8]>, Some(bytes)).map_err(io)?;
        if swapped.is_err() {
            return Err(StoreError::AlreadyExists(token.name));
        }
        self.flush_tokens().await
    }

    async fn tokens(&self) -> Result<Vec<TokenRecord>, StoreError> {
        // sled iterates in key order: by name, byte-wise.
        self.entries().map(|entry| entry.and_then(TokenEntry::record)).collect()
    }

    async fn token_by_hash(&self, hash: &str) -> Result<Option<TokenRecord>, StoreError> {
        // A handful of tokens: a scan. Every entry is read, so a damaged
        // one refuses every lookup rather than being passed over.
        let mut found = None;
        for entry in self.entries() {
            let entry = entry?;
            if found.is_none() && entry.hash == hash {
                found = Some(entry);
            }
        }
        found.map(TokenEntry::record).transpose()
    }

    async fn revoke_token(&self, name: &str) -> Result<bool, StoreError> {
        let removed = self.tokens.remove(name.as_bytes()).map_err(io)?.is_some();
        if removed {
            self.flush_tokens().await?;
        }
        Ok(removed)
    }

    async fn touch_token(&self, name: &str, at: Timestamp) -> Result<(), StoreError> {
        // Changed in place, atomically: a token revoked meanwhile stays
        // revoked (an absent key stays absent), and one that does not read
        // is left as it is and reported.
        let mut failure = None;
        self.tokens
            .fetch_and_update(name.as_bytes(), |old| {
                failure = None;
                let old = old?;
                let touched = TokenEntry::read(name.as_bytes(), old).and_then(|mut entry| {
                    entry.last_used_at = entry.last_used_at.max(Some(at.0));
                    entry.bytes()
                });
                match touched {
                    Ok(bytes) => Some(IVec::from(bytes)),
                    Err(e) => {
                        failure = Some(e);
                        Some(IVec::from(old))
                    }
                }
            })
            .map_err(io)?;
        failure.map_or(Ok(()), Err)
    }
}

#[cfg(test)]
mod tests {
    use cairn_ports::TokenStore as _;

    use super::*;

    fn token(name: &str) -> TokenRecord {
        TokenRecord {
            name: name.into(),
            hash: cairn_ports::hash_secret(name),
            role: Role::Admin,
            gate_roles: vec!["tech_lead".into()],
            created_at: Timestamp(1),
            expires_at: Some(Timestamp(9)),
            last_used_at: None,
        }
    }

    #[tokio::test]
    async fn an_entry_is_versioned_json_under_the_name() {
        let store = SledStore::temporary().expect("store");
        store.add_token(token("ci")).await.expect("add");
        let bytes = store.tokens.get("ci").expect("read").expect("stored");
        let json: serde_json::Value = serde_json::from_slice(&bytes).expect("JSON");
        assert_eq!(
            json,
            serde_json::json!({
                "v": 1, "name": "ci", "hash": cairn_ports::hash_secret("ci"), "role": "admin",
                "gate_roles": ["tech_lead"], "created_at": 1, "expires_at": 9, "last_used_at": null
            })
        );
    }

    #[tokio::test]
    async fn a_token_that_does_not_read_is_corrupt_with_its_name() {
        let cases: [(&str, &[u8]); 4] = [
            ("garbage", b"\xff{not json"),
            ("future", br#"{"v":2,"name":"future","hash":"h","role":"admin","created_at":1}"#),
            ("odd-role", br#"{"v":1,"name":"odd-role","hash":"h","role":"root","created_at":1}"#),
            ("moved", br#"{"v":1,"name":"elsewhere","hash":"h","role":"viewer","created_at":1}"#),
        ];
        for (name, bytes) in cases {
            let store = SledStore::temporary().expect("store");
            store.add_token(token("fine")).await.expect("add");
            store.tokens.insert(name, bytes).expect("insert");
            let named = |r: Result<_, StoreError>| match r {
                Err(StoreError::Corrupt(why)) => assert!(why.contains(&format!("`{name}`")), "{why}"),
                Err(other) => panic!("{name}: expected Corrupt, got {other}"),
                Ok(_) => panic!("{name}: a damaged token was read"),
            };
            named(store.tokens().await.map(drop));
            named(store.token_by_hash(&cairn_ports::hash_secret("fine")).await.map(drop));
            named(store.touch_token(name, Timestamp(5)).await);
            assert_eq!(store.tokens.get(name).expect("read").as_deref(), Some(bytes), "left as it was");
            // A damaged token can still be revoked, and then all reads again.
            assert_eq!(store.revoke_token(name).await, Ok(true));
            assert_eq!(store.tokens().await.expect("tokens").len(), 1);
        }
    }
}
