// The catalog: every workflow registered or run here, with its runs,
// success rate, median and p95 duration, tokens and cost, as the server
// figures them (`GET /workflows`); and the editor: write or change a workflow,
// see its problems where they are and its plan as a graph as you type,
// and start it with a form made from its inputs.
import { lazy, Suspense, useEffect, useState } from "react";
import { Dag } from "../components/Dag";
import { api, type CatalogEntry, type DefinitionProblem, type Plan, problemText, type Session } from "../lib/api";
import { cost, count, duration } from "../lib/format";
import { Link, navigate, useLocation } from "../lib/router";

const Editor = lazy(() => import("../components/Editor"));

const STARTER = `cairn: 1
id: hello
inputs:
  topic: { type: string, default: rivers }
agents:
  writer: { system: "You write short, clear text." }
steps:
  - id: draft
    agent: writer
    prompt: "Write two sentences about {{ inputs.topic }}."
  - id: sign_off
    needs: [draft]
    approval:
      message: Publish the draft?
  - id: publish
    needs: [sign_off]
    set: "{{ steps.draft.output }}"
`;

/** The text of `workflow` to edit: its latest registered version, else
 * the definition its latest run recorded. */
async function textOf(entry: CatalogEntry): Promise<{ text: string; files: Record<string, string> } | null> {
  if (entry.latest) {
    const { data } = await api.GET("/api/v1/workflows/{id}", { params: { path: { id: entry.workflow } } });
    if (data?.definition) return { text: data.definition.definition, files: data.definition.files };
  }
  const { data: page } = await api.GET("/api/v1/runs", { params: { query: { workflow: entry.workflow, limit: 1 } } });
  const run = page?.runs[0];
  if (!run) return null;
  const { data } = await api.GET("/api/v1/runs/{id}/definition", { params: { path: { id: run.run_id } } });
  return data ? { text: data.text, files: data.files } : null;
}

/** A value typed into the start form, read as its input's type. */
export function inputValue(type: string | undefined, text: string): unknown {
  if (type === "number" || type === "integer") return Number(text);
  if (type === "boolean") return text === "true";
  if (type === "array" || type === "object") {
    try {
      return JSON.parse(text);
    } catch {
      return text;
    }
  }
  return text;
}

function StartForm(props: { plan: Plan; text: string; files: Record<string, string>; session: Session }) {
  const { plan, text, files, session } = props;
  const inputs = plan.inputs ?? [];
  const [values, setValues] = useState<Record<string, string>>({});
  const [labelText, setLabelText] = useState("");
  const [error, setError] = useState<string | null>(null);
  const [registered, setRegistered] = useState<string | null>(null);
  if (session.role === "viewer") return null;
  // Into the catalog, as a version of its workflow.
  const register = async () => {
    setError(null);
    setRegistered(null);
    const { data, error } = await api.POST("/api/v1/workflows", { body: { definition: text, files } });
    if (error) return setError(problemText(error));
    setRegistered(
      data.added
        ? `Registered ${data.workflow} version ${data.version} (#${data.number}).`
        : `${data.workflow} version ${data.version} (#${data.number}) is registered already with this text.`,
    );
  };
  const start = async () => {
    setError(null);
    const body: Record<string, unknown> = {};
    for (const input of inputs) {
      const v = values[input.name];
      if (v !== undefined && v !== "") body[input.name] = inputValue(input.type, v);
    }
    const labels: Record<string, string> = {};
    for (const word of labelText.split(/\s+/).filter((w) => w !== "")) {
      const at = word.indexOf("=");
      if (at < 0) return setError(`\`${word}\` is not a label: write key=value`);
      labels[word.slice(0, at)] = word.slice(at + 1);
    }
    const { data, error } = await api.POST("/api/v1/runs", { body: { definition: text, files, inputs: body, labels } });
    if (error) setError(problemText(error));
    else navigate(`/runs/${encodeURIComponent(data.run_id)}`);
  };
  return (
    <form
      className="start-form"
      onSubmit={(e) => {
        e.preventDefault();
        void start();
      }}
    >
      <h3>Start {plan.workflow}</h3>
      {inputs.map((input) => (
        <label key={input.name}>
          <span>
            {input.name}
            {input.required && " *"} <span className="muted">{input.type}</span>
          </span>
          <input
            aria-label={`input ${input.name}`}
            placeholder={input.default === undefined || input.default === null ? "" : JSON.stringify(input.default)}
            value={values[input.name] ?? ""}
            onChange={(e) => setValues({ ...values, [input.name]: e.target.value })}
          />
          {input.description && <small className="muted">{input.description}</small>}
        </label>
      ))}
      <label>
        <span>
          labels <span className="muted">key=value …, over the definition's</span>
        </span>
        <input aria-label="labels" value={labelText} onChange={(e) => setLabelText(e.target.value)} />
      </label>
      <div className="buttons">
        <button type="submit">Start run</button>
        <button type="button" onClick={() => void register()}>
          Register
        </button>
      </div>
      {registered && <p data-testid="registered">{registered}</p>}
      {error && <p className="error">{error}</p>}
    </form>
  );
}

