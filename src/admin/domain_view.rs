//! How a domain reads in the API (`GET /api/v1/domains`): where it is configured, its
//! state, owner, settings, limits, ownership challenge, last audit verdict, and what the
//! queue holds for it. Built from the registry's snapshot and the queue's depth; pure.

use super::Admin;
use super::scope::Scope;
use crate::config::DomainLimits;
use crate::queue::Depth;
use crate::registry::records::DomainState;
use crate::registry::verify::challenge_name;
use crate::registry::{Snapshot, StoredDomain};
use serde::Serialize;
use serde_json::Value;
use std::collections::HashMap;

/// Where a domain is configured.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Source {
    File,
    Store,
}

/// The TXT record that proves a pending domain's ownership.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Challenge {
    pub record: String,
    pub value: String,
}

/// What the queue holds for a domain.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct QueueUse {
    pub messages: u64,
    pub bytes: u64,
}

/// One domain as the API shows it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DomainView {
    pub name: String,
    pub source: Source,
    pub state: DomainState,
    pub tenant: Option<String>,
    /// A stored domain the configuration file also has: the file's settings apply.
    pub shadowed: bool,
    /// A stored domain's `[[domain]]` keys; None for the file's domains.
    pub settings: Option<Value>,
    /// Its own limits; None when not known (settings invalid, or not handed to the API).
    pub limits: Option<DomainLimits>,
    /// Why a stored domain's settings are refused (it then takes no mail).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub invalid: Option<String>,
    /// For a pending domain: the TXT record to publish.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub challenge: Option<Challenge>,
    /// The last MX audit's verdict (ok, warn, fail).
    pub audit: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub created_ms: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub verified_ms: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub verified_by: Option<String>,
    pub queue: QueueUse,
}

/// What the queue holds, by domain.
#[derive(Debug, Clone, Default)]
pub struct QueueUses(HashMap<String, QueueUse>);

impl QueueUses {
    pub fn of(depth: Vec<Depth>) -> QueueUses {
        QueueUses(
            depth
                .into_iter()
                .map(|d| {
                    let u = QueueUse {
                        messages: d.messages,
                        bytes: d.bytes,
                    };
                    (d.domain, u)
                })
                .collect(),
        )
    }

    pub fn get(&self, domain: &str) -> QueueUse {
        self.0.get(domain).copied().unwrap_or_default()
    }
}

/// A stored domain's view.
pub fn stored_view(d: &StoredDomain, snapshot: &Snapshot, queue: &QueueUses) -> DomainView {
    let r = &d.record;
    DomainView {
        name: d.name.clone(),
        source: Source::Store,
        state: r.state,
        tenant: r.tenant.clone(),
        shadowed: snapshot.is_shadowed(&d.name),
        settings: r
            .settings
            .parse::<toml::Table>()
            .ok()
            .and_then(|t| serde_json::to_value(t).ok()),
        limits: d.config.as_ref().ok().map(|c| c.limits),
        invalid: d.config.as_ref().err().cloned(),
        challenge: (r.state == DomainState::Pending).then(|| Challenge {
            record: challenge_name(&d.name),
            value: r.challenge.clone(),
        }),
        audit: r
            .audit
            .as_ref()
            .and_then(|a| a.get("verdict"))
            .and_then(Value::as_str)
            .map(str::to_string),
        created_ms: Some(r.created_ms),
        verified_ms: r.verified_ms,
        verified_by: r.verified_by.clone(),
        queue: queue.get(&d.name),
    }
}

/// A domain of the configuration file.
pub fn file_view(a: &Admin, name: &str, queue: &QueueUses) -> DomainView {
    DomainView {
        name: name.to_string(),
        source: Source::File,
        state: DomainState::Active,
        tenant: None,
        shadowed: false,
        settings: None,
        limits: a.registry.file_config(name).map(|c| c.limits),
        invalid: None,
        challenge: None,
        audit: None,
        created_ms: None,
        verified_ms: None,
        verified_by: None,
        queue: queue.get(name),
    }
}

/// Every domain `scope` may see: the file's (operator only), then the stored ones.
pub fn views(a: &Admin, scope: &Scope, queue: &QueueUses) -> Vec<DomainView> {
    let snapshot = a.registry.snapshot();
    let file = match scope {
        Scope::All => snapshot.file_domains.iter().collect(),
        Scope::Domains(_) => Vec::new(),
    };
    let mut out: Vec<DomainView> = file.into_iter().map(|n| file_view(a, n, queue)).collect();
    out.extend(
        snapshot
            .domains
            .values()
            .filter(|d| scope.covers(&d.name))
            .map(|d| stored_view(d, &snapshot, queue)),
    );
    out
}
