//! The envelope: MAIL FROM and RCPT TO with their ESMTP parameters (SIZE, BODY, SMTPUTF8,
//! DSN), the per-client rate limits, relay checks, and the verdict of an asynchronous
//! recipient check. Never reads content.

use super::{Hello, Next, PendingRcpt, Session, Transaction};
use crate::dsn;
use crate::policy::recipients::Verdict;
use crate::queue::NewRecipient;
use crate::smtp::Reply;
use crate::smtp::address::{AddressError, parse_mailbox, parse_reverse_path};
use crate::smtp::command::Param;
use std::time::Instant;

fn has_duplicates(params: &[Param]) -> bool {
    params
        .iter()
        .enumerate()
        .any(|(i, p)| params[..i].iter().any(|q| q.keyword == p.keyword))
}

impl Session {
    pub(super) fn mail(&mut self, path: &str, params: Vec<Param>, now: Instant) -> Next {
        if self.hello == Hello::None {
            return self.error(Reply::new(503, "5.5.1", "send EHLO or HELO first"));
        }
        if self.tx.is_some() {
            return self.error(Reply::new(503, "5.5.1", "nested MAIL command"));
        }
        let ehlo = self.hello == Hello::Ehlo;
        let max = self.cfg.max_message_size;
        let declared = params
            .iter()
            .find(|p| p.keyword == "SIZE")
            .and_then(|p| p.value.as_deref())
            .and_then(|v| v.parse::<u64>().ok());
        if ehlo && declared.is_some_and(|n| n > max) {
            return self.error(Reply::new(
                552,
                "5.3.4",
                format!("message size exceeds fixed maximum message size of {max} bytes"),
            ));
        }
        if let Err(a) =
            self.check_params(&params, |k, v| match k {
                _ if !ehlo => Some(false),
                "SIZE" => Some(v.and_then(|v| v.parse::<u64>().ok()).is_some()),
                "BODY" => Some(v.is_some_and(|v| {
                    v.eq_ignore_ascii_case("7BIT") || v.eq_ignore_ascii_case("8BITMIME")
                })),
                "SMTPUTF8" => Some(v.is_none()),
                "RET" => Some(v.is_some_and(|v| {
                    v.eq_ignore_ascii_case("FULL") || v.eq_ignore_ascii_case("HDRS")
                })),
                "ENVID" => Some(v.is_some_and(|v| v.len() <= 100 && dsn::is_xtext(v))),
                _ => None,
            })
        {
            return a;
        }
        let utf8 = params.iter().any(|p| p.keyword == "SMTPUTF8");
        if let Err(reply) = self.policy.admission().check_disk() {
            return Next::Reply(reply);
        }
        if let Err(reply) = self.policy.take_message(self.client_ip, now) {
            return Next::Reply(reply);
        }
        let sender = match parse_reverse_path(path, utf8) {
            Ok(s) => s,
            Err(e) => return self.error(bad_address(&e, 553, "5.1.7", "sender")),
        };
        let params = params.into_iter().filter(|p| p.keyword != "SIZE").collect();
        self.tx = Some(Transaction {
            sender,
            params,
            utf8,
            declared: declared.filter(|_| ehlo),
            max_size: max,
            recipients: Vec::new(),
            chunks: None,
            chunks_failed: None,
        });
        Self::ok("sender OK", "2.1.0")
    }

    /// Validates ESMTP parameters with `valid(keyword, value)`: None is an unknown parameter
    /// (555), Some(false) a bad value (501); a repeated parameter is a 501 too.
    fn check_params(
        &mut self,
        params: &[Param],
        valid: impl Fn(&str, Option<&str>) -> Option<bool>,
    ) -> Result<(), Next> {
        for p in params {
            match valid(&p.keyword, p.value.as_deref()) {
                None => {
                    return Err(self.error(Reply::new(
                        555,
                        "5.5.4",
                        format!("unsupported parameter {}", p.keyword),
                    )));
                }
                Some(false) => {
                    return Err(self.error(Reply::new(
                        501,
                        "5.5.4",
                        format!("bad value for parameter {}", p.keyword),
                    )));
                }
                Some(true) => {}
            }
        }
        if has_duplicates(params) {
            return Err(self.error(Reply::new(501, "5.5.4", "a parameter is given twice")));
        }
        Ok(())
    }

