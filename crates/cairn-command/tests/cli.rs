//! Coding-agent CLIs as providers, against stand-in executables
//! (`fixtures/cli/`) that print each CLI's documented output: the answer,
//! its live tokens, usage and cost read from it; failures classed; the
//! fence and the timeout hold.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use cairn_command::{CliFormat, CliProvider, CliSettings, CommandPolicy, DEFAULT_MAX_OUTPUT, LocalCommands};
use cairn_domain::state::ErrorClass;
use cairn_ports::{
    ChatMessage, ChatRequest, ChatResponse, LlmProvider, PortError, ResponseFormat, Role, TokenSink, ToolSpec,
};

fn stand_in(name: &str) -> String {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/cli").join(name).display().to_string()
}

/// A fresh folder the CLI runs in (the fence's one root).
fn workspace(name: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("cli").join(name);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("workspace");
    dir
}

/// A provider running the stand-in `program` as `format`, allowed by the fence.
fn provider(dir: &Path, format: CliFormat, program: &str) -> CliProvider {
    timed(dir, format, program, Duration::from_secs(60))
}

/// [`provider`], with a call's time limit.
fn timed(dir: &Path, format: CliFormat, program: &str, timeout: Duration) -> CliProvider {
    let policy = CommandPolicy {
        allow: vec![stand_in(program)],
        roots: vec![dir.to_path_buf()],
        max_output: DEFAULT_MAX_OUTPUT,
    };
    let settings = CliSettings {
        name: "agent".into(),
        format,
        command: vec![stand_in(program)],
        model: None,
        timeout,
        env: Vec::new(),
    };
    CliProvider::new(Arc::new(LocalCommands::new(policy, dir).expect("root exists")), settings)
}

fn request(model: Option<&str>, format: ResponseFormat) -> ChatRequest {
    ChatRequest {
        model: model.map(str::to_owned),
        messages: vec![
            ChatMessage::new(Role::System, "You are terse."),
            ChatMessage::new(Role::User, "Say hello."),
        ],
        temperature: None,
        max_tokens: None,
        format,
        tools: Vec::new(),
        idempotency_key: "r1/greet/1".into(),
        tokens: None,
    }
}

/// Calls `provider`, collecting the tokens it streamed.
async fn chat(
    provider: &CliProvider,
    mut request: ChatRequest,
) -> (Result<ChatResponse, PortError>, Vec<String>) {
    let tokens = Arc::new(Mutex::new(Vec::new()));
    let sink = Arc::clone(&tokens);
    request.tokens = Some(TokenSink(Arc::new(move |piece: &str| {
        sink.lock().expect("tokens").push(piece.to_owned());
    })));
    let answer = provider.chat(request).await;
    let tokens = tokens.lock().expect("tokens").clone();
    (answer, tokens)
}

fn read(dir: &Path, file: &str) -> String {
    std::fs::read_to_string(dir.join(file)).unwrap_or_default()
}

#[tokio::test]
async fn claude_code_streams_tokens_and_reports_usage_cost_and_model() {
    let dir = workspace("claude");
    let (answer, tokens) =
        chat(&provider(&dir, CliFormat::ClaudeCode, "claude"), request(Some("sonnet"), ResponseFormat::Text))
            .await;
    let answer = answer.expect("answered");
    assert_eq!(answer.text, "Hello");
    assert_eq!(tokens, ["Hel", "lo"], "the deltas, not the whole message again");
    assert_eq!((answer.usage.prompt_tokens, answer.usage.completion_tokens), (3 + 1520 + 12800, 4));
    assert_eq!(answer.usage.cost_micro_usd, Some(9609));
    assert!(!answer.usage.estimated);
    assert_eq!(answer.model, "claude-sonnet-4-5-20250929");
    assert_eq!(
        read(&dir, "args.txt"),
        "-p --output-format stream-json --verbose --include-partial-messages --model sonnet\n"
    );
    assert_eq!(read(&dir, "prompt.txt"), "You are terse.\n\nSay hello.", "the prompt on stdin, system first");
}

#[tokio::test]
async fn codex_answers_with_its_last_message_and_usage() {
    let dir = workspace("codex");
    let (answer, tokens) =
        chat(&provider(&dir, CliFormat::Codex, "codex"), request(Some("gpt-5-codex"), ResponseFormat::Text))
            .await;
    let answer = answer.expect("answered");
    assert_eq!(
        (answer.text.as_str(), tokens.as_slice()),
        ("Hello from codex", ["Hello from codex".to_owned()].as_slice())
    );
    assert_eq!(
        (answer.usage.prompt_tokens, answer.usage.completion_tokens, answer.usage.cost_micro_usd),
        (8412, 21, None)
    );
    assert_eq!(answer.model, "gpt-5-codex", "codex names no model: the one asked for");
    assert_eq!(read(&dir, "args.txt"), "exec --json --skip-git-repo-check -m gpt-5-codex -\n");
}

