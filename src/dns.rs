//! DNS lookups mx2 needs (MX and addresses), through hickory-resolver with configurable name
//! servers, so tests point it at a local DNS server. Answers are reduced to what routing uses.

use hickory_resolver::config::{ConnectionConfig, NameServerConfig, ResolverConfig, ResolverOpts};
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use hickory_resolver::proto::rr::RData;
use hickory_resolver::{Resolver, TokioResolver};
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

/// A domain's MX answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MxAnswer {
    /// MX records: (preference, exchange host without trailing dot, lower case).
    Records(Vec<(u16, String)>),
    /// The domain exists but has no MX records: its own A/AAAA are the implicit MX.
    NoMx,
    /// RFC 7505: the domain accepts no mail.
    NullMx,
    /// NXDOMAIN.
    NoDomain,
}

/// A lookup that could not be answered (timeout, SERVFAIL, no server): try again later.
#[derive(Debug, Clone, thiserror::Error)]
#[error("DNS lookup for {name} failed: {reason}")]
pub struct DnsFailure {
    pub name: String,
    pub reason: String,
}

pub struct Dns {
    resolver: TokioResolver,
    /// The same servers, nothing cached: for answers that must be current the moment a
    /// record is published (a domain's ownership challenge).
    fresh: TokioResolver,
}

impl Dns {
    /// Uses `nameservers` (IP:port, UDP then TCP) when given, else the system's resolv.conf.
    pub fn new(nameservers: &[SocketAddr], timeout: Duration) -> Result<Self, String> {
        Ok(Self {
            resolver: Self::resolver_for(nameservers, timeout, true)?,
            fresh: Self::resolver_for(nameservers, timeout, false)?,
        })
    }

    /// A resolver for `nameservers`; without `cache`, every answer is asked for anew.
    fn resolver_for(
        nameservers: &[SocketAddr],
        timeout: Duration,
        cache: bool,
    ) -> Result<TokioResolver, String> {
        let mut builder = if nameservers.is_empty() {
            Resolver::builder_tokio()
                .map_err(|e| format!("cannot read the system DNS configuration: {e}"))?
        } else {
            let servers = nameservers
                .iter()
                .map(|a| {
                    let mut udp = ConnectionConfig::udp();
                    udp.port = a.port();
                    let mut tcp = ConnectionConfig::tcp();
                    tcp.port = a.port();
                    NameServerConfig::new(a.ip(), true, vec![udp, tcp])
                })
                .collect();
            Resolver::builder_with_config(
                ResolverConfig::from_name_servers(servers),
                TokioRuntimeProvider::default(),
            )
        };
        let mut opts = ResolverOpts::default();
        opts.timeout = timeout;
        opts.attempts = 2;
        opts.ndots = 0;
        if !cache {
            opts.cache_size = 0;
            opts.positive_max_ttl = Some(Duration::ZERO);
            opts.negative_max_ttl = Some(Duration::ZERO);
        }
        *builder.options_mut() = opts;
        builder
            .build()
            .map_err(|e| format!("cannot start the DNS resolver: {e}"))
    }

    /// The underlying resolver (for libraries that do their own lookups, such as SPF).
    pub fn resolver(&self) -> TokioResolver {
        self.resolver.clone()
    }

    fn fqdn(name: &str) -> String {
        if name.ends_with('.') {
            name.to_string()
        } else {
            format!("{name}.")
        }
    }

    pub async fn mx(&self, domain: &str) -> Result<MxAnswer, DnsFailure> {
        match self.resolver.mx_lookup(Self::fqdn(domain)).await {
            Ok(lookup) => {
                let mut records = Vec::new();
                for r in lookup.answers() {
                    if let RData::MX(mx) = &r.data {
                        let host = mx
                            .exchange
                            .to_ascii()
                            .trim_end_matches('.')
                            .to_ascii_lowercase();
                        records.push((mx.preference, host));
                    }
                }
                if records.len() == 1 && records[0].1.is_empty() {
                    return Ok(MxAnswer::NullMx);
                }
                records.retain(|(_, h)| !h.is_empty());
                if records.is_empty() {
                    Ok(MxAnswer::NoMx)
                } else {
                    Ok(MxAnswer::Records(records))
                }
            }
            Err(e) if e.is_nx_domain() => Ok(MxAnswer::NoDomain),
            Err(e) if e.is_no_records_found() => Ok(MxAnswer::NoMx),
            Err(e) => Err(DnsFailure {
                name: domain.to_string(),
                reason: e.to_string(),
            }),
        }
    }

