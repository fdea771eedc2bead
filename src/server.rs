//! `mx2 serve`: opens the store, binds the listeners, starts the scheduler, and on SIGTERM or
//! SIGINT stops accepting, lets in-flight transactions and deliveries finish (within the grace
//! period), and exits with the queue intact.

use crate::admin::alerts::Alerter;
use crate::admin::history::History;
use crate::admin::{self, Admin, monitor};
use crate::config::Config;
use crate::dns::Dns;
use crate::inbound::limits::{ConnectionLimits, LimitSettings};
use crate::inbound::listener::{self, Inbound};
use crate::inbound::session::SessionConfig;
use crate::policy::Policy;
use crate::policy::admission::Admission;
use crate::policy::authres::MailAuth;
use crate::policy::dnsbl::Dnsbl;
use crate::policy::lists::Lists;
use crate::policy::recipients::{Recipients, Ttls};
use crate::queue::Store;
use crate::scheduler::Scheduler;
use crate::shutdown;
use crate::tasks::Tracker;
use crate::tls::ServerCert;
use std::path::Path;
use std::sync::Arc;
use tokio::sync::Notify;
use tracing::{error, info, warn};

mod reload;
use reload::{Reloader, watch_reloads};

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("{0}")]
    Dns(String),
    #[error("TLS: {0}")]
    Tls(String),
    #[error("cannot open the queue in {dir}: {source}")]
    Store {
        dir: String,
        source: crate::queue::StoreError,
    },
    #[error(
        "cannot listen on {addr}: {source} (is another server using the port, or does it need privileges?)"
    )]
    Listen {
        addr: std::net::SocketAddr,
        source: std::io::Error,
    },
}

