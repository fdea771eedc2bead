//! The PostgreSQL queue's maintained counters, so that operators' totals (`Store::stats`,
//! `Store::depth`: status, /metrics, the dashboard, admission's queue caps) never scan the
//! queue, with several nodes writing at once. The same figures as the embedded store's
//! `embedded::counts`: per recipient domain, messages with a pending recipient there, pending
//! recipients, held ones, those messages' bytes; for the whole queue (the row of domain `''`),
//! messages and bytes.
//!
//! Writers never update a shared row: statement-level triggers on `recipients` and
//! `messages` append what each statement changed to `queue_deltas` (one row per domain and
//! statement), in the statement's own transaction, so a rolled-back or cut-off transaction
//! (a node killed mid-way) leaves no delta behind, and no statement can forget them. Every
//! node runs [`fold`] each second; one at a time (an advisory lock) it moves the deltas it
//! sees into `queue_counts` in one transaction. Readers add `queue_counts` and whatever
//! deltas are not folded yet, in one snapshot, so a fold is never seen half done.
//!
//! Whether a message counts in a domain depends on its other recipients there, which
//! another transaction may be changing at the same moment (two nodes recording outcomes for
//! recipients of one message). Before looking at them a trigger locks the message row
//! (`FOR NO KEY UPDATE`, which foreign-key checks do not wait for) and then reads them in a
//! fresh snapshot (READ COMMITTED, as every mx2 transaction): the transactions changing one
//! message's recipients take their turn, and each sees what the earlier ones committed.
//! Recipients are inserted only with their message (all in one statement), so an insert
//! needs no look at other rows. A message deleted with recipients still pending has them
//! deleted first by a row trigger, while its size can still be read.
//!
//! The oldest message per domain is an index lookup (`recipients_domain_message`, the
//! domain's smallest pending queue id; queue ids are time-ordered), not a counter.

use super::{Inner, pg_error, pool_error};
use crate::queue::{Depth, Stats, StoreError};
use std::sync::Weak;
use std::time::Duration;
use tokio_postgres::Row;
use tracing::{debug, warn};

/// How often each node tries to fold: the deltas a reader adds up are at most about this
/// old (a second of writes from every node).
pub(super) const FOLD_EVERY: Duration = Duration::from_secs(1);

/// Migration step 9: the counters, their triggers and the index, built from the rows once.
/// Taking the table locks first keeps writers of an older mx2 out until the counters are
/// built and the triggers in place, so no change slips between the two.
pub(super) const SCHEMA: &str = "
LOCK TABLE messages, recipients IN SHARE ROW EXCLUSIVE MODE;
DROP INDEX IF EXISTS recipients_domain;
CREATE INDEX recipients_domain_message ON recipients (domain, message_id) WHERE status = 0;
CREATE TABLE queue_counts (
    domain TEXT COLLATE \"C\" PRIMARY KEY,
    messages BIGINT NOT NULL,
    recipients BIGINT NOT NULL,
    held BIGINT NOT NULL,
    bytes BIGINT NOT NULL
);
CREATE TABLE queue_deltas (
    domain TEXT COLLATE \"C\" NOT NULL,
    messages BIGINT NOT NULL,
    recipients BIGINT NOT NULL,
    held BIGINT NOT NULL,
    bytes BIGINT NOT NULL
);

-- Messages in and out: the whole queue's row.
CREATE FUNCTION mx2_count_messages_in() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO queue_deltas (domain, messages, recipients, held, bytes)
    SELECT '', COUNT(*), 0, 0, COALESCE(SUM(size), 0) FROM added HAVING COUNT(*) > 0;
    RETURN NULL;
END $$;
CREATE FUNCTION mx2_count_messages_out() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO queue_deltas (domain, messages, recipients, held, bytes)
    SELECT '', -COUNT(*), 0, 0, -COALESCE(SUM(size), 0) FROM gone HAVING COUNT(*) > 0;
    RETURN NULL;
END $$;
-- A message leaving with recipients still pending: they go first, while its size is there.
CREATE FUNCTION mx2_drop_pending() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    DELETE FROM recipients WHERE message_id = OLD.id AND status = 0;
    RETURN OLD;
