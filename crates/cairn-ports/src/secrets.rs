//! Secret values cairn must never write, and the one way text is cleaned
//! of them: every configured key (and every credential a provider's URL
//! carries) is replaced by [`REDACTED`] in whatever a host stores, prints
//! or records, and so are the credentials of any URL in the text
//! (`https://user:pass@host`, `?key=...`), configured or not. The host
//! collects the values; the engine cleans events before they are stored,
//! adapters clean their errors, fronts clean what they print.

use std::borrow::Cow;
use std::fmt;
use std::sync::Arc;

use cairn_domain::state::EventKind;
use serde_json::Value;

use crate::PortError;

/// What stands in for a secret.
pub const REDACTED: &str = "***";

/// Values shorter than this are not treated as secrets: they could not be
/// told from ordinary words (`EMPTY`, `ollama`), and hiding them would
/// mangle every text they occur in.
pub const MIN_SECRET_LEN: usize = 8;

/// URL query parameters whose value is a credential, by a part of their
/// name (`key` covers `api_key`, `apikey`, `api-key`).
const CREDENTIAL_PARAMS: [&str; 8] = ["key", "token", "secret", "passw", "pwd", "sig", "auth", "credential"];

/// The secret values of a process. Cheap to clone; `Debug` shows only how
/// many there are.
#[derive(Clone, Default)]
pub struct Secrets {
    /// Longest first, so a secret that contains another is hidden whole.
    values: Arc<Vec<String>>,
}

impl fmt::Debug for Secrets {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Secrets({} values)", self.values.len())
    }
}

impl Secrets {
    /// The secrets among `values`: each value long enough to be one, also
    /// in its percent-encoded form (as it appears in a URL).
    pub fn new<S: AsRef<str>>(values: impl IntoIterator<Item = S>) -> Self {
        let mut all: Vec<String> = Vec::new();
        for value in values {
            let value = value.as_ref();
            if value.chars().count() < MIN_SECRET_LEN {
                continue;
            }
            all.push(value.to_owned());
            let encoded = percent_encode(value);
            if encoded != value {
                all.push(encoded);
            }
        }
        Self::sorted(all)
    }

    /// The credentials a URL carries (the password of `user:pass@`, the
    /// value of a `?key=` parameter), as secrets.
    pub fn of_url(url: &str) -> Self {
        let mut found = Vec::new();
        if let Some(at) = url.find("://") {
            let rest = &url[at + 3..];
            let authority = &rest[..rest.find(['/', '?', '#']).unwrap_or(rest.len())];
            if let Some(user_info) = authority.rfind('@').map(|i| &authority[..i]) {
                // The user part may itself be a token (`https://TOKEN@host`).
                found.extend(user_info.split(':').map(str::to_owned));
            }
        }
        if let Some(query) = url.split_once('?').map(|(_, q)| q) {
            let query = query.split('#').next().unwrap_or_default();
            for pair in query.split('&') {
                if let Some((name, value)) = pair.split_once('=')
                    && is_credential(name)
                {
                    found.push(value.to_owned());
                }
            }
        }
        let decoded: Vec<String> = found.iter().filter_map(|v| percent_decode(v)).collect();
        Self::new(found.into_iter().chain(decoded))
    }

    /// These secrets and `other`'s.
    pub fn with(self, other: &Secrets) -> Self {
        let mut all = self.values.as_ref().clone();
        all.extend(other.values.iter().cloned());
        Self::sorted(all)
    }

    fn sorted(mut all: Vec<String>) -> Self {
        all.sort_by(|a, b| b.len().cmp(&a.len()).then_with(|| a.cmp(b)));
        all.dedup();
        Self { values: Arc::new(all) }
    }

    /// Whether there is no secret to hide.
    pub fn is_empty(&self) -> bool {
        self.values.is_empty()
    }

    /// The length in bytes of the longest secret (0 when there is none):
    /// text that arrives in pieces must hold back one byte less than this
    /// before it is shown, or a secret split between two pieces would
    /// pass unseen.
    pub fn longest(&self) -> usize {
        self.values.first().map_or(0, String::len)
    }

