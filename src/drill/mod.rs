//! Fire drills: prove that the backup path works end to end, before a disaster does. A
//! drill (a) finds this server in the domain's MX records behind the primary, (b) sends a
//! marked message to the domain's canary (`drill_rcpt`) through this server's public name as
//! an outside sender would (`send`), (c) has it held at acceptance (a token only this drill
//! knows, `watch`) as if the primary were down for a moment, then released into the normal
//! delivery path, and (d) records each step, the primary's reply and TLS on both hops
//! (`report`), with what each finding means (`advice`). Results are kept in the store;
//! `schedule` runs drills at each domain's interval, and never while its primary is down.
//!
//! May call the store (its own message and results only), the scheduler (health, release),
//! `dns`, `delivery`'s client and `tls`. Never touches any other message.

pub mod advice;
pub mod report;
pub mod schedule;
pub mod send;
pub mod watch;

use crate::config::{Config, DrillConfig};
use crate::delivery::client::Timeouts;
use crate::delivery::mx::{Identity, MxHost, Target};
use crate::dns::{Dns, MxAnswer};
use crate::queue::{OperatorAction, Store, StoreError, now_ms};
use crate::scheduler::Scheduler;
use report::{Drill, Outcome, Status, Step, Trigger};
use send::{Clock, fact};
use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};
use tracing::{info, warn};

/// Drills kept per domain.
pub const KEPT: usize = 20;
/// At most one manual drill per domain this often.
pub const MANUAL_EVERY: Duration = Duration::from_secs(60);
/// How long the drill message stays held, as if the primary were down.
const HOLD_FOR: Duration = Duration::from_secs(1);
/// The longest a drill waits for the handoff (a primary slower than this is a finding).
const HANDOFF_MAX: Duration = Duration::from_secs(120);
/// How long the queue id takes to come back from inbound after the 250, at most.
const ACCEPT_WAIT: Duration = Duration::from_secs(5);

/// Why a drill did not start.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("{0} is not a domain this server backs up")]
    NotBackedUp(String),
    #[error("a drill of {0} is running already; wait for its result")]
    Running(String),
    #[error(
        "a drill of {domain} ran {ago_s}s ago: at most one manual drill per domain per minute; try again in {wait_s}s"
    )]
    TooSoon {
        domain: String,
        ago_s: u64,
        wait_s: u64,
    },
}

/// A domain's drill settings and what its certificate checks trust.
#[derive(Debug, Clone)]
pub struct DomainDrill {
    pub drill: DrillConfig,
    pub ca_file: Option<PathBuf>,
}

/// Runs drills: what it needs of the server, the domains' settings (replaced on reload),
/// and which drills run or ran lately.
pub struct Driller {
    store: Arc<dyn Store>,
    scheduler: Arc<Scheduler>,
    dns: Arc<Dns>,
    hostname: String,
    identity: Identity,
    /// The port MX hosts are reached on (`[routing] mx_port`), for "is this MX host me".
    mx_port: u16,
    /// Where the world reaches this server's SMTP: the first `[smtp] listen` port.
    smtp_port: u16,
    timeouts: Timeouts,
    /// How long the handoff may take: a whole delivery attempt, with room.
    handoff_limit: Duration,
    domains: RwLock<Arc<HashMap<String, DomainDrill>>>,
    /// Domains with a drill running, and when each domain's last manual drill started.
    running: Mutex<HashSet<String>>,
    manual: Mutex<HashMap<String, Instant>>,
}

impl Driller {
    pub fn new(
        config: &Config,
        store: Arc<dyn Store>,
        scheduler: Arc<Scheduler>,
        dns: Arc<Dns>,
    ) -> Arc<Self> {
        let d = &config.delivery;
        let timeouts = Timeouts {
            connect: d.connect_timeout,
            greeting: d.greeting_timeout,
            command: d.command_timeout,
            data: d.data_timeout,
        };
        let handoff_limit =
            d.connect_timeout + d.greeting_timeout + d.command_timeout * 6 + d.data_timeout;
        let me = Arc::new(Self {
            store,
            scheduler,
            dns,
            hostname: config.hostname.clone(),
            identity: Identity::of(config),
            mx_port: config.routing.mx_port,
            smtp_port: config.smtp.listen.first().map_or(25, SocketAddr::port),
            timeouts,
            handoff_limit: (handoff_limit + Duration::from_secs(10)).min(HANDOFF_MAX),
            domains: RwLock::new(Arc::new(HashMap::new())),
            running: Mutex::new(HashSet::new()),
            manual: Mutex::new(HashMap::new()),
        });
        me.configure(config);
        me
    }