    /// The target of a CNAME at `name`, if there is one.
    pub async fn cname(&self, name: &str) -> Result<Option<String>, DnsFailure> {
        match self
            .resolver
            .lookup(
                Self::fqdn(name),
                hickory_resolver::proto::rr::RecordType::CNAME,
            )
            .await
        {
            Ok(l) => Ok(l.answers().iter().find_map(|r| match &r.data {
                RData::CNAME(c) => Some(c.0.to_ascii().trim_end_matches('.').to_ascii_lowercase()),
                _ => None,
            })),
            Err(e) if e.is_nx_domain() || e.is_no_records_found() => Ok(None),
            Err(e) => Err(DnsFailure {
                name: name.to_string(),
                reason: e.to_string(),
            }),
        }
    }

    /// The PTR names of an address.
    pub async fn ptr(&self, ip: IpAddr) -> Result<Vec<String>, DnsFailure> {
        match self.resolver.reverse_lookup(ip).await {
            Ok(l) => Ok(l
                .answers()
                .iter()
                .filter_map(|r| match &r.data {
                    RData::PTR(p) => {
                        Some(p.0.to_ascii().trim_end_matches('.').to_ascii_lowercase())
                    }
                    _ => None,
                })
                .collect()),
            Err(e) if e.is_nx_domain() || e.is_no_records_found() => Ok(Vec::new()),
            Err(e) => Err(DnsFailure {
                name: ip.to_string(),
                reason: e.to_string(),
            }),
        }
    }

    /// TXT strings at `name` (each record's strings joined).
    pub async fn txt(&self, name: &str) -> Result<Vec<String>, DnsFailure> {
        Self::txt_from(&self.resolver, name).await
    }

    /// As [`Dns::txt`], asked of the servers now whatever was cached (a record just
    /// published, or one that was missing a moment ago, is seen at once).
    pub async fn txt_now(&self, name: &str) -> Result<Vec<String>, DnsFailure> {
        Self::txt_from(&self.fresh, name).await
    }

    async fn txt_from(resolver: &TokioResolver, name: &str) -> Result<Vec<String>, DnsFailure> {
        match resolver.txt_lookup(Self::fqdn(name)).await {
            Ok(l) => Ok(l
                .answers()
                .iter()
                .filter_map(|r| match &r.data {
                    RData::TXT(t) => Some(
                        t.txt_data
                            .iter()
                            .map(|d| String::from_utf8_lossy(d).into_owned())
                            .collect::<String>(),
                    ),
                    _ => None,
                })
                .collect()),
            Err(e) if e.is_nx_domain() || e.is_no_records_found() => Ok(Vec::new()),
            Err(e) => Err(DnsFailure {
                name: name.to_string(),
                reason: e.to_string(),
            }),
        }
    }

    /// A and AAAA of a host (an IP literal is returned as is). Empty: the name has no address.
    pub async fn addresses(&self, host: &str) -> Result<Vec<IpAddr>, DnsFailure> {
        if let Ok(ip) = host.parse::<IpAddr>() {
            return Ok(vec![ip]);
        }
        let name = Self::fqdn(host);
        let (v4, v6) = tokio::join!(
            self.resolver.ipv4_lookup(name.clone()),
            self.resolver.ipv6_lookup(name)
        );
        let mut out = Vec::new();
        let mut failure = None;
        for result in [v4, v6] {
            match result {
                Ok(lookup) => {
                    for r in lookup.answers() {
                        match &r.data {
                            RData::A(a) => out.push(IpAddr::V4(a.0)),
                            RData::AAAA(a) => out.push(IpAddr::V6(a.0)),
                            _ => {}
                        }
                    }
                }
                Err(e) if e.is_nx_domain() || e.is_no_records_found() => {}
                Err(e) => failure = Some(e.to_string()),
            }
        }
        match (out.is_empty(), failure) {
            (true, Some(reason)) => Err(DnsFailure {
                name: host.to_string(),
                reason,
            }),
            _ => Ok(out),
        }
    }
}
