//! The embedded queue's file: how a connection to it is opened (WAL, `synchronous=FULL`), its
//! tables, the migrations that bring a file written by an older mx2 up to date, and the
//! queue's identity row (`meta`) that the [`guard`](super::guard) compares with its marker.
//! It runs none of the queue's operations (those are in `ops`, run by the `writer`).

use super::{backend, guard};
use crate::queue::StoreError;
use rusqlite::{Connection, OptionalExtension};
use std::path::Path;

pub(super) const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS messages (
    id TEXT PRIMARY KEY,
    received_at INTEGER NOT NULL,
    sender TEXT NOT NULL,
    mail_params TEXT NOT NULL,
    client TEXT NOT NULL,
    helo TEXT NOT NULL,
    size INTEGER NOT NULL,
    body BLOB NOT NULL,
    auth INTEGER,
    kept_until INTEGER
);
CREATE TABLE IF NOT EXISTS recipients (
    id INTEGER PRIMARY KEY,
    message_id TEXT NOT NULL,
    address TEXT NOT NULL,
    domain TEXT NOT NULL,
    params TEXT NOT NULL,
    status INTEGER NOT NULL DEFAULT 0,
    claimed INTEGER NOT NULL DEFAULT 0,
    attempts INTEGER NOT NULL DEFAULT 0,
    next_attempt INTEGER NOT NULL,
    last_reply TEXT,
    warned INTEGER NOT NULL DEFAULT 0,
    held INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS recipients_due ON recipients(status, claimed, next_attempt);
CREATE INDEX IF NOT EXISTS recipients_message ON recipients(message_id);
CREATE TABLE IF NOT EXISTS meta (
    key TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS recipient_cache (
    key TEXT PRIMARY KEY,
    exists_ INTEGER NOT NULL,
    expires_at INTEGER NOT NULL
);
";

pub(super) fn open_connection(path: &Path) -> Result<Connection, StoreError> {
    let conn = Connection::open(path)
        .map_err(|e| StoreError::Backend(format!("{}: {e}", path.display())))?;
    conn.busy_timeout(std::time::Duration::from_secs(30))
        .map_err(backend)?;
    conn.pragma_update(None, "journal_mode", "WAL")
        .map_err(backend)?;
    // The log is cut back to this after a checkpoint, not left at its largest.
    conn.pragma_update(None, "journal_size_limit", 64i64 << 20)
        .map_err(backend)?;
    conn.pragma_update(None, "synchronous", "FULL")
        .map_err(backend)?;
    Ok(conn)
}

/// The queue's identity as the database holds it (`meta`), read on a read-only connection;
/// None for a file without one (written by an mx2 without markers). A file SQLite cannot
/// read is reported as damaged.
pub(crate) fn identity(path: &Path) -> Result<Option<guard::Marker>, StoreError> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let damaged = |e: rusqlite::Error| {
        StoreError::Damaged(format!(
            "the queue in {} is damaged: SQLite cannot read {}: {e}\n{}",
            dir.display(),
            path.display(),
            guard::recovery_help(dir)
        ))
    };
    let conn = Connection::open_with_flags(path, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
        .map_err(damaged)?;
    let _ = conn.busy_timeout(std::time::Duration::from_secs(30));
    let has_meta: i64 = conn
        .query_row(
            "SELECT COUNT(*) FROM sqlite_master WHERE type = 'table' AND name = 'meta'",
            [],
            |r| r.get(0),
        )
        .map_err(damaged)?;
    if has_meta == 0 {
        return Ok(None);
    }
    read_identity(&conn).map_err(damaged)
}

pub(super) fn read_identity(c: &Connection) -> rusqlite::Result<Option<guard::Marker>> {
    let get = |key: &str| -> rusqlite::Result<Option<String>> {
        c.query_row("SELECT value FROM meta WHERE key = ?1", [key], |r| r.get(0))
            .optional()
    };
    Ok(match (get("queue_id")?, get("commits")?) {
        (Some(queue_id), Some(commits)) => Some(guard::Marker {
            queue_id,
            commits: commits.parse().unwrap_or(0),
        }),
        _ => None,
    })
}

/// The queue's identity, given one if the file has none yet.
pub(super) fn ensure_identity(c: &Connection) -> rusqlite::Result<guard::Marker> {
    if let Some(m) = read_identity(c)? {
        return Ok(m);
    }
    let m = guard::Marker {
        queue_id: uuid::Uuid::now_v7().to_string(),
        commits: 0,
    };
    c.execute(
        "INSERT OR REPLACE INTO meta (key, value) VALUES ('queue_id', ?1), ('commits', '0')",
        [&m.queue_id],
    )?;
    Ok(m)
}
/// Brings a queue file written by an older mx2 up to the current schema: columns added
/// since the first release, each with its definition, then the maintained counters
/// ([`counts`](super::counts), built once for a queue that has none) and the inbox's kept
/// messages' index and triggers.
pub(crate) fn migrate(c: &Connection) -> rusqlite::Result<()> {
    const ADDED: [(&str, &str, &str); 4] = [
        ("recipients", "warned", "INTEGER NOT NULL DEFAULT 0"),
        ("messages", "auth", "INTEGER"),
        ("recipients", "held", "INTEGER NOT NULL DEFAULT 0"),
        ("messages", "kept_until", "INTEGER"),
    ];
    for (table, column, definition) in ADDED {
        let present: i64 = c
            .prepare(&format!(
                "SELECT COUNT(*) FROM pragma_table_info('{table}') WHERE name = '{column}'"
            ))?
            .query_row([], |r| r.get(0))?;
        if present == 0 {
            c.execute_batch(&format!(
                "ALTER TABLE {table} ADD COLUMN {column} {definition}"
            ))?;
        }
    }
    super::counts::ensure(c)?;
    c.execute_batch(super::inbox::KEEP_SCHEMA)
}
