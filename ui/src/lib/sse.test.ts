import { describe, expect, it } from "vitest";
import { SseParser, follow } from "./sse";

describe("SseParser", () => {
  it("reads events however the text is cut", () => {
    const text = "id: 1\nevent: step_started\ndata: {\"a\":1}\n\n: keep-alive\n\nid: 2\r\nevent: end\r\ndata: x\r\ndata: y\r\n\r\n";
    for (let size = 1; size <= text.length; size++) {
      const parser = new SseParser();
      const events = [];
      for (let i = 0; i < text.length; i += size) events.push(...parser.feed(text.slice(i, i + size)));
      expect(events).toEqual([
        { event: "step_started", data: "{\"a\":1}", id: "1" },
        { event: "end", data: "x\ny", id: "2" },
      ]);
    }
  });

  it("names an event without a name `message` and skips one without data", () => {
    const parser = new SseParser();
    expect(parser.feed("event: nothing\n\ndata: hi\n\n")).toEqual([{ event: "message", data: "hi", id: undefined }]);
  });
});

describe("follow", () => {
  it("reconnects after a lost stream, resumes after the last event and shows none twice", async () => {
    const urls: string[] = [];
    const bodies = [
      // The first connection delivers 1 and 2, then breaks mid-event.
      ["id: 1\nevent: a\ndata: one\n\n", "id: 2\nevent: a\ndata: two\n\nid: 3\nev"],
      // The server replays from its cursor: 2 again, then 3 and the end.
      ["id: 2\nevent: a\ndata: two\n\nid: 3\nevent: a\ndata: three\n\n", "event: end\ndata: {}\n\n"],
    ];
    const realFetch = globalThis.fetch;
    globalThis.fetch = (async (url: string) => {
      urls.push(url);
      const pieces = bodies[urls.length - 1];
      const encoder = new TextEncoder();
      const broken = urls.length === 1;
      // One piece a read; then the connection breaks (or ends).
      let next = 0;
      const body = new ReadableStream<Uint8Array>({
        pull(controller) {
          if (next < pieces.length) controller.enqueue(encoder.encode(pieces[next++]));
          else if (broken) controller.error(new Error("connection reset"));
          else controller.close();
        },
      });
      return new Response(body, { status: 200 });
    }) as typeof fetch;
    try {
      const seen: string[] = [];
      const states: string[] = [];
      await follow("/api/v1/runs/r/events/stream", 0, { onEvent: (e) => seen.push(e.data), onState: (s) => states.push(s) }, new AbortController().signal);
      expect(seen).toEqual(["one", "two", "three", "{}"]);
      expect(urls).toEqual(["/api/v1/runs/r/events/stream?after=0", "/api/v1/runs/r/events/stream?after=2"]);
      expect(states).toEqual(["live", "retrying", "live"]);
    } finally {
      globalThis.fetch = realFetch;
    }
  });

  it("stops at a refusal and tells it", async () => {
    const realFetch = globalThis.fetch;
    globalThis.fetch = (async () => new Response("", { status: 401 })) as typeof fetch;
    try {
      let refused = 0;
      await follow("/x", 0, { onEvent: () => {}, onRefused: (s) => (refused = s) }, new AbortController().signal);
      expect(refused).toBe(401);
    } finally {
      globalThis.fetch = realFetch;
    }
  });
});
