//! The dashboard at `/`: server-rendered HTML (askama, no JavaScript, no CDN, refreshes
//! itself every 10 s): each primary with its state and outage timeline, the queue's depth
//! over the last hours as an inline SVG chart, each domain's last fire drill, the oldest messages, recent events. A tenant
//! sees its own domains only (the same [`super::scope`] as the API).

use super::Admin;
use super::access::Access;
use super::history::polyline;
use super::scope::Scope;
use askama::Template;
use axum::Extension;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{Html, IntoResponse, Response};
use std::sync::Arc;

/// How a moment reads on the page: UTC time and how long ago.
fn ago(ms: i64) -> String {
    let now = crate::queue::now_ms();
    format!("{} ({} ago)", clock(ms), duration((now - ms).max(0) / 1000))
}

fn clock(ms: i64) -> String {
    let secs = ms.div_euclid(1000);
    let (h, m, s) = (secs / 3600 % 24, secs / 60 % 60, secs % 60);
    format!("{h:02}:{m:02}:{s:02} UTC")
}

/// `3d04h`, `2h05m`, `7m`, `12s`.
pub fn duration(s: i64) -> String {
    match s {
        ..60 => format!("{s}s"),
        60..3600 => format!("{}m{:02}s", s / 60, s % 60),
        3600..86_400 => format!("{}h{:02}m", s / 3600, s % 3600 / 60),
        _ => format!("{}d{:02}h", s / 86_400, s % 86_400 / 3600),
    }
}

/// `512 B`, `1.5 KiB`, `2.0 MiB`.
pub fn size(b: u64) -> String {
    match b {
        ..1024 => format!("{b} B"),
        1024..1_048_576 => format!("{:.1} KiB", b as f64 / 1024.0),
        _ => format!("{:.1} MiB", b as f64 / 1_048_576.0),
    }
}

struct PrimaryRow {
    name: String,
    up: bool,
    state: String,
    domains: String,
    held: String,
    oldest: String,
    rate: usize,
    connections: String,
    last_probe: String,
    outages: Vec<String>,
    /// Each of its domains' last fire drill: passed, and how it reads.
    drills: Vec<(bool, String)>,
}

struct MessageRow {
    id: String,
    age: String,
    sender: String,
    recipients: String,
    state: String,
    last_reply: String,
}

#[derive(Template)]
#[template(path = "dashboard.html")]
struct Page {
    hostname: String,
    version: &'static str,
    now: String,
    uptime: String,
    messages: u64,
    recipients: u64,
    bytes: String,
    oldest: String,
    down: usize,
    primaries: Vec<PrimaryRow>,
    chart_points: String,
    chart_max: u64,
    chart_span: String,
    oldest_messages: Vec<MessageRow>,
    events: Vec<(String, String)>,
}

