//! Templates (MiniJinja): one environment configuration for parsing and
//! rendering, and the static analysis validation needs (which names a
//! template reads).

use std::collections::BTreeSet;

use minijinja::{Environment, UndefinedBehavior};

/// Instructions one render may execute; a runaway loop stops with an error.
pub const TEMPLATE_FUEL: u64 = 1_000_000;

/// Functions the environment provides, which templates may call freely.
pub const GLOBAL_FUNCTIONS: [&str; 4] = ["range", "dict", "namespace", "debug"];

/// The environment every template is parsed and rendered with: strict
/// undefined (an unknown variable is an error, never an empty string),
/// bounded fuel and recursion, no auto-escaping.
pub fn environment() -> Environment<'static> {
    let mut env = Environment::new();
    env.set_undefined_behavior(UndefinedBehavior::Strict);
    env.set_fuel(Some(TEMPLATE_FUEL));
    env.set_recursion_limit(64);
    env.set_auto_escape_callback(|_| minijinja::AutoEscape::None);
    // Lists, mappings and none written into text read as JSON, the form
    // prompts and programs expect, not as Python-style reprs.
    env.set_formatter(|out, state, value| match value.kind() {
        minijinja::value::ValueKind::None => out.write_str("null").map_err(minijinja::Error::from),
        minijinja::value::ValueKind::Map | minijinja::value::ValueKind::Seq => {
            let json = serde_json::to_string(value)
                .map_err(|e| minijinja::Error::new(minijinja::ErrorKind::BadSerialization, e.to_string()))?;
            out.write_str(&json).map_err(minijinja::Error::from)
        }
        _ => minijinja::escape_formatter(out, state, value),
    });
    env
}

/// Whether the text has any template syntax at all; plain text needs no parsing.
pub fn has_syntax(source: &str) -> bool {
    source.contains("{{") || source.contains("{%") || source.contains("{#")
}

/// The variables a template reads from outside, as dotted paths
/// (`steps.parse.output`, `inputs.file_path`), or the parse error.
pub fn references(env: &Environment<'_>, source: &str) -> Result<BTreeSet<String>, String> {
    if !has_syntax(source) {
        return Ok(BTreeSet::new());
    }
    let template = env.template_from_str(source).map_err(|e| describe_error(&e))?;
    Ok(template.undeclared_variables(true).into_iter().collect())
}

/// The expression of a template that is exactly one `{{ expr }}`, whose
/// value is then the result itself (a list stays a list).
pub fn single_expression(source: &str) -> Option<&str> {
    let inner = source.trim().strip_prefix("{{")?.strip_suffix("}}")?;
    let inner = inner.strip_prefix('-').unwrap_or(inner);
    let inner = inner.strip_suffix('-').unwrap_or(inner);
    (!inner.contains("{{") && !inner.contains("}}") && !inner.contains("{%")).then_some(inner.trim())
}

/// A MiniJinja error in one line: its kind, detail and line within the template.
pub fn describe_error(e: &minijinja::Error) -> String {
    let mut text = match e.detail() {
        Some(detail) => format!("{}: {detail}", e.kind()),
        None => e.kind().to_string(),
    };
    if let Some(line) = e.line() {
        text.push_str(&format!(" (template line {line})"));
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_nested_references() {
        let env = environment();
        let refs = references(&env, "{{ steps.parse.output.functions | join(', ') }} for {{ inputs.file }}")
            .expect("parses");
        assert!(refs.iter().any(|r| r.starts_with("steps.parse")), "{refs:?}");
        assert!(refs.contains("inputs.file"), "{refs:?}");
        let local = references(&env, "{% for f in inputs.files %}{{ f }}{% endfor %}").expect("parses");
        assert_eq!(local, BTreeSet::from(["inputs.files".to_owned()]));
    }

    #[test]
    fn reports_syntax_errors_with_their_line() {
        let err = references(&environment(), "ok\n{{ steps.parse.output ").expect_err("unclosed");
        assert!(err.contains("syntax error"), "{err}");
        assert!(err.contains("template line"), "{err}");
    }

    #[test]
    fn single_expressions_are_told_apart() {
        assert_eq!(single_expression("{{ docs.backlog.epics }}"), Some("docs.backlog.epics"));
        assert_eq!(single_expression("  {{- x -}} "), Some("x"));
        assert_eq!(single_expression("{{ a }} and {{ b }}"), None);
        assert_eq!(single_expression("text {{ a }}"), None);
    }
}
