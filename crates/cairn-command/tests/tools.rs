//! Every attack an agent's model can make through the built-in tools is
//! refused, with a refusal it reads; what is allowed works, inside the roots.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use cairn_command::{BuiltinTools, CommandPolicy, DEFAULT_MAX_OUTPUT, LocalCommands};
use cairn_domain::id::RunId;
use cairn_ports::{ToolChoice, ToolError, ToolInvocation, Tools};
use serde_json::{Value, json};

/// A fresh folder with a `root/` the tools may use and an `outside/` they may not.
fn sandbox(name: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("tools").join(name);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(dir.join("root/src")).expect("root");
    std::fs::create_dir_all(dir.join("outside")).expect("outside");
    std::fs::write(dir.join("root/src/lib.rs"), "pub fn add(a: i32, b: i32) -> i32 {\n    a - b\n}\n")
        .expect("write");
    std::fs::write(dir.join("outside/secret.txt"), "the secret").expect("write");
    dir
}

fn tools(dir: &Path, allow: &[&str]) -> BuiltinTools {
    let policy = CommandPolicy {
        allow: allow.iter().map(|s| (*s).to_owned()).collect(),
        roots: vec![PathBuf::from("root")],
        max_output: DEFAULT_MAX_OUTPUT,
    };
    BuiltinTools::new(Arc::new(LocalCommands::new(policy, dir).expect("roots exist")))
}

async fn call(tools: &BuiltinTools, name: &str, arguments: Value) -> Result<String, String> {
    let invocation = ToolInvocation {
        run: RunId::new("r").expect("id"),
        name: name.into(),
        arguments,
        idempotency_key: "r/fix/1/r1/0".into(),
    };
    tools.call(invocation).await.map_err(|e| match e {
        ToolError::Refused(why) => why,
        ToolError::Broken(e) => panic!("the tools broke: {e:?}"),
    })
}

#[tokio::test]
async fn the_file_tools_work_inside_the_roots() {
    let dir = sandbox("inside");
    let t = tools(&dir, &[]);
    assert!(call(&t, "read_file", json!({"path": "src/lib.rs"})).await.expect("reads").contains("a - b"));
    let wrote = call(&t, "write_file", json!({"path": "src/new/mod.rs", "content": "// new\n"})).await;
    assert_eq!(wrote.expect("writes"), "wrote 7 bytes to `src/new/mod.rs`");
    assert_eq!(std::fs::read_to_string(dir.join("root/src/new/mod.rs")).expect("written"), "// new\n");
    assert_eq!(call(&t, "list_files", json!({"path": "src"})).await.expect("lists"), "lib.rs\nnew/");
    assert_eq!(call(&t, "list_files", json!({})).await.expect("lists the root"), "src/");
    assert_eq!(
        call(&t, "search", json!({"pattern": "a - b"})).await.expect("finds"),
        "src/lib.rs:2:     a - b"
    );
    assert_eq!(
        call(&t, "search", json!({"pattern": "zzz"})).await.expect("searches"),
        "no line contains `zzz`"
    );
    let specs = t
        .specs(
            &RunId::new("r").expect("id"),
            &ToolChoice { builtin: vec!["read_file".into()], servers: vec![] },
        )
        .await
        .expect("specs");
    assert_eq!(specs.len(), 1);
    assert_eq!(specs[0].parameters["required"], json!(["path"]));
}

#[tokio::test]
async fn paths_out_of_the_roots_are_refused_symlinks_included() {
    let dir = sandbox("outside");
    std::os::unix::fs::symlink(dir.join("outside"), dir.join("root/link")).expect("symlink");
    let t = tools(&dir, &[]);
    for (name, args) in [
        ("read_file", json!({"path": "../../etc/passwd"})),
        ("read_file", json!({"path": "/etc/passwd"})),
        ("read_file", json!({"path": "../outside/secret.txt"})),
        ("read_file", json!({"path": "link/secret.txt"})),
        ("write_file", json!({"path": "link/planted.txt", "content": "x"})),
        ("write_file", json!({"path": "../outside/planted.txt", "content": "x"})),
        ("list_files", json!({"path": "link"})),
        ("search", json!({"pattern": "secret", "path": ".."})),
    ] {
        let refused = call(&t, name, args.clone()).await.expect_err("refused");
        assert!(refused.contains("resolves outside the allowed roots"), "{name} {args}: {refused}");
    }
    assert!(!dir.join("outside/planted.txt").exists(), "nothing was written outside");
    // A search from inside does not follow the link out.
    assert_eq!(
        call(&t, "search", json!({"pattern": "the secret"})).await.expect("searches"),
        "no line contains `the secret`"
    );
}

