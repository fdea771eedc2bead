//! The PostgreSQL store: one queue shared by several mx2 nodes. Any node accepts; due
//! recipients are claimed with leases (`FOR UPDATE SKIP LOCKED`, `claimed_by`, `lease_until`)
//! so that one node at a time delivers a recipient, and a dead node's claims expire. Each node
//! renews its leases while it lives and clears its own at start. Acceptances share
//! transactions (group commit, [`writer`]); bodies are stored in 1 MiB chunks, streamed in from
//! spool files and out to deliveries one chunk at a time ([`content`]). Other nodes
//! hear of new work through LISTEN/NOTIFY ([`wake`]), with the scheduler's polling as the
//! fallback that guarantees progress. Primary health is shared in the `primaries` table, and
//! its outage history in `primary_outages` ([`outages`]); the registry of domains and tenants
//! in `registry` ([`registry`]), a domain's mail purged by [`purge`], fire drill results in
//! `drills` ([`drills`]), the emergency inbox's
//! credentials, UIDs and flags in [`inbox`], cached MTA-STS policies and TLS-RPT counters
//! in [`sts`]. Space a drain freed goes back to the disk by [`reclaim`].
//! Lease times are the database server's clock, so nodes' clocks cannot disagree about them.
//! This module owns the SQL; it talks to PostgreSQL and nothing else.

mod connect;
mod content;
mod counts;
mod drills;
mod inbox;
mod inspect;
mod kept;
mod outages;
mod purge;
mod reclaim;
mod registry;
mod schema;
mod sts;
mod sweep;
mod wake;
mod writer;

use super::body::BodyReader;
use super::inbox::{Candidate, FlagChange, Stored};
use super::registry::{Entry, Expect, Written};
use super::spool::Spooled;
use super::{
    ClaimedRow, Depth, DrillSummary, Filter, Job, Listed, NewMessage, OperatorAction, OutageChange,
    ProbeTurn, Recipient, RouteOutages, Shown, Stats, Store, StoreError, StoreFuture, StoredDrill,
    StoredStsPolicy, TlsRptCount, Update, into_jobs,
};
use deadpool_postgres::Pool;
pub use reclaim::{Reclaimed, VACUUM_LOCK};
use std::sync::{Arc, Weak};
use std::time::Duration;
use tokio_postgres::error::SqlState;
use tokio_postgres::types::ToSql;
use tracing::{debug, warn};

/// Recipients [`Store::make_due`] changes per transaction (as the embedded store does).
const MAKE_DUE_STEP: i64 = 20_000;

/// The database server's clock in milliseconds since the epoch (leases, primary health).
const NOW_MS: &str = "(extract(epoch from clock_timestamp()) * 1000)::bigint";
/// The channel every node LISTENs on; a notification means "something may be due".
const CHANNEL: &str = "mx2_wake";
/// How much of a body goes into one row of `bodies`.
pub const CHUNK: usize = 1 << 20;

/// A connection's TLS, as tokio-postgres wants it.
#[derive(Clone)]
enum Tls {
    Off,
    Rustls(tokio_postgres_rustls::MakeRustlsConnect),
}

/// What the store's tasks share.
struct Inner {
    pool: Pool,
    pg: tokio_postgres::Config,
    tls: Tls,
    node: String,
    lease_ms: i64,
    writer: writer::Writer,
}

/// The PostgreSQL-backed queue.
pub struct Postgres {
    inner: Arc<Inner>,
}

pub(crate) fn pg_error(e: tokio_postgres::Error) -> StoreError {
    if e.code() == Some(&SqlState::DISK_FULL) {
        return StoreError::Full;
    }
    match e.as_db_error() {
        Some(db) => StoreError::Backend(format!(
            "PostgreSQL: {}: {}",
            db.code().code(),
            db.message()
        )),
        None => match std::error::Error::source(&e) {
            Some(cause) => StoreError::Backend(format!("PostgreSQL: {e}: {cause}")),
            None => StoreError::Backend(format!("PostgreSQL: {e}")),
        },
    }
}

