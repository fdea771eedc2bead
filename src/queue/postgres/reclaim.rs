//! Giving disk space back after the queue drains (PostgreSQL). A delivered message's rows
//! become dead tuples; autovacuum makes their space reusable, and gives the tables' empty
//! tail back to the disk only when it happens to run after the drain (measured: it did at
//! 20,000 held messages and not at 100,000 within minutes). So each node looks every
//! [`LOOK_EVERY`]: when the queue's tables (heap and TOAST, not indexes) are much larger than
//! what the counters say is queued, and what is queued is small, it runs a plain `VACUUM` of
//! them, which truncates the empty pages at each table's end. Plain `VACUUM` does not block
//! reads or writes (it takes the lock to truncate only if nobody waits for the table, and
//! gives it up if somebody does), unlike `VACUUM FULL`, which mx2 never runs. One node at a
//! time (an advisory lock); a vacuum that gave little back (live rows at a table's end) is
//! not tried again for [`AFTER_LITTLE`], and none runs while removed messages' content is
//! still being deleted in the background (`sweep.rs`). After a long outage the tables hold gigabytes of
//! dead rows and the vacuum reads them all, for minutes: it runs on a connection taken out
//! of the pool (the pool opens another when it needs one; this one closes when the vacuum
//! ends), so deliveries and commits keep the pool's every connection meanwhile.

use super::{Inner, counts, pg_error, pool_error};
use crate::queue::StoreError;
use std::sync::Weak;
use std::time::{Duration, Instant};
use tracing::{info, warn};

/// The queue's tables whose space a drain frees (their TOAST tables go with them).
const TABLES: [&str; 3] = ["messages", "bodies", "recipients"];
/// Vacuum when the tables hold more than this many bytes beyond what is queued…
pub const FREE_BYTES: u64 = 64 << 20;
/// …and what is queued is at most this many bytes…
pub const LIVE_BYTES: u64 = 256 << 20;
/// …and at most this share of the tables.
const LIVE_SHARE: f64 = 0.25;
/// How often each node looks.
const LOOK_EVERY: Duration = Duration::from_secs(60);
/// How long a node waits before trying again after a vacuum that gave back less than
/// [`FREE_BYTES`].
const AFTER_LITTLE: Duration = Duration::from_secs(3600);
/// The advisory lock a vacuum holds, so that one node at a time runs it ("mx2vacu").
pub const VACUUM_LOCK: i64 = 0x006d_7832_7661_6375;

/// What one look found and did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reclaimed {
    /// Not worth a vacuum (the tables' size then).
    Left(u64),
    /// Another node holds the lock.
    Busy,
    /// Vacuumed: the tables' size before and after.
    Vacuumed(u64, u64),
}

/// Vacuums the queue's tables if more than `free_bytes` of them (and more than
/// [`LIVE_SHARE`] of the whole) is beyond what is queued, and what is queued is at most
/// `live_bytes`.
pub(super) async fn run(
    pooled: deadpool_postgres::Object,
    free_bytes: u64,
    live_bytes: u64,
) -> Result<Reclaimed, StoreError> {
    let size = table_size(&pooled).await?;
    let live = counts::stats(&pooled).await?.bytes;
    let worth = size.saturating_sub(live) > free_bytes
        && live <= live_bytes
        && (live as f64) < LIVE_SHARE * size as f64;
    if !worth || sweeping(&pooled).await? {
        return Ok(Reclaimed::Left(size));
    }
    // Out of the pool for as long as the vacuum takes; closed when it is dropped below.
    let c: &tokio_postgres::Client = &deadpool_postgres::Object::take(pooled);
    // A session lock (VACUUM cannot run in a transaction), released below whatever happens;
    // if this connection dies, the server releases it.
    let mine: bool = c
        .query_one("SELECT pg_try_advisory_lock($1)", &[&VACUUM_LOCK])
        .await
        .and_then(|r| r.try_get(0))
        .map_err(pg_error)?;
    if !mine {
        return Ok(Reclaimed::Busy);
    }
    let vacuumed = c
        .batch_execute(&format!("VACUUM (ANALYZE) {}", TABLES.join(", ")))
        .await
        .map_err(pg_error);
    let unlocked = c
        .execute("SELECT pg_advisory_unlock($1)", &[&VACUUM_LOCK])
        .await
        .map_err(pg_error);
    vacuumed?;
    unlocked?;
    Ok(Reclaimed::Vacuumed(size, table_size(c).await?))
}

/// Whether removed messages' content is still being deleted (`sweep.rs`): a vacuum now
/// would find those rows still live, give back little, and not be tried again for an hour.
async fn sweeping(c: &tokio_postgres::Client) -> Result<bool, StoreError> {
    c.query_one("SELECT EXISTS (SELECT 1 FROM doomed_bodies)", &[])
        .await
        .and_then(|r| r.try_get(0))
        .map_err(pg_error)
}

/// The tables' size in bytes: heap and TOAST, without indexes (plain `VACUUM` cannot shrink
/// an index's file; it makes its empty pages reusable).
async fn table_size(c: &tokio_postgres::Client) -> Result<u64, StoreError> {
    let sum = TABLES.map(|t| format!("pg_table_size('{t}')")).join(" + ");
    let n: i64 = c
        .query_one(&format!("SELECT ({sum})::bigint"), &[])
        .await
        .and_then(|r| r.try_get(0))
        .map_err(pg_error)?;
    Ok(u64::try_from(n).unwrap_or(0))
}

/// Looks every [`LOOK_EVERY`] while the store lives.
pub(super) async fn keep_reclaiming(inner: Weak<Inner>) {
    let mut quiet_until: Option<Instant> = None;
    loop {
        tokio::time::sleep(LOOK_EVERY).await;
        if quiet_until.is_some_and(|t| Instant::now() < t) {
            continue;
        }
        let Some(inner) = inner.upgrade() else { return };
        let started = Instant::now();
        let result = match inner.pool.get().await {
            Ok(c) => run(c, FREE_BYTES, LIVE_BYTES).await,
            Err(e) => Err(pool_error(e)),
        };
        drop(inner);
        match result {
            Ok(Reclaimed::Vacuumed(before, after)) => {
                info!(
                    before_mb = before >> 20,
                    after_mb = after >> 20,
                    seconds = started.elapsed().as_secs_f64(),
                    "vacuumed the queue's tables to give their free space back to the disk"
                );
                if before.saturating_sub(after) < FREE_BYTES {
                    quiet_until = Some(Instant::now() + AFTER_LITTLE);
                }
            }
            Ok(Reclaimed::Left(_) | Reclaimed::Busy) => {}
            Err(e) => {
                warn!(error = %e, "cannot vacuum the queue's tables; their free space is reused for new mail but not given back to the disk");
                quiet_until = Some(Instant::now() + AFTER_LITTLE);
            }
        }
    }
}
