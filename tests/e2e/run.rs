//! `cairn run`: real runs through the binary, on the mock provider, a
//! loopback HTTP server, and fenced commands.

use crate::support::{LlmServer, cairn_env, redact_times, root, scratch};

fn run_in(dir: &std::path::Path, args: &[&str], env: &[(&str, &str)]) -> (i32, String, String) {
    let run = cairn_env(dir, args, env);
    (run.code, run.stdout, run.stderr)
}

#[test]
fn the_code_review_example_runs_on_the_mock_and_waits_for_acceptance() {
    let (code, stdout, stderr) = run_in(
        &root(),
        &[
            "--llm",
            "mock",
            "run",
            "examples/code-review.yaml",
            "--input",
            "file_path=src/lib.rs",
            "--run-id",
            "review-1",
        ],
        &[],
    );
    assert_eq!(code, 3, "{stdout}{stderr}");
    insta::assert_snapshot!("code_review_text", redact_times(&stdout));
    // Parallel steps finish in any order: compare the progress lines as a
    // set, and check the order the plan fixes on its own.
    let mut lines: Vec<String> = redact_times(&stderr).lines().map(str::to_owned).collect();
    let at = |mark: &str, step: &str| {
        lines
            .iter()
            .position(|l| l.split_whitespace().take(2).eq([mark, step]))
            .unwrap_or_else(|| panic!("no `{mark} {step}` in:\n{stderr}"))
    };
    assert!(lines[0].contains("review-1"), "the run's start comes first:\n{stderr}");
    let middle = ["security_scan", "quality_check", "style"];
    assert!(at("▸", "parse") < at("✓", "parse"), "{stderr}");
    for step in middle {
        assert!(at("✓", "parse") < at("▸", step), "{step} starts after parse finished:\n{stderr}");
        assert!(at("▸", step) < at("✓", step), "{stderr}");
        assert!(at("✓", step) < at("▸", "report"), "report starts after {step} finished:\n{stderr}");
    }
    assert!(at("▸", "report") < at("✓", "report"), "{stderr}");
    assert!(at("✓", "report") < at("⏸", "report"), "{stderr}");
    lines.sort();
    insta::assert_snapshot!("code_review_progress", lines.join("\n"));
}

#[test]
fn json_output_is_one_document_in_the_spec_shape() {
    let (code, stdout, _) = run_in(
        &root(),
        &[
            "--llm",
            "mock",
            "run",
            "examples/code-review.yaml",
            "--input",
            "file_path=a.rs",
            "--run-id",
            "r2",
            "--format",
            "json",
        ],
        &[],
    );
    assert_eq!(code, 3);
    let run: serde_json::Value = serde_json::from_str(&stdout).expect("exactly one JSON document");
    let mut run: serde_json::Value =
        serde_json::from_str(&crate::support::redact_iso(&run.to_string())).expect("still JSON");
    // How long a step took varies; that it is a number does not.
    for step in run["steps"].as_array_mut().expect("steps") {
        assert!(step["duration_ms"].is_u64(), "{step}");
        step["duration_ms"] = serde_json::json!("<ms>");
    }
    insta::assert_json_snapshot!(run);
}

const STEPS: &str = r#"cairn: 1
id: tools
inputs:
  name: { type: string, default: world }
steps:
  - id: greet
    command: [echo, "hello {{ inputs.name }}; $(whoami)"]
  - id: shout
    set: "{{ steps.greet.output.stdout | trim | upper }}"
  - id: never
    when: "{{ steps.shout.output == 'X' }}"
    set: 1
"#;

#[test]
fn commands_run_fenced_and_templates_stay_literal() {
    let dir = scratch("run_commands");
    std::fs::write(dir.join("wf.yaml"), STEPS).expect("write");
    std::fs::write(dir.join("cairn.toml"), "[commands]\nallow = [\"echo\"]\n").expect("write");
    let (code, stdout, stderr) = run_in(&dir, &["run", "wf.yaml", "--run-id", "t1", "--format", "json"], &[]);
    assert_eq!(code, 0, "{stdout}{stderr}");
    let run: serde_json::Value = serde_json::from_str(&stdout).expect("json");
    assert_eq!(run["steps"][0]["output"]["stdout"], "hello world; $(whoami)\n");
    assert_eq!(run["steps"][1]["output"], "HELLO WORLD; $(WHOAMI)");
    assert_eq!(run["steps"][2]["status"], "skipped");
}

