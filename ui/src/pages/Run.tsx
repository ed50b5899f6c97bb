// One run, live: its graph, the gates it waits at, the timeline of its
// attempts, its events and checkpoints, and the panel of the selected
// step. Everything follows the run's event stream; the run JSON is fetched
// again (at most every 300 ms) when events arrive.
import { useCallback, useEffect, useMemo, useRef, useState } from "react";
import { Dag } from "../components/Dag";
import { Events } from "../components/Events";
import { GatePanel } from "../components/GatePanel";
import { StepPanel } from "../components/StepPanel";
import { Timeline } from "../components/Timeline";
import { api, type CairnEvent, type Checkpoint, type Plan, problemText, type Run as RunJson, type Session, type WaitingGate, waitsForPeople } from "../lib/api";
import { between, cost, count, duration, when, words } from "../lib/format";
import { Link, navigate } from "../lib/router";
import { follow } from "../lib/sse";

type Tab = "timeline" | "events" | "checkpoints";

/** The run's events and the text of models answering now, from its stream. */
function useRunStream(id: string, ready: boolean, onChange: () => void) {
  const [events, setEvents] = useState<CairnEvent[]>([]);
  const [live, setLive] = useState<Record<string, string>>({});
  const [state, setState] = useState<"connecting" | "live" | "retrying" | "ended" | "refused">("connecting");
  const changed = useRef(onChange);
  changed.current = onChange;
  useEffect(() => {
    if (!ready) return;
    const abort = new AbortController();
    let pending: CairnEvent[] = [];
    let frame = 0;
    setEvents([]);
    setLive({});
    const flush = () => {
      frame = 0;
      const batch = pending;
      pending = [];
      setEvents((old) => old.concat(batch));
      changed.current();
    };
    follow(
      `/api/v1/runs/${encodeURIComponent(id)}/events/stream`,
      0,
      {
        onEvent: (e) => {
          if (e.event === "token") {
            const t = JSON.parse(e.data) as { path: string; text: string };
            setLive((old) => ({ ...old, [t.path]: (old[t.path] ?? "") + t.text }));
            return;
          }
          if (e.event === "end") {
            setState("ended");
            changed.current();
            return;
          }
          if (e.event === "error") return;
          const event = JSON.parse(e.data) as CairnEvent;
          if (typeof event.path === "string" && (event.type === "step_succeeded" || event.type === "step_failed" || event.type === "step_started")) {
            const path = event.path;
            setLive((old) => {
              if (!(path in old)) return old;
              const next = { ...old };
              delete next[path];
              return next;
            });
          }
          pending.push(event);
          if (!frame) frame = requestAnimationFrame(flush);
        },
        onState: (s) => setState((old) => (old === "ended" ? old : s)),
        onRefused: () => setState("refused"),
      },
      abort.signal,
    );
    return () => {
      abort.abort();
      if (frame) cancelAnimationFrame(frame);
    };
  }, [id, ready]);
  return { events, live, state };
}

