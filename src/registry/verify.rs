//! The ownership check a stored domain passes before it takes mail: a TXT record at
//! `_mx2-challenge.DOMAIN` carrying the token `mx2 domain add` printed, so that a customer of
//! a service cannot claim another customer's domain. Also runs the MX audit of `mx2 check`
//! and keeps its report with the domain (its warnings never block activation).

use super::ops::{OpError, domain_name};
use super::records::DomainState;
use super::{Registry, StoredDomain};
use crate::dns::Dns;
use serde::Serialize;
use std::time::Duration;

/// The name the TXT record goes at.
pub fn challenge_name(domain: &str) -> String {
    format!("_mx2-challenge.{domain}")
}

/// How long the MX audit may take before it is left out of the result.
const AUDIT_TIMEOUT: Duration = Duration::from_secs(20);

/// What a verification found.
#[derive(Debug, Clone, Serialize)]
pub struct Verification {
    pub domain: String,
    /// Where the TXT record must be.
    pub record: String,
    /// What it must carry.
    pub expected: String,
    /// The TXT strings found there.
    pub found: Vec<String>,
    /// Why the lookup itself failed, if it did.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lookup_error: Option<String>,
    /// The state after this check.
    pub state: DomainState,
    /// Whether this check made it active.
    pub activated: bool,
    /// The MX audit's verdict: ok, warn or fail (None when it did not finish).
    pub audit_verdict: Option<String>,
    /// What to do next, in words.
    pub message: String,
}

/// The MX audit of `mx2 check` as JSON, bounded in time.
pub async fn audit(dns: &Dns, domain: &str) -> Option<serde_json::Value> {
    let report = tokio::time::timeout(
        AUDIT_TIMEOUT,
        crate::check::run(domain, dns, &crate::check::Options::default()),
    )
    .await
    .ok()?;
    serde_json::to_value(&report).ok()
}

fn verdict(audit: &Option<serde_json::Value>) -> Option<String> {
    audit.as_ref()?.get("verdict")?.as_str().map(str::to_string)
}

impl Registry {
    /// Looks for the domain's challenge in DNS; activates the domain when it is there, and
    /// keeps the MX audit's report either way.
    pub async fn verify(&self, dns: &Dns, name: &str) -> Result<Verification, OpError> {
        let name = domain_name(name)?;
        self.refresh().await?;
        let d: StoredDomain = self
            .domain(&name)
            .ok_or_else(|| OpError::NotFound(format!("no domain {name}")))?;
        let record = challenge_name(&name);
        // Asked anew: a record published a moment after a failed check counts at once.
        let (found, lookup_error) = match dns.txt_now(&record).await {
            Ok(f) => (f, None),
            Err(e) => (Vec::new(), Some(e.reason)),
        };
        let matched = found.iter().any(|t| t.trim() == d.record.challenge);
        let audit = audit(dns, &name).await;
        let audit_verdict = verdict(&audit);
        let was_active = d.record.state == DomainState::Active;
        let state = if matched || was_active {
            self.activate(&name, if matched { "dns" } else { "operator" }, audit)
                .await?;
            DomainState::Active
        } else {
            if let Some(a) = audit {
                self.record_audit(&name, a).await?;
            }
            DomainState::Pending
        };
        let message = match (matched, was_active) {
            (true, false) => format!("{name} is active: the challenge was found at {record}"),
            (true, true) | (false, true) => format!("{name} is active"),
            (false, false) if lookup_error.is_some() => {
                format!("{name} stays pending: the lookup of {record} failed; try again later")
            }
            (false, false) if found.is_empty() => format!(
                "{name} stays pending: no TXT record at {record}; publish {record} TXT \"{}\" and run `mx2 domain verify {name}` again",
                d.record.challenge
            ),
            (false, false) => format!(
                "{name} stays pending: the TXT record at {record} does not carry the challenge; it must be \"{}\"",
                d.record.challenge
            ),
        };
        Ok(Verification {
            domain: name,
            record,
            expected: d.record.challenge,
            found,
            lookup_error,
            state,
            activated: matched && !was_active,
            audit_verdict,
            message,
        })
    }
}
