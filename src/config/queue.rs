//! The `[queue]` table: the retry schedule, how long a message may wait, and when the sender
//! is told it is delayed. Parsing and validation only; the scheduler uses the result.

use super::defaults::queue as default;
use super::{ConfigError, Ctx, HumanDuration};
use serde::Deserialize;
use std::time::Duration;
use toml::Spanned;

#[derive(Debug, Clone)]
pub struct QueueConfig {
    pub retry_min: Duration,
    pub retry_max: Duration,
    pub lifetime: Duration,
    /// Tell the sender once a recipient has waited this long (off when None).
    pub delay_warning: Option<Duration>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawQueue {
    retry_min: Option<Spanned<HumanDuration>>,
    retry_max: Option<Spanned<HumanDuration>>,
    lifetime: Option<HumanDuration>,
    delay_warning: Option<HumanDuration>,
}

impl Ctx<'_> {
    pub(super) fn queue(&self, q: RawQueue) -> Result<QueueConfig, ConfigError> {
        let retry_min = q
            .retry_min
            .as_ref()
            .map_or(default::RETRY_MIN, |v| v.get_ref().0);
        let retry_max = q
            .retry_max
            .as_ref()
            .map_or(default::RETRY_MAX, |v| v.get_ref().0);
        if retry_min.is_zero() {
            let span = q.retry_min.as_ref().map_or(0..0, |v| v.span());
            return Err(self.at(span, "retry_min must be greater than zero"));
        }
        if retry_max < retry_min {
            let span = q
                .retry_max
                .as_ref()
                .or(q.retry_min.as_ref())
                .map_or(0..0, |v| v.span());
            return Err(self.at(span, "retry_max must not be less than retry_min"));
        }
        Ok(QueueConfig {
            retry_min,
            retry_max,
            lifetime: q.lifetime.map_or(default::LIFETIME, |v| v.0),
            delay_warning: q.delay_warning.map(|v| v.0).filter(|d| !d.is_zero()),
        })
    }
}