/// Runs the server until a termination signal; `path` is the configuration file, read
/// again on reload.
pub async fn serve(config: Config, path: &Path) -> Result<(), StartError> {
    crate::limits::raise_open_files(&config);
    let store = crate::queue::open(&config)
        .await
        .map_err(|source| StartError::Store {
            dir: match &config.storage {
                crate::config::StorageConfig::Embedded => config.state_dir.display().to_string(),
                crate::config::StorageConfig::Postgres(_) => "PostgreSQL".into(),
            },
            source,
        })?;
    if let Ok(stats) = store.stats().await {
        info!(
            messages = stats.messages,
            recipients = stats.pending_recipients,
            bytes = stats.bytes,
            "queue opened"
        );
    }

    let registry = crate::registry::Registry::open(
        store.clone(),
        crate::config::base_dir(path),
        config.domains.iter().map(|d| d.name.clone()),
    )
    .await
    .map_err(|source| StartError::Store {
        dir: "the domain registry".into(),
        source,
    })?;
    registry.set_file_configs(&config.domains);

    let mut listeners = Vec::new();
    let proxied_addrs = config.smtp.proxy_listen.iter().map(|a| (a, true));
    for (addr, proxied) in config
        .smtp
        .listen
        .iter()
        .map(|a| (a, false))
        .chain(proxied_addrs)
    {
        let l = crate::net::listen(*addr).map_err(|source| StartError::Listen {
            addr: *addr,
            source,
        })?;
        info!(address = %l.local_addr().unwrap_or(*addr), proxied, "listening for SMTP");
        listeners.push((l, proxied));
    }

    let mut inbox_listeners = Vec::new();
    for (addr, implicit) in [
        (config.inbox.listen, false),
        (config.inbox.tls_listen, true),
    ] {
        let Some(addr) = addr else { continue };
        let l = crate::net::listen(addr).map_err(|source| StartError::Listen { addr, source })?;
        info!(address = %l.local_addr().unwrap_or(addr), implicit_tls = implicit, "listening for IMAP (emergency inbox)");
        inbox_listeners.push((l, implicit));
    }
    let web_inbox_listener = match config.inbox.web_listen {
        None => None,
        Some(addr) => {
            let l =
                crate::net::listen(addr).map_err(|source| StartError::Listen { addr, source })?;
            info!(address = %l.local_addr().unwrap_or(addr), "listening for HTTPS (web inbox at /inbox/)");
            Some(l)
        }
    };

    // Bound now, so that it answers as soon as SMTP does.
    let admin_listener = match config.admin.listen {
        None => None,
        Some(addr) => match crate::net::listen(addr) {
            Ok(l) => Some(l),
            // Mail matters more than the dashboard: keep accepting it.
            Err(e) => {
                error!(address = %addr, error = %e, "admin API not available: cannot listen (set admin.listen to a free address, or \"\" to turn it off); SMTP service continues");
                None
            }
        },
    };
    let (trigger, shutdown) = shutdown::channel();
    let cert = match &config.tls {
        None => None,
        Some(files) => Some(ServerCert::load(&files.cert, &files.key).map_err(StartError::Tls)?),
    };
    let acceptor = match &cert {
        None => None,
        Some(c) => Some(c.acceptor().map_err(StartError::Tls)?),
    };
    let wake = Arc::new(Notify::new());
    let inbox = match (&acceptor, config.inbox.enabled()) {
        (Some(a), true) => Some(crate::inbox::Inbox::new(
            &config.inbox,
            store.clone(),
            a.clone(),
            config.smtp.ipv6_prefix_length,
        )),
        _ => None,
    };
    // What new mail tells: the scheduler, and with the inbox on, idling IMAP sessions too.
    let new_mail = match &inbox {
        None => wake.clone(),
        Some(inbox) => {
            let relayed = Arc::new(Notify::new());
            tokio::spawn(crate::inbox::relay(
                relayed.clone(),
                wake.clone(),
                inbox.clone(),
                shutdown.clone(),
            ));
            relayed
        }
    };
    // Other nodes sharing the queue wake this one (PostgreSQL; a no-op otherwise).
    store.forward_wakeups(new_mail.clone());
    let connections = Tracker::default();
    let deliveries = Tracker::default();

    let dns = Arc::new(
        Dns::new(
            &config.dns.nameservers,
            config.dns.timeout,
            &config.dns.dnssec,
        )
        .map_err(StartError::Dns)?,
    );
    let snapshot = registry.snapshot();
    reload::report_shadowed(&snapshot);
    let effective = reload::effective(&config, &snapshot);
    let scheduler = Scheduler::new(
        &effective,
        store.clone(),
        dns.clone(),
        wake.clone(),
        shutdown.clone(),
        deliveries.clone(),
    )
    .map_err(StartError::Tls)?;
    // Before delivery and status start: a primary down when mx2 stopped is still down.
    scheduler.restore_health().await;
    let scheduler_task = tokio::spawn(scheduler.clone().run());
    tokio::spawn(crate::tlsrpt::run(
        crate::tlsrpt::Sender {
            store: store.clone(),
            scheduler: scheduler.clone(),
            dns: dns.clone(),
            config: config.tls_reports.clone(),
            hostname: config.hostname.clone(),
            ca_file: config.delivery.mta_sts_ca_file.clone(),
        },
        shutdown.clone(),
    ));
    let driller =
        crate::drill::Driller::new(&effective, store.clone(), scheduler.clone(), dns.clone());
    tokio::spawn(crate::drill::schedule::run(
        driller.clone(),
        shutdown.clone(),
    ));

    let admission = Admission::new();
    tokio::spawn(crate::policy::admission::watch(
        admission.clone(),
        store.clone(),
        match config.storage {
            crate::config::StorageConfig::Embedded => Some(config.state_dir.clone()),
            crate::config::StorageConfig::Postgres(_) => None,
        },
        config.queue.min_free_disk,
        shutdown.clone(),
    ));
    tokio::spawn(registry.clone().run(shutdown.clone()));
    tokio::spawn(crate::inbox::keep::purge(
        store.clone(),
        crate::inbox::keep::purge_every(config.inbox.keep_after_delivery),
        shutdown.clone(),
    ));
    let core = Core {
        admission,
        limits: ConnectionLimits::new(limit_settings(&config)),
        store: store.clone(),
        scheduler: scheduler.clone(),
        dns: dns.clone(),
        driller: driller.clone(),
        new_mail,
        acceptor,
        inbox: inbox.clone(),
        shutdown: shutdown.clone(),
    };
    let generation = core.start(&effective, &snapshot, None).await;
    let (inbound_tx, inbound_rx) = tokio::sync::watch::channel(generation.inbound.clone());
    let mut accept_tasks = Vec::new();
    for (l, proxied) in listeners {
        accept_tasks.push(tokio::spawn(listener::run(
            l,
            inbound_rx.clone(),
            shutdown.clone(),
            connections.clone(),
            proxied,
        )));
    }
    let web_inbox = inbox.as_ref().map(|i| {
        crate::inbox::web::Web::new(i.clone(), &config.hostname, config.inbox.idle_timeout)
    });
    if let (Some(web), Some(l), Some(acceptor)) =
        (&web_inbox, web_inbox_listener, core.acceptor.clone())
    {
        let limits = admin::listener::Limits {
            max_connections: config.inbox.max_connections,
            ..admin::listener::LIMITS
        };
        accept_tasks.push(tokio::spawn(admin::listener::run(
            l,
            crate::inbox::web::standalone(web.clone()),
            limits,
            Some(acceptor),
            shutdown.clone(),
        )));
    }
    if let Some(inbox) = &inbox {
        for (l, implicit) in inbox_listeners {
            accept_tasks.push(tokio::spawn(crate::inbox::listener::run(
                l,
                inbox.clone(),
                implicit,
                shutdown.clone(),
            )));
        }
    }
    let history = Arc::new(History::new(HISTORY_SAMPLES));
    tokio::spawn(monitor::run(
        store.clone(),
        scheduler.clone(),
        history.clone(),
        HISTORY_EVERY,
        shutdown.clone(),
    ));
    tokio::spawn(
        Alerter {
            config: config.alerts.clone(),
            hostname: config.hostname.clone(),
            dns: dns.clone(),
            store: store.clone(),
            scheduler: scheduler.clone(),
            registry: registry.clone(),
        }
        .run(shutdown.clone()),
    );
    let reloader = Arc::new(Reloader {
        path: path.to_path_buf(),
        core,
        cert,
        inbound: inbound_tx,
        registry: registry.clone(),
        state: tokio::sync::Mutex::new(reload::State {
            file: config.clone(),
            generation,
            stored: snapshot.fingerprint(),
        }),
    });
    drop(snapshot);
    // Also keeps SIGHUP from terminating the process.
    tokio::spawn(watch_reloads(reloader.clone(), shutdown.clone()));
    tokio::spawn(reload::follow_registry(reloader.clone(), shutdown.clone()));
    if let Some(l) = admin_listener {
        let admin = Arc::new(Admin {
            store: store.clone(),
            scheduler: scheduler.clone(),
            hostname: config.hostname.clone(),
            started: std::time::SystemTime::now(),
            state_dir: match config.storage {
                crate::config::StorageConfig::Embedded => {
                    Some(config.state_dir.display().to_string())
                }
                crate::config::StorageConfig::Postgres(_) => None,
            },
            queue_id: match config.storage {
                crate::config::StorageConfig::Embedded => {
                    crate::queue::embedded::guard::queue_id(&config.state_dir)
                }
                crate::config::StorageConfig::Postgres(_) => None,
            },
            token: config.admin.token.clone(),
            allowed_hosts: config.admin.allowed_hosts.clone(),
            reloader: reloader.clone(),
            history,
            registry: registry.clone(),
            dns: dns.clone(),
            driller,
            inbox_code_validity: config.inbox.code_validity,
            web_inbox,
            inbox: inbox.clone(),
        });
        tokio::spawn(admin::serve(l, admin, shutdown.clone()));
    }
    info!(hostname = %config.hostname, domains = config.domains.len(), "mx2 started");

    wait_for_signal().await;
    info!("shutting down: no new connections; finishing transactions in flight");
    trigger.fire();
    for t in accept_tasks {
        let _ = t.await;
    }
    let grace = config.smtp.shutdown_grace;
    let finished = tokio::time::timeout(grace, async {
        connections.idle().await;
        let _ = scheduler_task.await;
        deliveries.idle().await;
    })
    .await;
    if finished.is_err() {
        warn!(
            connections = connections.running(),
            deliveries = deliveries.running(),
            "grace period over; exiting with work in flight (nothing acknowledged is lost)"
        );
    }
    info!("mx2 stopped");
    Ok(())
}

