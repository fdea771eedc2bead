//! The statements behind each of the embedded queue's write operations: insert a message,
//! claim due recipients, record delivery outcomes (with the notifications they call for),
//! make a domain's mail due, operators' actions, and purging a domain's mail. Each runs
//! inside the writer's transaction; none commits or syncs on its own.

use super::writer::Held;
use crate::queue::{
    ClaimedRow, Job, NewMessage, OperatorAction, Recipient, Status, Update, into_jobs,
};
use rusqlite::{Connection, params};

pub(super) fn insert(c: &Connection, m: &NewMessage, held: &Held) -> rusqlite::Result<()> {
    c.prepare_cached(
        "INSERT INTO messages (id, received_at, sender, mail_params, client, helo, size, body, auth)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
    )?
    .execute(params![
        m.id,
        m.received_at_ms,
        m.sender,
        m.mail_params,
        m.client,
        m.helo,
        m.body.len() as i64,
        m.body,
        m.authenticated.map(i64::from)
    ])?;
    let mut stmt = c.prepare_cached(
        "INSERT INTO recipients (message_id, address, domain, params, next_attempt, held)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
    )?;
    for r in &m.recipients {
        stmt.execute(params![
            m.id,
            r.address,
            r.domain,
            r.params,
            m.received_at_ms + held.get(&r.domain).copied().unwrap_or(0),
            i64::from(m.held)
        ])?;
    }
    Ok(())
}

/// The columns [`claim_rows`] reads, in its order.
const CLAIM_COLUMNS: &str = "SELECT r.id, r.message_id, r.address, r.domain, r.params, r.attempts,
                m.sender, m.mail_params, m.received_at, m.size, r.warned, m.auth
         FROM recipients r JOIN messages m ON m.id = r.message_id";

pub(super) fn claim(c: &Connection, now: i64, limit: usize) -> rusqlite::Result<Vec<Job>> {
    let mut stmt = c.prepare_cached(&format!(
        "{CLAIM_COLUMNS}
         WHERE r.status = 0 AND r.claimed = 0 AND r.held = 0 AND r.next_attempt <= ?1
         ORDER BY r.next_attempt LIMIT ?2"
    ))?;
    claim_rows(c, stmt.query(params![now, limit as i64])?)
}

pub(super) fn claim_message(c: &Connection, id: &str) -> rusqlite::Result<Vec<Job>> {
    let mut stmt = c.prepare_cached(&format!(
        "{CLAIM_COLUMNS} WHERE r.message_id = ?1 AND r.status = 0 AND r.claimed = 0"
    ))?;
    claim_rows(c, stmt.query([id])?)
}

/// Marks the selected recipient rows claimed and groups them into jobs.
fn claim_rows(c: &Connection, mut rows: rusqlite::Rows<'_>) -> rusqlite::Result<Vec<Job>> {
    let mut claimed = Vec::new();
    while let Some(row) = rows.next()? {
        claimed.push(ClaimedRow {
            job: Job {
                queue_id: row.get(1)?,
                domain: row.get(3)?,
                sender: row.get(6)?,
                mail_params: row.get(7)?,
                received_at_ms: row.get(8)?,
                size: row.get::<_, i64>(9)? as u64,
                recipients: Vec::new(),
                authenticated: row.get::<_, Option<i64>>(11)?.map(|v| v != 0),
            },
            recipient: Recipient {
                row: row.get(0)?,
                address: row.get(2)?,
                params: row.get(4)?,
                attempts: row.get::<_, i64>(5)? as u32,
                warned: row.get::<_, i64>(10)? != 0,
            },
        });
    }
    drop(rows);
    let mut mark = c.prepare_cached("UPDATE recipients SET claimed = 1 WHERE id = ?1")?;
    for r in &claimed {
        mark.execute([r.recipient.row])?;
    }
    Ok(into_jobs(claimed))
}

pub(super) fn record(
    c: &Connection,
    id: &str,
    updates: &[Update],
    dsns: &[NewMessage],
) -> rusqlite::Result<bool> {
    for m in dsns {
        // Notifications go to the senders' domains; a held one is held when claimed.
        insert(c, m, &Held::new())?;
    }
    let mut stmt = c.prepare_cached(
        "UPDATE recipients SET status = ?1, claimed = 0, attempts = attempts + ?2,
                next_attempt = ?3, last_reply = COALESCE(?4, last_reply), warned = MAX(warned, ?7)
         WHERE id = ?5 AND message_id = ?6",
    )?;
    for u in updates {
        stmt.execute(params![
            u.status as i64,
            i64::from(u.attempted),
            u.next_attempt_ms,
            u.last_reply,
            u.row,
            id,
            i64::from(u.warned)
        ])?;
    }
    remove_if_done(c, id)
}

