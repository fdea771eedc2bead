//! Where a domain's mail goes: its static primary hosts, or its MX records under the RFC 5321
//! §5.1 rule (only hosts strictly more preferred than mx2 itself; never mx2 itself), each with
//! the TLS policy chosen for it ([`policy`](super::policy)). The selection is pure;
//! [`resolve`] does the lookups (DNSSEC-validated where the domain's mode may use DANE).

use super::dane;
use super::policy::{self, HostFacts, HostPolicy};
use crate::config::{HostPort, TlsMode};
use crate::dns::{Dns, MxAnswer};
use crate::smtp::Reply;
use std::collections::HashSet;
use std::net::{IpAddr, SocketAddr};
use tracing::{debug, warn};

/// One address to connect to, with the host name it came from (for logs and TLS) and the
/// TLS policy a connection to it follows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub name: String,
    pub addr: SocketAddr,
    pub policy: HostPolicy,
}

impl Target {
    /// A target under the domain's configured TLS settings.
    pub fn configured(name: &str, addr: SocketAddr) -> Self {
        Target {
            name: name.to_string(),
            addr,
            policy: HostPolicy::configured("configured"),
        }
    }
}

impl std::fmt::Display for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.name == self.addr.ip().to_string() {
            write!(f, "{}", self.addr)
        } else {
            write!(f, "{} ({})", self.name, self.addr)
        }
    }
}

/// How a domain is routed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RouteKind {
    /// The configured primary hosts, in order.
    Static(Vec<HostPort>),
    /// The domain's MX records. `backed_up` is true for domains mx2 backs up (a missing
    /// domain is then a configuration problem to wait out, not a reason to bounce).
    Mx { domain: String, backed_up: bool },
}

/// The names and addresses that are mx2 itself.
#[derive(Debug, Clone, Default)]
pub struct Identity {
    pub names: HashSet<String>,
    /// Socket addresses mx2 accepts SMTP on; an unspecified address (0.0.0.0, ::) matches any
    /// loopback address on its port.
    pub addrs: Vec<SocketAddr>,
    /// Extra addresses that are mx2 (NAT, load balancers), on any port.
    pub extra: HashSet<IpAddr>,
}

impl Identity {
    /// This server as its configuration describes it: `[routing] my_names` (the hostname
    /// first), the SMTP listen addresses and `my_addresses`.
    pub fn of(config: &crate::config::Config) -> Self {
        Identity {
            names: config.routing.my_names.iter().cloned().collect(),
            addrs: config.smtp.listen.clone(),
            extra: config.routing.my_addresses.iter().copied().collect(),
        }
    }

