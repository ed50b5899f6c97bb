//! Who may do what through cairn's API: the roles an API token carries.
//!
//! A token has one [`Role`], ordered `viewer < operator < admin`: each
//! allows everything the roles below it allow. Gate roles (the free-form
//! names a gate's `approvers` lists, such as `tech_lead`) are plain
//! strings beside it: a [`Caller`] holds the ones it may decide as, and
//! `steer` checks that the gate lists the one it decides as.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use strum::VariantArray as _;

use crate::state::WaitKind;

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

/// Who asks, as a front established it (from a token, or the person at
/// the machine): the name what it asks for is recorded as, what it may do,
/// and the gate roles it may decide as.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    /// The actor recorded on what the request causes.
    pub name: String,
    /// What it may do.
    pub role: Role,
    /// The gate roles it may decide as.
    pub gate_roles: GateRoles,
}

/// The gate roles a [`Caller`] may decide as.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GateRoles {
    /// Any: the person at the machine, who could decide through the
    /// store's files anyway.
    Any,
    /// These only (a token's).
    Only(Vec<String>),
}

/// Why a [`Caller`] may not make a decision at a gate.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Denied {
    /// The gates it decides list no approvers, so an operator decides
    /// them, and it is not one.
    #[error("a gate that lists no approvers takes an operator's decision")]
    OperatorsDecide,
    /// It named a gate role it does not hold.
    #[error("it holds no gate role `{0}`")]
    NotItsGateRole(String),
    /// It named no gate role, holds no single one to decide as, and is
    /// not an operator.
    #[error("it names no gate role to decide as, and is not an operator")]
    NoGateRole,
    /// The gate asks for an answer (a clarification, a conversation's
    /// turn), which comes from an operator, and it is not one.
    #[error("an answer comes from an operator")]
    OperatorsAnswer,
    /// None of the roles the gate still waits for is one it holds.
    #[error("the gate waits for {}", .0.join(", "))]
    WaitsFor(Vec<String>),
}

impl Caller {
    /// Whether it may decide at a gate as `role`.
    pub fn may_decide_as(&self, role: &str) -> bool {
        match &self.gate_roles {
            GateRoles::Any => true,
            GateRoles::Only(roles) => roles.iter().any(|r| r == role),
        }
    }

    /// The role a decision is made as when the request names none: its
    /// only gate role, if it holds exactly one.
    pub fn implied_gate_role(&self) -> Option<&str> {
        match &self.gate_roles {
            GateRoles::Only(roles) if roles.len() == 1 => roles.first().map(String::as_str),
            _ => None,
        }
    }

    /// The gate role it decides as: the one `named`, else its only one,
    /// else none (an operator's decision). `operators_decide` says the
    /// gates decided list no approvers: a gate role says nothing there,
    /// only an operator decides.
    pub fn decision_role(
        &self,
        named: Option<String>,
        operators_decide: bool,
    ) -> Result<Option<String>, Denied> {
        let operator = self.role.allows(Role::Operator);
        if operators_decide && !operator {
            return Err(Denied::OperatorsDecide);
        }
        match named.or_else(|| self.implied_gate_role().map(str::to_owned)) {
            Some(role) if !self.may_decide_as(&role) => Err(Denied::NotItsGateRole(role)),
            None if !operator => Err(Denied::NoGateRole),
            role => Ok(role),
        }
    }