export function Run({ id, session }: { id: string; session: Session }) {
  const [run, setRun] = useState<RunJson | null>(null);
  const [gates, setGates] = useState<WaitingGate[]>([]);
  const [error, setError] = useState<string | null>(null);
  const [plan, setPlan] = useState<Plan | null>(null);
  const [selected, setSelected] = useState<string | null>(null);
  const [expanded, setExpanded] = useState<Set<string>>(new Set());
  const [tab, setTab] = useState<Tab>("timeline");
  const [checkpoints, setCheckpoints] = useState<Checkpoint[] | null>(null);
  const [notice, setNotice] = useState<string | null>(null);
  const timer = useRef<number | null>(null);
  const size = useRef(0);

  const load = useCallback(async () => {
    const { data, error } = await api.GET("/api/v1/runs/{id}", { params: { path: { id } } });
    if (error) setError(problemText(error));
    else {
      size.current = data.steps.length;
      setRun(data);
      // What the signed-in identity may do at each gate is the server's to say.
      const waiting = data.gates.length > 0 ? await api.GET("/api/v1/gates", { params: { query: { run: id } } }) : null;
      setGates(waiting?.data?.gates ?? []);
    }
  }, [id]);
  // Fetched again when events arrive: at most every 300 ms, and every
  // 2 s for runs of many steps (their JSON is large).
  const reload = useCallback(() => {
    if (timer.current !== null) return;
    timer.current = window.setTimeout(
      () => {
        void load().finally(() => {
          timer.current = null;
        });
      },
      size.current > 500 ? 2000 : 300,
    );
  }, [load]);
  // The stream starts once the run and its plan are drawn: its replay
  // of a long log does not delay the first picture.
  const { events, live, state } = useRunStream(id, run !== null && plan !== null, reload);

  useEffect(() => {
    setRun(null);
    setPlan(null);
    setSelected(null);
    setCheckpoints(null);
    void load();
    void (async () => {
      const def = await api.GET("/api/v1/runs/{id}/definition", { params: { path: { id } } });
      if (!def.data) return;
      const v = await api.POST("/api/v1/workflows/validate", {
        body: { definition: def.data.text, name: def.data.name, files: def.data.files },
      });
      if (v.data?.plan) setPlan(v.data.plan);
    })();
  }, [id, load]);

  useEffect(() => {
    if (tab !== "checkpoints") return;
    void api.GET("/api/v1/runs/{id}/checkpoints", { params: { path: { id } } }).then(({ data }) => data && setCheckpoints(data));
  }, [tab, id, events.length]);

  const act = async (what: "pause" | "resume" | "cancel") => {
    setNotice(null);
    const params = { params: { path: { id } } };
    const result =
      what === "pause"
        ? await api.POST("/api/v1/runs/{id}/pause", params)
        : what === "cancel"
          ? await api.POST("/api/v1/runs/{id}/cancel", params)
          : await api.POST("/api/v1/runs/{id}/resume", { ...params, body: {} });
    if (result.error) setNotice(problemText(result.error));
    else setRun(result.data);
  };
  const fork = async (seq: number) => {
    setNotice(null);
    const { data, error } = await api.POST("/api/v1/runs/{id}/fork", { params: { path: { id } }, body: { checkpoint: seq } });
    if (error) return setNotice(problemText(error));
    const resumed = await api.POST("/api/v1/runs/{id}/resume", { params: { path: { id: data.run_id } }, body: {} });
    if (resumed.error) setNotice(problemText(resumed.error));
    navigate(`/runs/${encodeURIComponent(data.run_id)}`);
  };

  const steps = run?.steps ?? [];
  const step = useMemo(() => steps.find((s) => s.path === selected), [steps, selected]);
  const operator = session.role !== "viewer";
  if (error && !run) return <p className="error">{error}</p>;
  if (!run) return <p className="muted">Loading run {id}…</p>;
  const ended = ["completed", "failed", "cancelled"].includes(run.status);
  return (
    <div className="run-page">
      <header className="run-header">
        <div>
          <h2>
            {run.run_id} <span className={`badge status-${run.status}`} data-testid="run-status">{words(run.status)}</span>
          </h2>
          <p className="muted">
            <Link to={`/workflows?workflow=${run.workflow}`}>{run.workflow}</Link> · started {when(run.created_at)}
            {run.triggered_by && <> by {run.triggered_by}</>}
            {run.priority !== 0 && <> · priority {run.priority}</>} ·{" "}
            {duration(between(run.created_at, ended ? run.updated_at : null))} · {count(run.usage.prompt_tokens + run.usage.completion_tokens)} tokens ·{" "}
            {cost(run.usage.cost_usd)}
            {run.parent?.step && (
              <>
                {" "}
                · sub-workflow of <Link to={`/runs/${run.parent.run_id}`}>{run.parent.run_id}</Link>, step {run.parent.step}
              </>
            )}
            {run.forked_from && (
              <>
                {" "}
                · forked from <Link to={`/runs/${run.forked_from.run_id}`}>{run.forked_from.run_id}</Link> at {run.forked_from.checkpoint}
              </>
            )}{" "}
            · stream {state}
          </p>
          {Object.keys(run.labels ?? {}).length > 0 && (
            <p className="labels" data-testid="run-labels">
              {Object.entries(run.labels).map(([k, v]) => (
                <span key={k} className="label">
                  {k}={v}
                </span>
              ))}
            </p>
          )}
          {run.error && (
            <div className="error-box">
              <strong>{run.error.class}</strong>: {run.error.message}
              {run.error.hint && <p className="hint">{run.error.hint}</p>}
            </div>
          )}
        </div>
        {operator && !ended && (
          <div className="buttons">
            {run.status === "paused" || (!run.driven && !waitsForPeople(run.status)) ? (
              <button onClick={() => act("resume")}>Resume</button>
            ) : (
              <button onClick={() => act("pause")}>Pause</button>
            )}
            <button className="reject" onClick={() => act("cancel")}>
              Cancel
            </button>
          </div>
        )}
      </header>
      {notice && <p className="error">{notice}</p>}
      {run.gates
        .filter((g) => g.child)
        .map((g) => (
          <p key={g.gate} className="gate muted" data-testid={`gate-${g.gate}`}>
            <code>{g.gate}</code> waits on its sub-workflow's run <Link to={`/runs/${g.child}`}>{g.child}</Link>: decide
            there.
          </p>
        ))}
      {gates.map((g) => (
        <GatePanel key={g.gate} gate={g} onDone={load} />
      ))}
      <div className="run-body">
        <div className="run-main">
          {plan ? (
            <Dag
              plan={plan.steps}
              steps={steps}
              expanded={expanded}
              selected={selected}
              onSelect={setSelected}
              onToggle={(g) =>
                setExpanded((old) => {
                  const next = new Set(old);
                  if (next.has(g)) next.delete(g);
                  else next.add(g);
                  return next;
                })
              }
            />
          ) : (
            <p className="muted">Drawing the plan…</p>
          )}
          <nav className="tabs">
            {(["timeline", "events", "checkpoints"] as Tab[]).map((t) => (
              <button key={t} className={t === tab ? "active" : ""} onClick={() => setTab(t)}>
                {t}
                {t === "events" && ` (${events.length})`}
              </button>
            ))}
          </nav>
          {tab === "timeline" && <Timeline events={events} onSelect={setSelected} />}
          {tab === "events" && <Events events={events} onSelect={setSelected} />}
          {tab === "checkpoints" && (
            <table className="checkpoints">
              <thead>
                <tr>
                  <th>seq</th>
                  <th>after</th>
                  <th>at</th>
                  <th />
                </tr>
              </thead>
              <tbody>
                {(checkpoints ?? []).map((c) => (
                  <tr key={c.seq}>
                    <td>{c.seq}</td>
                    <td>{c.label}</td>
                    <td>{when(c.at)}</td>
                    <td>{operator && <button onClick={() => fork(c.seq)}>Fork from here</button>}</td>
                  </tr>
                ))}
              </tbody>
            </table>
          )}
        </div>
        <aside className="run-side">
          <StepPanel step={step} events={events} live={selected ? live[selected] : undefined} />
        </aside>
      </div>
    </div>
  );
}
