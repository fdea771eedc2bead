//! Who may log in: argon2id password hashes (made by `mx2 inbox passwd`, checked at LOGIN)
//! and the lockout that slows guessing: failures are counted per mailbox and per client
//! (IPv6: per prefix); after `max_login_failures` of either, logins from that client or for
//! that mailbox are refused for `lockout`, doubled by each further failure (at most an hour),
//! until a good login. The lockout is pure (time passed in) and kept in memory.
//!
//! Every login costs one argon2 verification, whether or not the address has a credential:
//! without one (or with a broken one) the password is checked against a dummy hash made at
//! start with the same parameters, so response time does not tell which addresses have
//! credentials.

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::{Algorithm, Argon2};
use rand_core::OsRng;
use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{LazyLock, Mutex};
use std::time::{Duration, Instant};

/// The longest lockout.
const MAX_LOCKOUT: Duration = Duration::from_secs(3600);
/// Entries kept at most per table; the oldest unlocked ones go first.
const MAX_ENTRIES: usize = 100_000;

/// An argon2id hash of `password` (PHC string, random salt, the crate's default cost).
pub fn hash_password(password: &str) -> Result<String, String> {
    let salt = SaltString::generate(&mut OsRng);
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| format!("cannot hash the password: {e}"))
}

/// Whether `hash` is an argon2id PHC string (what the store accepts).
pub fn is_argon2id(hash: &str) -> bool {
    PasswordHash::new(hash).is_ok_and(|h| h.algorithm == Algorithm::Argon2id.ident())
}

/// A hash of a random secret nobody knows, with the parameters [`hash_password`] uses: what
/// a login without a credential is checked against.
static DUMMY: LazyLock<String> = LazyLock::new(|| {
    let mut secret = [0u8; 32];
    rand_core::RngCore::fill_bytes(&mut OsRng, &mut secret);
    // Hashing with the default parameters fails only on a bug.
    hash_password(&String::from_utf8_lossy(&secret)).expect("argon2id with default parameters")
});

/// The hash a login is checked against, and whether a match counts: the stored argon2id
/// hash, or (none, or not an argon2id PHC string) the dummy, which never counts.
fn to_check(hash: Option<&str>) -> (PasswordHash<'_>, bool) {
    if let Some(h) = hash.and_then(|h| PasswordHash::new(h).ok())
        && h.algorithm == Algorithm::Argon2id.ident()
    {
        return (h, true);
    }
    // The dummy is made by this module with argon2id; it parses.
    (
        PasswordHash::new(&DUMMY).expect("the dummy hash parses"),
        false,
    )
}

/// Whether `password` matches the stored argon2id `hash`; always runs one argon2
/// verification (against the dummy when `hash` is None or broken, which never matches).
pub fn verify(password: &[u8], hash: Option<&str>) -> bool {
    let (h, counts) = to_check(hash);
    let matched = Argon2::default().verify_password(password, &h).is_ok();
    matched && counts
}

/// How many argon2 verifications may run at once: one a core (at most 8). Each takes
/// 19 MiB and a core for tens of milliseconds; unbounded, 200 logins at once (the inbox's
/// connection cap) would ask for 3.8 GB and every core, and all of them would pass the
/// lockout check before the first failure was counted.
pub fn verifications_at_once() -> usize {
    std::thread::available_parallelism().map_or(2, |n| n.get().min(8))
}

/// Makes the dummy hash now (at start), so the first login without a credential does not
/// pay for it.
pub fn prepare() {
    LazyLock::force(&DUMMY);
}

/// Failures of one mailbox or one client.
#[derive(Debug, Clone, Copy)]
struct Failures {
    count: u32,
    locked_until: Option<Instant>,
    last: Instant,
}

/// The lockout state for every mailbox and client.
#[derive(Debug)]
pub struct Lockout {
    max_failures: u32,
    first: Duration,
    by_key: Mutex<HashMap<String, Failures>>,
    by_client: Mutex<HashMap<IpAddr, Failures>>,
}

/// A login refused before its password is checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Locked {
    pub for_secs: u64,
}

impl Lockout {
    pub fn new(max_failures: u32, first: Duration) -> Self {
        Self {
            max_failures,
            first,
            by_key: Default::default(),
            by_client: Default::default(),
        }
    }

    /// Whether a login for `key` from `client` may be tried now.
    pub fn check(&self, key: &str, client: IpAddr, now: Instant) -> Result<(), Locked> {
        let left = |f: Option<&Failures>| {
            f.and_then(|f| f.locked_until)
                .and_then(|u| u.checked_duration_since(now))
                .filter(|d| !d.is_zero())
        };
        let k = left(lock(&self.by_key).get(key));
        let c = left(lock(&self.by_client).get(&client));
        match k.max(c) {
            Some(d) => Err(Locked {
                for_secs: d.as_secs().max(1),
            }),
            None => Ok(()),
        }
    }

