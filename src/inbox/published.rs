//! Credentials lists published by the primaries (`[[domain]] inbox_credentials_url`): lines
//! `address argon2id-hash`, fetched like a `recipient_url` (`policy::lists::fetch`, every
//! `[recipients] reload_interval` and on reload) while the primary is up, so that when it
//! is down its users can still log in. Each good copy replaces the domain's list in the
//! store (`Store::inbox_publish`), which keeps it across restarts; a fetch that fails, or a
//! body with no usable line while the last copy had some, leaves the last good copy in force.
//! A password set here (`mx2 inbox passwd`) is checked first (`Store::inbox_credential`).

use crate::config::Config;
use crate::dns::Dns;
use crate::queue::Store;
use crate::queue::inbox::{key_domain, mailbox_key};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tracing::{info, warn};

/// The most lines a list may hold; the rest are ignored (and counted as skipped).
const MAX_LINES: usize = 1_000_000;

/// One domain's list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Source {
    pub domain: String,
    pub url: String,
    pub token_file: Option<PathBuf>,
}

/// The lists of `config`'s domains with an inbox.
pub fn sources(config: &Config) -> Vec<Source> {
    config
        .domains
        .iter()
        .filter(|d| d.inbox)
        .filter_map(|d| {
            Some(Source {
                domain: d.name.clone(),
                url: d.inbox_credentials_url.clone()?,
                token_file: d.inbox_credentials_url_token_file.clone(),
            })
        })
        .collect()
}

/// A list's usable entries (mailbox key, hash), and how many lines were skipped: lines
/// that are not `address hash`, whose address is not in `domain`, or whose hash is not
/// argon2id. Blank lines and `#` comments are not counted.
pub fn parse(text: &str, domain: &str) -> (Vec<(String, String)>, usize) {
    let mut entries = std::collections::BTreeMap::new();
    let mut skipped = 0;
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        if n >= MAX_LINES {
            skipped += 1;
            continue;
        }
        let mut words = line.split_whitespace();
        let entry = match (words.next(), words.next(), words.next()) {
            (Some(address), Some(hash), None) => mailbox_key(address)
                .filter(|k| key_domain(k) == domain)
                .filter(|_| super::auth::is_argon2id(hash))
                .map(|k| (k, hash.to_string())),
            _ => None,
        };
        match entry {
            Some((k, h)) => {
                entries.insert(k, h);
            }
            None => skipped += 1,
        }
    }
    (entries.into_iter().collect(), skipped)
}

/// Fetches every list now and then every `interval`, until `shutdown` (the generation's).
pub async fn run(
    store: Arc<dyn Store>,
    dns: Arc<Dns>,
    sources: Vec<Source>,
    interval: Duration,
    mut shutdown: crate::shutdown::Shutdown,
) {
    if sources.is_empty() {
        return;
    }
    loop {
        for s in &sources {
            refresh(&*store, &dns, s).await;
        }
        tokio::select! {
            _ = shutdown.wait() => return,
            _ = tokio::time::sleep(interval) => {}
        }
    }
}

async fn refresh(store: &dyn Store, dns: &Dns, s: &Source) {
    let domain = s.domain.as_str();
    let body = match crate::policy::lists::fetch(&s.url, s.token_file.as_deref(), dns).await {
        Ok(b) => b,
        Err(e) => {
            warn!(domain, error = %e, "inbox credentials list not fetched; the last good copy stays in use");
            return;
        }
    };
    let (entries, skipped) = parse(&body, domain);
    if skipped > 0 {
        warn!(
            domain,
            skipped,
            "inbox credentials list: lines skipped (each must be `address argon2id-hash`, the address in this domain)"
        );
    }
    if entries.is_empty() && skipped > 0 {
        warn!(
            domain,
            "inbox credentials list has no usable line; the last good copy stays in use"
        );
        return;
    }
    match store.inbox_publish(domain, entries.clone()).await {
        Ok(()) => info!(
            domain,
            users = entries.len(),
            "inbox credentials list loaded"
        ),
        Err(e) => {
            warn!(domain, error = %e, "inbox credentials list not stored; the last good copy stays in use")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_are_checked_and_keyed() {
        let hash = crate::inbox::auth::hash_password("pw").unwrap();
        let text = format!(
            "# published by the primary\n\nJo+x@Example.TEST {hash}\nal@example.test {hash}\nmallory@evil.test {hash}\nbob@example.test $2y$10$notargon\nbroken-line\ncy@example.test {hash} extra\nal@example.test {hash}\n"
        );
        let (entries, skipped) = parse(&text, "example.test");
        let keys: Vec<&str> = entries.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(keys, ["al@example.test", "jo@example.test"]);
        assert!(entries.iter().all(|(_, h)| *h == hash));
        assert_eq!(
            skipped, 4,
            "another domain, not argon2id, one word, three words"
        );
        assert_eq!(parse("", "example.test"), (vec![], 0));
    }
}
