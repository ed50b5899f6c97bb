// Words and numbers as the UI shows them.

/** `1.2 s`, `3 m 4 s`, `2 h 5 m`. */
export function duration(ms: number | null | undefined): string {
  if (ms === null || ms === undefined || Number.isNaN(ms)) return "—";
  if (ms < 1000) return `${Math.round(ms)} ms`;
  const s = ms / 1000;
  if (s < 60) return `${s.toFixed(1)} s`;
  const m = Math.floor(s / 60);
  if (m < 60) return `${m} m ${Math.round(s % 60)} s`;
  return `${Math.floor(m / 60)} h ${m % 60} m`;
}

/** Milliseconds between two timestamps (to now when `to` is absent). */
export function between(from: string | null | undefined, to?: string | null): number | null {
  if (!from) return null;
  const end = to ? Date.parse(to) : Date.now();
  return end - Date.parse(from);
}

/** A local date and time, to the second. */
export function when(at: string | null | undefined): string {
  if (!at) return "—";
  const d = new Date(at);
  return d.toLocaleString(undefined, { dateStyle: "short", timeStyle: "medium" });
}

/** `$0.0123`, or `—` when unknown. */
export function cost(usd: number | null | undefined): string {
  if (usd === null || usd === undefined) return "—";
  return usd < 0.01 ? `$${usd.toFixed(4)}` : `$${usd.toFixed(2)}`;
}

/** `12,345`. */
export function count(n: number): string {
  return n.toLocaleString("en-US");
}

/** A status as words: `waiting_approval` → `waiting approval`. */
export function words(status: string): string {
  return status.replaceAll("_", " ");
}
