//! Templates (MiniJinja): one environment configuration for parsing and
//! rendering, and the static analysis validation needs (which names a
//! template reads).

use std::collections::BTreeSet;
use std::fmt::Write as _;

use minijinja::value::{Kwargs, Value, ValueKind};
use minijinja::{Environment, ErrorKind, State, UndefinedBehavior};

/// The longest text a template may produce, in bytes; a template that
/// yields a value (a lone `{{ expr }}` that computes something) is held to
/// it as JSON.
pub const MAX_RENDERED_BYTES: usize = 4 * 1024 * 1024;

/// Instructions one render may execute; a runaway loop stops with an error.
pub(crate) const TEMPLATE_FUEL: u64 = 1_000_000;

/// Functions the environment provides, which templates may call freely.
pub(crate) const GLOBAL_FUNCTIONS: [&str; 4] = ["range", "dict", "namespace", "debug"];

/// The widest `tojson` indent: wider ones are refused rather than written.
const MAX_JSON_INDENT: usize = 64;

/// The environment every template is parsed and rendered with: strict
/// undefined (an unknown variable is an error, never an empty string),
/// bounded fuel and recursion, no auto-escaping, and a `tojson` that writes
/// plain JSON.
pub(crate) fn environment() -> Environment<'static> {
    let mut env = Environment::new();
    env.set_undefined_behavior(UndefinedBehavior::Strict);
    env.set_fuel(Some(TEMPLATE_FUEL));
    env.set_recursion_limit(64);
    env.set_auto_escape_callback(|_| minijinja::AutoEscape::None);
    env.add_filter("tojson", tojson);
    env.set_formatter(|out, state, value| match structured_text(value) {
        Some(json) => {
            let json = json.map_err(|e| match e {
                JsonError::TooLarge(too_large) => too_large.into_minijinja(),
                JsonError::Other(e) => minijinja::Error::new(ErrorKind::InvalidOperation, e),
            })?;
            out.write_str(&json).map_err(minijinja::Error::from)
        }
        None => minijinja::escape_formatter(out, state, value),
    });
    env
}

/// `tojson`, replacing MiniJinja's: that one escapes `<`, `>`, `&` and `'`
/// (as `\u003c` ...) so its output is safe inside HTML, but prompts and
/// programs read JSON, where those characters are plain. The layout is
/// MiniJinja's, so recorded prompts stay the same: `{"a": [1, 2]}`, or one
/// item per line with `tojson(2)`, `tojson(indent=2)` or `tojson(true)`
/// (two spaces).
fn tojson(
    state: &State,
    value: &Value,
    indent: Option<Value>,
    kwargs: Kwargs,
) -> Result<Value, minijinja::Error> {
    let indent = match indent {
        Some(indent) => Some(indent),
        None => kwargs.get::<Option<Value>>("indent")?,
    };
    let indent = match indent {
        None => None,
        Some(value) => match bool::try_from(value.clone()) {
            Ok(true) => Some(2),
            Ok(false) => None,
            Err(_) => Some(usize::try_from(value)?),
        },
    };
    kwargs.assert_all_used()?;
    let mut out = Bounded::new(MAX_RENDERED_BYTES);
    let written = match indent {
        Some(n) if n > MAX_JSON_INDENT => {
            return Err(minijinja::Error::new(
                ErrorKind::InvalidOperation,
                format!("`tojson` indents at most {MAX_JSON_INDENT} spaces, not {n}"),
            ));
        }
        Some(n) => {
            let spaces = " ".repeat(n);
            let formatter = serde_json::ser::PrettyFormatter::with_indent(spaces.as_bytes());
            serde::Serialize::serialize(
                value,
                &mut serde_json::Serializer::with_formatter(&mut out, formatter),
            )
        }
        None => {
            serde::Serialize::serialize(value, &mut serde_json::Serializer::with_formatter(&mut out, Spaced))
        }
    };
    if out.over {
        return Err(TooLarge.into_minijinja());
    }
    written.map_err(|e| {
        minijinja::Error::new(ErrorKind::BadSerialization, "cannot write the value as JSON").with_source(e)
    })?;
    let json = String::from_utf8(out.bytes).map_err(|e| {
        minijinja::Error::new(ErrorKind::BadSerialization, "cannot write the value as JSON").with_source(e)
    })?;
    // As MiniJinja charges its `tojson`: serialising costs more than copying.
    state.consume_fuel(json.len() as u64 / 4)?;
    Ok(Value::from_safe_string(json))
}

