//! Fire drill results on PostgreSQL: one history per domain for the whole cluster (any node
//! may run a domain's drill), each domain's last few kept.

use super::pg_error;
use crate::queue::{DRILL_PASSED, DRILL_SKIPPED, DrillSummary, StoreError, StoredDrill};

/// Migration step 4 (see `schema::MIGRATIONS`).
pub(super) const SCHEMA: &str = "
CREATE TABLE drills (
    id BIGSERIAL PRIMARY KEY,
    domain TEXT COLLATE \"C\" NOT NULL,
    at_ms BIGINT NOT NULL,
    outcome TEXT NOT NULL,
    duration_ms BIGINT NOT NULL,
    result TEXT NOT NULL
);
CREATE INDEX drills_domain ON drills (domain, id);
";

/// Keeps one result and the domain's last `keep`.
pub(super) async fn record(
    c: &mut deadpool_postgres::Object,
    d: &StoredDrill,
    keep: usize,
) -> Result<(), StoreError> {
    let tx = c.transaction().await.map_err(pg_error)?;
    tx.execute(
        "INSERT INTO drills (domain, at_ms, outcome, duration_ms, result) VALUES ($1, $2, $3, $4, $5)",
        &[&d.domain, &d.at_ms, &d.outcome, &d.duration_ms, &d.result],
    )
    .await
    .map_err(pg_error)?;
    tx.execute(
        "DELETE FROM drills WHERE domain = $1 AND id NOT IN
            (SELECT id FROM drills WHERE domain = $1 ORDER BY id DESC LIMIT $2)",
        &[&d.domain, &(keep as i64)],
    )
    .await
    .map_err(pg_error)?;
    tx.commit().await.map_err(pg_error)
}

const COLUMNS: &str = "domain, at_ms, outcome, duration_ms, result";

fn row(r: &tokio_postgres::Row) -> Result<StoredDrill, StoreError> {
    Ok(StoredDrill {
        domain: r.try_get(0).map_err(pg_error)?,
        at_ms: r.try_get(1).map_err(pg_error)?,
        outcome: r.try_get(2).map_err(pg_error)?,
        duration_ms: r.try_get(3).map_err(pg_error)?,
        result: r.try_get(4).map_err(pg_error)?,
    })
}

/// The domain's last `limit` drills, newest first.
pub(super) async fn load(
    c: &deadpool_postgres::Object,
    domain: &str,
    limit: usize,
) -> Result<Vec<StoredDrill>, StoreError> {
    let rows = c
        .query(
            &format!("SELECT {COLUMNS} FROM drills WHERE domain = $1 ORDER BY id DESC LIMIT $2"),
            &[&domain, &(limit as i64)],
        )
        .await
        .map_err(pg_error)?;
    rows.iter().map(row).collect()
}

/// Each domain's last drill that ran, and when one last passed.
pub(super) async fn summaries(
    c: &deadpool_postgres::Object,
) -> Result<Vec<DrillSummary>, StoreError> {
    let rows = c
        .query(
            &format!(
                "SELECT {COLUMNS},
                    (SELECT MAX(p.at_ms) FROM drills p WHERE p.domain = d.domain AND p.outcome = $2)
                 FROM drills d
                 WHERE d.id = (SELECT MAX(l.id) FROM drills l
                               WHERE l.domain = d.domain AND l.outcome <> $1)
                 ORDER BY d.domain"
            ),
            &[&DRILL_SKIPPED, &DRILL_PASSED],
        )
        .await
        .map_err(pg_error)?;
    rows.iter()
        .map(|r| {
            Ok(DrillSummary {
                last: row(r)?,
                last_passed_ms: r.try_get(5).map_err(pg_error)?,
            })
        })
        .collect()
}
