//! The scheduler: decides what is due, hands jobs to per-route worker pools, keeps each
//! route's health, probes primaries that are down, and makes everything held for a primary due
//! the moment it answers again. It changes the queue only through the `Store` trait.

pub mod backoff;
mod callout;
pub mod concurrency;
pub mod notify;
mod operator;
pub mod route;

use crate::config::{Config, DomainRoute, TlsPolicy};
use crate::delivery::auth::Credentials;
use crate::delivery::client::{Client, Timeouts};
use crate::delivery::mx::{self, Identity, NoRoute, RouteKind, Target};
use crate::delivery::{Broken, Outcome, RecipientResult, deliver};
use crate::dns::Dns;
use crate::events::{Kind, OUTAGES_KEPT};
use crate::queue::{Job, OutageChange, ProbeTurn, RouteOutages, Status, Store, Update, now_ms};
use crate::shutdown::Shutdown;
use crate::smtp::Reply;
use crate::tasks::Tracker;
use crate::tls::ClientTls;
use concurrency::Concurrency;
use notify::{Context, Notifier};
use route::{Failure, Pushed, Route, Transition};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::Notify;
use tracing::{debug, error, info, warn};

/// Recipients claimed per store round trip.
const CLAIM_BATCH: usize = 256;
/// Jobs waiting in route queues beyond which the scheduler stops claiming more.
const MAX_QUEUED: usize = 2048;
/// The longest the scheduler sleeps without looking at the store.
const MAX_IDLE: Duration = Duration::from_secs(30);

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

/// Starting delivery on request (ETRN, the admin API's flush), for modules that may not
/// depend on the scheduler itself.
pub trait Flusher: Send + Sync {
    /// Makes everything held for these domains due now, treats their primaries as up, and
    /// returns how many recipients are pending for them.
    fn flush(
        &self,
        domains: Vec<String>,
    ) -> std::pin::Pin<
        Box<dyn std::future::Future<Output = Result<u64, crate::queue::StoreError>> + Send + '_>,
    >;
}

impl Scheduler {
    /// Where delivery outcomes teach the recipient policy.
    pub fn set_recipients(&self, r: Arc<crate::policy::recipients::Recipients>) {
        *self.recipients.write().unwrap_or_else(|p| p.into_inner()) = Some(r);
    }

    async fn learn(&self, domain: &str, address: &str, exists: bool) {
        let r = self
            .recipients
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        if let Some(r) = r {
            r.learn(domain, address, exists).await;
        }
    }

