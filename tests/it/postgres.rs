//! The PostgreSQL store against a real server (Debian's postgresql, started by the tests in a
//! temporary directory on loopback): the store conformance suite (the same cases as the
//! embedded store), migrations with several nodes starting at once, leases, group commit, a
//! 50 MB body; and clusters of mx2 binaries sharing one queue: mail accepted on two nodes
//! while the primary is down, one node SIGKILLed mid-drain, a node started later draining the
//! queue. Duplicates (the RFC 1047 window) are counted and printed.

use crate::common::pg::Pg;
use crate::common::*;
use mx2::config::{PgTls, PostgresConfig};
use mx2::queue::postgres::Postgres;
use mx2::queue::{Status, Store, Update, suite};
use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

pub(crate) fn config(url: &str, node: &str, lease: Duration) -> PostgresConfig {
    PostgresConfig {
        url: Some(url.to_string()),
        url_file: None,
        tls: PgTls::Disable,
        ca_file: None,
        pool_size: 4,
        lease,
        node: node.to_string(),
    }
}

async fn store(node: &str) -> Postgres {
    store_at(&Pg::shared().fresh_db(), node).await
}

/// A store on the database at `url` (leases of five minutes).
pub(crate) async fn store_at(url: &str, node: &str) -> Postgres {
    Postgres::open(&config(url, node, Duration::from_secs(300)))
        .await
        .unwrap()
}

#[tokio::test]
async fn conformance_lifecycle() {
    suite::lifecycle(&store("suite").await).await;
}

#[tokio::test]
async fn conformance_operator_actions() {
    suite::operator_actions(&store("suite").await).await;
}

#[tokio::test]
async fn conformance_inbox() {
    let s = store("suite").await;
    suite::inbox_credentials(&s).await;
    suite::inbox_codes(&s).await;
    suite::inbox_mailboxes(&s).await;
    suite::inbox_deletes(&s).await;
}

#[tokio::test]
async fn conformance_inbox_keep() {
    suite::inbox_keeps_delivered(&store("suite").await).await;
}

#[tokio::test]
async fn conformance_cache() {
    suite::cache(&store("suite").await).await;
}

#[tokio::test]
async fn conformance_counters() {
    suite::counters(&store("suite").await).await;
}

#[tokio::test]
async fn conformance_counters_after_failed_writes() {
    suite::counters_after_failed_writes(&store("suite").await).await;
}

#[tokio::test]
async fn conformance_spooled_content() {
    let dir = tempfile::tempdir().unwrap();
    suite::spooled_content(&store("suite").await, dir.path()).await;
}

/// Held mail is made due in steps (20,000 recipients a transaction), soonest first, until
/// every held recipient of the domains is due; one already due is left as it was, and
/// another domain's are not touched.
#[tokio::test]
async fn make_due_works_through_more_than_one_step() {
    let url = Pg::shared().fresh_db();
    let s = store_at(&url, "due").await;
    s.insert(suite::message("m0", &[("a@x.test", "x.test")]))
        .await
        .unwrap();
    s.insert(suite::message("m1", &[("a@y.test", "y.test")]))
        .await
        .unwrap();
    let db = url.rsplit('/').next().unwrap();
    // 45,000 more recipients held for later (as a long outage leaves them), one already due.
    Pg::shared().sql(
        db,
        "INSERT INTO recipients (message_id, address, domain, params, next_attempt) \
         SELECT 'm0', 'r' || g || '@x.test', 'x.test', '', 900000 + g \
         FROM generate_series(1, 45000) g; \
         UPDATE recipients SET next_attempt = 900000 WHERE message_id = 'm1'; \
         UPDATE recipients SET next_attempt = 10 WHERE address = 'a@x.test'",
    );
    assert_eq!(
        s.make_due(vec!["x.test".into()], 5000).await.unwrap(),
        45_000,
        "three steps, every held recipient of x.test"
    );
    assert_eq!(
        Pg::shared().sql(
            db,
            "SELECT COUNT(*) FROM recipients WHERE domain = 'x.test' AND next_attempt = 5000"
        ),
        "45000"
    );
    assert_eq!(
        Pg::shared().sql(
            db,
            "SELECT next_attempt FROM recipients WHERE address = 'a@x.test'"
        ),
        "10",
        "already due: left as it was"
    );
    assert_eq!(
        Pg::shared().sql(
            db,
            "SELECT next_attempt FROM recipients WHERE domain = 'y.test'"
        ),
        "900000",
        "another domain's mail is not touched"
    );
    assert_eq!(s.make_due(vec!["x.test".into()], 5000).await.unwrap(), 0);
}

