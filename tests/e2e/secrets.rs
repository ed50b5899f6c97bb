//! Secrets through every error path of the real binary: configured keys
//! (`CAIRN_LLM_API_KEY`, a provider's `api_key_env`) and the credentials
//! of a base URL, against a server that echoes the `Authorization` header
//! in its 4xx and 5xx bodies, in a URL with `?key=`, in an error event of
//! its stream and in an answer. None of them may appear in what `run`,
//! `status` and `events` print (text and JSON), in any file of the data
//! directory, or in a recorded cassette. The store compresses its records
//! with a dictionary of its own, so its bytes are also read back through
//! `events --format jsonl` and `status --format json`, which show every
//! event and the folded state (snapshots included).

use crate::support::{LlmServer, cairn_env, fresh_data_dir, scratch};

const KEY: &str = "canary-XYZ-default-7f3a";
const OTHER_KEY: &str = "canary-XYZ-other-91c2";
const URL_PASSWORD: &str = "canary-XYZ-urlpass-5d";
const URL_KEY: &str = "canary-XYZ-urlkey-6e";
const CANARIES: [&str; 4] = [KEY, OTHER_KEY, URL_PASSWORD, URL_KEY];

/// One agent step per fault, each on its own, one at a time.
fn workflow() -> String {
    let mut wf = String::from(
        "cairn: 1\nid: leak\ndefaults:\n  max_parallel: 1\n  on_failure: continue\n  retry: { max_attempts: 1 }\nagents:\n  w: { system: Be brief. }\n  o: { system: Be brief., provider: other }\n  d: { system: Be brief., provider: down }\nsteps:\n",
    );
    let mut previous: Option<String> = None;
    for (i, agent) in ["w", "w", "w", "w", "w", "w", "w", "o", "d"].iter().enumerate() {
        let id = format!("s{i}");
        wf.push_str(&format!("  - id: {id}\n    agent: {agent}\n    prompt: \"question {i}\"\n"));
        if let Some(p) = &previous {
            wf.push_str(&format!("    needs: [{p}]\n"));
        }
        previous = Some(id);
    }
    wf
}

/// A close-delimited HTTP response.
fn raw(status: &str, content_type: &str, body: &str) -> String {
    format!("HTTP/1.1 {status}\r\ncontent-type: {content_type}\r\nconnection: close\r\n\r\n{body}")
}

fn error_body(message: &str) -> String {
    serde_json::json!({"error": {"message": message}}).to_string()
}

/// What the server does with the calls, in order: each echoes the key it
/// was sent (`{auth}`), or the key in a URL.
fn faults() -> Vec<String> {
    let json = "application/json";
    let answer = |text: &str| {
        let delta = serde_json::json!({"choices": [{"delta": {"content": text}}]});
        format!(
            "data: {delta}\n\ndata: {{\"choices\":[{{\"delta\":{{}},\"finish_reason\":\"stop\"}}]}}\n\ndata: [DONE]\n\n"
        )
    };
    vec![
        raw("400 Bad Request", json, &error_body("you sent Authorization: {auth}")),
        raw("500 Internal Server Error", json, &error_body("crashed reading {auth}")),
        raw("401 Unauthorized", json, &error_body("{auth} is not a key")),
        format!(
            "HTTP/1.1 429 Too Many Requests\r\nretry-after: 100000\r\ncontent-type: {json}\r\nconnection: close\r\n\r\n{}",
            error_body("slow down, {auth}")
        ),
        raw(
            "400 Bad Request",
            json,
            &error_body(&format!("upstream https://api.example/v1?key={KEY}&v=1 refused")),
        ),
        raw("200 OK", "text/event-stream", &format!("data: {}\n\n", error_body("stream broke on {auth}"))),
        raw("200 OK", "text/event-stream", &answer("you sent {auth}")),
        raw("200 OK", "text/event-stream", &answer("the other key is {auth}")),
    ]
}

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

fn leaked(bytes: &[u8]) -> Vec<&'static str> {
    CANARIES.into_iter().filter(|c| bytes.windows(c.len()).any(|w| w == c.as_bytes())).collect()
}

