//! From bytes to a JSON value: decoding, limits, YAML or JSON parsing, and
//! placing problems back into the text (line, column, step path).
//!
//! Both formats become one [`serde_json::Value`] tree, so everything after
//! this module reads one representation. YAML specifics live in [`yaml`].

mod yaml;

use std::fmt;

use serde::de::{self, Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Value};

use crate::limits::{self, MAX_FILE_BYTES};
use crate::problem::{KeyPath, Location, Problem, Rule, Seg};

/// The UTF-8 byte order mark, dropped from the start of a file.
const BOM: &str = "\u{feff}";

/// The syntax of a definition file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Format {
    /// YAML 1.2 (the default).
    Yaml,
    /// JSON.
    Json,
}

impl Format {
    /// `.json` files are JSON, `.yaml`/`.yml` YAML; otherwise a text whose
    /// first non-blank character is `{` is JSON.
    pub(crate) fn detect(file_name: &str, text: &str) -> Self {
        let lower = file_name.to_ascii_lowercase();
        if lower.ends_with(".json") {
            Format::Json
        } else if lower.ends_with(".yaml") || lower.ends_with(".yml") {
            Format::Yaml
        } else if text.trim_start().starts_with('{') {
            Format::Json
        } else {
            Format::Yaml
        }
    }
}

/// Checks the size and encoding of raw file contents. A leading UTF-8
/// byte order mark (some Windows editors write one) is not part of the
/// text: it is dropped, as YAML and JSON readers commonly do.
pub(crate) fn decode(bytes: &[u8]) -> Result<&str, Problem> {
    if bytes.len() as u64 > MAX_FILE_BYTES {
        return Err(Problem::at(
            Rule::Limit,
            None,
            format!("the file is {} bytes; definitions are limited to {MAX_FILE_BYTES} bytes", bytes.len()),
        ));
    }
    let (skipped, bytes) = match bytes.strip_prefix(BOM.as_bytes()) {
        Some(rest) => (BOM.len(), rest),
        None => (0, bytes),
    };
    std::str::from_utf8(bytes).map_err(|e| {
        let good = &bytes[..e.valid_up_to()];
        let line = good.iter().filter(|b| **b == b'\n').count() + 1;
        let column = good.iter().rev().take_while(|b| **b != b'\n').count() + 1;
        Problem::at(
            Rule::Encoding,
            Some(Location { line, column }),
            format!("the file is not UTF-8 (invalid byte at offset {})", skipped + e.valid_up_to()),
        )
    })
}

/// Parses a definition text after the nesting pre-scan. An empty document is
/// refused here, with a message that says what a workflow needs.
pub(crate) fn parse(text: &str, format: Format) -> Result<Value, Problem> {
    let text = text.strip_prefix(BOM).unwrap_or(text);
    if text.len() as u64 > MAX_FILE_BYTES {
        return decode(text.as_bytes()).map(|_| Value::Null);
    }
    limits::check_depth(text)?;
    let value = match format {
        Format::Yaml => yaml::parse(text)?,
        Format::Json => serde_json::from_str::<StrictValue>(text).map(|v| v.0).map_err(|e| {
            let location = (e.line() > 0).then(|| Location { line: e.line(), column: e.column() });
            let message = e.to_string();
            let message = message.find(" at line ").map_or(&message[..], |i| &message[..i]);
            Problem::at(Rule::Syntax, location, format!("invalid JSON: {message}"))
        })?,
    };
    if value.is_null() {
        return Err(Problem::at(
            Rule::MissingKey,
            None,
            "the file is empty: a workflow needs at least `cairn: 1`, `id` and `steps`",
        ));
    }
    Ok(value)
}

