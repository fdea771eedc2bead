//! The `[probe]` table: how often and how patiently a primary that is down is probed.
//! Parsing and validation only; the scheduler's prober uses the result.

use super::defaults::probe as default;
use super::{ConfigError, Ctx, HumanDuration};
use serde::Deserialize;
use std::time::Duration;
use toml::Spanned;

#[derive(Debug, Clone)]
pub struct ProbeConfig {
    pub interval: Duration,
    pub timeout: Duration,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawProbe {
    interval: Option<Spanned<HumanDuration>>,
    timeout: Option<HumanDuration>,
}

impl Ctx<'_> {
    pub(super) fn probe(&self, raw: RawProbe) -> Result<ProbeConfig, ConfigError> {
        let interval = match raw.interval {
            Some(v) if v.get_ref().0 < Duration::from_millis(100) => {
                return Err(self.at(v.span(), "probe interval must be at least 100ms"));
            }
            Some(v) => v.into_inner().0,
            None => default::INTERVAL,
        };
        Ok(ProbeConfig {
            interval,
            timeout: raw.timeout.map_or(default::TIMEOUT, |v| v.0),
        })
    }
}
