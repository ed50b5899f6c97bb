//! Loading a definition from its source text: the one path from bytes to a
//! validated [`Workflow`], whether the text comes from a file on disk or
//! from what a run recorded in the store.

use std::collections::BTreeMap;

use sha2::{Digest, Sha256};

use crate::definition::{Callee, Step, Workflow};
use crate::limits::MAX_CALL_DEPTH;
use crate::problem::{KeyPath, Problem, Problems, Rule};
use crate::validate::{self, ReadFile};
use crate::{read, source};

/// Reads, checks and validates a definition file's contents. `file_name`
/// picks the format (`.json` or YAML) and `read_file` loads the schema files
/// the definition names, relative to it. On failure, every problem found,
/// each placed at its line and column where the text allows.
pub fn load(file_name: &str, bytes: &[u8], read_file: &mut ReadFile<'_>) -> Result<Workflow, Problems> {
    let mut chain = vec![base_name(file_name).to_owned()];
    load_called(file_name, bytes, read_file, &mut chain)
}

/// [`load`] of the last file of `chain`: the files that call it, from the
/// first one loaded, each named relative to the first one's folder.
fn load_called(
    file_name: &str,
    bytes: &[u8],
    read_file: &mut ReadFile<'_>,
    chain: &mut Vec<String>,
) -> Result<Workflow, Problems> {
    let text = source::decode(bytes).map_err(|p| Problems(vec![p]))?;
    let root = source::parse(text, source::Format::detect(file_name, text)).map_err(|p| Problems(vec![p]))?;
    let mut problems = Problems::default();
    let workflow = read::read_workflow(&root, &mut problems).map(|mut wf| {
        validate::validate(&mut wf, &root, read_file, &mut problems);
        check_calls(&wf, read_file, chain, &mut problems);
        wf
    });
    match workflow {
        Some(wf) if problems.is_empty() => Ok(wf),
        _ => {
            source::place(&mut problems.0, text, &root);
            problems.0.sort_by(|a, b| a.location.cmp(&b.location).then_with(|| a.path.cmp(&b.path)));
            Err(problems)
        }
    }
}

/// Checks the `workflow:` steps of `wf`, the last file of `chain`: a call
/// of its own id is refused, and each file it calls is read (through
/// `read_file`, so a definition records it), loaded and checked in turn,
/// refused when it is already in the chain (a recursion), nests too deep,
/// or has problems of its own.
fn check_calls(
    wf: &Workflow,
    read_file: &mut ReadFile<'_>,
    chain: &mut Vec<String>,
    problems: &mut Problems,
) {
    let mut calls = Vec::new();
    collect_calls(&wf.steps, &KeyPath::root().key("steps"), &mut calls);
    for (path, callee) in calls {
        let path = path.key("workflow");
        let file = match callee {
            Callee::Registered(id) if *id == wf.id => {
                let msg =
                    format!("`{id}` calls itself: a workflow may not run itself, directly or through others");
                problems.0.push(Problem::new(Rule::Recursion, path, msg));
                continue;
            }
            Callee::Registered(_) => continue,
            Callee::File(file) => file,
        };
        if let Err(problem) = load_call(file, read_file, chain) {
            problems.0.push(Problem::new(problem.0, path, problem.1));
        }
    }
}

