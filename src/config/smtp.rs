//! The `[smtp]` table: where mx2 listens and the limits, timeouts and client checks of
//! inbound sessions. Parsing and validation only; the listener and `Session` use the result
//! and this file never touches a socket.

use super::defaults::smtp as default;
use super::host::is_domain_name;
use super::{Cidr, ConfigError, Ctx, HumanDuration, Size};
use serde::Deserialize;
use std::net::SocketAddr;
use std::time::Duration;
use toml::Spanned;

#[derive(Debug, Clone)]
pub struct SmtpConfig {
    pub listen: Vec<SocketAddr>,
    pub max_message_size: u64,
    pub max_recipients: usize,
    pub max_connections: usize,
    pub max_connections_per_ip: usize,
    pub max_line_length: usize,
    /// Clients allowed to use ETRN (None: any).
    pub etrn_clients: Option<Vec<Cidr>>,
    pub command_timeout: Duration,
    pub data_timeout: Duration,
    /// Content must arrive at this many bytes per second on average (after a first
    /// `data_timeout`); 0: no minimum. As Postfix's `smtpd_min_data_rate`.
    pub min_data_rate: u64,
    /// Above this share of `max_connections` open, the server is under stress...
    pub stress_threshold: f64,
    /// ...and idle, command and greeting waits last at most this long.
    pub stress_timeout: Duration,
    /// IPv6 clients are counted per prefix of this length by the per-client limits.
    pub ipv6_prefix_length: u8,
    pub shutdown_grace: Duration,
    /// Wait this long before the banner; a client that talks first is refused (early talker).
    pub greeting_delay: Duration,
    /// Errors in a session before it is closed with 421.
    pub max_errors: usize,
    /// After the third error, each error reply is delayed by this much more (tarpit).
    pub error_delay: Duration,
    /// Per client address, token buckets refilled per minute (0: no limit).
    pub messages_per_minute_per_ip: u32,
    pub recipients_per_minute_per_ip: u32,
    /// Clients exempt from the greeting delay, rate limits and DNSBL checks.
    pub allow: Vec<Cidr>,
    /// DNS blocklist zones checked at connect.
    pub dnsbl: Vec<String>,
    /// Listeners that expect a PROXY protocol header (v1 or v2)...
    pub proxy_listen: Vec<SocketAddr>,
    /// ...from these load balancers only.
    pub proxy_trusted: Vec<Cidr>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawSmtp {
    listen: Option<Vec<Spanned<String>>>,
    max_message_size: Option<Spanned<Size>>,
    max_recipients: Option<Spanned<usize>>,
    max_connections: Option<usize>,
    max_connections_per_ip: Option<usize>,
    max_line_length: Option<Spanned<usize>>,
    etrn_clients: Option<Vec<Spanned<String>>>,
    command_timeout: Option<HumanDuration>,
    data_timeout: Option<HumanDuration>,
    min_data_rate: Option<u64>,
    stress_threshold: Option<Spanned<f64>>,
    stress_timeout: Option<HumanDuration>,
    ipv6_prefix_length: Option<Spanned<u8>>,
    shutdown_grace: Option<HumanDuration>,
    greeting_delay: Option<HumanDuration>,
    max_errors: Option<Spanned<usize>>,
    error_delay: Option<HumanDuration>,
    messages_per_minute_per_ip: Option<u32>,
    recipients_per_minute_per_ip: Option<u32>,
    allow: Option<Vec<Spanned<String>>>,
    dnsbl: Option<Vec<Spanned<String>>>,
    proxy_listen: Option<Vec<Spanned<String>>>,
    proxy_trusted: Option<Vec<Spanned<String>>>,
}

impl Ctx<'_> {
    pub(super) fn smtp(&self, s: RawSmtp) -> Result<SmtpConfig, ConfigError> {
        let listen = match s.listen {
            None => vec![default::LISTEN],
            Some(list) => {
                let mut out = Vec::new();
                for item in list {
                    let addr = item.get_ref().parse().map_err(|_| {
                        self.at(item.span(), &format!("`{}` is not an IP:port address, e.g. \"0.0.0.0:25\" or \"[::]:25\"", item.get_ref()))
                    })?;
                    out.push(addr);
                }
                if out.is_empty() {
                    return Err(self.whole("[smtp] listen is empty: give at least one address"));
                }
                out
            }
        };
        let max_message_size = match s.max_message_size {
            Some(v) if v.get_ref().0 < 1024 => {
                return Err(self.at(v.span(), "max_message_size must be at least 1KiB"));
            }
            Some(v) => v.into_inner().0,
            None => default::MAX_MESSAGE_SIZE,
        };
        let max_recipients = self.positive(s.max_recipients, default::MAX_RECIPIENTS)?;
        let max_line_length = match s.max_line_length {
            Some(v) if *v.get_ref() < 512 => {
                return Err(self.at(
                    v.span(),
                    "max_line_length must be at least 512 (RFC 5321 §4.5.3.1.4)",
                ));
            }
            Some(v) => v.into_inner(),
            None => default::MAX_LINE_LENGTH,
        };
        let etrn_clients = self.cidrs(s.etrn_clients)?;
        let stress_threshold = match s.stress_threshold {
            Some(v) if !(*v.get_ref() > 0.0 && *v.get_ref() <= 1.0) => {
                return Err(self.at(
                    v.span(),
                    "stress_threshold is a share of max_connections: more than 0, at most 1 (e.g. 0.8)",
                ));
            }
            Some(v) => v.into_inner(),
            None => default::STRESS_THRESHOLD,
        };
        let ipv6_prefix_length = match s.ipv6_prefix_length {
            Some(v) if !(1..=128).contains(v.get_ref()) => {
                return Err(self.at(
                    v.span(),
                    "ipv6_prefix_length must be from 1 to 128 (64: one limit per /64, 128: per address)",
                ));
            }
            Some(v) => v.into_inner(),
            None => default::IPV6_PREFIX_LENGTH,
        };
        let smtp = SmtpConfig {
            listen,
            max_message_size,
            max_recipients,
            max_connections: s.max_connections.unwrap_or(default::MAX_CONNECTIONS).max(1),
            max_connections_per_ip: s
                .max_connections_per_ip
                .unwrap_or(default::MAX_CONNECTIONS_PER_IP)
                .max(1),
            max_line_length,
            etrn_clients,
            command_timeout: s.command_timeout.map_or(default::COMMAND_TIMEOUT, |v| v.0),
            data_timeout: s.data_timeout.map_or(default::DATA_TIMEOUT, |v| v.0),
            min_data_rate: s.min_data_rate.unwrap_or(default::MIN_DATA_RATE),
            stress_threshold,
            stress_timeout: s.stress_timeout.map_or(default::STRESS_TIMEOUT, |v| v.0),
            ipv6_prefix_length,
            shutdown_grace: s.shutdown_grace.map_or(default::SHUTDOWN_GRACE, |v| v.0),
            greeting_delay: s.greeting_delay.map_or(default::GREETING_DELAY, |v| v.0),
            max_errors: self.positive(s.max_errors, default::MAX_ERRORS)?,
            error_delay: s.error_delay.map_or(default::ERROR_DELAY, |v| v.0),
            messages_per_minute_per_ip: s
                .messages_per_minute_per_ip
                .unwrap_or(default::MESSAGES_PER_MINUTE_PER_IP),
            recipients_per_minute_per_ip: s
                .recipients_per_minute_per_ip
                .unwrap_or(default::RECIPIENTS_PER_MINUTE_PER_IP),
            allow: self.cidrs(s.allow)?.unwrap_or_default(),
            dnsbl: s
                .dnsbl
                .unwrap_or_default()
                .into_iter()
                .map(|z| {
                    let zone = z.get_ref().trim_end_matches('.').to_ascii_lowercase();
                    if is_domain_name(&zone) {
                        Ok(zone)
                    } else {
                        Err(self.at(z.span(), &format!("`{}` is not a DNS zone", z.get_ref())))
                    }
                })
                .collect::<Result<_, _>>()?,
            proxy_listen: s
                .proxy_listen
                .unwrap_or_default()
                .into_iter()
                .map(|a| {
                    a.get_ref().parse().map_err(|_| {
                        self.at(
                            a.span(),
                            &format!("`{}` is not an IP:port address", a.get_ref()),
                        )
                    })
                })
                .collect::<Result<_, _>>()?,
            proxy_trusted: self.cidrs(s.proxy_trusted)?.unwrap_or_default(),
        };
        if !smtp.proxy_listen.is_empty() && smtp.proxy_trusted.is_empty() {
            return Err(self.whole("[smtp] proxy_listen needs proxy_trusted: the load balancers allowed to send PROXY headers"));
        }
        Ok(smtp)
    }

