//! Loading a definition from its source text: the one path from bytes to a
//! validated [`Workflow`], whether the text comes from a file on disk or
//! from what a run recorded in the store.

use std::collections::BTreeMap;

use sha2::{Digest, Sha256};

use crate::definition::Workflow;
use crate::problem::Problems;
use crate::validate::{self, ReadFile};
use crate::{read, source};

/// Reads, checks and validates a definition file's contents. `file_name`
/// picks the format (`.json` or YAML) and `read_file` loads the schema files
/// the definition names, relative to it. On failure, every problem found,
/// each placed at its line and column where the text allows.
pub fn load(file_name: &str, bytes: &[u8], read_file: &mut ReadFile<'_>) -> Result<Workflow, Problems> {
    let text = source::decode(bytes).map_err(|p| Problems(vec![p]))?;
    let root = source::parse(text, source::Format::detect(file_name, text)).map_err(|p| Problems(vec![p]))?;
    let mut problems = Problems::default();
    let workflow = read::read_workflow(&root, &mut problems).map(|mut wf| {
        validate::validate(&mut wf, &root, read_file, &mut problems);
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
}
