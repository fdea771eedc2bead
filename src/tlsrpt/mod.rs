//! TLS reporting (RFC 8460): counting, per policy domain and UTC day, the sessions mx2 set
//! up under a domain's policy, by result (`success` or a failure's result type), and once
//! a day sending the previous day's report to the `rua` of the domain's `_smtp._tls`
//! record. [`Recorder`] counts (only with `[tls_reports] enabled`); `report` builds the
//! JSON report and its mail (pure, with mail-auth's report types); `send` is the daily task.

pub mod report;
mod send;

pub use send::{Sender, run};

use crate::queue::{Store, TlsRptCount, now_ms};
use std::sync::Arc;

/// The UTC day (days since the epoch) of a time in ms since the epoch.
pub fn day_of(ms: i64) -> i64 {
    ms.div_euclid(86_400_000)
}

/// Counts sessions under a policy in the store, for the daily reports.
#[derive(Clone)]
pub struct Recorder {
    store: Arc<dyn Store>,
    enabled: bool,
}

impl Recorder {
    pub fn new(store: Arc<dyn Store>, enabled: bool) -> Self {
        Recorder { store, enabled }
    }

    /// Counts one session to `mx_host` of `domain` under a policy of `policy_type` (`sts`)
    /// with `result` (`success`, or an RFC 8460 result type). Nothing when reports are off;
    /// a store error is logged, never a reason to hold mail.
    pub async fn count(&self, domain: &str, policy_type: &str, result: &str, mx_host: &str) {
        if !self.enabled {
            return;
        }
        let count = TlsRptCount {
            day: day_of(now_ms()),
            domain: domain.to_string(),
            policy_type: policy_type.to_string(),
            result: result.to_string(),
            // Successes are summed per policy; failures are detailed per MX host.
            mx_host: if result == report::SUCCESS {
                String::new()
            } else {
                mx_host.to_string()
            },
            count: 1,
        };
        if let Err(e) = self.store.tlsrpt_add(count).await {
            tracing::warn!(domain, error = %e, "cannot count a session for the TLS report");
        }
    }
}
