//! Every attack on the command fence is refused with class `permission`,
//! and what is allowed runs exactly as written.

use std::path::{Path, PathBuf};

use cairn_command::{CommandPolicy, DEFAULT_MAX_OUTPUT, LocalCommands};
use cairn_domain::event::Cause;
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
        data_led: Vec::new(),
        allow_option_args: false,
        confine_paths: false,
    }
}

/// `spec` with an idempotency key of its own, for tests that look for the
/// processes of one attempt while others run.
fn keyed(program: &str, args: &[&str], key: &str) -> CommandSpec {
    CommandSpec { idempotency_key: key.into(), ..spec(program, args, None) }
}

/// The cause a refusal carries.
async fn refused_cause(r: &LocalCommands, s: CommandSpec) -> Option<Cause> {
    let err = r.run(s).await.expect_err("refused");
    assert_eq!(err.class, ErrorClass::Permission, "{err}");
    err.cause
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
    let (bg, fg, sid) = (dir.join("bg.pid"), dir.join("fg.pid"), dir.join("sid.pid"));
    let script = format!(
        "setsid sh -c 'echo $$ > {}; exec sleep 31337' </dev/null >/dev/null 2>&1 &
         sleep 31337 & echo $! > '{}'; echo $$ > '{}'; sleep 31337; wait",
        sid.display(),
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
                    if [&bg, &fg, &sid].iter().all(|f| !pid_of(f).is_empty()) {
                        return;
                    }
                }
            }
        }
    })
    .await;
    assert!(started.is_ok(), "the command never started");
    let pids = [pid_of(&bg), pid_of(&fg), pid_of(&sid)];
    assert!(pids.iter().all(|p| alive(p)), "all run before the attempt is dropped: {pids:?}");
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

#[tokio::test]
async fn a_step_cannot_change_how_its_program_is_found_or_loaded() {
    let dir = sandbox("loader");
    // A program of the same name as an allowed one, in a folder the step controls.
    std::fs::write(dir.join("root/env"), "#!/bin/sh\necho hijacked\n").expect("fake");
    std::fs::set_permissions(dir.join("root/env"), std::os::unix::fs::PermissionsExt::from_mode(0o755))
        .expect("mode");
    let r = runner(&dir, &["env"]);
    for name in ["PATH", "LD_PRELOAD", "LD_LIBRARY_PATH", "ld_audit", "DYLD_INSERT_LIBRARIES", "GCONV_PATH"] {
        let mut s = spec("env", &[], None);
        s.env.push((name.into(), dir.join("root").display().to_string()));
        assert_eq!(refused_cause(&r, s).await, Some(Cause::EnvNotAllowed { name: name.into() }), "{name}");
    }
    // The program is found on cairn's own PATH, never in the working directory.
    let out = r.run(spec("env", &[], None)).await.expect("runs");
    assert!(!out.stdout.contains("hijacked"), "{}", out.stdout);
    assert!(out.stdout.contains("CAIRN_IDEMPOTENCY_KEY="), "{}", out.stdout);
}

#[tokio::test]
async fn run_data_never_becomes_an_option_of_the_program() {
    let dir = sandbox("options");
    let r = runner(&dir, &["printf"]);
    // `[printf, "%s|", "{{ answer }}"]` where the answer is an option.
    let mut s = spec("printf", &["%s|", "--upload-pack=touch pwned"], None);
    s.data_led = vec![1];
    assert_eq!(refused_cause(&r, s.clone()).await, Some(Cause::OptionFromData { index: 2 }));
    let err = r.run(s.clone()).await.expect_err("refused");
    assert!(err.message.contains("argument 2 of `printf` (`--upload-pack=touch pwned`)"), "{}", err.message);
    // The same text where the author wrote it, after a literal `--`, or with the opt-in runs.
    let mut author = s.clone();
    author.data_led.clear();
    let mut operand = spec("printf", &["%s|", "--", "-x"], None);
    operand.data_led = vec![2];
    let mut allowed = s.clone();
    allowed.allow_option_args = true;
    for ok in [author, operand, allowed] {
        r.run(ok).await.expect("runs");
    }
    // A `--` that came from data ends nothing.
    let mut fake_end = spec("printf", &["%s|", "--", "-x"], None);
    fake_end.data_led = vec![1, 2];
    assert_eq!(refused_cause(&r, fake_end).await, Some(Cause::OptionFromData { index: 2 }));
    // Data that does not start with `-` is an operand like any other.
    let mut plain = spec("printf", &["%s|", "https://example.com/repo.git"], None);
    plain.data_led = vec![1];
    assert_eq!(r.run(plain).await.expect("runs").stdout, "https://example.com/repo.git|");
}

