//! Workflows generated from a seed: random DAGs of agent steps (text and
//! JSON with a schema, some behind an acceptance gate that may send them
//! back to rework), command steps, `set` steps, approval steps, `for_each`
//! fan-outs over a list and `loop`s, each reading what it needs, under a
//! retry policy that retries every class; and, last, a step that makes
//! something and a check of it that sends the run back to it
//! (`on_failure: goto`) while the check fails.
//!
//! Each fan-out names its item differently (`as: s3_it`): sibling groups
//! with the same `as` share their instances' scopes (`it/0`), so one
//! group's instances read the other's items, and which depends on timing.

use std::fmt::Write as _;

use crate::rng::Rng;

/// A generated workflow and what the fake ports must know of it.
#[derive(Debug, Clone)]
pub struct Generated {
    /// The definition, as YAML.
    pub yaml: String,
    /// The attempts every step allows (`defaults.retry.max_attempts`).
    pub max_attempts: u32,
}

/// The role every gate lists and the simulated person decides as.
pub const APPROVER: &str = "lead";

/// The program that checks what `make` made: it fails, whatever the
/// attempt, for some of what it is given (`ports`), so a `goto` is taken
/// the same way with faults and without.
pub const CHECK: &str = "check";

/// What an agent that may run again reads of why: a reviewer's comment on
/// a rework, or the failed check of a `goto`.
const FEEDBACK: &str = "{% if feedback %} fix {{ feedback }}{% endif %}";

/// One step's text, at an indent, reading the outputs of `reads`.
fn step(rng: &mut Rng, out: &mut String, indent: &str, id: &str, needs: &[String], reads: &[String]) {
    let reads: String = reads.iter().map(|r| format!(" {{{{ {r} }}}}")).collect();
    let _ = writeln!(out, "{indent}- id: {id}");
    let _ = writeln!(out, "{indent}  needs: [{}]", needs.join(", "));
    match rng.below(10) {
        0..=2 => {
            let _ = writeln!(out, "{indent}  agent: w");
            let _ = writeln!(out, "{indent}  prompt: \"{id} reads{reads}{FEEDBACK}\"");
            if rng.chance(40) {
                let _ = writeln!(out, "{indent}  accept: {{ approvers: [{APPROVER}], max_reworks: 2 }}");
            }
        }
        3..=5 => {
            let _ = writeln!(out, "{indent}  agent: w");
            let _ = writeln!(out, "{indent}  prompt: \"{id} answers in JSON from{reads}\"");
            let _ = writeln!(
                out,
                "{indent}  output: {{ schema: {{ type: object, required: [answer], properties: {{ answer: {{ type: string }} }} }} }}"
            );
        }
        6..=8 => {
            let _ = writeln!(out, "{indent}  command: [tool, {id}, \"{reads} \"]");
        }
        _ => {
            let _ = writeln!(out, "{indent}  set: {{ step: {id}, from: \"{reads} \" }}");
        }
    }
}

/// The steps of a `for_each` or `loop` body: a chain of one or two,
/// each reading `var` (the item, or the iteration) and the one before.
fn body(rng: &mut Rng, out: &mut String, var: &str) {
    let _ = writeln!(out, "    steps:");
    for j in 0..rng.range(1, 2) {
        let needs = if j == 0 { Vec::new() } else { vec![format!("i{}", j - 1)] };
        let mut reads = vec![var.to_owned()];
        reads.extend(needs.iter().map(|n| format!("steps.{n}.output")));
        step(rng, out, "      ", &format!("i{j}"), &needs, &reads);
    }
}

