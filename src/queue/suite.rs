//! The store conformance suite: what every [`Store`] backend must do, written once and run
//! against each (the embedded store's unit tests, the PostgreSQL store's tests against a
//! real server). Each case wants a fresh, empty store. Test support only: it panics on any
//! difference.

use super::{
    Filter, NewMessage, NewRecipient, OperatorAction, OutageChange, RouteOutages, State, Status,
    Store, Update,
};
use crate::events::{OUTAGES_KEPT, Outage};

mod content;
mod counts;
mod domains;
mod inbox;
mod tls;
pub use content::spooled_content;
pub use counts::{counters, counters_after_failed_writes};
pub use domains::{purge_domain, registry, registry_watch, tenant_view};
pub use inbox::{
    inbox_codes, inbox_credentials, inbox_deletes, inbox_keeps_delivered, inbox_mailboxes,
};
pub use tls::sts_and_tls_reports;

/// Whether the file at `path` is gone within 10 s (the embedded store removes a deleted
/// message's spool file on a thread of its own, soon after the commit).
pub async fn gone_soon(path: &std::path::Path) -> bool {
    let until = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while path.exists() {
        if std::time::Instant::now() > until {
            return false;
        }
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    true
}

/// A message with these (address, domain) recipients, received at `received_at_ms`.
pub fn message(id: &str, rcpts: &[(&str, &str)]) -> NewMessage {
    NewMessage {
        id: id.into(),
        received_at_ms: 1000,
        sender: "s@sender.test".into(),
        mail_params: "BODY=8BITMIME".into(),
        client: "192.0.2.1".into(),
        helo: "c.test".into(),
        recipients: rcpts
            .iter()
            .map(|(a, d)| NewRecipient {
                address: a.to_string(),
                domain: d.to_string(),
                params: String::new(),
            })
            .collect(),
        body: b"Subject: t\r\n\r\nhello\r\n".to_vec(),
        authenticated: Some(true),
        held: false,
    }
}

fn done(row: i64, status: Status, next: i64) -> Update {
    Update {
        row,
        status,
        attempted: true,
        next_attempt_ms: next,
        last_reply: Some("250 ok".into()),
        warned: false,
    }
}

/// Insert, claim (once only), record outcomes, reschedule, make due, and leave the queue
/// with the notifications queued in the same step.
pub async fn lifecycle(s: &dyn Store) {
    s.insert(message(
        "m1",
        &[
            ("a@x.test", "x.test"),
            ("b@x.test", "x.test"),
            ("c@y.test", "y.test"),
        ],
    ))
    .await
    .unwrap();
    assert_eq!(s.stats().await.unwrap().pending_recipients, 3);
    let jobs = s.claim_due(2000, 100).await.unwrap();
    assert_eq!(jobs.len(), 2, "one job per domain");
    assert_eq!(
        jobs[0].authenticated,
        Some(true),
        "the authentication result is kept with the message"
    );
    assert!(
        s.claim_due(2000, 100).await.unwrap().is_empty(),
        "claimed jobs are not handed out twice"
    );
    assert_eq!(s.body("m1").await.unwrap(), b"Subject: t\r\n\r\nhello\r\n");
    let x = jobs.iter().find(|j| j.domain == "x.test").unwrap();
    let y = jobs.iter().find(|j| j.domain == "y.test").unwrap();
    let removed = s
        .record(
            "m1",
            vec![
                done(x.recipients[0].row, Status::Delivered, 0),
                done(x.recipients[1].row, Status::Failed, 0),
            ],
            vec![],
        )
        .await
        .unwrap();
    assert!(!removed);
    s.record(
        "m1",
        vec![done(y.recipients[0].row, Status::Pending, 9000)],
        vec![],
    )
    .await
    .unwrap();
    assert_eq!(s.next_due().await.unwrap(), Some(9000));
    assert!(s.claim_due(5000, 100).await.unwrap().is_empty());
    assert_eq!(s.make_due(vec!["y.test".into()], 5000).await.unwrap(), 1);
    let again = s.claim_due(5000, 100).await.unwrap();
    assert_eq!(again[0].recipients[0].attempts, 1);
    assert!(
        s.record(
            "m1",
            vec![done(again[0].recipients[0].row, Status::Delivered, 0)],
            vec![message("dsn1", &[("s@sender.test", "sender.test")])]
        )
        .await
        .unwrap()
    );
    // The notification queued with the last outcome is all that is left.
    assert_eq!(s.stats().await.unwrap().messages, 1);
    assert_eq!(
        s.body("dsn1").await.unwrap(),
        b"Subject: t\r\n\r\nhello\r\n"
    );
    assert!(matches!(
        s.body("m1").await,
        Err(super::StoreError::NotFound(_))
    ));
}

/// Listing with filters and paging, showing, hold/release/flush/delete, bouncing claims
/// and the depth per domain.
pub async fn operator_actions(s: &dyn Store) {
    let mut m1 = message("m1", &[("a@x.test", "x.test"), ("b@y.test", "y.test")]);
    m1.received_at_ms = 1000;
    let mut m2 = message("m2", &[("c@x.test", "x.test")]);
    m2.received_at_ms = 2000;
    m2.sender = "Other@Else.test".into();
    let mut m3 = message("m3", &[("d@z.test", "z.test")]);
    m3.received_at_ms = 3000;
    for m in [m1, m2, m3] {
        s.insert(m).await.unwrap();
    }
    let ids = |l: Vec<super::Listed>| l.into_iter().map(|m| m.id).collect::<Vec<_>>();
    let all = s.list(Filter::default()).await.unwrap();
    assert_eq!(ids(all.clone()), ["m1", "m2", "m3"], "oldest first");
    assert_eq!(all[0].pending, ["a@x.test", "b@y.test"]);
    assert_eq!(all[0].state, State::Queued);
    assert_eq!(all[0].size, 21);
    let f = |f: Filter| async move { ids(s.list(f).await.unwrap()) };
    let domain = |d: &str| Filter {
        domain: Some(d.into()),
        ..Default::default()
    };
    assert_eq!(f(domain("X.test.")).await, ["m1", "m2"]);
    assert_eq!(
        f(Filter {
            sender: Some("other@".into()),
            ..Default::default()
        })
        .await,
        ["m2"]
    );
    assert_eq!(
        f(Filter {
            recipient: Some("B@Y".into()),
            ..Default::default()
        })
        .await,
        ["m1"]
    );
    assert_eq!(
        f(Filter {
            received_before_ms: Some(2000),
            ..Default::default()
        })
        .await,
        ["m1", "m2"]
    );
    assert_eq!(
        f(Filter {
            after: Some("m1".into()),
            limit: 1,
            ..Default::default()
        })
        .await,
        ["m2"],
        "paging"
    );

    // A count selects as a listing does, its limit aside.
    assert_eq!(s.count(Filter::default()).await.unwrap(), 3);
    assert_eq!(
        s.count(Filter {
            domain: Some("x.test".into()),
            limit: 1,
            ..Default::default()
        })
        .await
        .unwrap(),
        2
    );

    // Hold keeps a message from every claim until it is released. Actions count messages
    // (m1 has two recipients), and one that needed no change does not count.
    assert_eq!(
        s.act(vec!["m1".into()], OperatorAction::Hold, 0)
            .await
            .unwrap(),
        1
    );
    assert_eq!(
        s.act(vec!["m1".into(), "nope".into()], OperatorAction::Hold, 0)
            .await
            .unwrap(),
        0,
        "already held"
    );
    assert_eq!(
        f(Filter {
            state: Some(State::Held),
            ..Default::default()
        })
        .await,
        ["m1"]
    );
    let claimed = s.claim_due(10_000, 100).await.unwrap();
    assert_eq!(
        claimed
            .iter()
            .map(|j| j.queue_id.as_str())
            .collect::<Vec<_>>(),
        ["m2", "m3"],
        "held mail is not claimed"
    );
    assert_eq!(
        f(Filter {
            state: Some(State::Active),
            ..Default::default()
        })
        .await,
        ["m2", "m3"]
    );
    assert_eq!(s.next_due().await.unwrap(), None, "held mail is never due");
    assert_eq!(s.make_due(vec!["x.test".into()], 5).await.unwrap(), 0);
    let depth = s.depth().await.unwrap();
    let x = depth.iter().find(|d| d.domain == "x.test").unwrap();
    assert_eq!((x.messages, x.recipients, x.held), (2, 2, 1));
    assert_eq!((x.bytes, x.oldest_ms), (42, Some(1000)));
    assert_eq!(depth.len(), 3);

    // Put m2 and m3 back as deferred, far in the future; flush makes m2 due again.
    for j in &claimed {
        s.record(
            &j.queue_id,
            vec![done(j.recipients[0].row, Status::Pending, 1_000_000)],
            vec![],
        )
        .await
        .unwrap();
    }
    assert_eq!(
        f(Filter {
            state: Some(State::Deferred),
            ..Default::default()
        })
        .await,
        ["m2", "m3"]
    );
    assert_eq!(
        s.act(vec!["m2".into()], OperatorAction::Flush, 20_000)
            .await
            .unwrap(),
        1
    );
    assert_eq!(s.next_due().await.unwrap(), Some(20_000));
    assert_eq!(
        s.act(vec!["m1".into()], OperatorAction::Release, 20_000)
            .await
            .unwrap(),
        1
    );
    let due = s.claim_due(20_000, 100).await.unwrap();
    assert_eq!(
        due.iter().map(|j| j.queue_id.as_str()).collect::<Vec<_>>(),
        ["m1", "m1", "m2"]
    );

    // claim_message takes a message's unclaimed recipients whatever their due time.
    assert!(
        s.claim_message("m1").await.unwrap().is_empty(),
        "already claimed"
    );
    let m3 = s.claim_message("m3").await.unwrap();
    assert_eq!(m3.len(), 1);
    assert_eq!(m3[0].recipients[0].address, "d@z.test");

    // Shown: every recipient with its state.
    let shown = s.show("m2").await.unwrap().unwrap();
    assert_eq!(shown.recipients.len(), 1);
    assert_eq!(shown.recipients[0].status, Status::Pending);
    assert_eq!(shown.recipients[0].attempts, 1);
    assert_eq!(shown.recipients[0].last_reply.as_deref(), Some("250 ok"));
    assert!(s.show("nope").await.unwrap().is_none());

    // Delete removes messages outright, claimed or not.
    assert_eq!(
        s.act(
            vec!["m1".into(), "m3".into(), "nope".into()],
            OperatorAction::Delete,
            0
        )
        .await
        .unwrap(),
        2
    );
    assert_eq!(ids(s.list(Filter::default()).await.unwrap()), ["m2"]);
    assert_eq!(s.stats().await.unwrap().messages, 1);
}

/// The recipient verification cache survives and answers with its expiry.
pub async fn cache(s: &dyn Store) {
    assert_eq!(s.cache_get("k".into()).await.unwrap(), None);
    s.cache_put("k".into(), true, 5000).await.unwrap();
    assert_eq!(s.cache_get("k".into()).await.unwrap(), Some((true, 5000)));
    s.cache_put("k".into(), false, 6000).await.unwrap();
    assert_eq!(s.cache_get("k".into()).await.unwrap(), Some((false, 6000)));
}

/// A primary's outage history: one open outage at a time, closed with what was held, marked
/// drained; every route on its own; only the last [`OUTAGES_KEPT`] kept.
pub async fn outages(s: &dyn Store) {
    use OutageChange::*;
    assert!(s.outages(OUTAGES_KEPT).await.unwrap().is_empty());
    let a = "127.0.0.1:2526";
    s.record_outage(a, Began { at_ms: 1000 }).await.unwrap();
    // Another node (or a second failing connection) seeing it down again changes nothing.
    s.record_outage(a, Began { at_ms: 1500 }).await.unwrap();
    // Nothing to drain while it is still down.
    s.record_outage(a, Drained { at_ms: 1600 }).await.unwrap();
    s.record_outage("mx:other.test", Began { at_ms: 1700 })
        .await
        .unwrap();
    let open = Outage {
        down_ms: 1000,
        ..Default::default()
    };
    let other = RouteOutages {
        route: "mx:other.test".into(),
        outages: vec![Outage {
            down_ms: 1700,
            ..Default::default()
        }],
    };
    assert_eq!(
        s.outages(OUTAGES_KEPT).await.unwrap(),
        vec![
            RouteOutages {
                route: a.into(),
                outages: vec![open.clone()],
            },
            other.clone()
        ],
        "last known: both down, since their first report"
    );
    s.record_outage(
        a,
        Ended {
            at_ms: 5000,
            held: 7,
        },
    )
    .await
    .unwrap();
    s.record_outage(
        a,
        Ended {
            at_ms: 5100,
            held: 9,
        },
    )
    .await
    .unwrap();
    s.record_outage(a, Drained { at_ms: 6500 }).await.unwrap();
    s.record_outage(a, Drained { at_ms: 6900 }).await.unwrap();
    let closed = Outage {
        down_ms: 1000,
        up_ms: Some(5000),
        held: Some(7),
        drained_ms: Some(6500),
    };
    assert_eq!(
        s.outages(OUTAGES_KEPT).await.unwrap()[0].outages,
        vec![closed.clone()],
        "the first report of each change counts"
    );
    // Down again: a new outage; the history is bounded, newest kept.
    for i in 0..OUTAGES_KEPT as i64 + 3 {
        let t = 10_000 + i * 1000;
        s.record_outage(a, Began { at_ms: t }).await.unwrap();
        s.record_outage(
            a,
            Ended {
                at_ms: t + 500,
                held: 1,
            },
        )
        .await
        .unwrap();
    }
    s.record_outage(a, Began { at_ms: 99_000 }).await.unwrap();
    let all = s.outages(OUTAGES_KEPT).await.unwrap();
    assert_eq!(all[1], other, "other routes are left alone");
    let mine = &all[0].outages;
    assert_eq!(mine.len(), OUTAGES_KEPT);
    assert_eq!(
        mine.last().unwrap(),
        &Outage {
            down_ms: 99_000,
            ..Default::default()
        }
    );
    assert!(
        mine.windows(2).all(|w| w[0].down_ms < w[1].down_ms),
        "oldest first"
    );
    assert!(!mine.contains(&closed), "the oldest went");
    let last_two = s.outages(2).await.unwrap();
    assert_eq!(last_two[0].outages, mine[OUTAGES_KEPT - 2..].to_vec());
}

/// A drill's own message: inserted held, it is never claimed until released, and it is the
/// only message held that way (another message of the same domain is due as usual).
pub async fn inserted_held(s: &dyn Store) {
    let mut drill = message("drill1", &[("mx2-drill@x.test", "x.test")]);
    drill.held = true;
    s.insert(drill).await.unwrap();
    s.insert(message("other1", &[("a@x.test", "x.test")]))
        .await
        .unwrap();
    let jobs = s.claim_due(10_000, 10).await.unwrap();
    let claimed: Vec<&str> = jobs.iter().map(|j| j.queue_id.as_str()).collect();
    assert_eq!(claimed, ["other1"], "the held message is not claimed");
    let shown = s.show("drill1").await.unwrap().expect("still queued");
    assert!(shown.recipients[0].held, "{shown:?}");
    let depth = s.depth().await.unwrap();
    let x = depth.iter().find(|d| d.domain == "x.test").unwrap();
    assert_eq!(x.held, 1, "{depth:?}");
    assert_eq!(
        s.act(vec!["drill1".into()], OperatorAction::Release, 20_000)
            .await
            .unwrap(),
        1
    );
    let jobs = s.claim_due(20_000, 10).await.unwrap();
    assert_eq!(jobs.len(), 1);
    assert_eq!(jobs[0].queue_id, "drill1");
}

/// Drill results: each domain's last `keep` kept, newest first; the summary names each
/// domain's last drill that ran (a skipped one does not count) and its last pass.
pub async fn drills(s: &dyn Store) {
    use super::{DRILL_PASSED, DRILL_SKIPPED, StoredDrill};
    assert!(s.drill_summaries().await.unwrap().is_empty());
    let drill = |domain: &str, at_ms: i64, outcome: &str| StoredDrill {
        domain: domain.into(),
        at_ms,
        outcome: outcome.into(),
        duration_ms: at_ms / 10,
        result: format!("{{\"at_ms\":{at_ms}}}"),
    };
    for (at, outcome) in [
        (1000, DRILL_PASSED),
        (2000, DRILL_PASSED),
        (3000, "failed"),
        (4000, DRILL_SKIPPED),
    ] {
        s.record_drill(drill("a.test", at, outcome), 3)
            .await
            .unwrap();
    }
    s.record_drill(drill("b.test", 5000, DRILL_SKIPPED), 3)
        .await
        .unwrap();
    let kept: Vec<i64> = s
        .drills("a.test", 10)
        .await
        .unwrap()
        .iter()
        .map(|d| d.at_ms)
        .collect();
    assert_eq!(kept, [4000, 3000, 2000], "the last three, newest first");
    assert_eq!(
        s.drills("a.test", 1).await.unwrap()[0].outcome,
        DRILL_SKIPPED
    );
    assert_eq!(
        s.drills("a.test", 1).await.unwrap()[0].result,
        "{\"at_ms\":4000}"
    );
    let sums = s.drill_summaries().await.unwrap();
    assert_eq!(sums.len(), 1, "b.test never ran a drill: {sums:?}");
    assert_eq!(sums[0].last, drill("a.test", 3000, "failed"));
    assert_eq!(sums[0].last_passed_ms, Some(2000));
}
