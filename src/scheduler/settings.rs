//! The scheduler's settings, taken from the config once at start (a reload changes routes and
//! bounce policies only; see [`super::Scheduler::reconfigure`]).
//!
//! Pure: may read the config; must never touch the queue, the network or the clock.

use crate::config::Config;
use crate::delivery::client::Timeouts;
use std::time::Duration;

/// Scheduling settings taken from the config.
#[derive(Debug, Clone)]
pub struct Settings {
    pub hostname: String,
    pub retry_min: Duration,
    pub retry_max: Duration,
    pub lifetime: Duration,
    pub probe_interval: Duration,
    pub probe_timeouts: Timeouts,
    pub callout_timeout: Duration,
    pub timeouts: Timeouts,
    pub max_connections_per_primary: usize,
    pub initial_connections_per_primary: usize,
    pub max_messages_per_second: Option<f64>,
    pub messages_per_connection: usize,
}

impl Settings {
    pub fn from_config(c: &Config) -> Self {
        let d = &c.delivery;
        let p = c.probe.timeout;
        Self {
            hostname: c.hostname.clone(),
            retry_min: c.queue.retry_min,
            retry_max: c.queue.retry_max,
            lifetime: c.queue.lifetime,
            probe_interval: c.probe.interval,
            callout_timeout: c.recipients.callout_timeout,
            probe_timeouts: Timeouts {
                connect: p,
                greeting: p,
                command: p,
                data: p,
            },
            timeouts: Timeouts {
                connect: d.connect_timeout,
                greeting: d.greeting_timeout,
                command: d.command_timeout,
                data: d.data_timeout,
            },
            max_connections_per_primary: d.max_connections_per_primary,
            initial_connections_per_primary: d.initial_connections_per_primary,
            max_messages_per_second: d.max_messages_per_second,
            messages_per_connection: d.messages_per_connection,
        }
    }
}

/// A duration in milliseconds, as the queue counts time.
pub(super) fn ms(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}
