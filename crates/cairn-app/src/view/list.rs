//! Listings: runs, checkpoints and the workflow catalog, as a table and
//! as JSON.
//!
//! A table is sized to its content and padded by display width (CJK and
//! emoji take two columns); given a terminal width it cuts its widest text
//! column with `…` to fit. Times in tables are relative (`5m ago`); JSON
//! keeps absolute times.

use anstyle::{AnsiColor, Style};
use cairn_domain::checkpoint::Checkpoint;
use cairn_domain::state::{RunStatus, Timestamp, word};
use serde_json::{Value, json};
use unicode_width::{UnicodeWidthChar, UnicodeWidthStr};

use super::iso_time;
use crate::app::Listed;
use crate::catalog::Entry;

use super::time;

/// How a table fits where it goes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Fit {
    /// The terminal's width in columns; `None` (not a terminal): nothing is cut.
    pub width: Option<usize>,
    /// Paint status words with ANSI colours.
    pub colour: bool,
}

/// Runs as aligned columns, newest first; times relative to `now`. A
/// `LABELS` column (`key=value` pairs) is there when a listed run has labels.
pub fn table(runs: &[Listed], now: Timestamp, fit: Fit) -> String {
    let labelled = runs.iter().any(|r| !r.summary.labels.is_empty());
    let mut columns = vec![
        Column::left("RUN"),
        Column::left("WORKFLOW").cut(),
        Column::left("STATUS"),
        Column::left("CREATED"),
        Column::right("DURATION"),
        Column::right("TOKENS"),
        Column::right("COST"),
    ];
    if labelled {
        columns.push(Column::left("LABELS").cut());
    }
    let rows: Vec<Vec<Cell>> = runs
        .iter()
        .map(|r| {
            let s = &r.summary;
            let usage = s.usage();
            let mut row = vec![
                Cell::plain(s.run_id.as_str()),
                Cell::plain(s.workflow.as_str()),
                Cell { text: status_word(r).to_owned(), style: Some(status_style(s.status)) },
                Cell::plain(time::ago(s.created_at, now)),
                Cell::plain(time::between(s.created_at, s.updated_at)),
                Cell::plain((usage.prompt_tokens + usage.completion_tokens).to_string()),
                Cell::plain(r.cost_usd.map_or("-".to_owned(), |c| format!("${c:.4}"))),
            ];
            if labelled {
                let pairs: Vec<String> = s.labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
                row.push(Cell::plain(pairs.join(" ")));
            }
            row
        })
        .collect();
    layout(&columns, &rows, fit)
}

/// The status a table shows: a `running` run nobody drives says so.
fn status_word(r: &Listed) -> &'static str {
    if stalled(r) { "running (no driver)" } else { word(r.summary.status) }
}

/// Whether `r` was left `running` by a driver that stopped.
pub fn stalled(r: &Listed) -> bool {
    r.summary.status == RunStatus::Running && !r.driven
}

/// Runs as a JSON array of summaries, newest first: `run_id`, `workflow`,
/// `status`, `driven`, `labels`, `triggered_by`, `priority`, `parent`,
/// `created_at`, `updated_at`, `usage`.
pub fn json(runs: &[Listed]) -> Value {
    Value::Array(runs.iter().map(summary_json).collect())
}

/// One run summary, as [`json`] lists it (and the server's run feed sends it).
pub fn summary_json(r: &Listed) -> Value {
    let (s, usage) = (&r.summary, r.summary.usage());
    json!({
        "run_id": s.run_id, "workflow": s.workflow, "status": s.status, "driven": r.driven,
        "labels": s.labels, "triggered_by": s.triggered_by, "priority": s.priority, "parent": s.parent,
        "created_at": iso_time(s.created_at), "updated_at": iso_time(s.updated_at),
        "usage": {"prompt_tokens": usage.prompt_tokens, "completion_tokens": usage.completion_tokens,
                  "estimated": usage.estimated, "cost_usd": r.cost_usd},
    })
}

/// The catalog as aligned columns, by id: each workflow's latest
/// version (`-`: run from files only), its runs, the share of ended runs
/// that completed, median and p95 time to end, tokens and cost.
pub fn workflows_table(entries: &[Entry], fit: Fit) -> String {
    let columns: Vec<Column> = [Column::left("WORKFLOW").cut(), Column::left("VERSION").cut()]
        .into_iter()
        .chain(figure_columns())
        .collect();
    let rows: Vec<Vec<Cell>> = entries
        .iter()
        .map(|e| {
            let version = e.latest.as_ref().map_or_else(|| "-".to_owned(), |v| v.version.clone());
            [Cell::plain(e.workflow.as_str()), Cell::plain(version)]
                .into_iter()
                .chain(figures(&e.stats).map(Cell::plain))
                .collect()
        })
        .collect();
    layout(&columns, &rows, fit)
}

