//! Fire drill results in the embedded store: their own table (created by [`SCHEMA`] at
//! open), each domain's last few kept, written by the writer thread.

use crate::queue::{DRILL_PASSED, DRILL_SKIPPED, DrillSummary, StoredDrill};
use rusqlite::{Connection, params};

pub(super) const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS drills (
    id INTEGER PRIMARY KEY,
    domain TEXT NOT NULL,
    at_ms INTEGER NOT NULL,
    outcome TEXT NOT NULL,
    duration_ms INTEGER NOT NULL,
    result TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS drills_domain ON drills(domain, id);
";

/// Keeps one result and the domain's last `keep`.
pub(super) fn record(c: &Connection, d: &StoredDrill, keep: usize) -> rusqlite::Result<()> {
    c.prepare_cached(
        "INSERT INTO drills (domain, at_ms, outcome, duration_ms, result) VALUES (?1, ?2, ?3, ?4, ?5)",
    )?
    .execute(params![d.domain, d.at_ms, d.outcome, d.duration_ms, d.result])?;
    c.prepare_cached(
        "DELETE FROM drills WHERE domain = ?1 AND id NOT IN
            (SELECT id FROM drills WHERE domain = ?1 ORDER BY id DESC LIMIT ?2)",
    )?
    .execute(params![d.domain, keep as i64])?;
    Ok(())
}

const COLUMNS: &str = "domain, at_ms, outcome, duration_ms, result";

fn row(r: &rusqlite::Row<'_>) -> rusqlite::Result<StoredDrill> {
    Ok(StoredDrill {
        domain: r.get(0)?,
        at_ms: r.get(1)?,
        outcome: r.get(2)?,
        duration_ms: r.get(3)?,
        result: r.get(4)?,
    })
}

/// The domain's last `limit` drills, newest first.
pub(super) fn load(
    c: &Connection,
    domain: &str,
    limit: usize,
) -> rusqlite::Result<Vec<StoredDrill>> {
    let mut st = c.prepare_cached(&format!(
        "SELECT {COLUMNS} FROM drills WHERE domain = ?1 ORDER BY id DESC LIMIT ?2"
    ))?;
    st.query_map(params![domain, limit as i64], row)?.collect()
}

/// Each domain's last drill that ran, and when one last passed.
pub(super) fn summaries(c: &Connection) -> rusqlite::Result<Vec<DrillSummary>> {
    let mut st = c.prepare_cached(&format!(
        "SELECT {COLUMNS},
            (SELECT MAX(p.at_ms) FROM drills p WHERE p.domain = d.domain AND p.outcome = ?2)
         FROM drills d
         WHERE d.id = (SELECT MAX(l.id) FROM drills l WHERE l.domain = d.domain AND l.outcome <> ?1)
         ORDER BY d.domain"
    ))?;
    st.query_map(params![DRILL_SKIPPED, DRILL_PASSED], |r| {
        Ok(DrillSummary {
            last: row(r)?,
            last_passed_ms: r.get(5)?,
        })
    })?
    .collect()
}