    fn notifier(&self) -> Arc<Notifier> {
        self.notifier
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Takes a reloaded configuration's domains: their routes (a route whose primaries, TLS
    /// policy and credentials are unchanged keeps its health and its waiting jobs) and bounce
    /// policies. Other settings need a restart.
    pub fn reconfigure(&self, config: &Config) -> Result<(), String> {
        let fresh = routes_for(config)?;
        let mut routes = self.routes.lock().unwrap_or_else(|p| p.into_inner());
        let old: HashMap<String, Arc<Route>> = routes
            .values()
            .map(|r| (r.key.clone(), r.clone()))
            .collect();
        let mut next = HashMap::new();
        for (domain, route) in fresh {
            let keep = old
                .get(&route.key)
                .filter(|o| o.auth == route.auth && o.domains == route.domains)
                .cloned();
            next.insert(domain, keep.unwrap_or(route));
        }
        *routes = next;
        *self.notifier.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(notifier_for(config));
        Ok(())
    }
}

impl Flusher for Scheduler {
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

/// What the scheduler, its workers and its probes share.
pub struct Scheduler {
    store: Arc<dyn Store>,
    settings: Settings,
    /// Domain → route. Domains with the same primaries share one route.
    routes: Mutex<HashMap<String, Arc<Route>>>,
    /// Opportunistic TLS, for routes made on the fly.
    default_tls: ClientTls,
    dns: Arc<Dns>,
    identity: Identity,
    mx_port: u16,
    notifier: std::sync::RwLock<Arc<Notifier>>,
    /// Recipient knowledge learned from deliveries goes here (replaced on reload).
    recipients: std::sync::RwLock<Option<Arc<crate::policy::recipients::Recipients>>>,
    wake: Arc<Notify>,
    shutdown: Shutdown,
    tasks: Tracker,
}

/// Bounce policies and delay warnings from the config.
fn notifier_for(config: &Config) -> Notifier {
    Notifier {
        hostname: config.hostname.clone(),
        delay_warning: config.queue.delay_warning,
        policies: config
            .domains
            .iter()
            .map(|d| (d.name.clone(), d.bounce.clone()))
            .collect(),
    }
}

/// Domain → route for the configured domains. Domains with the same static primaries, TLS
/// policy and credentials share one route; MX domains have their own. Fails when a domain's
/// TLS settings (CA file) cannot be loaded.
fn routes_for(config: &Config) -> Result<HashMap<String, Arc<Route>>, String> {
    // Domains with the same static primaries and TLS policy share one route; MX domains
    // have their own.
    let mut by_key: HashMap<String, (RouteKind, &crate::config::DomainConfig, Vec<String>)> =
        HashMap::new();
    for d in &config.domains {
        let kind = match &d.route {
            DomainRoute::Primary(hosts) => RouteKind::Static(hosts.clone()),
            DomainRoute::Mx => RouteKind::Mx {
                domain: d.name.clone(),
                backed_up: true,
            },
        };
        let mut key = Route::key_of(&kind);
        if d.tls != TlsPolicy::default() {
            key.push_str(&format!("|{:?}", d.tls));
        }
        if let Some(a) = &d.auth {
            key.push_str(&format!("|auth={}", a.user));
        }
        by_key
            .entry(key)
            .or_insert_with(|| (kind, d, Vec::new()))
            .2
            .push(d.name.clone());
    }
    let mut routes = HashMap::new();
    for (_, (kind, domain, domains)) in by_key {
        let tls = ClientTls::new(&domain.tls)
            .map_err(|e| format!("domain {}: {e}", domains.join(", ")))?;
        let auth = domain.auth.as_ref().map(|a| Credentials {
            user: a.user.clone(),
            password: a.password.clone(),
        });
        let concurrency = Concurrency::new(
            config.delivery.initial_connections_per_primary,
            config.delivery.max_connections_per_primary,
        );
        let route = Arc::new(Route::new(kind, domains.clone(), tls, concurrency).with_auth(auth));
        for d in domains {
            routes.insert(d, route.clone());
        }
    }
    Ok(routes)
}

fn ms(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
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
        let routes = routes_for(config)?;
        let identity = Identity {
            names: config.routing.my_names.iter().cloned().collect(),
            addrs: config.smtp.listen.clone(),
            extra: config.routing.my_addresses.iter().copied().collect(),
        };
        Ok(Arc::new(Self {
            store,
            settings: Settings::from_config(config),
            routes: Mutex::new(routes),
            default_tls: ClientTls::new(&TlsPolicy::default())?,
            dns,
            identity,
            mx_port: config.routing.mx_port,
            recipients: std::sync::RwLock::new(None),
            notifier: std::sync::RwLock::new(Arc::new(notifier_for(config))),
            wake,
            shutdown,
            tasks,
        }))
    }

    /// Every route's state, for status output.
    pub fn primaries(&self) -> Vec<route::Snapshot> {
        let mut all: Vec<_> = self.all_routes().iter().map(|r| r.snapshot()).collect();
        all.sort_by(|a, b| a.primary.cmp(&b.primary));
        all
    }

    fn all_routes(&self) -> Vec<Arc<Route>> {
        let routes = self.routes.lock().unwrap_or_else(|p| p.into_inner());
        // Routes are shared between domains; list each once.
        let mut seen = std::collections::HashSet::new();
        routes
            .values()
            .filter(|r| seen.insert(r.key.clone()))
            .cloned()
            .collect()
    }

    fn queued(&self) -> usize {
        self.all_routes().iter().map(|r| r.queued()).sum()
    }

    /// The route for a domain. A domain mx2 does not back up gets an MX route of its own: only
    /// mail mx2 generated itself (delivery status notifications) or mail held for a domain since
    /// removed from the config is addressed there.
    fn route_for(&self, domain: &str) -> Arc<Route> {
        let mut routes = self.routes.lock().unwrap_or_else(|p| p.into_inner());
        routes
            .entry(domain.to_string())
            .or_insert_with(|| {
                Arc::new(Route::new(
                    RouteKind::Mx {
                        domain: domain.to_string(),
                        backed_up: false,
                    },
                    vec![domain.to_string()],
                    self.default_tls.clone(),
                    Concurrency::new(
                        self.settings.initial_connections_per_primary,
                        self.settings.max_connections_per_primary,
                    ),
                ))
            })
            .clone()
    }

