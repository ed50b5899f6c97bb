//! The workflow catalog through the binary: `workflows add` registers
//! versions (each text once, a version one text), `workflows show` prints
//! them back, `run ID` starts the latest, and `workflows` lists every
//! workflow registered or run with its figures. Also through a server
//! (`CAIRN_E2E_SERVED`), where each verb goes through the API.

use crate::support::{Bench, cairn_env, json, scratch};

const V1: &str =
    "cairn: 1\nid: cat\nname: The cat\nversion: \"1.0\"\ntags: [demo]\nsteps:\n  - id: only\n    set: one\n";
const V2: &str =
    "cairn: 1\nid: cat\nname: The cat\nversion: \"1.1\"\ntags: [demo]\nsteps:\n  - id: only\n    set: two\n";
/// `version: 1.0` again, with other text.
const V1_CHANGED: &str = "cairn: 1\nid: cat\nversion: \"1.0\"\nsteps:\n  - id: only\n    set: changed\n";
/// No `version:`: registered under its hash.
const PLAIN: &str = "cairn: 1\nid: plain\nsteps:\n  - id: only\n    set: plain\n";
const BROKEN: &str = "cairn: 1\nid: broken\nsteps:\n  - id: only\n    sett: one\n";

/// The workflows every test here starts from.
const FILES: &[(&str, &str)] = &[
    ("v1.yaml", V1),
    ("v2.yaml", V2),
    ("v1-changed.yaml", V1_CHANGED),
    ("plain.yaml", PLAIN),
    ("broken.yaml", BROKEN),
];

#[test]
fn each_text_is_registered_once_a_version_is_one_text_and_show_prints_it_back() {
    let b = Bench::new("catalog_add", FILES);
    let mut transcript = String::new();
    for args in [
        &["workflows", "add", "v1.yaml", "plain.yaml"][..],
        &["workflows", "add", "v1.yaml"],
        &["workflows", "add", "v1-changed.yaml"],
        &["workflows", "add", "broken.yaml", "v2.yaml"],
        &["workflows", "add", "v2.yaml"],
        &["workflows", "show", "nope"],
        &["workflows", "show", "cat", "--version", "9.9"],
    ] {
        let run = b.cairn(args);
        transcript +=
            &format!("$ cairn {}\n[exit {}]\n{}{}\n", args.join(" "), run.code, run.stdout, run.stderr);
    }
    insta::assert_snapshot!("catalog_add_transcript", transcript);

    assert_eq!(b.expect(0, &["workflows", "show", "cat"]).stdout, V2, "the latest, exactly as registered");
    assert_eq!(b.expect(0, &["workflows", "show", "cat", "--version", "1.0"]).stdout, V1);
    assert_eq!(b.expect(0, &["workflows", "show", "cat", "--version", "1"]).stdout, V1, "by number");
    let shown = json(&b.expect(0, &["workflows", "show", "cat", "--format", "json"]).stdout);
    assert_eq!(
        (&shown["version"], &shown["number"], &shown["definition"]),
        (&"1.1".into(), &2.into(), &V2.into())
    );
    let versions: Vec<&str> = shown["versions"]
        .as_array()
        .expect("versions")
        .iter()
        .filter_map(|v| v["version"].as_str())
        .collect();
    assert_eq!(versions, ["1.0", "1.1"]);
    let plain = json(&b.expect(0, &["workflows", "show", "plain", "--format", "json"]).stdout);
    assert_eq!(plain["version"].as_str().map(str::len), Some(12), "a hash prefix: {plain}");
    assert!(plain["hash"].as_str().is_some_and(|h| h.starts_with(plain["version"].as_str().unwrap_or("-"))));
    let listed = json(&b.expect(0, &["workflows", "--format", "json"]).stdout);
    let ids: Vec<&str> =
        listed.as_array().expect("a list").iter().filter_map(|e| e["workflow"].as_str()).collect();
    assert_eq!(ids, ["cat", "plain"], "broken.yaml registered nothing");
}

