//! Every attack on the command fence is refused with class `permission`,
//! and what is allowed runs exactly as written.

use std::path::{Path, PathBuf};

use cairn_command::{CommandPolicy, DEFAULT_MAX_OUTPUT, LocalCommands};
use cairn_domain::state::ErrorClass;
use cairn_ports::{CommandRunner, CommandSpec};

/// A fresh folder with a `root/` the commands may use and an `outside/` they may not.
fn sandbox(name: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("fence").join(name);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(dir.join("root/sub")).expect("root");
    std::fs::create_dir_all(dir.join("outside")).expect("outside");
    dir
}

fn runner(dir: &Path, allow: &[&str]) -> LocalCommands {
    let policy = CommandPolicy {
        allow: allow.iter().map(|s| (*s).to_owned()).collect(),
        roots: vec![PathBuf::from("root")],
        max_output: DEFAULT_MAX_OUTPUT,
    };
    LocalCommands::new(policy, dir).expect("roots exist")
}

fn spec(program: &str, args: &[&str], cwd: Option<&str>) -> CommandSpec {
    CommandSpec {
        program: program.into(),
        args: args.iter().map(|s| (*s).to_owned()).collect(),
        cwd: cwd.map(str::to_owned),
        env: vec![("STEP_VAR".into(), "from the step".into())],
        stdin: None,
        idempotency_key: "run-1/tests/1".into(),
    }
}

async fn refused(r: &LocalCommands, s: CommandSpec) -> String {
    let err = r.run(s).await.expect_err("refused");
    assert_eq!(err.class, ErrorClass::Permission, "{err}");
    err.message
}

#[tokio::test]
async fn programs_off_the_allowlist_never_start() {
    let dir = sandbox("allowlist");
    let r = runner(&dir, &["echo"]);
    assert_eq!(refused(&r, spec("rm", &["-rf", "x"], None)).await, "`rm` is not an allowed program");
    let msg = refused(&r, spec("./echo", &[], None)).await;
    assert!(msg.contains("bare program name or an absolute path"), "{msg}");
    assert!(refused(&r, spec("/bin/echo", &[], None)).await.contains("not an allowed program"));
    assert!(refused(&r, spec("build.BAT", &[], None)).await.contains("batch file"));
    assert!(refused(&r, spec("setup.cmd", &[], None)).await.contains("batch file"));
}

#[tokio::test]
async fn working_directories_stay_inside_the_roots() {
    let dir = sandbox("cwd");
    let r = runner(&dir, &["pwd"]);
    let msg = refused(&r, spec("pwd", &[], Some("../outside"))).await;
    assert!(msg.contains("outside the allowed roots"), "{msg}");
    let outside = dir.join("outside").display().to_string();
    assert!(refused(&r, spec("pwd", &[], Some(&outside))).await.contains("outside the allowed roots"));
    std::os::unix::fs::symlink(dir.join("outside"), dir.join("root/link")).expect("symlink");
    assert!(refused(&r, spec("pwd", &[], Some("link"))).await.contains("outside the allowed roots"));
    assert!(refused(&r, spec("pwd", &[], Some("missing"))).await.contains("cannot be resolved"));
    let inside = r.run(spec("pwd", &[], Some("sub/../sub"))).await.expect("inside");
    let canonical = dir.join("root/sub").canonicalize().expect("canonical");
    assert_eq!(inside.stdout.trim(), canonical.display().to_string());
}

#[tokio::test]
async fn shell_metacharacters_stay_literal_arguments() {
    let dir = sandbox("literal");
    let r = runner(&dir, &["printf"]);
    let out = r
        .run(spec("printf", &["%s|%s|%s", "a; rm -rf /", "$(whoami)", "`id` > x"], None))
        .await
        .expect("runs");
    assert_eq!(out.stdout, "a; rm -rf /|$(whoami)|`id` > x");
    assert!(!dir.join("root/x").exists());
}

