//! Outbound TLS state in the embedded store: each domain's cached MTA-STS policy
//! (`sts_policies`) and the TLS-RPT session counters (`tlsrpt_counts`), created by
//! [`SCHEMA`] at open; changes run by the writer thread, reads on the reporting connection.

use crate::queue::{StoredStsPolicy, TlsRptCount};
use rusqlite::{Connection, OptionalExtension, params};

pub(super) const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS sts_policies (
    domain TEXT PRIMARY KEY,
    id TEXT NOT NULL,
    policy TEXT NOT NULL,
    fetched_ms INTEGER NOT NULL,
    expires_ms INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS tlsrpt_counts (
    day INTEGER NOT NULL,
    domain TEXT NOT NULL,
    policy_type TEXT NOT NULL,
    result TEXT NOT NULL,
    mx_host TEXT NOT NULL,
    count INTEGER NOT NULL,
    PRIMARY KEY (day, domain, policy_type, result, mx_host)
);
";

pub(super) fn policy(c: &Connection, domain: &str) -> rusqlite::Result<Option<StoredStsPolicy>> {
    c.prepare_cached(
        "SELECT domain, id, policy, fetched_ms, expires_ms FROM sts_policies WHERE domain = ?1",
    )?
    .query_row([domain], |r| {
        Ok(StoredStsPolicy {
            domain: r.get(0)?,
            id: r.get(1)?,
            policy: r.get(2)?,
            fetched_ms: r.get(3)?,
            expires_ms: r.get(4)?,
        })
    })
    .optional()
}

pub(super) fn put(c: &Connection, p: &StoredStsPolicy) -> rusqlite::Result<()> {
    c.prepare_cached(
        "INSERT OR REPLACE INTO sts_policies (domain, id, policy, fetched_ms, expires_ms)
         VALUES (?1, ?2, ?3, ?4, ?5)",
    )?
    .execute(params![
        p.domain,
        p.id,
        p.policy,
        p.fetched_ms,
        p.expires_ms
    ])?;
    Ok(())
}

pub(super) fn add(c: &Connection, n: &TlsRptCount) -> rusqlite::Result<()> {
    c.prepare_cached(
        "INSERT INTO tlsrpt_counts (day, domain, policy_type, result, mx_host, count)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6)
         ON CONFLICT (day, domain, policy_type, result, mx_host)
         DO UPDATE SET count = count + excluded.count",
    )?
    .execute(params![
        n.day,
        n.domain,
        n.policy_type,
        n.result,
        n.mx_host,
        n.count
    ])?;
    Ok(())
}

/// Every counter of a day before `before_day` (read on the reporting connection).
pub(super) fn before(c: &Connection, before_day: i64) -> rusqlite::Result<Vec<TlsRptCount>> {
    let mut st = c.prepare_cached(
        "SELECT day, domain, policy_type, result, mx_host, count FROM tlsrpt_counts
         WHERE day < ?1 ORDER BY day, domain, policy_type, result, mx_host",
    )?;
    st.query_map([before_day], |r| {
        Ok(TlsRptCount {
            day: r.get(0)?,
            domain: r.get(1)?,
            policy_type: r.get(2)?,
            result: r.get(3)?,
            mx_host: r.get(4)?,
            count: r.get(5)?,
        })
    })?
    .collect()
}

/// Drops the counters of days before `before_day` (run by the writer).
pub(super) fn forget(c: &Connection, before_day: i64) -> rusqlite::Result<u64> {
    Ok(
        c.prepare_cached("DELETE FROM tlsrpt_counts WHERE day < ?1")?
            .execute([before_day])? as u64,
    )
}
