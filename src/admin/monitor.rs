//! The monitor: samples the queue's depth for the dashboard's chart, and notices when a
//! primary that came back has been handed everything held for it (the `drained` event,
//! recorded in the store's outage history too).
//! Runs whether or not the admin listener does, since alerts depend on it.

use super::history::{History, Sample};
use crate::events::{self, Kind};
use crate::queue::{OutageChange, Store, now_ms};
use crate::scheduler::Scheduler;
use crate::shutdown::Shutdown;
use std::sync::Arc;
use std::time::Duration;
use tracing::{info, warn};

/// How often the monitor looks.
const TICK: Duration = Duration::from_secs(1);

pub async fn run(
    store: Arc<dyn Store>,
    scheduler: Arc<Scheduler>,
    history: Arc<History>,
    sample_every: Duration,
    mut shutdown: Shutdown,
) {
    let mut last_sample: Option<tokio::time::Instant> = None;
    // The drain check reads the queue's depth; on a big queue that takes a while, so it runs
    // at most a tenth of the time.
    let mut next_drain_check = tokio::time::Instant::now();
    loop {
        if last_sample.is_none_or(|t| t.elapsed() >= sample_every)
            && let Ok(s) = store.stats().await
        {
            history.push(Sample {
                at_ms: now_ms(),
                messages: s.messages,
                recipients: s.pending_recipients,
            });
            last_sample = Some(tokio::time::Instant::now());
        }
        let draining = events::get().draining();
        let started = tokio::time::Instant::now();
        if !draining.is_empty()
            && started >= next_drain_check
            && let Ok(depth) = store.depth().await
        {
            next_drain_check = started + started.elapsed() * 10;
            let routes = scheduler.primaries();
            for (primary, up_ms) in draining {
                let Some(route) = routes.iter().find(|r| r.primary == primary) else {
                    continue;
                };
                let waiting: u64 = depth
                    .iter()
                    .filter(|d| route.domains.contains(&d.domain))
                    .map(|d| d.recipients - d.held.min(d.recipients))
                    .sum();
                if route.up && waiting == 0 {
                    let took_s = (now_ms() - up_ms).max(0) as f64 / 1000.0;
                    info!(primary = %primary, took_s, "everything held for the primary is delivered");
                    let at_ms = now_ms();
                    events::get().record_at(
                        at_ms,
                        Kind::Drained {
                            primary: primary.clone(),
                            took_s,
                        },
                    );
                    if let Err(e) = store
                        .record_outage(&primary, OutageChange::Drained { at_ms })
                        .await
                    {
                        warn!(primary = %primary, error = %e, "cannot record the end of the drain in the queue");
                    }
                }
            }
        }
        tokio::select! {
            _ = shutdown.wait() => return,
            _ = tokio::time::sleep(TICK) => {}
        }
    }
}
