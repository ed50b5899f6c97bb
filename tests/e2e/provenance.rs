//! Who did what to a run, and what is left to do about it: a fork's
//! origin and inherited usage, a budget raised with its actor, a run whose
//! driver stopped, refusals that name the verb asked, and verbs that only
//! read creating nothing.

use serde_json::Value;

use crate::steer::{CHAIN, Driver, cairn_at, setup};
use crate::support::{cairn_env, scratch};

fn json(text: &str) -> Value {
    serde_json::from_str(text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"))
}

fn events(dir: &std::path::Path, data: &std::path::Path, run: &str) -> Vec<Value> {
    let (code, out, err) = cairn_at(dir, data, &["events", run, "--format", "jsonl"]);
    assert_eq!(code, 0, "{err}");
    out.lines().map(json).collect()
}

fn tokens(usage: &Value) -> u64 {
    usage["prompt_tokens"].as_u64().unwrap_or(0) + usage["completion_tokens"].as_u64().unwrap_or(0)
}

#[test]
fn a_second_ctrl_c_stops_at_once_and_status_says_nobody_drives_the_run() {
    if crate::support::skip_when_served("Ctrl-C reaches the process that drives the run") {
        return;
    }
    let (dir, data) = setup("prov_ctrl_c");
    // Each step takes 30 s: only the second Ctrl-C can end the process soon.
    let driver = Driver::start_with(&dir, &data, "i2", "30s");
    driver.wait_for("▸ a");
    let pid = nix::unistd::Pid::from_raw(driver.child.id() as i32);
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGINT).expect("SIGINT");
    driver.wait_for("cairn resume i2");
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGINT).expect("SIGINT");
    assert_eq!(driver.exit_code(), 130, "the second Ctrl-C exits at once");

    let (code, text, _) = cairn_at(&dir, &data, &["status", "i2"]);
    assert_eq!(code, 0, "{text}");
    assert!(text.contains("nobody drives it"), "{text}");
    assert!(text.contains("`cairn resume i2`"), "{text}");
    let (_, run, _) = cairn_at(&dir, &data, &["status", "i2", "--format", "json"]);
    let run = json(&run);
    assert_eq!((run["status"].as_str(), run["driven"].as_bool()), (Some("running"), Some(false)));
    let (_, table, note) = cairn_at(&dir, &data, &["runs"]);
    assert!(table.contains("running (no driver)"), "{table}");
    assert!(note.contains("`cairn resume i2` goes on"), "{note}");

    let (code, _, err) = cairn_at(&dir, &data, &["--llm", "mock", "resume", "i2"]);
    assert_eq!(code, 0, "resume carries it to the end: {err}");
}

#[test]
fn a_fork_records_its_source_and_shows_the_source_usage_as_inherited() {
    let (dir, data) = setup("prov_fork");
    let (code, _, err) = cairn_at(&dir, &data, &["--llm", "mock", "run", "wf.yaml", "--run-id", "src"]);
    assert_eq!(code, 0, "{err}");
    let (_, marks, _) = cairn_at(&dir, &data, &["checkpoints", "src", "--format", "json"]);
    let after_a = json(&marks)[0]["seq"].as_u64().expect("a checkpoint after a");
    let r = cairn_env(
        &dir,
        &["fork", "src", "--checkpoint", &after_a.to_string(), "--format", "json"],
        &[("CAIRN_DATA_DIR", data.to_str().expect("utf-8")), ("USER", "forker")],
    );
    assert_eq!(r.code, 0, "{}", r.stderr);
    let fork = json(&r.stdout);
    let id = fork["run_id"].as_str().expect("an id").to_owned();
    assert_eq!(fork["forked_from"], serde_json::json!({"run_id": "src", "checkpoint": after_a}));
    assert_eq!(tokens(&fork["usage"]), 0, "the source's tokens are not the fork's");
    assert!(tokens(&fork["inherited_usage"]) > 0, "{}", fork["inherited_usage"]);

    let log = events(&dir, &data, &id);
    let source = events(&dir, &data, "src");
    for (copied, original) in log.iter().zip(&source).skip(1).take(after_a as usize - 1) {
        assert_eq!((&copied["actor"], &copied["at"]), (&original["actor"], &original["at"]), "{copied}");
    }
    let forked = &log[after_a as usize];
    assert_eq!((forked["type"].as_str(), forked["actor"].as_str()), (Some("run_forked"), Some("forker")));
    assert_eq!((forked["source"].as_str(), forked["checkpoint"].as_u64()), (Some("src"), Some(after_a)));

    let (code, _, err) = cairn_at(&dir, &data, &["--llm", "mock", "resume", &id]);
    assert_eq!(code, 0, "{err}");
    let (_, done, _) = cairn_at(&dir, &data, &["status", &id, "--format", "json"]);
    let (_, whole, _) = cairn_at(&dir, &data, &["status", "src", "--format", "json"]);
    let (done, whole) = (json(&done), json(&whole));
    assert_eq!(
        tokens(&done["usage"]) + tokens(&done["inherited_usage"]),
        tokens(&whole["usage"]),
        "the fork ran b and c again: its own usage and the inherited one make the source's"
    );
    let (_, listed, _) = cairn_at(&dir, &data, &["runs", "--format", "json"]);
    let listed = json(&listed);
    let fork_row = listed.as_array().and_then(|rows| rows.iter().find(|r| r["run_id"] == id.as_str()));
    assert_eq!(fork_row.map(|r| tokens(&r["usage"])), Some(tokens(&done["usage"])), "{listed}");
}

