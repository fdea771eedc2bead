//! DNS lookups mx2 needs (MX, addresses, TXT, PTR, TLSA), through hickory-resolver with
//! configurable name servers, so tests point it at a local DNS server. Answers are reduced to
//! what routing uses. The lookups DANE depends on (MX, the MX hosts' addresses, TLSA) also come
//! [`Proven`]: validated by hickory's own DNSSEC validator from the configured trust anchor
//! (the IANA root keys unless `[dns] dnssec_trust_anchor` names others), so "secure" never
//! rests on a flag a name server set.

use crate::config::Dnssec;
use crate::delivery::dane::Tlsa;
use hickory_resolver::config::{ConnectionConfig, NameServerConfig, ResolverConfig, ResolverOpts};
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use hickory_resolver::net::{DnsError, NetError};
use hickory_resolver::proto::dnssec::{Proof, TrustAnchors};
use hickory_resolver::proto::rr::{RData, Record, RecordType};
use hickory_resolver::{Resolver, TokioResolver};
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
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

/// An answer, and whether DNSSEC proved every record in it (RFC 4033 "secure"). Without
/// validation (`[dns] dnssec = "off"`) nothing is secure.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Proven<T> {
    pub answer: T,
    pub secure: bool,
}

pub struct Dns {
    resolver: TokioResolver,
    /// The same servers, nothing cached: for answers that must be current the moment a
    /// record is published (a domain's ownership challenge).
    fresh: TokioResolver,
    /// The same servers through hickory's DNSSEC validator (None: `dnssec = "off"`). A bogus
    /// answer is an error here, never an insecure one.
    validating: Option<Validating>,
}

/// The validating resolver and, under `dnssec = "auto"`, whether the name servers give out
/// DNSSEC data at all: the trust anchor's own DNSKEY set must validate. Servers that strip
/// signatures (many small resolvers, test DNS servers) would make every validated answer
/// bogus; then nothing is secure instead, and DANE does not apply (as with Postfix behind a
/// non-validating resolver). Asked again every [`RECHECK`].
struct Validating {
    resolver: TokioResolver,
    strict: bool,
    /// The owner name of the trust anchor's DNSKEY records (the root unless a file says).
    apex: String,
    /// When last asked, and the answer.
    known: std::sync::Mutex<Option<(std::time::Instant, bool)>>,
}

/// How long an answer to "do the name servers give out DNSSEC data?" is kept.
const RECHECK: Duration = Duration::from_secs(300);

impl Validating {
    /// The resolver DANE's lookups go through: the validating one, unless (`auto`) the name
    /// servers give out no DNSSEC data.
    async fn resolver<'a>(&'a self, plain: &'a TokioResolver) -> &'a TokioResolver {
        if self.strict || self.available().await {
            &self.resolver
        } else {
            plain
        }
    }

    async fn available(&self) -> bool {
        let now = std::time::Instant::now();
        let last = *self.known.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((at, ok)) = last
            && now.duration_since(at) < RECHECK
        {
            return ok;
        }
        let ok = match self
            .resolver
            .lookup(self.apex.as_str(), RecordType::DNSKEY)
            .await
        {
            Ok(lookup) => all_secure(lookup.answers(), RecordType::DNSKEY),
            Err(_) => false,
        };
        if last.is_none_or(|(_, was)| was != ok) {
            if ok {
                tracing::info!(zone = %self.apex, "the name servers give out DNSSEC data: DANE's lookups are validated");
            } else {
                tracing::warn!(zone = %self.apex, "the name servers give out no DNSSEC data that validates from the trust anchor: nothing is DNSSEC-secure, so DANE does not apply (set [dns] nameservers to a DNSSEC-aware resolver, or dnssec = \"validate\" to hold mail instead)");
            }
        }
        *self.known.lock().unwrap_or_else(|p| p.into_inner()) = Some((now, ok));
        ok
    }
}

/// The owner name of the first record in a trust anchor file (`.` without a file).
fn anchor_apex(path: Option<&std::path::Path>) -> String {
    path.and_then(|p| std::fs::read_to_string(p).ok())
        .and_then(|text| {
            text.lines()
                .map(str::trim)
                .find(|l| !l.is_empty() && !l.starts_with(';'))
                .and_then(|l| l.split_whitespace().next())
                .map(str::to_string)
        })
        .unwrap_or_else(|| ".".to_string())
}

