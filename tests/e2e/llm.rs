//! LLM calls through the binary: record a run's calls against a loopback
//! server, replay them with no server at all, and a canary key that must
//! appear nowhere cairn writes.

use crate::support::{LlmServer, cairn_env, fresh_data_dir, scratch};

const WF: &str = "cairn: 1\nid: ask\ninputs:\n  topic: string\nagents:\n  w: { system: Be brief. }\nsteps:\n  - id: ask\n    agent: w\n    prompt: \"Tell me about {{ inputs.topic }}\"\n  - id: more\n    agent: w\n    prompt: \"And more: {{ steps.ask.output }}\"\n";

const CANARY: &str = "sk-canary-7f3a9d1e";

/// Every file under `dir`, as bytes.
fn all_bytes(dir: &std::path::Path, out: &mut Vec<u8>) {
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let path = entry.path();
        if path.is_dir() {
            all_bytes(&path, out);
        } else if let Ok(bytes) = std::fs::read(&path) {
            out.extend_from_slice(&bytes);
        }
    }
}

#[test]
fn recorded_calls_replay_without_a_network_and_the_key_is_written_nowhere() {
    let dir = scratch("llm_record");
    std::fs::write(dir.join("wf.yaml"), WF).expect("write");
    let server = LlmServer::start(std::time::Duration::ZERO);
    let data = fresh_data_dir();
    let data_text = data.to_str().expect("utf-8").to_owned();
    let env = [
        ("CAIRN_LLM_BASE_URL", server.url.as_str()),
        ("CAIRN_LLM_API_KEY", CANARY),
        ("CAIRN_LLM_MODEL", "fake"),
        ("CAIRN_DATA_DIR", data_text.as_str()),
    ];
    let args = ["--llm", "record:calls.jsonl", "run", "wf.yaml", "--input", "topic=owls", "--run-id", "rec"];
    let recorded = cairn_env(&dir, &args, &env);
    assert_eq!(recorded.code, 0, "{}{}", recorded.stdout, recorded.stderr);
    let events = cairn_env(&dir, &["events", "rec", "--format", "jsonl"], &env);

    // The canary key went only into the request headers.
    let mut written = Vec::new();
    all_bytes(&data, &mut written);
    let cassette = std::fs::read(dir.join("calls.jsonl")).expect("the cassette");
    written.extend_from_slice(&cassette);
    for text in [&recorded.stdout, &recorded.stderr, &events.stdout] {
        written.extend_from_slice(text.as_bytes());
    }
    let canary = CANARY.as_bytes();
    assert!(!written.windows(canary.len()).any(|w| w == canary), "the key was written somewhere");
    assert_eq!(String::from_utf8_lossy(&cassette).lines().count(), 2);

    // Replayed: no server, no key, the same answers.
    let replayed = cairn_env(
        &dir,
        &[
            "--llm",
            "replay:calls.jsonl",
            "run",
            "wf.yaml",
            "--input",
            "topic=owls",
            "--run-id",
            "rep",
            "--format",
            "json",
        ],
        &[],
    );
    assert_eq!(replayed.code, 0, "{}", replayed.stderr);
    let run: serde_json::Value = serde_json::from_str(&replayed.stdout).expect("json");
    assert_eq!(run["steps"][0]["output"], "answer for rec/ask/1", "the recorded answer, not a new one");
    assert_eq!(run["steps"][1]["output"], "answer for rec/more/1");

    // A request the cassette never saw fails clearly.
    let missed =
        cairn_env(&dir, &["--llm", "replay:calls.jsonl", "run", "wf.yaml", "--input", "topic=bats"], &[]);
    assert_eq!(missed.code, 1);
    assert!(
        missed.stdout.contains("has no answer to this request") && missed.stdout.contains("bats"),
        "{}",
        missed.stdout
    );
}

