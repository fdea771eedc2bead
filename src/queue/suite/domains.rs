//! The conformance cases for domains and tenants managed at run time: the registry (its
//! revisions, numbering, order and change notifications), a tenant's view of the queue, and
//! purging a domain's mail.

use super::{done, message};
use crate::queue::{Filter, OperatorAction, Status, Store};

/// Registry entries: written only as expected (absent, or at the revision read), every
/// change (a delete too) taking the next number of one sequence, listed by kind then name.
pub async fn registry(s: &dyn Store) {
    use crate::queue::registry::{Expect::*, Written};
    assert_eq!(s.registry_version().await.unwrap(), 0, "never changed");
    assert!(s.registry().await.unwrap().is_empty());
    let put = |kind: &'static str, name: &'static str, value: &'static str, expect| async move {
        s.registry_put(kind, name, value.into(), expect)
            .await
            .unwrap()
    };
    let rev = |w: Written| match w {
        Written::Done(rev) => rev,
        Written::Conflict => panic!("not written"),
    };
    let tenant = rev(put("tenant", "acme", "{\"t\":1}", Absent).await);
    assert!(tenant > 0);
    assert_eq!(s.registry_version().await.unwrap(), tenant);
    let b1 = rev(put("domain", "b.test", "{\"v\":1}", Absent).await);
    assert!(b1 > tenant);
    assert_eq!(
        put("domain", "b.test", "{\"v\":9}", Absent).await,
        Written::Conflict,
        "added twice"
    );
    assert_eq!(
        put("domain", "b.test", "{\"v\":9}", Rev(b1 + 100)).await,
        Written::Conflict,
        "not at that revision"
    );
    assert_eq!(
        put("domain", "nope.test", "{}", Rev(b1)).await,
        Written::Conflict,
        "changing an entry that is not there"
    );
    assert_eq!(
        s.registry_version().await.unwrap(),
        b1,
        "a conflict changes nothing"
    );
    let b2 = rev(put("domain", "b.test", "{\"v\":2}", Rev(b1)).await);
    assert!(b2 > b1);
    assert_eq!(
        put("domain", "b.test", "{\"v\":3}", Rev(b1)).await,
        Written::Conflict,
        "a stale revision"
    );
    let a = rev(put("domain", "a.test", "{}", Absent).await);
    assert!(a > b2);
    let entry = |kind: &str, name: &str, value: &str, rev| crate::queue::registry::Entry {
        kind: kind.into(),
        name: name.into(),
        value: value.into(),
        rev,
    };
    assert_eq!(
        s.registry().await.unwrap(),
        [
            entry("domain", "a.test", "{}", a),
            entry("domain", "b.test", "{\"v\":2}", b2),
            entry("tenant", "acme", "{\"t\":1}", tenant),
        ],
        "by kind, then name"
    );

    // Deleting: at the revision given, or whatever it is; each delete takes a number.
    assert!(
        !s.registry_delete("domain", "b.test", Some(b1))
            .await
            .unwrap()
    );
    assert!(
        !s.registry_delete("domain", "nope.test", None)
            .await
            .unwrap()
    );
    assert_eq!(s.registry_version().await.unwrap(), a, "nothing deleted");
    assert!(
        s.registry_delete("domain", "b.test", Some(b2))
            .await
            .unwrap()
    );
    let after_delete = s.registry_version().await.unwrap();
    assert!(after_delete > a, "a delete is a change");
    assert!(s.registry_delete("domain", "a.test", None).await.unwrap());
    assert!(s.registry_version().await.unwrap() > after_delete);
    assert!(!s.registry_delete("domain", "a.test", None).await.unwrap());
    let again = rev(put("domain", "a.test", "{\"again\":1}", Absent).await);
    assert_eq!(s.registry_version().await.unwrap(), again);
    assert_eq!(
        s.registry().await.unwrap(),
        [
            entry("domain", "a.test", "{\"again\":1}", again),
            entry("tenant", "acme", "{\"t\":1}", tenant),
        ]
    );
}

