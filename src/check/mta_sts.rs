//! The MTA-STS and TLS-RPT checks: when a domain publishes an MTA-STS policy (RFC 8461),
//! every MX host — the backup included — must match one of its `mx:` lines, or enforcing
//! senders refuse to deliver there; a TLS-RPT record (RFC 8460) tells the domain when
//! senders cannot deliver securely. The policy is fetched and parsed as delivery does
//! (`delivery::mta_sts`).

use super::report::{Level, Report};
use crate::delivery::mta_sts;
use crate::dns::Dns;
use mail_auth::common::parse::TxtRecordParser;
use mail_auth::mta_sts::{ReportUri, TlsRpt};
use std::path::Path;

pub async fn run(r: &mut Report, dns: &Dns, ca_file: Option<&Path>) {
    let domain = r.domain.clone();
    let id = match mta_sts::record_id(dns, &domain).await {
        Ok(Some(id)) => id,
        Ok(None) | Err(_) => {
            r.add(
                "mta-sts",
                Level::Info,
                "no MTA-STS policy published (_mta-sts TXT record)",
                None,
            );
            return;
        }
    };
    let url = mta_sts::url(&domain);
    let policy = match mta_sts::fetch(dns, &domain, ca_file).await {
        Ok((_, p)) => p,
        Err((_, e)) => {
            r.add(
                "mta-sts",
                Level::Fail,
                format!("MTA-STS is announced (id {id}) but the policy cannot be used: {e}"),
                Some(&format!(
                    "serve the policy at {url} over HTTPS with a valid certificate, as text/plain (version, mode, mx and max_age lines)"
                )),
            );
            return;
        }
    };
    let mode = policy.mode.name();
    let enforce = policy.mode == mta_sts::Mode::Enforce;
    let hosts: Vec<String> = r.mx.iter().map(|h| h.name.clone()).collect();
    let mut all = true;
    for host in hosts {
        if !policy.allows(&host) {
            all = false;
            r.add(
                format!("mta-sts.{host}"),
                if enforce { Level::Fail } else { Level::Warn },
                format!("{host} is not in the MTA-STS policy's mx: lines (mode {mode}): senders that enforce MTA-STS will not deliver to it"),
                Some(&format!("add `mx: {host}` to the policy and change the id in the _mta-sts TXT record")),
            );
        }
    }
    if all {
        r.add(
            "mta-sts",
            Level::Ok,
            format!("every MX host matches the MTA-STS policy (mode {mode})"),
            None,
        );
    }
}

/// The `_smtp._tls` record: where senders send their daily TLS reports.
pub async fn tls_rpt(r: &mut Report, dns: &Dns) {
    let name = format!("_smtp._tls.{}", r.domain);
    let fix = format!(
        "publish `{name} TXT \"v=TLSRPTv1; rua=mailto:tlsrpt@{}\"` to receive senders' daily TLS reports (RFC 8460)",
        r.domain
    );
    let txt = dns.txt(&name).await.unwrap_or_default();
    let Some(record) = txt.iter().find(|t| t.starts_with("v=TLSRPTv1")) else {
        r.add(
            "tls-rpt",
            Level::Info,
            "no TLS-RPT record: senders cannot tell the domain when they fail to deliver securely",
            Some(&fix),
        );
        return;
    };
    match TlsRpt::parse(record.as_bytes()) {
        Ok(rpt) => {
            let to: Vec<&str> = rpt
                .rua
                .iter()
                .map(|u| match u {
                    ReportUri::Mail(m) | ReportUri::Http(m) => m.as_str(),
                })
                .collect();
            r.add(
                "tls-rpt",
                Level::Ok,
                format!("TLS reports go to {}", to.join(", ")),
                None,
            );
        }
        Err(_) => r.add(
            "tls-rpt",
            Level::Warn,
            format!("the TLS-RPT record `{record}` cannot be read (it needs a rua= with mailto: or https:)"),
            Some(&fix),
        ),
    }
}
