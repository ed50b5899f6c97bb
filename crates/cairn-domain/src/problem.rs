//! Problems found in a definition: what is wrong, where (a key path into the
//! document, and a line and column when the source could be located), and
//! which rule it breaks. Every check reports here, so all problems of a file
//! come out at once.

use std::fmt;

/// One step of a path into a document: a mapping key or a list index.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Seg {
    /// A mapping key.
    Key(String),
    /// A list index.
    Index(usize),
}

/// A path into the document, such as `steps[2].retry.max_attempts`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct KeyPath(pub Vec<Seg>);

impl KeyPath {
    /// The document root.
    pub fn root() -> Self {
        Self(Vec::new())
    }

    /// This path extended by a mapping key.
    pub fn key(&self, key: &str) -> Self {
        let mut segs = self.0.clone();
        segs.push(Seg::Key(key.to_owned()));
        Self(segs)
    }

    /// This path extended by a list index.
    pub fn index(&self, index: usize) -> Self {
        let mut segs = self.0.clone();
        segs.push(Seg::Index(index));
        Self(segs)
    }
}

impl fmt::Display for KeyPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, seg) in self.0.iter().enumerate() {
            match seg {
                Seg::Key(k) if i == 0 => f.write_str(k)?,
                Seg::Key(k) => write!(f, ".{k}")?,
                Seg::Index(n) => write!(f, "[{n}]")?,
            }
        }
        Ok(())
    }
}

/// A 1-based line and column in the source file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, serde::Serialize)]
pub struct Location {
    /// Line, from 1.
    pub line: usize,
    /// Column, from 1, in characters.
    pub column: usize,
}

/// The rule a problem breaks; one per row of the format's Validation section,
/// plus the input guards.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum Rule {
    /// The file is larger than [`crate::limits::MAX_FILE_BYTES`], nested too deep, or has too many steps.
    Limit,
    /// The bytes are not UTF-8.
    Encoding,
    /// YAML or JSON syntax.
    Syntax,
    /// A key the format does not have.
    UnknownKey,
    /// A key the format requires is absent.
    MissingKey,
    /// A value of the wrong type or outside its range.
    WrongType,
    /// An id or name that does not fit its pattern.
    BadId,
    /// A duration that does not parse.
    BadDuration,
    /// A step with no kind key, or more than one.
    StepKind,
    /// Two siblings with the same id.
    DuplicateId,
    /// `needs` names a step that is not a sibling.
    UnknownNeed,
    /// A dependency cycle among siblings.
    Cycle,
    /// A template that does not parse.
    TemplateSyntax,
    /// A template reads a name that does not exist or may not be ready.
    UnknownReference,
    /// A `goto` target that is not an earlier sibling.
    BadGoto,
    /// An output schema that is not valid JSON Schema, or cannot be read.
    BadSchema,
    /// A prompt's `{% include %}` that names no file, a file outside the
    /// workflow's folder, or one that cannot be read.
    BadInclude,
    /// A sub-workflow file outside the workflow's folder, one that cannot
    /// be read, or one with problems of its own.
    BadCall,
    /// A workflow that calls itself, directly or through others.
    Recursion,
    /// An agent name that is not declared.
    UnknownAgent,
    /// An iteration variable that shadows a reserved template name.
    ReservedName,
    /// The `cairn:` format version is not supported.
    Version,
}

/// One thing wrong with a definition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// The rule broken.
    pub rule: Rule,
    /// Where in the document (empty for whole-file problems).
    pub path: KeyPath,
    /// What a person reads, without the location prefix.
    pub message: String,
    /// Where in the file, when known. Filled by [`crate::source`] from `path`.
    pub location: Option<Location>,
    /// The step path shown to people (`per_epic.stories.needs[1]`), derived from `path`.
    pub subject: String,
}

impl Problem {
    /// A problem at `path`; location and subject are resolved later, against the source.
    pub fn new(rule: Rule, path: KeyPath, message: impl Into<String>) -> Self {
        Self { rule, subject: path.to_string(), path, message: message.into(), location: None }
    }

