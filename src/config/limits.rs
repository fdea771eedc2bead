//! A domain's own limits (`[[domain]]` keys, or `mx2 domain set` for stored domains), so
//! that one customer's long outage or flood cannot hurt the others: how much of the queue
//! its mail may take, how long it is kept, how large one message may be, and how fast new
//! mail for it is taken. Parsing only; `policy::admission` and the scheduler enforce them.

use super::domain::RawDomain;
use super::{ConfigError, Ctx};
use std::time::Duration;

/// Per-domain limits; `None` is "no limit of its own" (the global one applies).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize)]
pub struct DomainLimits {
    /// Messages with a pending recipient in this domain the queue may hold.
    pub max_queue_messages: Option<u64>,
    /// Bytes of such messages the queue may hold.
    pub max_queue_bytes: Option<u64>,
    /// How long its mail is kept before it expires (instead of `[queue] lifetime`).
    #[serde(serialize_with = "secs")]
    pub lifetime: Option<Duration>,
    /// The largest message for it (below `[smtp] max_message_size` to mean anything).
    pub max_message_size: Option<u64>,
    /// Recipients in this domain accepted per minute, from all clients together.
    pub recipients_per_minute: Option<u32>,
}

fn secs<S: serde::Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
    match d {
        Some(d) => s.serialize_some(&d.as_secs()),
        None => s.serialize_none(),
    }
}

impl Ctx<'_> {
    /// A domain's limits: each, when given, at least 1 (a limit of nothing would refuse all).
    pub(super) fn domain_limits(&self, r: &RawDomain) -> Result<DomainLimits, ConfigError> {
        let nonzero = |v: Option<(u64, std::ops::Range<usize>)>| match v {
            Some((0, span)) => Err(self.at(
                span,
                "must be at least 1 (leave the key out for no limit of its own)",
            )),
            Some((n, _)) => Ok(Some(n)),
            None => Ok(None),
        };
        let lifetime = match &r.lifetime {
            Some(v) if v.get_ref().0 < Duration::from_secs(1) => {
                return Err(self.at(v.span(), "must be at least 1s"));
            }
            v => v.as_ref().map(|v| v.get_ref().0),
        };
        Ok(DomainLimits {
            max_queue_messages: nonzero(
                r.max_queue_messages
                    .as_ref()
                    .map(|v| (*v.get_ref(), v.span())),
            )?,
            max_queue_bytes: nonzero(
                r.max_queue_bytes
                    .as_ref()
                    .map(|v| (v.get_ref().0, v.span())),
            )?,
            lifetime,
            max_message_size: nonzero(
                r.max_message_size
                    .as_ref()
                    .map(|v| (v.get_ref().0, v.span())),
            )?,
            recipients_per_minute: nonzero(
                r.recipients_per_minute
                    .as_ref()
                    .map(|v| (u64::from(*v.get_ref()), v.span())),
            )?
            .map(|n| n as u32),
        })
    }
}