    /// The gate role it decides as at a gate waiting for `kind`, whose
    /// `approvers` are listed and of which the roles `approved` have
    /// approved (`None`: an operator's decision or answer), or why it may
    /// not act there. The rule [`Caller::decision_role`] and `steer`
    /// enforce, asked ahead so a front shows only what will be taken.
    pub fn role_at(
        &self,
        kind: WaitKind,
        approvers: &[String],
        approved: &[String],
    ) -> Result<Option<String>, Denied> {
        let operator = self.role.allows(Role::Operator);
        match kind {
            WaitKind::Clarification | WaitKind::Conversation | WaitKind::Block if !operator => {
                return Err(Denied::OperatorsAnswer);
            }
            WaitKind::Clarification | WaitKind::Conversation | WaitKind::Block => return Ok(None),
            WaitKind::Acceptance | WaitKind::Approval if approvers.is_empty() => {
                return self.decision_role(None, true);
            }
            WaitKind::Acceptance | WaitKind::Approval => {}
        }
        let open: Vec<&String> = approvers.iter().filter(|r| !approved.contains(r)).collect();
        match open.iter().find(|r| self.may_decide_as(r)) {
            Some(role) => Ok(Some((*role).clone())),
            None => Err(Denied::WaitsFor(open.into_iter().cloned().collect())),
        }
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

    fn caller(role: Role, gate_roles: &[&str]) -> Caller {
        let gate_roles = GateRoles::Only(gate_roles.iter().map(|r| (*r).to_owned()).collect());
        Caller { name: "pat".into(), role, gate_roles }
    }

    #[test]
    fn a_decision_is_made_as_the_role_named_or_the_only_one_held() {
        let lead = caller(Role::Viewer, &["tech_lead"]);
        assert_eq!(lead.decision_role(None, false), Ok(Some("tech_lead".into())));
        assert_eq!(lead.decision_role(Some("tech_lead".into()), false), Ok(Some("tech_lead".into())));
        assert_eq!(
            lead.decision_role(Some("security".into()), false),
            Err(Denied::NotItsGateRole("security".into()))
        );
        let two = caller(Role::Viewer, &["tech_lead", "security"]);
        assert_eq!(two.decision_role(None, false), Err(Denied::NoGateRole), "two roles: which one?");
        assert_eq!(two.decision_role(Some("security".into()), false), Ok(Some("security".into())));
    }

    #[test]
    fn gates_without_approvers_take_an_operators_decision() {
        assert_eq!(
            caller(Role::Viewer, &["tech_lead"]).decision_role(None, true),
            Err(Denied::OperatorsDecide)
        );
        assert_eq!(caller(Role::Operator, &[]).decision_role(None, true), Ok(None));
        assert_eq!(
            caller(Role::Operator, &[]).decision_role(None, false),
            Ok(None),
            "an operator decides as itself"
        );
        let anyone = Caller { name: "me".into(), role: Role::Admin, gate_roles: GateRoles::Any };
        assert_eq!(anyone.decision_role(Some("whatever".into()), false), Ok(Some("whatever".into())));
        assert_eq!(anyone.implied_gate_role(), None);
    }

    #[test]
    fn the_role_at_a_gate_is_one_it_still_waits_for_and_the_caller_holds() {
        let roles = |r: &[&str]| r.iter().map(|r| (*r).to_owned()).collect::<Vec<_>>();
        let (lead, qa) = (roles(&["lead"]), roles(&["lead", "qa"]));
        let viewer_lead = caller(Role::Viewer, &["lead"]);
        assert_eq!(viewer_lead.role_at(WaitKind::Approval, &lead, &[]), Ok(Some("lead".into())));
        assert_eq!(
            viewer_lead.role_at(WaitKind::Approval, &qa, &roles(&["lead"])),
            Err(Denied::WaitsFor(roles(&["qa"]))),
            "lead approved already: the gate waits for qa only"
        );
        assert_eq!(
            caller(Role::Operator, &["qa"]).role_at(WaitKind::Acceptance, &lead, &[]),
            Err(Denied::WaitsFor(lead.clone()))
        );
        assert_eq!(viewer_lead.role_at(WaitKind::Approval, &[], &[]), Err(Denied::OperatorsDecide));
        assert_eq!(caller(Role::Operator, &[]).role_at(WaitKind::Approval, &[], &[]), Ok(None));
        assert_eq!(viewer_lead.role_at(WaitKind::Clarification, &[], &[]), Err(Denied::OperatorsAnswer));
        assert_eq!(caller(Role::Operator, &[]).role_at(WaitKind::Conversation, &[], &[]), Ok(None));
        let anyone = Caller { name: "me".into(), role: Role::Admin, gate_roles: GateRoles::Any };
        assert_eq!(anyone.role_at(WaitKind::Approval, &qa, &roles(&["lead"])), Ok(Some("qa".into())));
        assert_eq!(Denied::WaitsFor(qa).to_string(), "the gate waits for lead, qa");
    }
}
