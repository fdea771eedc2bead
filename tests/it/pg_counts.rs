//! The PostgreSQL store's maintained counters against a real server, where they can go
//! wrong and the embedded store's cannot: two nodes writing at once, two transactions
//! racing on the recipients of one message, a node killed in the middle of a transaction,
//! a queue from before the counters. Each time, the totals and the depth must equal a full
//! recount, and no domain may be left with messages or bytes but no recipient.

use crate::common::pg::Pg;
use crate::postgres::store_at;
use mx2::queue::postgres::Postgres;
use mx2::queue::{OperatorAction, Status, Store, Update, suite};
use std::sync::Arc;
use std::time::Duration;

/// Takes a queue back to before kept mail (schema step 10), for tests of older queues.
pub(crate) const UNDO_KEPT: &str = "DROP TABLE inbox_keep; DROP TABLE inbox_published;
     DROP INDEX recipients_delivered; DROP FUNCTION mx2_count_message_kept CASCADE;
     ALTER TABLE messages DROP COLUMN kept_until;";

/// Takes a queue back to before the counters (schema step 9; run [`UNDO_KEPT`] first), for
/// tests of older queues.
pub(crate) const UNDO_COUNTERS: &str =
    "DROP FUNCTION mx2_count_messages_in, mx2_count_messages_out, mx2_drop_pending,
         mx2_count_recipients_in, mx2_count_recipients_out, mx2_count_recipients_changed,
         mx2_count_changes CASCADE;
     DROP TABLE queue_counts; DROP TABLE queue_deltas; DROP INDEX recipients_domain_message;
     CREATE INDEX recipients_domain ON recipients (domain) WHERE status = 0;";

/// The store's totals equal its recount, and every domain the counters know of with no
/// pending recipient holds nothing else either (`depth` would hide such a row).
async fn exact(s: &Postgres, db: &str, step: &str) {
    let (stats, depth) = s.recount().await.unwrap();
    assert_eq!(s.stats().await.unwrap(), stats, "stats after {step}");
    assert_eq!(s.depth().await.unwrap(), depth, "depth after {step}");
    let stray = Pg::shared().sql(
        db,
        "SELECT string_agg(domain, ' ') FROM (
            SELECT domain FROM (SELECT * FROM queue_counts UNION ALL SELECT * FROM queue_deltas) u
            WHERE domain <> '' GROUP BY domain
            HAVING SUM(recipients) = 0 AND (SUM(messages) <> 0 OR SUM(bytes) <> 0 OR SUM(held) <> 0)) t",
    );
    assert_eq!(stray, "", "domains counted with no recipient after {step}");
}

fn db_of(url: &str) -> &str {
    url.rsplit('/').next().unwrap()
}

/// A plain connection, outside any store, to hold a transaction open.
async fn raw(url: &str) -> tokio_postgres::Client {
    let (client, conn) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(conn);
    client
}

fn domain<'d>(depth: &'d [mx2::queue::Depth], name: &str) -> Option<&'d mx2::queue::Depth> {
    depth.iter().find(|d| d.domain == name)
}

