//! What the engine tells the command runner about a step's arguments: which
//! ones run data leads (so the fence refuses them as options), and the
//! step's fence switches.

mod support;

use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use cairn_engine::EngineBuilder;
use cairn_ports::{Clock, CommandOutput, CommandRunner, CommandSpec, PortError};
use serde_json::json;
use support::{Harness, definition, run_id};

/// Keeps every spec it is asked to run, and succeeds.
#[derive(Default)]
struct Recording(Mutex<Vec<CommandSpec>>);

#[async_trait]
impl CommandRunner for Recording {
    async fn run(&self, spec: CommandSpec) -> Result<CommandOutput, PortError> {
        self.0.lock().expect("lock").push(spec);
        Ok(CommandOutput { exit_code: 0, stdout: String::new(), stderr: String::new() })
    }
}

const ARGS: &str = r#"cairn: 1
id: args
inputs:
  url: { type: string }
steps:
  - id: fetch
    command: [git, ls-remote, "{{ inputs.url }}", "-n{{ inputs.url }}", "--out={{ inputs.url }}", "--{{ inputs.url }}", "x{{ inputs.url }}"]
  - id: open
    needs: fetch
    command: [cat, "{{ inputs.url }}"]
    allow_option_args: true
    confine_paths: true
"#;

#[tokio::test(start_paused = true)]
async fn arguments_led_by_run_data_are_marked_for_the_fence() {
    let h = Harness::new();
    let clock: Arc<dyn Clock> = h.clock.clone();
    let runner = Arc::new(Recording::default());
    let engine = EngineBuilder::new(h.store.clone()).clock(clock).commands(runner.clone()).build();
    engine.run(definition(ARGS), json!({"url": "--upload-pack=x"}), run_id()).await.expect("runs");
    let specs = runner.0.lock().expect("lock").clone();
    assert_eq!(specs.len(), 2, "{specs:?}");
    let fetch = &specs[0];
    assert_eq!(fetch.args[1], "--upload-pack=x");
    // `{{ url }}` and `--{{ url }}` are data's; `-n…`, `--out=…`, `x…` and the literal are the author's.
    assert_eq!(fetch.data_led, vec![1, 4]);
    assert_eq!((fetch.allow_option_args, fetch.confine_paths), (false, false));
    let open = &specs[1];
    assert_eq!(open.data_led, vec![0]);
    assert_eq!((open.allow_option_args, open.confine_paths), (true, true));
}
