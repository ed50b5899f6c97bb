//! Cross-step checks on a structurally valid definition: duplicate ids,
//! `needs`, cycles, `goto` targets, agent names, templates (syntax, and every
//! name they read), and output schemas.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::rc::Rc;

use minijinja::Environment;
use serde_json::Value;

use crate::dag::{Dag, Reach};
use crate::definition::{OnFailure, Schema, Step, StepKind, Template, Workflow};
use crate::include;
use crate::problem::{KeyPath, Problems, Rule, Seg, did_you_mean, one_of};
use crate::source::{self, Format};
use crate::template::{self, GLOBAL_FUNCTIONS};

/// What a template may read after `steps.ID.`.
pub(crate) const STEP_FIELDS: [&str; 4] = ["output", "status", "attempts", "error"];
/// What a template may read after `run.`.
pub(crate) const RUN_FIELDS: [&str; 2] = ["id", "workflow"];

/// Reads a file named by the definition (a schema), relative to the
/// definition's own folder. Injected so the domain stays free of I/O.
pub type ReadFile<'a> = dyn FnMut(&str) -> Result<String, String> + 'a;

/// Runs every cross-step check, and loads file schemas into `wf`. `root` is
/// the document `wf` was read from: ids of steps that could not be read are
/// taken from it, so that references to them are not reported twice.
pub(crate) fn validate(
    wf: &mut Workflow,
    root: &Value,
    read_file: &mut ReadFile<'_>,
    problems: &mut Problems,
) {
    let mut produced = BTreeSet::new();
    let mut nested = BTreeMap::new();
    index_tree(&wf.steps, None, &mut produced, &mut nested);
    let mut unread = BTreeSet::new();
    raw_step_ids(root, &mut unread);
    let mut read = BTreeSet::new();
    read_step_ids(&wf.steps, &mut read);
    unread.retain(|id| !read.contains(id));
    let mut checker = Checker {
        root,
        inputs: declared(root, "inputs"),
        agents: declared(root, "agents"),
        produced,
        nested,
        unread,
        env: template::environment(),
        problems,
        read_file,
    };
    let top = Ctx::default();
    for (name, agent) in &mut wf.agents {
        if let Some(system) = &mut agent.system {
            let path = KeyPath::root().key("agents").key(name.as_str()).key("system");
            if checker.include(&path, system) {
                checker.template(&path, system, &top, &[]);
            }
        }
    }
    let mut steps = std::mem::take(&mut wf.steps);
    checker.scope(&mut steps, &KeyPath::root().key("steps"), &top, false);
    wf.steps = steps;
}

/// The names declared under a top-level mapping, read or not.
fn declared(root: &Value, key: &str) -> BTreeSet<String> {
    root.get(key).and_then(Value::as_object).map(|m| m.keys().cloned().collect()).unwrap_or_default()
}

/// Every step id written in the document, at any depth.
fn raw_step_ids(node: &Value, out: &mut BTreeSet<String>) {
    for step in node.get("steps").and_then(Value::as_array).into_iter().flatten() {
        if let Some(id) = step.get("id").and_then(Value::as_str) {
            out.insert(id.to_owned());
        }
        raw_step_ids(step, out);
    }
}

/// Every step id of the read tree.
fn read_step_ids(steps: &[Step], out: &mut BTreeSet<String>) {
    for step in steps {
        out.insert(step.id.to_string());
        if let Some(body) = step.body() {
            read_step_ids(body, out);
        }
    }
}

/// The steps of a cycle named in a cycle problem; a longer one is named by
/// its first steps and its length, so the message stays one short line.
const CYCLE_NAMED: usize = 6;

/// `dependency cycle: a -> b -> a` for `names` (the first repeated at the
/// end), or `dependency cycle of 15000 steps: s1 -> ... -> s6 -> ... -> s1`.
fn cycle_message(names: &[&str]) -> String {
    let steps = names.len().saturating_sub(1);
    if steps <= CYCLE_NAMED {
        return format!("dependency cycle: {}", names.join(" -> "));
    }
    let first = names[..CYCLE_NAMED].join(" -> ");
    format!("dependency cycle of {steps} steps: {first} -> ... -> {}", names[0])
}

