//! The claim loop: claims due recipients from the queue in batches, ends expired messages,
//! and hands each job to its route (starting a worker when the route wants one, holding the
//! job when the route is down). Sleeps until the next due time, a wake-up or shutdown, and
//! stops claiming while the routes' queues are full.
//!
//! May call the `Store` (claim, next due), `record`/`commit` and the route table; must never
//! deliver or open a connection itself (workers do).

use super::bounce::Context;
use super::route::Pushed;
use super::settings::ms;
use super::{Scheduler, record};
use crate::queue::{Job, now_ms};
use std::sync::Arc;
use std::time::Duration;
use tracing::{debug, error, warn};

/// Recipients claimed per store round trip.
const CLAIM_BATCH: usize = 256;
/// Jobs waiting in route queues beyond which the scheduler stops claiming more.
const MAX_QUEUED: usize = 2048;
/// The longest the scheduler sleeps without looking at the store.
const MAX_IDLE: Duration = Duration::from_secs(30);

impl Scheduler {
    /// The scheduler's loop; returns at shutdown.
    pub async fn run(self: Arc<Self>) {
        let mut shutdown = self.shutdown.clone();
        loop {
            if shutdown.is_shutdown() {
                break;
            }
            let mut more = false;
            if self.queued() < MAX_QUEUED {
                match self.store.claim_due(now_ms(), CLAIM_BATCH).await {
                    Ok(jobs) => {
                        more =
                            jobs.iter().map(|j| j.recipients.len()).sum::<usize>() >= CLAIM_BATCH;
                        for job in jobs {
                            self.dispatch(job).await;
                        }
                    }
                    Err(e) => error!(error = %e, "cannot read the queue; retrying in 1s"),
                }
            }
            if more && self.queued() < MAX_QUEUED {
                continue;
            }
            let pause = if self.queued() >= MAX_QUEUED {
                Duration::from_millis(50)
            } else {
                match self.store.next_due().await {
                    Ok(Some(t)) => Duration::from_millis(u64::try_from(t - now_ms()).unwrap_or(0))
                        .clamp(Duration::from_millis(5), MAX_IDLE),
                    Ok(None) => MAX_IDLE,
                    Err(_) => Duration::from_secs(1),
                }
            };
            tokio::select! {
                _ = shutdown.wait() => break,
                _ = self.wake.notified() => {}
                _ = tokio::time::sleep(pause) => {}
            }
        }
        debug!("scheduler stopped");
    }

    async fn dispatch(self: &Arc<Self>, job: Job) {
        let now = now_ms();
        if record::is_expired(job.received_at_ms, ms(self.lifetime(&job.domain)), now) {
            warn!(queue_id = %job.queue_id, domain = %job.domain, "message expired after the queue lifetime");
            let updates = record::expired(&job, now);
            self.record(&job, updates, Context::default()).await;
            return;
        }
        let route = self.route_for(&job.domain);
        match route.push(job) {
            Pushed::Queued => {}
            Pushed::StartWorker => self.start_worker(route),
            Pushed::Down(job) => {
                self.hold(&route, vec![job], "held: the primary is down")
                    .await
            }
        }
    }
}
