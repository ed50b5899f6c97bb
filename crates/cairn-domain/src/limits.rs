//! Input limits, and the cheap pre-scan that enforces the nesting limit before
//! any parser sees the text. A hostile file (50 MB, nested 100,000 deep, an
//! alias bomb) is refused in milliseconds with a clear message, never a hang,
//! a stack overflow or a huge allocation.

use crate::problem::{Location, Problem, Rule};

/// The largest definition file read, in bytes (8 MiB: about 80,000 steps of
/// ordinary size; real workflows are a few KiB).
pub const MAX_FILE_BYTES: u64 = 8 * 1024 * 1024;
/// The deepest nesting of mappings and lists (a workflow nested 10 groups
/// deep is about 25 levels).
pub const MAX_DEPTH: usize = 64;
/// The most steps in one definition, counting nested ones.
pub const MAX_STEPS: usize = 20_000;
/// Sub-workflows nest at most this deep: a run's child is at depth 1, its
/// grandchild at 2. Loading refuses deeper files; a run refuses to start a
/// child past it (a recursion through the catalog that no file shows).
pub const MAX_CALL_DEPTH: u32 = 8;
/// The longest single template, in bytes.
pub const MAX_TEMPLATE_BYTES: usize = 256 * 1024;

/// Over-estimates the nesting depth of a YAML or JSON text without parsing
/// it, and refuses it past [`MAX_DEPTH`]. Linear time, constant memory.
///
/// The estimate counts flow brackets (`[`, `{`) outside quotes and comments,
/// block indentation levels, and compact `- ` / `? ` indicators; block
/// scalars (`|`, `>`) are skipped. It never under-counts a real nesting, so a
/// file it passes cannot make the parser recurse deeper than the limit.
pub fn check_depth(text: &str) -> Result<(), Problem> {
    let mut scan = DepthScan::default();
    for (number, line) in text.lines().enumerate() {
        if let Some(depth) = scan.line(line)
            && depth > MAX_DEPTH
        {
            return Err(Problem::at(
                Rule::Limit,
                Some(Location { line: number + 1, column: 1 }),
                format!("nesting deeper than {MAX_DEPTH} levels: flatten the document"),
            ));
        }
    }
    Ok(())
}

#[derive(Default)]
struct DepthScan {
    /// Open flow collections.
    flow: usize,
    /// Inside a quoted scalar that may span lines: its quote character.
    quote: Option<u8>,
    /// Inside a block scalar: the indentation of the line that opened it.
    block_scalar: Option<usize>,
    /// Indentations of the open block levels.
    indents: Vec<usize>,
    /// Depth of the block context where the current flow collection began.
    base: usize,
}

impl DepthScan {
    /// Scans one line; returns the deepest nesting seen on it.
    fn line(&mut self, line: &str) -> Option<usize> {
        let bytes = line.as_bytes();
        let indent = bytes.iter().take_while(|b| **b == b' ').count();
        let blank = bytes[indent..].iter().all(|b| b.is_ascii_whitespace());
        if let Some(parent) = self.block_scalar {
            if blank || indent > parent {
                return None;
            }
            self.block_scalar = None;
        }
        let mut deepest = self.base + self.flow;
        let mut at_node_start = true;
        let mut i = 0;
        if self.quote.is_none() && self.flow == 0 {
            if blank || bytes[indent] == b'#' {
                return None;
            }
            while self.indents.last().is_some_and(|top| *top > indent) {
                self.indents.pop();
            }
            if self.indents.last().is_none_or(|top| *top < indent) {
                self.indents.push(indent);
            }
            self.base = self.indents.len();
            deepest = self.base;
            i = indent;
        }
        while i < bytes.len() {
            let c = bytes[i];
            let next_is_blank = bytes.get(i + 1).is_none_or(|n| *n == b' ' || *n == b'\t');
            if let Some(q) = self.quote {
                if q == b'"' && c == b'\\' {
                    i += 2;
                    continue;
                }
                if c == q {
                    if q == b'\'' && bytes.get(i + 1) == Some(&b'\'') {
                        i += 2;
                        continue;
                    }
                    self.quote = None;
                    at_node_start = false;
                }
                i += 1;
                continue;
            }
            let after_space = i == 0 || bytes[i - 1] == b' ' || bytes[i - 1] == b'\t';
            match c {
                b'#' if after_space => break,
                b' ' | b'\t' => {}
                b'[' | b'{' if at_node_start || self.flow > 0 => {
                    self.flow += 1;
                    at_node_start = true;
                    deepest = deepest.max(self.base + self.flow);
                }
                b']' | b'}' if self.flow > 0 => {
                    self.flow -= 1;
                    at_node_start = false;
                }
                b',' if self.flow > 0 => at_node_start = true,
                b'"' | b'\'' if at_node_start => self.quote = Some(c),
                b'-' | b'?' if at_node_start && self.flow == 0 && next_is_blank => {
                    self.base += 1;
                    deepest = deepest.max(self.base);
                }
                b'|' | b'>' if at_node_start && self.flow == 0 => {
                    self.block_scalar = Some(indent);
                    break;
                }
                b':' if next_is_blank
                    || (self.flow > 0 && matches!(bytes.get(i + 1), Some(b',' | b']' | b'}' | b'"'))) =>
                {
                    at_node_start = true;
                }
                b'&' | b'!' if at_node_start => {
                    while i < bytes.len() && bytes[i] != b' ' {
                        i += 1;
                    }
                    continue;
                }
                _ => at_node_start = false,
            }
            i += 1;
        }
        Some(deepest)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn depth(text: &str) -> usize {
        let mut scan = DepthScan::default();
        text.lines().filter_map(|l| scan.line(l)).max().unwrap_or(0)
    }

    #[test]
    fn counts_block_flow_and_compact_nesting() {
        assert_eq!(depth("a: 1\nb: 2\n"), 1);
        assert_eq!(depth("a:\n  b:\n    c: 1\n"), 3);
        assert_eq!(depth("a: [1, [2, {b: 3}]]\n"), 4);
        assert_eq!(depth("- - - x\n"), 4);
        assert!(depth("{\"a\": {\"b\": [1]}}") >= 3);
    }

    #[test]
    fn ignores_brackets_in_text_quotes_comments_and_block_scalars() {
        let text = "prompt: |\n  fn main() { [[[[ }\nname: 'a [ b'\nx: \"{{ y }}\" # [[[\ny: it's [fine]\n";
        assert!(depth(text) <= 2, "{}", depth(text));
    }

    #[test]
    fn refuses_deep_flow_and_compact_nesting_fast() {
        let flow = "[".repeat(100_000);
        assert!(check_depth(&flow).is_err());
        let compact = "- ".repeat(100_000);
        assert!(check_depth(&compact).is_err());
        let json = format!("{}1{}", "{\"a\":".repeat(1000), "}".repeat(1000));
        assert!(check_depth(&json).is_err());
    }

    #[test]
    fn passes_ordinary_workflows() {
        let text = "cairn: 1\nid: x\nsteps:\n  - id: a\n    prompt: \"{{ inputs.x }}\"\n    retry: { max_attempts: 3, on: [transient] }\n";
        assert!(check_depth(text).is_ok());
    }
}