/// Removes a message none of whose recipients is pending any more, or keeps it for the
/// emergency inbox (`super::inbox::keep`); true when it did either.
pub(super) fn remove_if_done(c: &Connection, id: &str) -> rusqlite::Result<bool> {
    let pending: i64 = c
        .prepare_cached(PENDING_OF_MESSAGE)?
        .query_row(params![id, Status::Pending as i64], |r| r.get(0))?;
    if pending > 0 {
        return Ok(false);
    }
    if super::inbox::keep(c, id, crate::queue::now_ms())? {
        return Ok(true);
    }
    remove(c, id)
}

/// Removes a message from the queue, recipients and body; true when it was there.
pub(super) fn remove(c: &Connection, id: &str) -> rusqlite::Result<bool> {
    c.prepare_cached("DELETE FROM recipients WHERE message_id = ?1")?
        .execute([id])?;
    let n = c
        .prepare_cached("DELETE FROM messages WHERE id = ?1")?
        .execute([id])?;
    Ok(n > 0)
}

/// A message's recipients still pending. The `+` keeps SQLite on the `message_id` index:
/// left to itself it picks `recipients_due` (status first) and counts through every pending
/// recipient in the queue, once per delivery (drains of 20,000 messages went quadratic).
pub(super) const PENDING_OF_MESSAGE: &str =
    "SELECT COUNT(*) FROM recipients WHERE message_id = ?1 AND +status = ?2";

/// Makes up to `limit` pending, unclaimed recipients in these domains that are not yet due
/// due at `now`, those due soonest first; returns how many it changed. [`Embedded`] calls it
/// until fewer than `limit` change, one writer transaction each, so that a million held
/// recipients do not stop every other write (and the first delivery) until all are due.
///
/// [`Embedded`]: super::Embedded
pub(super) fn make_due(
    c: &Connection,
    domains: &[String],
    now: i64,
    limit: usize,
) -> rusqlite::Result<u64> {
    let list = serde_json::to_string(domains)
        .map_err(|e| rusqlite::Error::ToSqlConversionFailure(Box::new(e)))?;
    let n = c
        .prepare_cached(MAKE_DUE)?
        .execute(params![now, list, limit as i64])?;
    Ok(n as u64)
}

/// One step of [`make_due`] (?1 now, ?2 the domains as a JSON array, ?3 the step's size).
/// Through the due-time index, from `now` up: the rows an earlier step made due (at `now`)
/// are outside the range, so no step walks over them again. One walk for all the domains,
/// not one per domain: walked domain by domain, each step went through every not-yet-due row
/// of the queue once for each domain already done (nothing tells the walk to stop early), so
/// with a million held over 100 domains the steps took most of the writer's time while the
/// drain waited behind them.
pub(super) const MAKE_DUE: &str = "UPDATE recipients SET next_attempt = ?1 WHERE id IN (
         SELECT id FROM recipients INDEXED BY recipients_due
         WHERE status = 0 AND claimed = 0 AND next_attempt > ?1 AND held = 0
           AND domain IN (SELECT value FROM json_each(?2))
         LIMIT ?3)";

pub(super) fn act(
    c: &Connection,
    ids: &[String],
    action: OperatorAction,
    now: i64,
) -> rusqlite::Result<u64> {
    let mut n = 0;
    for id in ids {
        let changed = match action {
            OperatorAction::Flush => c
                .prepare_cached(
                    "UPDATE recipients SET next_attempt = ?2
                     WHERE message_id = ?1 AND status = 0 AND claimed = 0 AND held = 0",
                )?
                .execute(params![id, now])?,
            OperatorAction::Hold => c
                .prepare_cached(
                    "UPDATE recipients SET held = 1 WHERE message_id = ?1 AND status = 0 AND held = 0",
                )?
                .execute([id])?,
            OperatorAction::Release => c
                .prepare_cached(
                    "UPDATE recipients SET held = 0, next_attempt = ?2
                     WHERE message_id = ?1 AND status = 0 AND held = 1",
                )?
                .execute(params![id, now])?,
            OperatorAction::Delete => usize::from(remove(c, id)?),
        };
        n += u64::from(changed > 0);
    }
    Ok(n)
}

/// Drops the pending, unclaimed recipients in `domain` (see
/// [`crate::queue::Store::purge_domain`]); a message left with no pending recipient leaves
/// the queue. Returns how many messages had a recipient dropped.
///
/// The rows are deleted, not set final: no status says "dropped without notice" (failed
/// would tell an operator a notification went out), and a new status number would be one
/// that older mx2 binaries reading the file cannot show.
pub(super) fn purge_domain(c: &Connection, domain: &str) -> rusqlite::Result<u64> {
    const PURGED: &str = "recipients WHERE domain = ?1 AND status = 0 AND claimed = 0";
    let ids = c
        .prepare_cached(&format!("SELECT DISTINCT message_id FROM {PURGED}"))?
        .query_map([domain], |r| r.get::<_, String>(0))?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    c.prepare_cached(&format!("DELETE FROM {PURGED}"))?
        .execute([domain])?;
    for id in &ids {
        remove_if_done(c, id)?;
    }
    Ok(ids.len() as u64)
}
