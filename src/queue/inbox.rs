//! What the store keeps for the emergency inbox (`src/inbox/`): per-address credentials
//! (argon2id hashes), each address's mailbox of held mail with stable IMAP UIDs (assigned in
//! queue-id order, one UIDVALIDITY per address, kept across restarts), and the `\Seen` and
//! `\Flagged` flags a user set. Never a copy of the mail: a mailbox lists the messages the
//! queue holds for the address, read from the queue itself, and, for
//! `[inbox] keep_after_delivery`, those delivered to the primary that the queue keeps for the
//! inbox until then (a message is *kept*: no recipient pending, never deliverable again, not
//! counted as queued). Types and the address rule only; the backends hold the SQL.

/// One message of an address's mailbox.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Held {
    pub uid: u32,
    pub queue_id: String,
    pub received_at_ms: i64,
    pub size: u64,
    pub seen: bool,
    pub flagged: bool,
    /// Delivered to the primary (IMAP keyword `$Delivered`): shown until
    /// `keep_after_delivery` has passed.
    pub delivered: bool,
    /// `\Deleted`, as the session set it (never stored: EXPUNGE acts on it, and a session
    /// that ends without one forgets it).
    pub deleted: bool,
}

/// An address's mailbox: the mail the queue holds for it, in UID order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mailbox {
    pub uid_validity: u32,
    /// The UID the next message will get.
    pub uid_next: u32,
    pub messages: Vec<Held>,
}

/// A change to flags: `Some(true)` sets, `Some(false)` clears, `None` leaves alone.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FlagChange {
    pub seen: Option<bool>,
    pub flagged: Option<bool>,
}

/// A message the queue holds for some recipient of a domain, as a backend reads it before
/// the addresses are compared (see [`mailbox_key`]).
#[derive(Debug, Clone)]
pub struct Candidate {
    pub address: String,
    pub queue_id: String,
    pub received_at_ms: i64,
    pub size: u64,
    /// This recipient's row is delivered (the message is kept for the inbox).
    pub delivered: bool,
}

/// The mailbox an address reads: domain lower-cased (no trailing dot), local part
/// lower-cased, a `+tag` dropped (`Jo+News@Example.COM` → `jo@example.com`). None for
/// something that is not `local@domain` or holds spaces, control characters, `<`, `>` or
/// `"` (so a key is safe in a mail header). Every address that maps to the same key is one
/// mailbox; any other never sees its mail.
pub fn mailbox_key(address: &str) -> Option<String> {
    let address = address.trim().trim_start_matches('<').trim_end_matches('>');
    let (local, domain) = address.rsplit_once('@')?;
    let domain = super::domain_key(domain);
    let odd = |c: char| c.is_whitespace() || c.is_control() || matches!(c, '<' | '>' | '"');
    if local.is_empty() || domain.is_empty() || local.contains(odd) || domain.contains(odd) {
        return None;
    }
    let local = match local.split_once('+') {
        Some((base, _)) if !base.is_empty() => base,
        _ => local,
    };
    Some(format!("{}@{domain}", local.to_lowercase()))
}

/// What a backend keeps of one mailbox: its UIDVALIDITY, next UID, and each message's UID
/// and flags by queue id.
#[derive(Debug, Clone, Default)]
pub struct Stored {
    pub uid_validity: u32,
    pub uid_next: u32,
    pub uids: std::collections::HashMap<String, (u32, bool, bool)>,
    /// Queue ids the user deleted (`inbox_delete = "keep_delivering"`): still queued, no
    /// longer shown.
    pub hidden: std::collections::HashSet<String>,
}

/// What a user's delete in the inbox does, per domain (`[[domain]] inbox_delete`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum DeletePolicy {
    /// The message leaves this user's inbox only; it is still delivered.
    #[default]
    KeepDelivering,
    /// The user's recipient is dropped from the queue (as an operator's delete of it
    /// would): never delivered to them.
    DoNotDeliver,
}

/// Which of a message's pending recipients (`(row id, address)`) are `key`'s mailbox.
pub(crate) fn rows_of(key: &str, rows: Vec<(i64, String)>) -> Vec<i64> {
    rows.into_iter()
        .filter(|(_, a)| mailbox_key(a).as_deref() == Some(key))
        .map(|(id, _)| id)
        .collect()
}

