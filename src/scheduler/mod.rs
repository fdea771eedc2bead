//! The scheduler: decides what is due, hands jobs to per-route worker pools, keeps each
//! route's health, probes primaries that are down, and makes everything held for a primary due
//! the moment it answers again. It changes the queue only through the `Store` trait.
//!
//! This file is the [`Scheduler`]'s public face and wiring: the type, its construction and
//! reload, status output and flushing. Each job lives in its own file:
//! - `settings`: what the scheduler takes from the config;
//! - `routes`: the domain → route table; `route`: one route's health and queue;
//! - `claim`: the claim loop that hands due jobs to routes;
//! - `worker`: a route's connections delivering its jobs, and what their failures mean;
//! - `sts`: a connection under the destination's MTA-STS policy, counted for TLS reports;
//! - `probe`: outages, probing down primaries, health checks, health restored at start;
//! - `record`: what each recipient becomes after an attempt (pure);
//! - `commit`: writing those rows and their notifications to the queue, retrying if it fails;
//! - `bounce`: which outcomes call for a delivery status notification, and the notification;
//! - `callout` and `operator`: what the recipient policy and the operators ask of it;
//! - `backoff` and `concurrency`: the retry schedule and a route's connection limit (pure).
//!
//! Nothing here may phrase an SMTP reply to a client or read a file.

pub mod backoff;
mod bounce;
mod callout;
mod claim;
mod commit;
pub mod concurrency;
mod operator;
mod probe;
mod record;
pub mod route;
mod routes;
mod settings;
mod sts;
mod worker;

pub use settings::Settings;

use crate::config::{Config, TlsMode, TlsPolicy};
use crate::delivery::mx::Identity;
use crate::dns::Dns;
use crate::queue::{Store, now_ms};
use crate::shutdown::Shutdown;
use crate::tasks::Tracker;
use crate::tls::ClientTls;
use bounce::Bouncer;
use route::Route;
use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock};
use tokio::sync::Notify;
use tracing::{info, warn};

/// What the scheduler, its workers and its probes share.
pub struct Scheduler {
    store: Arc<dyn Store>,
    settings: Settings,
    /// Domain → route. Domains with the same primaries share one route.
    routes: Mutex<HashMap<String, Arc<Route>>>,
    /// For routes made on the fly (senders' MX hosts): DANE where published, else their
    /// MTA-STS policy, else opportunistic TLS.
    default_tls: ClientTls,
    /// MTA-STS policies (cached in the store) and the certificate check they require.
    sts: crate::delivery::mta_sts::Policies,
    sts_tls: ClientTls,
    /// Counts sessions under a policy for the daily TLS reports.
    tls_reports: crate::tlsrpt::Recorder,
    dns: Arc<Dns>,
    identity: Identity,
    mx_port: u16,
    bouncer: RwLock<Arc<Bouncer>>,
    /// Domains with a lifetime of their own (`lifetime` in `[[domain]]`).
    lifetimes: RwLock<Arc<HashMap<String, std::time::Duration>>>,
    /// Recipient knowledge learned from deliveries goes here (replaced on reload).
    recipients: RwLock<Option<Arc<crate::policy::recipients::Recipients>>>,
    /// Wakes the claim loop.
    wake: Arc<Notify>,
    shutdown: Shutdown,
    tasks: Tracker,
}

/// Bounce policies and delay warnings from the config.
fn bouncer_for(config: &Config) -> Bouncer {
    Bouncer {
        hostname: config.hostname.clone(),
        delay_warning: config.queue.delay_warning,
        policies: config
            .domains
            .iter()
            .map(|d| (d.name.clone(), d.bounce.clone()))
            .collect(),
    }
}

/// The domains with a lifetime of their own.
fn lifetimes_for(config: &Config) -> HashMap<String, std::time::Duration> {
    config
        .domains
        .iter()
        .filter_map(|d| d.limits.lifetime.map(|l| (d.name.clone(), l)))
        .collect()
}

