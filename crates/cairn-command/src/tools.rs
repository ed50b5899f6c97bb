//! The built-in tools agents call, behind the same fence as command steps:
//! `read_file`, `write_file`, `list_files` and `search` reach only paths
//! that resolve (symlinks included) inside the roots, and `run_command` is
//! a command step's run: the allowlist, argv only, a cleared environment,
//! bounded output, every process killed at its end, and every argument that
//! reads as a path confined to the roots. What a call may not do comes back
//! as a refusal the model reads; nothing outside the fence runs or is read.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use async_trait::async_trait;
use cairn_domain::id::RunId;
use cairn_domain::state::ErrorClass;
use cairn_ports::{
    CommandRunner, CommandSpec, ContextFile, PortError, ToolChoice, ToolError, ToolInvocation, ToolSpec,
    Tools,
};
use serde_json::Value;

use crate::{LocalCommands, inside};

/// The most bytes of a file `read_file` reads.
const MAX_READ_BYTES: usize = 256 * 1024;
/// The most entries `list_files` lists.
const MAX_LISTED: usize = 1000;
/// The most lines `search` finds, and files it looks in.
const MAX_FOUND: usize = 200;
const MAX_SEARCHED_FILES: usize = 10_000;

/// The built-in tools over a command runner's fence.
pub struct BuiltinTools {
    commands: Arc<LocalCommands>,
}

impl BuiltinTools {
    /// Tools fenced as `commands` is: its roots, its allowlist.
    pub fn new(commands: Arc<LocalCommands>) -> Self {
        Self { commands }
    }

    /// `path` (relative to the first root, or absolute) resolved inside the
    /// roots, or why not.
    fn resolve(&self, path: &str) -> Result<PathBuf, String> {
        let roots = &self.commands.roots;
        let wanted = Path::new(path);
        let joined = if wanted.is_absolute() { wanted.to_path_buf() } else { roots[0].join(wanted) };
        if !inside(&joined, roots) {
            return Err(format!("`{path}` resolves outside the allowed roots"));
        }
        Ok(joined)
    }

    /// The path shown to the model: relative to the root it is in.
    fn shown(&self, path: &Path) -> String {
        let real = path.canonicalize().unwrap_or_else(|_| path.to_path_buf());
        self.commands
            .roots
            .iter()
            .find_map(|root| real.strip_prefix(root).ok())
            .map_or_else(|| path.display().to_string(), |p| p.display().to_string())
    }

    /// The files `pattern` names: a path, or a folder and a file name with
    /// `*` and `?` in it (`docs/*.md`), in name order; none is an error.
    fn matching(&self, pattern: &str) -> Result<Vec<PathBuf>, String> {
        let (folder, name) = match pattern.rsplit_once('/') {
            Some((folder, name)) => (folder, name),
            None => (".", pattern),
        };
        if folder.contains(['*', '?']) {
            return Err("only the file name may have `*` or `?`".into());
        }
        if !name.contains(['*', '?']) {
            let path = self.resolve(pattern)?;
            return if path.is_file() { Ok(vec![path]) } else { Err("no such file".into()) };
        }
        let dir = self.resolve(folder)?;
        let entries = std::fs::read_dir(&dir).map_err(|e| format!("cannot list `{folder}`: {e}"))?;
        let mut found: Vec<PathBuf> = entries
            .filter_map(Result::ok)
            .filter(|e| e.file_type().is_ok_and(|t| t.is_file()))
            .filter(|e| wildcard(name.as_bytes(), e.file_name().to_string_lossy().as_bytes()))
            .map(|e| e.path())
            .collect();
        found.sort();
        if found.is_empty() {
            return Err("no file matches".into());
        }
        Ok(found)
    }

    /// The files `patterns` name (see [`Tools::context`]).
    fn read_context(&self, patterns: &[String], max_bytes: usize) -> Result<Vec<ContextFile>, PortError> {
        let refused = |message: String| PortError::new(ErrorClass::Fatal, message);
        let mut files = Vec::new();
        for pattern in patterns {
            let paths = self.matching(pattern).map_err(|e| refused(format!("context `{pattern}`: {e}")))?;
            for path in paths {
                let shown = self.shown(&path);
                let bytes =
                    std::fs::read(&path).map_err(|e| refused(format!("context file `{shown}`: {e}")))?;
                if bytes.len() > max_bytes {
                    return Err(refused(format!(
                        "context file `{shown}` has {} bytes, more than the {max_bytes} an agent is given",
                        bytes.len()
                    )));
                }
                let text = String::from_utf8(bytes)
                    .map_err(|_| refused(format!("context file `{shown}` is not a text file (UTF-8)")))?;
                files.push(ContextFile { path: shown, text });
            }
        }
        Ok(files)
    }

