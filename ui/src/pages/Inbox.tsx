// The gates waiting for the signed-in identity, in every run not ended:
// the server lists those it may act at (`GET /gates?mine=true`).
import { useEffect, useState } from "react";
import { api, problemText, type WaitingGate } from "../lib/api";
import { when, words } from "../lib/format";
import { Link } from "../lib/router";

export function Inbox() {
  const [items, setItems] = useState<WaitingGate[] | null>(null);
  const [error, setError] = useState<string | null>(null);
  useEffect(() => {
    void api.GET("/api/v1/gates", { params: { query: { mine: true } } }).then(({ data, error }) => {
      if (error) setError(problemText(error));
      else setItems(data.gates);
    });
  }, []);
  if (error) return <p className="error">{error}</p>;
  if (items === null) return <p className="muted">Looking for gates…</p>;
  if (items.length === 0) return <p className="muted">Nothing waits for you.</p>;
  return (
    <table className="inbox" data-testid="inbox">
      <thead>
        <tr>
          <th>run</th>
          <th>gate</th>
          <th>waits for</th>
          <th>run changed</th>
          <th>needs</th>
        </tr>
      </thead>
      <tbody>
        {items.map((gate) => (
          <tr key={`${gate.run_id}/${gate.gate}`}>
            <td>
              <Link to={`/runs/${encodeURIComponent(gate.run_id)}`}>{gate.run_id}</Link> <span className="muted">{gate.workflow}</span>
            </td>
            <td>
              <code>{gate.gate}</code>
            </td>
            <td>{words(gate.kind)}</td>
            <td>{when(gate.updated_at)}</td>
            <td>{gate.approvers.join(", ") || "anyone"}</td>
          </tr>
        ))}
      </tbody>
    </table>
  );
}
