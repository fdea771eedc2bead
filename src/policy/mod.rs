//! Accept/reject decisions taken during an SMTP session: relay control (only backed-up
//! domains, no sender-routed local parts), recipient checks (lists, callouts through
//! `Primaries`, a cache in the store), per-client rate limits, DNS blocklists and sender
//! authentication (SPF, DKIM, DMARC). The checks that need the network (DNS, callouts, list
//! URLs) do their I/O here; the session phrases what the verdicts mean on the wire.

pub mod admission;
pub mod authres;
pub mod dnsbl;
pub mod lists;
pub mod rate;
pub mod recipients;

use crate::config::Cidr;
use crate::smtp::{Mailbox, Reply};
use rate::RateLimiter;
use std::collections::{HashMap, HashSet};
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// The least time between two ETRN requests from one client address.
const ETRN_INTERVAL: Duration = Duration::from_secs(1);

/// Accept/reject decisions: which recipient domains mx2 backs up, who may use ETRN.
#[derive(Debug)]
pub struct Policy {
    domains: HashSet<String>,
    /// None: any client may use ETRN (as in Postfix).
    etrn_clients: Option<Vec<Cidr>>,
    etrn_last: Mutex<HashMap<IpAddr, Instant>>,
    /// Domains whose recipients are checked asynchronously (lists, callouts, standby).
    checked: HashSet<String>,
    /// Clients exempt from rate limits (and, in the listener, the greeting delay and DNSBL).
    allow: Vec<Cidr>,
    messages: RateLimiter,
    recipients: RateLimiter,
    /// Rate limits and ETRN count IPv6 clients per prefix of this length.
    ipv6_prefix: u8,
    /// Stored domains whose ownership is not shown yet: refused.
    pending: HashSet<String>,
    /// Queue caps, per-domain rates and sizes, the disk reserve.
    admission: std::sync::Arc<admission::Admission>,
}

impl Policy {
    pub fn new<I: IntoIterator<Item = String>>(domains: I) -> Self {
        Self {
            domains: domains.into_iter().collect(),
            etrn_clients: None,
            etrn_last: Mutex::new(HashMap::new()),
            checked: HashSet::new(),
            allow: Vec::new(),
            messages: RateLimiter::new(0),
            recipients: RateLimiter::new(0),
            ipv6_prefix: 64,
            pending: HashSet::new(),
            admission: admission::Admission::new(),
        }
    }

    /// Stored domains waiting for their ownership check.
    pub fn with_pending<I: IntoIterator<Item = String>>(mut self, domains: I) -> Self {
        self.pending = domains.into_iter().collect();
        self
    }

    /// Admission by queue caps, rates, sizes and disk space (shared across generations).
    pub fn with_admission(mut self, admission: std::sync::Arc<admission::Admission>) -> Self {
        self.admission = admission;
        self
    }

    pub fn admission(&self) -> &std::sync::Arc<admission::Admission> {
        &self.admission
    }

    /// May a recipient in `domain` (a backed-up one) be taken now? See [`admission`].
    pub fn admit(&self, domain: &str, now: Instant) -> Result<(), Reply> {
        self.admission.check_domain(domain, now)
    }

    pub fn with_checked_domains<I: IntoIterator<Item = String>>(mut self, domains: I) -> Self {
        self.checked = domains.into_iter().collect();
        self
    }

    pub fn with_limits(
        mut self,
        allow: Vec<Cidr>,
        messages_per_minute: u32,
        recipients_per_minute: u32,
    ) -> Self {
        self.allow = allow;
        self.messages = RateLimiter::new(messages_per_minute);
        self.recipients = RateLimiter::new(recipients_per_minute);
        self
    }

    /// Counts IPv6 clients per prefix of `bits` (128: per address) in the rate limits and ETRN.
    pub fn with_ipv6_prefix(mut self, bits: u8) -> Self {
        self.ipv6_prefix = bits;
        self
    }

    /// The key a client is counted under.
    fn key(&self, client: IpAddr) -> IpAddr {
        crate::net::client_key(client, self.ipv6_prefix)
    }

    /// Does a recipient of this domain need an asynchronous check?
    pub fn needs_check(&self, domain: &str) -> bool {
        self.checked.contains(domain)
    }

    /// Is this client on the allow list?
    pub fn is_allowed(&self, client: IpAddr) -> bool {
        self.allow.iter().any(|c| c.contains(client))
    }

    /// Counts a message (MAIL) against the client's per-minute budget.
    pub fn take_message(&self, client: IpAddr, now: Instant) -> Result<(), Reply> {
        if self.is_allowed(client) || self.messages.take(self.key(client), now) {
            return Ok(());
        }
        Err(Reply::new(
            451,
            "4.7.1",
            "too many messages from your address; slow down and try again later",
        ))
    }

