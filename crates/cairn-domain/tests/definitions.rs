//! The parsed form of every example: what each key became, defaults filled in.

#[test]
fn examples_parse_into_the_expected_definitions() {
    insta::glob!("../../../examples", "*.yaml", |path| {
        let dir = path.parent().unwrap_or(std::path::Path::new("."));
        let mut read = |rel: &str| std::fs::read_to_string(dir.join(rel)).map_err(|e| e.to_string());
        let bytes = std::fs::read(path).expect("example");
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or_default();
        match cairn_domain::load(name, &bytes, &mut read) {
            Ok(workflow) => insta::assert_json_snapshot!(workflow),
            Err(problems) => panic!("{name} is invalid: {problems:?}"),
        }
    });
}

#[test]
fn json_and_yaml_definitions_are_the_same_definition() {
    let yaml = "cairn: 1\nid: same\ninputs:\n  x: { type: integer, default: 2 }\nsteps:\n  - id: a\n    set: \"{{ inputs.x }}\"\n    retry: { max_attempts: 2 }\n";
    let json = r#"{"cairn": 1, "id": "same", "inputs": {"x": {"type": "integer", "default": 2}},
        "steps": [{"id": "a", "set": "{{ inputs.x }}", "retry": {"max_attempts": 2}}]}"#;
    let mut no_files = |_: &str| Err("no files".to_owned());
    let a = cairn_domain::load("a.yaml", yaml.as_bytes(), &mut no_files).expect("yaml");
    let b = cairn_domain::load("b.json", json.as_bytes(), &mut no_files).expect("json");
    assert_eq!(a, b);
}
