//! `McpTools` against a small MCP server the tests start
//! (`fixtures/mcp_server.py`): tools listed and called, failures sent to
//! the model or breaking the attempt, servers started per run or shared
//! and killed with their run.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use cairn_domain::id::RunId;
use cairn_domain::state::ErrorClass;
use cairn_mcp::{McpServer, McpTools};
use cairn_ports::{MockTools, ToolChoice, ToolError, ToolInvocation, ToolSpec, Tools};

fn fixture() -> String {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/mcp_server.py").display().to_string()
}

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("cairn-mcp-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("scratch dir");
    dir
}

fn server(pids: &Path, extra: &[&str]) -> McpServer {
    let mut command = vec!["python3".to_owned(), fixture()];
    command.extend(extra.iter().map(|s| (*s).to_owned()));
    McpServer {
        command,
        shared: false,
        env: vec![("MCP_FIXTURE_PIDS".into(), pids.display().to_string())],
        timeout: Duration::from_secs(30),
    }
}

/// Tools over an inner port that offers `read_file` and answers its calls.
fn tools(servers: &[(&str, McpServer)], dir: &Path) -> McpTools {
    let mut inner = MockTools::new();
    inner.expect_specs().returning(|_, choice| {
        assert!(choice.servers.is_empty(), "the inner tools are never asked for a server");
        Ok(choice
            .builtin
            .iter()
            .map(|n| ToolSpec {
                name: n.clone(),
                description: String::new(),
                parameters: serde_json::json!({}),
            })
            .collect())
    });
    inner.expect_call().returning(|call| Ok(format!("inner ran {}", call.name)));
    inner.expect_release().returning(|_| ());
    let servers = servers.iter().map(|(n, s)| ((*n).to_owned(), s.clone())).collect::<BTreeMap<_, _>>();
    McpTools::new(Arc::new(inner), servers, dir.to_path_buf())
}

fn run(id: &str) -> RunId {
    RunId::new(id).expect("run id")
}

fn choice(builtin: &[&str], servers: &[&str]) -> ToolChoice {
    ToolChoice {
        builtin: builtin.iter().map(|s| (*s).to_owned()).collect(),
        servers: servers.iter().map(|s| (*s).to_owned()).collect(),
    }
}

fn invocation(run_id: &str, name: &str, arguments: serde_json::Value) -> ToolInvocation {
    ToolInvocation {
        run: run(run_id),
        name: name.into(),
        arguments,
        idempotency_key: format!("{run_id}/act/1/r1/1"),
    }
}

fn pids(file: &Path) -> Vec<i32> {
    std::fs::read_to_string(file).unwrap_or_default().lines().filter_map(|l| l.parse().ok()).collect()
}

/// Whether `pid` runs (a zombie does not).
fn alive(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .is_ok_and(|stat| stat.rsplit_once(") ").is_some_and(|(_, rest)| !rest.starts_with('Z')))
}

