//! What happened to the primaries, for people and for alerts: a bounded log of recent events
//! and each primary's outage timeline (down at, back at, how much was held, how long the
//! drain took), plus a broadcast channel that the alerting task listens on. Events are
//! recorded by the scheduler, the admin monitor and the emergency inbox (logins, messages
//! read, deletes, password changes, invites); the inbox's are also kept in a longer log of
//! their own (`inbox_log`, `mx2 inbox log`), so a busy queue does not push them out. A leaf
//! module that calls nobody.

use serde::Serialize;
use std::collections::{HashMap, VecDeque};
use std::sync::{Mutex, OnceLock};
use tokio::sync::broadcast;

/// Events kept for the dashboard and the API.
const RECENT: usize = 200;
/// Outages kept per primary, here and in the store.
pub const OUTAGES_KEPT: usize = 20;
/// The emergency inbox's events kept for its log.
pub const INBOX_KEPT: usize = 10_000;

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum Kind {
    /// A primary stopped answering; its mail is held.
    PrimaryDown { primary: String, reason: String },
    /// A primary answers again; `held` recipients were made due at once.
    PrimaryUp {
        primary: String,
        down_for_s: u64,
        held: u64,
    },
    /// Everything held for a primary during its outage has been handed over.
    Drained { primary: String, took_s: f64 },
    /// The configuration was reloaded (or the reload was refused).
    Reload { ok: bool, detail: String },
    /// A domain's mail reached one of its queue caps: new mail for it gets 452 4.2.2.
    QueueFull {
        domain: String,
        messages: u64,
        bytes: u64,
        limit: String,
    },
    /// A domain's mail is below its caps again.
    QueueOpen { domain: String },
    /// Free disk space fell below `[queue] min_free_disk`: new mail gets 452 4.3.1.
    DiskLow { free_bytes: u64, reserve_bytes: u64 },
    /// Free disk space is above the reserve again.
    DiskOk { free_bytes: u64 },
    /// A fire drill of a domain failed: the backup path is broken at the step named.
    DrillFailed { domain: String, detail: String },
    /// No drill of a domain passed within twice its interval.
    DrillOverdue {
        domain: String,
        since_s: Option<u64>,
    },
    /// A login to the emergency inbox (`address` is the mailbox key), good or refused;
    /// `protocol` is `imap` or `web`.
    InboxLogin {
        address: String,
        client: String,
        protocol: String,
        ok: bool,
        detail: String,
    },
    /// A user read a held message in the emergency inbox.
    InboxRead {
        address: String,
        queue_id: String,
        client: String,
        protocol: String,
    },
    /// A user deleted messages in the emergency inbox; `not_delivered`: their recipients
    /// were dropped (`inbox_delete = "do_not_deliver"`).
    InboxDelete {
        address: String,
        queue_ids: Vec<String>,
        not_delivered: bool,
        client: String,
        protocol: String,
    },
    /// An operator set (`set`), replaced (`changed`) or removed (`removed`) an inbox password.
    InboxPassword { address: String, change: String },
    /// An operator had a one-time login code mailed to `to`.
    InboxInvite { address: String, to: String },
}

impl Kind {
    pub fn primary(&self) -> Option<&str> {
        match self {
            Kind::PrimaryDown { primary, .. }
            | Kind::PrimaryUp { primary, .. }
            | Kind::Drained { primary, .. } => Some(primary),
            _ => None,
        }
    }

    /// One line for people (dashboard, logs, alerts).
    pub fn text(&self) -> String {
        let size = |b: u64| format!("{:.1} MB", b as f64 / 1e6);
        match self {
            Kind::PrimaryDown { primary, reason } => format!("{primary} is DOWN: {reason}"),
            Kind::PrimaryUp {
                primary,
                down_for_s,
                held,
            } => format!(
                "{primary} is UP again after {}; {held} recipients due",
                crate::admin::dashboard::duration(*down_for_s as i64)
            ),
            Kind::Drained { primary, took_s } => {
                format!("{primary}: everything held is delivered ({took_s:.1}s)")
            }
            Kind::Reload { ok, detail } => {
                format!("reload {}: {detail}", if *ok { "done" } else { "refused" })
            }
            Kind::QueueFull {
                domain,
                messages,
                bytes,
                limit,
            } => format!(
                "{domain}: queue full ({messages} messages, {}; {limit}): new mail for it is refused with 452 until the queue drains",
                size(*bytes)
            ),
            Kind::QueueOpen { domain } => {
                format!("{domain}: queue below its limits again; new mail is accepted")
            }
            Kind::DiskLow {
                free_bytes,
                reserve_bytes,
            } => format!(
                "disk space low ({} free, reserve {}): new mail is refused with 452 for every domain",
                size(*free_bytes),
                size(*reserve_bytes)
            ),
            Kind::DiskOk { free_bytes } => format!(
                "disk space above the reserve again ({} free); new mail is accepted",
                size(*free_bytes)
            ),
            Kind::DrillFailed { domain, detail } => {
                format!("{domain}: fire drill FAILED at {detail}")
            }
            Kind::DrillOverdue { domain, since_s } => match since_s {
                Some(s) => format!(
                    "{domain}: no fire drill passed for {}, more than twice its interval",
                    crate::admin::dashboard::duration(*s as i64)
                ),
                None => format!("{domain}: no fire drill has passed yet, after twice its interval"),
            },
            Kind::InboxLogin {
                address,
                client,
                ok: true,
                ..
            } => format!("inbox: {address} logged in from {client}"),
            Kind::InboxLogin {
                address,
                client,
                detail,
                ..
            } => format!("inbox: login as {address} from {client} refused ({detail})"),
            Kind::InboxRead {
                address,
                queue_id,
                client,
                protocol,
            } => format!("inbox: {address} read message {queue_id} ({protocol} from {client})"),
            Kind::InboxDelete {
                address,
                queue_ids,
                not_delivered,
                client,
                protocol,
            } => format!(
                "inbox: {address} deleted {} ({protocol} from {client}){}",
                queue_ids.join(", "),
                if *not_delivered {
                    "; not delivered to them"
                } else {
                    ""
                }
            ),
            Kind::InboxPassword { address, change } => {
                format!("inbox: password of {address} {change}")
            }
            Kind::InboxInvite { address, to } => {
                format!("inbox: one-time login code for {address} mailed to {to}")
            }
        }
    }