const BUDGETED: &str = "cairn: 1\nid: budgeted\ndefaults: { budget_usd: 0.000001 }\nagents:\n  w: { system: hi }\nsteps:\n  - id: a\n    agent: w\n    prompt: one\n  - id: b\n    agent: w\n    prompt: two\n";

#[test]
fn a_spent_budget_is_raised_by_resume_and_recorded_with_who_raised_it() {
    let dir = scratch("prov_budget");
    std::fs::write(dir.join("wf.yaml"), BUDGETED).expect("write");
    std::fs::write(dir.join("cairn.toml"), "[prices.mock]\nprompt = 1000.0\ncompletion = 1000.0\n")
        .expect("write");
    let data = crate::support::fresh_data_dir();
    let (code, text, err) = cairn_at(&dir, &data, &["--llm", "mock", "run", "wf.yaml", "--run-id", "b1"]);
    assert_eq!(code, 3, "blocked by the spent budget: {text}{err}");
    assert!(text.contains("`cairn resume b1 --budget-usd USD`"), "{text}");

    let (code, _, err) =
        cairn_at(&dir, &data, &["--llm", "mock", "resume", "b1", "--budget-usd", "0.0000005"]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("cannot resume run `b1`: its budget is $0.00: a new one must be larger"), "{err}");
    assert!(err.contains("--budget-usd"), "{err}");

    let (code, _, err) =
        cairn_at(&dir, &data, &["--llm", "mock", "resume", "b1", "--budget-usd", "100", "--by", "alice"]);
    assert_eq!(code, 0, "{err}");
    let raised: Vec<Value> =
        events(&dir, &data, "b1").into_iter().filter(|e| e["type"] == "budget_raised").collect();
    assert_eq!(raised.len(), 1);
    assert_eq!((raised[0]["actor"].as_str(), raised[0]["budget_usd"].as_f64()), (Some("alice"), Some(100.0)));
    let (_, run, _) = cairn_at(&dir, &data, &["status", "b1", "--format", "json"]);
    assert_eq!(json(&run)["budget_usd"].as_f64(), Some(100.0));
}

#[test]
fn deciding_on_an_ended_run_names_the_verb_and_the_status_as_a_word() {
    let (dir, data) = setup("prov_ended");
    let (code, _, err) = cairn_at(&dir, &data, &["--llm", "mock", "run", "wf.yaml", "--run-id", "over"]);
    assert_eq!(code, 0, "{err}");
    for verb in ["approve", "reject"] {
        let (code, _, err) = cairn_at(&dir, &data, &[verb, "over"]);
        assert_eq!(code, 2);
        assert!(
            err.starts_with(&format!("error: cannot {verb} run `over`: it has ended (completed)\n")),
            "{err}"
        );
    }
    let (code, _, err) = cairn_at(&dir, &data, &["answer", "over", "--text", "yes"]);
    assert_eq!(code, 2);
    assert!(err.starts_with("error: cannot answer run `over`: it has ended (completed)\n"), "{err}");
}