/// Collects document types produced anywhere, and which group each nested step id lives in.
fn index_tree(
    steps: &[Step],
    group: Option<&str>,
    produced: &mut BTreeSet<String>,
    nested: &mut BTreeMap<String, String>,
) {
    for step in steps {
        if let Some(p) = &step.produces {
            produced.insert(p.to_string());
        }
        if let Some(g) = group {
            nested.entry(step.id.to_string()).or_insert_with(|| g.to_owned());
        }
        if let Some(body) = step.body() {
            index_tree(body, Some(step.id.as_str()), produced, nested);
        }
    }
}

/// The steps of one sibling list, and which of them each step may read.
struct ScopeIds {
    ids: Vec<String>,
    index: HashMap<String, usize>,
    /// Transitive needs; `None` when the list has a cycle (reported already:
    /// every sibling then counts as readable, to avoid noise).
    reach: Option<Reach>,
}

/// A scope on the way from a template out to the run.
#[derive(Clone)]
struct Frame {
    scope: Rc<ScopeIds>,
    /// The step whose template is checked; `None`: all steps of the scope
    /// have finished (a loop's `until`, checked after an iteration).
    row: Option<usize>,
    /// A loop body: a sibling that has not run yet in this iteration is
    /// read from the previous one, so every sibling is readable.
    carried: bool,
}

/// What a template at some place may read. Cheap to clone: frames share
/// their scope's tables, so checking n steps costs no n² copies.
#[derive(Default, Clone)]
struct Ctx {
    /// Innermost scope last.
    frames: Vec<Frame>,
    /// Iteration variables in scope.
    vars: Vec<String>,
    /// Inside a loop body (`loop.index` is defined).
    in_loop: bool,
}

impl Ctx {
    /// Whether `steps.ID` is guaranteed to have finished. The innermost scope
    /// that has the id decides, as lookups at run time do.
    fn readable(&self, id: &str) -> bool {
        self.frames.iter().rev().find_map(|f| f.scope.index.get(id).map(|&j| f.can_read(j))).unwrap_or(false)
    }

    /// Every id `readable` accepts, for suggestions.
    fn readable_ids(&self) -> Vec<&str> {
        self.frames
            .iter()
            .flat_map(|f| {
                f.scope.ids.iter().enumerate().filter(|(j, _)| f.can_read(*j)).map(|(_, id)| id.as_str())
            })
            .collect()
    }

    /// The innermost scope has a step of this id.
    fn is_sibling(&self, id: &str) -> bool {
        self.frames.last().is_some_and(|f| f.scope.index.contains_key(id))
    }

    /// The id of the step being checked.
    fn own(&self) -> Option<&str> {
        let f = self.frames.last()?;
        f.row.and_then(|r| f.scope.ids.get(r)).map(String::as_str)
    }

    /// Some scope of this context has a step of this id.
    fn has(&self, id: &str) -> bool {
        self.frames.iter().any(|f| f.scope.index.contains_key(id))
    }
}

impl Frame {
    fn can_read(&self, j: usize) -> bool {
        if self.carried {
            return true;
        }
        match (self.row, &self.scope.reach) {
            (Some(i), Some(reach)) => reach.needs(i, j),
            _ => true,
        }
    }
}

struct Checker<'a, 'r> {
    root: &'a Value,
    inputs: BTreeSet<String>,
    agents: BTreeSet<String>,
    produced: BTreeSet<String>,
    nested: BTreeMap<String, String>,
    /// Ids of steps that could not be read; their problems are reported already.
    unread: BTreeSet<String>,
    env: Environment<'static>,
    problems: &'a mut Problems,
    read_file: &'a mut ReadFile<'r>,
}