/// serde_json's compact layout with a space after each separator, as
/// MiniJinja and Jinja write JSON on one line: `{"a": [1, 2]}`.
struct Spaced;

impl serde_json::ser::Formatter for Spaced {
    fn begin_array_value<W: ?Sized + std::io::Write>(
        &mut self,
        writer: &mut W,
        first: bool,
    ) -> std::io::Result<()> {
        if first { Ok(()) } else { writer.write_all(b", ") }
    }

    fn begin_object_key<W: ?Sized + std::io::Write>(
        &mut self,
        writer: &mut W,
        first: bool,
    ) -> std::io::Result<()> {
        if first { Ok(()) } else { writer.write_all(b", ") }
    }

    fn begin_object_value<W: ?Sized + std::io::Write>(&mut self, writer: &mut W) -> std::io::Result<()> {
        writer.write_all(b": ")
    }
}

/// How lists, mappings and none read when written into text: as JSON, the
/// form prompts and programs expect, not as Python-style reprs. `None` for
/// every other kind, which is written as itself. A value whose JSON would
/// pass [`MAX_RENDERED_BYTES`] is refused as it is written, never built whole.
fn structured_text(value: &Value) -> Option<Result<String, JsonError>> {
    match value.kind() {
        ValueKind::None => Some(Ok("null".to_owned())),
        ValueKind::Map | ValueKind::Seq | ValueKind::Iterable => Some(json_within(value, MAX_RENDERED_BYTES)),
        _ => None,
    }
}

/// Why a value was not written as JSON.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum JsonError {
    /// Its JSON would pass the limit.
    TooLarge(TooLarge),
    /// It has no JSON form (the serializer's reason).
    Other(String),
}

impl std::fmt::Display for JsonError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            JsonError::TooLarge(e) => e.fmt(f),
            JsonError::Other(e) => f.write_str(e),
        }
    }
}

/// A template result over [`MAX_RENDERED_BYTES`], as text or as JSON.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct TooLarge;

impl std::fmt::Display for TooLarge {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "the template produced more than {MAX_RENDERED_BYTES} bytes")
    }
}

/// An error, so MiniJinja can carry it as the source of its own: a render
/// that failed on the limit is told apart from one whose template is wrong.
impl std::error::Error for TooLarge {}

impl TooLarge {
    /// The MiniJinja error a filter or the formatter returns for it, with
    /// itself as the source that [`is_too_large`] finds.
    fn into_minijinja(self) -> minijinja::Error {
        minijinja::Error::new(ErrorKind::InvalidOperation, self.to_string()).with_source(self)
    }
}

/// Whether a MiniJinja error is the size limit ([`TooLarge`]) and not a
/// fault of the template, wherever in its chain of sources it was put.
pub(crate) fn is_too_large(e: &minijinja::Error) -> bool {
    let mut source = std::error::Error::source(e);
    while let Some(cause) = source {
        if cause.is::<TooLarge>() {
            return true;
        }
        source = cause.source();
    }
    false
}

/// `value` as compact JSON, refused once it passes `limit` bytes: writing
/// stops there, so a value built lazily (`[0] * 100000000` repeats without
/// copying) is never walked further or held whole.
pub(crate) fn json_within(value: &impl serde::Serialize, limit: usize) -> Result<String, JsonError> {
    let mut out = Bounded::new(limit);
    let written = serde_json::to_writer(&mut out, value);
    if out.over {
        return Err(JsonError::TooLarge(TooLarge));
    }
    written.map_err(|e| JsonError::Other(e.to_string()))?;
    String::from_utf8(out.bytes).map_err(|e| JsonError::Other(e.to_string()))
}

/// The size of `value` as compact JSON, measured without keeping it, or
/// [`TooLarge`] once it passes `limit` bytes.
pub(crate) fn json_size_within(value: &impl serde::Serialize, limit: usize) -> Result<usize, JsonError> {
    let mut out = Counted { len: 0, limit };
    let written = serde_json::to_writer(&mut out, value);
    if out.len > limit {
        return Err(JsonError::TooLarge(TooLarge));
    }
    written.map_err(|e| JsonError::Other(e.to_string()))?;
    Ok(out.len)
}

/// A buffer that refuses to grow past its limit (and says it did).
struct Bounded {
    bytes: Vec<u8>,
    limit: usize,
    over: bool,
}

