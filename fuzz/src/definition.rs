//! The definition reader (`cairn_domain::load`): whatever the bytes, a
//! workflow or problems, never a panic, a hang or a huge allocation; and a
//! workflow it accepts can be planned and prepared for running, since the
//! engine does both next without checking again.

use cairn_domain::plan::Plan;
use cairn_domain::program::Program;

/// The schema every file a definition names reads as, so definitions that
/// name schema files reach the schema checks.
const SCHEMA: &str = r#"{"type": "object", "properties": {"ok": {"type": "boolean"}}, "required": ["ok"]}"#;

/// Loads `data` as a definition file named without an extension (so its
/// text picks YAML or JSON, as for a file on disk with neither), then
/// plans and prepares what it accepts and writes out what it refuses.
pub fn run(data: &[u8]) {
    let mut read_file = |name: &str| {
        if name.ends_with(".json") { Ok(SCHEMA.to_owned()) } else { Err(format!("no file `{name}` here")) }
    };
    match cairn_domain::load("fuzz", data, &mut read_file) {
        Ok(workflow) => {
            if let Err(e) = Plan::build(&workflow) {
                panic!("a workflow that loaded does not plan: {e:?}");
            }
            let program = match Program::new(workflow) {
                Ok(program) => program,
                Err(e) => panic!("a workflow that loaded has a cycle: {e:?}"),
            };
            let _ = cairn_domain::needs::needs(program.workflow());
        }
        Err(problems) => {
            assert!(!problems.is_empty(), "a refused definition says why");
            let _ = problems.to_string();
        }
    }
}
