//! The `[dns]` table: which name servers mx2 asks (MX, addresses, SPF/DKIM/DMARC, DNSBL), how
//! long it waits, and whether DANE's lookups are DNSSEC-validated (from which trust anchor).
//! Parsing and validation only (the trust anchor file is read to check it); the resolver is
//! built elsewhere.

use super::defaults::dns as default;
use super::{ConfigError, Ctx, HumanDuration};
use serde::Deserialize;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;
use toml::Spanned;

#[derive(Debug, Clone)]
pub struct DnsConfig {
    /// Name servers (IP:port); empty: the system's resolv.conf.
    pub nameservers: Vec<SocketAddr>,
    pub timeout: Duration,
    pub dnssec: Dnssec,
}

/// Whether the lookups DANE depends on are DNSSEC-validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Dnssec {
    /// hickory's validator, from the DNSKEY records in `trust_anchor` (None: the IANA root
    /// keys built into hickory). `strict` (`"validate"`): always; otherwise (`"auto"`, the
    /// default) only while the name servers give out DNSSEC data at all (the trust anchor's
    /// own DNSKEY set validates): behind servers that strip it, nothing is secure and DANE
    /// does not apply, rather than every MX lookup failing as bogus.
    Validate {
        trust_anchor: Option<PathBuf>,
        strict: bool,
    },
    /// Nothing is validated: no answer is secure, so DANE never applies.
    Off,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawDns {
    nameservers: Option<Vec<Spanned<String>>>,
    timeout: Option<HumanDuration>,
    dnssec: Option<Spanned<String>>,
    dnssec_trust_anchor: Option<Spanned<String>>,
}

impl Ctx<'_> {
    pub(super) fn dns(&self, raw: RawDns) -> Result<DnsConfig, ConfigError> {
        let mut nameservers = Vec::new();
        for n in raw.nameservers.unwrap_or_default() {
            let text = n.get_ref();
            let addr = text
                .parse::<SocketAddr>()
                .or_else(|_| {
                    text.parse::<IpAddr>()
                        .map(|ip| SocketAddr::new(ip, default::NAMESERVER_PORT))
                })
                .map_err(|_| {
                    self.at(
                        n.span(),
                        &format!("`{text}` is not an IP address or IP:port of a name server"),
                    )
                })?;
            nameservers.push(addr);
        }
        let dnssec = match raw.dnssec.as_ref().map(|d| (d, d.get_ref().as_str())) {
            None | Some((_, "auto" | "validate")) => {
                let strict = raw
                    .dnssec
                    .as_ref()
                    .is_some_and(|d| d.get_ref() == "validate");
                let trust_anchor = match &raw.dnssec_trust_anchor {
                    None => None,
                    Some(f) => {
                        let path = self.resolve(f.get_ref());
                        crate::dns::trust_anchors(Some(&path))
                            .map_err(|e| self.at(f.span(), &e))?;
                        Some(path)
                    }
                };
                Dnssec::Validate {
                    trust_anchor,
                    strict,
                }
            }
            Some((_, "off")) => {
                if let Some(f) = &raw.dnssec_trust_anchor {
                    return Err(self.at(
                        f.span(),
                        "dnssec_trust_anchor is set but dnssec = \"off\": remove one of them",
                    ));
                }
                Dnssec::Off
            }
            Some((d, other)) => {
                return Err(self.at(
                    d.span(),
                    &format!(
                        "unknown dnssec setting `{other}`: use \"auto\", \"validate\" or \"off\""
                    ),
                ));
            }
        };
        Ok(DnsConfig {
            nameservers,
            timeout: raw.timeout.map_or(default::TIMEOUT, |v| v.0),
            dnssec,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::tests::{MINIMAL, parse};

    #[test]
    fn dnssec_defaults_to_the_iana_root_and_takes_a_trust_anchor_file() {
        let c = parse(MINIMAL).unwrap();
        assert_eq!(
            c.dns.dnssec,
            Dnssec::Validate {
                trust_anchor: None,
                strict: false
            }
        );
        let strict = parse(&format!("[dns]\ndnssec = \"validate\"\n{MINIMAL}")).unwrap();
        assert_eq!(
            strict.dns.dnssec,
            Dnssec::Validate {
                trust_anchor: None,
                strict: true
            }
        );
        let off = parse(&format!("[dns]\ndnssec = \"off\"\n{MINIMAL}")).unwrap();
        assert_eq!(off.dns.dnssec, Dnssec::Off);

        let dir = tempfile::tempdir().unwrap();
        let good = dir.path().join("anchor.txt");
        std::fs::write(
            &good,
            ". 3600 IN DNSKEY 257 3 15 l02Woi0iS8Aa25FQkUd9RMzZHJpBoRQwAQEX1SxZJA4=\n",
        )
        .unwrap();
        let with = |path: &std::path::Path, extra: &str| {
            parse(&format!(
                "[dns]\n{extra}dnssec_trust_anchor = \"{}\"\n{MINIMAL}",
                path.display()
            ))
        };
        assert_eq!(
            with(&good, "").unwrap().dns.dnssec,
            Dnssec::Validate {
                trust_anchor: Some(good.clone()),
                strict: false
            }
        );
        let e = with(&good, "dnssec = \"off\"\n").unwrap_err().to_string();
        assert!(
            e.contains("test.toml:3:") && e.contains("remove one of them"),
            "{e}"
        );
        let missing = dir.path().join("missing.txt");
        let e = with(&missing, "").unwrap_err().to_string();
        assert!(
            e.contains("missing.txt: cannot read the trust anchor"),
            "{e}"
        );
        let junk = dir.path().join("junk.txt");
        std::fs::write(&junk, "not a zone file at all\n").unwrap();
        let e = with(&junk, "").unwrap_err().to_string();
        assert!(
            e.contains("junk.txt: not a DNSSEC trust anchor file"),
            "{e}"
        );
        let empty = dir.path().join("empty.txt");
        std::fs::write(&empty, "; nothing\n").unwrap();
        let e = with(&empty, "").unwrap_err().to_string();
        assert!(e.contains("holds no DNSKEY record"), "{e}");
        let e = parse(&format!("[dns]\ndnssec = \"maybe\"\n{MINIMAL}"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("use \"auto\", \"validate\" or \"off\""), "{e}");
    }
}
