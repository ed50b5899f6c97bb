// Signing in: an API token is exchanged for a session cookie (HttpOnly,
// so no script ever holds it again) and a CSRF token for unsafe requests.
import { useState } from "react";
import { api, problemText, type Session } from "../lib/api";

export function SignIn({ onSignedIn, expired }: { onSignedIn: (s: Session) => void; expired: boolean }) {
  const [token, setToken] = useState("");
  const [error, setError] = useState<string | null>(null);
  const [busy, setBusy] = useState(false);
  const submit = async () => {
    setBusy(true);
    setError(null);
    const { data, error } = await api.POST("/api/v1/session", { body: { token: token.trim() } });
    setBusy(false);
    if (error) setError(problemText(error, "that token was not accepted"));
    else onSignedIn(data);
  };
  return (
    <form
      className="sign-in"
      onSubmit={(e) => {
        e.preventDefault();
        void submit();
      }}
    >
      <h1>cairn</h1>
      {expired && <p className="muted">Your session ended. Sign in again.</p>}
      <label>
        API token
        <input
          type="password"
          autoComplete="off"
          aria-label="API token"
          value={token}
          onChange={(e) => setToken(e.target.value)}
          autoFocus
        />
      </label>
      <button type="submit" disabled={busy || token.trim() === ""}>
        Sign in
      </button>
      {error && <p className="error">{error}</p>}
      <p className="muted">
        Make one with <code>cairn token create NAME --role operator</code>.
      </p>
    </form>
  );
}
