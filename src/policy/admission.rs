//! Admission of new mail by what the queue can still take: each domain's own caps
//! (`max_queue_messages`, `max_queue_bytes`: `452 4.2.2`, the sender keeps the mail and
//! retries), its inbound rate (`recipients_per_minute`), and the global disk reserve
//! (`[queue] min_free_disk`: `452 4.3.1` for every domain, so the queue keeps room to write
//! delivery results and notifications and never wedges itself).
//!
//! The SMTP path asks only memory: what the queue holds per domain is read from the store
//! every [`REFRESH`] (and what this node accepted since is added as it commits), the free
//! disk space is read as often. A domain crossing its cap, or the disk crossing its reserve,
//! is recorded as an event once per crossing (alerts follow events). Shared by every
//! configuration generation: the counts stay when settings change.

use crate::config::DomainLimits;
use crate::queue::Depth;
use crate::smtp::Reply;
use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

/// How often usage and free space are read.
pub const REFRESH: Duration = Duration::from_secs(1);

/// What one domain's mail takes in the queue.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Usage {
    pub messages: u64,
    pub bytes: u64,
}

/// A change worth an event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Crossing {
    /// The domain reached a cap: new mail for it is refused.
    Full {
        domain: String,
        usage: Usage,
        limit: String,
    },
    /// It is below its caps again.
    Open { domain: String },
}

#[derive(Default, Debug)]
struct Counts {
    /// As the store last said.
    stored: HashMap<String, Usage>,
    /// Accepted by this node before the store's current read began (in that read's
    /// figures once it ends).
    before: HashMap<String, Usage>,
    /// Accepted by this node since the store's current read began.
    since: HashMap<String, Usage>,
}

fn add(to: &mut HashMap<String, Usage>, domain: &str, u: Usage) {
    let e = to.entry(domain.to_string()).or_default();
    e.messages += u.messages;
    e.bytes += u.bytes;
}

/// See the module documentation.
#[derive(Default, Debug)]
pub struct Admission {
    limits: RwLock<Arc<HashMap<String, DomainLimits>>>,
    counts: RwLock<Counts>,
    /// Domains over a cap at the last look.
    full: Mutex<HashSet<String>>,
    /// Token buckets of the domains with a rate: (tokens, when).
    rates: Mutex<HashMap<String, (f64, Instant)>>,
    /// Free bytes are below the reserve.
    disk_low: std::sync::atomic::AtomicBool,
}

impl Admission {
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    /// The limits of the current configuration (domains without any are left out).
    pub fn set_limits(&self, limits: impl IntoIterator<Item = (String, DomainLimits)>) {
        let map: HashMap<String, DomainLimits> = limits
            .into_iter()
            .filter(|(_, l)| *l != DomainLimits::default())
            .collect();
        *self.limits.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(map);
    }

    /// Whether any domain has a queue cap (else the store need not be asked for usage).
    pub fn has_caps(&self) -> bool {
        self.limits
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .any(|l| l.max_queue_messages.is_some() || l.max_queue_bytes.is_some())
    }

    /// A domain's limits (all `None` when it has none of its own).
    pub fn limits(&self, domain: &str) -> DomainLimits {
        self.limits
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(domain)
            .copied()
            .unwrap_or_default()
    }

    /// What a domain's mail takes now, as far as this node knows.
    pub fn usage(&self, domain: &str) -> Usage {
        let c = self.counts.read().unwrap_or_else(|p| p.into_inner());
        [&c.stored, &c.before, &c.since]
            .iter()
            .filter_map(|m| m.get(domain))
            .fold(Usage::default(), |a, b| Usage {
                messages: a.messages + b.messages,
                bytes: a.bytes + b.bytes,
            })
    }

    /// The cap a usage reaches, described (None: below every cap).
    fn over(limits: &DomainLimits, u: Usage) -> Option<String> {
        if let Some(m) = limits.max_queue_messages
            && u.messages >= m
        {
            return Some(format!("max_queue_messages {m}"));
        }
        if let Some(b) = limits.max_queue_bytes
            && u.bytes >= b
        {
            return Some(format!("max_queue_bytes {b}"));
        }
        None
    }

