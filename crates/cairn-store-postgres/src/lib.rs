//! The stores on PostgreSQL: runs, API tokens and the workflow catalog in
//! one database that many processes share.
//!
//! What it is: [`PostgresStore`], the `RunStore`, `TokenStore` and
//! `WorkflowStore` ports over a pool of `tokio-postgres` clients. Events
//! are rows keyed by `(run_id, seq)`, so of two writers appending after the
//! same event exactly one commits; each append also moves the run's row
//! (its last sequence number, status and summary) in the same transaction.
//! The schema is created and migrated when a store opens
//! ([`PostgresStore::open`]), under an advisory lock, and a database whose
//! schema is newer than this binary is refused.
//!
//! Why `tokio-postgres`: cairn speaks a dozen statements it writes by hand;
//! the driver alone does that with a fraction of the dependencies of a
//! toolkit with compile-time checked queries, which would also want a
//! database (or checked-in metadata) to build.
//!
//! It is also the `Leases` of the workers sharing the database (module
//! `lease`): a run's row says which worker drives it until when, and an
//! append is refused unless it carries the token of the lease its writer
//! holds (or nobody holds one).
//!
//! What it deliberately does not do: speak TLS (connect over a private
//! network or a local socket).
//!
//! May depend on: `cairn-domain`, `cairn-ports`, tokio-postgres,
//! deadpool-postgres. Never on the engine or the app.
//!
//! It is also the `SearchIndex` of `cairn search` (module `search`): a
//! weighted `tsvector` a workflow or run, read by `websearch_to_tsquery`
//! and ranked by `ts_rank_cd`.
//!
//! Read first: [`PostgresStore`].

use std::collections::BTreeMap;
use std::sync::Arc;

use async_trait::async_trait;
use cairn_domain::id::{RunId, WorkflowId};
use cairn_domain::state::{Event, EventKind, RunState, Timestamp};
use cairn_ports::{
    NewRun, RegisterError, Registered, RunPage, RunQuery, RunStore, RunSummary, Snapshot, StoreError,
    StoredRun, TokenRecord, TokenStore, WorkflowStore, WorkflowVersion, place,
};
use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod};
use tokio_postgres::types::ToSql;
use tokio_postgres::{NoTls, Row};

/// The schema this binary reads and writes.
pub const SCHEMA_VERSION: u32 = 3;

/// The migrations, in order: the first makes version 1, the second 2, ...
const MIGRATIONS: [&str; SCHEMA_VERSION as usize] =
    [include_str!("migrations/1.sql"), include_str!("migrations/2.sql"), include_str!("migrations/3.sql")];

/// How long a lease lasts unless renewed, by default.
pub const DEFAULT_TERM: std::time::Duration = std::time::Duration::from_secs(10);

/// The key of the advisory lock migrations hold (any fixed number).
const MIGRATION_LOCK: i64 = 0x6361_6972_6e00;

/// Snapshots kept per run: the latest few.
const KEEP_SNAPSHOTS: i64 = 3;

/// Clients a process keeps open at most.
const POOL_SIZE: usize = 16;

/// Why a store could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    /// The text is not a PostgreSQL connection string.
    #[error("not a PostgreSQL URL: {0}")]
    BadUrl(String),
    /// The database could not be reached or refused the connection.
    #[error("cannot reach PostgreSQL at {at}: {reason}")]
    Unreachable {
        /// Where (user, host, port and database; never a password).
        at: String,
        /// What the driver said.
        reason: String,
    },
    /// The database holds a schema newer than this binary knows.
    #[error(
        "the database at {at} has cairn schema version {found}, newer than this binary's {known}: run a newer cairn"
    )]
    Newer {
        /// Where.
        at: String,
        /// The database's version.
        found: u32,
        /// This binary's.
        known: u32,
    },
    /// A migration failed (nothing of it was kept).
    #[error("migrating the database at {at} failed: {reason}")]
    Migration {
        /// Where.
        at: String,
        /// What the database said.
        reason: String,
    },
}

/// What [`PostgresStore::migrate`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Migrated {
    /// The schema version found (0: none).
    pub from: u32,
    /// The schema version now.
    pub to: u32,
}

