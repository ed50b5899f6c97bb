//! Rendering templates against a run's state. The context is built from the
//! state alone; outputs are data put into the context, never rendered again,
//! so an LLM answer containing `{{ ... }}` stays text.

use minijinja::Environment;
use serde_json::Value;

use crate::definition::Template;
use crate::program::{Frame, Program};
use crate::state::RunState;
pub use crate::template::Reads;
use crate::template::{self, single_expression};

pub use crate::template::MAX_RENDERED_BYTES;

/// The largest value a `set` or `with` renders to, all its templates
/// together, as JSON: many templates under the limit each cannot add up to
/// more than a step's output should hold.
pub const MAX_VALUE_BYTES: usize = 4 * MAX_RENDERED_BYTES;

/// Why templates did not render, typed so that a caller can tell data too
/// large to hold (a size limit: the engine fails the step `invalid_output`)
/// from a template that is wrong for its context (`fatal`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RenderError {
    /// The template cannot render here: a syntax error, an undefined name,
    /// a filter or value refused, fuel run out. The reason, in one line.
    #[error("{0}")]
    Template(String),
    /// What the template made passed a size limit; it was refused while it
    /// was written out, never held whole.
    #[error("{what} more than {limit} bytes")]
    TooLarge {
        /// The limit passed, in bytes: [`MAX_RENDERED_BYTES`] for one
        /// template, [`MAX_VALUE_BYTES`] for a whole `set` or `with` value.
        limit: usize,
        /// What passed it, as the message begins (`the template produced`).
        what: &'static str,
    },
}

/// What a step whose template passed a size limit is told to do.
pub const TOO_LARGE_HINT: &str =
    "make the template yield less: a part or a summary of the data, not all of it";

impl RenderError {
    /// One template's result past [`MAX_RENDERED_BYTES`], as text or JSON.
    fn template_too_large() -> Self {
        Self::TooLarge { limit: MAX_RENDERED_BYTES, what: "the template produced" }
    }

    /// A `set` or `with` value past [`MAX_VALUE_BYTES`]: its templates
    /// together yield too much.
    fn value_too_large() -> Self {
        Self::TooLarge { limit: MAX_VALUE_BYTES, what: "the rendered value is" }
    }

    /// A MiniJinja error: the size limit when that is its source, else the
    /// template's fault in one line.
    fn of(e: &minijinja::Error) -> Self {
        if template::is_too_large(e) {
            Self::template_too_large()
        } else {
            Self::Template(template::describe_error(e))
        }
    }

    /// A value that could not be written as JSON.
    fn of_json(e: template::JsonError) -> Self {
        match e {
            template::JsonError::TooLarge(_) => Self::template_too_large(),
            template::JsonError::Other(e) => Self::Template(e),
        }
    }
}

/// Renders templates with the one environment configuration of
/// [`template::environment`].
pub struct Renderer {
    env: Environment<'static>,
}

impl Default for Renderer {
    fn default() -> Self {
        Self { env: template::environment() }
    }
}

/// What a template can read, built from a run's state.
#[derive(Clone)]
pub struct Context(minijinja::Value);

impl Context {
    /// This context with the QA judge's `verdict` added, for `qa.pass_when`.
    pub fn with_verdict(&self, verdict: Value) -> Self {
        let verdict = template_value(&verdict);
        Self(minijinja::context! { verdict => verdict, ..self.0.clone() })
    }
}