    pub(super) fn rcpt(&mut self, path: &str, params: Vec<Param>, now: Instant) -> Next {
        let Some(tx) = self.tx.as_ref() else {
            return self.error(Reply::new(503, "5.5.1", "need MAIL before RCPT"));
        };
        if tx.recipients.len() >= self.cfg.max_recipients {
            return Next::Reply(Reply::new(452, "4.5.3", "too many recipients"));
        }
        let utf8 = tx.utf8;
        let declared = tx.declared;
        if let Err(a) = self.check_params(&params, |k, v| {
            let v = v.unwrap_or("");
            match k {
                "NOTIFY" => Some(dsn::Notify::parse(v).is_some()),
                // addr-type ";" xtext; kept verbatim and relayed as received.
                "ORCPT" => Some(
                    v.len() <= 500
                        && v.split_once(';').is_some_and(|(t, a)| {
                            !t.is_empty()
                                && t.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
                                && dsn::is_xtext(a)
                        }),
                ),
                _ => None,
            }
        }) {
            return a;
        }
        let mailbox = match parse_mailbox(path, utf8) {
            Ok(m) => m,
            Err(e) => return self.error(bad_address(&e, 501, "5.1.3", "recipient")),
        };
        let domain = match self.policy.check_recipient(&mailbox) {
            Ok(d) => d,
            Err(reply) => return self.error(reply),
        };
        if let Some(max) = self.policy.admission().max_message_size(&domain)
            && declared.is_some_and(|n| n > max)
        {
            return self.error(Reply::new(
                552,
                "5.3.4",
                format!("message size exceeds the maximum of {max} bytes for {domain}"),
            ));
        }
        if let Err(reply) = self.policy.take_recipient(self.client_ip, now) {
            return Next::Reply(reply);
        }
        if let Err(reply) = self.policy.admit(&domain, now) {
            return Next::Reply(reply);
        }
        let pending = PendingRcpt {
            recipient: NewRecipient {
                // A trailing dot ("example.com.") is not RFC 5321 Domain syntax: relayed
                // without it, so strict primaries take it and duplicates fold.
                address: format!("{}@{}", mailbox.local, mailbox.domain.trim_end_matches('.')),
                domain,
                params: params
                    .iter()
                    .map(Param::to_wire)
                    .collect::<Vec<_>>()
                    .join(" "),
            },
            mailbox,
        };
        if self.policy.needs_check(&pending.recipient.domain) {
            return Next::CheckRecipient(Box::new(pending));
        }
        Next::Reply(self.add_recipient(pending.recipient))
    }

    fn add_recipient(&mut self, r: NewRecipient) -> Reply {
        let Some(tx) = self.tx.as_mut() else {
            return Reply::new(503, "5.5.1", "need MAIL before RCPT");
        };
        // The same recipient twice is kept once. Local parts are compared as written: only
        // the primary may decide that John and john are one mailbox (RFC 5321 §2.4).
        if let Some(max) = self.policy.admission().max_message_size(&r.domain) {
            tx.max_size = tx.max_size.min(max);
        }
        if !tx.recipients.iter().any(|x| same_recipient(x, &r)) {
            tx.recipients.push(r);
        }
        Reply::new(250, "2.1.5", "recipient OK")
    }

    /// The answer to an [`Next::CheckRecipient`].
    /// A refusal counts as an error: a client guessing addresses is closed after
    /// `max_errors` like any other.
    pub fn recipient_checked(&mut self, pending: PendingRcpt, verdict: Verdict) -> Next {
        match verdict {
            Verdict::Accept => Next::Reply(self.add_recipient(pending.recipient)),
            Verdict::Reject(r) => self.error(r),
            Verdict::TempFail(r) => Next::Reply(r),
        }
    }
}

/// Same local part (exactly) at the same domain (any case, trailing dot or not).
fn same_recipient(a: &NewRecipient, b: &NewRecipient) -> bool {
    let split = |r: &NewRecipient| {
        let at = r.address.rfind('@').unwrap_or(r.address.len());
        r.address.split_at(at).0.to_string()
    };
    a.domain == b.domain && split(a) == split(b)
}

