//! Read-only queries over the embedded queue for operators: listings, one message, the raw
//! content (depth and totals are the maintained counters, `counts`). Used by the embedded store (admin API) and by
//! `mx2 queue list|show|export --config`, which opens the file directly so that it works
//! while the server is stopped (after a crash, say), as `postqueue -p` does.

use crate::queue::{Filter, Listed, RecipientState, Shown, State, Status, domain_key, list_limit};
use rusqlite::{Connection, OpenFlags, OptionalExtension};
use std::path::Path;

/// The filter's conditions on one message, `{ID}` its queue id (parameters ?2 to ?4, ?6, ?7;
/// ?7, the tenant's domains, a JSON array). Each is an index lookup by queue id.
const CONDITIONS: &str = "EXISTS (SELECT 1 FROM messages m WHERE m.id = {ID}
               AND (?2 IS NULL OR instr(lower(m.sender), ?2) > 0)
               AND (?4 IS NULL OR m.received_at <= ?4))
           AND (?7 IS NULL OR EXISTS (SELECT 1 FROM recipients x
                 WHERE x.message_id = {ID} AND x.status = 0
                   AND x.domain IN (SELECT value FROM json_each(?7))))
           AND (?3 IS NULL OR EXISTS (SELECT 1 FROM recipients x
                 WHERE x.message_id = {ID} AND x.status = 0 AND instr(lower(x.address), ?3) > 0))
           AND (?6 IS NULL OR (SELECT CASE WHEN MAX(x.held) = 1 THEN 'held'
                                           WHEN MAX(x.claimed) = 1 THEN 'active'
                                           WHEN MAX(x.attempts) > 0 THEN 'deferred'
                                           ELSE 'queued' END
                               FROM recipients x WHERE x.message_id = {ID} AND x.status = 0) = ?6)";

/// The queue ids a filter selects, oldest first, after ?5: walked in queue-id order through
/// `recipients(domain, status, message_id)` when the filter names a domain (?1), else
/// through the messages' primary key, so that a listing stops after its limit instead of
/// reading the whole queue.
fn selected(f: &Filter) -> String {
    if f.domain.is_some() {
        format!(
            "SELECT d.message_id AS id FROM recipients d
             WHERE d.domain = ?1 AND d.status = 0 AND d.message_id > COALESCE(?5, '')
               AND {}
             GROUP BY d.message_id ORDER BY d.message_id",
            CONDITIONS.replace("{ID}", "d.message_id")
        )
    } else {
        format!(
            "SELECT a.id AS id FROM messages a
             WHERE a.id > COALESCE(?5, '')
               AND EXISTS (SELECT 1 FROM recipients x WHERE x.message_id = a.id AND x.status = 0)
               AND {}
             ORDER BY a.id",
            CONDITIONS.replace("{ID}", "a.id")
        )
    }
}

/// The filter's values for [`selected`] (?1 to ?7), in order.
fn matching_params(f: &Filter) -> [rusqlite::types::Value; 7] {
    use rusqlite::types::Value;
    let lower = |s: &Option<String>| s.as_ref().map(|s| s.to_lowercase());
    let text = |s: Option<String>| s.map_or(Value::Null, Value::Text);
    let domains: Vec<String> = f
        .domains
        .iter()
        .map(String::as_str)
        .map(domain_key)
        .collect();
    [
        text(f.domain.as_deref().map(domain_key)),
        text(lower(&f.sender)),
        text(lower(&f.recipient)),
        f.received_before_ms.map_or(Value::Null, Value::Integer),
        text(f.after.clone()),
        text(f.state.map(|s| State::name(s).to_string())),
        text((!domains.is_empty()).then(|| serde_json::json!(domains).to_string())),
    ]
}