#[tokio::test]
async fn gemini_streams_its_deltas_and_reports_usage_and_model() {
    let dir = workspace("gemini");
    let schema = serde_json::json!({"type": "object", "required": ["greeting"]});
    let (answer, tokens) =
        chat(&provider(&dir, CliFormat::Gemini, "gemini"), request(None, ResponseFormat::JsonSchema(schema)))
            .await;
    let answer = answer.expect("answered");
    assert_eq!(answer.text, "Hello from gemini");
    assert_eq!(tokens, ["Hello from", " gemini"]);
    assert_eq!((answer.usage.prompt_tokens, answer.usage.completion_tokens), (5210, 2));
    assert_eq!(answer.model, "gemini-2.5-flash");
    assert_eq!(read(&dir, "args.txt"), "--output-format stream-json\n");
    let prompt = read(&dir, "prompt.txt");
    assert!(
        prompt.ends_with(
            r#"matches this JSON Schema, and nothing else:
{"type":"object","required":["greeting"]}"#
        ),
        "{prompt}"
    );
}

#[tokio::test]
async fn a_plain_program_answers_on_stdout_with_estimated_usage() {
    let dir = workspace("plain");
    let (answer, tokens) =
        chat(&provider(&dir, CliFormat::Plain, "plain-agent"), request(None, ResponseFormat::Text)).await;
    let answer = answer.expect("answered");
    assert_eq!(answer.text, "I read 5 words.\nThat is all.");
    assert_eq!(tokens, ["I read 5 words.\n", "That is all.\n"]);
    assert!(answer.usage.estimated);
    assert_eq!(answer.model, stand_in("plain-agent"), "no model named: the program");
}

#[tokio::test]
async fn failures_the_clis_report_are_classed_by_what_they_say() {
    let cases = [
        (CliFormat::ClaudeCode, "claude-failing", ErrorClass::RateLimited, "API Error: 429 rate_limit_error"),
        (CliFormat::Codex, "codex-failing", ErrorClass::Permission, "unexpected status 401 Unauthorized"),
        (CliFormat::Gemini, "gemini-failing", ErrorClass::RateLimited, "Quota exceeded"),
        (CliFormat::ClaudeCode, "plain-agent", ErrorClass::InvalidOutput, "ended without an answer"),
    ];
    for (format, program, class, says) in cases {
        let dir = workspace(program);
        let (answer, _) = chat(&provider(&dir, format, program), request(None, ResponseFormat::Text)).await;
        let error = answer.expect_err(program);
        assert_eq!(error.class, class, "{program}: {}", error.message);
        assert!(error.message.starts_with("provider `agent`: "), "{}", error.message);
        assert!(error.message.contains(says), "{program}: {}", error.message);
    }
}

#[tokio::test]
async fn a_cli_past_its_timeout_is_killed_with_what_it_started() {
    let dir = workspace("hanging");
    let provider = timed(&dir, CliFormat::Plain, "hanging-agent", Duration::from_millis(500));
    let (answer, _) = chat(&provider, request(None, ResponseFormat::Text)).await;
    let error = answer.expect_err("timed out");
    assert_eq!(error.class, ErrorClass::Timeout, "{}", error.message);
    let child: i32 = read(&dir, "child.pid").trim().parse().expect("the agent's child wrote its pid");
    let mut gone = false;
    for _ in 0..200 {
        let stat = std::fs::read_to_string(format!("/proc/{child}/stat")).unwrap_or_default();
        if stat.rsplit_once(") ").is_none_or(|(_, rest)| rest.starts_with('Z')) {
            gone = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(gone, "the agent's child process is killed too");
}

#[tokio::test]
async fn the_fence_refuses_a_cli_not_allowed_and_agent_tools_are_refused() {
    let dir = workspace("fence");
    let policy = CommandPolicy { allow: vec![], roots: vec![dir.clone()], max_output: DEFAULT_MAX_OUTPUT };
    let settings = CliSettings {
        name: "agent".into(),
        format: CliFormat::ClaudeCode,
        command: Vec::new(),
        model: None,
        timeout: Duration::from_secs(60),
        env: Vec::new(),
    };
    let fenced = CliProvider::new(Arc::new(LocalCommands::new(policy, &dir).expect("root")), settings);
    let error = fenced.chat(request(None, ResponseFormat::Text)).await.expect_err("not allowed");
    assert_eq!(error.class, ErrorClass::Permission);
    assert!(error.message.contains("`claude` is not an allowed program"), "{}", error.message);
    let mut with_tools = request(None, ResponseFormat::Text);
    with_tools.tools = vec![ToolSpec {
        name: "read_file".into(),
        description: String::new(),
        parameters: serde_json::json!({}),
    }];
    let error = provider(&dir, CliFormat::ClaudeCode, "claude").chat(with_tools).await.expect_err("tools");
    assert_eq!(error.class, ErrorClass::Fatal);
    assert!(error.message.contains("calls its own tools"), "{}", error.message);
}
