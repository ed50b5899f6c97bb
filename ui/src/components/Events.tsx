// The run's events, virtualised (only the rows in view are in the
// document, so 10,000 events scroll like ten), filtered by type, step and
// failures.
import { useMemo, useState } from "react";
import type { CairnEvent } from "../lib/api";
import { when } from "../lib/format";

const ROW = 26;
const OVERSCAN = 12;

/** Whether an event says something failed. */
export function isFailure(e: CairnEvent): boolean {
  return /failed|rejected|cancelled|timed_out/.test(e.type) || (e.type === "gate_decided" && e.approve === false);
}

/** The step an event is about, when it is about one. */
export function stepOf(e: CairnEvent): string | null {
  return typeof e.path === "string" ? e.path : null;
}

/** The rest of an event's fields, on one line. */
function fields(e: CairnEvent): string {
  const rest: Record<string, unknown> = {};
  for (const [k, v] of Object.entries(e)) {
    if (!["seq", "at", "actor", "type", "path"].includes(k)) rest[k] = v;
  }
  const text = JSON.stringify(rest);
  return text === "{}" ? "" : text.length > 400 ? `${text.slice(0, 400)}…` : text;
}

/** Keeps the events that pass the filters. */
export function filterEvents(events: CairnEvent[], type: string, step: string, failedOnly: boolean): CairnEvent[] {
  return events.filter(
    (e) =>
      (type === "" || e.type === type) &&
      (step === "" || (stepOf(e) ?? "").includes(step)) &&
      (!failedOnly || isFailure(e)),
  );
}

export function Events({ events, onSelect }: { events: CairnEvent[]; onSelect: (path: string) => void }) {
  const [type, setType] = useState("");
  const [step, setStep] = useState("");
  const [failedOnly, setFailedOnly] = useState(false);
  const [top, setTop] = useState(0);
  const [height, setHeight] = useState(480);
  const types = useMemo(() => [...new Set(events.map((e) => e.type))].sort(), [events]);
  const shown = useMemo(() => filterEvents(events, type, step, failedOnly), [events, type, step, failedOnly]);
  const first = Math.max(0, Math.floor(top / ROW) - OVERSCAN);
  const last = Math.min(shown.length, Math.ceil((top + height) / ROW) + OVERSCAN);
  return (
    <div className="events">
      <div className="filters">
        <select aria-label="event type" value={type} onChange={(e) => setType(e.target.value)}>
          <option value="">every type</option>
          {types.map((t) => (
            <option key={t}>{t}</option>
          ))}
        </select>
        <input aria-label="step" placeholder="step" value={step} onChange={(e) => setStep(e.target.value)} />
        <label>
          <input type="checkbox" checked={failedOnly} onChange={(e) => setFailedOnly(e.target.checked)} /> failures only
        </label>
        <span className="muted">
          {shown.length} of {events.length}
        </span>
      </div>
      <div
        className="event-scroll"
        data-testid="event-scroll"
        ref={(el) => {
          if (el && el.clientHeight && el.clientHeight !== height) setHeight(el.clientHeight);
        }}
        onScroll={(e) => setTop(e.currentTarget.scrollTop)}
      >
        <div style={{ height: shown.length * ROW, position: "relative" }}>
          {shown.slice(first, last).map((e, i) => {
            const path = stepOf(e);
            return (
              <div
                key={e.seq}
                className={`event-row${isFailure(e) ? " failure" : ""}`}
                style={{ top: (first + i) * ROW }}
                data-seq={e.seq}
              >
                <span className="seq">{e.seq}</span>
                <span className="at">{when(e.at)}</span>
                <span className="type">{e.type}</span>
                <span className="path">
                  {path && (
                    <button className="link" onClick={() => onSelect(path)}>
                      {path}
                    </button>
                  )}
                </span>
                <span className="actor">{e.actor}</span>
                <span className="fields">{fields(e)}</span>
              </div>
            );
          })}
        </div>
      </div>
    </div>
  );
}
