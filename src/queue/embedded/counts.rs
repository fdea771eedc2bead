//! The embedded queue's maintained counters, so that operators' totals (`Store::stats`,
//! `Store::depth`: status, /metrics, the dashboard, admission's queue caps) never scan the
//! queue. Per recipient domain: messages with a pending recipient there, pending recipients,
//! held ones, those messages' bytes (`domain_counts`); for the whole queue: messages and bytes
//! (`queue_totals`). SQLite triggers on `recipients` and `messages` keep them, so every
//! statement that inserts, deletes, or changes a recipient's `status` or `held` (a recipient's
//! `domain` never changes) moves them in
//! its own transaction: they are as durable as the rows they count, after a crash too. The
//! oldest message per domain is an index lookup (`recipients_domain_message`: the domain's smallest
//! pending queue id, queue ids being time-ordered), not a counter.
//!
//! A queue written before the counters existed gets them built once, by one scan, when it is
//! first opened ([`ensure`]). [`recount`] computes the same figures by scanning (tests, and
//! the check that the counters are right).

use crate::queue::{Depth, Stats};
use rusqlite::Connection;

/// Recipients still pending in (message, domain), after the triggering change: a recipient
/// row's change counts its message in (or out of) its domain when it is the first (last).
const PENDING_HERE: &str = "(SELECT COUNT(*) FROM recipients
     WHERE domain = {R}.domain AND status = 0 AND message_id = {R}.message_id)";
const SIZE_OF: &str = "COALESCE((SELECT size FROM messages WHERE id = {R}.message_id), 0)";
const ADD: &str = "ON CONFLICT (domain) DO UPDATE SET
         messages = messages + excluded.messages, recipients = recipients + excluded.recipients,
         held = held + excluded.held, bytes = bytes + excluded.bytes";

/// Tables and index; `recipients_domain_message` replaces the (domain, status) index of older
/// files.
const TABLES: &str = "
DROP INDEX IF EXISTS recipients_domain;
CREATE INDEX IF NOT EXISTS recipients_domain_message ON recipients(domain, status, message_id);
CREATE TABLE IF NOT EXISTS domain_counts (
    domain TEXT PRIMARY KEY,
    messages INTEGER NOT NULL,
    recipients INTEGER NOT NULL,
    held INTEGER NOT NULL,
    bytes INTEGER NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS queue_totals (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    messages INTEGER NOT NULL,
    bytes INTEGER NOT NULL
);
";

fn triggers() -> String {
    let here = |r: &str| PENDING_HERE.replace("{R}", r);
    let size = |r: &str| SIZE_OF.replace("{R}", r);
    format!(
        "
CREATE TRIGGER IF NOT EXISTS count_recipient_insert AFTER INSERT ON recipients
WHEN NEW.status = 0 BEGIN
    INSERT INTO domain_counts (domain, messages, recipients, held, bytes)
    SELECT NEW.domain, first, 1, NEW.held, first * {new_size}
    FROM (SELECT {new_here} = 1 AS first) WHERE true
    {ADD};
END;
CREATE TRIGGER IF NOT EXISTS count_recipient_delete AFTER DELETE ON recipients
WHEN OLD.status = 0 BEGIN
    INSERT INTO domain_counts (domain, messages, recipients, held, bytes)
    SELECT OLD.domain, -last, -1, -OLD.held, -last * {old_size}
    FROM (SELECT {old_here} = 0 AS last) WHERE true
    {ADD};
END;
CREATE TRIGGER IF NOT EXISTS count_recipient_update AFTER UPDATE OF status, held ON recipients
WHEN (OLD.status = 0 OR NEW.status = 0) AND (OLD.status <> NEW.status OR OLD.held <> NEW.held)
BEGIN
    INSERT INTO domain_counts (domain, messages, recipients, held, bytes)
    SELECT NEW.domain, dm, (NEW.status = 0) - (OLD.status = 0),
           (NEW.status = 0) * NEW.held - (OLD.status = 0) * OLD.held, dm * {new_size}
    FROM (SELECT CASE WHEN OLD.status = 0 AND NEW.status <> 0 THEN -({new_here} = 0)
                      WHEN OLD.status <> 0 AND NEW.status = 0 THEN {new_here} = 1
                      ELSE 0 END AS dm) WHERE true
    {ADD};
END;
CREATE TRIGGER IF NOT EXISTS count_message_insert AFTER INSERT ON messages BEGIN
    UPDATE queue_totals SET messages = messages + 1, bytes = bytes + NEW.size WHERE id = 1;
END;
CREATE TRIGGER IF NOT EXISTS count_message_delete AFTER DELETE ON messages BEGIN
    UPDATE queue_totals SET messages = messages - 1, bytes = bytes - OLD.size WHERE id = 1;
END;
",
        new_here = here("NEW"),
        old_here = here("OLD"),
        new_size = size("NEW"),
        old_size = size("OLD"),
    )
}

/// Per domain, from the rows: what [`depth`] reads from the counters.
const RECOUNT_DOMAINS: &str = "
    SELECT domain, COUNT(*) AS messages, SUM(n) AS recipients, SUM(h) AS held, SUM(size) AS bytes
    FROM (
        SELECT r.domain AS domain, COUNT(*) AS n, SUM(r.held) AS h, m.size AS size
        FROM recipients r JOIN messages m ON m.id = r.message_id
        WHERE r.status = 0 GROUP BY r.domain, r.message_id)
    GROUP BY domain";

/// Creates the counters, their triggers and index if the file has none yet, building them
/// from the rows once (one scan of the queue, in one transaction with the triggers, so no
/// change can slip between the two).
pub(super) fn ensure(c: &Connection) -> rusqlite::Result<()> {
    let present: i64 = c.query_row(
        "SELECT COUNT(*) FROM sqlite_master WHERE type = 'table' AND name = 'queue_totals'",
        [],
        |r| r.get(0),
    )?;
    if present > 0 {
        return Ok(());
    }
    c.execute_batch(&format!(
        "BEGIN IMMEDIATE;
         {TABLES}
         {triggers}
         DELETE FROM domain_counts;
         INSERT INTO domain_counts (domain, messages, recipients, held, bytes) {RECOUNT_DOMAINS};
         INSERT INTO queue_totals (id, messages, bytes)
             SELECT 1, COUNT(*), COALESCE(SUM(size), 0) FROM messages WHERE kept_until IS NULL;
         COMMIT;",
        triggers = triggers()
    ))
    .inspect_err(|_| {
        let _ = c.execute_batch("ROLLBACK");
    })
}

/// The oldest pending message's arrival in a domain: the smallest pending queue id there
/// (an index lookup), and that message's `received_at`.
const OLDEST: &str = "(SELECT m.received_at FROM messages m WHERE m.id =
     (SELECT message_id FROM recipients
      WHERE domain = d.domain AND status = 0 ORDER BY message_id LIMIT 1))";