async fn page(a: &Admin, scope: &Scope) -> Result<Page, crate::queue::StoreError> {
    let status = a.status_in(scope).await?;
    let oldest = a
        .list_in(
            scope,
            crate::queue::Filter {
                limit: 10,
                ..Default::default()
            },
        )
        .await?;
    let drills = a.store.drill_summaries().await?;
    let primaries: Vec<PrimaryRow> = status
        .primaries
        .iter()
        .map(|p| {
            let r = &p.route;
            PrimaryRow {
                name: r.primary.clone(),
                up: r.up,
                state: format!(
                    "{} since {}{}",
                    if r.up { "UP" } else { "DOWN" },
                    ago(r.since_ms),
                    if r.stale {
                        " (last known before mx2 started; not checked yet)"
                    } else {
                        ""
                    }
                ),
                domains: r.domains.join(", "),
                held: format!(
                    "{} messages, {} recipients, {}",
                    p.messages,
                    p.recipients,
                    size(p.bytes)
                ),
                oldest: p.oldest_age_s.map(duration).unwrap_or_else(|| "-".into()),
                rate: r.delivered_last_minute,
                connections: format!("{} of {}", r.connections, r.connections_allowed),
                last_probe: r.last_probe_ms.map(ago).unwrap_or_else(|| "-".into()),
                drills: drills
                    .iter()
                    .filter(|d| r.domains.contains(&d.last.domain))
                    .map(|d| {
                        let passed = d.last.outcome == crate::queue::DRILL_PASSED;
                        let age = duration((crate::queue::now_ms() - d.last.at_ms).max(0) / 1000);
                        (
                            passed,
                            format!("{} {} {age} ago", d.last.domain, d.last.outcome),
                        )
                    })
                    .collect(),
                outages: p
                    .outages
                    .iter()
                    .rev()
                    .map(|o| {
                        let mut line = format!("down {}", clock(o.down_ms));
                        if let Some(up) = o.up_ms {
                            line.push_str(&format!(
                                ", back {} after {}",
                                clock(up),
                                duration((up - o.down_ms) / 1000)
                            ));
                        } else {
                            line.push_str(", still down");
                        }
                        if let Some(h) = o.held {
                            line.push_str(&format!(", {h} recipients held"));
                        }
                        match (o.up_ms, o.drained_ms) {
                            (Some(up), Some(d)) => line.push_str(&format!(
                                ", drained in {:.1}s",
                                (d - up) as f64 / 1000.0
                            )),
                            (Some(_), None) => line.push_str(", draining"),
                            _ => {}
                        }
                        line
                    })
                    .collect(),
            }
        })
        .collect();
    // The chart is of the whole queue: the operator's.
    let samples = match scope {
        Scope::All => a.history.samples(),
        Scope::Domains(_) => Vec::new(),
    };
    let (chart_points, chart_max) = polyline(&samples, 800.0, 150.0);
    let chart_span = match (samples.first(), samples.last()) {
        (Some(f), Some(l)) => duration((l.at_ms - f.at_ms) / 1000),
        _ => "0s".into(),
    };
    Ok(Page {
        hostname: status.hostname.clone(),
        version: status.version,
        now: clock(crate::queue::now_ms()),
        uptime: duration(status.uptime_s as i64),
        messages: status.queue.messages,
        recipients: status.queue.recipients,
        bytes: size(status.queue.bytes),
        oldest: status
            .queue
            .oldest_age_s
            .map(duration)
            .unwrap_or_else(|| "-".into()),
        down: primaries.iter().filter(|p| !p.up).count(),
        primaries,
        chart_points,
        chart_max,
        chart_span,
        oldest_messages: oldest
            .into_iter()
            .map(|m| MessageRow {
                age: duration((crate::queue::now_ms() - m.received_at_ms).max(0) / 1000),
                sender: if m.sender.is_empty() {
                    "<>".into()
                } else {
                    m.sender
                },
                recipients: m.pending.join(", "),
                state: m.state.name().to_string(),
                last_reply: m.last_reply.unwrap_or_default(),
                id: m.id,
            })
            .collect(),
        events: a
            .events_in(scope)
            .into_iter()
            .take(30)
            .map(|e| {
                let text = e.kind.text();
                (clock(e.at_ms), text)
            })
            .collect(),
    })
}

pub async fn render(State(a): State<Arc<Admin>>, Extension(who): Extension<Access>) -> Response {
    match page(&a, &a.scope(&who)).await {
        Ok(p) => match p.render() {
            Ok(html) => Html(html).into_response(),
            Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
        },
        Err(e) => (StatusCode::SERVICE_UNAVAILABLE, e.to_string()).into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_well() {
        assert_eq!(duration(12), "12s");
        assert_eq!(duration(125), "2m05s");
        assert_eq!(duration(7500), "2h05m");
        assert_eq!(duration(3 * 86_400 + 4 * 3600), "3d04h");
        assert_eq!(size(2048), "2.0 KiB");
        assert_eq!(clock(3_723_000), "01:02:03 UTC");
    }
}