    /// Where a route delivers now.
    async fn targets(&self, route: &Route) -> Result<Vec<Target>, NoRoute> {
        mx::resolve(&route.kind, &self.dns, &self.identity, self.mx_port).await
    }

    /// The scheduler's loop; returns at shutdown.
    pub async fn run(self: Arc<Self>) {
        let mut shutdown = self.shutdown.clone();
        loop {
            if shutdown.is_shutdown() {
                break;
            }
            let mut more = false;
            if self.queued() < MAX_QUEUED {
                match self.store.claim_due(now_ms(), CLAIM_BATCH).await {
                    Ok(jobs) => {
                        more =
                            jobs.iter().map(|j| j.recipients.len()).sum::<usize>() >= CLAIM_BATCH;
                        for job in jobs {
                            self.dispatch(job).await;
                        }
                    }
                    Err(e) => error!(error = %e, "cannot read the queue; retrying in 1s"),
                }
            }
            if more && self.queued() < MAX_QUEUED {
                continue;
            }
            let pause = if self.queued() >= MAX_QUEUED {
                Duration::from_millis(50)
            } else {
                match self.store.next_due().await {
                    Ok(Some(t)) => Duration::from_millis(u64::try_from(t - now_ms()).unwrap_or(0))
                        .clamp(Duration::from_millis(5), MAX_IDLE),
                    Ok(None) => MAX_IDLE,
                    Err(_) => Duration::from_secs(1),
                }
            };
            tokio::select! {
                _ = shutdown.wait() => break,
                _ = self.wake.notified() => {}
                _ = tokio::time::sleep(pause) => {}
            }
        }
        debug!("scheduler stopped");
    }

    async fn dispatch(self: &Arc<Self>, job: Job) {
        let now = now_ms();
        if job
            .received_at_ms
            .saturating_add(ms(self.settings.lifetime))
            <= now
        {
            warn!(queue_id = %job.queue_id, domain = %job.domain, "message expired after the queue lifetime");
            let updates = job
                .recipients
                .iter()
                .map(|r| {
                    Update::new(
                        r.row,
                        Status::Expired,
                        false,
                        now,
                        Some("expired: queue lifetime exceeded".into()),
                    )
                })
                .collect();
            self.record(&job, updates, None, Context::default()).await;
            return;
        }
        let route = self.route_for(&job.domain);
        match route.push(job) {
            Pushed::Queued => {}
            Pushed::StartWorker => {
                let me = self.clone();
                self.tasks.spawn(async move { me.worker(route).await });
            }
            Pushed::Down(job) => {
                self.hold(&route, vec![job], "held: the primary is down")
                    .await
            }
        }
    }

    /// Releases a job's claim without counting an attempt.
    async fn put_back(&self, job: Job, next_attempt_ms: i64) {
        self.put_back_because(job, next_attempt_ms, None).await;
    }

    /// Like [`Scheduler::put_back`], noting why (shown by `mx2 queue show`).
    async fn put_back_because(&self, job: Job, next_attempt_ms: i64, why: Option<&str>) {
        let updates = job
            .recipients
            .iter()
            .map(|r| {
                Update::new(
                    r.row,
                    Status::Pending,
                    false,
                    next_attempt_ms,
                    why.map(str::to_string),
                )
            })
            .collect();
        self.record(&job, updates, None, Context::default()).await;
    }