#[tokio::test]
async fn confined_paths_stay_inside_the_roots() {
    let dir = sandbox("confine");
    let r = runner(&dir, &["printf"]);
    std::os::unix::fs::symlink(dir.join("outside"), dir.join("root/out")).expect("symlink");
    std::os::unix::fs::symlink(dir.join("outside/missing"), dir.join("root/dangling")).expect("dangling");
    let outside = dir.join("outside/secret").display().to_string();
    let confined = |args: &[&str]| CommandSpec { confine_paths: true, ..spec("printf", args, Some("sub")) };
    let escapes = [
        vec!["%s", outside.as_str()],
        vec!["%s", "../../outside/x"],
        vec!["%s", "../out/secret"],
        vec!["%s", "../dangling"],
        vec!["%s", "--file=/etc/passwd"],
        vec!["%s", "-C/etc"],
        vec!["%s", "new/../../../outside"],
    ];
    for args in escapes {
        let cause = refused_cause(&r, confined(&args)).await;
        assert_eq!(cause, Some(Cause::ArgOutsideRoots { index: 2 }), "{args:?}");
    }
    for args in [
        vec!["%s", "file.txt"],
        vec!["%s", "../sub/new/file.txt"],
        vec!["%s", "--out=./x"],
        vec!["%s", "https://example.com/x"],
        vec!["%s", "a message, not a path"],
    ] {
        r.run(confined(&args)).await.unwrap_or_else(|e| panic!("{args:?}: {e}"));
    }
    // Without the opt-in, arguments are not read as paths.
    r.run(spec("printf", &["%s", outside.as_str()], None)).await.expect("runs");
}

#[cfg(target_os = "linux")]
#[tokio::test]
async fn detached_descendants_die_with_their_step() {
    let dir = sandbox("detach");
    let r = runner(&dir, &["sh"]);
    let pids: Vec<PathBuf> = (0..3).map(|i| dir.join(format!("d{i}.pid"))).collect();
    // A new session, a double fork into a new session, and a new process
    // group: none of them is in the step's group any more.
    let script = format!(
        "setsid sh -c 'echo $$ > {0}; exec sleep 31337' </dev/null >/dev/null 2>&1 &
         (setsid sh -c 'echo $$ > {1}; sleep 31337' </dev/null >/dev/null 2>&1 &) 
         set -m; sleep 31337 </dev/null >/dev/null 2>&1 & echo $! > {2}
         while [ ! -s {0} ] || [ ! -s {1} ] || [ ! -s {2} ]; do sleep 0.01; done
         for f in {0} {1} {2}; do kill -0 $(cat $f) || exit 9; done
         exit 7",
        pids[0].display(),
        pids[1].display(),
        pids[2].display()
    );
    let out = r.run(keyed("sh", &["-c", &script], "run-detach/s/1")).await.expect("runs");
    // The exit code still reaches the caller: the subreaper leaves the leader to tokio.
    assert_eq!(out.exit_code, 7, "{out:?}");
    let pids: Vec<String> = pids.iter().map(|p| pid_of(p)).collect();
    assert!(pids.iter().all(|p| !p.is_empty()), "{pids:?}");
    // Gone when `run` returns: killed and reaped, not even a zombie.
    for pid in &pids {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        assert!(stat.is_empty(), "{pid} outlived its step: {stat} (we are {})", std::process::id());
    }
}