/// The columns of [`figures`].
fn figure_columns() -> [Column; 6] {
    [
        Column::right("RUNS"),
        Column::right("SUCCESS"),
        Column::right("MEDIAN"),
        Column::right("P95"),
        Column::right("TOKENS"),
        Column::right("COST"),
    ]
}

/// A workflow's figures in words: runs, success rate, median and p95
/// time to end, tokens, cost (`-` where there is none).
fn figures(s: &crate::catalog::Stats) -> [String; 6] {
    let or_dash = |v: Option<String>| v.unwrap_or_else(|| "-".to_owned());
    [
        s.runs.to_string(),
        or_dash(s.success_rate.map(|r| format!("{:.0}%", r * 100.0))),
        or_dash(s.median_ms.map(time::duration)),
        or_dash(s.p95_ms.map(time::duration)),
        (s.usage.prompt_tokens + s.usage.completion_tokens).to_string(),
        or_dash(s.cost_usd.map(|c| format!("${c:.4}"))),
    ]
}

/// A stats report as people read it: the overall line, then tables by
/// workflow, of the steps that fail most, by agent and by model (each
/// left out when empty).
pub fn report_text(r: &crate::stats::Report, fit: Fit) -> String {
    let s = &r.overall;
    let since = r.since.map(|t| format!(" since {}", iso_time(t))).unwrap_or_default();
    let of = r.workflow.as_ref().map(|w| format!(" of {w}")).unwrap_or_default();
    let statuses: Vec<String> = s.by_status.iter().map(|(status, n)| format!("{status} {n}")).collect();
    let mut out = format!("{} runs{of}{since}", s.runs);
    if !statuses.is_empty() {
        out += &format!(": {}", statuses.join(", "));
    }
    let [_, success, median, p95, tokens, cost] = figures(s);
    out += &format!("\nsuccess {success} · median {median} · p95 {p95} · {tokens} tokens · {cost}\n");
    if !r.by_workflow.is_empty() {
        let columns: Vec<Column> =
            std::iter::once(Column::left("WORKFLOW").cut()).chain(figure_columns()).collect();
        let rows: Vec<Vec<Cell>> = r
            .by_workflow
            .iter()
            .map(|(workflow, s)| {
                std::iter::once(Cell::plain(workflow.as_str())).chain(figures(s).map(Cell::plain)).collect()
            })
            .collect();
        out += &format!("\n{}", layout(&columns, &rows, fit));
    }
    if !r.failing.is_empty() {
        let columns = [
            Column::left("WORKFLOW").cut(),
            Column::left("FAILING STEP").cut(),
            Column::right("FAILURES"),
            Column::right("RUNS"),
            Column::left("CLASSES").cut(),
        ];
        let rows: Vec<Vec<Cell>> = r
            .failing
            .iter()
            .map(|f| {
                let classes: Vec<String> = f.classes.iter().map(|(c, n)| format!("{c} {n}")).collect();
                vec![
                    Cell::plain(f.workflow.as_str()),
                    Cell::plain(&f.step),
                    Cell::plain(f.failures.to_string()),
                    Cell::plain(f.runs.to_string()),
                    Cell::plain(classes.join(", ")),
                ]
            })
            .collect();
        out += &format!("\n{}", layout(&columns, &rows, fit));
    }
    let or_dash = |v: Option<String>| v.unwrap_or_else(|| "-".to_owned());
    for (title, spent) in [("AGENT", &r.by_agent), ("MODEL", &r.by_model)] {
        if spent.is_empty() {
            continue;
        }
        let columns = [Column::left(title).cut(), Column::right("TOKENS"), Column::right("COST")];
        let rows: Vec<Vec<Cell>> = spent
            .iter()
            .map(|s| {
                vec![
                    Cell::plain(&s.name),
                    Cell::plain((s.usage.prompt_tokens + s.usage.completion_tokens).to_string()),
                    Cell::plain(or_dash(s.cost_usd.map(|c| format!("${c:.4}")))),
                ]
            })
            .collect();
        out += &format!("\n{}", layout(&columns, &rows, fit));
    }
    out
}

/// Checkpoints as aligned columns, oldest first; times relative to `now`.
pub fn checkpoints_table(list: &[Checkpoint], now: Timestamp, fit: Fit) -> String {
    let columns =
        [Column::right("SEQ"), Column::left("AT"), Column::right("SIZE"), Column::left("LABEL").cut()];
    let rows: Vec<Vec<Cell>> = list
        .iter()
        .map(|c| {
            vec![
                Cell::plain(c.seq.to_string()),
                Cell::plain(time::ago(c.at, now)),
                Cell::plain(size(c.size_bytes)),
                Cell::plain(&c.label),
            ]
        })
        .collect();
    layout(&columns, &rows, fit)
}