    /// Counts a recipient (RCPT) against the client's per-minute budget.
    pub fn take_recipient(&self, client: IpAddr, now: Instant) -> Result<(), Reply> {
        if self.is_allowed(client) || self.recipients.take(self.key(client), now) {
            return Ok(());
        }
        Err(Reply::new(
            451,
            "4.7.1",
            "too many recipients from your address; slow down and try again later",
        ))
    }

    pub fn with_etrn_clients(mut self, clients: Option<Vec<Cidr>>) -> Self {
        self.etrn_clients = clients;
        self
    }

    /// May `client` start a queue run now? Err is the reply to send.
    pub fn check_etrn(&self, client: IpAddr, now: Instant) -> Result<(), Reply> {
        if let Some(list) = &self.etrn_clients
            && !list.iter().any(|c| c.contains(client))
        {
            return Err(Reply::new(
                459,
                "4.7.1",
                "ETRN is not allowed from your address",
            ));
        }
        let key = self.key(client);
        let mut last = self.etrn_last.lock().unwrap_or_else(|p| p.into_inner());
        if last.len() > 10_000 {
            last.retain(|_, t| now.duration_since(*t) < ETRN_INTERVAL);
        }
        if let Some(t) = last.get(&key)
            && now.duration_since(*t) < ETRN_INTERVAL
        {
            return Err(Reply::new(
                458,
                "4.7.0",
                "too many ETRN requests; try again in a second",
            ));
        }
        last.insert(key, now);
        Ok(())
    }

    /// The configured domains an ETRN argument names: `domain`, or `@domain` for that domain
    /// and every configured domain below it (RFC 1985 §5.3).
    pub fn flush_domains(&self, node: &str) -> Vec<String> {
        let (sub, name) = match node.strip_prefix('@') {
            Some(n) => (true, n),
            None => (false, node),
        };
        let name = name.trim_end_matches('.').to_ascii_lowercase();
        let suffix = format!(".{name}");
        let mut out: Vec<String> = self
            .domains
            .iter()
            .filter(|d| **d == name || (sub && d.ends_with(&suffix)))
            .cloned()
            .collect();
        out.sort();
        out
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
        if self.pending.contains(&domain) {
            return Err(Reply::new(
                550,
                "5.7.1",
                format!(
                    "<{rcpt}>: relay access denied: {domain} is not active on this server yet (its ownership check is pending)"
                ),
            ));
        }
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
    fn etrn_access_and_rate() {
        let p = Policy::new(["example.test".to_string()])
            .with_etrn_clients(Some(vec![Cidr::parse("127.0.0.0/8").unwrap()]));
        let now = Instant::now();
        let lo: IpAddr = "127.0.0.1".parse().unwrap();
        assert!(p.check_etrn(lo, now).is_ok());
        assert_eq!(
            p.check_etrn(lo, now).unwrap_err().code,
            458,
            "a second request within the interval"
        );
        assert!(p.check_etrn(lo, now + ETRN_INTERVAL).is_ok());
        assert_eq!(
            p.check_etrn("192.0.2.1".parse().unwrap(), now)
                .unwrap_err()
                .code,
            459
        );
    }

    #[test]
    fn ipv6_clients_share_limits_per_prefix() {
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        let now = Instant::now();
        let p = Policy::new(["example.test".to_string()]).with_limits(Vec::new(), 2, 0);
        assert!(p.take_message(ip("2001:db8:0:1::1"), now).is_ok());
        assert!(p.take_message(ip("2001:db8:0:1::2"), now).is_ok());
        assert_eq!(
            p.take_message(ip("2001:db8:0:1:ffff::3"), now)
                .unwrap_err()
                .code,
            451,
            "a third address in the same /64 shares the budget"
        );
        assert!(
            p.take_message(ip("2001:db8:0:2::1"), now).is_ok(),
            "another /64"
        );
        assert!(p.check_etrn(ip("2001:db8:0:1::1"), now).is_ok());
        assert_eq!(
            p.check_etrn(ip("2001:db8:0:1::9"), now).unwrap_err().code,
            458
        );
        assert!(p.check_etrn(ip("2001:db8:0:2::9"), now).is_ok());
        let per_address = Policy::new(["example.test".to_string()])
            .with_limits(Vec::new(), 1, 0)
            .with_ipv6_prefix(128);
        assert!(per_address.take_message(ip("2001:db8::1"), now).is_ok());
        assert!(per_address.take_message(ip("2001:db8::2"), now).is_ok());
        assert!(per_address.take_message(ip("2001:db8::1"), now).is_err());
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
