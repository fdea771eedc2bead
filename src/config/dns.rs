//! The `[dns]` table: which name servers mx2 asks (MX, addresses, SPF/DKIM/DMARC, DNSBL) and
//! how long it waits. Parsing and validation only; the resolver is built elsewhere.

use super::defaults::dns as default;
use super::{ConfigError, Ctx, HumanDuration};
use serde::Deserialize;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;
use toml::Spanned;

#[derive(Debug, Clone)]
pub struct DnsConfig {
    /// Name servers (IP:port); empty: the system's resolv.conf.
    pub nameservers: Vec<SocketAddr>,
    pub timeout: Duration,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawDns {
    nameservers: Option<Vec<Spanned<String>>>,
    timeout: Option<HumanDuration>,
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
        Ok(DnsConfig {
            nameservers,
            timeout: raw.timeout.map_or(default::TIMEOUT, |v| v.0),
        })
    }
}