impl Renderer {
    /// The context of a step of `state` that runs in `frame`: `inputs`,
    /// `steps` (what it reads, resolved innermost first), `docs` (visible
    /// from the frame's scope), `run`, `progress`, `feedback`, the frame's
    /// iteration variables, plus `extra` names (such as `verdict`).
    pub fn context(
        &self,
        state: &RunState,
        program: &Program,
        frame: &Frame,
        reads: &Reads,
        feedback: Option<&str>,
        extra: &[(&str, Value)],
    ) -> Context {
        // Built straight into template values: converting each value once,
        // with no intermediate JSON copy of outputs and inputs.
        use minijinja::Value as V;
        let mut steps = std::collections::BTreeMap::new();
        let visible;
        let ids: Box<dyn Iterator<Item = &str>> = match &reads.steps {
            Some(ids) => Box::new(ids.iter().map(String::as_str)),
            None => {
                visible = frame.visible_ids(program);
                Box::new(visible.iter().copied())
            }
        };
        for id in ids {
            let Some(path) = frame.resolve(program, state, id) else { continue };
            let value = match state.steps.get(&path) {
                Some(step) => minijinja::context! {
                    output => template_value(&step.output),
                    status => template_value(&step.status),
                    attempts => step.attempts,
                    error => template_value(&step.error),
                },
                None => template_value(&crate::program::not_started()),
            };
            steps.insert(id.to_owned(), value);
        }
        let mut ctx = std::collections::BTreeMap::new();
        ctx.insert("inputs".to_owned(), template_value(&state.inputs));
        ctx.insert("steps".to_owned(), V::from(steps));
        ctx.insert("docs".to_owned(), template_value(&state.scopes.visible(&frame.scope)));
        ctx.insert(
            "run".to_owned(),
            minijinja::context! { id => state.run_id.as_str(), workflow => state.workflow.as_str() },
        );
        let progress = if reads.progress { progress_text(state) } else { String::new() };
        ctx.insert("progress".to_owned(), V::from(progress));
        // No feedback reads as empty text, never `null` in a prompt.
        ctx.insert("feedback".to_owned(), V::from(feedback.unwrap_or_default()));
        for (name, value) in
            frame.vars.iter().map(|(n, v)| (n.as_str(), v)).chain(extra.iter().map(|(n, v)| (*n, v)))
        {
            ctx.insert(name.to_owned(), template_value(value));
        }
        Context(V::from(ctx))
    }

    /// Renders a template: a lone `{{ expr }}` yields the value itself (a
    /// list stays a list); anything else yields a string. The error as
    /// text, for callers that only word it ([`Renderer::try_value`] keeps
    /// its kind).
    pub fn value(&self, template: &Template, ctx: &Context) -> Result<Value, String> {
        self.try_value(template, ctx).map_err(|e| e.to_string())
    }

    /// [`Renderer::value`] with a typed error, so a size limit can be told
    /// from a wrong template.
    ///
    /// A computed value is held to [`MAX_RENDERED_BYTES`] as JSON, measured
    /// as it is written out, before it is copied: MiniJinja repeats a list
    /// (`[0] * 20000000`) lazily, so its size shows only when it is walked.
    /// A value read whole (`{{ docs.backlog }}`) is one the run already holds,
    /// and is passed as it is.
    pub fn try_value(&self, template: &Template, ctx: &Context) -> Result<Value, RenderError> {
        self.rendered(template, ctx).map(|(value, _)| value)
    }

    /// [`Renderer::try_value`], and whether the value was read whole from
    /// the context (not computed, so not yet measured).
    fn rendered(&self, template: &Template, ctx: &Context) -> Result<(Value, bool), RenderError> {
        let source = template.as_str();
        if !template::has_syntax(source) {
            return Ok((Value::String(source.to_owned()), false));
        }
        if let Some(expr) = single_expression(source) {
            let json_error = |e: serde_json::Error| RenderError::Template(e.to_string());
            if let Some(value) = template::lookup(&ctx.0, expr) {
                return serde_json::to_value(&value).map(|v| (v, true)).map_err(json_error);
            }
            let compiled = self.env.compile_expression(expr).map_err(|e| RenderError::of(&e))?;
            let value = compiled.eval(&ctx.0).map_err(|e| RenderError::of(&e))?;
            if value.is_undefined() {
                return Err(RenderError::Template(format!("`{expr}` is undefined")));
            }
            template::json_size_within(&value, MAX_RENDERED_BYTES).map_err(RenderError::of_json)?;
            return serde_json::to_value(&value).map(|v| (v, false)).map_err(json_error);
        }
        self.text_of(source, ctx).map(|text| (Value::String(text), false))
    }

    /// The names `template` reads, as dotted paths
    /// (`steps.test.output.exit_code`), or its parse error: what explains a
    /// render that failed on a value that was not there.
    pub fn references(&self, template: &Template) -> Result<std::collections::BTreeSet<String>, String> {
        template::references(&self.env, template.as_str())
    }

