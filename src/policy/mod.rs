//! Accept/reject decisions taken during an SMTP session, each answered with a reply.
//! Today: relay control (only configured domains, no sender-routed local parts). Recipient
//! verification, rate limits and reputation checks come here too. No I/O in this module yet.

use crate::smtp::{Mailbox, Reply};
use std::collections::HashSet;

/// The relay policy: which recipient domains mx2 backs up.
#[derive(Debug, Clone)]
pub struct Policy {
    domains: HashSet<String>,
}

impl Policy {
    pub fn new<I: IntoIterator<Item = String>>(domains: I) -> Self {
        Self {
            domains: domains.into_iter().collect(),
        }
    }

    /// Decides on one RCPT. `Ok` carries the recipient's domain key (lower case, no trailing dot).
    pub fn check_recipient(&self, rcpt: &Mailbox) -> Result<String, Reply> {
        let local = rcpt.local_unquoted();
        // user%host@backup, host!user@backup, "user@host"@backup: routing the sender chose,
        // the classic backup-MX relay hole. The primary would route it onwards; refuse.
        if local.contains(['%', '!', '@']) {
            return Err(Reply::new(
                550,
                "5.7.1",
                format!("<{rcpt}>: sender-routed addresses are not accepted"),
            ));
        }
        let domain = rcpt.domain_key();
        if rcpt.is_address_literal() || !self.domains.contains(&domain) {
            return Err(Reply::new(
                550,
                "5.7.1",
                format!(
                    "<{rcpt}>: relay access denied: this server is not a mail exchanger for that domain"
                ),
            ));
        }
        Ok(domain)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::smtp::address::parse_mailbox;

    fn check(addr: &str) -> Result<String, u16> {
        let p = Policy::new(["example.test".to_string()]);
        p.check_recipient(&parse_mailbox(addr, true).unwrap())
            .map_err(|r| r.code)
    }

    #[test]
    fn relay_control() {
        assert_eq!(check("user@Example.Test."), Ok("example.test".into()));
        assert_eq!(check("user@other.test"), Err(550));
        assert_eq!(check("user@sub.example.test"), Err(550));
        assert_eq!(check("user%elsewhere.test@example.test"), Err(550));
        assert_eq!(check("elsewhere.test!user@example.test"), Err(550));
        assert_eq!(check("\"user@elsewhere.test\"@example.test"), Err(550));
        assert_eq!(check("user@[127.0.0.1]"), Err(550));
    }
}