/// The reply to an address that does not parse. A non-ASCII address without SMTPUTF8 gets
/// RFC 6531 §3.5's `553 5.6.7`.
fn bad_address(e: &AddressError, code: u16, status: &str, what: &str) -> Reply {
    match e {
        AddressError::NeedsUtf8 => Reply::new(
            553,
            "5.6.7",
            format!("non-ASCII {what} address: send MAIL FROM with SMTPUTF8"),
        ),
        e => Reply::new(code, status, format!("bad {what} address: {e}")),
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing::*;
    use super::*;
    use crate::policy::Policy;
    use std::sync::Arc;

    #[test]
    fn overlong_helo_names_and_utf8_addresses_without_smtputf8_are_refused() {
        let mut s = session();
        let long = format!("EHLO {}.test", "a".repeat(300));
        assert_eq!(run(&mut s, &long), 501);
        assert_eq!(run(&mut s, "EHLO client.test"), 250);
        let a = s.command(
            "MAIL FROM:<jörg@sender.test>".as_bytes(),
            std::time::Instant::now(),
        );
        assert!(
            matches!(&a, Next::Reply(r) if r.code == 553 && r.status == "5.6.7"),
            "{a:?}"
        );
        assert_eq!(run(&mut s, "MAIL FROM:<a@sender.test>"), 250);
        let a = s.command(
            "RCPT TO:<jörg@example.test>".as_bytes(),
            std::time::Instant::now(),
        );
        assert!(
            matches!(&a, Next::Reply(r) if r.code == 553 && r.status == "5.6.7"),
            "{a:?}"
        );
    }

    #[test]
    fn order_and_relay_errors() {
        let mut s = session();
        assert_eq!(run(&mut s, "MAIL FROM:<a@b.test>"), 503);
        assert_eq!(run(&mut s, "HELO c.test"), 250);
        assert_eq!(run(&mut s, "RCPT TO:<u@example.test>"), 503);
        assert_eq!(
            run(&mut s, "MAIL FROM:<a@b.test> SIZE=10"),
            501,
            "no ESMTP parameters after HELO"
        );
        let mut s = session();
        run(&mut s, "EHLO c.test");
        assert_eq!(run(&mut s, "MAIL FROM:<a@b.test> SIZE=1001"), 552);
        assert_eq!(run(&mut s, "MAIL FROM:<a@b.test> FOO=1"), 555);
        let mut s = session();
        run(&mut s, "EHLO c.test");
        run(&mut s, "MAIL FROM:<a@b.test>");
        assert_eq!(run(&mut s, "DATA"), 554, "no recipients yet");
        assert_eq!(run(&mut s, "RCPT TO:<u@elsewhere.test>"), 550);
        assert_eq!(run(&mut s, "RCPT TO:<u%elsewhere.test@example.test>"), 550);
        assert_eq!(
            run(&mut s, "RCPT TO:<u@example.test> NOTIFY=NEVER,SUCCESS"),
            501
        );
        // Five errors: closed.
        assert!(
            matches!(s.command(b"BOGUS", std::time::Instant::now()), Next::Close(r) if r.code == 421)
        );
    }

    #[test]
    fn dsn_parameters_are_kept_verbatim() {
        let mut s = session();
        run(&mut s, "EHLO c.test");
        assert_eq!(
            run(&mut s, "MAIL FROM:<a@b.test> RET=HDRS ENVID=QQ+2B1"),
            250
        );
        assert_eq!(
            run(
                &mut s,
                "RCPT TO:<u@example.test> NOTIFY=SUCCESS,FAILURE ORCPT=utf-8;u+2Bx@example.test"
            ),
            250
        );
        assert_eq!(
            run(&mut s, "RCPT TO:<v@example.test> NOTIFY=NEVER NOTIFY=NEVER"),
            501
        );
        assert_eq!(run(&mut s, "RCPT TO:<v@example.test> FOO=1"), 555);
        run(&mut s, "DATA");
        let mut d = s.data_decoder();
        d.feed(b"x\r\n.\r\n");
        let m = commit(s.data_done(d, SystemTime::UNIX_EPOCH, "q".into()));
        assert_eq!(m.mail_params, "RET=HDRS ENVID=QQ+2B1");
        assert_eq!(
            m.recipients[0].params,
            "NOTIFY=SUCCESS,FAILURE ORCPT=utf-8;u+2Bx@example.test"
        );
    }

    #[test]
    fn recipient_limit() {
        let mut s = session();
        run(&mut s, "EHLO c.test");
        run(&mut s, "MAIL FROM:<>");
        for i in 0..3 {
            assert_eq!(run(&mut s, &format!("RCPT TO:<u{i}@example.test>")), 250);
        }
        assert_eq!(run(&mut s, "RCPT TO:<u9@example.test>"), 452);
    }

    #[test]
    fn rate_limits_count_with_the_time_passed_in() {
        let policy = Policy::new(["example.test".to_string()]).with_limits(Vec::new(), 1, 2);
        let mut s = Session::new(
            Arc::new(config()),
            Arc::new(policy),
            "192.0.2.7".parse().unwrap(),
        );
        let t0 = Instant::now();
        run(&mut s, "EHLO c.test");
        // (seconds since t0, client, server)
        let transcript = [
            (0, "MAIL FROM:<>", "250 2.1.0 sender OK"),
            (0, "RCPT TO:<a@example.test>", "250 2.1.5 recipient OK"),
            (0, "RCPT TO:<b@example.test>", "250 2.1.5 recipient OK"),
            (
                0,
                "RCPT TO:<c@example.test>",
                "451 4.7.1 too many recipients from your address; slow down and try again later",
            ),
            (30, "RCPT TO:<c@example.test>", "250 2.1.5 recipient OK"),
            (30, "RSET", "250 2.0.0 reset"),
            (
                30,
                "MAIL FROM:<>",
                "451 4.7.1 too many messages from your address; slow down and try again later",
            ),
            (60, "MAIL FROM:<>", "250 2.1.0 sender OK"),
        ];
        for (secs, client, server) in transcript {
            let at = t0 + Duration::from_secs(secs);
            match s.command(client.as_bytes(), at) {
                Next::Reply(r) => assert_eq!(wire(&r), format!("{server}\r\n"), "{client}"),
                other => panic!("{client}: {other:?}"),
            }
        }
    }
}