/// Spooled content goes into chunk rows of 1 MiB, the head first; the spool file is gone
/// once the message is committed (the content lives in the database, not on this node).
#[tokio::test]
async fn spooled_content_goes_into_chunk_rows_and_its_file_goes() {
    let url = Pg::shared().fresh_db();
    let s = store_at(&url, "spool").await;
    let dir = tempfile::tempdir().unwrap();
    let content: Vec<u8> = (0..(3 << 20) + 5u32).map(|i| (i % 253) as u8).collect();
    let mut w = mx2::queue::spool::Spool::new(dir.path())
        .create(&"sp".to_string())
        .await
        .unwrap();
    w.write(&content).await.unwrap();
    let file = w.finish().await.unwrap();
    let path = file.path.clone();
    let mut m = suite::message("sp", &[("a@x.test", "x.test")]);
    m.body = b"Received: by test\r\n".to_vec();
    let total = m.body.len() + content.len();
    s.insert_spooled(m, file).await.unwrap();
    assert!(!path.exists(), "the spool file outlived the commit");
    let db = url.rsplit('/').next().unwrap();
    assert_eq!(
        Pg::shared().sql(
            db,
            "SELECT COUNT(*), MAX(length(chunk)), SUM(length(chunk)) FROM bodies"
        ),
        format!("4|1048576|{total}")
    );
    assert_eq!(
        Pg::shared().sql(db, "SELECT size, chunks FROM messages"),
        format!("{total}|4")
    );
    // Stored as it is, though this content compresses well: the server does not try
    // (schema step 13).
    assert_eq!(
        Pg::shared().sql(
            db,
            "SELECT attstorage FROM pg_attribute \
             WHERE attrelid = 'bodies'::regclass AND attname = 'chunk'"
        ),
        "e"
    );
    assert_eq!(
        Pg::shared().sql(
            db,
            "SELECT COUNT(*) FROM bodies WHERE pg_column_size(chunk) < octet_length(chunk)"
        ),
        "0"
    );
}

#[tokio::test]
async fn conformance_outages() {
    suite::outages(&store("suite").await).await;
}

#[tokio::test]
async fn conformance_inserted_held() {
    suite::inserted_held(&store("suite").await).await;
}

#[tokio::test]
async fn conformance_sts_and_tls_reports() {
    suite::sts_and_tls_reports(&store("suite").await).await;
}

#[tokio::test]
async fn conformance_drills() {
    suite::drills(&store("suite").await).await;
}

#[tokio::test]
async fn conformance_registry() {
    suite::registry(&store("suite").await).await;
}

#[tokio::test]
async fn conformance_tenant_view() {
    suite::tenant_view(&store("suite").await).await;
}

#[tokio::test]
async fn conformance_purge_domain() {
    suite::purge_domain(&store("suite").await).await;
}

/// A registry change made on one node is heard of on another (LISTEN/NOTIFY), and the
/// change numbers are the cluster's.
#[tokio::test]
async fn registry_changes_reach_the_other_nodes() {
    let url = Pg::shared().fresh_db();
    let a = Postgres::open(&config(&url, "a", Duration::from_secs(60)))
        .await
        .unwrap();
    let b = Postgres::open(&config(&url, "b", Duration::from_secs(60)))
        .await
        .unwrap();
    suite::registry_watch(&a, &b).await;
    assert_eq!(
        a.registry_version().await.unwrap(),
        b.registry_version().await.unwrap()
    );
}

