//! Drills on a schedule: each domain with `drill = "daily"` or an interval gets a drill when
//! its last one (from the store, so a restart keeps the rhythm) is an interval old; a drill
//! while the primary is down is recorded as skipped. Raises `DrillOverdue` when no drill of a
//! domain passed within twice its interval. The timing decisions are pure functions.

use super::Driller;
use super::report::Trigger;
use crate::events::{self, Kind};
use crate::queue::now_ms;
use crate::shutdown::Shutdown;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;
use tracing::warn;

/// How often the schedule looks.
const TICK: Duration = Duration::from_secs(1);

fn ms(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

/// Whether a drill is due: an interval after the last one, or at once when there was none.
pub fn due(every: Duration, last_ms: Option<i64>, now_ms: i64) -> bool {
    last_ms.is_none_or(|last| now_ms.saturating_sub(last) >= ms(every))
}

/// When no drill passed within twice the interval (counted from the last pass, or from when
/// the schedule began watching the domain): Some(seconds since the last pass, if any).
pub fn overdue(
    every: Duration,
    last_passed_ms: Option<i64>,
    watching_since_ms: i64,
    now_ms: i64,
) -> Option<Option<u64>> {
    let from = last_passed_ms.map_or(watching_since_ms, |p| p.max(watching_since_ms));
    if now_ms.saturating_sub(from) < ms(every).saturating_mul(2) {
        return None;
    }
    Some(last_passed_ms.map(|p| u64::try_from((now_ms - p) / 1000).unwrap_or(0)))
}

/// What the schedule remembers per domain.
#[derive(Default)]
struct Seen {
    /// The last drill's start (any outcome), from the store at first.
    last_ms: Option<i64>,
    since_ms: i64,
    /// The last pass an overdue alert was raised for (once per gap).
    alerted_for: Option<Option<i64>>,
}

/// Runs scheduled drills until shutdown.
pub async fn run(driller: Arc<Driller>, mut shutdown: Shutdown) {
    let mut seen: HashMap<String, Seen> = HashMap::new();
    let mut tick = tokio::time::interval(TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = shutdown.wait() => return,
            _ = tick.tick() => {}
        }
        let domains = driller.domains();
        seen.retain(|d, _| domains.get(d).is_some_and(|s| s.drill.every.is_some()));
        let scheduled: Vec<(String, Duration)> = domains
            .iter()
            .filter_map(|(d, s)| s.drill.every.map(|e| (d.clone(), e)))
            .collect();
        if scheduled.is_empty() {
            continue;
        }
        let passed: HashMap<String, Option<i64>> = match driller.store.drill_summaries().await {
            Ok(s) => s
                .into_iter()
                .map(|s| (s.last.domain, s.last_passed_ms))
                .collect(),
            Err(e) => {
                warn!(error = %e, "cannot read the drills' results; scheduled drills wait");
                continue;
            }
        };
        let now = now_ms();
        for (domain, every) in scheduled {
            if !seen.contains_key(&domain) {
                let last = match driller.store.drills(&domain, 1).await {
                    Ok(l) => l.first().map(|d| d.at_ms),
                    Err(_) => continue,
                };
                seen.insert(
                    domain.clone(),
                    Seen {
                        last_ms: last,
                        since_ms: now,
                        alerted_for: None,
                    },
                );
            }
            let Some(s) = seen.get_mut(&domain) else {
                continue;
            };
            let last_passed = passed.get(&domain).copied().flatten();
            match overdue(every, last_passed, s.since_ms, now) {
                Some(since_s) if s.alerted_for != Some(last_passed) => {
                    s.alerted_for = Some(last_passed);
                    events::get().record(Kind::DrillOverdue {
                        domain: domain.clone(),
                        since_s,
                    });
                }
                _ => {}
            }
            // The schedule looks once a tick, a few ms after it (the reads above): a drill
            // falling due within half a tick from now runs at this tick, so an interval is
            // kept to within half a tick instead of slipping by a whole tick each time.
            if due(every, s.last_ms, now.saturating_add(ms(TICK) / 2)) {
                s.last_ms = Some(now);
                let d = driller.clone();
                tokio::spawn(async move {
                    // Refused only when a drill of the domain runs already.
                    let _ = d.run(&domain, Trigger::Scheduled).await;
                });
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const H: i64 = 3_600_000;

    #[test]
    fn a_drill_is_due_an_interval_after_the_last() {
        let every = Duration::from_secs(3600);
        assert!(due(every, None, 5));
        assert!(!due(every, Some(10 * H), 10 * H + H - 1));
        assert!(due(every, Some(10 * H), 11 * H));
    }

    #[test]
    fn overdue_after_twice_the_interval_without_a_pass() {
        let every = Duration::from_secs(3600);
        // Watching since 0, never passed.
        assert_eq!(overdue(every, None, 0, 2 * H - 1), None);
        assert_eq!(overdue(every, None, 0, 2 * H), Some(None));
        // Passed at 5h: overdue from 7h, counted from the pass.
        assert_eq!(overdue(every, Some(5 * H), 0, 7 * H - 1), None);
        assert_eq!(overdue(every, Some(5 * H), 0, 7 * H), Some(Some(7200)));
        // A pass long before the schedule began (a restart after days) counts from the start.
        assert_eq!(overdue(every, Some(0), 10 * H, 11 * H), None);
        assert_eq!(
            overdue(every, Some(0), 10 * H, 12 * H),
            Some(Some(12 * 3600))
        );
    }
}
