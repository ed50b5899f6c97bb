//! Leases on runs ([`Leases`]): the columns `lease_owner`, `lease_token`,
//! `lease_until` and `wake_at` of `cairn_runs`, requests in `cairn_asks`,
//! and LISTEN/NOTIFY on three channels (`cairn_wake`, `cairn_asks`,
//! `cairn_events`) for wake-ups. A lease's expiry is the database's time,
//! so the workers' clocks need not agree.

use std::time::Duration;

use async_trait::async_trait;
use cairn_domain::id::RunId;
use cairn_domain::state::Timestamp;
use cairn_ports::{Answer, Ask, Claim, Lease, Leases, Notice, OnNotice, StoreError};
use futures_util::StreamExt;
use tokio_postgres::{AsyncMessage, NoTls};

use crate::{PostgresStore, corrupt, encode, io, signed, unsigned};

/// The database's time in milliseconds since the epoch, as `wake_at` is kept.
const NOW_MS: &str = "(extract(epoch from clock_timestamp()) * 1000)::bigint";

/// The channels, each named after the schema too ([`PostgresStore::channel`]).
pub(crate) const WAKE: &str = "cairn_wake";
pub(crate) const ASKS: &str = "cairn_asks";
pub(crate) const EVENTS: &str = "cairn_events";

/// How long appends gather before the other workers are told of them,
/// in one notification: a NOTIFY in each append's transaction would
/// serialize the commits of every worker on the database's notification
/// lock.
const TELL_EVERY: Duration = Duration::from_millis(20);

/// The most bytes of appends one notification carries (PostgreSQL takes
/// up to 8,000).
const TELL_BYTES: usize = 7_000;

/// Appends committed and not yet told ([`PostgresStore::appended`]).
#[derive(Debug, Default)]
pub(crate) struct Untold {
    /// `RUN\tFIRST\tLAST`, one an append.
    ranges: Vec<String>,
    /// Whether a task is telling them.
    telling: bool,
}

/// Requests older than this are dropped (their asker went away).
const ASKS_KEPT: &str = "1 hour";

/// The first wait before listening again after the connection failed;
/// doubled up to [`LISTEN_BACKOFF_MAX`].
const LISTEN_BACKOFF: Duration = Duration::from_millis(100);
const LISTEN_BACKOFF_MAX: Duration = Duration::from_secs(5);

impl PostgresStore {
    /// The term as PostgreSQL milliseconds.
    fn term_ms(&self) -> i64 {
        i64::try_from(self.term.as_millis()).unwrap_or(i64::MAX)
    }

    /// The channel of `kind` for this store's schema: notifications are
    /// heard database-wide, and two schemas are two installations.
    pub(crate) fn channel(&self, kind: &str) -> String {
        let schema = self.schema.get().map_or("public", String::as_str);
        format!("{schema}.{kind}")
    }

    /// Notes an append committed: the other workers are told within
    /// [`TELL_EVERY`], with the appends gathered meanwhile. (A process
    /// that dies in between leaves them untold: another worker's stream of
    /// that run catches up with the run's next append.)
    pub(crate) fn appended(&self, run: &RunId, first: u64, last: u64) {
        let mut untold = self.untold.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        untold.ranges.push(format!("{run}\t{first}\t{last}"));
        if !untold.telling && tokio::runtime::Handle::try_current().is_ok() {
            untold.telling = true;
            tokio::spawn(self.clone().tell());
        }
    }

    /// Tells the other workers what was appended, every [`TELL_EVERY`],
    /// until nothing is left to tell.
    async fn tell(self) {
        loop {
            tokio::time::sleep(TELL_EVERY).await;
            let ranges = {
                let mut untold = self.untold.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
                if untold.ranges.is_empty() {
                    untold.telling = false;
                    return;
                }
                std::mem::take(&mut untold.ranges)
            };
            let mut payloads = vec![String::from(&*self.worker)];
            for range in ranges {
                if payloads.last().is_some_and(|p| p.len() + range.len() + 1 > TELL_BYTES) {
                    payloads.push(String::from(&*self.worker));
                }
                if let Some(payload) = payloads.last_mut() {
                    payload.push('\n');
                    payload.push_str(&range);
                }
            }
            let channel = self.channel(EVENTS);
            let told = async {
                let client = self.client().await?;
                for payload in &payloads {
                    client.execute("SELECT pg_notify($1, $2)", &[&channel, payload]).await.map_err(io)?;
                }
                Ok::<_, StoreError>(())
            };
            if let Err(e) = told.await {
                tracing::warn!(error = %e, "the other workers could not be told of appends");
            }
        }
    }

    fn fence(&self, run: &RunId, token: Option<u64>) {
        let mut fences = self.fences.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        match token {
            Some(token) => fences.insert(run.clone(), token),
            None => fences.remove(run),
        };
    }