    /// Records outcomes together with the notifications they call for. `body` is the
    /// message's content when the caller has it at hand.
    async fn record(
        &self,
        job: &Job,
        mut updates: Vec<Update>,
        body: Option<&[u8]>,
        cx: Context<'_>,
    ) {
        let queue_id = job.queue_id.as_str();
        let notifier = self.notifier();
        let reports = notifier.reports(job, &mut updates, cx, now_ms());
        let mut notifications = Vec::new();
        if !reports.is_empty() {
            let loaded;
            let original = match body {
                Some(b) => b,
                None => {
                    loaded = self.store.body(queue_id).await.unwrap_or_default();
                    &loaded
                }
            };
            if let Some(m) = notifier.message(job, original, &reports, std::time::SystemTime::now())
            {
                info!(queue_id, dsn_id = %m.id, to = %m.recipients[0].address, recipients = reports.len(), "delivery status notification queued");
                crate::metrics::get().notification(reports[0].action.name());
                notifications.push(m);
            }
        }
        // A recipient that stays pending has a new due time the scheduler must look at.
        let pending =
            updates.iter().any(|u| u.status == Status::Pending) || !notifications.is_empty();
        let result = self
            .store
            .record(queue_id, updates.clone(), notifications.clone())
            .await;
        if pending {
            self.wake.notify_one();
        }
        match result {
            Ok(true) => info!(queue_id, "removed from the queue: every recipient is final"),
            Ok(false) => {}
            Err(e) => {
                // Disk full, say: keep trying in the background, or the recipients would stay
                // claimed (and undelivered) until the next restart.
                error!(queue_id, error = %e, "cannot record delivery results; retrying");
                let (store, wake, mut shutdown, id) = (
                    self.store.clone(),
                    self.wake.clone(),
                    self.shutdown.clone(),
                    queue_id.to_string(),
                );
                tokio::spawn(async move {
                    let mut delay = Duration::from_secs(1);
                    loop {
                        tokio::select! {
                            _ = shutdown.wait() => return,
                            _ = tokio::time::sleep(delay) => {}
                        }
                        match store
                            .record(&id, updates.clone(), notifications.clone())
                            .await
                        {
                            Ok(_) => {
                                info!(queue_id = %id, "delivery results recorded after all");
                                wake.notify_one();
                                return;
                            }
                            Err(e) => {
                                debug!(queue_id = %id, error = %e, "still cannot record delivery results")
                            }
                        }
                        delay = (delay * 2).min(Duration::from_secs(30));
                    }
                });
            }
        }
    }

    /// One connection's worth of deliveries on `route`, reconnecting after
    /// `messages_per_connection` messages; exits when the route's queue is empty.
    async fn worker(self: Arc<Self>, route: Arc<Route>) {
        let s = &self.settings;
        loop {
            let targets = match self.targets(&route).await {
                Ok(t) => t,
                Err(NoRoute::Hold(reason)) => {
                    self.route_failed(&route, &reason).await;
                    return;
                }
                Err(NoRoute::Fail(reply)) => {
                    self.route_refuses(&route, &reply).await;
                    return;
                }
            };
            let mut client = match self.open(&route, &targets, &s.timeouts).await {
                Ok(c) => c,
                Err(e) => {
                    self.connection_failed(&route, &e.to_string()).await;
                    return;
                }
            };
            let mut sent = 0;
            loop {
                if self.shutdown.is_shutdown() {
                    let now = now_ms();
                    for job in route.retire() {
                        self.put_back(job, now).await;
                    }
                    client.quit().await;
                    return;
                }
                let Some(job) = route.next_job() else {
                    client.quit().await;
                    return;
                };
                let wait = route.pace(s.max_messages_per_second, std::time::Instant::now());
                if !wait.is_zero() {
                    tokio::time::sleep(wait).await;
                }
                let body = match self.store.body(&job.queue_id).await {
                    Ok(b) => b,
                    Err(e) => {
                        error!(queue_id = %job.queue_id, error = %e, "cannot read the message content");
                        let later = self.after(&job, s.retry_min);
                        self.put_back(job, later).await;
                        continue;
                    }
                };
                match deliver(&mut client, &job, &body).await {
                    Ok(results) => {
                        if results.iter().any(|r| r.outcome == Outcome::Delivered) {
                            route.success(std::time::Instant::now());
                        }
                        let cx = Context {
                            relayed_without_dsn: !client.caps.dsn,
                            remote: Some(client.host.as_str()),
                        };
                        self.record_results(&job, &body, cx, results).await;
                        if client.closing {
                            // 421: the primary closed the channel. The job is deferred with
                            // the primary's words; the connection is gone, and a primary
                            // that sends people away is pushing back.
                            self.connection_failed(
                                &route,
                                "the primary closed the session with 421",
                            )
                            .await;
                            return;
                        }
                    }
                    Err(broken) => {
                        self.record_broken(&job, &client.host.to_string(), &broken)
                            .await;
                        self.connection_failed(&route, &broken.error.to_string())
                            .await;
                        return;
                    }
                }
                sent += 1;
                if sent >= s.messages_per_connection {
                    client.quit().await;
                    break;
                }
            }
        }
    }