/// Runs, tokens and the catalog on PostgreSQL, and the leases of the
/// workers sharing them.
#[derive(Clone)]
pub struct PostgresStore {
    pool: Pool,
    at: Arc<str>,
    /// Where the listening connection goes (the pool's own config).
    config: tokio_postgres::Config,
    /// This process's name among the workers.
    worker: Arc<str>,
    /// How long its leases last unless renewed.
    term: std::time::Duration,
    /// The schema the tables are in (read when migrating), which names the
    /// notification channels.
    schema: Arc<std::sync::OnceLock<String>>,
    /// The token of each lease this process holds: its appends to those
    /// runs carry it.
    fences: Arc<std::sync::Mutex<std::collections::HashMap<RunId, u64>>>,
    /// Appends committed and not yet told to the other workers.
    untold: Arc<std::sync::Mutex<lease::Untold>>,
}

impl std::fmt::Debug for PostgresStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PostgresStore").field("at", &self.at).finish_non_exhaustive()
    }
}

/// Where a connection string points, without its password.
fn describe(config: &tokio_postgres::Config) -> String {
    let host = config
        .get_hosts()
        .iter()
        .map(|h| match h {
            tokio_postgres::config::Host::Tcp(name) => name.clone(),
            tokio_postgres::config::Host::Unix(path) => path.display().to_string(),
        })
        .collect::<Vec<_>>()
        .join(",");
    let port = config.get_ports().first().map(|p| format!(":{p}")).unwrap_or_default();
    let user = config.get_user().map(|u| format!("{u}@")).unwrap_or_default();
    format!("{user}{host}{port}/{}", config.get_dbname().unwrap_or(""))
}

fn io(e: impl std::fmt::Display) -> StoreError {
    StoreError::Io(e.to_string())
}

fn corrupt(what: &str, e: impl std::fmt::Display) -> StoreError {
    StoreError::Corrupt(format!("{what}: {e}"))
}

/// A stored number back to the `u64` it was.
fn unsigned(n: i64) -> u64 {
    u64::try_from(n).unwrap_or(0)
}

/// A `u64` as PostgreSQL's `BIGINT`.
fn signed(n: u64) -> Result<i64, StoreError> {
    i64::try_from(n).map_err(|_| StoreError::Corrupt(format!("{n} does not fit a BIGINT")))
}

impl PostgresStore {
    /// Connects to `url` and brings the schema up to [`SCHEMA_VERSION`].
    pub async fn open(url: &str) -> Result<Self, OpenError> {
        let store = Self::connect(url)?;
        store.migrate().await?;
        Ok(store)
    }

    /// A pool of clients of `url`, the schema untouched: connections are
    /// made as they are needed.
    pub fn connect(url: &str) -> Result<Self, OpenError> {
        let config: tokio_postgres::Config = url.parse().map_err(|e| OpenError::BadUrl(format!("{e}")))?;
        let at: Arc<str> = describe(&config).into();
        let manager = Manager::from_config(
            config.clone(),
            NoTls,
            ManagerConfig { recycling_method: RecyclingMethod::Fast },
        );
        let pool = Pool::builder(manager)
            .max_size(POOL_SIZE)
            .runtime(deadpool_postgres::Runtime::Tokio1)
            .build()
            .map_err(|e| OpenError::Unreachable { at: at.to_string(), reason: e.to_string() })?;
        Ok(Self {
            pool,
            at,
            config,
            worker: worker_name().into(),
            term: DEFAULT_TERM,
            schema: Arc::default(),
            fences: Arc::default(),
            untold: Arc::default(),
        })
    }

    /// This store with leases lasting `term` unless renewed (at least 100 ms).
    #[must_use]
    pub fn with_term(mut self, term: std::time::Duration) -> Self {
        self.term = term.max(std::time::Duration::from_millis(100));
        self
    }

    /// Where the store is (no password).
    pub fn at(&self) -> &str {
        &self.at
    }