    /// May a recipient in `domain` be taken now? Err is the reply (452 4.2.2 over a cap,
    /// 451 4.7.1 over its rate). A recipient taken counts against the rate.
    pub fn check_domain(&self, domain: &str, now: Instant) -> Result<(), Reply> {
        let limits = self.limits(domain);
        if Self::over(&limits, self.usage(domain)).is_some() {
            return Err(Reply::new(
                452,
                "4.2.2",
                format!("mailbox full: the queue for {domain} is at its limit; try again later"),
            ));
        }
        if let Some(per_minute) = limits.recipients_per_minute {
            let cap = f64::from(per_minute);
            let mut rates = self.rates.lock().unwrap_or_else(|p| p.into_inner());
            let (tokens, at) = rates.entry(domain.to_string()).or_insert((cap, now));
            let refill = now.saturating_duration_since(*at).as_secs_f64() * cap / 60.0;
            *tokens = (*tokens + refill).min(cap);
            *at = now;
            if *tokens < 1.0 {
                return Err(Reply::new(
                    451,
                    "4.7.1",
                    format!("too much mail for {domain} right now; try again later"),
                ));
            }
            *tokens -= 1.0;
        }
        Ok(())
    }

    /// The largest message a domain takes (None: the global limit).
    pub fn max_message_size(&self, domain: &str) -> Option<u64> {
        self.limits(domain).max_message_size
    }

    /// May a new transaction start? Err is 452 4.3.1 while the disk is below its reserve.
    pub fn check_disk(&self) -> Result<(), Reply> {
        if self.disk_low.load(std::sync::atomic::Ordering::Relaxed) {
            return Err(Reply::new(
                452,
                "4.3.1",
                "insufficient system storage; try again later",
            ));
        }
        Ok(())
    }

    /// This node committed a message of `bytes` with recipients in `domains`: counted until
    /// the store's next figures include it.
    pub fn accepted<'a>(&self, domains: impl IntoIterator<Item = &'a str>, bytes: u64) {
        let mut seen = HashSet::new();
        let mut c = self.counts.write().unwrap_or_else(|p| p.into_inner());
        for d in domains {
            if seen.insert(d) {
                add(&mut c.since, d, Usage { messages: 1, bytes });
            }
        }
    }

    /// A read of the store's figures begins: what this node accepted so far will be in them.
    pub fn reading(&self) {
        let mut c = self.counts.write().unwrap_or_else(|p| p.into_inner());
        let since = std::mem::take(&mut c.since);
        for (d, u) in since {
            add(&mut c.before, &d, u);
        }
    }

    /// The store's figures per domain (read after [`Admission::reading`]): replaces the
    /// counts, and says which domains crossed a cap either way since the last look.
    pub fn set_usage(&self, depth: &[Depth]) -> Vec<Crossing> {
        {
            let mut c = self.counts.write().unwrap_or_else(|p| p.into_inner());
            c.stored = depth
                .iter()
                .map(|d| {
                    (
                        d.domain.clone(),
                        Usage {
                            messages: d.messages,
                            bytes: d.bytes,
                        },
                    )
                })
                .collect();
            // Accepted before the read began: in the figures now. Accepted since: perhaps
            // counted twice until the next read, never missed.
            c.before.clear();
        }
        let limits = self
            .limits
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        let mut full = self.full.lock().unwrap_or_else(|p| p.into_inner());
        let mut out = Vec::new();
        for (domain, l) in limits.iter() {
            let usage = self.usage(domain);
            match (Self::over(l, usage), full.contains(domain)) {
                (Some(limit), false) => {
                    full.insert(domain.clone());
                    out.push(Crossing::Full {
                        domain: domain.clone(),
                        usage,
                        limit,
                    });
                }
                (None, true) => {
                    full.remove(domain);
                    out.push(Crossing::Open {
                        domain: domain.clone(),
                    });
                }
                _ => {}
            }
        }
        full.retain(|d| limits.contains_key(d));
        out
    }

    /// Free space against the reserve; Some(low) when that changed.
    pub fn set_disk(&self, free: u64, reserve: u64) -> Option<bool> {
        let low = free < reserve;
        let was = self
            .disk_low
            .swap(low, std::sync::atomic::Ordering::Relaxed);
        (was != low).then_some(low)
    }
}

