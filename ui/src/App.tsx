// The shell: who is signed in (or the sign-in form), the navigation, and
// the page the path names.
import { useEffect, useState } from "react";
import { api, onSignedOut, type Session, setCsrfToken } from "./lib/api";
import { Link, navigate, useLocation } from "./lib/router";
import { Inbox } from "./pages/Inbox";
import { Run } from "./pages/Run";
import { Runs } from "./pages/Runs";
import { Search, SearchBox } from "./pages/Search";
import { SignIn } from "./pages/SignIn";
import { Workflows } from "./pages/Workflows";

type State = { kind: "loading" } | { kind: "out"; expired: boolean } | { kind: "in"; session: Session };

export function App() {
  const [state, setState] = useState<State>({ kind: "loading" });
  const { path } = useLocation();

  const signedIn = (session: Session) => {
    setCsrfToken(session.csrf ?? null);
    setState({ kind: "in", session });
  };
  useEffect(() => {
    void api.GET("/api/v1/session").then(({ data }) => (data ? signedIn(data) : setState({ kind: "out", expired: false })));
    return onSignedOut(() => {
      setCsrfToken(null);
      setState({ kind: "out", expired: true });
    });
  }, []);

  if (state.kind === "loading") return <p className="muted center">…</p>;
  if (state.kind === "out") return <SignIn onSignedIn={signedIn} expired={state.expired} />;
  const { session } = state;
  const signOut = async () => {
    await api.DELETE("/api/v1/session");
    setCsrfToken(null);
    setState({ kind: "out", expired: false });
    navigate("/");
  };
  const section = path.split("/")[1] || "runs";
  const runId = path.startsWith("/runs/") ? decodeURIComponent(path.slice("/runs/".length)) : null;
  return (
    <div className="app">
      <header className="top">
        <Link to="/" className="brand">
          cairn
        </Link>
        <nav>
          <Link to="/runs" className={section === "runs" ? "active" : ""}>
            Runs
          </Link>
          <Link to="/inbox" className={section === "inbox" ? "active" : ""}>
            Inbox
          </Link>
          <Link to="/workflows" className={section === "workflows" ? "active" : ""}>
            Workflows
          </Link>
        </nav>
        <SearchBox />
        <span className="who" data-testid="who">
          {session.name} · {session.role}
          {session.gate_roles.length > 0 && ` · decides as ${session.gate_roles.join(", ")}`}
        </span>
        <button className="link" onClick={signOut}>
          Sign out
        </button>
      </header>
      <main>
        {runId ? (
          <Run key={runId} id={runId} session={session} />
        ) : section === "inbox" ? (
          <Inbox />
        ) : section === "workflows" ? (
          <Workflows session={session} />
        ) : section === "search" ? (
          <Search />
        ) : (
          <Runs />
        )}
      </main>
    </div>
  );
}
