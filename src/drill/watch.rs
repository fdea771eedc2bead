//! Where a drill meets the rest of the process: the token a drill registers before it
//! sends (so inbound knows the message at acceptance and inserts it held, and nobody can
//! make mail held by forging the header), and the handoff the scheduler reports for a
//! drill's message (the primary's reply, TLS, certificate). In-process, behind a
//! `OnceLock` like `events` and `metrics`: inbound and the scheduler may call it, it calls
//! nobody (docs/decisions.md #33 says why not the store).

use crate::delivery::reply::RemoteReply;
use crate::queue::NewRecipient;
use std::collections::HashMap;
use std::sync::{Mutex, OnceLock};
use tokio::sync::oneshot;

/// The header that marks a drill message (and carries its token).
pub const HEADER: &str = "X-Mx2-Drill";

/// What the scheduler saw when it handed a drill message to the primary.
#[derive(Debug, Clone)]
pub struct Handoff {
    /// The primary, as `name (ip:port)`.
    pub primary: String,
    /// The primary's reply for the canary, or why the session broke off.
    pub reply: Result<RemoteReply, String>,
    /// TLS version and cipher of the session, when it was encrypted.
    pub tls: Option<String>,
    /// The name the primary was reached by, and its certificate chain (DER, end entity
    /// first; empty without TLS), for the drill to check against the domain's roots.
    pub server_name: String,
    pub certificates: Vec<Vec<u8>>,
}

struct Expected {
    rcpt: String,
    accepted: oneshot::Sender<String>,
}

#[derive(Default)]
struct Inner {
    tokens: HashMap<String, Expected>,
    handoffs: HashMap<String, oneshot::Sender<Handoff>>,
}

/// The drills running in this process.
#[derive(Default)]
pub struct Watch {
    inner: Mutex<Inner>,
}

static WATCH: OnceLock<Watch> = OnceLock::new();

/// The process's drills.
pub fn get() -> &'static Watch {
    WATCH.get_or_init(Watch::default)
}

/// A registered token: yields the queue id of the message that carried it; dropping it
/// forgets the token.
pub struct Expectation {
    token: String,
    pub accepted: oneshot::Receiver<String>,
}

impl Drop for Expectation {
    fn drop(&mut self) {
        get().lock().tokens.remove(&self.token);
    }
}

/// A watched message: yields its handoff; dropping it stops the watch.
pub struct Watched {
    queue_id: String,
    pub handoff: oneshot::Receiver<Handoff>,
}

impl Drop for Watched {
    fn drop(&mut self) {
        get().lock().handoffs.remove(&self.queue_id);
    }
}

impl Watch {
    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A new random token for a drill message to `rcpt`.
    pub fn expect(&'static self, rcpt: &str) -> (String, Expectation) {
        let mut bytes = [0u8; 16];
        // The system's random source failing leaves the token unguessable only by chance:
        // fall back on a fresh v7 id's random bits rather than fail the drill.
        if ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut bytes).is_err() {
            bytes = *uuid::Uuid::now_v7().as_bytes();
        }
        let token: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
        let (tx, rx) = oneshot::channel();
        self.lock().tokens.insert(
            token.clone(),
            Expected {
                rcpt: rcpt.to_ascii_lowercase(),
                accepted: tx,
            },
        );
        (
            token.clone(),
            Expectation {
                token,
                accepted: rx,
            },
        )
    }

    /// At acceptance: whether this message is a drill's own (its header carries a token a
    /// drill registered, and its one recipient is that drill's canary), to be inserted
    /// held. The token is used up: a replay is ordinary mail.
    pub fn accept(&self, head: &[u8], recipients: &[NewRecipient], queue_id: &str) -> bool {
        let [only] = recipients else { return false };
        // No drill running (nearly always): no header to look for in the message.
        if self.lock().tokens.is_empty() {
            return false;
        }
        let Some(token) = header_value(head, HEADER) else {
            return false;
        };
        let mut inner = self.lock();
        match inner.tokens.get(&token) {
            Some(e) if e.rcpt == only.address.to_ascii_lowercase() => {}
            _ => return false,
        }
        let Some(e) = inner.tokens.remove(&token) else {
            return false;
        };
        let _ = e.accepted.send(queue_id.to_string());
        true
    }

    /// Watches a drill's message for its handoff.
    pub fn watch(&'static self, queue_id: &str) -> Watched {
        let (tx, rx) = oneshot::channel();
        self.lock().handoffs.insert(queue_id.to_string(), tx);
        Watched {
            queue_id: queue_id.to_string(),
            handoff: rx,
        }
    }

    /// Whether a drill waits for this message's handoff (the scheduler asks before it
    /// gathers the details).
    pub fn watching(&self, queue_id: &str) -> bool {
        let inner = self.lock();
        !inner.handoffs.is_empty() && inner.handoffs.contains_key(queue_id)
    }

    /// The scheduler handed a watched message over (or tried to).
    pub fn handed_over(&self, queue_id: &str, handoff: Handoff) {
        if let Some(tx) = self.lock().handoffs.remove(queue_id) {
            let _ = tx.send(handoff);
        }
    }

    /// The scheduler put a watched message back without a reply from the primary (the
    /// session broke off, the primary is down): `why` is what it recorded.
    pub fn not_handed_over(&self, queue_id: &str, why: &str) {
        if self.watching(queue_id) {
            self.handed_over(
                queue_id,
                Handoff {
                    primary: String::new(),
                    reply: Err(why.to_string()),
                    tls: None,
                    server_name: String::new(),
                    certificates: Vec::new(),
                },
            );
        }
    }
}

