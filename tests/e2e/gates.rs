//! Gates through the binary, with a new process between every wait and its
//! decision: the product-discovery example end to end (acceptance, rework,
//! a fan-out of accepted stories), refused decisions, `--detach`,
//! clarification answers, and the prompt at a terminal (a pseudo-terminal).

use std::io::Write;
use std::process::{Command, Stdio};

use crate::support::{cairn_bin, cairn_env, fresh_data_dir, redact_times, root};

/// Runs `cairn --llm mock ARGS` in the workspace root on `data`.
fn cairn(data: &str, args: &[&str]) -> crate::support::Run {
    let mut all = vec!["--llm", "mock"];
    all.extend_from_slice(args);
    cairn_env(&root(), &all, &[("CAIRN_DATA_DIR", data)])
}

#[test]
fn product_discovery_runs_end_to_end_across_processes() {
    let data = fresh_data_dir();
    let data = data.to_str().expect("utf-8");
    let mut transcript = String::new();
    let (first, second) = ("per_epic[mock-id-1].stories", "per_epic[mock-id-2].stories");
    let idea = "idea=A shared shopping list";
    let steps: [&[&str]; 7] = [
        &["run", "examples/product-discovery.yaml", "--input", idea, "--run-id", "pd"],
        &["approve", "pd", "--as", "product_owner", "--comment", "good epics"],
        &["approve", "pd", "--as", "product_owner"],
        &["approve", "pd", "--as", "product_owner", "--gate", first],
        &["reject", "pd", "--gate", second, "--as", "product_owner", "--comment", "add offline use"],
        &["approve", "pd", "--gate", second, "--as", "product_owner"],
        &["status", "pd", "--format", "json"],
    ];
    let mut last = None;
    for args in steps {
        let run = cairn(data, args);
        if args[0] != "status" {
            let err = if run.code == 2 { run.stderr.as_str() } else { "" };
            let out = redact_times(&run.stdout);
            transcript.push_str(&format!("$ cairn {}\nexit {}\n{err}{out}\n", args.join(" "), run.code));
        }
        last = Some(run);
    }
    let status: serde_json::Value = serde_json::from_str(&last.expect("ran").stdout).expect("json");
    assert_eq!(status["status"], "completed", "{transcript}");
    let steps = status["steps"].as_array().expect("steps");
    let attempts: Vec<&serde_json::Value> =
        steps.iter().filter(|s| s["id"] == "stories").map(|s| &s["attempts"]).collect();
    assert_eq!(attempts, [1, 2], "the rejected stories were reworked once");
    insta::assert_snapshot!("discovery_transcript", transcript);
    let events = cairn(data, &["events", "pd"]);
    let lines: Vec<String> = redact_times(&events.stdout)
        .lines()
        .filter(|l| l.contains("gate_decided") || l.contains("step_reworked") || l.contains("group_expanded"))
        .map(|l| l.split_whitespace().skip(2).collect::<Vec<_>>().join(" "))
        .collect();
    insta::assert_snapshot!("discovery_decisions", lines.join("\n"));
}

#[test]
fn decisions_that_do_not_fit_are_refused_with_the_reason() {
    let data = fresh_data_dir();
    let data = data.to_str().expect("utf-8");
    let run =
        cairn(data, &["run", "examples/code-review.yaml", "--input", "file_path=a.rs", "--run-id", "cr"]);
    assert_eq!(run.code, 3);
    let mut out = String::new();
    for args in [
        &["approve", "cr", "--as", "intern"][..],
        &["approve", "cr"],
        &["answer", "cr", "--text", "yes"],
        &["approve", "nope", "--as", "tech_lead"],
    ] {
        let r = cairn(data, args);
        out.push_str(&format!("$ cairn {}\nexit {}\n{}", args.join(" "), r.code, r.stderr));
    }
    insta::assert_snapshot!(out);
    let done = cairn(data, &["approve", "cr", "--as", "tech_lead"]);
    assert_eq!(done.code, 0, "{}", done.stderr);
    let again = cairn(data, &["approve", "cr", "--as", "tech_lead"]);
    assert_eq!(again.code, 2);
    assert!(again.stderr.contains("has ended"), "{}", again.stderr);
}

