//! Connection limits: a cap on all inbound connections and one per client (an IPv4 address
//! or an IPv6 prefix, see [`crate::net::client_key`]). A slot is held by a guard for the life
//! of the connection. Also the time budget of message content (the minimum data rate).

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

#[derive(Debug)]
pub struct ConnectionLimits {
    max_total: usize,
    max_per_ip: usize,
    /// IPv6 clients are counted per prefix of this many bits.
    ipv6_prefix: u8,
    state: Mutex<Counts>,
}

#[derive(Debug, Default)]
struct Counts {
    total: usize,
    per_ip: HashMap<IpAddr, usize>,
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

impl ConnectionLimits {
    pub fn new(max_total: usize, max_per_ip: usize, ipv6_prefix: u8) -> Arc<Self> {
        Arc::new(Self {
            max_total,
            max_per_ip,
            ipv6_prefix,
            state: Mutex::new(Counts::default()),
        })
    }

    pub fn acquire(self: &Arc<Self>, ip: IpAddr) -> Result<Slot, Refused> {
        let mut s = self.state.lock().unwrap_or_else(|p| p.into_inner());
        if s.total >= self.max_total {
            return Err(Refused::Total);
        }
        let key = crate::net::client_key(ip, self.ipv6_prefix);
        let n = s.per_ip.entry(key).or_insert(0);
        if *n >= self.max_per_ip {
            return Err(Refused::PerIp);
        }
        *n += 1;
        s.total += 1;
        Ok(Slot {
            limits: self.clone(),
            key,
        })
    }

    /// Connections open now.
    pub fn current(&self) -> usize {
        self.state.lock().unwrap_or_else(|p| p.into_inner()).total
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut s = self.limits.state.lock().unwrap_or_else(|p| p.into_inner());
        s.total = s.total.saturating_sub(1);
        if let Some(n) = s.per_ip.get_mut(&self.key) {
            *n -= 1;
            if *n == 0 {
                s.per_ip.remove(&self.key);
            }
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

    #[test]
    fn caps_and_release() {
        let l = ConnectionLimits::new(3, 2, 64);
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
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        let l = ConnectionLimits::new(100, 2, 64);
        let _a = l.acquire(ip("2001:db8:0:1::1")).unwrap();
        let _b = l.acquire(ip("2001:db8:0:1:ffff::2")).unwrap();
        assert_eq!(
            l.acquire(ip("2001:db8:0:1::3")).unwrap_err(),
            Refused::PerIp,
            "a third address in the same /64"
        );
        assert!(l.acquire(ip("2001:db8:0:2::1")).is_ok(), "another /64");
        let per_address = ConnectionLimits::new(100, 1, 128);
        let _c = per_address.acquire(ip("2001:db8::1")).unwrap();
        assert!(
            per_address.acquire(ip("2001:db8::2")).is_ok(),
            "128: each address apart"
        );
        drop((_a, _b));
        assert_eq!(l.current(), 0, "slots are released under their key");
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
