//! `GET /metrics`: the process's counters (`crate::metrics`) and, computed now, the queue
//! per domain, each primary's state and each domain's last fire drill, in the OpenMetrics text format Prometheus reads.

use super::Admin;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use std::sync::Arc;

type Labels = Vec<(&'static str, String)>;

fn gauge_family(r: &mut Registry, name: &str, help: &str) -> Family<Labels, Gauge> {
    let f = Family::<Labels, Gauge>::default();
    r.register(name, help, f.clone());
    f
}

/// The whole exposition.
pub async fn text(a: &Admin) -> Result<String, crate::queue::StoreError> {
    let status = a.status().await?;
    let mut r = Registry::default();
    crate::metrics::get().register(&mut r);
    let messages = gauge_family(
        &mut r,
        "mx2_queue_messages",
        "Messages waiting, by recipient domain",
    );
    let recipients = gauge_family(
        &mut r,
        "mx2_queue_recipients",
        "Recipients waiting, by domain",
    );
    let held = gauge_family(
        &mut r,
        "mx2_queue_held_recipients",
        "Recipients held by an operator, by domain",
    );
    let bytes = gauge_family(
        &mut r,
        "mx2_queue_bytes",
        "Bytes of messages waiting, by domain",
    );
    let oldest = gauge_family(
        &mut r,
        "mx2_queue_oldest_message_age_seconds",
        "Age of the oldest waiting message, by domain",
    );
    for d in &status.domains {
        let l = vec![("domain", d.domain.clone())];
        messages.get_or_create(&l).set(d.messages as i64);
        recipients.get_or_create(&l).set(d.recipients as i64);
        held.get_or_create(&l).set(d.held as i64);
        bytes.get_or_create(&l).set(d.bytes as i64);
        if let Some(t) = d.oldest_ms {
            oldest
                .get_or_create(&l)
                .set(((crate::queue::now_ms() - t) / 1000).max(0));
        }
    }
    let total: Gauge = Gauge::default();
    total.set(status.queue.messages as i64);
    r.register(
        "mx2_queue_size_messages",
        "Messages in the queue, all domains",
        total,
    );
    let up = gauge_family(
        &mut r,
        "mx2_primary_up",
        "1 when the primary answers, 0 while it is down",
    );
    let changed = gauge_family(
        &mut r,
        "mx2_primary_last_change_timestamp_seconds",
        "When the primary last went up or down (Unix time)",
    );
    let stale = gauge_family(
        &mut r,
        "mx2_primary_up_stale",
        "1 while mx2_primary_up is the state recorded before mx2 started, not yet confirmed by a probe or a delivery",
    );
    let rate = gauge_family(
        &mut r,
        "mx2_primary_delivered_last_minute",
        "Messages delivered to the primary in the last minute (the drain rate)",
    );
    let connections = gauge_family(
        &mut r,
        "mx2_primary_connections",
        "Open delivery connections to the primary",
    );
    for p in &status.primaries {
        let l = vec![("primary", p.route.primary.clone())];
        up.get_or_create(&l).set(i64::from(p.route.up));
        changed.get_or_create(&l).set(p.route.since_ms / 1000);
        stale.get_or_create(&l).set(i64::from(p.route.stale));
        rate.get_or_create(&l)
            .set(p.route.delivered_last_minute as i64);
        connections
            .get_or_create(&l)
            .set(p.route.connections as i64);
    }
    drills(&mut r, &a.store.drill_summaries().await?);
    let mut out = String::new();
    encode(&mut out, &r).map_err(|e| crate::queue::StoreError::Backend(e.to_string()))?;
    Ok(out)
}

/// Each domain's last drill that ran: passed or not, when, how long it took.
fn drills(r: &mut Registry, summaries: &[crate::queue::DrillSummary]) {
    let success = gauge_family(
        r,
        "mx2_drill_success",
        "1 when the domain's last fire drill passed, 0 when it failed",
    );
    let last = gauge_family(
        r,
        "mx2_drill_last_timestamp_seconds",
        "When the domain's last fire drill ran (Unix time)",
    );
    let duration = Family::<Labels, Gauge<f64, std::sync::atomic::AtomicU64>>::default();
    r.register(
        "mx2_drill_duration_seconds",
        "How long the domain's last fire drill took",
        duration.clone(),
    );
    for s in summaries {
        let l = vec![("domain", s.last.domain.clone())];
        success
            .get_or_create(&l)
            .set(i64::from(s.last.outcome == crate::queue::DRILL_PASSED));
        last.get_or_create(&l).set(s.last.at_ms / 1000);
        duration
            .get_or_create(&l)
            .set(s.last.duration_ms as f64 / 1000.0);
    }
}

pub async fn render(State(a): State<Arc<Admin>>) -> Response {
    match text(&a).await {
        Ok(body) => (
            [(
                header::CONTENT_TYPE,
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
            )],
            body,
        )
            .into_response(),
        Err(e) => (StatusCode::SERVICE_UNAVAILABLE, e.to_string()).into_response(),
    }
}
