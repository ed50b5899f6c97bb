//! Everything that knows a YAML library. Parsing goes through `serde_yaml`
//! (the project's choice); positions of keys for error messages come from
//! `saphyr-parser`'s event stream, which is computed only when there is a
//! problem to place. Swapping the YAML crate touches this file alone.

use std::collections::HashMap;

use saphyr_parser::{Event, Parser};
use serde_json::Value;

use super::StrictValue;
use crate::problem::{KeyPath, Location, Problem, Rule};

/// Parses YAML text into a JSON value, refusing duplicate keys, tags that do
/// not map to JSON, more than one document, and alias bombs.
pub(super) fn parse(text: &str) -> Result<Value, Problem> {
    serde_yaml::from_str::<StrictValue>(text).map(|v| v.0).map_err(|e| {
        let location = e.location().map(|l| Location { line: l.line(), column: l.column() });
        Problem::at(Rule::Syntax, location, format!("invalid YAML: {}", strip_location(&e.to_string())))
    })
}

/// serde_yaml appends " at line L column C"; the location is printed separately.
fn strip_location(message: &str) -> &str {
    message.find(" at line ").map_or(message, |i| &message[..i])
}

/// Maps every key and list item of the first document to where it starts.
/// Works for JSON too (JSON is YAML's flow syntax). Best effort: a text the
/// event parser cannot read yields the positions found before the error.
pub(super) fn locate(text: &str) -> HashMap<KeyPath, Location> {
    let mut found = HashMap::new();
    let mut stack: Vec<Frame> = Vec::new();
    for item in Parser::new_from_str(text) {
        let Ok((event, span)) = item else { break };
        let at = Location { line: span.start.line(), column: span.start.col() + 1 };
        let opens = matches!(event, Event::MappingStart(..) | Event::SequenceStart(..));
        match event {
            Event::DocumentEnd => break,
            Event::Scalar(..) | Event::Alias(_) | Event::MappingStart(..) | Event::SequenceStart(..) => {
                let path = match stack.last_mut() {
                    None => Some(KeyPath::root()),
                    Some(Frame::Skip) => None,
                    Some(Frame::Map { path, key, expecting_key }) => {
                        if *expecting_key {
                            *expecting_key = false;
                            *key = match &event {
                                Event::Scalar(k, ..) => {
                                    found.entry(path.key(k)).or_insert(at);
                                    Some(k.to_string())
                                }
                                _ => None,
                            };
                            // A key is not a node of the value tree.
                            if opens {
                                stack.push(Frame::Skip);
                            }
                            continue;
                        }
                        *expecting_key = !opens;
                        key.take().map(|k| path.key(&k))
                    }
                    Some(Frame::Seq { path, next }) => {
                        let p = path.index(*next);
                        *next += 1;
                        Some(p)
                    }
                };
                if let Some(p) = &path {
                    found.entry(p.clone()).or_insert(at);
                }
                if opens {
                    stack.push(match (path, &event) {
                        (Some(path), Event::MappingStart(..)) => {
                            Frame::Map { path, key: None, expecting_key: true }
                        }
                        (Some(path), _) => Frame::Seq { path, next: 0 },
                        (None, _) => Frame::Skip,
                    });
                }
            }
            Event::MappingEnd | Event::SequenceEnd => {
                stack.pop();
                if let Some(Frame::Map { expecting_key, .. }) = stack.last_mut() {
                    *expecting_key = true;
                }
            }
            _ => {}
        }
    }
    found
}

/// An open collection while locating.
enum Frame {
    /// A mapping at `path`; `key` is the key whose value comes next.
    Map { path: KeyPath, key: Option<String>, expecting_key: bool },
    /// A list at `path`; `next` is the index of the next item.
    Seq { path: KeyPath, next: usize },
    /// A collection with no path (a complex key), skipped.
    Skip,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(found: &HashMap<KeyPath, Location>, path: KeyPath) -> (usize, usize) {
        let l = found.get(&path).unwrap_or_else(|| panic!("{path} not located"));
        (l.line, l.column)
    }

    #[test]
    fn locates_block_and_flow_keys_and_items() {
        let text = "id: x\nsteps:\n  - id: a\n    retry: { max_attempts: 3, on: [transient] }\n  - id: b\n";
        let found = locate(text);
        let steps = KeyPath::root().key("steps");
        assert_eq!(at(&found, KeyPath::root().key("id")), (1, 1));
        assert_eq!(at(&found, steps.index(0)), (3, 5));
        assert_eq!(at(&found, steps.index(0).key("retry").key("on")), (4, 31));
        assert_eq!(at(&found, steps.index(0).key("retry").key("on").index(0)), (4, 36));
        assert_eq!(at(&found, steps.index(1).key("id")), (5, 5));
    }

    #[test]
    fn locates_json() {
        let text = "{\n  \"id\": \"x\",\n  \"steps\": [\n    {\"id\": \"a\"}\n  ]\n}";
        let found = locate(text);
        assert_eq!(at(&found, KeyPath::root().key("steps").index(0).key("id")), (4, 6));
    }

    #[test]
    fn syntax_errors_carry_a_location() {
        let err = parse("a: [1, 2\nb: 3\n").expect_err("unclosed");
        assert_eq!(err.rule, Rule::Syntax);
        assert!(err.location.is_some());
    }

    #[test]
    fn duplicate_keys_are_refused() {
        let err = parse("a: 1\na: 2\n").expect_err("duplicate");
        assert!(err.message.contains("duplicate key `a`"), "{}", err.message);
    }
}
