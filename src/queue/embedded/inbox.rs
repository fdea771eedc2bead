//! The emergency inbox's tables in the embedded queue: credentials, mailboxes (UIDVALIDITY,
//! next UID) and the UID and flags of each (mailbox, message). Reads run on a reading
//! connection; the changes are run by the writer inside its transaction.

use crate::queue::inbox::{Candidate, FlagChange, Stored, new_uid_validity, rows_of};
use rusqlite::{Connection, OptionalExtension, params};

pub(super) const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS inbox_credentials (
    address TEXT PRIMARY KEY,
    hash TEXT NOT NULL,
    changed_at INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS inbox_mailboxes (
    address TEXT PRIMARY KEY,
    uid_validity INTEGER NOT NULL,
    uid_next INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS inbox_uids (
    address TEXT NOT NULL,
    queue_id TEXT NOT NULL,
    uid INTEGER NOT NULL,
    seen INTEGER NOT NULL DEFAULT 0,
    flagged INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (address, queue_id)
);
CREATE INDEX IF NOT EXISTS inbox_uids_uid ON inbox_uids (address, uid);
CREATE TABLE IF NOT EXISTS inbox_hidden (
    address TEXT NOT NULL,
    queue_id TEXT NOT NULL,
    PRIMARY KEY (address, queue_id)
);
CREATE TABLE IF NOT EXISTS inbox_codes (
    hash TEXT PRIMARY KEY,
    address TEXT NOT NULL,
    expires_at INTEGER NOT NULL
);
";

pub(super) fn add_code(
    c: &Connection,
    key: &str,
    hash: &str,
    expires_at_ms: i64,
    now_ms: i64,
) -> rusqlite::Result<()> {
    c.execute("DELETE FROM inbox_codes WHERE expires_at <= ?1", [now_ms])?;
    c.execute(
        "INSERT OR REPLACE INTO inbox_codes (hash, address, expires_at) VALUES (?1, ?2, ?3)",
        params![hash, key, expires_at_ms],
    )?;
    Ok(())
}

pub(super) fn use_code(
    c: &Connection,
    key: &str,
    hash: &str,
    now_ms: i64,
) -> rusqlite::Result<bool> {
    let gone = c.execute(
        "DELETE FROM inbox_codes WHERE hash = ?1 AND address = ?2 AND expires_at > ?3",
        params![hash, key, now_ms],
    )?;
    Ok(gone > 0)
}

pub(super) fn credential(c: &Connection, key: &str) -> rusqlite::Result<Option<String>> {
    c.prepare_cached("SELECT hash FROM inbox_credentials WHERE address = ?1")?
        .query_row([key], |r| r.get(0))
        .optional()
}

pub(super) fn set_credential(
    c: &Connection,
    key: &str,
    hash: Option<&str>,
    now_ms: i64,
) -> rusqlite::Result<bool> {
    let had = credential(c, key)?.is_some();
    match hash {
        Some(h) => c.execute(
            "INSERT INTO inbox_credentials (address, hash, changed_at) VALUES (?1, ?2, ?3)
             ON CONFLICT (address) DO UPDATE SET hash = excluded.hash, changed_at = excluded.changed_at",
            params![key, h, now_ms],
        )?,
        None => c.execute("DELETE FROM inbox_credentials WHERE address = ?1", [key])?,
    };
    Ok(had)
}

pub(super) fn candidates(c: &Connection, domain: &str) -> rusqlite::Result<Vec<Candidate>> {
    let mut st = c.prepare_cached(
        "SELECT r.address, m.id, m.received_at, m.size FROM recipients r
         JOIN messages m ON m.id = r.message_id WHERE r.domain = ?1 AND r.status = 0",
    )?;
    let rows = st.query_map([domain], |r| {
        Ok(Candidate {
            address: r.get(0)?,
            queue_id: r.get(1)?,
            received_at_ms: r.get(2)?,
            size: r.get::<_, i64>(3)?.max(0) as u64,
        })
    })?;
    rows.collect()
}

pub(super) fn stored(c: &Connection, key: &str) -> rusqlite::Result<Option<Stored>> {
    let head: Option<(i64, i64)> = c
        .prepare_cached("SELECT uid_validity, uid_next FROM inbox_mailboxes WHERE address = ?1")?
        .query_row([key], |r| Ok((r.get(0)?, r.get(1)?)))
        .optional()?;
    let Some((validity, next)) = head else {
        return Ok(None);
    };
    let mut st =
        c.prepare_cached("SELECT queue_id, uid, seen, flagged FROM inbox_uids WHERE address = ?1")?;
    let uids = st
        .query_map([key], |r| {
            Ok((
                r.get::<_, String>(0)?,
                (
                    r.get::<_, i64>(1)? as u32,
                    r.get::<_, i64>(2)? != 0,
                    r.get::<_, i64>(3)? != 0,
                ),
            ))
        })?
        .collect::<rusqlite::Result<_>>()?;
    let hidden = c
        .prepare_cached("SELECT queue_id FROM inbox_hidden WHERE address = ?1")?
        .query_map([key], |r| r.get(0))?
        .collect::<rusqlite::Result<_>>()?;
    Ok(Some(Stored {
        uid_validity: validity as u32,
        uid_next: next as u32,
        uids,
        hidden,
    }))
}

pub(super) fn assign(
    c: &Connection,
    key: &str,
    ids: &[String],
    now_ms: i64,
) -> rusqlite::Result<()> {
    c.execute(
        "INSERT OR IGNORE INTO inbox_mailboxes (address, uid_validity, uid_next) VALUES (?1, ?2, 1)",
        params![key, i64::from(new_uid_validity(now_ms))],
    )?;
    c.execute(
        "DELETE FROM inbox_uids WHERE address = ?1
         AND NOT EXISTS (SELECT 1 FROM messages m WHERE m.id = inbox_uids.queue_id)",
        [key],
    )?;
    c.execute(
        "DELETE FROM inbox_hidden WHERE address = ?1
         AND NOT EXISTS (SELECT 1 FROM messages m WHERE m.id = inbox_hidden.queue_id)",
        [key],
    )?;
    for id in ids {
        let next: i64 = c
            .prepare_cached("SELECT uid_next FROM inbox_mailboxes WHERE address = ?1")?
            .query_row([key], |r| r.get(0))?;
        let added = c
            .prepare_cached(
                "INSERT OR IGNORE INTO inbox_uids (address, queue_id, uid) VALUES (?1, ?2, ?3)",
            )?
            .execute(params![key, id, next])?;
        if added > 0 {
            c.prepare_cached("UPDATE inbox_mailboxes SET uid_next = ?2 WHERE address = ?1")?
                .execute(params![key, next + 1])?;
        }
    }
    Ok(())
}

pub(super) fn set_flags(
    c: &Connection,
    key: &str,
    uids: &[u32],
    change: FlagChange,
) -> rusqlite::Result<()> {
    let mut st = c.prepare_cached(
        "UPDATE inbox_uids SET seen = coalesce(?3, seen), flagged = coalesce(?4, flagged)
         WHERE address = ?1 AND uid = ?2",
    )?;
    for uid in uids {
        st.execute(params![
            key,
            i64::from(*uid),
            change.seen.map(i64::from),
            change.flagged.map(i64::from)
        ])?;
    }
    Ok(())
}

/// See [`crate::queue::Store::inbox_delete`].
pub(super) fn delete(
    c: &Connection,
    key: &str,
    ids: &[String],
    drop_recipients: bool,
) -> rusqlite::Result<()> {
    for id in ids {
        c.prepare_cached("INSERT OR IGNORE INTO inbox_hidden (address, queue_id) VALUES (?1, ?2)")?
            .execute(params![key, id])?;
        if !drop_recipients {
            continue;
        }
        let rows = c
            .prepare_cached(
                "SELECT id, address FROM recipients WHERE message_id = ?1 AND status = 0",
            )?
            .query_map([id], |r| Ok((r.get(0)?, r.get(1)?)))?
            .collect::<rusqlite::Result<Vec<_>>>()?;
        for row in rows_of(key, rows) {
            c.prepare_cached("DELETE FROM recipients WHERE id = ?1")?
                .execute([row])?;
        }
        super::ops::remove_if_done(c, id)?;
    }
    Ok(())
}