    /// Applies the migrations the database lacks, in one transaction under
    /// an advisory lock (two processes starting at once migrate once);
    /// refuses a schema newer than this binary's.
    pub async fn migrate(&self) -> Result<Migrated, OpenError> {
        let at = self.at.to_string();
        let unreachable =
            |e: &dyn std::fmt::Display| OpenError::Unreachable { at: at.clone(), reason: e.to_string() };
        let failed =
            |e: tokio_postgres::Error| OpenError::Migration { at: at.clone(), reason: e.to_string() };
        let mut client = self.pool.get().await.map_err(|e| unreachable(&e))?;
        let tx = client.transaction().await.map_err(|e| unreachable(&e))?;
        tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK]).await.map_err(failed)?;
        tx.batch_execute("CREATE TABLE IF NOT EXISTS cairn_meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)")
            .await
            .map_err(failed)?;
        let row = tx
            .query_opt("SELECT value FROM cairn_meta WHERE key = 'schema_version'", &[])
            .await
            .map_err(failed)?;
        let found: u32 = match row {
            None => 0,
            Some(row) => row.get::<_, String>(0).parse().map_err(|e| OpenError::Migration {
                at: at.clone(),
                reason: format!("cairn_meta.schema_version is not a number: {e}"),
            })?,
        };
        if found > SCHEMA_VERSION {
            return Err(OpenError::Newer { at, found, known: SCHEMA_VERSION });
        }
        for migration in &MIGRATIONS[found as usize..] {
            tx.batch_execute(migration).await.map_err(failed)?;
        }
        tx.execute(
            "INSERT INTO cairn_meta (key, value) VALUES ('schema_version', $1) \
             ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value",
            &[&SCHEMA_VERSION.to_string()],
        )
        .await
        .map_err(failed)?;
        let schema = tx.query_one("SELECT current_schema()", &[]).await.map_err(failed)?;
        let _ = self.schema.set(schema.get::<_, Option<String>>(0).unwrap_or_else(|| "public".to_owned()));
        tx.commit().await.map_err(failed)?;
        Ok(Migrated { from: found, to: SCHEMA_VERSION })
    }

    async fn client(&self) -> Result<deadpool_postgres::Object, StoreError> {
        self.pool.get().await.map_err(|e| StoreError::Io(format!("PostgreSQL at {}: {e}", self.at)))
    }

    /// The summaries `query` selects, newest first, `limit` at most.
    async fn select(&self, query: &RunQuery, limit: Option<usize>) -> Result<Vec<RunSummary>, StoreError> {
        let mut sql = String::from("SELECT summary FROM cairn_runs WHERE TRUE");
        let mut params: Vec<Box<dyn ToSql + Sync + Send>> = Vec::new();
        let mut bind = |sql: &mut String, clause: &str, value: Box<dyn ToSql + Sync + Send>| {
            params.push(value);
            sql.push_str(&clause.replace('?', &format!("${}", params.len())));
        };
        if let Some(status) = query.status {
            bind(&mut sql, " AND status = ?", Box::new(cairn_domain::state::word(status).to_owned()));
        }
        if let Some(workflow) = &query.workflow {
            bind(&mut sql, " AND workflow = ?", Box::new(workflow.to_string()));
        }
        if !query.labels.is_empty() {
            let labels = serde_json::to_string(&query.labels).map_err(io)?;
            bind(&mut sql, " AND labels @> (?::text)::jsonb", Box::new(labels));
        }
        if let Some(by) = &query.triggered_by {
            bind(&mut sql, " AND triggered_by = ?", Box::new(by.clone()));
        }
        if let Some(priority) = query.priority {
            bind(&mut sql, " AND priority = ?", Box::new(priority));
        }
        if let Some(parent) = &query.parent {
            bind(&mut sql, " AND parent = ?", Box::new(parent.to_string()));
        }
        if let Some(after) = &query.after {
            bind(&mut sql, " AND (created_at, run_id) < (?", Box::new(signed(after.created_at.0)?));
            bind(&mut sql, ", ?)", Box::new(after.run_id.to_string()));
        }
        sql.push_str(" ORDER BY created_at DESC, run_id DESC");
        if let Some(limit) = limit {
            bind(&mut sql, " LIMIT ?", Box::new(i64::try_from(limit).unwrap_or(i64::MAX)));
        }
        let client = self.client().await?;
        let refs: Vec<&(dyn ToSql + Sync)> =
            params.iter().map(|p| p.as_ref() as &(dyn ToSql + Sync)).collect();
        let rows = client.query(&sql, &refs).await.map_err(io)?;
        rows.iter().map(summary_of).collect()
    }
}