    /// `text` with every secret, and every credential of a URL, replaced
    /// by [`REDACTED`]; borrowed when there was nothing to hide.
    pub fn redact<'a>(&self, text: &'a str) -> Cow<'a, str> {
        let mut out = Cow::Borrowed(text);
        for secret in self.values.iter() {
            if out.contains(secret.as_str()) {
                out = Cow::Owned(out.replace(secret.as_str(), REDACTED));
            }
        }
        match redact_urls(&out) {
            Some(cleaned) => Cow::Owned(cleaned),
            None => out,
        }
    }

    /// Redacts every string (and object key) of `value` in place; whether
    /// anything changed.
    pub fn redact_value(&self, value: &mut Value) -> bool {
        match value {
            Value::String(s) => self.redact_string(s),
            Value::Array(items) => items.iter_mut().fold(false, |changed, v| self.redact_value(v) | changed),
            Value::Object(map) => {
                let mut changed = false;
                if map.keys().any(|k| matches!(self.redact(k), Cow::Owned(_))) {
                    let old = std::mem::take(map);
                    for (k, v) in old {
                        map.insert(self.redact(&k).into_owned(), v);
                    }
                    changed = true;
                }
                map.values_mut().fold(changed, |changed, v| self.redact_value(v) | changed)
            }
            Value::Null | Value::Bool(_) | Value::Number(_) => false,
        }
    }

    /// Redacts `s` in place; whether it changed.
    pub fn redact_string(&self, s: &mut String) -> bool {
        match self.redact(s) {
            Cow::Borrowed(_) => false,
            Cow::Owned(cleaned) => {
                *s = cleaned;
                true
            }
        }
    }

    /// `error` with its message and hint redacted.
    pub fn redact_error(&self, mut error: PortError) -> PortError {
        self.redact_string(&mut error.message);
        if let Some(hint) = &mut error.hint {
            self.redact_string(hint);
        }
        error
    }
}

/// Fields of an event that name things (runs, steps, scopes, agents)
/// rather than say something: never rewritten, or the log would name
/// something else. (A model's name is the server's word, and is cleaned.)
const NAMING_FIELDS: [&str; 19] = [
    "type",
    "run_id",
    "workflow",
    "definition_hash",
    "version",
    "path",
    "from",
    "to",
    "reset",
    "wait",
    "scope",
    "name",
    "keys",
    "key",
    "failed",
    "doc_type",
    "agent",
    "role",
    "source",
];

/// Tags of the enums inside an event (an error's class, a cause's kind, a
/// turn's type), spared when hiding a secret in one would break the event.
const TAGS: [&str; 3] = ["type", "kind", "class"];

impl Secrets {
    /// `kind` with every secret hidden in what it says (outputs, errors,
    /// inputs, comments, prompts), its naming fields left as they are;
    /// `Err` only when no cleaned form of it is an event any more.
    pub fn redact_event(&self, kind: EventKind) -> Result<EventKind, serde_json::Error> {
        if self.is_empty() {
            return Ok(kind);
        }
        let mut value = serde_json::to_value(&kind)?;
        let Value::Object(fields) = &mut value else { return Ok(kind) };
        let mut changed = false;
        for (name, field) in fields.iter_mut() {
            if !NAMING_FIELDS.contains(&name.as_str()) {
                changed |= self.redact_value(field);
            }
        }
        if !changed {
            return Ok(kind);
        }
        match serde_json::from_value(value) {
            Ok(cleaned) => Ok(cleaned),
            // A secret inside an enum's tag: spare the tags.
            Err(_) => {
                let mut value = serde_json::to_value(&kind)?;
                if let Value::Object(fields) = &mut value {
                    for (name, field) in fields.iter_mut() {
                        if !NAMING_FIELDS.contains(&name.as_str()) {
                            self.redact_sparing_tags(field);
                        }
                    }
                }
                serde_json::from_value(value)
            }
        }
    }

    /// [`Secrets::redact_value`], leaving the values of enum tags.
    fn redact_sparing_tags(&self, value: &mut Value) {
        match value {
            Value::Array(items) => items.iter_mut().for_each(|v| self.redact_sparing_tags(v)),
            Value::Object(map) => {
                for (k, v) in map.iter_mut() {
                    if !TAGS.contains(&k.as_str()) {
                        self.redact_sparing_tags(v);
                    }
                }
            }
            other => {
                self.redact_value(other);
            }
        }
    }
}

