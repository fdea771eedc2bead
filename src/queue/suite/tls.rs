//! The conformance case for outbound TLS state: a domain's cached MTA-STS policy (stored,
//! replaced, read back) and the TLS-RPT counters (added up per key, taken once by day).

use crate::queue::{Store, StoredStsPolicy, TlsRptCount};

/// Policies are kept per domain and replaced; counters add up per (day, domain, type,
/// result, host); `tlsrpt_take` returns the days before the one given, once.
pub async fn sts_and_tls_reports(s: &dyn Store) {
    assert_eq!(s.sts_policy("a.test").await.unwrap(), None);
    let policy = |id: &str, text: &str| StoredStsPolicy {
        domain: "a.test".into(),
        id: id.into(),
        policy: text.into(),
        fetched_ms: 1000,
        expires_ms: 87_000,
    };
    s.sts_put(policy("1", "version: STSv1\nmode: testing\n"))
        .await
        .unwrap();
    s.sts_put(policy("2", "version: STSv1\nmode: enforce\n"))
        .await
        .unwrap();
    assert_eq!(
        s.sts_policy("a.test").await.unwrap(),
        Some(policy("2", "version: STSv1\nmode: enforce\n"))
    );
    assert_eq!(s.sts_policy("b.test").await.unwrap(), None);

    let count = |day: i64, domain: &str, result: &str, n: i64| TlsRptCount {
        day,
        domain: domain.into(),
        policy_type: "sts".into(),
        result: result.into(),
        mx_host: if result == "success" {
            String::new()
        } else {
            "mx.a.test".into()
        },
        count: n,
    };
    for c in [
        count(10, "a.test", "success", 1),
        count(10, "a.test", "success", 2),
        count(10, "a.test", "certificate-host-mismatch", 1),
        count(10, "b.test", "success", 1),
        count(11, "a.test", "success", 5),
    ] {
        s.tlsrpt_add(c).await.unwrap();
    }
    assert_eq!(
        s.tlsrpt_take(11).await.unwrap(),
        vec![
            count(10, "a.test", "certificate-host-mismatch", 1),
            count(10, "a.test", "success", 3),
            count(10, "b.test", "success", 1),
        ]
    );
    assert!(s.tlsrpt_take(11).await.unwrap().is_empty(), "taken once");
    assert_eq!(
        s.tlsrpt_take(12).await.unwrap(),
        vec![count(11, "a.test", "success", 5)]
    );
}