/// Fills each problem's location (from its key path, or the nearest located
/// ancestor) and its subject (the key path with step indexes replaced by step
/// ids, as people name steps: `per_epic.stories.needs[1]`).
pub(crate) fn place(problems: &mut [Problem], text: &str, root: &Value) {
    if problems.iter().all(|p| p.path.0.is_empty()) {
        return;
    }
    let found = yaml::locate(text);
    for problem in problems.iter_mut() {
        if problem.location.is_none() {
            let mut path = problem.path.clone();
            problem.location = loop {
                if let Some(l) = found.get(&path) {
                    break Some(*l);
                }
                if path.0.pop().is_none() {
                    break None;
                }
            };
        }
        problem.subject = subject(&problem.path, root);
    }
}

/// `steps[3].steps[0].needs[1]` -> `per_epic.stories.needs[1]`.
fn subject(path: &KeyPath, root: &Value) -> String {
    let mut out = String::new();
    let mut node = Some(root);
    let mut segs = path.0.iter().peekable();
    while let Some(seg) = segs.next() {
        if let (Seg::Key(k), Some(Seg::Index(i))) = (seg, segs.peek())
            && k == "steps"
        {
            let step = node.and_then(|n| n.get("steps")).and_then(|s| s.get(*i));
            if let Some(id) = step.and_then(|s| s.get("id")).and_then(Value::as_str) {
                if !out.is_empty() {
                    out.push('.');
                }
                out.push_str(id);
                node = step;
                segs.next();
                continue;
            }
        }
        match seg {
            Seg::Key(k) => {
                if !out.is_empty() {
                    out.push('.');
                }
                out.push_str(k);
                node = node.and_then(|n| n.get(k));
            }
            Seg::Index(i) => {
                out.push_str(&format!("[{i}]"));
                node = node.and_then(|n| n.get(*i));
            }
        }
    }
    out
}

/// A JSON value deserialized strictly: duplicate mapping keys are an error
/// (serde_json would keep the last silently), and every error carries the
/// parser's position.
pub(crate) struct StrictValue(pub Value);

impl<'de> Deserialize<'de> for StrictValue {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(StrictVisitor).map(StrictValue)
    }
}

struct StrictVisitor;

impl<'de> Visitor<'de> for StrictVisitor {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON-compatible value")
    }
    fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }
    fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
        Ok(Value::from(v))
    }
    fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
        Ok(Value::from(v))
    }
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Value, E> {
        serde_json::Number::from_f64(v)
            .map(Value::Number)
            .ok_or_else(|| E::custom("numbers must be finite (no .nan or .inf)"))
    }
    fn visit_str<E>(self, v: &str) -> Result<Value, E> {
        Ok(Value::String(v.to_owned()))
    }
    fn visit_string<E>(self, v: String) -> Result<Value, E> {
        Ok(Value::String(v))
    }
    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_none<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        d.deserialize_any(StrictVisitor)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut items = Vec::new();
        while let Some(StrictValue(v)) = seq.next_element()? {
            items.push(v);
        }
        Ok(Value::Array(items))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut out = Map::new();
        while let Some(key) = map.next_key::<KeyString>()? {
            if out.contains_key(&key.0) {
                return Err(de::Error::custom(format_args!("duplicate key `{}`", key.0)));
            }
            let StrictValue(v) = map.next_value()?;
            out.insert(key.0, v);
        }
        Ok(Value::Object(out))
    }
}

/// A mapping key: strings, and scalars that read naturally as strings
/// (`1: x` has the key `"1"`); never a list, mapping or null.
struct KeyString(String);