#[test]
fn a_run_against_a_loopback_server_streams_keeps_sessions_and_counts_usage() {
    let dir = scratch("llm_stream");
    let wf = "cairn: 1\nid: chat\nagents:\n  w: { system: Be brief., session: reuse }\nsteps:\n  - id: plan\n    agent: w\n    prompt: Plan it.\n    output:\n      format: json\n      schema: { type: object, required: [answer], properties: { answer: { type: string } } }\n  - id: build\n    agent: w\n    prompt: \"Build {{ steps.plan.output.answer }}\"\n";
    std::fs::write(dir.join("wf.yaml"), wf).expect("write");
    let server = LlmServer::start(std::time::Duration::ZERO);
    let env = [("CAIRN_LLM_BASE_URL", server.url.as_str()), ("CAIRN_LLM_MODEL", "fake")];
    let run = cairn_env(&dir, &["run", "wf.yaml", "--run-id", "s1", "--format", "json"], &env);
    assert_eq!(run.code, 0, "{}", run.stderr);
    let run: serde_json::Value = serde_json::from_str(&run.stdout).expect("json");
    assert_eq!(run["steps"][0]["output"], serde_json::json!({"answer": "answer for s1/plan/1"}));
    assert_eq!(run["steps"][1]["output"], "answer for s1/build/1", "streamed in pieces, read whole");
    assert_eq!(run["usage"]["prompt_tokens"], 6);
    assert_eq!(run["usage"]["estimated"], false);
    assert_eq!(run["steps"][1]["usage"]["completion_tokens"], 4);
}

fn status(code: &str, headers: &str, body: &str) -> String {
    format!(
        "HTTP/1.1 {code}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n{headers}connection: close\r\n\r\n{body}",
        body.len()
    )
}

fn events(events: &[&str]) -> String {
    let mut out =
        "HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\nconnection: close\r\n\r\n".to_owned();
    for e in events {
        out.push_str(&format!("data: {e}\n\n"));
    }
    out
}

const FAULTY: &str = "cairn: 1\nid: faulty\nagents:\n  w: { system: Be brief. }\ndefaults:\n  retry: { max_attempts: 8, delay: 10ms, max_delay: 20ms, jitter: false, on: [transient, rate_limited, timeout] }\nsteps:\n  - id: ask\n    agent: w\n    prompt: Hello?\n";