impl Bounded {
    fn new(limit: usize) -> Self {
        Self { bytes: Vec::new(), limit, over: false }
    }
}

impl std::io::Write for Bounded {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if self.bytes.len().saturating_add(buf.len()) > self.limit {
            self.over = true;
            return Err(std::io::Error::other(TooLarge.to_string()));
        }
        self.bytes.extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// A sink that counts what is written to it, and stops past its limit.
struct Counted {
    len: usize,
    limit: usize,
}

impl std::io::Write for Counted {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.len = self.len.saturating_add(buf.len());
        if self.len > self.limit {
            return Err(std::io::Error::other(TooLarge.to_string()));
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// A template that is only text and `{{ name.attr }}` substitutions, the
/// form most prompts take, split into its pieces: it is rendered and
/// analysed without a MiniJinja parse, which would cost more than the rest
/// of a step. Everything else (filters, blocks, comments, whitespace
/// control, keywords) is left to MiniJinja, and where both apply they
/// agree: a differential test holds them to it.
#[derive(Debug)]
pub(crate) struct Substitutions<'a> {
    pieces: Vec<Piece<'a>>,
}

#[derive(Debug)]
enum Piece<'a> {
    Text(&'a str),
    /// A dotted path: `steps.plan.output`.
    Path(&'a str),
}

/// Names MiniJinja reads as something other than a variable.
const NOT_VARIABLES: [&str; 15] = [
    "true", "True", "false", "False", "none", "None", "loop", "self", "not", "and", "or", "in", "is", "if",
    "else",
];

impl<'a> Substitutions<'a> {
    /// The pieces of `source`, or `None` when it needs MiniJinja.
    pub(crate) fn of(source: &'a str) -> Option<Self> {
        if source.contains("{%") || source.contains("{#") {
            return None;
        }
        // MiniJinja drops one trailing newline, as Jinja does.
        let source = source.strip_suffix('\n').unwrap_or(source);
        let mut rest = source.strip_suffix('\r').unwrap_or(source);
        let mut pieces = Vec::new();
        while let Some(open) = rest.find("{{") {
            if open > 0 {
                pieces.push(Piece::Text(&rest[..open]));
            }
            let inner = &rest[open + 2..];
            let close = inner.find("}}")?;
            let path = inner[..close].trim_matches([' ', '\t', '\n', '\r']);
            if !is_path(path) {
                return None;
            }
            pieces.push(Piece::Path(path));
            rest = &inner[close + 2..];
        }
        if !rest.is_empty() {
            pieces.push(Piece::Text(rest));
        }
        Some(Self { pieces })
    }

    /// The dotted paths substituted, as [`references`] reports them.
    pub(crate) fn paths(&self) -> impl Iterator<Item = &'a str> + '_ {
        self.pieces.iter().filter_map(|p| match p {
            Piece::Path(path) => Some(*path),
            Piece::Text(_) => None,
        })
    }

    /// The text against `ctx`, or `None` when a name is missing or a value
    /// is of a kind only MiniJinja writes: rendering it there gives the
    /// same text or the error to report.
    pub(crate) fn render(&self, ctx: &Value) -> Option<String> {
        let mut out = String::new();
        for piece in &self.pieces {
            match piece {
                Piece::Text(text) => out.push_str(text),
                Piece::Path(path) => {
                    let value = value_at(ctx, path)?;
                    match structured_text(&value) {
                        Some(json) => out.push_str(&json.ok()?),
                        None if matches!(
                            value.kind(),
                            ValueKind::String | ValueKind::Number | ValueKind::Bool
                        ) =>
                        {
                            write!(out, "{value}").ok()?;
                        }
                        None => return None,
                    }
                }
            }
        }
        Some(out)
    }
}

/// Whether `text` is a dotted path of plain names: `steps.plan.output`.
fn is_path(text: &str) -> bool {
    !text.is_empty()
        && text.split('.').all(|name| {
            let mut bytes = name.bytes();
            bytes.next().is_some_and(|b| b.is_ascii_alphabetic() || b == b'_')
                && bytes.all(|b| b.is_ascii_alphanumeric() || b == b'_')
                && !NOT_VARIABLES.contains(&name)
        })
}

/// The value at `path` in `ctx`, looked up as MiniJinja does, or `None`
/// when `path` is not a dotted path of plain names ([`Substitutions`]),
/// a part is missing, or the value is not plain data: MiniJinja then
/// evaluates it (and reports the error).
pub(crate) fn lookup(ctx: &Value, path: &str) -> Option<Value> {
    if is_path(path) { value_at(ctx, path) } else { None }
}

/// [`lookup`] of a path known to be one.
fn value_at(ctx: &Value, path: &str) -> Option<Value> {
    let mut value = ctx.clone();
    for name in path.split('.') {
        value = value.get_attr(name).ok()?;
    }
    (!matches!(
        value.kind(),
        ValueKind::Undefined | ValueKind::Invalid | ValueKind::Iterable | ValueKind::Plain
    ))
    .then_some(value)
}

/// Whether the text has any template syntax at all; plain text needs no parsing.
pub(crate) fn has_syntax(source: &str) -> bool {
    source.contains("{{") || source.contains("{%") || source.contains("{#")
}

/// The variables a template reads from outside, as dotted paths
/// (`steps.parse.output`, `inputs.file_path`), or the parse error.
pub(crate) fn references(env: &Environment<'_>, source: &str) -> Result<BTreeSet<String>, String> {
    if !has_syntax(source) {
        return Ok(BTreeSet::new());
    }
    if let Some(substitutions) = Substitutions::of(source) {
        return Ok(substitutions.paths().map(str::to_owned).collect());
    }
    let template = env.template_from_str(source).map_err(|e| describe_error(&e))?;
    Ok(template.undeclared_variables(true).into_iter().collect())
}

/// What a step's templates read, found once by static analysis, so a
/// context holds only that: building it costs what the step reads, not
/// what the run has done.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Reads {
    /// Ids read as `steps.ID`; `None`: any (a template read `steps` whole).
    pub steps: Option<BTreeSet<String>>,
    /// Whether `progress` is read.
    pub progress: bool,
}

impl Reads {
    /// Everything: for templates not known in advance.
    pub fn all() -> Self {
        Self { steps: None, progress: true }
    }