END $$;

-- New recipients come with their message, in one statement: each (message, domain) is new.
CREATE FUNCTION mx2_count_recipients_in() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO queue_deltas (domain, messages, recipients, held, bytes)
    SELECT g.domain, COUNT(*), SUM(g.n), SUM(g.h),
           SUM(COALESCE((SELECT m.size FROM messages m WHERE m.id = g.message_id), 0))
    FROM (SELECT domain, message_id, COUNT(*) AS n, COUNT(*) FILTER (WHERE held) AS h
          FROM added WHERE status = 0 GROUP BY domain, message_id) g
    GROUP BY g.domain;
    RETURN NULL;
END $$;

-- Recipients whose pending count in (message, domain) changed by `dn` (held ones by `dh`),
-- one element of each array per pair: the message rows are locked, then each pair whose
-- pending count changed counts in or out of its domain by what its pending recipients are
-- now, read in a fresh snapshot, against what they were before the statement (now - dn).
CREATE FUNCTION mx2_count_changes(ids TEXT[], domains TEXT[], dn BIGINT[], dh BIGINT[])
RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    PERFORM 1 FROM messages
    WHERE id = ANY (ARRAY(SELECT c.id FROM unnest(ids, dn) AS c(id, dn) WHERE c.dn <> 0))
    ORDER BY id FOR NO KEY UPDATE;
    INSERT INTO queue_deltas (domain, messages, recipients, held, bytes)
    SELECT t.domain, SUM(t.dm), SUM(t.dn), SUM(t.dh),
           SUM(CASE WHEN t.dm = 0 THEN 0 ELSE t.dm * COALESCE(
               (SELECT m.size FROM messages m WHERE m.id = t.id), 0) END)
    FROM (SELECT c.id, c.domain, c.dn, c.dh,
                 CASE WHEN c.dn = 0 THEN 0 ELSE
                     (SELECT (COUNT(*) > 0)::int - (COUNT(*) - c.dn > 0)::int FROM recipients x
                      WHERE x.domain = c.domain AND x.message_id = c.id AND x.status = 0)
                 END AS dm
          FROM unnest(ids, domains, dn, dh) AS c(id, domain, dn, dh)) t
    GROUP BY t.domain
    HAVING SUM(t.dm) <> 0 OR SUM(t.dn) <> 0 OR SUM(t.dh) <> 0;
END $$;

CREATE FUNCTION mx2_count_recipients_out() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF EXISTS (SELECT 1 FROM gone WHERE status = 0) THEN
        PERFORM mx2_count_changes(array_agg(message_id), array_agg(domain), array_agg(-n),
                                  array_agg(-h))
        FROM (SELECT message_id, domain, COUNT(*) AS n, COUNT(*) FILTER (WHERE held) AS h
              FROM gone WHERE status = 0 GROUP BY message_id, domain) g;
    END IF;
    RETURN NULL;
END $$;

-- Every update of recipients fires this (transition tables allow no column list): the old
-- rows counted out and the new counted in, per (message, domain), with no join (a step of
-- `make_due` changes 20,000 rows, none of them in a way that counts).
CREATE FUNCTION mx2_count_recipients_changed() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM mx2_count_changes(array_agg(message_id), array_agg(domain), array_agg(dn),
                              array_agg(dh))
    FROM (SELECT message_id, domain, SUM(p) AS dn, SUM(h) AS dh
          FROM (SELECT message_id, domain, (status = 0)::int AS p,
                       (status = 0 AND held)::int AS h FROM new_rows
                UNION ALL
                SELECT message_id, domain, -(status = 0)::int, -(status = 0 AND held)::int
                FROM old_rows) u
          GROUP BY message_id, domain
          HAVING SUM(p) <> 0 OR SUM(h) <> 0) g
    HAVING COUNT(*) > 0;
    RETURN NULL;
END $$;

CREATE TRIGGER count_messages_in AFTER INSERT ON messages
    REFERENCING NEW TABLE AS added FOR EACH STATEMENT EXECUTE FUNCTION mx2_count_messages_in();
