//! What one request may see of the queue and of the primaries: everything for the operator,
//! a tenant's own domains for a tenant. A tenant sees a message only while it has a pending
//! recipient in one of its domains, and of that message only its own recipients; anything
//! else reads exactly as if it did not exist. Pure filtering: the handlers read the store
//! and ask here what of it to answer.

use super::access::Access;
use super::{Admin, Status};
use crate::events::Event;
use crate::queue::{Filter, Listed, Shown, Status as RcptStatus, StoreError};
use crate::scheduler::route::Snapshot;
use std::collections::BTreeSet;

/// The domains a request may see.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Scope {
    /// The operator: every domain.
    All,
    /// A tenant: these domains only (possibly none).
    Domains(BTreeSet<String>),
}

/// The domain of an address: after the last `@`, lower case, no trailing dot.
pub fn domain_of(address: &str) -> String {
    address
        .rsplit_once('@')
        .map_or("", |(_, d)| d)
        .trim_end_matches('.')
        .to_ascii_lowercase()
}

impl Scope {
    /// Whether this domain (lower case, no trailing dot) is in view.
    pub fn covers(&self, domain: &str) -> bool {
        match self {
            Scope::All => true,
            Scope::Domains(mine) => mine.contains(domain),
        }
    }

    /// A listing's filter narrowed to this scope; None when it can select nothing: the
    /// scope holds no domain at all (an empty `domains` filter would mean "every domain"),
    /// or the filter asks for a domain out of view.
    pub fn filter(&self, f: Filter) -> Option<Filter> {
        let outside = f
            .domain
            .as_deref()
            .is_some_and(|d| !self.covers(&crate::queue::domain_key(d)));
        match self {
            Scope::All => Some(f),
            Scope::Domains(mine) if mine.is_empty() || outside => None,
            Scope::Domains(mine) => Some(Filter {
                domains: mine.iter().cloned().collect(),
                ..f
            }),
        }
    }

    /// One line of a listing as this scope sees it: other domains' recipients left out,
    /// and the last reply too when it may have come from another domain's primary.
    pub fn listed(&self, mut m: Listed) -> Listed {
        let before = m.pending.len();
        m.pending.retain(|r| self.covers(&domain_of(r)));
        if m.pending.len() != before {
            m.last_reply = None;
        }
        m
    }

    /// A message as this scope sees it: None unless it has a pending recipient in view;
    /// other domains' recipients left out.
    pub fn shown(&self, mut m: Shown) -> Option<Shown> {
        let in_view = m
            .recipients
            .iter()
            .any(|r| r.status == RcptStatus::Pending && self.covers(&domain_of(&r.address)));
        if !in_view {
            return None;
        }
        m.recipients.retain(|r| self.covers(&domain_of(&r.address)));
        Some(m)
    }

    /// Whether a message (as the store has it, unfiltered) also waits for recipients out of
    /// view: then an action on the whole message would reach mail that is not this scope's.
    pub fn shared(&self, m: &Shown) -> bool {
        m.recipients
            .iter()
            .any(|r| r.status == RcptStatus::Pending && !self.covers(&domain_of(&r.address)))
    }

    /// The events about domains in view: a domain's own (its queue caps), and a primary's
    /// when it serves one of them; events about neither (reloads, the disk) are the
    /// operator's.
    pub fn events(&self, events: Vec<Event>, routes: &[Snapshot]) -> Vec<Event> {
        if *self == Scope::All {
            return events;
        }
        events
            .into_iter()
            .filter(|e| {
                e.kind.domain().is_some_and(|d| self.covers(d))
                    || e.kind.primary().is_some_and(|p| {
                        routes
                            .iter()
                            .any(|r| r.primary == p && r.domains.iter().any(|d| self.covers(d)))
                    })
            })
            .collect()
    }