impl PostgresStore {
    /// Refuses an append to a run whose row (`lease_owner`, `lease_token`,
    /// whether the lease is live, at columns 2 to 4) says another process
    /// drives it: one this process held the lease of and lost (its token
    /// is not the row's), or one it holds no lease on while another does.
    fn check_fence(&self, run: &RunId, row: &Row) -> Result<(), StoreError> {
        let owner: Option<String> = row.get(2);
        let token = unsigned(row.get(3));
        let live = row.get::<_, Option<bool>>(4) == Some(true);
        let theirs = || StoreError::Leased {
            run: run.to_string(),
            worker: owner.clone().unwrap_or_else(|| "another worker".to_owned()),
        };
        match self.fenced(run) {
            Some(held) if held != token || owner.as_deref() != Some(&*self.worker) => Err(theirs()),
            None if live && owner.as_deref() != Some(&*self.worker) => Err(theirs()),
            _ => Ok(()),
        }
    }
}

/// A name for this process among the workers: its host, its process id
/// and a random part (process ids are reused).
fn worker_name() -> String {
    use std::hash::{BuildHasher, Hasher};
    let host = std::fs::read_to_string("/etc/hostname")
        .ok()
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "cairn".to_owned());
    let random = std::collections::hash_map::RandomState::new().build_hasher().finish() & 0xffff_ffff;
    format!("{host}-{}-{random:08x}", std::process::id())
}

fn summary_of(row: &Row) -> Result<RunSummary, StoreError> {
    let text: String = row.get(0);
    serde_json::from_str(&text).map_err(|e| corrupt("a run summary", e))
}

fn encode<T: serde::Serialize>(value: &T) -> Result<String, StoreError> {
    serde_json::to_string(value).map_err(io)
}

#[async_trait]
impl RunStore for PostgresStore {
    async fn create(&self, run: NewRun) -> Result<(), StoreError> {
        if run.created.seq != 1 || !matches!(run.created.kind, EventKind::RunCreated { .. }) {
            return Err(StoreError::Corrupt("a run starts with run_created, numbered 1".into()));
        }
        let summary = RunSummary::fold(std::iter::once(&run.created))?;
        let launched = run.launched();
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(io)?;
        let inserted = tx
            .execute(
                "INSERT INTO cairn_runs (run_id, workflow, definition_name, definition, files, definition_hash, \
                 created_at, status, triggered_by, priority, parent, labels, last_seq, summary, wake_at) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, ($12::text)::jsonb, 1, $13, $14) \
                 ON CONFLICT (run_id) DO NOTHING",
                &[
                    &run.run_id.as_str(),
                    &run.workflow.as_str(),
                    &run.definition_name,
                    &run.definition,
                    &encode(&run.files)?,
                    &run.definition_hash,
                    &signed(run.created.at.0)?,
                    &cairn_domain::state::word(summary.status),
                    &launched.triggered_by,
                    &launched.priority,
                    &launched.parent.as_ref().map(RunId::as_str),
                    &encode(&launched.labels)?,
                    &encode(&summary)?,
                    // Its starter drives it at once; if it goes away first,
                    // any worker does once a lease's term has passed.
                    &signed(run.created.at.0.saturating_add(self.term.as_millis() as u64))?,
                ],
            )
            .await
            .map_err(io)?;
        if inserted == 0 {
            return Err(StoreError::AlreadyExists(run.run_id.to_string()));
        }
        tx.execute(
            "INSERT INTO cairn_events (run_id, seq, body) VALUES ($1, 1, $2)",
            &[&run.run_id.as_str(), &encode(&run.created)?],
        )
        .await
        .map_err(io)?;
        tx.commit().await.map_err(io)
    }

