//! Connection limits: a cap on all inbound connections and one per client (an IPv4 address
//! or an IPv6 prefix, see [`crate::net::client_key`]). A slot is held by a guard for the life
//! of the connection. One instance lives as long as the process; a reload changes its
//! settings, not its counts.
//!
//! Also the two time budgets of a connection: stress mode (above a share of the cap, waits
//! for the client shorten, as in Postfix's stress-adaptive mode) and the minimum data rate.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::watch;
use tracing::{info, warn};

/// What the limits are; a reload may change them.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LimitSettings {
    pub max_total: usize,
    pub max_per_client: usize,
    /// IPv6 clients are counted per prefix of this many bits.
    pub ipv6_prefix: u8,
    /// Above this share of `max_total` open, the server is under stress.
    pub stress_threshold: f64,
}

#[derive(Debug)]
pub struct ConnectionLimits {
    state: Mutex<Counts>,
    /// True while under stress; connections watch it to shorten their waits.
    stress: watch::Sender<bool>,
}

#[derive(Debug)]
struct Counts {
    settings: LimitSettings,
    total: usize,
    per_client: HashMap<IpAddr, usize>,
}

/// Why a connection was refused.
#[derive(Debug, PartialEq, Eq)]
pub enum Refused {
    Total,
    PerIp,
}

/// Releases the connection's slot when dropped.
#[derive(Debug)]
pub struct Slot {
    limits: Arc<ConnectionLimits>,
    key: IpAddr,
}

/// Is a server with `open` of `max` connections under stress?
pub fn under_stress(open: usize, max: usize, threshold: f64) -> bool {
    open as f64 > threshold * max as f64
}

impl ConnectionLimits {
    pub fn new(settings: LimitSettings) -> Arc<Self> {
        Arc::new(Self {
            state: Mutex::new(Counts {
                settings,
                total: 0,
                per_client: HashMap::new(),
            }),
            stress: watch::channel(false).0,
        })
    }

    fn counts(&self) -> std::sync::MutexGuard<'_, Counts> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// New settings (a reload): they apply to connections accepted from now on, and to the
    /// stress state at once. Connections open now keep their slots.
    pub fn configure(&self, settings: LimitSettings) {
        let mut s = self.counts();
        s.settings = settings;
        self.update_stress(&s);
    }

    pub fn acquire(self: &Arc<Self>, ip: IpAddr) -> Result<Slot, Refused> {
        let mut s = self.counts();
        if s.total >= s.settings.max_total {
            return Err(Refused::Total);
        }
        let key = crate::net::client_key(ip, s.settings.ipv6_prefix);
        let max_per_client = s.settings.max_per_client;
        let n = s.per_client.entry(key).or_insert(0);
        if *n >= max_per_client {
            return Err(Refused::PerIp);
        }
        *n += 1;
        s.total += 1;
        self.update_stress(&s);
        Ok(Slot {
            limits: self.clone(),
            key,
        })
    }

    /// Connections open now.
    pub fn current(&self) -> usize {
        self.counts().total
    }

    /// Follows the stress state (true: under stress).
    pub fn stress(&self) -> watch::Receiver<bool> {
        self.stress.subscribe()
    }

    /// Enters or leaves stress mode when the count crossed the threshold: logs it once,
    /// sets the gauge, and tells the connections. Called with the counts locked, so the
    /// transitions are logged in order.
    fn update_stress(&self, s: &Counts) {
        let now = under_stress(s.total, s.settings.max_total, s.settings.stress_threshold);
        let changed = self
            .stress
            .send_if_modified(|v| std::mem::replace(v, now) != now);
        if !changed {
            return;
        }
        crate::metrics::get().smtp_stress.set(i64::from(now));
        let (open, max) = (s.total, s.settings.max_total);
        if now {
            warn!(
                open,
                max_connections = max,
                clients = s.per_client.len(),
                "SMTP under stress: connections above the stress threshold; idle, command and greeting timeouts shortened to stress_timeout"
            );
        } else {
            info!(
                open,
                max_connections = max,
                "SMTP no longer under stress: normal timeouts again"
            );
        }
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut s = self.limits.counts();
        s.total = s.total.saturating_sub(1);
        if let Some(n) = s.per_client.get_mut(&self.key) {
            *n -= 1;
            if *n == 0 {
                s.per_client.remove(&self.key);
            }
        }
        self.limits.update_stress(&s);
    }
}

/// How long one connection may wait for its client: the normal limit, or the stress timeout
/// while the server is under stress. Follows changes while a wait is in progress.
#[derive(Debug, Clone)]
pub struct Pressure {
    stress: watch::Receiver<bool>,
    stress_timeout: Duration,
}

impl Pressure {
    pub fn new(limits: &ConnectionLimits, stress_timeout: Duration) -> Self {
        Self {
            stress: limits.stress(),
            stress_timeout,
        }
    }

    /// The limit that applies now to a wait normally allowed `normal`; [`Pressure::changed`]
    /// then waits for the next change.
    pub fn limit(&mut self, normal: Duration) -> Duration {
        let stressed = *self.stress.borrow_and_update();
        self.cut(stressed, normal)
    }

    /// The limit that applies now, without following changes.
    pub fn current(&self, normal: Duration) -> Duration {
        let stressed = *self.stress.borrow();
        self.cut(stressed, normal)
    }