/// Checkpoints as a JSON array, oldest first: `seq`, `at`, `label`, `size_bytes`.
pub fn checkpoints_json(list: &[Checkpoint]) -> Value {
    let rows = list
        .iter()
        .map(|c| json!({"seq": c.seq, "at": iso_time(c.at), "label": c.label, "size_bytes": c.size_bytes}));
    Value::Array(rows.collect())
}

/// The colour of a run status: green done, red failed, yellow waiting for
/// a person or paused, dim when it ended otherwise or has not started.
pub fn status_style(status: RunStatus) -> Style {
    let colour = |c: AnsiColor| Style::new().fg_color(Some(c.into()));
    match status {
        RunStatus::Completed => colour(AnsiColor::Green),
        RunStatus::Failed => colour(AnsiColor::Red),
        RunStatus::Running => colour(AnsiColor::Cyan),
        RunStatus::Cancelled | RunStatus::Pending => Style::new().dimmed(),
        _ => colour(AnsiColor::Yellow),
    }
}

/// `812 B`, `1.2 KiB`, `3.4 MiB`.
fn size(bytes: usize) -> String {
    const KIB: f64 = 1024.0;
    let b = bytes as f64;
    if b < KIB {
        format!("{bytes} B")
    } else if b < KIB * KIB {
        format!("{:.1} KiB", b / KIB)
    } else {
        format!("{:.1} MiB", b / (KIB * KIB))
    }
}

/// Blank columns between two columns.
const GAP: usize = 2;

/// One column of a table.
struct Column {
    header: &'static str,
    right: bool,
    /// May be cut with `…` when the table is wider than the terminal.
    cut: bool,
}

impl Column {
    fn left(header: &'static str) -> Self {
        Self { header, right: false, cut: false }
    }

    fn right(header: &'static str) -> Self {
        Self { header, right: true, cut: false }
    }

    fn cut(self) -> Self {
        Self { cut: true, ..self }
    }
}

/// One cell: its text, and the style it is painted with when colour is on.
struct Cell {
    text: String,
    style: Option<Style>,
}

impl Cell {
    fn plain(text: impl Into<String>) -> Self {
        Self { text: text.into(), style: None }
    }
}

