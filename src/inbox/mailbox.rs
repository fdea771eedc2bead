//! A session's view of its mailbox, `INBOX`: the messages as last told to the client (their
//! sequence numbers are their places here), which of them a sequence or UID set names, what
//! changed since the last look (EXPUNGE and EXISTS to report), and SEARCH. Pure: the
//! session loads what a search needs and passes it in.

use crate::queue::inbox::{Held, Mailbox};
use imap_next::imap_types::core::AString;
use imap_next::imap_types::search::SearchKey;
use imap_next::imap_types::sequence::{SeqOrUid, Sequence, SequenceSet};
use std::num::NonZeroU32;

/// The mailbox as the client knows it.
#[derive(Debug, Clone)]
pub struct View {
    pub uid_validity: u32,
    pub uid_next: u32,
    pub messages: Vec<Held>,
}

/// What changed between two looks: sequence numbers gone (highest first, so each stays
/// right as it is reported) and the new count when it grew.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Changes {
    pub expunged: Vec<u32>,
    pub exists: Option<u32>,
}

impl View {
    pub fn new(m: Mailbox) -> Self {
        Self {
            uid_validity: m.uid_validity.max(1),
            uid_next: m.uid_next.max(1),
            messages: m.messages,
        }
    }

    pub fn exists(&self) -> u32 {
        u32::try_from(self.messages.len()).unwrap_or(u32::MAX)
    }

    pub fn unseen(&self) -> usize {
        self.messages.iter().filter(|m| !m.seen).count()
    }

    /// The messages `set` names, with their sequence numbers, in mailbox order.
    pub fn select(&self, set: &SequenceSet, uid: bool) -> Vec<(u32, &Held)> {
        let largest = if uid {
            self.messages.last().map_or(0, |m| m.uid)
        } else {
            self.exists()
        };
        self.messages
            .iter()
            .enumerate()
            .map(|(i, m)| (i as u32 + 1, m))
            .filter(|(seq, m)| contains(set, if uid { m.uid } else { *seq }, largest))
            .collect()
    }

    /// Takes in the mailbox as it is now: what to tell the client. Messages that left the
    /// queue are expunged; new ones (higher UIDs) are added at the end.
    pub fn update(&mut self, now: Mailbox) -> Changes {
        let mut changes = Changes::default();
        let still: std::collections::HashSet<u32> = now.messages.iter().map(|m| m.uid).collect();
        for i in (0..self.messages.len()).rev() {
            if !still.contains(&self.messages[i].uid) {
                changes.expunged.push(i as u32 + 1);
                self.messages.remove(i);
            }
        }
        let last = self.messages.last().map_or(0, |m| m.uid);
        let before = self.messages.len();
        let mut flags: std::collections::HashMap<u32, &Held> =
            now.messages.iter().map(|m| (m.uid, m)).collect();
        for m in &mut self.messages {
            if let Some(n) = flags.remove(&m.uid) {
                m.seen = n.seen;
                m.flagged = n.flagged;
                m.delivered = n.delivered;
            }
        }
        self.messages
            .extend(now.messages.into_iter().filter(|m| m.uid > last));
        self.uid_next = now.uid_next.max(self.uid_next);
        if self.messages.len() != before || !changes.expunged.is_empty() {
            changes.exists = Some(self.exists());
        }
        changes
    }
}

/// Whether `n` is in `set`, `*` standing for `largest` (a range's ends in either order).
pub fn contains(set: &SequenceSet, n: u32, largest: u32) -> bool {
    let Some(largest) = NonZeroU32::new(largest) else {
        return false;
    };
    let value = |v: &SeqOrUid| v.expand(largest).get();
    set.0.as_ref().iter().any(|s| match s {
        Sequence::Single(v) => value(v) == n,
        Sequence::Range(a, b) => {
            let (a, b) = (value(a), value(b));
            (a.min(b)..=a.max(b)).contains(&n)
        }
    })
}

/// A message's content as SEARCH reads it.
pub struct Content<'a> {
    pub raw: &'a [u8],
    /// The header fields, unfolded and decoded, as `name: value` lines in lower case.
    pub headers: String,
}