#[test]
fn verbs_that_only_read_create_no_data_directory_and_path_errors_name_the_path() {
    if crate::support::skip_when_served("a server made the data directory") {
        return;
    }
    let dir = scratch("prov_reading");
    std::fs::write(dir.join("wf.yaml"), CHAIN).expect("write");
    let data = dir.join("nowhere");
    let at = |args: &[&str]| cairn_at(&dir, &data, args);
    let (code, out, err) = at(&["runs", "--format", "json"]);
    assert_eq!((code, json(&out)), (0, serde_json::json!([])), "{err}");
    let (code, _, err) = at(&["status", "r1"]);
    assert_eq!(code, 2);
    assert!(err.contains("no run `r1`"), "{err}");
    for verb in ["events", "checkpoints"] {
        assert_eq!(at(&[verb, "r1"]).0, 2);
    }
    assert!(!data.exists(), "reading created {}", data.display());

    // Settings only driving uses never stop a verb that reads.
    std::fs::write(dir.join("cairn.toml"), "[commands]\nroots = [\"gone\"]\n").expect("write");
    let env = [("CAIRN_DATA_DIR", data.to_str().expect("utf-8")), ("CAIRN_LLM_BASE_URL", "not a url")];
    let r = cairn_env(&dir, &["runs"], &env);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let r = cairn_env(&dir, &["--llm", "mock", "run", "wf.yaml"], &env);
    assert_eq!(r.code, 2, "driving does read them: {}", r.stderr);
    assert!(r.stderr.contains("gone"), "{}", r.stderr);
    std::fs::remove_file(dir.join("cairn.toml")).expect("remove");

    let file = dir.join("a-file");
    std::fs::write(&file, "not a directory").expect("write");
    let (code, _, err) = cairn_at(&dir, &file, &["--llm", "mock", "run", "wf.yaml"]);
    assert_eq!(code, 2);
    assert!(
        err.contains(&format!("the data directory `{}` is a file, not a directory", file.display())),
        "{err}"
    );
}

const GATED: &str = "cairn: 1\nid: gated\nagents:\n  w: { system: hi }\nsteps:\n  - id: go\n    approval: { message: Go? }\n  - id: a\n    agent: w\n    prompt: one\n    needs: [go]\n";

#[test]
fn status_says_what_going_on_from_here_needs_and_runs_says_which_run_has_no_driver() {
    if crate::support::skip_when_served("a server drives every run it holds") {
        return;
    }
    let dir = scratch("prov_needs");
    std::fs::write(dir.join("wf.yaml"), GATED).expect("write");
    let data = crate::support::fresh_data_dir();
    let (code, _, err) =
        cairn_at(&dir, &data, &["--llm", "mock", "run", "wf.yaml", "--run-id", "g1", "--non-interactive"]);
    assert_eq!(code, 3, "{err}");
    let (code, text, err) = cairn_at(&dir, &data, &["status", "g1"]);
    assert_eq!(code, 0, "{err}");
    assert!(text.contains("cairn approve g1"), "{text}");
    assert!(
        err.contains("note: to go on from here, run `g1` needs what this process lacks: provider `default`"),
        "{err}"
    );
    assert!(err.contains("--llm mock"), "{err}");
    let (_, _, quiet) = cairn_at(&dir, &data, &["-q", "status", "g1"]);
    assert_eq!(quiet, "", "-q keeps notes off stderr");
    let (_, _, mocked) = cairn_at(&dir, &data, &["--llm", "mock", "status", "g1"]);
    assert!(!mocked.contains("note:"), "this process could go on: {mocked}");
}

const TWO_GATES: &str = "cairn: 1\nid: two\ninputs:\n  year: { type: string }\nsteps:\n  - id: legal\n    approval: { message: Legal? }\n  - id: ops\n    needs: []\n    approval: { message: Ops? }\n";

#[test]
fn every_waiting_gate_is_listed_and_a_string_input_keeps_a_number_as_text() {
    let dir = scratch("prov_gates");
    std::fs::write(dir.join("wf.yaml"), TWO_GATES).expect("write");
    let data = crate::support::fresh_data_dir();
    let args = ["run", "wf.yaml", "--run-id", "two", "--input", "year=2024", "--non-interactive"];
    let (code, _, err) = cairn_at(&dir, &data, &args);
    assert_eq!(code, 3, "{err}");
    let (_, run, _) = cairn_at(&dir, &data, &["status", "two", "--format", "json"]);
    let run = json(&run);
    assert_eq!(run["inputs"]["year"], "2024", "a string input takes 2024 as text");
    let gates: Vec<&str> =
        run["gates"].as_array().expect("gates").iter().filter_map(|g| g["gate"].as_str()).collect();
    assert_eq!(gates, ["legal", "ops"]);
    assert_eq!(run["waiting"]["gate"], "legal", "`waiting` is the first of them");
    let (_, text, _) = cairn_at(&dir, &data, &["status", "two"]);
    for gate in ["legal", "ops"] {
        assert!(text.contains(&format!("cairn approve two --gate '{gate}'")), "{text}");
    }
}