/// Reads and loads the file `file`, called by the last of `chain`; the
/// rule broken and why, when it may not be called.
fn load_call(
    file: &str,
    read_file: &mut ReadFile<'_>,
    chain: &mut Vec<String>,
) -> Result<(), (Rule, String)> {
    let escapes = std::path::Path::new(file)
        .components()
        .any(|c| !matches!(c, std::path::Component::Normal(_) | std::path::Component::CurDir));
    if escapes {
        return Err((
            Rule::BadCall,
            format!("sub-workflow `{file}` must be relative and stay inside the workflow's folder"),
        ));
    }
    let caller = chain.last().map_or("", |c| folder(c));
    let named = join(caller, file);
    if chain.contains(&named) {
        let mut cycle: Vec<String> =
            chain.iter().skip_while(|c| **c != named).map(|c| format!("`{c}`")).collect();
        cycle.push(format!("`{named}`"));
        let msg = format!("{}: a workflow may not run itself, directly or through others", cycle.join(" → "));
        return Err((Rule::Recursion, msg));
    }
    if chain.len() > MAX_CALL_DEPTH as usize {
        return Err((
            Rule::BadCall,
            format!("sub-workflows nest deeper than {MAX_CALL_DEPTH} levels at `{file}`"),
        ));
    }
    let text =
        read_file(file).map_err(|e| (Rule::BadCall, format!("cannot read sub-workflow `{file}`: {e}")))?;
    let mut beside = |rel: &str| read_file(&join(folder(file), rel));
    chain.push(named);
    let loaded = load_called(file, text.as_bytes(), &mut beside, chain);
    chain.pop();
    let Err(problems) = loaded else { return Ok(()) };
    if let Some(recursion) = problems.0.iter().find(|p| p.rule == Rule::Recursion) {
        return Err((Rule::Recursion, recursion.message.clone()));
    }
    let count = problems.0.len();
    let first = problems.0.first().map(|p| p.render(file)).unwrap_or_default();
    let noun = if count == 1 { "problem" } else { "problems" };
    Err((Rule::BadCall, format!("sub-workflow `{file}` has {count} {noun}, the first: {first}")))
}

/// Every `workflow:` step among `steps` and their nested steps, with its key path.
fn collect_calls<'a>(steps: &'a [Step], path: &KeyPath, out: &mut Vec<(KeyPath, &'a Callee)>) {
    for (i, step) in steps.iter().enumerate() {
        let at = path.index(i);
        if let crate::definition::StepKind::Workflow(w) = &step.kind {
            out.push((at.clone(), &w.workflow));
        }
        if let Some(body) = step.body() {
            collect_calls(body, &at.key("steps"), out);
        }
    }
}

/// The folder part of a relative file name (`a/b.yaml` → `a`; `b.yaml` → ``).
fn folder(file: &str) -> &str {
    file.rsplit_once('/').map_or("", |(dir, _)| dir)
}

/// The last part of a file name, where its calls are read from.
fn base_name(file: &str) -> &str {
    file.rsplit_once(['/', '\\']).map_or(file, |(_, name)| name)
}

/// `rel` read from `dir` (both relative, inside the first file's folder).
fn join(dir: &str, rel: &str) -> String {
    let rel = rel.trim_start_matches("./");
    if dir.is_empty() { rel.to_owned() } else { format!("{dir}/{rel}") }
}

/// A validated definition with everything a run records of it: the name it
/// was loaded under, its exact text, the files it named (schemas) as they
/// were read, and its content hash. Editing the files later never changes a
/// run that recorded this.
#[derive(Debug, Clone)]
pub struct Definition {
    /// The name it was loaded under (a file name, as given).
    pub name: String,
    /// The exact text.
    pub text: String,
    /// The files it named, by the path it named them with.
    pub files: BTreeMap<String, String>,
    /// The validated workflow.
    pub workflow: Workflow,
}

impl Definition {
    /// Loads a definition from its source bytes, reading the files it names
    /// through `read_file` and keeping what was read.
    pub fn from_source(name: &str, bytes: &[u8], read_file: &mut ReadFile<'_>) -> Result<Self, Problems> {
        let mut files = BTreeMap::new();
        let mut keep = |rel: &str| {
            let text = read_file(rel)?;
            files.insert(rel.to_owned(), text.clone());
            Ok(text)
        };
        let workflow = load(name, bytes, &mut keep)?;
        let text = String::from_utf8_lossy(bytes).into_owned();
        Ok(Self { name: name.to_owned(), text, files, workflow })
    }

    /// Loads a definition a run recorded: named files come from what it
    /// recorded, never from disk.
    pub fn from_recorded(name: &str, text: &str, files: &BTreeMap<String, String>) -> Result<Self, Problems> {
        let mut recorded = |rel: &str| {
            files.get(rel).cloned().ok_or_else(|| format!("`{rel}` was not recorded with the run"))
        };
        Self::from_source(name, text.as_bytes(), &mut recorded)
    }

