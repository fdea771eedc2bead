//! The conformance case for operators' totals: after every kind of change, `stats` and
//! `depth` (maintained counters, where a backend keeps them) equal a full recount.

use super::{done, message};
use crate::queue::{OperatorAction, Status, Store, Update};

/// Asserts that the store's totals equal its recount, naming the step that broke them.
async fn same(s: &dyn Store, step: &str) {
    let (stats, depth) = s.recount().await.unwrap();
    assert_eq!(s.stats().await.unwrap(), stats, "stats after {step}");
    assert_eq!(s.depth().await.unwrap(), depth, "depth after {step}");
}

/// A mixed sequence: inserts (several recipients in a domain, several domains), claims,
/// deliveries, deferrals, failures with their notifications, holds, releases, deletes, a
/// bounce of a whole message, a purged domain; the totals checked after each.
pub async fn counters(s: &dyn Store) {
    same(s, "nothing").await;
    let mut big = message(
        "m1",
        &[
            ("a@x.test", "x.test"),
            ("b@x.test", "x.test"),
            ("c@y.test", "y.test"),
        ],
    );
    big.body = vec![b'x'; 5000];
    s.insert(big).await.unwrap();
    s.insert(message("m2", &[("d@x.test", "x.test")]))
        .await
        .unwrap();
    s.insert(message(
        "m3",
        &[("e@y.test", "y.test"), ("f@z.test", "z.test")],
    ))
    .await
    .unwrap();
    same(s, "inserts").await;
    let depth = s.depth().await.unwrap();
    let x = depth.iter().find(|d| d.domain == "x.test").unwrap();
    assert_eq!(
        (x.messages, x.recipients, x.bytes),
        (2, 3, 5000 + 21),
        "a message counts once in a domain, its size once"
    );

    let jobs = s.claim_due(2000, 100).await.unwrap();
    same(s, "claims").await;
    let m1x = jobs
        .iter()
        .find(|j| j.queue_id == "m1" && j.domain == "x.test")
        .unwrap();
    // One of two delivered, the other deferred: m1 stays counted in x.test.
    s.record(
        "m1",
        vec![
            done(m1x.recipients[0].row, Status::Delivered, 0),
            Update::new(m1x.recipients[1].row, Status::Pending, true, 9000, None),
        ],
        vec![],
    )
    .await
    .unwrap();
    same(s, "a delivery and a deferral").await;
    // Tried again, the last x.test recipient of m1 fails, with a notification to the
    // sender's domain.
    let again = s.claim_due(9000, 100).await.unwrap();
    let retry = again.iter().find(|j| j.queue_id == "m1").unwrap();
    assert_eq!(retry.recipients[0].row, m1x.recipients[1].row);
    let notice = message("n1", &[("s@sender.test", "sender.test")]);
    s.record(
        "m1",
        vec![done(retry.recipients[0].row, Status::Failed, 0)],
        vec![notice],
    )
    .await
    .unwrap();
    same(s, "a failure and its notification").await;

    let m3: Vec<_> = jobs.iter().filter(|j| j.queue_id == "m3").collect();
    for j in &m3 {
        let rows = j
            .recipients
            .iter()
            .map(|r| Update::new(r.row, Status::Pending, true, 9000, None))
            .collect();
        s.record("m3", rows, vec![]).await.unwrap();
    }
    s.act(vec!["m3".into(), "m2".into()], OperatorAction::Hold, 3000)
        .await
        .unwrap();
    same(s, "holds").await;
    s.act(vec!["m2".into()], OperatorAction::Release, 3000)
        .await
        .unwrap();
    same(s, "a release").await;
    s.act(vec!["m3".into()], OperatorAction::Flush, 3000)
        .await
        .unwrap();
    same(s, "a flush").await;

    // Bounce the whole of m3 (held): claimed by the operator, failed, notified.
    let all = s.claim_message("m3").await.unwrap();
    same(s, "claiming a message").await;
    let rows = all
        .iter()
        .flat_map(|j| j.recipients.iter())
        .map(|r| done(r.row, Status::Failed, 0))
        .collect();
    let removed = s
        .record(
            "m3",
            rows,
            vec![message("n2", &[("s@sender.test", "sender.test")])],
        )
        .await
        .unwrap();
    assert!(removed, "a bounced message leaves the queue");
    same(s, "a bounce").await;

    s.insert(message(
        "m4",
        &[("g@x.test", "x.test"), ("h@w.test", "w.test")],
    ))
    .await
    .unwrap();
    s.act(vec!["m2".into()], OperatorAction::Delete, 4000)
        .await
        .unwrap();
    same(s, "a delete").await;
    s.purge_domain("x.test").await.unwrap();
    same(s, "a purged domain").await;
    let depth = s.depth().await.unwrap();
    assert!(
        depth.iter().all(|d| d.domain != "x.test"),
        "a purged domain leaves the depth: {depth:?}"
    );
    let stats = s.stats().await.unwrap();
    assert_eq!(
        (stats.messages, stats.pending_recipients),
        (4, 4),
        "left: m1 (y.test, still claimed), m4 (w.test) and the two notifications: {depth:?}"
    );
}

/// Writes that fail part-way, as a node killed mid-transaction would leave them, count for
/// nothing: a record whose second notification has the id of a message already queued (its
/// outcome and first notification are rolled back with it), and inserts sent at once with
/// one of them a duplicate id.
pub async fn counters_after_failed_writes(s: &dyn Store) {
    s.insert(message(
        "m1",
        &[("a@x.test", "x.test"), ("b@y.test", "y.test")],
    ))
    .await
    .unwrap();
    s.insert(message("m2", &[("c@x.test", "x.test")]))
        .await
        .unwrap();
    let jobs = s.claim_due(2000, 100).await.unwrap();
    let before = (s.stats().await.unwrap(), s.depth().await.unwrap());
    let x = jobs
        .iter()
        .find(|j| j.queue_id == "m1" && j.domain == "x.test")
        .unwrap();
    let failed = s
        .record(
            "m1",
            vec![done(x.recipients[0].row, Status::Delivered, 0)],
            vec![
                message("n1", &[("s@sender.test", "sender.test")]),
                message("m2", &[("s@sender.test", "sender.test")]),
            ],
        )
        .await;
    assert!(
        failed.is_err(),
        "a notification with a queued message's id fails the record"
    );
    same(s, "a failed record").await;
    assert_eq!(
        (s.stats().await.unwrap(), s.depth().await.unwrap()),
        before,
        "nothing of the failed record counts"
    );
    let one = |id: &'static str| s.insert(message(id, &[("d@z.test", "z.test")]));
    let (m3, m1, m4) = tokio::join!(one("m3"), one("m1"), one("m4"));
    assert!(
        m3.is_ok() && m1.is_err() && m4.is_ok(),
        "{m3:?} {m1:?} {m4:?}"
    );
    same(s, "inserts beside a duplicate").await;
    let z = s.depth().await.unwrap();
    let z = z.iter().find(|d| d.domain == "z.test").unwrap();
    assert_eq!((z.messages, z.recipients), (2, 2));
}
