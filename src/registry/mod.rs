//! Domains and tenants managed at run time: the part of the configuration a backup-MX
//! service changes while it runs (`mx2 domain …`, `mx2 tenant …`, the API). The entries live
//! in the queue store (so every node sharing a PostgreSQL queue sees the same ones); this
//! module keeps a [`Snapshot`] of them in memory, current within a second of any change on
//! any node (the store's notifications, polling as the fallback), so the SMTP path never
//! asks the store. Each stored domain is validated exactly as a `[[domain]]` of the file is
//! (`config::parse_stored_domain`); the file's domains stay the static part, and a name in
//! both is the file's (the stored one is reported as shadowed).
//!
//! Here: the snapshot and how it is kept current. `records.rs` is what is stored,
//! `ops.rs` the changes operators and tenants make, `verify.rs` the ownership check.

pub mod ops;
pub mod records;
pub mod verify;

use crate::config::DomainConfig;
use crate::queue::registry::Entry;
use crate::queue::{Store, StoreError};
use crate::shutdown::Shutdown;
use records::{DomainRecord, DomainState, TenantRecord};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::PathBuf;
use std::sync::{Arc, RwLock};
use std::time::Duration;
use tokio::sync::Notify;
use tracing::{error, info, warn};

/// How often the store is asked whether the registry changed, in case a notification was
/// missed (a PostgreSQL connection that dropped and came back).
pub const POLL: Duration = Duration::from_secs(2);

/// A stored domain as the snapshot holds it.
#[derive(Debug, Clone)]
pub struct StoredDomain {
    pub name: String,
    pub record: DomainRecord,
    pub rev: i64,
    /// Its settings validated; Err says what is wrong (the domain then takes no mail).
    pub config: Result<Arc<DomainConfig>, String>,
}

/// A tenant as the snapshot holds it.
#[derive(Debug, Clone)]
pub struct StoredTenant {
    pub name: String,
    pub record: TenantRecord,
    pub rev: i64,
}

/// The registry at one moment.
#[derive(Debug, Default)]
pub struct Snapshot {
    /// The store's registry version this was read at.
    pub version: i64,
    pub domains: BTreeMap<String, StoredDomain>,
    pub tenants: BTreeMap<String, StoredTenant>,
    /// Token hash → tenant name.
    tokens: HashMap<[u8; 32], String>,
    /// Names the configuration file backs up (they win over stored ones).
    pub file_domains: Arc<BTreeSet<String>>,
}

impl Snapshot {
    /// Stored domains that take mail: active, valid, not shadowed by the file.
    pub fn active(&self) -> impl Iterator<Item = &Arc<DomainConfig>> {
        self.domains.values().filter_map(|d| match &d.config {
            Ok(c)
                if d.record.state == DomainState::Active
                    && !self.file_domains.contains(&d.name) =>
            {
                Some(c)
            }
            _ => None,
        })
    }

    /// Stored domains waiting for their ownership check (mail refused with 550 5.7.1).
    pub fn pending(&self) -> impl Iterator<Item = &str> {
        self.domains
            .values()
            .filter(|d| {
                d.record.state == DomainState::Pending && !self.file_domains.contains(&d.name)
            })
            .map(|d| d.name.as_str())
    }

    /// What decides the SMTP side: each stored domain's name, revision and state. Two
    /// snapshots with the same fingerprint take the same mail the same way.
    pub fn fingerprint(&self) -> Vec<(String, i64)> {
        self.domains
            .values()
            .map(|d| (d.name.clone(), d.rev))
            .collect()
    }

    /// The tenant a token belongs to.
    pub fn tenant_for_token(&self, token: &[u8]) -> Option<&str> {
        self.tokens
            .get(&records::token_hash(token))
            .map(String::as_str)
    }

    /// The stored domains of a tenant.
    pub fn tenant_domains(&self, tenant: &str) -> Vec<String> {
        self.domains
            .values()
            .filter(|d| d.record.tenant.as_deref() == Some(tenant))
            .map(|d| d.name.clone())
            .collect()
    }

    /// The tenant a domain belongs to, if any.
    pub fn tenant_of(&self, domain: &str) -> Option<&StoredTenant> {
        let t = self.domains.get(domain)?.record.tenant.as_deref()?;
        self.tenants.get(t)
    }

    /// A stored domain shadowed by the file's domain of the same name.
    pub fn is_shadowed(&self, name: &str) -> bool {
        self.domains.contains_key(name) && self.file_domains.contains(name)
    }
}

/// The registry of one node: its snapshot and how it stays current.
pub struct Registry {
    store: Arc<dyn Store>,
    /// Relative paths in stored settings are taken from here (the config file's directory).
    base: PathBuf,
    current: RwLock<Arc<Snapshot>>,
    changes: tokio::sync::watch::Sender<i64>,
    /// One refresh at a time.
    refreshing: tokio::sync::Mutex<()>,
    /// The configuration file's domains in full, for the admin API's listing (their limits).
    file_configs: RwLock<Arc<Vec<Arc<DomainConfig>>>>,
}

impl Registry {
    /// Reads the registry from the store.
    pub async fn open(
        store: Arc<dyn Store>,
        base: PathBuf,
        file_domains: impl IntoIterator<Item = String>,
    ) -> Result<Arc<Self>, StoreError> {
        let empty = Snapshot {
            file_domains: Arc::new(file_domains.into_iter().collect()),
            ..Default::default()
        };
        let (changes, _) = tokio::sync::watch::channel(-1);
        let r = Arc::new(Self {
            store,
            base,
            current: RwLock::new(Arc::new(empty)),
            changes,
            refreshing: tokio::sync::Mutex::new(()),
            file_configs: RwLock::new(Arc::new(Vec::new())),
        });
        r.refresh().await?;
        Ok(r)
    }