/// How many messages the filter selects (its limit aside). A filter on nothing or on one
/// domain alone is answered from the counters; any other walks what it selects.
pub fn count(c: &Connection, f: &Filter) -> rusqlite::Result<u64> {
    let only_domain = f.domains.is_empty()
        && f.sender.is_none()
        && f.recipient.is_none()
        && f.received_before_ms.is_none()
        && f.state.is_none()
        && f.after.is_none();
    if only_domain {
        return match &f.domain {
            Some(d) => super::counts::messages_in(c, &domain_key(d)),
            None => super::counts::stats(c).map(|s| s.messages),
        };
    }
    let sql = format!("SELECT COUNT(*) FROM ({})", selected(f));
    c.prepare_cached(&sql)?
        .query_row(rusqlite::params_from_iter(matching_params(f)), |r| {
            r.get::<_, i64>(0)
        })
        .map(|n| n.max(0) as u64)
}

/// A listing's statement: the selected ids first, up to the limit (?8), then their rows
/// (CROSS JOIN keeps SQLite to that order).
fn list_sql(f: &Filter) -> String {
    format!(
        "SELECT m.id, m.received_at, m.sender, m.size, GROUP_CONCAT(r.address, ' '),
                MIN(r.next_attempt), MAX(r.last_reply), MAX(r.held), MAX(r.claimed), MAX(r.attempts)
         FROM ({} LIMIT ?8) s
         CROSS JOIN messages m ON m.id = s.id
         CROSS JOIN recipients r ON r.message_id = m.id AND r.status = 0
         GROUP BY m.id ORDER BY m.id",
        selected(f)
    )
}

pub fn list(c: &Connection, f: &Filter) -> rusqlite::Result<Vec<Listed>> {
    let limit = list_limit(f);
    let mut stmt = c.prepare_cached(&list_sql(f))?;
    let mut values = matching_params(f).to_vec();
    values.push(rusqlite::types::Value::Integer(limit as i64));
    let rows = stmt.query_map(rusqlite::params_from_iter(values), |r| {
        let held = r.get::<_, i64>(7)? != 0;
        let active = r.get::<_, i64>(8)? != 0;
        let attempts = r.get::<_, i64>(9)? as u32;
        Ok(Listed {
            id: r.get(0)?,
            received_at_ms: r.get(1)?,
            sender: r.get(2)?,
            size: r.get::<_, i64>(3)? as u64,
            pending: r
                .get::<_, Option<String>>(4)?
                .unwrap_or_default()
                .split(' ')
                .filter(|s| !s.is_empty())
                .map(str::to_string)
                .collect(),
            state: State::of(held, active, attempts),
            attempts,
            next_attempt_ms: r.get(5)?,
            last_reply: r.get(6)?,
        })
    })?;
    rows.collect()
}

pub fn show(c: &Connection, id: &str) -> rusqlite::Result<Option<Shown>> {
    let head = c
        .query_row(
            "SELECT id, received_at, sender, mail_params, client, helo, size FROM messages WHERE id = ?1",
            [id],
            |r| {
                Ok(Shown {
                    id: r.get(0)?,
                    received_at_ms: r.get(1)?,
                    sender: r.get(2)?,
                    mail_params: r.get(3)?,
                    client: r.get(4)?,
                    helo: r.get(5)?,
                    size: r.get::<_, i64>(6)? as u64,
                    recipients: Vec::new(),
                })
            },
        )
        .optional()?;
    let Some(mut shown) = head else {
        return Ok(None);
    };
    let mut stmt = c.prepare_cached(
        "SELECT address, status, held, attempts, next_attempt, last_reply
         FROM recipients WHERE message_id = ?1 ORDER BY id",
    )?;
    let rows = stmt.query_map([id], |r| {
        Ok(RecipientState {
            address: r.get(0)?,
            status: {
                let n: i64 = r.get(1)?;
                Status::from_stored(n).ok_or(rusqlite::Error::IntegralValueOutOfRange(1, n))?
            },
            held: r.get::<_, i64>(2)? != 0,
            attempts: r.get::<_, i64>(3)? as u32,
            next_attempt_ms: r.get(4)?,
            last_reply: r.get(5)?,
        })
    })?;
    shown.recipients = rows.collect::<Result<_, _>>()?;
    Ok(Some(shown))
}