#[tokio::test]
async fn the_environment_is_cleared_but_for_a_safe_set() {
    let dir = sandbox("env");
    let r = runner(&dir, &["env"]);
    // This test process runs under cargo, which sets CARGO_* variables.
    assert!(std::env::vars().any(|(k, _)| k.starts_with("CARGO")));
    let out = r.run(spec("env", &[], None)).await.expect("runs");
    let names: Vec<&str> = out.stdout.lines().filter_map(|l| l.split('=').next()).collect();
    assert!(!names.iter().any(|n| n.starts_with("CARGO")), "{names:?}");
    assert!(out.stdout.contains("STEP_VAR=from the step"));
    assert!(out.stdout.contains("CAIRN_IDEMPOTENCY_KEY=run-1/tests/1"));
    assert!(
        names.iter().all(|n| ["PATH", "HOME", "LANG", "STEP_VAR", "CAIRN_IDEMPOTENCY_KEY"].contains(n)),
        "{names:?}"
    );
}

#[tokio::test]
async fn output_is_bounded_and_exit_codes_are_reported() {
    let dir = sandbox("bounded");
    let policy = CommandPolicy {
        allow: vec!["head".into(), "sh".into()],
        roots: vec!["root".into()],
        max_output: 100,
    };
    let r = LocalCommands::new(policy, &dir).expect("runner");
    let out = r.run(spec("head", &["-c", "100000", "/dev/zero"], None)).await.expect("runs");
    assert!(out.stdout.ends_with("[99900 more bytes not kept]"), "{}", &out.stdout[out.stdout.len() - 40..]);
    let failed = r.run(spec("sh", &["-c", "echo oops >&2; exit 3"], None)).await.expect("runs");
    assert_eq!((failed.exit_code, failed.stderr.as_str()), (3, "oops\n"));
    let mut with_input = spec("sh", &["-c", "cat"], None);
    with_input.stdin = Some("fed through stdin".into());
    assert_eq!(r.run(with_input).await.expect("runs").stdout, "fed through stdin");
}

#[cfg(target_os = "linux")]
#[tokio::test]
async fn dropping_the_attempt_kills_the_whole_process_group() {
    use std::time::Duration;
    let dir = sandbox("group");
    let r = runner(&dir, &["sh"]);
    let (bg, fg) = (dir.join("bg.pid"), dir.join("fg.pid"));
    let script = format!(
        "sleep 31337 & echo $! > '{}'; echo $$ > '{}'; sleep 31337; wait",
        bg.display(),
        fg.display()
    );
    // Boxed, so dropping it below drops the attempt itself.
    let mut attempt = Box::pin(r.run(spec("sh", &["-c", &script], None)));
    // Drive the attempt until both processes have said they run.
    let started = tokio::time::timeout(Duration::from_secs(20), async {
        loop {
            tokio::select! {
                ended = &mut attempt => panic!("the command ended on its own: {ended:?}"),
                _ = tokio::time::sleep(Duration::from_millis(20)) => {
                    if bg.exists() && fg.exists() && !pid_of(&bg).is_empty() && !pid_of(&fg).is_empty() {
                        return;
                    }
                }
            }
        }
    })
    .await;
    assert!(started.is_ok(), "the command never started");
    let pids = [pid_of(&bg), pid_of(&fg)];
    assert!(pids.iter().all(|p| alive(p)), "both run before the attempt is dropped: {pids:?}");
    // The attempt is abandoned, as a timeout or a cancellation does.
    drop(attempt);
    let mut survivors: Vec<&String> = pids.iter().collect();
    for _ in 0..100 {
        survivors.retain(|p| alive(p));
        if survivors.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(survivors.is_empty(), "a process of the group outlived the attempt: {survivors:?}");
}

/// The pid a script wrote to `file`.
fn pid_of(file: &Path) -> String {
    std::fs::read_to_string(file).unwrap_or_default().trim().to_owned()
}

/// Whether process `pid` runs (a zombie waiting for its parent does not).
fn alive(pid: &str) -> bool {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // `pid (comm) S ...`: the state follows the last `)`.
    stat.rsplit_once(") ").is_some_and(|(_, rest)| !rest.starts_with('Z'))
}
