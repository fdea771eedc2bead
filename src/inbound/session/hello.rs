//! Greeting the client's way in: EHLO (and what it offers), HELO, STARTTLS and the reset a
//! TLS handshake brings (RFC 3207 §4.2). Never touches a transaction beyond ending it.

use super::{Hello, Next, Session};
use crate::smtp::Reply;

impl Session {
    pub(super) fn ehlo(&mut self, name: String) -> Next {
        self.tx = None;
        self.hello = Hello::Ehlo;
        self.helo_name = name;
        let mut lines = vec![
            format!("{} greets {}", self.cfg.hostname, self.helo_name),
            "PIPELINING".into(),
            format!("SIZE {}", self.cfg.max_message_size),
            "8BITMIME".into(),
            "SMTPUTF8".into(),
            "ENHANCEDSTATUSCODES".into(),
            "CHUNKING".into(),
            "DSN".into(),
            "ETRN".into(),
        ];
        if self.cfg.starttls && self.tls.is_none() {
            lines.push("STARTTLS".into());
        }
        lines.push("HELP".into());
        Next::Reply(Reply::plain(250, lines))
    }

    pub(super) fn helo(&mut self, name: String) -> Next {
        self.tx = None;
        self.hello = Hello::Helo;
        self.helo_name = name;
        Next::Reply(Reply::plain(250, vec![self.cfg.hostname.clone()]))
    }

    pub(super) fn starttls(&mut self) -> Next {
        if !self.cfg.starttls {
            return self.error(Reply::new(502, "5.5.1", "STARTTLS not available"));
        }
        if self.tls.is_some() {
            return self.error(Reply::new(503, "5.5.1", "TLS already active"));
        }
        if self.tx.is_some() {
            return self.error(Reply::new(
                503,
                "5.5.1",
                "STARTTLS not allowed inside a mail transaction",
            ));
        }
        Next::StartTls(Reply::new(220, "2.0.0", "ready to start TLS"))
    }

    /// The handshake succeeded: everything known before it is forgotten (RFC 3207 §4.2); the
    /// client must say EHLO again.
    pub fn tls_started(&mut self, info: String) {
        self.hello = Hello::None;
        self.helo_name.clear();
        self.tx = None;
        self.tls = Some(info);
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing::*;
    use super::*;

    #[test]
    fn starttls_resets_the_session() {
        let mut s = session();
        assert!(
            matches!(s.command(b"EHLO c.test", std::time::Instant::now()), Next::Reply(r) if r.lines.iter().any(|l| l == "STARTTLS"))
        );
        run(&mut s, "MAIL FROM:<>");
        assert_eq!(run(&mut s, "STARTTLS"), 503, "not inside a transaction");
        run(&mut s, "RSET");
        assert_eq!(run(&mut s, "STARTTLS"), 220);
        s.tls_started("TLSv1_3 TLS13_AES_128_GCM_SHA256".into());
        assert_eq!(
            run(&mut s, "MAIL FROM:<>"),
            503,
            "EHLO is needed again after TLS"
        );
        assert!(
            matches!(s.command(b"EHLO c.test", std::time::Instant::now()), Next::Reply(r) if !r.lines.iter().any(|l| l == "STARTTLS"))
        );
        assert_eq!(run(&mut s, "STARTTLS"), 503);
        run(&mut s, "MAIL FROM:<>");
        run(&mut s, "RCPT TO:<u@example.test>");
        run(&mut s, "DATA");
        let mut d = s.data_decoder();
        d.feed(b"x\r\n.\r\n");
        let m = commit(s.data_done(d, SystemTime::UNIX_EPOCH, "q".into()));
        let head = String::from_utf8_lossy(&m.body).into_owned();
        assert!(
            head.contains("(using TLSv1_3 with cipher TLS13_AES_128_GCM_SHA256)")
                && head.contains("with ESMTPS id q"),
            "{head}"
        );
    }
}
