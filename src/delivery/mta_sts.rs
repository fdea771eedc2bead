//! MTA-STS (RFC 8461): a domain's policy for the MX hosts mail to it may go to. Owns the
//! policy file's strict parsing (§3.2), `mx:` pattern matching (§4.1), the `_mta-sts` TXT
//! record, the HTTPS fetch (64 KiB, a time limit, `text/plain`, no redirects, a certificate
//! valid for `mta-sts.DOMAIN`), the cache decision (pure: use the stored policy, fetch, or
//! none) and [`Policies`], which runs that decision against the DNS, the web and the store's
//! cache. What a policy means for one connection ([`allowed`], [`check_session`]) is pure;
//! the scheduler connects. `mx2 check` uses the same fetch and matching.

use crate::dns::Dns;
use crate::queue::{Store, StoredStsPolicy, now_ms};
use mail_auth::common::parse::TxtRecordParser;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use super::mx::Target;

/// The largest policy file taken (RFC 8461 §3.3 suggests 64 KiB).
pub const MAX_POLICY: usize = 64 * 1024;
/// The longest `max_age` a policy may give (RFC 8461 §3.2: one year).
pub const MAX_AGE_LIMIT: u64 = 31_557_600;
/// The whole policy fetch, connect to last byte.
pub const FETCH_LIMIT: Duration = Duration::from_secs(30);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Enforce,
    Testing,
    None,
}

impl Mode {
    pub fn name(self) -> &'static str {
        match self {
            Mode::Enforce => "enforce",
            Mode::Testing => "testing",
            Mode::None => "none",
        }
    }
}

/// A parsed policy file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Policy {
    pub mode: Mode,
    /// The `mx:` patterns (`mail.example.com`, `*.example.com`).
    pub mx: Vec<String>,
    /// Seconds the policy may be cached.
    pub max_age: u64,
}

impl Policy {
    /// Whether MX host `host` matches one of the policy's `mx:` patterns.
    pub fn allows(&self, host: &str) -> bool {
        self.mx.iter().any(|p| matches(p, host))
    }
}

/// Does `host` match an `mx:` pattern (`mail.example.com`, or `*.example.com` standing for
/// exactly one more label)? Case and a trailing dot do not matter.
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

/// Parses a policy file strictly (RFC 8461 §3.2): `key: value` lines ending in CRLF or LF;
/// `version: STSv1` first; `mode` one of enforce, testing, none; `max_age` a number of at
/// most 10 digits, capped at one year; at least one `mx` unless the mode is none. Unknown
/// keys are ignored; of a repeated key other than `mx`, the first counts.
pub fn parse(text: &str) -> Result<Policy, String> {
    if text.len() > MAX_POLICY {
        return Err(format!("the policy is larger than {MAX_POLICY} bytes"));
    }
    let (mut version, mut mode, mut max_age) = (None, None, None);
    let mut mx = Vec::new();
    let mut first = true;
    for (i, line) in text.split('\n').enumerate() {
        let line = line.strip_suffix('\r').unwrap_or(line);
        if line.is_empty() {
            continue;
        }
        let Some((key, value)) = line.split_once(':') else {
            return Err(format!("line {}: `{line}` is not `key: value`", i + 1));
        };
        let (key, value) = (key, value.trim_matches([' ', '\t']));
        if key.is_empty() || !key.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
            return Err(format!("line {}: `{key}` is not a field name", i + 1));
        }
        if std::mem::take(&mut first) && key != "version" {
            return Err("the policy does not start with `version: STSv1`".into());
        }
        match key {
            "version" => {
                version.get_or_insert(value.to_string());
            }
            "mode" => {
                mode.get_or_insert(value.to_string());
            }
            "max_age" => {
                max_age.get_or_insert(value.to_string());
            }
            "mx" => mx.push(value.to_string()),
            _ => {}
        }
    }
    if version.as_deref() != Some("STSv1") {
        return Err("the policy's version is not STSv1".into());
    }
    let mode = match mode.as_deref() {
        Some("enforce") => Mode::Enforce,
        Some("testing") => Mode::Testing,
        Some("none") => Mode::None,
        Some(other) => return Err(format!("unknown mode `{other}`")),
        None => return Err("the policy has no mode".into()),
    };
    let max_age = match max_age.as_deref() {
        Some(v) if !v.is_empty() && v.len() <= 10 && v.bytes().all(|b| b.is_ascii_digit()) => v
            .parse::<u64>()
            .map_err(|e| format!("max_age `{v}`: {e}"))?
            .min(MAX_AGE_LIMIT),
        Some(v) => return Err(format!("max_age `{v}` is not a number of seconds")),
        None => return Err("the policy has no max_age".into()),
    };
    if let Some(bad) = mx.iter().find(|p| !valid_pattern(p)) {
        return Err(format!("mx `{bad}` is not a host name or *.domain pattern"));
    }
    if mx.is_empty() && mode != Mode::None {
        return Err("the policy lists no mx".into());
    }
    Ok(Policy { mode, mx, max_age })
}