    /// A connection failed: the primary pushes back (other connections still work) or is down.
    async fn connection_failed(self: &Arc<Self>, route: &Arc<Route>, reason: &str) {
        crate::metrics::get().connection_failures.inc();
        match route.fail_or_shrink(std::time::Instant::now()) {
            Failure::Shrunk => {
                info!(primary = %route.key, reason, connections = route.allowed(), "primary pushed back; fewer connections for a while");
            }
            Failure::Down(transition, jobs) => {
                self.went_down(route, reason, transition, jobs).await
            }
        }
    }

    /// The route cannot be used at all (DNS): mark it down, start its probe, put its jobs back.
    async fn route_failed(self: &Arc<Self>, route: &Arc<Route>, reason: &str) {
        let (transition, jobs) = route.fail();
        self.went_down(route, reason, transition, jobs).await;
    }

    async fn went_down(
        self: &Arc<Self>,
        route: &Arc<Route>,
        reason: &str,
        transition: Transition,
        jobs: Vec<Job>,
    ) {
        if transition == Transition::WentDown {
            warn!(primary = %route.key, reason, "primary is down; holding its mail and probing every {:?}", self.settings.probe_interval);
            self.began_outage(route, reason).await;
        } else {
            debug!(primary = %route.key, reason, "connection failed");
        }
        self.hold(route, jobs, &format!("held: {reason}")).await;
    }

    /// A route went down (a delivery or a check failed): tells the event log, the recorded
    /// history and the nodes sharing the queue, and starts probing it.
    pub(super) async fn began_outage(self: &Arc<Self>, route: &Arc<Route>, reason: &str) {
        let at_ms = route.since_ms();
        crate::events::get().record_at(
            at_ms,
            Kind::PrimaryDown {
                primary: route.key.clone(),
                reason: reason.to_string(),
            },
        );
        self.record_outage(&route.key, OutageChange::Began { at_ms })
            .await;
        if let Err(e) = self.store.primary_down(&route.key).await {
            warn!(primary = %route.key, error = %e, "cannot share the primary's health");
        }
        let me = self.clone();
        let r = route.clone();
        tokio::spawn(async move { me.probe(r, false).await });
    }

    /// A route answers again after `down_for`; `held` recipients were made due.
    async fn ended_outage(&self, route: &Route, down_for: Duration, held: u64) {
        let at_ms = route.since_ms();
        crate::events::get().record_at(
            at_ms,
            Kind::PrimaryUp {
                primary: route.key.clone(),
                down_for_s: down_for.as_secs(),
                held,
            },
        );
        self.record_outage(&route.key, OutageChange::Ended { at_ms, held })
            .await;
    }

    async fn record_outage(&self, route: &str, change: OutageChange) {
        if let Err(e) = self.store.record_outage(route, change).await {
            warn!(primary = route, error = %e, "cannot record the primary's health in the queue; after a restart it would be reported as it was before this change");
        }
    }

    /// Takes each configured primary's health and outage history as recorded before this
    /// process started. A primary last known down stays down (its mail held) and is probed
    /// at once; until a probe or a delivery confirms it, status shows the record marked
    /// stale. Call before [`Scheduler::run`], so no mail is handed to a primary known down.
    pub async fn restore_health(self: &Arc<Self>) {
        let recorded = match self.store.outages(OUTAGES_KEPT).await {
            Ok(r) => r,
            Err(e) => {
                warn!(error = %e, "cannot read the primaries' recorded health; every primary counts as up until a delivery or probe fails");
                return;
            }
        };
        let routes = self.all_routes();
        for RouteOutages {
            route: key,
            outages,
        } in recorded
        {
            let (Some(route), Some(last)) = (routes.iter().find(|r| r.key == key), outages.last())
            else {
                continue;
            };
            let (up, since_ms) = match last.up_ms {
                Some(up_ms) => (true, up_ms),
                None => (false, last.down_ms),
            };
            crate::events::get().restore(&key, outages);
            if route.restore(up, since_ms) == Transition::WentDown {
                info!(primary = %key, down_since_ms = since_ms, "primary was down when mx2 last ran; holding its mail and probing it now");
                let me = self.clone();
                let r = route.clone();
                tokio::spawn(async move { me.probe(r, true).await });
            }
        }
    }

