//! The registry on PostgreSQL: several stateless service replicas share one database.
//!
//! ```text
//!  replica A ─┐ commit queue ─▶ writer task ─▶ one transaction per group of changes
//!  replica B ─┤                               (a SAVEPOINT per change: a refused change rolls
//!  …          │                                back alone), then the chain head, then COMMIT
//!             └ event tail ◀── SELECT … FROM events WHERE seq > last (woken by its own commits,
//!                              polled every EVENT_POLL for the other replicas') ─▶ subscribers
//! ```
//!
//! How each rule of the [`Registry`] contract maps to SQL is in the module documentation of
//! [`crate::store`]; in short:
//!
//! - **Isolation.** Transactions run at READ COMMITTED, and every guard is a row lock or a
//!   constraint: compare-and-set is `UPDATE … WHERE version = $v`, "absent" guards are primary
//!   keys (a unique violation maps to the same typed conflict as the guard's `SELECT`), batch
//!   counts are `UPDATE … SET n = n + $d`, CRL numbers are an `ON CONFLICT … WHERE number <`
//!   upsert, an operator revocation locks its row (`FOR UPDATE`). None of them depends on the
//!   isolation level, so the same statements are correct under SERIALIZABLE (CockroachDB's and
//!   YugabyteDB's default); a serialization failure or deadlock (`40001`, `40P01`) retries the
//!   whole group with its guards re-checked. No advisory locks, no LISTEN.
//! - **The audit chain head** is one row, `registry_head`. A group does all its other work
//!   first and locks the head last (`SELECT … FOR UPDATE`), seals its entries after it, writes
//!   them and its events, updates the head and commits: the head is held for one round trip
//!   and the commit's flush, so groups of different replicas serialise there and nowhere else,
//!   and the chain's order is the commit order. A group with no audit entry and no event does
//!   not touch it.
//! - **Events** are rows numbered from the head under its lock: their order is the commit order
//!   with no gaps (a sequence would hand out numbers at insert, in another order).
//! - **Durability.** `synchronous_commit` must be `on` ([`PostgresRegistry::connect`] refuses
//!   otherwise): an acknowledged `COMMIT` is flushed, and only then is a commit answered `Ok`.
//!   A `COMMIT` whose answer is lost is reported unavailable; the caller's re-read decides.
//! - **Availability.** [`Registry::failed`] follows the database: set by a failed round trip,
//!   cleared by a probe once the pool reconnects; no restart needed.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod};
use rot_core::keys::DeviceId;
use std::future::Future;
use std::pin::Pin;
use time::OffsetDateTime;
use tokio::sync::{Notify, broadcast, mpsc};
use tokio_postgres::error::SqlState;
use tokio_postgres::types::ToSql;
use tokio_postgres::{GenericClient, NoTls};

use super::codec::{decode, decode_policy, encode, encode_json, encode_policy};
use super::{
    Change, Conflict, DeviceFilter, Guard, Op, Placement, Published, Receipt, Registry,
    RegistryEvent, Reply, StoreError, Subscription,
};
use crate::audit::{self, GENESIS_HASH, StoredAuditEntry};
use crate::model::{
    BatchCounts, BatchRecord, CountsDelta, CredentialRecord, CrlEntryRecord, CrlRecord,
    DeviceRecord, FirmwareRecord, FirmwareSignerRecord, OperatorCertificateRecord, OwnerRecord,
    RolloutOutcomes, RolloutRecord, RolloutReportRecord,
};
use crate::pki::Serial;
use crate::policy::PolicySpec;

/// The schema this build reads and writes; [`migrate`] brings a database to it.
pub const SCHEMA_VERSION: i32 = 3;

/// Each migration, by the version it brings the schema to.
const MIGRATIONS: &[(i32, &str)] = &[
    (1, include_str!("postgres/schema_v1.sql")),
    (2, include_str!("postgres/schema_v2.sql")),
    (3, include_str!("postgres/schema_v3.sql")),
];

/// Most changes one transaction carries (group commit). Each change is a savepoint, i.e. a
/// subtransaction: past 64 of them in one transaction PostgreSQL's per-backend subtransaction
/// cache overflows, and every other backend's snapshots then look transactions up in
/// `pg_subtrans`, which costs the whole database CPU.
const MAX_GROUP: usize = 60;
/// Changes that may wait for the writer before a commit waits for room (back-pressure).
const QUEUE: usize = 4096;
/// Events buffered per subscriber before it is told it missed some.
const EVENT_BUFFER: usize = 16_384;
/// How often the tail looks for other replicas' events.
const EVENT_POLL: Duration = Duration::from_millis(50);
/// Most events one tail read fetches.
const EVENT_PAGE: i64 = 1000;
/// Events kept in the table for tails that reconnect; older ones are pruned.
const EVENT_RETENTION: i64 = 200_000;
/// How often the availability probe runs.
const PROBE: Duration = Duration::from_secs(1);
/// Times a group is retried after a serialization failure or deadlock.
const GROUP_RETRIES: u32 = 8;

/// Where the database is and how many connections the pool holds.
#[derive(Clone)]
pub struct PostgresConfig {
    /// A libpq-style connection string or `postgres://` URL.
    pub url: String,
    /// The password, if the server asks for one (kept out of `url` so that it is never
    /// printed).
    pub password: Option<String>,
    /// Pool size (reads and the writer).
    pub pool_size: usize,
}

impl std::fmt::Debug for PostgresConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PostgresConfig")
            .field("url", &self.url)
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .field("pool_size", &self.pool_size)
            .finish()
    }
}

/// The registry on a PostgreSQL database.
pub struct PostgresRegistry {
    pool: Pool,
    queue: mpsc::Sender<(Change, Reply)>,
    events: broadcast::Sender<Published>,
    failed: Arc<AtomicBool>,
}

