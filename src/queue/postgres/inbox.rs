//! The emergency inbox's tables on PostgreSQL (the same as the embedded store's): credentials,
//! mailboxes and the UID and flags of each (mailbox, message), shared by every node, so any
//! node serves any user and `\Seen` is the cluster's. UIDs are assigned under a row lock on
//! the mailbox, so two nodes never give one UID twice.

use super::{NOW_MS, pg_error};
use crate::queue::StoreError;
use crate::queue::inbox::{Candidate, FlagChange, Stored, new_uid_validity, rows_of};

type Client = deadpool_postgres::Object;

/// Migration step 5 (see `schema::MIGRATIONS`): the inbox's tables.
pub(super) const SCHEMA: &str = "
CREATE TABLE inbox_credentials (
    address TEXT PRIMARY KEY,
    hash TEXT NOT NULL,
    changed_at BIGINT NOT NULL
);
CREATE TABLE inbox_mailboxes (
    address TEXT PRIMARY KEY,
    uid_validity BIGINT NOT NULL,
    uid_next BIGINT NOT NULL
);
CREATE TABLE inbox_uids (
    address TEXT NOT NULL,
    queue_id TEXT COLLATE \"C\" NOT NULL,
    uid BIGINT NOT NULL,
    seen BOOLEAN NOT NULL DEFAULT false,
    flagged BOOLEAN NOT NULL DEFAULT false,
    PRIMARY KEY (address, queue_id)
);
CREATE INDEX inbox_uids_uid ON inbox_uids (address, uid);
";

/// Migration step 6: one-time login codes (hashes) and messages users deleted.
pub(super) const CODES_SCHEMA: &str = "
CREATE TABLE inbox_hidden (
    address TEXT NOT NULL,
    queue_id TEXT COLLATE \"C\" NOT NULL,
    PRIMARY KEY (address, queue_id)
);
CREATE TABLE inbox_codes (
    hash TEXT PRIMARY KEY,
    address TEXT NOT NULL,
    expires_at BIGINT NOT NULL
);
";

pub(super) async fn add_code(
    c: &mut Client,
    key: &str,
    hash: &str,
    expires_at_ms: i64,
    now_ms: i64,
) -> Result<(), StoreError> {
    let tx = c.transaction().await.map_err(pg_error)?;
    tx.execute("DELETE FROM inbox_codes WHERE expires_at <= $1", &[&now_ms])
        .await
        .map_err(pg_error)?;
    tx.execute(
        "INSERT INTO inbox_codes (hash, address, expires_at) VALUES ($1, $2, $3)
         ON CONFLICT (hash) DO UPDATE SET address = excluded.address, expires_at = excluded.expires_at",
        &[&hash, &key, &expires_at_ms],
    )
    .await
    .map_err(pg_error)?;
    tx.commit().await.map_err(pg_error)
}

pub(super) async fn use_code(
    c: &Client,
    key: &str,
    hash: &str,
    now_ms: i64,
) -> Result<bool, StoreError> {
    let gone = c
        .execute(
            "DELETE FROM inbox_codes WHERE hash = $1 AND address = $2 AND expires_at > $3",
            &[&hash, &key, &now_ms],
        )
        .await
        .map_err(pg_error)?;
    Ok(gone > 0)
}

/// The hash a mailbox logs in with: its own first, else the one its primary published.
pub(super) async fn credential(c: &Client, key: &str) -> Result<Option<String>, StoreError> {
    let row = c
        .query_one(
            "SELECT COALESCE((SELECT hash FROM inbox_credentials WHERE address = $1),
                             (SELECT hash FROM inbox_published WHERE address = $1))",
            &[&key],
        )
        .await
        .map_err(pg_error)?;
    row.try_get(0).map_err(pg_error)
}

