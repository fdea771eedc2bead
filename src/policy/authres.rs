//! Sender authentication at reception: SPF, DKIM and DMARC (mail-auth), the
//! Authentication-Results header (RFC 8601) mx2 prepends, and whether the sender passed SPF or
//! DKIM (for the `authenticated` bounce policy).
//!
//! DKIM and DMARC need the whole message in memory: a message of up to [`CHECK_MAX`] bytes
//! is checked whole (read back from its spool file when it was spooled); a larger one is
//! judged by SPF alone, and the header says that DKIM and DMARC were not evaluated, and why
//! (docs/decisions.md #29).

use crate::dns::Dns;
use mail_auth::dmarc::Policy as DmarcPolicy;
use mail_auth::dmarc::verify::DmarcParameters;
use mail_auth::spf::verify::SpfParameters;
use mail_auth::{
    AuthenticatedMessage, AuthenticationResults, DkimResult, DmarcResult, MessageAuthenticator,
    SpfResult,
};
use std::net::IpAddr;

/// The largest message whose DKIM signatures and DMARC policy are checked; larger ones are
/// not read into memory.
pub const CHECK_MAX: u64 = 1 << 20;

/// What sender authentication gets to read of the message.
#[derive(Debug, Clone, Copy)]
pub enum Content<'a> {
    /// The whole message.
    Whole(&'a [u8]),
    /// A message too large to hold in memory, of this many bytes.
    Unread { size: u64 },
}

pub struct MailAuth {
    auth: MessageAuthenticator,
    hostname: String,
}

/// What reception learned about the sender.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Evaluation {
    /// `Authentication-Results: …` with CRLF line endings, ready to prepend.
    pub header: String,
    /// SPF or DKIM passed.
    pub authenticated: bool,
    /// DMARC failed and the domain's policy is `reject`.
    pub dmarc_reject: bool,
}

impl MailAuth {
    pub fn new(dns: &Dns, hostname: &str) -> Self {
        Self {
            auth: MessageAuthenticator(dns.resolver()),
            hostname: hostname.to_string(),
        }
    }

    /// Evaluates the sender of a message whose content is `content`, or `Unread` when it is
    /// too large to be held in memory (SPF only).
    pub async fn evaluate(
        &self,
        ip: IpAddr,
        helo: &str,
        sender: &str,
        content: Content<'_>,
    ) -> Evaluation {
        let spf = if sender.is_empty() {
            self.auth
                .verify_spf(SpfParameters::verify_ehlo(ip, helo, &self.hostname))
                .await
        } else {
            self.auth
                .verify_spf(SpfParameters::verify_mail_from(
                    ip,
                    helo,
                    &self.hostname,
                    sender,
                ))
                .await
        };
        let mut results = AuthenticationResults::new(&self.hostname)
            .with_spf_mailfrom_result(&spf, ip, sender, helo);
        let mut authenticated = spf.result() == SpfResult::Pass;
        let mut dmarc_reject = false;
        let content = match content {
            Content::Whole(c) => c,
            Content::Unread { size } => {
                let text = results
                    .to_string()
                    .replace("\r\n", "\n")
                    .replace('\n', "\r\n");
                return Evaluation {
                    header: format!(
                        "Authentication-Results: {text};\r\n\tdkim=none (not verified: message of {size} bytes is over the {} bytes mx2 checks);\r\n\tdmarc=none (not evaluated: DKIM not verified)\r\n",
                        CHECK_MAX
                    ),
                    authenticated,
                    dmarc_reject: false,
                };
            }
        };
        if let Some(message) = AuthenticatedMessage::parse(content) {
            let dkim = self.auth.verify_dkim(&message).await;
            authenticated |= dkim.iter().any(|d| d.result() == &DkimResult::Pass);
            results = results.with_dkim_results(&dkim, message.from());
            let mail_from_domain = sender.rsplit_once('@').map_or(helo, |(_, d)| d);
            let dmarc = self
                .auth
                .verify_dmarc(DmarcParameters::new(
                    &message,
                    &dkim,
                    mail_from_domain,
                    &spf,
                ))
                .await;
            dmarc_reject = matches!(dmarc.spf_result(), DmarcResult::Fail(_) | DmarcResult::None)
                && matches!(
                    dmarc.dkim_result(),
                    DmarcResult::Fail(_) | DmarcResult::None
                )
                && matches!(dmarc.result(), DmarcResult::Fail(_))
                && dmarc.policy() == DmarcPolicy::Reject;
            results = results.with_dmarc_result(&dmarc);
        }
        let text = results
            .to_string()
            .replace("\r\n", "\n")
            .replace('\n', "\r\n");
        Evaluation {
            header: format!("Authentication-Results: {text}\r\n"),
            authenticated,
            dmarc_reject,
        }
    }
}