/// The trust anchors a [`Dnssec`] setting names: the file's DNSKEY records, or hickory's
/// built-in IANA root keys. Err: the file cannot be read or holds no DNSKEY record.
pub fn trust_anchors(path: Option<&std::path::Path>) -> Result<TrustAnchors, String> {
    let Some(path) = path else {
        return Ok(TrustAnchors::default());
    };
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("{}: cannot read the trust anchor: {e}", path.display()))?;
    let anchors: TrustAnchors = text.parse().map_err(|e| {
        format!(
            "{}: not a DNSSEC trust anchor file (DNSKEY records in zone-file syntax, e.g. \
             `. IN DNSKEY 257 3 8 AwEAAa...`): {e}",
            path.display()
        )
    })?;
    if text.lines().all(|l| {
        let l = l.trim();
        l.is_empty() || l.starts_with(';')
    }) {
        return Err(format!(
            "{}: the trust anchor file holds no DNSKEY record",
            path.display()
        ));
    }
    Ok(anchors)
}

impl Dns {
    /// Uses `nameservers` (IP:port, UDP then TCP) when given, else the system's resolv.conf;
    /// `dnssec` says whether (and from which trust anchor) DANE's lookups are validated.
    pub fn new(
        nameservers: &[SocketAddr],
        timeout: Duration,
        dnssec: &Dnssec,
    ) -> Result<Self, String> {
        let validating = match dnssec {
            Dnssec::Off => None,
            Dnssec::Validate {
                trust_anchor,
                strict,
            } => {
                let anchors = Arc::new(trust_anchors(trust_anchor.as_deref())?);
                Some(Validating {
                    resolver: Self::resolver_for(nameservers, timeout, true, Some(anchors))?,
                    strict: *strict,
                    apex: anchor_apex(trust_anchor.as_deref()),
                    known: std::sync::Mutex::new(None),
                })
            }
        };
        Ok(Self {
            resolver: Self::resolver_for(nameservers, timeout, true, None)?,
            fresh: Self::resolver_for(nameservers, timeout, false, None)?,
            validating,
        })
    }

    /// A resolver for `nameservers`; without `cache`, every answer is asked for anew; with
    /// `anchors`, every answer is DNSSEC-validated from them.
    fn resolver_for(
        nameservers: &[SocketAddr],
        timeout: Duration,
        cache: bool,
        anchors: Option<Arc<TrustAnchors>>,
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
        if anchors.is_some() {
            opts.validate = true;
            // The DO bit travels in EDNS; signed answers need more than 512 bytes.
            opts.edns0 = true;
        }
        *builder.options_mut() = opts;
        if let Some(anchors) = anchors {
            builder = builder.with_trust_anchor(anchors);
        }
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

    /// The resolver for the lookups DANE depends on (see [`Validating`]).
    async fn proving(&self) -> &TokioResolver {
        match &self.validating {
            Some(v) => v.resolver(&self.resolver).await,
            None => &self.resolver,
        }
    }

    pub async fn mx(&self, domain: &str) -> Result<MxAnswer, DnsFailure> {
        Self::mx_from(&self.resolver, domain)
            .await
            .map(|p| p.answer)
    }

    /// As [`Dns::mx`], validated: `secure` when DNSSEC proved the MX records (an implicit
    /// MX, null MX or missing domain is never secure: DANE then does not apply).
    pub async fn mx_proven(&self, domain: &str) -> Result<Proven<MxAnswer>, DnsFailure> {
        Self::mx_from(self.proving().await, domain).await
    }

    async fn mx_from(
        resolver: &TokioResolver,
        domain: &str,
    ) -> Result<Proven<MxAnswer>, DnsFailure> {
        let insecure = |answer| Proven {
            answer,
            secure: false,
        };
        match resolver.mx_lookup(Self::fqdn(domain)).await {
            Ok(lookup) => {
                let secure = all_secure(lookup.answers(), RecordType::MX);
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
                    return Ok(insecure(MxAnswer::NullMx));
                }
                records.retain(|(_, h)| !h.is_empty());
                if records.is_empty() {
                    Ok(insecure(MxAnswer::NoMx))
                } else {
                    Ok(Proven {
                        answer: MxAnswer::Records(records),
                        secure,
                    })
                }
            }
            Err(e) if e.is_nx_domain() => Ok(insecure(MxAnswer::NoDomain)),
            Err(e) if e.is_no_records_found() => Ok(insecure(MxAnswer::NoMx)),
            Err(e) => Err(DnsFailure {
                name: domain.to_string(),
                reason: reason(&e),
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
                reason: reason(&e),
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
                reason: reason(&e),
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
                reason: reason(&e),
            }),
        }
    }