    /// The mailbox an emergency inbox event is about; None for other events.
    pub fn inbox_address(&self) -> Option<&str> {
        match self {
            Kind::InboxLogin { address, .. }
            | Kind::InboxRead { address, .. }
            | Kind::InboxDelete { address, .. }
            | Kind::InboxPassword { address, .. }
            | Kind::InboxInvite { address, .. } => Some(address),
            _ => None,
        }
    }

    /// The recipient domain an event is about, when it is about one.
    pub fn domain(&self) -> Option<&str> {
        match self {
            Kind::QueueFull { domain, .. }
            | Kind::QueueOpen { domain }
            | Kind::DrillFailed { domain, .. }
            | Kind::DrillOverdue { domain, .. } => Some(domain),
            _ => self.inbox_address().map(crate::queue::inbox::key_domain),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Event {
    pub at_ms: i64,
    #[serde(flatten)]
    pub kind: Kind,
}

/// One outage of one primary.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Outage {
    pub down_ms: i64,
    pub up_ms: Option<i64>,
    /// Recipients made due when it came back.
    pub held: Option<u64>,
    pub drained_ms: Option<i64>,
}

pub struct Events {
    recent: Mutex<VecDeque<Event>>,
    inbox: Mutex<VecDeque<Event>>,
    outages: Mutex<HashMap<String, VecDeque<Outage>>>,
    tx: broadcast::Sender<Event>,
}

impl Default for Events {
    fn default() -> Self {
        Self {
            recent: Mutex::new(VecDeque::new()),
            inbox: Mutex::new(VecDeque::new()),
            outages: Mutex::new(HashMap::new()),
            tx: broadcast::channel(256).0,
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Events {
    /// Records an event now.
    pub fn record(&self, kind: Kind) {
        self.record_at(crate::queue::now_ms(), kind);
    }

    pub fn record_at(&self, at_ms: i64, kind: Kind) {
        if let Some(p) = kind.primary() {
            let mut outages = lock(&self.outages);
            let list = outages.entry(p.to_string()).or_default();
            match &kind {
                Kind::PrimaryDown { .. } => {
                    list.push_back(Outage {
                        down_ms: at_ms,
                        ..Default::default()
                    });
                    if list.len() > OUTAGES_KEPT {
                        list.pop_front();
                    }
                }
                Kind::PrimaryUp { held, .. } => {
                    if let Some(o) = list.back_mut().filter(|o| o.up_ms.is_none()) {
                        o.up_ms = Some(at_ms);
                        o.held = Some(*held);
                    }
                }
                Kind::Drained { .. } => {
                    if let Some(o) = list.back_mut().filter(|o| o.drained_ms.is_none()) {
                        o.drained_ms = Some(at_ms);
                    }
                }
                _ => {}
            }
        }
        let event = Event { at_ms, kind };
        if event.kind.inbox_address().is_some() {
            let mut inbox = lock(&self.inbox);
            inbox.push_back(event.clone());
            if inbox.len() > INBOX_KEPT {
                inbox.pop_front();
            }
        }
        {
            let mut recent = lock(&self.recent);
            recent.push_back(event.clone());
            if recent.len() > RECENT {
                recent.pop_front();
            }
        }
        let _ = self.tx.send(event);
    }

    /// Takes a primary's outages as recorded before a restart (oldest first), unless this
    /// process already saw some of its own.
    pub fn restore(&self, primary: &str, recorded: Vec<Outage>) {
        let mut outages = lock(&self.outages);
        let list = outages.entry(primary.to_string()).or_default();
        if list.is_empty() {
            list.extend(recorded.into_iter().rev().take(OUTAGES_KEPT).rev());
        }
    }

    /// Recent events, newest first.
    pub fn recent(&self) -> Vec<Event> {
        lock(&self.recent).iter().rev().cloned().collect()
    }

    /// The emergency inbox's events that `keep` selects, newest first, at most `limit`.
    pub fn inbox_log(&self, keep: impl Fn(&Event) -> bool, limit: usize) -> Vec<Event> {
        lock(&self.inbox)
            .iter()
            .rev()
            .filter(|e| keep(e))
            .take(limit)
            .cloned()
            .collect()
    }

    /// A primary's outages, oldest first.
    pub fn outages(&self, primary: &str) -> Vec<Outage> {
        lock(&self.outages)
            .get(primary)
            .map(|l| l.iter().cloned().collect())
            .unwrap_or_default()
    }

    /// Primaries that came back and have not drained yet, with when they came back.
    pub fn draining(&self) -> Vec<(String, i64)> {
        lock(&self.outages)
            .iter()
            .filter_map(|(p, l)| {
                let o = l.back()?;
                match (o.up_ms, o.drained_ms) {
                    (Some(up), None) => Some((p.clone(), up)),
                    _ => None,
                }
            })
            .collect()
    }

    pub fn subscribe(&self) -> broadcast::Receiver<Event> {
        self.tx.subscribe()
    }
}

/// The process's event log.
pub fn get() -> &'static Events {
    static E: OnceLock<Events> = OnceLock::new();
    E.get_or_init(Events::default)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_outage_is_tracked_from_down_to_drained() {
        let e = Events::default();
        let mut rx = e.subscribe();
        let p = || "10.0.0.1:25".to_string();
        e.record_at(
            1000,
            Kind::PrimaryDown {
                primary: p(),
                reason: "refused".into(),
            },
        );
        assert!(e.draining().is_empty());
        e.record_at(
            5000,
            Kind::PrimaryUp {
                primary: p(),
                down_for_s: 4,
                held: 7,
            },
        );
        assert_eq!(e.draining(), vec![(p(), 5000)]);
        e.record_at(
            6500,
            Kind::Drained {
                primary: p(),
                took_s: 1.5,
            },
        );
        assert!(e.draining().is_empty());
        assert_eq!(
            e.outages(&p()),
            vec![Outage {
                down_ms: 1000,
                up_ms: Some(5000),
                held: Some(7),
                drained_ms: Some(6500)
            }]
        );
        assert_eq!(e.recent().len(), 3);
        assert!(matches!(e.recent()[0].kind, Kind::Drained { .. }));
        assert!(matches!(
            rx.try_recv().unwrap().kind,
            Kind::PrimaryDown { .. }
        ));
    }

    #[test]
    fn inbox_events_have_a_log_of_their_own() {
        let e = Events::default();
        let read = |address: &str, id: &str| Kind::InboxRead {
            address: address.into(),
            queue_id: id.into(),
            client: "192.0.2.1".into(),
            protocol: "imap".into(),
        };
        e.record_at(1, read("jo@a.test", "q1"));
        for i in 0..RECENT {
            e.record_at(
                2 + i as i64,
                Kind::QueueOpen {
                    domain: "a.test".into(),
                },
            );
        }
        e.record_at(
            1000,
            Kind::InboxPassword {
                address: "al@b.test".into(),
                change: "set".into(),
            },
        );
        assert!(
            e.recent()
                .iter()
                .all(|x| !matches!(x.kind, Kind::InboxRead { .. })),
            "pushed out of the recent events"
        );
        let all = e.inbox_log(|_| true, 10);
        assert_eq!(all.len(), 2, "but kept in the inbox's log");
        assert_eq!(all[0].at_ms, 1000, "newest first");
        let a = e.inbox_log(|x| x.kind.domain() == Some("a.test"), 10);
        assert_eq!(a.len(), 1);
        assert_eq!(
            a[0].kind.text(),
            "inbox: jo@a.test read message q1 (imap from 192.0.2.1)"
        );
        assert_eq!(e.inbox_log(|_| true, 1).len(), 1);
        for i in 0..INBOX_KEPT {
            e.record_at(2000 + i as i64, read("jo@a.test", "q"));
        }
        assert_eq!(
            e.inbox_log(|_| true, usize::MAX).len(),
            INBOX_KEPT,
            "bounded"
        );
    }

    #[test]
    fn restored_outages_are_taken_once_and_bounded() {
        let e = Events::default();
        let open = |down_ms| Outage {
            down_ms,
            ..Default::default()
        };
        let recorded: Vec<Outage> = (0..OUTAGES_KEPT as i64 + 5).map(open).collect();
        e.restore("p", recorded.clone());
        assert_eq!(e.outages("p"), recorded[5..].to_vec(), "the newest kept");
        e.restore("p", vec![open(99)]);
        assert_eq!(
            e.outages("p").len(),
            OUTAGES_KEPT,
            "seen already: unchanged"
        );
        e.record_at(
            100,
            Kind::PrimaryUp {
                primary: "p".into(),
                down_for_s: 1,
                held: 3,
            },
        );
        assert_eq!(
            e.outages("p").last().unwrap().up_ms,
            Some(100),
            "closes the restored one"
        );
    }
}
