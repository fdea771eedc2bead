//! Conformance cases for the emergency inbox's part of the store: credentials, mailboxes
//! keyed by canonical address, stable UIDs and flags.

use super::{done, message};
use crate::queue::inbox::FlagChange;
use crate::queue::{Status, Store};

/// Credentials are stored, replaced and removed per mailbox key.
pub async fn inbox_credentials(s: &dyn Store) {
    assert_eq!(s.inbox_credential("jo@x.test").await.unwrap(), None);
    assert!(
        !s.inbox_set_credential("jo@x.test", Some("h1".into()))
            .await
            .unwrap()
    );
    assert!(
        s.inbox_set_credential("jo@x.test", Some("h2".into()))
            .await
            .unwrap()
    );
    assert_eq!(
        s.inbox_credential("jo@x.test").await.unwrap().as_deref(),
        Some("h2")
    );
    assert_eq!(s.inbox_credential("al@x.test").await.unwrap(), None);
    assert!(s.inbox_set_credential("jo@x.test", None).await.unwrap());
    assert!(!s.inbox_set_credential("jo@x.test", None).await.unwrap());
    assert_eq!(s.inbox_credential("jo@x.test").await.unwrap(), None);

    // A list the primary published: used where no password was set here, replaced whole.
    let entry = |k: &str, h: &str| (k.to_string(), h.to_string());
    s.inbox_publish(
        "X.test",
        vec![entry("jo@x.test", "p1"), entry("cy@x.test", "p2")],
    )
    .await
    .unwrap();
    s.inbox_publish("y.test", vec![entry("jo@y.test", "p3")])
        .await
        .unwrap();
    assert_eq!(
        s.inbox_credential("cy@x.test").await.unwrap().as_deref(),
        Some("p2")
    );
    s.inbox_set_credential("jo@x.test", Some("mine".into()))
        .await
        .unwrap();
    assert_eq!(
        s.inbox_credential("jo@x.test").await.unwrap().as_deref(),
        Some("mine"),
        "a password set here wins"
    );
    assert!(
        !s.inbox_set_credential("cy@x.test", None).await.unwrap(),
        "a published hash is not this store's to remove"
    );
    s.inbox_publish("x.test", vec![entry("jo@x.test", "p1")])
        .await
        .unwrap();
    assert_eq!(s.inbox_credential("cy@x.test").await.unwrap(), None);
    assert_eq!(
        s.inbox_credential("jo@y.test").await.unwrap().as_deref(),
        Some("p3"),
        "another domain's list stays"
    );
}

/// A one-time code works once, for its mailbox only, and not after it expired; adding a
/// code drops the expired ones.
pub async fn inbox_codes(s: &dyn Store) {
    let now = crate::queue::now_ms();
    s.inbox_add_code("jo@x.test", "old".into(), now - 1)
        .await
        .unwrap();
    s.inbox_add_code("jo@x.test", "c1".into(), now + 60_000)
        .await
        .unwrap();
    assert!(
        !s.inbox_use_code("al@x.test", "c1".into(), now)
            .await
            .unwrap()
    );
    assert!(
        !s.inbox_use_code("jo@x.test", "c2".into(), now)
            .await
            .unwrap()
    );
    assert!(
        !s.inbox_use_code("jo@x.test", "c1".into(), now + 60_000)
            .await
            .unwrap()
    );
    assert!(
        s.inbox_use_code("jo@x.test", "c1".into(), now)
            .await
            .unwrap()
    );
    assert!(
        !s.inbox_use_code("jo@x.test", "c1".into(), now)
            .await
            .unwrap()
    );
    assert!(
        !s.inbox_use_code("jo@x.test", "old".into(), now - 10)
            .await
            .unwrap()
    );
}

