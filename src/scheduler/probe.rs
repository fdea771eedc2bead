//! Route health over time: an outage's start and end (event log, the queue's recorded
//! history, the nodes sharing the queue), the probe that checks a down primary every
//! `probe_interval` and makes everything held for it due the moment it answers, the health
//! check itself (DNS, connect, banner, EHLO, TLS and AUTH as required, QUIT), and the health
//! restored from the queue at start.
//!
//! May call the `Store` (health, outages, holding and releasing mail), the route's state and
//! the events log; must never deliver a message or record a recipient's outcome.

use super::Scheduler;
use super::route::{Route, Transition};
use super::settings::ms;
use crate::delivery::mx::NoRoute;
use crate::events::{Kind, OUTAGES_KEPT};
use crate::queue::{OutageChange, ProbeTurn, RouteOutages, now_ms};
use std::sync::Arc;
use std::time::Duration;
use tracing::{debug, error, info, warn};

impl Scheduler {
    /// A route went down (a delivery or a check failed): tells the event log, the recorded
    /// history and the nodes sharing the queue, and starts probing it.
    pub(super) async fn began_outage(self: &Arc<Self>, route: &Arc<Route>, reason: &str) {
        let at_ms = route.since_ms();
        crate::events::get().record_at(
            at_ms,
            Kind::PrimaryDown {
                primary: route.key.clone(),
                reason: reason.to_string(),
            },
        );
        self.record_outage(&route.key, OutageChange::Began { at_ms })
            .await;
        if let Err(e) = self.store.primary_down(&route.key).await {
            warn!(primary = %route.key, error = %e, "cannot share the primary's health");
        }
        let me = self.clone();
        let r = route.clone();
        tokio::spawn(async move { me.probe(r, false).await });
    }

    /// A route answers again after `down_for`; `held` recipients were made due.
    pub(super) async fn ended_outage(&self, route: &Route, down_for: Duration, held: u64) {
        let at_ms = route.since_ms();
        crate::events::get().record_at(
            at_ms,
            Kind::PrimaryUp {
                primary: route.key.clone(),
                down_for_s: down_for.as_secs(),
                held,
            },
        );
        self.record_outage(&route.key, OutageChange::Ended { at_ms, held })
            .await;
    }

    async fn record_outage(&self, route: &str, change: OutageChange) {
        if let Err(e) = self.store.record_outage(route, change).await {
            warn!(primary = route, error = %e, "cannot record the primary's health in the queue; after a restart it would be reported as it was before this change");
        }
    }

    /// Takes each configured primary's health and outage history as recorded before this
    /// process started. A primary last known down stays down (its mail held) and is probed
    /// at once; until a probe or a delivery confirms it, status shows the record marked
    /// stale. Call before [`Scheduler::run`], so no mail is handed to a primary known down.
    pub async fn restore_health(self: &Arc<Self>) {
        let recorded = match self.store.outages(OUTAGES_KEPT).await {
            Ok(r) => r,
            Err(e) => {
                warn!(error = %e, "cannot read the primaries' recorded health; every primary counts as up until a delivery or probe fails");
                return;
            }
        };
        let routes = self.all_routes();
        for RouteOutages {
            route: key,
            outages,
        } in recorded
        {
            let (Some(route), Some(last)) = (routes.iter().find(|r| r.key == key), outages.last())
            else {
                continue;
            };
            let (up, since_ms) = match last.up_ms {
                Some(up_ms) => (true, up_ms),
                None => (false, last.down_ms),
            };
            crate::events::get().restore(&key, outages);
            if route.restore(up, since_ms) == Transition::WentDown {
                info!(primary = %key, down_since_ms = since_ms, "primary was down when mx2 last ran; holding its mail and probing it now");
                let me = self.clone();
                let r = route.clone();
                tokio::spawn(async move { me.probe(r, true).await });
            }
        }
    }

    /// One health check of a route: DNS, connect, banner, EHLO (and TLS and AUTH as the route
    /// requires), QUIT. A destination that refuses all mail (null MX) counts as reachable when
    /// `refusal_is_an_answer`, so held mail can fail for real.
    pub(super) async fn check(&self, route: &Route, refusal_is_an_answer: bool) -> bool {
        let s = &self.settings;
        match self.targets(route).await {
            Ok(targets) => match self.open(route, &targets, &s.probe_timeouts, false).await {
                Ok(client) => {
                    client.quit().await;
                    true
                }
                Err(e) => {
                    debug!(primary = %route.key, error = %e, "health check failed");
                    false
                }
            },
            Err(NoRoute::Fail(_)) => refusal_is_an_answer,
            Err(NoRoute::Hold(reason)) => {
                debug!(primary = %route.key, reason, "health check failed");
                false
            }
        }
    }

    /// Probes a down route every `probe_interval` (the first time at once when `at_once`)
    /// until it answers (banner and EHLO), then makes everything held for it due at once.
    async fn probe(self: Arc<Self>, route: Arc<Route>, at_once: bool) {
        let mut shutdown = self.shutdown.clone();
        let s = &self.settings;
        // New mail for the route waits for this probe (or retry_max, or its expiry) from the
        // start, as held mail does, instead of being claimed and put back one at a time.
        let shortest = route
            .domains
            .iter()
            .map(|d| self.lifetime(d))
            .min()
            .unwrap_or(s.lifetime);
        if let Err(e) = self
            .store
            .hold_new_mail(route.domains.clone(), Some(ms(s.retry_max.min(shortest))))
            .await
        {
            error!(primary = %route.key, error = %e, "cannot hold new mail");
        }
        let mut wait = !at_once;
        loop {
            if wait {
                tokio::select! {
                    _ = shutdown.wait() => return,
                    _ = tokio::time::sleep(s.probe_interval) => {}
                }
            }
            wait = true;
            let ok = self.shared_check(&route).await;
            route.probed();
            if ok {
                let down_for = route.mark_up();
                if let Err(e) = self.store.hold_new_mail(route.domains.clone(), None).await {
                    error!(primary = %route.key, error = %e, "cannot stop holding new mail");
                }
                let due = self
                    .store
                    .make_due(route.domains.clone(), now_ms())
                    .await
                    .unwrap_or_else(|e| {
                        error!(primary = %route.key, error = %e, "cannot make held mail due");
                        0
                    });
                info!(primary = %route.key, down_for = ?down_for, recipients_due = due, "primary is up again; delivering what is held");
                self.ended_outage(&route, down_for, due).await;
                self.wake.notify_one();
                return;
            }
        }
    }

    /// A probe's check when nodes share the queue: one node probes per interval and tells
    /// the others; a node alone always probes.
    async fn shared_check(&self, route: &Route) -> bool {
        let turn = self
            .store
            .probe_turn(&route.key, ms(self.settings.probe_interval))
            .await
            .unwrap_or(ProbeTurn::Probe);
        match turn {
            ProbeTurn::Up => true,
            ProbeTurn::Wait => false,
            ProbeTurn::Probe => {
                let up = self.check(route, true).await;
                if up && let Err(e) = self.store.primary_up(&route.key).await {
                    warn!(primary = %route.key, error = %e, "cannot share the primary's health");
                }
                up
            }
        }
    }
}