#[test]
fn run_starts_the_latest_registered_version_by_id_and_the_catalog_counts_runs() {
    let b = Bench::new("catalog_run", FILES);
    b.expect(0, &["workflows", "add", "v1.yaml", "v2.yaml"]);
    // From a folder without the file: the id is all it takes.
    let elsewhere = scratch("catalog_run_elsewhere");
    let data = [("CAIRN_DATA_DIR", b.data.to_str().expect("utf-8"))];
    let run = cairn_env(&elsewhere, &["run", "cat", "--format", "json"], &data);
    assert_eq!(run.code, 0, "{}{}", run.stdout, run.stderr);
    let started = json(&run.stdout);
    assert_eq!((&started["workflow"], &started["version"]), (&"cat".into(), &"1.1".into()));
    assert_eq!(started["steps"][0]["output"], "two");
    let missing = cairn_env(&elsewhere, &["run", "dog"], &data);
    assert_eq!(missing.code, 2, "{}{}", missing.stdout, missing.stderr);
    assert!(
        missing.stderr.contains("dog: no such file, and no workflow is registered by this id"),
        "{}",
        missing.stderr
    );
    // A run from a file counts for its workflow too; one of another
    // workflow, never registered, is listed without a version.
    b.expect(0, &["run", "v1.yaml"]);
    b.expect(0, &["run", "plain.yaml"]);

    let listed = json(&b.expect(0, &["workflows", "--format", "json"]).stdout);
    let entries = listed.as_array().expect("a list");
    let cat = entries.iter().find(|e| e["workflow"] == "cat").expect("cat is listed");
    assert_eq!(
        (&cat["name"], &cat["tags"], &cat["latest"]["version"]),
        (&"The cat".into(), &json("[\"demo\"]"), &"1.1".into())
    );
    let stats = &cat["stats"];
    assert_eq!(
        (&stats["runs"], &stats["by_status"], &stats["success_rate"]),
        (&2.into(), &json("{\"completed\": 2}"), &1.0.into())
    );
    assert!(stats["median_ms"].is_u64() && stats["p95_ms"].is_u64(), "{stats}");
    let plain = entries.iter().find(|e| e["workflow"] == "plain").expect("plain is listed");
    assert_eq!((&plain["latest"], &plain["stats"]["runs"]), (&serde_json::Value::Null, &1.into()));

    let table = b.expect(0, &["workflows"]).stdout;
    let header: Vec<&str> = table.lines().next().unwrap_or_default().split_whitespace().collect();
    assert_eq!(header, ["WORKFLOW", "VERSION", "RUNS", "SUCCESS", "MEDIAN", "P95", "TOKENS", "COST"]);
    let row: Vec<&str> =
        table.lines().find(|l| l.starts_with("cat ")).unwrap_or_default().split_whitespace().collect();
    assert_eq!((row[1], row[2], row[3]), ("1.1", "2", "100%"), "{table}");
    let row: Vec<&str> =
        table.lines().find(|l| l.starts_with("plain ")).unwrap_or_default().split_whitespace().collect();
    assert_eq!((row[1], row[2]), ("-", "1"), "{table}");
}

#[test]
fn a_run_records_who_started_it_its_priority_and_parent_and_runs_filters_on_them() {
    let b = Bench::new("catalog_meta", FILES);
    let urgent = json(&b.expect(0, &["run", "v1.yaml", "--priority", "7", "--format", "json"]).stdout);
    let plain = json(&b.expect(0, &["run", "v2.yaml", "--priority", "-1", "--format", "json"]).stdout);
    assert_eq!(
        (&urgent["priority"], &plain["priority"], &urgent["parent"]),
        (&7.into(), &(-1).into(), &serde_json::Value::Null)
    );
    let by = urgent["triggered_by"].as_str().expect("who started it").to_owned();
    assert!(!by.is_empty(), "{urgent}");
    let id = urgent["run_id"].as_str().expect("an id").to_owned();

    let listed = |args: &[&str]| -> Vec<String> {
        let mut all = vec!["runs", "--format", "json"];
        all.extend_from_slice(args);
        let out = json(&b.expect(0, &all).stdout);
        out.as_array()
            .expect("a list")
            .iter()
            .filter_map(|r| r["run_id"].as_str().map(str::to_owned))
            .collect()
    };
    assert_eq!(listed(&["--priority", "7"]), std::slice::from_ref(&id));
    assert_eq!(listed(&["--triggered-by", &by]).len(), 2);
    assert!(listed(&["--triggered-by", "nobody"]).is_empty());

    let checkpoints = json(&b.expect(0, &["checkpoints", &id, "--format", "json"]).stdout);
    let seq = checkpoints[0]["seq"].as_u64().expect("a checkpoint").to_string();
    let fork = json(&b.expect(0, &["fork", &id, "--checkpoint", &seq, "--format", "json"]).stdout);
    assert_eq!(fork["parent"], json(&format!("{{\"run_id\": \"{id}\", \"checkpoint\": {seq}}}")));
    assert_eq!(fork["priority"], 7, "a fork keeps its source's priority");
    let fork_id = fork["run_id"].as_str().expect("an id").to_owned();
    assert_eq!(listed(&["--parent", &id]), [fork_id]);
    let summary = json(&b.expect(0, &["runs", "--parent", &id, "--format", "json"]).stdout);
    assert_eq!(summary[0]["parent"], id.as_str());
    b.expect(2, &["runs", "--parent", "not a run"]);
}

