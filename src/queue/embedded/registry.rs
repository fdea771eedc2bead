//! The registry in the embedded store ([`crate::queue::registry`]): its tables (created by
//! [`SCHEMA`] at open, so a queue written by an older mx2 gains them), the changes the writer
//! thread runs inside its transaction, the reads, and the in-process watchers the writer
//! notifies once a change is committed.
//!
//! Every change takes the next number of `registry_seq` (one row) in the same transaction as
//! the change itself: numbers are gap-free and in commit order (there is one writer).

use crate::queue::registry::{Entry, Expect, Written};
use rusqlite::{Connection, OptionalExtension, params};
use std::sync::{Arc, Mutex};
use tokio::sync::Notify;

pub(super) const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS registry (
    kind TEXT NOT NULL,
    name TEXT NOT NULL,
    value TEXT NOT NULL,
    rev INTEGER NOT NULL,
    PRIMARY KEY (kind, name)
);
CREATE TABLE IF NOT EXISTS registry_seq (
    id INTEGER PRIMARY KEY CHECK (id = 0),
    last INTEGER NOT NULL
);
INSERT OR IGNORE INTO registry_seq (id, last) VALUES (0, 0);
";

/// A change to one entry, as the writer runs it.
pub(super) enum Change {
    Put {
        kind: String,
        name: String,
        value: String,
        expect: Expect,
    },
    /// Removes the entry (at revision `rev`, when given).
    Delete {
        kind: String,
        name: String,
        rev: Option<i64>,
    },
}

/// Applies a change if the entry is as it expects: `Done` with the change's number, or
/// `Conflict` (nothing written, no number taken).
pub(super) fn apply(c: &Connection, change: &Change) -> rusqlite::Result<Written> {
    let (kind, name) = match change {
        Change::Put { kind, name, .. } | Change::Delete { kind, name, .. } => (kind, name),
    };
    let current: Option<i64> = c
        .prepare_cached("SELECT rev FROM registry WHERE kind = ?1 AND name = ?2")?
        .query_row(params![kind, name], |r| r.get(0))
        .optional()?;
    let expected = match change {
        Change::Put {
            expect: Expect::Absent,
            ..
        } => current.is_none(),
        Change::Put {
            expect: Expect::Rev(rev),
            ..
        } => current == Some(*rev),
        Change::Delete { rev, .. } => current.is_some() && rev.is_none_or(|r| current == Some(r)),
    };
    if !expected {
        return Ok(Written::Conflict);
    }
    let rev: i64 = c
        .prepare_cached("UPDATE registry_seq SET last = last + 1 WHERE id = 0 RETURNING last")?
        .query_row([], |r| r.get(0))?;
    match change {
        Change::Put { value, .. } => c
            .prepare_cached(
                "INSERT OR REPLACE INTO registry (kind, name, value, rev) VALUES (?1, ?2, ?3, ?4)",
            )?
            .execute(params![kind, name, value, rev])?,
        Change::Delete { .. } => c
            .prepare_cached("DELETE FROM registry WHERE kind = ?1 AND name = ?2")?
            .execute(params![kind, name])?,
    };
    Ok(Written::Done(rev))
}

/// Every entry, ordered by kind then name.
pub(super) fn entries(c: &Connection) -> rusqlite::Result<Vec<Entry>> {
    let mut stmt =
        c.prepare_cached("SELECT kind, name, value, rev FROM registry ORDER BY kind, name")?;
    let rows = stmt.query_map([], |r| {
        Ok(Entry {
            kind: r.get(0)?,
            name: r.get(1)?,
            value: r.get(2)?,
            rev: r.get(3)?,
        })
    })?;
    rows.collect()
}

/// The number of the last change (0 when there never was one).
pub(super) fn version(c: &Connection) -> rusqlite::Result<i64> {
    c.query_row(
        "SELECT COALESCE((SELECT last FROM registry_seq WHERE id = 0), 0)",
        [],
        |r| r.get(0),
    )
}

/// Who wants to hear of registry changes in this process (see
/// [`crate::queue::Store::watch_registry`]).
#[derive(Default)]
pub(super) struct Watchers(Mutex<Vec<Arc<Notify>>>);

impl Watchers {
    pub(super) fn add(&self, changed: Arc<Notify>) {
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(changed);
    }

    /// Tells every watcher that the registry changed. `notify_one` keeps a permit for a
    /// watcher that is busy (reloading), so a change made meanwhile is not missed.
    pub(super) fn notify(&self) {
        for n in self.0.lock().unwrap_or_else(|e| e.into_inner()).iter() {
            n.notify_one();
        }
    }
}
