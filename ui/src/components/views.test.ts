import { describe, expect, it } from "vitest";
import type { CairnEvent, RunSummary, Step, WaitingGate } from "../lib/api";
import { matches } from "../pages/Runs";
import { instancesOf, layout, summary } from "./Dag";
import { filterEvents, isFailure } from "./Events";
import { mayAt } from "./GatePanel";
import { conversation } from "./StepPanel";
import { bars, rows } from "./Timeline";

const step = (path: string, status: Step["status"]): Step =>
  ({ path, id: path, status, attempts: 1, output: null, error: null, started_at: null, finished_at: null, duration_ms: null }) as Step;
const event = (seq: number, type: string, fields: Record<string, unknown> = {}): CairnEvent =>
  ({ seq, at: new Date(1_700_000_000_000 + seq * 1000).toISOString(), actor: "engine", type, ...fields }) as CairnEvent;

describe("the graph", () => {
  it("groups a fan-out's steps by instance and opens the group on request", () => {
    const steps = [step("fan", "running"), step("fan[0].a", "succeeded"), step("fan[0].b", "failed"), step("fan[1].a", "running"), step("after", "pending")];
    const groups = instancesOf("fan", steps);
    expect([...groups.keys()]).toEqual(["0", "1"]);
    expect(summary(groups.get("0") ?? [])).toBe("failed");
    const plan = [
      { id: "fan", kind: "for_each", needs: [], level: 0, body: { levels: [], critical_path: 1, steps: [] } },
      { id: "after", kind: "set", needs: ["fan"], level: 1 },
    ];
    expect(layout(plan, steps, new Set()).nodes.map((n) => n.id)).toEqual(["fan", "after"]);
    const open = layout(plan, steps, new Set(["fan"]));
    expect(open.nodes.map((n) => n.id)).toEqual(["fan", "fan[0]", "fan[1]", "after"]);
    expect(open.nodes.find((n) => n.id === "fan[0]")?.data.status).toBe("failed");
  });

  it("draws the way of a failure red", () => {
    const plan = [
      { id: "a", kind: "agent", needs: [], level: 0 },
      { id: "b", kind: "agent", needs: ["a"], level: 1 },
    ];
    const { edges } = layout(plan, [step("a", "failed"), step("b", "skipped")], new Set());
    expect(edges[0].className).toBe("failure");
    expect(layout(plan, [step("a", "succeeded"), step("b", "skipped")], new Set()).edges[0].className).toBeUndefined();
  });
});

describe("the timeline", () => {
  it("makes a bar of each attempt and wait, and one row of a whole fan-out", () => {
    const events = [
      event(1, "step_started", { path: "plan", attempt: 1 }),
      event(2, "step_failed", { path: "plan", attempt: 1 }),
      event(3, "step_started", { path: "plan", attempt: 2 }),
      event(4, "step_waiting", { path: "plan", wait: "acceptance" }),
      event(5, "gate_decided", { path: "plan", approve: true }),
      event(6, "step_started", { path: "fan[0].a", attempt: 1 }),
      event(7, "step_started", { path: "fan[1].a", attempt: 1 }),
      event(8, "step_succeeded", { path: "fan[0].a" }),
      event(9, "step_succeeded", { path: "fan[1].a" }),
    ];
    const all = bars(events);
    expect(all.map((b) => `${b.path}:${b.kind}:${b.outcome}`)).toEqual([
      "plan:attempt:failed",
      "plan:attempt:succeeded",
      "plan:wait:decided",
      "fan[0].a:attempt:succeeded",
      "fan[1].a:attempt:succeeded",
    ]);
    const byRow = rows(all);
    expect([...byRow.keys()]).toEqual(["plan", "fan"]);
    expect(byRow.get("fan")).toHaveLength(1);
    expect(byRow.get("fan")?.[0].label).toBe("2 instance attempts");
  });
});

describe("the events", () => {
  it("filter by type, step and failures", () => {
    const events = [
      event(1, "step_started", { path: "a" }),
      event(2, "step_failed", { path: "a" }),
      event(3, "gate_decided", { path: "b", approve: false }),
      event(4, "gate_decided", { path: "b", approve: true }),
    ];
    expect(filterEvents(events, "gate_decided", "", false).map((e) => e.seq)).toEqual([3, 4]);
    expect(filterEvents(events, "", "a", false).map((e) => e.seq)).toEqual([1, 2]);
    expect(filterEvents(events, "", "", true).map((e) => e.seq)).toEqual([2, 3]);
    expect(isFailure(events[3])).toBe(false);
  });
});

describe("deciding at a gate", () => {
  const gate = (may: { decide_as?: string | null; cannot?: string }): WaitingGate =>
    ({ gate: "g", kind: "approval", approvers: ["lead"], approved_by: [], run_id: "r", workflow: "w", run_status: "waiting_approval", updated_at: "", ...may }) as WaitingGate;

  it("offers what the server says the identity may do, and nothing where it cannot", () => {
    expect(mayAt(gate({ decide_as: "lead" }))).toEqual({ role: "lead" });
    expect(mayAt(gate({ decide_as: null }))).toEqual({ role: null });
    expect(mayAt(gate({ cannot: "the gate waits for lead" }))).toEqual({ cannot: "the gate waits for lead" });
  });
});