#[test]
fn no_secret_reaches_any_output_the_store_or_a_cassette() {
    if crate::support::skip_when_served(
        "`--llm` applies to the process that drives runs, not to a client of a server",
    ) {
        return;
    }
    let dir = scratch("secrets_canary");
    std::fs::write(dir.join("wf.yaml"), workflow()).expect("write");
    let server = LlmServer::with_faults(std::time::Duration::ZERO, faults());
    let closed = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        listener.local_addr().expect("addr")
    };
    let config = format!(
        "[providers.default]\nbase_url = \"{url}\"\nmodel = \"fake\"\n\n[providers.other]\nbase_url = \"{url}\"\napi_key_env = \"OTHER_KEY\"\nmodel = \"fake\"\n\n[providers.down]\nbase_url = \"http://user:{URL_PASSWORD}@{closed}/v1?key={URL_KEY}\"\nmodel = \"fake\"\n",
        url = server.url
    );
    std::fs::write(dir.join("cairn.toml"), config).expect("write");
    let data = fresh_data_dir();
    let data_text = data.to_str().expect("utf-8").to_owned();
    let env = [("CAIRN_LLM_API_KEY", KEY), ("OTHER_KEY", OTHER_KEY), ("CAIRN_DATA_DIR", data_text.as_str())];

    let run = cairn_env(&dir, &["--llm", "record:calls.jsonl", "run", "wf.yaml", "--run-id", "leak"], &env);
    assert_eq!(run.code, 1, "some steps fail, the run fails: {}{}", run.stdout, run.stderr);
    let mut printed = vec![run.stdout.clone(), run.stderr.clone()];
    for args in [
        &["status", "leak"][..],
        &["status", "leak", "--format", "json"],
        &["events", "leak"],
        &["events", "leak", "--format", "jsonl"],
        &["checkpoints", "leak", "--format", "json"],
        &["runs", "--format", "json"],
    ] {
        let out = cairn_env(&dir, args, &env);
        assert_eq!(out.code, 0, "{args:?}: {}", out.stderr);
        printed.extend([out.stdout, out.stderr]);
    }
    // A mistaken --llm with credentials in it is refused without showing them.
    let typo = format!("https://me:{URL_PASSWORD}@api.example/v1");
    let refused = cairn_env(&dir, &["--llm", &typo, "run", "wf.yaml"], &env);
    assert_eq!(refused.code, 2, "{}", refused.stderr);
    printed.extend([refused.stdout, refused.stderr]);

    let all_printed = printed.join("\n");
    assert_eq!(leaked(all_printed.as_bytes()), Vec::<&str>::new(), "printed:\n{all_printed}");
    let mut stored = Vec::new();
    all_bytes(&data, &mut stored);
    assert_eq!(leaked(&stored), Vec::<&str>::new(), "a file of the data directory holds a secret");
    let cassette = std::fs::read(dir.join("calls.jsonl")).expect("the cassette");
    assert_eq!(leaked(&cassette), Vec::<&str>::new(), "{}", String::from_utf8_lossy(&cassette));

    // Each path was taken, and shows what it said with the secret hidden.
    let events = cairn_env(&dir, &["events", "leak", "--format", "jsonl"], &env).stdout;
    for said in [
        "you sent Authorization: Bearer ***",
        "crashed reading Bearer ***",
        "Bearer *** is not a key",
        "slow down, Bearer ***",
        "it asks to wait 1d3h46m40s",
        "https://api.example/v1?key=***&v=1",
        "stream broke on Bearer ***",
        "you sent Bearer ***",
        "the other key is Bearer ***",
        "http://***@",
    ] {
        assert!(events.contains(said), "{said:?} is not in the events:\n{events}");
    }
    assert_eq!(String::from_utf8_lossy(&cassette).lines().count(), 2, "the two answers were recorded");
}

#[test]
fn a_cassette_that_cannot_be_written_is_refused_before_a_run_exists() {
    let dir = scratch("secrets_record_refused");
    std::fs::write(dir.join("wf.yaml"), workflow()).expect("write");
    let server = LlmServer::start(std::time::Duration::ZERO);
    let data = fresh_data_dir();
    let data_text = data.to_str().expect("utf-8").to_owned();
    let env = [
        ("CAIRN_LLM_BASE_URL", server.url.as_str()),
        ("CAIRN_LLM_MODEL", "fake"),
        ("CAIRN_DATA_DIR", data_text.as_str()),
    ];
    for cassette in ["record:no-such-dir/calls.jsonl", "record:."] {
        let out = cairn_env(&dir, &["--llm", cassette, "run", "wf.yaml", "--run-id", "r"], &env);
        assert_eq!(out.code, 2, "{cassette}: {}", out.stderr);
        assert!(out.stderr.contains("--llm record:"), "{}", out.stderr);
        assert!(!data.exists(), "{cassette}: no store, no run");
    }
    assert!(server.calls().is_empty(), "no model was called");
}
