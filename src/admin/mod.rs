//! The admin HTTP server: the JSON API (`/api/v1/…`), Prometheus `/metrics`, the dashboard
//! at `/`, and `/healthz`. Every request but `/healthz` must name this server in `Host`, and
//! a state-changing one must be something a web page on another site cannot send
//! ([`guard`]); every request but `/healthz` needs the bearer token when one is configured
//! (a browser may give it as the password of HTTP Basic auth), or a tenant's token, which
//! reaches only that tenant's domains and mail ([`access`], [`scope`]). Domains and tenants
//! managed at run time are [`domains`] and `tenants`; fire drills are `drills`. Slow and idle connections are bounded
//! ([`listener`]). The web inbox (`crate::inbox::web`) is merged in at `/inbox/`, outside
//! the token check and the Host and forgery screen: its users log in with their own
//! credentials and its forms carry a session token. It reads the queue through the `Store` trait and acts through
//! the scheduler; it never touches SMTP.

pub mod access;
mod actions;
pub mod alerts;
mod api;
mod bodies;
pub mod dashboard;
pub mod domain_view;
pub mod domains;
mod drills;
pub mod guard;
pub mod history;
mod inbox;
pub mod listener;
mod metrics;
pub mod monitor;
pub mod scope;
mod tenants;

use crate::queue::{Depth, Stats, Store};
use crate::scheduler::Scheduler;
use crate::scheduler::route::Snapshot;
use crate::shutdown::Shutdown;
use access::Access;
use axum::Router;
use axum::extract::{Request, State};
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::SystemTime;
use tracing::info;

/// A listing filter from a URL query string (`domain=x&state=held`), as the API reads it.
pub fn api_filter(query: &str) -> Result<crate::queue::Filter, String> {
    let pairs = form_urlencoded::parse(query.as_bytes())
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect();
    api::filter_from(&pairs)
}

/// Reloads the configuration (SIGHUP, `mx2 reload`); Ok says what changed.
pub trait Reload: Send + Sync {
    fn reload(&self) -> Pin<Box<dyn Future<Output = Result<String, String>> + Send + '_>>;
}

/// What the admin server works with.
pub struct Admin {
    pub store: Arc<dyn Store>,
    pub scheduler: Arc<Scheduler>,
    pub hostname: String,
    pub started: SystemTime,
    /// This server's embedded queue directory (None on PostgreSQL), so `mx2` commands can
    /// tell whether the API they reached serves the queue their config names.
    pub state_dir: Option<String>,
    /// The embedded queue's identity (its marker), compared by `mx2` commands before paths.
    pub queue_id: Option<String>,
    pub token: Option<String>,
    /// Names besides its addresses and `localhost` that requests may give in `Host`
    /// (`admin.allowed_hosts`).
    pub allowed_hosts: Vec<String>,
    pub reloader: Arc<dyn Reload>,
    pub history: Arc<history::History>,
    /// Domains and tenants managed at run time.
    pub registry: Arc<crate::registry::Registry>,
    /// For the ownership check of stored domains (`POST /api/v1/domains/NAME/verify`).
    pub dns: Arc<crate::dns::Dns>,
    /// Fire drills (`/api/v1/drills`).
    pub driller: Arc<crate::drill::Driller>,
    /// How long a one-time inbox login code works (`[inbox] code_validity`).
    pub inbox_code_validity: std::time::Duration,
    /// The web inbox, served at `/inbox/` outside the token check (its users log in
    /// themselves), when the inbox is on.
    pub web_inbox: Option<Arc<crate::inbox::web::Web>>,
    /// The emergency inbox, when on: which domains have one (invites go only there).
    pub inbox: Option<Arc<crate::inbox::Inbox>>,
}

/// One primary (route) with what the queue holds for it.
#[derive(Debug, Clone, Serialize)]
pub struct PrimaryStatus {
    #[serde(flatten)]
    pub route: Snapshot,
    /// Messages and recipients waiting for this primary (held ones included).
    pub messages: u64,
    pub recipients: u64,
    pub held_by_operator: u64,
    pub bytes: u64,
    pub oldest_ms: Option<i64>,
    pub oldest_age_s: Option<i64>,
    pub outages: Vec<crate::events::Outage>,
}

/// The whole picture: `GET /api/v1/status`, `mx2 status`, the dashboard.
#[derive(Debug, Clone, Serialize)]
pub struct Status {
    pub hostname: String,
    pub state_dir: Option<String>,
    pub version: &'static str,
    pub uptime_s: u64,
    /// Whether SMTP is in stress mode (connections above `stress_threshold`, short waits).
    pub smtp_stress: bool,
    pub queue: QueueTotals,
    pub primaries: Vec<PrimaryStatus>,
    pub domains: Vec<Depth>,
}