/// `watcher` hears of every registry change `writer` makes, within seconds, and of none
/// that changed nothing. One store for both when a store is one node's own.
pub async fn registry_watch(writer: &dyn Store, watcher: &dyn Store) {
    use crate::queue::registry::{Expect, Written};
    use std::time::Duration;
    let changed = std::sync::Arc::new(tokio::sync::Notify::new());
    watcher.watch_registry(changed.clone());
    let heard = || tokio::time::timeout(Duration::from_secs(5), changed.notified());
    // A store may also notify when it starts watching (changes may have gone unheard before):
    // of three changes, at least two must be told by the change itself.
    let mut rev = None;
    for i in 0..3 {
        let expect = rev.map_or(Expect::Absent, Expect::Rev);
        let put = writer.registry_put("domain", "w.test", format!("{{\"n\":{i}}}"), expect);
        match put.await.unwrap() {
            Written::Done(r) => rev = Some(r),
            Written::Conflict => panic!("change {i} not written"),
        }
        assert!(heard().await.is_ok(), "change {i} not heard of");
    }
    assert!(
        writer
            .registry_delete("domain", "w.test", rev)
            .await
            .unwrap()
    );
    assert!(heard().await.is_ok(), "a delete not heard of");
    // Let anything still in flight arrive, then: no change, no notification.
    let quiet = Duration::from_millis(300);
    while tokio::time::timeout(quiet, changed.notified())
        .await
        .is_ok()
    {}
    let unchanged = writer.registry_put("domain", "x.test", "{}".into(), Expect::Rev(1));
    assert_eq!(unchanged.await.unwrap(), Written::Conflict);
    assert!(
        !writer
            .registry_delete("domain", "w.test", None)
            .await
            .unwrap()
    );
    assert!(
        tokio::time::timeout(Duration::from_secs(1), changed.notified())
            .await
            .is_err(),
        "notified of a change that was not made"
    );
}

/// A tenant's view: messages with a pending recipient in one of its domains, the other
/// filters applying as well; listing and count agree.
pub async fn tenant_view(s: &dyn Store) {
    let mut m3 = message("m3", &[("c@y.test", "y.test")]);
    m3.sender = "other@else.test".into();
    for m in [
        message("m1", &[("a@x.test", "x.test"), ("b@y.test", "y.test")]),
        message("m2", &[("c@z.test", "z.test")]),
        m3,
        message("m4", &[("d@x.test", "x.test")]),
    ] {
        s.insert(m).await.unwrap();
    }
    // m5's recipient in x.test is delivered, its other one pending elsewhere: not x's.
    s.insert(message(
        "m5",
        &[("e@x.test", "x.test"), ("f@z.test", "z.test")],
    ))
    .await
    .unwrap();
    let jobs = s.claim_message("m5").await.unwrap();
    let x = jobs.iter().find(|j| j.domain == "x.test").unwrap();
    s.record(
        "m5",
        vec![done(x.recipients[0].row, Status::Delivered, 0)],
        vec![],
    )
    .await
    .unwrap();
    let view = |domains: &[&str], more: Filter| {
        let f = Filter {
            domains: domains.iter().map(|d| d.to_string()).collect(),
            ..more
        };
        async move {
            let listed: Vec<String> = s
                .list(f.clone())
                .await
                .unwrap()
                .into_iter()
                .map(|m| m.id)
                .collect();
            // A count selects as a listing does, its limit aside.
            let unlimited = Filter {
                limit: 0,
                ..f.clone()
            };
            let all = s.list(unlimited).await.unwrap().len() as u64;
            assert_eq!(s.count(f.clone()).await.unwrap(), all, "{f:?}");
            listed
        }
    };
    assert_eq!(view(&["x.test"], Filter::default()).await, ["m1", "m4"]);
    assert_eq!(
        view(&["Y.test.", "x.test"], Filter::default()).await,
        ["m1", "m3", "m4"],
        "any of them, written as an operator may"
    );
    assert_eq!(
        view(&["nope.test"], Filter::default()).await,
        [] as [&str; 0]
    );
    assert_eq!(
        view(
            &["y.test"],
            Filter {
                domain: Some("x.test".into()),
                ..Default::default()
            }
        )
        .await,
        ["m1"],
        "and the domain filter"
    );
    assert_eq!(
        view(
            &["y.test", "x.test"],
            Filter {
                sender: Some("other@".into()),
                ..Default::default()
            }
        )
        .await,
        ["m3"],
        "and the sender filter"
    );
    assert_eq!(
        view(
            &["x.test", "y.test"],
            Filter {
                after: Some("m1".into()),
                limit: 1,
                ..Default::default()
            }
        )
        .await,
        ["m3"],
        "paged"
    );
    assert_eq!(
        view(&[], Filter::default()).await.len(),
        5,
        "no tenant: all"
    );
}