    /// What these template sources read; a template that does not parse
    /// reads everything (its error surfaces when it is rendered).
    pub fn of<'a>(env: &Environment<'_>, sources: impl IntoIterator<Item = &'a str>) -> Self {
        let mut reads = Self { steps: Some(BTreeSet::new()), progress: false };
        for source in sources {
            let Ok(refs) = references(env, source) else { return Self::all() };
            for r in refs {
                let mut parts = r.split('.');
                match (parts.next(), parts.next()) {
                    (Some("steps"), Some(id)) => {
                        if let Some(ids) = reads.steps.as_mut() {
                            ids.insert(id.to_owned());
                        }
                    }
                    (Some("steps"), None) => reads.steps = None,
                    (Some("progress"), _) => reads.progress = true,
                    _ => {}
                }
            }
        }
        reads
    }
}

/// The expression of a template that is exactly one `{{ expr }}`, whose
/// value is then the result itself (a list stays a list).
pub(crate) fn single_expression(source: &str) -> Option<&str> {
    let inner = source.trim().strip_prefix("{{")?.strip_suffix("}}")?;
    let inner = inner.strip_prefix('-').unwrap_or(inner);
    let inner = inner.strip_suffix('-').unwrap_or(inner);
    (!inner.contains("{{") && !inner.contains("}}") && !inner.contains("{%")).then_some(inner.trim())
}

/// A MiniJinja error in one line: its kind, detail and line within the template.
pub(crate) fn describe_error(e: &minijinja::Error) -> String {
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

    /// Fragments templates are made of: text with the characters that
    /// matter to MiniJinja, and substitutions with every spacing.
    fn fragment() -> impl proptest::strategy::Strategy<Value = String> {
        use proptest::prelude::*;
        let name = prop::sample::select(vec![
            "a", "b", "n", "f", "t", "nil", "items", "text", "map", "missing", "none", "loop", "not",
            "range", "x_1",
        ]);
        let path = prop::collection::vec(name, 1..4).prop_map(|names| names.join("."));
        let space = prop::sample::select(vec!["", " ", "  ", "\n", "\t", "-", " -", "- "]);
        prop_oneof![
            prop::sample::select(vec![
                "x", " ", "\n", "\r", "{", "}", "{{", "}}", "{%", "%}", "{#", ".", "-", "é"
            ])
            .prop_map(str::to_owned),
            (space.clone(), path, space).prop_map(|(l, p, r)| format!("{{{{{l}{p}{r}}}}}")),
        ]
    }

    proptest::proptest! {
        /// Where the substitution fast path answers, MiniJinja gives the
        /// same text and the same references.
        #[test]
        fn substitutions_agree_with_minijinja(parts in proptest::collection::vec(fragment(), 0..8)) {
            let source = parts.concat();
            let env = environment();
            let ctx = Value::from(minijinja::value::Serde(serde_json::json!({
                "a": {"b": {"n": 1}, "text": "hi {{ a }}", "f": 1.5},
                "b": "plain", "n": 42, "f": 0.25, "t": true, "nil": null,
                "items": [1, "two", {"a": null}], "text": "line\nnext", "map": {"x_1": [true]},
            })));
            let Some(fast) = Substitutions::of(&source) else { return Ok(()) };
            let template = env.template_from_str(&source);
            proptest::prop_assert!(template.is_ok(), "{source:?} parses: {template:?}");
            let paths: BTreeSet<String> = fast.paths().map(str::to_owned).collect();
            let slow: BTreeSet<String> = template.expect("checked").undeclared_variables(true).into_iter().collect();
            proptest::prop_assert_eq!(&paths, &slow, "references of {:?}", source);
            if let Some(text) = fast.render(&ctx) {
                proptest::prop_assert_eq!(Ok(text), env.render_str(&source, &ctx).map_err(|e| e.to_string()), "{:?}", source);
            }
            if let Some(expr) = single_expression(&source) {
                let slow = env.compile_expression(expr).and_then(|e| e.eval(&ctx)).ok().filter(|v| !v.is_undefined());
                let fast = lookup(&ctx, expr);
                if let Some(value) = &fast {
                    proptest::prop_assert_eq!(Some(value), slow.as_ref(), "{:?}", source);
                }
            }
        }
    }

    #[test]
    fn tojson_writes_plain_json_not_html_escapes() {
        let env = environment();
        let ctx = Value::from(minijinja::value::Serde(serde_json::json!({
            "x": {"q": "it's <b> & \"c\" é", "n": [1, 2.5, null, true], "e": {}},
        })));
        let render = |source: &str| env.render_str(source, &ctx).map_err(|e| describe_error(&e));
        assert_eq!(
            render("{{ x | tojson }}").as_deref(),
            Ok(r#"{"e": {}, "n": [1, 2.5, null, true], "q": "it's <b> & \"c\" é"}"#)
        );
        assert_eq!(render("q={{ x.q | tojson }}").as_deref(), Ok(r#"q="it's <b> & \"c\" é""#));
        let pretty = "{\n  \"e\": {},\n  \"n\": [\n    1,\n    2.5,\n    null,\n    true\n  ],\n  \"q\": \"it's <b> & \\\"c\\\" é\"\n}";
        for source in ["{{ x | tojson(2) }}", "{{ x | tojson(indent=2) }}", "{{ x | tojson(true) }}"] {
            assert_eq!(render(source).as_deref(), Ok(pretty), "{source}");
        }
        assert_eq!(render("{{ x.n | tojson(false) }}").as_deref(), Ok("[1, 2.5, null, true]"));
        assert_eq!(render("{{ x.n | tojson(indent=0) }}").as_deref(), Ok("[\n1,\n2.5,\nnull,\ntrue\n]"));
        let wide = render("{{ x | tojson(1000000) }}").expect_err("refused");
        assert!(wide.contains("at most 64 spaces"), "{wide}");
        let unknown = render("{{ x | tojson(width=2) }}").expect_err("refused");
        assert!(unknown.contains("width"), "{unknown}");
    }

    #[test]
    fn substitutions_cover_plain_prompts_and_leave_the_rest() {
        assert!(Substitutions::of("after {{ steps.s1.output }} and {{inputs.file}}\n").is_some());
        for source in
            ["{{ x | upper }}", "{% if a %}b{% endif %}", "{# c #}", "{{- a }}", "{{ a[0] }}", "{{ none }}"]
        {
            assert!(Substitutions::of(source).is_none(), "{source}");
        }
        let ctx = Value::from(minijinja::value::Serde(serde_json::json!({"a": {"b": [1, null]}, "s": "x"})));
        let rendered = Substitutions::of("{{ a.b }}/{{ s }}/{{ a }}").and_then(|s| s.render(&ctx));
        assert_eq!(rendered.as_deref(), Some(r#"[1,null]/x/{"b":[1,null]}"#));
        assert_eq!(
            Substitutions::of("{{ a.c }}").and_then(|s| s.render(&ctx)),
            None,
            "missing: MiniJinja reports it"
        );
    }
}