/// Divides by its input: `n=0` fails the step for good (one attempt).
const FLAKY: &str = "cairn: 1\nid: flaky\ninputs:\n  n: { type: integer, default: 1 }\nsteps:\n  - id: divide\n    set: \"{{ 10 / inputs.n }}\"\n    retry: { max_attempts: 1 }\n";

#[test]
fn stats_count_runs_by_status_the_steps_that_fail_and_tokens_by_agent_and_model() {
    let triage =
        std::fs::read_to_string(crate::support::root().join("examples/ticket-triage.yaml")).expect("example");
    let b = Bench::new("catalog_stats", &[("flaky.yaml", FLAKY), ("triage.yaml", &triage)]);
    b.expect(1, &["run", "flaky.yaml", "--input", "n=0"]);
    b.expect(0, &["run", "flaky.yaml"]);
    b.expect(0, &["run", "triage.yaml", "--input", "ticket=charged twice"]);

    let all = json(&b.expect(0, &["stats", "--since", "1h", "--format", "json"]).stdout);
    assert_eq!(all["overall"]["runs"], 3);
    assert_eq!(all["overall"]["by_status"], serde_json::json!({"completed": 2, "failed": 1}));
    assert_eq!(
        all["failing_steps"],
        serde_json::json!([{"workflow": "flaky", "step": "divide", "failures": 1, "runs": 1, "classes": {"fatal": 1}}])
    );
    let names = |key: &str| -> Vec<String> {
        all[key]
            .as_array()
            .expect("a list")
            .iter()
            .filter_map(|s| s["name"].as_str().map(str::to_owned))
            .collect()
    };
    let mut agents = names("by_agent");
    agents.sort();
    assert_eq!(agents, ["triager", "writer"], "the agents that asked");
    assert_eq!(names("by_model").len(), 1, "the mock's one model: {}", all["by_model"]);
    let workflows: Vec<&str> = all["by_workflow"]
        .as_array()
        .expect("a list")
        .iter()
        .filter_map(|w| w["workflow"].as_str())
        .collect();
    assert_eq!(workflows, ["flaky", "ticket-triage"], "the most runs first");

    let flaky = b.expect(0, &["stats", "--workflow", "flaky"]);
    // Columns as words: their widths follow the times, which vary.
    let words: Vec<String> = crate::support::redact_times(&flaky.stdout)
        .lines()
        .map(|l| l.split_whitespace().collect::<Vec<_>>().join(" "))
        .collect();
    insta::assert_snapshot!("stats_of_one_workflow", words.join("\n"));
    let mut refusals = String::new();
    for args in [&["stats", "--since", "soon"][..], &["stats", "--workflow", "Not An Id"]] {
        let run = b.cairn(args);
        refusals +=
            &format!("$ cairn {}\n[exit {}]\n{}{}\n", args.join(" "), run.code, run.stdout, run.stderr);
    }
    insta::assert_snapshot!("stats_refusals", refusals);
    let none = json(&b.expect(0, &["stats", "--workflow", "nobody", "--format", "json"]).stdout);
    assert_eq!(none["overall"]["runs"], 0);
}