describe("the step panel", () => {
  it("shows each attempt's prompt, the answers and the comments that sent it back", () => {
    const events = [
      event(1, "step_started", { path: "draft", attempt: 1 }),
      event(2, "prompt_rendered", { path: "draft", attempt: 1, system: "Be brief.", prompt: "Write it." }),
      event(3, "prompt_rendered", { path: "other", attempt: 1, prompt: "Not this one." }),
      event(4, "step_succeeded", { path: "draft", output: "v1" }),
      event(5, "gate_decided", { path: "draft", approve: false, comment: "more detail", actor: "bob" }),
      event(6, "prompt_rendered", { path: "draft", attempt: 2, prompt: "Write it. Reviewer: more detail" }),
      event(7, "step_succeeded", { path: "draft", output: { text: "v2" } }),
      event(8, "session_extended", { path: "draft", turns: [{ type: "prompt", text: "Write it." }] }),
    ];
    expect(conversation(events, "draft")).toEqual([
      { role: "system #1", text: "Be brief." },
      { role: "prompt #1", text: "Write it." },
      { role: "answer", text: "v1" },
      { role: "rejected", text: "bob: more detail" },
      { role: "prompt #2", text: "Write it. Reviewer: more detail" },
      { role: "answer", text: '{\n  "text": "v2"\n}' },
    ]);
  });

  it("shows each tool call and what it returned or why it was refused", () => {
    const events = [
      event(1, "prompt_rendered", { path: "fix", attempt: 1, prompt: "Fix it." }),
      event(2, "tool_called", { path: "fix", attempt: 1, round: 1, call_id: "a", tool: "read_file", arguments: '{"path":"src/lib.rs"}' }),
      event(3, "tool_returned", { path: "fix", attempt: 1, call_id: "a", result: "fn add() {}" }),
      event(4, "tool_called", { path: "fix", attempt: 1, round: 2, call_id: "b", tool: "run_command", arguments: '{"program":"rm"}' }),
      event(5, "tool_returned", { path: "fix", attempt: 1, call_id: "b", result: "`rm` is not an allowed program", refused: true }),
      event(6, "step_succeeded", { path: "fix", output: "done" }),
    ];
    expect(conversation(events, "fix")).toEqual([
      { role: "prompt #1", text: "Fix it." },
      { role: "tool call #1", text: 'read_file {"path":"src/lib.rs"}' },
      { role: "tool result", text: "fn add() {}" },
      { role: "tool call #2", text: 'run_command {"program":"rm"}' },
      { role: "tool refused", text: "`rm` is not an allowed program" },
      { role: "answer", text: "done" },
    ]);
  });

  it("shows an interactive step's turns by who took them, and no empty questions at a gate", () => {
    const events = [
      event(1, "prompt_rendered", { path: "chat", attempt: 1, prompt: "Name it." }),
      event(2, "step_waiting", { path: "chat", wait: "conversation", message: "ledger?", questions: [] }),
      event(3, "answered", { path: "chat", text: "Shorter.", actor: "ana" }),
      event(4, "prompt_rendered", { path: "chat", attempt: 2, prompt: "Name it." }),
      event(5, "step_waiting", { path: "chat", wait: "conversation", message: "tally?", questions: [] }),
      event(6, "step_waiting", { path: "ok", wait: "approval", message: "Ship?", questions: [] }),
    ];
    expect(conversation(events, "chat")).toEqual([
      { role: "prompt #1", text: "Name it." },
      { role: "agent", text: "ledger?" },
      { role: "ana", text: "Shorter." },
      { role: "prompt #2", text: "Name it." },
      { role: "agent", text: "tally?" },
    ]);
    expect(conversation(events, "ok")).toEqual([]);
  });

  it("falls back to the kept session turns of logs written before prompts were recorded", () => {
    const events = [event(1, "session_extended", { path: "plan", turns: [{ type: "prompt", text: "Plan." }, { type: "answer", text: "ok" }] })];
    expect(conversation(events, "plan")).toEqual([
      { role: "prompt", text: "Plan." },
      { role: "answer", text: "ok" },
    ]);
  });
});

describe("the run list", () => {
  const run = (run_id: string, labels: Record<string, string>): RunSummary =>
    ({ run_id, workflow: "triage", status: "completed", driven: false, labels, created_at: "", updated_at: "", usage: {} }) as unknown as RunSummary;

  it("keeps a run with every label asked for, and searches ids, workflows and labels", () => {
    const a = run("a1", { team: "pay", pr: "7" });
    const b = run("b2", { team: "search" });
    expect(matches(a, "", "", ["team=pay"], "")).toBe(true);
    expect(matches(a, "", "", ["team=pay", "pr=8"], "")).toBe(false);
    expect(matches(b, "", "", ["team=pay"], "")).toBe(false);
    expect(matches(b, "", "", [], "search")).toBe(true);
    expect(matches(b, "", "", [], "triage")).toBe(true);
    expect(matches(b, "", "", [], "a1")).toBe(false);
    expect(matches(a, "failed", "", [], "")).toBe(false);
  });
});
