//! The MTA-STS check (RFC 8461): when a domain publishes a policy, every MX host — the backup
//! included — must match one of its `mx:` lines, or enforcing senders refuse to deliver there.

use super::report::{Level, Report};
use crate::dns::Dns;
use std::path::Path;
use std::time::Duration;

/// Does `host` match an `mx:` pattern (`mail.example.com` or `*.example.com`, one label)?
pub fn matches(pattern: &str, host: &str) -> bool {
    let (p, h) = (
        pattern.trim().trim_end_matches('.').to_ascii_lowercase(),
        host.trim_end_matches('.').to_ascii_lowercase(),
    );
    match p.strip_prefix("*.") {
        Some(suffix) => h.split_once('.').is_some_and(|(_, rest)| rest == suffix),
        None => p == h,
    }
}

/// The `mode` and `mx` lines of a policy file.
pub fn parse(policy: &str) -> (Option<String>, Vec<String>) {
    let mut mode = None;
    let mut mx = Vec::new();
    for line in policy.lines() {
        if let Some((k, v)) = line.split_once(':') {
            match k.trim() {
                "mode" => mode = Some(v.trim().to_string()),
                "mx" => mx.push(v.trim().to_string()),
                _ => {}
            }
        }
    }
    (mode, mx)
}

pub async fn run(r: &mut Report, dns: &Dns, ca_file: Option<&Path>) {
    let domain = r.domain.clone();
    let txt = dns
        .txt(&format!("_mta-sts.{domain}"))
        .await
        .unwrap_or_default();
    let Some(record) = txt.iter().find(|t| t.starts_with("v=STSv1")) else {
        r.add(
            "mta-sts",
            Level::Info,
            "no MTA-STS policy published (_mta-sts TXT record)",
            None,
        );
        return;
    };
    let url = format!("https://mta-sts.{domain}/.well-known/mta-sts.txt");
    let body = match crate::http::get(&url, None, dns, Duration::from_secs(30), ca_file).await {
        Ok(b) => String::from_utf8_lossy(&b).into_owned(),
        Err(e) => {
            r.add(
                "mta-sts",
                Level::Fail,
                format!("MTA-STS is announced ({record}) but the policy cannot be fetched: {e}"),
                Some(&format!(
                    "serve the policy at {url} over HTTPS with a valid certificate"
                )),
            );
            return;
        }
    };
    let (mode, patterns) = parse(&body);
    let mode = mode.unwrap_or_else(|| "none".into());
    let enforce = mode == "enforce";
    let hosts: Vec<String> = r.mx.iter().map(|h| h.name.clone()).collect();
    let mut all = true;
    for host in hosts {
        if !patterns.iter().any(|p| matches(p, &host)) {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patterns_and_policy() {
        assert!(matches("mail.example.com", "MAIL.example.com."));
        assert!(matches("*.example.com", "mx2.example.com"));
        assert!(!matches("*.example.com", "a.b.example.com"));
        assert!(!matches("*.example.com", "example.com"));
        let (mode, mx) = parse(
            "version: STSv1\r\nmode: enforce\r\nmx: mail.example.com\r\nmx: *.backup.example\r\nmax_age: 86400\r\n",
        );
        assert_eq!(mode.as_deref(), Some("enforce"));
        assert_eq!(mx, vec!["mail.example.com", "*.backup.example"]);
    }
}