/// The workflow of `seed`: 2 to 10 top-level steps, each needing up to
/// three earlier ones; some are fan-outs over a list made by a `set`
/// step, some loops of one to three iterations.
pub fn generate(seed: u64) -> Generated {
    let mut rng = Rng::new(seed ^ 0x7761_6c6b);
    let max_attempts = rng.range(3, 5) as u32;
    let mut out = String::new();
    let _ = writeln!(out, "cairn: 1\nid: sim\nagents:\n  w: {{ system: You are simulated. }}");
    let _ = writeln!(out, "defaults:\n  max_parallel: {}\n  timeout: 20s", rng.range(1, 4));
    let _ = writeln!(
        out,
        "  retry: {{ max_attempts: {max_attempts}, on: [any], delay: 250ms, backoff: 2.0, max_delay: 4s }}"
    );
    let _ = writeln!(out, "steps:");
    let mut ids: Vec<String> = Vec::new();
    for i in 0..rng.range(2, 10) {
        let mut needs: Vec<String> = Vec::new();
        for _ in 0..rng.below(ids.len().min(3) as u64 + 1) {
            let pick = ids[rng.below(ids.len() as u64) as usize].clone();
            if !needs.contains(&pick) {
                needs.push(pick);
            }
        }
        let reads: Vec<String> = needs.iter().map(|n| format!("steps.{n}.output")).collect();
        let id = format!("s{i}");
        match rng.below(100) {
            0..15 => {
                let items = format!("{id}_items");
                let list: Vec<String> = (0..rng.range(1, 4)).map(|k| format!("{id}-{k}")).collect();
                let _ = writeln!(out, "  - id: {items}\n    needs: []\n    set: [{}]", list.join(", "));
                needs.push(items.clone());
                let _ = writeln!(out, "  - id: {id}\n    needs: [{}]", needs.join(", "));
                let _ = writeln!(
                    out,
                    "    for_each: {{ items: \"{{{{ steps.{items}.output }}}}\", as: {id}_it, max_parallel: {} }}",
                    rng.range(1, 3)
                );
                body(&mut rng, &mut out, &format!("{id}_it"));
                ids.push(items);
            }
            15..27 => {
                let _ = writeln!(out, "  - id: {id}\n    needs: [{}]", needs.join(", "));
                // Ended by `until` before `max_iters`, or by running them all.
                let iters = rng.range(1, 3);
                let end = if rng.chance(50) {
                    format!("until: \"{{{{ loop.index >= {} }}}}\"", iters - 1)
                } else {
                    "on_exhausted: continue".to_owned()
                };
                let _ = writeln!(out, "    loop: {{ max_iters: {}, {end} }}", iters + rng.below(2));
                body(&mut rng, &mut out, "loop.index");
            }
            27..34 => {
                // Nothing reads an approval: a rejection fails it alone.
                let _ = writeln!(out, "  - id: {id}\n    needs: [{}]", needs.join(", "));
                let _ = writeln!(
                    out,
                    "    approval: {{ message: \"{id}?\", approvers: [{APPROVER}] }}\n    on_failure: skip"
                );
                continue;
            }
            _ => step(&mut rng, &mut out, "  ", &id, &needs, &reads),
        }
        ids.push(id);
    }
    if rng.chance(40) {
        // Last, so a `goto` runs again only these two, whatever else
        // finished before it was taken.
        let needs: Vec<&String> = ids.iter().rev().take(1).collect();
        let reads: String = needs.iter().map(|n| format!(" {{{{ steps.{n}.output }}}}")).collect();
        let joined: Vec<&str> = needs.iter().map(|n| n.as_str()).collect();
        let _ = writeln!(out, "  - id: make\n    needs: [{}]", joined.join(", "));
        let _ = writeln!(out, "    agent: w\n    prompt: \"make from{reads}{FEEDBACK}\"");
        let _ = writeln!(out, "  - id: check\n    needs: [make]");
        let _ = writeln!(out, "    command: [{CHECK}, \"{{{{ steps.make.output }}}}\"]");
        let _ = writeln!(out, "    on_failure: {{ goto: make, max: 2, then: skip }}");
    }
    Generated { yaml: out, max_attempts }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    #[test]
    fn every_generated_workflow_is_valid() {
        for seed in 0..300 {
            let g = generate(seed);
            let def = cairn_domain::Definition::from_recorded("sim.yaml", &g.yaml, &BTreeMap::new());
            assert!(def.is_ok(), "seed {seed}:\n{}\n{:?}", g.yaml, def.err());
        }
    }
}
