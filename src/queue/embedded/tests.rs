//! The embedded store's own tests: the conformance suite, and what only this backend does
//! (group commit, a full disk, held domains, claims released on reopen, older files).

use super::ops::PENDING_OF_MESSAGE;
use super::schema::read_identity;
use super::writer::{Held, run_batch};
use super::*;
use crate::queue::suite;
use rusqlite::params;

#[tokio::test]
async fn conformance_lifecycle() {
    let dir = tempfile::tempdir().unwrap();
    suite::lifecycle(&Embedded::open(dir.path()).unwrap()).await;
}

#[test]
fn the_pending_count_of_a_message_uses_the_message_index() {
    let dir = tempfile::tempdir().unwrap();
    drop(Embedded::open(dir.path()).unwrap());
    let c = open_connection(&dir.path().join("queue.sqlite")).unwrap();
    let plan: String = c
        .query_row(
            &format!("EXPLAIN QUERY PLAN {PENDING_OF_MESSAGE}"),
            params!["m1", 0],
            |r| r.get(3),
        )
        .unwrap();
    assert!(plan.contains("recipients_message"), "{plan}");
}

/// A full disk can make SQLite roll back the whole batch, not just the failing insert:
/// every answer must still match what the file holds (no 452 for a committed message,
/// no 250 for a lost one).
#[test]
fn a_batch_rolled_back_by_a_full_disk_answers_what_the_file_holds() {
    let dir = tempfile::tempdir().unwrap();
    drop(Embedded::open(dir.path()).unwrap());
    let c = open_connection(&dir.path().join("queue.sqlite")).unwrap();
    let pages: i64 = c.query_row("PRAGMA page_count", [], |r| r.get(0)).unwrap();
    c.pragma_update(None, "max_page_count", pages + 50).unwrap();
    let marker = read_identity(&c).unwrap().expect("an identity");
    let (guard, _) = guard::Guard::acquire(dir.path()).unwrap();
    let mut w = Writer {
        conn: c,
        guard,
        marker,
        watchers: Default::default(),
        remover: super::spool::Remover::start(),
    };
    let mut answers = Vec::new();
    let batch = ["before", "big", "after"]
        .into_iter()
        .map(|id| {
            let mut m = suite::message(id, &[("a@x.test", "x.test")]);
            if id == "big" {
                m.body = vec![b'x'; 1 << 20];
            }
            let (tx, rx) = oneshot::channel();
            answers.push((id, rx));
            Op::Insert(Box::new(m), tx)
        })
        .collect();
    run_batch(&mut w, batch, &mut Held::new());
    for (id, mut rx) in answers {
        let answer = rx.try_recv().expect("answered");
        let stored: i64 = w
            .conn
            .query_row("SELECT COUNT(*) FROM messages WHERE id = ?1", [id], |r| {
                r.get(0)
            })
            .unwrap();
        assert_eq!(
            answer.is_ok(),
            stored == 1,
            "{id}: answered {answer:?}, {stored} stored"
        );
        if id == "big" {
            assert!(matches!(answer, Err(StoreError::Full)), "{answer:?}");
        }
    }
}

#[tokio::test]
async fn new_mail_for_a_held_domain_waits_until_the_hold_ends_and_make_due() {
    let dir = tempfile::tempdir().unwrap();
    let s = Embedded::open(dir.path()).unwrap();
    s.hold_new_mail(vec!["x.test".into()], Some(60_000))
        .await
        .unwrap();
    s.insert(suite::message(
        "held",
        &[("a@x.test", "x.test"), ("b@y.test", "y.test")],
    ))
    .await
    .unwrap();
    let jobs = s.claim_due(2000, 100).await.unwrap();
    assert_eq!(jobs.len(), 1, "only the other domain's recipient is due");
    assert_eq!(jobs[0].domain, "y.test");
    assert_eq!(
        s.next_due().await.unwrap(),
        Some(61_000),
        "due after the hold"
    );
    // The primary is back: the hold ends, then make_due (the probe's order).
    s.hold_new_mail(vec!["x.test".into()], None).await.unwrap();
    s.insert(suite::message("after", &[("c@x.test", "x.test")]))
        .await
        .unwrap();
    assert_eq!(s.make_due(vec!["x.test".into()], 2000).await.unwrap(), 2);
    let due: Vec<String> = s
        .claim_due(2000, 100)
        .await
        .unwrap()
        .into_iter()
        .map(|j| j.queue_id)
        .collect();
    assert_eq!(due, ["after", "held"]);
}

