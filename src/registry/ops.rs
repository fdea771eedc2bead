//! The changes operators and tenants make to the registry: add, change and remove domains
//! (settings checked exactly as the file's are before anything is written), replace a
//! domain's recipient list in one step, and manage tenants and their tokens. Every change is
//! a read-change-write on one entry at a known revision, tried again when another change
//! got there first, so two operators at once never lose one's change unseen. The snapshot
//! is read again before a change returns: the caller sees its own change.

use super::records::{self, DomainRecord, DomainState, TenantRecord, TokenRecord};
use super::{Registry, StoredDomain, StoredTenant};
use crate::queue::registry::{Expect, Written};
use crate::queue::{StoreError, now_ms};
use serde_json::{Map, Value};

/// Why a change was not made.
#[derive(Debug, thiserror::Error)]
pub enum OpError {
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Exists(String),
    #[error("{0}")]
    Invalid(String),
    #[error("the entry kept changing under this change; try again")]
    Busy,
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// How often a change is tried when others keep changing the same entry.
const TRIES: usize = 8;

/// A domain to add.
#[derive(Debug, Clone, Default)]
pub struct AddDomain {
    pub name: String,
    /// `[[domain]]` keys (without `name`), e.g. `{"primary": ["mail.example.org:25"]}`.
    pub settings: Map<String, Value>,
    pub tenant: Option<String>,
    /// An operator vouches for it: active at once, no TXT challenge.
    pub verified: bool,
}

/// A domain name as the registry keys it (lower case, no trailing dot), or why not.
pub fn domain_name(name: &str) -> Result<String, OpError> {
    let n = name.trim().trim_end_matches('.').to_ascii_lowercase();
    if crate::config::is_domain_name(&n) {
        Ok(n)
    } else {
        Err(OpError::Invalid(format!(
            "`{name}` is not a valid domain name"
        )))
    }
}

/// A tenant name: 1–64 of a-z, 0-9, `-`, `_`, `.`.
pub fn tenant_name(name: &str) -> Result<String, OpError> {
    let n = name.trim().to_ascii_lowercase();
    let ok = !n.is_empty()
        && n.len() <= 64
        && n.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    if ok {
        Ok(n)
    } else {
        Err(OpError::Invalid(format!(
            "`{name}` is not a valid tenant name: use 1 to 64 letters, digits, `-`, `_` or `.`"
        )))
    }
}

/// `[[domain]]` keys from JSON, merged into TOML settings text: a JSON `null` removes the key.
fn merge_settings(current: &str, changes: &Map<String, Value>) -> Result<String, OpError> {
    let mut table: toml::Table = current
        .parse()
        .map_err(|e| OpError::Invalid(format!("stored settings unreadable: {e}")))?;
    for (k, v) in changes {
        if k == "name" {
            return Err(OpError::Invalid(
                "`name` cannot be changed: remove the domain and add it under the new name".into(),
            ));
        }
        if v.is_null() {
            table.remove(k);
            continue;
        }
        let t = toml::Value::try_from(v).map_err(|e| {
            OpError::Invalid(format!(
                "key `{k}`: {e} (use a string, number, true/false or a list)"
            ))
        })?;
        table.insert(k.clone(), t);
    }
    toml::to_string(&table).map_err(|e| OpError::Invalid(e.to_string()))
}

impl Registry {
    /// Checks settings as `mx2` would load them; Err says which key and why.
    fn validate(&self, name: &str, settings: &str) -> Result<(), OpError> {
        crate::config::parse_stored_domain(name, settings, &self.base)
            .map(|_| ())
            .map_err(|e| OpError::Invalid(e.to_string()))
    }

    /// The entry as stored now (after reading the store again).
    async fn fresh<T>(
        &self,
        pick: impl Fn(&super::Snapshot) -> Option<T>,
    ) -> Result<Option<T>, OpError> {
        self.refresh().await?;
        Ok(pick(&self.snapshot()))
    }

    /// Writes `value` for (kind, name) if it is still at `expect`; then reads the store again.
    async fn write<T: serde::Serialize>(
        &self,
        kind: &str,
        name: &str,
        value: &T,
        expect: Expect,
    ) -> Result<Written, OpError> {
        let text = serde_json::to_string(value).map_err(|e| OpError::Invalid(e.to_string()))?;
        let w = self.store.registry_put(kind, name, text, expect).await?;
        if let Written::Done(_) = w {
            self.refresh().await?;
        }
        Ok(w)
    }