#[cfg(target_os = "linux")]
#[tokio::test]
async fn a_process_that_clears_its_environment_before_it_detaches_dies_with_its_step() {
    if !LocalCommands::has_cgroups() {
        eprintln!("no writable cgroup v2 hierarchy here: such a process is not found without one");
        return;
    }
    let dir = sandbox("env-cleared");
    let r = runner(&dir, &["sh"]);
    let (pid_file, child_file) = (dir.join("cleared.pid"), dir.join("below.pid"));
    // No key in its environment, a session of its own, a child of its own,
    // and its parent (the step's shell) gone: only the cgroup knows it.
    let script = format!(
        "env -i setsid sh -c 'sleep 31337 & echo $! > {1}; echo $$ > {0}; exec sleep 31337' </dev/null >/dev/null 2>&1 &
         while [ ! -s {0} ] || [ ! -s {1} ]; do sleep 0.01; done
         exit 4",
        pid_file.display(),
        child_file.display()
    );
    let out = r.run(keyed("sh", &["-c", &script], "run-cleared/s/1")).await.expect("runs");
    assert_eq!(out.exit_code, 4, "{out:?}");
    for pid in [pid_of(&pid_file), pid_of(&child_file)] {
        assert!(!pid.is_empty());
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        assert!(stat.is_empty(), "{pid} outlived its step: {stat}");
    }
}

#[cfg(target_os = "linux")]
#[tokio::test]
async fn a_step_ending_spares_the_detached_processes_of_steps_still_running() {
    let dir = sandbox("spare");
    let r = std::sync::Arc::new(runner(&dir, &["sh"]));
    let (a_pid, b_pid, go) = (dir.join("a.pid"), dir.join("b.pid"), dir.join("go"));
    let detach = |pid: &Path| {
        format!("setsid sh -c 'echo $$ > {}; exec sleep 31337' </dev/null >/dev/null 2>&1 &", pid.display())
    };
    let a_script = format!("{} while [ ! -e {} ]; do sleep 0.01; done; exit 0", detach(&a_pid), go.display());
    let a = tokio::spawn({
        let r = std::sync::Arc::clone(&r);
        async move { r.run(keyed("sh", &["-c", &a_script], "run-a/s/1")).await }
    });
    let b_script =
        format!("{} while [ ! -s {} ]; do sleep 0.01; done; exit 3", detach(&b_pid), b_pid.display());
    // Wait until A's detached process runs, then let B start and end.
    while pid_of(&a_pid).is_empty() {
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    let b = r.run(keyed("sh", &["-c", &b_script], "run-b/s/1")).await.expect("b runs");
    assert_eq!(b.exit_code, 3);
    assert!(!alive(&pid_of(&b_pid)), "B's detached process outlived B");
    assert!(alive(&pid_of(&a_pid)), "B's end killed A's detached process while A runs");
    std::fs::write(&go, "").expect("go");
    let a = a.await.expect("joined").expect("a runs");
    assert_eq!(a.exit_code, 0);
    assert!(!alive(&pid_of(&a_pid)), "A's detached process outlived A");
}

#[tokio::test]
async fn ordinary_commands_keep_their_exit_codes_side_by_side() {
    let dir = sandbox("codes");
    let r = std::sync::Arc::new(runner(&dir, &["sh"]));
    let runs: Vec<_> = (0..16)
        .map(|i| {
            let r = std::sync::Arc::clone(&r);
            let script = format!("sleep 0.0{}; exit {i}", i % 10);
            tokio::spawn(async move { r.run(keyed("sh", &["-c", &script], &format!("run/s/{i}"))).await })
        })
        .collect();
    let mut codes = Vec::new();
    for run in runs {
        codes.push(run.await.expect("joined").expect("runs").exit_code);
    }
    assert_eq!(codes, (0..16).collect::<Vec<i32>>());
}
