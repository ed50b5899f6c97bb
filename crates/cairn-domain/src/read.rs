//! Reads a parsed document into the typed [`Workflow`], reporting every
//! structural problem (unknown keys with a did-you-mean, missing keys, wrong
//! types, bad ids and durations, step kinds) instead of stopping at the first.
//!
//! The known keys of each mapping are exactly the keys its reader asks for,
//! so the format is written down once, here.

use std::collections::BTreeMap;

use serde_json::{Map, Value};

use crate::definition::*;
use crate::duration::Duration;
use crate::event::ErrorClass;
use crate::id::{Label, Name, StepId, WorkflowId};
use crate::label::Labels;
use crate::limits::{MAX_STEPS, MAX_TEMPLATE_BYTES};
use crate::problem::{KeyPath, Problems, Rule, did_you_mean, one_of};

/// The format version this build reads.
pub(crate) const FORMAT_VERSION: u32 = 1;

/// Names a template may not use for an iteration variable.
pub(crate) const RESERVED_NAMES: [&str; 8] =
    ["inputs", "steps", "docs", "run", "loop", "feedback", "progress", "verdict"];

/// Keys that belong to one step kind only, for precise messages when they
/// appear on another kind.
const KIND_KEYS: [(&str, &[&str]); 6] = [
    ("agent", &["prompt", "output", "qa", "clarify", "max_clarifications", "interactive"]),
    ("command", &["cwd", "env", "stdin", "allow_option_args", "confine_paths"]),
    ("for_each", &["steps"]),
    ("loop", &["steps"]),
    ("uses", &["with"]),
    ("workflow", &["with"]),
];

/// Reads a whole workflow. `None` when a problem prevents building it; the
/// problems say why. Unknown keys are reported but do not prevent building.
pub(crate) fn read_workflow(root: &Value, problems: &mut Problems) -> Option<Workflow> {
    let mut steps_seen = 0usize;
    let mut o = Obj::open(root, KeyPath::root(), "the workflow", problems)?;
    let cairn = o.req("cairn", |v, p, pr| {
        let Some(n) = v.as_u64() else {
            let msg = format!("expected the format version `{FORMAT_VERSION}`, found {}", describe(v));
            pr.push(Rule::Version, p, msg);
            return None;
        };
        if n != u64::from(FORMAT_VERSION) {
            pr.push(
                Rule::Version,
                p,
                format!("format version {n} is not supported: this cairn reads `cairn: {FORMAT_VERSION}`"),
            );
            return None;
        }
        Some(FORMAT_VERSION)
    });
    let id = o.req("id", |v, p, pr| id_of(v, p, pr, WorkflowId::new));
    let name = o.opt("name", string);
    let version = o.opt("version", scalar_text);
    let description = o.opt("description", string);
    let timeout = o.opt("timeout", duration);
    let tags = o.or("tags", Vec::new(), |v, p, pr| list(v, p, pr, string));
    let labels = o.or("labels", Labels::new(), labels);
    let on = o.opt("on", triggers);
    let inputs = o.or("inputs", BTreeMap::new(), |v, p, pr| named_map(v, p, pr, input_def));
    let agents = o.or("agents", BTreeMap::new(), |v, p, pr| named_map(v, p, pr, agent_def));
    let defaults = o.or("defaults", Defaults::default(), defaults);
    let steps = o.req("steps", |v, p, pr| steps(v, p, pr, &mut steps_seen));
    o.finish();
    // Recover from problems in the other parts with defaults, so the checks
    // across steps still run; the problems already make the load fail.
    Some(Workflow {
        cairn: cairn.unwrap_or(FORMAT_VERSION),
        id: id.or_else(|| WorkflowId::new("invalid").ok())?,
        name,
        version,
        description,
        timeout,
        tags: tags.unwrap_or_default(),
        labels: labels.unwrap_or_default(),
        on,
        inputs: inputs.unwrap_or_default(),
        agents: agents.unwrap_or_default(),
        defaults: defaults.unwrap_or_default(),
        steps: steps?,
    })
}

/// `on:`: a cron `schedule` and a `webhook` switch.
fn triggers(v: &Value, p: &KeyPath, pr: &mut Problems) -> Option<crate::schedule::Triggers> {
    let mut o = Obj::open(v, p.clone(), "`on`", pr)?;
    let schedule = o.maybe("schedule", |v, p, pr| {
        let text = string(v, p, pr)?;
        crate::schedule::Schedule::parse(&text).map_err(|e| pr.push(Rule::WrongType, p, e)).ok()
    });
    let webhook = o.or("webhook", false, boolean);
    o.finish();
    Some(crate::schedule::Triggers { schedule: schedule?, webhook: webhook? })
}

