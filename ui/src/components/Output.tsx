// A step's output shown as what it is: JSON pretty-printed, Markdown as
// Markdown, anything else as text. Everything goes through React's text
// nodes: nothing from a run is ever parsed as HTML.
import { Fragment, type ReactNode } from "react";

/** Whether text reads as Markdown (headings, lists, fences, emphasis). */
export function looksLikeMarkdown(text: string): boolean {
  return /^(#{1,6} |[-*] |\d+\. |```)/m.test(text) || /\*\*[^*]+\*\*/.test(text);
}

/** Inline Markdown: `code`, **bold**, *italic*; the rest as text. */
function inline(text: string): ReactNode[] {
  const out: ReactNode[] = [];
  const pattern = /(`[^`]+`|\*\*[^*]+\*\*|\*[^*\s][^*]*\*)/g;
  let last = 0;
  for (const match of text.matchAll(pattern)) {
    const at = match.index ?? 0;
    if (at > last) out.push(text.slice(last, at));
    const m = match[0];
    if (m.startsWith("`")) out.push(<code key={at}>{m.slice(1, -1)}</code>);
    else if (m.startsWith("**")) out.push(<strong key={at}>{m.slice(2, -2)}</strong>);
    else out.push(<em key={at}>{m.slice(1, -1)}</em>);
    last = at + m.length;
  }
  if (last < text.length) out.push(text.slice(last));
  return out;
}

/** Block Markdown: headings, lists, fenced code, paragraphs. */
export function Markdown({ text }: { text: string }) {
  const blocks: ReactNode[] = [];
  const lines = text.split("\n");
  let i = 0;
  while (i < lines.length) {
    const line = lines[i];
    if (line.startsWith("```")) {
      const code: string[] = [];
      i++;
      while (i < lines.length && !lines[i].startsWith("```")) code.push(lines[i++]);
      i++;
      blocks.push(<pre key={blocks.length}>{code.join("\n")}</pre>);
      continue;
    }
    const heading = /^(#{1,6}) (.*)$/.exec(line);
    if (heading) {
      const level = Math.min(heading[1].length + 2, 6);
      const Tag = `h${level}` as "h3";
      blocks.push(<Tag key={blocks.length}>{inline(heading[2])}</Tag>);
      i++;
      continue;
    }
    if (/^([-*]|\d+\.) /.test(line)) {
      const ordered = /^\d+\. /.test(line);
      const items: ReactNode[] = [];
      while (i < lines.length && /^([-*]|\d+\.) /.test(lines[i])) {
        items.push(<li key={items.length}>{inline(lines[i].replace(/^([-*]|\d+\.) /, ""))}</li>);
        i++;
      }
      blocks.push(ordered ? <ol key={blocks.length}>{items}</ol> : <ul key={blocks.length}>{items}</ul>);
      continue;
    }
    if (line.trim() === "") {
      i++;
      continue;
    }
    const para: string[] = [];
    while (i < lines.length && lines[i].trim() !== "" && !/^(#{1,6} |[-*] |\d+\. |```)/.test(lines[i])) {
      para.push(lines[i++]);
    }
    blocks.push(
      <p key={blocks.length}>
        {para.map((l, k) => (
          <Fragment key={k}>
            {k > 0 && <br />}
            {inline(l)}
          </Fragment>
        ))}
      </p>,
    );
  }
  return <div className="markdown">{blocks}</div>;
}

/** Any output: text as Markdown or text, anything else as JSON. */
export function Output({ value }: { value: unknown }) {
  if (value === null || value === undefined) return <span className="muted">no output</span>;
  if (typeof value === "string") {
    return looksLikeMarkdown(value) ? <Markdown text={value} /> : <pre className="text">{value}</pre>;
  }
  return <pre className="json">{JSON.stringify(value, null, 2)}</pre>;
}