/// Lays `rows` out under `columns`: each column as wide as its widest cell
/// (by display width); when wider than `fit.width`, the widest cuttable
/// column narrows (not below its header) and its cells end in `…`.
fn layout(columns: &[Column], rows: &[Vec<Cell>], fit: Fit) -> String {
    let mut widths: Vec<usize> = columns
        .iter()
        .enumerate()
        .map(|(i, c)| rows.iter().map(|r| r[i].text.width()).fold(c.header.width(), usize::max))
        .collect();
    if let Some(limit) = fit.width {
        let total = widths.iter().sum::<usize>() + GAP * widths.len().saturating_sub(1);
        let mut excess = total.saturating_sub(limit);
        while excess > 0 {
            let widest = (0..columns.len())
                .filter(|&i| columns[i].cut && widths[i] > columns[i].header.width().max(2))
                .max_by_key(|&i| widths[i]);
            let Some(i) = widest else { break };
            widths[i] -= 1;
            excess -= 1;
        }
    }
    let mut out = String::new();
    let headers: Vec<Cell> = columns.iter().map(|c| Cell::plain(c.header)).collect();
    for row in std::iter::once(&headers).chain(rows) {
        let mut line = String::new();
        for (i, (column, cell)) in columns.iter().zip(row).enumerate() {
            if i > 0 {
                line.push_str(&" ".repeat(GAP));
            }
            let text = cut(&cell.text, widths[i]);
            let pad = " ".repeat(widths[i] - text.width());
            let painted = match cell.style.filter(|_| fit.colour) {
                Some(style) => format!("{}{text}{}", style.render(), style.render_reset()),
                None => text,
            };
            if column.right {
                line.push_str(&pad);
                line.push_str(&painted);
            } else {
                line.push_str(&painted);
                line.push_str(&pad);
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

/// `text` in at most `width` columns: as it is when it fits, else cut to
/// end in `…` (narrower by one when a wide character did not fit).
fn cut(text: &str, width: usize) -> String {
    if text.width() <= width {
        return text.to_owned();
    }
    let mut out = String::new();
    let mut used = 0;
    for c in text.chars() {
        let w = c.width().unwrap_or(0);
        if used + w + 1 > width {
            break;
        }
        out.push(c);
        used += w;
    }
    // A cut at a space reads better without it: `release…`, not `release …`.
    out.truncate(out.trim_end().len());
    out.push('…');
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use cairn_ports::RunSummary;

    const NOW: Timestamp = Timestamp(1_795_409_501_123);

    fn listed(id: &str, workflow: &str, status: RunStatus, age_ms: u64, took_ms: u64) -> Listed {
        let summary = RunSummary {
            run_id: cairn_domain::id::RunId::new(id).expect("id"),
            workflow: cairn_domain::id::WorkflowId::new(workflow).expect("workflow id"),
            status,
            created_at: Timestamp(NOW.0 - age_ms),
            updated_at: Timestamp(NOW.0 - age_ms + took_ms),
            usage_by_model: Default::default(),
            labels: Default::default(),
            triggered_by: "ana".into(),
            priority: 0,
            parent: None,
            figures: Default::default(),
        };
        Listed { summary, cost_usd: Some(0.0004), driven: false }
    }

    fn runs() -> Vec<Listed> {
        vec![
            listed("r2", "ticket-triage", RunStatus::WaitingApproval, 300_000, 190_000),
            listed(
                "r1",
                "a-very-long-workflow-id-for-the-release-train",
                RunStatus::Completed,
                3 * 86_400_000,
                850,
            ),
        ]
    }

    #[test]
    fn a_table_is_as_wide_as_its_content_with_relative_times() {
        insta::assert_snapshot!(table(&runs(), NOW, Fit::default()), @r"
        RUN  WORKFLOW                                       STATUS            CREATED  DURATION  TOKENS     COST
        r2   ticket-triage                                  waiting_approval  5m ago      3m10s       0  $0.0004
        r1   a-very-long-workflow-id-for-the-release-train  completed         3d ago      850ms       0  $0.0004
        ");
    }

    #[test]
    fn a_narrow_terminal_cuts_the_widest_text_column() {
        let fit = Fit { width: Some(80), colour: false };
        let text = table(&runs(), NOW, fit);
        insta::assert_snapshot!(text, @r"
        RUN  WORKFLOW               STATUS            CREATED  DURATION  TOKENS     COST
        r2   ticket-triage          waiting_approval  5m ago      3m10s       0  $0.0004
        r1   a-very-long-workflow…  completed         3d ago      850ms       0  $0.0004
        ");
        assert!(text.lines().all(|l| l.width() <= 80));
        // Nothing to cut below the headers: the table stays whole rather than unreadable.
        assert!(table(&runs(), NOW, Fit { width: Some(10), colour: false }).contains("WORKFLOW"));
    }

    #[test]
    fn wide_characters_are_padded_by_display_width() {
        let columns = [Column::left("WORKFLOW").cut(), Column::left("STATUS")];
        let rows = vec![
            vec![Cell::plain("東京の在庫管理"), Cell::plain("completed")],
            vec![Cell::plain("release 🚀 train"), Cell::plain("failed")],
            vec![Cell::plain("plain"), Cell::plain("paused")],
        ];
        let text = layout(&columns, &rows, Fit::default());
        insta::assert_snapshot!(text, @r"
        WORKFLOW          STATUS
        東京の在庫管理    completed
        release 🚀 train  failed
        plain             paused
        ");
        let status_at: Vec<usize> =
            text.lines().map(|l| l.split("  ").next().map(UnicodeWidthStr::width).unwrap_or(0)).collect();
        assert!(status_at.iter().all(|w| *w <= 16), "{status_at:?}");
        let cut = layout(&columns, &rows, Fit { width: Some(20), colour: false });
        insta::assert_snapshot!(cut, @r"
        WORKFLOW   STATUS
        東京の在…  completed
        release…   failed
        plain      paused
        ");
    }

    #[test]
    fn checkpoints_show_relative_times_and_sizes() {
        let list = [
            Checkpoint {
                seq: 4,
                at: Timestamp(NOW.0 - 7_200_000),
                label: "after parse (succeeded)".into(),
                size_bytes: 812,
            },
            Checkpoint {
                seq: 11,
                at: Timestamp(NOW.0 - 30_000),
                label: "after per_epic[東京 🚀].draft (succeeded)".into(),
                size_bytes: 20_480,
            },
        ];
        insta::assert_snapshot!(checkpoints_table(&list, NOW, Fit::default()), @r"
        SEQ  AT           SIZE  LABEL
          4  2h ago      812 B  after parse (succeeded)
         11  30s ago  20.0 KiB  after per_epic[東京 🚀].draft (succeeded)
        ");
    }

    #[test]
    fn colour_paints_the_status_word_only_and_keeps_the_alignment() {
        let plain = table(&runs(), NOW, Fit::default());
        let painted = table(&runs(), NOW, Fit { width: None, colour: true });
        assert!(painted.contains("\u{1b}[32mcompleted\u{1b}[0m"), "{painted:?}");
        let stripped = painted.replace("\u{1b}[32m", "").replace("\u{1b}[33m", "").replace("\u{1b}[0m", "");
        assert_eq!(stripped, plain);
        assert!(!plain.contains('\u{1b}'));
    }
}