    /// A failed login: counts for the mailbox and the client; returns the lockout it started
    /// or lengthened, if any.
    pub fn failed(&self, key: &str, client: IpAddr, now: Instant) -> Option<Locked> {
        let a = self.count(&mut lock(&self.by_key), key.to_string(), now);
        let b = self.count(&mut lock(&self.by_client), client, now);
        a.max(b).map(|d| Locked {
            for_secs: d.as_secs().max(1),
        })
    }

    /// A good login ends the mailbox's count and the client's.
    pub fn succeeded(&self, key: &str, client: IpAddr) {
        lock(&self.by_key).remove(key);
        lock(&self.by_client).remove(&client);
    }

    fn count<K: std::hash::Hash + Eq>(
        &self,
        table: &mut HashMap<K, Failures>,
        k: K,
        now: Instant,
    ) -> Option<Duration> {
        if table.len() >= MAX_ENTRIES {
            table.retain(|_, f| f.locked_until.is_some_and(|u| u > now));
            if table.len() >= MAX_ENTRIES {
                table.clear();
            }
        }
        let f = table.entry(k).or_insert(Failures {
            count: 0,
            locked_until: None,
            last: now,
        });
        // A quiet day forgives old failures.
        if now.duration_since(f.last) > Duration::from_secs(86_400) {
            f.count = 0;
        }
        f.count = f.count.saturating_add(1);
        f.last = now;
        let over = f.count.checked_sub(self.max_failures)?;
        let lockout = self
            .first
            .saturating_mul(1u32 << over.min(20))
            .min(MAX_LOCKOUT);
        f.locked_until = Some(now + lockout);
        Some(lockout)
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hashes_verify_and_are_argon2id() {
        let h = hash_password("correct horse").unwrap();
        assert!(h.starts_with("$argon2id$") && is_argon2id(&h));
        assert!(verify(b"correct horse", Some(&h)));
        assert!(!verify(b"correct horsf", Some(&h)));
        assert!(!verify(b"x", Some("not a hash")));
        assert!(!verify(b"x", None));
        assert!(!is_argon2id(
            "$argon2i$v=19$m=16,t=2,p=1$c2FsdHNhbHQ$aGFzaA"
        ));
    }

    #[test]
    fn no_credential_is_checked_against_an_equal_cost_dummy() {
        let real = hash_password("pw").unwrap();
        let (h, counts) = to_check(Some(&real));
        assert!(counts && h.to_string() == real);
        // Without a credential, or with a broken or non-argon2id one, the verification still
        // runs, against the dummy, whose algorithm and parameters are the real ones'.
        for hash in [
            None,
            Some("not a hash"),
            Some("$argon2i$v=19$m=16,t=2,p=1$c2FsdHNhbHQ$aGFzaA"),
        ] {
            let (d, counts) = to_check(hash);
            assert!(!counts);
            assert_eq!(d.algorithm, h.algorithm);
            assert_eq!(d.params, h.params);
            assert_eq!(d.version, h.version);
            assert!(d.hash.is_some());
        }
        // The dummy's own secret is not the empty password or its hash text.
        assert!(!verify(b"", None));
        assert!(!verify(DUMMY.as_bytes(), None));
    }

    #[test]
    fn lockout_starts_after_the_limit_and_doubles() {
        let l = Lockout::new(3, Duration::from_secs(60));
        let t = Instant::now();
        let ip: IpAddr = "192.0.2.1".parse().unwrap();
        let other: IpAddr = "192.0.2.2".parse().unwrap();
        assert!(l.failed("jo@x.test", ip, t).is_none());
        assert!(l.failed("jo@x.test", ip, t).is_none());
        assert!(l.check("jo@x.test", ip, t).is_ok());
        assert_eq!(l.failed("jo@x.test", ip, t), Some(Locked { for_secs: 60 }));
        assert!(l.check("jo@x.test", ip, t).is_err());
        // The mailbox is locked from anywhere; the client for any mailbox.
        assert!(l.check("jo@x.test", other, t).is_err());
        assert!(l.check("al@x.test", ip, t).is_err());
        assert!(l.check("al@x.test", other, t).is_ok());
        assert_eq!(l.failed("jo@x.test", ip, t), Some(Locked { for_secs: 120 }));
        let later = t + Duration::from_secs(121);
        assert!(l.check("jo@x.test", ip, later).is_ok());
        l.succeeded("jo@x.test", ip);
        assert!(l.failed("jo@x.test", ip, later).is_none());
    }
}
