//! `[inbox] keep_after_delivery`: delivered mail of inbox domains stays readable (marked
//! `$Delivered`) for a while after the primary took it. This module tells the store, for
//! each configuration generation, which domains keep for how long ([`configure`]), and runs
//! the purge that removes kept messages whose time is up ([`purge`]). The keeping itself is
//! the store's (`Store::inbox_keep`): it happens in the transaction that records the last
//! delivery, so a kept message is never deliverable again.

use crate::config::Config;
use crate::queue::Store;
use std::time::Duration;
use tracing::{debug, info, warn};

/// Kept messages removed per store call (one transaction each).
const PURGE_BATCH: usize = 500;
/// The longest wait between purges.
const MAX_PURGE_EVERY: Duration = Duration::from_secs(60);

/// What the store is told for `config`: each domain with `inbox = true` and the keeping
/// time, nothing when the inbox is off or keeping is (`"0"`).
pub fn plan(config: &Config, inbox_on: bool) -> Vec<(String, i64)> {
    let ms = i64::try_from(config.inbox.keep_after_delivery.as_millis()).unwrap_or(i64::MAX);
    if !inbox_on || ms == 0 {
        return Vec::new();
    }
    config
        .domains
        .iter()
        .filter(|d| d.inbox)
        .map(|d| (d.name.clone(), ms))
        .collect()
}

/// Tells the store (a failure is logged: the last setting stays in force).
pub async fn configure(store: &dyn Store, keep: Vec<(String, i64)>) {
    if let Err(e) = store.inbox_keep(keep).await {
        warn!(error = %e, "cannot store which domains keep delivered mail for the inbox; the previous setting stays");
    }
}

/// How often the purge runs for a keeping time: a tenth of it, between 1 s and a minute (a
/// message may stay that much longer in the store; the inbox stops showing it on time).
pub fn purge_every(keep: Duration) -> Duration {
    (keep / 10).clamp(Duration::from_secs(1), MAX_PURGE_EVERY)
}

/// Removes kept messages whose time is up, every `every`, until shutdown. Runs whatever the
/// configuration, so that messages kept before the inbox was turned off still go.
pub async fn purge(
    store: std::sync::Arc<dyn Store>,
    every: Duration,
    mut shutdown: crate::shutdown::Shutdown,
) {
    loop {
        tokio::select! {
            _ = shutdown.wait() => return,
            _ = tokio::time::sleep(every) => {}
        }
        let mut total = 0;
        loop {
            match store.inbox_purge(crate::queue::now_ms(), PURGE_BATCH).await {
                Ok(n) => {
                    total += n;
                    if n < PURGE_BATCH as u64 {
                        break;
                    }
                }
                Err(e) => {
                    debug!(error = %e, "purging delivered mail kept for the inbox failed; next round");
                    break;
                }
            }
        }
        if total > 0 {
            info!(
                messages = total,
                "delivered mail kept for the inbox removed (keep_after_delivery passed)"
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn purges_often_enough_and_not_too_often() {
        assert_eq!(purge_every(Duration::from_secs(1)), Duration::from_secs(1));
        assert_eq!(
            purge_every(Duration::from_secs(100)),
            Duration::from_secs(10)
        );
        assert_eq!(
            purge_every(Duration::from_secs(3 * 86_400)),
            MAX_PURGE_EVERY
        );
        assert_eq!(purge_every(Duration::ZERO), Duration::from_secs(1));
    }

    #[test]
    fn plan_names_inbox_domains_only() {
        let dir = tempfile::tempdir().unwrap();
        let text = "hostname = \"mx2.test\"\n[inbox]\nkeep_after_delivery = \"2m\"\n[[domain]]\nname = \"a.test\"\nprimary = [\"h:25\"]\ninbox = true\n[[domain]]\nname = \"b.test\"\nprimary = [\"h:25\"]\n";
        let c = Config::parse(text, "mx2.toml", dir.path()).unwrap();
        assert_eq!(plan(&c, true), vec![("a.test".to_string(), 120_000)]);
        assert!(plan(&c, false).is_empty(), "inbox off: nothing kept");
        let off = text.replace("\"2m\"", "\"0\"");
        let c = Config::parse(&off, "mx2.toml", dir.path()).unwrap();
        assert!(plan(&c, true).is_empty());
    }
}