#[tokio::test]
async fn run_command_is_the_command_fence() {
    let dir = sandbox("command");
    std::fs::write(dir.join("root/big.sh"), "head -c 10000000 /dev/zero | tr '\\0' x\n").expect("script");
    let t = tools(&dir, &["echo", "sh"]);
    let refused = call(&t, "run_command", json!({"program": "rm", "args": ["-rf", "src"]})).await;
    assert!(refused.expect_err("not allowed").contains("`rm` is not an allowed program"));
    assert!(dir.join("root/src/lib.rs").exists());
    let hostile = "hi; touch pwned && $(touch pwned2) `touch pwned3` | cat";
    let said = call(&t, "run_command", json!({"program": "echo", "args": [hostile]})).await.expect("runs");
    assert_eq!(said, format!("exit code 0\nstdout:\n{hostile}\n\nstderr:\n"), "one argument, no shell");
    for planted in ["pwned", "pwned2", "pwned3"] {
        assert!(!dir.join("root").join(planted).exists(), "{planted}");
    }
    let outside =
        call(&t, "run_command", json!({"program": "echo", "args": ["../outside/secret.txt"]})).await;
    assert!(outside.expect_err("confined").contains("resolves outside the allowed roots"));
    let cwd = call(&t, "run_command", json!({"program": "echo", "cwd": "../outside"})).await;
    assert!(cwd.expect_err("cwd fenced").contains("outside the allowed roots"));
    let big = call(&t, "run_command", json!({"program": "sh", "args": ["big.sh"]})).await.expect("runs");
    assert!(big.len() <= DEFAULT_MAX_OUTPUT + 100, "10 MB of output is bounded: {} bytes", big.len());
    assert!(call(&t, "run_command", json!({"program": "echo", "args": "not a list"})).await.is_err());
}

#[tokio::test]
async fn context_files_come_from_inside_the_roots_by_name_or_pattern_each_bounded() {
    let dir = sandbox("context");
    std::fs::create_dir_all(dir.join("root/docs")).expect("docs");
    std::fs::write(dir.join("root/AGENTS.md"), "Run cargo test.").expect("write");
    std::fs::write(dir.join("root/docs/b.md"), "B").expect("write");
    std::fs::write(dir.join("root/docs/a.md"), "A").expect("write");
    std::fs::write(dir.join("root/docs/c.txt"), "C").expect("write");
    std::fs::write(dir.join("root/big.md"), "x".repeat(200)).expect("write");
    let t = tools(&dir, &[]);
    let patterns = |p: &[&str]| p.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>();
    let files = t.context(&patterns(&["AGENTS.md", "docs/*.md"]), 100).await.expect("reads");
    let got: Vec<(&str, &str)> = files.iter().map(|f| (f.path.as_str(), f.text.as_str())).collect();
    assert_eq!(got, [("AGENTS.md", "Run cargo test."), ("docs/a.md", "A"), ("docs/b.md", "B")]);
    for (pattern, says) in [
        ("missing.md", "context `missing.md`: no such file"),
        ("docs/*.rs", "context `docs/*.rs`: no file matches"),
        (
            "../outside/secret.txt",
            "context `../outside/secret.txt`: `../outside/secret.txt` resolves outside the allowed roots",
        ),
        ("big.md", "context file `big.md` has 200 bytes, more than the 100 an agent is given"),
        ("*/a.md", "only the file name may have `*` or `?`"),
    ] {
        let err = t.context(&patterns(&[pattern]), 100).await.expect_err("refused");
        assert!(err.message.contains(says), "{pattern}: {}", err.message);
    }
}
