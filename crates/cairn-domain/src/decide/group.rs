//! Groups: the instances of a `for_each` and the iterations of a `loop`,
//! walked as frames of their own, and what their end records.

use serde_json::{Value, json};

use super::failure::step_failed;
use super::{Cx, Decisive, End, Walk, fatal, unrendered};
use crate::definition::{Exhausted, ForEachStep, Step, StepKind, Template};
use crate::program::{Frame, MAX_INSTANCES};
use crate::render::{RenderError, Renderer, truthy};
use crate::scope::ScopeKey;
use crate::state::{EventKind, GroupState, StepError, StepPath, StepStatus};

impl Cx<'_> {
    /// A running group: walks its open instances (at most its
    /// `max_parallel`, in item order) and records what finished.
    pub(super) fn group(
        &self,
        frame: &Frame,
        step: &Step,
        path: &StepPath,
        walk: &mut Walk,
    ) -> Result<(), Decisive> {
        let Some(group) = self.state.groups.get(path) else { return Ok(()) };
        match &step.kind {
            StepKind::ForEach(g) => {
                if group.is_complete() {
                    walk.records.extend(self.collect(frame, step, path, group));
                    return Ok(());
                }
                let limit = g.max_parallel.unwrap_or(self.program.workflow().defaults.max_parallel).max(1);
                let open =
                    (group.first_open..group.keys.len()).filter(|&k| !group.done[k]).take(limit as usize);
                for k in open {
                    let key = &group.keys[k];
                    let item = self
                        .state
                        .scopes
                        .entity(&frame.scope.child(g.as_name.as_str(), key))
                        .cloned()
                        .unwrap_or(Value::Null);
                    let instance = frame.instance(self.program, step, path, key, item);
                    if let End::Done { failed } = self.frame(&instance, walk)? {
                        walk.records.push(EventKind::InstanceFinished {
                            path: path.clone(),
                            index: k as u32,
                            key: key.clone(),
                            failed,
                        });
                    }
                }
            }
            StepKind::Loop(l) => {
                let Some(n) = group.keys.len().checked_sub(1) else { return Ok(()) };
                let index = n as u32;
                let iteration = frame.instance(self.program, step, path, &group.keys[n], json!(index));
                if group.done[n] {
                    return Ok(());
                }
                let End::Done { .. } = self.frame(&iteration, walk)? else { return Ok(()) };
                let key = group.keys[n].clone();
                walk.records.push(EventKind::InstanceFinished {
                    path: path.clone(),
                    index,
                    key: key.clone(),
                    failed: None,
                });
                let attempt = self.state.steps.get(path).map_or(1, |s| s.attempts);
                let reads = self.program.reads(path);
                let until = l.until.as_ref().map(|t| {
                    let ctx = self.renderer.context(self.state, self.program, &iteration, reads, None, &[]);
                    self.renderer
                        .try_value(t, &ctx)
                        .map(|v| truthy(&v))
                        .map_err(|e| self.until_error(&iteration, t, &e))
                });
                let output = self.outputs(path, &key, step);
                walk.records.push(match until {
                    Some(Err(error)) => EventKind::StepFailed {
                        path: path.clone(),
                        attempt,
                        error,
                        output: Some(output),
                        retry_at: None,
                    },
                    Some(Ok(true)) => EventKind::StepSucceeded { path: path.clone(), output },
                    _ if index + 1 < l.max_iters => {
                        EventKind::IterationStarted { path: path.clone(), index: index + 1 }
                    }
                    _ if l.on_exhausted == Exhausted::Continue => {
                        EventKind::StepSucceeded { path: path.clone(), output }
                    }
                    _ => EventKind::StepFailed {
                        path: path.clone(),
                        attempt,
                        error: fatal(
                            match &l.until {
                                Some(_) => format!("`until` did not hold after {} iterations", l.max_iters),
                                None => format!("the loop ran its {} iterations", l.max_iters),
                            },
                            "raise `max_iters`, or set `on_exhausted: continue` to go on with the last iteration",
                        ),
                        output: Some(output),
                        retry_at: None,
                    },
                });
            }
            _ => {}
        }
        Ok(())
    }

    /// Why a loop's `until` did not render. When it reads the output of a
    /// step of the iteration that has none (the step failed before giving
    /// one, was skipped or cancelled), the template is not at fault: the
    /// error names that step and why, and a failure keeps its class and
    /// cause (a program not allowed stays `permission`). A size limit is
    /// `invalid_output`; anything else is the template's own error.
    fn until_error(&self, iteration: &Frame, until: &Template, error: &RenderError) -> StepError {
        if let RenderError::TooLarge { .. } = error {
            return unrendered("its `until`", error, "");
        }
        let missing = self.renderer.references(until).into_iter().flatten().find_map(|read| {
            let mut parts = read.split('.');
            let (Some("steps"), Some(id), Some("output")) = (parts.next(), parts.next(), parts.next()) else {
                return None;
            };
            let path = iteration.resolve(self.program, self.state, id)?;
            let step = self.state.steps.get(&path);
            let has_output = step.and_then(|s| s.output.as_ref()).is_some_and(|o| !o.is_null());
            (!has_output).then(|| (id.to_owned(), path, step))
        });
        let Some((id, path, step)) = missing else {
            return fatal(
                format!("its `until` cannot be rendered: {error}"),
                "fix the `until` template: validating the definition checks the names it reads",
            );
        };
        let reads = format!("its `until` reads `steps.{id}.output`, but `{path}`");
        let guard = format!(
            "make `{id}` give an output in every iteration, or guard the read with `default(...)` so the loop goes on"
        );
        match step.map(|s| (s.status, s.error.as_ref())) {
            Some((StepStatus::Failed, Some(cause))) => {
                let mut error = StepError {
                    message: format!("{reads} failed with no output: {}", cause.message),
                    ..cause.clone()
                };
                if error.hint.is_none() && error.cause.is_none() {
                    error.hint = Some(format!(
                        "see why `{path}` failed; to let the loop go on instead, guard the read with `default(...)`"
                    ));
                }
                error
            }
            Some((StepStatus::Skipped, _)) => {
                fatal(format!("{reads} was skipped, so it has no output"), &guard)
            }
            Some((StepStatus::Cancelled, _)) => {
                fatal(format!("{reads} was cancelled, so it has no output"), &guard)
            }
            Some((StepStatus::Succeeded, _)) => {
                fatal(format!("{reads} succeeded with a null output"), &guard)
            }
            _ => fatal(format!("{reads} has no output yet"), &guard),
        }
    }

    /// The events that end a `for_each` whose instances all finished: the
    /// documents its instances produced, collected in item order into the
    /// group's scope, and its output (or failure).
    fn collect(&self, frame: &Frame, step: &Step, path: &StepPath, group: &GroupState) -> Vec<EventKind> {
        let StepKind::ForEach(g) = &step.kind else { return Vec::new() };
        let body = self.program.block(self.program.body(frame.block(), step.id.as_str()).unwrap_or(0));
        let scopes: Vec<ScopeKey> =
            group.keys.iter().map(|k| frame.scope.child(g.as_name.as_str(), k)).collect();
        let mut events: Vec<EventKind> = body
            .produced
            .iter()
            .map(|t| EventKind::DocumentStored {
                scope: frame.scope.clone(),
                doc_type: t.clone(),
                value: Value::Array(
                    scopes
                        .iter()
                        .map(|s| self.state.scopes.get(s, t.as_str()).cloned().unwrap_or(Value::Null))
                        .collect(),
                ),
            })
            .collect();
        let outputs: Vec<Value> = group.keys.iter().map(|key| self.outputs(path, key, step)).collect();
        let attempt = self.state.steps.get(path).map_or(1, |s| s.attempts);
        events.push(match &group.failed {
            Some(failed) => EventKind::StepFailed {
                path: path.clone(),
                attempt,
                error: step_failed(self.state, failed),
                output: Some(Value::Array(outputs)),
                retry_at: None,
            },
            None => EventKind::StepSucceeded { path: path.clone(), output: Value::Array(outputs) },
        });
        events
    }

    /// An instance's or iteration's output: each of its steps' output by id.
    fn outputs(&self, group_path: &StepPath, key: &str, group: &Step) -> Value {
        let body = group.body().unwrap_or_default();
        let map = body
            .iter()
            .map(|s| {
                let path = group_path.instance_child(key, s.id.as_str());
                let output = self.state.steps.get(&path).and_then(|st| st.output.clone());
                (s.id.to_string(), output.unwrap_or(Value::Null))
            })
            .collect();
        Value::Object(map)
    }
}

