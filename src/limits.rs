//! The process's open-file limit. Every SMTP session, delivery connection, callout and store
//! file is a descriptor; a shell's default soft limit (often 1024) would make `accept` and
//! outbound connects fail with EMFILE long before `[smtp] max_connections` is reached. At
//! start mx2 raises the soft limit to the hard one (as nginx's `worker_rlimit_nofile` or Go's
//! runtime do) and warns, with what to change, when even the hard limit is too low.

use crate::config::Config;
use rustix::process::{Resource, Rlimit, getrlimit, setrlimit};
use tracing::{info, warn};

/// Descriptors mx2 keeps for itself beyond its connections: store files, listeners, admin
/// server, DNS sockets, log files.
const RESERVE: u64 = 256;

/// Descriptors the configuration can use at once.
pub fn needed(config: &Config) -> u64 {
    let inbound = config.smtp.max_connections as u64;
    let routes = config.domains.len().max(1) as u64;
    let outbound = routes.saturating_mul(config.delivery.max_connections_per_primary as u64);
    inbound.saturating_add(outbound).saturating_add(RESERVE)
}

/// What to set: the soft limit to use, and how many descriptors short it stays.
#[derive(Debug, PartialEq, Eq)]
pub struct Plan {
    pub soft: u64,
    pub short_by: u64,
}

/// `None` stands for "unlimited". The soft limit goes up to the hard one, never down.
pub fn plan(soft: Option<u64>, hard: Option<u64>, needed: u64) -> Plan {
    let soft = soft.unwrap_or(u64::MAX);
    let target = hard.unwrap_or(u64::MAX).max(soft);
    Plan {
        soft: target,
        short_by: needed.saturating_sub(target),
    }
}

/// Raises the soft open-file limit as far as the hard limit allows; logs what it did.
pub fn raise_open_files(config: &Config) {
    let now = getrlimit(Resource::Nofile);
    let needed = needed(config);
    let p = plan(now.current, now.maximum, needed);
    if now.current != Some(p.soft) && now.current.is_some() {
        match setrlimit(
            Resource::Nofile,
            Rlimit {
                current: Some(p.soft),
                maximum: now.maximum,
            },
        ) {
            Ok(()) => info!(
                from = now.current.unwrap_or(0),
                to = p.soft,
                "open-file limit raised"
            ),
            Err(e) => warn!(error = %e, "cannot raise the open-file limit"),
        }
    }
    if p.short_by > 0 {
        warn!(
            limit = p.soft,
            needed,
            "the open-file limit is below what [smtp] max_connections and [delivery] \
             max_connections_per_primary can use: connections beyond it fail instead of \
             getting 421; raise the hard limit (systemd: LimitNOFILE=, shell: ulimit -Hn) or \
             lower max_connections"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_soft_limit_goes_up_to_the_hard_one() {
        assert_eq!(
            plan(Some(1024), Some(524_288), 2_000),
            Plan {
                soft: 524_288,
                short_by: 0
            }
        );
    }

    #[test]
    fn a_low_hard_limit_is_reported_short() {
        assert_eq!(
            plan(Some(1024), Some(4096), 10_256),
            Plan {
                soft: 4096,
                short_by: 6_160
            }
        );
    }

    #[test]
    fn never_lowered_and_unlimited_stays_unlimited() {
        assert_eq!(plan(Some(8192), Some(4096), 100).soft, 8192);
        assert_eq!(plan(None, None, 100).soft, u64::MAX);
        assert_eq!(plan(Some(1024), None, 100).soft, u64::MAX);
    }
}