    /// A and AAAA of a host (an IP literal is returned as is). Empty: the name has no address.
    pub async fn addresses(&self, host: &str) -> Result<Vec<IpAddr>, DnsFailure> {
        Self::addresses_from(&self.resolver, host)
            .await
            .map(|p| p.answer)
    }

    /// As [`Dns::addresses`], validated: `secure` when DNSSEC proved every address record
    /// (an IP literal is not secure: it names no host a TLSA record could belong to).
    pub async fn addresses_proven(&self, host: &str) -> Result<Proven<Vec<IpAddr>>, DnsFailure> {
        Self::addresses_from(self.proving().await, host).await
    }

    async fn addresses_from(
        resolver: &TokioResolver,
        host: &str,
    ) -> Result<Proven<Vec<IpAddr>>, DnsFailure> {
        if let Ok(ip) = host.parse::<IpAddr>() {
            return Ok(Proven {
                answer: vec![ip],
                secure: false,
            });
        }
        let name = Self::fqdn(host);
        let (v4, v6) = tokio::join!(
            resolver.ipv4_lookup(name.clone()),
            resolver.ipv6_lookup(name)
        );
        let mut out = Vec::new();
        let mut failure = None;
        let mut secure = true;
        for (result, kind) in [(v4, RecordType::A), (v6, RecordType::AAAA)] {
            match result {
                Ok(lookup) => {
                    secure &= all_secure(lookup.answers(), kind);
                    for r in lookup.answers() {
                        match &r.data {
                            RData::A(a) => out.push(IpAddr::V4(a.0)),
                            RData::AAAA(a) => out.push(IpAddr::V6(a.0)),
                            _ => {}
                        }
                    }
                }
                Err(e) if e.is_nx_domain() || e.is_no_records_found() => {}
                Err(e) => failure = Some(reason(&e)),
            }
        }
        match (out.is_empty(), failure) {
            (true, Some(reason)) => Err(DnsFailure {
                name: host.to_string(),
                reason,
            }),
            (empty, failure) => Ok(Proven {
                answer: out,
                secure: secure && !empty && failure.is_none(),
            }),
        }
    }

    /// The TLSA records at `name` (e.g. `_25._tcp.mx.example.net`), validated. No records
    /// (NODATA, NXDOMAIN) is an empty answer; a bogus answer is a failure (the host is then
    /// not to be used, RFC 7672 §2.2). Records of a malformed kind are kept for the matcher
    /// to judge unusable.
    pub async fn tlsa(&self, name: &str) -> Result<Proven<Vec<Tlsa>>, DnsFailure> {
        match self.proving().await.tlsa_lookup(Self::fqdn(name)).await {
            Ok(lookup) => Ok(Proven {
                secure: all_secure(lookup.answers(), RecordType::TLSA),
                answer: lookup
                    .answers()
                    .iter()
                    .filter_map(|r| match &r.data {
                        RData::TLSA(t) => Some(Tlsa {
                            usage: t.cert_usage.into(),
                            selector: t.selector.into(),
                            matching: t.matching.into(),
                            data: t.cert_data.clone(),
                        }),
                        _ => None,
                    })
                    .collect(),
            }),
            Err(e) if e.is_nx_domain() || e.is_no_records_found() => Ok(Proven {
                answer: Vec::new(),
                secure: false,
            }),
            Err(e) => Err(DnsFailure {
                name: name.to_string(),
                reason: reason(&e),
            }),
        }
    }
}

/// Whether the answer holds records of `kind` and DNSSEC proved all of them and every CNAME
/// that led there.
fn all_secure(records: &[Record], kind: RecordType) -> bool {
    records.iter().any(|r| r.record_type() == kind)
        && records
            .iter()
            .filter(|r| r.record_type() == kind || r.record_type() == RecordType::CNAME)
            .all(|r| r.proof == Proof::Secure)
}

/// A failed lookup in words; a bogus answer says what it may mean.
fn reason(e: &NetError) -> String {
    match e {
        NetError::Dns(DnsError::DnssecBogus) => "DNSSEC validation failed: the answer is bogus \
            (forged, or the zone's signatures are broken; if a resolver on the path strips \
            DNSSEC records, point [dns] nameservers at one that does not)"
            .to_string(),
        other => other.to_string(),
    }
}