/// Two nodes insert at once, claim one recipient at a time (so the recipients of one
/// message in one domain are split between them) and record every outcome at once, then
/// hold and delete, purge and insert at once: the counts stay exact throughout, and a fold by both at
/// once leaves no delta and the same figures.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_nodes_writing_at_once_keep_the_counts_exact() {
    let url = Pg::shared().fresh_db();
    let db = db_of(&url);
    let a = Arc::new(store_at(&url, "a").await);
    let b = Arc::new(store_at(&url, "b").await);
    let node = |i: usize| {
        if i.is_multiple_of(2) {
            a.clone()
        } else {
            b.clone()
        }
    };
    const DOMAINS: [&str; 3] = ["x.test", "y.test", "z.test"];
    let inserts: Vec<_> = (0..120usize)
        .map(|i| {
            let s = node(i);
            tokio::spawn(async move {
                let rcpts: Vec<(String, &str)> = (0..1 + i % 4)
                    .map(|k| {
                        let d = DOMAINS[(i + k / 2) % 3];
                        (format!("u{k}@{d}"), d)
                    })
                    .collect();
                let refs: Vec<(&str, &str)> = rcpts.iter().map(|(r, d)| (r.as_str(), *d)).collect();
                let mut m = suite::message(&format!("m{i:04}"), &refs);
                m.body = vec![b'x'; 100 + i * 37];
                s.insert(m).await.unwrap();
            })
        })
        .collect();
    for t in inserts {
        t.await.unwrap();
    }
    exact(&a, db, "inserts from two nodes").await;
    assert_eq!(a.stats().await.unwrap().messages, 120);

    let work = |s: Arc<Postgres>| {
        tokio::spawn(async move {
            let mut records = Vec::new();
            loop {
                let jobs = s.claim_due(2000, 1).await.unwrap();
                if jobs.is_empty() {
                    break;
                }
                for job in jobs {
                    let s = s.clone();
                    records.push(tokio::spawn(async move {
                        let row = job.recipients[0].row;
                        let (update, notices) = match row % 3 {
                            0 => (
                                Update::new(row, Status::Delivered, true, 0, Some("250".into())),
                                vec![],
                            ),
                            1 => (
                                Update::new(row, Status::Pending, true, i64::MAX / 4, None),
                                vec![],
                            ),
                            _ => (
                                Update::new(row, Status::Failed, true, 0, Some("550".into())),
                                vec![suite::message(
                                    &format!("n{row:06}"),
                                    &[("s@sender.test", "sender.test")],
                                )],
                            ),
                        };
                        s.record(&job.queue_id, vec![update], notices)
                            .await
                            .unwrap();
                    }));
                }
            }
            for r in records {
                r.await.unwrap();
            }
        })
    };
    let (wa, wb) = (work(a.clone()), work(b.clone()));
    wa.await.unwrap();
    wb.await.unwrap();
    exact(&b, db, "outcomes recorded by two nodes").await;
    assert_eq!(
        Pg::shared().sql(
            db,
            "SELECT COUNT(*) FROM messages m WHERE NOT EXISTS
                (SELECT 1 FROM recipients r WHERE r.message_id = m.id AND r.status = 0)"
        ),
        "0",
        "every message whose last recipient was recorded left the queue, even when two \
         nodes recorded its last two"
    );

    // (Operators' actions on the same messages at once can deadlock, as they could before
    // the counters; that is one transaction rolled back, which the test below covers.)
    let ids = |r: std::ops::Range<usize>| r.map(|i| format!("m{i:04}")).collect::<Vec<_>>();
    let (held, deleted) = tokio::join!(
        a.act(ids(0..40), OperatorAction::Hold, 3000),
        b.act(ids(40..70), OperatorAction::Delete, 3000),
    );
    held.unwrap();
    deleted.unwrap();
    exact(&a, db, "a hold and a delete at once").await;
    let (purged, inserted) = tokio::join!(
        b.purge_domain("z.test"),
        a.insert(suite::message(
            "m9999",
            &[("u@z.test", "z.test"), ("u@x.test", "x.test")]
        )),
    );
    purged.unwrap();
    inserted.unwrap();
    exact(&a, db, "a purge beside an insert").await;
    let before = (a.stats().await.unwrap(), a.depth().await.unwrap());
    assert!(before.0.messages > 0 && !before.1.is_empty(), "{before:?}");

    let (fa, fb) = tokio::join!(a.fold_counts(), b.fold_counts());
    fa.unwrap();
    fb.unwrap();
    a.fold_counts().await.unwrap();
    assert_eq!(
        Pg::shared().sql(db, "SELECT COUNT(*) FROM queue_deltas"),
        "0",
        "folded"
    );
    assert_eq!(
        (b.stats().await.unwrap(), b.depth().await.unwrap()),
        before,
        "a fold changes no figure"
    );
    exact(&b, db, "the folds").await;
}

/// Two transactions each take one of the last two pending recipients of a message in a
/// domain: the second waits for the first, then sees it, so the message leaves the domain
/// once. And when the first rolls back instead, the message stays in the domain.
#[tokio::test]
async fn the_last_recipient_of_a_message_in_a_domain_is_counted_out_once() {
    let url = Pg::shared().fresh_db();
    let db = db_of(&url);
    let s = store_at(&url, "a").await;
    for (id, rcpts) in [
        ("m1", [("a@x.test", "x.test"), ("b@x.test", "x.test")]),
        ("m2", [("c@x.test", "x.test"), ("d@x.test", "x.test")]),
    ] {
        s.insert(suite::message(id, &rcpts)).await.unwrap();
    }
    s.insert(suite::message("m3", &[("e@x.test", "x.test")]))
        .await
        .unwrap();
    let one = raw(&url).await;
    let take = "UPDATE recipients SET status = 1 WHERE address = ";

    for (first, second, end) in [
        ("'a@x.test'", "'b@x.test'", "COMMIT"),
        ("'c@x.test'", "'d@x.test'", "ROLLBACK"),
    ] {
        one.batch_execute(&format!("BEGIN; {take}{first}"))
            .await
            .unwrap();
        let sql = format!("BEGIN; {take}{second}");
        let two = raw(&url).await;
        let waiting = tokio::spawn(async move {
            two.batch_execute(&sql).await.unwrap();
            two
        });
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert!(
            !waiting.is_finished(),
            "the second transaction waits for the first on the message"
        );
        one.batch_execute(end).await.unwrap();
        let two = waiting.await.unwrap();
        two.batch_execute("COMMIT").await.unwrap();
        exact(
            &s,
            db,
            &format!("two racing transactions, the first ending in {end}"),
        )
        .await;
    }
    let depth = s.depth().await.unwrap();
    let x = domain(&depth, "x.test").unwrap();
    assert_eq!(
        (x.messages, x.recipients, x.bytes),
        (2, 2, 42),
        "m1 left x.test once; m2 keeps c@x.test (its taking rolled back); m3 stays"
    );
}