fn valid_pattern(p: &str) -> bool {
    let name = p.strip_prefix("*.").unwrap_or(p);
    !name.is_empty()
        && name.split('.').all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
        })
}

/// The `id` of the domain's `_mta-sts` TXT record: None when it publishes none (or more than
/// one, RFC 8461 §3.1), Err when the lookup failed.
pub async fn record_id(dns: &Dns, domain: &str) -> Result<Option<String>, String> {
    let txt = dns
        .txt(&format!("_mta-sts.{domain}"))
        .await
        .map_err(|e| e.to_string())?;
    let records: Vec<&String> = txt.iter().filter(|t| t.starts_with("v=STSv1")).collect();
    match records[..] {
        [one] => Ok(mail_auth::mta_sts::MtaSts::parse(one.as_bytes())
            .ok()
            .map(|r| r.id)),
        _ => Ok(None),
    }
}

/// The policy's address.
pub fn url(domain: &str) -> String {
    format!("https://mta-sts.{domain}/.well-known/mta-sts.txt")
}

/// Fetches and parses the domain's policy: its text and what it says. Err is the RFC 8460
/// result type (`sts-policy-fetch-error`, `sts-policy-invalid`) and why.
pub async fn fetch(
    dns: &Dns,
    domain: &str,
    ca_file: Option<&Path>,
) -> Result<(String, Policy), (&'static str, String)> {
    let url = url(domain);
    let body = crate::http::send(crate::http::Request {
        dns: Some(dns),
        ca_file,
        max_body: MAX_POLICY,
        content_type: Some("text/plain"),
        ..crate::http::Request::new("GET", &url, FETCH_LIMIT)
    })
    .await
    .map_err(|e| ("sts-policy-fetch-error", e.to_string()))?;
    let invalid = "sts-policy-invalid";
    let text = String::from_utf8(body)
        .map_err(|_| (invalid, format!("{url}: the policy is not UTF-8")))?;
    let policy = parse(&text).map_err(|e| (invalid, format!("{url}: {e}")))?;
    Ok((text, policy))
}

/// What to do for a domain, given its TXT record's id and the stored policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// The stored policy is current.
    UseCached,
    /// Fetch the policy (the stored one, while unexpired, is the fallback).
    Fetch,
    /// The domain has no policy.
    NoPolicy,
}

/// RFC 8461 §5.1: a stored, unexpired policy serves while the TXT id is unchanged (or the
/// record is gone: a removed record does not end a policy, only its expiry does), and is
/// fetched again when the id changes or in the last quarter of its life; without one, a
/// record means a fetch.
pub fn step(record: Option<&str>, cached: Option<&StoredStsPolicy>, now_ms: i64) -> Step {
    match (record, cached.filter(|c| c.expires_ms > now_ms)) {
        (None, None) => Step::NoPolicy,
        (Some(_), None) => Step::Fetch,
        (Some(id), Some(c)) if id != c.id => Step::Fetch,
        (_, Some(c)) if (c.expires_ms - now_ms) * 4 < c.expires_ms - c.fetched_ms => Step::Fetch,
        (_, Some(_)) => Step::UseCached,
    }
}

/// The policy in force for a domain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Lookup {
    /// No policy: deliver as without MTA-STS.
    None,
    /// The policy could not be fetched and none is cached (RFC 8460 `sts-policy-fetch-error`
    /// or `sts-policy-invalid`): deliver as without MTA-STS, and report it.
    Unusable {
        result: &'static str,
        reason: String,
    },
    Policy(Policy),
}

/// The domains' policies: looked up in DNS, fetched over HTTPS, cached in the store for
/// their `max_age` (shared by a cluster's nodes, kept across restarts).
pub struct Policies {
    dns: Arc<Dns>,
    store: Arc<dyn Store>,
    ca_file: Option<PathBuf>,
}

impl Policies {
    pub fn new(dns: Arc<Dns>, store: Arc<dyn Store>, ca_file: Option<PathBuf>) -> Self {
        Policies {
            dns,
            store,
            ca_file,
        }
    }

