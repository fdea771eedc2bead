//! Per-client token buckets: how many messages and recipients one client may send per
//! minute. A client is the key the caller passes: its address, or its IPv6 prefix
//! ([`crate::net::client_key`], as `Policy` does). Pure apart from the lock; the caller passes
//! the time.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::Instant;

#[derive(Debug)]
pub struct RateLimiter {
    per_minute: f64,
    buckets: Mutex<HashMap<IpAddr, (f64, Instant)>>,
}

/// Buckets kept before idle ones are dropped.
const MAX_CLIENTS: usize = 100_000;

impl RateLimiter {
    /// `per_minute` 0 means no limit.
    pub fn new(per_minute: u32) -> Self {
        Self {
            per_minute: f64::from(per_minute),
            buckets: Mutex::new(HashMap::new()),
        }
    }

    /// Takes one token for the client `ip` (its counting key); false when its bucket is empty.
    pub fn take(&self, ip: IpAddr, now: Instant) -> bool {
        if self.per_minute <= 0.0 {
            return true;
        }
        let mut b = self.buckets.lock().unwrap_or_else(|p| p.into_inner());
        if b.len() >= MAX_CLIENTS {
            let cap = self.per_minute;
            let rate = cap / 60.0;
            b.retain(|_, (tokens, at)| {
                *tokens + now.duration_since(*at).as_secs_f64() * rate < cap
            });
        }
        let (tokens, at) = b.entry(ip).or_insert((self.per_minute, now));
        let refill = now.saturating_duration_since(*at).as_secs_f64() * self.per_minute / 60.0;
        *tokens = (*tokens + refill).min(self.per_minute);
        *at = now;
        if *tokens >= 1.0 {
            *tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn bucket_empties_and_refills() {
        let r = RateLimiter::new(3);
        let ip: IpAddr = "192.0.2.1".parse().unwrap();
        let other: IpAddr = "192.0.2.2".parse().unwrap();
        let t = Instant::now();
        assert!(r.take(ip, t) && r.take(ip, t) && r.take(ip, t));
        assert!(!r.take(ip, t), "three per minute");
        assert!(r.take(other, t), "buckets are per address");
        assert!(
            r.take(ip, t + Duration::from_secs(20)),
            "one token back after 20 s"
        );
        assert!(!r.take(ip, t + Duration::from_secs(21)));
        assert!(RateLimiter::new(0).take(ip, t), "0 means unlimited");
    }
}