    /// Read, change, write one entry, tried again when someone else changed it meanwhile.
    /// `current` picks the entry and its revision from a fresh snapshot.
    async fn update<T, F>(
        &self,
        kind: &str,
        name: &str,
        current: impl Fn(&super::Snapshot) -> Option<(T, i64)>,
        mut change: F,
    ) -> Result<(), OpError>
    where
        T: serde::Serialize,
        F: FnMut(&mut T) -> Result<(), OpError>,
    {
        for _ in 0..TRIES {
            let Some((mut value, rev)) = self.fresh(&current).await? else {
                return Err(OpError::NotFound(format!("no {kind} {name}")));
            };
            change(&mut value)?;
            if let Written::Done(_) = self.write(kind, name, &value, Expect::Rev(rev)).await? {
                return Ok(());
            }
        }
        Err(OpError::Busy)
    }

    async fn update_domain(
        &self,
        name: &str,
        change: impl FnMut(&mut DomainRecord) -> Result<(), OpError>,
    ) -> Result<(), OpError> {
        self.update(
            records::DOMAIN,
            name,
            |s| s.domains.get(name).map(|d| (d.record.clone(), d.rev)),
            change,
        )
        .await
    }

    async fn update_tenant(
        &self,
        name: &str,
        change: impl FnMut(&mut TenantRecord) -> Result<(), OpError>,
    ) -> Result<(), OpError> {
        self.update(
            records::TENANT,
            name,
            |s| s.tenants.get(name).map(|t| (t.record.clone(), t.rev)),
            change,
        )
        .await
    }

    /// The stored domain `name` as the snapshot has it now.
    pub fn domain(&self, name: &str) -> Option<StoredDomain> {
        self.snapshot().domains.get(name).cloned()
    }

    /// The tenant `name` as the snapshot has it now.
    pub fn tenant(&self, name: &str) -> Option<StoredTenant> {
        self.snapshot().tenants.get(name).cloned()
    }

    /// Adds a domain: pending (until its TXT challenge is published) unless `verified`.
    pub async fn add_domain(&self, add: AddDomain) -> Result<StoredDomain, OpError> {
        let name = domain_name(&add.name)?;
        if self.snapshot().file_domains.contains(&name) {
            return Err(OpError::Exists(format!(
                "{name} is configured in the configuration file; remove its [[domain]] there (and reload) to manage it at run time"
            )));
        }
        let tenant = match &add.tenant {
            Some(t) => {
                let t = tenant_name(t)?;
                if self.fresh(|s| s.tenants.get(&t).cloned()).await?.is_none() {
                    return Err(OpError::NotFound(format!(
                        "no tenant {t}: add it first with `mx2 tenant add {t}`"
                    )));
                }
                Some(t)
            }
            None => None,
        };
        let settings = merge_settings("", &add.settings)?;
        self.validate(&name, &settings)?;
        let now = now_ms();
        let record = DomainRecord {
            state: if add.verified {
                DomainState::Active
            } else {
                DomainState::Pending
            },
            settings,
            challenge: records::new_challenge(),
            tenant,
            created_ms: now,
            verified_ms: add.verified.then_some(now),
            verified_by: add.verified.then(|| "operator".to_string()),
            audit: None,
        };
        match self
            .write(records::DOMAIN, &name, &record, Expect::Absent)
            .await?
        {
            Written::Done(_) => self.domain(&name).ok_or_else(|| {
                OpError::NotFound(format!("{name} vanished right after it was added"))
            }),
            Written::Conflict => Err(OpError::Exists(format!(
                "{name} is already added (see `mx2 domain show {name}`)"
            ))),
        }
    }

