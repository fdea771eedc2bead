//! One login attempt, the same for IMAP and the web inbox: the lockout first, then a turn
//! among the few verifications that run at once and the lockout again, then the
//! password against the address's argon2id hash (or the dummy, `auth.rs`), then, if the
//! password has a code's shape, a one-time code (`codes.rs`, used up by this login). A
//! failure counts towards the lockout; a success ends it. [`Inbox::record_login`] puts the
//! outcome in the log and the event log (the caller says how it went).

use super::{Inbox, auth, codes};
use crate::events::{self, Kind};
use crate::queue::inbox::key_domain;
use std::net::IpAddr;
use std::time::Instant;
use tracing::{info, warn};

/// How a login succeeded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Via {
    Password,
    Code,
}

/// Why a login was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    /// Locked out for this many seconds; the password was not checked.
    Locked(u64),
    /// Wrong password (or no credentials); `Some`: this failure started a lockout.
    Wrong(Option<u64>),
}

impl Refused {
    /// For the event log and the log line.
    pub fn detail(self) -> String {
        match self {
            Refused::Locked(s) => format!("locked out for {s} s"),
            Refused::Wrong(Some(s)) => format!("wrong password; locked out for {s} s"),
            Refused::Wrong(None) => "wrong password".into(),
        }
    }
}

impl Inbox {
    /// Checks a login for mailbox `key` from `client` (its lockout key).
    pub async fn login(
        &self,
        key: &str,
        client: IpAddr,
        password: Vec<u8>,
    ) -> Result<Via, Refused> {
        let now = Instant::now();
        if let Err(l) = self.lockout.check(key, client, now) {
            return Err(Refused::Locked(l.for_secs));
        }
        let enabled = self.has_domain(key_domain(key));
        let hash = if enabled {
            self.store.inbox_credential(key).await.ok().flatten()
        } else {
            None
        };
        let code = (enabled && codes::looks_like(&password)).then(|| codes::hash(&password));
        // A turn to verify (a few at once), then the lockout again: failures counted while
        // this login waited may have locked it out.
        let Ok(_turn) = self.verifying.acquire().await else {
            // Never closed; were it, no password would be checked.
            return Err(Refused::Wrong(None));
        };
        if let Err(l) = self.lockout.check(key, client, Instant::now()) {
            return Err(Refused::Locked(l.for_secs));
        }
        // One argon2 verification whether or not there is a hash (see `auth`).
        let good = tokio::task::spawn_blocking(move || auth::verify(&password, hash.as_deref()))
            .await
            .unwrap_or(false);
        let via = if good {
            Some(Via::Password)
        } else if let Some(code) = code {
            let now_ms = crate::queue::now_ms();
            let used = self.store.inbox_use_code(key, code, now_ms).await;
            used.unwrap_or(false).then_some(Via::Code)
        } else {
            None
        };
        match via {
            Some(v) => {
                self.lockout.succeeded(key, client);
                Ok(v)
            }
            None => Err(Refused::Wrong(
                self.lockout
                    .failed(key, client, Instant::now())
                    .map(|l| l.for_secs),
            )),
        }
    }

    /// A login's outcome, in the log and the event log: `client` is the peer's address,
    /// `protocol` `imap` or `web`, `detail` how it went (e.g. `one-time code`, or the
    /// refusal's [`Refused::detail`]).
    pub fn record_login(&self, key: &str, client: IpAddr, protocol: &str, ok: bool, detail: &str) {
        if ok {
            info!(address = key, %client, protocol, detail, "inbox login");
        } else {
            warn!(address = key, %client, protocol, detail, "inbox login failed");
        }
        events::get().record(Kind::InboxLogin {
            address: key.to_string(),
            client: client.to_string(),
            protocol: protocol.to_string(),
            ok,
            detail: detail.to_string(),
        });
    }
}