#[test]
fn a_repeated_decision_says_so_and_never_decides_the_next_gate() {
    if crate::support::skip_when_served(
        "a server drives a run on as soon as a decision lets it: `--detach` leaves it waiting only without one",
    ) {
        return;
    }
    let data = fresh_data_dir();
    std::fs::create_dir_all(&data).expect("data dir");
    let file = data.with_extension("twice.yaml");
    let yaml = "cairn: 1\nid: twice\nsteps:\n  - id: first\n    approval: { message: One?, approvers: [lead, owner] }\n  - id: second\n    approval: { message: Two?, approvers: [lead] }\n";
    std::fs::write(&file, yaml).expect("write the workflow");
    let data = data.to_str().expect("utf-8");
    let run = cairn(data, &["run", file.to_str().expect("utf-8"), "--run-id", "tw"]);
    assert_eq!(run.code, 3, "{}", run.stderr);
    let mut out = String::new();
    for args in [
        &["approve", "tw", "--as", "lead", "--detach"][..],
        &["approve", "tw", "--as", "lead", "--detach"],
        &["approve", "tw", "--as", "owner"],
        &["approve", "tw", "--as", "lead"],
        &["approve", "tw", "--as", "lead", "--gate", "second"],
    ] {
        let r = cairn(data, args);
        let said: Vec<&str> = r.stderr.lines().filter(|l| !l.starts_with("  ")).collect();
        out.push_str(&format!("$ cairn {}\nexit {}\n{}\n", args.join(" "), r.code, said.join("\n")));
    }
    insta::assert_snapshot!(out);
}

#[test]
fn detach_records_the_decision_and_resume_goes_on() {
    if crate::support::skip_when_served(
        "a server drives a run on as soon as a decision lets it: `--detach` leaves it waiting only without one",
    ) {
        return;
    }
    let data = fresh_data_dir();
    let data = data.to_str().expect("utf-8");
    cairn(data, &["run", "examples/code-review.yaml", "--input", "file_path=a.rs", "--run-id", "cr"]);
    let detached = cairn(data, &["approve", "cr", "--as", "tech_lead", "--detach", "--format", "json"]);
    assert_eq!(detached.code, 0, "{}", detached.stderr);
    let run: serde_json::Value = serde_json::from_str(&detached.stdout).expect("one JSON document");
    assert_eq!(run["status"], "waiting_acceptance");
    assert_eq!(run["waiting"]["approved_by"][0]["role"], "tech_lead");
    let resumed = cairn(data, &["resume", "cr"]);
    assert_eq!(resumed.code, 0, "{}", resumed.stderr);
}

#[test]
fn questions_are_shown_and_answered_across_processes() {
    let data = fresh_data_dir();
    let data = data.to_str().expect("utf-8");
    let run = cairn(
        data,
        &["run", "examples/feature-delivery.yaml", "--input", "feature=dark mode", "--run-id", "fd"],
    );
    assert_eq!(run.code, 3, "{}", run.stderr);
    let status = cairn(data, &["status", "fd", "--format", "json"]);
    let status: serde_json::Value = serde_json::from_str(&status.stdout).expect("json");
    assert_eq!(status["status"], "waiting_clarification");
    assert_eq!(status["waiting"]["kind"], "clarification");
    assert!(status["waiting"]["questions"][0].as_str().is_some_and(|q| q.contains("dark mode")), "{status}");
    let answered = cairn(data, &["answer", "fd", "--text", "Only the settings page", "--by", "dana"]);
    // The answered plan goes on to the tests, whose `cargo` no config here
    // allows: refused twice through the rework loop, the run blocks.
    assert_eq!(answered.code, 3, "{}{}", answered.stdout, answered.stderr);
    let after = cairn(data, &["status", "fd", "--format", "json"]);
    let after: serde_json::Value = serde_json::from_str(&after.stdout).expect("json");
    assert_eq!(after["status"], "blocked", "{after}");
    let step = |id: &str| after["steps"].as_array().and_then(|s| s.iter().find(|s| s["id"] == id)).cloned();
    assert_eq!(step("plan").map(|s| s["status"].clone()), Some("succeeded".into()), "{after}");
    assert_eq!(step("test").map(|s| s["error"]["class"].clone()), Some("permission".into()), "{after}");
    let events = cairn(data, &["events", "fd"]);
    assert!(
        events.stdout.contains("dana") && events.stdout.contains("answered plan: Only the settings page"),
        "{}",
        events.stdout
    );
}

