//! `cairn init [DIR]`: a starter workflow and a commented config, to begin
//! from. It never overwrites a file.

use std::path::{Path, PathBuf};

use super::{DocFormat, exit};
use crate::error::Error;

/// What `init` writes: each file's name and text.
const FILES: [(&str, &str); 2] = [
    ("workflow.yaml", include_str!("starter/workflow.yaml")),
    ("cairn.toml", include_str!("starter/cairn.toml")),
];

/// `cairn init DIR`: writes the starter files into `dir` (made when
/// missing), or nothing at all when one of them exists already (exit 2,
/// naming it); prints what it wrote and the command to run next.
pub(crate) fn init(dir: &Path, format: DocFormat) -> Result<u8, Error> {
    // `workflow.yaml` rather than `./workflow.yaml` in the current directory.
    let here = dir == Path::new(".") || dir.as_os_str().is_empty();
    let paths: Vec<PathBuf> =
        FILES.iter().map(|(name, _)| if here { PathBuf::from(name) } else { dir.join(name) }).collect();
    if let Some(existing) = paths.iter().find(|p| p.exists()) {
        return Err(Error::File {
            path: existing.clone(),
            reason:
                "exists already; cairn init never overwrites a file (move it away, or init another folder)"
                    .into(),
        });
    }
    std::fs::create_dir_all(if here { Path::new(".") } else { dir }).map_err(|e| Error::File {
        path: dir.to_path_buf(),
        reason: format!("cannot make the folder: {e}"),
    })?;
    for (path, (_, text)) in paths.iter().zip(FILES) {
        // `create_new`: a file made meanwhile by someone else is not overwritten either.
        let written = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(path)
            .and_then(|mut file| std::io::Write::write_all(&mut file, text.as_bytes()));
        written.map_err(|e| Error::File { path: path.clone(), reason: format!("cannot write it: {e}") })?;
    }
    let next = next_command(dir);
    match format {
        DocFormat::Text => {
            for path in &paths {
                outln!("wrote {}", path.display());
            }
            outln!("next: {next}");
        }
        DocFormat::Json => {
            let wrote: Vec<String> = paths.iter().map(|p| p.display().to_string()).collect();
            outln!("{}", serde_json::json!({"wrote": wrote, "next": next}));
        }
    }
    Ok(exit::OK)
}

/// The command that runs the starter workflow offline, from the current directory.
fn next_command(dir: &Path) -> String {
    let run = "cairn --llm mock run workflow.yaml";
    if dir == Path::new(".") || dir.as_os_str().is_empty() {
        return run.to_owned();
    }
    let shown = dir.display().to_string();
    let quoted = if shown.chars().all(|c| c.is_ascii_alphanumeric() || "-_./".contains(c)) {
        shown
    } else {
        format!("'{}'", shown.replace('\'', r"'\''"))
    };
    format!("cd {quoted} && {run}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_starter_files_are_valid() {
        let mut no_files = |rel: &str| Err(format!("{rel}: the starter reads no file"));
        let workflow =
            cairn_domain::Definition::from_source("workflow.yaml", FILES[0].1.as_bytes(), &mut no_files);
        assert!(workflow.is_ok(), "{:?}", workflow.err());
        let config: Result<crate::config::Config, _> = toml::from_str(FILES[1].1);
        let config = config.expect("the starter cairn.toml is a valid config");
        assert_eq!(config.commands.allow, ["echo"], "the starter workflow's command is allowed");
        assert!(config.providers.is_empty(), "no provider is set for the user");
    }

    #[test]
    fn the_next_command_goes_to_the_folder_first() {
        assert_eq!(next_command(Path::new(".")), "cairn --llm mock run workflow.yaml");
        assert_eq!(
            next_command(Path::new("flows/new")),
            "cd flows/new && cairn --llm mock run workflow.yaml"
        );
        assert_eq!(next_command(Path::new("my flow")), "cd 'my flow' && cairn --llm mock run workflow.yaml");
    }
}