    async fn append(&self, run: &RunId, expected_seq: u64, events: &[Event]) -> Result<(), StoreError> {
        cairn_ports::follows(expected_seq, events)?;
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(io)?;
        let row = tx
            .query_opt(
                "SELECT last_seq, summary, lease_owner, lease_token, lease_until > now() \
                 FROM cairn_runs WHERE run_id = $1 FOR UPDATE",
                &[&run.as_str()],
            )
            .await
            .map_err(io)?
            .ok_or_else(|| StoreError::NotFound(run.to_string()))?;
        self.check_fence(run, &row)?;
        let actual = unsigned(row.get(0));
        if actual != expected_seq {
            return Err(StoreError::Conflict { run: run.to_string(), expected: expected_seq, actual });
        }
        let Some(last) = events.last() else { return Ok(()) };
        let text: String = row.get(1);
        let mut summary: RunSummary = serde_json::from_str(&text).map_err(|e| corrupt("a run summary", e))?;
        summary.advance(events);
        let insert = tx
            .prepare("INSERT INTO cairn_events (run_id, seq, body) VALUES ($1, $2, $3)")
            .await
            .map_err(io)?;
        for event in events {
            tx.execute(&insert, &[&run.as_str(), &signed(event.seq)?, &encode(event)?]).await.map_err(io)?;
        }
        tx.execute(
            "UPDATE cairn_runs SET last_seq = $2, status = $3, summary = $4 WHERE run_id = $1",
            &[
                &run.as_str(),
                &signed(last.seq)?,
                &cairn_domain::state::word(summary.status),
                &encode(&summary)?,
            ],
        )
        .await
        .map_err(io)?;
        // A writer that read the same last event before this one took the
        // row's lock finds the key taken: the commit fails, nothing is kept.
        tx.commit().await.map_err(|e| match e.code() {
            Some(&tokio_postgres::error::SqlState::UNIQUE_VIOLATION) => StoreError::Conflict {
                run: run.to_string(),
                expected: expected_seq,
                actual: expected_seq + 1,
            },
            _ => io(e),
        })?;
        // Heard by the other workers (their event streams).
        self.appended(run, events.first().map_or(last.seq, |e| e.seq), last.seq);
        Ok(())
    }

    async fn load(&self, run: &RunId, from_seq: u64) -> Result<StoredRun, StoreError> {
        let client = self.client().await?;
        let head = client
            .query_opt(
                "SELECT definition_name, definition, files FROM cairn_runs WHERE run_id = $1",
                &[&run.as_str()],
            )
            .await
            .map_err(io)?
            .ok_or_else(|| StoreError::NotFound(run.to_string()))?;
        let files: String = head.get(2);
        let rows = client
            .query(
                "SELECT seq, body FROM cairn_events WHERE run_id = $1 AND seq >= $2 ORDER BY seq",
                // Past every sequence number: none of the events.
                &[&run.as_str(), &i64::try_from(from_seq).unwrap_or(i64::MAX)],
            )
            .await
            .map_err(io)?;
        let events = rows
            .iter()
            .map(|row| {
                let body: String = row.get(1);
                serde_json::from_str(&body)
                    .map_err(|e| corrupt(&format!("run `{run}` event {}", row.get::<_, i64>(0)), e))
            })
            .collect::<Result<Vec<Event>, StoreError>>()?;
        Ok(StoredRun {
            definition_name: head.get(0),
            definition: head.get(1),
            files: serde_json::from_str(&files).map_err(|e| corrupt(&format!("run `{run}` files"), e))?,
            events,
        })
    }

    async fn list(&self, query: &RunQuery) -> Result<RunPage, StoreError> {
        // One more than the page: whether there is a next one.
        let rows = self.select(query, query.limit.map(|n| n.saturating_add(1))).await?;
        Ok(query.page_of(rows.into_iter().map(Arc::new).collect()))
    }

    async fn summaries(&self, query: &RunQuery) -> Result<Vec<Arc<RunSummary>>, StoreError> {
        Ok(self.select(query, None).await?.into_iter().map(Arc::new).collect())
    }

    async fn summary(&self, run: &RunId) -> Result<Option<Arc<RunSummary>>, StoreError> {
        let client = self.client().await?;
        let row = client
            .query_opt("SELECT summary FROM cairn_runs WHERE run_id = $1", &[&run.as_str()])
            .await
            .map_err(io)?;
        row.as_ref().map(summary_of).transpose().map(|s| s.map(Arc::new))
    }