fn depth_rows(c: &Connection, sql: &str) -> rusqlite::Result<Vec<Depth>> {
    let mut stmt = c.prepare_cached(sql)?;
    let rows = stmt.query_map([], |r| {
        Ok(Depth {
            domain: r.get(0)?,
            messages: r.get::<_, i64>(1)?.max(0) as u64,
            recipients: r.get::<_, i64>(2)?.max(0) as u64,
            held: r.get::<_, i64>(3)?.max(0) as u64,
            bytes: r.get::<_, i64>(4)?.max(0) as u64,
            oldest_ms: r.get(5)?,
        })
    })?;
    rows.collect()
}

fn depth_sql() -> String {
    format!(
        "SELECT d.domain, d.messages, d.recipients, d.held, d.bytes, {OLDEST}
         FROM domain_counts d WHERE d.recipients > 0 ORDER BY d.domain"
    )
}

const STATS: &str = "SELECT t.messages, t.bytes,
        (SELECT COALESCE(SUM(recipients), 0) FROM domain_counts)
    FROM queue_totals t WHERE t.id = 1";

/// Queue depth per recipient domain, from the counters.
pub(crate) fn depth(c: &Connection) -> rusqlite::Result<Vec<Depth>> {
    depth_rows(c, &depth_sql())
}

/// Messages with a pending recipient in `domain`, from the counters.
pub(crate) fn messages_in(c: &Connection, domain: &str) -> rusqlite::Result<u64> {
    c.query_row(
        "SELECT COALESCE(MAX(messages), 0) FROM domain_counts WHERE domain = ?1",
        [domain],
        |r| r.get::<_, i64>(0),
    )
    .map(|n| n.max(0) as u64)
}

/// What the queue holds in all, from the counters.
pub(crate) fn stats(c: &Connection) -> rusqlite::Result<Stats> {
    c.query_row(STATS, [], |r| {
        Ok(Stats {
            messages: r.get::<_, i64>(0)?.max(0) as u64,
            bytes: r.get::<_, i64>(1)?.max(0) as u64,
            pending_recipients: r.get::<_, i64>(2)?.max(0) as u64,
        })
    })
}

