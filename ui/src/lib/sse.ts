// A Server-Sent Events reader over fetch: the browser's EventSource can
// neither be told where to resume after a reconnect nor read events of
// names it was not told in advance, and cairn names each event by its type.

/** One event of a stream. */
export interface SseEvent {
  event: string;
  data: string;
  id?: string;
}

/** Splits a stream's text into events, keeping what is not yet a whole event. */
export class SseParser {
  private buffer = "";
  private event = "";
  private data: string[] = [];
  private id: string | undefined;

  /** Feeds a piece of text; returns the events it completes. */
  feed(text: string): SseEvent[] {
    this.buffer += text;
    const out: SseEvent[] = [];
    let start = 0;
    for (;;) {
      const nl = this.buffer.indexOf("\n", start);
      if (nl < 0) break;
      let line = this.buffer.slice(start, nl);
      if (line.endsWith("\r")) line = line.slice(0, -1);
      start = nl + 1;
      this.line(line, out);
    }
    this.buffer = this.buffer.slice(start);
    return out;
  }

  private line(line: string, out: SseEvent[]) {
    if (line === "") {
      if (this.data.length > 0) {
        out.push({ event: this.event || "message", data: this.data.join("\n"), id: this.id });
      }
      this.event = "";
      this.data = [];
      this.id = undefined;
      return;
    }
    if (line.startsWith(":")) return;
    const colon = line.indexOf(":");
    const field = colon < 0 ? line : line.slice(0, colon);
    let value = colon < 0 ? "" : line.slice(colon + 1);
    if (value.startsWith(" ")) value = value.slice(1);
    if (field === "event") this.event = value;
    else if (field === "data") this.data.push(value);
    else if (field === "id") this.id = value;
  }
}

/** What [`follow`] reports. */
export interface Follow {
  /** Each event, in order; `id` is its sequence number when it has one. */
  onEvent: (event: SseEvent) => void;
  /** The stream is (re)connected, or lost and retrying. */
  onState?: (state: "live" | "retrying") => void;
  /** The server refused (401, 403, 404): no retry. */
  onRefused?: (status: number) => void;
}

/**
 * Follows `url` (which takes `after=SEQ`) until `signal` aborts: reconnects
 * after a lost connection, resuming after the last `id` it saw, so no event
 * comes twice.
 */
export async function follow(url: string, after: number, on: Follow, signal: AbortSignal): Promise<void> {
  let last = after;
  let delay = 500;
  while (!signal.aborted) {
    try {
      const sep = url.includes("?") ? "&" : "?";
      const response = await fetch(`${url}${sep}after=${last}`, {
        credentials: "same-origin",
        headers: { Accept: "text/event-stream" },
        signal,
      });
      if (response.status === 401 || response.status === 403 || response.status === 404) {
        on.onRefused?.(response.status);
        return;
      }
      if (!response.ok || !response.body) throw new Error(`status ${response.status}`);
      on.onState?.("live");
      delay = 500;
      const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
      const parser = new SseParser();
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        for (const event of parser.feed(value)) {
          const seq = event.id === undefined ? NaN : Number(event.id);
          if (!Number.isNaN(seq)) {
            if (seq <= last) continue;
            last = seq;
          }
          on.onEvent(event);
          if (event.event === "end") return;
        }
      }
    } catch (e) {
      if (signal.aborted) return;
    }
    on.onState?.("retrying");
    await new Promise((resolve) => setTimeout(resolve, delay));
    delay = Math.min(delay * 2, 10_000);
  }
}