    /// A problem at a known location with no key path (syntax errors, limits).
    pub fn at(rule: Rule, location: Option<Location>, message: impl Into<String>) -> Self {
        Self { location, ..Self::new(rule, KeyPath::root(), message) }
    }

    /// `FILE:LINE:COL: subject: message`, the form `cairn validate` prints.
    pub fn render(&self, file: &str) -> String {
        let place = match self.location {
            Some(l) => format!("{file}:{}:{}", l.line, l.column),
            None => file.to_owned(),
        };
        if self.subject.is_empty() {
            format!("{place}: {}", self.message)
        } else {
            format!("{place}: {}: {}", self.subject, self.message)
        }
    }
}

/// Problems collected while reading and validating one file.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Problems(pub Vec<Problem>);

impl Problems {
    /// Records a problem.
    pub fn push(&mut self, rule: Rule, path: &KeyPath, message: impl Into<String>) {
        self.0.push(Problem::new(rule, path.clone(), message));
    }

    /// Whether nothing was found.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// How many problems were found.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// The one problem of a file that could not be read at all.
    pub fn unreadable(reason: impl fmt::Display) -> Self {
        Self(vec![Problem::at(Rule::Syntax, None, format!("cannot read the file: {reason}"))])
    }

    /// Every problem as `FILE:LINE:COL: subject: message`, one a line.
    pub fn render(&self, file: &str) -> String {
        self.0.iter().map(|p| p.render(file)).collect::<Vec<_>>().join("\n")
    }
}

/// One problem a line, each placed as `LINE:COL: subject: message` (the
/// file is the caller's to name: see [`Problems::render`]).
impl fmt::Display for Problems {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, p) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            let place = p.location.map(|l| format!("{}:{}: ", l.line, l.column)).unwrap_or_default();
            let subject = if p.subject.is_empty() { String::new() } else { format!("{}: ", p.subject) };
            write!(f, "{place}{subject}{}", p.message)?;
        }
        Ok(())
    }
}

impl std::error::Error for Problems {}

/// `Did you mean "x"?` for the closest candidate, when one is close enough.
pub fn did_you_mean<'a>(word: &str, candidates: impl IntoIterator<Item = &'a str>) -> String {
    candidates
        .into_iter()
        .map(|c| (strsim::jaro_winkler(word, c), c))
        .filter(|(score, _)| *score >= 0.8)
        .max_by(|a, b| a.0.total_cmp(&b.0))
        .map(|(_, c)| format!(" (did you mean `{c}`?)"))
        .unwrap_or_default()
}

/// `a`, `b` or `c`: a list of options for a message.
pub fn one_of<'a>(options: impl IntoIterator<Item = &'a str>) -> String {
    let items: Vec<String> = options.into_iter().map(|o| format!("`{o}`")).collect();
    match items.as_slice() {
        [] => String::new(),
        [one] => one.clone(),
        [init @ .., last] => format!("{} or {last}", init.join(", ")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_paths_print_like_the_document() {
        let p = KeyPath::root().key("steps").index(2).key("retry").key("max_attempts");
        assert_eq!(p.to_string(), "steps[2].retry.max_attempts");
    }

    #[test]
    fn did_you_mean_finds_close_keys_only() {
        assert_eq!(did_you_mean("promt", ["prompt", "agent"]), " (did you mean `prompt`?)");
        assert_eq!(did_you_mean("zzz", ["prompt", "agent"]), "");
    }

    #[test]
    fn render_with_and_without_location() {
        let mut p = Problem::new(Rule::UnknownKey, KeyPath::root().key("x"), "unknown key");
        assert_eq!(p.render("f.yaml"), "f.yaml: x: unknown key");
        p.location = Some(Location { line: 3, column: 5 });
        assert_eq!(p.render("f.yaml"), "f.yaml:3:5: x: unknown key");
    }
}
