//! The verbs about cairn itself: `completions`, `man` and `version`. They
//! read no store and no config.

use std::io::Write;

use super::{DocFormat, exit};
use crate::error::Error;

/// cairn's version, as `--version` says it.
pub(crate) const VERSION: &str = env!("CARGO_PKG_VERSION");

/// `cairn completions SHELL`: a completion script for `shell` on stdout.
pub(crate) fn completions(shell: clap_complete::Shell) -> Result<u8, Error> {
    let mut cmd = super::command();
    let name = cmd.get_name().to_owned();
    let mut script = Vec::new();
    clap_complete::generate(shell, &mut cmd, name, &mut script);
    let _ = std::io::stdout().lock().write_all(&script);
    Ok(exit::OK)
}

/// `cairn man [VERB]`: the manual page of cairn, or of one verb
/// (`cairn-VERB(1)`, which cairn's page refers to), in roff, on stdout.
pub(crate) fn man(verb: Option<&str>) -> Result<u8, Error> {
    let mut cmd = super::command();
    // Built, so each verb has its global flags and its name as a page (`cairn-run`).
    cmd.build();
    let page = match verb {
        None => cmd,
        Some(verb) => cmd.find_subcommand(verb).filter(|_| verb != "help").cloned().ok_or_else(|| {
            Error::Config(format!("`{verb}` is not a verb of cairn; `cairn --help` lists them"))
        })?,
    };
    let mut text = Vec::new();
    render(&page, &mut text).map_err(|e| Error::Config(format!("cannot write the manual page: {e}")))?;
    let _ = std::io::stdout().lock().write_all(&text);
    Ok(exit::OK)
}

/// `cmd`'s manual page: clap's sections, then the sections of its
/// after-help text (examples, environment, exit codes) as sections of
/// their own, their lines kept as written.
fn render(cmd: &clap::Command, out: &mut Vec<u8>) -> std::io::Result<()> {
    let man = clap_mangen::Man::new(cmd.clone()).source(format!("cairn {VERSION}"));
    man.render_title(out)?;
    man.render_name_section(out)?;
    man.render_synopsis_section(out)?;
    man.render_description_section(out)?;
    if cmd.get_arguments().any(|a| !a.is_hide_set()) {
        man.render_options_section(out)?;
    }
    if cmd.get_subcommands().next().is_some() {
        man.render_subcommands_section(out)?;
    }
    if let Some(after) = cmd.get_after_help() {
        out.extend_from_slice(sections(&after.to_string()).as_bytes());
    }
    if cmd.get_version().is_some() {
        man.render_version_section(out)?;
    }
    Ok(())
}

/// After-help text as roff sections: a line `Heading:` (or `Heading: text`)
/// starts a section, the lines under it are kept as they are (`.nf`).
fn sections(text: &str) -> String {
    let mut out = String::new();
    let mut open = false;
    for line in text.lines() {
        let heading = (!line.starts_with(' ')).then(|| line.split_once(':')).flatten();
        if let Some((name, rest)) = heading {
            if open {
                out.push_str(".fi\n");
            }
            let name = match name {
                "Exit codes" => "EXIT STATUS".to_owned(),
                "Docs" => "SEE ALSO".to_owned(),
                other => other.to_uppercase(),
            };
            out.push_str(&format!(".SH \"{name}\"\n.nf\n"));
            open = true;
            if !rest.trim().is_empty() {
                out.push_str(&escape(rest.trim()));
                out.push('\n');
            }
        } else if open {
            out.push_str(&escape(line));
            out.push('\n');
        }
    }
    if open {
        out.push_str(".fi\n");
    }
    out
}

/// `line` as roff text: backslashes, dashes and quotes escaped, and a
/// leading `.` or `'` not read as a request.
fn escape(line: &str) -> String {
    let text = line.replace('\\', "\\e").replace('-', "\\-").replace('\'', "\\(aq");
    if text.starts_with('.') || text.starts_with("\\(aq") { format!("\\&{text}") } else { text }
}

/// `cairn version`: `cairn X.Y.Z`, or `{"version": "X.Y.Z"}`.
pub(crate) fn version(format: DocFormat) -> Result<u8, Error> {
    match format {
        DocFormat::Text => outln!("cairn {VERSION}"),
        DocFormat::Json => outln!("{}", serde_json::json!({"version": VERSION})),
    }
    Ok(exit::OK)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn after_help_sections_become_man_sections_kept_as_written() {
        let text = "Examples:\n  cairn run wf.yaml --format json\n  .hidden 'quoted'\n\nExit codes:\n  0 ok\nDocs: docs/running.md";
        assert_eq!(
            sections(text),
            ".SH \"EXAMPLES\"\n.nf\n  cairn run wf.yaml \\-\\-format json\n  .hidden \\(aqquoted\\(aq\n\n.fi\n\
             .SH \"EXIT STATUS\"\n.nf\n  0 ok\n.fi\n.SH \"SEE ALSO\"\n.nf\ndocs/running.md\n.fi\n"
        );
        assert_eq!(escape(".TH"), "\\&.TH");
    }
}
