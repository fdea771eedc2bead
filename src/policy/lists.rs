//! Keeping recipient lists current: files re-read when they change, URLs fetched every
//! `reload_interval`, everything on SIGHUP. A list that cannot be read keeps its last good
//! version in use. [`fetch`] is also how the emergency inbox fetches credentials lists.

use super::recipients::{List, Recipients};
use crate::config::RecipientPolicy;
use crate::dns::Dns;
use crate::shutdown::Shutdown;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};
use tokio::sync::Notify;
use tracing::{info, warn};

/// How often files are looked at for changes.
const FILE_CHECK: Duration = Duration::from_secs(5);

#[derive(Default)]
struct Source {
    file_mtimes: Vec<Option<SystemTime>>,
    /// The last URL body fetched successfully.
    url_body: Option<String>,
    url_fetched: Option<Instant>,
    loaded: bool,
}

pub struct Lists {
    recipients: Arc<Recipients>,
    dns: Arc<Dns>,
    interval: Duration,
    sources: HashMap<String, Source>,
}

impl Lists {
    pub fn new(recipients: Arc<Recipients>, dns: Arc<Dns>, interval: Duration) -> Self {
        Self {
            recipients,
            dns,
            interval,
            sources: HashMap::new(),
        }
    }

    /// Loads whatever is new (everything when `force`).
    pub async fn refresh(&mut self, force: bool) {
        for (domain, policy) in self.recipients.list_sources() {
            let src = self.sources.entry(domain.clone()).or_default();
            let mtimes: Vec<Option<SystemTime>> = policy
                .files
                .iter()
                .map(|f| std::fs::metadata(f).and_then(|m| m.modified()).ok())
                .collect();
            // A list carried over from the previous generation has no URL body here: fetch
            // it again before files changed since are combined with it.
            let url_due = policy.url.is_some()
                && (src.url_fetched.is_none_or(|t| t.elapsed() >= self.interval)
                    || (src.url_body.is_none() && src.loaded && mtimes != src.file_mtimes));
            if !(force || !src.loaded || mtimes != src.file_mtimes || url_due) {
                continue;
            }
            if let Some(url) = &policy.url
                && (force || url_due)
            {
                src.url_fetched = Some(Instant::now());
                match fetch(url, policy.url_token_file.as_deref(), &self.dns).await {
                    Ok(body) => src.url_body = Some(body),
                    Err(e) => {
                        warn!(domain, error = %e, "recipient list URL not fetched; keeping the last good copy")
                    }
                }
            }
            match load(&policy, src.url_body.as_deref()) {
                Ok(texts) => {
                    let mut list = List::default();
                    for t in &texts {
                        let part = List::parse(t, &domain, &policy);
                        list.wildcard |= part.wildcard;
                        list.addresses.extend(part.addresses);
                    }
                    if policy.url.is_some() && src.url_body.is_none() && policy.files.is_empty() {
                        continue; // nothing loaded yet: recipients stay unknown rather than all rejected
                    }
                    // Inline lists come with the domain's settings: logged when those change.
                    if !policy.files.is_empty() || policy.url.is_some() {
                        info!(
                            domain,
                            addresses = list.addresses.len(),
                            wildcard = list.wildcard,
                            "recipient list loaded"
                        );
                    }
                    self.recipients.set_list(&domain, list);
                    src.file_mtimes = mtimes;
                    src.loaded = true;
                }
                Err(e) => {
                    warn!(domain, error = %e, "recipient list not reloaded; keeping the last good version")
                }
            }
        }
    }

    /// Takes the lists the recipients already hold (carried over from the previous
    /// generation, see [`Recipients::carry_lists_from`]) as loaded now: they are read again
    /// when their files change or their URL's interval has passed, not at once. A registry
    /// change among 10,000 domains then costs no list reading.
    pub fn adopt_loaded(&mut self) {
        let now = Instant::now();
        for (domain, policy) in self.recipients.list_sources() {
            if !self.recipients.has_list(&domain) {
                continue;
            }
            let src = self.sources.entry(domain).or_default();
            src.file_mtimes = policy
                .files
                .iter()
                .map(|f| std::fs::metadata(f).and_then(|m| m.modified()).ok())
                .collect();
            src.url_fetched = policy.url.is_some().then_some(now);
            src.loaded = true;
        }
    }

    /// Runs until shutdown: file changes, URL intervals, and `reload` (SIGHUP).
    pub async fn run(mut self, reload: Arc<Notify>, mut shutdown: Shutdown) {
        loop {
            let force = tokio::select! {
                _ = shutdown.wait() => return,
                _ = reload.notified() => true,
                _ = tokio::time::sleep(FILE_CHECK) => false,
            };
            self.refresh(force).await;
        }
    }
}

/// Fetches a list published over HTTP (`recipient_url`, and the emergency inbox's
/// `inbox_credentials_url`), with the bearer token in `token_file` if any.
pub async fn fetch(
    url: &str,
    token_file: Option<&std::path::Path>,
    dns: &Dns,
) -> Result<String, crate::http::HttpError> {
    let token = token_file.and_then(|f| std::fs::read_to_string(f).ok());
    let body = crate::http::get(url, token.as_deref(), dns, Duration::from_secs(30), None).await?;
    Ok(String::from_utf8_lossy(&body).into_owned())
}

fn load(policy: &RecipientPolicy, url_body: Option<&str>) -> Result<Vec<String>, String> {
    let mut texts = Vec::new();
    for f in &policy.files {
        texts.push(std::fs::read_to_string(f).map_err(|e| format!("{}: {e}", f.display()))?);
    }
    texts.extend(url_body.map(str::to_string));
    if !policy.addresses.is_empty() {
        texts.push(policy.addresses.join("\n"));
    }
    Ok(texts)
}