impl<'de> Deserialize<'de> for KeyString {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct KeyVisitor;
        impl Visitor<'_> for KeyVisitor {
            type Value = String;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string key")
            }
            fn visit_str<E>(self, v: &str) -> Result<String, E> {
                Ok(v.to_owned())
            }
            fn visit_bool<E>(self, v: bool) -> Result<String, E> {
                Ok(v.to_string())
            }
            fn visit_i64<E>(self, v: i64) -> Result<String, E> {
                Ok(v.to_string())
            }
            fn visit_u64<E>(self, v: u64) -> Result<String, E> {
                Ok(v.to_string())
            }
        }
        d.deserialize_any(KeyVisitor).map(KeyString)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn yaml_and_json_give_the_same_tree() {
        let y = parse("a: [1, x]\nb: {c: true}\n", Format::Yaml).expect("yaml");
        let j = parse(r#"{"a": [1, "x"], "b": {"c": true}}"#, Format::Json).expect("json");
        assert_eq!(y, j);
    }

    #[test]
    fn refuses_bad_bytes_empty_files_and_duplicates() {
        let err = decode(b"id: x\n\xff\xfe").expect_err("not utf-8");
        assert_eq!((err.rule, err.location), (Rule::Encoding, Some(Location { line: 2, column: 1 })));
        assert_eq!(parse("", Format::Yaml).expect_err("empty").rule, Rule::MissingKey);
        assert_eq!(parse("# only a comment\n", Format::Yaml).expect_err("empty").rule, Rule::MissingKey);
        let dup = parse(r#"{"a": 1, "a": 2}"#, Format::Json).expect_err("dup");
        assert!(dup.message.contains("duplicate key `a`"), "{}", dup.message);
        assert_eq!(dup.location.map(|l| l.line), Some(1));
    }

    #[test]
    fn a_leading_byte_order_mark_is_not_part_of_the_text() {
        let yaml = "\u{feff}cairn: 1\nid: bom\nsteps:\n  - id: a\n    set: 1\n";
        let json = "\u{feff}{\"cairn\": 1, \"id\": \"bom\", \"steps\": [{\"id\": \"a\", \"set\": 1}]}";
        let mut no_files = |_: &str| Err("none".to_owned());
        for (name, text) in [("bom.yaml", yaml), ("bom.json", json), ("bom", json)] {
            let wf = crate::load(name, text.as_bytes(), &mut no_files);
            assert_eq!(
                wf.map(|w| w.id.to_string()).map_err(|p| p.to_string()),
                Ok("bom".to_owned()),
                "{name}"
            );
        }
        assert_eq!(decode(b"\xef\xbb\xbfid: x\n"), Ok("id: x\n"));
        let err = decode(b"\xef\xbb\xbfid: \xff").expect_err("not utf-8");
        assert!(err.message.ends_with("offset 7)"), "counted in the file's bytes: {}", err.message);
        // A problem on the first line is placed as an editor shows it.
        let bad = "\u{feff}cairn: 1\nid: Bad Id\nsteps:\n  - id: a\n    set: 1\n";
        let problems = crate::load("bad.yaml", bad.as_bytes(), &mut no_files).expect_err("bad id");
        assert_eq!(problems.0[0].location, Some(Location { line: 2, column: 1 }), "{problems}");
        let schema =
            parse("\u{feff}{\"type\": \"object\"}", Format::Json).expect("a schema file with a mark");
        assert_eq!(schema, serde_json::json!({"type": "object"}));
    }

    #[test]
    fn refuses_an_alias_bomb_quickly() {
        let mut bomb =
            String::from("a: &a [\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\"]\n");
        for (name, prev) in
            ["b", "c", "d", "e", "f", "g", "h", "i"].iter().zip(["a", "b", "c", "d", "e", "f", "g", "h"])
        {
            bomb.push_str(&format!(
                "{name}: &{name} [*{prev},*{prev},*{prev},*{prev},*{prev},*{prev},*{prev},*{prev},*{prev}]\n"
            ));
        }
        let err = parse(&bomb, Format::Yaml).expect_err("bomb");
        assert_eq!(err.rule, Rule::Syntax, "{}", err.message);
    }

    #[test]
    fn subjects_name_steps_by_id() {
        let root: Value =
            serde_json::json!({"steps": [{"id": "a"}, {"id": "per_epic", "steps": [{"id": "stories"}]}]});
        let path = KeyPath::root().key("steps").index(1).key("steps").index(0).key("needs").index(1);
        assert_eq!(subject(&path, &root), "per_epic.stories.needs[1]");
        let unnamed = KeyPath::root().key("steps").index(5).key("x");
        assert_eq!(subject(&unnamed, &root), "steps[5].x");
    }
}
