//! Knowing the recipients: per-domain lists (files, a URL the primary publishes), callouts to
//! the primary with durable positive and negative caches, and what to answer for an address
//! nobody can vouch for while the primary is down. The decision is [`Recipients::check`].

use crate::config::{RecipientPolicy, UnknownWhenDown};
use crate::queue::{Store, now_ms};
use crate::smtp::{Mailbox, Reply};
use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, RwLock};
use std::time::Duration;

/// What the primary said about an address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CalloutResult {
    Exists,
    /// 5xx to RCPT, with the reply.
    DoesNotExist(String),
    /// No answer to rely on (down, 4xx, timeout).
    Unknown(String),
}

/// Asking the primary, and knowing whether it is up: provided by the scheduler.
pub trait Primaries: Send + Sync {
    fn is_up(&self, domain: &str) -> bool;
    fn callout<'a>(
        &'a self,
        domain: &'a str,
        address: &'a str,
    ) -> Pin<Box<dyn Future<Output = CalloutResult> + Send + 'a>>;
}

/// The decision for one RCPT.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Accept,
    Reject(Reply),
    TempFail(Reply),
}

/// One domain's loaded list: exact addresses (normalized) and whole-domain wildcards.
#[derive(Debug, Default, Clone)]
pub struct List {
    pub addresses: HashSet<String>,
    pub wildcard: bool,
}

impl List {
    /// Parses list text: one address per line (`#` comments), `@domain` for every address of
    /// that domain. JSON arrays of strings are accepted too.
    pub fn parse(text: &str, domain: &str, policy: &RecipientPolicy) -> List {
        let mut list = List::default();
        let trimmed = text.trim_start();
        let items: Vec<String> = if trimmed.starts_with('[') {
            serde_json::from_str::<Vec<String>>(trimmed).unwrap_or_default()
        } else {
            text.lines()
                .map(|l| l.split('#').next().unwrap_or("").trim().to_string())
                .filter(|l| !l.is_empty())
                .collect()
        };
        for item in items {
            let item = item.trim().trim_matches(|c| c == '<' || c == '>');
            if let Some(d) = item.strip_prefix('@') {
                if d.trim_end_matches('.').eq_ignore_ascii_case(domain) {
                    list.wildcard = true;
                }
                continue;
            }
            if let Some((local, d)) = item.rsplit_once('@')
                && d.trim_end_matches('.').eq_ignore_ascii_case(domain)
            {
                list.addresses.insert(key(local, domain, policy));
            }
        }
        list
    }
}

/// The lookup key of an address: domain lower-cased, local part per the policy, sub-address
/// tag dropped.
pub fn key(local: &str, domain: &str, policy: &RecipientPolicy) -> String {
    let local = local.trim_matches('"');
    let local = match policy.subaddress {
        Some(sep) => local.split(sep).next().unwrap_or(local),
        None => local,
    };
    let local = if policy.case_sensitive {
        local.to_string()
    } else {
        local.to_lowercase()
    };
    format!("{local}@{}", domain.to_ascii_lowercase())
}

struct DomainState {
    policy: RecipientPolicy,
    standby: bool,
    /// None until a list was loaded once.
    list: RwLock<Option<Arc<List>>>,
}

/// How long verification answers are kept.
#[derive(Debug, Clone, Copy)]
pub struct Ttls {
    pub positive: Duration,
    pub negative: Duration,
}

pub struct Recipients {
    domains: HashMap<String, DomainState>,
    store: Arc<dyn Store>,
    primaries: Arc<dyn Primaries>,
    ttls: Ttls,
}

fn unknown_user(rcpt: &str) -> Reply {
    Reply::new(
        550,
        "5.1.1",
        format!("<{rcpt}>: recipient address rejected: user unknown"),
    )
}

impl Recipients {
    pub fn new(
        domains: impl IntoIterator<Item = (String, RecipientPolicy, bool)>,
        store: Arc<dyn Store>,
        primaries: Arc<dyn Primaries>,
        ttls: Ttls,
    ) -> Self {
        let domains = domains
            .into_iter()
            .filter(|(_, p, standby)| !p.is_any() || *standby)
            .map(|(name, policy, standby)| {
                (
                    name,
                    DomainState {
                        policy,
                        standby,
                        list: RwLock::new(None),
                    },
                )
            })
            .collect();
        Self {
            domains,
            store,
            primaries,
            ttls,
        }
    }

    /// Domains whose recipients need [`Recipients::check`] (list, verify or standby).
    pub fn checked_domains(&self) -> impl Iterator<Item = &String> {
        self.domains.keys()
    }

    /// The domains with lists, and where their lists come from.
    pub fn list_sources(&self) -> Vec<(String, RecipientPolicy)> {
        self.domains
            .iter()
            .filter(|(_, d)| d.policy.list)
            .map(|(n, d)| (n.clone(), d.policy.clone()))
            .collect()
    }

    /// Whether a domain's list is loaded.
    pub fn has_list(&self, domain: &str) -> bool {
        self.domains
            .get(domain)
            .is_some_and(|d| d.list.read().unwrap_or_else(|p| p.into_inner()).is_some())
    }