    fn read_file(&self, args: &Value) -> Result<String, String> {
        let path = self.resolve(text(args, "path")?)?;
        let meta =
            std::fs::metadata(&path).map_err(|e| format!("cannot read `{}`: {e}", self.shown(&path)))?;
        if !meta.is_file() {
            return Err(format!("`{}` is not a file", self.shown(&path)));
        }
        let mut bytes = Vec::new();
        use std::io::Read;
        std::fs::File::open(&path)
            .and_then(|f| f.take(MAX_READ_BYTES as u64 + 1).read_to_end(&mut bytes))
            .map_err(|e| format!("cannot read `{}`: {e}", self.shown(&path)))?;
        let cut = bytes.len() > MAX_READ_BYTES;
        bytes.truncate(MAX_READ_BYTES);
        let mut text = match String::from_utf8(bytes) {
            Ok(text) => text,
            Err(e) if cut && e.utf8_error().error_len().is_none() => {
                let valid = e.utf8_error().valid_up_to();
                let mut bytes = e.into_bytes();
                bytes.truncate(valid);
                String::from_utf8(bytes).unwrap_or_default()
            }
            Err(_) => return Err(format!("`{}` is not a text file (UTF-8)", self.shown(&path))),
        };
        if cut {
            text.push_str(&format!("\n[cut: the file has {} bytes; {MAX_READ_BYTES} are shown]", meta.len()));
        }
        Ok(text)
    }

    fn write_file(&self, args: &Value) -> Result<String, String> {
        let path = self.resolve(text(args, "path")?)?;
        let content = text(args, "content")?;
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)
                .map_err(|e| format!("cannot make `{}`: {e}", self.shown(parent)))?;
        }
        // Made inside the roots; a symlink put there meanwhile is caught again.
        let again = self.resolve(&path.display().to_string())?;
        std::fs::write(&again, content).map_err(|e| format!("cannot write `{}`: {e}", self.shown(&again)))?;
        Ok(format!("wrote {} bytes to `{}`", content.len(), self.shown(&again)))
    }

    fn list_files(&self, args: &Value) -> Result<String, String> {
        let path = self.resolve(optional(args, "path")?.unwrap_or("."))?;
        let entries =
            std::fs::read_dir(&path).map_err(|e| format!("cannot list `{}`: {e}", self.shown(&path)))?;
        let mut names: Vec<String> = entries
            .filter_map(Result::ok)
            .map(|e| {
                let dir = e.file_type().is_ok_and(|t| t.is_dir());
                format!("{}{}", e.file_name().to_string_lossy(), if dir { "/" } else { "" })
            })
            .collect();
        names.sort();
        let total = names.len();
        names.truncate(MAX_LISTED);
        if total > MAX_LISTED {
            names.push(format!("[cut: {total} entries; {MAX_LISTED} are shown]"));
        }
        Ok(names.join("\n"))
    }

    fn search(&self, args: &Value) -> Result<String, String> {
        let pattern = text(args, "pattern")?;
        if pattern.is_empty() {
            return Err("`pattern` is empty".into());
        }
        let start = self.resolve(optional(args, "path")?.unwrap_or("."))?;
        let mut found = Vec::new();
        let mut files = 0usize;
        let mut stack = vec![start];
        while let Some(path) = stack.pop() {
            // Never through a symlink: what it points at may be outside.
            let Ok(meta) = std::fs::symlink_metadata(&path) else { continue };
            if meta.is_dir() {
                if path.file_name().is_some_and(|n| n == ".git") {
                    continue;
                }
                let Ok(entries) = std::fs::read_dir(&path) else { continue };
                let mut children: Vec<PathBuf> = entries.filter_map(Result::ok).map(|e| e.path()).collect();
                children.sort();
                stack.extend(children.into_iter().rev());
            } else if meta.is_file() {
                files += 1;
                if files > MAX_SEARCHED_FILES || found.len() >= MAX_FOUND {
                    break;
                }
                let Ok(text) = std::fs::read_to_string(&path) else { continue };
                for (n, line) in text.lines().enumerate() {
                    if line.contains(pattern) {
                        let line: String = line.chars().take(300).collect();
                        found.push(format!("{}:{}: {line}", self.shown(&path), n + 1));
                        if found.len() >= MAX_FOUND {
                            found.push(format!("[cut: the first {MAX_FOUND} lines found are shown]"));
                            break;
                        }
                    }
                }
            }
        }
        Ok(if found.is_empty() { format!("no line contains `{pattern}`") } else { found.join("\n") })
    }

    async fn run_command(&self, args: &Value, key: &str) -> Result<String, ToolError> {
        let program = text(args, "program").map_err(ToolError::Refused)?;
        let argv: Vec<String> = match args.get("args") {
            None | Some(Value::Null) => Vec::new(),
            Some(Value::Array(items)) => items
                .iter()
                .map(|a| a.as_str().map(str::to_owned))
                .collect::<Option<_>>()
                .ok_or_else(|| ToolError::Refused("`args` must be a list of strings".into()))?,
            Some(_) => return Err(ToolError::Refused("`args` must be a list of strings".into())),
        };
        let spec = CommandSpec {
            program: program.to_owned(),
            args: argv,
            cwd: optional(args, "cwd").map_err(ToolError::Refused)?.map(str::to_owned),
            env: Vec::new(),
            stdin: None,
            idempotency_key: key.to_owned(),
            data_led: Vec::new(),
            allow_option_args: true,
            confine_paths: true,
        };
        match self.commands.run(spec).await {
            Ok(out) => {
                Ok(format!("exit code {}\nstdout:\n{}\nstderr:\n{}", out.exit_code, out.stdout, out.stderr))
            }
            Err(e) => Err(ToolError::Refused(e.message)),
        }
    }
}