#[derive(Debug, Clone, Serialize)]
pub struct QueueTotals {
    pub messages: u64,
    pub recipients: u64,
    pub bytes: u64,
    pub oldest_age_s: Option<i64>,
}

/// What the queue holds for some domains, summed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Usage {
    pub messages: u64,
    pub recipients: u64,
    pub held: u64,
    pub bytes: u64,
    pub oldest_ms: Option<i64>,
}

impl Usage {
    /// The sum over these domains (a message with recipients in two of them counts twice).
    pub fn of<'d>(depth: impl Iterator<Item = &'d Depth>) -> Usage {
        depth.fold(Usage::default(), |u, d| Usage {
            messages: u.messages + d.messages,
            recipients: u.recipients + d.recipients,
            held: u.held + d.held,
            bytes: u.bytes + d.bytes,
            oldest_ms: match (u.oldest_ms, d.oldest_ms) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            },
        })
    }
}

/// Seconds since `ms` (never negative).
fn age_s(ms: Option<i64>) -> Option<i64> {
    let now = crate::queue::now_ms();
    ms.map(|t| ((now - t) / 1000).max(0))
}

impl Admin {
    /// Seconds since this process started serving.
    pub fn uptime_s(&self) -> u64 {
        self.started.elapsed().map(|d| d.as_secs()).unwrap_or(0)
    }

    /// The operator's whole picture (a tenant's: [`Admin::status_in`]).
    pub async fn status(&self) -> Result<Status, crate::queue::StoreError> {
        let Stats {
            messages,
            pending_recipients,
            bytes,
        } = self.store.stats().await?;
        let domains = self.store.depth().await?;
        let events = crate::events::get();
        let primaries = self
            .scheduler
            .primaries()
            .into_iter()
            .map(|route| {
                let u = Usage::of(domains.iter().filter(|d| route.domains.contains(&d.domain)));
                PrimaryStatus {
                    messages: u.messages,
                    recipients: u.recipients,
                    held_by_operator: u.held,
                    bytes: u.bytes,
                    oldest_ms: u.oldest_ms,
                    oldest_age_s: age_s(u.oldest_ms),
                    outages: events.outages(&route.primary),
                    route,
                }
            })
            .collect();
        Ok(Status {
            hostname: self.hostname.clone(),
            state_dir: self.state_dir.clone(),
            version: env!("CARGO_PKG_VERSION"),
            uptime_s: self.uptime_s(),
            smtp_stress: crate::metrics::get().smtp_stress.get() != 0,
            queue: QueueTotals {
                messages,
                recipients: pending_recipients,
                bytes,
                oldest_age_s: age_s(domains.iter().filter_map(|d| d.oldest_ms).min()),
            },
            primaries,
            domains,
        })
    }
}

/// Compares without leaking where the first difference is.
fn same_secret(a: &[u8], b: &[u8]) -> bool {
    subtle::ConstantTimeEq::ct_eq(a, b).into()
}

/// The token a request carries: `Authorization: Bearer T`, or Basic with T as password.
fn presented(req: &Request) -> Option<Vec<u8>> {
    let h = req.headers().get(header::AUTHORIZATION)?.to_str().ok()?;
    if let Some(t) = h.strip_prefix("Bearer ") {
        return Some(t.trim().as_bytes().to_vec());
    }
    let b64 = h.strip_prefix("Basic ")?;
    // Padding optional, as browsers and curl may leave it out.
    const BASIC: base64::engine::GeneralPurpose = base64::engine::GeneralPurpose::new(
        &base64::alphabet::STANDARD,
        base64::engine::GeneralPurposeConfig::new()
            .with_decode_padding_mode(base64::engine::DecodePaddingMode::Indifferent),
    );
    let decoded = base64::Engine::decode(&BASIC, b64.trim()).ok()?;
    let colon = decoded.iter().position(|&b| b == b':')?;
    Some(decoded[colon + 1..].to_vec())
}

