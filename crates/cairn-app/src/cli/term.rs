//! What the terminal is, and what output to it may do: colour, a redrawn
//! progress line, a width to fit tables to. Output that goes to a file or
//! a pipe stays plain text, exactly as without a terminal.

use std::io::IsTerminal;

use crate::view::list::Fit;

/// How output to one stream looks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Look {
    /// Paint with ANSI colours.
    pub colour: bool,
    /// Redraw a live line in place (the spinner of a running step).
    pub live: bool,
}

/// What the environment says about colour and the terminal.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Env {
    /// `NO_COLOR` is set to something (https://no-color.org).
    pub no_color: bool,
    /// `TERM=dumb`: a terminal that moves no cursor and shows no colour.
    pub dumb: bool,
}

impl Env {
    /// This process's environment.
    pub fn read() -> Self {
        let set = |name: &str| std::env::var_os(name).is_some_and(|v| !v.is_empty());
        Self { no_color: set("NO_COLOR"), dumb: std::env::var_os("TERM").is_some_and(|t| t == "dumb") }
    }
}

impl Look {
    /// Decides how a stream looks: colour and a live line only on a
    /// terminal (`tty`) that is not dumb, and neither with `NO_COLOR` (a
    /// person who asks for no colour gets the plain lines a pipe gets) nor
    /// with `quiet` (`-q`: no progress at all).
    pub fn decide(tty: bool, env: Env, quiet: bool) -> Self {
        let on = tty && !quiet && !env.dumb && !env.no_color;
        Self { colour: on, live: on }
    }

    /// How progress on stderr looks.
    pub fn stderr(quiet: bool) -> Self {
        Self::decide(std::io::stderr().is_terminal(), Env::read(), quiet)
    }

    /// How results on stdout look (`-q` quiets progress, never results).
    pub fn stdout() -> Self {
        Self::decide(std::io::stdout().is_terminal(), Env::read(), false)
    }
}

/// How a table printed on stdout fits: the terminal's width when stdout is
/// one (else nothing is cut), colour as [`Look::stdout`] says.
pub fn table_fit() -> Fit {
    let tty = std::io::stdout().is_terminal();
    let width = tty.then(|| width_of(&std::io::stdout())).flatten();
    Fit { width, colour: Look::stdout().colour }
}

/// The width of stderr's terminal, when it is one.
pub fn stderr_width() -> Option<usize> {
    let stderr = std::io::stderr();
    stderr.is_terminal().then(|| width_of(&stderr)).flatten()
}

/// The width of the terminal `stream` is, else `COLUMNS`.
fn width_of(stream: &impl std::os::fd::AsFd) -> Option<usize> {
    terminal_size::terminal_size_of(stream)
        .map(|(w, _)| usize::from(w.0))
        .or_else(|| std::env::var("COLUMNS").ok()?.trim().parse().ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_terminal_gets_colour_or_a_live_line() {
        let plain = Env::default();
        let no_color = Env { no_color: true, dumb: false };
        let dumb = Env { no_color: false, dumb: true };
        let on = Look { colour: true, live: true };
        let off = Look { colour: false, live: false };
        let cases = [
            // tty, env, quiet -> look
            (true, plain, false, on),
            (true, plain, true, off),
            (true, no_color, false, off),
            (true, no_color, true, off),
            (true, dumb, false, off),
            (false, plain, false, off),
            (false, plain, true, off),
            (false, no_color, false, off),
            (false, no_color, true, off),
        ];
        for (tty, env, quiet, look) in cases {
            assert_eq!(Look::decide(tty, env, quiet), look, "tty {tty}, {env:?}, quiet {quiet}");
        }
    }
}
