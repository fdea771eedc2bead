//! Primaries' outage history in the embedded store: its own table (created by [`SCHEMA`] at
//! open), written by the writer thread only when a primary's health changes, read at start so
//! that a restarted mx2 reports what it last knew.

use crate::events::{OUTAGES_KEPT, Outage};
use crate::queue::{OutageChange, RouteOutages, group_outages};
use rusqlite::{Connection, params};

pub(super) const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS primary_outages (
    id INTEGER PRIMARY KEY,
    route TEXT NOT NULL,
    down_ms INTEGER NOT NULL,
    up_ms INTEGER,
    held INTEGER,
    drained_ms INTEGER
);
CREATE INDEX IF NOT EXISTS primary_outages_route ON primary_outages(route, id);
";

/// Applies one change (see [`crate::queue::Store::record_outage`]).
pub(super) fn record(c: &Connection, route: &str, change: OutageChange) -> rusqlite::Result<()> {
    match change {
        OutageChange::Began { at_ms } => {
            let opened = c
                .prepare_cached(
                    "INSERT INTO primary_outages (route, down_ms) SELECT ?1, ?2
                     WHERE NOT EXISTS
                        (SELECT 1 FROM primary_outages WHERE route = ?1 AND up_ms IS NULL)",
                )?
                .execute(params![route, at_ms])?;
            if opened > 0 {
                c.prepare_cached(
                    "DELETE FROM primary_outages WHERE route = ?1 AND id NOT IN
                        (SELECT id FROM primary_outages WHERE route = ?1 ORDER BY id DESC LIMIT ?2)",
                )?
                .execute(params![route, OUTAGES_KEPT as i64])?;
            }
        }
        OutageChange::Ended { at_ms, held } => {
            c.prepare_cached(
                "UPDATE primary_outages SET up_ms = ?2, held = ?3 WHERE route = ?1 AND up_ms IS NULL",
            )?
            .execute(params![route, at_ms, i64::try_from(held).unwrap_or(i64::MAX)])?;
        }
        OutageChange::Drained { at_ms } => {
            c.prepare_cached(
                "UPDATE primary_outages SET drained_ms = ?2
                 WHERE id = (SELECT MAX(id) FROM primary_outages WHERE route = ?1)
                   AND up_ms IS NOT NULL AND drained_ms IS NULL",
            )?
            .execute(params![route, at_ms])?;
        }
    }
    Ok(())
}

/// Every route's last `per_route` outages, oldest first.
pub(super) fn load(c: &Connection, per_route: usize) -> rusqlite::Result<Vec<RouteOutages>> {
    let mut stmt = c.prepare_cached(
        "SELECT route, down_ms, up_ms, held, drained_ms FROM primary_outages ORDER BY route, id",
    )?;
    let rows = stmt.query_map([], |r| {
        Ok((
            r.get::<_, String>(0)?,
            Outage {
                down_ms: r.get(1)?,
                up_ms: r.get(2)?,
                held: r
                    .get::<_, Option<i64>>(3)?
                    .map(|h| u64::try_from(h).unwrap_or(0)),
                drained_ms: r.get(4)?,
            },
        ))
    })?;
    Ok(group_outages(
        rows.collect::<Result<Vec<_>, _>>()?,
        per_route,
    ))
}
