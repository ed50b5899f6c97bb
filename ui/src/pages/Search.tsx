// Search across the whole store (GET /api/v1/search): workflows by name,
// description, tags and prompts, runs by inputs, outputs and errors, best
// match first, each with the passage that matched. The passage comes as
// pieces of text: matched words are marked, nothing is read as markup.
import { useEffect, useState } from "react";
import { type HitKind, type SearchHit, type SnippetPiece, api, problemText } from "../lib/api";
import { when, words } from "../lib/format";
import { Link, navigate, useLocation } from "../lib/router";

const LIMIT = 50;

/** A snippet's pieces, the matched ones marked. */
export function Snippet({ pieces }: { pieces: SnippetPiece[] }) {
  return (
    <span className="snippet">
      {pieces.map((p, i) => (p.hit ? <mark key={i}>{p.text}</mark> : <span key={i}>{p.text}</span>))}
    </span>
  );
}

/** Where a hit leads: a run's page, or a workflow in the editor. */
export function hitLink(hit: SearchHit): string {
  return hit.kind === "run" ? `/runs/${encodeURIComponent(hit.id)}` : `/workflows?workflow=${encodeURIComponent(hit.id)}`;
}

/** The search box of the top bar: goes to the search page. */
export function SearchBox() {
  const { path, query } = useLocation();
  const current = path === "/search" ? (query.get("q") ?? "") : "";
  return (
    <form
      className="search-box"
      role="search"
      onSubmit={(e) => {
        e.preventDefault();
        const q = new FormData(e.currentTarget).get("q")?.toString().trim() ?? "";
        if (q) navigate(`/search?q=${encodeURIComponent(q)}`);
      }}
    >
      <input key={current} name="q" aria-label="search workflows and runs" placeholder="search workflows and runs" defaultValue={current} />
    </form>
  );
}

export function Search() {
  const { query } = useLocation();
  const q = query.get("q") ?? "";
  const kind = query.get("kind") ?? "";
  const [hits, setHits] = useState<SearchHit[] | null>(null);
  const [error, setError] = useState<string | null>(null);

  useEffect(() => {
    if (!q.trim()) {
      setHits([]);
      return;
    }
    let current = true;
    setHits(null);
    void api
      .GET("/api/v1/search", { params: { query: { q, kind: (kind || undefined) as HitKind | undefined, limit: LIMIT } } })
      .then(({ data, error }) => {
        if (!current) return;
        setError(error ? problemText(error) : null);
        setHits(data?.hits ?? []);
      });
    return () => {
      current = false;
    };
  }, [q, kind]);

  const setKind = (value: string) => {
    const next = new URLSearchParams(query);
    if (value) next.set("kind", value);
    else next.delete("kind");
    navigate(`/search?${next}`, true);
  };

  return (
    <div className="search">
      <div className="filters">
        <select aria-label="kind" value={kind} onChange={(e) => setKind(e.target.value)}>
          <option value="">workflows and runs</option>
          <option value="workflow">workflows</option>
          <option value="run">runs</option>
        </select>
        {q && <span className="muted">best matches for “{q}” first</span>}
      </div>
      {error && <p className="error">{error}</p>}
      {hits === null && <p className="muted">Searching…</p>}
      {hits !== null && hits.length === 0 && !error && <p className="muted">{q ? `Nothing matches “${q}”.` : "Type words to search for."}</p>}
      <ol className="hits" data-testid="hits">
        {(hits ?? []).map((h) => (
          <li key={`${h.kind}:${h.id}`} data-hit={h.id}>
            <div className="hit-head">
              <span className="badge">{h.kind}</span>
              <Link to={hitLink(h)}>{h.id}</Link>
              {h.run && (
                <>
                  <span className="muted">{h.workflow}</span>
                  <span className={`badge status-${h.run.status}`}>{words(h.run.status)}</span>
                  <span className="muted">{when(h.run.created_at)}</span>
                </>
              )}
            </div>
            <div className="hit-snippet">
              <span className="field">{h.field}</span>
              <Snippet pieces={h.snippet} />
            </div>
          </li>
        ))}
      </ol>
    </div>
  );
}
