//! Primaries' outage history on PostgreSQL: one history per primary for the whole cluster
//! (the nodes share the probing and the held mail, so they share the timeline too). The
//! first node to see a change records it: a partial unique index allows one open outage per
//! route, so two nodes finding a primary down at once open it once.

use super::pg_error;
use crate::events::{OUTAGES_KEPT, Outage};
use crate::queue::{OutageChange, RouteOutages, StoreError, group_outages};

/// Migration step 2 (see `schema::MIGRATIONS`).
pub(super) const SCHEMA: &str = "
CREATE TABLE primary_outages (
    id BIGSERIAL PRIMARY KEY,
    route TEXT COLLATE \"C\" NOT NULL,
    down_ms BIGINT NOT NULL,
    up_ms BIGINT,
    held BIGINT,
    drained_ms BIGINT
);
CREATE UNIQUE INDEX primary_outages_open ON primary_outages (route) WHERE up_ms IS NULL;
CREATE INDEX primary_outages_route ON primary_outages (route, id);
";

/// Applies one change (see [`crate::queue::Store::record_outage`]).
pub(super) async fn record(
    c: &mut deadpool_postgres::Object,
    route: &str,
    change: OutageChange,
) -> Result<(), StoreError> {
    let tx = c.transaction().await.map_err(pg_error)?;
    match change {
        OutageChange::Began { at_ms } => {
            let opened = tx
                .execute(
                    "INSERT INTO primary_outages (route, down_ms) VALUES ($1, $2)
                     ON CONFLICT (route) WHERE up_ms IS NULL DO NOTHING",
                    &[&route, &at_ms],
                )
                .await
                .map_err(pg_error)?;
            if opened > 0 {
                tx.execute(
                    "DELETE FROM primary_outages WHERE route = $1 AND id NOT IN
                        (SELECT id FROM primary_outages WHERE route = $1 ORDER BY id DESC LIMIT $2)",
                    &[&route, &(OUTAGES_KEPT as i64)],
                )
                .await
                .map_err(pg_error)?;
            }
        }
        OutageChange::Ended { at_ms, held } => {
            tx.execute(
                "UPDATE primary_outages SET up_ms = $2, held = $3 WHERE route = $1 AND up_ms IS NULL",
                &[&route, &at_ms, &i64::try_from(held).unwrap_or(i64::MAX)],
            )
            .await
            .map_err(pg_error)?;
        }
        OutageChange::Drained { at_ms } => {
            tx.execute(
                "UPDATE primary_outages SET drained_ms = $2
                 WHERE id = (SELECT MAX(id) FROM primary_outages WHERE route = $1)
                   AND up_ms IS NOT NULL AND drained_ms IS NULL",
                &[&route, &at_ms],
            )
            .await
            .map_err(pg_error)?;
        }
    }
    tx.commit().await.map_err(pg_error)
}

/// Every route's last `per_route` outages, oldest first.
pub(super) async fn load(
    c: &deadpool_postgres::Object,
    per_route: usize,
) -> Result<Vec<RouteOutages>, StoreError> {
    let rows = c
        .query(
            "SELECT route, down_ms, up_ms, held, drained_ms FROM primary_outages ORDER BY route, id",
            &[],
        )
        .await
        .map_err(pg_error)?;
    let mut out = Vec::with_capacity(rows.len());
    for r in rows {
        let held: Option<i64> = r.try_get(3).map_err(pg_error)?;
        out.push((
            r.try_get(0).map_err(pg_error)?,
            Outage {
                down_ms: r.try_get(1).map_err(pg_error)?,
                up_ms: r.try_get(2).map_err(pg_error)?,
                held: held.map(|h| u64::try_from(h).unwrap_or(0)),
                drained_ms: r.try_get(4).map_err(pg_error)?,
            },
        ));
    }
    Ok(group_outages(out, per_route))
}