impl Scheduler {
    /// `wake` is notified by whoever makes something due (a new message, ETRN, a flush).
    /// Fails when a domain's TLS settings cannot be loaded (CA file).
    pub fn new(
        config: &Config,
        store: Arc<dyn Store>,
        dns: Arc<Dns>,
        wake: Arc<Notify>,
        shutdown: Shutdown,
        tasks: Tracker,
    ) -> Result<Arc<Self>, String> {
        let routes = routes::routes_for(config)?;
        let identity = Identity::of(config);
        let sts_ca = config.delivery.mta_sts_ca_file.clone();
        let sts_tls = ClientTls::new(&TlsPolicy {
            mode: TlsMode::Verify,
            ca_file: sts_ca.clone(),
            pin: None,
        })
        .map_err(|e| format!("[delivery] mta_sts_ca_file: {e}"))?;
        Ok(Arc::new(Self {
            sts: crate::delivery::mta_sts::Policies::new(dns.clone(), store.clone(), sts_ca),
            sts_tls,
            tls_reports: crate::tlsrpt::Recorder::new(store.clone(), config.tls_reports.enabled),
            store,
            settings: Settings::from_config(config),
            routes: Mutex::new(routes),
            default_tls: ClientTls::new(&TlsPolicy {
                mode: TlsMode::mx_default(),
                ..TlsPolicy::default()
            })?,
            dns,
            identity,
            mx_port: config.routing.mx_port,
            recipients: RwLock::new(None),
            bouncer: RwLock::new(Arc::new(bouncer_for(config))),
            lifetimes: RwLock::new(Arc::new(lifetimes_for(config))),
            wake,
            shutdown,
            tasks,
        }))
    }

    /// Where delivery outcomes teach the recipient policy.
    pub fn set_recipients(&self, r: Arc<crate::policy::recipients::Recipients>) {
        *self.recipients.write().unwrap_or_else(|p| p.into_inner()) = Some(r);
    }

    /// Takes a reloaded configuration's domains: their routes (a route whose primaries, TLS
    /// policy and credentials are unchanged keeps its health and its waiting jobs) and bounce
    /// policies. Other settings need a restart.
    pub fn reconfigure(&self, config: &Config) -> Result<(), String> {
        let fresh = routes::routes_for(config)?;
        let mut routes = self.routes.lock().unwrap_or_else(|p| p.into_inner());
        *routes = routes::merge(&routes, fresh);
        *self.bouncer.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(bouncer_for(config));
        *self.lifetimes.write().unwrap_or_else(|p| p.into_inner()) =
            Arc::new(lifetimes_for(config));
        Ok(())
    }

    /// How long mail for `domain` is kept: its own lifetime, or `[queue] lifetime`.
    pub(crate) fn lifetime(&self, domain: &str) -> std::time::Duration {
        self.lifetimes
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(domain)
            .copied()
            .unwrap_or(self.settings.lifetime)
    }

    /// Every route's state, for status output.
    pub fn primaries(&self) -> Vec<route::Snapshot> {
        let mut all: Vec<_> = self.all_routes().iter().map(|r| r.snapshot()).collect();
        all.sort_by(|a, b| a.primary.cmp(&b.primary));
        all
    }
}

impl crate::inbound::Flusher for Scheduler {
    fn flush(
        &self,
        domains: Vec<String>,
    ) -> std::pin::Pin<
        Box<dyn std::future::Future<Output = Result<u64, crate::queue::StoreError>> + Send + '_>,
    > {
        Box::pin(async move {
            let mut came_up = Vec::new();
            for d in &domains {
                let route = self.route_for(d);
                if !route.is_up() {
                    let down_for = route.mark_up();
                    info!(primary = %route.key, "flush requested: treating the primary as up");
                    came_up.push((route.clone(), down_for));
                    // Nodes sharing the queue learn it too.
                    if let Err(e) = self.store.primary_up(&route.key).await {
                        warn!(primary = %route.key, error = %e, "cannot share the primary's health");
                    }
                }
            }
            self.store.hold_new_mail(domains.clone(), None).await?;
            let n = self.store.make_due(domains, now_ms()).await?;
            for (route, down_for) in came_up {
                self.ended_outage(&route, down_for, n).await;
            }
            self.wake.notify_one();
            Ok(n)
        })
    }
}
