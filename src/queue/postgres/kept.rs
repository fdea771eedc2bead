//! Delivered mail kept for the emergency inbox on PostgreSQL (see
//! [`crate::queue::Store::inbox_keep`]): which domains keep it and for how long
//! (`inbox_keep`, shared by the nodes: each writes its configuration's), the keeping itself
//! (`messages.kept_until` set where a message would have been removed), and the purge of
//! kept messages whose time is up. A kept message has no pending recipient, so no node
//! claims it; `stats` leaves it out.

use super::{NOW_MS, pg_error};
use crate::queue::StoreError;
use deadpool_postgres::Transaction;

/// Migration step 10: the column, its index, delivered recipients by domain (what the inbox
/// reads), and the domains that keep; with them the inbox's other new table, the
/// credentials lists the primaries published (`inbox.rs`). A kept message leaves the
/// queue's totals (`counts.rs`) when it is kept, not when its time is up: the messages
/// triggers count a `kept_until` set as the message going out, and a kept message's
/// delete as nothing.
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
CREATE OR REPLACE FUNCTION mx2_count_messages_out() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO queue_deltas (domain, messages, recipients, held, bytes)
    SELECT '', -COUNT(*), 0, 0, -COALESCE(SUM(size), 0) FROM gone
    WHERE kept_until IS NULL HAVING COUNT(*) > 0;
    RETURN NULL;
END $$;
CREATE FUNCTION mx2_count_messages_kept() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO queue_deltas (domain, messages, recipients, held, bytes)
    SELECT '', o.n - k.n, 0, 0, o.b - k.b
    FROM (SELECT COUNT(*) AS n, COALESCE(SUM(size), 0) AS b FROM new_rows
          WHERE kept_until IS NOT NULL) k,
         (SELECT COUNT(*) AS n, COALESCE(SUM(size), 0) AS b FROM old_rows
          WHERE kept_until IS NOT NULL) o
    WHERE k.n <> o.n;
    RETURN NULL;
END $$;
CREATE TRIGGER count_messages_kept AFTER UPDATE ON messages
    REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION mx2_count_messages_kept();
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