/// `cairn --llm mock ARGS` in `dir` on `data`, its stdin a terminal where
/// `typed` was typed ahead (the terminal keeps the lines until a prompt
/// reads them): its exit code, stdout and stderr.
fn at_terminal(
    dir: &std::path::Path,
    data: &std::path::Path,
    args: &[&str],
    typed: &[u8],
) -> (i32, String, String) {
    let pty = nix::pty::openpty(None, None).expect("a pseudo-terminal");
    let slave: std::fs::File = pty.slave.into();
    let mut master: std::fs::File = pty.master.into();
    let child = Command::new(cairn_bin())
        .args(["--llm", "mock"])
        .args(args)
        .current_dir(dir)
        .env("CAIRN_DATA_DIR", data)
        .env("USER", "tester")
        .env_remove("CAIRN_CONFIG")
        .stdin(Stdio::from(slave))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("cairn starts");
    master.write_all(typed).expect("typed");
    let out = child.wait_with_output().expect("cairn ends");
    drop(master);
    let text = |bytes: &[u8]| String::from_utf8_lossy(bytes).into_owned();
    (out.status.code().unwrap_or(-1), text(&out.stdout), text(&out.stderr))
}

#[test]
fn a_gate_at_a_terminal_asks_and_the_run_goes_on_in_the_same_process() {
    let data = fresh_data_dir();
    let args = ["run", "examples/code-review.yaml", "--input", "file_path=a.rs", "--run-id", "tty"];
    let (code, _, stderr) = at_terminal(&root(), &data, &args, b"a\nlooks right\n");
    assert_eq!(code, 0, "{stderr}");
    assert!(stderr.contains("approve, reject, or leave it waiting? [a/r/w]"), "{stderr}");
    assert!(stderr.contains("output under review:"), "{stderr}");
    let events = cairn_env(&root(), &["events", "tty"], &[("CAIRN_DATA_DIR", data.to_str().expect("utf-8"))]);
    assert!(
        events.stdout.contains("tester") && events.stdout.contains("approved as tech_lead: looks right"),
        "{}",
        events.stdout
    );
}

const CONVERSE: &str = "cairn: 1\nid: converse\nagents:\n  w: { system: You pair with a person. }\nsteps:\n  - id: chat\n    agent: w\n    prompt: Help me name the service.\n    interactive: true\n";

/// The conversation an interactive step's output holds: who spoke, in order.
fn speakers(run: &serde_json::Value) -> Vec<String> {
    let output = &run["steps"][0]["output"];
    output
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|turn| turn["role"].as_str())
        .map(str::to_owned)
        .collect()
}

#[test]
fn an_interactive_step_waits_for_each_turn_and_its_transcript_is_the_output() {
    let data = fresh_data_dir();
    let data = data.to_str().expect("utf-8");
    let dir = crate::support::scratch("gates_converse");
    std::fs::write(dir.join("wf.yaml"), CONVERSE).expect("write");
    let wf = dir.join("wf.yaml").display().to_string();
    let started = cairn(data, &["run", &wf, "--run-id", "talk", "--non-interactive"]);
    assert_eq!(started.code, 3, "{}{}", started.stdout, started.stderr);
    assert!(
        started.stdout.contains("waiting: your turn in the conversation of `chat`"),
        "{}",
        started.stdout
    );
    assert!(started.stdout.contains("cairn answer talk --text /done"), "{}", started.stdout);
    let replied = cairn(data, &["answer", "talk", "--text", "Shorter.", "--non-interactive"]);
    assert_eq!(replied.code, 3, "the agent answers, and it is the person's turn again: {}", replied.stderr);
    let ended = cairn(data, &["answer", "talk", "--text", "/done", "--format", "json"]);
    assert_eq!(ended.code, 0, "{}{}", ended.stdout, ended.stderr);
    let run: serde_json::Value = serde_json::from_str(&ended.stdout).expect("json");
    assert_eq!(run["status"], "completed");
    assert_eq!(speakers(&run), ["agent", "person", "agent"]);
    assert_eq!(run["steps"][0]["output"][1]["text"], "Shorter.");
}

#[test]
fn an_interactive_step_at_a_terminal_converses_in_the_same_process() {
    let data = fresh_data_dir();
    let dir = crate::support::scratch("gates_converse_tty");
    std::fs::write(dir.join("wf.yaml"), CONVERSE).expect("write");
    // A turn (an empty line ends it), then `/done`.
    let args = ["run", "wf.yaml", "--run-id", "tty", "--format", "json"];
    let (code, stdout, stderr) = at_terminal(&dir, &data, &args, b"Shorter.\nNo dashes.\n\n/done\n");
    assert_eq!(code, 0, "{stderr}");
    assert!(
        stderr.contains("your turn (an empty line ends it; `/done` alone ends the conversation)"),
        "{stderr}"
    );
    let run: serde_json::Value = serde_json::from_str(&stdout).expect("json");
    assert_eq!(speakers(&run), ["agent", "person", "agent"]);
    assert_eq!(run["steps"][0]["output"][1]["text"], "Shorter.\nNo dashes.");
}