    /// The status as this scope sees it: its domains, the primaries serving them (with only
    /// its domains named and counted), queue totals over its domains.
    pub fn status(&self, mut s: Status) -> Status {
        if *self == Scope::All {
            return s;
        }
        s.state_dir = None;
        s.domains.retain(|d| self.covers(&d.domain));
        s.primaries.retain_mut(|p| {
            p.route.domains.retain(|d| self.covers(d));
            if p.route.domains.is_empty() {
                return false;
            }
            let u = super::Usage::of(
                s.domains
                    .iter()
                    .filter(|d| p.route.domains.contains(&d.domain)),
            );
            p.messages = u.messages;
            p.recipients = u.recipients;
            p.held_by_operator = u.held;
            p.bytes = u.bytes;
            p.oldest_ms = u.oldest_ms;
            p.oldest_age_s = super::age_s(u.oldest_ms);
            true
        });
        let u = super::Usage::of(s.domains.iter());
        s.queue.messages = u.messages;
        s.queue.recipients = u.recipients;
        s.queue.bytes = u.bytes;
        s.queue.oldest_age_s = super::age_s(u.oldest_ms);
        s
    }
}

impl Admin {
    /// What a request acting for `access` may see.
    pub fn scope(&self, access: &Access) -> Scope {
        match access {
            Access::Operator => Scope::All,
            Access::Tenant(t) => Scope::Domains(
                self.registry
                    .snapshot()
                    .tenant_domains(t)
                    .into_iter()
                    .collect(),
            ),
        }
    }

    /// The status as `scope` sees it.
    pub async fn status_in(&self, scope: &Scope) -> Result<Status, StoreError> {
        Ok(scope.status(self.status().await?))
    }

    /// Recent events (newest first) as `scope` sees them.
    pub fn events_in(&self, scope: &Scope) -> Vec<Event> {
        scope.events(crate::events::get().recent(), &self.scheduler.primaries())
    }

    /// A message as `scope` sees it, and whether it also waits for recipients out of view;
    /// None when it is not in the queue or not in view (the two read the same).
    pub async fn message_in(
        &self,
        scope: &Scope,
        id: &str,
    ) -> Result<Option<(Shown, bool)>, StoreError> {
        Ok(self.store.show(id).await?.and_then(|m| {
            let shared = scope.shared(&m);
            scope.shown(m).map(|m| (m, shared))
        }))
    }

