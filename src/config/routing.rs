//! The `[routing]` table: what counts as this server when `route = "mx"` domains are routed
//! by their MX records. Parsing and validation only; the MX routing code uses the result.

use super::defaults::routing as default;
use super::host::is_domain_name;
use super::{ConfigError, Ctx};
use serde::Deserialize;
use std::net::IpAddr;
use toml::Spanned;

#[derive(Debug, Clone)]
pub struct RoutingConfig {
    /// Names under which MX records point at this server (hostname included).
    pub my_names: Vec<String>,
    /// Addresses that are this server besides the listen addresses (NAT, load balancer).
    pub my_addresses: Vec<IpAddr>,
    /// The port MX hosts are contacted on (25; other values are for tests).
    pub mx_port: u16,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawRouting {
    my_names: Option<Vec<Spanned<String>>>,
    my_addresses: Option<Vec<Spanned<String>>>,
    mx_port: Option<Spanned<u16>>,
}

impl Ctx<'_> {
    /// `hostname` is always one of `my_names`, the first.
    pub(super) fn routing(
        &self,
        raw: RawRouting,
        hostname: &str,
    ) -> Result<RoutingConfig, ConfigError> {
        let mut my_names = vec![hostname.to_string()];
        for n in raw.my_names.unwrap_or_default() {
            let name = n.get_ref().trim_end_matches('.').to_ascii_lowercase();
            if !is_domain_name(&name) {
                return Err(self.at(n.span(), "not a valid host name"));
            }
            my_names.push(name);
        }
        let mut my_addresses = Vec::new();
        for a in raw.my_addresses.unwrap_or_default() {
            my_addresses.push(a.get_ref().parse().map_err(|_| {
                self.at(a.span(), &format!("`{}` is not an IP address", a.get_ref()))
            })?);
        }
        let mx_port = match raw.mx_port {
            Some(p) if *p.get_ref() == 0 => return Err(self.at(p.span(), "mx_port must not be 0")),
            Some(p) => p.into_inner(),
            None => default::MX_PORT,
        };
        Ok(RoutingConfig {
            my_names,
            my_addresses,
            mx_port,
        })
    }
}