#[test]
fn a_program_off_the_allowlist_fails_the_run_with_permission() {
    let dir = scratch("run_refused");
    std::fs::write(dir.join("wf.yaml"), STEPS).expect("write");
    let (code, stdout, stderr) = run_in(&dir, &["run", "wf.yaml", "--run-id", "t2"], &[]);
    assert_eq!(code, 1, "{stdout}{stderr}");
    insta::assert_snapshot!(redact_times(&stdout));
}

#[test]
fn bad_inputs_and_ids_are_usage_errors() {
    let dir = scratch("run_usage");
    std::fs::write(dir.join("wf.yaml"), STEPS).expect("write");
    let cases: [(&[&str], &str); 4] = [
        (
            &["run", "wf.yaml", "--input", "nme=x"],
            "error: wf.yaml: unknown input `nme` (did you mean `name`?)\n",
        ),
        (
            &["run", "wf.yaml", "--input", "name=[3]"],
            "error: wf.yaml: input `name` must be of type string, not [3]\n",
        ),
        (&["run", "wf.yaml", "--input", "novalue"], "error: --input `novalue` must be KEY=VALUE\n"),
        (
            &["run", "wf.yaml", "--run-id", "../x"],
            "error: `../x` is not a valid run id: use 1 to 64 of a-z, 0-9, `_` and `-`, starting with a letter or digit\n",
        ),
    ];
    for (args, expected) in cases {
        let (code, _, stderr) = run_in(&dir, args, &[]);
        assert_eq!((code, stderr.as_str()), (2, expected), "{args:?}");
    }
}

#[test]
fn a_run_without_a_configured_provider_names_the_settings_and_creates_no_run() {
    let data = crate::support::fresh_data_dir();
    let data = data.to_str().expect("utf-8 path");
    let (code, stdout, stderr) = run_in(
        &root(),
        &["run", "examples/code-review.yaml", "--input", "file_path=x", "--run-id", "p1"],
        &[("CAIRN_DATA_DIR", data)],
    );
    assert_eq!((code, stdout.as_str()), (2, ""), "{stderr}");
    assert!(
        stderr.starts_with(
            "error: the workflow needs what this process lacks: provider `default` of agent `backend`, "
        ),
        "{stderr}"
    );
    assert_eq!(
        stderr.matches("hint: set CAIRN_LLM_BASE_URL").count(),
        1,
        "one hint for one provider: {stderr}"
    );
    let (_, runs, _) = run_in(&root(), &["runs", "--format", "json"], &[("CAIRN_DATA_DIR", data)]);
    assert_eq!(runs.trim(), "[]", "no run was created");
}

#[test]
fn the_http_provider_is_configured_from_the_environment() {
    let dir = scratch("run_http");
    let wf = "cairn: 1\nid: ask\nagents:\n  w: { system: Be brief. }\nsteps:\n  - id: ask\n    agent: w\n    prompt: Is this fine?\n";
    std::fs::write(dir.join("wf.yaml"), wf).expect("write");
    std::fs::write(dir.join("cairn.toml"), "[prices.fake]\nprompt = 1.0\ncompletion = 2.0\n").expect("write");
    let server = LlmServer::start(std::time::Duration::ZERO);
    let env = [
        ("CAIRN_LLM_BASE_URL", server.url.as_str()),
        ("CAIRN_LLM_API_KEY", "sk-e2e-secret"),
        ("CAIRN_LLM_MODEL", "fake"),
    ];
    let (code, stdout, stderr) =
        run_in(&dir, &["run", "wf.yaml", "--run-id", "h1", "--format", "json"], &env);
    assert_eq!(code, 0, "{stdout}{stderr}");
    let run: serde_json::Value = serde_json::from_str(&stdout).expect("json");
    assert_eq!(run["steps"][0]["output"], "answer for h1/ask/1");
    assert_eq!(
        run["usage"],
        serde_json::json!({"prompt_tokens": 3, "completion_tokens": 4, "estimated": false, "cost_usd": 0.000011})
    );
    let keys: Vec<String> = server.calls().into_iter().map(|c| c.key).collect();
    assert_eq!(keys, ["h1/ask/1"]);
    assert!(!stdout.contains("sk-e2e-secret") && !stderr.contains("sk-e2e-secret"));
}

