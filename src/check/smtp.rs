//! `mx2 check --smtp`: talks to each MX host — banner, EHLO, STARTTLS and its certificate (valid
//! for the MX name, expiry), and for backup hosts whether they accept postmaster@DOMAIN and
//! refuse to relay. No message is ever sent (no DATA).

use super::report::{Level, Report};
use crate::config::TlsPolicy;
use crate::delivery::client::{Client, Timeouts};
use crate::delivery::mx::Target;
use crate::tls::{ClientTls, verify_chain};
use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// The timeouts of a check's SMTP session (generous: a check waits for slow hosts).
pub(super) fn timeouts() -> Timeouts {
    Timeouts {
        connect: Duration::from_secs(10),
        greeting: Duration::from_secs(30),
        command: Duration::from_secs(30),
        data: Duration::from_secs(30),
    }
}

/// Runs the live checks against every MX address in the report.
pub async fn run(r: &mut Report, port: u16, ca_file: Option<&Path>, helo: &str) {
    let t = timeouts();
    let Ok(tls) = ClientTls::new(&TlsPolicy::default()) else {
        return;
    };
    let best = r.mx.iter().map(|h| h.preference).min().unwrap_or(0);
    let domain = r.domain.clone();
    let hosts: Vec<(u16, String, Vec<std::net::IpAddr>)> =
        r.mx.iter()
            .map(|h| {
                (
                    h.preference,
                    h.name.clone(),
                    h.addresses.iter().map(|a| a.ip).collect(),
                )
            })
            .collect();
    for (pref, name, ips) in hosts {
        for ip in ips {
            let target = Target::configured(&name, SocketAddr::new(ip, port));
            let id = format!("smtp.{name}.{ip}");
            let start = Instant::now();
            let mut c =
                match Client::connect(std::slice::from_ref(&target), helo, &t, &tls, None).await {
                    Ok(c) => c,
                    Err(e) => {
                        r.add(
                            id,
                            Level::Fail,
                            format!("{target}: no SMTP session: {e}"),
                            Some("make sure port 25 is open and the server answers"),
                        );
                        continue;
                    }
                };
            r.add(
                format!("{id}.session"),
                Level::Ok,
                format!(
                    "{target}: banner and EHLO in {} ms",
                    start.elapsed().as_millis()
                ),
                None,
            );
            match &c.tls {
                None => r.add(
                    format!("{id}.starttls"),
                    Level::Warn,
                    format!("{target}: no STARTTLS: mail to this host travels in clear"),
                    Some("offer STARTTLS with a certificate for the MX name"),
                ),
                Some(info) => {
                    let chain = c.peer_certificates();
                    let expiry = chain
                        .first()
                        .and_then(|der| x509_parser::parse_x509_certificate(der).ok())
                        .map(|(_, cert)| cert.validity().not_after.timestamp());
                    let until = expiry
                        .map(|ts| {
                            crate::date::rfc5322_date(
                                UNIX_EPOCH + Duration::from_secs(ts.max(0) as u64),
                            )
                        })
                        .unwrap_or_else(|| "unknown".into());
                    match verify_chain(&chain, &name, ca_file) {
                        Ok(()) => {
                            let now = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs() as i64).unwrap_or(0);
                            let soon = expiry.is_some_and(|ts| ts - now < 14 * 86_400);
                            let level = if soon { Level::Warn } else { Level::Ok };
                            r.add(format!("{id}.certificate"), level, format!("{target}: STARTTLS ({info}), certificate valid for {name} until {until}"), soon.then_some("renew the certificate: it expires within 14 days"));
                        }
                        Err(e) => r.add(
                            format!("{id}.certificate"),
                            Level::Fail,
                            format!("{target}: STARTTLS certificate not valid for {name} (expires {until}): {e}"),
                            Some("install a certificate from a public CA that names the MX host (e.g. Let's Encrypt)"),
                        ),
                    }
                }
            }
            if pref > best {
                let ask = async |c: &mut Client, line: String| -> Option<u16> {
                    c.send(line.as_bytes(), "check").await.ok()?;
                    c.read_reply(Duration::from_secs(30), "a reply")
                        .await
                        .ok()
                        .map(|r| r.code)
                };
                let mail = ask(&mut c, "MAIL FROM:<>\r\n".into()).await;
                let postmaster = ask(&mut c, format!("RCPT TO:<postmaster@{domain}>\r\n")).await;
                let _ = ask(&mut c, "RSET\r\n".into()).await;
                let _ = ask(&mut c, "MAIL FROM:<>\r\n".into()).await;
                let relay = ask(&mut c, "RCPT TO:<mx2-check@relay-test.invalid>\r\n".into()).await;
                let _ = ask(&mut c, "RSET\r\n".into()).await;
                match (mail, postmaster) {
                    (Some(m), Some(p)) if m < 400 && p < 300 => r.add(format!("{id}.postmaster"), Level::Ok, format!("{target}: accepts mail for postmaster@{domain}"), None),
                    (_, p) => r.add(
                        format!("{id}.postmaster"),
                        Level::Fail,
                        format!("{target}: refuses RCPT TO:<postmaster@{domain}> ({}): as a backup it would bounce the domain's mail", p.map_or("no reply".into(), |c| c.to_string())),
                        Some(&format!("configure the backup to accept mail for {domain}")),
                    ),
                }
                match relay {
                    Some(code) if code >= 500 => r.add(format!("{id}.relay"), Level::Ok, format!("{target}: refuses to relay to a foreign domain ({code})"), None),
                    other => r.add(
                        format!("{id}.relay"),
                        Level::Fail,
                        format!("{target}: does not refuse relaying to a foreign domain ({}): an open relay", other.map_or("no reply".into(), |c| c.to_string())),
                        Some("restrict the backup to the domains it backs up"),
                    ),
                }
            }
            c.quit().await;
        }
    }
}
