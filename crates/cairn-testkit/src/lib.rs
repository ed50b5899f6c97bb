//! Test support shared by cairn's crates: fixtures, snapshot redactions, and
//! the conformance suites every port implementation must pass.
//!
//! What it is: code used only from tests (`[dev-dependencies]`).
//!
//! What it deliberately does not do: ship in a binary, or hold production
//! logic: a fake here stands in for a port, it never replaces one.
//!
//! May depend on: `cairn-domain`, `cairn-ports`, insta. Never on the engine,
//! an adapter or the app (adapters depend on it, to run its suites).

/// Replaces every run of ASCII digits after `prefix` by `[n]`, so snapshots
/// of texts with counts or timings that vary stay stable.
pub fn redact_numbers_after(text: &str, prefix: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find(prefix) {
        let (head, tail) = rest.split_at(at + prefix.len());
        out.push_str(head);
        let digits = tail.bytes().take_while(u8::is_ascii_digit).count();
        if digits > 0 {
            out.push_str("[n]");
        }
        rest = &tail[digits..];
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redacts_only_after_the_prefix() {
        assert_eq!(
            redact_numbers_after("took 12ms, took 3ms, 7 steps", "took "),
            "took [n]ms, took [n]ms, 7 steps"
        );
    }
}