    /// Whether an MX host (reached on `port`) is this server.
    pub fn is_me(&self, host: &MxHost, port: u16) -> bool {
        if self.names.contains(&host.name) {
            return true;
        }
        host.addrs.iter().any(|ip| {
            self.extra.contains(ip)
                || self.addrs.iter().any(|l| {
                    l.port() == port
                        && (l.ip() == *ip || (l.ip().is_unspecified() && ip.is_loopback()))
                })
        })
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MxHost {
    pub preference: u16,
    pub name: String,
    pub addrs: Vec<IpAddr>,
    /// DNSSEC proved the host's addresses.
    pub secure: bool,
}

/// Why there is nowhere to deliver now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NoRoute {
    /// Keep the mail and try again later (DNS trouble, misconfiguration).
    Hold(String),
    /// The destination can never accept this mail.
    Fail(Reply),
}

/// Applies the §5.1 rule: drops mx2 and every host not strictly more preferred than mx2,
/// orders by preference and shuffles hosts of equal preference. `pick(n)` returns a number
/// below n (randomness is injected for tests).
pub fn select(
    mut hosts: Vec<MxHost>,
    me: &Identity,
    port: u16,
    pick: &mut dyn FnMut(usize) -> usize,
) -> Result<Vec<MxHost>, NoRoute> {
    if let Some(mine) = hosts
        .iter()
        .filter(|h| me.is_me(h, port))
        .map(|h| h.preference)
        .min()
    {
        hosts.retain(|h| h.preference < mine);
        if hosts.is_empty() {
            return Err(NoRoute::Hold(format!(
                "misconfigured: this server is the best MX (preference {mine}); holding the mail rather than delivering to itself"
            )));
        }
    }
    hosts.sort_by_key(|h| h.preference);
    let mut start = 0;
    while start < hosts.len() {
        let end = start
            + hosts[start..]
                .iter()
                .take_while(|h| h.preference == hosts[start].preference)
                .count();
        for i in (start + 1..end).rev() {
            let j = start + pick(i - start + 1);
            hosts.swap(i, j);
        }
        start = end;
    }
    Ok(hosts)
}

/// Most addresses tried per delivery attempt.
const MAX_TARGETS: usize = 10;

/// Looks up where `route` delivers now; `mode` is the route's TLS mode (`dane` and `auto`
/// look up, validated, what DANE needs and choose each host's policy).
pub async fn resolve(
    route: &RouteKind,
    mode: TlsMode,
    dns: &Dns,
    me: &Identity,
    mx_port: u16,
) -> Result<Vec<Target>, NoRoute> {
    let hold = |e: crate::dns::DnsFailure| NoRoute::Hold(e.to_string());
    let validated = matches!(mode, TlsMode::Dane | TlsMode::Auto);
    // A host whose addresses cannot be looked up (or that its policy rules out) only drops
    // out of the list (RFC 5321 §5.1, RFC 7672 §2.2); the route is held when no host is left,
    // naming the first failure.
    let mut failed: Option<String> = None;
    let mut lookup = async |name: &str| {
        let found = if validated {
            dns.addresses_proven(name).await
        } else {
            dns.addresses(name).await.map(|answer| crate::dns::Proven {
                answer,
                secure: false,
            })
        };
        match found {
            Ok(a) => a,
            Err(e) => {
                warn!(host = name, error = %e, "cannot look up a mail host's addresses; trying the others");
                failed.get_or_insert_with(|| e.to_string());
                crate::dns::Proven {
                    answer: Vec::new(),
                    secure: false,
                }
            }
        }
    };
    let mut targets = Vec::new();
    match route {
        RouteKind::Static(hosts) => {
            for h in hosts {
                for ip in lookup(&h.host).await.answer {
                    targets.push(Target::configured(&h.host, SocketAddr::new(ip, h.port)));
                }
            }
            if targets.is_empty() {
                return Err(NoRoute::Hold(failed.unwrap_or_else(|| {
                    "no primary host name resolves to an address".into()
                })));
            }
        }
        RouteKind::Mx { domain, backed_up } => {
            let answer = if validated {
                dns.mx_proven(domain).await.map_err(hold)?
            } else {
                crate::dns::Proven {
                    answer: dns.mx(domain).await.map_err(hold)?,
                    secure: false,
                }
            };
            let mx_secure = answer.secure;
            let records = match answer.answer {
                MxAnswer::Records(r) => r,
                MxAnswer::NoMx => vec![(0, domain.clone())],
                MxAnswer::NullMx => {
                    return Err(NoRoute::Fail(Reply::new(
                        556,
                        "5.1.10",
                        format!("{domain} accepts no mail (null MX, RFC 7505)"),
                    )));
                }
                MxAnswer::NoDomain if *backed_up => {
                    return Err(NoRoute::Hold(format!(
                        "{domain} does not exist in DNS (NXDOMAIN)"
                    )));
                }
                MxAnswer::NoDomain => {
                    return Err(NoRoute::Fail(Reply::new(
                        550,
                        "5.1.2",
                        format!("{domain} does not exist (NXDOMAIN)"),
                    )));
                }
            };
            let mut hosts = Vec::new();
            for (preference, name) in records {
                let addrs = lookup(&name).await;
                hosts.push(MxHost {
                    preference,
                    name,
                    addrs: addrs.answer,
                    secure: addrs.secure,
                });
            }
            let hosts = select(hosts, me, mx_port, &mut |n| fastrand::usize(..n))?;
            for h in hosts {
                if h.addrs.is_empty() {
                    continue;
                }
                let tlsa = if HostFacts::wants_tlsa(mode, mx_secure, h.secure) {
                    Some(dns.tlsa(&dane::owner(&h.name, mx_port)).await)
                } else {
                    None
                };
                let facts = HostFacts {
                    domain,
                    host: &h.name,
                    port: mx_port,
                    mx_secure,
                    addresses_secure: h.secure,
                    tlsa: tlsa.as_ref(),
                };
                let chosen = match policy::choose(mode, &facts) {
                    Ok(p) => p,
                    Err(reason) => {
                        warn!(host = %h.name, reason, "not delivering to this MX host");
                        failed.get_or_insert(reason);
                        continue;
                    }
                };
                debug!(host = %h.name, policy = %chosen.reason, "outbound TLS policy");
                for ip in &h.addrs {
                    targets.push(Target {
                        name: h.name.clone(),
                        addr: SocketAddr::new(*ip, mx_port),
                        policy: chosen.clone(),
                    });
                }
            }
            if targets.is_empty() {
                return Err(NoRoute::Hold(failed.unwrap_or_else(|| {
                    format!("no MX host of {domain} has an address")
                })));
            }
        }
    }
    targets.truncate(MAX_TARGETS);
    Ok(targets)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn host(pref: u16, name: &str, ip: &str) -> MxHost {
        MxHost {
            preference: pref,
            name: name.into(),
            addrs: vec![ip.parse().unwrap()],
            secure: false,
        }
    }

    fn me() -> Identity {
        Identity {
            names: ["mx2.example.net".to_string()].into(),
            addrs: vec!["0.0.0.0:25".parse().unwrap()],
            extra: ["198.51.100.7".parse().unwrap()].into(),
        }
    }

    fn names(r: Result<Vec<MxHost>, NoRoute>) -> Vec<String> {
        r.unwrap().into_iter().map(|h| h.name).collect()
    }

    #[test]
    fn only_hosts_more_preferred_than_me() {
        let hosts = vec![
            host(10, "primary", "192.0.2.1"),
            host(20, "mx2.example.net", "192.0.2.2"),
            host(30, "third", "192.0.2.3"),
        ];
        assert_eq!(names(select(hosts, &me(), 25, &mut |_| 0)), vec!["primary"]);
    }

    #[test]
    fn recognises_me_by_address_too() {
        let hosts = vec![
            host(10, "primary", "192.0.2.1"),
            host(20, "alias", "198.51.100.7"),
            host(20, "lo", "127.0.0.1"),
        ];
        assert_eq!(names(select(hosts, &me(), 25, &mut |_| 0)), vec!["primary"]);
        // On another port the loopback address is not this server.
        let hosts = vec![host(10, "lo", "127.0.0.1")];
        assert_eq!(names(select(hosts, &me(), 2526, &mut |_| 0)), vec!["lo"]);
    }

    #[test]
    fn best_or_tied_mx_holds() {
        let hosts = vec![
            host(10, "mx2.example.net", "192.0.2.2"),
            host(10, "peer", "192.0.2.1"),
        ];
        assert!(
            matches!(select(hosts, &me(), 25, &mut |_| 0), Err(NoRoute::Hold(m)) if m.contains("best MX"))
        );
    }

    #[test]
    fn equal_preferences_are_shuffled_within_their_group() {
        let hosts = || {
            vec![
                host(20, "b1", "192.0.2.4"),
                host(10, "a1", "192.0.2.1"),
                host(10, "a2", "192.0.2.2"),
                host(20, "b2", "192.0.2.5"),
            ]
        };
        let first = names(select(hosts(), &Identity::default(), 25, &mut |_| 0));
        let last = names(select(hosts(), &Identity::default(), 25, &mut |n| n - 1));
        assert_eq!(
            &first[2..],
            &["b2", "b1"][..]
                .iter()
                .map(|s| s.to_string())
                .collect::<Vec<_>>()[..]
        );
        assert_ne!(
            first[..2],
            last[..2],
            "order within the group depends on the draw"
        );
        for order in [first, last] {
            assert!(
                order[..2].contains(&"a1".to_string()) && order[..2].contains(&"a2".to_string())
            );
        }
    }
}
