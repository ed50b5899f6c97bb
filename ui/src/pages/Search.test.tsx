import { render } from "@testing-library/react";
import { describe, expect, it } from "vitest";
import type { SearchHit } from "../lib/api";
import { Snippet, hitLink } from "./Search";

describe("Search", () => {
  it("marks the matched words and shows markup in a snippet as text, running nothing", () => {
    const pieces = [
      { text: '<script>window.pwned = 1</script> the ', hit: false },
      { text: "printer", hit: true },
      { text: ' <img src=x onerror="window.pwned = 2">', hit: false },
    ];
    const { container } = render(<Snippet pieces={pieces} />);
    expect(container.querySelector("script")).toBeNull();
    expect(container.querySelector("img")).toBeNull();
    expect([...container.querySelectorAll("mark")].map((m) => m.textContent)).toEqual(["printer"]);
    expect(container.textContent).toBe(pieces.map((p) => p.text).join(""));
    expect((window as unknown as { pwned?: number }).pwned).toBeUndefined();
  });

  it("leads a run's hit to its page and a workflow's to the editor, ids escaped", () => {
    const hit = (kind: "run" | "workflow", id: string) => ({ kind, id, workflow: "w", score: 1, field: "id", snippet: [], run: null }) as SearchHit;
    expect(hitLink(hit("run", "r/1"))).toBe("/runs/r%2F1");
    expect(hitLink(hit("workflow", "ticket-triage"))).toBe("/workflows?workflow=ticket-triage");
  });
});