/// A node killed in the middle of a transaction that inserted, changed and deleted rows
/// (its deltas written, not committed): the counts are as before, read and folded.
#[tokio::test]
async fn a_node_killed_mid_transaction_leaves_the_counts_as_they_were() {
    let url = Pg::shared().fresh_db();
    let db = db_of(&url);
    let s = store_at(&url, "a").await;
    s.insert(suite::message(
        "m1",
        &[("a@x.test", "x.test"), ("b@y.test", "y.test")],
    ))
    .await
    .unwrap();
    s.insert(suite::message("m2", &[("c@x.test", "x.test")]))
        .await
        .unwrap();
    s.fold_counts().await.unwrap();
    let before = (s.stats().await.unwrap(), s.depth().await.unwrap());

    let victim = raw(&url).await;
    let pid: i32 = victim
        .query_one("SELECT pg_backend_pid()", &[])
        .await
        .unwrap()
        .get(0);
    victim
        .batch_execute(
            "BEGIN;
             UPDATE recipients SET status = 1 WHERE address = 'a@x.test';
             UPDATE recipients SET held = true WHERE address = 'b@y.test';
             DELETE FROM messages WHERE id = 'm2';
             INSERT INTO messages (id, received_at, sender, mail_params, client, helo, size, chunks)
                 VALUES ('m9', 1000, 's@sender.test', '', '192.0.2.1', 'c.test', 10, 1);
             INSERT INTO recipients (message_id, address, domain, params, next_attempt)
                 VALUES ('m9', 'z@z.test', 'z.test', '', 1000);",
        )
        .await
        .unwrap();
    let written: i64 = victim
        .query_one("SELECT COUNT(*) FROM queue_deltas", &[])
        .await
        .unwrap()
        .get(0);
    assert!(written >= 5, "the transaction wrote its deltas: {written}");
    raw(&url)
        .await
        .execute("SELECT pg_terminate_backend($1)", &[&pid])
        .await
        .unwrap();
    let gone = tokio::time::timeout(Duration::from_secs(10), async {
        while victim.simple_query("SELECT 1").await.is_ok() {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    assert!(gone.is_ok(), "the killed connection ends");
    exact(&s, db, "a killed transaction").await;
    assert_eq!((s.stats().await.unwrap(), s.depth().await.unwrap()), before);
    s.fold_counts().await.unwrap();
    assert_eq!(
        (s.stats().await.unwrap(), s.depth().await.unwrap()),
        before,
        "nothing of it is folded either"
    );
}

/// A queue written before the counters (schema 6) gets them at start, built from its rows,
/// and kept from then on.
#[tokio::test]
async fn an_older_queue_gains_its_counters() {
    let url = Pg::shared().fresh_db();
    let db = db_of(&url);
    {
        let s = store_at(&url, "a").await;
        s.insert(suite::message(
            "m1",
            &[("a@x.test", "x.test"), ("b@y.test", "y.test")],
        ))
        .await
        .unwrap();
        s.insert(suite::message(
            "m2",
            &[("c@x.test", "x.test"), ("d@x.test", "x.test")],
        ))
        .await
        .unwrap();
        s.act(vec!["m2".into()], OperatorAction::Hold, 0)
            .await
            .unwrap();
    }
    Pg::shared().sql(
        db,
        &format!(
            "{} {UNDO_KEPT} {UNDO_COUNTERS} UPDATE mx2_schema SET version = 8",
            crate::pg_sweep::UNDO_SWEEP
        ),
    );
    let s = store_at(&url, "a").await;
    assert_eq!(Pg::shared().sql(db, "SELECT version FROM mx2_schema"), "13");
    exact(&s, db, "building the counters").await;
    let depth = s.depth().await.unwrap();
    let x = domain(&depth, "x.test").unwrap();
    assert_eq!((x.messages, x.recipients, x.held), (2, 3, 2));
    s.act(vec!["m2".into()], OperatorAction::Delete, 0)
        .await
        .unwrap();
    exact(&s, db, "a delete after").await;
    assert_eq!(s.stats().await.unwrap().messages, 1);
}