    /// Changes a domain's settings (`null` removes a key) and, when `tenant` is given, whose
    /// it is (`Some(None)`: nobody's).
    pub async fn set_domain(
        &self,
        name: &str,
        changes: &Map<String, Value>,
        tenant: Option<Option<String>>,
    ) -> Result<StoredDomain, OpError> {
        let name = domain_name(name)?;
        let tenant = match tenant {
            Some(Some(t)) => {
                let t = tenant_name(&t)?;
                if self.fresh(|s| s.tenants.get(&t).cloned()).await?.is_none() {
                    return Err(OpError::NotFound(format!("no tenant {t}")));
                }
                Some(Some(t))
            }
            other => other,
        };
        self.update_domain(&name, |r| {
            let settings = merge_settings(&r.settings, changes)?;
            self.validate(&name, &settings)?;
            r.settings = settings;
            if let Some(t) = &tenant {
                r.tenant = t.clone();
            }
            Ok(())
        })
        .await?;
        self.domain(&name)
            .ok_or_else(|| OpError::NotFound(format!("no domain {name}")))
    }

    /// Replaces a domain's recipient list in one step (`recipients` becomes "list" unless it
    /// already lists or verifies).
    pub async fn set_recipients(
        &self,
        name: &str,
        addresses: Vec<String>,
    ) -> Result<StoredDomain, OpError> {
        let name = domain_name(name)?;
        let current = self
            .fresh(|s| s.domains.get(&name).cloned())
            .await?
            .ok_or_else(|| OpError::NotFound(format!("no domain {name}")))?;
        let mut changes = Map::new();
        let lists = current
            .config
            .as_ref()
            .map(|c| c.recipients.list)
            .unwrap_or(false);
        if !lists {
            changes.insert("recipients".into(), Value::String("list".into()));
        }
        changes.insert(
            "recipient_addresses".into(),
            Value::Array(addresses.into_iter().map(Value::String).collect()),
        );
        self.set_domain(&name, &changes, None).await
    }

    /// Marks a domain active (its challenge was found, or an operator vouched for it), with
    /// the MX audit's report when one was made.
    pub async fn activate(
        &self,
        name: &str,
        by: &str,
        audit: Option<Value>,
    ) -> Result<StoredDomain, OpError> {
        let name = domain_name(name)?;
        self.update_domain(&name, |r| {
            if r.state != DomainState::Active {
                r.state = DomainState::Active;
                r.verified_ms = Some(now_ms());
                r.verified_by = Some(by.to_string());
            }
            if audit.is_some() {
                r.audit = audit.clone();
            }
            Ok(())
        })
        .await?;
        self.domain(&name)
            .ok_or_else(|| OpError::NotFound(format!("no domain {name}")))
    }

    /// Keeps the latest MX audit of a domain.
    pub async fn record_audit(&self, name: &str, audit: Value) -> Result<(), OpError> {
        self.update_domain(name, |r| {
            r.audit = Some(audit.clone());
            Ok(())
        })
        .await
    }

    /// Removes a stored domain: mail for it is refused from now on. Its held mail stays
    /// (delivered as before) unless the caller purges it.
    pub async fn remove_domain(&self, name: &str) -> Result<(), OpError> {
        let name = domain_name(name)?;
        if !self
            .store
            .registry_delete(records::DOMAIN, &name, None)
            .await?
        {
            return Err(OpError::NotFound(
                if self.snapshot().file_domains.contains(&name) {
                    format!(
                        "{name} is configured in the configuration file: remove its [[domain]] there and reload"
                    )
                } else {
                    format!("no domain {name}")
                },
            ));
        }
        self.refresh().await?;
        Ok(())
    }

    /// Adds a tenant.
    pub async fn add_tenant(
        &self,
        name: &str,
        webhook: Option<String>,
        alert_to: Option<String>,
    ) -> Result<StoredTenant, OpError> {
        let name = tenant_name(name)?;
        check_contacts(webhook.as_deref(), alert_to.as_deref())?;
        let record = TenantRecord {
            webhook,
            alert_to,
            tokens: Vec::new(),
            created_ms: now_ms(),
        };
        match self
            .write(records::TENANT, &name, &record, Expect::Absent)
            .await?
        {
            Written::Done(_) => self
                .tenant(&name)
                .ok_or_else(|| OpError::NotFound(format!("tenant {name} vanished"))),
            Written::Conflict => Err(OpError::Exists(format!("tenant {name} already exists"))),
        }
    }

