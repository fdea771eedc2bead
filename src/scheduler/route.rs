//! A route: the primary hosts that one or more domains deliver to, its health (up, or down
//! since when; after a restart, the last known health until a probe or a delivery confirms
//! it), and the jobs waiting for one of its connections.

use super::concurrency::Concurrency;
use crate::delivery::auth::Credentials;
use crate::delivery::mx::RouteKind;
use crate::queue::Job;
use crate::tls::ClientTls;
use std::collections::VecDeque;
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime};

pub struct Route {
    /// The route's name in logs: the hosts as configured, or `mx:domain`.
    pub key: String,
    pub kind: RouteKind,
    /// How connections on this route use TLS.
    pub tls: ClientTls,
    /// SMTP AUTH credentials for the primary, if it wants them.
    pub auth: Option<Credentials>,
    /// The domains that use this route.
    pub domains: Vec<String>,
    state: Mutex<State>,
}

struct State {
    queue: VecDeque<Job>,
    workers: usize,
    up: bool,
    since: SystemTime,
    probing: bool,
    /// `up` and `since` are what was recorded before a restart, not seen by this process yet.
    stale: bool,
    concurrency: Concurrency,
    /// With a rate cap: the earliest time the next message may start.
    next_slot: Option<Instant>,
    /// When the last health check ran (while down).
    last_probe: Option<SystemTime>,
    /// When messages were delivered in the last minute, for the drain rate.
    delivered: VecDeque<Instant>,
}

impl State {
    /// Counts one more worker if the concurrency allows it and a job is waiting for it.
    fn one_more_worker(&mut self) -> bool {
        let more = self.workers < self.concurrency.allowed() && self.workers < self.queue.len();
        if more {
            self.workers += 1;
        }
        more
    }

    /// Remembers a delivery for the drain rate.
    fn record_delivery(&mut self, now: Instant) {
        while self.delivered.len() >= RATE_SAMPLES
            || self
                .delivered
                .front()
                .is_some_and(|t| now.duration_since(*t) > RATE_WINDOW)
        {
            self.delivered.pop_front();
        }
        self.delivered.push_back(now);
    }
}

/// The window over which the drain rate is measured.
const RATE_WINDOW: Duration = Duration::from_secs(60);
/// Deliveries remembered for the rate (beyond this the rate reads low).
const RATE_SAMPLES: usize = 100_000;

/// A route as an operator sees it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Snapshot {
    pub primary: String,
    pub domains: Vec<String>,
    /// A route to a backed-up domain's primary (false: where notifications and alerts go).
    pub backed_up: bool,
    pub up: bool,
    /// Since when it has been up or down (ms since the epoch).
    pub since_ms: i64,
    /// `up` and `since_ms` are the last known state, recorded before this process started;
    /// no probe or delivery has confirmed them yet.
    pub stale: bool,
    pub last_probe_ms: Option<i64>,
    pub connections: usize,
    pub connections_allowed: usize,
    /// Messages delivered in the last minute.
    pub delivered_last_minute: usize,
}

/// What a failed connection means for the route.
#[derive(Debug, PartialEq, Eq)]
pub enum Failure {
    /// Other connections are still working: the primary is pushing back. The worker is
    /// retired and the route allows fewer connections for a while.
    Shrunk,
    /// It was the last connection: the route is down (see [`Route::fail`]).
    Down(Transition, Vec<Job>),
}

/// What [`Route::push`] asks the caller to do.
#[derive(Debug, PartialEq, Eq)]
pub enum Pushed {
    /// Queued; a worker will take it.
    Queued,
    /// Queued, and a new worker must be started for it.
    StartWorker,
    /// The route is down: the job was not queued.
    Down(Job),
}

/// What a route's health change asks the caller to do.
#[derive(Debug, PartialEq, Eq)]
pub enum Transition {
    /// It was up: now down, and a probe must be started.
    WentDown,
    /// No change worth telling.
    Same,
}