impl Checker<'_, '_> {
    /// Where each read step sits in the document's list at `path`: steps that
    /// could not be read are left out of `steps`, so indexes differ.
    fn positions(&self, path: &KeyPath, steps: &[Step]) -> Vec<usize> {
        let mut node = Some(self.root);
        for seg in &path.0 {
            node = match seg {
                Seg::Key(k) => node.and_then(|n| n.get(k)),
                Seg::Index(i) => node.and_then(|n| n.get(*i)),
            };
        }
        let raw = node.and_then(Value::as_array).map(Vec::as_slice).unwrap_or_default();
        let mut cursor = 0;
        steps
            .iter()
            .enumerate()
            .map(|(i, step)| {
                let found = raw[cursor.min(raw.len())..]
                    .iter()
                    .position(|r| r.get("id").and_then(Value::as_str) == Some(step.id.as_str()));
                match found {
                    Some(offset) => {
                        cursor += offset + 1;
                        cursor - 1
                    }
                    None => i,
                }
            })
            .collect()
    }

    /// Checks one sibling list; returns its id tables for a loop's `until`.
    fn scope(&mut self, steps: &mut [Step], list: &KeyPath, outer: &Ctx, carried: bool) -> Rc<ScopeIds> {
        let positions = self.positions(list, steps);
        let at = |i: usize| list.index(positions[i]);
        let mut first_at: BTreeMap<&str, usize> = BTreeMap::new();
        for (i, step) in steps.iter().enumerate() {
            if let Some(j) = first_at.insert(step.id.as_str(), i) {
                first_at.insert(step.id.as_str(), j);
                self.problems.push(
                    Rule::DuplicateId,
                    &at(i).key("id"),
                    format!("the id `{}` is already used by steps[{}]", step.id, positions[j]),
                );
            }
        }
        // Sibling groups keep their instances in scopes named by `as`: two
        // that share the name would read each other's items.
        let mut first_as: BTreeMap<&str, usize> = BTreeMap::new();
        for (i, step) in steps.iter().enumerate() {
            let StepKind::ForEach(g) = &step.kind else { continue };
            if let Some(&j) = first_as.get(g.as_name.as_str()) {
                self.problems.push(
                    Rule::DuplicateId,
                    &at(i).key("for_each").key("as"),
                    format!(
                        "`as: {}` is also the item name of the sibling `for_each` steps[{}]: sibling groups \
                         need names of their own",
                        g.as_name, positions[j]
                    ),
                );
            } else {
                first_as.insert(g.as_name.as_str(), i);
            }
        }
        let ids: Vec<String> = steps.iter().map(|s| s.id.to_string()).collect();
        let mut index = HashMap::with_capacity(ids.len());
        for (i, id) in ids.iter().enumerate() {
            index.entry(id.clone()).or_insert(i);
        }
        for (i, step) in steps.iter().enumerate() {
            for (j, need) in step.needs.iter().flatten().enumerate() {
                let need_at = at(i).key("needs").index(j);
                if need == &step.id {
                    self.problems.push(Rule::Cycle, &need_at, format!("dependency cycle: {need} -> {need}"));
                } else if !index.contains_key(need.as_str()) && !self.unread.contains(need.as_str()) {
                    let hint = if outer.has(need.as_str()) {
                        format!(" (`{need}` is outside this group: put it in the group's own `needs`)")
                    } else {
                        self.unknown_step_hint(need.as_str(), ids.iter().map(String::as_str))
                    };
                    let msg = format!("needs unknown step `{need}`{hint}");
                    self.problems.push(Rule::UnknownNeed, &need_at, msg);
                }
            }
        }
        let dag = Dag::of_steps(steps);
        let reach = match dag.find_cycle() {
            Some(cycle) if cycle.len() > 2 => {
                let names: Vec<&str> = cycle.iter().map(|&i| steps[i].id.as_str()).collect();
                let msg = cycle_message(&names);
                self.problems.push(Rule::Cycle, &at(cycle[0]).key("needs"), msg);
                None
            }
            _ => dag.reach(),
        };
        let scope = Rc::new(ScopeIds { ids, index, reach });
        for i in 0..steps.len() {
            let mut ctx = outer.clone();
            ctx.frames.push(Frame { scope: Rc::clone(&scope), row: Some(i), carried });
            self.goto(steps, i, &at(i));
            self.step(&mut steps[i], &at(i), &ctx);
        }
        scope
    }