    async fn put_snapshot(&self, run: &RunId, snapshot: Snapshot) -> Result<(), StoreError> {
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(io)?;
        let exists =
            tx.query_opt("SELECT 1 FROM cairn_runs WHERE run_id = $1", &[&run.as_str()]).await.map_err(io)?;
        if exists.is_none() {
            return Err(StoreError::NotFound(run.to_string()));
        }
        tx.execute(
            "INSERT INTO cairn_snapshots (run_id, seq, body) VALUES ($1, $2, $3) \
             ON CONFLICT (run_id, seq) DO UPDATE SET body = EXCLUDED.body",
            &[&run.as_str(), &signed(snapshot.seq)?, &encode(&snapshot.state)?],
        )
        .await
        .map_err(io)?;
        tx.execute(
            "DELETE FROM cairn_snapshots WHERE run_id = $1 AND seq NOT IN \
             (SELECT seq FROM cairn_snapshots WHERE run_id = $1 ORDER BY seq DESC LIMIT $2)",
            &[&run.as_str(), &KEEP_SNAPSHOTS],
        )
        .await
        .map_err(io)?;
        tx.commit().await.map_err(io)
    }

    async fn latest_snapshot(&self, run: &RunId) -> Result<Option<Snapshot>, StoreError> {
        let client = self.client().await?;
        let row = client
            .query_opt(
                "SELECT seq, body FROM cairn_snapshots WHERE run_id = $1 ORDER BY seq DESC LIMIT 1",
                &[&run.as_str()],
            )
            .await
            .map_err(io)?;
        let Some(row) = row else {
            let exists = client
                .query_opt("SELECT 1 FROM cairn_runs WHERE run_id = $1", &[&run.as_str()])
                .await
                .map_err(io)?;
            return if exists.is_some() { Ok(None) } else { Err(StoreError::NotFound(run.to_string())) };
        };
        let body: String = row.get(1);
        let state: RunState =
            serde_json::from_str(&body).map_err(|e| corrupt(&format!("run `{run}`'s snapshot"), e))?;
        Ok(Some(Snapshot { seq: unsigned(row.get(0)), state }))
    }

    async fn delete(&self, run: &RunId) -> Result<(), StoreError> {
        let client = self.client().await?;
        let deleted =
            client.execute("DELETE FROM cairn_runs WHERE run_id = $1", &[&run.as_str()]).await.map_err(io)?;
        if deleted == 0 {
            return Err(StoreError::NotFound(run.to_string()));
        }
        Ok(())
    }
}

fn token_of(row: &Row) -> Result<TokenRecord, StoreError> {
    let name: String = row.get(0);
    let body: String = row.get(1);
    serde_json::from_str(&body).map_err(|e| corrupt(&format!("token `{name}`"), e))
}

#[async_trait]
impl TokenStore for PostgresStore {
    async fn add_token(&self, token: TokenRecord) -> Result<(), StoreError> {
        let client = self.client().await?;
        let added = client
            .execute(
                "INSERT INTO cairn_tokens (name, hash, body) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING",
                &[&token.name, &token.hash, &encode(&token)?],
            )
            .await
            .map_err(io)?;
        if added == 0 {
            return Err(StoreError::AlreadyExists(token.name));
        }
        Ok(())
    }

    async fn tokens(&self) -> Result<Vec<TokenRecord>, StoreError> {
        let client = self.client().await?;
        let rows =
            client.query("SELECT name, body FROM cairn_tokens ORDER BY name", &[]).await.map_err(io)?;
        rows.iter().map(token_of).collect()
    }

    async fn token_by_hash(&self, hash: &str) -> Result<Option<TokenRecord>, StoreError> {
        let client = self.client().await?;
        let row = client
            .query_opt("SELECT name, body FROM cairn_tokens WHERE hash = $1", &[&hash])
            .await
            .map_err(io)?;
        row.as_ref().map(token_of).transpose()
    }

    async fn revoke_token(&self, name: &str) -> Result<bool, StoreError> {
        let client = self.client().await?;
        let gone = client.execute("DELETE FROM cairn_tokens WHERE name = $1", &[&name]).await.map_err(io)?;
        Ok(gone > 0)
    }