/// Whether evaluating `key` needs the message's content.
pub fn needs_content(key: &SearchKey) -> bool {
    match key {
        SearchKey::From(_)
        | SearchKey::To(_)
        | SearchKey::Cc(_)
        | SearchKey::Bcc(_)
        | SearchKey::Subject(_)
        | SearchKey::Text(_)
        | SearchKey::Body(_)
        | SearchKey::Header(..) => true,
        SearchKey::And(keys) => keys.as_ref().iter().any(needs_content),
        SearchKey::Or(a, b) => needs_content(a) || needs_content(b),
        SearchKey::Not(k) => needs_content(k),
        _ => false,
    }
}

/// Whether the message at `seq` matches `key`; Err names a key this server does not do.
pub fn matches(
    key: &SearchKey,
    seq: u32,
    m: &Held,
    view: &View,
    content: Option<&Content>,
) -> Result<bool, String> {
    let text = |s: &AString| String::from_utf8_lossy(s.as_ref()).to_lowercase();
    let header = |name: &str, s: &AString| {
        let want = text(s);
        content.is_some_and(|c| {
            c.headers
                .lines()
                .filter_map(|l| l.split_once(": "))
                .any(|(n, v)| n == name && v.contains(&want))
        })
    };
    let day = |ms: i64| {
        chrono::DateTime::from_timestamp_millis(ms)
            .unwrap_or_default()
            .date_naive()
    };
    let contains_bytes = |hay: &[u8], s: &AString| {
        let needle = text(s).into_bytes();
        needle.is_empty()
            || hay
                .to_ascii_lowercase()
                .windows(needle.len())
                .any(|w| w == needle.as_slice())
    };
    Ok(match key {
        SearchKey::All => true,
        SearchKey::Seen => m.seen,
        SearchKey::Unseen => !m.seen,
        SearchKey::Flagged => m.flagged,
        SearchKey::Unflagged => !m.flagged,
        SearchKey::Answered | SearchKey::Deleted | SearchKey::Draft => false,
        SearchKey::Unanswered | SearchKey::Undeleted | SearchKey::Undraft => true,
        SearchKey::Recent | SearchKey::New => false,
        SearchKey::Old => true,
        SearchKey::Since(d) => day(m.received_at_ms) >= *d.as_ref(),
        SearchKey::Before(d) => day(m.received_at_ms) < *d.as_ref(),
        SearchKey::On(d) => day(m.received_at_ms) == *d.as_ref(),
        SearchKey::Larger(n) => m.size > u64::from(*n),
        SearchKey::Smaller(n) => m.size < u64::from(*n),
        SearchKey::From(s) => header("from", s),
        SearchKey::To(s) => header("to", s),
        SearchKey::Cc(s) => header("cc", s),
        SearchKey::Bcc(s) => header("bcc", s),
        SearchKey::Subject(s) => header("subject", s),
        SearchKey::Header(name, s) => header(&text(name), s),
        SearchKey::Text(s) => content.is_some_and(|c| contains_bytes(c.raw, s)),
        SearchKey::Body(s) => content.is_some_and(|c| {
            let at = body_start(c.raw);
            contains_bytes(&c.raw[at..], s)
        }),
        SearchKey::SequenceSet(set) => contains(set, seq, view.exists()),
        SearchKey::Uid(set) => contains(set, m.uid, view.messages.last().map_or(0, |l| l.uid)),
        SearchKey::And(keys) => {
            for k in keys.as_ref() {
                if !matches(k, seq, m, view, content)? {
                    return Ok(false);
                }
            }
            true
        }
        SearchKey::Or(a, b) => {
            matches(a, seq, m, view, content)? || matches(b, seq, m, view, content)?
        }
        SearchKey::Not(k) => !matches(k, seq, m, view, content)?,
        SearchKey::Keyword(k) => {
            m.delivered && k.as_ref().eq_ignore_ascii_case(super::fetch::DELIVERED)
        }
        SearchKey::Unkeyword(k) => {
            !(m.delivered && k.as_ref().eq_ignore_ascii_case(super::fetch::DELIVERED))
        }
        other => return Err(format!("search key {other:?} is not supported here")),
    })
}