    /// The registry as last read.
    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.current
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Told the version whenever the snapshot changes.
    pub fn subscribe(&self) -> tokio::sync::watch::Receiver<i64> {
        self.changes.subscribe()
    }

    /// The configuration file's domains changed (a reload).
    pub fn set_file_domains(&self, names: impl IntoIterator<Item = String>) {
        let names: BTreeSet<String> = names.into_iter().collect();
        let mut cur = self.current.write().unwrap_or_else(|p| p.into_inner());
        if *cur.file_domains == names {
            return;
        }
        let next = Snapshot {
            version: cur.version,
            domains: cur.domains.clone(),
            tenants: cur.tenants.clone(),
            tokens: cur.tokens.clone(),
            file_domains: Arc::new(names),
        };
        *cur = Arc::new(next);
        drop(cur);
        // Same version, new content: subscribers look again.
        self.changes.send_modify(|_| {});
    }

    /// The configuration file's domains changed (start, reload): their names, as
    /// [`Registry::set_file_domains`], and their settings for the admin API's listing.
    pub fn set_file_configs(&self, domains: &[DomainConfig]) {
        *self.file_configs.write().unwrap_or_else(|p| p.into_inner()) =
            Arc::new(domains.iter().cloned().map(Arc::new).collect());
        self.set_file_domains(domains.iter().map(|d| d.name.clone()));
    }

    /// The configuration file's domain `name` as last given by [`Registry::set_file_configs`].
    pub fn file_config(&self, name: &str) -> Option<Arc<DomainConfig>> {
        self.file_configs
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .find(|d| d.name == name)
            .cloned()
    }

    /// Reads the store again if it changed; true when the snapshot changed.
    pub async fn refresh(&self) -> Result<bool, StoreError> {
        let _one = self.refreshing.lock().await;
        let version = self.store.registry_version().await?;
        let old = self.snapshot();
        if version == old.version {
            return Ok(false);
        }
        let entries = self.store.registry().await?;
        let base = self.base.clone();
        let next = tokio::task::spawn_blocking(move || build(entries, &old, &base))
            .await
            .map_err(|e| StoreError::Backend(format!("registry: {e}")))?;
        let next = Snapshot { version, ..next };
        *self.current.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(next);
        self.changes.send_replace(version);
        Ok(true)
    }

    /// Keeps the snapshot current until shutdown: at once when the store says something
    /// changed, else every [`POLL`].
    pub async fn run(self: Arc<Self>, mut shutdown: Shutdown) {
        let changed = Arc::new(Notify::new());
        self.store.watch_registry(changed.clone());
        let mut failing = false;
        loop {
            tokio::select! {
                _ = shutdown.wait() => return,
                _ = changed.notified() => {}
                _ = tokio::time::sleep(POLL) => {}
            }
            match self.refresh().await {
                Ok(_) if failing => {
                    failing = false;
                    info!("domain registry readable again");
                }
                Ok(_) => {}
                Err(e) if !failing => {
                    failing = true;
                    warn!(error = %e, "cannot read the domain registry; the last copy stays in use");
                }
                Err(_) => {}
            }
        }
    }
}

/// A snapshot from the store's entries; domains whose revision did not change keep their
/// validated settings from `old` (10,000 domains are not parsed again for one change).
fn build(entries: Vec<Entry>, old: &Snapshot, base: &std::path::Path) -> Snapshot {
    let mut s = Snapshot {
        file_domains: old.file_domains.clone(),
        ..Default::default()
    };
    for e in entries {
        match e.kind.as_str() {
            records::DOMAIN => {
                if let Some(prev) = old.domains.get(&e.name).filter(|d| d.rev == e.rev) {
                    s.domains.insert(e.name.clone(), prev.clone());
                    continue;
                }
                let record: DomainRecord = match serde_json::from_str(&e.value) {
                    Ok(r) => r,
                    Err(err) => {
                        error!(domain = %e.name, error = %err, "stored domain unreadable; it takes no mail");
                        continue;
                    }
                };
                let config = crate::config::parse_stored_domain(&e.name, &record.settings, base)
                    .map(|(c, _)| Arc::new(c))
                    .map_err(|err| err.to_string());
                if let Err(err) = &config {
                    error!(domain = %e.name, error = %err, "stored domain invalid; it takes no mail until fixed with `mx2 domain set`");
                }
                s.domains.insert(
                    e.name.clone(),
                    StoredDomain {
                        name: e.name,
                        record,
                        rev: e.rev,
                        config,
                    },
                );
            }
            records::TENANT => {
                let record: TenantRecord = match serde_json::from_str(&e.value) {
                    Ok(r) => r,
                    Err(err) => {
                        error!(tenant = %e.name, error = %err, "stored tenant unreadable; its tokens are refused");
                        continue;
                    }
                };
                for t in &record.tokens {
                    if let Some(h) = records::parse_hash(&t.sha256) {
                        s.tokens.insert(h, e.name.clone());
                    }
                }
                s.tenants.insert(
                    e.name.clone(),
                    StoredTenant {
                        name: e.name,
                        record,
                        rev: e.rev,
                    },
                );
            }
            _ => {} // written by a newer mx2: left alone
        }
    }
    s
}