export function Workflows({ session }: { session: Session }) {
  const { query } = useLocation();
  const [table, setTable] = useState<CatalogEntry[] | null>(null);
  const [text, setText] = useState<string | null>(null);
  // The schemas a recorded definition names come with it: the editor keeps
  // them for validating and starting it.
  const [files, setFiles] = useState<Record<string, string>>({});
  const [problems, setProblems] = useState<DefinitionProblem[]>([]);
  const [plan, setPlan] = useState<Plan | null>(null);
  const chosen = query.get("workflow");
  const editing = query.has("edit") || chosen !== null;

  useEffect(() => {
    void api.GET("/api/v1/workflows").then(({ data }) => setTable(data?.workflows ?? []));
  }, []);

  // The text of the chosen workflow, or a starter for a new one.
  useEffect(() => {
    if (!editing) return;
    const entry = table?.find((e) => e.workflow === chosen);
    if (chosen && table === null) return;
    if (!entry) {
      setFiles({});
      setText(STARTER);
      return;
    }
    void textOf(entry).then((found) => {
      setFiles(found?.files ?? {});
      setText(found?.text ?? STARTER);
    });
  }, [editing, chosen, table]);

  return (
    <div className="workflows">
      <div className="filters">
        <Link to="/workflows?edit" className="button">
          New workflow
        </Link>
      </div>
      {table === null ? (
        <p className="muted">Reading the catalog…</p>
      ) : table.length === 0 ? (
        <p className="muted">No workflow is registered or has run here yet: write one.</p>
      ) : (
        <table data-testid="workflows">
          <thead>
            <tr>
              <th>workflow</th>
              <th>version</th>
              <th>runs</th>
              <th>success</th>
              <th>median</th>
              <th>p95</th>
              <th>tokens</th>
              <th>cost</th>
              <th />
            </tr>
          </thead>
          <tbody>
            {table.map((e) => (
              <tr key={e.workflow} data-workflow={e.workflow}>
                <td>
                  <Link to={`/runs?workflow=${encodeURIComponent(e.workflow)}`}>{e.workflow}</Link>
                  {e.name && <span className="muted"> {e.name}</span>}
                </td>
                <td>{e.latest ? `${e.latest.version} (#${e.latest.number})` : "—"}</td>
                <td>{e.stats.runs}</td>
                <td>{e.stats.success_rate === null ? "—" : `${Math.round(100 * e.stats.success_rate)} %`}</td>
                <td>{duration(e.stats.median_ms)}</td>
                <td>{duration(e.stats.p95_ms)}</td>
                <td>{count(e.stats.usage.prompt_tokens + e.stats.usage.completion_tokens)}</td>
                <td>{cost(e.stats.usage.cost_usd)}</td>
                <td>
                  <Link to={`/workflows?workflow=${encodeURIComponent(e.workflow)}`}>Edit and start</Link>
                </td>
              </tr>
            ))}
          </tbody>
        </table>
      )}
      {editing && text !== null && (
        <div className="editing">
          <div className="editor-pane">
            <Suspense fallback={<p className="muted">Loading the editor…</p>}>
              <Editor
                key={chosen ?? "new"}
                value={text}
                files={files}
                onChange={setText}
                onChecked={(p, plan) => {
                  setProblems(p);
                  setPlan(plan);
                }}
              />
            </Suspense>
            <ul className="problems" data-testid="problems">
              {problems.map((p, i) => (
                <li key={i} className="error">
                  {p.line ? `line ${p.line}${p.column ? `, column ${p.column}` : ""}: ` : ""}
                  {p.message}
                </li>
              ))}
            </ul>
          </div>
          <div className="plan-pane">
            {plan ? (
              <>
                <Dag plan={plan.steps} steps={[]} expanded={new Set()} selected={null} onSelect={() => {}} onToggle={() => {}} />
                <StartForm plan={plan} text={text} files={files} session={session} />
              </>
            ) : (
              <p className="muted">{problems.length ? "Fix the problems to see the plan." : "Checking…"}</p>
            )}
          </div>
        </div>
      )}
    </div>
  );
}
