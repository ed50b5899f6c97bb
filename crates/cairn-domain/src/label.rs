//! Run labels: free `key: value` pairs a run carries (a definition's
//! `labels:`, and `--label k=v` or the API's `labels` at start), listed with
//! the run and filtered on. Checked here once, for every front.

use std::collections::BTreeMap;

use crate::id::{IdError, LabelKey};

/// A run's labels, by key.
pub type Labels = BTreeMap<LabelKey, String>;

/// The most labels one run carries.
pub const MAX_LABELS: usize = 32;
/// The longest label value, in bytes.
pub const MAX_VALUE_BYTES: usize = 256;

/// Why a label, or a set of them, is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum LabelError {
    /// A key that does not fit its pattern.
    #[error(transparent)]
    Key(#[from] IdError),
    /// A value too long or with control characters in it.
    #[error("the value of label `{key}` must be at most {MAX_VALUE_BYTES} bytes without control characters")]
    Value {
        /// The label's key.
        key: String,
    },
    /// `KEY=VALUE` text without the `=`.
    #[error("`{text}` is not a label: write KEY=VALUE")]
    NoEquals {
        /// The text given.
        text: String,
    },
    /// More labels than a run carries.
    #[error("{count} labels are more than the {MAX_LABELS} a run carries")]
    TooMany {
        /// How many there were.
        count: usize,
    },
}

/// Checks one label: its key's pattern and its value's length and characters.
pub fn label(key: &str, value: &str) -> Result<(LabelKey, String), LabelError> {
    let key = LabelKey::new(key)?;
    if value.len() > MAX_VALUE_BYTES || value.chars().any(char::is_control) {
        return Err(LabelError::Value { key: key.to_string() });
    }
    Ok((key, value.to_owned()))
}

/// Reads `KEY=VALUE` (split at the first `=`) as a checked label.
pub fn pair(text: &str) -> Result<(LabelKey, String), LabelError> {
    let (key, value) = text.split_once('=').ok_or_else(|| LabelError::NoEquals { text: text.to_owned() })?;
    label(key, value)
}

/// The labels a run starts with: the definition's, with the ones given at
/// start put over them (a given key wins).
pub fn merge(defined: &Labels, given: Labels) -> Result<Labels, LabelError> {
    let mut labels = defined.clone();
    labels.extend(given);
    if labels.len() > MAX_LABELS {
        return Err(LabelError::TooMany { count: labels.len() });
    }
    Ok(labels)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pair_splits_at_the_first_equals_and_checks_both_sides() {
        let (key, value) = pair("team=pay=ments").expect("valid");
        assert_eq!((key.as_str(), value.as_str()), ("team", "pay=ments"));
        assert_eq!(pair("team=").expect("empty values are values").1, "");
        assert!(matches!(pair("team"), Err(LabelError::NoEquals { .. })));
        assert!(matches!(pair("=x"), Err(LabelError::Key(_))));
        assert!(matches!(pair("a b=x"), Err(LabelError::Key(_))));
        assert!(matches!(pair("k=line\nbreak"), Err(LabelError::Value { .. })));
        let long = format!("k={}", "x".repeat(MAX_VALUE_BYTES + 1));
        assert_eq!(
            pair(&long).expect_err("too long").to_string(),
            format!(
                "the value of label `k` must be at most {MAX_VALUE_BYTES} bytes without control characters"
            )
        );
    }

    #[test]
    fn given_labels_win_and_a_run_carries_at_most_the_limit() {
        let defined: Labels = [label("team", "a").expect("ok"), label("env", "prod").expect("ok")].into();
        let merged = merge(&defined, [label("team", "b").expect("ok")].into()).expect("merges");
        assert_eq!(merged.get("team").map(String::as_str), Some("b"));
        assert_eq!(merged.get("env").map(String::as_str), Some("prod"));
        let many: Labels = (0..=MAX_LABELS).map(|i| label(&format!("k{i}"), "v").expect("ok")).collect();
        assert_eq!(merge(&Labels::new(), many), Err(LabelError::TooMany { count: MAX_LABELS + 1 }));
    }
}
