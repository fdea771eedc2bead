//! Bounces and other delivery status notifications (RFC 3464) being queued: which outcomes
//! call for one (failed, expired, relayed to a primary without DSN, delayed past the warning
//! threshold), and the notification message itself, addressed per the domain's bounce policy.
//!
//! Pure apart from the queue id it draws. May use `dsn` (the report's format) and the typed
//! reply; must never write to the queue or decide a recipient's outcome (the caller records
//! the notifications together with the outcomes, see `commit`).

use crate::config::BouncePolicy;
use crate::delivery::reply::{RemoteReply, dsn_status};
use crate::dsn::{DsnAction, Notify, RecipientReport, Report};
use crate::queue::{Job, NewMessage, NewRecipient, Status, Update, new_queue_id};
use crate::smtp::address::parse_mailbox;
use std::collections::HashMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tracing::info;

/// Originals larger than this come back as headers only (Postfix: bounce_size_limit).
pub(super) const MAX_ORIGINAL: usize = 100_000;

/// The bounce settings from the config (replaced on reload).
pub struct Bouncer {
    pub hostname: String,
    /// Send a "delayed" notification once a recipient has waited this long.
    pub delay_warning: Option<Duration>,
    /// Per backed-up domain; others get `sender`.
    pub policies: HashMap<String, BouncePolicy>,
}

/// What the delivery that produced the updates knows.
#[derive(Default, Clone, Copy)]
pub struct Context<'a> {
    /// The primary took the message but does not speak DSN: SUCCESS requests are answered
    /// with a "relayed" notification.
    pub relayed_without_dsn: bool,
    pub remote: Option<&'a str>,
}

impl Bouncer {
    /// The reports that `updates` call for. Marks delay notifications in the updates so each
    /// recipient gets at most one.
    pub fn reports(
        &self,
        job: &Job,
        updates: &mut [Update],
        cx: Context<'_>,
        now_ms: i64,
    ) -> Vec<RecipientReport> {
        if job.sender.is_empty() {
            return Vec::new(); // never a notification about a notification
        }
        let mut out = Vec::new();
        for u in updates.iter_mut() {
            let Some(rcpt) = job.recipients.iter().find(|r| r.row == u.row) else {
                continue;
            };
            let notify = Notify::of_params(&rcpt.params);
            let reply = u.last_reply.clone();
            // A local note (held, expired, a connection error) is no reply to quote.
            let parsed = reply.as_deref().and_then(RemoteReply::parse);
            let status = |permanent| dsn_status(parsed.as_ref(), permanent);
            let action = match u.status {
                Status::Failed if notify.failure => Some((DsnAction::Failed, status(true))),
                Status::Expired if notify.failure => Some((DsnAction::Failed, "4.4.7".into())),
                Status::Delivered if cx.relayed_without_dsn && notify.success => {
                    Some((DsnAction::Relayed, "2.0.0".into()))
                }
                Status::Pending
                    if notify.delay
                        && !rcpt.warned
                        && self.delay_warning.is_some_and(|d| {
                            now_ms.saturating_sub(job.received_at_ms) >= d.as_millis() as i64
                        }) =>
                {
                    u.warned = true;
                    Some((DsnAction::Delayed, status(false)))
                }
                _ => None,
            };
            if let Some((action, status)) = action {
                out.push(RecipientReport {
                    address: rcpt.address.clone(),
                    params: rcpt.params.clone(),
                    action,
                    status,
                    diagnostic: reply.filter(|_| parsed.is_some()),
                    remote_mta: cx.remote.map(str::to_string),
                });
            }
        }
        out
    }

