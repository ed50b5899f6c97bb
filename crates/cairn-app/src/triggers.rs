//! Triggers: runs that start without a person, from the catalog's
//! registered workflows (their latest versions). A schedule starts one run
//! per tick, and a webhook delivery one run per delivery id: each start is
//! idempotent, its run id derived from the tick or the delivery, so two
//! servers, a restart or a replay never start one twice.

use cairn_domain::Definition;
use cairn_domain::event::Timestamp;
use cairn_domain::id::WorkflowId;
use cairn_domain::schedule::Schedule;
use cairn_domain::state::Launch;
use hmac::{Hmac, Mac};
use serde_json::{Map, Value};
use sha2::Sha256;

use crate::app::{App, Run, Started};
use crate::catalog::definition_of;
use crate::error::{Error, HookError};
use crate::hooks::HookKey;

/// Who a scheduled run is recorded as started by.
const SCHEDULE: &str = "schedule";
/// Who a webhook's run is recorded as started by.
const WEBHOOK: &str = "webhook";
/// The longest delivery id taken.
const MAX_DELIVERY: usize = 200;

/// A registered workflow that starts on a schedule.
#[derive(Debug, Clone)]
pub struct Scheduled {
    /// Its latest version.
    pub definition: Definition,
    /// Its `on.schedule`.
    pub schedule: Schedule,
    /// When that version was registered: no earlier tick is its.
    pub since: Timestamp,
}

impl Scheduled {
    /// The tick to start now: the latest at or before `now`, when it
    /// came after the version was registered and after `done` (the last
    /// tick started). A server that was down starts the latest tick it
    /// missed, once, not one run per missed tick.
    pub fn due(&self, now: Timestamp, done: Option<Timestamp>) -> Option<Timestamp> {
        let tick = self.schedule.latest_at_or_before(now)?;
        (tick > self.since && done.is_none_or(|d| tick > d)).then_some(tick)
    }
}

impl App {
    /// The registered workflows whose latest version has `on.schedule`.
    pub async fn scheduled(&self) -> Result<Vec<Scheduled>, Error> {
        let latest = self.workflows().latest().await.map_err(cairn_engine::EngineError::from)?;
        let scheduled = latest.into_iter().filter_map(|v| {
            let definition = definition_of(&v).ok()?;
            let schedule = definition.workflow.on.as_ref()?.schedule.clone()?;
            Some(Scheduled { definition, schedule, since: v.registered_at })
        });
        Ok(scheduled.collect())
    }

    /// Starts the run of `scheduled`'s tick at `tick`, with its inputs'
    /// defaults, once: a tick started already (by this server before a
    /// restart, or by another) answers that run.
    pub async fn start_tick(&self, scheduled: &Scheduled, tick: Timestamp) -> Result<(Run, Started), Error> {
        let workflow = &scheduled.definition.workflow.id;
        let key = format!("{SCHEDULE}\0{workflow}\0{}", tick.0);
        let started = self
            .start_idempotent(
                scheduled.definition.clone(),
                Value::Object(Map::new()),
                &key,
                SCHEDULE,
                Launch::default(),
            )
            .await;
        match started {
            // Started for the tick by another version of the workflow.
            Err(Error::KeyReused { run }) => Ok((self.status(&run).await?, Started::Repeat)),
            other => other,
        }
    }

