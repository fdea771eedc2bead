//! A route's workers: one connection each, delivering the route's queued jobs one after the
//! other (paced under a rate cap, reconnecting after `messages_per_connection`), and what a
//! failure means for the route: a primary pushing back gets fewer connections, a primary
//! gone down has its jobs held until its probe finds it up, a destination refusing all mail
//! fails its jobs.
//!
//! May call `deliver`, the route's state, `record`/`commit` and `probe` (an outage starts
//! one); must never claim from the queue (the claim loop does) or decide a recipient's
//! outcome itself (`record` does).

use super::Scheduler;
use super::bounce::Context;
use super::record;
use super::route::{Failure, Route, Transition};
use crate::delivery::RecipientResult;
use crate::delivery::client::{Client, ClientError, Timeouts};
use crate::delivery::mx::{NoRoute, RouteKind, Target};
use crate::delivery::reply::RemoteReply;
use crate::delivery::{Outcome, deliver};
use crate::drill::watch::{self, Handoff};
use crate::queue::{Job, now_ms};
use crate::smtp::Reply;
use std::sync::Arc;
use tracing::{debug, error, info, warn};

/// What a drill watching this job's message learns of its handoff (None: no drill watches).
fn drill_handoff(job: &Job, client: &Client, results: &[RecipientResult]) -> Option<Handoff> {
    if !watch::get().watching(&job.queue_id) {
        return None;
    }
    let reply = results
        .first()
        .map(|r| r.reply.clone())
        .ok_or_else(|| "no reply for the canary".to_string());
    Some(Handoff {
        primary: client.host.clone(),
        reply,
        tls: client.tls.clone(),
        server_name: client.server_name.clone(),
        certificates: client.peer_certificates(),
    })
}

impl Scheduler {
    /// Starts one more worker on `route` (the route has counted it).
    pub(super) fn start_worker(self: &Arc<Self>, route: Arc<Route>) {
        let me = self.clone();
        self.tasks.spawn(async move { me.worker(route).await });
    }

    /// One connection's worth of deliveries on `route`, reconnecting after
    /// `messages_per_connection` messages; exits when the route's queue is empty.
    pub(super) async fn worker(self: Arc<Self>, route: Arc<Route>) {
        let s = &self.settings;
        loop {
            let targets = match self.targets(&route).await {
                Ok(t) => t,
                Err(NoRoute::Hold(reason)) => {
                    self.route_failed(&route, &reason).await;
                    return;
                }
                Err(NoRoute::Fail(reply)) => {
                    self.route_refuses(&route, &reply).await;
                    return;
                }
            };
            let mut client = match self.open(&route, &targets, &s.timeouts, true).await {
                Ok(c) => c,
                Err(e) => {
                    self.connection_failed(&route, &e.to_string()).await;
                    return;
                }
            };
            let mut sent = 0;
            loop {
                if self.shutdown.is_shutdown() {
                    let now = now_ms();
                    for job in route.retire() {
                        self.put_back(job, now).await;
                    }
                    client.quit().await;
                    return;
                }
                let Some(job) = route.next_job() else {
                    client.quit().await;
                    return;
                };
                let wait = route.pace(s.max_messages_per_second, std::time::Instant::now());
                if !wait.is_zero() {
                    tokio::time::sleep(wait).await;
                }
                let mut body = match self.store.body_reader(&job.queue_id).await {
                    Ok(b) => b,
                    Err(e) => {
                        error!(queue_id = %job.queue_id, error = %e, "cannot read the message content");
                        let later = self.after(&job, s.retry_min);
                        self.put_back(job, later).await;
                        continue;
                    }
                };
                match deliver(&mut client, &job, &mut body).await {
                    Ok(results) => {
                        if results.iter().any(|r| r.outcome == Outcome::Delivered)
                            && route.success(std::time::Instant::now())
                        {
                            self.start_worker(route.clone());
                        }
                        let cx = Context {
                            relayed_without_dsn: !client.caps.dsn,
                            remote: Some(client.host.as_str()),
                        };
                        let drill = drill_handoff(&job, &client, &results);
                        self.record_results(&job, cx, results).await;
                        if let Some(h) = drill {
                            watch::get().handed_over(&job.queue_id, h);
                        }
                        if client.closing {
                            // 421: the primary closed the channel. The job is deferred with
                            // the primary's words; the connection is gone, and a primary
                            // that sends people away is pushing back.
                            self.connection_failed(
                                &route,
                                "the primary closed the session with 421",
                            )
                            .await;
                            return;
                        }
                    }
                    Err(broken) if matches!(broken.error, ClientError::Content { .. }) => {
                        // Local damage, not the primary's doing: the connection, cut off
                        // mid-content, is dropped; the route stays as it is.
                        error!(queue_id = %job.queue_id, error = %broken.error, "cannot read the message content");
                        self.record_broken(&job, &client.host.to_string(), &broken)
                            .await;
                        return;
                    }
                    Err(broken) => {
                        self.record_broken(&job, &client.host.to_string(), &broken)
                            .await;
                        self.connection_failed(&route, &broken.error.to_string())
                            .await;
                        return;
                    }
                }
                sent += 1;
                if sent >= s.messages_per_connection {
                    client.quit().await;
                    break;
                }
            }
        }
    }

