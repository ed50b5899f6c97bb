// The runs, newest first, live: filters by status, workflow and labels
// (asked of the server), a quick filter over ids, workflows and labels
// (the search page searches everything the store holds), cursor
// pages; every change any run makes arrives on the run feed and updates
// its row.
import { useCallback, useEffect, useState } from "react";
import { RUN_STATUSES, type RunStatus, type RunSummary, api, problemText } from "../lib/api";
import { between, cost, count, duration, when, words } from "../lib/format";
import { Link, navigate, useLocation } from "../lib/router";
import { follow } from "../lib/sse";

const PAGE = 50;

/** A run's labels as `key=value` words. */
export function labelWords(run: RunSummary): string[] {
  return Object.entries(run.labels ?? {}).map(([k, v]) => `${k}=${v}`);
}

/** Whether a summary passes the list's filters (`labels`: `key=value` words, each of which must match). */
export function matches(run: RunSummary, status: string, workflow: string, labels: string[], search: string): boolean {
  const words = labelWords(run);
  return (
    (status === "" || run.status === status) &&
    (workflow === "" || run.workflow === workflow) &&
    labels.every((l) => words.includes(l)) &&
    (search === "" || run.run_id.includes(search) || run.workflow.includes(search) || words.some((w) => w.includes(search)))
  );
}

export function Runs() {
  const { query } = useLocation();
  const status = query.get("status") ?? "";
  const workflow = query.get("workflow") ?? "";
  const search = query.get("q") ?? "";
  const labelText = query.get("label") ?? "";
  const labels = labelText.split(/\s+/).filter((l) => l !== "");
  const [cursors, setCursors] = useState<(string | null)[]>([null]);
  const [runs, setRuns] = useState<RunSummary[]>([]);
  const [next, setNext] = useState<string | null>(null);
  const [error, setError] = useState<string | null>(null);
  const cursor = cursors[cursors.length - 1];

  const set = (name: string, value: string) => {
    const q = new URLSearchParams(query);
    if (value) q.set(name, value);
    else q.delete(name);
    setCursors([null]);
    navigate(`/runs${q.size ? `?${q}` : ""}`, true);
  };

  const load = useCallback(async () => {
    const { data, error } = await api.GET("/api/v1/runs", {
      params: {
        query: {
          status: (status || undefined) as RunStatus | undefined,
          workflow: workflow || undefined,
          label: labels.length ? labels : undefined,
          limit: search ? 500 : PAGE,
          cursor: cursor ?? undefined,
        },
      },
    });
    if (error) return setError(problemText(error));
    setError(null);
    setRuns(data.runs);
    setNext(data.next_cursor);
  }, [status, workflow, labelText, search, cursor]);

  useEffect(() => {
    void load();
  }, [load]);

  // Live: a changed run updates its row; a new one joins the first page.
  useEffect(() => {
    const abort = new AbortController();
    void follow(
      "/api/v1/events/stream",
      0,
      {
        onEvent: (e) => {
          if (e.event !== "run") return;
          const summary = JSON.parse(e.data) as RunSummary;
          setRuns((old) => {
            const at = old.findIndex((r) => r.run_id === summary.run_id);
            if (at >= 0) {
              const copy = old.slice();
              copy[at] = summary;
              return copy;
            }
            return cursor === null && matches(summary, status, workflow, labels, search) ? [summary, ...old] : old;
          });
        },
      },
      abort.signal,
    );
    return () => abort.abort();
    // `labels` is made from `labelText` on each render.
  }, [cursor, status, workflow, labelText, search]);

  const shown = runs.filter((r) => matches(r, status, workflow, labels, search));
  return (
    <div>
      <div className="filters">
        <select aria-label="status" value={status} onChange={(e) => set("status", e.target.value)}>
          <option value="">every status</option>
          {RUN_STATUSES.map((s) => (
            <option key={s} value={s}>
              {words(s)}
            </option>
          ))}
        </select>
        <input aria-label="workflow" placeholder="workflow" defaultValue={workflow} onBlur={(e) => set("workflow", e.target.value.trim())} />
        <input aria-label="labels" placeholder="labels: key=value …" defaultValue={labelText} onBlur={(e) => set("label", e.target.value.trim())} />
        <input aria-label="filter" placeholder="filter ids, workflows, labels" defaultValue={search} onChange={(e) => set("q", e.target.value.trim())} />
      </div>
      {error && <p className="error">{error}</p>}
      <table className="runs" data-testid="runs">
        <thead>
          <tr>
            <th>run</th>
            <th>status</th>
            <th>workflow</th>
            <th>labels</th>
            <th>started</th>
            <th>duration</th>
            <th>tokens</th>
            <th>cost</th>
          </tr>
        </thead>
        <tbody>
          {shown.map((r) => {
            const ended = ["completed", "failed", "cancelled"].includes(r.status);
            return (
              <tr key={r.run_id} data-run={r.run_id}>
                <td>
                  <Link to={`/runs/${encodeURIComponent(r.run_id)}`}>{r.run_id}</Link>
                </td>
                <td>
                  <span className={`badge status-${r.status}`}>{words(r.status)}</span>
                  {!r.driven && (r.status === "running" || r.status === "pending") && <span className="muted"> · no driver</span>}
                </td>
                <td>{r.workflow}</td>
                <td className="labels">
                  {labelWords(r).map((l) => (
                    <span key={l} className="label">
                      {l}
                    </span>
                  ))}
                </td>
                <td>{when(r.created_at)}</td>
                <td>{duration(between(r.created_at, ended ? r.updated_at : null))}</td>
                <td>{count(r.usage.prompt_tokens + r.usage.completion_tokens)}</td>
                <td>{cost(r.usage.cost_usd)}</td>
              </tr>
            );
          })}
        </tbody>
      </table>
      {shown.length === 0 && <p className="muted">No runs here.</p>}
      <div className="pager">
        <button disabled={cursors.length < 2} onClick={() => setCursors((c) => c.slice(0, -1))}>
          Newer
        </button>
        <button disabled={!next || search !== ""} onClick={() => next && setCursors((c) => [...c, next])}>
          Older
        </button>
      </div>
    </div>
  );
}
