//! Delivered mail kept for the emergency inbox on PostgreSQL (see
//! [`crate::queue::Store::inbox_keep`]): which domains keep it and for how long
//! (`inbox_keep`, shared by the nodes: each writes its configuration's), the keeping itself
//! (`messages.kept_until` set where a message would have been removed), and the purge of
//! kept messages whose time is up. A kept message has no pending recipient, so no node
//! claims it; `stats` leaves it out.

use super::{NOW_MS, pg_error};
use crate::queue::StoreError;
use deadpool_postgres::Transaction;

/// Migration step 7: the column, its index, delivered recipients by domain (what the inbox
/// reads), and the domains that keep; with them the inbox's other new table, the
/// credentials lists the primaries published (`inbox.rs`).
pub(super) const SCHEMA: &str = "
ALTER TABLE messages ADD COLUMN kept_until BIGINT;
CREATE INDEX messages_kept ON messages (kept_until) WHERE kept_until IS NOT NULL;
CREATE INDEX recipients_delivered ON recipients (domain) WHERE status = 1;
CREATE TABLE inbox_keep (
    domain TEXT PRIMARY KEY,
    keep_ms BIGINT NOT NULL
);
CREATE TABLE inbox_published (
    address TEXT PRIMARY KEY,
    domain TEXT NOT NULL,
    hash TEXT NOT NULL
);
CREATE INDEX inbox_published_domain ON inbox_published (domain);
";

/// Keeps those of `ids` with no pending recipient and a delivered one in a domain that
/// keeps delivered mail (the caller then removes the rest: `kept_until IS NULL`).
pub(super) async fn keep(tx: &Transaction<'_>, ids: &[String]) -> Result<(), StoreError> {
    let st = tx
        .prepare_cached(&format!(
            "UPDATE messages m SET kept_until = {NOW_MS} + k.keep_ms
             FROM (SELECT r.message_id, MAX(k.keep_ms) AS keep_ms FROM recipients r
                   JOIN inbox_keep k ON k.domain = r.domain
                   WHERE r.message_id = ANY($1) AND r.status = 1 GROUP BY r.message_id) k
             WHERE m.id = k.message_id AND m.kept_until IS NULL
               AND NOT EXISTS (SELECT 1 FROM recipients x WHERE x.message_id = m.id AND x.status = 0)"
        ))
        .await
        .map_err(pg_error)?;
    tx.execute(&st, &[&ids]).await.map_err(pg_error)?;
    Ok(())
}

/// See [`crate::queue::Store::inbox_keep`].
pub(super) async fn set(
    c: &mut deadpool_postgres::Object,
    keep: &[(String, i64)],
) -> Result<(), StoreError> {
    let (domains, ms): (Vec<String>, Vec<i64>) = keep
        .iter()
        .filter(|(_, ms)| *ms > 0)
        .map(|(d, ms)| (crate::queue::domain_key(d), *ms))
        .unzip();
    let tx = c.transaction().await.map_err(pg_error)?;
    tx.execute("DELETE FROM inbox_keep", &[])
        .await
        .map_err(pg_error)?;
    tx.execute(
        "INSERT INTO inbox_keep (domain, keep_ms) SELECT * FROM unnest($1::text[], $2::bigint[])
         ON CONFLICT (domain) DO UPDATE SET keep_ms = excluded.keep_ms",
        &[&domains, &ms],
    )
    .await
    .map_err(pg_error)?;
    tx.commit().await.map_err(pg_error)
}

/// See [`crate::queue::Store::inbox_purge`]: recipients and body chunks go with each message
/// (ON DELETE CASCADE).
pub(super) async fn purge(
    c: &deadpool_postgres::Object,
    now_ms: i64,
    limit: usize,
) -> Result<u64, StoreError> {
    c.execute(
        "DELETE FROM messages WHERE id IN (
             SELECT id FROM messages WHERE kept_until <= $1 LIMIT $2 FOR UPDATE SKIP LOCKED)",
        &[&now_ms, &(limit as i64)],
    )
    .await
    .map_err(pg_error)
}