/// Changes made at once on two nodes, some of them conflicting, take distinct numbers with
/// no gap, and the version is the last of them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_registry_changes_number_without_gaps() {
    use mx2::queue::registry::{Expect, Written};
    let url = Pg::shared().fresh_db();
    let open = |node: &'static str| {
        let c = config(&url, node, Duration::from_secs(60));
        async move { Arc::new(Postgres::open(&c).await.unwrap()) }
    };
    let (a, b) = (open("a").await, open("b").await);
    let puts: Vec<_> = (0..40)
        .map(|i| {
            let s = if i % 2 == 0 { a.clone() } else { b.clone() };
            // Two puts per name: one of each pair conflicts.
            let name = format!("d{}.test", i / 2);
            tokio::spawn(async move {
                s.registry_put("domain", &name, "{}".into(), Expect::Absent)
                    .await
                    .unwrap()
            })
        })
        .collect();
    let mut revs = Vec::new();
    for p in puts {
        match p.await.unwrap() {
            Written::Done(rev) => revs.push(rev),
            Written::Conflict => {}
        }
    }
    revs.sort_unstable();
    assert_eq!(revs, (1..=20).collect::<Vec<i64>>(), "one per name, no gap");
    assert_eq!(b.registry_version().await.unwrap(), 20);
}

/// A queue of an older mx2 (before the registry, drills, the inbox, the counters and kept mail) gains them
/// at start.
#[tokio::test]
async fn an_older_queue_gains_the_registry() {
    let url = Pg::shared().fresh_db();
    drop(
        Postgres::open(&config(&url, "a", Duration::from_secs(60)))
            .await
            .unwrap(),
    );
    let db = url.rsplit('/').next().unwrap();
    Pg::shared().sql(
        db,
        &format!(
            "{} {} {} DROP TABLE registry; DROP TABLE registry_version; DROP TABLE drills; \
             DROP TABLE inbox_credentials; DROP TABLE inbox_mailboxes; DROP TABLE inbox_uids; \
             DROP TABLE inbox_codes; DROP TABLE inbox_hidden; DROP TABLE sts_policies; \
             DROP TABLE tlsrpt_counts; UPDATE mx2_schema SET version = 2",
            crate::pg_sweep::UNDO_SWEEP,
            crate::pg_counts::UNDO_KEPT,
            crate::pg_counts::UNDO_COUNTERS
        ),
    );
    let s = Postgres::open(&config(&url, "a", Duration::from_secs(60)))
        .await
        .unwrap();
    assert_eq!(Pg::shared().sql(db, "SELECT version FROM mx2_schema"), "13");
    suite::registry(&s).await;
    suite::drills(&s).await;
    suite::inbox_credentials(&s).await;
    suite::inbox_codes(&s).await;
    suite::sts_and_tls_reports(&s).await;
    suite::inbox_keeps_delivered(&s).await;
}

/// A migration step that needs a busy table (here held as a VACUUM holds it) waits for it
/// only so long, so the queries of nodes already running are not held up behind it for as
/// long as the table is busy, and tries again until it gets the table.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_migration_waits_out_a_busy_table_without_holding_others_up() {
    let url = Pg::shared().fresh_db();
    drop(store_at(&url, "first").await);
    let db = url.rsplit('/').next().unwrap().to_string();
    Pg::shared().sql(&db, "UPDATE mx2_schema SET version = 12");
    let held = db.clone();
    let holder = std::thread::spawn(move || {
        Pg::shared().sql(
            &held,
            "BEGIN; LOCK TABLE bodies IN SHARE UPDATE EXCLUSIVE MODE; \
             SELECT pg_sleep(25); COMMIT;",
        )
    });
    tokio::time::sleep(Duration::from_secs(1)).await;
    let started = std::time::Instant::now();
    let c = config(&url, "upgraded", Duration::from_secs(60));
    let opening = tokio::spawn(async move { Postgres::open(&c).await.map(|_| ()) });
    tokio::time::sleep(Duration::from_secs(2)).await;
    let reader = db.clone();
    let waited = tokio::task::spawn_blocking(move || {
        let t = std::time::Instant::now();
        Pg::shared().sql(&reader, "SELECT COUNT(*) FROM bodies");
        t.elapsed()
    })
    .await
    .unwrap();
    println!("a query on the table waited {waited:?} behind the migration");
    assert!(
        waited < Duration::from_secs(15),
        "a running node's query waited {waited:?}, as long as the table was busy"
    );
    opening.await.unwrap().unwrap();
    assert!(
        started.elapsed() > Duration::from_secs(20),
        "the migration cannot have run while the table was held"
    );
    assert_eq!(
        Pg::shared().sql(&db, "SELECT version FROM mx2_schema"),
        "13"
    );
    holder.join().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_starting_at_once_migrate_once() {
    let url = Pg::shared().fresh_db();
    let opens: Vec<_> = (0..10)
        .map(|i| {
            let c = config(&url, &format!("n{i}"), Duration::from_secs(60));
            tokio::spawn(async move { Postgres::open(&c).await.map(|_| ()) })
        })
        .collect();
    for o in opens {
        o.await.unwrap().unwrap();
    }
    let db = url.rsplit('/').next().unwrap();
    assert_eq!(
        Pg::shared().sql(db, "SELECT version FROM mx2_schema"),
        "13",
        "step 3: the registry, step 4: drill results, step 5: the inbox, step 6: inbox codes, \
         step 7: MTA-STS policies, step 8: TLS-RPT counters, step 9: the queue counters, \
         step 10: kept mail and published credentials, step 11: leaner counting triggers, \
         step 12: removed content deleted in the background, step 13: content uncompressed"
    );
    assert_eq!(Pg::shared().sql(db, "SELECT COUNT(*) FROM mx2_schema"), "1");
}

