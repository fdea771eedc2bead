//! `mx2 check DOMAIN`: audits a domain's MX setup before a disaster does — MX records and
//! preferences, CNAME and IP-literal targets, addresses, reverse DNS, whether primary and
//! backup really sit in different networks, and DANE ([`dane`]). Lookups go through [`Dns`];
//! the verdicts are pure.

pub mod dane;
pub mod diversity;
pub mod geoip;
pub mod mta_sts;
pub mod report;
pub mod smtp;

use crate::dns::{Dns, MxAnswer};
use diversity::{Closeness, closeness, parent, prefix};
use report::{Address, Level, MxHost, Report};
use std::net::IpAddr;

/// What to check beyond DNS.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// An offline MaxMind database for ASN, country and distance checks.
    pub geoip: Option<std::path::PathBuf>,
    /// Run the live SMTP checks on this port (25 normally).
    pub smtp_port: Option<u16>,
    /// Extra trusted CA certificates for the STARTTLS check and the MTA-STS policy fetch.
    pub ca_file: Option<std::path::PathBuf>,
}

pub async fn run(domain: &str, dns: &Dns, opts: &Options) -> Report {
    let domain = domain.trim_end_matches('.').to_ascii_lowercase();
    let mut r = Report::new(&domain);
    let fix_publish = "publish MX records: the primary with a low preference value (10) and the backup (mx2) with a higher one (20)";
    let mut records = match dns.mx(&domain).await {
        Err(e) => {
            r.add(
                "mx.lookup",
                Level::Fail,
                format!("MX lookup failed: {e}"),
                Some("check that the domain's name servers answer"),
            );
            return r;
        }
        Ok(MxAnswer::NoDomain) => {
            r.add(
                "mx.lookup",
                Level::Fail,
                format!("{domain} does not exist (NXDOMAIN)"),
                Some("check the spelling, or register and delegate the domain"),
            );
            return r;
        }
        Ok(MxAnswer::NullMx) => {
            r.add(
                "mx.null",
                Level::Fail,
                "null MX (RFC 7505): the domain says it accepts no mail",
                Some("remove the null MX record if the domain should receive mail"),
            );
            return r;
        }
        Ok(MxAnswer::NoMx) => {
            r.add(
                "mx.lookup",
                Level::Fail,
                "no MX records: senders fall back to the domain's address, and there is no backup",
                Some(fix_publish),
            );
            return r;
        }
        Ok(MxAnswer::Records(v)) => v,
    };
    records.sort();
    for (preference, name) in records {
        let mut host = MxHost {
            preference,
            name: name.clone(),
            addresses: Vec::new(),
        };
        if let Ok(ip) = name.parse::<IpAddr>() {
            r.add(
                format!("mx.literal.{name}"),
                Level::Fail,
                format!("MX target {name} is an IP address, not a host name (RFC 5321 §5.1)"),
                Some("point the MX record at a host name that has A/AAAA records"),
            );
            reachable(&mut r, &name, ip);
            host.addresses.push(Address {
                ip,
                ptr: Vec::new(),
            });
            r.mx.push(host);
            continue;
        }
        if let Ok(Some(target)) = dns.cname(&name).await {
            r.add(
                format!("mx.cname.{name}"),
                Level::Fail,
                format!("MX target {name} is a CNAME (to {target}); RFC 2181 §10.3 forbids it and some senders refuse it"),
                Some(&format!("point the MX record at the canonical name {target}")),
            );
        }
        let ips = match dns.addresses(&name).await {
            Ok(ips) => ips,
            Err(e) => {
                r.add(
                    format!("mx.address.{name}"),
                    Level::Fail,
                    format!("address lookup for {name} failed: {e}"),
                    Some("check the name servers of the MX host's domain"),
                );
                Vec::new()
            }
        };
        if ips.is_empty() {
            r.add(
                format!("mx.address.{name}"),
                Level::Fail,
                format!("MX target {name} has no A or AAAA record"),
                Some(&format!("add an address record for {name}")),
            );
        }
        for ip in ips {
            reachable(&mut r, &name, ip);
            let ptr = dns.ptr(ip).await.unwrap_or_default();
            if ptr.is_empty() {
                r.add(
                    format!("ptr.{ip}"),
                    Level::Warn,
                    format!(
                        "no reverse DNS (PTR) for {ip} ({name}); many receivers distrust such hosts"
                    ),
                    Some(&format!(
                        "ask whoever runs {ip} for a PTR record naming {name}"
                    )),
                );
            } else {
                let mut confirmed = false;
                for p in &ptr {
                    confirmed |= dns.addresses(p).await.unwrap_or_default().contains(&ip);
                }
                if confirmed {
                    r.add(
                        format!("ptr.{ip}"),
                        Level::Ok,
                        format!(
                            "reverse DNS of {ip} is {} and resolves back",
                            ptr.join(", ")
                        ),
                        None,
                    );
                } else {
                    r.add(
                        format!("ptr.{ip}"),
                        Level::Warn,
                        format!(
                            "reverse DNS of {ip} is {}, which does not resolve back to {ip}",
                            ptr.join(", ")
                        ),
                        Some(&format!(
                            "make {} resolve to {ip}, or change the PTR record",
                            ptr[0]
                        )),
                    );
                }
            }
            host.addresses.push(Address { ip, ptr });
        }
        r.mx.push(host);
    }
    structure(&mut r);
    diversity(&mut r);
    if r.mx
        .iter()
        .flat_map(|h| &h.addresses)
        .any(|a| a.ip.is_ipv6())
    {
        r.add(
            "ipv6",
            Level::Ok,
            "IPv6: at least one MX host has an AAAA record",
            None,
        );
    } else {
        r.add(
            "ipv6",
            Level::Info,
            "IPv6: no MX host has an AAAA record (IPv6-only senders cannot reach the domain)",
            None,
        );
    }
    let helo = "mx2-check.invalid";
    let dane_port = opts.smtp_port.unwrap_or(25);
    dane::run(&mut r, dns, dane_port, opts.smtp_port.is_some(), helo).await;
    if let Some(port) = opts.smtp_port {
        smtp::run(&mut r, port, opts.ca_file.as_deref(), helo).await;
    }
    mta_sts::run(&mut r, dns, opts.ca_file.as_deref()).await;
    mta_sts::tls_rpt(&mut r, dns).await;
    match &opts.geoip {
        None => r.add("geoip", Level::Info, "not checked: ASN, organisation, country and distance between the MX hosts (pass --geoip FILE, a MaxMind .mmdb database)", None),
        Some(path) => geoip::run(&mut r, path),
    }
    r
}

