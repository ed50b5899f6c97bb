//! The web UI of `cairn serve`: the assets Vite builds from `ui/` into
//! `dist/` (committed, so a fresh machine needs no Node.js), embedded in
//! the binary, and the one handler that serves them.
//!
//! What it is: an inbound adapter of static files. Hashed assets
//! (`/assets/NAME-HASH.js`) are cached for a year and served gzipped when
//! the browser takes it (the build writes a `.gz` beside each); every
//! other path is the single page, `index.html`, never cached, under a
//! strict Content-Security-Policy: scripts from this origin only (no
//! inline script, no `eval`), style sheets from this origin or carrying the
//! page's nonce (made fresh for each answer and handed to the page in a
//! `<meta>`, for the editor's styles), and `style` attributes, which the
//! editor and the graph set on their elements (they run nothing).
//!
//! What it deliberately does not do: talk to the API. The page does, with
//! the session the server's API gives it.
//!
//! May depend on: axum, include_dir, getrandom. No cairn crate.
//!
//! Read first: [`serve`].

use axum::body::Body;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use include_dir::{Dir, include_dir};

/// What Vite built from `ui/`.
static DIST: Dir<'_> = include_dir!("$CARGO_MANIFEST_DIR/dist");

/// The marker in `ui/index.html` that each answer replaces with its nonce.
const NONCE_SLOT: &str = "__CSP_NONCE__";

/// The policy of the page, around its nonce.
fn policy(nonce: &str) -> String {
    format!(
        "default-src 'none'; script-src 'self'; style-src 'self' 'nonce-{nonce}'; style-src-elem 'self' 'nonce-{nonce}'; \
         style-src-attr 'unsafe-inline'; img-src 'self' data:; font-src 'self'; connect-src 'self'; base-uri 'none'; \
         form-action 'self'; frame-ancestors 'none'"
    )
}

/// The content type of a file, by its extension.
fn content_type(path: &str) -> &'static str {
    match path.rsplit_once('.').map_or("", |(_, ext)| ext) {
        "js" | "mjs" => "text/javascript; charset=utf-8",
        "css" => "text/css; charset=utf-8",
        "html" => "text/html; charset=utf-8",
        "svg" => "image/svg+xml",
        "png" => "image/png",
        "ico" => "image/x-icon",
        "json" => "application/json",
        "woff2" => "font/woff2",
        _ => "application/octet-stream",
    }
}

/// Whether a request may be answered gzipped.
fn takes_gzip(headers: &HeaderMap) -> bool {
    headers
        .get_all(header::ACCEPT_ENCODING)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|coding| coding.split(';').next().is_some_and(|c| c.trim() == "gzip"))
}

/// A fresh nonce: 16 random bytes in hex, or `None` when the system gives none.
fn nonce() -> Option<String> {
    let mut bytes = [0u8; 16];
    getrandom::fill(&mut bytes).ok()?;
    Some(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

/// Answers a `GET` or `HEAD` of the UI: an asset by its path, else the page.
/// Other methods get `405`; an asset that is not there, `404`.
pub async fn serve(method: Method, uri: Uri, headers: HeaderMap) -> Response {
    if method != Method::GET && method != Method::HEAD {
        return StatusCode::METHOD_NOT_ALLOWED.into_response();
    }
    let path = uri.path().trim_start_matches('/');
    if path.starts_with("assets/") {
        return asset(path, &headers);
    }
    page()
}

/// A hashed asset: cached for good, gzipped when taken.
fn asset(path: &str, headers: &HeaderMap) -> Response {
    let Some(file) = DIST.get_file(path) else {
        return (StatusCode::NOT_FOUND, "no such asset").into_response();
    };
    let zipped = takes_gzip(headers).then(|| DIST.get_file(format!("{path}.gz"))).flatten();
    let mut answer = Response::new(Body::from(zipped.unwrap_or(file).contents()));
    let h = answer.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type(path)));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("public, max-age=31536000, immutable"));
    h.insert(header::VARY, HeaderValue::from_static("accept-encoding"));
    h.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    if zipped.is_some() {
        h.insert(header::CONTENT_ENCODING, HeaderValue::from_static("gzip"));
    }
    answer
}

