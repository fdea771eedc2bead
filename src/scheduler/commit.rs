//! Writing outcomes: takes the rows `record` decided, logs and counts them, teaches the
//! recipient policy what a delivery proved, asks `bounce` which notifications they call for,
//! and writes both to the queue in one step. When the queue cannot take them (disk full),
//! keeps retrying in the background, or the recipients would stay claimed until a restart.
//! Also the retry timing (`after`, `next_attempt`) the rows are decided with.
//!
//! May call the `Store`, `bounce`, `record`, `backoff`, the recipient policy, logs and
//! metrics; must never deliver, open a connection or change a route's health.

use super::Scheduler;
use super::bounce::{self, Bouncer, Context};
use super::{backoff, record};
use crate::delivery::{Broken, Outcome, RecipientResult};
use crate::queue::{Job, NewMessage, Status, Store, Update, now_ms};
use crate::shutdown::Shutdown;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Notify;
use tracing::{debug, error, info, warn};

impl Scheduler {
    pub(super) fn bouncer(&self) -> Arc<Bouncer> {
        self.bouncer
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    async fn learn(&self, domain: &str, address: &str, exists: bool) {
        let r = self
            .recipients
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        if let Some(r) = r {
            r.learn(domain, address, exists).await;
        }
    }

    /// `delay` from now, but never after the job expires: the claim that finds it expired
    /// then comes at its lifetime (see [`backoff::next_attempt_at`]).
    pub(super) fn after(&self, job: &Job, delay: Duration) -> i64 {
        backoff::next_attempt_at(
            now_ms(),
            delay,
            job.received_at_ms,
            self.lifetime(&job.domain),
        )
    }

    /// When to try a job again after `attempts_done` attempts failed.
    fn next_attempt(&self, job: &Job, attempts_done: u32) -> i64 {
        let s = &self.settings;
        self.after(
            job,
            backoff::retry_delay(attempts_done, s.retry_min, s.retry_max, fastrand::f64()),
        )
    }

    /// Releases a job's claim without counting an attempt.
    pub(super) async fn put_back(&self, job: Job, next_attempt_ms: i64) {
        self.put_back_because(job, next_attempt_ms, None).await;
    }

    /// Like [`Scheduler::put_back`], noting why (shown by `mx2 queue show`).
    pub(super) async fn put_back_because(&self, job: Job, next_attempt_ms: i64, why: Option<&str>) {
        let updates = record::put_back(&job, next_attempt_ms, why);
        self.record(&job, updates, Context::default()).await;
        if let Some(why) = why {
            crate::drill::watch::get().not_handed_over(&job.queue_id, why);
        }
    }

    /// Records a finished transaction's per-recipient results.
    pub(super) async fn record_results(
        &self,
        job: &Job,
        cx: Context<'_>,
        results: Vec<RecipientResult>,
    ) {
        let host = cx.remote.unwrap_or("");
        let recorded = record::results(job, &results, now_ms(), |n| self.next_attempt(job, n));
        let mut updates = Vec::with_capacity(recorded.len());
        for (r, rec) in results.iter().zip(recorded) {
            if let Some(exists) = rec.learned {
                self.learn(&job.domain, &r.address, exists).await;
            }
            match rec.outcome {
                Outcome::Delivered => {
                    crate::metrics::get().delivery("delivered");
                    info!(queue_id = %job.queue_id, rcpt = %r.address, primary = host, reply = %r.reply, "delivered");
                }
                Outcome::Failed => {
                    crate::metrics::get().delivery("failed");
                    warn!(queue_id = %job.queue_id, rcpt = %r.address, primary = host, reply = %r.reply, "failed permanently");
                }
                Outcome::Deferred => {
                    crate::metrics::get().delivery("deferred");
                    info!(queue_id = %job.queue_id, rcpt = %r.address, primary = host, reply = %r.reply, retry_in_s = (rec.update.next_attempt_ms - now_ms()) / 1000, "deferred");
                }
            }
            updates.push(rec.update);
        }
        self.record(job, updates, cx).await;
    }

    /// Records a transaction that broke off: every recipient is deferred.
    pub(super) async fn record_broken(&self, job: &Job, host: &str, broken: &Broken) {
        if broken.after_dot {
            warn!(queue_id = %job.queue_id, primary = host, error = %broken.error, "no reply after the end of data: the primary may have the message; it will be sent again (RFC 1047 duplicate risk)");
        }
        let reply = broken.error.to_string();
        let updates = record::broken(job, &reply, |n| self.next_attempt(job, n));
        for r in &job.recipients {
            crate::metrics::get().delivery("deferred");
            info!(queue_id = %job.queue_id, rcpt = %r.address, primary = host, reply = %reply, "deferred");
        }
        let cx = Context {
            relayed_without_dsn: false,
            remote: Some(host),
        };
        self.record(job, updates, cx).await;
        crate::drill::watch::get().not_handed_over(&job.queue_id, &reply);
    }

    /// Records outcomes together with the notifications they call for (which quote at most
    /// the start of the message: it is read from the store only that far).
    pub(super) async fn record(&self, job: &Job, mut updates: Vec<Update>, cx: Context<'_>) {
        let queue_id = job.queue_id.as_str();
        let bouncer = self.bouncer();
        let reports = bouncer.reports(job, &mut updates, cx, now_ms());
        let mut notifications = Vec::new();
        if !reports.is_empty() {
            let original = match self.store.body_reader(queue_id).await {
                Ok(r) => r.prefix(bounce::MAX_ORIGINAL + 1).await.unwrap_or_else(|e| {
                    warn!(queue_id, error = %e, "cannot read the message to quote it in its notification");
                    Vec::new()
                }),
                Err(e) => {
                    warn!(queue_id, error = %e, "cannot read the message to quote it in its notification");
                    Vec::new()
                }
            };
            if let Some(m) = bouncer.message(job, &original, &reports, std::time::SystemTime::now())
            {
                info!(queue_id, dsn_id = %m.id, to = %m.recipients[0].address, recipients = reports.len(), "delivery status notification queued");
                crate::metrics::get().notification(reports[0].action.name());
                notifications.push(m);
            }
        }
        // A recipient that stays pending has a new due time the scheduler must look at.
        let pending =
            updates.iter().any(|u| u.status == Status::Pending) || !notifications.is_empty();
        let result = self
            .store
            .record(queue_id, updates.clone(), notifications.clone())
            .await;
        if pending {
            self.wake.notify_one();
        }
        match result {
            Ok(true) => info!(queue_id, "removed from the queue: every recipient is final"),
            Ok(false) => {}
            Err(e) => {
                // Disk full, say: keep trying in the background, or the recipients would stay
                // claimed (and undelivered) until the next restart.
                error!(queue_id, error = %e, "cannot record delivery results; retrying");
                tokio::spawn(retry_in_background(
                    self.store.clone(),
                    self.wake.clone(),
                    self.shutdown.clone(),
                    queue_id.to_string(),
                    updates,
                    notifications,
                ));
            }
        }
    }
}

/// Writes what the queue could not take, with a growing pause (1 s doubling to 30 s), until it
/// succeeds or mx2 shuts down.
async fn retry_in_background(
    store: Arc<dyn Store>,
    wake: Arc<Notify>,
    mut shutdown: Shutdown,
    id: String,
    updates: Vec<Update>,
    notifications: Vec<NewMessage>,
) {
    let mut delay = Duration::from_secs(1);
    loop {
        tokio::select! {
            _ = shutdown.wait() => return,
            _ = tokio::time::sleep(delay) => {}
        }
        match store
            .record(&id, updates.clone(), notifications.clone())
            .await
        {
            Ok(_) => {
                info!(queue_id = %id, "delivery results recorded after all");
                wake.notify_one();
                return;
            }
            Err(e) => {
                debug!(queue_id = %id, error = %e, "still cannot record delivery results")
            }
        }
        delay = (delay * 2).min(Duration::from_secs(30));
    }
}