CREATE TRIGGER count_messages_out AFTER DELETE ON messages
    REFERENCING OLD TABLE AS gone FOR EACH STATEMENT EXECUTE FUNCTION mx2_count_messages_out();
CREATE TRIGGER drop_pending_first BEFORE DELETE ON messages
    FOR EACH ROW EXECUTE FUNCTION mx2_drop_pending();
CREATE TRIGGER count_recipients_in AFTER INSERT ON recipients
    REFERENCING NEW TABLE AS added FOR EACH STATEMENT EXECUTE FUNCTION mx2_count_recipients_in();
CREATE TRIGGER count_recipients_out AFTER DELETE ON recipients
    REFERENCING OLD TABLE AS gone FOR EACH STATEMENT EXECUTE FUNCTION mx2_count_recipients_out();
CREATE TRIGGER count_recipients_changed AFTER UPDATE ON recipients
    REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION mx2_count_recipients_changed();

INSERT INTO queue_counts (domain, messages, recipients, held, bytes)
    SELECT '', COUNT(*), 0, 0, COALESCE(SUM(size), 0) FROM messages;
INSERT INTO queue_counts (domain, messages, recipients, held, bytes)
    SELECT domain, COUNT(*), SUM(n), SUM(h), SUM(size) FROM (
        SELECT r.domain, COUNT(*) AS n, COUNT(*) FILTER (WHERE r.held) AS h, MAX(m.size) AS size
        FROM recipients r JOIN messages m ON m.id = r.message_id
        WHERE r.status = 0 GROUP BY r.domain, r.message_id) t
    GROUP BY domain;
";

/// Migration step 11: the same counts for less work per delivered message, measured with
/// `bench/scale --pg-profile` (BENCHMARKS.md "What the counters cost the drain"):
/// - `mx2_count_changes` is called with arrays, so PostgreSQL planned its two statements
///   anew on every call (a custom plan each time: the generic one looked dearer for
///   arrays of unknown length); most of the counters' cost was that planning. Its
///   statements are index lookups per element whatever the arrays hold, so the generic
///   plan, made once per connection, is right for every call.
/// - A message removed with no pending recipient (every delivered one) ran a `DELETE` of
///   its pending recipients anyway, and with it a statement trigger; now only when there
///   is one.
/// - Keeping delivered mail counted through a statement trigger that every removal's
///   `UPDATE messages` fired, kept or not; now a row trigger that fires only for a row
///   whose `kept_until` is set or cleared.
pub(super) const LEANER: &str = "
ALTER FUNCTION mx2_count_changes(TEXT[], TEXT[], BIGINT[], BIGINT[])
    SET plan_cache_mode = force_generic_plan;
CREATE OR REPLACE FUNCTION mx2_drop_pending() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF EXISTS (SELECT 1 FROM recipients WHERE message_id = OLD.id AND status = 0) THEN
        DELETE FROM recipients WHERE message_id = OLD.id AND status = 0;
    END IF;
    RETURN OLD;
END $$;
DROP TRIGGER count_messages_kept ON messages;
DROP FUNCTION mx2_count_messages_kept();
CREATE FUNCTION mx2_count_message_kept() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO queue_deltas (domain, messages, recipients, held, bytes)
    SELECT '', s, 0, 0, s * NEW.size
    FROM (SELECT CASE WHEN NEW.kept_until IS NULL THEN 1 ELSE -1 END AS s) k;
    RETURN NULL;
END $$;
CREATE TRIGGER count_message_kept AFTER UPDATE OF kept_until ON messages
    FOR EACH ROW WHEN ((OLD.kept_until IS NULL) <> (NEW.kept_until IS NULL))
    EXECUTE FUNCTION mx2_count_message_kept();
";

/// The advisory lock a fold holds, so that one node at a time folds ("mx2fold").
const FOLD_LOCK: i64 = 0x006d_7832_666f_6c64;