/// A mapping being read: remembers which keys were asked for, so that
/// [`Obj::finish`] can report the others.
struct Obj<'v, 'p> {
    map: &'v Map<String, Value>,
    path: KeyPath,
    known: Vec<&'static str>,
    problems: &'p mut Problems,
}

impl<'v, 'p> Obj<'v, 'p> {
    fn open(value: &'v Value, path: KeyPath, what: &str, problems: &'p mut Problems) -> Option<Self> {
        match value {
            Value::Object(map) => Some(Self { map, path, known: Vec::new(), problems }),
            other => {
                problems.push(
                    Rule::WrongType,
                    &path,
                    format!("{what} must be a mapping, found {}", describe(other)),
                );
                None
            }
        }
    }

    fn has(&self, key: &str) -> bool {
        self.map.get(key).is_some_and(|v| !v.is_null())
    }

    /// Marks `key` as known and reads it: `None` when absent or null,
    /// otherwise what `f` made of it (`None` inside when it was invalid).
    fn entry<T>(
        &mut self,
        key: &'static str,
        f: impl FnOnce(&'v Value, &KeyPath, &mut Problems) -> Option<T>,
    ) -> Option<Option<T>> {
        self.known.push(key);
        match self.map.get(key) {
            None | Some(Value::Null) => None,
            Some(v) => Some(f(v, &self.path.key(key), self.problems)),
        }
    }

    /// Reads an optional key; absent and invalid both give `None`.
    fn opt<T>(
        &mut self,
        key: &'static str,
        f: impl FnOnce(&'v Value, &KeyPath, &mut Problems) -> Option<T>,
    ) -> Option<T> {
        self.entry(key, f).flatten()
    }

    /// Reads an optional key: `Some(None)` when absent, `None` when present and invalid.
    fn maybe<T>(
        &mut self,
        key: &'static str,
        f: impl FnOnce(&'v Value, &KeyPath, &mut Problems) -> Option<T>,
    ) -> Option<Option<T>> {
        self.entry(key, f).map_or(Some(None), |read| read.map(Some))
    }

    /// Reads an optional key with a default; `None` only when present and invalid.
    fn or<T>(
        &mut self,
        key: &'static str,
        default: T,
        f: impl FnOnce(&'v Value, &KeyPath, &mut Problems) -> Option<T>,
    ) -> Option<T> {
        self.entry(key, f).unwrap_or(Some(default))
    }

    /// Reads a required key; its absence is a problem.
    fn req<T>(
        &mut self,
        key: &'static str,
        f: impl FnOnce(&'v Value, &KeyPath, &mut Problems) -> Option<T>,
    ) -> Option<T> {
        let read = self.entry(key, f);
        if read.is_none() {
            self.problems.push(Rule::MissingKey, &self.path, format!("missing required key `{key}`"));
        }
        read.flatten()
    }

    /// Reports every key that was not asked for.
    fn finish(self) {
        self.finish_with(&[], |_| None);
    }

    /// Like [`Obj::finish`], suggesting `also` too, with a better message for some keys.
    fn finish_with(self, also: &[&str], explain: impl Fn(&str) -> Option<String>) {
        for key in self.map.keys() {
            if self.known.contains(&key.as_str()) {
                continue;
            }
            let message = explain(key).unwrap_or_else(|| {
                let candidates = self.known.iter().chain(also).copied();
                format!("unknown key `{key}`{}", did_you_mean(key, candidates))
            });
            self.problems.push(Rule::UnknownKey, &self.path.key(key), message);
        }
    }
}

/// "a list", "the string `x`": what a value is, for messages.
fn describe(v: &Value) -> String {
    match v {
        Value::Null => "nothing".into(),
        Value::Bool(b) => format!("the boolean `{b}`"),
        Value::Number(n) => format!("the number `{n}`"),
        Value::String(s) if s.chars().count() > 40 => "a string".into(),
        Value::String(s) => format!("the string `{s}`"),
        Value::Array(_) => "a list".into(),
        Value::Object(_) => "a mapping".into(),
    }
}

fn wrong(p: &KeyPath, pr: &mut Problems, expected: &str, v: &Value) -> Option<std::convert::Infallible> {
    pr.push(Rule::WrongType, p, format!("expected {expected}, found {}", describe(v)));
    None
}

fn string(v: &Value, p: &KeyPath, pr: &mut Problems) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        _ => wrong(p, pr, "a string", v).map(|n| match n {}),
    }
}

/// A string, or a number or boolean read as its text (`version: 1.2`).
fn scalar_text(v: &Value, p: &KeyPath, pr: &mut Problems) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => wrong(p, pr, "a string", v).map(|n| match n {}),
    }
}

fn template(v: &Value, p: &KeyPath, pr: &mut Problems) -> Option<Template> {
    let text = scalar_text(v, p, pr)?;
    if text.len() > MAX_TEMPLATE_BYTES {
        pr.push(Rule::Limit, p, format!("template longer than {MAX_TEMPLATE_BYTES} bytes"));
        return None;
    }
    Some(Template(text))
}

fn boolean(v: &Value, p: &KeyPath, pr: &mut Problems) -> Option<bool> {
    match v {
        Value::Bool(b) => Some(*b),
        _ => wrong(p, pr, "`true` or `false`", v).map(|n| match n {}),
    }
}

fn uint(v: &Value, p: &KeyPath, pr: &mut Problems, min: u32, max: u32) -> Option<u32> {
    match v.as_u64().and_then(|n| u32::try_from(n).ok()) {
        Some(n) if (min..=max).contains(&n) => Some(n),
        Some(n) => {
            pr.push(Rule::WrongType, p, format!("{n} is out of range: use {min} to {max}"));
            None
        }
        None => wrong(p, pr, &format!("a whole number from {min} to {max}"), v).map(|n| match n {}),
    }
}

fn float(v: &Value, p: &KeyPath, pr: &mut Problems, min: f64, max: f64) -> Option<f64> {
    match v.as_f64() {
        Some(n) if (min..=max).contains(&n) => Some(n),
        Some(n) => {
            pr.push(Rule::WrongType, p, format!("{n} is out of range: use {min} to {max}"));
            None
        }
        None => wrong(p, pr, &format!("a number from {min} to {max}"), v).map(|n| match n {}),
    }
}

fn duration(v: &Value, p: &KeyPath, pr: &mut Problems) -> Option<Duration> {
    let Value::String(s) = v else {
        pr.push(Rule::BadDuration, p, format!("expected a duration such as `30s`, found {}", describe(v)));
        return None;
    };
    s.parse().map_err(|e| pr.push(Rule::BadDuration, p, format!("{e}"))).ok()
}

fn id_of<T, E: std::fmt::Display>(
    v: &Value,
    p: &KeyPath,
    pr: &mut Problems,
    make: impl Fn(String) -> Result<T, E>,
) -> Option<T> {
    let s = string(v, p, pr)?;
    make(s).map_err(|e| pr.push(Rule::BadId, p, e.to_string())).ok()
}

fn step_id(v: &Value, p: &KeyPath, pr: &mut Problems) -> Option<StepId> {
    id_of(v, p, pr, StepId::new)
}

fn name(v: &Value, p: &KeyPath, pr: &mut Problems) -> Option<Name> {
    id_of(v, p, pr, Name::new)
}

fn label(v: &Value, p: &KeyPath, pr: &mut Problems) -> Option<Label> {
    id_of(v, p, pr, Label::new)
}

/// One of a fixed set of words, with a did-you-mean.
fn choice<T: Copy>(v: &Value, p: &KeyPath, pr: &mut Problems, options: &[(&str, T)]) -> Option<T> {
    let words = || options.iter().map(|(w, _)| *w);
    match v.as_str().and_then(|s| options.iter().find(|(w, _)| *w == s)) {
        Some((_, t)) => Some(*t),
        None => {
            let hint = v.as_str().map(|s| did_you_mean(s, words())).unwrap_or_default();
            pr.push(Rule::WrongType, p, format!("expected {}, found {}{hint}", one_of(words()), describe(v)));
            None
        }
    }
}

/// A list whose items are read one by one; every item is checked even when
/// an earlier one fails.
fn list<T>(
    v: &Value,
    p: &KeyPath,
    pr: &mut Problems,
    f: impl Fn(&Value, &KeyPath, &mut Problems) -> Option<T>,
) -> Option<Vec<T>> {
    let Value::Array(items) = v else {
        return wrong(p, pr, "a list", v).map(|n| match n {});
    };
    let read: Vec<Option<T>> = items.iter().enumerate().map(|(i, item)| f(item, &p.index(i), pr)).collect();
    read.into_iter().collect()
}

/// A mapping from template names to values.
fn named_map<T>(
    v: &Value,
    p: &KeyPath,
    pr: &mut Problems,
    f: impl Fn(&Value, &KeyPath, &mut Problems) -> Option<T>,
) -> Option<BTreeMap<Name, T>> {
    let Value::Object(map) = v else {
        return wrong(p, pr, "a mapping", v).map(|n| match n {});
    };
    let mut out = BTreeMap::new();
    let mut all_read = true;
    for (key, item) in map {
        let kp = p.key(key);
        let k = Name::new(key.clone()).map_err(|e| pr.push(Rule::BadId, &kp, e.to_string())).ok();
        match (k, f(item, &kp, pr)) {
            (Some(k), Some(val)) => {
                out.insert(k, val);
            }
            _ => all_read = false,
        }
    }
    all_read.then_some(out)
}

/// `labels: {team: payments}`: checked keys, values read as text.
fn labels(v: &Value, p: &KeyPath, pr: &mut Problems) -> Option<Labels> {
    let Value::Object(map) = v else {
        return wrong(p, pr, "a mapping of label keys to values", v).map(|n| match n {});
    };
    if map.len() > crate::label::MAX_LABELS {
        let message = crate::label::LabelError::TooMany { count: map.len() }.to_string();
        pr.push(Rule::Limit, p, message);
        return None;
    }
    let mut out = Labels::new();
    let mut all_read = true;
    for (key, item) in map {
        let kp = p.key(key);
        let checked = scalar_text(item, &kp, pr).map(|value| crate::label::label(key, &value));
        match checked {
            Some(Ok((k, value))) => {
                out.insert(k, value);
            }
            Some(Err(e @ crate::label::LabelError::Key(_))) => {
                pr.push(Rule::BadId, &kp, e.to_string());
                all_read = false;
            }
            Some(Err(e)) => {
                pr.push(Rule::WrongType, &kp, e.to_string());
                all_read = false;
            }
            None => all_read = false,
        }
    }
    all_read.then_some(out)
}

fn input_def(v: &Value, p: &KeyPath, pr: &mut Problems) -> Option<InputDef> {
    // Shorthand: `name: string`.
    if v.is_string() {
        let ty = choice(v, p, pr, &InputType::ALL)?;
        return Some(InputDef { ty, required: false, default: None, description: None });
    }
    let mut o = Obj::open(v, p.clone(), "an input", pr)?;
    let ty = o.or("type", InputType::String, |v, p, pr| choice(v, p, pr, &InputType::ALL));
    let required = o.or("required", false, boolean);
    let default = o.opt("default", |v, _, _| Some(v.clone()));
    let description = o.opt("description", string);
    let default_path = o.path.key("default");
    o.finish();
    let ty = ty?;
    if let Some(d) = &default
        && !ty.admits(d)
    {
        pr.push(
            Rule::WrongType,
            &default_path,
            format!("the default is {}, not of type {}", describe(d), ty.as_str()),
        );
        return None;
    }
    Some(InputDef { ty, required: required?, default, description })
}

/// A built-in tool's name (tools of MCP servers come through `mcp:`).
fn tool(v: &Value, p: &KeyPath, pr: &mut Problems) -> Option<Label> {
    let name = label(v, p, pr)?;
    if BUILTIN_TOOLS.contains(&name.as_str()) {
        return Some(name);
    }
    let hint = did_you_mean(name.as_str(), BUILTIN_TOOLS);
    let message = format!(
        "unknown tool `{name}`{hint}: the built-in tools are {}; the tools of an MCP server come with `mcp: [SERVER]`",
        one_of(BUILTIN_TOOLS)
    );
    pr.push(Rule::WrongType, p, message);
    None
}

fn agent_def(v: &Value, p: &KeyPath, pr: &mut Problems) -> Option<AgentDef> {
    let mut o = Obj::open(v, p.clone(), "an agent", pr)?;
    let provider = o.or("provider", Label::new("default").ok()?, label);
    let model = o.opt("model", string);
    let system = o.opt("system", template);
    let temperature = o.maybe("temperature", |v, p, pr| float(v, p, pr, 0.0, 2.0));
    let max_tokens = o.maybe("max_tokens", |v, p, pr| uint(v, p, pr, 1, 10_000_000));
    let session = o.or("session", SessionMode::Fresh, |v, p, pr| {
        choice(v, p, pr, &[("fresh", SessionMode::Fresh), ("reuse", SessionMode::Reuse)])
    });
    let tools = o.or("tools", Vec::new(), |v, p, pr| list(v, p, pr, tool));
    let mcp = o.or("mcp", Vec::new(), |v, p, pr| list(v, p, pr, label));
    let context = o.or("context", Vec::new(), |v, p, pr| list(v, p, pr, string));
    let max_tool_rounds =
        o.or("max_tool_rounds", DEFAULT_TOOL_ROUNDS, |v, p, pr| uint(v, p, pr, 1, MAX_TOOL_ROUNDS));
    o.finish();
    Some(AgentDef {
        provider: provider?,
        model,
        system,
        temperature: temperature?,
        max_tokens: max_tokens?,
        session: session?,
        tools: tools?,
        mcp: mcp?,
        context: context?,
        max_tool_rounds: max_tool_rounds?,
    })
}

fn defaults(v: &Value, p: &KeyPath, pr: &mut Problems) -> Option<Defaults> {
    let built_in = Defaults::default();
    let mut o = Obj::open(v, p.clone(), "`defaults`", pr)?;
    let timeout = o.opt("timeout", duration);
    let retry = o.or("retry", RetrySpec::default(), retry_spec);
    let on_failure = o.or("on_failure", built_in.on_failure.clone(), |v, p, pr| {
        if v.is_object() {
            pr.push(
                Rule::BadGoto,
                p,
                "`goto` names a sibling step, so it belongs on a step, not in `defaults`",
            );
            return None;
        }
        on_failure(v, p, pr)
    });
    let max_parallel = o.or("max_parallel", built_in.max_parallel, |v, p, pr| uint(v, p, pr, 1, 10_000));
    let budget_usd = o.maybe("budget_usd", |v, p, pr| float(v, p, pr, 0.0, 1e9));
    o.finish();
    Some(Defaults {
        timeout,
        retry: built_in.retry.merged(&retry?),
        on_failure: on_failure?,
        max_parallel: max_parallel?,
        budget_usd: budget_usd?,
    })
}

fn retry_spec(v: &Value, p: &KeyPath, pr: &mut Problems) -> Option<RetrySpec> {
    let mut o = Obj::open(v, p.clone(), "`retry`", pr)?;
    let max_attempts = o.maybe("max_attempts", |v, p, pr| uint(v, p, pr, 1, 100));
    let delay = o.maybe("delay", duration);
    let backoff = o.maybe("backoff", |v, p, pr| float(v, p, pr, 1.0, 10.0));
    let max_delay = o.maybe("max_delay", duration);
    let jitter = o.maybe("jitter", boolean);
    let on = o.maybe("on", |v, p, pr| {
        let mut options: Vec<(&str, RetryOn)> = <ErrorClass as strum::VariantArray>::VARIANTS
            .iter()
            .map(|c| (c.as_str(), RetryOn::Class(*c)))
            .collect();
        options.push(("any", RetryOn::Any));
        list(v, p, pr, |v, p, pr| choice(v, p, pr, &options))
    });
    o.finish();
    Some(RetrySpec {
        max_attempts: max_attempts?,
        delay: delay?,
        backoff: backoff?,
        max_delay: max_delay?,
        jitter: jitter?,
        on: on?,
    })
}

fn on_failure(v: &Value, p: &KeyPath, pr: &mut Problems) -> Option<OnFailure> {
    if v.is_string() {
        return choice(v, p, pr, &FailureAction::ALL).map(OnFailure::Action);
    }
    let mut o = Obj::open(v, p.clone(), "`on_failure`", pr)?;
    let step = o.req("goto", step_id);
    let max = o.or("max", 1, |v, p, pr| uint(v, p, pr, 1, 100));
    let then = o.or("then", FailureAction::Stop, |v, p, pr| choice(v, p, pr, &FailureAction::ALL));
    o.finish();
    Some(OnFailure::Goto { step: step?, max: max?, then: then? })
}

const TIMEOUT_ACTIONS: [(&str, TimeoutAction); 3] =
    [("reject", TimeoutAction::Reject), ("approve", TimeoutAction::Approve), ("fail", TimeoutAction::Fail)];

fn accept(v: &Value, p: &KeyPath, pr: &mut Problems) -> Option<Accept> {
    let mut o = Obj::open(v, p.clone(), "`accept`", pr)?;
    let approvers = o.or("approvers", Vec::new(), |v, p, pr| list(v, p, pr, label));
    let timeout = o.maybe("timeout", duration);
    let on_timeout = o.or("on_timeout", TimeoutAction::Reject, |v, p, pr| choice(v, p, pr, &TIMEOUT_ACTIONS));
    let on_reject = o.or("on_reject", RejectAction::Rework, |v, p, pr| {
        choice(v, p, pr, &[("fail", RejectAction::Fail), ("rework", RejectAction::Rework)])
    });
    let max_reworks = o.or("max_reworks", 2, |v, p, pr| uint(v, p, pr, 0, 100));
    o.finish();
    Some(Accept {
        approvers: approvers?,
        timeout: timeout?,
        on_timeout: on_timeout?,
        on_reject: on_reject?,
        max_reworks: max_reworks?,
    })
}

fn steps(v: &Value, p: &KeyPath, pr: &mut Problems, seen: &mut usize) -> Option<Vec<Step>> {
    let Value::Array(items) = v else {
        return wrong(p, pr, "a list of steps", v).map(|n| match n {});
    };
    if items.is_empty() {
        pr.push(Rule::MissingKey, p, "needs at least one step");
        return None;
    }
    let mut out = Vec::with_capacity(items.len());
    for (i, item) in items.iter().enumerate() {
        *seen += 1;
        if *seen == MAX_STEPS + 1 {
            pr.push(Rule::Limit, &p.index(i), format!("more than {MAX_STEPS} steps in one definition"));
        }
        if *seen > MAX_STEPS {
            return None;
        }
        // A step that cannot be read is left out, so the checks across steps
        // still run on the others; its problems make the load fail anyway.
        if let Some(s) = step(item, &p.index(i), pr, seen) {
            out.push(s);
        }
    }
    Some(out)
}

fn step(v: &Value, p: &KeyPath, pr: &mut Problems, seen: &mut usize) -> Option<Step> {
    let mut o = Obj::open(v, p.clone(), "a step", pr)?;
    let kinds: Vec<&str> = StepKind::KEYS.iter().copied().filter(|k| o.has(k)).collect();
    let id = o.req("id", step_id);
    let display_name = o.opt("name", string);
    let needs = o.maybe("needs", |v, p, pr| match v {
        Value::String(_) => step_id(v, p, pr).map(|s| vec![s]),
        _ => list(v, p, pr, step_id),
    });
    let when = o.maybe("when", template);
    let timeout = o.maybe("timeout", duration);
    let retry = o.maybe("retry", retry_spec);
    let on_fail = o.maybe("on_failure", on_failure);
    let optional = o.or("optional", false, boolean);
    let produces = o.maybe("produces", name);
    let accept = o.maybe("accept", accept);
    let kind = match kinds.as_slice() {
        [one] => step_kind(one, &mut o, seen),
        [] => {
            o.known.extend(StepKind::KEYS);
            let msg = format!("a step needs one kind key: {}", one_of(StepKind::KEYS));
            o.problems.push(Rule::StepKind, &o.path, msg);
            None
        }
        many => {
            o.known.extend(StepKind::KEYS);
            o.known.extend(KIND_KEYS.iter().flat_map(|(_, keys)| keys.iter().copied()));
            let listed: Vec<String> = many.iter().map(|k| format!("`{k}`")).collect();
            let msg = format!("a step has exactly one kind key, this one has {}", listed.join(" and "));
            o.problems.push(Rule::StepKind, &o.path, msg);
            None
        }
    };
    let this_kind = kinds.first().copied().unwrap_or("");
    let all_kind_keys: Vec<&str> =
        StepKind::KEYS.iter().chain(KIND_KEYS.iter().flat_map(|(_, keys)| keys.iter())).copied().collect();
    o.finish_with(&all_kind_keys, |key| {
        KIND_KEYS
            .iter()
            .find(|(k, keys)| *k != this_kind && keys.contains(&key))
            .map(|(k, _)| format!("`{key}` is a key of `{k}` steps, and this is not one"))
    });
    Some(Step {
        id: id?,
        name: display_name,
        needs: needs?,
        when: when?,
        timeout: timeout?,
        retry: retry?,
        on_failure: on_fail?,
        optional: optional?,
        produces: produces?,
        accept: accept?,
        kind: kind?,
    })
}

fn step_kind(kind: &str, o: &mut Obj<'_, '_>, seen: &mut usize) -> Option<StepKind> {
    match kind {
        "agent" => {
            let agent = o.req("agent", name);
            let prompt = o.req("prompt", template);
            let output = o.maybe("output", output_spec);
            let qa = o.maybe("qa", qa);
            let clarify = o.or("clarify", false, boolean);
            let max_clarifications = o.or("max_clarifications", 3, |v, p, pr| uint(v, p, pr, 0, 20));
            let interactive = o.or("interactive", false, boolean);
            if let (Some(true), Some(other)) =
                (interactive, ["output", "clarify", "qa"].into_iter().find(|k| o.has(k)))
            {
                let at = o.path.key("interactive");
                let why = format!("an interactive step's output is its transcript: it takes no `{other}`");
                o.problems.push(Rule::WrongType, &at, why);
            }
            Some(StepKind::Agent(AgentStep {
                agent: agent?,
                prompt: prompt?,
                output: output?,
                qa: qa?,
                clarify: clarify?,
                max_clarifications: max_clarifications?,
                interactive: interactive?,
            }))
        }
        "command" => {
            let command = o.req("command", |v, p, pr| {
                if v.is_string() {
                    pr.push(
                        Rule::WrongType,
                        p,
                        "write the command as a list, `[program, arg, ...]`: it never goes through a shell",
                    );
                    return None;
                }
                let argv = list(v, p, pr, template)?;
                if argv.is_empty() {
                    pr.push(Rule::WrongType, p, "the command list is empty: name a program");
                    return None;
                }
                Some(argv)
            });
            let cwd = o.maybe("cwd", template);
            let env = o.or("env", BTreeMap::new(), env_map);
            let stdin = o.maybe("stdin", template);
            let allow_option_args = o.or("allow_option_args", false, boolean);
            let confine_paths = o.or("confine_paths", false, boolean);
            Some(StepKind::Command(CommandStep {
                command: command?,
                cwd: cwd?,
                env: env?,
                stdin: stdin?,
                allow_option_args: allow_option_args?,
                confine_paths: confine_paths?,
            }))
        }
        "approval" => o.req("approval", approval).map(StepKind::Approval),
        "for_each" => {
            let spec = o.req("for_each", for_each_spec);
            let body = o.req("steps", |v, p, pr| steps(v, p, pr, seen));
            let (items, as_name, key, max_parallel) = spec?;
            Some(StepKind::ForEach(ForEachStep { items, as_name, key, max_parallel, steps: body? }))
        }
        "loop" => {
            let spec = o.req("loop", loop_spec);
            let body = o.req("steps", |v, p, pr| steps(v, p, pr, seen));
            let (max_iters, until, on_exhausted) = spec?;
            Some(StepKind::Loop(LoopStep { max_iters, until, on_exhausted, steps: body? }))
        }
        "set" => o.req("set", |v, _, _| Some(v.clone())).map(|value| StepKind::Set(SetStep { value })),
        "workflow" => {
            let callee = o.req("workflow", |v, p, pr| {
                let text = string(v, p, pr)?;
                Callee::parse(&text)
                    .map_err(|e| {
                        let msg =
                            format!("{e}; or name a file beside the workflow, ending in `.yaml` or `.json`");
                        pr.push(Rule::BadId, p, msg);
                    })
                    .ok()
            });
            let with = o.or("with", Value::Object(Map::new()), |v, _, _| Some(v.clone()));
            Some(StepKind::Workflow(WorkflowStep { workflow: callee?, with: with? }))
        }
        _ => {
            let handler = o.req("uses", label);
            let with = o.or("with", Value::Object(Map::new()), |v, _, _| Some(v.clone()));
            Some(StepKind::Uses(UsesStep { handler: handler?, with: with? }))
        }
    }
}

fn env_map(v: &Value, p: &KeyPath, pr: &mut Problems) -> Option<BTreeMap<String, Template>> {
    let Value::Object(map) = v else {
        return wrong(p, pr, "a mapping of variable names to values", v).map(|n| match n {});
    };
    let mut out = Some(BTreeMap::new());
    for (k, item) in map {
        let kp = p.key(k);
        let valid = !k.is_empty()
            && !k.starts_with(|c: char| c.is_ascii_digit())
            && k.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
        if !valid {
            pr.push(Rule::BadId, &kp, format!("`{k}` is not a variable name: use A-Z, a-z, 0-9 and `_`"));
            out = None;
            continue;
        }
        if env_name_refused(k) {
            let msg = match k.to_ascii_uppercase().as_str() {
                "PATH" => format!("a step may not set `{k}`: programs are found on cairn's own PATH"),
                "CAIRN_IDEMPOTENCY_KEY" => {
                    format!("a step may not set `{k}`: cairn sets it for every attempt")
                }
                _ => format!(
                    "a step may not set `{k}`: it changes what the dynamic loader puts into the program"
                ),
            };
            pr.push(Rule::BadId, &kp, msg);
            out = None;
            continue;
        }
        match (template(item, &kp, pr), out.as_mut()) {
            (Some(t), Some(m)) => {
                m.insert(k.clone(), t);
            }
            _ => out = None,
        }
    }
    out
}

fn approval(v: &Value, p: &KeyPath, pr: &mut Problems) -> Option<ApprovalStep> {
    let mut o = Obj::open(v, p.clone(), "`approval`", pr)?;
    let message = o.req("message", template);
    let approvers = o.or("approvers", Vec::new(), |v, p, pr| list(v, p, pr, label));
    let timeout = o.maybe("timeout", duration);
    let on_timeout = o.or("on_timeout", TimeoutAction::Reject, |v, p, pr| choice(v, p, pr, &TIMEOUT_ACTIONS));
    o.finish();
    Some(ApprovalStep {
        message: message?,
        approvers: approvers?,
        timeout: timeout?,
        on_timeout: on_timeout?,
    })
}

fn output_spec(v: &Value, p: &KeyPath, pr: &mut Problems) -> Option<OutputSpec> {
    let mut o = Obj::open(v, p.clone(), "`output`", pr)?;
    let format = o.maybe("format", |v, p, pr| {
        choice(v, p, pr, &[("text", OutputFormat::Text), ("json", OutputFormat::Json)])
    });
    let schema = o.maybe("schema", |v, p, pr| match v {
        Value::String(file) => Some(Schema { file: Some(file.clone()), document: Value::Null }),
        Value::Object(_) | Value::Bool(_) => Some(Schema { file: None, document: v.clone() }),
        _ => wrong(p, pr, "a JSON Schema (a mapping) or a file path", v).map(|n| match n {}),
    });
    let repair_attempts = o.or("repair_attempts", 2, |v, p, pr| uint(v, p, pr, 0, 20));
    let format_path = o.path.key("format");
    o.finish();
    let schema = schema?;
    let format = match format? {
        Some(f) => f,
        None if schema.is_some() => OutputFormat::Json,
        None => OutputFormat::Text,
    };
    if format == OutputFormat::Text && schema.is_some() {
        pr.push(
            Rule::WrongType,
            &format_path,
            "a schema validates JSON: use `format: json` or drop the schema",
        );
        return None;
    }
    Some(OutputSpec { format, schema, repair_attempts: repair_attempts? })
}

fn qa(v: &Value, p: &KeyPath, pr: &mut Problems) -> Option<Qa> {
    let mut o = Obj::open(v, p.clone(), "`qa`", pr)?;
    let agent = o.req("agent", name);
    let rubric = o.req("rubric", template);
    let pass_when = o.or("pass_when", Template("{{ verdict.pass }}".into()), template);
    o.finish();
    Some(Qa { agent: agent?, rubric: rubric?, pass_when: pass_when? })
}

type ForEachSpec = (Template, Name, Option<String>, Option<u32>);

fn for_each_spec(v: &Value, p: &KeyPath, pr: &mut Problems) -> Option<ForEachSpec> {
    let mut o = Obj::open(v, p.clone(), "`for_each`", pr)?;
    let items = o.req("items", template);
    let as_name = o.or("as", Name::new("item").ok()?, |v, p, pr| {
        let n = name(v, p, pr)?;
        if RESERVED_NAMES.contains(&n.as_str()) {
            pr.push(Rule::ReservedName, p, format!("`{n}` is a reserved template name; pick another"));
            return None;
        }
        Some(n)
    });
    let key = o.maybe("key", string);
    let max_parallel = o.maybe("max_parallel", |v, p, pr| uint(v, p, pr, 1, 10_000));
    o.finish();
    Some((items?, as_name?, key?, max_parallel?))
}

fn loop_spec(v: &Value, p: &KeyPath, pr: &mut Problems) -> Option<(u32, Option<Template>, Exhausted)> {
    let mut o = Obj::open(v, p.clone(), "`loop`", pr)?;
    let max_iters = o.req("max_iters", |v, p, pr| uint(v, p, pr, 1, 10_000));
    let until = o.maybe("until", template);
    let on_exhausted = o.or("on_exhausted", Exhausted::Fail, |v, p, pr| {
        choice(v, p, pr, &[("fail", Exhausted::Fail), ("continue", Exhausted::Continue)])
    });
    o.finish();
    Some((max_iters?, until?, on_exhausted?))
}
