//! Reading the embedded queue directly, for `mx2 queue list|show|export` — also while the
//! server is stopped (after a crash, say), as `postqueue -p` does. Read-only queries.

use rusqlite::{Connection, OpenFlags, OptionalExtension, params};
use serde::Serialize;
use std::path::Path;

#[derive(Debug, Serialize)]
pub struct Listed {
    pub id: String,
    pub received_at_ms: i64,
    pub sender: String,
    pub size: u64,
    pub pending: Vec<String>,
    pub next_attempt_ms: Option<i64>,
    pub last_reply: Option<String>,
}

#[derive(Debug, Serialize)]
pub struct RecipientState {
    pub address: String,
    pub status: &'static str,
    pub attempts: u32,
    pub next_attempt_ms: i64,
    pub last_reply: Option<String>,
}

#[derive(Debug, Serialize)]
pub struct Shown {
    pub id: String,
    pub received_at_ms: i64,
    pub sender: String,
    pub mail_params: String,
    pub client: String,
    pub helo: String,
    pub size: u64,
    pub recipients: Vec<RecipientState>,
}

pub struct Inspector {
    conn: Connection,
}

fn status_name(s: i64) -> &'static str {
    match s {
        0 => "pending",
        1 => "delivered",
        2 => "failed",
        3 => "expired",
        _ => "unknown",
    }
}

impl Inspector {
    /// Opens `state_dir/queue.sqlite` without creating anything.
    pub fn open(state_dir: &Path) -> Result<Self, String> {
        let path = state_dir.join("queue.sqlite");
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
        Ok(Self { conn })
    }

    /// Messages with pending recipients, oldest first; `domain` filters by recipient domain.
    pub fn list(&self, domain: Option<&str>, limit: usize) -> Result<Vec<Listed>, String> {
        let mut stmt = self
            .conn
            .prepare(
                "SELECT m.id, m.received_at, m.sender, m.size, GROUP_CONCAT(r.address, ' '), MIN(r.next_attempt), MAX(r.last_reply)
                 FROM messages m JOIN recipients r ON r.message_id = m.id
                 WHERE r.status = 0 AND (?1 IS NULL OR r.domain = ?1)
                 GROUP BY m.id ORDER BY m.received_at LIMIT ?2",
            )
            .map_err(|e| e.to_string())?;
        let rows = stmt
            .query_map(
                params![domain.map(str::to_ascii_lowercase), limit as i64],
                |r| {
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
                        next_attempt_ms: r.get(5)?,
                        last_reply: r.get(6)?,
                    })
                },
            )
            .map_err(|e| e.to_string())?;
        rows.collect::<Result<_, _>>().map_err(|e| e.to_string())
    }

    pub fn show(&self, id: &str) -> Result<Option<Shown>, String> {
        let head = self
            .conn
            .query_row("SELECT id, received_at, sender, mail_params, client, helo, size FROM messages WHERE id = ?1", [id], |r| {
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
            })
            .optional()
            .map_err(|e| e.to_string())?;
        let Some(mut shown) = head else {
            return Ok(None);
        };
        let mut stmt = self
            .conn
            .prepare("SELECT address, status, attempts, next_attempt, last_reply FROM recipients WHERE message_id = ?1 ORDER BY id")
            .map_err(|e| e.to_string())?;
        let rows = stmt
            .query_map([id], |r| {
                Ok(RecipientState {
                    address: r.get(0)?,
                    status: status_name(r.get(1)?),
                    attempts: r.get::<_, i64>(2)? as u32,
                    next_attempt_ms: r.get(3)?,
                    last_reply: r.get(4)?,
                })
            })
            .map_err(|e| e.to_string())?;
        shown.recipients = rows.collect::<Result<_, _>>().map_err(|e| e.to_string())?;
        Ok(Some(shown))
    }

    /// The stored message, as it will be relayed (.eml).
    pub fn export(&self, id: &str) -> Result<Option<Vec<u8>>, String> {
        self.conn
            .query_row("SELECT body FROM messages WHERE id = ?1", [id], |r| {
                r.get(0)
            })
            .optional()
            .map_err(|e| e.to_string())
    }
}
