//! The sessions a server keeps for browsers, and their cookie: an id that
//! maps, in memory, to the API token a browser signed in with and the CSRF
//! token its unsafe requests must send (see [`crate::session`] for the
//! endpoints, and [`crate::access`] for the checks).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use axum::http::{HeaderMap, HeaderValue, StatusCode, header};

use crate::problem::Problem;

/// The cookie that carries a session's id.
pub const COOKIE: &str = "cairn_session";

/// The header a session's unsafe requests carry its CSRF token in.
pub const CSRF_HEADER: &str = "x-csrf-token";

/// How long a session lasts from sign-in (its token may end it sooner).
pub const LIFETIME: Duration = Duration::from_secs(12 * 3600);

/// The most sessions kept: past it, the oldest is dropped.
const MAX_SESSIONS: usize = 10_000;

/// One signed-in browser.
struct Entry {
    /// The API token it signed in with, authenticated again each request.
    secret: String,
    csrf: String,
    expires: Instant,
}

/// The open sessions, by the hash of their id (the id itself, like a
/// token's secret, is kept nowhere).
#[derive(Default)]
pub struct Sessions {
    open: Mutex<HashMap<String, Entry>>,
}

impl Sessions {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Entry>> {
        self.open.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Opens a session for `secret`: its id and its CSRF token.
    pub(crate) fn open(&self, secret: &str) -> Result<(String, String), Problem> {
        let random = || {
            cairn_ports::random_word()
                .map_err(|e| Problem::new(StatusCode::SERVICE_UNAVAILABLE, "no_randomness", e.message))
        };
        let (id, csrf) = (random()?, random()?);
        let now = Instant::now();
        let mut open = self.lock();
        open.retain(|_, e| e.expires > now);
        if open.len() >= MAX_SESSIONS
            && let Some(oldest) = open.iter().min_by_key(|(_, e)| e.expires).map(|(k, _)| k.clone())
        {
            open.remove(&oldest);
        }
        let entry = Entry { secret: secret.to_owned(), csrf: csrf.clone(), expires: now + LIFETIME };
        open.insert(cairn_ports::hash_secret(&id), entry);
        Ok((id, csrf))
    }

    /// The token and CSRF token of the session `id`, while it lasts.
    pub(crate) fn secret(&self, id: &str) -> Option<(String, String)> {
        let key = cairn_ports::hash_secret(id);
        let mut open = self.lock();
        match open.get(&key) {
            Some(e) if e.expires > Instant::now() => Some((e.secret.clone(), e.csrf.clone())),
            Some(_) => {
                open.remove(&key);
                None
            }
            None => None,
        }
    }

    pub(crate) fn close(&self, id: &str) {
        self.lock().remove(&cairn_ports::hash_secret(id));
    }
}

/// The session id a request's cookies carry, if any.
pub(crate) fn cookie(headers: &HeaderMap) -> Option<&str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, _)| *name == COOKIE)
        .map(|(_, value)| value)
        .filter(|value| !value.is_empty())
}

/// The `Set-Cookie` of a session (`Secure` behind a proxy that says the
/// browser spoke HTTPS); an empty id with no lifetime clears it.
pub(crate) fn set_cookie(id: &str, lifetime: Duration, headers: &HeaderMap) -> Option<HeaderValue> {
    let https = headers.get("x-forwarded-proto").is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"https"));
    let secure = if https { "; Secure" } else { "" };
    HeaderValue::from_str(&format!(
        "{COOKIE}={id}; Path=/; HttpOnly; SameSite=Strict; Max-Age={}{secure}",
        lifetime.as_secs()
    ))
    .ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_session_cookie_is_found_among_others() {
        let mut headers = HeaderMap::new();
        headers.append(header::COOKIE, HeaderValue::from_static("a=1; cairn_session=abc; b=2"));
        assert_eq!(cookie(&headers), Some("abc"));
        let mut empty = HeaderMap::new();
        empty.append(header::COOKIE, HeaderValue::from_static("cairn_session="));
        assert_eq!(cookie(&empty), None);
        assert_eq!(cookie(&HeaderMap::new()), None);
    }

    #[test]
    fn sessions_end_when_closed_and_keep_no_id() {
        let sessions = Sessions::default();
        let (id, csrf) = sessions.open("cairn_secret").expect("random bytes");
        assert_eq!(sessions.secret(&id), Some(("cairn_secret".into(), csrf)));
        assert!(!sessions.lock().contains_key(&id), "the id itself is kept");
        assert_eq!(sessions.secret("guess"), None);
        sessions.close(&id);
        assert_eq!(sessions.secret(&id), None);
    }

    #[test]
    fn the_cookie_is_http_only_strict_and_secure_behind_https() {
        let plain = set_cookie("x", LIFETIME, &HeaderMap::new()).expect("a header");
        assert_eq!(plain, "cairn_session=x; Path=/; HttpOnly; SameSite=Strict; Max-Age=43200");
        let mut proxied = HeaderMap::new();
        proxied.insert("x-forwarded-proto", HeaderValue::from_static("https"));
        let secure = set_cookie("x", LIFETIME, &proxied).expect("a header");
        assert!(secure.to_str().is_ok_and(|v| v.ends_with("; Secure")));
    }
}