/// Moves the deltas this transaction sees into `queue_counts`, unless another node is
/// folding right now; returns how many delta rows it folded. The deltas are deleted and
/// added in one transaction, so a reader sees them either here or there, never both.
pub(super) async fn fold(c: &mut deadpool_postgres::Object) -> Result<u64, StoreError> {
    let tx = c.transaction().await.map_err(pg_error)?;
    let mine: bool = tx
        .query_one("SELECT pg_try_advisory_xact_lock($1)", &[&FOLD_LOCK])
        .await
        .and_then(|r| r.try_get(0))
        .map_err(pg_error)?;
    if !mine {
        return Ok(0);
    }
    let row = tx
        .query_one(
            "WITH gone AS (DELETE FROM queue_deltas
                           RETURNING domain, messages, recipients, held, bytes),
                  summed AS (SELECT domain, SUM(messages) AS m, SUM(recipients) AS r,
                                    SUM(held) AS h, SUM(bytes) AS b
                             FROM gone GROUP BY domain),
                  added AS (INSERT INTO queue_counts (domain, messages, recipients, held, bytes)
                            SELECT domain, m, r, h, b FROM summed
                            ON CONFLICT (domain) DO UPDATE SET
                                messages = queue_counts.messages + EXCLUDED.messages,
                                recipients = queue_counts.recipients + EXCLUDED.recipients,
                                held = queue_counts.held + EXCLUDED.held,
                                bytes = queue_counts.bytes + EXCLUDED.bytes)
             SELECT COUNT(*) FROM gone",
            &[],
        )
        .await
        .map_err(pg_error)?;
    let folded: i64 = row.try_get(0).map_err(pg_error)?;
    if folded > 0 {
        // Domains that hold nothing any more leave (the whole queue's row stays).
        tx.execute(
            "DELETE FROM queue_counts WHERE domain <> '' AND messages = 0 AND recipients = 0
                 AND held = 0 AND bytes = 0",
            &[],
        )
        .await
        .map_err(pg_error)?;
    }
    tx.commit().await.map_err(pg_error)?;
    Ok(u64::try_from(folded).unwrap_or(0))
}

/// Folds every [`FOLD_EVERY`] while the store lives.
pub(super) async fn keep_folding(inner: Weak<Inner>) {
    loop {
        tokio::time::sleep(FOLD_EVERY).await;
        let Some(inner) = inner.upgrade() else { return };
        let result = match inner.pool.get().await {
            Ok(mut c) => fold(&mut c).await,
            Err(e) => Err(pool_error(e)),
        };
        match result {
            Ok(0) => {}
            Ok(n) => debug!(deltas = n, "queue counters folded"),
            Err(e) => {
                warn!(error = %e, "cannot fold the queue counters' deltas; totals stay right but are read more slowly until a fold succeeds")
            }
        }
    }
}

/// The counters as of one snapshot: the folded rows plus the deltas not folded yet, per
/// domain (`''`: the whole queue).
const CURRENT: &str = "(SELECT domain, SUM(messages)::bigint AS messages,
        SUM(recipients)::bigint AS recipients, SUM(held)::bigint AS held,
        SUM(bytes)::bigint AS bytes
    FROM (SELECT domain, messages, recipients, held, bytes FROM queue_counts
          UNION ALL SELECT domain, messages, recipients, held, bytes FROM queue_deltas) u
    GROUP BY domain)";

/// When the oldest pending message in domain `d.domain` arrived: the smallest pending queue
/// id there (an index lookup), and that message's `received_at`.
const OLDEST: &str = "(SELECT m.received_at FROM messages m WHERE m.id =
     (SELECT x.message_id FROM recipients x
      WHERE x.domain = d.domain AND x.status = 0 ORDER BY x.message_id LIMIT 1))";

fn n(r: &Row, i: usize) -> Result<u64, tokio_postgres::Error> {
    Ok(u64::try_from(r.try_get::<_, i64>(i)?.max(0)).unwrap_or(0))
}

fn depth_rows(rows: &[Row]) -> Result<Vec<Depth>, StoreError> {
    let depth = |r: &Row| -> Result<Depth, tokio_postgres::Error> {
        Ok(Depth {
            domain: r.try_get(0)?,
            messages: n(r, 1)?,
            recipients: n(r, 2)?,
            held: n(r, 3)?,
            bytes: n(r, 4)?,
            oldest_ms: r.try_get(5)?,
        })
    };
    rows.iter().map(|r| depth(r).map_err(pg_error)).collect()
}