impl std::fmt::Debug for PostgresRegistry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PostgresRegistry")
            .field("failed", &self.failed.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

fn pool(config: &PostgresConfig) -> Result<Pool, StoreError> {
    let mut pg: tokio_postgres::Config = config
        .url
        .parse()
        .map_err(|e| StoreError::Unavailable(format!("the PostgreSQL URL does not parse: {e}")))?;
    if let Some(password) = &config.password {
        pg.password(password.as_bytes());
    }
    let manager = Manager::from_config(
        pg,
        NoTls,
        ManagerConfig {
            recycling_method: RecyclingMethod::Fast,
        },
    );
    Pool::builder(manager)
        .max_size(config.pool_size.max(2))
        .wait_timeout(Some(Duration::from_secs(10)))
        .create_timeout(Some(Duration::from_secs(5)))
        .runtime(deadpool_postgres::Runtime::Tokio1)
        .build()
        .map_err(|e| StoreError::Unavailable(format!("connection pool: {e}")))
}

/// A database error as the registry reports it. Connection failures make the store
/// unavailable; the text of a server error names what failed, never a parameter's value.
fn db_error(e: &tokio_postgres::Error) -> StoreError {
    StoreError::Unavailable(match e.as_db_error() {
        Some(db) => format!("PostgreSQL: {} ({})", db.message(), db.code().code()),
        None => format!("PostgreSQL: {e}"),
    })
}

fn pool_error(e: &deadpool_postgres::PoolError) -> StoreError {
    StoreError::Unavailable(format!("PostgreSQL connection: {e}"))
}

fn corrupt(key: impl Into<String>, reason: impl std::fmt::Display) -> StoreError {
    StoreError::Corrupt {
        key: key.into(),
        reason: reason.to_string(),
    }
}

/// A stored `bigint` as the `u64` the records use (never negative when this code wrote it).
fn unsigned(value: i64, what: &str) -> Result<u64, StoreError> {
    u64::try_from(value).map_err(|_| corrupt(what, "negative"))
}

fn signed(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

fn limit(limit: usize) -> i64 {
    i64::try_from(limit).unwrap_or(i64::MAX)
}

/// Applies every migration above the database's version, each in its own transaction.
/// Returns the version before and after.
///
/// # Errors
/// [`StoreError::Unavailable`] when the database cannot be reached or a migration fails
/// (nothing of the failed migration stays).
pub async fn migrate(config: &PostgresConfig) -> Result<(i32, i32), StoreError> {
    let pool = pool(config)?;
    let mut client = pool.get().await.map_err(|e| pool_error(&e))?;
    client
        .batch_execute(
            "CREATE TABLE IF NOT EXISTS schema_version (
                 singleton boolean PRIMARY KEY DEFAULT true CHECK (singleton),
                 version integer NOT NULL
             )",
        )
        .await
        .map_err(|e| db_error(&e))?;
    let before = schema_version(&**client).await?;
    for (version, sql) in MIGRATIONS.iter().filter(|(v, _)| *v > before) {
        let tx = client.transaction().await.map_err(|e| db_error(&e))?;
        tx.batch_execute(sql).await.map_err(|e| db_error(&e))?;
        tx.execute(
            "INSERT INTO schema_version (singleton, version) VALUES (true, $1)
             ON CONFLICT (singleton) DO UPDATE SET version = excluded.version",
            &[version],
        )
        .await
        .map_err(|e| db_error(&e))?;
        tx.commit().await.map_err(|e| db_error(&e))?;
    }
    Ok((before, schema_version(&**client).await?))
}

async fn schema_version(client: &impl GenericClient) -> Result<i32, StoreError> {
    let exists = client
        .query_one("SELECT to_regclass('schema_version') IS NOT NULL", &[])
        .await
        .map_err(|e| db_error(&e))?
        .get::<_, bool>(0);
    if !exists {
        return Ok(0);
    }
    Ok(client
        .query_opt("SELECT version FROM schema_version", &[])
        .await
        .map_err(|e| db_error(&e))?
        .map_or(0, |row| row.get(0)))
}

impl PostgresRegistry {
    /// Connects, checks the schema and durability settings, and starts the writer, the event
    /// tail and the availability probe.
    ///
    /// # Errors
    /// [`StoreError::Unavailable`]: the database cannot be reached, its schema is not this
    /// build's (run `enroll-service migrate`), or `synchronous_commit` is off.
    pub async fn connect(config: &PostgresConfig) -> Result<Arc<Self>, StoreError> {
        let pool = pool(config)?;
        let client = pool.get().await.map_err(|e| pool_error(&e))?;
        let version = schema_version(&**client).await?;
        if version != SCHEMA_VERSION {
            return Err(StoreError::Unavailable(format!(
                "the database schema is at version {version}, this build needs \
                 {SCHEMA_VERSION}: run `enroll-service migrate`"
            )));
        }
        let synchronous: String = client
            .query_one("SHOW synchronous_commit", &[])
            .await
            .map_err(|e| db_error(&e))?
            .get(0);
        if synchronous != "on" && synchronous != "remote_apply" && synchronous != "remote_write" {
            return Err(StoreError::Unavailable(format!(
                "synchronous_commit is {synchronous}: a commit must be durable before a \
                 credential leaves the service; set it to on"
            )));
        }
        let last_event: i64 = client
            .query_one("SELECT event_seq FROM registry_head", &[])
            .await
            .map_err(|e| db_error(&e))?
            .get(0);
        drop(client);
        let (queue, receiver) = mpsc::channel(QUEUE);
        let (events, _) = broadcast::channel(EVENT_BUFFER);
        let failed = Arc::new(AtomicBool::new(false));
        let committed = Arc::new(Notify::new());
        let writer = Writer {
            pool: pool.clone(),
            failed: failed.clone(),
            committed: committed.clone(),
            groups: 0,
        };
        tokio::spawn(writer.run(receiver));
        let tail = Tail {
            pool: pool.clone(),
            events: events.clone(),
            last: AtomicU64::new(unsigned(last_event, "registry_head.event_seq")?),
            committed,
        };
        tokio::spawn(tail.run());
        tokio::spawn(probe(pool.clone(), failed.clone()));
        Ok(Arc::new(Self {
            pool,
            queue,
            events,
            failed,
        }))
    }

    /// A pooled connection; a failure marks the store unavailable until the probe succeeds.
    async fn client(&self) -> Result<deadpool_postgres::Object, StoreError> {
        self.pool.get().await.map_err(|e| {
            self.failed.store(true, Ordering::Release);
            pool_error(&e)
        })
    }

    async fn query(
        &self,
        sql: &str,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<Vec<tokio_postgres::Row>, StoreError> {
        let client = self.client().await?;
        let statement = client
            .prepare_cached(sql)
            .await
            .map_err(|e| self.read_error(&e))?;
        client
            .query(&statement, params)
            .await
            .map_err(|e| self.read_error(&e))
    }

    fn read_error(&self, e: &tokio_postgres::Error) -> StoreError {
        if e.as_db_error().is_none() {
            self.failed.store(true, Ordering::Release);
        }
        db_error(e)
    }
}

/// Runs `SELECT 1` every [`PROBE`]: the store is failed while it does not answer.
async fn probe(pool: Pool, failed: Arc<AtomicBool>) {
    loop {
        let ok = match pool.get().await {
            Ok(client) => client.simple_query("SELECT 1").await.is_ok(),
            Err(_) => false,
        };
        let now_failed = !ok;
        let was_failed = failed.swap(now_failed, Ordering::AcqRel);
        if was_failed != now_failed {
            if ok {
                tracing::info!("PostgreSQL is reachable again");
            } else {
                tracing::error!("PostgreSQL is unreachable; the service answers UNAVAILABLE");
            }
        }
        if Arc::strong_count(&failed) == 1 {
            return; // the registry and its writer are gone
        }
        tokio::time::sleep(PROBE).await;
    }
}

/// Reads every replica's events in commit order and fans them out to this process.
struct Tail {
    pool: Pool,
    events: broadcast::Sender<Published>,
    last: AtomicU64,
    committed: Arc<Notify>,
}

impl Tail {
    async fn run(self) {
        loop {
            // Woken at once by this replica's commits; other replicas' within EVENT_POLL.
            let _ = tokio::time::timeout(EVENT_POLL, self.committed.notified()).await;
            if Arc::strong_count(&self.committed) == 1 {
                return; // the writer is gone: the registry was dropped
            }
            if let Err(e) = self.read().await {
                tracing::debug!(error = %e, "event tail read failed; retrying");
            }
        }
    }

    async fn read(&self) -> Result<(), StoreError> {
        let client = self.pool.get().await.map_err(|e| pool_error(&e))?;
        loop {
            let last = self.last.load(Ordering::Acquire);
            let rows = client
                .query(
                    "SELECT seq, payload FROM events WHERE seq > $1 ORDER BY seq LIMIT $2",
                    &[&signed(last), &EVENT_PAGE],
                )
                .await
                .map_err(|e| db_error(&e))?;
            let count = rows.len();
            for row in rows {
                let seq = unsigned(row.get(0), "events.seq")?;
                let payload: Vec<u8> = row.get(1);
                let event: RegistryEvent = decode(format!("event {seq}").as_bytes(), &payload)?;
                // Nobody listening is fine: watchers come and go.
                let _ = self.events.send(Published { seq, event });
                self.last.store(seq, Ordering::Release);
            }
            if count < usize::try_from(EVENT_PAGE).unwrap_or(usize::MAX) {
                return Ok(());
            }
        }
    }
}

/// Applies queued changes in groups, one transaction each.
struct Writer {
    pool: Pool,
    failed: Arc<AtomicBool>,
    committed: Arc<Notify>,
    groups: u64,
}

/// Why a group's transaction did not commit.
enum GroupFailure {
    /// Serialization failure or deadlock: run the whole group again.
    Retry(StoreError),
    /// The database failed: every change of the group is answered with this.
    Failed(StoreError),
}

impl From<tokio_postgres::Error> for GroupFailure {
    fn from(e: tokio_postgres::Error) -> Self {
        match e.code() {
            Some(code) if *code == SqlState::T_R_SERIALIZATION_FAILURE => Self::Retry(db_error(&e)),
            Some(code) if *code == SqlState::T_R_DEADLOCK_DETECTED => Self::Retry(db_error(&e)),
            _ => Self::Failed(db_error(&e)),
        }
    }
}

impl Writer {
    async fn run(mut self, mut receiver: mpsc::Receiver<(Change, Reply)>) {
        while let Some(first) = receiver.recv().await {
            let mut group = vec![first];
            while group.len() < MAX_GROUP {
                match receiver.try_recv() {
                    Ok(next) => group.push(next),
                    Err(_) => break,
                }
            }
            self.commit_group(group).await;
        }
    }

    async fn commit_group(&mut self, group: Vec<(Change, Reply)>) {
        let (changes, replies): (Vec<Change>, Vec<Reply>) = group.into_iter().unzip();
        let mut attempt = 0;
        let outcomes = loop {
            attempt += 1;
            match self.try_group(&changes).await {
                Ok(outcomes) => break outcomes,
                Err(GroupFailure::Retry(e)) if attempt < GROUP_RETRIES => {
                    tracing::debug!(error = %e, attempt, "registry group retried");
                }
                Err(GroupFailure::Retry(e) | GroupFailure::Failed(e)) => {
                    if matches!(e, StoreError::Unavailable(_)) {
                        self.failed.store(true, Ordering::Release);
                    }
                    tracing::error!(error = %e, "registry group failed");
                    break changes.iter().map(|_| Err(e.clone())).collect();
                }
            }
        };
        self.committed.notify_one();
        for (reply, outcome) in replies.into_iter().zip(outcomes) {
            let _ = reply.send(outcome);
        }
        self.groups += 1;
        if self.groups.is_multiple_of(1024) {
            self.prune_events().await;
        }
    }

    /// One transaction for the group. Refused changes get their conflict; the others their
    /// receipts once the transaction committed.
    async fn try_group(
        &self,
        changes: &[Change],
    ) -> Result<Vec<Result<Receipt, StoreError>>, GroupFailure> {
        let client = self
            .pool
            .get()
            .await
            .map_err(|e| GroupFailure::Failed(pool_error(&e)))?;
        client.batch_execute("BEGIN").await?;
        let result = self.group_in_transaction(&client, changes).await;
        match result {
            Ok(outcomes) => match client.batch_execute("COMMIT").await {
                Ok(()) => {
                    self.failed.store(false, Ordering::Release);
                    Ok(outcomes)
                }
                Err(e) if e.as_db_error().is_none() => {
                    Err(GroupFailure::Failed(StoreError::Unavailable(format!(
                        "the commit's outcome is unknown (PostgreSQL: {e}); read again"
                    ))))
                }
                Err(e) => Err(e.into()),
            },
            Err(failure) => {
                let _ = client.batch_execute("ROLLBACK").await;
                Err(failure)
            }
        }
    }

    async fn group_in_transaction(
        &self,
        client: &deadpool_postgres::Object,
        changes: &[Change],
    ) -> Result<Vec<Result<Receipt, StoreError>>, GroupFailure> {
        // Prepared (once per connection, then cached) before anything is pipelined.
        let prepared = futures_util::future::join_all(
            WRITER_STATEMENTS
                .iter()
                .map(|sql| client.prepare_cached(sql)),
        )
        .await;
        for statement in prepared {
            statement?;
        }
        let mut outcomes = Vec::with_capacity(changes.len());
        // Audit drafts and events of the changes that stay, in order, with their change.
        let mut sealed_for = Vec::new();
        // The changes' count deltas, summed per batch.
        let mut counts: BTreeMap<&str, CountsDelta> = BTreeMap::new();
        // Batches seen to exist in this transaction.
        let batches = std::sync::Mutex::new(std::collections::HashSet::new());
        for (index, change) in changes.iter().enumerate() {
            client.batch_execute("SAVEPOINT change").await?;
            match apply(&Tx(client), change, &batches).await {
                Ok(()) => {
                    client.batch_execute("RELEASE SAVEPOINT change").await?;
                    for op in &change.ops {
                        if let Op::AdjustCounts { batch_id, delta } = op {
                            *counts.entry(batch_id.as_str()).or_default() += *delta;
                            if let Ok(mut known) = batches.lock() {
                                known.insert(batch_id.clone());
                            }
                        }
                    }
                    sealed_for.push(index);
                    outcomes.push(Ok(Receipt::default()));
                }
                Err(Applied::Refused(e)) => {
                    client.batch_execute("ROLLBACK TO SAVEPOINT change").await?;
                    outcomes.push(Err(e));
                }
                Err(Applied::Database(e)) => return Err(e.into()),
            }
        }
        // Each batch's row once, near the end: a batch every replica onboards into is held
        // from here to COMMIT only, not for the whole group (in batch order: no deadlock).
        for (batch_id, delta) in &counts {
            let d = counts_params(delta);
            // Clamped at zero as BatchCounts::apply is: one bug cannot poison every read.
            let written = Tx(client)
                .execute(
                    ADJUST_COUNTS,
                    &[batch_id, &d[0], &d[1], &d[2], &d[3], &d[4], &d[5], &d[6]],
                )
                .await?;
            if written == 0 {
                // Batches are never deleted: checked when its change was applied.
                return Err(GroupFailure::Failed(corrupt(
                    format!("batches/{batch_id}"),
                    "vanished during the group",
                )));
            }
        }
        seal(client, changes, &sealed_for, &mut outcomes).await?;
        Ok(outcomes)
    }

    /// Drops events every tail has long read (a tail that reconnects after more than
    /// [`EVENT_RETENTION`] events tells its subscribers they missed some).
    async fn prune_events(&self) {
        if let Ok(client) = self.pool.get().await {
            let _ = client
                .execute(
                    "DELETE FROM events WHERE seq < (SELECT event_seq FROM registry_head) - $1",
                    &[&EVENT_RETENTION],
                )
                .await;
        }
    }
}

/// The end of a group's transaction: its audit entries sealed into the one chain and its
/// events numbered, after the chain head, which is locked here and held until COMMIT.
async fn seal(
    client: &deadpool_postgres::Object,
    changes: &[Change],
    sealed_for: &[usize],
    outcomes: &mut [Result<Receipt, StoreError>],
) -> Result<(), GroupFailure> {
    let drafts: Vec<(usize, &audit::AuditDraft)> = sealed_for
        .iter()
        .flat_map(|&i| {
            changes[i].ops.iter().filter_map(move |op| match op {
                Op::Audit(draft) => Some((i, draft)),
                _ => None,
            })
        })
        .collect();
    let events: Vec<&RegistryEvent> = sealed_for
        .iter()
        .flat_map(|&i| changes[i].events.iter())
        .collect();
    if drafts.is_empty() && events.is_empty() {
        return Ok(());
    }
    let tx = Tx(client);
    // The chain head, last: held from here to COMMIT only.
    let head = tx
        .query_one(
            "SELECT audit_seq, audit_hash, event_seq FROM registry_head FOR UPDATE",
            &[],
        )
        .await?;
    let mut seq = unsigned(head.get(0), "registry_head.audit_seq").map_err(GroupFailure::Failed)?;
    let stored_hash: Vec<u8> = head.get(1);
    let mut hash: [u8; 32] = stored_hash
        .as_slice()
        .try_into()
        .map_err(|_| GroupFailure::Failed(corrupt("registry_head.audit_hash", "not 32 bytes")))?;
    let mut event_seq =
        unsigned(head.get(2), "registry_head.event_seq").map_err(GroupFailure::Failed)?;
    let (mut audit_seqs, mut audit_records) = (Vec::new(), Vec::new());
    for (index, draft) in drafts {
        seq += 1;
        // Recordable: checked when the change was applied.
        let entry = audit::seal(draft, seq, &hash)
            .map_err(|e| GroupFailure::Failed(StoreError::Unrecordable(e.to_string())))?;
        hash.copy_from_slice(&entry.hash);
        audit_seqs.push(signed(seq));
        audit_records.push(encode(&entry));
        if let Some(Ok(receipt)) = outcomes.get_mut(index) {
            receipt.audit_seqs.push(seq);
        }
    }
    let (mut event_seqs, mut payloads) = (Vec::new(), Vec::new());
    for event in events {
        event_seq += 1;
        event_seqs.push(signed(event_seq));
        payloads.push(encode(event));
    }
    tx.execute(
        "INSERT INTO audit (seq, entry) SELECT * FROM UNNEST($1::bigint[], $2::bytea[])",
        &[&audit_seqs, &audit_records],
    )
    .await?;
    tx.execute(
        "INSERT INTO events (seq, payload) SELECT * FROM UNNEST($1::bigint[], $2::bytea[])",
        &[&event_seqs, &payloads],
    )
    .await?;
    tx.execute(
        "UPDATE registry_head SET audit_seq = $1, audit_hash = $2, event_seq = $3",
        &[&signed(seq), &hash.as_slice(), &signed(event_seq)],
    )
    .await?;
    Ok(())
}

/// The writer's connection inside a group's transaction: every statement prepared once per
/// connection and cached, so that each is one round trip.
struct Tx<'a>(&'a deadpool_postgres::ClientWrapper);

impl Tx<'_> {
    async fn execute(
        &self,
        sql: &str,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<u64, tokio_postgres::Error> {
        let statement = self.0.prepare_cached(sql).await?;
        self.0.execute(&statement, params).await
    }

    async fn query_opt(
        &self,
        sql: &str,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<Option<tokio_postgres::Row>, tokio_postgres::Error> {
        let statement = self.0.prepare_cached(sql).await?;
        self.0.query_opt(&statement, params).await
    }

    async fn query_one(
        &self,
        sql: &str,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<tokio_postgres::Row, tokio_postgres::Error> {
        let statement = self.0.prepare_cached(sql).await?;
        self.0.query_one(&statement, params).await
    }
}

/// Why a change was not applied.
enum Applied {
    /// A guard failed or the change cannot be recorded: this change is refused, the group
    /// goes on.
    Refused(StoreError),
    /// The database failed: the group fails.
    Database(tokio_postgres::Error),
}

impl From<tokio_postgres::Error> for Applied {
    fn from(e: tokio_postgres::Error) -> Self {
        Self::Database(e)
    }
}

impl From<Conflict> for Applied {
    fn from(conflict: Conflict) -> Self {
        Self::Refused(conflict.into())
    }
}

/// A unique violation of the insert a guard protects: the same conflict as the guard's.
fn unique_or(e: tokio_postgres::Error, conflict: Conflict) -> Applied {
    if e.code() == Some(&SqlState::UNIQUE_VIOLATION) {
        Applied::Refused(conflict.into())
    } else {
        Applied::Database(e)
    }
}

/// Whether an "absent" guard is enforced by the change's own insert of that key (a plain
/// `INSERT`, whose unique violation gives the guard's conflict): its `SELECT` would only
/// repeat it. (An owner's insert reports `OwnerChanged`, so `OwnerAbsent` is always checked.)
fn enforced_by_insert(guard: &Guard, change: &Change) -> bool {
    change.ops.iter().any(|op| match (guard, op) {
        (Guard::SerialAbsent(serial), Op::PutCredential(credential)) => {
            credential.serial == *serial
        }
        (Guard::PolicyAbsent { owner, name }, Op::PutPolicy(policy)) => {
            policy.owner == *owner && policy.name == *name
        }
        (Guard::BatchAbsent(id), Op::PutBatch(batch)) => batch.batch_id == *id,
        (Guard::FirmwareSignerAbsent(owner), Op::PutFirmwareSigner(record)) => {
            record.owner == *owner
        }
        (
            Guard::FirmwareAbsent {
                owner,
                name,
                version,
            },
            Op::PutFirmware { record, .. },
        ) => record.owner == *owner && record.name == *name && record.version == *version,
        (
            Guard::RequestIdAbsent { owner, request_id },
            Op::PutRequestId {
                owner: o,
                request_id: r,
                ..
            },
        ) => o == owner && r == request_id,
        _ => false,
    })
}

/// One guard's or write's statement of a change, in flight.
type Statement<'a> = Pin<Box<dyn Future<Output = Result<(), Applied>> + Send + 'a>>;

/// Checks a change's guards and applies its writes (audit entries and events are the group's).
///
/// Every statement of the change is sent at once (pipelined on the one connection) and the
/// answers are read in order: the first guard or write that fails decides, and the caller
/// rolls the change's savepoint back, so statements sent after it leave nothing either. A
/// statement that failed only because an earlier one aborted the transaction (`25P02`) is
/// not the reason.
async fn apply(
    client: &Tx<'_>,
    change: &Change,
    batches: &std::sync::Mutex<std::collections::HashSet<String>>,
) -> Result<(), Applied> {
    let absent_serials: Vec<Serial> = change
        .guards
        .iter()
        .filter_map(|g| match g {
            Guard::SerialAbsent(serial) => Some(*serial),
            _ => None,
        })
        .collect();
    let absent_batches: Vec<&str> = change
        .guards
        .iter()
        .filter_map(|g| match g {
            Guard::BatchAbsent(id) => Some(id.as_str()),
            _ => None,
        })
        .collect();
    let mut statements: Vec<Statement<'_>> =
        Vec::with_capacity(change.guards.len() + change.ops.len());
    for guard in change
        .guards
        .iter()
        .filter(|guard| !enforced_by_insert(guard, change))
    {
        statements.push(Box::pin(check_guard(client, guard)));
    }
    for op in &change.ops {
        statements.push(Box::pin(apply_op(
            client,
            op,
            &absent_serials,
            &absent_batches,
            batches,
        )));
    }
    let mut aborted = None;
    for result in futures_util::future::join_all(statements).await {
        match result {
            Ok(()) => {}
            Err(Applied::Database(e)) if e.code() == Some(&SqlState::IN_FAILED_SQL_TRANSACTION) => {
                aborted.get_or_insert(Applied::Database(e));
            }
            Err(reason) => return Err(reason),
        }
    }
    aborted.map_or(Ok(()), Err)
}

/// Every statement the writer runs inside a group, prepared on its connection before the
/// group's statements are pipelined: a statement still to be prepared would go out after
/// later ones, and a change's writes must reach the database in their order.
const GUARD_POLICY: &str = "SELECT 1 FROM policies WHERE owner = $1 AND name = $2";
const GUARD_BATCH: &str = "SELECT 1 FROM batches WHERE batch_id = $1";
const GUARD_OWNER: &str = "SELECT 1 FROM owners WHERE name = $1";
const GUARD_SERIAL: &str = "SELECT 1 FROM credentials WHERE serial = $1";
const GUARD_REQUEST_ID: &str = "SELECT 1 FROM request_ids WHERE owner = $1 AND request_id = $2";
const LOCK_OPERATOR_CERTIFICATE: &str =
    "SELECT revoked FROM operator_certificates WHERE serial = $1 FOR UPDATE";
const INSERT_DEVICE: &str = "WITH written AS (INSERT INTO devices (device_id, version, owner, \
    batch_id, state, record) VALUES ($1, 1, $2, $3, $4, $5) ON CONFLICT (device_id) DO NOTHING \
    RETURNING version) SELECT (SELECT version FROM written), (SELECT version FROM devices WHERE \
    device_id = $1)";
const UPDATE_DEVICE: &str = "WITH written AS (UPDATE devices SET version = version + 1, owner = \
    $2, batch_id = $3, state = $4, record = $5 WHERE device_id = $1 AND version = $6 RETURNING \
    version) SELECT (SELECT version FROM written), (SELECT version FROM devices WHERE device_id = \
    $1)";
const INSERT_POLICY: &str = "INSERT INTO policies (owner, name, record) VALUES ($1, $2, $3)";
const INSERT_FIRMWARE_SIGNER: &str = "INSERT INTO firmware_signers (owner, record) VALUES ($1, $2)";
const INSERT_FIRMWARE: &str =
    "INSERT INTO firmware (owner, name, version, record, image) VALUES ($1, $2, $3, $4, $5)";
const GUARD_FIRMWARE_SIGNER: &str = "SELECT 1 FROM firmware_signers WHERE owner = $1";
const GUARD_FIRMWARE: &str =
    "SELECT 1 FROM firmware WHERE owner = $1 AND name = $2 AND version = $3";
const INSERT_CREDENTIAL: &str = "INSERT INTO credentials (serial, record) VALUES ($1, $2)";
const UPSERT_CREDENTIAL: &str = "INSERT INTO credentials (serial, record) VALUES ($1, $2) ON \
    CONFLICT (serial) DO UPDATE SET record = excluded.record";
const UPSERT_OPERATOR_CERTIFICATE: &str = "INSERT INTO operator_certificates (serial, owner, \
    revoked, record) VALUES ($1, $2, $3, $4) ON CONFLICT (serial) DO UPDATE SET owner = \
    excluded.owner, revoked = excluded.revoked, record = excluded.record";
const UPSERT_CRL_ENTRY: &str = "INSERT INTO crl_entries (issuer, serial, record) VALUES ($1, $2, \
    $3) ON CONFLICT (issuer, serial) DO UPDATE SET record = excluded.record";
const INSERT_OWNER: &str = "WITH written AS (INSERT INTO owners (name, version, record) VALUES \
    ($1, 1, $2) ON CONFLICT (name) DO NOTHING RETURNING version) SELECT (SELECT version FROM \
    written), (SELECT version FROM owners WHERE name = $1)";
const UPDATE_OWNER: &str = "WITH written AS (UPDATE owners SET version = version + 1, record = $2 \
    WHERE name = $1 AND version = $3 RETURNING version) SELECT (SELECT version FROM written), \
    (SELECT version FROM owners WHERE name = $1)";
const ADJUST_COUNTS: &str = "UPDATE batches SET total = GREATEST(0, total + $2), \
    awaiting_registration = GREATEST(0, awaiting_registration + $3), registered = GREATEST(0, \
    registered + $4), onboarded = GREATEST(0, onboarded + $5), reonboard_pending = GREATEST(0, \
    reonboard_pending + $6), revoked = GREATEST(0, revoked + $7), refusals = GREATEST(0, refusals \
    + $8) WHERE batch_id = $1";
const PUT_CRL: &str = "WITH written AS (INSERT INTO crls (issuer, number, record) VALUES ($1, $2, \
    $3) ON CONFLICT (issuer) DO UPDATE SET number = excluded.number, record = excluded.record \
    WHERE crls.number < excluded.number RETURNING number) SELECT (SELECT number FROM written), \
    (SELECT number FROM crls WHERE issuer = $1)";
const UPSERT_SCHEDULE: &str = "INSERT INTO scheduled_revocations (serial, due) VALUES ($1, $2) ON \
    CONFLICT (serial) DO UPDATE SET due = excluded.due";
const DELETE_SCHEDULE: &str = "DELETE FROM scheduled_revocations WHERE serial = $1";
const INSERT_REQUEST_ID: &str =
    "INSERT INTO request_ids (owner, request_id, batch_id) VALUES ($1, $2, $3)";
const INSERT_BATCH: &str = "INSERT INTO batches (batch_id, owner, policy_name, record, total, \
    awaiting_registration, registered, onboarded, reonboard_pending, revoked, refusals) VALUES \
    ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)";
const UPSERT_BATCH: &str = "INSERT INTO batches (batch_id, owner, policy_name, record, total, \
    awaiting_registration, registered, onboarded, reonboard_pending, revoked, refusals) VALUES \
    ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11) ON CONFLICT (batch_id) DO UPDATE SET owner = \
    excluded.owner, policy_name = excluded.policy_name, record = excluded.record";
const INSERT_ROLLOUT: &str = "WITH written AS (INSERT INTO rollouts (owner, id, version, record) \
    VALUES ($1, $2, 1, $3) ON CONFLICT (owner, id) DO NOTHING RETURNING version) SELECT (SELECT \
    version FROM written), (SELECT version FROM rollouts WHERE owner = $1 AND id = $2)";
const UPDATE_ROLLOUT: &str = "WITH written AS (UPDATE rollouts SET version = version + 1, record \
    = $3 WHERE owner = $1 AND id = $2 AND version = $4 RETURNING version) SELECT (SELECT version \
    FROM written), (SELECT version FROM rollouts WHERE owner = $1 AND id = $2)";
const COUNT_ROLLOUT_REPORT: &str = "UPDATE rollouts SET installed = installed + $3, failed = \
    failed + $4 WHERE owner = $1 AND id = $2";
const INSERT_ROLLOUT_REPORT: &str =
    "INSERT INTO rollout_reports (owner, rollout_id, device_id, record) VALUES ($1, $2, $3, $4)";
const WRITER_STATEMENTS: &[&str] = &[
    INSERT_ROLLOUT,
    UPDATE_ROLLOUT,
    COUNT_ROLLOUT_REPORT,
    INSERT_ROLLOUT_REPORT,
    GUARD_FIRMWARE_SIGNER,
    GUARD_FIRMWARE,
    INSERT_FIRMWARE_SIGNER,
    INSERT_FIRMWARE,
    GUARD_POLICY,
    GUARD_BATCH,
    GUARD_OWNER,
    GUARD_SERIAL,
    GUARD_REQUEST_ID,
    LOCK_OPERATOR_CERTIFICATE,
    INSERT_DEVICE,
    UPDATE_DEVICE,
    INSERT_POLICY,
    INSERT_CREDENTIAL,
    UPSERT_CREDENTIAL,
    UPSERT_OPERATOR_CERTIFICATE,
    UPSERT_CRL_ENTRY,
    INSERT_OWNER,
    UPDATE_OWNER,
    ADJUST_COUNTS,
    PUT_CRL,
    UPSERT_SCHEDULE,
    DELETE_SCHEDULE,
    INSERT_REQUEST_ID,
    INSERT_BATCH,
    UPSERT_BATCH,
];

async fn exists(
    client: &Tx<'_>,
    sql: &str,
    params: &[&(dyn ToSql + Sync)],
) -> Result<bool, tokio_postgres::Error> {
    Ok(client.query_opt(sql, params).await?.is_some())
}

async fn check_guard(client: &Tx<'_>, guard: &Guard) -> Result<(), Applied> {
    let taken = match guard {
        Guard::PolicyAbsent { owner, name } => exists(client, GUARD_POLICY, &[owner, name])
            .await?
            .then(|| Conflict::PolicyExists {
                owner: owner.clone(),
                name: name.clone(),
            }),
        Guard::BatchAbsent(id) => exists(client, GUARD_BATCH, &[id])
            .await?
            .then(|| Conflict::BatchExists(id.clone())),
        Guard::OwnerAbsent(name) => exists(client, GUARD_OWNER, &[name])
            .await?
            .then(|| Conflict::OwnerExists(name.clone())),
        Guard::SerialAbsent(serial) => exists(client, GUARD_SERIAL, &[&serial.to_string()])
            .await?
            .then_some(Conflict::SerialTaken(*serial)),
        Guard::RequestIdAbsent { owner, request_id } => {
            exists(client, GUARD_REQUEST_ID, &[owner, request_id])
                .await?
                .then(|| Conflict::RequestIdUsed {
                    owner: owner.clone(),
                    request_id: request_id.clone(),
                })
        }
        Guard::FirmwareSignerAbsent(owner) => exists(client, GUARD_FIRMWARE_SIGNER, &[owner])
            .await?
            .then(|| Conflict::FirmwareSignerExists(owner.clone())),
        Guard::FirmwareAbsent {
            owner,
            name,
            version,
        } => exists(client, GUARD_FIRMWARE, &[owner, name, version])
            .await?
            .then(|| Conflict::FirmwareExists {
                owner: owner.clone(),
                name: name.clone(),
                version: version.clone(),
            }),
        Guard::OperatorUnrevoked(serial) => {
            // Locked until the group commits: a concurrent revocation waits, then sees it.
            let row = client
                .query_opt(LOCK_OPERATOR_CERTIFICATE, &[&serial.to_string()])
                .await?;
            row.is_none_or(|r| r.get::<_, bool>(0))
                .then_some(Conflict::OperatorRevoked(*serial))
        }
    };
    match taken {
        Some(conflict) => Err(conflict.into()),
        None => Ok(()),
    }
}

/// The second column of a write-and-report statement: what was stored before it (0: no row).
fn stored_number(row: &tokio_postgres::Row) -> u64 {
    row.get::<_, Option<i64>>(1)
        .map_or(0, |v| u64::try_from(v).unwrap_or(0))
}

fn counts_params(delta: &CountsDelta) -> [i64; 7] {
    [
        delta.total,
        delta.awaiting_registration,
        delta.registered,
        delta.onboarded,
        delta.reonboard_pending,
        delta.revoked,
        delta.refusals,
    ]
}

fn counts_of(counts: &BatchCounts) -> [i64; 7] {
    [
        signed(counts.total),
        signed(counts.awaiting_registration),
        signed(counts.registered),
        signed(counts.onboarded),
        signed(counts.reonboard_pending),
        signed(counts.revoked),
        signed(counts.refusals),
    ]
}

#[allow(
    clippy::too_many_lines,
    reason = "one arm per op, each a statement; splitting would only scatter them"
)]
async fn apply_op(
    client: &Tx<'_>,
    op: &Op,
    absent_serials: &[Serial],
    absent_batches: &[&str],
    batches: &std::sync::Mutex<std::collections::HashSet<String>>,
) -> Result<(), Applied> {
    match op {
        Op::PutDevice(device) => {
            let id = device.device_id.to_string();
            let state = format!("{:?}", device.state());
            let record = encode(device);
            // One statement that writes and says what it found: the version it wrote, and the
            // version stored before it (the conflict names it).
            let row = if device.version == 0 {
                client
                    .query_one(
                        INSERT_DEVICE,
                        &[&id, &device.owner, &device.batch_id, &state, &record],
                    )
                    .await?
            } else {
                client
                    .query_one(
                        UPDATE_DEVICE,
                        &[
                            &id,
                            &device.owner,
                            &device.batch_id,
                            &state,
                            &record,
                            &signed(device.version),
                        ],
                    )
                    .await?
            };
            if row.get::<_, Option<i64>>(0).is_none() {
                let found = stored_number(&row);
                return Err(Conflict::DeviceChanged {
                    device_id: device.device_id,
                    expected: device.version,
                    found,
                }
                .into());
            }
        }
        Op::PutPolicy(policy) => {
            client
                .execute(
                    INSERT_POLICY,
                    &[&policy.owner, &policy.name, &encode_policy(policy)],
                )
                .await
                .map_err(|e| {
                    unique_or(
                        e,
                        Conflict::PolicyExists {
                            owner: policy.owner.clone(),
                            name: policy.name.clone(),
                        },
                    )
                })?;
        }
        Op::PutBatch(batch) => {
            let counts = counts_of(&batch.counts);
            let record = encode(batch);
            let params: [&(dyn ToSql + Sync); 11] = [
                &batch.batch_id,
                &batch.owner,
                &batch.policy_name,
                &record,
                &counts[0],
                &counts[1],
                &counts[2],
                &counts[3],
                &counts[4],
                &counts[5],
                &counts[6],
            ];
            if absent_batches.contains(&batch.batch_id.as_str()) {
                client
                    .execute(INSERT_BATCH, &params)
                    .await
                    .map_err(|e| unique_or(e, Conflict::BatchExists(batch.batch_id.clone())))?;
            } else {
                // The counts of an existing batch are kept: only AdjustCounts moves them.
                client.execute(UPSERT_BATCH, &params).await?;
            }
        }
        // Membership is the devices.batch_id column, indexed for listing.
        Op::AddToBatch { .. } | Op::RemoveFromBatch { .. } => {}
        Op::PutCredential(credential) => {
            let serial = credential.serial.to_string();
            let record = encode(credential);
            if absent_serials.contains(&credential.serial) {
                client
                    .execute(INSERT_CREDENTIAL, &[&serial, &record])
                    .await
                    .map_err(|e| unique_or(e, Conflict::SerialTaken(credential.serial)))?;
            } else {
                client
                    .execute(UPSERT_CREDENTIAL, &[&serial, &record])
                    .await?;
            }
        }
        Op::PutOperatorCertificate(record) => {
            client
                .execute(
                    UPSERT_OPERATOR_CERTIFICATE,
                    &[
                        &record.serial.to_string(),
                        &record.owner,
                        &record.revocation.is_some(),
                        &encode(record),
                    ],
                )
                .await?;
        }
        Op::Revoke {
            issuer,
            serial,
            entry,
        } => {
            client
                .execute(
                    UPSERT_CRL_ENTRY,
                    &[issuer, &serial.to_string(), &encode(entry)],
                )
                .await?;
        }
        Op::PutOwner(owner) => {
            let record = encode(&**owner);
            let row = if owner.version == 0 {
                client
                    .query_one(INSERT_OWNER, &[&owner.name, &record])
                    .await?
            } else {
                client
                    .query_one(
                        UPDATE_OWNER,
                        &[&owner.name, &record, &signed(owner.version)],
                    )
                    .await?
            };
            if row.get::<_, Option<i64>>(0).is_none() {
                let found = stored_number(&row);
                return Err(Conflict::OwnerChanged {
                    name: owner.name.clone(),
                    expected: owner.version,
                    found,
                }
                .into());
            }
        }
        // Only checked here; the group adds up its deltas per batch and writes each batch's
        // row once, at its end (see `group_in_transaction`).
        Op::AdjustCounts { batch_id, .. } => {
            // Batches are never deleted: one an earlier change of this group's transaction
            // adjusted exists for the rest of it.
            let known = batches.lock().is_ok_and(|known| known.contains(batch_id));
            if !known && !exists(client, GUARD_BATCH, &[batch_id]).await? {
                return Err(Conflict::BatchAbsent(batch_id.clone()).into());
            }
        }
        Op::PutCrl { issuer, record } => {
            let row = client
                .query_one(PUT_CRL, &[issuer, &signed(record.number), &encode(record)])
                .await?;
            if row.get::<_, Option<i64>>(0).is_none() {
                let stored = stored_number(&row);
                return Err(Conflict::CrlNumberTaken {
                    issuer: issuer.clone(),
                    number: record.number,
                    stored,
                }
                .into());
            }
        }
        Op::ScheduleRevocation { serial, due } => {
            client
                .execute(
                    UPSERT_SCHEDULE,
                    &[&serial.to_string(), &due.unix_timestamp()],
                )
                .await?;
        }
        Op::CancelScheduledRevocation(serial) => {
            client
                .execute(DELETE_SCHEDULE, &[&serial.to_string()])
                .await?;
        }
        Op::PutRequestId {
            owner,
            request_id,
            batch_id,
        } => {
            client
                .execute(INSERT_REQUEST_ID, &[owner, request_id, batch_id])
                .await
                .map_err(|e| {
                    unique_or(
                        e,
                        Conflict::RequestIdUsed {
                            owner: owner.clone(),
                            request_id: request_id.clone(),
                        },
                    )
                })?;
        }
        Op::PutFirmwareSigner(record) => {
            client
                .execute(
                    INSERT_FIRMWARE_SIGNER,
                    &[&record.owner, &encode_json(&**record)],
                )
                .await
                .map_err(|e| unique_or(e, Conflict::FirmwareSignerExists(record.owner.clone())))?;
        }
        Op::PutFirmware { record, image } => {
            client
                .execute(
                    INSERT_FIRMWARE,
                    &[
                        &record.owner,
                        &record.name,
                        &record.version,
                        &encode_json(&**record),
                        image,
                    ],
                )
                .await
                .map_err(|e| {
                    unique_or(
                        e,
                        Conflict::FirmwareExists {
                            owner: record.owner.clone(),
                            name: record.name.clone(),
                            version: record.version.clone(),
                        },
                    )
                })?;
        }
        Op::PutRollout(rollout) => {
            let record = encode(&**rollout);
            let row = if rollout.version == 0 {
                client
                    .query_one(INSERT_ROLLOUT, &[&rollout.owner, &rollout.id, &record])
                    .await?
            } else {
                client
                    .query_one(
                        UPDATE_ROLLOUT,
                        &[
                            &rollout.owner,
                            &rollout.id,
                            &record,
                            &signed(rollout.version),
                        ],
                    )
                    .await?
            };
            if row.get::<_, Option<i64>>(0).is_none() {
                return Err(Conflict::RolloutChanged {
                    owner: rollout.owner.clone(),
                    id: rollout.id.clone(),
                    expected: rollout.version,
                    found: stored_number(&row),
                }
                .into());
            }
        }
        Op::ReportRollout {
            owner,
            rollout_id,
            report,
        } => {
            // The count first: it locks the rollout's row, so a report of a rollout being
            // created elsewhere waits for it, and the report's insert below is the guard.
            let (installed, failed) = if report.installed {
                (1_i64, 0_i64)
            } else {
                (0, 1)
            };
            let counted = client
                .execute(
                    COUNT_ROLLOUT_REPORT,
                    &[owner, rollout_id, &installed, &failed],
                )
                .await?;
            if counted == 0 {
                return Err(Conflict::RolloutAbsent {
                    owner: owner.clone(),
                    id: rollout_id.clone(),
                }
                .into());
            }
            client
                .execute(
                    INSERT_ROLLOUT_REPORT,
                    &[owner, rollout_id, &report.device_id, &encode(&**report)],
                )
                .await
                .map_err(|e| {
                    unique_or(
                        e,
                        Conflict::RolloutReported {
                            id: rollout_id.clone(),
                            device_id: report.device_id.clone(),
                        },
                    )
                })?;
        }
        Op::Audit(draft) => {
            // Sealed into the chain at the end of the group; a draft that has no canonical
            // form refuses its change now, before anything of the group depends on it.
            audit::seal(draft, 1, &GENESIS_HASH)
                .map_err(|e| Applied::Refused(StoreError::Unrecordable(e.to_string())))?;
        }
    }
    Ok(())
}

fn device_from(row: &tokio_postgres::Row) -> Result<DeviceRecord, StoreError> {
    let id: String = row.get("device_id");
    let bytes: Vec<u8> = row.get("record");
    let mut device: DeviceRecord = decode(format!("devices/{id}").as_bytes(), &bytes)?;
    device.version = unsigned(row.get("version"), "devices.version")?;
    Ok(device)
}

fn batch_from(row: &tokio_postgres::Row) -> Result<BatchRecord, StoreError> {
    batch_columns(row, "")
}

/// A batch from its columns, named with `prefix` (a join names them `b_…`).
fn batch_columns(row: &tokio_postgres::Row, prefix: &str) -> Result<BatchRecord, StoreError> {
    let column = |name: &str| format!("{prefix}{name}");
    let id: String = row.get(column("batch_id").as_str());
    let bytes: Vec<u8> = row.get(column("record").as_str());
    let mut batch: BatchRecord = decode(format!("batches/{id}").as_bytes(), &bytes)?;
    let count = |name: &str| unsigned(row.get(column(name).as_str()), "batches counts");
    batch.counts = BatchCounts {
        total: count("total")?,
        awaiting_registration: count("awaiting_registration")?,
        registered: count("registered")?,
        onboarded: count("onboarded")?,
        reonboard_pending: count("reonboard_pending")?,
        revoked: count("revoked")?,
        refusals: count("refusals")?,
    };
    Ok(batch)
}

fn owner_from(row: &tokio_postgres::Row) -> Result<OwnerRecord, StoreError> {
    let name: String = row.get("name");
    let bytes: Vec<u8> = row.get("record");
    let mut owner: OwnerRecord = decode(format!("owners/{name}").as_bytes(), &bytes)?;
    owner.version = unsigned(row.get("version"), "owners.version")?;
    Ok(owner)
}

fn rollout_from(row: &tokio_postgres::Row) -> Result<RolloutRecord, StoreError> {
    let key = format!(
        "rollouts/{}/{}",
        row.get::<_, &str>("owner"),
        row.get::<_, &str>("id")
    );
    let mut rollout: RolloutRecord = decode(key.as_bytes(), row.get("record"))?;
    rollout.version = unsigned(row.get("version"), "rollouts.version")?;
    rollout.outcomes = RolloutOutcomes {
        installed: unsigned(row.get("installed"), "rollouts.installed")?,
        failed: unsigned(row.get("failed"), "rollouts.failed")?,
    };
    Ok(rollout)
}

fn record_from<T: serde::de::DeserializeOwned>(
    row: &tokio_postgres::Row,
    key: &str,
) -> Result<T, StoreError> {
    let bytes: Vec<u8> = row.get("record");
    decode(key.as_bytes(), &bytes)
}

fn serial_from(text: &str) -> Result<Serial, StoreError> {
    text.parse()
        .map_err(|_| corrupt(format!("serial {text}"), "not a serial"))
}

const BATCH_COLUMNS: &str = "batch_id, record, total, awaiting_registration, registered, \
    onboarded, reonboard_pending, revoked, refusals";

#[async_trait]
impl Registry for PostgresRegistry {
    async fn commit(&self, change: Change) -> Result<Receipt, StoreError> {
        super::hand_to_writer(&self.queue, change).await
    }

    fn subscribe(&self) -> Subscription {
        Subscription::new(self.events.subscribe())
    }

    async fn device(&self, device_id: &DeviceId) -> Result<Option<DeviceRecord>, StoreError> {
        self.query(
            "SELECT device_id, version, record FROM devices WHERE device_id = $1",
            &[&device_id.to_string()],
        )
        .await?
        .first()
        .map(device_from)
        .transpose()
    }

    async fn placement(&self, device_id: &DeviceId) -> Result<Option<Placement>, StoreError> {
        // One round trip for what every device exchange reads first.
        let rows = self
            .query(
                "SELECT d.device_id, d.version, d.record,
                        b.batch_id AS b_batch_id, b.record AS b_record, b.total AS b_total,
                        b.awaiting_registration AS b_awaiting_registration,
                        b.registered AS b_registered, b.onboarded AS b_onboarded,
                        b.reonboard_pending AS b_reonboard_pending, b.revoked AS b_revoked,
                        b.refusals AS b_refusals,
                        p.owner AS p_owner, p.name AS p_name, p.record AS p_record,
                        o.name AS o_name, o.version AS o_version, o.record AS o_record
                 FROM devices d
                 LEFT JOIN batches b ON b.batch_id = d.batch_id
                 LEFT JOIN policies p ON p.owner = b.owner AND p.name = b.policy_name
                 LEFT JOIN owners o ON o.name = b.owner
                 WHERE d.device_id = $1",
                &[&device_id.to_string()],
            )
            .await?;
        let Some(row) = rows.first() else {
            return Ok(None);
        };
        let device = device_from(row)?;
        let batch = match row.get::<_, Option<String>>("b_batch_id") {
            Some(_) => Some(batch_columns(row, "b_")?),
            None => None,
        };
        let policy = match row.get::<_, Option<Vec<u8>>>("p_record") {
            Some(bytes) => {
                let key = format!(
                    "policies/{}/{}",
                    row.get::<_, &str>("p_owner"),
                    row.get::<_, &str>("p_name")
                );
                Some(decode_policy(key.as_bytes(), &bytes)?)
            }
            None => None,
        };
        let owner = match row.get::<_, Option<Vec<u8>>>("o_record") {
            Some(bytes) => {
                let name: String = row.get("o_name");
                let mut owner: OwnerRecord = decode(format!("owners/{name}").as_bytes(), &bytes)?;
                owner.version = unsigned(row.get("o_version"), "owners.version")?;
                Some(owner)
            }
            None => None,
        };
        Ok(Some(Placement {
            device,
            batch,
            policy,
            owner,
        }))
    }

    async fn devices(
        &self,
        filter: &DeviceFilter,
        after: Option<&DeviceId>,
        limit_to: usize,
    ) -> Result<Vec<DeviceRecord>, StoreError> {
        let after = after.map_or_else(String::new, ToString::to_string);
        let state = filter.state.map(|s| format!("{s:?}"));
        self.query(
            "SELECT device_id, version, record FROM devices WHERE device_id > $1
             AND ($2::text IS NULL OR batch_id = $2) AND ($3::text IS NULL OR owner = $3)
             AND ($4::text IS NULL OR state = $4) ORDER BY device_id LIMIT $5",
            &[
                &after,
                &filter.batch_id,
                &filter.owner,
                &state,
                &limit(limit_to),
            ],
        )
        .await?
        .iter()
        .map(device_from)
        .collect()
    }

    async fn policy(&self, owner: &str, name: &str) -> Result<Option<PolicySpec>, StoreError> {
        self.query(
            "SELECT record FROM policies WHERE owner = $1 AND name = $2",
            &[&owner, &name],
        )
        .await?
        .first()
        .map(|row| decode_policy(format!("policies/{owner}/{name}").as_bytes(), row.get(0)))
        .transpose()
    }

    async fn policies(
        &self,
        owner: Option<&str>,
        after: Option<(&str, &str)>,
        limit_to: usize,
    ) -> Result<Vec<PolicySpec>, StoreError> {
        let (after_owner, after_name) = after.unwrap_or(("", ""));
        self.query(
            "SELECT owner, name, record FROM policies WHERE ($1::text IS NULL OR owner = $1)
             AND (owner, name) > ($2, $3) ORDER BY owner, name LIMIT $4",
            &[&owner, &after_owner, &after_name, &limit(limit_to)],
        )
        .await?
        .iter()
        .map(|row| {
            let key = format!(
                "policies/{}/{}",
                row.get::<_, &str>(0),
                row.get::<_, &str>(1)
            );
            decode_policy(key.as_bytes(), row.get(2))
        })
        .collect()
    }

    async fn batch(&self, batch_id: &str) -> Result<Option<BatchRecord>, StoreError> {
        self.query(
            &format!("SELECT {BATCH_COLUMNS} FROM batches WHERE batch_id = $1"),
            &[&batch_id],
        )
        .await?
        .first()
        .map(batch_from)
        .transpose()
    }

    async fn batches(
        &self,
        owner: Option<&str>,
        before: Option<&str>,
        limit_to: usize,
    ) -> Result<Vec<BatchRecord>, StoreError> {
        self.query(
            &format!(
                "SELECT {BATCH_COLUMNS} FROM batches WHERE ($1::text IS NULL OR owner = $1)
                 AND ($2::text IS NULL OR batch_id < $2) ORDER BY batch_id DESC LIMIT $3"
            ),
            &[&owner, &before, &limit(limit_to)],
        )
        .await?
        .iter()
        .map(batch_from)
        .collect()
    }

    async fn request_id(
        &self,
        owner: &str,
        request_id: &str,
    ) -> Result<Option<String>, StoreError> {
        Ok(self
            .query(
                "SELECT batch_id FROM request_ids WHERE owner = $1 AND request_id = $2",
                &[&owner, &request_id],
            )
            .await?
            .first()
            .map(|row| row.get(0)))
    }

    async fn credential(&self, serial: Serial) -> Result<Option<CredentialRecord>, StoreError> {
        self.query(
            "SELECT record FROM credentials WHERE serial = $1",
            &[&serial.to_string()],
        )
        .await?
        .first()
        .map(|row| record_from(row, &format!("credentials/{serial}")))
        .transpose()
    }

    async fn operator_certificate(
        &self,
        serial: Serial,
    ) -> Result<Option<OperatorCertificateRecord>, StoreError> {
        self.query(
            "SELECT record FROM operator_certificates WHERE serial = $1",
            &[&serial.to_string()],
        )
        .await?
        .first()
        .map(|row| record_from(row, &format!("operator_certificates/{serial}")))
        .transpose()
    }

    async fn operator_certificates(
        &self,
        owner: Option<&str>,
        after: Option<Serial>,
        limit_to: usize,
    ) -> Result<Vec<OperatorCertificateRecord>, StoreError> {
        let after = after.map_or_else(String::new, |s| s.to_string());
        self.query(
            "SELECT serial, record FROM operator_certificates WHERE serial > $1
             AND ($2::text IS NULL OR owner = $2) ORDER BY serial LIMIT $3",
            &[&after, &owner, &limit(limit_to)],
        )
        .await?
        .iter()
        .map(|row| {
            record_from(
                row,
                &format!("operator_certificates/{}", row.get::<_, &str>(0)),
            )
        })
        .collect()
    }

    async fn credential_count(&self) -> Result<u64, StoreError> {
        let rows = self.query("SELECT count(*) FROM credentials", &[]).await?;
        unsigned(rows.first().map_or(0, |r| r.get(0)), "credential count")
    }

    async fn revoked(&self, issuer: &str) -> Result<Vec<(Serial, CrlEntryRecord)>, StoreError> {
        self.query(
            "SELECT serial, record FROM crl_entries WHERE issuer = $1 ORDER BY serial",
            &[&issuer],
        )
        .await?
        .iter()
        .map(|row| {
            let serial = serial_from(row.get(0))?;
            Ok((
                serial,
                record_from(row, &format!("crl_entries/{issuer}/{serial}"))?,
            ))
        })
        .collect()
    }

    async fn revoked_count(&self, issuer: &str) -> Result<u64, StoreError> {
        let rows = self
            .query(
                "SELECT count(*) FROM crl_entries WHERE issuer = $1",
                &[&issuer],
            )
            .await?;
        unsigned(rows.first().map_or(0, |r| r.get(0)), "revoked count")
    }

    async fn crl(&self, issuer: &str) -> Result<Option<CrlRecord>, StoreError> {
        self.query("SELECT record FROM crls WHERE issuer = $1", &[&issuer])
            .await?
            .first()
            .map(|row| record_from(row, &format!("crls/{issuer}")))
            .transpose()
    }

    async fn scheduled_revocations(
        &self,
        due_by: OffsetDateTime,
        limit_to: usize,
    ) -> Result<Vec<(Serial, OffsetDateTime)>, StoreError> {
        self.query(
            "SELECT serial, due FROM scheduled_revocations WHERE due <= $1 ORDER BY due, serial
             LIMIT $2",
            &[&due_by.unix_timestamp(), &limit(limit_to)],
        )
        .await?
        .iter()
        .map(|row| {
            let serial = serial_from(row.get(0))?;
            let due = OffsetDateTime::from_unix_timestamp(row.get(1))
                .map_err(|e| corrupt(format!("scheduled_revocations/{serial}"), e))?;
            Ok((serial, due))
        })
        .collect()
    }

    async fn scheduled_revocation(
        &self,
        serial: Serial,
    ) -> Result<Option<OffsetDateTime>, StoreError> {
        self.query(
            "SELECT due FROM scheduled_revocations WHERE serial = $1",
            &[&serial.to_string()],
        )
        .await?
        .first()
        .map(|row| {
            OffsetDateTime::from_unix_timestamp(row.get(0))
                .map_err(|e| corrupt(format!("scheduled_revocations/{serial}"), e))
        })
        .transpose()
    }

    async fn owner(&self, name: &str) -> Result<Option<OwnerRecord>, StoreError> {
        self.query(
            "SELECT name, version, record FROM owners WHERE name = $1",
            &[&name],
        )
        .await?
        .first()
        .map(owner_from)
        .transpose()
    }

    async fn owners(
        &self,
        after: Option<&str>,
        limit_to: usize,
    ) -> Result<Vec<OwnerRecord>, StoreError> {
        self.query(
            "SELECT name, version, record FROM owners WHERE name > $1 ORDER BY name LIMIT $2",
            &[&after.unwrap_or(""), &limit(limit_to)],
        )
        .await?
        .iter()
        .map(owner_from)
        .collect()
    }

    async fn firmware_signer(
        &self,
        owner: &str,
    ) -> Result<Option<FirmwareSignerRecord>, StoreError> {
        self.query(
            "SELECT record FROM firmware_signers WHERE owner = $1",
            &[&owner],
        )
        .await?
        .first()
        .map(|row| decode(format!("firmware_signers/{owner}").as_bytes(), row.get(0)))
        .transpose()
    }

    async fn firmware(
        &self,
        owner: &str,
        name: &str,
        version: &str,
    ) -> Result<Option<FirmwareRecord>, StoreError> {
        self.query(
            "SELECT record FROM firmware WHERE owner = $1 AND name = $2 AND version = $3",
            &[&owner, &name, &version],
        )
        .await?
        .first()
        .map(|row| {
            decode(
                format!("firmware/{owner}/{name}/{version}").as_bytes(),
                row.get(0),
            )
        })
        .transpose()
    }

    async fn firmware_image(
        &self,
        owner: &str,
        name: &str,
        version: &str,
    ) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self
            .query(
                "SELECT image FROM firmware WHERE owner = $1 AND name = $2 AND version = $3",
                &[&owner, &name, &version],
            )
            .await?
            .first()
            .map(|row| row.get(0)))
    }

    async fn firmwares(
        &self,
        owner: Option<&str>,
        after: Option<(&str, &str, &str)>,
        limit_to: usize,
    ) -> Result<Vec<FirmwareRecord>, StoreError> {
        let (after_owner, after_name, after_version) = after.unwrap_or(("", "", ""));
        self.query(
            "SELECT owner, name, version, record FROM firmware
             WHERE ($1::text IS NULL OR owner = $1) AND (owner, name, version) > ($2, $3, $4)
             ORDER BY owner, name, version LIMIT $5",
            &[
                &owner,
                &after_owner,
                &after_name,
                &after_version,
                &limit(limit_to),
            ],
        )
        .await?
        .iter()
        .map(|row| {
            let key = format!(
                "firmware/{}/{}/{}",
                row.get::<_, &str>(0),
                row.get::<_, &str>(1),
                row.get::<_, &str>(2)
            );
            decode(key.as_bytes(), row.get(3))
        })
        .collect()
    }

    async fn rollout(&self, owner: &str, id: &str) -> Result<Option<RolloutRecord>, StoreError> {
        self.query(
            "SELECT owner, id, version, installed, failed, record FROM rollouts
             WHERE owner = $1 AND id = $2",
            &[&owner, &id],
        )
        .await?
        .first()
        .map(rollout_from)
        .transpose()
    }

    async fn rollouts(
        &self,
        owner: Option<&str>,
        after: Option<(&str, &str)>,
        limit_to: usize,
    ) -> Result<Vec<RolloutRecord>, StoreError> {
        let (after_owner, after_id) = after.unwrap_or(("", ""));
        self.query(
            "SELECT owner, id, version, installed, failed, record FROM rollouts
             WHERE ($1::text IS NULL OR owner = $1) AND (owner, id) > ($2, $3)
             ORDER BY owner, id LIMIT $4",
            &[&owner, &after_owner, &after_id, &limit(limit_to)],
        )
        .await?
        .iter()
        .map(rollout_from)
        .collect()
    }

    async fn rollout_report(
        &self,
        owner: &str,
        id: &str,
        device_id: &DeviceId,
    ) -> Result<Option<RolloutReportRecord>, StoreError> {
        let device = device_id.to_string();
        self.query(
            "SELECT record FROM rollout_reports
             WHERE owner = $1 AND rollout_id = $2 AND device_id = $3",
            &[&owner, &id, &device],
        )
        .await?
        .first()
        .map(|row| {
            decode(
                format!("rollout_reports/{owner}/{id}/{device}").as_bytes(),
                row.get(0),
            )
        })
        .transpose()
    }

    async fn audit(
        &self,
        start: u64,
        limit_to: usize,
    ) -> Result<Vec<(u64, StoredAuditEntry)>, StoreError> {
        self.query(
            "SELECT seq, entry FROM audit WHERE seq >= $1 ORDER BY seq LIMIT $2",
            &[&signed(start.max(1)), &limit(limit_to)],
        )
        .await?
        .iter()
        .map(|row| {
            let seq = unsigned(row.get(0), "audit.seq")?;
            let bytes: Vec<u8> = row.get(1);
            Ok((seq, decode(format!("audit/{seq}").as_bytes(), &bytes)?))
        })
        .collect()
    }

    async fn audit_head(&self) -> Result<u64, StoreError> {
        let rows = self
            .query("SELECT audit_seq FROM registry_head", &[])
            .await?;
        unsigned(
            rows.first().map_or(0, |r| r.get(0)),
            "registry_head.audit_seq",
        )
    }

    fn failed(&self) -> bool {
        self.failed.load(Ordering::Acquire)
    }
}
