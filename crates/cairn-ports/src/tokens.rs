//! The token store port: the API tokens `cairn serve` accepts, kept as
//! hashes of their secrets, with the role each may act as.

use async_trait::async_trait;
use cairn_domain::access::Role;
use cairn_domain::state::{ErrorClass, Timestamp};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::{PortError, StoreError};

/// What every secret [`new_secret`] makes starts with, so that a token is
/// recognisable in a config file or a leak scanner.
pub const SECRET_PREFIX: &str = "cairn_";

/// The random bytes in a secret: 256 bits, 43 characters of base64url.
const SECRET_BYTES: usize = 32;

/// An API token as the store keeps it: never its secret, only the secret's
/// hash, so a copy of the store lets no one in.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenRecord {
    /// Its name, unique in the store: what `token list` shows and `token
    /// revoke` takes.
    pub name: String,
    /// The lowercase hex SHA-256 of its secret ([`hash_secret`]).
    pub hash: String,
    /// What it may do.
    pub role: Role,
    /// The gate roles (as a gate's `approvers` lists them) it may decide as.
    #[serde(default)]
    pub gate_roles: Vec<String>,
    /// When it was created.
    pub created_at: Timestamp,
    /// When it stops being accepted; `None` for never.
    #[serde(default)]
    pub expires_at: Option<Timestamp>,
    /// When a request last used it, as far as the store has been told.
    #[serde(default)]
    pub last_used_at: Option<Timestamp>,
}

impl TokenRecord {
    /// Whether the token is no longer accepted at `now`: it expires at the
    /// very millisecond of `expires_at`.
    pub fn expired(&self, now: Timestamp) -> bool {
        self.expires_at.is_some_and(|at| now >= at)
    }
}

/// API tokens, kept durably.
///
/// Contract: names are unique: `add_token` with a name the store holds is
/// `StoreError::AlreadyExists(name)` and changes nothing. A token that
/// `add_token` or `revoke_token` has returned for is added or gone for good:
/// it survives the process being killed. `tokens` lists every token sorted
/// by name. `token_by_hash` finds the token whose `hash` is the one given
/// (the caller hashes the presented secret with [`hash_secret`]; expiry is
/// the caller's to check with [`TokenRecord::expired`]). `revoke_token`
/// removes a token and says whether there was one. `touch_token` records a
/// use: `last_used_at` becomes `at` unless it is later already; a name the
/// store does not hold (revoked meanwhile) is no error and adds nothing;
/// it need not be durable at once. A stored token that cannot be read is
/// `StoreError::Corrupt` naming it, never skipped: a store that cannot read
/// its tokens accepts none.
#[cfg_attr(feature = "test-util", mockall::automock)]
#[async_trait]
pub trait TokenStore: Send + Sync {
    /// Adds a token; its name must be new.
    async fn add_token(&self, token: TokenRecord) -> Result<(), StoreError>;
    /// Every token, sorted by name.
    async fn tokens(&self) -> Result<Vec<TokenRecord>, StoreError>;
    /// The token whose secret hashes to `hash`, if any.
    async fn token_by_hash(&self, hash: &str) -> Result<Option<TokenRecord>, StoreError>;
    /// Removes the token named `name`; `false` when none had the name.
    async fn revoke_token(&self, name: &str) -> Result<bool, StoreError>;
    /// Records that the token named `name` was used at `at`.
    async fn touch_token(&self, name: &str, at: Timestamp) -> Result<(), StoreError>;
}

/// The lowercase hex SHA-256 of a secret: what the store keeps and looks
/// tokens up by. A secret has 256 random bits, so a plain hash is enough:
/// there is nothing to guess that a slow hash would protect.
pub fn hash_secret(secret: &str) -> String {
    format!("{:x}", Sha256::digest(secret.as_bytes()))
}