    /// The token of this process's lease on `run`, if it holds one.
    pub(crate) fn fenced(&self, run: &RunId) -> Option<u64> {
        self.fences.lock().unwrap_or_else(std::sync::PoisonError::into_inner).get(run).copied()
    }
}

#[async_trait]
impl Leases for PostgresStore {
    fn worker(&self) -> &str {
        &self.worker
    }

    fn term(&self) -> Duration {
        self.term
    }

    async fn claim(&self, run: &RunId) -> Result<Claim, StoreError> {
        let client = self.client().await?;
        // A lease released between the two statements is claimed again.
        for _ in 0..3 {
            let claimed = client
                .query_opt(
                    "UPDATE cairn_runs SET \
                       lease_token = CASE WHEN lease_owner = $2 AND lease_until > now() \
                                          THEN lease_token ELSE lease_token + 1 END, \
                       lease_owner = $2, \
                       lease_until = now() + $3::bigint * interval '1 millisecond', \
                       wake_at = 0 \
                     WHERE run_id = $1 AND (lease_owner IS NULL OR lease_until <= now() OR lease_owner = $2) \
                     RETURNING lease_token",
                    &[&run.as_str(), &&*self.worker, &self.term_ms()],
                )
                .await
                .map_err(io)?;
            if let Some(row) = claimed {
                let token = unsigned(row.get(0));
                self.fence(run, Some(token));
                return Ok(Claim::Held(Lease { run: run.clone(), token }));
            }
            let holder = client
                .query_opt("SELECT lease_owner FROM cairn_runs WHERE run_id = $1", &[&run.as_str()])
                .await
                .map_err(io)?
                .ok_or_else(|| StoreError::NotFound(run.to_string()))?;
            if let Some(worker) = holder.get::<_, Option<String>>(0) {
                return Ok(Claim::Taken { worker });
            }
        }
        Err(StoreError::Io(format!("the lease on run `{run}` kept changing hands")))
    }

