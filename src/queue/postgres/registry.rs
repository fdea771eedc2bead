//! The registry on PostgreSQL ([`crate::queue::registry`]), shared by every node: its tables
//! (migration step 3), the writes (each in a transaction that also tells every node, by
//! `NOTIFY` on [`CHANNEL`], once it commits) and the reads. Nodes hear of changes through
//! [`super::wake`] listening on that channel.
//!
//! The change numbers come from a one-row table, not a `SEQUENCE`: a write takes the next
//! number by updating that row first, which holds the row's lock until the write commits or
//! rolls back. So numbers are gap-free (a conflict rolls its number back) and become visible
//! in order: a node that reads version N sees every change up to N. A sequence hands out
//! numbers outside transactions, so its last value can name a change not committed yet, and
//! a node polling it would reload too early and then see nothing more to reload.

use super::pg_error;
use crate::queue::StoreError;
use crate::queue::registry::{Entry, Expect, Written};
use deadpool_postgres::Transaction;

/// The channel registry changes are notified on.
pub(super) const CHANNEL: &str = "mx2_registry";

/// Migration step 3 (see `schema::MIGRATIONS`).
pub(super) const SCHEMA: &str = "
CREATE TABLE registry (
    kind TEXT COLLATE \"C\" NOT NULL,
    name TEXT COLLATE \"C\" NOT NULL,
    value TEXT NOT NULL,
    rev BIGINT NOT NULL,
    PRIMARY KEY (kind, name)
);
CREATE TABLE registry_version (
    one BOOLEAN PRIMARY KEY DEFAULT true CHECK (one),
    version BIGINT NOT NULL
);
INSERT INTO registry_version (version) VALUES (0);
";

/// Every entry, ordered by kind then name (bytewise, as the embedded store orders them).
pub(super) async fn entries(c: &tokio_postgres::Client) -> Result<Vec<Entry>, StoreError> {
    let rows = c
        .query(
            "SELECT kind, name, value, rev FROM registry ORDER BY kind, name",
            &[],
        )
        .await
        .map_err(pg_error)?;
    let entry = |r: &tokio_postgres::Row| -> Result<Entry, tokio_postgres::Error> {
        Ok(Entry {
            kind: r.try_get(0)?,
            name: r.try_get(1)?,
            value: r.try_get(2)?,
            rev: r.try_get(3)?,
        })
    };
    rows.iter().map(|r| entry(r).map_err(pg_error)).collect()
}

/// The number of the last change (0 when there never was one).
pub(super) async fn version(c: &tokio_postgres::Client) -> Result<i64, StoreError> {
    let row = c
        .query_one("SELECT version FROM registry_version", &[])
        .await
        .map_err(pg_error)?;
    row.try_get(0).map_err(pg_error)
}

/// Writes an entry if it is as `expect` says.
pub(super) async fn put(
    c: &mut deadpool_postgres::Object,
    kind: &str,
    name: &str,
    value: &str,
    expect: Expect,
) -> Result<Written, StoreError> {
    let tx = c.transaction().await.map_err(pg_error)?;
    let rev = next_rev(&tx).await?;
    let changed = match expect {
        Expect::Absent => {
            tx.execute(
                "INSERT INTO registry (kind, name, value, rev) VALUES ($1, $2, $3, $4)
                 ON CONFLICT (kind, name) DO NOTHING",
                &[&kind, &name, &value, &rev],
            )
            .await
        }
        Expect::Rev(was) => {
            tx.execute(
                "UPDATE registry SET value = $3, rev = $4
                 WHERE kind = $1 AND name = $2 AND rev = $5",
                &[&kind, &name, &value, &rev, &was],
            )
            .await
        }
    };
    finish(tx, changed.map_err(pg_error)?, rev).await
}

/// Removes an entry (at revision `rev`, when given); true when it was removed.
pub(super) async fn delete(
    c: &mut deadpool_postgres::Object,
    kind: &str,
    name: &str,
    rev: Option<i64>,
) -> Result<bool, StoreError> {
    let tx = c.transaction().await.map_err(pg_error)?;
    let next = next_rev(&tx).await?;
    let changed = tx
        .execute(
            "DELETE FROM registry WHERE kind = $1 AND name = $2
             AND ($3::bigint IS NULL OR rev = $3)",
            &[&kind, &name, &rev],
        )
        .await
        .map_err(pg_error)?;
    Ok(matches!(finish(tx, changed, next).await?, Written::Done(_)))
}

/// Takes the next change number: the first statement of every write, so that the row's
/// lock orders the writes (see the module's comment).
async fn next_rev(tx: &Transaction<'_>) -> Result<i64, StoreError> {
    tx.query_one(
        "UPDATE registry_version SET version = version + 1 RETURNING version",
        &[],
    )
    .await
    .map_err(pg_error)?
    .try_get(0)
    .map_err(pg_error)
}

/// Ends a write that changed `changed` rows: committed, with a notification to every node,
/// when it changed one; rolled back (its number with it) when it changed none.
async fn finish(tx: Transaction<'_>, changed: u64, rev: i64) -> Result<Written, StoreError> {
    if changed == 0 {
        tx.rollback().await.map_err(pg_error)?;
        return Ok(Written::Conflict);
    }
    tx.execute("SELECT pg_notify($1, '')", &[&CHANNEL])
        .await
        .map_err(pg_error)?;
    tx.commit().await.map_err(pg_error)?;
    Ok(Written::Done(rev))
}