#[test]
fn every_fault_kind_through_a_real_run_is_retried_or_fails_with_its_class() {
    let dir = scratch("llm_faults");
    std::fs::write(dir.join("wf.yaml"), FAULTY).expect("write");
    let partial = r#"{"choices":[{"delta":{"content":"half an ans"}}]}"#;
    let retried = vec![
        status("429 Too Many Requests", "retry-after-ms: 30\r\n", r#"{"error":{"message":"slow down"}}"#),
        status("502 Bad Gateway", "", "{}"),
        events(&[partial]),
        events(&[partial, r#"{"error":{"message":"overloaded"}}"#]),
        status("200 OK", "", "{not json"),
        String::new(),
    ];
    let server = LlmServer::with_faults(std::time::Duration::ZERO, retried);
    let data = fresh_data_dir();
    let data = data.to_str().expect("utf-8");
    let env =
        [("CAIRN_LLM_BASE_URL", server.url.as_str()), ("CAIRN_LLM_MODEL", "fake"), ("CAIRN_DATA_DIR", data)];
    let run = cairn_env(&dir, &["run", "wf.yaml", "--run-id", "f1", "--format", "json"], &env);
    assert_eq!(run.code, 0, "{}", run.stderr);
    let json: serde_json::Value = serde_json::from_str(&run.stdout).expect("json");
    assert_eq!(json["steps"][0]["attempts"], 7);
    assert_eq!(
        json["steps"][0]["output"], "answer for f1/ask/7",
        "the partial answers were discarded, not glued"
    );
    let log = cairn_env(&dir, &["events", "f1"], &env);
    assert_eq!(log.code, 0, "{}", log.stderr);
    let failures: Vec<String> = log
        .stdout
        .lines()
        .filter(|l| l.contains("step_failed"))
        .map(|l| {
            l.split_once("attempt ")
                .map(|(_, rest)| rest.split(" (retry at").next().unwrap_or(rest).to_owned())
                .unwrap_or_default()
        })
        .collect();
    let failures = failures.join("\n").replace(server.url.as_str(), "http://127.0.0.1:PORT/v1");
    insta::assert_snapshot!("retried_faults", failures);

    let mut fatal = Vec::new();
    for (name, fault) in [
        ("400", status("400 Bad Request", "", r#"{"error":{"message":"model not found"}}"#)),
        ("401", status("401 Unauthorized", "", r#"{"error":{"message":"bad key"}}"#)),
        (
            "quota",
            status(
                "429 Too Many Requests",
                "",
                r#"{"error":{"message":"quota","code":"insufficient_quota"}}"#,
            ),
        ),
    ] {
        let server = LlmServer::with_faults(std::time::Duration::ZERO, vec![fault]);
        let env = [("CAIRN_LLM_BASE_URL", server.url.as_str()), ("CAIRN_LLM_MODEL", "fake")];
        let run = cairn_env(&dir, &["run", "wf.yaml", "--format", "json"], &env);
        assert_eq!(run.code, 1, "{name}: {}", run.stderr);
        let json: serde_json::Value = serde_json::from_str(&run.stdout).expect("json");
        assert_eq!(json["steps"][0]["attempts"], 1, "{name}: not retried");
        fatal.push(format!("{name}: {} / hint: {}", json["error"]["message"], json["error"]["hint"]));
    }
    insta::assert_snapshot!("failing_faults", fatal.join("\n"));
}

/// The examples' cassettes (`examples/cassettes/*.answers.json` say which
/// runs they hold) replay through the binary with no network; the test
/// fails once an example changes what it asks and its cassette is stale
/// (`cargo xtask cassettes` records it again).
#[test]
fn the_examples_cassettes_replay_offline() {
    let root = crate::support::root();
    let mut names: Vec<String> = std::fs::read_dir(root.join("examples/cassettes"))
        .expect("examples/cassettes")
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.strip_suffix(".answers.json").map(str::to_owned))
        .collect();
    names.sort();
    assert!(names.len() >= 2, "ticket-triage and product-discovery at least: {names:?}");
    for name in names {
        let spec_path = root.join(format!("examples/cassettes/{name}.answers.json"));
        let spec: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&spec_path).expect("answers")).expect("json");
        let cassette = format!("replay:examples/cassettes/{name}.jsonl");
        let data = fresh_data_dir();
        let data_text = data.to_str().expect("utf-8");
        let runs = spec["runs"].as_array().expect("runs");
        let mut last = None;
        for args in runs {
            let args: Vec<&str> = args.as_array().expect("args").iter().filter_map(|a| a.as_str()).collect();
            let mut all = vec!["--llm", cassette.as_str()];
            all.extend(&args);
            let run = cairn_env(&root, &all, &[("CAIRN_DATA_DIR", data_text)]);
            assert!(matches!(run.code, 0 | 3), "{name}: {args:?}: {}{}", run.stdout, run.stderr);
            last = Some(run.code);
        }
        assert_eq!(last, Some(0), "{name}: the last recorded command completes the run");
        let id = runs[0].as_array().and_then(|a| a.last()).and_then(|v| v.as_str()).expect("a run id");
        let status = cairn_env(&root, &["status", id, "--format", "json"], &[("CAIRN_DATA_DIR", data_text)]);
        let run: serde_json::Value = serde_json::from_str(&status.stdout).expect("json");
        assert_eq!(run["status"], "completed", "{name}");
        // Every answer the cassette holds went to the step it was written
        // for (a text answer after a round of tool calls, `PATH/rN`, too).
        for (name, answer) in spec["answers"].as_object().expect("answers") {
            if !answer.is_string() {
                continue;
            }
            let path = name
                .rsplit_once("/r")
                .filter(|(_, r)| r.parse::<u32>().is_ok())
                .map_or(name.as_str(), |(p, _)| p);
            let step = run["steps"].as_array().expect("steps").iter().find(|s| s["path"] == path);
            let output = step.map(|s| &s["output"]).unwrap_or_else(|| panic!("{name}: no step {path}"));
            let text = output.as_str().map(str::to_owned).unwrap_or_else(|| output.to_string());
            let expected = serde_json::from_str::<serde_json::Value>(answer.as_str().expect("text"))
                .map_or_else(|_| answer.as_str().expect("text").to_owned(), |v| v.to_string());
            assert_eq!(text, expected, "{name}: {path}");
        }
    }
}