    /// The definition of the sub-workflow file `file` this one calls, from
    /// what this one recorded of it (never from disk): its own files named
    /// as it names them.
    pub fn called(&self, file: &str) -> Result<Self, Problems> {
        let Some(text) = self.files.get(file) else {
            let msg = format!("sub-workflow `{file}` was not recorded with the workflow `{}`", self.name);
            return Err(Problems(vec![Problem::new(Rule::BadCall, KeyPath::root(), msg)]));
        };
        let mut recorded = |rel: &str| {
            let key = join(folder(file), rel);
            self.files.get(&key).cloned().ok_or_else(|| format!("`{key}` was not recorded with the run"))
        };
        Self::from_source(file, text.as_bytes(), &mut recorded)
    }

    /// The workflows its `workflow:` steps run, in step order.
    pub fn calls(&self) -> Vec<&Callee> {
        let mut calls = Vec::new();
        collect_calls(&self.workflow.steps, &KeyPath::root(), &mut calls);
        calls.into_iter().map(|(_, callee)| callee).collect()
    }

    /// SHA-256 of the text, hex: what a run records as `definition_hash`.
    pub fn hash(&self) -> String {
        format!("{:x}", Sha256::digest(self.text.as_bytes()))
    }

    /// [`content_hash`] of its text and the files it names: what the
    /// workflow catalog tells versions apart by.
    pub fn content_hash(&self) -> String {
        content_hash(&self.text, &self.files)
    }
}

