//! Whether two addresses sit in the same network: shared IPv4 /24 or IPv6 /48 (fail), /16 or
//! /32 (warning); and whether two PTR names share a parent domain. Pure.

use std::net::IpAddr;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Closeness {
    /// Same /24 (IPv4) or /48 (IPv6): almost certainly one network.
    SameNetwork(u8),
    /// Same /16 or /32: likely one provider.
    SameBlock(u8),
    Apart,
}

pub fn closeness(a: IpAddr, b: IpAddr) -> Closeness {
    match (a, b) {
        (IpAddr::V4(a), IpAddr::V4(b)) => {
            let (a, b) = (u32::from(a), u32::from(b));
            if a >> 8 == b >> 8 {
                Closeness::SameNetwork(24)
            } else if a >> 16 == b >> 16 {
                Closeness::SameBlock(16)
            } else {
                Closeness::Apart
            }
        }
        (IpAddr::V6(a), IpAddr::V6(b)) => {
            let (a, b) = (u128::from(a), u128::from(b));
            if a >> 80 == b >> 80 {
                Closeness::SameNetwork(48)
            } else if a >> 96 == b >> 96 {
                Closeness::SameBlock(32)
            } else {
                Closeness::Apart
            }
        }
        _ => Closeness::Apart,
    }
}

/// The network prefix text for messages, e.g. `192.0.2.0/24`.
pub fn prefix(ip: IpAddr, bits: u8) -> String {
    match ip {
        IpAddr::V4(v4) => {
            let masked = u32::from(v4) & u32::MAX.checked_shl(32 - u32::from(bits)).unwrap_or(0);
            format!("{}/{bits}", std::net::Ipv4Addr::from(masked))
        }
        IpAddr::V6(v6) => {
            let masked = u128::from(v6) & u128::MAX.checked_shl(128 - u32::from(bits)).unwrap_or(0);
            format!("{}/{bits}", std::net::Ipv6Addr::from(masked))
        }
    }
}

/// The registrable-looking parent of a host name: its last two labels.
pub fn parent(name: &str) -> String {
    let labels: Vec<&str> = name.trim_end_matches('.').split('.').collect();
    labels[labels.len().saturating_sub(2)..].join(".")
}

/// Great-circle distance in km.
pub fn distance_km(a: (f64, f64), b: (f64, f64)) -> f64 {
    let (la1, lo1, la2, lo2) = (
        a.0.to_radians(),
        a.1.to_radians(),
        b.0.to_radians(),
        b.1.to_radians(),
    );
    let h = ((la2 - la1) / 2.0).sin().powi(2)
        + la1.cos() * la2.cos() * ((lo2 - lo1) / 2.0).sin().powi(2);
    2.0 * 6371.0 * h.sqrt().asin()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subnets() {
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        assert_eq!(
            closeness(ip("192.0.2.1"), ip("192.0.2.200")),
            Closeness::SameNetwork(24)
        );
        assert_eq!(
            closeness(ip("192.0.2.1"), ip("192.0.77.1")),
            Closeness::SameBlock(16)
        );
        assert_eq!(
            closeness(ip("192.0.2.1"), ip("198.51.100.1")),
            Closeness::Apart
        );
        assert_eq!(
            closeness(ip("2001:db8:1::1"), ip("2001:db8:1:ff::2")),
            Closeness::SameNetwork(48)
        );
        assert_eq!(
            closeness(ip("2001:db8:1::1"), ip("2001:db8:2::1")),
            Closeness::SameBlock(32)
        );
        assert_eq!(
            closeness(ip("192.0.2.1"), ip("2001:db8::1")),
            Closeness::Apart
        );
        assert_eq!(prefix(ip("192.0.2.77"), 24), "192.0.2.0/24");
        assert_eq!(parent("mx1.mail.example.com."), "example.com");
        let d = distance_km((48.8566, 2.3522), (52.52, 13.405));
        assert!((870.0..890.0).contains(&d), "Paris–Berlin {d}");
    }
}