    /// Takes a configuration generation's domains (start, reload, registry change).
    pub fn configure(&self, config: &Config) {
        let domains = config
            .domains
            .iter()
            .map(|d| {
                (
                    d.name.clone(),
                    DomainDrill {
                        drill: d.drill.clone(),
                        ca_file: d.tls.ca_file.clone(),
                    },
                )
            })
            .collect();
        *self.domains.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(domains);
    }

    /// The domains' settings now.
    pub fn domains(&self) -> Arc<HashMap<String, DomainDrill>> {
        self.domains
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Runs one drill of `domain` and keeps its result. A manual drill is refused when one
    /// ran less than [`MANUAL_EVERY`] ago; any drill when one of the domain runs.
    pub async fn run(&self, domain: &str, trigger: Trigger) -> Result<Drill, Refusal> {
        let domain = crate::queue::domain_key(domain);
        let Some(settings) = self.domains().get(&domain).cloned() else {
            return Err(Refusal::NotBackedUp(domain));
        };
        let _running = self.start(&domain, trigger)?;
        let drill = self.drill(&domain, &settings, trigger).await;
        info!(
            domain,
            outcome = drill.outcome.name(),
            ms = drill.duration_ms,
            failure = drill.failure().map(|s| s.detail.as_str()).unwrap_or(""),
            "fire drill"
        );
        if let Err(e) = self.store.record_drill(drill.stored(), KEPT).await {
            warn!(domain, error = %e, "cannot keep the drill's result");
        }
        if drill.outcome == Outcome::Failed {
            crate::events::get().record(crate::events::Kind::DrillFailed {
                domain: domain.clone(),
                detail: drill
                    .failure()
                    .map(|s| format!("{}: {}", s.name, s.detail))
                    .unwrap_or_default(),
            });
        }
        Ok(drill)
    }

    /// Marks the domain's drill running (until the guard drops), after the rate limit.
    fn start(&self, domain: &str, trigger: Trigger) -> Result<Running<'_>, Refusal> {
        let mut running = self.running.lock().unwrap_or_else(|p| p.into_inner());
        if running.contains(domain) {
            return Err(Refusal::Running(domain.to_string()));
        }
        if trigger == Trigger::Manual {
            let mut manual = self.manual.lock().unwrap_or_else(|p| p.into_inner());
            if let Some(at) = manual.get(domain)
                && at.elapsed() < MANUAL_EVERY
            {
                let ago = at.elapsed();
                return Err(Refusal::TooSoon {
                    domain: domain.to_string(),
                    ago_s: ago.as_secs(),
                    wait_s: (MANUAL_EVERY - ago).as_secs().max(1),
                });
            }
            manual.insert(domain.to_string(), Instant::now());
        }
        running.insert(domain.to_string());
        Ok(Running {
            driller: self,
            domain: domain.to_string(),
        })
    }

    async fn drill(&self, domain: &str, settings: &DomainDrill, trigger: Trigger) -> Drill {
        let at_ms = now_ms();
        let started = Instant::now();
        let mut clock = Clock::start();
        let mut steps = Vec::new();
        let mut ids = (None, None);
        if !self.scheduler.primary_is_up(domain) {
            steps.push(clock.step(
                "primary",
                Status::Skip,
                fact(format!(
                    "skipped: the primary of {domain} is down, and mx2 is holding its real mail; drills wait until it is back"
                )),
            ));
        } else {
            steps.push(clock.step("primary", Status::Ok, fact("the primary is up")));
            self.steps(domain, settings, &mut clock, &mut steps, &mut ids)
                .await;
        }
        Drill {
            domain: domain.to_string(),
            at_ms,
            trigger,
            outcome: Drill::outcome_of(&steps),
            duration_ms: u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
            message_id: ids.0,
            queue_id: ids.1,
            steps,
        }
    }

