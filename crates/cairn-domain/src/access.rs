//! Who may do what through cairn's API: the roles an API token carries.
//!
//! A token has one [`Role`], ordered `viewer < operator < admin`: each
//! allows everything the roles below it allow. Gate roles (the free-form
//! names a gate's `approvers` lists, such as `tech_lead`) are plain
//! strings beside it, checked by `steer`, not here.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use strum::VariantArray as _;

/// What a token may do, from reading to administering. Ordered, so that a
/// check is one comparison: `Viewer < Operator < Admin`.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Hash,
    PartialOrd,
    Ord,
    Serialize,
    Deserialize,
    strum::IntoStaticStr,
    strum::VariantArray,
)]
#[serde(rename_all = "snake_case")]
#[strum(serialize_all = "snake_case")]
pub enum Role {
    /// Reads runs, events and listings; changes nothing.
    Viewer,
    /// Also starts, drives, steers and decides runs.
    Operator,
    /// Also manages tokens and the store.
    Admin,
}

impl Role {
    /// Whether a holder of this role may do what needs `needed`: the same
    /// role or a higher one.
    pub fn allows(self, needed: Role) -> bool {
        self >= needed
    }

    /// The spelling on the command line, in files and in JSON.
    pub fn word(self) -> &'static str {
        self.into()
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.word())
    }
}

/// Why a word is not a role: it names the word and lists the roles, so a
/// front can show it as it is.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{0}` is not a role: write {words}", words = role_words())]
pub struct UnknownRole(pub String);

/// The roles' words, lowest first: `viewer, operator or admin`.
fn role_words() -> String {
    let words: Vec<&str> = Role::VARIANTS.iter().map(|r| r.word()).collect();
    match words.split_last() {
        Some((last, rest)) if !rest.is_empty() => format!("{} or {last}", rest.join(", ")),
        _ => words.join(""),
    }
}

impl FromStr for Role {
    type Err = UnknownRole;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Role::VARIANTS.iter().copied().find(|r| r.word() == s).ok_or_else(|| UnknownRole(s.to_owned()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roles_are_ordered_viewer_operator_admin() {
        assert!(Role::Viewer < Role::Operator && Role::Operator < Role::Admin);
        let mut roles = vec![Role::Admin, Role::Viewer, Role::Operator];
        roles.sort();
        assert_eq!(roles, [Role::Viewer, Role::Operator, Role::Admin]);
    }

    #[test]
    fn a_role_allows_itself_and_what_is_below_it() {
        use Role::*;
        let allowed: Vec<(Role, Role)> = [Viewer, Operator, Admin]
            .into_iter()
            .flat_map(|have| [Viewer, Operator, Admin].into_iter().map(move |need| (have, need)))
            .filter(|(have, need)| have.allows(*need))
            .collect();
        assert_eq!(
            allowed,
            [
                (Viewer, Viewer),
                (Operator, Viewer),
                (Operator, Operator),
                (Admin, Viewer),
                (Admin, Operator),
                (Admin, Admin)
            ]
        );
    }

    #[test]
    fn words_parse_back_and_match_serde() {
        for role in Role::VARIANTS {
            assert_eq!(role.word().parse::<Role>(), Ok(*role));
            assert_eq!(role.to_string(), role.word());
            let json = serde_json::to_string(role).expect("serializes");
            assert_eq!(json, format!("\"{}\"", role.word()));
            assert_eq!(serde_json::from_str::<Role>(&json).expect("deserializes"), *role);
        }
        assert_eq!(Role::Operator.word(), "operator");
    }

    #[test]
    fn an_unknown_word_is_refused_with_the_three_roles() {
        for word in ["", "Admin", "root", " viewer"] {
            let err = word.parse::<Role>().expect_err("not a role");
            assert_eq!(err, UnknownRole(word.to_owned()));
            assert_eq!(err.to_string(), format!("`{word}` is not a role: write viewer, operator or admin"));
        }
        assert!(serde_json::from_str::<Role>("\"owner\"").is_err());
    }
}