    /// Renders a template to text (an argument, a prompt): values that are
    /// not strings are written as JSON. The error as text, for callers that
    /// only word it ([`Renderer::try_text`] keeps its kind).
    pub fn text(&self, template: &Template, ctx: &Context) -> Result<String, String> {
        self.try_text(template, ctx).map_err(|e| e.to_string())
    }

    /// [`Renderer::text`] with a typed error, so a size limit can be told
    /// from a wrong template.
    pub fn try_text(&self, template: &Template, ctx: &Context) -> Result<String, RenderError> {
        self.try_value(template, ctx).map(|v| crate::state::text_of(&v))
    }

    fn text_of(&self, source: &str, ctx: &Context) -> Result<String, RenderError> {
        let fast = template::Substitutions::of(source).and_then(|s| s.render(&ctx.0));
        let text = match fast {
            Some(text) => text,
            None => self.env.render_str(source, &ctx.0).map_err(|e| RenderError::of(&e))?,
        };
        if text.len() > MAX_RENDERED_BYTES {
            return Err(RenderError::template_too_large());
        }
        Ok(text)
    }

    /// Renders every string inside `value` (a `set` value, `with` arguments),
    /// the whole held to [`MAX_VALUE_BYTES`] as JSON. The error as text, for
    /// callers that only word it ([`Renderer::try_deep`] keeps its kind).
    pub fn deep(&self, value: &Value, ctx: &Context) -> Result<Value, String> {
        self.try_deep(value, ctx).map_err(|e| e.to_string())
    }

    /// [`Renderer::deep`] with a typed error, so a size limit can be told
    /// from a wrong template.
    pub fn try_deep(&self, value: &Value, ctx: &Context) -> Result<Value, RenderError> {
        let mut left = MAX_VALUE_BYTES;
        self.deep_within(value, ctx, &mut left)
    }

    /// [`Renderer::try_deep`] with `left` bytes to spend on what its
    /// templates yield; each rendered string is charged as it is made, so
    /// the whole never grows past the budget.
    fn deep_within(&self, value: &Value, ctx: &Context, left: &mut usize) -> Result<Value, RenderError> {
        Ok(match value {
            Value::String(s) => {
                let (rendered, whole) = self.rendered(&Template(s.clone()), ctx)?;
                let size = match &rendered {
                    Value::String(text) if !whole => text.len(),
                    other => template::json_size_within(other, *left).map_err(|e| match e {
                        template::JsonError::TooLarge(_) => RenderError::value_too_large(),
                        template::JsonError::Other(e) => RenderError::Template(e),
                    })?,
                };
                *left = left.checked_sub(size).ok_or_else(RenderError::value_too_large)?;
                rendered
            }
            Value::Array(items) => {
                Value::Array(items.iter().map(|v| self.deep_within(v, ctx, left)).collect::<Result<_, _>>()?)
            }
            Value::Object(map) => {
                Value::Object(
                    map.iter()
                        .map(|(k, v)| Ok((k.clone(), self.deep_within(v, ctx, left)?)))
                        .collect::<Result<_, RenderError>>()?,
                )
            }
            other => other.clone(),
        })
    }
}

/// A value as templates see it, converted once from its serde form.
fn template_value<T: serde::Serialize>(value: &T) -> minijinja::Value {
    minijinja::Value::from(minijinja::value::Serde(value))
}

/// Whether a rendered condition holds: false, null, 0, empty, and the strings
/// `false`, `0` and `no` do not.
pub fn truthy(value: &Value) -> bool {
    match value {
        Value::Null => false,
        Value::Bool(b) => *b,
        Value::Number(n) => n.as_f64().is_some_and(|f| f != 0.0),
        Value::String(s) => !matches!(s.trim().to_ascii_lowercase().as_str(), "" | "false" | "0" | "no"),
        Value::Array(a) => !a.is_empty(),
        Value::Object(o) => !o.is_empty(),
    }
}

