//! The `[delivery]` table: concurrency, rate and timeouts of outbound SMTP to the primaries,
//! and the extra CA file for MTA-STS.
//! Parsing and validation only; the delivery code uses the result.

use super::defaults::delivery as default;
use super::{ConfigError, Ctx, HumanDuration};
use serde::Deserialize;
use std::time::Duration;
use toml::Spanned;

#[derive(Debug, Clone)]
pub struct DeliveryConfig {
    /// The ceiling of the adaptive per-primary concurrency.
    pub max_connections_per_primary: usize,
    /// Where the adaptive concurrency starts.
    pub initial_connections_per_primary: usize,
    /// Messages per second per primary (None: no cap).
    pub max_messages_per_second: Option<f64>,
    pub messages_per_connection: usize,
    pub connect_timeout: Duration,
    pub greeting_timeout: Duration,
    pub command_timeout: Duration,
    pub data_timeout: Duration,
    /// Extra trusted CAs (PEM) for MTA-STS: the policy servers and, under an `enforce`
    /// policy, the MX hosts (besides the built-in Mozilla roots).
    pub mta_sts_ca_file: Option<std::path::PathBuf>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawDelivery {
    max_connections_per_primary: Option<Spanned<usize>>,
    initial_connections_per_primary: Option<Spanned<usize>>,
    max_messages_per_second: Option<Spanned<f64>>,
    messages_per_connection: Option<Spanned<usize>>,
    connect_timeout: Option<HumanDuration>,
    greeting_timeout: Option<HumanDuration>,
    command_timeout: Option<HumanDuration>,
    data_timeout: Option<HumanDuration>,
    mta_sts_ca_file: Option<String>,
}

impl Ctx<'_> {
    pub(super) fn delivery(&self, d: RawDelivery) -> Result<DeliveryConfig, ConfigError> {
        Ok(DeliveryConfig {
            max_connections_per_primary: self.positive(
                d.max_connections_per_primary,
                default::MAX_CONNECTIONS_PER_PRIMARY,
            )?,
            initial_connections_per_primary: self.positive(
                d.initial_connections_per_primary,
                default::INITIAL_CONNECTIONS_PER_PRIMARY,
            )?,
            max_messages_per_second: match d.max_messages_per_second {
                Some(r) if *r.get_ref() < 0.0 || !r.get_ref().is_finite() => {
                    return Err(self.at(
                        r.span(),
                        "max_messages_per_second must be a positive number (0 turns the cap off)",
                    ));
                }
                Some(r) if *r.get_ref() == 0.0 => None,
                Some(r) => Some(r.into_inner()),
                None => None,
            },
            messages_per_connection: self
                .positive(d.messages_per_connection, default::MESSAGES_PER_CONNECTION)?,
            connect_timeout: d.connect_timeout.map_or(default::CONNECT_TIMEOUT, |v| v.0),
            greeting_timeout: d
                .greeting_timeout
                .map_or(default::GREETING_TIMEOUT, |v| v.0),
            command_timeout: d.command_timeout.map_or(default::COMMAND_TIMEOUT, |v| v.0),
            data_timeout: d.data_timeout.map_or(default::DATA_TIMEOUT, |v| v.0),
            mta_sts_ca_file: d.mta_sts_ca_file.map(|p| self.resolve(p)),
        })
    }
}