/// Text that arrives in pieces (a model's streamed answer), cleaned as
/// [`Secrets::redact`] cleans it whole: a secret, or a URL's credentials,
/// split between two pieces is hidden all the same, because the end of the
/// text that could still turn out to be the start of one waits for the next
/// piece (or for [`StreamRedactor::finish`]) before it is shown.
///
/// What waits: the last [`Secrets::longest`]` - 1` bytes (on a character
/// boundary), and an unfinished word that may be a URL with credentials
/// (one holding `:`, `?` or `&`) until a character that ends a URL follows.
#[derive(Debug, Clone, Default)]
pub struct StreamRedactor {
    /// The secrets to hide.
    secrets: Secrets,
    /// Cleaned text not shown yet: it may still be the start of a secret.
    held: String,
}

impl StreamRedactor {
    /// A redactor of one stream, hiding `secrets`.
    pub fn new(secrets: Secrets) -> Self {
        Self { secrets, held: String::new() }
    }

    /// What may be shown, cleaned, now that `piece` arrived (often all of
    /// it; empty when everything must wait). Everything shown, followed by
    /// what [`StreamRedactor::finish`] returns, is the whole text cleaned.
    pub fn push(&mut self, piece: &str) -> String {
        self.held.push_str(piece);
        let mut cleaned = match self.secrets.redact(&self.held) {
            Cow::Borrowed(_) => std::mem::take(&mut self.held),
            Cow::Owned(cleaned) => cleaned,
        };
        let cut = self.shown_len(&cleaned);
        self.held = cleaned.split_off(cut);
        cleaned
    }

    /// What was held back, cleaned: the stream ended. The redactor is
    /// empty again, ready for another stream.
    pub fn finish(&mut self) -> String {
        let held = std::mem::take(&mut self.held);
        match self.secrets.redact(&held) {
            Cow::Borrowed(_) => held,
            Cow::Owned(cleaned) => cleaned,
        }
    }

    /// How much of `cleaned` (the held text and a new piece, cleaned) can
    /// be shown: all but what might still be the start of a secret or of a
    /// URL's credentials.
    fn shown_len(&self, cleaned: &str) -> usize {
        let mut cut = cleaned.len().saturating_sub(self.secrets.longest().saturating_sub(1));
        while !cleaned.is_char_boundary(cut) {
            cut -= 1;
        }
        // Credentials in a URL never reach past a character that ends one,
        // so a finished word is cleaned for good.
        let word =
            cleaned.char_indices().rev().find(|&(_, c)| ends_url(c)).map_or(0, |(i, c)| i + c.len_utf8());
        if cleaned[word..].contains([':', '?', '&']) { cut.min(word) } else { cut }
    }
}

/// Whether a query parameter of this name carries a credential.
fn is_credential(name: &str) -> bool {
    let name = name.to_ascii_lowercase();
    CREDENTIAL_PARAMS.iter().any(|p| name.contains(p))
}

/// Where a URL's part ends in running text.
fn ends_url(c: char) -> bool {
    c.is_whitespace() || matches!(c, '"' | '\'' | '<' | '>' | '`' | '(' | ')' | '[' | ']' | '{' | '}' | '\\')
}

/// `text` with the credentials of every URL in it hidden (`user:pass@`,
/// credential query values); `None` when there were none. One pass.
fn redact_urls(text: &str) -> Option<String> {
    if !text.contains("://") && !text.contains('=') {
        return None;
    }
    let mut out = String::with_capacity(text.len());
    let mut changed = false;
    let mut rest = text;
    while !rest.is_empty() {
        // The user info of `scheme://user:pass@host`.
        if let Some(after) = rest.strip_prefix("://") {
            out.push_str("://");
            let end =
                after.find(|c: char| ends_url(c) || matches!(c, '/' | '?' | '#')).unwrap_or(after.len());
            let authority = &after[..end];
            match authority.rfind('@') {
                Some(at) => {
                    out.push_str(REDACTED);
                    out.push_str(&authority[at..]);
                    changed = true;
                }
                None => out.push_str(authority),
            }
            rest = &after[end..];
            continue;
        }
        // `?name=value` and `&name=value` with a credential's name.
        if let Some(after) = rest.strip_prefix(['?', '&']) {
            out.push_str(&rest[..1]);
            let name_end = after.find(|c: char| c == '=' || c == '&' || ends_url(c)).unwrap_or(after.len());
            let name = &after[..name_end];
            if after[name_end..].starts_with('=') && !name.is_empty() && is_credential(name) {
                let value = &after[name_end + 1..];
                let value_end =
                    value.find(|c: char| c == '&' || c == '#' || ends_url(c)).unwrap_or(value.len());
                out.push_str(name);
                out.push('=');
                if value_end > 0 {
                    out.push_str(REDACTED);
                    changed = true;
                }
                rest = &value[value_end..];
            } else {
                out.push_str(name);
                rest = &after[name_end..];
            }
            continue;
        }
        let c = rest.chars().next().unwrap_or_default();
        out.push(c);
        rest = &rest[c.len_utf8()..];
    }
    changed.then_some(out)
}