fn delivered(row: i64) -> Update {
    Update::new(row, Status::Delivered, true, 0, Some("250 ok".into()))
}

#[tokio::test]
async fn a_dead_nodes_lease_expires_and_its_late_result_is_ignored() {
    let url = Pg::shared().fresh_db();
    let lease = Duration::from_secs(1);
    let a = Postgres::open(&config(&url, "a", lease)).await.unwrap();
    let b = Postgres::open(&config(&url, "b", lease)).await.unwrap();
    a.insert(suite::message("m1", &[("u@x.test", "x.test")]))
        .await
        .unwrap();
    let jobs = a.claim_due(2000, 10).await.unwrap();
    assert_eq!(jobs.len(), 1);
    let row = jobs[0].recipients[0].row;
    assert!(b.claim_due(2000, 10).await.unwrap().is_empty(), "leased");
    // While a lives it renews its lease: b still cannot take the recipient.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert!(
        b.claim_due(2000, 10).await.unwrap().is_empty(),
        "a live node's lease is renewed"
    );
    assert_eq!(b.next_due().await.unwrap().map(|t| t > 2000), Some(true));
    // a dies: its lease runs out, and b delivers.
    drop(a);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let jobs = b.claim_due(2000, 10).await.unwrap();
    assert_eq!(jobs.len(), 1, "the dead node's lease expired");
    assert_eq!(jobs[0].recipients[0].row, row);
    // a comes back (same node name) with a result from before it died: ignored.
    let a = Postgres::open(&config(&url, "a", lease)).await.unwrap();
    assert!(!a.record("m1", vec![delivered(row)], vec![]).await.unwrap());
    let shown = b.show("m1").await.unwrap().unwrap();
    assert_eq!(shown.recipients[0].status, mx2::queue::Status::Pending);
    assert!(b.record("m1", vec![delivered(row)], vec![]).await.unwrap());
    assert_eq!(b.stats().await.unwrap().messages, 0);
}

/// Nodes share one outage history per primary: the first node to see a change records it
/// (two nodes finding the primary down open one outage), and every node reads it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_share_one_outage_history() {
    use mx2::queue::OutageChange::{Began, Ended};
    let url = Pg::shared().fresh_db();
    let lease = Duration::from_secs(300);
    let a = Arc::new(Postgres::open(&config(&url, "a", lease)).await.unwrap());
    let b = Arc::new(Postgres::open(&config(&url, "b", lease)).await.unwrap());
    let at_once: Vec<_> = (0..10)
        .map(|i| {
            let s = if i % 2 == 0 { a.clone() } else { b.clone() };
            tokio::spawn(async move { s.record_outage("p:25", Began { at_ms: 1000 + i }).await })
        })
        .collect();
    for t in at_once {
        t.await.unwrap().unwrap();
    }
    let seen = b.outages(20).await.unwrap();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].outages.len(), 1, "one outage: {seen:?}");
    assert!(seen[0].outages[0].up_ms.is_none());
    b.record_outage(
        "p:25",
        Ended {
            at_ms: 3000,
            held: 5,
        },
    )
    .await
    .unwrap();
    a.record_outage(
        "p:25",
        Ended {
            at_ms: 3500,
            held: 6,
        },
    )
    .await
    .unwrap();
    let seen = a.outages(20).await.unwrap();
    assert_eq!(
        (seen[0].outages[0].up_ms, seen[0].outages[0].held),
        (Some(3000), Some(5)),
        "the first node to see it up recorded it"
    );
}

