//! ETRN (RFC 1985): which configured domains a request names, whether this client may ask
//! now (the policy's list and rate), and the reply to the delivery run the listener started.
//! Never starts delivery itself.

use super::{Hello, Next, Session};
use crate::queue::StoreError;
use crate::smtp::Reply;
use std::time::Instant;
use tracing::info;

impl Session {
    pub(super) fn etrn(&mut self, arg: &str, now: Instant) -> Next {
        if self.hello == Hello::None {
            return self.error(Reply::new(503, "5.5.1", "send EHLO first"));
        }
        if self.tx.is_some() {
            return self.error(Reply::new(
                503,
                "5.5.1",
                "ETRN is not allowed inside a mail transaction",
            ));
        }
        if arg.is_empty() || arg.contains(' ') {
            return self.error(Reply::new(
                501,
                "5.5.4",
                "syntax: ETRN domain | ETRN @domain",
            ));
        }
        if arg.starts_with('#') {
            return Next::Reply(Reply::new(
                458,
                "4.5.0",
                format!("unable to queue messages for node {arg}: named queues are not supported"),
            ));
        }
        let domains = self.policy.flush_domains(arg);
        if domains.is_empty() {
            return Next::Reply(Reply::new(
                459,
                "4.7.1",
                format!("node {arg} not allowed: this server does not back it up"),
            ));
        }
        if let Err(reply) = self.policy.check_etrn(self.client_ip, now) {
            info!(client = %self.client_ip, node = arg, reply = %reply, "ETRN refused");
            return Next::Reply(reply);
        }
        Next::Flush {
            node: arg.to_string(),
            domains,
        }
    }

    /// How the delivery run for an [`Next::Flush`] went: `Ok(n)` with `n` recipients
    /// pending for `node`'s domains.
    pub fn etrn_result(&self, node: &str, result: Result<u64, StoreError>) -> Reply {
        match result {
            Ok(0) => Reply::new(
                251,
                "2.0.0",
                format!("OK, no messages waiting for node {node}"),
            ),
            Ok(n) => Reply::new(
                253,
                "2.0.0",
                format!("OK, {n} pending messages for node {node} started"),
            ),
            Err(_) => Reply::new(
                458,
                "4.3.0",
                format!("unable to queue messages for node {node}"),
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing::*;
    use super::*;
    use crate::policy::Policy;
    use std::sync::Arc;

    #[test]
    fn etrn_names_configured_domains_only() {
        let mut s = session();
        assert_eq!(run(&mut s, "ETRN example.test"), 503);
        run(&mut s, "EHLO c.test");
        let t0 = Instant::now();
        assert_eq!(
            s.command(b"ETRN Example.Test", t0),
            Next::Flush {
                node: "Example.Test".into(),
                domains: vec!["example.test".into()]
            }
        );
        // One ETRN a second per client (see the next test).
        assert_eq!(
            s.command(b"ETRN @test", t0 + Duration::from_secs(1)),
            Next::Flush {
                node: "@test".into(),
                domains: vec!["example.test".into()]
            }
        );
        assert_eq!(run(&mut s, "ETRN other.test"), 459);
        assert_eq!(run(&mut s, "ETRN #queue"), 458);
        run(&mut s, "MAIL FROM:<>");
        assert_eq!(run(&mut s, "ETRN example.test"), 503);
    }

    fn etrn_at(s: &mut Session, at: Instant) -> String {
        match s.command(b"ETRN example.test", at) {
            Next::Reply(r) => wire(&r),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn etrn_is_refused_to_other_clients_and_more_than_once_a_second() {
        let listed = vec![crate::config::Cidr::parse("198.51.100.0/24").unwrap()];
        let policy = Policy::new(["example.test".to_string()]).with_etrn_clients(Some(listed));
        let mut s = Session::new(
            Arc::new(config()),
            Arc::new(policy),
            "192.0.2.7".parse().unwrap(),
        );
        run(&mut s, "EHLO c.test");
        let t0 = Instant::now();
        assert_eq!(
            etrn_at(&mut s, t0),
            "459 4.7.1 ETRN is not allowed from your address\r\n"
        );

        let mut s = session();
        run(&mut s, "EHLO c.test");
        assert!(matches!(
            s.command(b"ETRN example.test", t0),
            Next::Flush { .. }
        ));
        assert_eq!(
            etrn_at(&mut s, t0 + Duration::from_millis(500)),
            "458 4.7.0 too many ETRN requests; try again in a second\r\n"
        );
        assert_eq!(s.errors(), 0, "a refused ETRN is no protocol error");
    }

    #[test]
    fn etrn_replies_say_how_the_run_went() {
        let s = session();
        assert_eq!(
            wire(&s.etrn_result("example.test", Ok(0))),
            "251 2.0.0 OK, no messages waiting for node example.test\r\n"
        );
        assert_eq!(
            wire(&s.etrn_result("@test", Ok(3))),
            "253 2.0.0 OK, 3 pending messages for node @test started\r\n"
        );
        assert_eq!(
            wire(&s.etrn_result("example.test", Err(StoreError::Closed))),
            "458 4.3.0 unable to queue messages for node example.test\r\n"
        );
    }
}
