//! Keeping recipient lists current: files re-read when they change, URLs fetched every
//! `reload_interval`, everything on SIGHUP. A list that cannot be read keeps its last good
//! version in use.

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
            let url_due = policy.url.is_some()
                && src.url_fetched.is_none_or(|t| t.elapsed() >= self.interval);
            if !(force || !src.loaded || mtimes != src.file_mtimes || url_due) {
                continue;
            }
            if let Some(url) = &policy.url
                && (force || url_due)
            {
                src.url_fetched = Some(Instant::now());
                let token = policy
                    .url_token_file
                    .as_ref()
                    .and_then(|f| std::fs::read_to_string(f).ok());
                match crate::http::get(
                    url,
                    token.as_deref(),
                    &self.dns,
                    Duration::from_secs(30),
                    None,
                )
                .await
                {
                    Ok(body) => src.url_body = Some(String::from_utf8_lossy(&body).into_owned()),
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