#[tokio::test]
async fn a_restarted_node_releases_its_own_claims() {
    let url = Pg::shared().fresh_db();
    let a = Postgres::open(&config(&url, "a", Duration::from_secs(300)))
        .await
        .unwrap();
    a.insert(suite::message("m1", &[("u@x.test", "x.test")]))
        .await
        .unwrap();
    assert_eq!(a.claim_due(2000, 10).await.unwrap().len(), 1);
    drop(a);
    let a = Postgres::open(&config(&url, "a", Duration::from_secs(300)))
        .await
        .unwrap();
    assert_eq!(a.claim_due(2000, 10).await.unwrap().len(), 1);
}

#[tokio::test]
async fn tls_to_postgres_is_used_and_verified() {
    let pg = Pg::shared();
    let ca = pg.enable_tls();
    let url = pg.fresh_db();
    let db = url.rsplit('/').next().unwrap().to_string();
    let mut require = config(&url, "tls-require", Duration::from_secs(60));
    require.tls = PgTls::Require;
    let s = Postgres::open(&require).await.unwrap();
    suite::cache(&s).await;
    assert_eq!(
        pg.sql(
            &db,
            "SELECT bool_and(s.ssl) FROM pg_stat_ssl s JOIN pg_stat_activity a USING (pid)
             WHERE a.application_name = 'mx2 tls-require'"
        ),
        "t",
        "the store's connections are not TLS"
    );
    let mut verify = config(&url, "tls-verify", Duration::from_secs(60));
    verify.tls = PgTls::Verify;
    verify.ca_file = Some(ca);
    let v = Postgres::open(&verify).await.unwrap();
    assert_eq!(v.cache_get("k".into()).await.unwrap(), Some((false, 6000)));
    let mut unknown_ca = verify.clone();
    unknown_ca.ca_file = None;
    unknown_ca.node = "tls-unknown-ca".into();
    let e = Postgres::open(&unknown_ca)
        .await
        .err()
        .expect("a certificate from an unknown CA was accepted");
    println!("tls = \"verify\" without the CA: {e}");
}