/// The depth statement: from the counters, no scan of the queue.
pub(super) fn depth_sql() -> String {
    format!(
        "SELECT d.domain, d.messages, d.recipients, d.held, d.bytes, {OLDEST}
         FROM {CURRENT} d WHERE d.domain <> '' AND d.recipients > 0 ORDER BY d.domain"
    )
}

/// The totals statement: from the counters, no scan of the queue.
pub(super) fn stats_sql() -> String {
    format!(
        "SELECT COALESCE(SUM(messages) FILTER (WHERE domain = ''), 0)::bigint,
                COALESCE(SUM(bytes) FILTER (WHERE domain = ''), 0)::bigint,
                COALESCE(SUM(recipients) FILTER (WHERE domain <> ''), 0)::bigint
         FROM {CURRENT} c"
    )
}

/// Queue depth per recipient domain, from the counters.
pub(super) async fn depth(c: &tokio_postgres::Client) -> Result<Vec<Depth>, StoreError> {
    let rows = c.query(&depth_sql(), &[]).await.map_err(pg_error)?;
    depth_rows(&rows)
}

/// What the queue holds in all, from the counters.
pub(super) async fn stats(c: &tokio_postgres::Client) -> Result<Stats, StoreError> {
    let row = c.query_one(&stats_sql(), &[]).await.map_err(pg_error)?;
    stats_of(&row)
}

fn stats_of(row: &Row) -> Result<Stats, StoreError> {
    Ok(Stats {
        messages: n(row, 0).map_err(pg_error)?,
        bytes: n(row, 1).map_err(pg_error)?,
        pending_recipients: n(row, 2).map_err(pg_error)?,
    })
}

/// Messages with a pending recipient in `domain`, from the counters.
pub(super) async fn messages_in(
    c: &tokio_postgres::Client,
    domain: &str,
) -> Result<u64, StoreError> {
    let row = c
        .query_one(
            "SELECT COALESCE(SUM(messages), 0)::bigint FROM
                (SELECT messages FROM queue_counts WHERE domain = $1
                 UNION ALL SELECT messages FROM queue_deltas WHERE domain = $1) u",
            &[&domain],
        )
        .await
        .map_err(pg_error)?;
    n(&row, 0).map_err(pg_error)
}

/// [`stats`] and [`depth`] computed from the rows by scanning the whole queue (the
/// aggregate queries mx2 used before the counters): what the counters must always equal.
pub(super) async fn recount(c: &tokio_postgres::Client) -> Result<(Stats, Vec<Depth>), StoreError> {
    let row = c
        .query_one(
            "SELECT (SELECT COUNT(*) FROM messages WHERE kept_until IS NULL),
                    (SELECT COALESCE(SUM(size), 0)::bigint FROM messages
                     WHERE kept_until IS NULL),
                    (SELECT COUNT(*) FROM recipients WHERE status = 0)",
            &[],
        )
        .await
        .map_err(pg_error)?;
    let stats = stats_of(&row)?;
    let sql = format!(
        "SELECT d.domain, d.messages, d.recipients, d.held, d.bytes, {OLDEST}
         FROM (SELECT domain, COUNT(*) AS messages, SUM(n)::bigint AS recipients,
                      SUM(h)::bigint AS held, SUM(size)::bigint AS bytes
               FROM (SELECT r.domain, COUNT(*) AS n, COUNT(*) FILTER (WHERE r.held) AS h,
                            MAX(m.size) AS size
                     FROM recipients r JOIN messages m ON m.id = r.message_id
                     WHERE r.status = 0 GROUP BY r.domain, r.message_id) t
               GROUP BY domain) d
         ORDER BY d.domain COLLATE \"C\""
    );
    let rows = c.query(&sql, &[]).await.map_err(pg_error)?;
    Ok((stats, depth_rows(&rows)?))
}