/// A user's delete hides a message from their mailbox only; dropping also removes their
/// pending recipients (any case or `+tag`), and the message once none is left, never
/// another user's.
pub async fn inbox_deletes(s: &dyn Store) {
    s.insert(message(
        "d1",
        &[("Jo@z.test", "z.test"), ("al@z.test", "z.test")],
    ))
    .await
    .unwrap();
    s.insert(message("d2", &[("jo+t@z.test", "z.test")]))
        .await
        .unwrap();
    s.insert(message("d3", &[("jo@z.test", "z.test")]))
        .await
        .unwrap();
    let ids = |m: crate::queue::inbox::Mailbox| {
        m.messages
            .into_iter()
            .map(|h| h.queue_id)
            .collect::<Vec<_>>()
    };
    assert_eq!(
        ids(s.inbox_mailbox("jo@z.test").await.unwrap()),
        ["d1", "d2", "d3"]
    );
    s.inbox_delete("jo@z.test", vec!["d3".into()], false)
        .await
        .unwrap();
    assert_eq!(
        ids(s.inbox_mailbox("jo@z.test").await.unwrap()),
        ["d1", "d2"]
    );
    let d3 = s.show("d3").await.unwrap().expect("still queued");
    assert_eq!(d3.recipients[0].status, Status::Pending);

    s.inbox_delete("jo@z.test", vec!["d1".into(), "d2".into()], true)
        .await
        .unwrap();
    assert!(s.show("d2").await.unwrap().is_none(), "no recipient left");
    let d1 = s.show("d1").await.unwrap().expect("al's recipient stays");
    let left: Vec<_> = d1.recipients.iter().map(|r| r.address.as_str()).collect();
    assert_eq!(left, ["al@z.test"]);
    assert_eq!(ids(s.inbox_mailbox("al@z.test").await.unwrap()), ["d1"]);
    assert!(ids(s.inbox_mailbox("jo@z.test").await.unwrap()).is_empty());
}

/// A mailbox holds exactly the messages pending for its address (case and `+tag` folded),
/// with UIDs that stay, are never reused, and flags kept per mailbox.
pub async fn inbox_mailboxes(s: &dyn Store) {
    s.insert(message(
        "m1",
        &[("Jo@x.test", "x.test"), ("al@x.test", "x.test")],
    ))
    .await
    .unwrap();
    s.insert(message("m2", &[("al@x.test", "x.test")]))
        .await
        .unwrap();
    s.insert(message("m3", &[("jo+news@X.test", "x.test")]))
        .await
        .unwrap();
    s.insert(message(
        "m4",
        &[("jo@y.test", "y.test"), ("jot@x.test", "x.test")],
    ))
    .await
    .unwrap();
    let jo = s.inbox_mailbox("jo@x.test").await.unwrap();
    let ids: Vec<_> = jo
        .messages
        .iter()
        .map(|m| (m.uid, m.queue_id.as_str()))
        .collect();
    assert_eq!(ids, [(1, "m1"), (2, "m3")]);
    assert_eq!(jo.uid_next, 3);
    assert!(jo.uid_validity > 0);
    assert_eq!(jo.messages[0].size, message("m1", &[]).body.len() as u64);
    let al = s.inbox_mailbox("al@x.test").await.unwrap();
    let ids: Vec<_> = al.messages.iter().map(|m| m.queue_id.as_str()).collect();
    assert_eq!(ids, ["m1", "m2"], "another address sees only its own mail");
    assert_eq!(s.inbox_mailbox("jo@x.test").await.unwrap(), jo, "stable");

    let change = FlagChange {
        seen: Some(true),
        flagged: None,
    };
    s.inbox_set_flags("jo@x.test", vec![2, 99], change)
        .await
        .unwrap();
    let jo2 = s.inbox_mailbox("jo@x.test").await.unwrap();
    assert!(!jo2.messages[0].seen && jo2.messages[1].seen && !jo2.messages[1].flagged);
    let al2 = s.inbox_mailbox("al@x.test").await.unwrap();
    assert!(
        al2.messages.iter().all(|m| !m.seen),
        "flags are per mailbox"
    );

    // m3 is delivered: it leaves the queue and the mailbox; a new message never gets its UID.
    let jobs = s.claim_due(i64::MAX / 2, 100).await.unwrap();
    let m3 = jobs.iter().find(|j| j.queue_id == "m3").unwrap();
    let row = m3.recipients[0].row;
    assert!(
        s.record("m3", vec![done(row, Status::Delivered, 0)], vec![])
            .await
            .unwrap()
    );
    s.insert(message("m5", &[("JO@x.test", "x.test")]))
        .await
        .unwrap();
    let jo3 = s.inbox_mailbox("jo@x.test").await.unwrap();
    let ids: Vec<_> = jo3
        .messages
        .iter()
        .map(|m| (m.uid, m.queue_id.as_str()))
        .collect();
    assert_eq!(ids, [(1, "m1"), (3, "m5")]);
    assert_eq!(jo3.uid_validity, jo.uid_validity);
    assert_eq!(jo3.uid_next, 4);
}