/// A message's whole content (its spool file included, when it has one).
pub fn export(c: &Connection, id: &str) -> Result<Option<Vec<u8>>, String> {
    let stored = if super::spool::has_table(c).map_err(|e| e.to_string())? {
        super::spool::head(c, id).map_err(|e| e.to_string())?
    } else {
        c.query_row("SELECT body FROM messages WHERE id = ?1", [id], |r| {
            Ok((r.get(0)?, None))
        })
        .optional()
        .map_err(|e| e.to_string())?
    };
    let Some((head, len)) = stored else {
        return Ok(None);
    };
    let state_dir = c
        .path()
        .and_then(|p| Path::new(p).parent())
        .unwrap_or(Path::new("."));
    super::spool::whole(state_dir, id, head, len)
        .map(Some)
        .map_err(|e| e.to_string())
}

/// The queue file opened directly, read-only in intent (nothing here writes).
pub struct Inspector {
    conn: Connection,
}

impl Inspector {
    /// Opens `state_dir/queue.sqlite` without creating anything.
    pub fn open(state_dir: &Path) -> Result<Self, String> {
        let path = state_dir.join(super::guard::DB_FILE);
        // A damaged queue is reported, and left as it is for recovery.
        super::guard::inspect(state_dir)
            .and_then(|found| super::holds_what_it_acknowledged(state_dir, &found))
            .map_err(|e| e.to_string())?;
        if !path.exists() {
            return Err(format!(
                "{}: no queue here (is state_dir right?)",
                path.display()
            ));
        }
        let conn = Connection::open_with_flags(
            &path,
            OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .map_err(|e| format!("{}: {e}", path.display()))?;
        let _ = conn.busy_timeout(std::time::Duration::from_secs(10));
        // A queue written by an older mx2 may lack columns the queries read.
        super::migrate(&conn).map_err(|e| format!("{}: {e}", path.display()))?;
        Ok(Self { conn })
    }

    pub fn list(&self, filter: &Filter) -> Result<Vec<Listed>, String> {
        list(&self.conn, filter).map_err(|e| e.to_string())
    }

    pub fn count(&self, filter: &Filter) -> Result<u64, String> {
        count(&self.conn, filter).map_err(|e| e.to_string())
    }

    pub fn show(&self, id: &str) -> Result<Option<Shown>, String> {
        show(&self.conn, id).map_err(|e| e.to_string())
    }

    /// The stored message, as it will be relayed (.eml).
    pub fn export(&self, id: &str) -> Result<Option<Vec<u8>>, String> {
        export(&self.conn, id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::queue::embedded::Embedded;

    /// A listing walks an index in queue-id order and stops at its limit: no step reads a
    /// whole table, and none sorts what it selected.
    #[test]
    fn a_listing_walks_an_index_to_its_limit() {
        let dir = tempfile::tempdir().unwrap();
        drop(Embedded::open(dir.path()).unwrap());
        let c = Connection::open(dir.path().join("queue.sqlite")).unwrap();
        for domain in [Some("x.test".to_string()), None] {
            let f = Filter {
                domain: domain.clone(),
                ..Filter::default()
            };
            let mut stmt = c
                .prepare(&format!("EXPLAIN QUERY PLAN {}", list_sql(&f)))
                .unwrap();
            let mut values = matching_params(&f).to_vec();
            values.push(rusqlite::types::Value::Integer(100));
            let plan: Vec<String> = stmt
                .query_map(rusqlite::params_from_iter(values), |r| r.get(3))
                .unwrap()
                .map(Result::unwrap)
                .collect();
            let plan = plan.join("\n");
            assert!(
                !plan.contains("SCAN d") && !plan.contains("SCAN a"),
                "{plan}"
            );
            assert!(!plan.contains("TEMP B-TREE FOR ORDER BY"), "{plan}");
            if domain.is_some() {
                assert!(plan.contains("recipients_domain_message"), "{plan}");
            }
        }
    }
}
