// Every workflow the store has seen, with its runs, success rate, median
// and p95 duration and cost; and the editor: write or change a workflow,
// see its problems where they are and its plan as a graph as you type,
// and start it with a form made from its inputs.
import { lazy, Suspense, useEffect, useMemo, useState } from "react";
import { Dag } from "../components/Dag";
import { api, type DefinitionProblem, type Plan, problemText, type RunSummary, type Session } from "../lib/api";
import { between, cost, duration, percentile } from "../lib/format";
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

/** One workflow's figures over the runs listed. */
export interface Figures {
  workflow: string;
  runs: number;
  ended: number;
  completed: number;
  median: number | null;
  p95: number | null;
  cost: number | null;
  latest: string;
}

/** Figures per workflow, most recently run first. */
export function figures(runs: RunSummary[]): Figures[] {
  const by = new Map<string, RunSummary[]>();
  for (const r of runs) by.set(r.workflow, [...(by.get(r.workflow) ?? []), r]);
  return [...by].map(([workflow, list]) => {
    const ended = list.filter((r) => ["completed", "failed", "cancelled"].includes(r.status));
    const took = ended.map((r) => between(r.created_at, r.updated_at) ?? 0);
    const costs = list.map((r) => r.usage.cost_usd).filter((c): c is number => typeof c === "number");
    return {
      workflow,
      runs: list.length,
      ended: ended.length,
      completed: ended.filter((r) => r.status === "completed").length,
      median: percentile(took, 50),
      p95: percentile(took, 95),
      cost: costs.length ? costs.reduce((a, b) => a + b, 0) : null,
      latest: list[0].run_id,
    };
  });
}

/** Every run the server lists (pages of 500, up to 5,000). */
async function allRuns(): Promise<RunSummary[]> {
  const out: RunSummary[] = [];
  let cursor: string | undefined;
  for (let page = 0; page < 10; page++) {
    const { data } = await api.GET("/api/v1/runs", { params: { query: { limit: 500, cursor } } });
    if (!data) break;
    out.push(...data.runs);
    if (!data.next_cursor) break;
    cursor = data.next_cursor;
  }
  return out;
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
  if (session.role === "viewer") return null;
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
      <button type="submit">Start run</button>
      {error && <p className="error">{error}</p>}
    </form>
  );
}

export function Workflows({ session }: { session: Session }) {
  const { query } = useLocation();
  const [runs, setRuns] = useState<RunSummary[] | null>(null);
  const [text, setText] = useState<string | null>(null);
  // The schemas a recorded definition names come with it: the editor keeps
  // them for validating and starting it.
  const [files, setFiles] = useState<Record<string, string>>({});
  const [problems, setProblems] = useState<DefinitionProblem[]>([]);
  const [plan, setPlan] = useState<Plan | null>(null);
  const chosen = query.get("workflow");
  const editing = query.has("edit") || chosen !== null;

  useEffect(() => {
    void allRuns().then(setRuns);
  }, []);
  const table = useMemo(() => figures(runs ?? []), [runs]);

  // The text of the chosen workflow: the definition its latest run recorded.
  useEffect(() => {
    if (!editing) return;
    const latest = table.find((f) => f.workflow === chosen)?.latest;
    if (chosen && !latest && runs === null) return;
    if (!latest) {
      setFiles({});
      setText(STARTER);
      return;
    }
    void api.GET("/api/v1/runs/{id}/definition", { params: { path: { id: latest } } }).then(({ data }) => {
      setFiles(data?.files ?? {});
      setText(data?.text ?? STARTER);
    });
  }, [editing, chosen, table, runs]);

  return (
    <div className="workflows">
      <div className="filters">
        <Link to="/workflows?edit" className="button">
          New workflow
        </Link>
      </div>
      {runs === null ? (
        <p className="muted">Reading runs…</p>
      ) : table.length === 0 ? (
        <p className="muted">No workflow has run here yet: write one.</p>
      ) : (
        <table data-testid="workflows">
          <thead>
            <tr>
              <th>workflow</th>
              <th>runs</th>
              <th>success</th>
              <th>median</th>
              <th>p95</th>
              <th>cost</th>
              <th />
            </tr>
          </thead>
          <tbody>
            {table.map((f) => (
              <tr key={f.workflow}>
                <td>
                  <Link to={`/runs?workflow=${encodeURIComponent(f.workflow)}`}>{f.workflow}</Link>
                </td>
                <td>{f.runs}</td>
                <td>{f.ended ? `${Math.round((100 * f.completed) / f.ended)} %` : "—"}</td>
                <td>{duration(f.median)}</td>
                <td>{duration(f.p95)}</td>
                <td>{cost(f.cost)}</td>
                <td>
                  <Link to={`/workflows?workflow=${encodeURIComponent(f.workflow)}`}>Edit and start</Link>
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
