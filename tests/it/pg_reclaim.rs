//! The PostgreSQL store gives a drained queue's space back to the disk (a plain `VACUUM`
//! that truncates the tables' empty tails), against a real server with autovacuum kept off
//! these tables so that what shrinks them is mx2's own step; and it does not while much is
//! still queued, nor while another node holds the step's lock, nor while removed content
//! is still being deleted.

use crate::common::pg::Pg;
use crate::postgres::store_at;
use mx2::queue::postgres::{Reclaimed, VACUUM_LOCK};
use mx2::queue::{OperatorAction, Store, suite};

/// Content that TOAST cannot compress, so the tables hold what a real queue would.
fn noise(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    (0..len)
        .map(|_| {
            x = x
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (x >> 56) as u8
        })
        .collect()
}

#[tokio::test]
async fn a_drained_queue_gives_its_space_back() {
    let pg = Pg::shared();
    let url = pg.fresh_db();
    let db = url.rsplit('/').next().unwrap().to_string();
    let s = store_at(&url, "a").await;
    for t in ["messages", "bodies", "recipients"] {
        pg.sql(
            &db,
            &format!(
                "ALTER TABLE {t} SET (autovacuum_enabled = off, toast.autovacuum_enabled = off)"
            ),
        );
    }
    let size = || -> u64 {
        pg.sql(
            &db,
            "SELECT pg_table_size('messages') + pg_table_size('bodies') + pg_table_size('recipients')",
        )
        .parse()
        .unwrap()
    };
    let mut ids = Vec::new();
    for i in 0..100u64 {
        let id = format!("m{i:03}");
        let mut m = suite::message(&id, &[("a@x.test", "x.test")]);
        m.body = noise(100 << 10, i);
        s.insert(m).await.unwrap();
        ids.push(id);
    }
    const FREE: u64 = 1 << 20;
    const LIVE: u64 = 4 << 20;
    assert!(
        matches!(
            s.reclaim_space(FREE, LIVE).await.unwrap(),
            Reclaimed::Left(_)
        ),
        "nothing is free yet"
    );
    s.act(ids[..50].to_vec(), OperatorAction::Delete, 0)
        .await
        .unwrap();
    assert!(
        matches!(
            s.reclaim_space(FREE, LIVE).await.unwrap(),
            Reclaimed::Left(_)
        ),
        "half the mail is still queued: more than the step may leave"
    );
    s.act(ids[50..].to_vec(), OperatorAction::Delete, 0)
        .await
        .unwrap();
    let full = size();
    assert!(full > 9 << 20, "the tables hold {full} bytes");

    // Another node is at it: this one leaves it.
    let (other, conn) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(conn);
    other
        .execute("SELECT pg_advisory_lock($1)", &[&VACUUM_LOCK])
        .await
        .unwrap();
    assert_eq!(s.reclaim_space(FREE, LIVE).await.unwrap(), Reclaimed::Busy);
    assert_eq!(
        size(),
        full,
        "nothing vacuumed while another node holds the lock"
    );
    other
        .execute("SELECT pg_advisory_unlock($1)", &[&VACUUM_LOCK])
        .await
        .unwrap();
    drop(other);

    // The server's connections to this database (this query's own included).
    let backends = || -> u64 {
        pg.sql(
            &db,
            &format!("SELECT count(*) FROM pg_stat_activity WHERE datname = '{db}'"),
        )
        .parse()
        .unwrap()
    };
    // Waits (up to 10 s, letting the store's tasks run) until `want` holds of that count.
    async fn wait_backends(backends: &dyn Fn() -> u64, want: &dyn Fn(u64) -> bool) -> u64 {
        let t0 = std::time::Instant::now();
        let mut n = backends();
        while !want(n) && t0.elapsed() < std::time::Duration::from_secs(10) {
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            n = backends();
        }
        n
    }
    // The other node's connection has gone.
    // While removed content is still being deleted, no vacuum. The sweeper is held at its
    // delete (a SHARE lock on `bodies`), so the note stays; a vacuum would wait for that
    // lock too, hence the timeout.
    let (sweep_held, conn) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
        .await
        .unwrap();
    let held_conn = tokio::spawn(conn);
    sweep_held
        .batch_execute("BEGIN; LOCK TABLE bodies IN SHARE MODE")
        .await
        .unwrap();
    pg.sql(&db, "INSERT INTO doomed_bodies VALUES ('pending')");
    let looked = tokio::time::timeout(
        std::time::Duration::from_secs(10),
        s.reclaim_space(FREE, LIVE),
    )
    .await
    .expect("the reclaim tried to vacuum while the sweeper had work");
    assert!(
        matches!(looked.unwrap(), Reclaimed::Left(_)),
        "no vacuum while the sweeper has work"
    );
    sweep_held.batch_execute("COMMIT").await.unwrap();
    drop(sweep_held);
    held_conn.await.unwrap().unwrap();
    let t0 = std::time::Instant::now();
    while pg.sql(&db, "SELECT COUNT(*) FROM doomed_bodies") != "0" {
        assert!(
            t0.elapsed() < std::time::Duration::from_secs(10),
            "the sweeper kept the note"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let ours = wait_backends(&backends, &|n| n <= 2).await;
    let Reclaimed::Vacuumed(before, after) = s.reclaim_space(FREE, LIVE).await.unwrap() else {
        panic!("no vacuum of a drained queue")
    };
    // The vacuum ran on a connection taken out of the pool, closed when it ended.
    let left = wait_backends(&backends, &|n| n < ours).await;
    assert!(
        left < ours,
        "the vacuum's connection is closed: {ours} connections before, {left} after"
    );
    println!("tables: {before} bytes before the vacuum, {after} after");
    assert!(after * 20 < before, "{before} -> {after}");
    assert!(
        size() * 20 < full,
        "the tables themselves shrank: {full} -> {}",
        size()
    );
    // The queue still works, and a second look finds nothing to do.
    s.insert(suite::message("after", &[("a@x.test", "x.test")]))
        .await
        .unwrap();
    assert_eq!(s.stats().await.unwrap().messages, 1);
    assert!(matches!(
        s.reclaim_space(FREE, LIVE).await.unwrap(),
        Reclaimed::Left(_)
    ));
}