/// Dashboard chart: one sample every 30 s for 6 hours.
const HISTORY_EVERY: std::time::Duration = std::time::Duration::from_secs(30);
const HISTORY_SAMPLES: usize = 720;

/// The connection limits a configuration sets.
fn limit_settings(config: &Config) -> LimitSettings {
    LimitSettings {
        max_total: config.smtp.max_connections,
        max_per_client: config.smtp.max_connections_per_ip,
        ipv6_prefix: config.smtp.ipv6_prefix_length,
        stress_threshold: config.smtp.stress_threshold,
    }
}

/// What lives as long as the process; each configuration generation is built on it.
struct Core {
    /// Queue caps, per-domain rates and the disk reserve, with their counts.
    admission: Arc<Admission>,
    /// Shared by all generations, so the counts (and stress) hold across reloads.
    limits: Arc<ConnectionLimits>,
    store: Arc<dyn Store>,
    scheduler: Arc<Scheduler>,
    dns: Arc<Dns>,
    /// Fire drills: each generation's domains' settings.
    driller: Arc<crate::drill::Driller>,
    /// Told of each new message (the scheduler's wake-up, or the relay to it and the inbox).
    new_mail: Arc<Notify>,
    acceptor: Option<tokio_rustls::TlsAcceptor>,
    /// The emergency inbox, when `[inbox]` has a listener.
    inbox: Option<Arc<crate::inbox::Inbox>>,
    shutdown: shutdown::Shutdown,
}

/// What one configuration runs: the settings new connections take, and the tasks that
/// keep its recipient lists and standby checks (stopped when the generation is replaced).
struct Generation {
    inbound: Arc<Inbound>,
    reload_lists: Arc<Notify>,
    _scope: shutdown::Scope,
}

