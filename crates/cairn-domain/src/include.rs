//! `{% include "prompts/x.md" %}` in prompts: each included file is read
//! when the definition loads, through the reader that loads its schema
//! files (relative to the definition, never leaving its folder), and put in
//! the template's place, recursively. The definition keeps what was read,
//! so a run renders the text it started with, after a crash too, and the
//! template checks see the included text.

use crate::limits::MAX_TEMPLATE_BYTES;

/// Reads a file the definition names, by the name it gives (the loader's
/// reader: relative to the definition, bounded in size).
type ReadFile<'a> = dyn FnMut(&str) -> Result<String, String> + 'a;

/// How deep includes may nest (an include that includes itself stops here).
const MAX_INCLUDE_DEPTH: usize = 8;

/// `template` with every include replaced by its file's text; or what is
/// wrong with one of them.
pub(crate) fn expand(template: &str, read: &mut ReadFile<'_>) -> Result<String, String> {
    let mut chain = Vec::new();
    let expanded = expand_in(template, read, &mut chain)?;
    if expanded.len() > MAX_TEMPLATE_BYTES {
        return Err(format!(
            "with its includes the template has {} bytes, more than the {MAX_TEMPLATE_BYTES} a template may have",
            expanded.len()
        ));
    }
    Ok(expanded)
}

fn expand_in(template: &str, read: &mut ReadFile<'_>, chain: &mut Vec<String>) -> Result<String, String> {
    if !template.contains("include") {
        return Ok(template.to_owned());
    }
    let mut out = String::with_capacity(template.len());
    let mut rest = template;
    while let Some(open) = rest.find("{%") {
        let Some(len) = rest[open..].find("%}") else { break };
        let tag = &rest[open..open + len + 2];
        let inner = tag[2..tag.len() - 2].trim_start_matches('-').trim_end_matches('-').trim();
        let (before, after) = (&rest[..open], &rest[open + tag.len()..]);
        if inner == "raw" {
            // Nothing inside a raw block is a tag.
            let end = after.find("endraw").and_then(|e| after[e..].find("%}").map(|c| e + c + 2));
            let end = end.unwrap_or(after.len());
            out.push_str(before);
            out.push_str(tag);
            out.push_str(&after[..end]);
            rest = &after[end..];
            continue;
        }
        let Some(name) = inner
            .strip_prefix("include")
            .filter(|n| n.starts_with(char::is_whitespace) || n.starts_with(['"', '\'']))
        else {
            out.push_str(&rest[..open + tag.len()]);
            rest = after;
            continue;
        };
        let file = quoted(name.trim()).ok_or_else(|| {
            format!("`{tag}`: an include names one file, in quotes (`{{% include \"prompts/review.md\" %}}`)")
        })?;
        out.push_str(if tag.starts_with("{%-") { before.trim_end() } else { before });
        out.push_str(&included(file, read, chain)?);
        rest = if tag.ends_with("-%}") { after.trim_start() } else { after };
    }
    out.push_str(rest);
    Ok(out)
}

/// The text of a quoted string literal with nothing after it.
fn quoted(text: &str) -> Option<&str> {
    let quote = text.chars().next().filter(|c| matches!(c, '"' | '\''))?;
    let inner = text.strip_prefix(quote)?.strip_suffix(quote)?;
    (!inner.contains(quote) && !inner.contains('\\') && !inner.is_empty()).then_some(inner)
}

/// The expanded text of the file `name`.
fn included(name: &str, read: &mut ReadFile<'_>, chain: &mut Vec<String>) -> Result<String, String> {
    let escapes = std::path::Path::new(name)
        .components()
        .any(|c| !matches!(c, std::path::Component::Normal(_) | std::path::Component::CurDir));
    if escapes {
        return Err(format!("include `{name}` must be relative and stay inside the workflow's folder"));
    }
    if chain.len() >= MAX_INCLUDE_DEPTH || chain.iter().any(|n| n == name) {
        chain.push(name.to_owned());
        return Err(format!(
            "includes nest deeper than {MAX_INCLUDE_DEPTH} or in a circle: {}",
            chain.iter().map(|n| format!("`{n}`")).collect::<Vec<_>>().join(" > ")
        ));
    }
    let text = read(name).map_err(|e| format!("cannot read include `{name}`: {e}"))?;
    chain.push(name.to_owned());
    let expanded = expand_in(&text, read, chain);
    chain.pop();
    expanded
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with(files: &[(&str, &str)], template: &str) -> Result<String, String> {
        let mut read = |name: &str| {
            files
                .iter()
                .find(|(n, _)| *n == name)
                .map(|(_, t)| (*t).to_owned())
                .ok_or_else(|| "no such file".to_owned())
        };
        expand(template, &mut read)
    }

    #[test]
    fn includes_are_inlined_recursively_with_whitespace_control() {
        let files = [("a.md", "A {{ inputs.x }} {% include 'b.md' %}"), ("b.md", "B")];
        assert_eq!(with(&files, "x {% include \"a.md\" %} y"), Ok("x A {{ inputs.x }} B y".into()));
        assert_eq!(with(&files, "x \n{%- include \"b.md\" -%}\n y"), Ok("xBy".into()));
        assert_eq!(with(&files, "{% if a %}{{ b }}{% endif %}"), Ok("{% if a %}{{ b }}{% endif %}".into()));
        let raw = "{% raw %}{% include \"a.md\" %}{% endraw %} {% include \"b.md\" %}";
        assert_eq!(with(&files, raw), Ok("{% raw %}{% include \"a.md\" %}{% endraw %} B".into()));
    }

    #[test]
    fn a_bad_include_says_what_and_which_file() {
        let big = "x".repeat(MAX_TEMPLATE_BYTES);
        let files = [("loop.md", "{% include 'loop.md' %}"), ("big.md", big.as_str())];
        let cases = [
            ("{% include name %}", "an include names one file, in quotes"),
            ("{% include 'a.md' with context %}", "an include names one file, in quotes"),
            ("{% include '../secret.md' %}", "include `../secret.md` must be relative and stay inside"),
            ("{% include '/etc/passwd' %}", "include `/etc/passwd` must be relative"),
            ("{% include 'missing.md' %}", "cannot read include `missing.md`: no such file"),
            ("{% include 'loop.md' %}", "in a circle: `loop.md` > `loop.md`"),
            ("{% include 'big.md' %}{% include 'big.md' %}", "with its includes the template has"),
        ];
        for (template, error) in cases {
            let got = with(&files, template).expect_err(template);
            assert!(got.contains(error), "{template}: {got}");
        }
    }
}