    /// Extra trusted CAs (policy servers and, under a policy, MX hosts).
    pub fn ca_file(&self) -> Option<&Path> {
        self.ca_file.as_deref()
    }

    /// The policy in force for `domain` now.
    pub async fn lookup(&self, domain: &str) -> Lookup {
        // A failed TXT lookup is treated as no record: the cached policy, if any, serves.
        let record = match record_id(&self.dns, domain).await {
            Ok(r) => r,
            Err(e) => {
                tracing::debug!(domain, error = %e, "MTA-STS record lookup failed");
                None
            }
        };
        let cached = match self.store.sts_policy(domain).await {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!(domain, error = %e, "cannot read the cached MTA-STS policy");
                None
            }
        };
        let now = now_ms();
        let stored = || {
            cached
                .as_ref()
                .filter(|c| c.expires_ms > now)
                .and_then(|c| parse(&c.policy).ok())
        };
        match step(record.as_deref(), cached.as_ref(), now) {
            Step::NoPolicy => Lookup::None,
            Step::UseCached => stored().map_or(Lookup::None, Lookup::Policy),
            Step::Fetch => match fetch(&self.dns, domain, self.ca_file.as_deref()).await {
                Ok((text, policy)) => {
                    let keep = StoredStsPolicy {
                        domain: domain.to_string(),
                        id: record.unwrap_or_default(),
                        policy: text,
                        fetched_ms: now,
                        expires_ms: now.saturating_add(policy.max_age as i64 * 1000),
                    };
                    if let Err(e) = self.store.sts_put(keep).await {
                        tracing::warn!(domain, error = %e, "cannot cache the MTA-STS policy");
                    }
                    Lookup::Policy(policy)
                }
                Err((result, reason)) => match stored() {
                    Some(p) => {
                        tracing::info!(
                            domain,
                            reason,
                            "MTA-STS policy fetch failed; using the cached policy"
                        );
                        Lookup::Policy(p)
                    }
                    None => {
                        tracing::warn!(
                            domain,
                            reason,
                            "MTA-STS policy announced but not usable; delivering as without one"
                        );
                        Lookup::Unusable { result, reason }
                    }
                },
            },
        }
    }
}

/// Splits the targets into those whose MX name the policy allows and the names it refuses.
pub fn allowed(policy: &Policy, targets: &[Target]) -> (Vec<Target>, Vec<String>) {
    let (ok, refused): (Vec<Target>, Vec<Target>) = targets
        .iter()
        .cloned()
        .partition(|t| policy.allows(&t.name));
    let mut names: Vec<String> = refused.into_iter().map(|t| t.name).collect();
    names.dedup();
    (ok, names)
}

/// The RFC 8460 result type of a TLS failure, from the handshake's or the verifier's words.
pub fn result_type(reason: &str) -> &'static str {
    let r = reason.to_ascii_lowercase();
    if r.contains("expired") {
        "certificate-expired"
    } else if r.contains("notvalidforname") || r.contains("not valid for") {
        "certificate-host-mismatch"
    } else if r.contains("unknownissuer") || r.contains("unknown issuer") {
        "certificate-not-trusted"
    } else {
        "validation-failure"
    }
}

