//! Alerts: a JSON POST to a webhook (and optionally a mail to an address elsewhere) when a
//! primary has been down longer than `alerts.down_after`, when it is back, when everything
//! held for it is delivered, when a domain's queue reaches its cap (once per crossing) and
//! when the disk falls below its reserve, and when a domain's fire drill fails or none passed
//! within twice its interval. A domain's cap alerts also go to its tenant's
//! webhook and address (never with the operator's webhook token). Alerts go out one at a
//! time, in order, each retried with backoff until it is taken (or, after about half an
//! hour, given up and logged).

use crate::config::AlertsConfig;
use crate::dns::Dns;
use crate::events::{self, Event, Kind};
use crate::queue::{Store, now_ms};
use crate::scheduler::Scheduler;
use crate::shutdown::Shutdown;
use serde_json::json;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;
use tracing::{error, info, warn};

/// Attempts per alert before it is given up.
const ATTEMPTS: u32 = 30;
/// Alerts waiting to be sent while the webhook does not answer; more are logged and dropped.
const MAX_WAITING: usize = 1000;

/// Where an alert goes.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Target {
    /// The operator's `[alerts]` webhook and address.
    Operator,
    /// A tenant's own webhook and address.
    Tenant {
        webhook: Option<String>,
        email: Option<String>,
    },
}

/// One alert and where it goes.
struct Alert {
    body: serde_json::Value,
    to: Target,
}

type Outbox = mpsc::Sender<Alert>;

/// Queues an alert for the operator.
fn queue(tx: &Outbox, body: serde_json::Value) {
    send(tx, Target::Operator, body);
}

/// Queues an alert for sending; when too many are waiting it is logged instead.
fn send(tx: &Outbox, to: Target, body: serde_json::Value) {
    if let Err(e) = tx.try_send(Alert { body, to }) {
        let alert = match e {
            mpsc::error::TrySendError::Full(a) | mpsc::error::TrySendError::Closed(a) => a,
        };
        warn!(alert = %alert.body["text"].as_str().unwrap_or(""), "too many alerts waiting for the webhook; this one is only logged");
    }
}

pub struct Alerter {
    pub config: AlertsConfig,
    pub hostname: String,
    pub dns: Arc<Dns>,
    pub store: Arc<dyn Store>,
    pub scheduler: Arc<Scheduler>,
    /// Tenants' webhooks and addresses for their domains' alerts.
    pub registry: Arc<crate::registry::Registry>,
}

/// Where each primary is in its alert cycle.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Outage {
    down_ms: i64,
    alerted: bool,
}

/// One alert as sent: `event` is primary_down, primary_up or drained.
fn payload(
    hostname: &str,
    event: &str,
    primary: &str,
    at_ms: i64,
    detail: &str,
) -> serde_json::Value {
    let text = format!("mx2 {hostname}: {primary} {detail}");
    json!({
        "event": event,
        "primary": primary,
        "at_ms": at_ms,
        "backup_mx": hostname,
        "detail": detail,
        "text": text,
    })
}

impl Alerter {
    pub fn enabled(&self) -> bool {
        self.config.webhook.is_some() || self.config.email.is_some()
    }

