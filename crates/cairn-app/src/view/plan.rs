//! Plans and problems as people and tools read them: text, JSON, Mermaid.

use std::fmt::Write;

use cairn_domain::plan::{Plan, ScopePlan};

/// The plan as indented text: each scope's levels, then its nested bodies.
pub fn text(plan: &Plan) -> String {
    let mut out = format!(
        "{}: {}, {}, critical path {}\n",
        plan.workflow,
        count(plan.total_steps, "step"),
        count(plan.scope.levels.len(), "level"),
        plan.scope.critical_path
    );
    scope_text(&plan.scope, 1, &mut out);
    out
}

/// `1 level`, `3 levels`.
fn count(n: usize, noun: &str) -> String {
    if n == 1 { format!("1 {noun}") } else { format!("{n} {noun}s") }
}

fn scope_text(scope: &ScopePlan, depth: usize, out: &mut String) {
    let pad = "  ".repeat(depth);
    for (n, level) in scope.levels.iter().enumerate() {
        let ids: Vec<&str> = level.iter().map(|id| id.as_str()).collect();
        let _ = writeln!(out, "{pad}level {n}: {}", ids.join(", "));
    }
    for step in &scope.steps {
        if let Some(body) = &step.body {
            let _ = writeln!(
                out,
                "{pad}{} ({}) runs {}, critical path {}:",
                step.id,
                step.kind,
                count(body.levels.len(), "level"),
                body.critical_path
            );
            scope_text(body, depth + 1, out);
        }
    }
}

/// The plan as a Mermaid flowchart; `for_each` and `loop` bodies are subgraphs.
pub fn mermaid(plan: &Plan) -> String {
    let mut out = String::from("flowchart TD\n");
    scope_mermaid(&plan.scope, "", 1, &mut out);
    out
}

fn scope_mermaid(scope: &ScopePlan, prefix: &str, depth: usize, out: &mut String) {
    let pad = "  ".repeat(depth);
    let node = |id: &str| format!("{prefix}{}", id.replace('-', "_"));
    for step in &scope.steps {
        let id = node(step.id.as_str());
        match &step.body {
            Some(body) => {
                let _ = writeln!(out, "{pad}subgraph {id} [\"{} ({})\"]", step.id, step.kind);
                scope_mermaid(body, &format!("{id}__"), depth + 1, out);
                let _ = writeln!(out, "{pad}end");
            }
            None => {
                let _ = writeln!(out, "{pad}{id}[\"{} ({})\"]", step.id, step.kind);
            }
        }
    }
    for step in &scope.steps {
        for need in &step.needs {
            let _ = writeln!(out, "{pad}{} --> {}", node(need.as_str()), node(step.id.as_str()));
        }
    }
}
