//! Output at a terminal and elsewhere: colour and a live progress line only
//! on a terminal (a pseudo-terminal here), plain lines with `NO_COLOR`, no
//! progress with `-q`, tables cut to a narrow terminal and never in a pipe.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use crate::support::{cairn_bin, cairn_env, fresh_data_dir, scratch};

const CHAIN: &str = "cairn: 1\nid: a-rather-long-workflow-name-for-a-narrow-terminal\nagents:\n  w: { system: hi }\nsteps:\n  - id: a\n    agent: w\n    prompt: one\n  - id: b\n    agent: w\n    prompt: two\n";

fn setup(name: &str) -> (PathBuf, PathBuf) {
    let dir = scratch(name);
    std::fs::write(dir.join("wf.yaml"), CHAIN).expect("write");
    (dir, fresh_data_dir())
}

/// What `cairn ARGS` writes to a terminal `columns` wide, which is its
/// stdout (`on_stdout`) or its stderr; the other stream is dropped.
fn at_terminal(
    dir: &Path,
    data: &Path,
    args: &[&str],
    env: &[(&str, &str)],
    on_stdout: bool,
) -> (i32, String) {
    let size = nix::pty::Winsize { ws_row: 40, ws_col: 60, ws_xpixel: 0, ws_ypixel: 0 };
    let pty = nix::pty::openpty(Some(&size), None).expect("a pseudo-terminal");
    let slave: std::fs::File = pty.slave.into();
    let mut master: std::fs::File = pty.master.into();
    let mut child = {
        // The command holds the terminal's other end until it is dropped:
        // dropped here, the reader sees the end when cairn exits.
        let mut command = Command::new(cairn_bin());
        command
            .args(args)
            .current_dir(dir)
            .env("CAIRN_DATA_DIR", data)
            .env("TERM", "xterm")
            .env("USER", "tester")
            .env_remove("NO_COLOR")
            .env_remove("CAIRN_CONFIG")
            .env_remove("COLUMNS")
            .envs(env.iter().copied())
            .stdin(Stdio::null());
        if on_stdout {
            command.stdout(Stdio::from(slave)).stderr(Stdio::null());
        } else {
            command.stdout(Stdio::null()).stderr(Stdio::from(slave));
        }
        command.spawn().expect("cairn starts")
    };
    let reader = std::thread::spawn(move || {
        let mut bytes = Vec::new();
        let mut buf = [0u8; 4096];
        // Linux answers EIO once the last holder of the other end closed it.
        while let Ok(n) = master.read(&mut buf) {
            if n == 0 {
                break;
            }
            bytes.extend_from_slice(&buf[..n]);
        }
        String::from_utf8_lossy(&bytes).into_owned()
    });
    let code = child.wait().expect("cairn ends").code().unwrap_or(-1);
    (code, reader.join().expect("the reader"))
}

#[test]
fn a_terminal_gets_colour_and_a_live_line_and_no_color_gets_plain_lines() {
    if crate::support::skip_when_served("draws on the terminal of the process that drives the run") {
        return;
    }
    let (dir, data) = setup("cli_tty_progress");
    // Each answer takes 1.5 s: the live line shows after 0.5 s, however busy the machine.
    let latency = [("CAIRN_MOCK_LATENCY", "1500ms")];
    let args = ["--llm", "mock", "run", "wf.yaml", "--run-id", "c1"];
    let (code, stderr) = at_terminal(&dir, &data, &args, &latency, false);
    assert_eq!(code, 0, "{stderr}");
    assert!(stderr.contains("\u{1b}[32m✓\u{1b}[0m a ("), "a green mark: {stderr:?}");
    assert!(
        stderr.contains("\r\u{1b}[2K\u{1b}[36m⠋\u{1b}[0m a "),
        "a live line, redrawn in place: {stderr:?}"
    );

    let env = [latency[0], ("NO_COLOR", "1")];
    let args = ["--llm", "mock", "run", "wf.yaml", "--run-id", "c2"];
    let (code, stderr) = at_terminal(&dir, &data, &args, &env, false);
    assert_eq!(code, 0, "{stderr}");
    assert!(!stderr.contains('\u{1b}'), "no colour and no live line with NO_COLOR: {stderr:?}");
    assert!(stderr.contains("  ✓ a ("), "{stderr:?}");

    let args = ["-q", "--llm", "mock", "run", "wf.yaml", "--run-id", "c3"];
    let (code, stderr) = at_terminal(&dir, &data, &args, &latency, false);
    assert_eq!((code, stderr.as_str()), (0, ""), "-q: no progress at all, not even the live line");
}