    /// Follows the event log until shutdown (tenants may have webhooks of their own even
    /// when the operator has none).
    pub async fn run(self, mut shutdown: Shutdown) {
        let me = Arc::new(self);
        let (tx, rx) = mpsc::channel(MAX_WAITING);
        tokio::spawn(me.clone().deliver(rx, shutdown.clone()));
        let mut events_rx = events::get().subscribe();
        let mut outages: HashMap<String, Outage> = HashMap::new();
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        loop {
            tokio::select! {
                _ = shutdown.wait() => return,
                _ = tick.tick() => me.check_overdue(&mut outages, &tx).await,
                ev = events_rx.recv() => match ev {
                    Ok(ev) => me.on_event(ev, &mut outages, &tx),
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(n)) => {
                        warn!(missed = n, "alerting fell behind the event log");
                    }
                    Err(_) => return,
                },
            }
        }
    }

    fn on_event(&self, ev: Event, outages: &mut HashMap<String, Outage>, tx: &Outbox) {
        let h = &self.hostname;
        match ev.kind {
            Kind::PrimaryDown { primary, .. } if self.enabled() => {
                outages.insert(
                    primary,
                    Outage {
                        down_ms: ev.at_ms,
                        alerted: false,
                    },
                );
            }
            Kind::PrimaryUp {
                primary,
                down_for_s,
                held,
            } => {
                if outages.get(&primary).is_some_and(|o| o.alerted) {
                    let detail = format!(
                        "is up again after {}; delivering {held} held recipients",
                        super::dashboard::duration(down_for_s as i64)
                    );
                    queue(tx, payload(h, "primary_up", &primary, ev.at_ms, &detail));
                } else {
                    outages.remove(&primary);
                }
            }
            Kind::PrimaryDown { .. } => {}
            Kind::Drained { primary, took_s } => {
                if outages.remove(&primary).is_some_and(|o| o.alerted) {
                    let detail = format!("has been handed everything held for it ({took_s:.1}s)");
                    queue(tx, payload(h, "drained", &primary, ev.at_ms, &detail));
                }
            }
            Kind::Reload { .. }
            | Kind::InboxLogin { .. }
            | Kind::InboxRead { .. }
            | Kind::InboxDelete { .. }
            | Kind::InboxPassword { .. }
            | Kind::InboxInvite { .. } => {}
            Kind::QueueFull { ref domain, .. }
            | Kind::QueueOpen { ref domain }
            | Kind::DrillFailed { ref domain, .. }
            | Kind::DrillOverdue { ref domain, .. } => {
                let event = match ev.kind {
                    Kind::QueueFull { .. } => "queue_full",
                    Kind::QueueOpen { .. } => "queue_open",
                    Kind::DrillFailed { .. } => "drill_failed",
                    _ => "drill_overdue",
                };
                let text = format!("mx2 {h}: {}", ev.kind.text());
                let body = json!({
                    "event": event,
                    "domain": domain,
                    "at_ms": ev.at_ms,
                    "backup_mx": h,
                    "detail": ev.kind,
                    "text": text,
                });
                if self.enabled() {
                    queue(tx, body.clone());
                }
                if let Some(t) = self.registry.snapshot().tenant_of(domain) {
                    let (webhook, email) = (t.record.webhook.clone(), t.record.alert_to.clone());
                    if webhook.is_some() || email.is_some() {
                        send(tx, Target::Tenant { webhook, email }, body);
                    }
                }
            }
            Kind::DiskLow { .. } | Kind::DiskOk { .. } => {
                if self.enabled() {
                    let event = if matches!(ev.kind, Kind::DiskLow { .. }) {
                        "disk_low"
                    } else {
                        "disk_ok"
                    };
                    let text = format!("mx2 {h}: {}", ev.kind.text());
                    queue(
                        tx,
                        json!({
                            "event": event,
                            "at_ms": ev.at_ms,
                            "backup_mx": h,
                            "detail": ev.kind,
                            "text": text,
                        }),
                    );
                }
            }
        }
    }

    /// Alerts for primaries down longer than the threshold and still down.
    async fn check_overdue(&self, outages: &mut HashMap<String, Outage>, tx: &Outbox) {
        if !self.enabled() {
            return;
        }
        let threshold = i64::try_from(self.config.down_after.as_millis()).unwrap_or(i64::MAX);
        let now = now_ms();
        let due: Vec<String> = outages
            .iter()
            .filter(|(_, o)| !o.alerted && now - o.down_ms >= threshold)
            .map(|(p, _)| p.clone())
            .collect();
        if due.is_empty() {
            return;
        }
        let routes = self.scheduler.primaries();
        for primary in due {
            // Routes to where notifications go are not primaries: no alerts for them.
            let Some(route) = routes.iter().find(|r| r.primary == primary && r.backed_up) else {
                outages.remove(&primary);
                continue;
            };
            if route.up {
                continue; // the up event is on its way
            }
            let Some(o) = outages.get_mut(&primary) else {
                continue;
            };
            o.alerted = true;
            let detail = format!(
                "has been down for {}; its mail is held (domains: {})",
                super::dashboard::duration((now - o.down_ms) / 1000),
                route.domains.join(", ")
            );
            queue(
                tx,
                payload(&self.hostname, "primary_down", &primary, now, &detail),
            );
        }
    }

    /// Sends alerts one by one, in order, retrying each.
    async fn deliver(self: Arc<Self>, mut rx: mpsc::Receiver<Alert>, mut shutdown: Shutdown) {
        while let Some(Alert { body: alert, to }) = rx.recv().await {
            info!(alert = %alert["text"].as_str().unwrap_or(""), tenant = matches!(to, Target::Tenant { .. }), "alert");
            // A tenant's webhook never sees the operator's token or private CA.
            let (email, url, bearer, ca_file) = match &to {
                Target::Operator => (
                    self.config.email.clone(),
                    self.config.webhook.clone(),
                    self.config.webhook_token.as_deref(),
                    self.config.webhook_ca_file.as_deref(),
                ),
                Target::Tenant { webhook, email } => (email.clone(), webhook.clone(), None, None),
            };
            if let Some(to) = &email {
                self.mail(to, &alert).await;
            }
            let Some(url) = url else {
                continue;
            };
            let body = alert.to_string();
            let mut delay = Duration::from_secs(1);
            for attempt in 1..=ATTEMPTS {
                let sent = crate::http::send(crate::http::Request {
                    bearer,
                    body: Some(crate::http::Body {
                        content_type: "application/json",
                        bytes: body.as_bytes(),
                    }),
                    dns: Some(&self.dns),
                    ca_file,
                    ..crate::http::Request::new("POST", &url, Duration::from_secs(10))
                })
                .await;
                match sent {
                    Ok(_) => break,
                    Err(e) if attempt == ATTEMPTS => {
                        error!(error = %e, "alert webhook failed {ATTEMPTS} times; alert dropped");
                    }
                    Err(e) => {
                        warn!(error = %e, attempt, retry_in_s = delay.as_secs(), "alert webhook failed");
                        tokio::select! {
                            _ = shutdown.wait() => return,
                            _ = tokio::time::sleep(delay) => {}
                        }
                        delay = (delay * 2).min(Duration::from_secs(60));
                    }
                }
            }
        }
    }

    /// Queues the alert as a mail (null sender, so nothing ever bounces back to mx2).
    async fn mail(&self, to: &str, alert: &serde_json::Value) {
        let text = alert["text"].as_str().unwrap_or("");
        let json = serde_json::to_string_pretty(alert).unwrap_or_default();
        let notice = crate::notice::Notice {
            to,
            subject: &format!("[mx2] {text}"),
            text: &format!("{text}\n\n{json}"),
            kind: "alert",
        };
        match crate::notice::queue(&*self.store, &self.scheduler, &self.hostname, notice).await {
            Ok(id) => info!(queue_id = %id, to = %to, "alert mail queued"),
            Err(e) => error!(error = %e, "cannot queue the alert mail"),
        }
    }
}