/// [`stats`] and [`depth`] computed from the rows by scanning the whole queue, as they were
/// before the counters: what the counters must always equal.
pub(crate) fn recount(c: &Connection) -> rusqlite::Result<(Stats, Vec<Depth>)> {
    let (messages, bytes): (i64, i64) = c.query_row(
        "SELECT COUNT(*), COALESCE(SUM(size), 0) FROM messages WHERE kept_until IS NULL",
        [],
        |r| Ok((r.get(0)?, r.get(1)?)),
    )?;
    let pending: i64 = c.query_row(
        "SELECT COUNT(*) FROM recipients WHERE status = 0",
        [],
        |r| r.get(0),
    )?;
    let depth = depth_rows(
        c,
        &format!(
            "SELECT d.domain, d.messages, d.recipients, d.held, d.bytes, {OLDEST}
             FROM ({RECOUNT_DOMAINS}) d ORDER BY d.domain"
        ),
    )?;
    Ok((
        Stats {
            messages: messages as u64,
            pending_recipients: pending as u64,
            bytes: bytes as u64,
        },
        depth,
    ))
}

#[cfg(test)]
mod tests {
    use super::super::schema::open_connection;
    use super::super::{Embedded, Store};
    use super::*;
    use crate::queue::{OperatorAction, suite};

    /// The plan of a statement, one line per step.
    fn plan(c: &Connection, sql: &str) -> String {
        let mut stmt = c.prepare(&format!("EXPLAIN QUERY PLAN {sql}")).unwrap();
        let rows = stmt.query_map([], |r| r.get::<_, String>(3)).unwrap();
        rows.map(Result::unwrap).collect::<Vec<_>>().join("\n")
    }

    #[test]
    fn totals_and_depth_read_no_queue_table_through() {
        let dir = tempfile::tempdir().unwrap();
        drop(Embedded::open(dir.path()).unwrap());
        let c = open_connection(&dir.path().join("queue.sqlite")).unwrap();
        for sql in [depth_sql(), STATS.to_string()] {
            let plan = plan(&c, &sql);
            assert!(
                !plan.contains("SCAN recipients") && !plan.contains("SCAN messages"),
                "{sql}\n{plan}"
            );
            assert!(
                !plan.contains("SCAN r") && !plan.contains("SCAN m "),
                "{plan}"
            );
        }
        assert!(
            plan(&c, &depth_sql()).contains("recipients_domain_message"),
            "the oldest message is an index lookup"
        );
    }

    /// A queue written before the counters existed gets them, built from its rows.
    #[tokio::test]
    async fn an_older_queue_gains_its_counters() {
        let dir = tempfile::tempdir().unwrap();
        {
            let s = Embedded::open(dir.path()).unwrap();
            for (id, rcpts) in [
                ("m1", vec![("a@x.test", "x.test"), ("b@y.test", "y.test")]),
                ("m2", vec![("c@x.test", "x.test"), ("d@x.test", "x.test")]),
            ] {
                s.insert(suite::message(id, &rcpts)).await.unwrap();
            }
            s.act(vec!["m2".into()], OperatorAction::Hold, 0)
                .await
                .unwrap();
        }
        open_connection(&dir.path().join("queue.sqlite"))
            .unwrap()
            .execute_batch(
                "DROP TABLE domain_counts; DROP TABLE queue_totals;
                 DROP TRIGGER count_recipient_insert; DROP TRIGGER count_recipient_delete;
                 DROP TRIGGER count_recipient_update; DROP TRIGGER count_message_insert;
                 DROP TRIGGER count_message_delete; DROP INDEX recipients_domain_message;
                 CREATE INDEX recipients_domain ON recipients(domain, status);",
            )
            .unwrap();
        let s = Embedded::open(dir.path()).unwrap();
        let (stats, depth) = s.recount().await.unwrap();
        assert_eq!(stats.messages, 2);
        assert_eq!(depth.len(), 2);
        assert_eq!(s.stats().await.unwrap(), stats);
        assert_eq!(s.depth().await.unwrap(), depth);
        // And the triggers keep them from then on.
        s.act(vec!["m2".into()], OperatorAction::Delete, 0)
            .await
            .unwrap();
        let (stats, depth) = s.recount().await.unwrap();
        assert_eq!(stats.messages, 1);
        assert_eq!(s.stats().await.unwrap(), stats);
        assert_eq!(s.depth().await.unwrap(), depth);
    }
}