/// SHA-256, hex, of a definition's text and the files it names (each
/// path and text length-prefixed, so no two sets of files hash alike).
pub fn content_hash(text: &str, files: &BTreeMap<String, String>) -> String {
    let mut hash = Sha256::new();
    hash.update((text.len() as u64).to_le_bytes());
    hash.update(text.as_bytes());
    for (path, file) in files {
        for part in [path, file] {
            hash.update((part.len() as u64).to_le_bytes());
            hash.update(part.as_bytes());
        }
    }
    format!("{:x}", hash.finalize())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_content_hash_tells_apart_files_that_join_alike() {
        let files = |pairs: &[(&str, &str)]| pairs.iter().map(|(p, t)| ((*p).into(), (*t).into())).collect();
        assert_ne!(content_hash("x", &files(&[("a", "bc")])), content_hash("x", &files(&[("ab", "c")])));
        assert_ne!(content_hash("x", &BTreeMap::new()), content_hash("x", &files(&[("a", "")])));
        assert_eq!(content_hash("x", &files(&[("a", "b")])), content_hash("x", &files(&[("a", "b")])));
    }

    const YAML: &str = "cairn: 1\nid: d\nsteps:\n  - id: a\n    agent: w\n    prompt: hi\n    output: { format: json, schema: s.json }\nagents:\n  w: {}\n";

    #[test]
    fn a_definition_keeps_the_files_it_read_and_loads_again_from_them_alone() {
        let mut disk = |rel: &str| match rel {
            "s.json" => Ok(r#"{"type": "object"}"#.to_owned()),
            other => Err(format!("no {other}")),
        };
        let def = Definition::from_source("d.yaml", YAML.as_bytes(), &mut disk).expect("valid");
        assert_eq!(def.files.keys().collect::<Vec<_>>(), ["s.json"]);
        assert_eq!(def.hash().len(), 64);
        let again =
            Definition::from_recorded(&def.name, &def.text, &def.files).expect("loads from the record");
        assert_eq!(again.hash(), def.hash());
        let missing =
            Definition::from_recorded("d.yaml", YAML, &BTreeMap::new()).expect_err("no schema recorded");
        assert!(missing.to_string().contains("s.json"), "{missing}");
    }

    /// A parent calling `sub/child.yaml`, whose schema sits beside it.
    fn disk(rel: &str) -> Result<String, String> {
        match rel {
            "sub/child.yaml" => Ok("cairn: 1\nid: child\nagents: { w: {} }\nsteps:\n  - id: a\n    agent: w\n    prompt: hi\n    output: { format: json, schema: s.json }\n".into()),
            "sub/s.json" => Ok(r#"{"type": "object"}"#.into()),
            "a.yaml" => Ok("cairn: 1\nid: a\nsteps:\n  - id: b\n    workflow: sub/b.yaml\n".into()),
            "sub/b.yaml" => Ok("cairn: 1\nid: b\nsteps:\n  - id: back\n    workflow: ../a.yaml\n".into()),
            "loop/x.yaml" => Ok("cairn: 1\nid: x\nsteps:\n  - id: y\n    workflow: y.yaml\n".into()),
            "loop/y.yaml" => Ok("cairn: 1\nid: y\nsteps:\n  - id: x\n    workflow: x.yaml\n".into()),
            "bad.yaml" => Ok("cairn: 1\nid: bad\nsteps:\n  - id: a\n    agent: nobody\n    prompt: hi\n".into()),
            other => Err(format!("no file `{other}`")),
        }
    }

    fn messages(yaml: &str) -> Vec<String> {
        let problems = Definition::from_source("p.yaml", yaml.as_bytes(), &mut disk).expect_err("refused");
        problems.0.iter().map(|p| format!("{:?} {}: {}", p.rule, p.subject, p.message)).collect()
    }

    #[test]
    fn a_called_file_is_recorded_with_its_own_files_and_loads_again_from_the_record() {
        let yaml = "cairn: 1\nid: p\nsteps:\n  - id: c\n    workflow: sub/child.yaml\n    with: { x: 1 }\n";
        let def = Definition::from_source("dir/p.yaml", yaml.as_bytes(), &mut disk).expect("valid");
        assert_eq!(def.files.keys().collect::<Vec<_>>(), ["sub/child.yaml", "sub/s.json"]);
        let child = def.called("sub/child.yaml").expect("recorded");
        assert_eq!(child.workflow.id.as_str(), "child");
        assert_eq!(child.files.keys().collect::<Vec<_>>(), ["s.json"]);
        let missing = def.called("other.yaml").expect_err("never recorded");
        assert!(missing.to_string().contains("other.yaml"), "{missing}");
    }

    #[test]
    fn a_workflow_calling_itself_directly_or_through_files_is_refused() {
        let own_id = "cairn: 1\nid: p\nsteps:\n  - id: again\n    workflow: p\n";
        assert_eq!(
            messages(own_id),
            [
                "Recursion again.workflow: `p` calls itself: a workflow may not run itself, directly or through others"
            ]
        );
        let escape = "cairn: 1\nid: p\nsteps:\n  - id: up\n    workflow: sub/b.yaml\n";
        let got = messages(escape);
        assert_eq!(
            got,
            [
                "BadCall up.workflow: sub-workflow `sub/b.yaml` has 1 problem, the first: sub/b.yaml:5:5: back.workflow: sub-workflow `../a.yaml` must be relative and stay inside the workflow's folder"
            ]
        );
        let cycle = "cairn: 1\nid: p\nsteps:\n  - id: go\n    workflow: loop/x.yaml\n";
        assert_eq!(
            messages(cycle),
            [
                "Recursion go.workflow: `loop/x.yaml` → `loop/y.yaml` → `loop/x.yaml`: a workflow may not run itself, directly or through others"
            ]
        );
    }

    #[test]
    fn a_called_file_that_cannot_be_read_leaves_the_folder_or_has_problems_is_refused_where_it_is_named() {
        let yaml = "cairn: 1\nid: p\nsteps:\n  - id: gone\n    workflow: none.yaml\n  - id: out\n    workflow: /etc/x.yaml\n  - id: broken\n    workflow: bad.yaml\n";
        let got = messages(yaml);
        assert_eq!(got.len(), 3, "{got:?}");
        assert!(
            got[0].starts_with(
                "BadCall gone.workflow: cannot read sub-workflow `none.yaml`: no file `none.yaml`"
            ),
            "{got:?}"
        );
        assert!(
            got[1].starts_with("BadCall out.workflow: sub-workflow `/etc/x.yaml` must be relative"),
            "{got:?}"
        );
        assert!(got[2].starts_with("BadCall broken.workflow: sub-workflow `bad.yaml` has 1 problem, the first: bad.yaml:5:5: a.agent: unknown agent `nobody`"), "{got:?}");
    }
}