/// An MX host's address that senders on the internet cannot reach is a failure: mail to it
/// goes nowhere (or to a machine on the sender's own network).
fn reachable(r: &mut Report, name: &str, ip: IpAddr) {
    if let Some(kind) = unreachable_kind(ip) {
        r.add(
            format!("mx.unreachable.{ip}"),
            Level::Fail,
            format!(
                "MX host {name} resolves to {ip}, a {kind} address that senders on the internet cannot reach"
            ),
            Some(&format!(
                "publish {name}'s public address (an internal address belongs in split-horizon DNS, not in the public zone)"
            )),
        );
    }
}

/// What kind of address `ip` is when it is not one the internet routes to a host.
pub fn unreachable_kind(ip: IpAddr) -> Option<&'static str> {
    match ip {
        IpAddr::V4(v4) => {
            let [a, b, ..] = v4.octets();
            if v4.is_loopback() {
                Some("loopback")
            } else if v4.is_private() {
                Some("private (RFC 1918)")
            } else if v4.is_link_local() {
                Some("link-local")
            } else if v4.is_unspecified() || a == 0 {
                Some("unspecified (\"this network\")")
            } else if a == 100 && (64..128).contains(&b) {
                Some("shared (carrier-grade NAT, RFC 6598)")
            } else if v4.is_multicast() || v4.is_broadcast() || a >= 240 {
                Some("multicast or reserved")
            } else {
                None
            }
        }
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return unreachable_kind(IpAddr::V4(v4));
            }
            let first = v6.segments()[0];
            if v6.is_loopback() {
                Some("loopback")
            } else if v6.is_unspecified() {
                Some("unspecified")
            } else if first & 0xfe00 == 0xfc00 {
                Some("unique local (private, RFC 4193)")
            } else if first & 0xffc0 == 0xfe80 {
                Some("link-local")
            } else if v6.is_multicast() {
                Some("multicast")
            } else {
                None
            }
        }
    }
}