#[tokio::test]
async fn another_nodes_new_mail_and_flush_wake_this_node() {
    let url = Pg::shared().fresh_db();
    let a = Postgres::open(&config(&url, "a", Duration::from_secs(60)))
        .await
        .unwrap();
    let b = Postgres::open(&config(&url, "b", Duration::from_secs(60)))
        .await
        .unwrap();
    let wake = Arc::new(tokio::sync::Notify::new());
    a.forward_wakeups(wake.clone());
    // The first wake-up comes when the listener is connected (anything may have happened).
    tokio::time::timeout(Duration::from_secs(10), wake.notified())
        .await
        .expect("the listener never connected");
    let heard = |what: &'static str| {
        let wake = wake.clone();
        async move {
            let started = Instant::now();
            tokio::time::timeout(Duration::from_secs(5), wake.notified())
                .await
                .unwrap_or_else(|_| panic!("node a did not hear of {what}"));
            started.elapsed()
        }
    };
    let waiting = tokio::spawn(heard("new mail"));
    tokio::time::sleep(Duration::from_millis(50)).await;
    b.insert(suite::message("m1", &[("u@x.test", "x.test")]))
        .await
        .unwrap();
    let new_mail = waiting.await.unwrap();
    let waiting = tokio::spawn(heard("a flush"));
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(b.make_due(vec!["x.test".into()], 5).await.unwrap(), 1);
    let flush = waiting.await.unwrap();
    println!("wake-ups between nodes: new mail heard after {new_mail:?}, a flush after {flush:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_inserts_share_transactions() {
    let s = Arc::new(store("gc").await);
    let started = Instant::now();
    let tasks: Vec<_> = (0..400)
        .map(|i| {
            let s = s.clone();
            tokio::spawn(async move {
                s.insert(suite::message(&format!("m{i}"), &[("a@x.test", "x.test")]))
                    .await
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap().unwrap();
    }
    let took = started.elapsed();
    assert_eq!(s.stats().await.unwrap().messages, 400);
    let (commits, writes) = s.commits();
    println!(
        "group commit (PostgreSQL): 400 concurrent inserts in {commits} transactions ({:.1} per transaction), {:.0} inserts/s",
        writes as f64 / commits as f64,
        400.0 / took.as_secs_f64()
    );
    assert_eq!(writes, 400);
    assert!(
        commits < 200,
        "{commits} transactions for 400 inserts: group commit is not working"
    );
}

#[tokio::test]
async fn a_50_mb_body_is_stored_in_chunks_and_read_back() {
    let url = Pg::shared().fresh_db();
    let s = store_at(&url, "big").await;
    let mut m = suite::message("big", &[("a@x.test", "x.test")]);
    m.body = (0..50_000_000u32).map(|i| (i % 251) as u8).collect();
    let expect = m.body.clone();
    let started = Instant::now();
    s.insert(m).await.unwrap();
    let stored = started.elapsed();
    let started = Instant::now();
    let body = s.body("big").await.unwrap();
    let read = started.elapsed();
    assert!(body == expect, "the body came back different");
    let db = url.rsplit('/').next().unwrap();
    assert_eq!(
        Pg::shared().sql(db, "SELECT COUNT(*), MAX(length(chunk)) FROM bodies"),
        "48|1048576"
    );
    println!("50 MB body: stored in {stored:?}, read back in {read:?}, 48 chunks of 1 MiB");
}

// ---- clusters of mx2 binaries ------------------------------------------------------------------

/// A node of a cluster on `url`, backing up example.test to a primary on `primary_port`.
pub(crate) fn node(url: &str, name: &str, primary_port: u16) -> Mx2 {
    Mx2::start_config(|port, state| {
        config_with(
            port,
            state,
            "",
            &format!(
                "[storage]\nbackend = \"postgres\"\nurl = \"{url}\"\nnode = \"{name}\"\nlease = \"5s\"\npool_size = 6\n\
                 [delivery]\nmax_connections_per_primary = 4\nconnect_timeout = \"2s\"\ngreeting_timeout = \"5s\"\ncommand_timeout = \"5s\"\ndata_timeout = \"10s\"\n\
                 [[domain]]\nname = \"example.test\"\nprimary = [\"127.0.0.1:{primary_port}\"]\n"
            ),
        )
    })
}

/// Sends `n` messages to a node from `clients` sessions at once; returns the acknowledged ids.
fn send(node: &Mx2, prefix: &str, n: usize, clients: usize) -> Vec<String> {
    send_sized(node, prefix, n, clients, 800)
}

/// Like [`send`], with bodies of about `size` bytes.
fn send_sized(node: &Mx2, prefix: &str, n: usize, clients: usize, size: usize) -> Vec<String> {
    let acked = Arc::new(Mutex::new(Vec::new()));
    let threads: Vec<_> = (0..clients)
        .map(|t| {
            let (port, acked, prefix) = (node.port, acked.clone(), prefix.to_string());
            thread::spawn(move || {
                let mut c = Client::connect(port);
                assert!(c.cmd("EHLO load.test").starts_with("250"));
                for i in (t..n).step_by(clients) {
                    let id = format!("{prefix}{i}");
                    let r = c.send_mail(
                        "s@sender.test",
                        &["user@example.test"],
                        &message(&id, &"cluster ".repeat(size / 8)),
                    );
                    assert!(r.starts_with("250"), "{id}: {r}");
                    acked.lock().unwrap().push(id);
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    Arc::try_unwrap(acked).unwrap().into_inner().unwrap()
}

#[test]
fn two_nodes_share_the_queue_and_survive_a_sigkill_mid_drain() {
    let _heavy = exclusive();
    let pg = Pg::shared();
    let url = pg.fresh_db();
    let primary_port = free_port();
    let mut a = node(&url, "a", primary_port);
    let b = node(&url, "b", primary_port);
    // The primary is down: both nodes accept and hold.
    let mut acked: HashSet<String> = send(&a, "a", 150, 4).into_iter().collect();
    acked.extend(send(&b, "b", 150, 4));
    thread::sleep(Duration::from_millis(1500));
    // The primary comes back, slow enough that the drain takes a while.
    let primary = Primary::start_with(
        primary_port,
        PrimaryOptions {
            delay: Duration::from_millis(4),
            ..Default::default()
        },
    );
    let started = Instant::now();
    let first = primary.wait_for(1, Duration::from_secs(10));
    assert!(
        !first.is_empty(),
        "nothing delivered after the primary came back"
    );
    println!(
        "cluster: first delivery {:?} after the primary came back",
        started.elapsed()
    );
    primary.wait_for(60, Duration::from_secs(30));
    a.kill9();
    let killed_at = count_ids(&primary.messages()).len();
    let counts = wait_for_ids(&acked, Duration::from_secs(60), || primary.messages());
    let missing: Vec<&String> = acked
        .iter()
        .filter(|id| !counts.contains_key(*id))
        .collect();
    let duplicates: usize = counts.values().map(|&n| n - 1).sum();
    println!(
        "cluster: 2 nodes, {} messages acknowledged (150 per node), node a SIGKILLed after {killed_at} deliveries, \
         {} delivered in {:?}, {} missing, {duplicates} duplicates (RFC 1047 window)",
        acked.len(),
        counts.len(),
        started.elapsed(),
        missing.len()
    );
    assert!(
        missing.is_empty(),
        "acknowledged but not delivered: {missing:?}\nnode b log:\n{}",
        b.log()
    );
    // Only what node a was sending when it died can come twice: one message per connection.
    let lost_leases = b.log().matches("lease ran out").count();
    assert!(
        duplicates <= 4,
        "{duplicates} duplicates; node b lost {lost_leases} leases\nnode b log:\n{}",
        b.log()
    );
    let db = url.rsplit('/').next().unwrap();
    assert_eq!(
        pg.sql(db, "SELECT COUNT(*) FROM messages"),
        "0",
        "queue not empty"
    );
}

#[test]
fn a_node_started_later_drains_the_queue() {
    let _heavy = exclusive();
    let url = Pg::shared().fresh_db();
    let primary_port = free_port();
    let mut a = node(&url, "a", primary_port);
    let acked: HashSet<String> = send(&a, "late", 40, 2).into_iter().collect();
    a.kill9();
    let primary = Primary::start(primary_port);
    let started = Instant::now();
    let _c = node(&url, "c", primary_port);
    let counts = wait_for_ids(&acked, Duration::from_secs(30), || primary.messages());
    let missing = acked.iter().filter(|id| !counts.contains_key(*id)).count();
    println!(
        "late node: {} messages accepted by a node that then died, delivered by a new node in {:?}, {missing} missing",
        acked.len(),
        started.elapsed()
    );
    assert_eq!(missing, 0);
}

// ---- benchmark (run on demand: cargo test --test postgres -- --ignored --nocapture) ---------

/// Acceptance over SMTP (concurrent sessions, primary down) and then the drain to a primary,
/// for one node on the embedded store and one on PostgreSQL, in the same run. Prints figures
/// for bench/POSTGRES.md.
#[test]
#[ignore = "a benchmark: run with --ignored --nocapture"]
fn bench_acceptance_and_drain_embedded_vs_postgres() {
    const MESSAGES: usize = 2000;
    const SESSIONS: usize = 16;
    const SIZE: usize = 10_000;
    let tail = |storage: &str, primary_port: u16| {
        format!(
            "{storage}[delivery]\nmax_connections_per_primary = 10\nmessages_per_connection = 1000\nconnect_timeout = \"2s\"\ngreeting_timeout = \"5s\"\ncommand_timeout = \"5s\"\ndata_timeout = \"10s\"\n\
             [[domain]]\nname = \"example.test\"\nprimary = [\"127.0.0.1:{primary_port}\"]\n"
        )
    };
    let extra = "messages_per_minute_per_ip = 0\nrecipients_per_minute_per_ip = 0";
    let url = Pg::shared().fresh_db();
    let backends = [
        ("embedded (SQLite, synchronous=FULL)", String::new()),
        (
            "postgres (one node, fsync on, loopback)",
            format!("[storage]\nbackend = \"postgres\"\nurl = \"{url}\"\nnode = \"bench\"\n"),
        ),
    ];
    for (name, storage) in backends {
        let primary_port = free_port();
        let node = Mx2::start_config(|port, state| {
            config_with(port, state, extra, &tail(&storage, primary_port))
        });
        let started = Instant::now();
        let acked = send_sized(&node, "bench", MESSAGES, SESSIONS, SIZE);
        let accept = started.elapsed();
        let primary = Primary::start(primary_port);
        let got = primary.wait_for(MESSAGES, Duration::from_secs(300));
        assert_eq!(acked.len(), MESSAGES);
        assert!(
            got.len() >= MESSAGES,
            "{name}: only {} delivered",
            got.len()
        );
        let first = got.iter().map(|m| m.at).min().unwrap();
        let last = got.iter().map(|m| m.at).max().unwrap();
        let drain = last - first;
        println!(
            "bench {name}: accepted {MESSAGES} messages of {SIZE} B over {SESSIONS} sessions in {accept:.2?} = {:.0} msg/s; \
             drained to the primary in {drain:.2?} = {:.0} msg/s",
            MESSAGES as f64 / accept.as_secs_f64(),
            MESSAGES as f64 / drain.as_secs_f64()
        );
    }
}

/// The stores alone, without SMTP: `CONCURRENCY` tasks insert messages of 10 kB (acceptance),
/// then 8 workers claim, read the body and record delivery until the queue is empty (drain).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a benchmark: run with --ignored --nocapture"]
async fn bench_store_accept_and_drain_embedded_vs_postgres() {
    const MESSAGES: usize = 4000;
    const CONCURRENCY: usize = 32;
    const WORKERS: usize = 8;
    let dir = tempfile::tempdir().unwrap();
    let embedded: Arc<dyn Store> =
        Arc::new(mx2::queue::embedded::Embedded::open(dir.path()).unwrap());
    let url = Pg::shared().fresh_db();
    let postgres: Arc<dyn Store> = Arc::new(
        Postgres::open(&config(&url, "bench", Duration::from_secs(300)))
            .await
            .unwrap(),
    );
    for (name, s) in [("embedded", embedded), ("postgres", postgres)] {
        let started = Instant::now();
        let inserters: Vec<_> = (0..CONCURRENCY)
            .map(|t| {
                let s = s.clone();
                tokio::spawn(async move {
                    for i in (t..MESSAGES).step_by(CONCURRENCY) {
                        let mut m = suite::message(&format!("b{i:05}"), &[("u@x.test", "x.test")]);
                        m.body = vec![b'x'; 10_000];
                        m.received_at_ms = mx2::queue::now_ms();
                        s.insert(m).await.unwrap();
                    }
                })
            })
            .collect();
        for t in inserters {
            t.await.unwrap();
        }
        let accept = started.elapsed();
        let started = Instant::now();
        let workers: Vec<_> = (0..WORKERS)
            .map(|_| {
                let s = s.clone();
                tokio::spawn(async move {
                    loop {
                        let jobs = s.claim_due(mx2::queue::now_ms(), 32).await.unwrap();
                        if jobs.is_empty() {
                            return;
                        }
                        for j in jobs {
                            let body = s.body(&j.queue_id).await.unwrap();
                            assert_eq!(body.len(), 10_000);
                            let updates = j.recipients.iter().map(|r| delivered(r.row)).collect();
                            assert!(s.record(&j.queue_id, updates, vec![]).await.unwrap());
                        }
                    }
                })
            })
            .collect();
        for w in workers {
            w.await.unwrap();
        }
        let drain = started.elapsed();
        assert_eq!(
            s.stats().await.unwrap().messages,
            0,
            "{name}: queue not empty"
        );
        println!(
            "bench store {name}: {MESSAGES} inserts of 10 kB from {CONCURRENCY} tasks in {accept:.2?} = {:.0} msg/s; \
             drained by {WORKERS} workers (claim 32, read body, record) in {drain:.2?} = {:.0} msg/s",
            MESSAGES as f64 / accept.as_secs_f64(),
            MESSAGES as f64 / drain.as_secs_f64()
        );
    }
}
