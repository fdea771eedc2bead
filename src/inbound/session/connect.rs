//! The connection around the commands: the greeting, the replies that refuse a connection
//! before it (PROXY, connection limits, DNS blocklists, early talkers) and the ones that end
//! it (an over-long line, a timeout, content too slow, shutdown). The listener reports the
//! fact; these phrase the reply. Never touch the transaction.

use super::{Next, Session};
use crate::inbound::limits::Refused;
use crate::smtp::Reply;
use std::net::IpAddr;

impl Session {
    /// The PROXY header of a trusted load balancer named the real client.
    pub fn proxied_for(&mut self, client_ip: IpAddr) {
        self.client_ip = client_ip;
    }

    /// A connection to a PROXY listener from an address that is no trusted load balancer.
    pub fn proxy_untrusted(&self) -> Reply {
        Reply::new(554, "5.7.0", "this port is for the load balancer only")
    }

    /// A trusted load balancer's connection did not start with a valid PROXY header; `why`
    /// says what happened instead (timed out, malformed, closed).
    pub fn proxy_header_missing(&self, why: &str) -> Reply {
        Reply::new(
            421,
            "4.7.0",
            format!("no valid PROXY protocol header ({why}), closing connection"),
        )
    }

    /// The connection limits refused the client a slot.
    pub fn too_many_connections(&self, why: Refused) -> Reply {
        let text = match why {
            Refused::Total => "too many connections, try again later",
            Refused::PerIp => "too many connections from your address, try again later",
        };
        Reply::new(421, "4.7.0", text)
    }

    /// The client is listed in the DNS blocklist `zone`.
    pub fn dnsbl_listed(&self, zone: &str) -> Reply {
        Reply::new(
            554,
            "5.7.1",
            format!(
                "service unavailable; client [{}] blocked using {zone}",
                self.client_ip
            ),
        )
    }

    /// The client sent something during the greeting delay (an early talker).
    pub fn talked_early(&self) -> Reply {
        Reply::new(554, "5.5.1", "protocol error: talking before the greeting")
    }

    pub fn greeting(&self) -> Reply {
        Reply::plain(220, vec![format!("{} ESMTP mx2", self.cfg.hostname)])
    }

    /// The reply for a command line longer than the limit.
    pub fn line_too_long(&mut self) -> Next {
        self.error(Reply::new(500, "5.5.2", "line too long"))
    }

    /// The reply sent when the server shuts down while the session waits for a command.
    pub fn shutting_down(&self) -> Reply {
        Reply::new(
            421,
            "4.3.2",
            format!("{} shutting down, try again later", self.cfg.hostname),
        )
    }

    /// The reply when message content arrives slower than `min_rate` bytes per second (after
    /// the first data_timeout): the transaction ends and the connection closes.
    pub fn data_too_slow(&self, min_rate: u64) -> Reply {
        Reply::new(
            421,
            "4.4.2",
            format!(
                "{} message content arriving too slowly (under {min_rate} bytes/s), closing connection",
                self.cfg.hostname
            ),
        )
    }

    /// The reply when a phase times out.
    pub fn timed_out(&self) -> Reply {
        Reply::new(
            421,
            "4.4.2",
            format!("{} timeout exceeded, closing connection", self.cfg.hostname),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing::*;
    use super::*;

    #[test]
    fn refusals_before_the_greeting() {
        let mut s = session();
        let replies = [
            (
                s.too_many_connections(Refused::Total),
                "421 4.7.0 too many connections, try again later",
            ),
            (
                s.too_many_connections(Refused::PerIp),
                "421 4.7.0 too many connections from your address, try again later",
            ),
            (
                s.dnsbl_listed("zen.test"),
                "554 5.7.1 service unavailable; client [192.0.2.7] blocked using zen.test",
            ),
            (
                s.talked_early(),
                "554 5.5.1 protocol error: talking before the greeting",
            ),
            (
                s.proxy_untrusted(),
                "554 5.7.0 this port is for the load balancer only",
            ),
            (
                s.proxy_header_missing("malformed: bad signature"),
                "421 4.7.0 no valid PROXY protocol header (malformed: bad signature), closing connection",
            ),
            (s.greeting(), "220 mx2.test ESMTP mx2"),
        ];
        for (reply, expected) in replies {
            assert_eq!(wire(&reply), format!("{expected}\r\n"));
        }
        // The real client a PROXY header names is the one screened and named.
        s.proxied_for("198.51.100.4".parse().unwrap());
        assert_eq!(
            wire(&s.dnsbl_listed("zen.test")),
            "554 5.7.1 service unavailable; client [198.51.100.4] blocked using zen.test\r\n",
        );
    }

    #[test]
    fn replies_that_end_a_connection() {
        let mut s = session();
        let replies = [
            (
                s.timed_out(),
                "421 4.4.2 mx2.test timeout exceeded, closing connection",
            ),
            (
                s.data_too_slow(500),
                "421 4.4.2 mx2.test message content arriving too slowly (under 500 bytes/s), closing connection",
            ),
            (
                s.shutting_down(),
                "421 4.3.2 mx2.test shutting down, try again later",
            ),
        ];
        for (reply, expected) in replies {
            assert_eq!(wire(&reply), format!("{expected}\r\n"));
        }
        for _ in 0..4 {
            assert!(
                matches!(s.line_too_long(), Next::Reply(r) if wire(&r) == "500 5.5.2 line too long\r\n")
            );
        }
        assert_eq!(
            closing(s.line_too_long()),
            "421 4.7.0 mx2.test too many errors, closing connection\r\n",
            "over-long lines count as errors"
        );
    }
}