/// The first column of each of `rows`.
fn first_column<'a, T: tokio_postgres::types::FromSql<'a>>(
    rows: &'a [tokio_postgres::Row],
) -> Result<Vec<T>, StoreError> {
    rows.iter()
        .map(|r| r.try_get(0))
        .collect::<Result<_, _>>()
        .map_err(pg_error)
}

fn pool_error(e: deadpool_postgres::PoolError) -> StoreError {
    match e {
        deadpool_postgres::PoolError::Backend(e) => pg_error(e),
        other => StoreError::Backend(format!("PostgreSQL connection pool: {other}")),
    }
}

fn ms(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

impl Postgres {
    /// Transactions the group-commit writer committed, and the writes they carried.
    pub fn commits(&self) -> (u64, u64) {
        self.inner.writer.counts()
    }

    /// Folds the queue counters' deltas now (each node does it every second by itself);
    /// returns how many delta rows it folded, 0 when another node was folding.
    pub async fn fold_counts(&self) -> Result<u64, StoreError> {
        let mut c = self.inner.pool.get().await.map_err(pool_error)?;
        counts::fold(&mut c).await
    }

    /// Vacuums the queue's tables now if more than `free_bytes` of them is beyond what is
    /// queued and what is queued is at most `live_bytes` (each node looks every minute by
    /// itself, with [`reclaim::FREE_BYTES`] and [`reclaim::LIVE_BYTES`]).
    pub async fn reclaim_space(
        &self,
        free_bytes: u64,
        live_bytes: u64,
    ) -> Result<Reclaimed, StoreError> {
        let c = self.inner.pool.get().await.map_err(pool_error)?;
        reclaim::run(c, free_bytes, live_bytes).await
    }

    /// This node's name in leases.
    pub fn node(&self) -> &str {
        &self.inner.node
    }

    fn run<T: Send + 'static>(
        &self,
        f: impl for<'c> FnOnce(&'c Inner, &'c mut deadpool_postgres::Object) -> StoreFuture<'c, T>
        + Send
        + 'static,
    ) -> StoreFuture<'_, T> {
        let inner = self.inner.clone();
        Box::pin(async move {
            let mut client = inner.pool.get().await.map_err(pool_error)?;
            f(&inner, &mut client).await
        })
    }

    /// One statement changing recipients and selecting how many it changed (recipients or
    /// messages, as the statement counts), then a wake-up for every node when it changed any,
    /// in one transaction.
    fn update_and_wake(
        &self,
        sql: &'static str,
        params: Vec<Box<dyn ToSql + Sync + Send>>,
    ) -> StoreFuture<'_, u64> {
        self.run(move |_, c| {
            Box::pin(async move {
                let tx = c.transaction().await.map_err(pg_error)?;
                let refs: Vec<&(dyn ToSql + Sync)> = params
                    .iter()
                    .map(|p| p.as_ref() as &(dyn ToSql + Sync))
                    .collect();
                let row = tx.query_one(sql, &refs).await.map_err(pg_error)?;
                let n = row.get::<_, i64>(0).max(0) as u64;
                if n > 0 {
                    wake_nodes(&tx).await?;
                }
                tx.commit().await.map_err(pg_error)?;
                Ok(n)
            })
        })
    }
}

/// Wakes every node's scheduler when the transaction commits.
async fn wake_nodes(tx: &deadpool_postgres::Transaction<'_>) -> Result<(), StoreError> {
    tx.execute("SELECT pg_notify($1, '')", &[&CHANNEL])
        .await
        .map(|_| ())
        .map_err(pg_error)
}

/// Keeps this node's claims alive while it runs: every quarter of the lease, every recipient it
/// holds gets a full lease again. Stops when the store is dropped.
async fn renew_leases(inner: Weak<Inner>, every: Duration) {
    loop {
        tokio::time::sleep(every).await;
        let Some(inner) = inner.upgrade() else { return };
        let sql = format!(
            "UPDATE recipients SET lease_until = {NOW_MS} + $2 WHERE claimed_by = $1 AND status = 0"
        );
        let result = match inner.pool.get().await {
            Ok(c) => c
                .execute(&sql, &[&inner.node, &inner.lease_ms])
                .await
                .map_err(pg_error),
            Err(e) => Err(pool_error(e)),
        };
        match result {
            Ok(n) => debug!(node = %inner.node, recipients = n, "leases renewed"),
            Err(e) => {
                warn!(node = %inner.node, error = %e, "cannot renew leases; other nodes may take over this node's deliveries when they expire")
            }
        }
    }
}