    fn cut(&self, stressed: bool, normal: Duration) -> Duration {
        if stressed {
            normal.min(self.stress_timeout)
        } else {
            normal
        }
    }

    /// Completes when the stress state changes after the last [`Pressure::limit`].
    pub async fn changed(&mut self) {
        if self.stress.changed().await.is_err() {
            // The limits are gone (cannot happen while connections run): never again.
            std::future::pending::<()>().await;
        }
    }
}

/// The most time DATA content (or one BDAT chunk) may take once `received` bytes of it have
/// arrived: `data_timeout` plus one second per `min_rate` bytes, as Postfix's
/// `smtpd_min_data_rate`. None: no minimum rate (`min_rate` 0).
pub fn data_budget(data_timeout: Duration, received: u64, min_rate: u64) -> Option<Duration> {
    if min_rate == 0 {
        return None;
    }
    let earned = Duration::from_micros(received.saturating_mul(1_000_000) / min_rate);
    Some(data_timeout.saturating_add(earned))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(max_total: usize, max_per_client: usize) -> LimitSettings {
        LimitSettings {
            max_total,
            max_per_client,
            ipv6_prefix: 64,
            stress_threshold: 0.8,
        }
    }

    #[test]
    fn caps_and_release() {
        let l = ConnectionLimits::new(settings(3, 2));
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        let b: IpAddr = "192.0.2.2".parse().unwrap();
        let s1 = l.acquire(a).unwrap();
        let _s2 = l.acquire(a).unwrap();
        assert_eq!(l.acquire(a).unwrap_err(), Refused::PerIp);
        let _s3 = l.acquire(b).unwrap();
        assert_eq!(l.acquire(b).unwrap_err(), Refused::Total);
        drop(s1);
        assert!(l.acquire(a).is_ok());
    }

    #[test]
    fn ipv6_clients_are_counted_per_prefix() {
        let l = ConnectionLimits::new(settings(100, 2));
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        let _a = l.acquire(ip("2001:db8:0:1::1")).unwrap();
        let _b = l.acquire(ip("2001:db8:0:1:ffff::2")).unwrap();
        assert_eq!(
            l.acquire(ip("2001:db8:0:1::3")).unwrap_err(),
            Refused::PerIp,
            "a third address in the same /64"
        );
        assert!(l.acquire(ip("2001:db8:0:2::1")).is_ok(), "another /64");
        l.configure(LimitSettings {
            ipv6_prefix: 128,
            ..settings(100, 2)
        });
        assert!(
            l.acquire(ip("2001:db8:0:1::3")).is_ok(),
            "128: each address apart"
        );
        drop((_a, _b));
        assert_eq!(
            l.current(),
            0,
            "slots taken under /64 are released after the change"
        );
    }

    #[test]
    fn stress_starts_above_the_threshold_and_ends_below() {
        assert!(!under_stress(16, 20, 0.8));
        assert!(under_stress(17, 20, 0.8));
        assert!(!under_stress(1000, 1000, 1.0));
        let l = ConnectionLimits::new(settings(10, 10));
        let mut rx = l.stress();
        let ip: IpAddr = "192.0.2.1".parse().unwrap();
        let mut slots: Vec<Slot> = (0..8).map(|_| l.acquire(ip).unwrap()).collect();
        assert!(!*rx.borrow_and_update(), "8 of 10 is not above 80 %");
        slots.push(l.acquire(ip).unwrap());
        assert!(rx.has_changed().unwrap() && *rx.borrow_and_update());
        slots.pop();
        assert!(rx.has_changed().unwrap() && !*rx.borrow_and_update());
        l.configure(LimitSettings {
            stress_threshold: 0.5,
            ..settings(10, 10)
        });
        assert!(*rx.borrow(), "a lower threshold applies at once");
    }

    #[tokio::test]
    async fn pressure_shortens_waits_while_under_stress() {
        let l = ConnectionLimits::new(settings(2, 2));
        let mut p = Pressure::new(&l, Duration::from_secs(10));
        let five_min = Duration::from_secs(300);
        assert_eq!(p.limit(five_min), five_min);
        let ip: IpAddr = "192.0.2.1".parse().unwrap();
        let _a = l.acquire(ip).unwrap();
        let b = l.acquire(ip).unwrap();
        tokio::time::timeout(Duration::from_secs(1), p.changed())
            .await
            .expect("a waiting connection hears of stress");
        assert_eq!(p.limit(five_min), Duration::from_secs(10));
        assert_eq!(
            p.limit(Duration::from_secs(1)),
            Duration::from_secs(1),
            "shorter limits stay"
        );
        drop(b);
        assert_eq!(p.limit(five_min), five_min);
    }

    #[test]
    fn data_budget_grows_with_the_bytes_received() {
        let t = Duration::from_secs(180);
        assert_eq!(data_budget(t, 0, 500), Some(t));
        assert_eq!(
            data_budget(t, 5_000, 500),
            Some(t + Duration::from_secs(10))
        );
        assert_eq!(
            data_budget(Duration::from_secs(2), 250, 1000),
            Some(Duration::from_millis(2250))
        );
        assert_eq!(data_budget(t, 1 << 40, 0), None, "0: no minimum");
        assert!(data_budget(t, u64::MAX, 1).is_some(), "no overflow");
    }
}