/// Whether a session set up without enforcing (`testing`) met the policy: the MX host is
/// listed, TLS is up, and the certificate is valid for the host name. Err is the RFC 8460
/// result type and why.
pub fn check_session(
    policy: &Policy,
    host: &str,
    tls: bool,
    chain: &[Vec<u8>],
    ca_file: Option<&Path>,
) -> Result<(), (&'static str, String)> {
    if !policy.allows(host) {
        return Err(("validation-failure", format!("{host} not in policy")));
    }
    if !tls {
        return Err((
            "starttls-not-supported",
            format!("{host} did not offer STARTTLS"),
        ));
    }
    crate::tls::verify_chain(chain, host, ca_file)
        .map_err(|e| (result_type(&e), format!("{host}: certificate: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patterns() {
        assert!(matches("mail.example.com", "MAIL.example.com."));
        assert!(matches("*.example.com", "mx2.example.com"));
        assert!(!matches("*.example.com", "a.b.example.com"));
        assert!(!matches("*.example.com", "example.com"));
    }

    #[test]
    fn strict_parsing() {
        let p = parse(
            "version: STSv1\r\nmode: enforce\r\nmx: mail.example.com\r\nmx: *.backup.example\r\nmax_age: 86400\r\nextension: ignored\r\n",
        )
        .unwrap();
        assert_eq!(p.mode, Mode::Enforce);
        assert_eq!(p.mx, vec!["mail.example.com", "*.backup.example"]);
        assert_eq!(p.max_age, 86400);
        assert!(p.allows("x.backup.example") && !p.allows("other.example"));
        // LF line ends, a year at most.
        let p = parse("version: STSv1\nmode: testing\nmx: a.test\nmax_age: 9999999999\n").unwrap();
        assert_eq!((p.mode, p.max_age), (Mode::Testing, MAX_AGE_LIMIT));
        assert_eq!(
            parse("version: STSv1\nmode: none\nmax_age: 1\n")
                .unwrap()
                .mode,
            Mode::None
        );
        for (bad, why) in [
            (
                "mode: enforce\nversion: STSv1\nmx: a\nmax_age: 1\n",
                "start",
            ),
            (
                "version: STSv2\nmode: enforce\nmx: a\nmax_age: 1\n",
                "STSv1",
            ),
            ("version: STSv1\nmode: block\nmx: a\nmax_age: 1\n", "mode"),
            ("version: STSv1\nmode: enforce\nmax_age: 1\n", "no mx"),
            ("version: STSv1\nmode: enforce\nmx: a\n", "max_age"),
            (
                "version: STSv1\nmode: enforce\nmx: a\nmax_age: -1\n",
                "max_age",
            ),
            (
                "version: STSv1\nmode: enforce\nmx: a\nmax_age: 12345678901\n",
                "max_age",
            ),
            ("version: STSv1\nmode: enforce\nmx: a b\nmax_age: 1\n", "mx"),
            (
                "version: STSv1\nmode: enforce\njunk\nmax_age: 1\n",
                "key: value",
            ),
            ("<html>\n", "key: value"),
        ] {
            let e = parse(bad).unwrap_err();
            assert!(e.contains(why), "{bad:?}: {e}");
        }
        assert!(parse(&"x".repeat(MAX_POLICY + 1)).is_err());
    }

    fn stored(id: &str, fetched_ms: i64, expires_ms: i64) -> StoredStsPolicy {
        StoredStsPolicy {
            domain: "a.test".into(),
            id: id.into(),
            policy: String::new(),
            fetched_ms,
            expires_ms,
        }
    }

    #[test]
    fn cache_steps() {
        let c = stored("1", 0, 1000);
        assert_eq!(step(None, None, 10), Step::NoPolicy);
        assert_eq!(step(Some("1"), None, 10), Step::Fetch);
        assert_eq!(step(Some("1"), Some(&c), 10), Step::UseCached);
        // The record gone: the cached policy serves until it expires.
        assert_eq!(step(None, Some(&c), 10), Step::UseCached);
        assert_eq!(step(None, Some(&c), 1000), Step::NoPolicy);
        // A new id, or the last quarter of its life: fetch again.
        assert_eq!(step(Some("2"), Some(&c), 10), Step::Fetch);
        assert_eq!(step(Some("1"), Some(&c), 800), Step::Fetch);
        assert_eq!(step(Some("1"), Some(&c), 1000), Step::Fetch);
    }

    fn target(name: &str) -> Target {
        Target::configured(name, "192.0.2.1:25".parse().unwrap())
    }

    #[test]
    fn targets_outside_the_policy_are_refused() {
        let p = parse("version: STSv1\nmode: enforce\nmx: *.a.test\nmax_age: 60\n").unwrap();
        let (ok, refused) = allowed(
            &p,
            &[
                target("mx1.a.test"),
                target("evil.test"),
                target("evil.test"),
            ],
        );
        assert_eq!(ok, vec![target("mx1.a.test")]);
        assert_eq!(refused, vec!["evil.test"]);
        assert_eq!(
            check_session(&p, "evil.test", true, &[], None)
                .unwrap_err()
                .0,
            "validation-failure"
        );
        assert_eq!(
            check_session(&p, "mx1.a.test", false, &[], None)
                .unwrap_err()
                .0,
            "starttls-not-supported"
        );
    }

    #[test]
    fn result_types() {
        assert_eq!(
            result_type("invalid peer certificate: NotValidForName"),
            "certificate-host-mismatch"
        );
        assert_eq!(
            result_type("invalid peer certificate: UnknownIssuer"),
            "certificate-not-trusted"
        );
        assert_eq!(
            result_type("invalid peer certificate: Expired"),
            "certificate-expired"
        );
        assert_eq!(result_type("handshake failure"), "validation-failure");
    }
}