/// Renders a `for_each`'s items and names each instance.
pub(super) fn expand(
    renderer: &Renderer,
    g: &ForEachStep,
    ctx: &crate::render::Context,
) -> Result<(Vec<String>, Vec<Value>), StepError> {
    const HINT: &str = "`for_each.items` must yield a list, such as `{{ docs.backlog.items }}`";
    let items = match renderer.try_value(&g.items, ctx) {
        Ok(Value::Array(items)) => items,
        Ok(other) => {
            return Err(fatal(format!("`for_each.items` yielded {}, not a list", kind_of(&other)), HINT));
        }
        Err(e) => return Err(unrendered("`for_each.items`", &e, HINT)),
    };
    if items.len() > MAX_INSTANCES {
        return Err(fatal(
            format!("`for_each.items` yielded {} items; a group runs at most {MAX_INSTANCES}", items.len()),
            "split the collection, or nest a second `for_each`",
        ));
    }
    let mut keys = Vec::with_capacity(items.len());
    let mut seen = std::collections::HashMap::with_capacity(items.len());
    for (i, item) in items.iter().enumerate() {
        let key = match &g.key {
            None => i.to_string(),
            Some(field) => match item.get(field) {
                Some(Value::String(s)) => s.clone(),
                Some(Value::Number(n)) => n.to_string(),
                Some(other) => {
                    return Err(fatal(
                        format!(
                            "item {i} has a `{field}` that is {}, not a string or number",
                            kind_of(other)
                        ),
                        "`for_each.key` names the item field that identifies it",
                    ));
                }
                None => {
                    return Err(fatal(
                        format!("item {i} has no `{field}` field to key it by"),
                        "give every item the key field, or drop `key` to key instances by position",
                    ));
                }
            },
        };
        if key.is_empty() || key.len() > 128 || key.chars().any(|c| c == '[' || c == ']' || c.is_control()) {
            return Err(fatal(
                format!(
                    "item {i} has the key {key:?}: keys are 1 to 128 characters without `[`, `]` or control characters"
                ),
                "key instances by a field of simple ids",
            ));
        }
        if let Some(first) = seen.insert(key.clone(), i) {
            return Err(fatal(
                format!("items {first} and {i} both have the key `{key}`: instance keys must be unique"),
                "key instances by a field that is unique, or drop `key` to key them by position",
            ));
        }
        keys.push(key);
    }
    Ok((keys, items))
}

fn kind_of(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "an object",
    }
}