    /// Puts jobs for a down route back, due when the probe finds the primary up again (then
    /// made due at once), retry_max from now, or when the job expires, whichever comes first.
    async fn hold(&self, route: &Route, jobs: Vec<Job>, why: &str) {
        if jobs.is_empty() {
            return;
        }
        for job in jobs {
            let later = self.after(&job, self.settings.retry_max);
            self.put_back_because(job, later, Some(why)).await;
        }
        // The probe may have found the primary up while these were still claimed (its
        // make_due skips claimed recipients): make them due now.
        if route.is_up() {
            if let Err(e) = self.store.make_due(route.domains.clone(), now_ms()).await {
                error!(primary = %route.key, error = %e, "cannot make held mail due");
            }
            self.wake.notify_one();
        }
    }

    /// The route's destination refuses all mail (null MX, no such domain): every queued job
    /// fails permanently.
    async fn route_refuses(&self, route: &Route, reply: &Reply) {
        let mut jobs = route.retire();
        warn!(primary = %route.key, reply = %reply, "destination refuses all mail");
        for job in jobs.drain(..) {
            let updates = job
                .recipients
                .iter()
                .map(|r| {
                    warn!(queue_id = %job.queue_id, rcpt = %r.address, reply = %reply, "failed permanently");
                    Update::new(r.row, Status::Failed, true, now_ms(), Some(reply.one_line()))
                })
                .collect();
            self.record(&job, updates, None, Context::default()).await;
        }
    }

    /// A session with the route's primary: its TLS policy and credentials, these timeouts.
    pub(super) async fn open(
        &self,
        route: &Route,
        targets: &[Target],
        t: &Timeouts,
    ) -> Result<Client, crate::delivery::client::ClientError> {
        Client::connect(
            targets,
            &self.settings.hostname,
            t,
            &route.tls,
            route.auth.as_ref(),
        )
        .await
    }

    /// One health check of a route: DNS, connect, banner, EHLO (and TLS and AUTH as the route
    /// requires), QUIT. A destination that refuses all mail (null MX) counts as reachable when
    /// `refusal_is_an_answer`, so held mail can fail for real.
    pub(super) async fn check(&self, route: &Route, refusal_is_an_answer: bool) -> bool {
        let s = &self.settings;
        match self.targets(route).await {
            Ok(targets) => match self.open(route, &targets, &s.probe_timeouts).await {
                Ok(client) => {
                    client.quit().await;
                    true
                }
                Err(e) => {
                    debug!(primary = %route.key, error = %e, "health check failed");
                    false
                }
            },
            Err(NoRoute::Fail(_)) => refusal_is_an_answer,
            Err(NoRoute::Hold(reason)) => {
                debug!(primary = %route.key, reason, "health check failed");
                false
            }
        }
    }

    /// Probes a down route every `probe_interval` (the first time at once when `at_once`)
    /// until it answers (banner and EHLO), then makes everything held for it due at once.
    async fn probe(self: Arc<Self>, route: Arc<Route>, at_once: bool) {
        let mut shutdown = self.shutdown.clone();
        let s = &self.settings;
        // New mail for the route waits for this probe (or retry_max, or its expiry) from the
        // start, as held mail does, instead of being claimed and put back one at a time.
        if let Err(e) = self
            .store
            .hold_new_mail(route.domains.clone(), Some(ms(s.retry_max.min(s.lifetime))))
            .await
        {
            error!(primary = %route.key, error = %e, "cannot hold new mail");
        }
        let mut wait = !at_once;
        loop {
            if wait {
                tokio::select! {
                    _ = shutdown.wait() => return,
                    _ = tokio::time::sleep(s.probe_interval) => {}
                }
            }
            wait = true;
            let ok = self.shared_check(&route).await;
            route.probed();
            if ok {
                let down_for = route.mark_up();
                if let Err(e) = self.store.hold_new_mail(route.domains.clone(), None).await {
                    error!(primary = %route.key, error = %e, "cannot stop holding new mail");
                }
                let due = self
                    .store
                    .make_due(route.domains.clone(), now_ms())
                    .await
                    .unwrap_or_else(|e| {
                        error!(primary = %route.key, error = %e, "cannot make held mail due");
                        0
                    });
                info!(primary = %route.key, down_for = ?down_for, recipients_due = due, "primary is up again; delivering what is held");
                self.ended_outage(&route, down_for, due).await;
                self.wake.notify_one();
                return;
            }
        }
    }