    async fn claim_due(&self, limit: usize) -> Result<Vec<Lease>, StoreError> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        let client = self.client().await?;
        let rows = client
            .query(
                &format!(
                    "WITH due AS ( \
                       SELECT run_id FROM cairn_runs \
                        WHERE wake_at <= {NOW_MS} AND (lease_owner IS NULL OR lease_until <= now()) \
                        ORDER BY priority DESC, created_at, run_id \
                        LIMIT $3 \
                        FOR UPDATE SKIP LOCKED) \
                     UPDATE cairn_runs r SET lease_token = r.lease_token + 1, lease_owner = $1, \
                       lease_until = now() + $2::bigint * interval '1 millisecond', wake_at = 0 \
                     FROM due WHERE r.run_id = due.run_id \
                     RETURNING r.run_id, r.lease_token, r.priority, r.created_at"
                ),
                &[&&*self.worker, &self.term_ms(), &i64::try_from(limit).unwrap_or(i64::MAX)],
            )
            .await
            .map_err(io)?;
        // What an update returns comes in no particular order.
        let mut rows = rows;
        rows.sort_by_key(|row| {
            (std::cmp::Reverse(row.get::<_, i32>(2)), row.get::<_, i64>(3), row.get::<_, String>(0))
        });
        rows.iter()
            .map(|row| {
                let run: String = row.get(0);
                let run = RunId::new(run.as_str()).map_err(|e| corrupt("a leased run's id", e))?;
                let token = unsigned(row.get(1));
                self.fence(&run, Some(token));
                Ok(Lease { run, token })
            })
            .collect()
    }

    async fn renew(&self, leases: &[Lease]) -> Result<Vec<RunId>, StoreError> {
        if leases.is_empty() {
            return Ok(Vec::new());
        }
        let runs: Vec<&str> = leases.iter().map(|l| l.run.as_str()).collect();
        let tokens = leases.iter().map(|l| signed(l.token)).collect::<Result<Vec<i64>, _>>()?;
        let client = self.client().await?;
        let rows = client
            .query(
                "UPDATE cairn_runs r SET lease_until = now() + $4::bigint * interval '1 millisecond' \
                 FROM unnest($1::text[], $2::bigint[]) AS l(run_id, token) \
                 WHERE r.run_id = l.run_id AND r.lease_token = l.token AND r.lease_owner = $3 \
                 RETURNING r.run_id",
                &[&runs, &tokens, &&*self.worker, &self.term_ms()],
            )
            .await
            .map_err(io)?;
        let kept: std::collections::HashSet<String> = rows.iter().map(|r| r.get(0)).collect();
        let lost: Vec<RunId> =
            leases.iter().filter(|l| !kept.contains(l.run.as_str())).map(|l| l.run.clone()).collect();
        for run in &lost {
            self.fence(run, None);
        }
        Ok(lost)
    }

    async fn release(&self, lease: &Lease, wake_at: Option<Timestamp>) -> Result<(), StoreError> {
        self.fence(&lease.run, None);
        let wake = wake_at.map(|t| signed(t.0)).transpose()?;
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(io)?;
        let released = tx
            .query_opt(
                &format!(
                    "UPDATE cairn_runs SET lease_owner = NULL, lease_until = NULL, wake_at = $4 \
                     WHERE run_id = $1 AND lease_token = $2 AND lease_owner = $3 \
                     RETURNING $4 <= {NOW_MS}"
                ),
                &[&lease.run.as_str(), &signed(lease.token)?, &&*self.worker, &wake],
            )
            .await
            .map_err(io)?;
        if released.is_some_and(|row| row.get::<_, Option<bool>>(0) == Some(true)) {
            tx.execute("SELECT pg_notify($1, '')", &[&self.channel(WAKE)]).await.map_err(io)?;
        }
        tx.commit().await.map_err(io)
    }

    async fn wake(&self, run: &RunId) -> Result<(), StoreError> {
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(io)?;
        let woken = tx
            .execute("UPDATE cairn_runs SET wake_at = 0 WHERE run_id = $1", &[&run.as_str()])
            .await
            .map_err(io)?;
        if woken == 0 {
            return Err(StoreError::NotFound(run.to_string()));
        }
        tx.execute("SELECT pg_notify($1, '')", &[&self.channel(WAKE)]).await.map_err(io)?;
        tx.commit().await.map_err(io)
    }

    async fn holder(&self, run: &RunId) -> Result<Option<String>, StoreError> {
        let client = self.client().await?;
        let row = client
            .query_opt(
                "SELECT lease_owner FROM cairn_runs WHERE run_id = $1 AND lease_until > now()",
                &[&run.as_str()],
            )
            .await
            .map_err(io)?;
        Ok(row.and_then(|r| r.get(0)))
    }

    async fn ask(&self, run: &RunId, worker: &str, ask: &Ask) -> Result<u64, StoreError> {
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(io)?;
        let row = tx
            .query_one(
                "INSERT INTO cairn_asks (run_id, worker, body) VALUES ($1, $2, $3) RETURNING id",
                &[&run.as_str(), &worker, &encode(ask)?],
            )
            .await
            .map_err(io)?;
        tx.execute("SELECT pg_notify($1, $2)", &[&self.channel(ASKS), &worker]).await.map_err(io)?;
        tx.commit().await.map_err(io)?;
        Ok(unsigned(row.get(0)))
    }

    async fn answer_of(&self, id: u64) -> Result<Option<Answer>, StoreError> {
        let client = self.client().await?;
        let row = client
            .query_opt(
                "DELETE FROM cairn_asks WHERE id = $1 AND answer IS NOT NULL RETURNING answer",
                &[&signed(id)?],
            )
            .await
            .map_err(io)?;
        row.map(|r| {
            let text: String = r.get(0);
            serde_json::from_str(&text).map_err(|e| corrupt("a request's answer", e))
        })
        .transpose()
    }

    async fn withdraw(&self, id: u64) -> Result<bool, StoreError> {
        let client = self.client().await?;
        let gone = client
            .execute("DELETE FROM cairn_asks WHERE id = $1 AND answer IS NULL", &[&signed(id)?])
            .await
            .map_err(io)?;
        Ok(gone > 0)
    }

    async fn asked(&self) -> Result<Vec<(u64, RunId, Ask)>, StoreError> {
        let client = self.client().await?;
        client
            .execute(&format!("DELETE FROM cairn_asks WHERE asked_at < now() - interval '{ASKS_KEPT}'"), &[])
            .await
            .map_err(io)?;
        let rows = client
            .query(
                "SELECT id, run_id, body FROM cairn_asks WHERE worker = $1 AND answer IS NULL ORDER BY id",
                &[&&*self.worker],
            )
            .await
            .map_err(io)?;
        rows.iter()
            .map(|row| {
                let run: String = row.get(1);
                let body: String = row.get(2);
                Ok((
                    unsigned(row.get(0)),
                    RunId::new(run.as_str()).map_err(|e| corrupt("a request's run id", e))?,
                    serde_json::from_str(&body).map_err(|e| corrupt("a request", e))?,
                ))
            })
            .collect()
    }

    async fn answer(&self, id: u64, answer: &Answer) -> Result<(), StoreError> {
        let client = self.client().await?;
        client
            .execute("UPDATE cairn_asks SET answer = $2 WHERE id = $1", &[&signed(id)?, &encode(answer)?])
            .await
            .map_err(io)?;
        Ok(())
    }

    async fn listen(&self, on_notice: OnNotice) -> Result<(), StoreError> {
        let channels = [WAKE, ASKS, EVENTS].map(|c| self.channel(c));
        let heard = subscribe(&self.config, &self.at, &channels).await?;
        let (config, at, worker) = (self.config.clone(), self.at.clone(), self.worker.clone());
        tokio::spawn(async move {
            let mut heard = Some(heard);
            let mut backoff = LISTEN_BACKOFF;
            loop {
                let (client, mut notifications, driver) = match heard.take() {
                    Some(heard) => heard,
                    None => match subscribe(&config, &at, &channels).await {
                        Ok(heard) => heard,
                        Err(e) => {
                            tracing::warn!(error = %e, retry_in = ?backoff, "not listening to the other workers");
                            tokio::time::sleep(backoff).await;
                            backoff = (backoff * 2).min(LISTEN_BACKOFF_MAX);
                            continue;
                        }
                    },
                };
                backoff = LISTEN_BACKOFF;
                // What was missed while not listening is read again.
                on_notice(Notice::Wake);
                while let Some((channel, payload)) = notifications.recv().await {
                    let kind = channels.iter().position(|c| *c == channel).map(|i| [WAKE, ASKS, EVENTS][i]);
                    for notice in kind.map(|kind| notices_of(kind, &payload, &worker)).unwrap_or_default() {
                        on_notice(notice);
                    }
                }
                drop(client);
                driver.abort();
                tracing::warn!(at = %at, "the connection listening to the other workers ended: listening again");
            }
        });
        Ok(())
    }
}

