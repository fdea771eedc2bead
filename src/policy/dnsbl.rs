//! DNS blocklists checked at connect: `d.c.b.a.zone` (IPv4) or the reversed nibbles (IPv6);
//! an answer in 127.0.0.0/8 means listed. Results are cached for a few minutes.

use crate::dns::Dns;
use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const CACHE_FOR: Duration = Duration::from_secs(300);
const MAX_CACHED: usize = 100_000;

pub struct Dnsbl {
    zones: Vec<String>,
    dns: Arc<Dns>,
    cache: Mutex<HashMap<IpAddr, (Option<String>, Instant)>>,
}

/// The name to look up for `ip` in `zone`.
pub fn query_name(ip: IpAddr, zone: &str) -> String {
    match ip {
        IpAddr::V4(v4) => {
            let o = v4.octets();
            format!("{}.{}.{}.{}.{zone}", o[3], o[2], o[1], o[0])
        }
        IpAddr::V6(v6) => {
            let mut parts = Vec::with_capacity(33);
            for byte in v6.octets().iter().rev() {
                parts.push(format!("{:x}", byte & 0xf));
                parts.push(format!("{:x}", byte >> 4));
            }
            parts.push(zone.to_string());
            parts.join(".")
        }
    }
}

impl Dnsbl {
    pub fn new(zones: Vec<String>, dns: Arc<Dns>) -> Self {
        Self {
            zones,
            dns,
            cache: Mutex::new(HashMap::new()),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.zones.is_empty()
    }

    /// The first zone that lists `ip`, if any. Lookup failures count as not listed.
    pub async fn listed(&self, ip: IpAddr) -> Option<String> {
        let now = Instant::now();
        if let Some((hit, at)) = self
            .cache
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&ip)
            && now.duration_since(*at) < CACHE_FOR
        {
            return hit.clone();
        }
        let mut hit = None;
        for zone in &self.zones {
            if let Ok(addrs) = self.dns.addresses(&query_name(ip, zone)).await
                && addrs
                    .iter()
                    .any(|a| matches!(a, IpAddr::V4(v4) if v4.octets()[0] == 127))
            {
                hit = Some(zone.clone());
                break;
            }
        }
        let mut cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
        if cache.len() >= MAX_CACHED {
            cache.retain(|_, (_, at)| now.duration_since(*at) < CACHE_FOR);
        }
        cache.insert(ip, (hit.clone(), now));
        hit
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reversed_names() {
        assert_eq!(
            query_name("192.0.2.99".parse().unwrap(), "bl.test"),
            "99.2.0.192.bl.test"
        );
        let v6 = query_name("2001:db8::1".parse().unwrap(), "bl.test");
        assert!(
            v6.starts_with("1.0.0.0.0.0.0.0") && v6.ends_with("8.b.d.0.1.0.0.2.bl.test"),
            "{v6}"
        );
    }
}