/// `value` with every byte but the unreserved ones percent-encoded.
fn percent_encode(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for b in value.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// `value` percent-decoded, when it holds an escape and decodes to UTF-8.
fn percent_decode(value: &str) -> Option<String> {
    if !value.contains('%') {
        return None;
    }
    let bytes = value.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && let Some(b) = value.get(i + 1..i + 3).and_then(|h| u8::from_str_radix(h, 16).ok())
        {
            out.push(b);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str = "canary-XYZ-0123";

    #[test]
    fn configured_values_are_hidden_wherever_they_occur() {
        let s = Secrets::new([KEY, "short"]);
        assert_eq!(s.redact(&format!("Authorization: Bearer {KEY}!")), "Authorization: Bearer ***!");
        assert_eq!(
            s.redact("short stays: too short to be a secret"),
            "short stays: too short to be a secret"
        );
        assert!(matches!(s.redact("nothing here"), Cow::Borrowed(_)));
        let mut v = serde_json::json!({"a": [KEY, {KEY: format!("x{KEY}x")}], "n": 1});
        assert!(s.redact_value(&mut v));
        assert_eq!(v, serde_json::json!({"a": ["***", {"***": "x***x"}], "n": 1}));
        assert_eq!(format!("{s:?}"), "Secrets(1 values)");
    }

    #[test]
    fn a_secret_that_holds_another_is_hidden_whole_and_encoded_forms_too() {
        let s = Secrets::new(["abcdefgh", "abcdefgh-longer", "a+b/c=d&e"]);
        assert_eq!(s.redact("abcdefgh-longer"), "***");
        assert_eq!(s.redact("k=a%2Bb%2Fc%3Dd%26e"), "k=***");
    }

    #[test]
    fn credentials_of_any_url_are_hidden() {
        let s = Secrets::default();
        for (text, want) in [
            ("see https://user:pa55word@host.example/v1?x=1", "see https://***@host.example/v1?x=1"),
            ("GET https://h/v1?key=AIzaSyXYZ&alt=json done", "GET https://h/v1?key=***&alt=json done"),
            ("https://h/p?a=1&api_key=s3cr3t#f", "https://h/p?a=1&api_key=***#f"),
            ("https://h/p?X-Amz-Signature=abc&Token=t", "https://h/p?X-Amz-Signature=***&Token=***"),
            ("\"https://TOKEN123@github.com/x\"", "\"https://***@github.com/x\""),
            ("plain key=value and a=b&c=d", "plain key=value and a=b&c=d"),
            ("https://host/a@b/c", "https://host/a@b/c"),
        ] {
            assert_eq!(s.redact(text), want, "{text}");
        }
    }

    #[test]
    fn a_urls_credentials_become_secrets() {
        let s = Secrets::of_url("https://alice:pass%2Fword99@h.example/v1?api-version=1&key=AIzaSy-0123456");
        let text = "pass/word99 pass%2Fword99 AIzaSy-0123456 alice";
        assert_eq!(s.redact(text), "*** *** *** alice", "alice is too short to hide");
        assert!(Secrets::of_url("http://127.0.0.1:8000/v1").is_empty());
    }

    #[test]
    fn an_event_is_cleaned_of_what_it_says_never_of_what_it_names() {
        use cairn_domain::state::{ErrorClass, StepError, StepPath};
        let s = Secrets::new([KEY, "rate_limited-long"]);
        let path: StepPath = serde_json::from_str(&format!("\"{KEY}\"")).expect("a path");
        let failed = EventKind::StepFailed {
            path: path.clone(),
            attempt: 1,
            error: StepError {
                class: ErrorClass::RateLimited,
                message: format!("echo {KEY}"),
                hint: None,
                cause: None,
            },
            output: Some(serde_json::json!({"said": KEY})),
            retry_at: None,
        };
        let cleaned = s.redact_event(failed).expect("an event");
        let text = serde_json::to_string(&cleaned).expect("json");
        assert_eq!(
            text,
            format!(
                "{{\"type\":\"step_failed\",\"path\":\"{KEY}\",\"attempt\":1,\"error\":{{\"class\":\"rate_limited\",\"message\":\"echo ***\",\"hint\":null}},\"output\":{{\"said\":\"***\"}},\"retry_at\":null}}"
            )
        );
        let usage = EventKind::UsageRecorded {
            path: path.clone(),
            attempt: 1,
            agent: None,
            model: format!("echo-{KEY}"),
            usage: Default::default(),
        };
        let cleaned = s.redact_event(usage).expect("an event");
        assert!(matches!(cleaned, EventKind::UsageRecorded { model, .. } if model == "echo-***"));
        let same = EventKind::StepStarted { path, attempt: 2 };
        assert_eq!(Secrets::new([KEY]).redact_event(same.clone()).expect("an event"), same);
    }

    /// The pieces `text` splits into at `cuts` (byte offsets, ascending).
    fn pieces<'a>(text: &'a str, cuts: &[usize]) -> Vec<&'a str> {
        let mut bounds = vec![0];
        bounds.extend(cuts.iter().copied().filter(|&c| text.is_char_boundary(c)));
        bounds.push(text.len());
        bounds.windows(2).map(|w| &text[w[0]..w[1]]).collect()
    }

    /// Everything a redactor shows of `pieces`, piece by piece, then at the end.
    fn streamed(secrets: &Secrets, pieces: &[&str]) -> (Vec<String>, String) {
        let mut redactor = StreamRedactor::new(secrets.clone());
        let mut shown: Vec<String> = pieces.iter().map(|p| redactor.push(p)).collect();
        shown.push(redactor.finish());
        let whole = shown.concat();
        (shown, whole)
    }

    #[test]
    fn a_secret_or_a_urls_credentials_split_between_pieces_never_show() {
        let s = Secrets::new([KEY, "pässwörd-ünïcode"]);
        let text = format!(
            "key {KEY}, again:{KEY}; pässwörd-ünïcode and https://u:hunter22@h/x?api_key=s3cr3tv&ok=1 done"
        );
        let want = s.redact(&text).into_owned();
        assert!(!want.contains(KEY) && !want.contains("hunter22") && !want.contains("s3cr3tv"), "{want}");
        for a in 0..=text.len() {
            for b in a..=text.len() {
                let (shown, whole) = streamed(&s, &pieces(&text, &[a, b]));
                assert_eq!(whole, want, "cut at {a} and {b}");
                for (i, piece) in shown.iter().enumerate() {
                    for secret in [KEY, "hunter22", "s3cr3tv", "pässwörd"] {
                        assert!(!piece.contains(secret), "piece {i} of cuts {a},{b}: {piece:?}");
                    }
                }
            }
        }
        let (_, whole) = streamed(&s, &text.split_inclusive(|_| true).collect::<Vec<_>>());
        assert_eq!(whole, want, "a character at a time");
    }

    #[test]
    fn text_without_secrets_flows_through_and_only_what_may_be_one_waits() {
        let s = Secrets::new([KEY]);
        assert_eq!(s.longest(), KEY.len());
        assert_eq!(Secrets::default().longest(), 0);
        let (shown, _) = streamed(&Secrets::default(), &["str", "eam", "ed"]);
        assert_eq!(shown, ["str", "eam", "ed", ""], "nothing waits with no secrets and no URL");
        let mut r = StreamRedactor::new(s);
        let first = r.push("Hello there, a long enough piece");
        assert_eq!(first.len(), "Hello there, a long enough piece".len() - (KEY.len() - 1));
        assert_eq!(first, "Hello there, a lon");
        assert_eq!(r.push(" and the end"), "g enough pie");
        assert_eq!(r.finish(), "ce and the end");
        assert_eq!(r.finish(), "", "finishing twice shows nothing more");
        let mut r = StreamRedactor::default();
        assert_eq!(r.push("see https://user:pa"), "see ", "an unfinished URL waits");
        assert_eq!(r.push("ss@host/x and"), "https://***@host/x and");
        assert_eq!(r.push(" https://h/?key=abc"), " ");
        assert_eq!(r.finish(), "https://h/?key=***");
    }

    #[test]
    fn errors_are_cleaned_in_message_and_hint() {
        let s = Secrets::new([KEY]);
        let e = PortError::new(cairn_domain::state::ErrorClass::Fatal, format!("echo {KEY}"))
            .with_hint(format!("hint {KEY}"));
        let e = s.redact_error(e);
        assert_eq!((e.message.as_str(), e.hint.as_deref()), ("echo ***", Some("hint ***")));
    }
}