    /// Steps (a) to (d); stops at the first failure. `ids`: the Message-ID and queue id.
    async fn steps(
        &self,
        domain: &str,
        settings: &DomainDrill,
        clock: &mut Clock,
        steps: &mut Vec<Step>,
        ids: &mut (Option<String>, Option<String>),
    ) {
        // (a) Listed, behind the primary.
        let targets = match self.listed(domain).await {
            Ok((targets, finding)) => {
                steps.push(clock.step("mx", Status::Ok, finding));
                targets
            }
            Err(finding) => {
                steps.push(clock.step("mx", Status::Fail, finding));
                return;
            }
        };
        // (b) As an outside sender, with a token that makes inbound hold the message.
        let rcpt = &settings.drill.rcpt;
        let (token, expectation) = watch::get().expect(rcpt);
        let message_id = format!("<{}.drill@{}>", crate::queue::new_queue_id(), self.hostname);
        ids.0 = Some(message_id.clone());
        let body = send::message(&self.hostname, rcpt, &message_id, &token);
        let sent = send::send(
            clock,
            &targets,
            &self.hostname,
            &self.timeouts,
            settings.ca_file.as_deref(),
            rcpt,
            body,
        )
        .await;
        steps.extend(sent.steps);
        if !sent.accepted {
            return;
        }
        let mut expectation = expectation;
        let queue_id = match tokio::time::timeout(ACCEPT_WAIT, &mut expectation.accepted).await {
            Ok(Ok(id)) => id,
            _ => {
                steps.push(clock.step("held", Status::Fail, advice::Finding {
                    detail: "mx2 accepted the message, but not as this drill's: it reached another server (another node of the cluster, or a different host behind the MX name)".into(),
                    advice: Some("run the drill on the node the MX name leads to, or make the MX name lead to this node".into()),
                }));
                return;
            }
        };
        ids.1 = Some(queue_id.clone());
        // (c) Held at acceptance; a moment later released into the normal delivery path.
        match self.store.show(&queue_id).await {
            Ok(Some(m)) if m.recipients.iter().all(|r| r.held) => steps.push(clock.step(
                "held",
                Status::Ok,
                fact(format!(
                    "queued as {queue_id} and held, as if the primary were down"
                )),
            )),
            other => {
                let why = match other {
                    Err(e) => e.to_string(),
                    Ok(None) => "it is no longer in the queue".into(),
                    Ok(Some(_)) => "it is not held".into(),
                };
                steps.push(clock.step(
                    "held",
                    Status::Fail,
                    fact(format!("the drill message {queue_id} was not held: {why}")),
                ));
                return;
            }
        }
        tokio::time::sleep(HOLD_FOR).await;
        let handoff = self.hand_over(&queue_id).await;
        match handoff {
            Err(finding) => {
                steps.push(clock.step("handoff", Status::Fail, finding));
                self.remove(&queue_id).await;
            }
            Ok(h) => {
                let finding = match &h.reply {
                    Ok(r) => advice::handoff(r, rcpt),
                    Err(e) => advice::primary_unreachable(e),
                };
                let delivered = matches!(&h.reply, Ok(r) if r.code / 100 == 2);
                let status = if delivered { Status::Ok } else { Status::Fail };
                let finding = advice::Finding {
                    detail: if h.primary.is_empty() {
                        finding.detail
                    } else {
                        format!("{} ({})", finding.detail, h.primary)
                    },
                    ..finding
                };
                steps.push(clock.step("handoff", status, finding));
                if !delivered {
                    self.remove(&queue_id).await;
                }
                if h.reply.is_ok() {
                    steps.push(send::tls_step(
                        clock,
                        "tls_out",
                        h.tls.as_deref(),
                        &h.server_name,
                        &h.certificates,
                        settings.ca_file.as_deref(),
                        "offer STARTTLS on the primary (and set the domain's tls = \"verify\" once its certificate is valid)",
                    ));
                }
            }
        }
    }