    /// Changes a tenant's webhook or alert address (`Some(None)` clears one).
    pub async fn set_tenant(
        &self,
        name: &str,
        webhook: Option<Option<String>>,
        alert_to: Option<Option<String>>,
    ) -> Result<StoredTenant, OpError> {
        let name = tenant_name(name)?;
        check_contacts(
            webhook.as_ref().and_then(|w| w.as_deref()),
            alert_to.as_ref().and_then(|a| a.as_deref()),
        )?;
        self.update_tenant(&name, |t| {
            if let Some(w) = &webhook {
                t.webhook = w.clone();
            }
            if let Some(a) = &alert_to {
                t.alert_to = a.clone();
            }
            Ok(())
        })
        .await?;
        self.tenant(&name)
            .ok_or_else(|| OpError::NotFound(format!("no tenant {name}")))
    }

    /// Removes a tenant and with it every token it has; refused while domains are its.
    pub async fn remove_tenant(&self, name: &str) -> Result<(), OpError> {
        let name = tenant_name(name)?;
        self.refresh().await?;
        let domains = self.snapshot().tenant_domains(&name);
        if !domains.is_empty() {
            return Err(OpError::Invalid(format!(
                "tenant {name} still has domains ({}): remove them, or give them to another tenant with `mx2 domain set DOMAIN --tenant OTHER`",
                domains.join(", ")
            )));
        }
        if !self
            .store
            .registry_delete(records::TENANT, &name, None)
            .await?
        {
            return Err(OpError::NotFound(format!("no tenant {name}")));
        }
        self.refresh().await?;
        Ok(())
    }

    /// Makes a new token for a tenant: returns its id and the token (shown this once).
    pub async fn add_token(&self, tenant: &str) -> Result<(String, String), OpError> {
        let tenant = tenant_name(tenant)?;
        let token = records::new_token().ok_or_else(|| {
            OpError::Invalid("the system's random number source failed; no token made".into())
        })?;
        let id = records::new_token_id();
        let hash = records::token_hash_hex(token.as_bytes());
        self.update_tenant(&tenant, |t| {
            t.tokens.push(TokenRecord {
                id: id.clone(),
                sha256: hash.clone(),
                created_ms: now_ms(),
            });
            Ok(())
        })
        .await?;
        Ok((id, token))
    }

    /// Revokes one of a tenant's tokens.
    pub async fn remove_token(&self, tenant: &str, id: &str) -> Result<(), OpError> {
        let tenant = tenant_name(tenant)?;
        self.update_tenant(&tenant, |t| {
            let before = t.tokens.len();
            t.tokens.retain(|k| k.id != id);
            if t.tokens.len() == before {
                return Err(OpError::NotFound(format!(
                    "tenant {tenant} has no token {id}"
                )));
            }
            Ok(())
        })
        .await
    }
}

/// A webhook must be an http(s) URL and an alert address a mail address.
fn check_contacts(webhook: Option<&str>, alert_to: Option<&str>) -> Result<(), OpError> {
    if let Some(w) = webhook
        && !(w.starts_with("http://") || w.starts_with("https://"))
    {
        return Err(OpError::Invalid(format!(
            "webhook `{w}` must start with http:// or https://"
        )));
    }
    if let Some(a) = alert_to {
        crate::smtp::address::parse_mailbox(a, true)
            .map_err(|e| OpError::Invalid(format!("`{a}` is not a mail address: {e}")))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_merge_and_remove_keys() {
        let mut c = Map::new();
        c.insert("primary".into(), serde_json::json!(["mail.example.org:25"]));
        c.insert("max_queue_bytes".into(), serde_json::json!("20GB"));
        let s = merge_settings("", &c).unwrap();
        assert!(s.contains("primary") && s.contains("20GB"), "{s}");
        let mut c = Map::new();
        c.insert("max_queue_bytes".into(), Value::Null);
        c.insert("lifetime".into(), serde_json::json!("14d"));
        let s = merge_settings(&s, &c).unwrap();
        assert!(
            !s.contains("20GB") && s.contains("14d") && s.contains("primary"),
            "{s}"
        );
        let mut c = Map::new();
        c.insert("name".into(), serde_json::json!("other.org"));
        assert!(matches!(merge_settings(&s, &c), Err(OpError::Invalid(_))));
    }

    #[test]
    fn names_are_checked() {
        assert_eq!(domain_name("Example.ORG.").unwrap(), "example.org");
        assert!(domain_name("not a domain").is_err());
        assert_eq!(tenant_name("Acme-1").unwrap(), "acme-1");
        assert!(tenant_name("a/b").is_err() && tenant_name("").is_err());
    }
}
