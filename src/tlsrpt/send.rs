//! The daily task: shortly after start and then just after each UTC midnight, takes the
//! counters of the days before today from the store and sends each domain's report to the
//! `rua` addresses of its `_smtp._tls` record: mail through mx2's own queue (delivered by
//! the scheduler like any mail), HTTPS by POST. A domain without a record gets no report.

use super::report;
use crate::config::TlsReportsConfig;
use crate::dns::Dns;
use crate::queue::{Store, TlsRptCount, now_ms};
use crate::scheduler::Scheduler;
use crate::shutdown::Shutdown;
use mail_auth::common::parse::TxtRecordParser;
use mail_auth::mta_sts::{ReportUri, TlsRpt};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tracing::{info, warn};

/// What the task needs.
pub struct Sender {
    pub store: Arc<dyn Store>,
    pub scheduler: Arc<Scheduler>,
    pub dns: Arc<Dns>,
    pub config: TlsReportsConfig,
    pub hostname: String,
    /// Extra trusted CAs for https: reporting addresses (`[delivery] mta_sts_ca_file`).
    pub ca_file: Option<PathBuf>,
}

/// How long after midnight (UTC) the day's reports go out, and after start the first run.
const AFTER_MIDNIGHT: Duration = Duration::from_secs(300);
const AFTER_START: Duration = Duration::from_secs(2);

/// Runs until shutdown (returns at once when reports are off).
pub async fn run(s: Sender, mut shutdown: Shutdown) {
    if !s.config.enabled {
        return;
    }
    let mut wait = AFTER_START;
    loop {
        tokio::select! {
            _ = shutdown.wait() => return,
            _ = tokio::time::sleep(wait) => {}
        }
        s.send_due().await;
        let into_day = now_ms().rem_euclid(86_400_000) as u64;
        wait = Duration::from_millis(86_400_000 - into_day) + AFTER_MIDNIGHT;
    }
}

impl Sender {
    /// Sends every finished day's reports.
    async fn send_due(&self) {
        let today = super::day_of(now_ms());
        let counts = match self.store.tlsrpt_take(today).await {
            Ok(c) => c,
            Err(e) => {
                warn!(error = %e, "cannot read the TLS report counters; trying again tomorrow");
                return;
            }
        };
        let mut rest: &[TlsRptCount] = &counts;
        while let Some(first) = rest.first() {
            let n = rest
                .iter()
                .take_while(|c| c.day == first.day && c.domain == first.domain)
                .count();
            let (group, tail) = rest.split_at(n);
            self.send_one(&first.domain, first.day, group).await;
            rest = tail;
        }
    }

    async fn send_one(&self, domain: &str, day: i64, counts: &[TlsRptCount]) {
        let name = format!("_smtp._tls.{domain}");
        let txt = self.dns.txt(&name).await.unwrap_or_default();
        let Some(rpt) = txt
            .iter()
            .find(|t| t.starts_with("v=TLSRPTv1"))
            .and_then(|t| TlsRpt::parse(t.as_bytes()).ok())
        else {
            info!(domain, "no usable TLS-RPT record ({name}); no report sent");
            return;
        };
        let policy = match self.store.sts_policy(domain).await {
            Ok(p) => p.map(|p| p.policy),
            Err(_) => None,
        };
        let r = report::build(
            domain,
            day,
            counts,
            policy.as_deref(),
            &self.config,
            &self.hostname,
        );
        let mut mailto = Vec::new();
        for uri in &rpt.rua {
            match uri {
                ReportUri::Mail(a) => mailto.push(a.clone()),
                ReportUri::Http(url) => self.post(domain, url, &r).await,
            }
        }
        if mailto.is_empty() {
            return;
        }
        let queued = match report::mail(&r, domain, &mailto, &self.config, &self.hostname) {
            Ok(body) => {
                crate::notice::queue_message(
                    &*self.store,
                    &self.scheduler,
                    &mailto,
                    body,
                    &self.hostname,
                )
                .await
            }
            Err(e) => {
                warn!(domain, error = %e, "cannot write the TLS report");
                return;
            }
        };
        match queued {
            Ok(id) => {
                info!(domain, queue_id = %id, to = %mailto.join(", "), "TLS report queued")
            }
            Err(e) => warn!(domain, error = %e, "cannot queue the TLS report"),
        }
    }

    async fn post(&self, domain: &str, url: &str, r: &mail_auth::report::tlsrpt::TlsReport) {
        let Ok(bytes) = report::gzip(r) else { return };
        let sent = crate::http::send(crate::http::Request {
            body: Some(crate::http::Body {
                content_type: "application/tlsrpt+gzip",
                bytes: &bytes,
            }),
            dns: Some(&self.dns),
            ca_file: self.ca_file.as_deref(),
            ..crate::http::Request::new("POST", url, Duration::from_secs(60))
        })
        .await;
        match sent {
            Ok(_) => info!(domain, url, "TLS report posted"),
            Err(e) => warn!(domain, error = %e, "cannot post the TLS report"),
        }
    }
}