    /// Starts the run a webhook delivery asks for: `workflow`'s latest
    /// version, when it takes webhooks, with the JSON object `body` as its
    /// inputs (an empty body: none). Refused unless `signature` is
    /// `sha256=` and the hex HMAC-SHA256 of `body` under the workflow's
    /// key; a `delivery` id seen before answers the run it started.
    pub async fn hook(
        &self,
        workflow: &WorkflowId,
        body: &[u8],
        signature: Option<&str>,
        delivery: Option<&str>,
    ) -> Result<(Run, Started), Error> {
        let version = self.registered(workflow, None).await?;
        let definition = definition_of(&version)?;
        if !definition.workflow.on.as_ref().is_some_and(|on| on.webhook) {
            return Err(HookError::NotTaken(workflow.clone()).into());
        }
        let key = match self.hooks().of(workflow) {
            Some(HookKey::Set(key)) => key,
            Some(HookKey::Unset { env }) => {
                return Err(HookError::NoKey { workflow: workflow.clone(), env: Some(env.clone()) }.into());
            }
            None => return Err(HookError::NoKey { workflow: workflow.clone(), env: None }.into()),
        };
        if !signed(key.as_bytes(), body, signature) {
            return Err(HookError::BadSignature.into());
        }
        let delivery = delivery
            .filter(|d| !d.is_empty() && d.len() <= MAX_DELIVERY && d.chars().all(|c| c.is_ascii_graphic()))
            .ok_or(HookError::NoDelivery)?;
        let inputs = if body.iter().all(u8::is_ascii_whitespace) {
            Value::Object(Map::new())
        } else {
            serde_json::from_slice::<Value>(body)
                .map_err(|e| cairn_engine::EngineError::Inputs(vec![format!("the body is not JSON: {e}")]))?
        };
        let key = format!("{WEBHOOK}\0{workflow}\0{delivery}");
        self.start_idempotent(definition, inputs, &key, WEBHOOK, Launch::default()).await
    }
}

/// Whether `signature` is `sha256=` and the hex HMAC-SHA256 of `body`
/// under `key`, compared in constant time.
fn signed(key: &[u8], body: &[u8], signature: Option<&str>) -> bool {
    let Some(hex) = signature.and_then(|s| s.trim().strip_prefix("sha256=")) else { return false };
    let Some(sent) = unhex(hex) else { return false };
    let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(key) else { return false };
    mac.update(body);
    mac.verify_slice(&sent).is_ok()
}

/// The bytes of an even-length hex text, `None` when it is not one.
fn unhex(text: &str) -> Option<Vec<u8>> {
    if !text.len().is_multiple_of(2) {
        return None;
    }
    (0..text.len()).step_by(2).map(|i| u8::from_str_radix(text.get(i..i + 2)?, 16).ok()).collect()
}

/// The `X-Cairn-Signature` of `body` under `key`: what a sender computes.
pub fn signature(key: &[u8], body: &[u8]) -> String {
    let mut mac =
        Hmac::<Sha256>::new_from_slice(key).unwrap_or_else(|_| unreachable!("HMAC takes keys of any length"));
    mac.update(body);
    let digest = mac.finalize().into_bytes();
    format!("sha256={}", digest.iter().map(|b| format!("{b:02x}")).collect::<String>())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_signature_is_the_bodys_hmac_under_the_key_and_nothing_else() {
        let body = br#"{"ticket":"T-1"}"#;
        let good = signature(b"key", body);
        assert!(good.starts_with("sha256=") && good.len() == 7 + 64, "{good}");
        assert!(signed(b"key", body, Some(&good)));
        assert!(!signed(b"other key", body, Some(&good)), "another key");
        assert!(!signed(b"key", br#"{"ticket":"T-2"}"#, Some(&good)), "another body");
        for bad in [None, Some(""), Some("sha256="), Some("sha1=abcd"), Some("sha256=zz"), Some("sha256=abc")]
        {
            assert!(!signed(b"key", body, bad), "{bad:?}");
        }
    }

    #[test]
    fn the_tick_due_is_the_latest_missed_after_registration_and_the_last_started() {
        let scheduled = |since| Scheduled {
            definition: Definition {
                name: "s.yaml".into(),
                text: String::new(),
                files: Default::default(),
                workflow: cairn_testkit::workflow("cairn: 1\nid: s\nsteps:\n  - id: a\n    set: 1\n"),
            },
            schedule: Schedule::parse("*/5 * * * *").expect("valid"),
            since: Timestamp(since),
        };
        let minute = 60_000;
        let s = scheduled(2 * minute);
        // Registered at 00:02: the tick of 00:00 is not its own.
        assert_eq!(s.due(Timestamp(4 * minute), None), None);
        // Down from 00:03 to 00:17: one run, for the latest tick missed.
        assert_eq!(s.due(Timestamp(17 * minute), None), Some(Timestamp(15 * minute)));
        assert_eq!(s.due(Timestamp(17 * minute), Some(Timestamp(15 * minute))), None, "started already");
        assert_eq!(s.due(Timestamp(20 * minute), Some(Timestamp(15 * minute))), Some(Timestamp(20 * minute)));
    }
}
