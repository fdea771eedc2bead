//! Reloading a running server: SIGHUP, `mx2 reload` and the admin API read the configuration
//! file again and apply what can change without a restart (domains, recipient policies and
//! lists, SMTP policy and limits, bounce policies, the certificate), saying which settings
//! need a restart; the certificate is also reloaded when its files change. An invalid file
//! changes nothing. It never touches connections in progress.
//!
//! Domains managed at run time (`crate::registry`) join the file's in every generation: a
//! change to them builds a new generation the same way, without reading the file.

use super::{Core, Generation};
use crate::admin::Reload;
use crate::config::Config;
use crate::inbound::listener::Inbound;
use crate::shutdown;
use crate::tls::ServerCert;
use std::path::PathBuf;
use std::sync::Arc;
use tracing::{error, info, warn};

/// Reloads the configuration file: domains, recipient policies and lists, SMTP policy and
/// limits, bounce policies, and the certificate. Connections in progress keep the settings
/// they started with. An invalid file changes nothing.
pub(super) struct Reloader {
    pub(super) path: PathBuf,
    pub(super) core: Core,
    pub(super) cert: Option<Arc<ServerCert>>,
    pub(super) inbound: tokio::sync::watch::Sender<Arc<Inbound>>,
    pub(super) registry: Arc<crate::registry::Registry>,
    pub(super) state: tokio::sync::Mutex<State>,
}

/// What runs now.
pub(super) struct State {
    /// The configuration file as last loaded.
    pub(super) file: Config,
    pub(super) generation: Generation,
    /// The stored domains it was built with ([`crate::registry::Snapshot::fingerprint`]).
    pub(super) stored: Vec<(String, i64)>,
}

/// Logs each domain both in the file and in the registry (the file's settings apply).
pub(super) fn report_shadowed(snapshot: &crate::registry::Snapshot) {
    for d in snapshot.domains.keys().filter(|d| snapshot.is_shadowed(d)) {
        error!(domain = %d, "domain is both in the configuration file and added at run time: the file's settings apply; remove one (`mx2 domain remove {d}`, or its [[domain]] in the file)");
    }
}

/// The configuration a generation runs: the file's, with the registry's active domains
/// added (a name in both is the file's; the registry reports the stored one as shadowed).
pub fn effective(file: &Config, registry: &crate::registry::Snapshot) -> Config {
    let mut c = file.clone();
    c.domains.extend(registry.active().map(|d| (**d).clone()));
    c
}

/// Settings read once at start: which of them differ between two configurations.
fn restart_needed(old: &Config, new: &Config) -> Vec<&'static str> {
    let mut out = Vec::new();
    let mut check = |name, a: String, b: String| {
        if a != b {
            out.push(name);
        }
    };
    check("hostname", old.hostname.clone(), new.hostname.clone());
    check(
        "state_dir",
        format!("{:?}", old.state_dir),
        format!("{:?}", new.state_dir),
    );
    check(
        "smtp.listen",
        format!("{:?}", old.smtp.listen),
        format!("{:?}", new.smtp.listen),
    );
    check(
        "smtp.proxy_listen",
        format!("{:?}", old.smtp.proxy_listen),
        format!("{:?}", new.smtp.proxy_listen),
    );
    check("tls", format!("{:?}", old.tls), format!("{:?}", new.tls));
    check(
        "queue",
        format!("{:?}", old.queue),
        format!("{:?}", new.queue),
    );
    check(
        "probe",
        format!("{:?}", old.probe),
        format!("{:?}", new.probe),
    );
    check(
        "delivery",
        format!("{:?}", old.delivery),
        format!("{:?}", new.delivery),
    );
    check("dns", format!("{:?}", old.dns), format!("{:?}", new.dns));
    check(
        "tls_reports",
        format!("{:?}", old.tls_reports),
        format!("{:?}", new.tls_reports),
    );
    check(
        "routing",
        format!("{:?}", old.routing),
        format!("{:?}", new.routing),
    );
    check(
        "admin",
        format!("{:?}", old.admin),
        format!("{:?}", new.admin),
    );
    check(
        "alerts",
        format!("{:?}", old.alerts),
        format!("{:?}", new.alerts),
    );
    out
}

impl Reloader {
    async fn reload_now(&self) -> Result<String, String> {
        let result = self.apply().await;
        let (ok, detail) = match &result {
            Ok(d) => (true, d.clone()),
            Err(e) => (false, e.clone()),
        };
        if ok {
            info!(detail = %detail, "configuration reloaded");
        } else {
            error!(error = %detail, "configuration NOT reloaded; the running one stays");
        }
        crate::events::get().record(crate::events::Kind::Reload { ok, detail });
        result
    }