/// See [`crate::queue::Store::inbox_publish`].
pub(super) async fn publish(
    c: &mut Client,
    domain: &str,
    entries: &[(String, String)],
) -> Result<(), StoreError> {
    let (keys, hashes): (Vec<&str>, Vec<&str>) = entries
        .iter()
        .map(|(k, h)| (k.as_str(), h.as_str()))
        .unzip();
    let tx = c.transaction().await.map_err(pg_error)?;
    tx.execute("DELETE FROM inbox_published WHERE domain = $1", &[&domain])
        .await
        .map_err(pg_error)?;
    tx.execute(
        "INSERT INTO inbox_published (address, domain, hash)
         SELECT a, $1, h FROM unnest($2::text[], $3::text[]) AS t(a, h)
         ON CONFLICT (address) DO UPDATE SET domain = excluded.domain, hash = excluded.hash",
        &[&domain, &keys, &hashes],
    )
    .await
    .map_err(pg_error)?;
    tx.commit().await.map_err(pg_error)
}

pub(super) async fn set_credential(
    c: &mut Client,
    key: &str,
    hash: Option<&str>,
    now_ms: i64,
) -> Result<bool, StoreError> {
    let tx = c.transaction().await.map_err(pg_error)?;
    let had = tx
        .execute("DELETE FROM inbox_credentials WHERE address = $1", &[&key])
        .await
        .map_err(pg_error)?
        > 0;
    if let Some(h) = hash {
        tx.execute(
            "INSERT INTO inbox_credentials (address, hash, changed_at) VALUES ($1, $2, $3)",
            &[&key, &h, &now_ms],
        )
        .await
        .map_err(pg_error)?;
    }
    tx.commit().await.map_err(pg_error)?;
    Ok(had)
}

pub(super) async fn candidates(c: &Client, domain: &str) -> Result<Vec<Candidate>, StoreError> {
    let rows = c
        .query(
            &format!(
                "SELECT r.address, m.id, m.received_at, m.size, r.status FROM recipients r
                 JOIN messages m ON m.id = r.message_id
                 WHERE r.domain = $1 AND r.status = 0
                 UNION ALL
                 SELECT r.address, m.id, m.received_at, m.size, r.status FROM recipients r
                 JOIN messages m ON m.id = r.message_id
                 WHERE r.domain = $1 AND r.status = 1
                   AND EXISTS (SELECT 1 FROM inbox_keep k WHERE k.domain = $1)
                   AND (m.kept_until IS NULL OR m.kept_until > {NOW_MS})"
            ),
            &[&domain],
        )
        .await
        .map_err(pg_error)?;
    rows.iter()
        .map(|r| {
            Ok(Candidate {
                address: r.try_get(0)?,
                queue_id: r.try_get(1)?,
                received_at_ms: r.try_get(2)?,
                size: r.try_get::<_, i64>(3)?.max(0) as u64,
                delivered: r.try_get::<_, i32>(4)? == 1,
            })
        })
        .collect::<Result<_, tokio_postgres::Error>>()
        .map_err(pg_error)
}

pub(super) async fn stored(c: &Client, key: &str) -> Result<Option<Stored>, StoreError> {
    let Some(head) = c
        .query_opt(
            "SELECT uid_validity, uid_next FROM inbox_mailboxes WHERE address = $1",
            &[&key],
        )
        .await
        .map_err(pg_error)?
    else {
        return Ok(None);
    };
    let rows = c
        .query(
            "SELECT queue_id, uid, seen, flagged FROM inbox_uids WHERE address = $1",
            &[&key],
        )
        .await
        .map_err(pg_error)?;
    let mut out = Stored {
        uid_validity: head.try_get::<_, i64>(0).map_err(pg_error)? as u32,
        uid_next: head.try_get::<_, i64>(1).map_err(pg_error)? as u32,
        uids: Default::default(),
        hidden: Default::default(),
    };
    let hidden = c
        .query(
            "SELECT queue_id FROM inbox_hidden WHERE address = $1",
            &[&key],
        )
        .await
        .map_err(pg_error)?;
    for r in hidden {
        out.hidden.insert(r.try_get(0).map_err(pg_error)?);
    }
    for r in rows {
        out.uids.insert(
            r.try_get(0).map_err(pg_error)?,
            (
                r.try_get::<_, i64>(1).map_err(pg_error)? as u32,
                r.try_get(2).map_err(pg_error)?,
                r.try_get(3).map_err(pg_error)?,
            ),
        );
    }
    Ok(Some(out))
}

