//! The web inbox's sessions, kept in memory on this node: a random cookie value (256 bits)
//! names who logged in and the session's form token (against cross-site form posts). A
//! session unused for longer than the idle limit ends; at most [`MAX_SESSIONS`] are kept
//! (beyond, the least recently used one ends). Pure: the time is passed in.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use rand_core::{OsRng, RngCore};
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Sessions kept at most.
pub const MAX_SESSIONS: usize = 10_000;

/// A logged-in session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Session {
    /// The mailbox key (`queue::inbox::mailbox_key`) of who logged in.
    pub key: String,
    /// The token every form of this session carries.
    pub csrf: String,
}

struct Entry {
    session: Session,
    last: Instant,
}

pub struct Sessions {
    idle: Duration,
    table: Mutex<HashMap<String, Entry>>,
}

/// 32 random bytes, URL-safe base64 (43 characters).
pub fn random_token() -> String {
    let mut bytes = [0u8; 32];
    OsRng.fill_bytes(&mut bytes);
    URL_SAFE_NO_PAD.encode(bytes)
}

impl Sessions {
    pub fn new(idle: Duration) -> Self {
        Self {
            idle,
            table: Mutex::default(),
        }
    }

    fn table(&self) -> std::sync::MutexGuard<'_, HashMap<String, Entry>> {
        self.table.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A new session for `key`: its cookie value and the session.
    pub fn open(&self, key: &str, now: Instant) -> (String, Session) {
        let cookie = random_token();
        let session = Session {
            key: key.to_string(),
            csrf: random_token(),
        };
        let mut t = self.table();
        if t.len() >= MAX_SESSIONS {
            t.retain(|_, e| now.saturating_duration_since(e.last) <= self.idle);
            if t.len() >= MAX_SESSIONS
                && let Some(oldest) = t.iter().min_by_key(|(_, e)| e.last).map(|(k, _)| k.clone())
            {
                t.remove(&oldest);
            }
        }
        t.insert(
            cookie.clone(),
            Entry {
                session: session.clone(),
                last: now,
            },
        );
        (cookie, session)
    }

    /// The session a cookie names, if it has not been idle too long (then it is used now).
    pub fn get(&self, cookie: &str, now: Instant) -> Option<Session> {
        let mut t = self.table();
        let e = t.get_mut(cookie)?;
        if now.saturating_duration_since(e.last) > self.idle {
            t.remove(cookie);
            return None;
        }
        e.last = now;
        Some(e.session.clone())
    }

    /// Ends a session (logout).
    pub fn close(&self, cookie: &str) {
        self.table().remove(cookie);
    }

    pub fn len(&self) -> usize {
        self.table().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sessions_end_when_idle_or_closed() {
        let s = Sessions::new(Duration::from_secs(60));
        let t = Instant::now();
        let (c, session) = s.open("jo@x.test", t);
        assert_eq!(c.len(), 43);
        assert_ne!(session.csrf, c);
        assert_eq!(
            s.get(&c, t + Duration::from_secs(50)),
            Some(session.clone())
        );
        // Used at 50 s: good until 110 s.
        assert!(s.get(&c, t + Duration::from_secs(100)).is_some());
        assert!(s.get(&c, t + Duration::from_secs(161)).is_none());
        assert!(s.is_empty(), "an expired session is forgotten");
        let (c2, _) = s.open("jo@x.test", t);
        assert!(s.get("not-a-session", t).is_none());
        s.close(&c2);
        assert!(s.get(&c2, t).is_none());
    }

    #[test]
    fn the_table_is_bounded() {
        let s = Sessions::new(Duration::from_secs(60));
        let t = Instant::now();
        let (first, _) = s.open("a@x.test", t);
        for i in 1..MAX_SESSIONS {
            s.open("b@x.test", t + Duration::from_millis(i as u64));
        }
        assert_eq!(s.len(), MAX_SESSIONS);
        let (last, _) = s.open("c@x.test", t + Duration::from_secs(1));
        assert_eq!(s.len(), MAX_SESSIONS);
        assert!(
            s.get(&first, t + Duration::from_secs(1)).is_none(),
            "the oldest went"
        );
        assert!(s.get(&last, t + Duration::from_secs(1)).is_some());
    }
}
