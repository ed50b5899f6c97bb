//! Scopes and documents. A run has a root scope; each `for_each` instance
//! opens a child scope (`epic/e-auth`), nested instances open grandchildren.
//! A lookup walks the chain outward, so an instance sees its own documents
//! and its ancestors', never a sibling's.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::id::Name;

/// A scope: the run root, or a chain of `(iteration name, item key)` pairs.
#[derive(Debug, Clone, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ScopeKey(Vec<(String, String)>);

impl ScopeKey {
    /// The run's root scope.
    pub fn root() -> Self {
        Self::default()
    }

    /// The scope of instance `key` of iteration `name`, inside this one.
    pub fn child(&self, name: &str, key: &str) -> Self {
        let mut chain = self.0.clone();
        chain.push((name.to_owned(), key.to_owned()));
        Self(chain)
    }

    /// The enclosing scope; `None` at the root.
    pub fn parent(&self) -> Option<Self> {
        let (_, init) = self.0.split_last()?;
        Some(Self(init.to_vec()))
    }
}

/// `epic/e-auth/story/s1`; `/` and `%` in keys are escaped as `%2F` and `%25`.
impl fmt::Display for ScopeKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let parts: Vec<String> = self
            .0
            .iter()
            .map(|(n, k)| format!("{n}/{}", k.replace('%', "%25").replace('/', "%2F")))
            .collect();
        f.write_str(&parts.join("/"))
    }
}

impl FromStr for ScopeKey {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.is_empty() {
            return Ok(Self::root());
        }
        let parts: Vec<&str> = s.split('/').collect();
        if !parts.len().is_multiple_of(2) {
            return Err(format!("`{s}` is not a scope: expected name/key pairs"));
        }
        Ok(Self(
            parts
                .chunks(2)
                .map(|p| (p[0].to_owned(), p[1].replace("%2F", "/").replace("%25", "%")))
                .collect(),
        ))
    }
}

impl Serialize for ScopeKey {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for ScopeKey {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d)?.parse().map_err(serde::de::Error::custom)
    }
}

/// Documents by scope and type, and the entity (the `for_each` item) each
/// instance scope stands for.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Scopes {
    docs: BTreeMap<ScopeKey, BTreeMap<Name, Value>>,
    #[serde(default)]
    entities: BTreeMap<ScopeKey, Value>,
}

impl Scopes {
    /// Stores (or replaces) a document of `doc_type` in `scope`.
    pub fn store(&mut self, scope: ScopeKey, doc_type: Name, value: Value) {
        self.docs.entry(scope).or_default().insert(doc_type, value);
    }

    /// The document of `doc_type` stored in exactly `scope`, not looking outward.
    pub fn get(&self, scope: &ScopeKey, doc_type: &str) -> Option<&Value> {
        self.docs.get(scope).and_then(|docs| docs.get(doc_type))
    }

    /// Records the item an instance scope stands for.
    pub fn set_entity(&mut self, scope: ScopeKey, item: Value) {
        self.entities.insert(scope, item);
    }

    /// The item of an instance scope, addressable by its key.
    pub fn entity(&self, scope: &ScopeKey) -> Option<&Value> {
        self.entities.get(scope)
    }

    /// Every document seen from `scope`: its own, then its ancestors' where
    /// they are not shadowed.
    pub fn visible(&self, scope: &ScopeKey) -> serde_json::Map<String, Value> {
        let mut out = serde_json::Map::new();
        let mut current = Some(scope.clone());
        while let Some(s) = current {
            for (name, doc) in self.docs.get(&s).into_iter().flatten() {
                out.entry(name.to_string()).or_insert_with(|| doc.clone());
            }
            current = s.parent();
        }
        out
    }

    /// The nearest document of `doc_type`, walking from `scope` out to the root.
    pub fn lookup(&self, scope: &ScopeKey, doc_type: &str) -> Option<&Value> {
        let mut current = Some(scope.clone());
        while let Some(s) = current {
            if let Some(v) = self.get(&s, doc_type) {
                return Some(v);
            }
            current = s.parent();
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn name(n: &str) -> Name {
        Name::new(n).expect("name")
    }

    #[test]
    fn lookup_walks_outward_and_never_sideways() {
        let mut scopes = Scopes::default();
        let root = ScopeKey::root();
        let auth = root.child("epic", "e-auth");
        let billing = root.child("epic", "e-billing");
        let story = auth.child("story", "s1");
        scopes.store(root.clone(), name("discovery"), json!("root doc"));
        scopes.store(auth.clone(), name("story_backlog"), json!("auth stories"));
        scopes.store(billing.clone(), name("story_backlog"), json!("billing stories"));
        assert_eq!(scopes.lookup(&story, "story_backlog"), Some(&json!("auth stories")));
        assert_eq!(scopes.lookup(&story, "discovery"), Some(&json!("root doc")));
        assert_eq!(scopes.lookup(&billing, "story_backlog"), Some(&json!("billing stories")));
        assert_eq!(scopes.lookup(&root, "story_backlog"), None);
    }

    #[test]
    fn keys_print_parse_and_escape() {
        let k = ScopeKey::root().child("epic", "a/b%c").child("story", "s1");
        let text = k.to_string();
        assert_eq!(text, "epic/a%2Fb%25c/story/s1");
        assert_eq!(text.parse::<ScopeKey>(), Ok(k.clone()));
        assert_eq!(k.parent().and_then(|p| p.parent()), Some(ScopeKey::root()));
        assert!("epic".parse::<ScopeKey>().is_err());
    }
}
