//! `mx2 queue adopt` and `mx2 queue reset` on the store's side: accept the database file as
//! it reads now as the queue, or set the queue's files aside for an empty start. Both take the
//! queue's lock (so never while a server runs) and keep what they replace.

use super::schema::{SCHEMA, ensure_identity, migrate, open_connection};
use super::{backend, guard};
use crate::queue::StoreError;
use std::path::{Path, PathBuf};

/// What `mx2 queue adopt` found in the file it accepted.
#[derive(Debug)]
pub struct Adopted {
    pub messages: u64,
    pub recipients: u64,
    pub commits: u64,
    /// Where a copy of the files as they were was kept.
    pub copy: PathBuf,
}

/// Accepts the database in `state_dir` as it reads now as the queue (after a backup was
/// restored or a damaged file salvaged): checks it whole, gives it an identity if it has
/// none, and sets the marker to it. A copy of the files as they were is kept first. Fails
/// while a server holds the queue.
pub fn adopt(state_dir: &Path) -> Result<Adopted, StoreError> {
    // The marker is what is being replaced: only the lock matters here.
    let guard = guard::Guard::lock_only(state_dir)?;
    let path = state_dir.join(guard::DB_FILE);
    if std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0) == 0 {
        return Err(StoreError::Backend(format!(
            "{} is missing or empty: there is nothing to adopt (restore a backup there first, \
             or start empty with `mx2 queue reset --i-understand`)",
            path.display()
        )));
    }
    let copy = guard::copy_aside(state_dir).map_err(StoreError::Backend)?;
    let conn = open_connection(&path)?;
    let check: String = conn
        .query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .map_err(backend)?;
    if check != "ok" {
        return Err(StoreError::Backend(format!(
            "{} fails SQLite's integrity check ({check}): salvage it first with sqlite3 .recover \
             (README, \"Backup and recovery\")",
            path.display()
        )));
    }
    conn.execute_batch(SCHEMA).map_err(backend)?;
    migrate(&conn).map_err(backend)?;
    let marker = ensure_identity(&conn).map_err(backend)?;
    let count = |sql: &str| -> Result<u64, StoreError> {
        conn.query_row(sql, [], |r| r.get::<_, i64>(0))
            .map(|n| n.max(0) as u64)
            .map_err(backend)
    };
    let messages = count("SELECT COUNT(*) FROM messages")?;
    let recipients = count("SELECT COUNT(*) FROM recipients WHERE status = 0")?;
    guard.store(&marker)?;
    Ok(Adopted {
        messages,
        recipients,
        commits: marker.commits,
        copy,
    })
}

/// Moves the queue's files aside (into `state_dir/damaged-TIME`) so that the next start
/// creates an empty queue. Fails while a server holds the queue.
pub fn reset(state_dir: &Path) -> Result<(PathBuf, Vec<String>), StoreError> {
    let _lock = guard::Guard::lock_only(state_dir)?;
    let (to, mut moved) = guard::move_aside(state_dir).map_err(StoreError::Backend)?;
    // The content of the large messages goes with the database that refers to it (the
    // next start would remove the files, since the new queue does not).
    let spool = crate::queue::spool::dir(state_dir);
    if spool.exists() {
        std::fs::rename(&spool, to.join(crate::queue::spool::DIR))
            .map_err(|e| StoreError::Backend(format!("cannot move {}: {e}", spool.display())))?;
        moved.push(crate::queue::spool::DIR.to_string());
    }
    Ok((to, moved))
}
