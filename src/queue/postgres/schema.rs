//! The PostgreSQL schema and its migrations: numbered steps, applied in order at start, in
//! one transaction that holds an exclusive lock on `mx2_schema`, so several nodes starting at
//! once apply each step once (the others wait, then find it done). A plain table lock, not
//! an advisory lock, so the same code can serve databases without advisory locks.

use super::pg_error;
use crate::queue::StoreError;
use std::time::Duration;
use tokio_postgres::error::SqlState;
use tracing::{info, warn};

/// Migration steps; step N brings the schema from version N to N + 1. Append only.
const MIGRATIONS: &[&str] = &[
    "
CREATE TABLE messages (
    id TEXT COLLATE \"C\" PRIMARY KEY,
    received_at BIGINT NOT NULL,
    sender TEXT NOT NULL,
    mail_params TEXT NOT NULL,
    client TEXT NOT NULL,
    helo TEXT NOT NULL,
    size BIGINT NOT NULL,
    chunks INTEGER NOT NULL,
    auth BOOLEAN
);
CREATE TABLE bodies (
    message_id TEXT COLLATE \"C\" NOT NULL REFERENCES messages (id) ON DELETE CASCADE,
    seq INTEGER NOT NULL,
    chunk BYTEA NOT NULL,
    PRIMARY KEY (message_id, seq)
);
CREATE TABLE recipients (
    id BIGSERIAL PRIMARY KEY,
    message_id TEXT COLLATE \"C\" NOT NULL REFERENCES messages (id) ON DELETE CASCADE,
    address TEXT NOT NULL,
    domain TEXT NOT NULL,
    params TEXT NOT NULL,
    status INTEGER NOT NULL DEFAULT 0,
    claimed_by TEXT,
    lease_until BIGINT,
    attempts INTEGER NOT NULL DEFAULT 0,
    next_attempt BIGINT NOT NULL,
    last_reply TEXT,
    warned BOOLEAN NOT NULL DEFAULT false,
    held BOOLEAN NOT NULL DEFAULT false
);
CREATE INDEX recipients_due ON recipients (next_attempt) WHERE status = 0 AND NOT held;
CREATE INDEX recipients_message ON recipients (message_id);
CREATE INDEX recipients_domain ON recipients (domain) WHERE status = 0;
CREATE INDEX recipients_claimed ON recipients (claimed_by) WHERE claimed_by IS NOT NULL;
CREATE TABLE recipient_cache (
    key TEXT PRIMARY KEY,
    exists_ BOOLEAN NOT NULL,
    expires_at BIGINT NOT NULL
);
CREATE TABLE primaries (
    route TEXT PRIMARY KEY,
    up BOOLEAN NOT NULL,
    changed_at BIGINT NOT NULL,
    probed_by TEXT,
    probe_until BIGINT
);
",
    super::outages::SCHEMA,
    super::registry::SCHEMA,
    super::drills::SCHEMA,
    super::inbox::SCHEMA,
    super::inbox::CODES_SCHEMA,
    super::sts::SCHEMA,
    super::sts::REPORT_SCHEMA,
    super::counts::SCHEMA,
    super::kept::SCHEMA,
    super::counts::LEANER,
    super::sweep::SCHEMA,
    super::content::UNCOMPRESSED,
];

/// The schema version this mx2 writes.
pub const VERSION: i32 = MIGRATIONS.len() as i32;

/// Brings the database up to [`VERSION`]; refuses a database written by a newer mx2.
pub(super) async fn migrate(client: &mut deadpool_postgres::Object) -> Result<(), StoreError> {
    // Nodes starting at once may race to create the version table itself: the loser of that
    // race sees a duplicate and tries again (then the table is there).
    let mut tries = 0;
    loop {
        match client
            .batch_execute("CREATE TABLE IF NOT EXISTS mx2_schema (version INTEGER NOT NULL)")
            .await
        {
            Ok(()) => break,
            Err(e)
                if tries < 5
                    && matches!(
                        e.code(),
                        Some(&SqlState::UNIQUE_VIOLATION)
                            | Some(&SqlState::DUPLICATE_TABLE)
                            | Some(&SqlState::DUPLICATE_OBJECT)
                    ) =>
            {
                tries += 1;
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(e) => return Err(pg_error(e)),
        }
    }
    // A step that changes a table waits for the queries and any VACUUM on it, and while it
    // waits every other node's queries on that table wait behind it: a step gives up after
    // LOCK_WAIT, lets them through, and the whole migration is tried again.
    let mut waits = 0;
    loop {
        match migrate_once(client).await {
            Err(e) if e.code() == Some(&SqlState::LOCK_NOT_AVAILABLE) && waits < LOCK_RETRIES => {
                waits += 1;
                warn!(
                    error = %e,
                    attempt = waits,
                    "PostgreSQL queue schema: a table is busy (a long query or VACUUM); trying again"
                );
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
            Err(e) if e.code() == Some(&SqlState::LOCK_NOT_AVAILABLE) => {
                return Err(StoreError::Backend(format!(
                    "cannot upgrade the PostgreSQL queue's schema to version {VERSION}: a table \
                     stayed busy for {} tries of {LOCK_WAIT} ({e}); find what holds it \
                     (SELECT pid, query FROM pg_stat_activity WHERE state <> 'idle'), \
                     let it finish or end it, and start mx2 again",
                    LOCK_RETRIES + 1
                )));
            }
            Err(e) => return Err(pg_error(e)),
            Ok(Err(refused)) => return Err(refused),
            Ok(Ok(())) => return Ok(()),
        }
    }
}

/// How long one migration step may wait for a table's lock.
const LOCK_WAIT: &str = "10s";

/// How many times a migration that found a table busy is tried again (about five minutes).
const LOCK_RETRIES: u32 = 30;

/// One try of the migration, in one transaction; the outer error is PostgreSQL's, the
/// inner a refusal (a newer schema).
async fn migrate_once(
    client: &mut deadpool_postgres::Object,
) -> Result<Result<(), StoreError>, tokio_postgres::Error> {
    let tx = client.transaction().await?;
    tx.batch_execute(&format!(
        "SET LOCAL lock_timeout = '{LOCK_WAIT}'; LOCK TABLE mx2_schema IN ACCESS EXCLUSIVE MODE"
    ))
    .await?;
    let found = tx
        .query_opt("SELECT version FROM mx2_schema", &[])
        .await?
        .map(|r| r.try_get::<_, i32>(0))
        .transpose()?;
    let version = found.unwrap_or(0);
    if version > VERSION {
        return Ok(Err(StoreError::Backend(format!(
            "the PostgreSQL queue has schema version {version}, written by a newer mx2; this one knows up to {VERSION}"
        ))));
    }
    for sql in MIGRATIONS.iter().skip(version as usize) {
        tx.batch_execute(sql).await?;
    }
    if found.is_none() {
        tx.execute("INSERT INTO mx2_schema (version) VALUES ($1)", &[&VERSION])
            .await?;
    } else if version < VERSION {
        tx.execute("UPDATE mx2_schema SET version = $1", &[&VERSION])
            .await?;
    }
    tx.commit().await?;
    if version < VERSION {
        info!(
            from = version,
            to = VERSION,
            "PostgreSQL queue schema migrated"
        );
    }
    Ok(Ok(()))
}