#[test]
fn an_agent_reads_a_file_writes_one_runs_a_command_and_answers_each_call_an_event() {
    let dir = scratch("run_tools");
    let wf = "cairn: 1\nid: act\nagents:\n  coder:\n    tools: [read_file, write_file, run_command]\nsteps:\n  - id: act\n    agent: coder\n    prompt: Copy the notes, loudly.\n";
    std::fs::write(dir.join("wf.yaml"), wf).expect("write");
    std::fs::write(dir.join("notes.txt"), "ship on friday").expect("write");
    std::fs::write(dir.join("cairn.toml"), "[commands]\nallow = [\"echo\"]\nroots = [\".\"]\n")
        .expect("write");
    let server = LlmServer::start(std::time::Duration::ZERO);
    let data = crate::support::fresh_data_dir();
    let data = data.to_str().expect("utf-8 path");
    let env =
        [("CAIRN_LLM_BASE_URL", server.url.as_str()), ("CAIRN_LLM_MODEL", "fake"), ("CAIRN_DATA_DIR", data)];
    let (code, stdout, stderr) =
        run_in(&dir, &["run", "wf.yaml", "--run-id", "t1", "--format", "json"], &env);
    assert_eq!(code, 0, "{stdout}{stderr}");
    let run: serde_json::Value = serde_json::from_str(&stdout).expect("json");
    assert_eq!(run["steps"][0]["output"], "finished: done");
    assert_eq!(std::fs::read_to_string(dir.join("out/answer.txt")).expect("written"), "SHIP ON FRIDAY");
    let (_, events, _) = run_in(&dir, &["events", "t1", "--format", "jsonl"], &env);
    let events: Vec<serde_json::Value> =
        events.lines().map(|l| serde_json::from_str(l).expect("jsonl")).collect();
    let called: Vec<&str> =
        events.iter().filter(|e| e["type"] == "tool_called").filter_map(|e| e["tool"].as_str()).collect();
    assert_eq!(called, ["read_file", "write_file", "run_command"]);
    let returned: Vec<&str> =
        events.iter().filter(|e| e["type"] == "tool_returned").filter_map(|e| e["result"].as_str()).collect();
    assert_eq!(
        returned,
        ["ship on friday", "wrote 14 bytes to `out/answer.txt`", "exit code 0\nstdout:\ndone\n\nstderr:\n"]
    );
    assert_eq!(server.calls().len(), 4, "three rounds of calls, then the answer");
}

#[test]
fn an_agent_calls_the_tool_of_an_mcp_server_the_config_names() {
    let dir = scratch("run_mcp");
    let wf = "cairn: 1\nid: ask\nagents:\n  clerk:\n    mcp: [fx]\nsteps:\n  - id: act\n    agent: clerk\n    prompt: Ask the server.\n";
    std::fs::write(dir.join("wf.yaml"), wf).expect("write");
    let fixture = root().join("crates/cairn-mcp/tests/fixtures/mcp_server.py");
    let config = format!(
        "[commands]\nroots = [\".\"]\n\n[mcp.fx]\ncommand = [\"python3\", {:?}]\nenv = [\"MCP_FIXTURE_PIDS\"]\n",
        fixture.display().to_string()
    );
    std::fs::write(dir.join("cairn.toml"), config).expect("write");
    let server = LlmServer::start(std::time::Duration::ZERO);
    let data = crate::support::fresh_data_dir();
    let (data, pids) = (data.to_str().expect("utf-8 path"), dir.join("pids"));
    let env = [
        ("CAIRN_LLM_BASE_URL", server.url.as_str()),
        ("CAIRN_LLM_MODEL", "fake"),
        ("CAIRN_DATA_DIR", data),
        ("MCP_FIXTURE_PIDS", pids.to_str().expect("utf-8 path")),
    ];
    let (code, stdout, stderr) =
        run_in(&dir, &["run", "wf.yaml", "--run-id", "m1", "--format", "json"], &env);
    assert_eq!(code, 0, "{stdout}{stderr}");
    let run: serde_json::Value = serde_json::from_str(&stdout).expect("json");
    let output = run["steps"][0]["output"].as_str().unwrap_or_default();
    assert!(output.starts_with("the server said: hello from the model (m1/act/"), "{output}");
    let (_, events, _) = run_in(&dir, &["events", "m1", "--format", "jsonl"], &env);
    let events: Vec<serde_json::Value> =
        events.lines().map(|l| serde_json::from_str(l).expect("jsonl")).collect();
    let called: Vec<&str> =
        events.iter().filter(|e| e["type"] == "tool_called").filter_map(|e| e["tool"].as_str()).collect();
    assert_eq!(called, ["fx__echo"]);
    let started = std::fs::read_to_string(&pids).expect("the server wrote its pid");
    assert_eq!(started.lines().count(), 1, "started once, for the run");
}

