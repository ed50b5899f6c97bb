//! Run inputs checked against a workflow's declared inputs.

use serde_json::{Map, Value};

use crate::definition::Workflow;
use crate::problem::Problem;
use crate::source;

/// The inputs of a run: every given value checked against its declared
/// type, defaults filled in, required ones present, unknown ones refused.
/// On failure, every problem, one sentence each.
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
        match given.get(name.as_str()).or(def.default.as_ref()) {
            Some(v) if def.ty.admits(v) => {
                out.insert(name.to_string(), v.clone());
            }
            Some(v) => problems.push(format!("input `{name}` must be of type {}, not {v}", def.ty.as_str())),
            None if def.required => problems.push(format!("input `{name}` is required")),
            None => {}
        }
    }
    if problems.is_empty() { Ok(Value::Object(out)) } else { Err(problems) }
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
}