    async fn apply(&self) -> Result<String, String> {
        let path = self.path.clone();
        let config = tokio::task::spawn_blocking(move || Config::load(&path))
            .await
            .map_err(|e| e.to_string())?
            .map_err(|e| e.to_string())?;
        for w in &config.warnings {
            tracing::warn!("{w}");
        }
        let mut state = self.state.lock().await;
        self.registry.set_file_configs(&config.domains);
        let snapshot = self.registry.snapshot();
        report_shadowed(&snapshot);
        let effective = effective(&config, &snapshot);
        self.core.scheduler.reconfigure(&effective)?;
        let generation = self.core.start(&effective, &snapshot, None).await;
        self.inbound.send_replace(generation.inbound.clone());
        let old_domains: std::collections::BTreeSet<&str> =
            state.file.domains.iter().map(|d| d.name.as_str()).collect();
        let new_domains: std::collections::BTreeSet<&str> =
            config.domains.iter().map(|d| d.name.as_str()).collect();
        let added: Vec<&str> = new_domains.difference(&old_domains).copied().collect();
        let removed: Vec<&str> = old_domains.difference(&new_domains).copied().collect();
        let mut detail = format!(
            "{} domains ({} added{}, {} removed{})",
            new_domains.len(),
            added.len(),
            if added.is_empty() {
                String::new()
            } else {
                format!(": {}", added.join(", "))
            },
            removed.len(),
            if removed.is_empty() {
                String::new()
            } else {
                format!(": {}", removed.join(", "))
            },
        );
        if let Some(cert) = &self.cert {
            match cert.reload() {
                Ok(()) => detail.push_str("; certificate reloaded"),
                Err(e) => detail.push_str(&format!(
                    "; certificate NOT reloaded ({e}), the previous one stays"
                )),
            }
        }
        let restart = restart_needed(&state.file, &config);
        if !restart.is_empty() {
            warn!(settings = ?restart, "changed settings that take effect only after a restart");
            detail.push_str(&format!(
                "; changed but only applied after a restart: {}",
                restart.join(", ")
            ));
        }
        // Replacing the old generation stops its list and standby tasks.
        *state = State {
            file: config,
            generation,
            stored: snapshot.fingerprint(),
        };
        Ok(detail)
    }

    /// The registry changed: a new generation with its domains, if they changed.
    async fn apply_registry(&self) {
        let mut state = self.state.lock().await;
        let snapshot = self.registry.snapshot();
        let stored = snapshot.fingerprint();
        if stored == state.stored {
            return; // tenants or tokens only
        }
        let started = std::time::Instant::now();
        let effective = effective(&state.file, &snapshot);
        if let Err(e) = self.core.scheduler.reconfigure(&effective) {
            error!(error = %e, "domains changed at run time but NOT applied; the running ones stay");
            return;
        }
        let generation = self
            .core
            .start(&effective, &snapshot, Some(&state.generation))
            .await;
        self.inbound.send_replace(generation.inbound.clone());
        state.generation = generation;
        state.stored = stored;
        drop(effective);
        // The old generation and the build's scratch are freed now; give them back.
        crate::memory::trim();
        info!(
            active = snapshot.active().count(),
            pending = snapshot.pending().count(),
            took_ms = started.elapsed().as_millis() as u64,
            "run-time domains applied"
        );
    }
}

/// Applies every change of the registry until shutdown.
pub(super) async fn follow_registry(reloader: Arc<Reloader>, mut shutdown: shutdown::Shutdown) {
    let mut changes = reloader.registry.subscribe();
    loop {
        tokio::select! {
            _ = shutdown.wait() => return,
            r = changes.changed() => if r.is_err() { return },
        }
        reloader.apply_registry().await;
    }
}

impl Reload for Reloader {
    fn reload(
        &self,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<String, String>> + Send + '_>>
    {
        Box::pin(self.reload_now())
    }
}

/// SIGHUP reloads the configuration; every 30 s the certificate is reloaded if its files
/// changed.
pub(super) async fn watch_reloads(reloader: Arc<Reloader>, mut shutdown: shutdown::Shutdown) {
    use tokio::signal::unix::{SignalKind, signal};
    let mut hup = signal(SignalKind::hangup()).ok();
    loop {
        let forced = tokio::select! {
            _ = shutdown.wait() => return,
            _ = tokio::time::sleep(std::time::Duration::from_secs(30)) => false,
            Some(()) = async { match hup.as_mut() { Some(h) => h.recv().await, None => std::future::pending().await } } => true,
        };
        if forced {
            info!("SIGHUP: reloading the configuration");
            let _ = reloader.reload_now().await;
            // Lists are fetched again even when their sources did not change.
            reloader
                .state
                .lock()
                .await
                .generation
                .reload_lists
                .notify_one();
            continue;
        }
        let Some(cert) = &reloader.cert else { continue };
        match cert.reload_if_changed() {
            Ok(true) => info!("TLS certificate reloaded"),
            Ok(false) => {}
            Err(e) => {
                warn!(error = %e, "TLS certificate not reloaded; the previous one stays in use")
            }
        }
    }
}