    fn cidrs(&self, list: Option<Vec<Spanned<String>>>) -> Result<Option<Vec<Cidr>>, ConfigError> {
        list.map(|l| {
            l.into_iter()
                .map(|c| Cidr::parse(c.get_ref()).map_err(|e| self.at(c.span(), &e)))
                .collect()
        })
        .transpose()
    }
}

#[cfg(test)]
mod tests {
    use crate::config::tests::{MINIMAL, parse};
    use std::time::Duration;

    #[test]
    fn ipv6_prefix_length_has_a_default_and_is_checked() {
        assert_eq!(parse(MINIMAL).unwrap().smtp.ipv6_prefix_length, 64);
        assert_eq!(parse(MINIMAL).unwrap().smtp.min_data_rate, 500);
        let c = parse(&format!("[smtp]\nipv6_prefix_length = 128\n{MINIMAL}")).unwrap();
        assert_eq!(c.smtp.ipv6_prefix_length, 128);
        for line in ["ipv6_prefix_length = 0", "ipv6_prefix_length = 129"] {
            let e = parse(&format!("[smtp]\n{line}\n{MINIMAL}"))
                .unwrap_err()
                .to_string();
            assert!(
                e.contains("test.toml:2:") && e.contains("ipv6_prefix_length"),
                "{line}: {e}"
            );
        }
    }

    #[test]
    fn stress_settings_have_defaults_and_are_checked() {
        let c = parse(MINIMAL).unwrap();
        assert_eq!(c.smtp.stress_threshold, 0.8);
        assert_eq!(c.smtp.stress_timeout, Duration::from_secs(10));
        let c = parse(&format!(
            "[smtp]\nstress_threshold = 0.5\nstress_timeout = \"3s\"\n{MINIMAL}"
        ))
        .unwrap();
        assert_eq!(c.smtp.stress_threshold, 0.5);
        assert_eq!(c.smtp.stress_timeout, Duration::from_secs(3));
        for line in ["stress_threshold = 1.5", "stress_threshold = 0.0"] {
            let e = parse(&format!("[smtp]\n{line}\n{MINIMAL}"))
                .unwrap_err()
                .to_string();
            assert!(
                e.contains("test.toml:2:") && e.contains("stress_threshold"),
                "{line}: {e}"
            );
        }
    }
}