/// The columns [`claimed`] reads, in its order, from `recipients r` and `messages m`.
const CLAIMED: &str = "r.id, r.message_id, r.address, r.domain, r.params, r.attempts, r.warned,
    m.sender, m.mail_params, m.received_at, m.size, m.auth";

fn claimed(rows: Vec<tokio_postgres::Row>) -> Result<Vec<Job>, StoreError> {
    let mut out = Vec::with_capacity(rows.len());
    for row in rows {
        let get = || -> Result<ClaimedRow, tokio_postgres::Error> {
            Ok(ClaimedRow {
                job: Job {
                    queue_id: row.try_get(1)?,
                    domain: row.try_get(3)?,
                    sender: row.try_get(7)?,
                    mail_params: row.try_get(8)?,
                    received_at_ms: row.try_get(9)?,
                    size: u64::try_from(row.try_get::<_, i64>(10)?).unwrap_or(0),
                    recipients: Vec::new(),
                    authenticated: row.try_get(11)?,
                },
                recipient: Recipient {
                    row: row.try_get(0)?,
                    address: row.try_get(2)?,
                    params: row.try_get(4)?,
                    attempts: u32::try_from(row.try_get::<_, i32>(5)?).unwrap_or(0),
                    warned: row.try_get(6)?,
                },
            })
        };
        out.push(get().map_err(pg_error)?);
    }
    Ok(into_jobs(out))
}

