//! `mx2 serve`: opens the store, binds the listeners, starts the scheduler, and on SIGTERM or
//! SIGINT stops accepting, lets in-flight transactions and deliveries finish (within the grace
//! period), and exits with the queue intact.

use crate::config::Config;
use crate::dns::Dns;
use crate::inbound::limits::ConnectionLimits;
use crate::inbound::listener::{self, Inbound};
use crate::inbound::session::SessionConfig;
use crate::policy::Policy;
use crate::policy::authres::MailAuth;
use crate::policy::dnsbl::Dnsbl;
use crate::policy::lists::Lists;
use crate::policy::recipients::{Recipients, Ttls};
use crate::scheduler::Scheduler;
use crate::shutdown;
use crate::tasks::Tracker;
use crate::tls::ServerCert;
use std::sync::Arc;
use tokio::net::TcpListener;
use tokio::sync::Notify;
use tracing::{info, warn};

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

/// Runs the server until a termination signal.
pub async fn serve(config: Config) -> Result<(), StartError> {
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

    let mut listeners = Vec::new();
    let proxied_addrs = config.smtp.proxy_listen.iter().map(|a| (a, true));
    for (addr, proxied) in config
        .smtp
        .listen
        .iter()
        .map(|a| (a, false))
        .chain(proxied_addrs)
    {
        let l = TcpListener::bind(addr)
            .await
            .map_err(|source| StartError::Listen {
                addr: *addr,
                source,
            })?;
        info!(address = %l.local_addr().unwrap_or(*addr), proxied, "listening for SMTP");
        listeners.push((l, proxied));
    }

    let (trigger, shutdown) = shutdown::channel();
    let cert = match &config.tls {
        None => None,
        Some(files) => Some(ServerCert::load(&files.cert, &files.key).map_err(StartError::Tls)?),
    };
    let acceptor = match &cert {
        None => None,
        Some(c) => Some(c.acceptor().map_err(StartError::Tls)?),
    };
    let reload_lists = Arc::new(Notify::new());
    // Also keeps SIGHUP from terminating the process when there is nothing to reload.
    tokio::spawn(watch_reloads(cert, reload_lists.clone(), shutdown.clone()));
    let wake = Arc::new(Notify::new());
    // Other nodes sharing the queue wake this one's scheduler (PostgreSQL; a no-op otherwise).
    store.forward_wakeups(wake.clone());
    let connections = Tracker::default();
    let deliveries = Tracker::default();

    let dns =
        Arc::new(Dns::new(&config.dns.nameservers, config.dns.timeout).map_err(StartError::Dns)?);
    let scheduler = Scheduler::new(
        &config,
        store.clone(),
        dns.clone(),
        wake.clone(),
        shutdown.clone(),
        deliveries.clone(),
    )
    .map_err(StartError::Tls)?;
    let scheduler_task = tokio::spawn(scheduler.clone().run());

    let recipients = Arc::new(Recipients::new(
        config
            .domains
            .iter()
            .map(|d| (d.name.clone(), d.recipients.clone(), d.standby)),
        store.clone(),
        scheduler.clone(),
        Ttls {
            positive: config.recipients.positive_ttl,
            negative: config.recipients.negative_ttl,
        },
    ));
    scheduler.set_recipients(recipients.clone());
    let mut lists = Lists::new(
        recipients.clone(),
        dns.clone(),
        config.recipients.reload_interval,
    );
    lists.refresh(true).await;
    tokio::spawn(lists.run(reload_lists, shutdown.clone()));
    let standby: Vec<String> = config
        .domains
        .iter()
        .filter(|d| d.standby)
        .map(|d| d.name.clone())
        .collect();
    if !standby.is_empty() {
        tokio::spawn(
            scheduler
                .clone()
                .watch_standby(standby, config.recipients.standby_check_interval),
        );
    }

    let inbound = Arc::new(Inbound {
        session: Arc::new(SessionConfig {
            hostname: config.hostname.clone(),
            max_message_size: config.smtp.max_message_size,
            max_recipients: config.smtp.max_recipients,
            max_errors: config.smtp.max_errors,
            max_received: 50,
            starttls: config.tls.is_some(),
        }),
        policy: Arc::new(
            Policy::new(config.domains.iter().map(|d| d.name.clone()))
                .with_etrn_clients(config.smtp.etrn_clients.clone())
                .with_checked_domains(recipients.checked_domains().cloned())
                .with_limits(
                    config.smtp.allow.clone(),
                    config.smtp.messages_per_minute_per_ip,
                    config.smtp.recipients_per_minute_per_ip,
                ),
        ),
        store: store.clone(),
        limits: ConnectionLimits::new(
            config.smtp.max_connections,
            config.smtp.max_connections_per_ip,
        ),
        max_line_length: config.smtp.max_line_length,
        command_timeout: config.smtp.command_timeout,
        data_timeout: config.smtp.data_timeout,
        new_mail: wake.clone(),
        flusher: scheduler.clone(),
        tls: acceptor,
        recipients,
        dnsbl: Arc::new(Dnsbl::new(config.smtp.dnsbl.clone(), dns.clone())),
        greeting_delay: config.smtp.greeting_delay,
        error_delay: config.smtp.error_delay,
        proxy_trusted: config.smtp.proxy_trusted.clone(),
        mail_auth: config
            .auth
            .enabled
            .then(|| Arc::new(MailAuth::new(&dns, &config.hostname))),
        dmarc_reject: config.auth.dmarc_reject,
    });
    let mut accept_tasks = Vec::new();
    for (l, proxied) in listeners {
        accept_tasks.push(tokio::spawn(listener::run(
            l,
            inbound.clone(),
            shutdown.clone(),
            connections.clone(),
            proxied,
        )));
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

/// Reloads the certificate when its files change (checked every 30 s) or on SIGHUP.
async fn watch_reloads(
    cert: Option<std::sync::Arc<ServerCert>>,
    lists: Arc<Notify>,
    mut shutdown: shutdown::Shutdown,
) {
    use tokio::signal::unix::{SignalKind, signal};
    let mut hup = signal(SignalKind::hangup()).ok();
    loop {
        let forced = tokio::select! {
            _ = shutdown.wait() => return,
            _ = tokio::time::sleep(std::time::Duration::from_secs(30)) => false,
            Some(()) = async { match hup.as_mut() { Some(h) => h.recv().await, None => std::future::pending().await } } => true,
        };
        if forced {
            info!("SIGHUP: reloading certificate and recipient lists");
            lists.notify_one();
        }
        let Some(cert) = &cert else { continue };
        let result = if forced {
            cert.reload().map(|()| true)
        } else {
            cert.reload_if_changed()
        };
        match result {
            Ok(true) => info!("TLS certificate reloaded"),
            Ok(false) => {}
            Err(e) => {
                warn!(error = %e, "TLS certificate not reloaded; the previous one stays in use")
            }
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