#[test]
fn search_finds_workflows_by_their_text_and_runs_by_inputs_outputs_and_errors_best_first() {
    let triage =
        std::fs::read_to_string(crate::support::root().join("examples/ticket-triage.yaml")).expect("example");
    let b = Bench::new("catalog_search", &[("flaky.yaml", FLAKY), ("triage.yaml", &triage)]);
    b.expect(0, &["workflows", "add", "triage.yaml"]);
    b.expect(1, &["run", "flaky.yaml", "--input", "n=0"]);
    let fire = b.expect(
        0,
        &["run", "triage.yaml", "--input", "ticket=The printer on floor 3 is on fire", "--format", "json"],
    );
    let fire_id = json(&fire.stdout)["run_id"].as_str().expect("an id").to_owned();

    let search = |args: &[&str]| -> Vec<serde_json::Value> {
        let mut all = vec!["search"];
        all.extend_from_slice(args);
        all.extend(["--format", "json"]);
        json(&b.expect(0, &all).stdout).as_array().expect("a list").clone()
    };
    let hit = |hits: &[serde_json::Value], i: usize| -> (String, String, String) {
        let h = &hits[i];
        let marked: String = h["snippet"]
            .as_array()
            .expect("pieces")
            .iter()
            .filter(|p| p["hit"] == true)
            .filter_map(|p| p["text"].as_str())
            .collect::<Vec<_>>()
            .join(",");
        (h["kind"].as_str().unwrap_or("?").to_owned(), h["field"].as_str().unwrap_or("?").to_owned(), marked)
    };

    // A run by its inputs, with its summary; words by stem and case.
    let printer = search(&["Printers", "FIRE"]);
    assert_eq!(printer.len(), 1, "{printer:?}");
    assert_eq!(hit(&printer, 0), ("run".into(), "inputs".into(), "printer,fire".into()));
    assert_eq!(printer[0]["id"], fire_id.as_str());
    assert_eq!(printer[0]["run"]["status"], "completed");
    // A workflow by its description, registered; and by its prompts.
    let classifies = search(&["classifies", "--kind", "workflow"]);
    assert_eq!(hit(&classifies, 0), ("workflow".into(), "description".into(), "Classifies".into()));
    assert_eq!(classifies[0]["id"], "ticket-triage");
    assert_eq!(hit(&search(&["friendly"]), 0), ("workflow".into(), "prompts".into(), "friendly".into()));
    // A run by its error, and one by its outputs (the mock's answer).
    let calculate = search(&["calculate"]);
    assert_eq!(hit(&calculate, 0), ("run".into(), "errors".into(), "calculate".into()));
    assert_eq!(calculate[0]["workflow"], "flaky");
    assert_eq!(hit(&search(&["billing", "--kind", "run"]), 0).1, "outputs");
    // A workflow only run from a file is known by its run's definition.
    assert_eq!(hit(&search(&["flaky", "--kind", "workflow"]), 0).0, "workflow");
    // A name match weighs more than a match in an output.
    let ticket = search(&["ticket"]);
    assert_eq!(ticket[0]["id"], "ticket-triage", "{ticket:?}");
    assert!(ticket.iter().any(|h| h["id"] == fire_id.as_str()));
    assert!(search(&["ticket", "--workflow", "flaky"]).is_empty());
    assert_eq!(search(&["ticket", "--limit", "1"]).len(), 1);

    let text = b.expect(0, &["search", "printer"]).stdout.replace(&fire_id, "RUN");
    // The age is "just now" or a few seconds, as the machine goes.
    let text = crate::support::redact_times(&text).replace("  just now", " <t> ago");
    insta::assert_snapshot!("search_text", text);
    assert_eq!(b.expect(0, &["search", "nowhere"]).stdout, "nothing matches `nowhere`\n");
    let mut refusals = String::new();
    for args in [
        &["search", ""][..],
        &["search", "x", "--limit", "0"],
        &["search", "x", "--kind", "job"],
        &["search", "x", "--workflow", "Not An Id"],
    ] {
        let run = b.cairn(args);
        refusals +=
            &format!("$ cairn {}\n[exit {}]\n{}{}\n", args.join(" "), run.code, run.stdout, run.stderr);
    }
    insta::assert_snapshot!("search_refusals", refusals);

    // Pruned runs leave the index.
    b.expect(0, &["prune", "--older-than", "1ms"]);
    assert!(search(&["printer"]).is_empty());
    assert_eq!(search(&["classifies"]).len(), 1, "workflows stay");
}