#[test]
fn an_agent_runs_on_a_coding_agent_cli_with_its_usage_and_cost() {
    let dir = scratch("run_cli_provider");
    let wf = "cairn: 1\nid: greet\nagents:\n  coder:\n    provider: claude\n    model: sonnet\nsteps:\n  - id: hello\n    agent: coder\n    prompt: Say hello.\n";
    std::fs::write(dir.join("wf.yaml"), wf).expect("write");
    let claude = root().join("crates/cairn-command/tests/fixtures/cli/claude").display().to_string();
    let config = format!(
        "[commands]\nallow = [{claude:?}]\nroots = [\".\"]\n\n[providers.claude]\nkind = \"cli\"\npreset = \"claude-code\"\ncommand = [{claude:?}]\n"
    );
    std::fs::write(dir.join("cairn.toml"), config).expect("write");
    let data = crate::support::fresh_data_dir();
    let env = [("CAIRN_DATA_DIR", data.to_str().expect("utf-8 path"))];
    let (code, stdout, stderr) =
        run_in(&dir, &["run", "wf.yaml", "--run-id", "c1", "--format", "json"], &env);
    assert_eq!(code, 0, "{stdout}{stderr}");
    let run: serde_json::Value = serde_json::from_str(&stdout).expect("json");
    assert_eq!(run["steps"][0]["output"], "Hello");
    assert_eq!(run["usage"]["prompt_tokens"], 14323);
    assert_eq!(run["usage"]["cost_usd"], 0.009609, "the cost the CLI reported");
    assert_eq!(run["steps"][0]["usage"]["cost_micro_usd"], 9609);
    assert_eq!(
        std::fs::read_to_string(dir.join("prompt.txt")).expect("the CLI ran in the root"),
        "Say hello."
    );
}

#[test]
fn a_prompt_includes_files_of_the_workflows_folder_and_a_symlink_out_is_refused() {
    let dir = scratch("run_include");
    std::fs::create_dir_all(dir.join("prompts")).expect("mkdir");
    std::fs::write(dir.join("prompts/style.md"), "Write for {{ inputs.reader }}.").expect("write");
    let wf = "cairn: 1\nid: inc\ninputs:\n  reader: { type: string }\nagents:\n  w: { system: \"{% include 'prompts/style.md' %}\" }\nsteps:\n  - id: a\n    agent: w\n    prompt: \"Hello. {% include 'prompts/style.md' %}\"\n";
    std::fs::write(dir.join("wf.yaml"), wf).expect("write");
    let data = crate::support::fresh_data_dir();
    let env = [("CAIRN_DATA_DIR", data.to_str().expect("utf-8 path"))];
    let (code, stdout, stderr) =
        run_in(&dir, &["--llm", "mock", "run", "wf.yaml", "--run-id", "i1", "--input", "reader=ops"], &env);
    assert_eq!(code, 0, "{stdout}{stderr}");
    // The file changes after the start: the run keeps what it read.
    std::fs::write(dir.join("prompts/style.md"), "Changed.").expect("write");
    let (_, events, _) = run_in(&dir, &["events", "i1", "--format", "jsonl"], &env);
    let rendered: serde_json::Value = events
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).expect("jsonl"))
        .find(|e| e["type"] == "prompt_rendered")
        .expect("a rendered prompt");
    assert_eq!(rendered["prompt"], "Hello. Write for ops.");
    assert_eq!(rendered["system"], "Write for ops.");
    std::os::unix::fs::symlink("/etc/hostname", dir.join("prompts/out.md")).expect("symlink");
    std::fs::write(dir.join("bad.yaml"), wf.replace("prompts/style.md", "prompts/out.md")).expect("write");
    let (code, stdout, stderr) = run_in(&dir, &["--llm", "mock", "validate", "bad.yaml"], &env);
    assert_eq!(code, 2, "{stdout}{stderr}");
    assert!(
        stdout.contains("cannot read include `prompts/out.md`: it leads outside the workflow's folder"),
        "{stdout}"
    );
}

#[test]
fn the_readme_demo_completes() {
    let (code, stdout, stderr) = run_in(
        &root(),
        &[
            "--llm",
            "mock",
            "run",
            "examples/ticket-triage.yaml",
            "--input",
            "ticket=I was charged twice",
            "--run-id",
            "demo",
        ],
        &[],
    );
    assert_eq!(code, 0, "{stdout}{stderr}");
    insta::assert_snapshot!(redact_times(&stdout));
}