/// The value of the first header field `name` in a message's header section (unfolded,
/// trimmed); None when there is none. Reads at most the header section.
pub fn header_value(message: &[u8], name: &str) -> Option<String> {
    let mut lines = message
        .split(|&b| b == b'\n')
        .map(|l| l.strip_suffix(b"\r").unwrap_or(l));
    let prefix = name.as_bytes();
    while let Some(line) = lines.next() {
        if line.is_empty() {
            return None;
        }
        let Some(colon) = line.iter().position(|&b| b == b':') else {
            continue;
        };
        if !line[..colon].trim_ascii().eq_ignore_ascii_case(prefix) {
            continue;
        }
        let mut value = String::from_utf8_lossy(line[colon + 1..].trim_ascii()).into_owned();
        // Continuation lines, if the value was folded.
        for cont in lines.by_ref() {
            if !cont.starts_with(b" ") && !cont.starts_with(b"\t") {
                break;
            }
            value.push(' ');
            value.push_str(String::from_utf8_lossy(cont.trim_ascii()).as_ref());
        }
        return Some(value);
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rcpt(a: &str) -> NewRecipient {
        NewRecipient {
            address: a.into(),
            domain: "a.test".into(),
            params: String::new(),
        }
    }

    #[test]
    fn header_values() {
        let m = b"Received: from x\r\n\tby y\r\nx-mx2-drill:  abc \r\nSubject: s\r\n\r\nX-Mx2-Drill: body\r\n";
        assert_eq!(header_value(m, "X-Mx2-Drill").as_deref(), Some("abc"));
        assert_eq!(header_value(m, "Received").as_deref(), Some("from x by y"));
        assert_eq!(
            header_value(b"Subject: s\r\n\r\nX-Mx2-Drill: t\r\n", HEADER),
            None
        );
    }

    #[tokio::test]
    async fn only_a_registered_token_for_its_canary_makes_a_message_held_once() {
        let w = get();
        let (token, expectation) = w.expect("Canary@a.test");
        let head = format!("{HEADER}: {token}\r\n\r\n");
        // A forged or unknown token, another recipient, or more than one: ordinary mail.
        assert!(!w.accept(b"X-Mx2-Drill: 0000\r\n\r\n", &[rcpt("canary@a.test")], "q0"));
        assert!(!w.accept(head.as_bytes(), &[rcpt("other@a.test")], "q0"));
        assert!(!w.accept(
            head.as_bytes(),
            &[rcpt("canary@a.test"), rcpt("other@a.test")],
            "q0"
        ));
        assert!(w.accept(head.as_bytes(), &[rcpt("canary@a.test")], "q1"));
        let mut expectation = expectation;
        assert_eq!((&mut expectation.accepted).await.unwrap(), "q1");
        // Used up.
        assert!(!w.accept(head.as_bytes(), &[rcpt("canary@a.test")], "q2"));
    }

    #[tokio::test]
    async fn a_dropped_expectation_forgets_its_token() {
        let w = get();
        let (token, expectation) = w.expect("c@a.test");
        drop(expectation);
        let head = format!("{HEADER}: {token}\r\n\r\n");
        assert!(!w.accept(head.as_bytes(), &[rcpt("c@a.test")], "q"));
    }

    #[tokio::test]
    async fn handoffs_reach_the_watcher_only() {
        let w = get();
        assert!(!w.watching("q9"));
        let watched = w.watch("q9");
        assert!(w.watching("q9"));
        w.handed_over(
            "q9",
            Handoff {
                primary: "p".into(),
                reply: Err("lost".into()),
                tls: None,
                server_name: "p".into(),
                certificates: Vec::new(),
            },
        );
        let mut watched = watched;
        assert_eq!(
            (&mut watched.handoff).await.unwrap().reply.unwrap_err(),
            "lost"
        );
        assert!(!w.watching("q9"));
    }
}
