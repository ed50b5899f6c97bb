import { render } from "@testing-library/react";
import { describe, expect, it } from "vitest";
import { Output, looksLikeMarkdown } from "./Output";

describe("Output", () => {
  it("shows HTML and script in an output as text, running nothing", () => {
    const hostile = '<script>window.pwned = 1</script><img src=x onerror="window.pwned = 2">';
    for (const value of [hostile, `# Title\n\n${hostile}\n- **${hostile}**`, { html: hostile }]) {
      const { container, unmount } = render(<Output value={value} />);
      expect(container.querySelector("script")).toBeNull();
      expect(container.querySelector("img")).toBeNull();
      expect(container.textContent).toContain("<script>");
      unmount();
    }
    expect((window as unknown as { pwned?: number }).pwned).toBeUndefined();
  });

  it("shows Markdown as Markdown and JSON pretty", () => {
    const { container } = render(<Output value={"# Plan\n\n- one\n- **two**\n\n```\ncode\n```"} />);
    expect(container.querySelector("h3")?.textContent).toBe("Plan");
    expect(container.querySelectorAll("li")).toHaveLength(2);
    expect(container.querySelector("strong")?.textContent).toBe("two");
    expect(container.querySelector("pre")?.textContent).toBe("code");
    const json = render(<Output value={{ a: [1, 2] }} />);
    expect(json.container.textContent).toBe('{\n  "a": [\n    1,\n    2\n  ]\n}');
  });

  it("reads plain text as text", () => {
    expect(looksLikeMarkdown("just words, with a - dash")).toBe(false);
    expect(looksLikeMarkdown("1. first")).toBe(true);
  });
});
