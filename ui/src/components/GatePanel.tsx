// Deciding at a gate as the signed-in identity: approve, reject (a
// rejection's comment becomes the rework's feedback) or answer a model's
// questions, or take the person's turn in an interactive step's
// conversation (`/done` ends it); who decided what so far. Buttons show
// only where the server says the signed-in identity may act (`GET
// /gates`); it refuses anyone else anyway.
import { useState } from "react";
import { api, problemText, type WaitingGate } from "../lib/api";
import { when } from "../lib/format";
import { Output } from "./Output";

/** The role the signed-in identity decides at `gate` as, or why it cannot. */
export function mayAt(gate: WaitingGate): { role: string | null } | { cannot: string } {
  return gate.cannot !== undefined ? { cannot: gate.cannot } : { role: gate.decide_as ?? null };
}

export function GatePanel({ gate, onDone }: { gate: WaitingGate; onDone: () => void }) {
  const runId = gate.run_id;
  const [comment, setComment] = useState("");
  const [busy, setBusy] = useState(false);
  const [error, setError] = useState<string | null>(null);
  const may = mayAt(gate);
  const answers = gate.kind === "clarification" || gate.kind === "conversation";
  const decide = async (verdict: "approve" | "reject" | "answer", text: string = comment) => {
    setBusy(true);
    setError(null);
    const params = { path: { id: runId } };
    const role = "role" in may ? may.role : null;
    const result =
      verdict === "answer"
        ? await api.POST("/api/v1/runs/{id}/answer", { params, body: { gate: gate.gate, text } })
        : await api.POST(verdict === "approve" ? "/api/v1/runs/{id}/approve" : "/api/v1/runs/{id}/reject", {
            params,
            body: { gate: gate.gate, as: role, comment: comment || null },
          });
    setBusy(false);
    if (result.error) setError(problemText(result.error));
    else {
      setComment("");
      onDone();
    }
  };
  return (
    <section className="gate" data-testid={`gate-${gate.gate}`}>
      <h3>
        {gate.kind === "acceptance"
          ? "Accept the output of"
          : gate.kind === "approval"
            ? "Approve"
            : gate.kind === "conversation"
              ? "Your turn in"
              : "Answer"}{" "}
        <code>{gate.gate}</code>
      </h3>
      {gate.message && <p>{gate.message}</p>}
      {gate.questions && gate.questions.length > 0 && (
        <ol>
          {gate.questions.map((q, i) => (
            <li key={i}>{q}</li>
          ))}
        </ol>
      )}
      {gate.output !== undefined && <Output value={gate.output} />}
      {!answers && (
        <p className="muted">
          {gate.approvers.length > 0 ? `Needs: ${gate.approvers.join(", ")}` : "Needs one approval from anyone"}
          {gate.deadline && ` · decided by its timeout at ${when(gate.deadline)}`}
        </p>
      )}
      {gate.approved_by.length > 0 && (
        <ul className="decisions">
          {gate.approved_by.map((a, i) => (
            <li key={i}>
              approved by <strong>{a.by}</strong>
              {a.role && <> as {a.role}</>} at {when(a.at)}
              {a.comment && <>: “{a.comment}”</>}
            </li>
          ))}
        </ul>
      )}
      {"cannot" in may ? (
        <p className="muted" data-testid="cannot-decide">
          You cannot decide here: {may.cannot}.
        </p>
      ) : (
        <div className="decide">
          <textarea
            aria-label="comment"
            placeholder={
              gate.kind === "conversation"
                ? "your reply (/done alone ends the conversation)"
                : gate.kind === "clarification"
                  ? "your answers"
                  : "a comment (a rejection's is the rework's feedback)"
            }
            value={comment}
            onChange={(e) => setComment(e.target.value)}
          />
          <div className="buttons">
            {answers ? (
              <>
                <button disabled={busy || comment.trim() === ""} onClick={() => decide("answer")}>
                  {gate.kind === "conversation" ? "Reply" : "Answer"}
                </button>
                {gate.kind === "conversation" && (
                  <button disabled={busy} onClick={() => decide("answer", "/done")}>
                    End it
                  </button>
                )}
              </>
            ) : (
              <>
                <button className="approve" disabled={busy} onClick={() => decide("approve")}>
                  Approve{may.role ? ` as ${may.role}` : ""}
                </button>
                <button className="reject" disabled={busy} onClick={() => decide("reject")}>
                  Reject
                </button>
              </>
            )}
          </div>
          {error && <p className="error">{error}</p>}
        </div>
      )}
    </section>
  );
}