#[test]
fn piped_output_is_plain_lines_without_escape_codes() {
    if crate::support::skip_when_served("draws on the terminal of the process that drives the run") {
        return;
    }
    let (dir, data) = setup("cli_pipe_plain");
    let env = [("CAIRN_DATA_DIR", data.to_str().expect("utf-8")), ("CAIRN_MOCK_LATENCY", "800ms")];
    let out = cairn_env(&dir, &["--llm", "mock", "run", "wf.yaml", "--run-id", "p1"], &env);
    assert_eq!(out.code, 0, "{}", out.stderr);
    for text in [&out.stdout, &out.stderr] {
        assert!(!text.contains('\u{1b}') && !text.contains('\r'), "plain: {text:?}");
    }
    let lines: Vec<&str> = out.stderr.lines().map(|l| l.split(" (").next().unwrap_or(l)).collect();
    assert_eq!(lines, ["run p1 started", "  ▸ a", "  ✓ a", "  ▸ b", "  ✓ b"], "one line per transition");
    for args in [&["runs"][..], &["checkpoints", "p1"], &["status", "p1"], &["events", "p1"]] {
        let out = cairn_env(&dir, args, &env[..1]);
        assert_eq!(out.code, 0, "{args:?}: {}", out.stderr);
        assert!(!out.stdout.contains('\u{1b}'), "{args:?}: {:?}", out.stdout);
    }
}

#[test]
fn quiet_drops_progress_but_not_errors() {
    if crate::support::skip_when_served("draws on the terminal of the process that drives the run") {
        return;
    }
    let (dir, data) = setup("cli_quiet");
    let env = [("CAIRN_DATA_DIR", data.to_str().expect("utf-8"))];
    let out = cairn_env(&dir, &["-q", "--llm", "mock", "run", "wf.yaml", "--run-id", "q1"], &env);
    assert_eq!((out.code, out.stderr.as_str()), (0, ""));
    assert!(out.stdout.contains("completed in"), "the result still prints: {}", out.stdout);
    let out = cairn_env(&dir, &["--llm", "mock", "run", "wf.yaml", "--run-id", "q2", "--quiet"], &env);
    assert_eq!((out.code, out.stderr.as_str()), (0, ""), "after the verb too");
    let out = cairn_env(&dir, &["-q", "status", "nope"], &env);
    assert_eq!((out.code, out.stderr.as_str()), (2, "error: no run `nope` in this data directory\n"));
}

#[test]
fn a_table_is_cut_to_a_narrow_terminal_and_whole_in_a_pipe() {
    if crate::support::skip_when_served("draws on the terminal of the process that drives the run") {
        return;
    }
    let (dir, data) = setup("cli_tty_table");
    let env = [("CAIRN_DATA_DIR", data.to_str().expect("utf-8"))];
    let out = cairn_env(&dir, &["--llm", "mock", "run", "wf.yaml", "--run-id", "w1"], &env);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let piped = cairn_env(&dir, &["runs"], &env);
    assert!(piped.stdout.contains("a-rather-long-workflow-name-for-a-narrow-terminal"), "{}", piped.stdout);
    assert!(piped.stdout.lines().any(|l| l.chars().count() > 60));
    let (code, shown) = at_terminal(&dir, &data, &["runs"], &[], true);
    assert_eq!(code, 0, "{shown}");
    let plain = strip_colour(&shown);
    let lines: Vec<&str> = plain.lines().map(|l| l.trim_end_matches('\r')).collect();
    assert!(lines.iter().all(|l| l.chars().count() <= 60), "fits 60 columns: {shown}");
    assert!(lines[1].starts_with("w1   a-rather-") && lines[1].contains('…'), "the workflow is cut: {shown}");
    assert!(shown.contains("\u{1b}[32mcompleted\u{1b}[0m"), "and the status painted: {shown:?}");
}

/// `text` without its colour codes (`ESC [ ... m`).
fn strip_colour(text: &str) -> String {
    let mut out = String::new();
    let mut rest = text;
    while let Some(at) = rest.find("\u{1b}[") {
        out.push_str(&rest[..at]);
        let after = &rest[at + 2..];
        match after.find(|c: char| !c.is_ascii_digit() && c != ';') {
            Some(end) if after[end..].starts_with('m') => rest = &after[end + 1..],
            _ => {
                out.push_str("\u{1b}[");
                rest = after;
            }
        }
    }
    out.push_str(rest);
    out
}