    /// Takes the loaded lists of `old` for every domain whose recipient policy is unchanged
    /// (a new generation built for another domain's change keeps everyone else's lists).
    pub fn carry_lists_from(&self, old: &Recipients) {
        for (name, d) in &self.domains {
            let Some(o) = old.domains.get(name).filter(|o| o.policy == d.policy) else {
                continue;
            };
            let list = o.list.read().unwrap_or_else(|p| p.into_inner()).clone();
            if list.is_some() {
                *d.list.write().unwrap_or_else(|p| p.into_inner()) = list;
            }
        }
    }

    /// Installs a freshly loaded list for a domain.
    pub fn set_list(&self, domain: &str, list: List) {
        if let Some(d) = self.domains.get(domain) {
            *d.list.write().unwrap_or_else(|p| p.into_inner()) = Some(Arc::new(list));
        }
    }

    /// Records what a delivery taught: the primary accepted (or refused for good) an address.
    pub async fn learn(&self, domain: &str, address: &str, exists: bool) {
        let Some(d) = self.domains.get(domain) else {
            return;
        };
        let Some((local, _)) = address.rsplit_once('@') else {
            return;
        };
        let ttl = if exists {
            self.ttls.positive
        } else {
            self.ttls.negative
        };
        let k = key(local, domain, &d.policy);
        let _ = self
            .store
            .cache_put(k, exists, now_ms() + ttl.as_millis() as i64)
            .await;
    }

    /// Decides on one recipient of a domain mx2 backs up.
    pub async fn check(&self, rcpt: &Mailbox, domain: &str) -> Verdict {
        let Some(d) = self.domains.get(domain) else {
            return Verdict::Accept;
        };
        let primary_up = self.primaries.is_up(domain);
        if d.standby && primary_up {
            return Verdict::TempFail(Reply::new(
                451,
                "4.7.1",
                format!("{domain}: its primary mail server is up; deliver there"),
            ));
        }
        if d.policy.is_any() {
            return Verdict::Accept;
        }
        let local = rcpt.local_unquoted();
        // RFC 5321 §4.5.1: every domain accepts mail for its postmaster, listed or not.
        if local.eq_ignore_ascii_case("postmaster") {
            return Verdict::Accept;
        }
        let k = key(&local, domain, &d.policy);
        let address = rcpt.to_string();
        if d.policy.list {
            let list = d.list.read().unwrap_or_else(|p| p.into_inner()).clone();
            if let Some(list) = list {
                if list.wildcard || list.addresses.contains(&k) {
                    return Verdict::Accept;
                }
                if !d.policy.verify {
                    // The list is the truth.
                    return Verdict::Reject(unknown_user(&address));
                }
            }
        }
        // Known from an earlier callout or delivery?
        if let Ok(Some((exists, expires))) = self.store.cache_get(k.clone()).await
            && expires > now_ms()
        {
            return if exists {
                Verdict::Accept
            } else {
                Verdict::Reject(unknown_user(&address))
            };
        }
        if d.policy.verify && primary_up {
            match self.primaries.callout(domain, &address).await {
                CalloutResult::Exists => {
                    let _ = self
                        .store
                        .cache_put(k, true, now_ms() + self.ttls.positive.as_millis() as i64)
                        .await;
                    return Verdict::Accept;
                }
                CalloutResult::DoesNotExist(reply) => {
                    tracing::info!(rcpt = %address, reply, "callout: the primary does not know this recipient");
                    let _ = self
                        .store
                        .cache_put(k, false, now_ms() + self.ttls.negative.as_millis() as i64)
                        .await;
                    return Verdict::Reject(unknown_user(&address));
                }
                CalloutResult::Unknown(reason) => {
                    tracing::debug!(rcpt = %address, reason, "callout gave no answer")
                }
            }
        }
        match d.policy.unknown_when_down {
            UnknownWhenDown::Accept => Verdict::Accept,
            UnknownWhenDown::TempFail => Verdict::TempFail(Reply::new(
                451,
                "4.4.3",
                format!("<{address}>: cannot verify the recipient now; try again later"),
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> RecipientPolicy {
        RecipientPolicy {
            list: true,
            subaddress: Some('+'),
            ..Default::default()
        }
    }

    #[test]
    fn keys_normalize_case_and_tags() {
        assert_eq!(
            key("John.Doe+news", "Example.TEST", &policy()),
            "john.doe@example.test"
        );
        let sensitive = RecipientPolicy {
            case_sensitive: true,
            subaddress: None,
            ..Default::default()
        };
        assert_eq!(
            key("John+x", "example.test", &sensitive),
            "John+x@example.test"
        );
    }

    #[test]
    fn lists_parse_lines_json_and_wildcards() {
        let l = List::parse(
            "# staff\nalice@example.test\n Bob@Example.test # boss\nother@elsewhere.test\n",
            "example.test",
            &policy(),
        );
        assert!(
            l.addresses.contains("alice@example.test") && l.addresses.contains("bob@example.test")
        );
        assert_eq!(
            l.addresses.len(),
            2,
            "addresses of other domains are ignored"
        );
        assert!(!l.wildcard);
        let j = List::parse(
            "[\"carol@example.test\", \"@example.test\"]",
            "example.test",
            &policy(),
        );
        assert!(j.wildcard && j.addresses.contains("carol@example.test"));
    }
}