#[tokio::test]
async fn conformance_operator_actions() {
    let dir = tempfile::tempdir().unwrap();
    suite::operator_actions(&Embedded::open(dir.path()).unwrap()).await;
}

#[tokio::test]
async fn conformance_counters() {
    let dir = tempfile::tempdir().unwrap();
    suite::counters(&Embedded::open(dir.path()).unwrap()).await;
}

#[tokio::test]
async fn conformance_counters_after_failed_writes() {
    let dir = tempfile::tempdir().unwrap();
    suite::counters_after_failed_writes(&Embedded::open(dir.path()).unwrap()).await;
}

#[tokio::test]
async fn conformance_spooled_content() {
    let dir = tempfile::tempdir().unwrap();
    suite::spooled_content(&Embedded::open(dir.path()).unwrap(), dir.path()).await;
}

#[tokio::test]
async fn conformance_outages() {
    let dir = tempfile::tempdir().unwrap();
    suite::outages(&Embedded::open(dir.path()).unwrap()).await;
}

#[tokio::test]
async fn conformance_inserted_held() {
    let dir = tempfile::tempdir().unwrap();
    suite::inserted_held(&Embedded::open(dir.path()).unwrap()).await;
}

#[tokio::test]
async fn conformance_sts_and_tls_reports() {
    let dir = tempfile::tempdir().unwrap();
    suite::sts_and_tls_reports(&Embedded::open(dir.path()).unwrap()).await;
}

#[tokio::test]
async fn conformance_drills() {
    let dir = tempfile::tempdir().unwrap();
    suite::drills(&Embedded::open(dir.path()).unwrap()).await;
}

#[tokio::test]
async fn conformance_inbox() {
    let dir = tempfile::tempdir().unwrap();
    let s = Embedded::open(dir.path()).unwrap();
    suite::inbox_credentials(&s).await;
    suite::inbox_codes(&s).await;
    suite::inbox_mailboxes(&s).await;
    suite::inbox_deletes(&s).await;
}

#[tokio::test]
async fn conformance_inbox_keep() {
    let dir = tempfile::tempdir().unwrap();
    suite::inbox_keeps_delivered(&Embedded::open(dir.path()).unwrap()).await;
}

#[tokio::test]
async fn conformance_cache() {
    let dir = tempfile::tempdir().unwrap();
    suite::cache(&Embedded::open(dir.path()).unwrap()).await;
}

#[tokio::test]
async fn conformance_registry() {
    let dir = tempfile::tempdir().unwrap();
    let s = Embedded::open(dir.path()).unwrap();
    suite::registry(&s).await;
    suite::registry_watch(&s, &s).await;
}

#[tokio::test]
async fn conformance_tenant_view_and_purge_domain() {
    let dir = tempfile::tempdir().unwrap();
    suite::tenant_view(&Embedded::open(dir.path()).unwrap()).await;
    let dir = tempfile::tempdir().unwrap();
    suite::purge_domain(&Embedded::open(dir.path()).unwrap()).await;
}

/// A queue written before the registry existed opens, and gains it.
#[tokio::test]
async fn an_older_queue_gains_the_registry() {
    let dir = tempfile::tempdir().unwrap();
    drop(Embedded::open(dir.path()).unwrap());
    open_connection(&dir.path().join("queue.sqlite"))
        .unwrap()
        .execute_batch("DROP TABLE registry; DROP TABLE registry_seq;")
        .unwrap();
    suite::registry(&Embedded::open(dir.path()).unwrap()).await;
}

#[tokio::test]
async fn claims_are_released_on_reopen() {
    let dir = tempfile::tempdir().unwrap();
    {
        let s = Embedded::open(dir.path()).unwrap();
        s.insert(suite::message("m1", &[("a@x.test", "x.test")]))
            .await
            .unwrap();
        assert_eq!(s.claim_due(2000, 10).await.unwrap().len(), 1);
    }
    let s = Embedded::open(dir.path()).unwrap();
    assert_eq!(s.claim_due(2000, 10).await.unwrap().len(), 1);
}

