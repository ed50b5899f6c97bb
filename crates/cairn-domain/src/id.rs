//! Typed identifiers. Each is a validated newtype made by one macro, with
//! `Display`/`FromStr` and serde through its string form, so an id that does
//! not fit its pattern can never be constructed.

use std::fmt;
use std::str::FromStr;

/// Why a string is not a valid identifier of some kind.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{value}` is not a valid {kind}: {rule}")]
pub struct IdError {
    /// What kind of id was expected (`step id`, `input name`, ...).
    pub kind: &'static str,
    /// The offending text.
    pub value: String,
    /// The rule it breaks, in words.
    pub rule: &'static str,
}

/// The pattern of workflow and step ids: `[a-z0-9][a-z0-9_-]{0,63}`.
pub const SLUG_RULE: &str = "use 1 to 64 of a-z, 0-9, `_` and `-`, starting with a letter or digit";
/// The pattern of names read in templates: `[A-Za-z_][A-Za-z0-9_]{0,63}`.
pub const NAME_RULE: &str =
    "use 1 to 64 of A-Z, a-z, 0-9 and `_`, not starting with a digit (it is read in templates)";
/// The pattern of free labels (roles, providers, handlers): printable, no spaces, at most 128 bytes.
pub const LABEL_RULE: &str = "use 1 to 128 printable characters without spaces or `/`";

/// `[a-z0-9][a-z0-9_-]{0,63}`: URL-safe, never `..`, never a path.
pub fn is_slug(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b.len() <= 64
        && (b[0].is_ascii_lowercase() || b[0].is_ascii_digit())
        && b.iter().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'_' || *c == b'-')
}

/// `[A-Za-z_][A-Za-z0-9_]{0,63}`: an identifier a template can read as `a.b`.
pub fn is_name(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b.len() <= 64
        && (b[0].is_ascii_alphabetic() || b[0] == b'_')
        && b.iter().all(|c| c.is_ascii_alphanumeric() || *c == b'_')
}

/// The pattern of run label keys: `[A-Za-z0-9][A-Za-z0-9_.-]{0,62}`.
pub const LABEL_KEY_RULE: &str =
    "use 1 to 63 of A-Z, a-z, 0-9, `_`, `.` and `-`, starting with a letter or digit";

/// `[A-Za-z0-9][A-Za-z0-9_.-]{0,62}`: a key a filter (`--label k=v`) and a URL carry as it is.
pub fn is_label_key(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b.len() <= 63
        && b[0].is_ascii_alphanumeric()
        && b.iter().all(|c| c.is_ascii_alphanumeric() || matches!(c, b'_' | b'.' | b'-'))
}

/// Printable, no whitespace, no `/`, at most 128 bytes.
pub fn is_label(s: &str) -> bool {
    !s.is_empty() && s.len() <= 128 && s.chars().all(|c| !c.is_whitespace() && !c.is_control() && c != '/')
}

macro_rules! id_newtype {
    ($(#[$doc:meta])* $name:ident, $kind:literal, $check:path, $rule:path) => {
        $(#[$doc])*
        #[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
        pub struct $name(String);

        impl $name {
            /// Checks `value` against the pattern and wraps it.
            pub fn new(value: impl Into<String>) -> Result<Self, IdError> {
                let value = value.into();
                if $check(&value) {
                    Ok(Self(value))
                } else {
                    Err(IdError { kind: $kind, value, rule: $rule })
                }
            }

            /// The id as text.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}({:?})", stringify!($name), self.0)
            }
        }

        impl FromStr for $name {
            type Err = IdError;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                Self::new(s)
            }
        }

        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }

        impl std::borrow::Borrow<str> for $name {
            fn borrow(&self) -> &str {
                &self.0
            }
        }

        impl serde::Serialize for $name {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(&self.0)
            }
        }

        impl<'de> serde::Deserialize<'de> for $name {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = String::deserialize(d)?;
                Self::new(s).map_err(serde::de::Error::custom)
            }
        }
    };
}

id_newtype!(
    /// A workflow's id (`id:` at the top level), URL-safe.
    WorkflowId, "workflow id", is_slug, SLUG_RULE
);
id_newtype!(
    /// A step's id, unique among its siblings, URL-safe.
    StepId, "step id", is_slug, SLUG_RULE
);
id_newtype!(
    /// A name templates read: an input, an agent, a document type, an iteration variable.
    Name, "name", is_name, NAME_RULE
);
id_newtype!(
    /// A free label: a role, a provider, a handler, a tool.
    Label, "label", is_label, LABEL_RULE
);
id_newtype!(
    /// The key of a run label (`labels: {team: payments}`).
    LabelKey, "label key", is_label_key, LABEL_KEY_RULE
);
id_newtype!(
    /// A run's id: URL-safe, chosen by the user (`--run-id`) or generated.
    RunId, "run id", is_slug, SLUG_RULE
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slugs_accept_the_spec_pattern_and_refuse_paths() {
        for ok in ["a", "code-review", "s3", "0abc", "a_b-c", &"x".repeat(64)] {
            assert!(StepId::new(ok).is_ok(), "{ok}");
        }
        for bad in ["", "A", "-a", "_a", "a b", "../x", "a/b", "a.b", &"x".repeat(65), "é"] {
            assert!(StepId::new(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn names_are_template_identifiers() {
        assert!(Name::new("file_path").is_ok());
        assert!(Name::new("_x9").is_ok());
        assert!(Name::new("9x").is_err());
        assert!(Name::new("a-b").is_err());
    }

    #[test]
    fn serde_goes_through_the_checked_constructor() {
        let id: StepId = serde_json::from_str("\"parse\"").expect("valid");
        assert_eq!(serde_json::to_string(&id).expect("serialize"), "\"parse\"");
        let err = serde_json::from_str::<StepId>("\"../etc\"").expect_err("invalid");
        assert!(err.to_string().contains("not a valid step id"), "{err}");
    }
}
