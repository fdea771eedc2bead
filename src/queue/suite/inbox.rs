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
