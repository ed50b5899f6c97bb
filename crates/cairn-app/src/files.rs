//! Reading definition and input files from disk, within the size limit,
//! before a byte of a huge file is read.

use std::fs::File;
use std::io::Read;
use std::path::Path;

use cairn_domain::Definition;
use cairn_domain::limits::MAX_FILE_BYTES;
use cairn_domain::problem::{Problem, Problems, Rule};
use serde_json::{Map, Value};

use crate::error::Error;

/// Why a file was not read.
#[derive(Debug, PartialEq, Eq)]
enum Unread {
    /// It is larger than [`MAX_FILE_BYTES`]: its size, as its metadata
    /// says, or `None` when it grew past the limit while it was read.
    TooLarge(Option<u64>),
    /// It cannot be read: the system's reason.
    Failed(String),
}

impl Unread {
    /// Why, in words, of a file holding `what` ("definitions").
    fn reason(&self, what: &str) -> String {
        match self {
            Self::TooLarge(Some(size)) => {
                format!("the file is {size} bytes; {what} are limited to {MAX_FILE_BYTES} bytes")
            }
            Self::TooLarge(None) => {
                format!(
                    "the file grew past {MAX_FILE_BYTES} bytes while it was read; {what} are limited to that"
                )
            }
            Self::Failed(reason) => reason.clone(),
        }
    }
}

/// Reads a file of at most [`MAX_FILE_BYTES`]. A larger one is refused from
/// its metadata, before a byte of it is read; the read is bounded too, in
/// case the file grows meanwhile.
fn read_bounded(path: &Path) -> Result<Vec<u8>, Unread> {
    let failed = |e: std::io::Error| Unread::Failed(e.to_string());
    let file = File::open(path).map_err(failed)?;
    let metadata = file.metadata().map_err(failed)?;
    if metadata.is_dir() {
        return Err(Unread::Failed("it is a directory".into()));
    }
    if metadata.len() > MAX_FILE_BYTES {
        return Err(Unread::TooLarge(Some(metadata.len())));
    }
    let mut bytes = Vec::with_capacity(usize::try_from(metadata.len()).unwrap_or(0));
    file.take(MAX_FILE_BYTES + 1).read_to_end(&mut bytes).map_err(failed)?;
    if bytes.len() as u64 > MAX_FILE_BYTES {
        return Err(Unread::TooLarge(None));
    }
    Ok(bytes)
}

/// Loads and validates the definition at `path`, with the files it names
/// (schemas, read relative to its folder), as a run records it.
pub fn load_definition(path: &Path) -> Result<Definition, Error> {
    let name = path.display().to_string();
    let problems = |problems: Problems| Error::Definition { name: name.clone(), problems };
    let bytes = read_bounded(path).map_err(|unread| {
        problems(match unread {
            Unread::TooLarge(_) => {
                Problems(vec![Problem::at(Rule::Limit, None, unread.reason("definitions"))])
            }
            Unread::Failed(reason) => Problems::unreadable(reason),
        })
    })?;
    let base = path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let mut read = |rel: &str| {
        // The domain keeps names inside the folder; a symlink must too.
        let path = base.join(rel);
        if let (Ok(real), Ok(folder)) = (path.canonicalize(), base.canonicalize())
            && !real.starts_with(&folder)
        {
            return Err("it leads outside the workflow's folder (through a symlink)".to_owned());
        }
        read_bounded(&path)
            .map_err(|unread| unread.reason("files a definition names"))
            .and_then(|b| String::from_utf8(b).map_err(|e| e.to_string()))
    };
    Definition::from_source(&name, &bytes, &mut read).map_err(problems)
}

/// Reads a file of run inputs (a YAML or JSON mapping), within the size limit.
pub fn load_inputs(path: &Path) -> Result<Map<String, Value>, Error> {
    let fail = |reason: String| Error::File { path: path.to_path_buf(), reason };
    let bytes = read_bounded(path).map_err(|unread| fail(unread.reason("input files")))?;
    let name = path.to_string_lossy();
    cairn_domain::inputs::read(&name, &bytes).map_err(|p| fail(Problems(vec![p]).to_string()))
}

#[cfg(test)]
mod tests {
    use super::{MAX_FILE_BYTES, Unread, read_bounded};

    fn temp(name: &str) -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(format!("cairn-files-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("temp dir");
        dir
    }

    #[test]
    fn a_file_over_the_limit_is_refused_with_its_true_size() {
        let dir = temp("huge");
        let path = dir.join("huge.yaml");
        std::fs::File::create(&path).expect("create").set_len(50 * 1024 * 1024).expect("sparse");
        assert_eq!(read_bounded(&path), Err(Unread::TooLarge(Some(50 * 1024 * 1024))));
        let at_limit = dir.join("at_limit.yaml");
        std::fs::File::create(&at_limit).expect("create").set_len(MAX_FILE_BYTES).expect("sparse");
        assert_eq!(read_bounded(&at_limit).map(|b| b.len() as u64), Ok(MAX_FILE_BYTES));
        assert_eq!(
            Unread::TooLarge(Some(9)).reason("definitions"),
            format!("the file is 9 bytes; definitions are limited to {MAX_FILE_BYTES} bytes")
        );
    }

    #[test]
    fn a_directory_or_a_missing_file_is_said_so() {
        let dir = temp("dir");
        assert_eq!(read_bounded(&dir), Err(Unread::Failed("it is a directory".into())));
        assert!(matches!(read_bounded(&dir.join("nope")), Err(Unread::Failed(_))));
    }
}