/// The progress log as text: every finished step's output, in order.
pub fn progress_text(state: &RunState) -> String {
    let mut out = String::new();
    for (path, output) in &state.progress {
        out.push_str("## ");
        out.push_str(path.as_str());
        out.push('\n');
        out.push_str(&crate::state::text_of(output));
        out.push_str("\n\n");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::id::RunId;
    use crate::state::{Event, EventKind, StepPath, Timestamp};
    use serde_json::json;

    fn setup() -> (RunState, Program) {
        let yaml = "cairn: 1\nid: r\ninputs:\n  n: integer\nsteps:\n  - id: a\n    set: 1\n";
        let mut no_files = |_: &str| Err("none".to_owned());
        let wf = crate::load("r.yaml", yaml.as_bytes(), &mut no_files).expect("valid");
        let mut events = vec![Event {
            seq: 1,
            at: Timestamp(0),
            actor: "engine".into(),
            kind: EventKind::RunCreated {
                run_id: RunId::new("r1").expect("id"),
                workflow: wf.id.clone(),
                definition_hash: String::new(),
                inputs: json!({"n": 3}),
                version: None,
                labels: Default::default(),
                priority: 0,
                parent: None,
            },
        }];
        let path = StepPath::new("a");
        for (seq, kind) in [
            (2, EventKind::RunStarted),
            (3, EventKind::StepStarted { path: path.clone(), attempt: 1 }),
            (
                4,
                EventKind::StepSucceeded { path, output: json!({"items": [1, 2], "text": "{{ inputs.n }}"}) },
            ),
        ] {
            events.push(Event { seq, at: Timestamp(0), actor: "engine".into(), kind });
        }
        (RunState::fold(&events).expect("legal").expect("created"), Program::new(wf).expect("acyclic"))
    }

    #[test]
    fn a_lone_expression_keeps_its_type_and_text_stays_text() {
        let (state, wf) = setup();
        let r = Renderer::default();
        let ctx = r.context(&state, &wf, &Frame::root(), &Reads::all(), None, &[]);
        assert_eq!(r.value(&Template("{{ steps.a.output.items }}".into()), &ctx), Ok(json!([1, 2])));
        assert_eq!(r.value(&Template("n={{ inputs.n }}".into()), &ctx), Ok(json!("n=3")));
        assert_eq!(r.value(&Template("plain".into()), &ctx), Ok(json!("plain")));
        assert_eq!(r.text(&Template("{{ inputs.n }}".into()), &ctx), Ok("3".into()));
    }

    #[test]
    fn outputs_are_data_never_rendered_again() {
        let (state, wf) = setup();
        let r = Renderer::default();
        let ctx = r.context(&state, &wf, &Frame::root(), &Reads::all(), None, &[]);
        assert_eq!(r.text(&Template("{{ steps.a.output.text }}".into()), &ctx), Ok("{{ inputs.n }}".into()));
    }

    #[test]
    fn unknown_names_are_errors_not_empty_strings() {
        let (state, wf) = setup();
        let r = Renderer::default();
        let ctx = r.context(&state, &wf, &Frame::root(), &Reads::all(), None, &[]);
        let err = r.value(&Template("x{{ inputs.missing }}".into()), &ctx).expect_err("strict");
        assert!(err.contains("undefined"), "{err}");
    }

    #[test]
    fn tojson_is_plain_json_alone_or_in_text() {
        let (state, wf) = setup();
        let r = Renderer::default();
        let extra = [("x", json!({"say": "it's <b> & é"}))];
        let ctx = r.context(&state, &wf, &Frame::root(), &Reads::all(), None, &extra);
        assert_eq!(
            r.value(&Template("{{ x | tojson }}".into()), &ctx),
            Ok(json!(r#"{"say": "it's <b> & é"}"#))
        );
        assert_eq!(
            r.text(&Template("Data: {{ x.say | tojson }}".into()), &ctx),
            Ok(r#"Data: "it's <b> & é""#.into())
        );
    }

    #[test]
    fn no_feedback_reads_as_empty_text() {
        let (state, wf) = setup();
        let r = Renderer::default();
        let ctx = r.context(&state, &wf, &Frame::root(), &Reads::all(), None, &[]);
        let render = |source: &str| r.value(&Template(source.into()), &ctx);
        assert_eq!(render("Fix: {{ feedback }}."), Ok(json!("Fix: .")));
        assert_eq!(render("{{ feedback }}"), Ok(json!("")));
        assert_eq!(render("{% if feedback %}x{% else %}first{% endif %}"), Ok(json!("first")));
        assert_eq!(render("{{ feedback | default('none yet', true) }}"), Ok(json!("none yet")));
        let ctx = r.context(&state, &wf, &Frame::root(), &Reads::all(), Some("shorter"), &[]);
        assert_eq!(r.value(&Template("Fix: {{ feedback }}.".into()), &ctx), Ok(json!("Fix: shorter.")));
    }

    #[test]
    fn runaway_templates_run_out_of_fuel() {
        let (state, wf) = setup();
        let r = Renderer::default();
        let ctx = r.context(&state, &wf, &Frame::root(), &Reads::all(), None, &[]);
        let err = r
            .value(
                &Template(
                    "{% for i in range(100000) %}{% for j in range(100000) %}x{% endfor %}{% endfor %}"
                        .into(),
                ),
                &ctx,
            )
            .expect_err("fuel");
        assert!(err.contains("fuel"), "{err}");
    }

    #[test]
    fn a_size_limit_is_a_typed_error_and_a_wrong_template_is_not() {
        let (state, wf) = setup();
        let r = Renderer::default();
        let ctx = r.context(&state, &wf, &Frame::root(), &Reads::all(), None, &[]);
        let template = |source: &str| Template(source.into());
        let one = RenderError::TooLarge { limit: MAX_RENDERED_BYTES, what: "the template produced" };
        // Each way a template meets the limit: a computed value, text,
        // `tojson`, and a list written into text by the formatter.
        assert_eq!(r.try_value(&template("{{ [0] * 20000000 }}"), &ctx), Err(one.clone()));
        assert_eq!(r.try_value(&template("{{ ([0] * 20000000) | tojson }}"), &ctx), Err(one.clone()));
        assert_eq!(r.try_text(&template("n={{ 'x' * 5000000 }}"), &ctx), Err(one.clone()));
        assert_eq!(r.try_text(&template("{{ [[0] * 100000000] * 100000000 }}!"), &ctx), Err(one.clone()));
        assert_eq!(
            r.try_text(&template("{% for x in [[0] * 100000000] %}{{ x }}{% endfor %}"), &ctx),
            Err(one.clone())
        );
        assert_eq!(one.to_string(), format!("the template produced more than {MAX_RENDERED_BYTES} bytes"));
        let whole = RenderError::TooLarge { limit: MAX_VALUE_BYTES, what: "the rendered value is" };
        assert_eq!(r.try_deep(&json!(vec!["{{ 'x' * 4000000 }}"; 5]), &ctx), Err(whole.clone()));
        assert_eq!(whole.to_string(), format!("the rendered value is more than {MAX_VALUE_BYTES} bytes"));
        // A wrong template is not a size limit, nor is fuel run out.
        for source in [
            "{{ inputs.missing }}",
            "{{ 1 + }}",
            "{% for i in range(100000) %}{% for j in range(100000) %}x{% endfor %}{% endfor %}",
        ] {
            let err = r.try_value(&template(source), &ctx);
            assert!(matches!(err, Err(RenderError::Template(_))), "{source}: {err:?}");
        }
        // The text form words the same error.
        assert_eq!(r.value(&template("{{ [0] * 20000000 }}"), &ctx), Err(one.to_string()));
    }

    #[test]
    fn deep_renders_every_string_and_truthy_reads_conditions() {
        let (state, wf) = setup();
        let r = Renderer::default();
        let ctx = r.context(&state, &wf, &Frame::root(), &Reads::all(), Some("more detail"), &[]);
        let v = r.deep(&json!({"a": ["{{ inputs.n }}", 2], "b": "{{ feedback }}"}), &ctx);
        assert_eq!(v, Ok(json!({"a": [3, 2], "b": "more detail"})));
        for (v, t) in [
            (json!(false), false),
            (json!("no"), false),
            (json!(0), false),
            (json!([]), false),
            (json!("x"), true),
            (json!(1), true),
        ] {
            assert_eq!(truthy(&v), t, "{v}");
        }
        assert!(progress_text(&state).starts_with("## a\n"));
    }
}