/// With `inbox_keep`, a message whose last recipient is delivered in a keeping domain stays
/// for the inbox (shown as delivered), never claimable again and out of the queue's counts,
/// until `inbox_purge` passes its time; failed mail and other domains' mail go at once. On
/// a store of its own (it checks the queue's totals).
pub async fn inbox_keeps_delivered(s: &dyn Store) {
    s.inbox_keep(vec![("K.test".into(), 60_000)]).await.unwrap();
    let both = [("jo@k.test", "k.test"), ("bob@other.test", "other.test")];
    s.insert(message("k1", &both)).await.unwrap();
    s.insert(message("k2", &[("jo@k.test", "k.test")]))
        .await
        .unwrap();
    s.insert(message("k3", &[("jo@nokeep.test", "nokeep.test")]))
        .await
        .unwrap();
    let jobs = s.claim_due(i64::MAX / 2, 100).await.unwrap();
    let row = |id: &str, domain: &str| {
        jobs.iter()
            .find(|j| j.queue_id == id && j.domain == domain)
            .unwrap()
            .recipients[0]
            .row
    };
    let view = |m: crate::queue::inbox::Mailbox| {
        m.messages
            .into_iter()
            .map(|h| (h.queue_id, h.delivered))
            .collect::<Vec<_>>()
    };

    // jo's copy is delivered while bob's waits: jo sees it delivered, the queue still holds it.
    assert!(
        !s.record(
            "k1",
            vec![done(row("k1", "k.test"), Status::Delivered, 0)],
            vec![]
        )
        .await
        .unwrap()
    );
    assert_eq!(
        view(s.inbox_mailbox("jo@k.test").await.unwrap()),
        [("k1".to_string(), true), ("k2".to_string(), false)]
    );
    assert!(
        s.record(
            "k1",
            vec![done(row("k1", "other.test"), Status::Delivered, 0)],
            vec![]
        )
        .await
        .unwrap(),
        "every recipient final: out of the queue"
    );
    assert!(
        s.record(
            "k2",
            vec![done(row("k2", "k.test"), Status::Failed, 0)],
            vec![]
        )
        .await
        .unwrap()
    );
    assert!(
        s.record(
            "k3",
            vec![done(row("k3", "nokeep.test"), Status::Delivered, 0)],
            vec![]
        )
        .await
        .unwrap()
    );
    assert!(s.show("k2").await.unwrap().is_none(), "failed: not kept");
    assert!(
        s.show("k3").await.unwrap().is_none(),
        "not a keeping domain"
    );
    let kept = s.show("k1").await.unwrap().expect("kept for the inbox");
    assert!(
        kept.recipients
            .iter()
            .all(|r| r.status == Status::Delivered)
    );
    assert_eq!(
        view(s.inbox_mailbox("jo@k.test").await.unwrap()),
        [("k1".to_string(), true)]
    );
    assert_eq!(s.body("k1").await.unwrap(), message("k1", &[]).body);

    // Never deliverable again, not queued mail.
    assert!(s.claim_due(i64::MAX / 2, 100).await.unwrap().is_empty());
    assert!(s.claim_message("k1").await.unwrap().is_empty());
    use crate::queue::OperatorAction;
    for action in [OperatorAction::Flush, OperatorAction::Release] {
        s.act(vec!["k1".into()], action, 0).await.unwrap();
    }
    assert!(s.claim_due(i64::MAX / 2, 100).await.unwrap().is_empty());
    let stats = s.stats().await.unwrap();
    assert_eq!(
        (stats.messages, stats.bytes, stats.pending_recipients),
        (0, 0, 0)
    );
    assert!(s.depth().await.unwrap().iter().all(|d| d.messages == 0));
    assert_eq!(
        s.recount().await.unwrap().0,
        stats,
        "counters agree with the rows"
    );
    assert_eq!(s.count(Default::default()).await.unwrap(), 0, "not listed");

    // The purge removes it once its time is up, not before.
    let now = crate::queue::now_ms();
    assert_eq!(s.inbox_purge(now, 100).await.unwrap(), 0);
    assert_eq!(s.inbox_purge(now + 120_000, 100).await.unwrap(), 1);
    assert!(s.show("k1").await.unwrap().is_none(), "space reclaimed");
    assert!(
        s.inbox_mailbox("jo@k.test")
            .await
            .unwrap()
            .messages
            .is_empty()
    );
    let stats = s.stats().await.unwrap();
    assert_eq!((stats.messages, stats.bytes), (0, 0));
    assert_eq!(s.recount().await.unwrap().0, stats);

    // Keeping turned off: delivered mail leaves at once, and is not shown while queued.
    s.inbox_keep(vec![]).await.unwrap();
    s.insert(message("k4", &both)).await.unwrap();
    let jobs = s.claim_due(i64::MAX / 2, 100).await.unwrap();
    let jo_row = jobs
        .iter()
        .find(|j| j.domain == "k.test")
        .unwrap()
        .recipients[0]
        .row;
    s.record("k4", vec![done(jo_row, Status::Delivered, 0)], vec![])
        .await
        .unwrap();
    assert!(
        s.inbox_mailbox("jo@k.test")
            .await
            .unwrap()
            .messages
            .is_empty()
    );
}
