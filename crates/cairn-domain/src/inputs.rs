//! Run inputs checked against a workflow's declared inputs.

use serde_json::{Map, Value};

use crate::definition::{InputType, Workflow};
use crate::problem::Problem;
use crate::source;

/// The inputs of a run: every given value checked against its declared
/// type, defaults filled in, required ones present, unknown ones refused.
/// A number, boolean or null given for a `string` input is taken as its
/// text (`2024` as `"2024"`), since a command line or a YAML file writes
/// them alike. On failure, every problem, one sentence each.
pub fn resolve(wf: &Workflow, given: Value) -> Result<Value, Vec<String>> {
    let given = match given {
        Value::Object(map) => map,
        Value::Null => Map::new(),
        other => return Err(vec![format!("inputs must be a mapping of names to values, not {other}")]),
    };
    let mut problems = Vec::new();
    for name in given.keys() {
        if !wf.inputs.contains_key(name.as_str()) {
            let known: Vec<&str> = wf.inputs.keys().map(|k| k.as_str()).collect();
            problems.push(format!("unknown input `{name}`{}", crate::problem::did_you_mean(name, known)));
        }
    }
    let mut out = Map::new();
    for (name, def) in &wf.inputs {
        let value = match given.get(name.as_str()) {
            Some(v) if def.ty == InputType::String => Some(as_text(v)),
            Some(v) => Some(v.clone()),
            None => def.default.clone(),
        };
        match value {
            Some(v) if def.ty.admits(&v) => {
                out.insert(name.to_string(), v);
            }
            Some(v) => problems.push(format!("input `{name}` must be of type {}, not {v}", def.ty.as_str())),
            None if def.required => problems.push(format!("input `{name}` is required")),
            None => {}
        }
    }
    if problems.is_empty() { Ok(Value::Object(out)) } else { Err(problems) }
}

/// A scalar as the text it was written as (`2024`, `true`, `null`); a list
/// or mapping is left as it is, for the type check to refuse.
fn as_text(value: &Value) -> Value {
    match value {
        Value::Number(n) => Value::String(n.to_string()),
        Value::Bool(b) => Value::String(b.to_string()),
        Value::Null => Value::String("null".to_owned()),
        other => other.clone(),
    }
}

/// Reads a document of run inputs (YAML, or JSON when `name` ends in
/// `.json`): a mapping of names to values, before any is checked against a
/// workflow. A document that is not a mapping is refused.
pub fn read(name: &str, bytes: &[u8]) -> Result<Map<String, Value>, Problem> {
    let text = source::decode(bytes)?;
    match source::parse(text, source::Format::detect(name, text))? {
        Value::Object(map) => Ok(map),
        _ => Err(Problem::at(
            crate::problem::Rule::WrongType,
            None,
            "inputs must be a mapping of names to values",
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn checks_types_required_unknown_and_fills_defaults() {
        let yaml = "cairn: 1\nid: i\ninputs:\n  path: { type: string, required: true }\n  n: { type: integer, default: 2 }\nsteps:\n  - id: a\n    set: 1\n";
        let mut none = |_: &str| Err("none".to_owned());
        let wf = crate::load("i.yaml", yaml.as_bytes(), &mut none).expect("valid");
        assert_eq!(resolve(&wf, json!({"path": "x"})), Ok(json!({"path": "x", "n": 2})));
        assert_eq!(
            resolve(&wf, json!({"n": "two", "pth": 1})),
            Err(vec![
                "unknown input `pth` (did you mean `path`?)".to_owned(),
                "input `n` must be of type integer, not \"two\"".to_owned(),
                "input `path` is required".to_owned(),
            ])
        );
    }

    #[test]
    fn a_string_input_takes_numbers_booleans_and_null_as_their_text() {
        let yaml = "cairn: 1\nid: i\ninputs:\n  s: { type: string }\n  bare: { }\n  n: integer\n  b: boolean\n  a: array\nsteps:\n  - id: a\n    set: 1\n";
        let mut none = |_: &str| Err("none".to_owned());
        let wf = crate::load("i.yaml", yaml.as_bytes(), &mut none).expect("valid");
        for (given, text) in
            [(json!(2024), "2024"), (json!(1.5), "1.5"), (json!(true), "true"), (json!(null), "null")]
        {
            assert_eq!(
                resolve(&wf, json!({"s": given, "bare": given})),
                Ok(json!({"s": text, "bare": text})),
                "{given}"
            );
        }
        assert_eq!(
            resolve(&wf, json!({"n": 3, "b": false, "a": [1]})),
            Ok(json!({"n": 3, "b": false, "a": [1]})),
            "other types keep their values"
        );
        assert_eq!(
            resolve(&wf, json!({"s": [2024], "n": "3", "b": "true"})),
            Err(vec![
                "input `b` must be of type boolean, not \"true\"".to_owned(),
                "input `n` must be of type integer, not \"3\"".to_owned(),
                "input `s` must be of type string, not [2024]".to_owned(),
            ]),
            "only scalars become text, and only for string inputs"
        );
    }
}