    /// A session with the route's primary: its TLS policy and credentials, these timeouts.
    /// An MX route follows the destination's published policies (DANE per host, chosen with
    /// the targets; MTA-STS in [`Scheduler::open_sts`]);
    /// `delivering` sessions (not probes or callouts) are counted for the TLS reports.
    pub(super) async fn open(
        &self,
        route: &Route,
        targets: &[Target],
        t: &Timeouts,
        delivering: bool,
    ) -> Result<Client, ClientError> {
        if let RouteKind::Mx { domain, .. } = &route.kind
            && route.tls.mode.follows_mta_sts()
        {
            return self.open_sts(route, domain, targets, t, delivering).await;
        }
        Client::connect(
            targets,
            &self.settings.hostname,
            t,
            &route.tls,
            route.auth.as_ref(),
        )
        .await
    }

    /// A connection failed: the primary pushes back (other connections still work) or is down.
    async fn connection_failed(self: &Arc<Self>, route: &Arc<Route>, reason: &str) {
        crate::metrics::get().connection_failures.inc();
        match route.fail_or_shrink(std::time::Instant::now()) {
            Failure::Shrunk => {
                info!(primary = %route.key, reason, connections = route.allowed(), "primary pushed back; fewer connections for a while");
            }
            Failure::Down(transition, jobs) => {
                self.went_down(route, reason, transition, jobs).await
            }
        }
    }

    /// The route cannot be used at all (DNS): mark it down, start its probe, put its jobs back.
    async fn route_failed(self: &Arc<Self>, route: &Arc<Route>, reason: &str) {
        let (transition, jobs) = route.fail();
        self.went_down(route, reason, transition, jobs).await;
    }

    async fn went_down(
        self: &Arc<Self>,
        route: &Arc<Route>,
        reason: &str,
        transition: Transition,
        jobs: Vec<Job>,
    ) {
        if transition == Transition::WentDown {
            warn!(primary = %route.key, reason, "primary is down; holding its mail and probing every {:?}", self.settings.probe_interval);
            self.began_outage(route, reason).await;
        } else {
            debug!(primary = %route.key, reason, "connection failed");
        }
        self.hold(route, jobs, &format!("held: {reason}")).await;
    }

    /// Puts jobs for a down route back, due when the probe finds the primary up again (then
    /// made due at once), retry_max from now, or when the job expires, whichever comes first.
    pub(super) async fn hold(&self, route: &Route, jobs: Vec<Job>, why: &str) {
        if jobs.is_empty() {
            return;
        }
        for job in jobs {
            let later = self.after(&job, self.settings.retry_max);
            self.put_back_because(job, later, Some(why)).await;
        }
        // The probe may have found the primary up while these were still claimed (its
        // make_due skips claimed recipients): make them due now.
        if route.is_up() {
            if let Err(e) = self.store.make_due(route.domains.clone(), now_ms()).await {
                error!(primary = %route.key, error = %e, "cannot make held mail due");
            }
            self.wake.notify_one();
        }
    }

    /// The route's destination refuses all mail (null MX, no such domain): every queued job
    /// fails permanently.
    async fn route_refuses(&self, route: &Route, reply: &Reply) {
        let mut jobs = route.retire();
        warn!(primary = %route.key, reply = %reply, "destination refuses all mail");
        let typed = RemoteReply::of(reply);
        for job in jobs.drain(..) {
            for r in &job.recipients {
                warn!(queue_id = %job.queue_id, rcpt = %r.address, reply = %reply, "failed permanently");
            }
            let updates = record::failed(&job, &typed, true, now_ms());
            self.record(&job, updates, Context::default()).await;
        }
    }
}