    /// A probe's check when nodes share the queue: one node probes per interval and tells
    /// the others; a node alone always probes.
    async fn shared_check(&self, route: &Route) -> bool {
        let turn = self
            .store
            .probe_turn(&route.key, ms(self.settings.probe_interval))
            .await
            .unwrap_or(ProbeTurn::Probe);
        match turn {
            ProbeTurn::Up => true,
            ProbeTurn::Wait => false,
            ProbeTurn::Probe => {
                let up = self.check(route, true).await;
                if up && let Err(e) = self.store.primary_up(&route.key).await {
                    warn!(primary = %route.key, error = %e, "cannot share the primary's health");
                }
                up
            }
        }
    }

    /// `delay` from now, but never after the job expires: the claim that finds it expired
    /// then comes at its lifetime (see [`backoff::next_attempt_at`]).
    fn after(&self, job: &Job, delay: Duration) -> i64 {
        backoff::next_attempt_at(now_ms(), delay, job.received_at_ms, self.settings.lifetime)
    }

    /// When to try a job again after `attempts_done` attempts failed.
    fn next_attempt(&self, job: &Job, attempts_done: u32) -> i64 {
        let s = &self.settings;
        self.after(
            job,
            backoff::retry_delay(attempts_done, s.retry_min, s.retry_max, fastrand::f64()),
        )
    }

    async fn record_results(
        &self,
        job: &Job,
        body: &[u8],
        cx: Context<'_>,
        results: Vec<RecipientResult>,
    ) {
        let host = cx.remote.unwrap_or("");
        let mut updates = Vec::with_capacity(results.len());
        for (r, rcpt) in results.iter().zip(&job.recipients) {
            let (status, next) = match r.outcome {
                Outcome::Delivered => {
                    crate::metrics::get().delivery("delivered");
                    self.learn(&job.domain, &r.address, true).await;
                    info!(queue_id = %job.queue_id, rcpt = %r.address, primary = host, reply = %r.reply, "delivered");
                    (Status::Delivered, now_ms())
                }
                Outcome::Failed => {
                    crate::metrics::get().delivery("failed");
                    if r.reply.contains(" 5.1.1 ") {
                        self.learn(&job.domain, &r.address, false).await;
                    }
                    warn!(queue_id = %job.queue_id, rcpt = %r.address, primary = host, reply = %r.reply, "failed permanently");
                    (Status::Failed, now_ms())
                }
                Outcome::Deferred => {
                    crate::metrics::get().delivery("deferred");
                    let next = self.next_attempt(job, rcpt.attempts + 1);
                    info!(queue_id = %job.queue_id, rcpt = %r.address, primary = host, reply = %r.reply, retry_in_s = (next - now_ms()) / 1000, "deferred");
                    (Status::Pending, next)
                }
            };
            updates.push(Update::new(
                r.row,
                status,
                true,
                next,
                Some(r.reply.clone()),
            ));
        }
        self.record(job, updates, Some(body), cx).await;
    }

    async fn record_broken(&self, job: &Job, host: &str, broken: &Broken) {
        if broken.after_dot {
            warn!(queue_id = %job.queue_id, primary = host, error = %broken.error, "no reply after the end of data: the primary may have the message; it will be sent again (RFC 1047 duplicate risk)");
        }
        let reply = broken.error.to_string();
        for _ in &job.recipients {
            crate::metrics::get().delivery("deferred");
        }
        let updates = job
            .recipients
            .iter()
            .map(|r| {
                info!(queue_id = %job.queue_id, rcpt = %r.address, primary = host, reply = %reply, "deferred");
                Update::new(r.row, Status::Pending, true, self.next_attempt(job, r.attempts + 1), Some(reply.clone()))
            })
            .collect();
        self.record(
            job,
            updates,
            None,
            Context {
                relayed_without_dsn: false,
                remote: Some(host),
            },
        )
        .await;
    }
}
