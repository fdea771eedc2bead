//! `mx2 check`: DANE for each MX host (RFC 7672) — its TLSA records at `_PORT._tcp.HOST`,
//! whether DNSSEC proves them and the MX and address answers they depend on, and with
//! `--smtp` whether the certificate the host presents matches them (through the same client
//! and policy delivery uses). Each finding comes with its fix.

use super::report::{Level, Report};
use crate::config::TlsPolicy;
use crate::delivery::client::{Client, ClientError};
use crate::delivery::dane;
use crate::delivery::mx::Target;
use crate::delivery::policy::{HostPolicy, Policy};
use crate::dns::Dns;
use crate::tls::ClientTls;
use std::net::SocketAddr;

/// The DANE checks for every MX host in the report; `smtp`: also connect and match.
pub async fn run(r: &mut Report, dns: &Dns, port: u16, smtp: bool, helo: &str) {
    let domain = r.domain.clone();
    let mx_secure = dns
        .mx_proven(&domain)
        .await
        .map(|p| p.secure)
        .unwrap_or(false);
    let hosts: Vec<(String, Vec<std::net::IpAddr>)> =
        r.mx.iter()
            .map(|h| (h.name.clone(), h.addresses.iter().map(|a| a.ip).collect()))
            .collect();
    for (host, ips) in hosts {
        if host.parse::<std::net::IpAddr>().is_ok() {
            continue;
        }
        let owner = dane::owner(&host, port);
        let id = format!("dane.{host}");
        let answer = match dns.tlsa(&owner).await {
            Ok(a) => a,
            Err(e) => {
                r.add(
                    id,
                    Level::Fail,
                    format!("{host}: the TLSA lookup at {owner} failed ({e}): senders that use DANE will not deliver to this host"),
                    Some(&format!("fix the DNSSEC signatures of {host}'s zone (or its name servers) so {owner} validates")),
                );
                continue;
            }
        };
        if answer.answer.is_empty() {
            r.add(
                id,
                Level::Info,
                format!("{host}: no TLSA records at {owner} (DANE not in use)"),
                None,
            );
            continue;
        }
        let shown: Vec<String> = answer.answer.iter().map(ToString::to_string).collect();
        if !answer.secure {
            r.add(
                id,
                Level::Warn,
                format!("{host}: TLSA records at {owner} ({}) are not DNSSEC-signed: senders ignore them", shown.join("; ")),
                Some(&format!("sign {host}'s zone with DNSSEC (a DS record at its parent), or remove the TLSA records")),
            );
            continue;
        }
        let addresses_secure = dns
            .addresses_proven(&host)
            .await
            .map(|p| p.secure)
            .unwrap_or(false);
        if !mx_secure || !addresses_secure {
            let (what, zone) = if mx_secure {
                (format!("the address records of {host} are"), host.clone())
            } else {
                (format!("the MX answer for {domain} is"), domain.clone())
            };
            r.add(
                id,
                Level::Warn,
                format!("{host}: TLSA records at {owner} are signed, but {what} not DNSSEC-secure, so senders do not use DANE (RFC 7672 §2.2)"),
                Some(&format!("sign {zone}'s zone with DNSSEC")),
            );
            continue;
        }
        let records = dane::usable(&answer.answer);
        if records.is_empty() {
            r.add(
                id,
                Level::Warn,
                format!("{host}: no usable TLSA record at {owner} ({}): senders treat the host as not using DANE", shown.join("; ")),
                Some("publish DANE-EE records, `3 1 1` and the SHA-256 of the certificate's public key (usages 0 and 1 are not for SMTP, RFC 7672 §3.1.3)"),
            );
            continue;
        }
        r.add(
            id.clone(),
            Level::Ok,
            format!(
                "{host}: {} usable DNSSEC-secure TLSA record(s) at {owner} ({})",
                records.len(),
                shown.join("; ")
            ),
            None,
        );
        if smtp {
            let policy = HostPolicy {
                policy: Policy::Dane {
                    records,
                    names: vec![host.clone(), domain.clone()],
                },
                reason: "DANE".into(),
            };
            for ip in &ips {
                matches_live(r, &id, &host, SocketAddr::new(*ip, port), &policy, helo).await;
            }
        }
    }
}

/// Connects to one address of a DANE host as delivery would and reports whether its
/// certificate matches the TLSA records.
async fn matches_live(
    r: &mut Report,
    id: &str,
    host: &str,
    addr: SocketAddr,
    policy: &HostPolicy,
    helo: &str,
) {
    let t = super::smtp::timeouts();
    let Ok(tls) = ClientTls::new(&TlsPolicy::default()) else {
        return;
    };
    let target = Target {
        policy: policy.clone(),
        ..Target::configured(host, addr)
    };
    let id = format!("{id}.{}", addr.ip());
    match Client::connect(std::slice::from_ref(&target), helo, &t, &tls, None).await {
        Ok(c) => {
            r.add(
                id,
                Level::Ok,
                format!("{target}: the certificate presented matches a TLSA record"),
                None,
            );
            c.quit().await;
        }
        Err(ClientError::Policy { reason, .. }) => r.add(
            id,
            Level::Fail,
            format!("{reason}: senders that use DANE hold mail for this host"),
            Some("publish TLSA records for the key the host presents (`3 1 1` and the SHA-256 of its public key; add the new record before changing a certificate), or install the certificate the records name"),
        ),
        Err(e) => r.add(
            id,
            Level::Warn,
            format!("{target}: cannot check the certificate against the TLSA records: {e}"),
            Some("make sure port 25 is open and the server answers"),
        ),
    }
}