    fn goto(&mut self, steps: &[Step], i: usize, path: &KeyPath) {
        let Some(OnFailure::Goto { step: target, .. }) = &steps[i].on_failure else {
            return;
        };
        let at = path.key("on_failure").key("goto");
        match steps.iter().position(|s| &s.id == target) {
            Some(t) if t < i => {}
            Some(t) if t == i => {
                self.problems.push(
                    Rule::BadGoto,
                    &at,
                    "`goto` names the step itself: use `retry` to run a step again",
                );
            }
            Some(_) => self.problems.push(
                Rule::BadGoto,
                &at,
                format!("`goto: {target}` jumps forward: the target must be an earlier sibling"),
            ),
            None if self.unread.contains(target.as_str()) => {}
            None => {
                let earlier = steps[..i].iter().map(|s| s.id.as_str());
                let msg = format!(
                    "`goto: {target}` names no sibling step{}",
                    did_you_mean(target.as_str(), earlier)
                );
                self.problems.push(Rule::BadGoto, &at, msg);
            }
        }
    }

    fn step(&mut self, step: &mut Step, path: &KeyPath, ctx: &Ctx) {
        if let Some(when) = &step.when {
            self.template(&path.key("when"), when, ctx, &[]);
        }
        match &mut step.kind {
            StepKind::Agent(a) => {
                self.agent(&path.key("agent"), a.agent.as_str());
                if self.include(&path.key("prompt"), &mut a.prompt) {
                    self.template(&path.key("prompt"), &a.prompt, ctx, &[]);
                }
                if let Some(schema) = a.output.as_mut().and_then(|o| o.schema.as_mut()) {
                    self.schema(&path.key("output").key("schema"), schema);
                }
                if let Some(qa) = &a.qa {
                    let qp = path.key("qa");
                    self.agent(&qp.key("agent"), qa.agent.as_str());
                    self.template(&qp.key("rubric"), &qa.rubric, ctx, &[]);
                    self.template(&qp.key("pass_when"), &qa.pass_when, ctx, &["verdict"]);
                }
            }
            StepKind::Command(c) => {
                for (i, arg) in c.command.iter().enumerate() {
                    self.template(&path.key("command").index(i), arg, ctx, &[]);
                }
                if let Some(cwd) = &c.cwd {
                    self.template(&path.key("cwd"), cwd, ctx, &[]);
                }
                for (k, v) in &c.env {
                    self.template(&path.key("env").key(k), v, ctx, &[]);
                }
                if let Some(stdin) = &c.stdin {
                    self.template(&path.key("stdin"), stdin, ctx, &[]);
                }
            }
            StepKind::Approval(a) => {
                self.template(&path.key("approval").key("message"), &a.message, ctx, &[])
            }
            StepKind::Set(s) => self.value_templates(&path.key("set"), &s.value, ctx),
            StepKind::Uses(u) => self.value_templates(&path.key("with"), &u.with, ctx),
            StepKind::Workflow(w) => {
                self.value_templates(&path.key("with"), &w.with, ctx);
                if step.timeout.is_some() {
                    let msg = "a `workflow:` step keeps no `timeout` of its own: set `timeout:` at the top of the workflow it runs";
                    self.problems.push(Rule::BadCall, &path.key("timeout"), msg);
                }
            }
            StepKind::ForEach(g) => {
                self.template(&path.key("for_each").key("items"), &g.items, ctx, &[]);
                let mut inner = ctx.clone();
                if ctx.vars.iter().any(|v| v == g.as_name.as_str()) {
                    let msg = format!(
                        "`as: {}` hides the item of an enclosing `for_each` of the same name; pick another",
                        g.as_name
                    );
                    self.problems.push(Rule::ReservedName, &path.key("for_each").key("as"), msg);
                }
                inner.vars.push(g.as_name.to_string());
                self.scope(&mut g.steps, &path.key("steps"), &inner, false);
            }
            StepKind::Loop(l) => {
                let mut inner = ctx.clone();
                inner.in_loop = true;
                let body = self.scope(&mut l.steps, &path.key("steps"), &inner, true);
                if let Some(until) = &l.until {
                    inner.frames.push(Frame { scope: body, row: None, carried: false });
                    self.template(&path.key("loop").key("until"), until, &inner, &[]);
                }
            }
        }
    }

