//! A connection to a domain's MX hosts under its MTA-STS policy (RFC 8461 §5): `enforce`
//! connects only to hosts the policy lists, with STARTTLS and a certificate valid for the
//! host name, or fails the attempt naming the policy and the reason (the mail waits);
//! `testing` connects as usual and counts what would have failed; no policy or `none`
//! connects as usual. Every delivery's session under a policy is counted for the TLS
//! reports (probes and callouts are not). Under `tls = "auto"` a host DANE applies to
//! (its target carries a DANE policy) follows DANE instead (RFC 8461 §2): it is neither
//! filtered by the `mx:` patterns nor checked against the policy.
//!
//! May call `delivery::mta_sts` (the policy and its pure checks), the client and the
//! recorder; decides no recipient's outcome (a failed connection is the worker's to handle).

use super::Scheduler;
use super::route::Route;
use crate::delivery::client::{Client, ClientError, Timeouts};
use crate::delivery::mta_sts::{self, Lookup, Mode};
use crate::delivery::mx::Target;
use crate::delivery::policy::Policy as HostRule;
use crate::tlsrpt::report::SUCCESS;
use tracing::warn;

const STS: &str = "sts";

impl Scheduler {
    pub(super) async fn open_sts(
        &self,
        route: &Route,
        domain: &str,
        targets: &[Target],
        t: &Timeouts,
        counted: bool,
    ) -> Result<Client, ClientError> {
        let hostname = &self.settings.hostname;
        let count = async |result: &str, host: &str| {
            if counted {
                self.tls_reports.count(domain, STS, result, host).await;
            }
        };
        let auth = route.auth.as_ref();
        let policy = match self.sts.lookup(domain).await {
            Lookup::Policy(p) if p.mode != Mode::None => p,
            Lookup::Unusable { result, .. } => {
                let first = targets.first().map_or("", |t| t.name.as_str());
                count(result, first).await;
                return Client::connect(targets, hostname, t, &route.tls, auth).await;
            }
            _ => return Client::connect(targets, hostname, t, &route.tls, auth).await,
        };
        if policy.mode == Mode::Testing {
            let c = Client::connect(targets, hostname, t, &route.tls, auth).await?;
            if by_dane(targets, &c.server_name) {
                return Ok(c);
            }
            let chain = c.peer_certificates();
            let checked = mta_sts::check_session(
                &policy,
                &c.server_name,
                c.tls.is_some(),
                &chain,
                self.sts.ca_file(),
            );
            match checked {
                Ok(()) => count(SUCCESS, &c.server_name).await,
                Err((result, why)) => {
                    warn!(domain, reason = %why, "MTA-STS testing: the session fails the policy; delivering anyway");
                    count(result, &c.server_name).await;
                }
            }
            return Ok(c);
        }
        let (dane, others): (Vec<Target>, Vec<Target>) = targets
            .iter()
            .cloned()
            .partition(|t| matches!(t.policy.policy, HostRule::Dane { .. }));
        let (mut listed, refused) = mta_sts::allowed(&policy, &others);
        // DANE hosts keep their place in preference order among the listed ones.
        listed.extend(dane);
        listed.sort_by_key(|t| {
            targets
                .iter()
                .position(|o| o.name == t.name && o.addr == t.addr)
        });
        for host in &refused {
            count("validation-failure", host).await;
        }
        if listed.is_empty() {
            return Err(ClientError::Policy {
                host: refused.join(", "),
                reason: format!("MTA-STS enforce: {} not in policy", refused.join(", ")),
            });
        }
        match Client::connect(&listed, hostname, t, &self.sts_tls, auth).await {
            Ok(c) => {
                count(SUCCESS, &c.server_name).await;
                Ok(c)
            }
            Err(e) => {
                let result = match &e {
                    ClientError::TlsRequired { .. } => Some("starttls-not-supported"),
                    ClientError::Tls { reason, .. } => Some(mta_sts::result_type(reason)),
                    _ => None,
                };
                let Some(result) = result else { return Err(e) };
                let host = listed.last().map_or("", |t| t.name.as_str());
                count(result, host).await;
                Err(ClientError::Policy {
                    host: host.to_string(),
                    reason: format!("MTA-STS enforce: {e}"),
                })
            }
        }
    }
}

/// Whether the session's host follows DANE (its target carries a DANE policy).
fn by_dane(targets: &[Target], host: &str) -> bool {
    targets
        .iter()
        .any(|t| t.name == host && matches!(t.policy.policy, HostRule::Dane { .. }))
}