/// Enough MX hosts, with a clear primary and a backup of higher preference.
fn structure(r: &mut Report) {
    let n = r.mx.len();
    if n < 2 {
        r.add(
            "mx.count",
            Level::Fail,
            "only one MX host: when it is down, senders have nowhere to deliver",
            Some("add mx2 as a second MX host with a higher preference value (e.g. 20)"),
        );
        return;
    }
    r.add("mx.count", Level::Ok, format!("{n} MX hosts"), None);
    let best = r.mx.iter().map(|h| h.preference).min().unwrap_or(0);
    let primaries: Vec<&str> =
        r.mx.iter()
            .filter(|h| h.preference == best)
            .map(|h| h.name.as_str())
            .collect();
    if primaries.len() == n {
        r.add(
            "mx.preference",
            Level::Warn,
            format!("all MX hosts share preference {best}: senders spread mail over them instead of keeping one as the backup"),
            Some("give the backup MX a higher preference value than the primary (e.g. 10 and 20)"),
        );
    } else {
        r.add(
            "mx.preference",
            Level::Ok,
            format!(
                "primary {} (preference {best}), backup with a higher preference value",
                primaries.join(", ")
            ),
            None,
        );
    }
}

/// Primary and backup in different networks and with different providers.
fn diversity(r: &mut Report) {
    let best = r.mx.iter().map(|h| h.preference).min().unwrap_or(0);
    let all_equal = r.mx.iter().all(|h| h.preference == best);
    let (primaries, backups): (Vec<&MxHost>, Vec<&MxHost>) =
        r.mx.iter().partition(|h| h.preference == best);
    let pairs: Vec<(&MxHost, &MxHost)> = if all_equal {
        r.mx.iter()
            .enumerate()
            .flat_map(|(i, a)| r.mx[i + 1..].iter().map(move |b| (a, b)))
            .collect()
    } else {
        primaries
            .iter()
            .flat_map(|p| backups.iter().map(move |b| (*p, *b)))
            .collect()
    };
    if pairs.is_empty() {
        return;
    }
    let mut findings = Vec::new();
    for (p, b) in &pairs {
        for pa in &p.addresses {
            for ba in &b.addresses {
                match closeness(pa.ip, ba.ip) {
                    Closeness::SameNetwork(bits) => findings.push((
                        Level::Fail,
                        format!(
                            "{} ({}) and {} ({}) share {}: one network outage takes both",
                            p.name,
                            pa.ip,
                            b.name,
                            ba.ip,
                            prefix(pa.ip, bits)
                        ),
                    )),
                    Closeness::SameBlock(bits) => findings.push((
                        Level::Warn,
                        format!(
                            "{} ({}) and {} ({}) share {}: probably one provider",
                            p.name,
                            pa.ip,
                            b.name,
                            ba.ip,
                            prefix(pa.ip, bits)
                        ),
                    )),
                    Closeness::Apart => {}
                }
                for pp in &pa.ptr {
                    if ba.ptr.iter().any(|bp| parent(bp) == parent(pp)) && parent(pp).contains('.')
                    {
                        findings.push((Level::Warn, format!("{} and {} have reverse DNS under the same domain ({}): probably one provider", pa.ip, ba.ip, parent(pp))));
                    }
                }
            }
        }
    }
    findings.sort();
    findings.dedup();
    if findings.is_empty() {
        r.add(
            "diversity",
            Level::Ok,
            "primary and backup are in different networks (no shared /16 or IPv6 /32)",
            None,
        );
    }
    for (level, msg) in findings {
        r.add(
            "diversity",
            level,
            msg,
            Some("run the backup MX in another network, with another provider, in another site"),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::unreachable_kind;

    #[test]
    fn addresses_the_internet_cannot_reach() {
        for ip in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.0.5",
            "100.64.0.1",
            "0.0.0.0",
            "::1",
            "fd00::1",
            "fe80::1",
            "::ffff:10.0.0.1",
        ] {
            assert!(unreachable_kind(ip.parse().unwrap()).is_some(), "{ip}");
        }
        for ip in [
            "192.0.2.10",
            "8.8.8.8",
            "100.128.0.1",
            "2001:db8::1",
            "2a00::1",
        ] {
            assert_eq!(unreachable_kind(ip.parse().unwrap()), None, "{ip}");
        }
    }
}