    fn agent(&mut self, path: &KeyPath, name: &str) {
        if self.agents.contains(name) {
            return;
        }
        let msg = if self.agents.is_empty() {
            format!("unknown agent `{name}`: no agents are declared (add one under `agents:`)")
        } else {
            format!("unknown agent `{name}`{}", did_you_mean(name, self.agents.iter().map(String::as_str)))
        };
        self.problems.push(Rule::UnknownAgent, path, msg);
    }

    /// Every string inside a `set` or `with` value is a template.
    fn value_templates(&mut self, path: &KeyPath, value: &Value, ctx: &Ctx) {
        match value {
            Value::String(s) => self.template(path, &Template(s.clone()), ctx, &[]),
            Value::Array(items) => {
                for (i, v) in items.iter().enumerate() {
                    self.value_templates(&path.index(i), v, ctx);
                }
            }
            Value::Object(map) => {
                for (k, v) in map {
                    self.value_templates(&path.key(k), v, ctx);
                }
            }
            _ => {}
        }
    }

    /// Puts the files a prompt includes in its place (see [`include`]);
    /// whether it could.
    fn include(&mut self, path: &KeyPath, t: &mut Template) -> bool {
        match include::expand(t.as_str(), self.read_file) {
            Ok(expanded) => {
                t.0 = expanded;
                true
            }
            Err(e) => {
                self.problems.push(Rule::BadInclude, path, e);
                false
            }
        }
    }

    fn template(&mut self, path: &KeyPath, t: &Template, ctx: &Ctx, extra: &[&str]) {
        match template::references(&self.env, t.as_str()) {
            Err(e) => {
                self.problems.push(Rule::TemplateSyntax, path, format!("the template does not parse: {e}"))
            }
            Ok(refs) => {
                for r in refs {
                    if let Some(msg) = self.reference(&r, ctx, extra) {
                        self.problems.push(Rule::UnknownReference, path, msg);
                    }
                }
            }
        }
    }

    /// Why a template may not read `reference` here, if it may not.
    fn reference(&self, reference: &str, ctx: &Ctx, extra: &[&str]) -> Option<String> {
        let mut parts = reference.split('.');
        let root = parts.next().unwrap_or_default();
        let field = parts.next();
        let sub = parts.next();
        let not_in = |what: &str, name: &str, known: &mut dyn Iterator<Item = &str>| {
            let known: Vec<&str> = known.collect();
            Some(format!("reads unknown {what} `{name}`{}", did_you_mean(name, known)))
        };
        match (root, field) {
            ("inputs", Some(name)) if !self.inputs.contains(name) => {
                not_in("input", name, &mut self.inputs.iter().map(String::as_str))
            }
            ("docs", Some(name)) if !self.produced.contains(name) => {
                let known: Vec<&str> = self.produced.iter().map(String::as_str).collect();
                Some(format!(
                    "reads `docs.{name}`, but no step `produces: {name}`{}",
                    did_you_mean(name, known)
                ))
            }
            ("run", Some(name)) if !RUN_FIELDS.contains(&name) => {
                Some(format!("`run` has {}, not `{name}`", one_of(RUN_FIELDS)))
            }
            ("loop", _) if !ctx.in_loop => {
                Some("reads `loop`, which exists only inside a loop's steps".into())
            }
            ("loop", Some(name)) if name != "index" => Some(format!("`loop` has `index`, not `{name}`")),
            ("steps", Some(id)) => self.step_reference(id, sub, ctx),
            ("inputs" | "docs" | "run" | "loop" | "steps" | "feedback" | "progress", _) => None,
            (name, _)
                if ctx.vars.iter().any(|v| v == name)
                    || extra.contains(&name)
                    || GLOBAL_FUNCTIONS.contains(&name) =>
            {
                None
            }
            (name, _) => {
                let mut known: Vec<&str> = vec!["inputs", "steps", "docs", "run", "feedback", "progress"];
                known.extend(ctx.vars.iter().map(String::as_str));
                known.extend(extra.iter().copied());
                if ctx.in_loop {
                    known.push("loop");
                }
                not_in("variable", name, &mut known.into_iter())
            }
        }
    }