/// The queue ids of `candidates` without a UID yet.
pub(crate) fn unassigned(candidates: &[Candidate], stored: Option<&Stored>) -> Vec<String> {
    candidates
        .iter()
        .filter(|c| stored.is_none_or(|s| !s.uids.contains_key(&c.queue_id)))
        .map(|c| c.queue_id.clone())
        .collect()
}

/// The mailbox from its messages and what is stored of it; a message without a UID (one
/// that arrived after the UIDs were assigned) waits for the next look.
pub(crate) fn view(candidates: Vec<Candidate>, stored: Stored) -> Mailbox {
    let mut messages: Vec<Held> = candidates
        .into_iter()
        .filter(|c| !stored.hidden.contains(&c.queue_id))
        .filter_map(|c| {
            let &(uid, seen, flagged) = stored.uids.get(&c.queue_id)?;
            Some(Held {
                uid,
                queue_id: c.queue_id,
                received_at_ms: c.received_at_ms,
                size: c.size,
                seen,
                flagged,
                delivered: c.delivered,
                deleted: false,
            })
        })
        .collect();
    messages.sort_by_key(|m| m.uid);
    Mailbox {
        uid_validity: stored.uid_validity,
        uid_next: stored.uid_next,
        messages,
    }
}

/// The domain part of a mailbox key.
pub fn key_domain(key: &str) -> &str {
    key.rsplit_once('@').map_or("", |(_, d)| d)
}

/// The candidates whose address is `key`'s mailbox, each message once, in queue-id order;
/// a message is delivered to the mailbox only when every one of its addresses is.
pub(crate) fn select(key: &str, mut candidates: Vec<Candidate>) -> Vec<Candidate> {
    candidates.retain(|c| mailbox_key(&c.address).as_deref() == Some(key));
    candidates.sort_by(|a, b| (&a.queue_id, a.delivered).cmp(&(&b.queue_id, b.delivered)));
    candidates.dedup_by(|a, b| a.queue_id == b.queue_id);
    candidates
}

/// A new mailbox's UIDVALIDITY: the time in seconds (never 0), so a mailbox made again after
/// its row was lost gets a new one and clients drop what they cached.
pub(crate) fn new_uid_validity(now_ms: i64) -> u32 {
    u32::try_from((now_ms / 1000).clamp(1, i64::from(u32::MAX))).unwrap_or(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_fold_case_and_tags() {
        assert_eq!(
            mailbox_key("Jo+News@Example.COM.").unwrap(),
            "jo@example.com"
        );
        assert_eq!(mailbox_key("<jo@example.com>").unwrap(), "jo@example.com");
        assert_eq!(mailbox_key("JO@example.com").unwrap(), "jo@example.com");
        assert_eq!(mailbox_key("+x@example.com").unwrap(), "+x@example.com");
        assert_eq!(mailbox_key("jo+a+b@x.test").unwrap(), "jo@x.test");
        assert!(mailbox_key("nobody").is_none());
        assert!(mailbox_key("@x.test").is_none());
        assert!(mailbox_key("a b@x.test").is_none());
        assert!(mailbox_key("a@x.test\r\nBcc: e@vil.test").is_none());
        assert!(mailbox_key("a\"b@x.test").is_none());
        assert_ne!(mailbox_key("jo2@x.test"), mailbox_key("jo@x.test"));
    }

    #[test]
    fn selection_keeps_one_mailbox() {
        let c = |a: &str, id: &str, delivered: bool| Candidate {
            address: a.into(),
            queue_id: id.into(),
            received_at_ms: 0,
            size: 1,
            delivered,
        };
        let got = select(
            "jo@x.test",
            vec![
                c("other@x.test", "1", false),
                c("JO+t@x.test", "3", true),
                c("jo@x.test", "2", true),
                c("jo@X.test", "3", false),
                c("jot@x.test", "4", false),
            ],
        );
        let ids: Vec<_> = got
            .iter()
            .map(|c| (c.queue_id.as_str(), c.delivered))
            .collect();
        assert_eq!(
            ids,
            [("2", true), ("3", false)],
            "3 is still pending for jo+t"
        );
    }
}
