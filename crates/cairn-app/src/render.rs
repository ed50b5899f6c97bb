//! Plans and problems as people and tools read them: text, JSON, Mermaid.

use std::fmt::Write;

use cairn_domain::plan::{Plan, ScopePlan};

/// The plan as indented text: each scope's levels, then its nested bodies.
pub fn plan_text(plan: &Plan) -> String {
    let mut out = format!(
        "{}: {} steps, {} levels, critical path {}\n",
        plan.workflow,
        plan.total_steps,
        plan.scope.levels.len(),
        plan.scope.critical_path
    );
    scope_text(&plan.scope, 1, &mut out);
    out
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
                "{pad}{} ({}) runs {} levels, critical path {}:",
                step.id,
                step.kind,
                body.levels.len(),
                body.critical_path
            );
            scope_text(body, depth + 1, out);
        }
    }
}

/// The plan as a Mermaid flowchart; `for_each` and `loop` bodies are subgraphs.
pub fn plan_mermaid(plan: &Plan) -> String {
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
