// The run's graph: the plan's steps laid out by dagre, coloured by their
// state; a `for_each` or `loop` shows how many of its instances finished
// and opens to one node per instance; the way a failure went is drawn red.
import dagre from "@dagrejs/dagre";
import { Background, Controls, type Edge, type Node, ReactFlow } from "@xyflow/react";
import { useMemo } from "react";
import type { PlanStep, Step } from "../lib/api";

const WIDTH = 190;
const HEIGHT = 64;

/** What a node shows. */
interface StepNode extends Record<string, unknown> {
  label: string;
  kind: string;
  status: string;
  detail: string;
}

/** The instances of group `id` among a run's steps: key → its steps. */
export function instancesOf(id: string, steps: Step[]): Map<string, Step[]> {
  const out = new Map<string, Step[]>();
  const prefix = `${id}[`;
  for (const step of steps) {
    if (!step.path.startsWith(prefix)) continue;
    const close = step.path.indexOf("]", prefix.length);
    if (close < 0) continue;
    const key = step.path.slice(prefix.length, close);
    const list = out.get(key) ?? [];
    list.push(step);
    out.set(key, list);
  }
  return out;
}

/** The state a group of steps shows: the first of failed, running, waiting, ... that any has. */
export function summary(steps: Step[]): string {
  for (const status of ["failed", "running", "waiting", "pending", "cancelled", "skipped"]) {
    if (steps.some((s) => s.status === status)) return status;
  }
  return steps.length > 0 ? "succeeded" : "pending";
}

/** Nodes and edges of a plan over a run's steps, laid out left to right. */
export function layout(plan: PlanStep[], steps: Step[], expanded: Set<string>): { nodes: Node<StepNode>[]; edges: Edge[] } {
  const byPath = new Map(steps.map((s) => [s.path, s]));
  const g = new dagre.graphlib.Graph();
  g.setGraph({ rankdir: "LR", nodesep: 18, ranksep: 48 });
  g.setDefaultEdgeLabel(() => ({}));
  const data = new Map<string, StepNode>();
  const edges: Edge[] = [];
  for (const p of plan) {
    const step = byPath.get(p.id);
    const status = step?.status ?? "pending";
    let detail = step?.attempts ? `attempt ${step.attempts}` : "";
    if (step?.instances) detail = `${step.instances.finished}/${step.instances.total} instances`;
    data.set(p.id, { label: p.id, kind: p.kind, status, detail });
    g.setNode(p.id, { width: WIDTH, height: HEIGHT });
    for (const need of p.needs) {
      const from = byPath.get(need)?.status;
      const failed = from === "failed" && (status === "skipped" || status === "cancelled" || status === "failed");
      edges.push({ id: `${need}->${p.id}`, source: need, target: p.id, className: failed ? "failure" : undefined, animated: status === "running" });
      g.setEdge(need, p.id);
    }
    if (p.body && expanded.has(p.id)) {
      for (const [key, list] of instancesOf(p.id, steps)) {
        const id = `${p.id}[${key}]`;
        const done = list.filter((s) => ["succeeded", "skipped"].includes(s.status)).length;
        data.set(id, { label: id, kind: "instance", status: summary(list), detail: `${done}/${list.length} steps` });
        g.setNode(id, { width: WIDTH, height: HEIGHT });
        g.setEdge(p.id, id);
        edges.push({ id: `${p.id}->${id}`, source: p.id, target: id, className: "instance" });
      }
    }
  }
  dagre.layout(g);
  const nodes: Node<StepNode>[] = [...data].map(([id, d]) => {
    const at = g.node(id);
    return {
      id,
      position: { x: at.x - WIDTH / 2, y: at.y - HEIGHT / 2 },
      data: d,
      type: "step",
      className: `step-node status-${d.status}`,
      width: WIDTH,
      height: HEIGHT,
    };
  });
  return { nodes, edges };
}

function StepBox({ data }: { data: StepNode }) {
  return (
    <div className="step-box" title={`${data.label}: ${data.status}`}>
      <div className="step-label">{data.label}</div>
      <div className="step-meta">
        <span className="kind">{data.kind}</span> · <span>{data.status}</span>
      </div>
      {data.detail && <div className="step-meta">{data.detail}</div>}
    </div>
  );
}

const nodeTypes = { step: StepBox };

/** The graph; clicking a node selects it, clicking a group opens or closes it. */
export function Dag(props: {
  plan: PlanStep[];
  steps: Step[];
  expanded: Set<string>;
  selected: string | null;
  onSelect: (path: string) => void;
  onToggle: (group: string) => void;
}) {
  const { plan, steps, expanded } = props;
  const { nodes, edges } = useMemo(() => layout(plan, steps, expanded), [plan, steps, expanded]);
  const groups = useMemo(() => new Set(plan.filter((p) => p.body).map((p) => p.id)), [plan]);
  const shown = nodes.map((n) => (n.id === props.selected ? { ...n, className: `${n.className} selected` } : n));
  return (
    <div className="dag" data-testid="dag">
      <ReactFlow
        nodes={shown}
        edges={edges}
        nodeTypes={nodeTypes}
        nodesDraggable={false}
        nodesConnectable={false}
        fitView
        fitViewOptions={{ maxZoom: 1.2 }}
        minZoom={0.2}
        onNodeClick={(_, node) => {
          if (groups.has(node.id)) props.onToggle(node.id);
          props.onSelect(node.id);
        }}
      >
        <Background gap={16} size={1} />
        <Controls showInteractive={false} />
      </ReactFlow>
    </div>
  );
}