/// The page, with a nonce of its own, never cached.
fn page() -> Response {
    let (Some(index), Some(nonce)) = (DIST.get_file("index.html").and_then(|f| f.contents_utf8()), nonce())
    else {
        return (StatusCode::SERVICE_UNAVAILABLE, "the web UI is not available").into_response();
    };
    let mut answer = Response::new(Body::from(index.replace(NONCE_SLOT, &nonce)));
    let h = answer.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/html; charset=utf-8"));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    h.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    h.insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    h.insert("x-frame-options", HeaderValue::from_static("DENY"));
    if let Ok(csp) = HeaderValue::from_str(&policy(&nonce)) {
        h.insert(header::CONTENT_SECURITY_POLICY, csp);
    }
    answer
}

/// The embedded assets' paths and sizes (raw, gzipped).
#[cfg(test)]
fn assets() -> Vec<(String, usize, Option<usize>)> {
    let mut out = Vec::new();
    let mut dirs = vec![&DIST];
    while let Some(dir) = dirs.pop() {
        for file in dir.files() {
            let path = file.path().to_string_lossy().into_owned();
            if !path.ends_with(".gz") {
                let zipped = DIST.get_file(format!("{path}.gz")).map(|f| f.contents().len());
                out.push((path, file.contents().len(), zipped));
            }
        }
        dirs.extend(dir.dirs());
    }
    out.sort();
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        pairs.iter().map(|(k, v)| (header::HeaderName::from_static(k), HeaderValue::from_static(v))).collect()
    }

    #[tokio::test]
    async fn every_path_but_an_asset_is_the_page_with_a_fresh_nonce_and_a_strict_policy() {
        let a = serve(Method::GET, Uri::from_static("/runs/abc"), HeaderMap::new()).await;
        let b = serve(Method::GET, Uri::from_static("/"), HeaderMap::new()).await;
        assert_eq!(a.status(), StatusCode::OK);
        assert_eq!(a.headers()[header::CACHE_CONTROL], "no-cache");
        let csp =
            |r: &Response| r.headers()[header::CONTENT_SECURITY_POLICY].to_str().unwrap_or("").to_owned();
        assert!(csp(&a).contains("script-src 'self';"), "{}", csp(&a));
        assert!(csp(&a).contains("frame-ancestors 'none'"));
        assert_ne!(csp(&a), csp(&b), "each page has a nonce of its own");
        let body = axum::body::to_bytes(a.into_body(), usize::MAX).await.unwrap_or_default();
        let text = String::from_utf8_lossy(&body);
        assert!(!text.contains(NONCE_SLOT), "the slot is filled");
        assert!(!text.contains("<script>"), "no inline script: {text}");
    }

    #[tokio::test]
    async fn assets_are_cached_for_good_gzipped_when_taken_and_missing_ones_are_404() {
        let (path, raw, zipped) =
            assets().into_iter().find(|(p, _, z)| p.ends_with(".js") && z.is_some()).expect("a built script");
        let uri: Uri = format!("/{path}").parse().expect("a path");
        let plain = serve(Method::GET, uri.clone(), HeaderMap::new()).await;
        assert_eq!(plain.headers()[header::CACHE_CONTROL], "public, max-age=31536000, immutable");
        assert_eq!(plain.headers()[header::CONTENT_TYPE], "text/javascript; charset=utf-8");
        assert!(plain.headers().get(header::CONTENT_ENCODING).is_none());
        let body = axum::body::to_bytes(plain.into_body(), usize::MAX).await.unwrap_or_default();
        assert_eq!(body.len(), raw);
        let gz = serve(Method::GET, uri, headers(&[("accept-encoding", "br, gzip;q=0.8")])).await;
        assert_eq!(gz.headers()[header::CONTENT_ENCODING], "gzip");
        let body = axum::body::to_bytes(gz.into_body(), usize::MAX).await.unwrap_or_default();
        assert_eq!(Some(body.len()), zipped);
        let missing = serve(Method::GET, Uri::from_static("/assets/nope.js"), HeaderMap::new()).await;
        assert_eq!(missing.status(), StatusCode::NOT_FOUND);
        let posted = serve(Method::POST, Uri::from_static("/"), HeaderMap::new()).await;
        assert_eq!(posted.status(), StatusCode::METHOD_NOT_ALLOWED);
    }

    #[test]
    fn gzip_is_taken_only_when_named() {
        assert!(takes_gzip(&headers(&[("accept-encoding", "gzip, deflate")])));
        assert!(!takes_gzip(&headers(&[("accept-encoding", "br")])));
        assert!(!takes_gzip(&HeaderMap::new()));
    }
}
