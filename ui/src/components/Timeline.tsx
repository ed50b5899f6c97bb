// Attempts on a time axis, one row per step: each attempt from its start
// to its end (green, red, grey when cancelled), waits at gates in amber,
// so retries, backoffs and time spent waiting for people show at a glance.
import { useMemo } from "react";
import type { CairnEvent } from "../lib/api";
import { duration } from "../lib/format";

/** One bar: an attempt or a wait. */
export interface Bar {
  path: string;
  from: number;
  to: number | null;
  kind: "attempt" | "wait";
  outcome: "succeeded" | "failed" | "cancelled" | "running" | "waiting" | "decided";
  label: string;
}

/** The row a step's bars go in: its own, or its group's for an instance
 *  step (`fan[3].a` goes in `fan`), so a fan-out of a thousand is one row. */
export function rowOf(path: string): string {
  const cut = path.search(/[[.]/);
  return cut < 0 ? path : path.slice(0, cut);
}

/** The bars of a run's events, in the order their steps first started. */
export function bars(events: CairnEvent[]): Bar[] {
  const out: Bar[] = [];
  const open = new Map<string, Bar>();
  const close = (path: string, at: number, outcome: Bar["outcome"]) => {
    const bar = open.get(path);
    if (bar) {
      bar.to = at;
      bar.outcome = outcome;
      open.delete(path);
    }
  };
  for (const e of events) {
    const path = typeof e.path === "string" ? e.path : null;
    const at = Date.parse(e.at);
    if (!path) continue;
    switch (e.type) {
      case "step_started": {
        close(path, at, "cancelled");
        const bar: Bar = { path, from: at, to: null, kind: "attempt", outcome: "running", label: `attempt ${String(e.attempt ?? "")}` };
        out.push(bar);
        open.set(path, bar);
        break;
      }
      case "step_succeeded":
        close(path, at, "succeeded");
        break;
      case "step_failed":
        close(path, at, "failed");
        break;
      case "step_cancelled":
        close(path, at, "cancelled");
        break;
      case "step_waiting": {
        close(path, at, "succeeded");
        const bar: Bar = { path, from: at, to: null, kind: "wait", outcome: "waiting", label: `waits (${String(e.wait ?? "")})` };
        out.push(bar);
        open.set(path, bar);
        break;
      }
      case "gate_decided":
      case "step_accepted":
      case "step_reworked":
      case "answered":
        close(path, at, "decided");
        break;
    }
  }
  return out;
}

/** Bars by row; a group's instances become one bar per outcome, from the
 *  first of them to start to the last to end. */
export function rows(all: Bar[]): Map<string, Bar[]> {
  const out = new Map<string, Bar[]>();
  for (const bar of all) {
    const row = rowOf(bar.path);
    const list = out.get(row) ?? [];
    if (row === bar.path) list.push(bar);
    else {
      const merged = list.find((b) => b.path !== row && b.kind === bar.kind && b.outcome === bar.outcome);
      if (merged) {
        merged.from = Math.min(merged.from, bar.from);
        merged.to = merged.to === null || bar.to === null ? null : Math.max(merged.to, bar.to);
        merged.label = `${Number.parseInt(merged.label, 10) + 1} instance ${bar.kind}s`;
      } else list.push({ ...bar, label: `1 instance ${bar.kind}s` });
    }
    out.set(row, list);
  }
  return out;
}

export function Timeline({ events, onSelect }: { events: CairnEvent[]; onSelect: (path: string) => void }) {
  const all = useMemo(() => bars(events), [events]);
  const byRow = useMemo(() => rows(all), [all]);
  if (all.length === 0) return <p className="muted">No attempt has started.</p>;
  const now = Date.now();
  let start = Infinity;
  let end = -Infinity;
  for (const b of all) {
    start = Math.min(start, b.from);
    end = Math.max(end, b.to ?? now);
  }
  end = Math.max(end, start + 1);
  const pct = (t: number) => `${((100 * (t - start)) / (end - start)).toFixed(3)}%`;
  return (
    <div className="timeline" data-testid="timeline">
      <div className="axis">
        <span>0</span>
        <span>{duration(end - start)}</span>
      </div>
      {[...byRow].map(([path, list]) => (
        <div key={path} className="timeline-row">
          <button className="link row-label" onClick={() => onSelect(path)} title={path}>
            {path}
          </button>
          <div className="lane">
            {list.map((b, i) => {
                const to = b.to ?? now;
                return (
                  <div
                    key={i}
                    className={`bar ${b.kind} ${b.outcome}`}
                    style={{ left: pct(b.from), width: `max(2px, calc(${pct(to)} - ${pct(b.from)}))` }}
                    title={`${b.label}: ${b.outcome}, ${duration(to - b.from)}`}
                  />
                );
              })}
          </div>
        </div>
      ))}
    </div>
  );
}