impl Route {
    /// The name under which routes are shared and logged.
    pub fn key_of(kind: &RouteKind) -> String {
        match kind {
            RouteKind::Static(hosts) => hosts
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(","),
            RouteKind::Mx { domain, .. } => format!("mx:{domain}"),
        }
    }

    pub fn new(
        kind: RouteKind,
        domains: Vec<String>,
        tls: ClientTls,
        concurrency: Concurrency,
    ) -> Self {
        Self {
            key: Self::key_of(&kind),
            kind,
            tls,
            auth: None,
            domains,
            state: Mutex::new(State {
                queue: VecDeque::new(),
                workers: 0,
                up: true,
                since: SystemTime::now(),
                probing: false,
                stale: false,
                concurrency,
                next_slot: None,
                last_probe: None,
                delivered: VecDeque::new(),
            }),
        }
    }

    pub fn with_auth(mut self, auth: Option<Credentials>) -> Self {
        self.auth = auth;
        self
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Queues a job for delivery, asking for one more worker when the queue outgrows the
    /// workers and the route's current concurrency allows.
    pub fn push(&self, job: Job) -> Pushed {
        let mut s = self.lock();
        if !s.up {
            return Pushed::Down(job);
        }
        s.queue.push_back(job);
        if s.one_more_worker() {
            Pushed::StartWorker
        } else {
            Pushed::Queued
        }
    }

    /// The next job for a worker; None retires the worker (atomically with the check, so no
    /// job is left behind without a worker).
    pub fn next_job(&self) -> Option<Job> {
        let mut s = self.lock();
        let job = s.queue.pop_front();
        if job.is_none() {
            s.workers -= 1;
        }
        job
    }

    /// A connection failed. With other connections still open the primary is pushing back:
    /// shrink. Otherwise the route is down.
    pub fn fail_or_shrink(&self, now: Instant) -> Failure {
        {
            let mut s = self.lock();
            if s.workers > 1 {
                s.workers -= 1;
                s.concurrency.overload(now);
                return Failure::Shrunk;
            }
        }
        let (t, jobs) = self.fail();
        Failure::Down(t, jobs)
    }

    /// A message went through: the route may grow. True when the caller should start one
    /// more worker: the concurrency grew and jobs are waiting (after an outage the whole
    /// backlog may be queued while only the initial workers run; waiting for the next push
    /// to grow kept a drain of large messages at two connections throughout).
    pub fn success(&self, now: Instant) -> bool {
        let mut s = self.lock();
        s.stale = false;
        s.concurrency.success(now);
        s.record_delivery(now);
        s.up && s.one_more_worker()
    }

    /// A health check ran.
    pub fn probed(&self) {
        let mut s = self.lock();
        s.last_probe = Some(SystemTime::now());
        s.stale = false;
    }

    /// Takes the health recorded before a restart (up or down since `since_ms`), marked as
    /// last known until a probe or a delivery confirms it. Returns `WentDown` when the route
    /// was down: the caller starts its probe.
    pub fn restore(&self, up: bool, since_ms: i64) -> Transition {
        let mut s = self.lock();
        s.since =
            std::time::UNIX_EPOCH + Duration::from_millis(u64::try_from(since_ms).unwrap_or(0));
        s.stale = true;
        if up || !s.up {
            s.up = up;
            return Transition::Same;
        }
        s.up = false;
        s.probing = true;
        Transition::WentDown
    }

    pub fn snapshot(&self) -> Snapshot {
        let s = self.lock();
        let now = Instant::now();
        Snapshot {
            primary: self.key.clone(),
            domains: self.domains.clone(),
            backed_up: match &self.kind {
                RouteKind::Static(_) => true,
                RouteKind::Mx { backed_up, .. } => *backed_up,
            },
            up: s.up,
            since_ms: crate::queue::to_ms(s.since),
            stale: s.stale,
            last_probe_ms: s.last_probe.map(crate::queue::to_ms),
            connections: s.workers,
            connections_allowed: s.concurrency.allowed(),
            delivered_last_minute: s
                .delivered
                .iter()
                .filter(|t| now.duration_since(**t) <= RATE_WINDOW)
                .count(),
        }
    }

    /// How long to wait before the next message under a rate cap of `per_second`.
    pub fn pace(&self, per_second: Option<f64>, now: Instant) -> Duration {
        let Some(rate) = per_second.filter(|r| *r > 0.0) else {
            return Duration::ZERO;
        };
        let mut s = self.lock();
        let slot = s.next_slot.map_or(now, |t| t.max(now));
        s.next_slot = Some(slot + Duration::from_secs_f64(1.0 / rate));
        slot - now
    }

    /// Connections allowed now.
    pub fn allowed(&self) -> usize {
        self.lock().concurrency.allowed()
    }

    /// A worker gives up (connection failed): retire it, mark the route down, and hand back
    /// every queued job so the caller can put them back in the store.
    pub fn fail(&self) -> (Transition, Vec<Job>) {
        let mut s = self.lock();
        s.workers -= 1;
        let jobs: Vec<Job> = s.queue.drain(..).collect();
        (Self::down(&mut s), jobs)
    }

    /// A health check (not a delivery) found the primary unreachable.
    pub fn mark_down(&self) -> Transition {
        Self::down(&mut self.lock())
    }

    fn down(s: &mut State) -> Transition {
        s.stale = false;
        if s.up {
            s.up = false;
            s.since = SystemTime::now();
            if s.probing {
                Transition::Same
            } else {
                s.probing = true;
                Transition::WentDown
            }
        } else {
            Transition::Same
        }
    }

    /// A worker stops early (shutdown): retire it and hand back the queued jobs.
    pub fn retire(&self) -> Vec<Job> {
        let mut s = self.lock();
        s.workers -= 1;
        s.queue.drain(..).collect()
    }

    /// The probe reached the primary. Returns how long it was down.
    pub fn mark_up(&self) -> std::time::Duration {
        let mut s = self.lock();
        if !s.up {
            // Connections that failed as the primary went down were the outage, not
            // push-back: the drain starts from the initial concurrency, free to grow.
            s.concurrency.reset();
        }
        s.up = true;
        s.probing = false;
        s.stale = false;
        let down_for = s.since.elapsed().unwrap_or_default();
        s.since = SystemTime::now();
        down_for
    }

    /// Since when the route has been up or down (ms since the epoch).
    pub fn since_ms(&self) -> i64 {
        crate::queue::to_ms(self.lock().since)
    }

    pub fn is_up(&self) -> bool {
        self.lock().up
    }

    /// Jobs waiting for a connection.
    pub fn queued(&self) -> usize {
        self.lock().queue.len()
    }

    pub fn workers(&self) -> usize {
        self.lock().workers
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job(id: &str) -> Job {
        Job {
            queue_id: id.into(),
            domain: "example.test".into(),
            sender: String::new(),
            mail_params: String::new(),
            received_at_ms: 0,
            size: 0,
            recipients: vec![],
            authenticated: None,
        }
    }

    fn route() -> Route {
        Route::new(
            RouteKind::Static(vec![
                crate::config::HostPort::parse("127.0.0.1:25").unwrap(),
            ]),
            vec!["example.test".into()],
            ClientTls::new(&Default::default()).unwrap(),
            Concurrency::new(2, 2),
        )
    }

    /// The backlog is queued while the concurrency is at its start; as deliveries succeed
    /// and the concurrency grows, the route asks for more workers without another push.
    #[test]
    fn workers_grow_with_successes_while_jobs_wait() {
        let r = route();
        r.lock().concurrency = Concurrency::new(1, 3);
        assert_eq!(r.push(job("a")), Pushed::StartWorker);
        assert_eq!(r.push(job("b")), Pushed::Queued);
        assert_eq!(r.push(job("c")), Pushed::Queued);
        assert!(r.next_job().is_some());
        assert!(
            r.success(Instant::now()),
            "1 -> 2 allowed, two jobs waiting"
        );
        assert_eq!(r.workers(), 2);
        assert!(!r.success(Instant::now()), "2.5 allowed: no more");
        assert!(!r.success(Instant::now()), "2.9");
        assert!(
            !r.success(Instant::now()),
            "3 allowed, but only two jobs wait for the two workers"
        );
        assert_eq!(r.workers(), 2);
    }

    #[test]
    fn workers_grow_with_the_queue_up_to_the_limit() {
        let r = route();
        assert_eq!(r.push(job("a")), Pushed::StartWorker);
        assert_eq!(r.push(job("b")), Pushed::StartWorker);
        assert_eq!(r.push(job("c")), Pushed::Queued);
        assert_eq!(r.workers(), 2);
        assert!(r.next_job().is_some());
        assert!(r.next_job().is_some());
        assert!(r.next_job().is_some());
        assert!(r.next_job().is_none());
        assert_eq!(r.workers(), 1);
    }

    #[test]
    fn a_failure_beside_working_connections_shrinks_instead() {
        let r = route();
        r.push(job("a"));
        r.push(job("b"));
        r.push(job("c"));
        assert_eq!(r.fail_or_shrink(Instant::now()), Failure::Shrunk);
        assert!(r.is_up());
        assert_eq!(r.allowed(), 1);
        assert!(
            matches!(r.fail_or_shrink(Instant::now()), Failure::Down(Transition::WentDown, jobs) if jobs.len() == 3)
        );
    }

    #[test]
    fn pacing() {
        let r = route();
        let now = Instant::now();
        assert_eq!(r.pace(None, now), Duration::ZERO);
        assert_eq!(r.pace(Some(10.0), now), Duration::ZERO);
        assert_eq!(r.pace(Some(10.0), now), Duration::from_millis(100));
        assert_eq!(r.pace(Some(10.0), now), Duration::from_millis(200));
    }

    #[test]
    fn failure_marks_down_once_and_returns_jobs() {
        let r = route();
        r.push(job("a"));
        r.push(job("b"));
        let (t, jobs) = r.fail();
        assert_eq!((t, jobs.len()), (Transition::WentDown, 2));
        assert!(!r.is_up());
        let (t, _) = r.fail();
        assert_eq!(
            t,
            Transition::Same,
            "a second failing worker starts no second probe"
        );
        assert!(matches!(r.push(job("c")), Pushed::Down(_)));
        r.mark_up();
        assert!(r.is_up());
        assert_eq!(r.push(job("d")), Pushed::StartWorker);
    }

    #[test]
    fn restored_health_is_last_known_until_confirmed() {
        let r = route();
        assert!(!r.snapshot().stale, "a new route is not a record");
        assert_eq!(
            r.restore(false, 5000),
            Transition::WentDown,
            "start a probe"
        );
        let s = r.snapshot();
        assert!(!s.up && s.stale && s.since_ms == 5000, "{s:?}");
        assert!(matches!(r.push(job("a")), Pushed::Down(_)), "held");
        assert_eq!(r.mark_down(), Transition::Same, "the probe is running");
        r.probed();
        let s = r.snapshot();
        assert!(!s.up && !s.stale && s.since_ms == 5000, "{s:?}");
        assert!(
            r.mark_up() >= Duration::from_secs(1),
            "down since the record"
        );

        let r = route();
        assert_eq!(r.restore(true, 7000), Transition::Same);
        let s = r.snapshot();
        assert!(s.up && s.stale && s.since_ms == 7000, "{s:?}");
        r.success(Instant::now());
        assert!(!r.snapshot().stale);
    }
}
