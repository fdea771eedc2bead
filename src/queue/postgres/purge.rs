//! Purging a domain's mail on PostgreSQL (see [`crate::queue::Store::purge_domain`]): when a
//! domain is no longer served, its pending recipients are dropped without a word, and the
//! messages left with none pending leave the queue. One transaction; it wakes nobody, since
//! nothing became due.

use super::{NOW_MS, first_column, pg_error};
use crate::queue::StoreError;

/// Drops the pending recipients in `domain` that no node is delivering (no claim, or a lease
/// run out); returns how many messages had one dropped.
///
/// The rows are deleted, not set final: no status says "dropped without notice" (failed
/// would tell an operator a notification went out), and a new status number would be one
/// that mx2 nodes of an older version sharing the queue cannot show. A recipient a node is
/// delivering is locked by its claim (`FOR UPDATE SKIP LOCKED` then a lease): the delete
/// waits for that claim to commit, then finds the lease and leaves the row.
pub(super) async fn purge_domain(
    c: &mut deadpool_postgres::Object,
    domain: &str,
) -> Result<u64, StoreError> {
    let tx = c.transaction().await.map_err(pg_error)?;
    let dropped = format!(
        "DELETE FROM recipients WHERE domain = $1 AND status = 0
           AND (claimed_by IS NULL OR lease_until < {NOW_MS})
         RETURNING message_id"
    );
    let rows = tx.query(&dropped, &[&domain]).await.map_err(pg_error)?;
    let mut ids: Vec<String> = first_column(&rows)?;
    ids.sort_unstable();
    ids.dedup();
    remove_done(&tx, &ids).await?;
    tx.commit().await.map_err(pg_error)?;
    Ok(ids.len() as u64)
}

/// Takes those of `ids` left with no pending recipient out of the queue: kept for the
/// inbox (`kept.rs`), or removed, body chunks and final recipients going with each message
/// (ON DELETE CASCADE). Returns the ids that left (kept ones included).
pub(super) async fn remove_done(
    tx: &deadpool_postgres::Transaction<'_>,
    ids: &[String],
) -> Result<Vec<String>, StoreError> {
    if ids.is_empty() {
        return Ok(Vec::new());
    }
    super::kept::keep(tx, ids).await?;
    let st = tx
        .prepare_cached(
            "WITH done AS (SELECT m.id, m.kept_until FROM messages m WHERE m.id = ANY($1)
                 AND NOT EXISTS (SELECT 1 FROM recipients x
                                 WHERE x.message_id = m.id AND x.status = 0)),
             gone AS (DELETE FROM messages WHERE id IN
                 (SELECT id FROM done WHERE kept_until IS NULL) RETURNING id)
             SELECT id FROM done",
        )
        .await
        .map_err(pg_error)?;
    first_column(&tx.query(&st, &[&ids]).await.map_err(pg_error)?)
}
