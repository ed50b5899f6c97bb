//! `cargo xtask cassettes`: records the examples' cassettes
//! (`examples/cassettes/NAME.jsonl`) through the real HTTP provider.
//!
//! Each `examples/cassettes/NAME.answers.json` names the cairn arguments of
//! the runs to record and the answer of each step, by step path. A loopback
//! OpenAI-compatible server answers every request with the answer of the
//! step its `Idempotency-Key` (`run/step/attempt`) names, and `cairn --llm
//! record:FILE` writes what the workflow asked and got. The answers are
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
        let answers: BTreeMap<String, String> = serde_json::from_value(spec["answers"].clone())
            .with_context(|| format!("{}: `answers` must map step paths to texts", path.display()))?;
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
fn serve(listener: &TcpListener, answers: &BTreeMap<String, String>, model: &str) {
    for stream in listener.incoming().flatten() {
        if let Err(e) = answer(stream, answers, model) {
            eprintln!("cassette server: {e:#}");
        }
    }
}

/// Reads one request and answers it with the text of the step its
/// `Idempotency-Key` names, as a plain (unstreamed) chat completion.
fn answer(stream: TcpStream, answers: &BTreeMap<String, String>, model: &str) -> Result<()> {
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
    // `run/step/attempt`; a step path may hold `/` only inside its keys,
    // so the step is what lies between the first and the last `/`.
    let step = key.split_once('/').and_then(|(_, rest)| rest.rsplit_once('/')).map_or("", |(s, _)| s);
    let (status, reply) = match answers.get(step) {
        Some(text) => {
            let (prompt, completion) = (body.len().div_ceil(4), text.len().div_ceil(4));
            let reply = json!({
                "id": format!("chatcmpl-{step}"),
                "object": "chat.completion",
                "model": model,
                "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}],
                "usage": {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion},
            });
            ("200 OK", reply)
        }
        None => {
            ("400 Bad Request", json!({"error": {"message": format!("no answer written for step `{step}`")}}))
        }
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
