//! Process-wide counters and histograms for `/metrics`: what happened since start
//! (connections, rejections, deliveries, notifications, commit latency). Gauges that describe
//! the queue or the primaries are computed at scrape time by `admin::metrics` from the store
//! and the scheduler, not kept here. A leaf module: everyone may count, it calls nobody.

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use std::sync::OnceLock;

type Labels = Vec<(&'static str, String)>;

pub struct Metrics {
    pub connections: Gauge,
    pub connections_total: Counter,
    /// 1 while the SMTP listener is under stress (shortened timeouts), else 0.
    pub smtp_stress: Gauge,
    pub accepted_messages: Counter,
    pub accepted_bytes: Counter,
    /// Negative replies by command and reply code.
    pub rejections: Family<Labels, Counter>,
    /// Delivery attempts per recipient by outcome (delivered, deferred, failed).
    pub deliveries: Family<Labels, Counter>,
    /// Connections to primaries that failed before any mail could be sent.
    pub connection_failures: Counter,
    /// Notifications queued, by kind (failure, delay, relayed, expired).
    pub notifications: Family<Labels, Counter>,
    /// How long one queue commit (and its sync to disk) took.
    pub commit_seconds: Histogram,
}

impl Metrics {
    fn new() -> Self {
        Self {
            connections: Gauge::default(),
            connections_total: Counter::default(),
            smtp_stress: Gauge::default(),
            accepted_messages: Counter::default(),
            accepted_bytes: Counter::default(),
            rejections: Family::default(),
            deliveries: Family::default(),
            connection_failures: Counter::default(),
            notifications: Family::default(),
            commit_seconds: Histogram::new(exponential_buckets(0.000_25, 2.0, 16)),
        }
    }

    /// Registers every metric under its exported name.
    pub fn register(&self, r: &mut Registry) {
        r.register(
            "mx2_smtp_connections_open",
            "SMTP connections open now",
            self.connections.clone(),
        );
        r.register(
            "mx2_smtp_connections",
            "SMTP connections accepted since start",
            self.connections_total.clone(),
        );
        r.register(
            "mx2_smtp_stress",
            "1 while SMTP connections exceed the stress threshold and timeouts are shortened",
            self.smtp_stress.clone(),
        );
        r.register(
            "mx2_messages_accepted",
            "Messages accepted (committed to the queue) since start",
            self.accepted_messages.clone(),
        );
        r.register(
            "mx2_accepted_bytes",
            "Bytes of accepted messages since start",
            self.accepted_bytes.clone(),
        );
        r.register(
            "mx2_smtp_rejections",
            "Negative SMTP replies by reply code and enhanced status (the reason)",
            self.rejections.clone(),
        );
        r.register(
            "mx2_delivery_attempts",
            "Recipient delivery attempts by outcome",
            self.deliveries.clone(),
        );
        r.register(
            "mx2_delivery_connection_failures",
            "Connections to primaries that failed or broke off",
            self.connection_failures.clone(),
        );
        r.register(
            "mx2_notifications_queued",
            "Delivery status notifications queued, by kind",
            self.notifications.clone(),
        );
        r.register(
            "mx2_queue_commit_seconds",
            "Time one queue commit took, including its sync to disk",
            self.commit_seconds.clone(),
        );
    }

    /// Counts a negative reply: `reply` is its first line (code, enhanced status, text).
    pub fn rejected(&self, reply: &str) {
        let code = reply.get(..3).unwrap_or("").to_string();
        let status = reply
            .get(4..)
            .and_then(|r| r.split(' ').next())
            .filter(|s| s.len() <= 9 && s.bytes().all(|b| b.is_ascii_digit() || b == b'.'))
            .unwrap_or("")
            .to_string();
        self.rejections
            .get_or_create(&vec![("code", code), ("status", status)])
            .inc();
    }

    pub fn delivery(&self, outcome: &'static str) {
        self.deliveries
            .get_or_create(&vec![("outcome", outcome.to_string())])
            .inc();
    }

    pub fn notification(&self, kind: &'static str) {
        self.notifications
            .get_or_create(&vec![("kind", kind.to_string())])
            .inc();
    }
}

/// Counts an SMTP connection as open until dropped.
pub struct OpenConnection(());

impl OpenConnection {
    pub fn new() -> Self {
        let m = get();
        m.connections.inc();
        m.connections_total.inc();
        Self(())
    }
}

impl Default for OpenConnection {
    fn default() -> Self {
        Self::new()
    }
}

impl Drop for OpenConnection {
    fn drop(&mut self) {
        get().connections.dec();
    }
}

/// The process's metrics.
pub fn get() -> &'static Metrics {
    static M: OnceLock<Metrics> = OnceLock::new();
    M.get_or_init(Metrics::new)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rejections_are_labelled_by_code_and_status() {
        let m = Metrics::new();
        m.rejected("550 5.1.1 <a@b>: no such user");
        m.rejected("550 5.1.1 <c@b>: no such user");
        m.rejected("452 4.3.1 Insufficient system storage");
        m.rejected("503 bad sequence");
        let mut r = Registry::default();
        m.register(&mut r);
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &r).unwrap();
        assert!(
            out.contains(r#"mx2_smtp_rejections_total{code="550",status="5.1.1"} 2"#),
            "{out}"
        );
        assert!(out.contains(r#"{code="452",status="4.3.1"} 1"#));
        assert!(out.contains(r#"{code="503",status=""} 1"#));
    }
}
