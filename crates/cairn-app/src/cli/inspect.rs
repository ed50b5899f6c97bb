//! The verbs that read stored runs: `runs`, `status`, `events`, `checkpoints`.

use cairn_domain::id::{RunId, WorkflowId};
use cairn_domain::state::RunStatus;
use cairn_ports::{Clock, Cursor, RunQuery};

use super::{EventsFormat, ListFormat, RunFormat, Verbs, exit, print_run};
use crate::error::Error;
use crate::view;

/// What `cairn runs` lists: filters, and a page.
pub(crate) struct Page {
    /// `--status`.
    pub status: Option<String>,
    /// `--workflow`.
    pub workflow: Option<String>,
    /// `--label K=V`, each of which a run must carry.
    pub labels: Vec<String>,
    /// `--triggered-by`.
    pub triggered_by: Option<String>,
    /// `--priority`.
    pub priority: Option<i32>,
    /// `--parent`.
    pub parent: Option<String>,
    /// `--limit`.
    pub limit: Option<usize>,
    /// `--cursor`.
    pub cursor: Option<String>,
}

/// `cairn runs`: runs, newest first, a page at a time with `--limit`.
pub(crate) fn runs(verbs: &Verbs<'_>, page: Page, format: ListFormat) -> Result<u8, Error> {
    let status = page
        .status
        .as_deref()
        .map(|s| {
            s.parse::<RunStatus>().map_err(|_| Error::Config(format!("--status `{s}` is not a run status")))
        })
        .transpose()?;
    let workflow =
        page.workflow.map(|w| WorkflowId::new(w).map_err(|e| Error::Config(e.to_string()))).transpose()?;
    let after = page
        .cursor
        .map(|c| c.parse::<Cursor>().map_err(|e| Error::Config(format!("--cursor `{c}`: {e}"))))
        .transpose()?;
    let labels = super::labels(&page.labels)?;
    let parent = page.parent.as_deref().map(super::run_id).transpose()?;
    let opened = verbs.open("runs")?;
    let query = RunQuery {
        status,
        workflow,
        labels,
        triggered_by: page.triggered_by,
        priority: page.priority,
        parent,
        limit: page.limit,
        after,
    };
    let listing = opened.runtime.block_on(opened.app.list(&query))?;
    if let Some(next) = &listing.next {
        eprintln!("more: cairn runs --cursor {next}");
    }
    match format {
        ListFormat::Table => {
            let now = cairn_engine::SystemClock.now();
            out!("{}", view::list::table(&listing.runs, now, super::term::table_fit()));
            if let Some(r) = listing.runs.iter().find(|r| view::list::stalled(r)) {
                verbs.notice(format_args!(
                    "note: a run shown `running (no driver)` was left running by a process that stopped; \
                     `cairn resume {}` goes on where it stopped",
                    r.summary.run_id
                ));
            }
        }
        ListFormat::Json => outln!("{}", view::list::json(&listing.runs)),
    }
    Ok(exit::OK)
}

/// The child runs of `run`'s sub-workflow steps, each under its step (and
/// theirs under them), `depth` levels in; one that cannot be read says so.
fn print_children(opened: &super::Opened, run: &crate::Run, depth: usize) {
    let now = cairn_engine::SystemClock.now();
    let children = run.state.steps.iter().filter_map(|(path, s)| Some((path, s.child.as_ref()?)));
    for (path, child) in children {
        match opened.runtime.block_on(opened.app.status(child)) {
            Ok(child) => {
                out!("{}", super::summary::under_step(path, &child, now, depth - 1));
                print_children(opened, &child, depth + 1);
            }
            Err(e) => eprintln!("step {path} runs {child}, which cannot be read: {e}"),
        }
    }
}

/// `cairn status RUN`: one run, with every step.
pub(crate) fn status(verbs: &Verbs<'_>, id: &RunId, format: RunFormat) -> Result<u8, Error> {
    let opened = verbs.open("status")?;
    let run = opened.runtime.block_on(opened.app.status(id))?;
    print_run(&run, format);
    if format == RunFormat::Text {
        print_children(&opened, &run, 1);
    }
    // What driving it on from here needs, when the run is not over.
    if let Err(e) = opened.runtime.block_on(opened.app.check(id)) {
        let said = super::words::said(&e, "drive");
        verbs.notice(format_args!("note: to go on from here, {}", said.message));
        if let Some(hint) = said.hint {
            verbs.notice(format_args!("hint: {hint}"));
        }
    }
    Ok(exit::OK)
}

/// `cairn events RUN`: the audit trail.
pub(crate) fn events(verbs: &Verbs<'_>, id: &RunId, follow: bool, format: EventsFormat) -> Result<u8, Error> {
    let opened = verbs.open("events")?;
    if follow {
        let mut print = |e: &cairn_domain::state::Event| match format {
            EventsFormat::Text => outln!("{}", view::event::line(e)),
            EventsFormat::Jsonl | EventsFormat::Json => outln!("{}", view::event::json(e)),
        };
        opened.runtime.block_on(opened.app.follow(id, 0, &mut print))?;
        if !opened.app.served() {
            // This process holds the store, so nothing else moves the run.
            let run = opened.runtime.block_on(opened.app.status(id))?;
            if !run.state.status.is_terminal() {
                verbs.notice(format_args!(
                    "note: no process drives run `{id}` (status {}); `cairn resume {id}` goes on, or                      `cairn serve` keeps the data directory's runs going for every shell",
                    cairn_domain::state::word(run.state.status)
                ));
            }
        }
        return Ok(exit::OK);
    }
    let events = opened.runtime.block_on(opened.app.events(id))?;
    if format == EventsFormat::Json {
        outln!("{}", serde_json::Value::Array(events.iter().map(view::event::json).collect()));
        return Ok(exit::OK);
    }
    for e in &events {
        match format {
            EventsFormat::Text => outln!("{}", view::event::line(e)),
            EventsFormat::Jsonl | EventsFormat::Json => outln!("{}", view::event::json(e)),
        }
    }
    Ok(exit::OK)
}

/// `cairn checkpoints RUN`: where the run can be forked from.
pub(crate) fn checkpoints(verbs: &Verbs<'_>, id: &RunId, format: ListFormat) -> Result<u8, Error> {
    let opened = verbs.open("checkpoints")?;
    let list = opened.runtime.block_on(opened.app.checkpoints(id))?;
    match format {
        ListFormat::Table => {
            let now = cairn_engine::SystemClock.now();
            out!("{}", view::list::checkpoints_table(&list, now, super::term::table_fit()));
        }
        ListFormat::Json => outln!("{}", view::list::checkpoints_json(&list)),
    }
    Ok(exit::OK)
}