pub(super) async fn assign(
    c: &mut Client,
    key: &str,
    ids: &[String],
    now_ms: i64,
) -> Result<(), StoreError> {
    let tx = c.transaction().await.map_err(pg_error)?;
    tx.execute(
        "INSERT INTO inbox_mailboxes (address, uid_validity, uid_next) VALUES ($1, $2, 1)
         ON CONFLICT (address) DO NOTHING",
        &[&key, &i64::from(new_uid_validity(now_ms))],
    )
    .await
    .map_err(pg_error)?;
    // The row lock orders nodes assigning UIDs to one mailbox.
    let mut next: i64 = tx
        .query_one(
            "SELECT uid_next FROM inbox_mailboxes WHERE address = $1 FOR UPDATE",
            &[&key],
        )
        .await
        .map_err(pg_error)?
        .try_get(0)
        .map_err(pg_error)?;
    tx.execute(
        "DELETE FROM inbox_hidden h WHERE h.address = $1
         AND NOT EXISTS (SELECT 1 FROM messages m WHERE m.id = h.queue_id)",
        &[&key],
    )
    .await
    .map_err(pg_error)?;
    tx.execute(
        "DELETE FROM inbox_uids u WHERE u.address = $1
         AND NOT EXISTS (SELECT 1 FROM messages m WHERE m.id = u.queue_id)",
        &[&key],
    )
    .await
    .map_err(pg_error)?;
    for id in ids {
        let added = tx
            .execute(
                "INSERT INTO inbox_uids (address, queue_id, uid) VALUES ($1, $2, $3)
                 ON CONFLICT DO NOTHING",
                &[&key, id, &next],
            )
            .await
            .map_err(pg_error)?;
        next += i64::try_from(added).unwrap_or(0);
    }
    tx.execute(
        "UPDATE inbox_mailboxes SET uid_next = $2 WHERE address = $1",
        &[&key, &next],
    )
    .await
    .map_err(pg_error)?;
    tx.commit().await.map_err(pg_error)
}

pub(super) async fn set_flags(
    c: &Client,
    key: &str,
    uids: &[u32],
    change: FlagChange,
) -> Result<(), StoreError> {
    let uids: Vec<i64> = uids.iter().map(|u| i64::from(*u)).collect();
    c.execute(
        "UPDATE inbox_uids SET seen = coalesce($3, seen), flagged = coalesce($4, flagged)
         WHERE address = $1 AND uid = ANY($2)",
        &[&key, &uids, &change.seen, &change.flagged],
    )
    .await
    .map_err(pg_error)?;
    Ok(())
}

/// See [`crate::queue::Store::inbox_delete`]. A recipient a node is delivering goes too, as
/// an operator's delete takes it (that node's result for it is then ignored).
pub(super) async fn delete(
    c: &mut Client,
    key: &str,
    ids: &[String],
    drop_recipients: bool,
) -> Result<(), StoreError> {
    let tx = c.transaction().await.map_err(pg_error)?;
    tx.execute(
        "INSERT INTO inbox_hidden (address, queue_id) SELECT $1, unnest($2::text[])
         ON CONFLICT DO NOTHING",
        &[&key, &ids],
    )
    .await
    .map_err(pg_error)?;
    if drop_recipients {
        let rows = tx
            .query(
                "SELECT id, address FROM recipients WHERE message_id = ANY($1) AND status = 0
                 FOR UPDATE",
                &[&ids],
            )
            .await
            .map_err(pg_error)?
            .iter()
            .map(|r| Ok((r.try_get(0)?, r.try_get(1)?)))
            .collect::<Result<Vec<(i64, String)>, tokio_postgres::Error>>()
            .map_err(pg_error)?;
        let drop = rows_of(key, rows);
        tx.execute("DELETE FROM recipients WHERE id = ANY($1)", &[&drop])
            .await
            .map_err(pg_error)?;
        super::purge::remove_done(&tx, ids).await?;
    }
    tx.commit().await.map_err(pg_error)
}