/// Who the request acts for: the operator's token (or none configured) is the operator, a
/// tenant's token its tenant; a tenant asking for what is not its own gets a 404.
async fn authenticate(State(a): State<Arc<Admin>>, mut req: Request, next: Next) -> Response {
    if req.uri().path() == "/healthz" {
        return next.run(req).await;
    }
    let token = presented(&req);
    let operator = match (&a.token, &token) {
        (None, _) => true,
        (Some(ours), Some(t)) => same_secret(t, ours.as_bytes()),
        (Some(_), None) => false,
    };
    // A tenant's token decides even where no operator token is configured: its holder is
    // that tenant, never the operator.
    let tenant = token.as_ref().and_then(|t| {
        a.registry
            .snapshot()
            .tenant_for_token(t)
            .map(str::to_string)
    });
    let access = match tenant {
        Some(t) if !(operator && a.token.is_some()) => Access::Tenant(t),
        _ if operator => Access::Operator,
        _ => {
            let mut r = api::error(
                StatusCode::UNAUTHORIZED,
                "this needs a token: send `Authorization: Bearer TOKEN` (the operator's token is in the file admin.token_file names; a tenant's comes from `mx2 tenant token`)",
            );
            r.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static(
                    "Basic realm=\"mx2 admin (any user name, the token as password)\"",
                ),
            );
            return r;
        }
    };
    if matches!(access, Access::Tenant(_)) && !access::tenant_may(req.method(), req.uri().path()) {
        return api::error(StatusCode::NOT_FOUND, access::NOT_FOUND);
    }
    req.extensions_mut().insert(access);
    next.run(req).await
}

/// A header's value as text; one that is not text reads as a value nothing accepts.
fn text(v: &HeaderValue) -> &str {
    v.to_str().unwrap_or("\u{fffd}")
}

/// Refuses requests that do not name this server (DNS rebinding) and state-changing ones a
/// page on another site could have sent (CSRF): see [`guard`].
async fn screen(State(a): State<Arc<Admin>>, req: Request, next: Next) -> Response {
    let hosts = guard::Hosts {
        names: &a.allowed_hosts,
        local: req.extensions().get::<guard::Local>().map(|l| l.0),
    };
    if req.uri().path() != "/healthz"
        && let Some(name) = foreign_host(&req, &hosts)
    {
        return api::error(
            StatusCode::MISDIRECTED_REQUEST,
            &guard::wrong_host(name, &hosts),
        );
    }
    if !matches!(*req.method(), Method::GET | Method::HEAD) {
        let h = req.headers();
        let claims = guard::Claims {
            host: h.get(header::HOST).map(text),
            origin: h.get(header::ORIGIN).map(text),
            sec_fetch_site: h.get("sec-fetch-site").map(text),
            content_type: h.get(header::CONTENT_TYPE).map(text),
            marked: h.contains_key(guard::REQUEST_HEADER),
        };
        if let Err(why) = guard::forgery_check(&claims, &hosts) {
            return api::error(StatusCode::FORBIDDEN, &why);
        }
    }
    next.run(req).await
}

/// The first name the request gives (`Host`, or an absolute request target) that is not
/// this server's.
fn foreign_host<'r>(req: &'r Request, hosts: &guard::Hosts<'_>) -> Option<&'r str> {
    req.headers()
        .get_all(header::HOST)
        .iter()
        .map(text)
        .chain(req.uri().authority().map(|a| a.as_str()))
        .find(|name| !guard::host_allowed(name, hosts))
}

async fn healthz(State(a): State<Arc<Admin>>) -> Response {
    match a.store.stats().await {
        Ok(_) => (StatusCode::OK, "ok\n").into_response(),
        Err(e) => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("queue unavailable: {e}\n"),
        )
            .into_response(),
    }
}

pub fn router(admin: Arc<Admin>) -> Router {
    let web_inbox = admin.web_inbox.clone();
    let app = Router::new()
        .route("/healthz", axum::routing::get(healthz))
        .route("/metrics", axum::routing::get(metrics::render))
        .route("/", axum::routing::get(dashboard::render))
        .merge(api::routes())
        .merge(domains::routes())
        .merge(drills::routes())
        .merge(tenants::routes())
        .merge(inbox::routes())
        .layer(axum::middleware::from_fn_with_state(
            admin.clone(),
            authenticate,
        ))
        .layer(axum::middleware::from_fn_with_state(admin.clone(), screen))
        .with_state(admin);
    // Merged after the layers: they do not apply to it.
    match web_inbox {
        Some(w) => app.merge(crate::inbox::web::routes(w)),
        None => app,
    }
}

/// Serves the admin API on `listener` until shutdown.
pub async fn serve(listener: tokio::net::TcpListener, admin: Arc<Admin>, shutdown: Shutdown) {
    if let Ok(a) = listener.local_addr() {
        info!(address = %a, token = admin.token.is_some(), allowed_hosts = ?admin.allowed_hosts, "admin API, /metrics and dashboard listening");
    }
    listener::run(listener, router(admin), listener::LIMITS, None, shutdown).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_compare_whole() {
        assert!(same_secret(b"abc", b"abc"));
        assert!(!same_secret(b"abc", b"abd"));
        assert!(!same_secret(b"abc", b"abcd"));
        assert!(!same_secret(b"", b"a"));
    }
}
