//! The emergency inbox: people read the mail mx2 holds for them while their primary is down,
//! over IMAP4rev1 (read-only), with the client they already use. `listener.rs` accepts on
//! `[inbox] listen` (STARTTLS) and `tls_listen` (implicit TLS); `driver.rs` is the I/O
//! around imap-next's server state machine (STARTTLS, IDLE wake-ups); `session.rs` the
//! protocol states and commands; `mailbox.rs` a session's view of `INBOX` (sequence numbers,
//! sets, changes, SEARCH); `fetch.rs` renders FETCH items from a stored message; `auth.rs`
//! the argon2id hashes and the login lockout; `codes.rs` one-time login codes; `login.rs` one
//! login attempt (lockout, password, code), shared by IMAP and the web inbox; `budget.rs`
//! the memory for messages read whole (`[inbox] content_memory`); `web/` the
//! web inbox (HTML pages at `/inbox/`); `keep.rs` delivered mail kept for
//! `keep_after_delivery` and its purge; `published.rs` credentials lists published by the
//! primaries. Mail is read from the queue store
//! (`Store::inbox_mailbox`, `Store::body_reader`), never copied; `\Seen` and `\Flagged` are kept
//! per user in the store and never change what is delivered.

pub mod auth;
pub mod budget;
pub mod codes;
pub mod driver;
pub mod fetch;
pub mod keep;
pub mod listener;
pub mod login;
pub mod mailbox;
pub mod published;
pub mod session;
pub mod web;

use crate::config::InboxConfig;
use crate::events::{self, Kind};
use crate::queue::Store;
use crate::queue::inbox::DeletePolicy;
use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, RwLock};
use std::time::Duration;
use tokio::sync::{Notify, watch};
use tracing::info;

/// What every inbox session shares.
pub struct Inbox {
    pub store: Arc<dyn Store>,
    /// Domains with `inbox = true` (the configuration's and the registry's, per generation).
    domains: RwLock<HashMap<String, DeletePolicy>>,
    pub lockout: auth::Lockout,
    /// Argon2 verifications running ([`auth::verifications_at_once`]).
    verifying: tokio::sync::Semaphore,
    pub acceptor: tokio_rustls::TlsAcceptor,
    pub idle_timeout: Duration,
    pub max_connections: usize,
    /// Memory for messages read whole, shared by every IMAP and web session.
    pub budget: budget::Budget,
    pub ipv6_prefix: u8,
    /// Bumped whenever new mail may be in the store: idling sessions look again.
    pub arrivals: watch::Sender<u64>,
}

impl Inbox {
    pub fn new(
        config: &InboxConfig,
        store: Arc<dyn Store>,
        acceptor: tokio_rustls::TlsAcceptor,
        ipv6_prefix: u8,
    ) -> Arc<Self> {
        auth::prepare();
        Arc::new(Self {
            store,
            domains: Default::default(),
            lockout: auth::Lockout::new(config.max_login_failures, config.lockout),
            verifying: tokio::sync::Semaphore::new(auth::verifications_at_once()),
            acceptor,
            idle_timeout: config.idle_timeout,
            max_connections: config.max_connections,
            budget: budget::Budget::new(config.content_memory),
            ipv6_prefix,
            arrivals: watch::channel(0).0,
        })
    }

    /// The domains whose users may log in, with what a delete does there (a new
    /// configuration generation's).
    pub fn set_domains(&self, domains: impl IntoIterator<Item = (String, DeletePolicy)>) {
        let set = domains.into_iter().collect();
        *self.domains.write().unwrap_or_else(|p| p.into_inner()) = set;
    }

    pub fn has_domain(&self, domain: &str) -> bool {
        self.delete_policy(domain).is_some()
    }

    /// What a user's delete does in `domain`; None: the domain has no inbox.
    pub fn delete_policy(&self, domain: &str) -> Option<DeletePolicy> {
        self.domains
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(domain)
            .copied()
    }

    /// New mail may have arrived.
    pub fn arrived(&self) {
        self.arrivals.send_modify(|n| *n = n.wrapping_add(1));
    }

    /// A user read a message (IMAP FETCH of its content, the web inbox's view or download):
    /// in the log and the event log.
    pub fn record_read(&self, key: &str, queue_id: &str, client: IpAddr, protocol: &str) {
        info!(address = %key, %queue_id, %client, protocol, "inbox message read");
        events::get().record(Kind::InboxRead {
            address: key.to_string(),
            queue_id: queue_id.to_string(),
            client: client.to_string(),
            protocol: protocol.to_string(),
        });
    }

    /// A user's delete of messages `ids` from mailbox `key`: they leave the user's inbox
    /// and, with the domain's `inbox_delete = "do_not_deliver"`, the user's recipient is
    /// dropped from the queue.
    pub async fn delete(
        &self,
        key: &str,
        ids: Vec<String>,
        client: IpAddr,
        protocol: &str,
    ) -> Result<(), crate::queue::StoreError> {
        let policy = self
            .delete_policy(crate::queue::inbox::key_domain(key))
            .unwrap_or_default();
        let drop = policy == DeletePolicy::DoNotDeliver;
        self.store.inbox_delete(key, ids.clone(), drop).await?;
        info!(address = %key, %client, protocol, messages = ?ids, not_delivered = drop, "inbox delete");
        events::get().record(Kind::InboxDelete {
            address: key.to_string(),
            queue_ids: ids,
            not_delivered: drop,
            client: client.to_string(),
            protocol: protocol.to_string(),
        });
        Ok(())
    }
}

/// Passes each new-mail wake-up (an insert here, or another node's through the store) on
/// to the scheduler and to idling inbox sessions.
pub async fn relay(
    new_mail: Arc<Notify>,
    scheduler: Arc<Notify>,
    inbox: Arc<Inbox>,
    mut shutdown: crate::shutdown::Shutdown,
) {
    loop {
        tokio::select! {
            _ = new_mail.notified() => {
                scheduler.notify_one();
                inbox.arrived();
            }
            _ = shutdown.wait() => return,
        }
    }
}