/// Purging a domain drops its pending, unclaimed recipients without a word; a message left
/// with none pending leaves the queue, body and all; recipients in delivery stay.
pub async fn purge_domain(s: &dyn Store) {
    for m in [
        message("both", &[("a@x.test", "x.test"), ("b@y.test", "y.test")]),
        message("only", &[("c@x.test", "x.test"), ("d@x.test", "x.test")]),
        message("held", &[("e@x.test", "x.test")]),
        message("other", &[("f@y.test", "y.test")]),
        message("busy", &[("g@x.test", "x.test")]),
        message("sent", &[("h@x.test", "x.test"), ("i@z.test", "z.test")]),
    ] {
        s.insert(m).await.unwrap();
    }
    s.act(vec!["held".into()], OperatorAction::Hold, 0)
        .await
        .unwrap();
    let busy = s.claim_message("busy").await.unwrap();
    // "sent": its z.test recipient delivered, its x.test one waiting for another try.
    let sent = s.claim_message("sent").await.unwrap();
    let row = |domain: &str| sent.iter().find(|j| j.domain == domain).unwrap().recipients[0].row;
    s.record(
        "sent",
        vec![
            done(row("z.test"), Status::Delivered, 0),
            done(row("x.test"), Status::Pending, 9000),
        ],
        vec![],
    )
    .await
    .unwrap();

    assert_eq!(s.purge_domain("X.test.").await.unwrap(), 4);
    let shown = s.show("both").await.unwrap().expect("both stays");
    let pending: Vec<&str> = shown
        .recipients
        .iter()
        .filter(|r| r.status == Status::Pending)
        .map(|r| r.address.as_str())
        .collect();
    assert_eq!(
        pending,
        ["b@y.test"],
        "only the other domain's recipient is left"
    );
    for gone in ["only", "held", "sent"] {
        assert!(
            s.show(gone).await.unwrap().is_none(),
            "{gone} left the queue"
        );
        assert!(matches!(
            s.body(gone).await,
            Err(crate::queue::StoreError::NotFound(_))
        ));
    }
    let busy_now = s.show("busy").await.unwrap().expect("busy stays");
    assert_eq!(
        busy_now.recipients[0].status,
        Status::Pending,
        "in delivery"
    );
    assert_eq!(s.stats().await.unwrap().messages, 3);
    assert_eq!(s.purge_domain("x.test").await.unwrap(), 0, "nothing left");

    // The delivery ends (another try later): now it goes too.
    s.record(
        "busy",
        vec![done(busy[0].recipients[0].row, Status::Pending, 9000)],
        vec![],
    )
    .await
    .unwrap();
    assert_eq!(s.purge_domain("x.test").await.unwrap(), 1);
    assert_eq!(s.purge_domain("y.test").await.unwrap(), 2);
    assert_eq!(s.stats().await.unwrap().messages, 0);
}