/// Keeps `admission` current until shutdown: what the queue holds per domain (only while
/// some domain has a cap: the count reads the whole queue), and the free space of the file
/// system at `disk` (the embedded queue's directory; None on PostgreSQL, whose disk is the
/// database server's). Crossings are recorded as events.
pub async fn watch(
    admission: Arc<Admission>,
    store: Arc<dyn crate::queue::Store>,
    disk: Option<std::path::PathBuf>,
    reserve: crate::config::DiskReserve,
    mut shutdown: crate::shutdown::Shutdown,
) {
    use crate::events::{Kind, get as events};
    loop {
        if admission.has_caps() {
            admission.reading();
            match store.depth().await {
                Ok(depth) => {
                    for c in admission.set_usage(&depth) {
                        let kind = match c {
                            Crossing::Full {
                                domain,
                                usage,
                                limit,
                            } => Kind::QueueFull {
                                domain,
                                messages: usage.messages,
                                bytes: usage.bytes,
                                limit,
                            },
                            Crossing::Open { domain } => Kind::QueueOpen { domain },
                        };
                        tracing::warn!("{}", kind.text());
                        events().record(kind);
                    }
                }
                Err(e) => tracing::debug!(error = %e, "queue usage not read"),
            }
        }
        if let Some(dir) = &disk
            && let Ok(st) = rustix::fs::statvfs(dir)
        {
            let block = st.f_frsize.max(1);
            let total = st.f_blocks.saturating_mul(block);
            let free = st.f_bavail.saturating_mul(block);
            let reserve_bytes = reserve.bytes(total);
            if let Some(low) = admission.set_disk(free, reserve_bytes) {
                let kind = if low {
                    Kind::DiskLow {
                        free_bytes: free,
                        reserve_bytes,
                    }
                } else {
                    Kind::DiskOk { free_bytes: free }
                };
                tracing::warn!(directory = %dir.display(), "{}", kind.text());
                events().record(kind);
            }
        }
        tokio::select! {
            _ = shutdown.wait() => return,
            _ = tokio::time::sleep(REFRESH) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(messages: Option<u64>, bytes: Option<u64>, rate: Option<u32>) -> DomainLimits {
        DomainLimits {
            max_queue_messages: messages,
            max_queue_bytes: bytes,
            recipients_per_minute: rate,
            ..Default::default()
        }
    }

    fn depth(domain: &str, messages: u64, bytes: u64) -> Depth {
        Depth {
            domain: domain.into(),
            messages,
            bytes,
            ..Default::default()
        }
    }

    #[test]
    fn a_full_domain_is_refused_and_others_are_not() {
        let a = Admission::new();
        a.set_limits([("full.test".to_string(), limits(None, Some(1000), None))]);
        let now = Instant::now();
        assert!(a.check_domain("full.test", now).is_ok());
        a.accepted(["full.test", "other.test", "full.test"], 600);
        assert!(a.check_domain("full.test", now).is_ok(), "600 of 1000");
        a.accepted(["full.test"], 600);
        let r = a.check_domain("full.test", now).unwrap_err();
        assert_eq!((r.code, r.status.as_str()), (452, "4.2.2"));
        assert!(a.check_domain("other.test", now).is_ok());
        // The store's figures replace what was counted before the read began.
        a.reading();
        a.accepted(["full.test"], 10); // after the read began
        let c = a.set_usage(&[depth("full.test", 1, 500)]);
        assert_eq!(
            a.usage("full.test"),
            Usage {
                messages: 2,
                bytes: 510
            }
        );
        assert_eq!(
            c,
            vec![],
            "no crossing seen at a look yet: it was below before"
        );
        assert!(a.check_domain("full.test", now).is_ok());
        a.reading();
        let c = a.set_usage(&[depth("full.test", 3, 1500)]);
        assert!(
            matches!(&c[..], [Crossing::Full { domain, .. }] if domain == "full.test"),
            "{c:?}"
        );
        assert!(
            a.set_usage(&[depth("full.test", 3, 1500)]).is_empty(),
            "once per crossing"
        );
        let c = a.set_usage(&[]);
        assert_eq!(
            c,
            vec![Crossing::Open {
                domain: "full.test".into()
            }]
        );
        assert!(
            a.check_domain("full.test", now).is_ok(),
            "drained: open again"
        );
    }

    #[test]
    fn message_caps_and_rates() {
        let a = Admission::new();
        a.set_limits([
            ("m.test".to_string(), limits(Some(2), None, None)),
            ("r.test".to_string(), limits(None, None, Some(2))),
        ]);
        assert!(a.has_caps());
        let now = Instant::now();
        a.set_usage(&[depth("m.test", 2, 10)]);
        assert_eq!(a.check_domain("m.test", now).unwrap_err().code, 452);
        assert!(a.check_domain("r.test", now).is_ok());
        assert!(a.check_domain("r.test", now).is_ok());
        let r = a.check_domain("r.test", now).unwrap_err();
        assert_eq!((r.code, r.status.as_str()), (451, "4.7.1"));
        assert!(
            a.check_domain("r.test", now + Duration::from_secs(30))
                .is_ok(),
            "refilled"
        );
    }

    #[test]
    fn the_disk_reserve() {
        let a = Admission::new();
        assert!(a.check_disk().is_ok());
        assert_eq!(a.set_disk(10, 100), Some(true));
        assert_eq!(a.set_disk(10, 100), None, "once per crossing");
        let r = a.check_disk().unwrap_err();
        assert_eq!((r.code, r.status.as_str()), (452, "4.3.1"));
        assert_eq!(a.set_disk(1000, 100), Some(false));
        assert!(a.check_disk().is_ok());
    }
}