/// A connection listening on the three channels: its client (kept so the
/// connection lives), the notifications it hears, and the task driving it.
type Subscribed = (
    tokio_postgres::Client,
    tokio::sync::mpsc::UnboundedReceiver<(String, String)>,
    tokio::task::JoinHandle<()>,
);

async fn subscribe(
    config: &tokio_postgres::Config,
    at: &str,
    channels: &[String; 3],
) -> Result<Subscribed, StoreError> {
    let unreachable = |e: tokio_postgres::Error| StoreError::Io(format!("PostgreSQL at {at}: {e}"));
    let (client, mut connection) = config.connect(NoTls).await.map_err(unreachable)?;
    let (heard, notifications) = tokio::sync::mpsc::unbounded_channel();
    let driver = tokio::spawn(async move {
        let mut messages = futures_util::stream::poll_fn(move |cx| connection.poll_message(cx));
        while let Some(Ok(message)) = messages.next().await {
            if let AsyncMessage::Notification(n) = message
                && heard.send((n.channel().to_owned(), n.payload().to_owned())).is_err()
            {
                return;
            }
        }
    });
    let listen: String = channels.iter().map(|c| format!("LISTEN \"{}\";", c.replace('"', "\"\""))).collect();
    client.batch_execute(&listen).await.map_err(unreachable)?;
    Ok((client, notifications, driver))
}

/// What a notification on the channel of `kind` says to worker `me`.
fn notices_of(kind: &str, payload: &str, me: &str) -> Vec<Notice> {
    match kind {
        WAKE => vec![Notice::Wake],
        ASKS if payload == me => vec![Notice::Asked],
        EVENTS => {
            let mut lines = payload.lines();
            // Its own appends a worker knows.
            if lines.next().is_none_or(|worker| worker == me) {
                return Vec::new();
            }
            lines.filter_map(appended_of).collect()
        }
        _ => Vec::new(),
    }
}

/// One `RUN\tFIRST\tLAST` line; an unreadable one is passed over.
fn appended_of(line: &str) -> Option<Notice> {
    let mut parts = line.split('\t');
    let (run, first, last) = (parts.next()?, parts.next()?, parts.next()?);
    Some(Notice::Appended {
        run: RunId::new(run).ok()?,
        first: first.parse().ok()?,
        last: last.parse().ok()?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn notices_are_read_from_their_channels_and_a_worker_skips_its_own() {
        assert_eq!(notices_of(WAKE, "", "me"), [Notice::Wake]);
        assert_eq!(notices_of(ASKS, "me", "me"), [Notice::Asked]);
        assert_eq!(notices_of(ASKS, "other", "me"), []);
        let (r1, r2) = (RunId::new("r-1").expect("an id"), RunId::new("r-2").expect("an id"));
        assert_eq!(
            notices_of(EVENTS, "other\nr-1\t4\t6\nr-2\t1\t1", "me"),
            [
                Notice::Appended { run: r1, first: 4, last: 6 },
                Notice::Appended { run: r2, first: 1, last: 1 }
            ]
        );
        assert_eq!(notices_of(EVENTS, "me\nr-1\t4\t6", "me"), [], "its own appends it knows");
        assert_eq!(notices_of(EVENTS, "other\nr-1\tfour", "me"), [], "unreadable: passed over");
        assert_eq!(notices_of("elsewhere", "", "me"), []);
    }
}