/// Where the body starts: after the first empty line (the end when there is none).
pub fn body_start(raw: &[u8]) -> usize {
    raw.windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map(|p| p + 4)
        .or_else(|| raw.windows(2).position(|w| w == b"\n\n").map(|p| p + 2))
        .unwrap_or(raw.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn held(uid: u32, seen: bool) -> Held {
        Held {
            uid,
            queue_id: format!("q{uid}"),
            received_at_ms: 86_400_000 * 365,
            size: 100,
            seen,
            flagged: false,
            delivered: false,
            deleted: false,
        }
    }

    fn mailbox(uids: &[u32], next: u32) -> Mailbox {
        Mailbox {
            uid_validity: 7,
            uid_next: next,
            messages: uids.iter().map(|u| held(*u, false)).collect(),
        }
    }

    #[test]
    fn sets_name_messages_by_number_or_uid() {
        let v = View::new(mailbox(&[2, 5, 9], 10));
        let set = SequenceSet::try_from("2:*").unwrap();
        let seqs: Vec<u32> = v.select(&set, false).iter().map(|(s, _)| *s).collect();
        assert_eq!(seqs, [2, 3]);
        let uids: Vec<u32> = v.select(&set, true).iter().map(|(_, m)| m.uid).collect();
        assert_eq!(uids, [2, 5, 9]);
        let set = SequenceSet::try_from("6:4294967295").unwrap();
        let uids: Vec<u32> = v.select(&set, true).iter().map(|(_, m)| m.uid).collect();
        assert_eq!(uids, [9], "a huge UID range is a test, not a loop");
        assert!(View::new(mailbox(&[], 1)).select(&set, true).is_empty());
    }

    #[test]
    fn updates_report_expunges_highest_first_then_exists() {
        let mut v = View::new(mailbox(&[1, 2, 3, 4], 5));
        let c = v.update(mailbox(&[1, 3, 5], 6));
        assert_eq!(c.expunged, [4, 2]);
        assert_eq!(c.exists, Some(3));
        let uids: Vec<u32> = v.messages.iter().map(|m| m.uid).collect();
        assert_eq!(uids, [1, 3, 5]);
        assert_eq!(v.update(mailbox(&[1, 3, 5], 6)), Changes::default());
    }

    #[test]
    fn search_by_flags_dates_and_headers() {
        let v = View::new(Mailbox {
            uid_validity: 1,
            uid_next: 3,
            messages: vec![held(1, true), held(2, false)],
        });
        let c = Content {
            raw: b"Subject: Hello World\r\nFrom: Jo <jo@x.test>\r\n\r\nBody text\r\n",
            headers: "subject: hello world\nfrom: jo <jo@x.test>\n".into(),
        };
        let a = |s: &str| AString::try_from(s.to_string()).unwrap();
        let date = |d: u32| {
            let d = chrono::NaiveDate::from_ymd_opt(1971, 1, d).unwrap();
            imap_next::imap_types::datetime::NaiveDate::try_from(d).unwrap()
        };
        let m = &v.messages[0];
        assert!(matches(&SearchKey::Subject(a("hello")), 1, m, &v, Some(&c)).unwrap());
        assert!(!matches(&SearchKey::Subject(a("bye")), 1, m, &v, Some(&c)).unwrap());
        assert!(matches(&SearchKey::From(a("JO@X.TEST")), 1, m, &v, Some(&c)).unwrap());
        assert!(matches(&SearchKey::Text(a("body TEXT")), 1, m, &v, Some(&c)).unwrap());
        assert!(!matches(&SearchKey::Body(a("subject")), 1, m, &v, Some(&c)).unwrap());
        assert!(matches(&SearchKey::Seen, 1, m, &v, None).unwrap());
        assert!(!matches(&SearchKey::Unseen, 1, m, &v, None).unwrap());
        assert!(matches(&SearchKey::Since(date(1)), 1, m, &v, None).unwrap());
        assert!(!matches(&SearchKey::Since(date(2)), 1, m, &v, None).unwrap());
        assert!(
            matches(
                &SearchKey::Uid(SequenceSet::try_from("2").unwrap()),
                2,
                &v.messages[1],
                &v,
                None
            )
            .unwrap()
        );
        assert!(needs_content(&SearchKey::Or(
            Box::new(SearchKey::Seen),
            Box::new(SearchKey::Subject(a("x")))
        )));
        assert!(!needs_content(&SearchKey::Not(Box::new(SearchKey::Seen))));
    }
}