#[tokio::test]
async fn concurrent_inserts_share_commits() {
    let dir = tempfile::tempdir().unwrap();
    let s = Arc::new(Embedded::open(dir.path()).unwrap());
    let mut tasks = Vec::new();
    for i in 0..200 {
        let s = s.clone();
        tasks.push(tokio::spawn(async move {
            s.insert(suite::message(&format!("m{i}"), &[("a@x.test", "x.test")]))
                .await
        }));
    }
    for t in tasks {
        t.await.unwrap().unwrap();
    }
    assert_eq!(s.stats().await.unwrap().messages, 200);
    let commits = s.commits();
    println!("200 concurrent inserts took {commits} commits");
    assert!(
        commits < 200,
        "every insert got its own commit: group commit is not working"
    );
}

/// A million held recipients become due in steps, those due soonest first, each step its
/// own transaction; none is changed twice and those already due are left alone.
#[tokio::test]
async fn make_due_works_in_steps_soonest_first() {
    let dir = tempfile::tempdir().unwrap();
    let s = Embedded::open(dir.path()).unwrap();
    for i in 0..5 {
        s.insert(suite::message(&format!("m{i}"), &[("a@x.test", "x.test")]))
            .await
            .unwrap();
    }
    drop(s);
    let c = open_connection(&dir.path().join("queue.sqlite")).unwrap();
    // Held for later (as a down primary's hold leaves them), one already due.
    c.execute("UPDATE recipients SET next_attempt = 9000", [])
        .unwrap();
    c.execute(
        "UPDATE recipients SET next_attempt = 10 WHERE message_id = 'm4'",
        [],
    )
    .unwrap();
    let domains = vec!["x.test".to_string()];
    assert_eq!(super::ops::make_due(&c, &domains, 100, 2).unwrap(), 2);
    let due: Vec<String> = c
        .prepare("SELECT message_id FROM recipients WHERE next_attempt = 100 ORDER BY message_id")
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    assert_eq!(due, ["m0", "m1"], "those due soonest first");
    assert_eq!(super::ops::make_due(&c, &domains, 100, 2).unwrap(), 2);
    assert_eq!(
        super::ops::make_due(&c, &domains, 100, 2).unwrap(),
        0,
        "m4 was due already: not counted, not changed"
    );
    let m4: i64 = c
        .query_row(
            "SELECT next_attempt FROM recipients WHERE message_id = 'm4'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(m4, 10);
}

/// A step walks the due-time index once for all the route's domains: with one domain's
/// held mail all due already and another's still waiting, a step of 10 reads about 10 rows,
/// not every waiting row once per domain (the cost that slowed the drain at a million).
#[test]
fn a_make_due_step_walks_the_index_once_for_all_domains() {
    let dir = tempfile::tempdir().unwrap();
    drop(Embedded::open(dir.path()).unwrap());
    let c = open_connection(&dir.path().join("queue.sqlite")).unwrap();
    // 3,000 recipients of b.test waiting; a.test first in the list, none of its left.
    c.execute_batch(
        "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 3000)
         INSERT INTO recipients (message_id, address, domain, params, next_attempt)
         SELECT 'm' || i, 'x@b.test', 'b.test', '', 9000 + i FROM n;
         INSERT INTO recipients (message_id, address, domain, params, next_attempt)
         VALUES ('z1', 'x@z.test', 'z.test', '', 5000);",
    )
    .unwrap();
    let domains = vec!["a.test".to_string(), "b.test".to_string()];
    let steps = || {
        c.prepare_cached(super::ops::MAKE_DUE)
            .unwrap()
            .get_status(rusqlite::StatementStatus::VmStep)
    };
    assert_eq!(super::ops::make_due(&c, &domains, 100, 10).unwrap(), 10);
    let first = steps();
    assert!(first > 0, "make_due runs MAKE_DUE");
    assert_eq!(super::ops::make_due(&c, &domains, 100, 10).unwrap(), 10);
    let second = steps() - first;
    assert!(
        second < 2_000,
        "a step of 10 ran {second} VM steps: it walked the waiting rows"
    );
    let due: Vec<i64> = c
        .prepare("SELECT next_attempt FROM recipients WHERE domain = 'b.test' ORDER BY id LIMIT 21")
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    assert_eq!(&due[..20], &[100; 20], "the soonest twenty, made due");
    assert_eq!(due[20], 9021, "the next still waiting");
    let z: i64 = c
        .query_row(
            "SELECT next_attempt FROM recipients WHERE domain = 'z.test'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(z, 5000, "a domain not listed is left alone");
}
