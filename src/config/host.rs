//! Host names in the configuration: the top-level `hostname` key, the LDH name check every
//! section uses, and [`HostPort`] (a primary's `host:port`). Pure parsing; the only I/O is
//! reading the system's host name when `hostname` is not set.

use super::defaults::{domain::PRIMARY_PORT, top::FALLBACK_HOSTNAME};
use super::{ConfigError, Ctx};
use std::fmt;
use toml::Spanned;

/// A primary host: a name or an IP address, and a port.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct HostPort {
    pub host: String,
    pub port: u16,
}

impl fmt::Display for HostPort {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.host.contains(':') {
            write!(f, "[{}]:{}", self.host, self.port)
        } else {
            write!(f, "{}:{}", self.host, self.port)
        }
    }
}

impl HostPort {
    /// Parses `host:port`, `[v6]:port`, or a bare host (port 25).
    pub fn parse(text: &str) -> Result<Self, String> {
        let t = text.trim();
        let bad = |why: &str| {
            format!(
                "invalid primary `{text}`: {why} (expected host:port, e.g. \"mail.example.com:25\" or \"[2001:db8::1]:25\")"
            )
        };
        if let Some(rest) = t.strip_prefix('[') {
            let (host, after) = rest.split_once(']').ok_or_else(|| bad("missing `]`"))?;
            host.parse::<std::net::Ipv6Addr>()
                .map_err(|_| bad("not an IPv6 address inside [ ]"))?;
            let port = match after.strip_prefix(':') {
                Some(p) => p.parse().map_err(|_| bad("bad port"))?,
                None if after.is_empty() => PRIMARY_PORT,
                None => return Err(bad("junk after `]`")),
            };
            return Ok(Self {
                host: host.to_string(),
                port,
            });
        }
        let (host, port) = match t.rsplit_once(':') {
            Some((h, p)) => (h, p.parse::<u16>().map_err(|_| bad("bad port"))?),
            None => (t, PRIMARY_PORT),
        };
        if port == 0 {
            return Err(bad("port 0"));
        }
        if host.parse::<std::net::IpAddr>().is_err() && !is_domain_name(host) {
            return Err(bad("not a host name or IP address"));
        }
        Ok(Self {
            host: host.to_ascii_lowercase(),
            port,
        })
    }
}

/// True for an LDH domain name (letters, digits, hyphens, dots), 1–253 characters.
pub fn is_domain_name(name: &str) -> bool {
    let name = name.strip_suffix('.').unwrap_or(name);
    !name.is_empty()
        && name.len() <= 253
        && name.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        })
}

impl Ctx<'_> {
    /// The `hostname` key: lower case, no trailing dot; the system's name when not set.
    pub(super) fn hostname(&self, raw: Option<Spanned<String>>) -> Result<String, ConfigError> {
        Ok(match raw {
            Some(h) => {
                let name = h
                    .get_ref()
                    .trim()
                    .trim_end_matches('.')
                    .to_ascii_lowercase();
                if !is_domain_name(&name) {
                    return Err(self.at(h.span(), "not a valid host name; use the fully qualified name senders see in the MX record"));
                }
                name
            }
            None => system_hostname(),
        })
    }
}

fn system_hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|s| s.trim().to_ascii_lowercase())
        .filter(|s| is_domain_name(s))
        .unwrap_or_else(|| FALLBACK_HOSTNAME.into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_port_forms() {
        assert_eq!(HostPort::parse("[::1]:26").unwrap().port, 26);
        assert_eq!(HostPort::parse("mail.example.com").unwrap().port, 25);
        assert!(HostPort::parse("bad host:25").is_err());
        assert!(HostPort::parse("h:0").is_err());
    }
}