/// Waits until `pid` no longer runs, for at most ten seconds.
async fn gone(pid: i32) -> bool {
    for _ in 0..200 {
        if !alive(pid) {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    false
}

#[tokio::test]
async fn a_servers_tools_are_offered_beside_the_builtin_ones_and_called() {
    let dir = scratch("offered");
    let tools = tools(&[("fx", server(&dir.join("pids"), &[]))], &dir);
    let specs = tools.specs(&run("r1"), &choice(&["read_file"], &["fx"])).await.expect("specs");
    let names: Vec<&str> = specs.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(names, ["read_file", "fx__echo", "fx__fail", "fx__hang", "fx__die", "fx__env"], "both pages");
    assert_eq!(specs[1].parameters["required"], serde_json::json!(["text"]));
    let echoed = tools.call(invocation("r1", "fx__echo", serde_json::json!({"text": "hi"}))).await;
    assert_eq!(echoed, Ok("hi (r1/act/1/r1/1)".into()), "the idempotency key reaches the server");
    let inner = tools.call(invocation("r1", "read_file", serde_json::json!({}))).await;
    assert_eq!(inner, Ok("inner ran read_file".into()));
    assert_eq!(pids(&dir.join("pids")).len(), 1, "one server for the run, started once");
    tools.release(&run("r1")).await;
}

#[tokio::test]
async fn what_a_server_refuses_goes_back_to_the_model() {
    let dir = scratch("refused");
    let tools = tools(&[("fx", server(&dir.join("pids"), &[]))], &dir);
    tools.specs(&run("r1"), &choice(&[], &["fx"])).await.expect("specs");
    let failed = tools.call(invocation("r1", "fx__fail", serde_json::json!({}))).await;
    assert_eq!(failed, Err(ToolError::Refused("the tracker is down".into())));
    let unknown = tools.call(invocation("r1", "fx__nope", serde_json::json!({}))).await;
    assert_eq!(unknown, Err(ToolError::Refused("MCP server `fx` has no tool `nope`".into())));
    tools.release(&run("r1")).await;
}

#[tokio::test]
async fn a_call_past_the_timeout_is_cancelled_and_refused_to_the_model() {
    let dir = scratch("timeout");
    // Long enough for the server (a Python process) to start on a busy
    // machine: the same limit bounds its start and each call.
    let config = McpServer { timeout: Duration::from_secs(3), ..server(&dir.join("pids"), &[]) };
    let tools = tools(&[("fx", config)], &dir);
    tools.specs(&run("r1"), &choice(&[], &["fx"])).await.expect("specs");
    let hung = tools.call(invocation("r1", "fx__hang", serde_json::json!({}))).await;
    assert_eq!(hung, Err(ToolError::Refused("`hang` of MCP server `fx`: no answer in time".into())));
    let echoed = tools.call(invocation("r1", "fx__echo", serde_json::json!({"text": "still here"}))).await;
    assert!(echoed.is_ok_and(|t| t.starts_with("still here")), "the server keeps serving");
    tools.release(&run("r1")).await;
}

#[tokio::test]
async fn a_server_that_dies_breaks_the_attempt_with_its_stderr_and_is_started_anew() {
    let dir = scratch("dies");
    let tools = tools(&[("fx", server(&dir.join("pids"), &[]))], &dir);
    tools.specs(&run("r1"), &choice(&[], &["fx"])).await.expect("specs");
    let died = tools.call(invocation("r1", "fx__die", serde_json::json!({}))).await;
    let Err(ToolError::Broken(error)) = died else { panic!("broken, not {died:?}") };
    assert_eq!(error.class, ErrorClass::Transient);
    assert_eq!(
        error.message,
        "MCP server `fx` stopped: it exited; its stderr ends: fixture listening\nfixture dying"
    );
    let echoed = tools.call(invocation("r1", "fx__echo", serde_json::json!({"text": "again"}))).await;
    assert!(echoed.is_ok_and(|t| t.starts_with("again")), "a new server answers");
    assert_eq!(pids(&dir.join("pids")).len(), 2);
    tools.release(&run("r1")).await;
}

#[tokio::test]
async fn a_runs_servers_are_killed_when_it_lets_go_and_a_shared_one_is_kept() {
    let dir = scratch("release");
    let shared = McpServer { shared: true, ..server(&dir.join("shared-pids"), &[]) };
    let tools = tools(&[("fx", server(&dir.join("pids"), &[])), ("sh", shared)], &dir);
    for id in ["a", "b"] {
        tools.specs(&run(id), &choice(&[], &["fx", "sh"])).await.expect("specs");
    }
    let (own, shared) = (pids(&dir.join("pids")), pids(&dir.join("shared-pids")));
    assert_eq!((own.len(), shared.len()), (2, 1), "one server per run, one shared");
    tools.release(&run("a")).await;
    assert!(gone(own[0]).await, "run a's server is killed");
    assert!(alive(own[1]) && alive(shared[0]), "run b's server and the shared one run on");
    let echoed = tools.call(invocation("b", "sh__echo", serde_json::json!({"text": "shared"}))).await;
    assert!(echoed.is_ok());
    tools.release(&run("b")).await;
    drop(tools);
    for pid in own.iter().chain(&shared) {
        assert!(gone(*pid).await, "{pid} is killed once nothing needs it");
    }
}

#[tokio::test]
async fn only_the_named_variables_reach_a_server_and_their_values_stay_out_of_errors() {
    let dir = scratch("env");
    let mut config = server(&dir.join("pids"), &[]);
    config.env.push(("TRACKER_TOKEN".into(), "tok-5ecret".into()));
    let tools = tools(&[("fx", config)], &dir);
    tools.specs(&run("r1"), &choice(&[], &["fx"])).await.expect("specs");
    let var = |name: &str| tools.call(invocation("r1", "fx__env", serde_json::json!({"name": name})));
    assert_eq!(var("TRACKER_TOKEN").await, Ok("tok-5ecret".into()));
    assert_eq!(
        var("CARGO_MANIFEST_DIR").await,
        Ok("<unset>".into()),
        "cairn's own environment is not passed"
    );
    assert!(var("PATH").await.is_ok_and(|p| p != "<unset>"));
    tools.release(&run("r1")).await;
}

#[tokio::test]
async fn a_server_that_cannot_start_or_speaks_another_version_is_an_error_naming_it() {
    let dir = scratch("start");
    let missing = McpServer { command: vec!["no-such-mcp-server".into()], ..server(&dir.join("pids"), &[]) };
    let old = server(&dir.join("pids"), &["--version", "1999-01-01"]);
    let tools = tools(&[("gone", missing), ("old", old)], &dir);
    let error = tools.specs(&run("r1"), &choice(&[], &["gone"])).await.expect_err("cannot start");
    assert!(
        error.message.starts_with("MCP server `gone` did not start: `no-such-mcp-server` could not start"),
        "{}",
        error.message
    );
    let error = tools.specs(&run("r1"), &choice(&[], &["old"])).await.expect_err("old version");
    assert!(error.message.contains("it speaks MCP version `1999-01-01`; cairn speaks"), "{}", error.message);
    let error = tools.specs(&run("r1"), &choice(&[], &["nope"])).await.expect_err("unknown");
    assert_eq!(
        (error.class, error.message.as_str()),
        (ErrorClass::Fatal, "no MCP server `nope` is configured")
    );
    tools.release(&run("r1")).await;
}