/// Whether `name` fits `pattern`, where `*` is any run of characters and
/// `?` any one (greedy, with one point to go back to: linear in practice,
/// never exponential).
fn wildcard(pattern: &[u8], name: &[u8]) -> bool {
    let (mut p, mut n) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while n < name.len() {
        if p < pattern.len() && (pattern[p] == b'?' || pattern[p] == name[n]) {
            p += 1;
            n += 1;
        } else if p < pattern.len() && pattern[p] == b'*' {
            star = Some((p, n));
            p += 1;
        } else if let Some((sp, sn)) = star {
            p = sp + 1;
            n = sn + 1;
            star = Some((sp, sn + 1));
        } else {
            return false;
        }
    }
    pattern[p..].iter().all(|&c| c == b'*')
}

/// A required text argument.
fn text<'a>(args: &'a Value, name: &str) -> Result<&'a str, String> {
    args.get(name).and_then(Value::as_str).ok_or_else(|| format!("`{name}` must be a string"))
}

/// An optional text argument.
fn optional<'a>(args: &'a Value, name: &str) -> Result<Option<&'a str>, String> {
    match args.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(_) => Err(format!("`{name}` must be a string")),
    }
}

#[async_trait]
impl Tools for BuiltinTools {
    async fn specs(&self, _: &RunId, choice: &ToolChoice) -> Result<Vec<ToolSpec>, PortError> {
        choice.builtin_only()
    }

    async fn call(&self, call: ToolInvocation) -> Result<String, ToolError> {
        let file_tool: fn(&Self, &Value) -> Result<String, String> = match call.name.as_str() {
            "read_file" => Self::read_file,
            "write_file" => Self::write_file,
            "list_files" => Self::list_files,
            "search" => Self::search,
            "run_command" => return self.run_command(&call.arguments, &call.idempotency_key).await,
            other => return Err(ToolError::Refused(format!("`{other}` is not a built-in tool"))),
        };
        // Files are read and walked off the runtime's threads.
        let tools = Self { commands: Arc::clone(&self.commands) };
        let done = tokio::task::spawn_blocking(move || file_tool(&tools, &call.arguments)).await;
        let result = done.map_err(|e| {
            ToolError::Broken(PortError::new(ErrorClass::Transient, format!("a file tool stopped: {e}")))
        })?;
        result.map_err(ToolError::Refused)
    }

    async fn context(&self, patterns: &[String], max_bytes: usize) -> Result<Vec<ContextFile>, PortError> {
        let (tools, patterns) = (Self { commands: Arc::clone(&self.commands) }, patterns.to_vec());
        tokio::task::spawn_blocking(move || tools.read_context(&patterns, max_bytes)).await.map_err(|e| {
            PortError::new(ErrorClass::Transient, format!("reading context files stopped: {e}"))
        })?
    }

    async fn release(&self, _: &RunId) {}
}