    fn step_reference(&self, id: &str, field: Option<&str>, ctx: &Ctx) -> Option<String> {
        if self.unread.contains(id) {
            return None;
        }
        if ctx.readable(id) {
            return field
                .filter(|f| !STEP_FIELDS.contains(f))
                .map(|f| format!("`steps.{id}` has {}, not `{f}`", one_of(STEP_FIELDS)));
        }
        if ctx.own() == Some(id) {
            return Some(format!("reads `steps.{id}`, its own output, which does not exist yet"));
        }
        if ctx.is_sibling(id) {
            return Some(format!(
                "reads `steps.{id}`, which is not guaranteed to finish first: add `{id}` to `needs`"
            ));
        }
        let readable = ctx.readable_ids();
        if let Some(full) = readable.iter().find(|r| r.starts_with(&format!("{id}-"))) {
            return Some(format!("reads unknown step `{id}`: ids with `-` are read as `steps['{full}']`"));
        }
        Some(format!("reads unknown step `{id}`{}", self.unknown_step_hint(id, readable.into_iter())))
    }

    /// A did-you-mean among `candidates`, or where a nested step lives.
    fn unknown_step_hint<'c>(&self, id: &str, candidates: impl Iterator<Item = &'c str>) -> String {
        if let Some(group) = self.nested.get(id) {
            return format!(" (`{id}` is inside `{group}`: read `steps.{group}.output` after the group)");
        }
        did_you_mean(id, candidates)
    }

    fn schema(&mut self, path: &KeyPath, schema: &mut Schema) {
        if let Some(file) = &schema.file {
            let escapes = std::path::Path::new(file)
                .components()
                .any(|c| !matches!(c, std::path::Component::Normal(_) | std::path::Component::CurDir));
            if escapes {
                self.problems.push(
                    Rule::BadSchema,
                    path,
                    format!("schema path `{file}` must be relative and stay inside the workflow's folder"),
                );
                return;
            }
            let text = match (self.read_file)(file) {
                Ok(text) => text,
                Err(e) => {
                    self.problems.push(Rule::BadSchema, path, format!("cannot read schema `{file}`: {e}"));
                    return;
                }
            };
            match source::parse(&text, Format::detect(file, &text)) {
                Ok(doc) => schema.document = doc,
                Err(p) => {
                    let at = p.location.map(|l| format!(":{}:{}", l.line, l.column)).unwrap_or_default();
                    self.problems.push(Rule::BadSchema, path, format!("schema `{file}{at}`: {}", p.message));
                    return;
                }
            }
        }
        if let Err(e) = jsonschema::validator_for(&schema.document) {
            let at = e.schema_path().to_string();
            let at = if at.is_empty() { String::new() } else { format!(" (at `{at}`)") };
            self.problems.push(Rule::BadSchema, path, format!("not a valid JSON Schema: {e}{at}"));
        }
    }
}
