// The workflow editor: CodeMirror 6 with YAML, each problem that
// `POST /workflows/validate` finds marked at its line and column as you
// type (debounced), and the plan handed up to be drawn. Loaded only on
// the workflows page (its own chunk).
import { yaml } from "@codemirror/lang-yaml";
import { type Diagnostic, linter, lintGutter } from "@codemirror/lint";
import { EditorView, basicSetup } from "codemirror";
import { useEffect, useRef } from "react";
import { api, type DefinitionProblem, type Plan } from "../lib/api";

/** The nonce the server put in the page for styles this page makes. */
function nonce(): string {
  return document.querySelector('meta[name="csp-nonce"]')?.getAttribute("content") ?? "";
}

/** A problem as a diagnostic at its line and column (the whole file when unknown). */
export function diagnostic(view: { state: { doc: { lines: number; line: (n: number) => { from: number; to: number; length: number } ; length: number } } }, p: DefinitionProblem): Diagnostic {
  const doc = view.state.doc;
  if (!p.line || p.line > doc.lines) {
    return { from: 0, to: Math.min(doc.length, 1), severity: "error", message: `${p.message} (${p.rule})` };
  }
  const line = doc.line(p.line);
  const from = line.from + Math.min(Math.max((p.column ?? 1) - 1, 0), line.length);
  return { from, to: Math.max(from + 1, line.to), severity: "error", message: `${p.path ? `${p.path}: ` : ""}${p.message} (${p.rule})` };
}

export default function Editor(props: {
  value: string;
  /** The files the definition names (its schemas), sent along to validate it. */
  files: Record<string, string>;
  onChange: (text: string) => void;
  onChecked: (problems: DefinitionProblem[], plan: Plan | null) => void;
}) {
  const host = useRef<HTMLDivElement>(null);
  const handlers = useRef(props);
  handlers.current = props;
  useEffect(() => {
    if (!host.current) return;
    const check = linter(
      async (view) => {
        const text = view.state.doc.toString();
        const { data } = await api.POST("/api/v1/workflows/validate", {
          body: { definition: text, files: handlers.current.files },
        });
        if (!data) return [];
        handlers.current.onChecked(data.problems, data.plan ?? null);
        return data.problems.map((p) => diagnostic(view, p));
      },
      { delay: 400 },
    );
    const view = new EditorView({
      doc: props.value,
      parent: host.current,
      extensions: [
        basicSetup,
        yaml(),
        lintGutter(),
        check,
        EditorView.cspNonce.of(nonce()),
        EditorView.updateListener.of((u) => {
          if (u.docChanged) handlers.current.onChange(u.state.doc.toString());
        }),
      ],
    });
    return () => view.destroy();
    // The editor owns its text once made; `value` seeds it.
    // eslint-disable-next-line react-hooks/exhaustive-deps
  }, []);
  return <div className="editor" ref={host} data-testid="editor" />;
}
