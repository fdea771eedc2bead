//! One domain's TLS report for one day (RFC 8460 §4), built from its counters with
//! mail-auth's report types, and its two forms: the gzipped JSON (for https: reporting
//! addresses) and the `multipart/report; report-type=tlsrpt` mail (for mailto:). Pure.

use crate::config::TlsReportsConfig;
use crate::queue::TlsRptCount;
use mail_auth::flate2::{Compression, write::GzEncoder};
use mail_auth::report::tlsrpt::{
    DateRange, FailureDetails, Policy, PolicyDetails, PolicyType, ResultType, Summary, TlsReport,
};
use std::io::Write;

/// The result counted for a session that met its policy.
pub const SUCCESS: &str = "success";

/// The report of `domain` for `day` (days since the epoch) from that day's counters of the
/// domain; `policy` is the MTA-STS policy text in force (for `policy-string`).
pub fn build(
    domain: &str,
    day: i64,
    counts: &[TlsRptCount],
    policy: Option<&str>,
    cfg: &TlsReportsConfig,
    hostname: &str,
) -> TlsReport {
    let start = day * 86_400;
    let mut types: Vec<&str> = counts.iter().map(|c| c.policy_type.as_str()).collect();
    types.sort_unstable();
    types.dedup();
    let policies = types
        .into_iter()
        .map(|t| {
            let of_type = counts.iter().filter(|c| c.policy_type == t);
            let mut details = PolicyDetails::new(policy_type(t), domain);
            if let (PolicyType::Sts, Some(text)) = (details.policy_type, policy) {
                details.policy_string = text
                    .lines()
                    .map(|l| l.trim_end_matches('\r').to_string())
                    .filter(|l| !l.is_empty())
                    .collect();
                details.mx_host = details
                    .policy_string
                    .iter()
                    .filter_map(|l| l.strip_prefix("mx:"))
                    .map(|m| m.trim().to_string())
                    .collect();
            }
            let (mut success, mut failure) = (0u32, 0u32);
            let mut failure_details = Vec::new();
            for c in of_type {
                let n = u32::try_from(c.count).unwrap_or(u32::MAX);
                if c.result == SUCCESS {
                    success = success.saturating_add(n);
                } else {
                    failure = failure.saturating_add(n);
                    let mut d = FailureDetails::new(result_type(&c.result));
                    if !c.mx_host.is_empty() {
                        d = d.with_receiving_mx_hostname(c.mx_host.clone());
                    }
                    d.failed_session_count = n;
                    failure_details.push(d);
                }
            }
            Policy {
                policy: details,
                summary: Summary {
                    total_success: success,
                    total_failure: failure,
                },
                failure_details,
            }
        })
        .collect();
    TlsReport {
        organization_name: Some(cfg.organization.clone()),
        date_range: DateRange::from_timestamps(start, start + 86_399),
        contact_info: Some(cfg.contact.clone()),
        report_id: format!("{day}.{domain}@{hostname}"),
        policies,
    }
}

fn policy_type(t: &str) -> PolicyType {
    match t {
        "sts" => PolicyType::Sts,
        "tlsa" => PolicyType::Tlsa,
        _ => PolicyType::NoPolicyFound,
    }
}

/// An RFC 8460 result type by its name (unknown names are `Other`).
fn result_type(name: &str) -> ResultType {
    serde_json::from_value(serde_json::Value::String(name.to_string())).unwrap_or_default()
}

/// The JSON report, gzipped (RFC 8460 §5.3: `application/tlsrpt+gzip`).
pub fn gzip(report: &TlsReport) -> std::io::Result<Vec<u8>> {
    let mut e = GzEncoder::new(Vec::new(), Compression::default());
    e.write_all(report.to_json().as_bytes())?;
    e.finish()
}

/// The report as a mail to `to` (RFC 8460 §5.3), from `cfg.from`, submitted by `hostname`.
pub fn mail(
    report: &TlsReport,
    domain: &str,
    to: &[String],
    cfg: &TlsReportsConfig,
    hostname: &str,
) -> std::io::Result<Vec<u8>> {
    let mut out = Vec::new();
    report.write_rfc5322(
        domain,
        hostname,
        cfg.from.as_str(),
        to.iter().map(String::as_str),
        &mut out,
    )?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn count(result: &str, mx: &str, n: i64) -> TlsRptCount {
        TlsRptCount {
            day: 20_000,
            domain: "a.test".into(),
            policy_type: "sts".into(),
            result: result.into(),
            mx_host: mx.into(),
            count: n,
        }
    }

    #[test]
    fn a_day_with_one_failure() {
        let cfg = TlsReportsConfig {
            enabled: true,
            organization: "Backup Org".into(),
            contact: "ops@backup.test".into(),
            from: "postmaster@mx2.backup.test".into(),
        };
        let r = build(
            "a.test",
            20_000,
            &[
                count(SUCCESS, "", 3),
                count("certificate-host-mismatch", "mx.a.test", 1),
            ],
            Some("version: STSv1\r\nmode: testing\r\nmx: mx.a.test\r\nmax_age: 86400\r\n"),
            &cfg,
            "mx2.backup.test",
        );
        let json: serde_json::Value = serde_json::from_str(&r.to_json()).unwrap();
        assert_eq!(json["organization-name"], "Backup Org");
        assert_eq!(json["date-range"]["start-datetime"], "2024-10-04T00:00:00Z");
        let p = &json["policies"][0];
        assert_eq!(p["policy"]["policy-type"], "sts");
        assert_eq!(p["policy"]["policy-domain"], "a.test");
        assert_eq!(p["policy"]["mx-host"][0], "mx.a.test");
        assert_eq!(p["policy"]["policy-string"][1], "mode: testing");
        assert_eq!(p["summary"]["total-successful-session-count"], 3);
        assert_eq!(p["summary"]["total-failure-session-count"], 1);
        let f = &p["failure-details"][0];
        assert_eq!(f["result-type"], "certificate-host-mismatch");
        assert_eq!(f["receiving-mx-hostname"], "mx.a.test");
        assert_eq!(f["failed-session-count"], 1);
        let mail = mail(
            &r,
            "a.test",
            &["tlsrpt@a.test".into()],
            &cfg,
            "mx2.backup.test",
        )
        .unwrap();
        let text = String::from_utf8_lossy(&mail);
        assert!(text.contains("report-type=\"tlsrpt\"") || text.contains("report-type=tlsrpt"));
        assert!(text.contains("TLS-Report-Domain: a.test"), "{text}");
        assert!(!gzip(&r).unwrap().is_empty());
    }
}