    /// The notification for `reports`, or None when the domain's policy says not to send one.
    pub fn message(
        &self,
        job: &Job,
        original: &[u8],
        reports: &[RecipientReport],
        now: SystemTime,
    ) -> Option<NewMessage> {
        let to = match self
            .policies
            .get(&job.domain)
            .unwrap_or(&BouncePolicy::Sender)
        {
            BouncePolicy::Sender => job.sender.clone(),
            BouncePolicy::Postmaster(addr) => addr.clone(),
            // Not evaluated (checks off, or queued before an upgrade): the sender.
            BouncePolicy::Authenticated(postmaster) => match job.authenticated {
                Some(false) => {
                    info!(queue_id = %job.queue_id, "sender did not pass SPF or DKIM: notification goes to the postmaster");
                    postmaster.clone()
                }
                _ => job.sender.clone(),
            },
            BouncePolicy::None => {
                info!(queue_id = %job.queue_id, domain = %job.domain, "bounce policy is none: no notification sent");
                return None;
            }
        };
        let domain = parse_mailbox(&to, true)
            .map(|m| m.domain_key())
            .unwrap_or_else(|_| to.rsplit('@').next().unwrap_or("").to_ascii_lowercase());
        let id = new_queue_id();
        let body = Report {
            reporting_mta: &self.hostname,
            queue_id: &job.queue_id,
            original_sender: &job.sender,
            mail_params: &job.mail_params,
            arrival: UNIX_EPOCH
                + Duration::from_millis(u64::try_from(job.received_at_ms).unwrap_or(0)),
            now,
            recipients: reports,
            original,
            max_original: MAX_ORIGINAL,
            unique: &id,
        }
        .build();
        // The report's own envelope: 8-bit content (an 8-bit original) and a UTF-8 address
        // must be declared, or a strict primary refuses the notice.
        let mut params = Vec::new();
        if body.iter().any(|&b| b >= 0x80) {
            params.push("BODY=8BITMIME");
        }
        if !to.is_ascii() {
            params.push("SMTPUTF8");
        }
        Some(NewMessage {
            id,
            received_at_ms: crate::queue::to_ms(now),
            sender: String::new(),
            mail_params: params.join(" "),
            client: "local".into(),
            helo: self.hostname.clone(),
            recipients: vec![NewRecipient {
                address: to,
                domain,
                params: String::new(),
            }],
            body,
            authenticated: None,
            held: false,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::queue::Recipient;

    fn job(sender: &str, params: &str) -> Job {
        Job {
            queue_id: "q".into(),
            domain: "example.test".into(),
            sender: sender.into(),
            mail_params: String::new(),
            received_at_ms: 0,
            size: 10,
            authenticated: None,
            recipients: vec![Recipient {
                row: 1,
                address: "u@example.test".into(),
                params: params.into(),
                attempts: 0,
                warned: false,
            }],
        }
    }

    fn update(status: Status) -> Update {
        Update::new(1, status, true, 0, Some("550 5.1.1 no such user".into()))
    }

    fn bouncer(delay: Option<Duration>) -> Bouncer {
        Bouncer {
            hostname: "mx2.test".into(),
            delay_warning: delay,
            policies: HashMap::new(),
        }
    }

    #[test]
    fn failures_are_reported_unless_never_or_null_sender() {
        let n = bouncer(None);
        assert_eq!(
            n.reports(
                &job("s@x.test", ""),
                &mut [update(Status::Failed)],
                Context::default(),
                0
            )
            .len(),
            1
        );
        assert!(
            n.reports(
                &job("s@x.test", "NOTIFY=NEVER"),
                &mut [update(Status::Failed)],
                Context::default(),
                0
            )
            .is_empty()
        );
        assert!(
            n.reports(
                &job("", ""),
                &mut [update(Status::Failed)],
                Context::default(),
                0
            )
            .is_empty()
        );
        assert!(
            n.reports(
                &job("s@x.test", ""),
                &mut [update(Status::Delivered)],
                Context::default(),
                0
            )
            .is_empty()
        );
        let relayed = Context {
            relayed_without_dsn: true,
            remote: None,
        };
        let r = n.reports(
            &job("s@x.test", "NOTIFY=SUCCESS"),
            &mut [update(Status::Delivered)],
            relayed,
            0,
        );
        assert_eq!(r[0].action, DsnAction::Relayed);
    }

    #[test]
    fn the_notice_declares_8bit_content_and_utf8_addresses() {
        let n = bouncer(None);
        let r = n.reports(
            &job("s@x.test", ""),
            &mut [update(Status::Failed)],
            Context::default(),
            0,
        );
        let plain = n
            .message(
                &job("s@x.test", ""),
                b"Subject: a\r\n\r\nb\r\n",
                &r,
                UNIX_EPOCH,
            )
            .unwrap();
        assert_eq!(plain.mail_params, "");
        let eight = n
            .message(
                &job("s@x.test", ""),
                "Subject: é\r\n\r\nb\r\n".as_bytes(),
                &r,
                UNIX_EPOCH,
            )
            .unwrap();
        assert_eq!(eight.mail_params, "BODY=8BITMIME");
        let utf8 = n
            .message(
                &job("jörg@x.test", ""),
                b"Subject: a\r\n\r\nb\r\n",
                &r,
                UNIX_EPOCH,
            )
            .unwrap();
        assert!(
            utf8.mail_params.contains("SMTPUTF8"),
            "{}",
            utf8.mail_params
        );
    }

    #[test]
    fn one_delay_warning_after_the_threshold() {
        let n = bouncer(Some(Duration::from_secs(3600)));
        let mut u = [update(Status::Pending)];
        assert!(
            n.reports(&job("s@x.test", ""), &mut u, Context::default(), 1000)
                .is_empty(),
            "too early"
        );
        let r = n.reports(&job("s@x.test", ""), &mut u, Context::default(), 3_600_000);
        assert_eq!(r[0].action, DsnAction::Delayed);
        assert!(u[0].warned);
        let mut warned = job("s@x.test", "");
        warned.recipients[0].warned = true;
        assert!(
            n.reports(
                &warned,
                &mut [update(Status::Pending)],
                Context::default(),
                9_000_000
            )
            .is_empty()
        );
    }

    #[test]
    fn policy_picks_the_recipient() {
        let mut n = bouncer(None);
        let j = job("s@sender.test", "");
        let reports = n.reports(&j, &mut [update(Status::Failed)], Context::default(), 0);
        let m = n
            .message(&j, b"Subject: x\r\n\r\nbody\r\n", &reports, UNIX_EPOCH)
            .unwrap();
        assert_eq!(
            (
                m.sender.as_str(),
                m.recipients[0].address.as_str(),
                m.recipients[0].domain.as_str()
            ),
            ("", "s@sender.test", "sender.test")
        );
        n.policies.insert(
            "example.test".into(),
            BouncePolicy::Postmaster("hostmaster@example.test".into()),
        );
        assert_eq!(
            n.message(&j, b"", &reports, UNIX_EPOCH).unwrap().recipients[0].address,
            "hostmaster@example.test"
        );
        n.policies.insert(
            "example.test".into(),
            BouncePolicy::Authenticated("postmaster@example.test".into()),
        );
        assert_eq!(
            n.message(&j, b"", &reports, UNIX_EPOCH).unwrap().recipients[0].address,
            "s@sender.test",
            "not evaluated: the sender"
        );
        let forged = Job {
            authenticated: Some(false),
            ..j.clone()
        };
        assert_eq!(
            n.message(&forged, b"", &reports, UNIX_EPOCH)
                .unwrap()
                .recipients[0]
                .address,
            "postmaster@example.test"
        );
        n.policies.insert("example.test".into(), BouncePolicy::None);
        assert!(n.message(&j, b"", &reports, UNIX_EPOCH).is_none());
    }
}
