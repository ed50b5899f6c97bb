// The gates waiting for the signed-in identity: every run that waits for
// people, and in each, the gates one of its gate roles may decide.
import { useEffect, useState } from "react";
import { roleAt } from "../components/GatePanel";
import { api, type Gate, type Run, type RunStatus, type Session } from "../lib/api";
import { when, words } from "../lib/format";
import { Link } from "../lib/router";

const WAITING: RunStatus[] = ["waiting_acceptance", "waiting_approval", "waiting_clarification", "waiting_conversation"];

export function Inbox({ session }: { session: Session }) {
  const [items, setItems] = useState<{ run: Run; gate: Gate }[] | null>(null);
  useEffect(() => {
    void (async () => {
      const found: { run: Run; gate: Gate }[] = [];
      for (const status of WAITING) {
        const { data } = await api.GET("/api/v1/runs", { params: { query: { status, limit: 500 } } });
        for (const summary of data?.runs ?? []) {
          const { data: run } = await api.GET("/api/v1/runs/{id}", { params: { path: { id: summary.run_id } } });
          for (const gate of run?.gates ?? []) {
            if ("role" in roleAt(session, gate)) found.push({ run: run!, gate });
          }
        }
      }
      setItems(found);
    })();
  }, [session]);
  if (items === null) return <p className="muted">Looking for gates…</p>;
  if (items.length === 0) return <p className="muted">Nothing waits for you.</p>;
  return (
    <table className="inbox" data-testid="inbox">
      <thead>
        <tr>
          <th>run</th>
          <th>gate</th>
          <th>waits for</th>
          <th>since</th>
          <th>needs</th>
        </tr>
      </thead>
      <tbody>
        {items.map(({ run, gate }) => (
          <tr key={`${run.run_id}/${gate.gate}`}>
            <td>
              <Link to={`/runs/${encodeURIComponent(run.run_id)}`}>{run.run_id}</Link> <span className="muted">{run.workflow}</span>
            </td>
            <td>
              <code>{gate.gate}</code>
            </td>
            <td>{words(gate.kind)}</td>
            <td>{when(run.updated_at)}</td>
            <td>{gate.approvers.join(", ") || "anyone"}</td>
          </tr>
        ))}
      </tbody>
    </table>
  );
}