    /// A listing as `scope` sees it.
    pub async fn list_in(&self, scope: &Scope, filter: Filter) -> Result<Vec<Listed>, StoreError> {
        let Some(filter) = scope.filter(filter) else {
            return Ok(Vec::new());
        };
        let list = self.store.list(filter).await?;
        Ok(list.into_iter().map(|m| scope.listed(m)).collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::admin::{PrimaryStatus, QueueTotals};
    use crate::queue::{Depth, RecipientState, State};

    fn mine() -> Scope {
        Scope::Domains(["a.example".to_string()].into())
    }

    fn rcpt(address: &str, status: RcptStatus) -> RecipientState {
        RecipientState {
            address: address.into(),
            status,
            held: false,
            attempts: 0,
            next_attempt_ms: 0,
            last_reply: None,
        }
    }

    fn shown(recipients: Vec<RecipientState>) -> Shown {
        Shown {
            id: "m1".into(),
            received_at_ms: 0,
            sender: "s@x.example".into(),
            mail_params: String::new(),
            client: "192.0.2.1".into(),
            helo: "x".into(),
            size: 10,
            recipients,
        }
    }

    #[test]
    fn a_tenant_sees_a_message_only_while_it_waits_for_its_domains() {
        let both = shown(vec![
            rcpt("u@A.example.", RcptStatus::Pending),
            rcpt("v@b.example", RcptStatus::Pending),
        ]);
        assert!(mine().shared(&both));
        let seen = mine().shown(both.clone()).unwrap();
        assert_eq!(seen.recipients.len(), 1, "B's recipient is left out");
        assert_eq!(Scope::All.shown(both.clone()), Some(both.clone()));
        assert!(!Scope::All.shared(&both));

        let delivered = shown(vec![
            rcpt("u@a.example", RcptStatus::Delivered),
            rcpt("v@b.example", RcptStatus::Pending),
        ]);
        assert_eq!(mine().shown(delivered), None, "nothing of A's waits");
        let only_b = shown(vec![rcpt("v@b.example", RcptStatus::Pending)]);
        assert_eq!(mine().shown(only_b), None);
        let only_a = shown(vec![rcpt("u@a.example", RcptStatus::Pending)]);
        assert!(!mine().shared(&only_a));
        assert_eq!(Scope::Domains(BTreeSet::new()).shown(only_a), None);
    }

    #[test]
    fn listings_are_narrowed_and_never_widened() {
        let f = mine().filter(Filter::default()).unwrap();
        assert_eq!(f.domains, vec!["a.example".to_string()]);
        assert!(
            Scope::Domains(BTreeSet::new())
                .filter(Filter::default())
                .is_none()
        );
        let theirs = |d: &str| Filter {
            domain: Some(d.into()),
            ..Default::default()
        };
        assert!(mine().filter(theirs("b.example")).is_none());
        assert!(mine().filter(theirs("A.example.")).is_some());
        assert!(Scope::All.filter(theirs("b.example")).is_some());
        let line = Listed {
            id: "m1".into(),
            received_at_ms: 0,
            sender: String::new(),
            size: 1,
            pending: vec!["u@a.example".into(), "v@b.example".into()],
            state: State::Deferred,
            attempts: 1,
            next_attempt_ms: None,
            last_reply: Some("451 b's primary says no".into()),
        };
        let seen = mine().listed(line.clone());
        assert_eq!(seen.pending, vec!["u@a.example".to_string()]);
        assert_eq!(seen.last_reply, None);
        assert_eq!(Scope::All.listed(line.clone()), line);
    }

    fn route(primary: &str, domains: &[&str]) -> Snapshot {
        Snapshot {
            primary: primary.into(),
            domains: domains.iter().map(|d| d.to_string()).collect(),
            backed_up: true,
            up: false,
            since_ms: 0,
            stale: false,
            last_probe_ms: None,
            connections: 0,
            connections_allowed: 1,
            delivered_last_minute: 0,
        }
    }

    fn depth(domain: &str, messages: u64, oldest_ms: i64) -> Depth {
        Depth {
            domain: domain.into(),
            messages,
            recipients: messages * 2,
            held: 0,
            bytes: messages * 100,
            oldest_ms: Some(oldest_ms),
        }
    }

    #[test]
    fn the_status_shows_a_tenant_its_own_domains_and_primaries() {
        let primary = |r: Snapshot, messages| PrimaryStatus {
            route: r,
            messages,
            recipients: 0,
            held_by_operator: 0,
            bytes: 0,
            oldest_ms: None,
            oldest_age_s: None,
            outages: Vec::new(),
        };
        let s = Status {
            hostname: "mx2".into(),
            state_dir: Some("/var/lib/mx2".into()),
            version: "0",
            uptime_s: 1,
            smtp_stress: false,
            queue: QueueTotals {
                messages: 12,
                recipients: 24,
                bytes: 1200,
                oldest_age_s: Some(1),
            },
            primaries: vec![
                primary(route("shared:25", &["a.example", "b.example"]), 5),
                primary(route("b-only:25", &["c.example"]), 7),
            ],
            domains: vec![
                depth("a.example", 2, 1000),
                depth("b.example", 3, 500),
                depth("c.example", 7, 10),
            ],
        };
        let t = mine().status(s.clone());
        assert_eq!(t.state_dir, None);
        assert_eq!(t.domains.len(), 1);
        assert_eq!(t.primaries.len(), 1);
        assert_eq!(t.primaries[0].route.domains, vec!["a.example".to_string()]);
        assert_eq!(t.primaries[0].messages, 2);
        assert_eq!(t.primaries[0].oldest_ms, Some(1000));
        assert_eq!(
            (t.queue.messages, t.queue.recipients, t.queue.bytes),
            (2, 4, 200)
        );
        assert_eq!(Scope::All.status(s.clone()).queue.messages, 12);

        use crate::events::Kind;
        let ev = |p: &str| Event {
            at_ms: 0,
            kind: Kind::PrimaryDown {
                primary: p.into(),
                reason: "x".into(),
            },
        };
        let reload = Event {
            at_ms: 0,
            kind: Kind::Reload {
                ok: true,
                detail: "d".into(),
            },
        };
        let routes: Vec<Snapshot> = s.primaries.iter().map(|p| p.route.clone()).collect();
        let open = |d: &str| Event {
            at_ms: 0,
            kind: Kind::QueueOpen { domain: d.into() },
        };
        let all = vec![
            ev("shared:25"),
            ev("b-only:25"),
            reload,
            open("a.example"),
            open("b.example"),
        ];
        assert_eq!(
            mine().events(all.clone(), &routes),
            vec![ev("shared:25"), open("a.example")]
        );
        assert_eq!(Scope::All.events(all.clone(), &routes).len(), 5);
    }
}