/// A fresh secret for a new token: [`SECRET_PREFIX`] and 32 random bytes
/// from the operating system in unpadded base64url (43 characters), shown
/// once when the token is created and never stored.
///
/// Fails (class `fatal`) only when the operating system gives no random
/// bytes: a token is never made from anything weaker.
pub fn new_secret() -> Result<String, PortError> {
    Ok(format!("{SECRET_PREFIX}{}", random_word()?))
}

/// 32 random bytes from the operating system in unpadded base64url (43
/// characters): what cannot be guessed, such as a session's id or its
/// CSRF token. Fails (class `fatal`) when the operating system gives none.
pub fn random_word() -> Result<String, PortError> {
    let mut bytes = [0u8; SECRET_BYTES];
    getrandom::fill(&mut bytes).map_err(|e| {
        PortError::new(ErrorClass::Fatal, format!("the operating system gave no random bytes: {e}"))
    })?;
    Ok(base64url(&bytes))
}

/// `bytes` in base64url (RFC 4648 §5) without padding: characters safe in
/// a header, a URL and a shell word.
fn base64url(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let group = chunk.iter().enumerate().fold(0u32, |acc, (i, b)| acc | (u32::from(*b) << (16 - 8 * i)));
        // A chunk of n bytes gives n + 1 characters.
        for i in 0..=chunk.len() {
            out.push(char::from(ALPHABET[((group >> (18 - 6 * i)) & 0x3f) as usize]));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(expires_at: Option<u64>) -> TokenRecord {
        TokenRecord {
            name: "ci".into(),
            hash: hash_secret("s"),
            role: Role::Operator,
            gate_roles: vec!["tech_lead".into()],
            created_at: Timestamp(10),
            expires_at: expires_at.map(Timestamp),
            last_used_at: None,
        }
    }

    #[test]
    fn the_hash_is_lowercase_hex_sha256() {
        assert_eq!(hash_secret(""), "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
        assert_eq!(hash_secret("abc"), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
    }

    #[test]
    fn base64url_follows_rfc_4648_without_padding() {
        let cases: [(&[u8], &str); 7] = [
            (b"", ""),
            (b"f", "Zg"),
            (b"fo", "Zm8"),
            (b"foo", "Zm9v"),
            (b"foob", "Zm9vYg"),
            (b"fooba", "Zm9vYmE"),
            (b"foobar", "Zm9vYmFy"),
        ];
        for (bytes, text) in cases {
            assert_eq!(base64url(bytes), text);
        }
        // The two characters that differ from standard base64.
        assert_eq!(base64url(&[0xfb, 0xff]), "-_8");
    }

    #[test]
    fn a_new_secret_is_prefixed_url_safe_and_fresh() {
        let a = new_secret().expect("random bytes");
        let b = new_secret().expect("random bytes");
        assert_ne!(a, b);
        let body = a.strip_prefix(SECRET_PREFIX).expect("prefixed");
        assert_eq!(body.len(), 43);
        assert!(body.bytes().all(|c| c.is_ascii_alphanumeric() || c == b'-' || c == b'_'), "{a}");
        assert_eq!(hash_secret(&a).len(), 64);
    }

    #[test]
    fn a_token_expires_at_its_expiry_time() {
        assert!(!record(None).expired(Timestamp(u64::MAX)));
        assert!(!record(Some(100)).expired(Timestamp(99)));
        assert!(record(Some(100)).expired(Timestamp(100)));
        assert!(record(Some(100)).expired(Timestamp(101)));
    }

    #[test]
    fn a_record_reads_back_and_reads_without_optional_fields() {
        let r = record(Some(100));
        let json = serde_json::to_string(&r).expect("serializes");
        assert!(json.contains(r#""role":"operator""#), "{json}");
        assert_eq!(serde_json::from_str::<TokenRecord>(&json).expect("reads back"), r);
        let bare = r#"{"name":"a","hash":"h","role":"viewer","created_at":5}"#;
        let read: TokenRecord = serde_json::from_str(bare).expect("reads");
        assert_eq!((read.gate_roles.len(), read.expires_at, read.last_used_at), (0, None, None));
    }
}
