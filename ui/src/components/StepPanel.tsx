// One step as far as the run knows it: state, attempts and times, usage,
// its error with the hint, its output (JSON and Markdown as such), the
// conversation its events recorded (each attempt's rendered prompt, the
// tool calls and what they returned, the answers, reviewers' comments,
// repairs, questions and answers), and the
// text of a model answering right now as it streams in.
import type { CairnEvent, Step } from "../lib/api";
import { between, duration, when } from "../lib/format";
import { Link } from "../lib/router";
import { Output } from "./Output";

/** One recorded turn of a conversation (`session_extended`). */
interface Turn {
  type?: string;
  role?: string;
  text?: string;
  content?: string;
  comment?: string;
  questions?: string[];
}

/** A turn as a role and its words. */
function turn(t: Turn): { role: string; text: string } {
  const text = t.text ?? t.content ?? t.comment ?? t.questions?.join("\n") ?? "";
  return { role: t.type ?? t.role ?? "turn", text };
}

/** A step's output as conversation text: strings as they are, the rest as JSON. */
function said(value: unknown): string {
  return typeof value === "string" ? value : JSON.stringify(value, null, 2);
}

/**
 * The conversation of a step: what its events recorded, in order. Logs
 * written before prompts were recorded (`prompt_rendered`) show the
 * turns a `session: reuse` agent kept instead.
 */
export function conversation(events: CairnEvent[], path: string): { role: string; text: string }[] {
  const out: { role: string; text: string }[] = [];
  const own = events.filter((e) => e.path === path);
  const prompts = own.some((e) => e.type === "prompt_rendered");
  // An answer is to the model's questions, or a person's turn in an
  // interactive step's conversation: the wait before it says which.
  let talking = false;
  for (const e of own) {
    if (e.type === "prompt_rendered") {
      if (typeof e.system === "string") out.push({ role: `system #${e.attempt}`, text: e.system });
      out.push({ role: `prompt #${e.attempt}`, text: String(e.prompt ?? "") });
    } else if (e.type === "tool_called") {
      out.push({ role: `tool call #${e.round}`, text: `${e.tool} ${e.arguments}` });
    } else if (e.type === "tool_returned") {
      out.push({ role: e.refused ? "tool refused" : "tool result", text: String(e.result ?? "") });
    } else if (e.type === "step_succeeded" && prompts) {
      out.push({ role: "answer", text: said(e.output) });
    } else if (e.type === "session_extended" && !prompts && Array.isArray(e.turns)) {
      for (const t of e.turns as Turn[]) out.push(turn(t));
    } else if (e.type === "output_repaired") {
      out.push({ role: "repair", text: String(e.reason ?? "") });
    } else if (e.type === "step_waiting") {
      talking = e.wait === "conversation";
      if (talking) out.push({ role: "agent", text: String(e.message ?? "") });
      else if (Array.isArray(e.questions) && e.questions.length > 0)
        out.push({ role: "questions", text: (e.questions as string[]).join("\n") });
    } else if (e.type === "gate_decided" && typeof e.comment === "string") {
      out.push({ role: e.approve ? "approved" : "rejected", text: `${e.actor}: ${e.comment}` });
    } else if (e.type === "answered") {
      out.push({ role: talking ? `${e.actor}` : "answers", text: String(e.text ?? "") });
    }
  }
  return out;
}

export function StepPanel({ step, events, live }: { step: Step | undefined; events: CairnEvent[]; live: string | undefined }) {
  if (!step) return <p className="muted">Select a step in the graph, the timeline or the events.</p>;
  const turns = conversation(events, step.path);
  return (
    <section className="step-panel" data-testid="step-panel">
      <h3>
        <code>{step.path}</code> <span className={`badge status-${step.status}`}>{step.status}</span>
      </h3>
      <dl>
        <dt>attempts</dt>
        <dd>{step.attempts}</dd>
        <dt>started</dt>
        <dd>{when(step.started_at)}</dd>
        <dt>took</dt>
        <dd>{duration(step.duration_ms ?? between(step.started_at, step.finished_at))}</dd>
        {step.usage && (
          <>
            <dt>tokens</dt>
            <dd>
              {step.usage.prompt_tokens} in, {step.usage.completion_tokens} out{step.usage.estimated ? " (estimated)" : ""}
            </dd>
          </>
        )}
        {step.child && (
          <>
            <dt>child run</dt>
            <dd>
              <Link to={`/runs/${step.child}`}>{step.child}</Link>
            </dd>
          </>
        )}
        {step.instances && (
          <>
            <dt>instances</dt>
            <dd>
              {step.instances.finished} of {step.instances.total} finished
            </dd>
          </>
        )}
      </dl>
      {step.error && (
        <div className="error-box">
          <strong>{step.error.class}</strong>: {step.error.message}
          {step.error.hint && <p className="hint">{step.error.hint}</p>}
        </div>
      )}
      {live !== undefined && (
        <>
          <h4>Answering now</h4>
          <pre className="text live" data-testid="live-text">
            {live}
          </pre>
        </>
      )}
      <h4>Output</h4>
      <Output value={step.output} />
      {turns.length > 0 && (
        <>
          <h4>Conversation</h4>
          <ol className="turns">
            {turns.map((t, i) => (
              <li key={i}>
                <span className="role">{t.role}</span>
                <pre className="text">{t.text}</pre>
              </li>
            ))}
          </ol>
        </>
      )}
    </section>
  );
}