impl Core {
    /// A generation for `config` (the file's domains and the registry's active ones) and the
    /// registry's pending domains in `registry`. With `previous`, lists whose sources did not
    /// change are carried over instead of read again (a registry change); without, every
    /// list is read (start, reload).
    async fn start(
        &self,
        config: &Config,
        registry: &crate::registry::Snapshot,
        previous: Option<&Generation>,
    ) -> Generation {
        self.admission
            .set_limits(config.domains.iter().map(|d| (d.name.clone(), d.limits)));
        self.driller.configure(config);
        crate::inbox::keep::configure(
            &*self.store,
            crate::inbox::keep::plan(config, self.inbox.is_some()),
        )
        .await;
        if let Some(inbox) = &self.inbox {
            inbox.set_domains(
                config
                    .domains
                    .iter()
                    .filter(|d| d.inbox)
                    .map(|d| (d.name.clone(), d.inbox_delete)),
            );
        }
        let (scope, shutdown) = self.shutdown.child();
        if self.inbox.is_some() {
            tokio::spawn(crate::inbox::published::run(
                self.store.clone(),
                self.dns.clone(),
                crate::inbox::published::sources(config),
                config.recipients.reload_interval,
                shutdown.clone(),
            ));
        }
        let recipients = Arc::new(Recipients::new(
            config
                .domains
                .iter()
                .map(|d| (d.name.clone(), d.recipients.clone(), d.standby)),
            self.store.clone(),
            self.scheduler.clone(),
            Ttls {
                positive: config.recipients.positive_ttl,
                negative: config.recipients.negative_ttl,
            },
        ));
        self.scheduler.set_recipients(recipients.clone());
        let mut lists = Lists::new(
            recipients.clone(),
            self.dns.clone(),
            config.recipients.reload_interval,
        );
        match previous {
            Some(p) => {
                recipients.carry_lists_from(&p.inbound.recipients);
                lists.adopt_loaded();
                lists.refresh(false).await;
            }
            None => lists.refresh(true).await,
        }
        let reload_lists = Arc::new(Notify::new());
        tokio::spawn(lists.run(reload_lists.clone(), shutdown.clone()));
        let standby: Vec<String> = config
            .domains
            .iter()
            .filter(|d| d.standby)
            .map(|d| d.name.clone())
            .collect();
        if !standby.is_empty() {
            tokio::spawn(self.scheduler.clone().watch_standby(
                standby,
                config.recipients.standby_check_interval,
                shutdown,
            ));
        }
        let inbound = Arc::new(Inbound {
            session: Arc::new(SessionConfig {
                hostname: config.hostname.clone(),
                max_message_size: config.smtp.max_message_size,
                max_recipients: config.smtp.max_recipients,
                max_errors: config.smtp.max_errors,
                max_received: 50,
                starttls: config.tls.is_some() && self.acceptor.is_some(),
            }),
            policy: Arc::new(
                Policy::new(config.domains.iter().map(|d| d.name.clone()))
                    .with_pending(registry.pending().map(str::to_string))
                    .with_admission(self.admission.clone())
                    .with_etrn_clients(config.smtp.etrn_clients.clone())
                    .with_checked_domains(recipients.checked_domains().cloned())
                    .with_limits(
                        config.smtp.allow.clone(),
                        config.smtp.messages_per_minute_per_ip,
                        config.smtp.recipients_per_minute_per_ip,
                    )
                    .with_ipv6_prefix(config.smtp.ipv6_prefix_length),
            ),
            store: self.store.clone(),
            limits: {
                self.limits.configure(limit_settings(config));
                self.limits.clone()
            },
            max_line_length: config.smtp.max_line_length,
            command_timeout: config.smtp.command_timeout,
            data_timeout: config.smtp.data_timeout,
            min_data_rate: config.smtp.min_data_rate,
            stress_timeout: config.smtp.stress_timeout,
            new_mail: self.new_mail.clone(),
            flusher: self.scheduler.clone(),
            tls: self.acceptor.clone(),
            recipients,
            dnsbl: Arc::new(Dnsbl::new(config.smtp.dnsbl.clone(), self.dns.clone())),
            greeting_delay: config.smtp.greeting_delay,
            error_delay: config.smtp.error_delay,
            spool: crate::queue::spool::Spool::new(&config.state_dir),
            proxy_trusted: config.smtp.proxy_trusted.clone(),
            mail_auth: config
                .auth
                .enabled
                .then(|| Arc::new(MailAuth::new(&self.dns, &config.hostname))),
            dmarc_reject: config.auth.dmarc_reject,
        });
        Generation {
            inbound,
            reload_lists,
            _scope: scope,
        }
    }
}

async fn wait_for_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        // Without signal handlers the only way out is SIGKILL, which is safe for the queue.
        warn!("cannot install signal handlers");
        std::future::pending::<()>().await;
        return;
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
}