    /// (a): this server among the domain's MX hosts, with a more preferred one before it;
    /// Ok: where to reach this server, and what was found.
    async fn listed(
        &self,
        domain: &str,
    ) -> Result<(Vec<Target>, advice::Finding), advice::Finding> {
        let publish = format!(
            "publish the primary with a low preference and this server behind it, e.g. `{domain}. MX 10 <primary>.` and `{domain}. MX 20 {}.`",
            self.hostname
        );
        let fail = |detail: String, advice: &str| advice::Finding {
            detail,
            advice: Some(advice.to_string()),
        };
        let records = match self.dns.mx(domain).await {
            Ok(MxAnswer::Records(r)) => r,
            Ok(MxAnswer::NoMx) => {
                return Err(fail(format!("{domain} has no MX records"), &publish));
            }
            Ok(MxAnswer::NullMx) => {
                return Err(fail(
                    format!("{domain} publishes a null MX: it accepts no mail"),
                    &publish,
                ));
            }
            Ok(MxAnswer::NoDomain) => {
                return Err(fail(format!("{domain} does not exist in DNS"), &publish));
            }
            Err(e) => {
                return Err(fail(
                    format!("the MX lookup of {domain} failed: {e}"),
                    "check that the domain's name servers answer",
                ));
            }
        };
        let mut hosts = Vec::new();
        for (preference, name) in records {
            let addrs = self.dns.addresses(&name).await.unwrap_or_default();
            hosts.push(MxHost {
                preference,
                name,
                addrs,
                secure: false,
            });
        }
        hosts.sort_by_key(|h| h.preference);
        let listed: Vec<String> = hosts
            .iter()
            .map(|h| format!("{} {}", h.preference, h.name))
            .collect();
        let Some(me) = hosts.iter().find(|h| self.identity.is_me(h, self.mx_port)) else {
            return Err(fail(
                format!(
                    "the MX records of {domain} do not list this server ({}): {}",
                    self.hostname,
                    listed.join(", ")
                ),
                &format!(
                    "{publish}; if an MX name already leads here, add it to [routing] my_names"
                ),
            ));
        };
        let Some(primary) = hosts.iter().find(|h| h.preference < me.preference) else {
            return Err(fail(
                format!(
                    "this server ({} {}) is the most preferred MX of {domain}: senders come here first, not to the primary ({})",
                    me.preference,
                    me.name,
                    listed.join(", ")
                ),
                "give the primary a lower preference value than this server",
            ));
        };
        if me.addrs.is_empty() {
            return Err(fail(
                format!("MX host {} has no address", me.name),
                &format!("add an A or AAAA record for {}", me.name),
            ));
        }
        let targets = me
            .addrs
            .iter()
            .map(|ip| Target::configured(&me.name, SocketAddr::new(*ip, self.smtp_port)))
            .collect();
        Ok((
            targets,
            fact(format!(
                "listed as {} (preference {}), behind {} (preference {})",
                me.name, me.preference, primary.name, primary.preference
            )),
        ))
    }

    /// Releases the drill's message and waits for the scheduler to hand it over. Err: it
    /// was not (the finding says why).
    async fn hand_over(&self, queue_id: &str) -> Result<watch::Handoff, advice::Finding> {
        let mut watched = watch::get().watch(queue_id);
        if let Err(e) = self
            .scheduler
            .act(vec![queue_id.to_string()], OperatorAction::Release)
            .await
        {
            return Err(fact(format!("cannot release the drill message: {e}")));
        }
        let deadline = tokio::time::Instant::now() + self.handoff_limit;
        loop {
            tokio::select! {
                h = &mut watched.handoff => {
                    return h.map_err(|_| fact("the scheduler stopped before the handoff"));
                }
                _ = tokio::time::sleep(Duration::from_millis(500)) => {}
            }
            match self.store.show(queue_id).await {
                Ok(None) => {
                    // Gone without this node seeing the handoff: another node delivered it.
                    return Err(advice::Finding {
                        detail: "another node of the cluster handed the message over; its reply is in that node's log".into(),
                        advice: Some("run drills where deliveries are observed, or read the other node's log for the queue id".into()),
                    });
                }
                Ok(Some(_)) | Err(StoreError::NotFound(_)) => {}
                Err(e) => warn!(queue_id, error = %e, "cannot look at the drill message"),
            }
            if tokio::time::Instant::now() >= deadline {
                let last = match self.store.show(queue_id).await {
                    Ok(Some(m)) => m
                        .recipients
                        .first()
                        .and_then(|r| r.last_reply.clone())
                        .unwrap_or_else(|| "not tried yet".into()),
                    _ => "unknown".into(),
                };
                return Err(advice::Finding {
                    detail: format!(
                        "not handed over within {}s (last reply: {last})",
                        self.handoff_limit.as_secs()
                    ),
                    advice: Some("look at the primary's health in `mx2 status` and the delivery log for this queue id".into()),
                });
            }
        }
    }

    /// The drill's own message, not delivered, leaves the queue (it would only be retried).
    async fn remove(&self, queue_id: &str) {
        if let Err(e) = self
            .scheduler
            .act(vec![queue_id.to_string()], OperatorAction::Delete)
            .await
        {
            warn!(queue_id, error = %e, "cannot remove the drill message");
        }
    }
}

/// A running drill: the domain is free again when it drops.
struct Running<'a> {
    driller: &'a Driller,
    domain: String,
}

impl Drop for Running<'_> {
    fn drop(&mut self) {
        self.driller
            .running
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&self.domain);
    }
}