    async fn touch_token(&self, name: &str, at: Timestamp) -> Result<(), StoreError> {
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(io)?;
        let row = tx
            .query_opt("SELECT name, body FROM cairn_tokens WHERE name = $1 FOR UPDATE", &[&name])
            .await
            .map_err(io)?;
        let Some(row) = row else { return Ok(()) };
        let mut token = token_of(&row)?;
        if token.last_used_at.is_some_and(|last| last >= at) {
            return Ok(());
        }
        token.last_used_at = Some(at);
        tx.execute("UPDATE cairn_tokens SET body = $2 WHERE name = $1", &[&name, &encode(&token)?])
            .await
            .map_err(io)?;
        tx.commit().await.map_err(io)
    }
}

/// The columns a workflow version is read from, in this order.
const VERSION_COLUMNS: &str =
    "workflow, number, version, hash, definition_name, definition, files, registered_at, registered_by";

fn version_of(row: &Row) -> Result<WorkflowVersion, StoreError> {
    let workflow: String = row.get(0);
    let number: i32 = row.get(1);
    let files: String = row.get(6);
    let named = |what: &str| format!("workflow `{workflow}` version {number}: {what}");
    Ok(WorkflowVersion {
        workflow: WorkflowId::new(workflow.as_str()).map_err(|e| corrupt(&named("its id"), e))?,
        number: u32::try_from(number).map_err(|e| corrupt(&named("its number"), e))?,
        version: row.get(2),
        hash: row.get(3),
        definition_name: row.get(4),
        definition: row.get(5),
        files: serde_json::from_str::<BTreeMap<String, String>>(&files)
            .map_err(|e| corrupt(&named("its files"), e))?,
        registered_at: Timestamp(unsigned(row.get(7))),
        registered_by: row.get(8),
    })
}

#[async_trait]
impl WorkflowStore for PostgresStore {
    async fn register(&self, version: WorkflowVersion) -> Result<Registered, RegisterError> {
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(io)?;
        // Registrations of one workflow take turns: each is numbered after
        // the last one committed.
        tx.execute("SELECT pg_advisory_xact_lock(hashtext($1))", &[&version.workflow.as_str()])
            .await
            .map_err(io)?;
        let rows = tx
            .query(
                &format!("SELECT {VERSION_COLUMNS} FROM cairn_workflow_versions WHERE workflow = $1 ORDER BY number"),
                &[&version.workflow.as_str()],
            )
            .await
            .map_err(io)?;
        let versions = rows.iter().map(version_of).collect::<Result<Vec<_>, _>>()?;
        let placed = place(&versions, version)?;
        if let Registered::Added(new) = &placed {
            let number = i32::try_from(new.number).map_err(io)?;
            tx.execute(
                &format!(
                    "INSERT INTO cairn_workflow_versions ({VERSION_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)"
                ),
                &[
                    &new.workflow.as_str(),
                    &number,
                    &new.version,
                    &new.hash,
                    &new.definition_name,
                    &new.definition,
                    &encode(&new.files)?,
                    &signed(new.registered_at.0)?,
                    &new.registered_by,
                ],
            )
            .await
            .map_err(io)?;
            tx.commit().await.map_err(io)?;
        }
        Ok(placed)
    }

    async fn versions(&self, workflow: &WorkflowId) -> Result<Vec<WorkflowVersion>, StoreError> {
        let client = self.client().await?;
        let rows = client
            .query(
                &format!("SELECT {VERSION_COLUMNS} FROM cairn_workflow_versions WHERE workflow = $1 ORDER BY number"),
                &[&workflow.as_str()],
            )
            .await
            .map_err(io)?;
        rows.iter().map(version_of).collect()
    }

    async fn latest(&self) -> Result<Vec<WorkflowVersion>, StoreError> {
        let client = self.client().await?;
        let rows = client
            .query(
                &format!(
                    "SELECT DISTINCT ON (workflow) {VERSION_COLUMNS} FROM cairn_workflow_versions \
                     ORDER BY workflow, number DESC"
                ),
                &[],
            )
            .await
            .map_err(io)?;
        rows.iter().map(version_of).collect()
    }
}

mod lease;
mod search;

#[cfg(test)]
mod tests;