impl Store for Postgres {
    fn insert(&self, msg: NewMessage) -> StoreFuture<'_, ()> {
        let done = self
            .inner
            .writer
            .submit(writer::Write::Insert(Box::new(msg)));
        Box::pin(async move { done.await.map(|_| ()) })
    }

    fn claim_due(&self, now_ms: i64, limit: usize) -> StoreFuture<'_, Vec<Job>> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        self.run(move |inner, c| {
            Box::pin(async move {
                let sql = format!(
                    "WITH picked AS (
                        SELECT id FROM recipients
                        WHERE status = 0 AND NOT held AND next_attempt <= $1
                          AND (claimed_by IS NULL OR lease_until < {NOW_MS})
                        ORDER BY next_attempt LIMIT $2
                        FOR UPDATE SKIP LOCKED)
                     UPDATE recipients r SET claimed_by = $3, lease_until = {NOW_MS} + $4
                     FROM picked, messages m
                     WHERE r.id = picked.id AND m.id = r.message_id
                     RETURNING {CLAIMED}"
                );
                let st = c.prepare_cached(&sql).await.map_err(pg_error)?;
                let rows = c
                    .query(&st, &[&now_ms, &limit, &inner.node, &inner.lease_ms])
                    .await
                    .map_err(pg_error)?;
                claimed(rows)
            })
        })
    }

    fn body(&self, id: &str) -> StoreFuture<'_, Vec<u8>> {
        let reader = self.body_reader(id);
        Box::pin(async move {
            reader
                .await?
                .into_vec()
                .await
                .map_err(|e| StoreError::Backend(e.to_string()))
        })
    }

    fn insert_spooled(&self, msg: NewMessage, content: Spooled) -> StoreFuture<'_, ()> {
        // The file stays with the write until it is committed (or failed), then goes: the
        // content lives in PostgreSQL, no node's disk.
        let done = self
            .inner
            .writer
            .submit(writer::Write::InsertSpooled(Box::new(msg), content));
        Box::pin(async move { done.await.map(|_| ()) })
    }

    fn body_reader(&self, id: &str) -> StoreFuture<'_, BodyReader> {
        Box::pin(content::reader(self.inner.pool.clone(), id.to_string()))
    }

    fn record(
        &self,
        id: &str,
        updates: Vec<Update>,
        notifications: Vec<NewMessage>,
    ) -> StoreFuture<'_, bool> {
        self.inner.writer.submit(writer::Write::Record {
            id: id.to_string(),
            updates,
            notifications,
        })
    }

    /// In steps of [`MAKE_DUE_STEP`] recipients, each its own transaction that wakes every
    /// node when it commits, soonest first along the due-time index: after a long outage the
    /// first deliveries start after one step, not after a million rows are rewritten (and
    /// other writers never wait for one huge transaction's row locks).
    fn make_due(&self, domains: Vec<String>, now_ms: i64) -> StoreFuture<'_, u64> {
        const SQL: &str = "WITH step AS (SELECT id FROM recipients
                WHERE status = 0 AND NOT held AND next_attempt > $1 AND domain = ANY($2)
                  AND (claimed_by IS NULL OR lease_until < (extract(epoch from clock_timestamp()) * 1000)::bigint)
                ORDER BY next_attempt LIMIT $3 FOR UPDATE SKIP LOCKED),
            changed AS (UPDATE recipients r SET next_attempt = $1 FROM step WHERE r.id = step.id
                RETURNING 1)
            SELECT COUNT(*) FROM changed";
        Box::pin(async move {
            let mut total = 0;
            loop {
                let n = self
                    .update_and_wake(
                        SQL,
                        vec![
                            Box::new(now_ms),
                            Box::new(domains.clone()),
                            Box::new(MAKE_DUE_STEP),
                        ],
                    )
                    .await?;
                total += n;
                if n < MAKE_DUE_STEP as u64 {
                    return Ok(total);
                }
            }
        })
    }

    fn next_due(&self) -> StoreFuture<'_, Option<i64>> {
        self.run(|inner, c| {
            Box::pin(async move {
                // Recipients claimed by other nodes count from when their lease runs out
                // (that node may have died); this node's own claims are its business.
                let row = c
                    .query_one(
                        "SELECT MIN(CASE WHEN claimed_by IS NULL THEN next_attempt
                                         ELSE GREATEST(next_attempt, lease_until) END)
                         FROM recipients
                         WHERE status = 0 AND NOT held AND (claimed_by IS NULL OR claimed_by <> $1)",
                        &[&inner.node],
                    )
                    .await
                    .map_err(pg_error)?;
                row.try_get(0).map_err(pg_error)
            })
        })
    }

    fn stats(&self) -> StoreFuture<'_, Stats> {
        self.run(|_, c| Box::pin(async move { counts::stats(c).await }))
    }

    fn cache_get(&self, key: String) -> StoreFuture<'_, Option<(bool, i64)>> {
        self.run(move |_, c| {
            Box::pin(async move {
                let row = c
                    .query_opt(
                        "SELECT exists_, expires_at FROM recipient_cache WHERE key = $1",
                        &[&key],
                    )
                    .await
                    .map_err(pg_error)?;
                match row {
                    None => Ok(None),
                    Some(r) => Ok(Some((
                        r.try_get(0).map_err(pg_error)?,
                        r.try_get(1).map_err(pg_error)?,
                    ))),
                }
            })
        })
    }

    fn cache_put(&self, key: String, exists: bool, expires_ms: i64) -> StoreFuture<'_, ()> {
        let done = self.inner.writer.submit(writer::Write::CachePut {
            key,
            exists,
            expires_ms,
        });
        Box::pin(async move { done.await.map(|_| ()) })
    }

    fn list(&self, filter: Filter) -> StoreFuture<'_, Vec<Listed>> {
        self.run(move |_, c| Box::pin(async move { inspect::list(c, &filter).await }))
    }

    fn count(&self, filter: Filter) -> StoreFuture<'_, u64> {
        self.run(move |_, c| Box::pin(async move { inspect::matching_count(c, &filter).await }))
    }

    fn show(&self, id: &str) -> StoreFuture<'_, Option<Shown>> {
        let id = id.to_string();
        self.run(move |_, c| Box::pin(async move { inspect::show(c, &id).await }))
    }

    fn act(&self, ids: Vec<String>, action: OperatorAction, now_ms: i64) -> StoreFuture<'_, u64> {
        // Each counts the messages it changed, not their recipients.
        const FLUSH: &str = "WITH changed AS (UPDATE recipients SET next_attempt = $2
            WHERE message_id = ANY($1) AND status = 0 AND NOT held
              AND (claimed_by IS NULL OR lease_until < (extract(epoch from clock_timestamp()) * 1000)::bigint)
            RETURNING message_id) SELECT COUNT(DISTINCT message_id) FROM changed";
        const HOLD: &str = "WITH changed AS (UPDATE recipients SET held = true
            WHERE message_id = ANY($1) AND status = 0 AND NOT held
            RETURNING message_id) SELECT COUNT(DISTINCT message_id) FROM changed";
        const RELEASE: &str =
            "WITH changed AS (UPDATE recipients SET held = false, next_attempt = $2
            WHERE message_id = ANY($1) AND status = 0 AND held
            RETURNING message_id) SELECT COUNT(DISTINCT message_id) FROM changed";
        match action {
            OperatorAction::Flush => {
                self.update_and_wake(FLUSH, vec![Box::new(ids), Box::new(now_ms)])
            }
            OperatorAction::Release => {
                self.update_and_wake(RELEASE, vec![Box::new(ids), Box::new(now_ms)])
            }
            OperatorAction::Hold => self.run(move |_, c| {
                Box::pin(async move {
                    let row = c.query_one(HOLD, &[&ids]).await.map_err(pg_error)?;
                    Ok(row.get::<_, i64>(0).max(0) as u64)
                })
            }),
            // Recipients and body chunks go with the message (ON DELETE CASCADE).
            OperatorAction::Delete => self.run(move |_, c| {
                Box::pin(async move {
                    c.execute("DELETE FROM messages WHERE id = ANY($1)", &[&ids])
                        .await
                        .map_err(pg_error)
                })
            }),
        }
    }

    fn claim_message(&self, id: &str) -> StoreFuture<'_, Vec<Job>> {
        let id = id.to_string();
        self.run(move |inner, c| {
            Box::pin(async move {
                let sql = format!(
                    "WITH picked AS (
                        SELECT id FROM recipients
                        WHERE message_id = $1 AND status = 0
                          AND (claimed_by IS NULL OR lease_until < {NOW_MS})
                        FOR UPDATE SKIP LOCKED)
                     UPDATE recipients r SET claimed_by = $2, lease_until = {NOW_MS} + $3
                     FROM picked, messages m
                     WHERE r.id = picked.id AND m.id = r.message_id
                     RETURNING {CLAIMED}"
                );
                let rows = c
                    .query(&sql, &[&id, &inner.node, &inner.lease_ms])
                    .await
                    .map_err(pg_error)?;
                claimed(rows)
            })
        })
    }

    fn depth(&self) -> StoreFuture<'_, Vec<Depth>> {
        self.run(|_, c| Box::pin(async move { counts::depth(c).await }))
    }

    fn recount(&self) -> StoreFuture<'_, (Stats, Vec<Depth>)> {
        self.run(|_, c| Box::pin(async move { counts::recount(c).await }))
    }

    fn forward_wakeups(&self, wake: Arc<tokio::sync::Notify>) {
        let inner = Arc::downgrade(&self.inner);
        tokio::spawn(wake::listen(inner, CHANNEL, wake));
    }

    fn primary_down(&self, route: &str) -> StoreFuture<'_, ()> {
        let route = route.to_string();
        self.run(move |_, c| {
            Box::pin(async move {
                let sql = format!(
                    "INSERT INTO primaries (route, up, changed_at) VALUES ($1, false, {NOW_MS})
                     ON CONFLICT (route) DO UPDATE SET up = false, changed_at = EXCLUDED.changed_at
                     WHERE primaries.up"
                );
                c.execute(&sql, &[&route]).await.map_err(pg_error)?;
                Ok(())
            })
        })
    }

    fn primary_up(&self, route: &str) -> StoreFuture<'_, ()> {
        let route = route.to_string();
        self.run(move |_, c| {
            Box::pin(async move {
                let sql = format!(
                    "INSERT INTO primaries (route, up, changed_at) VALUES ($1, true, {NOW_MS})
                     ON CONFLICT (route) DO UPDATE
                     SET up = true, changed_at = EXCLUDED.changed_at, probed_by = NULL, probe_until = NULL
                     WHERE NOT primaries.up"
                );
                let tx = c.transaction().await.map_err(pg_error)?;
                if tx.execute(&sql, &[&route]).await.map_err(pg_error)? > 0 {
                    wake_nodes(&tx).await?;
                }
                tx.commit().await.map_err(pg_error)
            })
        })
    }

    fn probe_turn(&self, route: &str, interval_ms: i64) -> StoreFuture<'_, ProbeTurn> {
        let route = route.to_string();
        self.run(move |inner, c| {
            Box::pin(async move {
                // The turn lasts two intervals, so the node that has it keeps it while it
                // lives, and another takes over when it stops probing.
                let sql = format!(
                    "INSERT INTO primaries (route, up, changed_at, probed_by, probe_until)
                     VALUES ($1, false, {NOW_MS}, $2, {NOW_MS} + 2 * $3)
                     ON CONFLICT (route) DO UPDATE
                     SET probed_by = EXCLUDED.probed_by, probe_until = EXCLUDED.probe_until
                     WHERE NOT primaries.up AND (primaries.probed_by IS NULL
                        OR primaries.probed_by = $2 OR primaries.probe_until < {NOW_MS})"
                );
                if c.execute(&sql, &[&route, &inner.node, &interval_ms])
                    .await
                    .map_err(pg_error)?
                    > 0
                {
                    return Ok(ProbeTurn::Probe);
                }
                let up = c
                    .query_opt("SELECT up FROM primaries WHERE route = $1", &[&route])
                    .await
                    .map_err(pg_error)?
                    .map(|r| r.try_get::<_, bool>(0))
                    .transpose()
                    .map_err(pg_error)?;
                Ok(if up == Some(true) {
                    ProbeTurn::Up
                } else {
                    ProbeTurn::Wait
                })
            })
        })
    }

    fn record_outage(&self, route: &str, change: OutageChange) -> StoreFuture<'_, ()> {
        let route = route.to_string();
        self.run(move |_, c| Box::pin(async move { outages::record(c, &route, change).await }))
    }

    fn outages(&self, per_route: usize) -> StoreFuture<'_, Vec<RouteOutages>> {
        self.run(move |_, c| Box::pin(async move { outages::load(c, per_route).await }))
    }

    fn record_drill(&self, drill: StoredDrill, keep: usize) -> StoreFuture<'_, ()> {
        self.run(move |_, c| Box::pin(async move { drills::record(c, &drill, keep).await }))
    }

    fn drills(&self, domain: &str, limit: usize) -> StoreFuture<'_, Vec<StoredDrill>> {
        let domain = domain.to_string();
        self.run(move |_, c| Box::pin(async move { drills::load(c, &domain, limit).await }))
    }

    fn drill_summaries(&self) -> StoreFuture<'_, Vec<DrillSummary>> {
        self.run(|_, c| Box::pin(async move { drills::summaries(c).await }))
    }

    fn sts_policy(&self, domain: &str) -> StoreFuture<'_, Option<StoredStsPolicy>> {
        let domain = domain.to_string();
        self.run(move |_, c| Box::pin(async move { sts::policy(c, &domain).await }))
    }

    fn sts_put(&self, policy: StoredStsPolicy) -> StoreFuture<'_, ()> {
        self.run(move |_, c| Box::pin(async move { sts::put(c, &policy).await }))
    }

    fn tlsrpt_add(&self, count: TlsRptCount) -> StoreFuture<'_, ()> {
        self.run(move |_, c| Box::pin(async move { sts::add(c, &count).await }))
    }

    fn tlsrpt_take(&self, before_day: i64) -> StoreFuture<'_, Vec<TlsRptCount>> {
        self.run(move |_, c| Box::pin(async move { sts::take(c, before_day).await }))
    }

    fn registry(&self) -> StoreFuture<'_, Vec<Entry>> {
        self.run(|_, c| Box::pin(async move { registry::entries(c).await }))
    }

    fn registry_version(&self) -> StoreFuture<'_, i64> {
        self.run(|_, c| Box::pin(async move { registry::version(c).await }))
    }

    fn registry_put(
        &self,
        kind: &str,
        name: &str,
        value: String,
        expect: Expect,
    ) -> StoreFuture<'_, Written> {
        let (kind, name) = (kind.to_string(), name.to_string());
        self.run(move |_, c| {
            Box::pin(async move { registry::put(c, &kind, &name, &value, expect).await })
        })
    }

    fn registry_delete(&self, kind: &str, name: &str, rev: Option<i64>) -> StoreFuture<'_, bool> {
        let (kind, name) = (kind.to_string(), name.to_string());
        self.run(move |_, c| Box::pin(async move { registry::delete(c, &kind, &name, rev).await }))
    }

    fn watch_registry(&self, changed: Arc<tokio::sync::Notify>) {
        let inner = Arc::downgrade(&self.inner);
        tokio::spawn(wake::listen(inner, registry::CHANNEL, changed));
    }

    fn purge_domain(&self, domain: &str) -> StoreFuture<'_, u64> {
        let domain = super::domain_key(domain);
        self.run(move |_, c| Box::pin(async move { purge::purge_domain(c, &domain).await }))
    }

    fn inbox_credential(&self, key: &str) -> StoreFuture<'_, Option<String>> {
        let key = key.to_string();
        self.run(move |_, c| Box::pin(async move { inbox::credential(c, &key).await }))
    }

    fn inbox_set_credential(&self, key: &str, hash: Option<String>) -> StoreFuture<'_, bool> {
        let key = key.to_string();
        let now = super::now_ms();
        self.run(move |_, c| {
            Box::pin(async move { inbox::set_credential(c, &key, hash.as_deref(), now).await })
        })
    }

    fn inbox_add_code(&self, key: &str, hash: String, expires_at_ms: i64) -> StoreFuture<'_, ()> {
        let key = key.to_string();
        let now = super::now_ms();
        self.run(move |_, c| {
            Box::pin(async move { inbox::add_code(c, &key, &hash, expires_at_ms, now).await })
        })
    }

    fn inbox_use_code(&self, key: &str, hash: String, now_ms: i64) -> StoreFuture<'_, bool> {
        let key = key.to_string();
        self.run(move |_, c| Box::pin(async move { inbox::use_code(c, &key, &hash, now_ms).await }))
    }

    fn inbox_delete(
        &self,
        key: &str,
        ids: Vec<String>,
        drop_recipients: bool,
    ) -> StoreFuture<'_, ()> {
        let key = key.to_string();
        self.run(move |_, c| {
            Box::pin(async move { inbox::delete(c, &key, &ids, drop_recipients).await })
        })
    }

    fn inbox_keep(&self, keep: Vec<(String, i64)>) -> StoreFuture<'_, ()> {
        self.run(move |_, c| Box::pin(async move { kept::set(c, &keep).await }))
    }

    fn inbox_publish(&self, domain: &str, entries: Vec<(String, String)>) -> StoreFuture<'_, ()> {
        let domain = super::domain_key(domain);
        self.run(move |_, c| Box::pin(async move { inbox::publish(c, &domain, &entries).await }))
    }

    fn inbox_purge(&self, now_ms: i64, limit: usize) -> StoreFuture<'_, u64> {
        self.run(move |_, c| Box::pin(async move { kept::purge(c, now_ms, limit).await }))
    }

    fn inbox_candidates(&self, domain: &str) -> StoreFuture<'_, Vec<Candidate>> {
        let domain = domain.to_string();
        self.run(move |_, c| Box::pin(async move { inbox::candidates(c, &domain).await }))
    }

    fn inbox_stored(&self, key: &str) -> StoreFuture<'_, Option<Stored>> {
        let key = key.to_string();
        self.run(move |_, c| Box::pin(async move { inbox::stored(c, &key).await }))
    }

    fn inbox_assign(&self, key: &str, ids: Vec<String>, now_ms: i64) -> StoreFuture<'_, ()> {
        let key = key.to_string();
        self.run(move |_, c| Box::pin(async move { inbox::assign(c, &key, &ids, now_ms).await }))
    }

    fn inbox_set_flags(
        &self,
        key: &str,
        uids: Vec<u32>,
        change: FlagChange,
    ) -> StoreFuture<'_, ()> {
        let key = key.to_string();
        self.run(move |_, c| {
            Box::pin(async move { inbox::set_flags(c, &key, &uids, change).await })
        })
    }
}
