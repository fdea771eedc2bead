//! Outbound TLS state on PostgreSQL, shared by the cluster: each domain's cached MTA-STS
//! policy (migration step 7, so a policy fetched by one node serves all) and the TLS-RPT
//! session counters (step 8), taken by one node when it reports a day.

use super::pg_error;
use crate::queue::{StoreError, StoredStsPolicy, TlsRptCount};

/// Migration step 7 (see `schema::MIGRATIONS`).
pub(super) const SCHEMA: &str = "
CREATE TABLE sts_policies (
    domain TEXT COLLATE \"C\" PRIMARY KEY,
    id TEXT NOT NULL,
    policy TEXT NOT NULL,
    fetched_ms BIGINT NOT NULL,
    expires_ms BIGINT NOT NULL
);
";

/// Migration step 8.
pub(super) const REPORT_SCHEMA: &str = "
CREATE TABLE tlsrpt_counts (
    day BIGINT NOT NULL,
    domain TEXT COLLATE \"C\" NOT NULL,
    policy_type TEXT NOT NULL,
    result TEXT NOT NULL,
    mx_host TEXT NOT NULL,
    count BIGINT NOT NULL,
    PRIMARY KEY (day, domain, policy_type, result, mx_host)
);
";

pub(super) async fn policy(
    c: &deadpool_postgres::Object,
    domain: &str,
) -> Result<Option<StoredStsPolicy>, StoreError> {
    let row = c
        .query_opt(
            "SELECT domain, id, policy, fetched_ms, expires_ms FROM sts_policies WHERE domain = $1",
            &[&domain],
        )
        .await
        .map_err(pg_error)?;
    row.map(|r| {
        Ok(StoredStsPolicy {
            domain: r.try_get(0).map_err(pg_error)?,
            id: r.try_get(1).map_err(pg_error)?,
            policy: r.try_get(2).map_err(pg_error)?,
            fetched_ms: r.try_get(3).map_err(pg_error)?,
            expires_ms: r.try_get(4).map_err(pg_error)?,
        })
    })
    .transpose()
}

pub(super) async fn put(
    c: &deadpool_postgres::Object,
    p: &StoredStsPolicy,
) -> Result<(), StoreError> {
    c.execute(
        "INSERT INTO sts_policies (domain, id, policy, fetched_ms, expires_ms)
         VALUES ($1, $2, $3, $4, $5)
         ON CONFLICT (domain) DO UPDATE SET id = excluded.id, policy = excluded.policy,
             fetched_ms = excluded.fetched_ms, expires_ms = excluded.expires_ms",
        &[&p.domain, &p.id, &p.policy, &p.fetched_ms, &p.expires_ms],
    )
    .await
    .map_err(pg_error)?;
    Ok(())
}

pub(super) async fn add(c: &deadpool_postgres::Object, n: &TlsRptCount) -> Result<(), StoreError> {
    c.execute(
        "INSERT INTO tlsrpt_counts (day, domain, policy_type, result, mx_host, count)
         VALUES ($1, $2, $3, $4, $5, $6)
         ON CONFLICT (day, domain, policy_type, result, mx_host)
         DO UPDATE SET count = tlsrpt_counts.count + excluded.count",
        &[
            &n.day,
            &n.domain,
            &n.policy_type,
            &n.result,
            &n.mx_host,
            &n.count,
        ],
    )
    .await
    .map_err(pg_error)?;
    Ok(())
}

/// Deletes and returns the counters of days before `before_day` in one statement, so two
/// nodes never report the same sessions.
pub(super) async fn take(
    c: &deadpool_postgres::Object,
    before_day: i64,
) -> Result<Vec<TlsRptCount>, StoreError> {
    let rows = c
        .query(
            "DELETE FROM tlsrpt_counts WHERE day < $1
             RETURNING day, domain, policy_type, result, mx_host, count",
            &[&before_day],
        )
        .await
        .map_err(pg_error)?;
    let mut out = rows
        .iter()
        .map(|r| {
            Ok(TlsRptCount {
                day: r.try_get(0).map_err(pg_error)?,
                domain: r.try_get(1).map_err(pg_error)?,
                policy_type: r.try_get(2).map_err(pg_error)?,
                result: r.try_get(3).map_err(pg_error)?,
                mx_host: r.try_get(4).map_err(pg_error)?,
                count: r.try_get(5).map_err(pg_error)?,
            })
        })
        .collect::<Result<Vec<_>, StoreError>>()?;
    out.sort_by(|a, b| {
        (a.day, &a.domain, &a.policy_type, &a.result, &a.mx_host).cmp(&(
            b.day,
            &b.domain,
            &b.policy_type,
            &b.result,
            &b.mx_host,
        ))
    });
    Ok(out)
}
