//! The emergency inbox's tables in the embedded queue: credentials, mailboxes (UIDVALIDITY,
//! next UID) and the UID and flags of each (mailbox, message), and the keeping of delivered
//! mail (`inbox_keep`: per domain for how long; `messages.kept_until`: until when a message
//! with no pending recipient stays for the inbox, its triggers taking it out of the queue's
//! totals). Reads run on a reading connection; the changes are run by the writer inside its
//! transaction.

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
CREATE TABLE IF NOT EXISTS inbox_published (
    address TEXT PRIMARY KEY,
    domain TEXT NOT NULL,
    hash TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS inbox_published_domain ON inbox_published (domain);
CREATE TABLE IF NOT EXISTS inbox_keep (
    domain TEXT PRIMARY KEY,
    keep_ms INTEGER NOT NULL
);
";

/// After the migrations (which add `messages.kept_until`) and the counters: a kept message
/// leaves `queue_totals` when it is kept, and its removal (which the counters' own trigger
/// takes off again) gives back what that took.
pub(super) const KEEP_SCHEMA: &str = "
CREATE INDEX IF NOT EXISTS messages_kept ON messages (kept_until) WHERE kept_until IS NOT NULL;
CREATE TRIGGER IF NOT EXISTS count_message_kept AFTER UPDATE OF kept_until ON messages
WHEN OLD.kept_until IS NULL AND NEW.kept_until IS NOT NULL BEGIN
    UPDATE queue_totals SET messages = messages - 1, bytes = bytes - NEW.size WHERE id = 1;
END;
CREATE TRIGGER IF NOT EXISTS count_kept_delete AFTER DELETE ON messages
WHEN OLD.kept_until IS NOT NULL BEGIN
    UPDATE queue_totals SET messages = messages + 1, bytes = bytes + OLD.size WHERE id = 1;
END;
";

/// Keeps message `id`, none of whose recipients is pending, if one of them was delivered in
/// a domain that keeps delivered mail; true when it is (or already was) kept.
pub(super) fn keep(c: &Connection, id: &str, now_ms: i64) -> rusqlite::Result<bool> {
    let (kept, keep_ms): (Option<i64>, Option<i64>) = c
        .prepare_cached(
            "SELECT m.kept_until, (SELECT MAX(k.keep_ms) FROM recipients r
                 JOIN inbox_keep k ON k.domain = r.domain
                 WHERE r.message_id = m.id AND +r.status = 1)
             FROM messages m WHERE m.id = ?1",
        )?
        .query_row([id], |r| Ok((r.get(0)?, r.get(1)?)))
        .optional()?
        .unwrap_or((None, None));
    if kept.is_some() {
        return Ok(true);
    }
    let Some(keep_ms) = keep_ms else {
        return Ok(false);
    };
    c.prepare_cached("UPDATE messages SET kept_until = ?2 WHERE id = ?1")?
        .execute(params![id, now_ms.saturating_add(keep_ms)])?;
    Ok(true)
}

/// See [`crate::queue::Store::inbox_keep`].
pub(super) fn set_keep(c: &Connection, keep: &[(String, i64)]) -> rusqlite::Result<()> {
    c.execute("DELETE FROM inbox_keep", [])?;
    let mut st =
        c.prepare_cached("INSERT OR REPLACE INTO inbox_keep (domain, keep_ms) VALUES (?1, ?2)")?;
    for (domain, ms) in keep.iter().filter(|(_, ms)| *ms > 0) {
        st.execute(params![crate::queue::domain_key(domain), ms])?;
    }
    Ok(())
}

/// See [`crate::queue::Store::inbox_purge`].
pub(super) fn purge(c: &Connection, now_ms: i64, limit: usize) -> rusqlite::Result<u64> {
    let ids = c
        .prepare_cached(
            "SELECT id FROM messages INDEXED BY messages_kept WHERE kept_until <= ?1 LIMIT ?2",
        )?
        .query_map(params![now_ms, limit as i64], |r| r.get::<_, String>(0))?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    for id in &ids {
        super::ops::remove(c, id)?;
    }
    Ok(ids.len() as u64)
}

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

/// The hash a mailbox logs in with: its own (`mx2 inbox passwd`) first, else the one its
/// primary published.
pub(super) fn credential(c: &Connection, key: &str) -> rusqlite::Result<Option<String>> {
    c.prepare_cached(
        "SELECT COALESCE((SELECT hash FROM inbox_credentials WHERE address = ?1),
                         (SELECT hash FROM inbox_published WHERE address = ?1))",
    )?
    .query_row([key], |r| r.get(0))
}

/// See [`crate::queue::Store::inbox_publish`].
pub(super) fn publish(
    c: &Connection,
    domain: &str,
    entries: &[(String, String)],
) -> rusqlite::Result<()> {
    c.execute("DELETE FROM inbox_published WHERE domain = ?1", [domain])?;
    let mut st = c.prepare_cached(
        "INSERT OR REPLACE INTO inbox_published (address, domain, hash) VALUES (?1, ?2, ?3)",
    )?;
    for (key, hash) in entries {
        st.execute(params![key, domain, hash])?;
    }
    Ok(())
}

pub(super) fn set_credential(
    c: &Connection,
    key: &str,
    hash: Option<&str>,
    now_ms: i64,
) -> rusqlite::Result<bool> {
    let had = c
        .prepare_cached("SELECT 1 FROM inbox_credentials WHERE address = ?1")?
        .query_row([key], |_| Ok(()))
        .optional()?
        .is_some();
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

pub(super) fn candidates(
    c: &Connection,
    domain: &str,
    now_ms: i64,
) -> rusqlite::Result<Vec<Candidate>> {
    let mut st = c.prepare_cached(
        "SELECT r.address, m.id, m.received_at, m.size, r.status FROM recipients r
         JOIN messages m ON m.id = r.message_id
         WHERE r.domain = ?1 AND (r.status = 0 OR (r.status = 1
             AND EXISTS (SELECT 1 FROM inbox_keep k WHERE k.domain = ?1)
             AND (m.kept_until IS NULL OR m.kept_until > ?2)))",
    )?;
    let rows = st.query_map(params![domain, now_ms], |r| {
        Ok(Candidate {
            address: r.get(0)?,
            queue_id: r.get(1)?,
            received_at_ms: r.get(2)?,
            size: r.get::<_, i64>(3)?.max(0) as u64,
            delivered: r.get::<_, i64>(4)? == 1,
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
