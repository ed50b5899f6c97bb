//! What a workflow needs from its host before its first step: the
//! providers its agents (and their QA judges) name, and the handlers its
//! `uses:` steps name. A host refuses a run it cannot serve, up front,
//! instead of failing it halfway.

use std::collections::BTreeSet;

use crate::definition::{Step, StepKind, Workflow};

/// The providers and handlers a workflow's steps use.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Needs {
    /// `(agent, provider)` of every agent a step or judge uses.
    pub providers: BTreeSet<(String, String)>,
    /// Every handler a `uses:` step names.
    pub handlers: BTreeSet<String>,
}

/// What `workflow` needs, at every depth of its steps.
pub fn needs(workflow: &Workflow) -> Needs {
    let mut agents = BTreeSet::new();
    let mut needs = Needs::default();
    walk(&workflow.steps, &mut agents, &mut needs.handlers);
    needs.providers = agents
        .into_iter()
        .filter_map(|agent| workflow.agents.get(agent.as_str()).map(|a| (agent, a.provider.to_string())))
        .collect();
    needs
}

fn walk(steps: &[Step], agents: &mut BTreeSet<String>, handlers: &mut BTreeSet<String>) {
    for step in steps {
        match &step.kind {
            StepKind::Agent(a) => {
                agents.insert(a.agent.to_string());
                agents.extend(a.qa.iter().map(|qa| qa.agent.to_string()));
            }
            StepKind::Uses(u) => {
                handlers.insert(u.handler.to_string());
            }
            _ => {}
        }
        if let Some(body) = step.body() {
            walk(body, agents, handlers);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn providers_of_used_agents_and_handlers_at_every_depth() {
        let yaml = "cairn: 1\nid: n\nagents:\n  w: { provider: local }\n  j: {}\n  idle: { provider: far }\nsteps:\n  - id: a\n    agent: w\n    prompt: hi\n    qa: { agent: j, rubric: good }\n  - id: each\n    for_each: { items: '{{ [1] }}', as: x }\n    steps:\n      - id: h\n        uses: notify\n";
        let mut none = |_: &str| Err("none".to_owned());
        let wf = crate::load("n.yaml", yaml.as_bytes(), &mut none).expect("valid");
        let needs = needs(&wf);
        let providers: Vec<(&str, &str)> =
            needs.providers.iter().map(|(a, p)| (a.as_str(), p.as_str())).collect();
        assert_eq!(providers, [("j", "default"), ("w", "local")]);
        assert_eq!(needs.handlers.iter().collect::<Vec<_>>(), ["notify"]);
    }
}
