//! `cargo xtask cassettes`: records the examples' cassettes
//! (`examples/cassettes/NAME.jsonl`) through the real HTTP provider.
//!
//! Each `examples/cassettes/NAME.answers.json` names the cairn arguments of
//! the runs to record and the answer of each model call: by step path, and
//! for the model call after a round of an agent's tool calls by
//! `PATH/rROUND`; an answer is text, or `{"tool_calls": [{"name",
//! "arguments"}]}` for a model that asks for tools. A loopback
//! OpenAI-compatible server answers every request with the answer its
//! `Idempotency-Key` (`run/step/attempt`, `run/step/attempt/rROUND`) names,
//! and `cairn --llm record:FILE` writes what the workflow asked and got. The answers are
//! written for the examples; record your own against any server with
//! `--llm record:FILE`.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::Command;

use anyhow::{Context, Result, bail};
use serde_json::{Value, json};

use crate::root;

pub fn run() -> Result<()> {
    crate::build_debug_binaries()?;
    let cairn = root().join("target/debug/cairn");
    let dir = root().join("examples/cassettes");
    let mut found = 0;
    for entry in std::fs::read_dir(&dir).with_context(|| format!("reading {}", dir.display()))? {
        let path = entry?.path();
        let Some(name) =
            path.file_name().and_then(|n| n.to_str()).and_then(|n| n.strip_suffix(".answers.json"))
        else {
            continue;
        };
        found += 1;
        let spec: Value = serde_json::from_str(&std::fs::read_to_string(&path)?)
            .with_context(|| format!("{} is not JSON", path.display()))?;
        let answers: BTreeMap<String, Value> = serde_json::from_value(spec["answers"].clone())
            .with_context(|| format!("{}: `answers` must map step paths to answers", path.display()))?;
        let model = spec["model"].as_str().unwrap_or("gpt-4o-mini").to_owned();
        let listener = TcpListener::bind("127.0.0.1:0")?;
        let url = format!("http://{}/v1", listener.local_addr()?);
        let served = model.clone();
        let server = std::thread::spawn(move || serve(&listener, &answers, &served));

        let cassette = dir.join(format!("{name}.jsonl"));
        let _ = std::fs::remove_file(&cassette);
        let data = root().join("target/cassettes").join(name);
        let _ = std::fs::remove_dir_all(&data);
        let record = format!("record:{}", cassette.display());
        for args in spec["runs"].as_array().context("`runs` must be a list of argument lists")? {
            let args: Vec<&str> = args.as_array().into_iter().flatten().filter_map(Value::as_str).collect();
            eprintln!("$ cairn --llm {record} {}", args.join(" "));
            let status = Command::new(&cairn)
                .args(["--llm", &record])
                .args(&args)
                .current_dir(root())
                .stdin(std::process::Stdio::null())
                .env("CAIRN_DATA_DIR", &data)
                .env("CAIRN_LLM_BASE_URL", &url)
                .env("CAIRN_LLM_API_KEY", "unused")
                .env("CAIRN_LLM_MODEL", &model)
                .status()
                .context("running cairn")?;
            // 3: the run waits for a person, as the next arguments expect.
            if !matches!(status.code(), Some(0 | 3)) {
                bail!("recording {name} failed: cairn exited with {status}");
            }
        }
        // The server thread ends with the process; a request it could not
        // answer made the run above fail.
        drop(server);
        eprintln!("wrote {}", cassette.display());
    }
    if found == 0 {
        bail!("no examples/cassettes/*.answers.json to record");
    }
    Ok(())
}

/// Answers chat completions, one per connection, until the process ends.
fn serve(listener: &TcpListener, answers: &BTreeMap<String, Value>, model: &str) {
    for stream in listener.incoming().flatten() {
        if let Err(e) = answer(stream, answers, model) {
            eprintln!("cassette server: {e:#}");
        }
    }
}

/// The answer a call's key (`run/PATH/ATTEMPT`, or `.../rROUND` after a
/// round of tool calls) is written under: `PATH` or `PATH/rROUND`.
fn answer_name(key: &str) -> String {
    let rest = key.split_once('/').map_or("", |(_, rest)| rest);
    let (before, last) = rest.rsplit_once('/').unwrap_or(("", rest));
    match last.strip_prefix('r').filter(|r| r.parse::<u32>().is_ok()) {
        // `PATH/ATTEMPT/rROUND`: a step path holds `/` only inside its keys.
        Some(_) => format!("{}/{last}", before.rsplit_once('/').map_or(before, |(path, _)| path)),
        None => before.to_owned(),
    }
}

/// Reads one request and answers it with the answer its `Idempotency-Key`
/// names, as a plain (unstreamed) chat completion.
fn answer(stream: TcpStream, answers: &BTreeMap<String, Value>, model: &str) -> Result<()> {
    let mut reader = BufReader::new(stream.try_clone()?);
    let (mut length, mut key) = (0usize, String::new());
    loop {
        let mut line = String::new();
        reader.read_line(&mut line)?;
        let line = line.trim_end();
        if line.is_empty() {
            break;
        }
        if let Some((name, value)) = line.split_once(':') {
            match name.to_ascii_lowercase().as_str() {
                "content-length" => length = value.trim().parse().unwrap_or(0),
                "idempotency-key" => key = value.trim().to_owned(),
                _ => {}
            }
        }
    }
    let mut body = vec![0; length];
    reader.read_exact(&mut body)?;
    let step = answer_name(&key);
    let (status, reply) = match answers.get(&step) {
        Some(answer) => {
            let (message, reason) = match answer {
                Value::String(text) => (json!({"role": "assistant", "content": text}), "stop"),
                asked => {
                    let calls: Vec<Value> = asked["tool_calls"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .enumerate()
                        .map(|(n, call)| {
                            json!({"id": format!("call_{n}"), "type": "function",
                            "function": {"name": call["name"], "arguments": call["arguments"].to_string()}})
                        })
                        .collect();
                    (json!({"role": "assistant", "content": null, "tool_calls": calls}), "tool_calls")
                }
            };
            let said = answer.as_str().map_or_else(|| answer.to_string(), str::to_owned);
            let (prompt, completion) = (body.len().div_ceil(4), said.len().div_ceil(4));
            let reply = json!({
                "id": format!("chatcmpl-{step}"),
                "object": "chat.completion",
                "model": model,
                "choices": [{"index": 0, "message": message, "finish_reason": reason}],
                "usage": {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion},
            });
            ("200 OK", reply)
        }
        None => ("400 Bad Request", json!({"error": {"message": format!("no answer written for `{step}`")}})),
    };
    let text = reply.to_string();
    let mut out = stream;
    write!(
        out,
        "HTTP/1.1 {status}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{text}",
        text.len()
    )?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::answer_name;

    #[test]
    fn a_call_is_answered_by_its_step_and_round() {
        assert_eq!(answer_name("run/fix/1"), "fix");
        assert_eq!(answer_name("run/fix/2/r3"), "fix/r3");
        assert_eq!(answer_name("pd/per_epic[e/list].stories/1"), "per_epic[e/list].stories");
        assert_eq!(answer_name("pd/per_epic[e-list].stories/1/r1"), "per_epic[e-list].stories/r1");
    }
}
