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
    /// Free space the queue's file system keeps: below it new mail is refused (452 4.3.1).
    pub min_free_disk: DiskReserve,
}

/// `min_free_disk`: bytes, or a share of the file system.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum DiskReserve {
    /// The default: 5 % or 1 GiB, whichever is larger, but never more than half the file
    /// system (a small one still takes mail).
    Default,
    Bytes(u64),
    /// Percent of the file system's size.
    Percent(f64),
    /// `"0"`: no reserve.
    Off,
}

impl DiskReserve {
    /// The reserve in bytes on a file system of `total` bytes.
    pub fn bytes(self, total: u64) -> u64 {
        match self {
            DiskReserve::Default => {
                let share = total / 100 * default::MIN_FREE_DISK_PERCENT;
                share.max(default::MIN_FREE_DISK_BYTES).min(total / 2)
            }
            DiskReserve::Bytes(b) => b,
            DiskReserve::Percent(p) => (total as f64 * p / 100.0) as u64,
            DiskReserve::Off => 0,
        }
    }
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawQueue {
    retry_min: Option<Spanned<HumanDuration>>,
    retry_max: Option<Spanned<HumanDuration>>,
    lifetime: Option<HumanDuration>,
    delay_warning: Option<HumanDuration>,
    min_free_disk: Option<Spanned<toml::Value>>,
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
            min_free_disk: self.disk_reserve(q.min_free_disk.as_ref())?,
        })
    }

    /// `min_free_disk`: `"10%"`, `"2GB"`, a number of bytes, or 0 for none.
    fn disk_reserve(&self, v: Option<&Spanned<toml::Value>>) -> Result<DiskReserve, ConfigError> {
        let Some(v) = v else {
            return Ok(DiskReserve::Default);
        };
        let bad = |why: String| {
            self.at(
                v.span(),
                &format!(
                    "{why} (use a share like \"5%\", a size like \"2GB\", or 0 for no reserve)"
                ),
            )
        };
        let text = match v.get_ref() {
            toml::Value::Integer(n) if *n >= 0 => n.to_string(),
            toml::Value::String(s) => s.trim().to_string(),
            other => return Err(bad(format!("`{other}` is not a size"))),
        };
        if let Some(p) = text.strip_suffix('%') {
            return match p.trim().parse::<f64>() {
                Ok(p) if (0.0..=90.0).contains(&p) => Ok(if p == 0.0 {
                    DiskReserve::Off
                } else {
                    DiskReserve::Percent(p)
                }),
                _ => Err(bad(format!("`{text}`: a share from 0% to 90%"))),
            };
        }
        match super::parse_size(&text).map_err(bad)? {
            0 => Ok(DiskReserve::Off),
            n => Ok(DiskReserve::Bytes(n)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::tests::{MINIMAL, parse};

    #[test]
    fn the_disk_reserve() {
        const GIB: u64 = 1 << 30;
        let d = DiskReserve::Default;
        assert_eq!(d.bytes(100 * GIB), 5 * GIB, "5 % of a large disk");
        assert_eq!(d.bytes(10 * GIB), GIB, "at least 1 GiB");
        assert_eq!(
            d.bytes(64 << 20),
            32 << 20,
            "never more than half a small one"
        );
        let at = |v: &str| {
            parse(&format!("[queue]\nmin_free_disk = {v}\n{MINIMAL}"))
                .map(|c| c.queue.min_free_disk)
        };
        assert_eq!(at("\"10%\"").unwrap(), DiskReserve::Percent(10.0));
        assert_eq!(at("\"2GB\"").unwrap(), DiskReserve::Bytes(2_000_000_000));
        assert_eq!(at("0").unwrap(), DiskReserve::Off);
        assert_eq!(DiskReserve::Percent(10.0).bytes(1000), 100);
        let e = at("\"95%\"").unwrap_err().to_string();
        assert!(
            e.contains("queue.min_free_disk") && e.contains("0% to 90%"),
            "{e}"
        );
        let e = at("true").unwrap_err().to_string();
        assert!(e.contains("not a size"), "{e}");
    }
}
