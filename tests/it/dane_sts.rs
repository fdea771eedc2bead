//! DANE and MTA-STS published by the same domains (RFC 8461 §2: a failing DANE validation is
//! never overridden by MTA-STS), with the real binary under the default `tls = "auto"`: the
//! tests' DNSSEC-signed zone carries the MX, address and TLSA records, a test HTTPS server
//! the policies, and one TLS primary on loopback answers for every MX name with a
//! certificate valid for all of them, so that MTA-STS alone would let each message through.
//! A matching TLSA record delivers; a mismatching one holds the mail with the DANE reason,
//! under `enforce` and under `testing`; a host DANE validates is used though the policy's
//! `mx:` lines do not list it (DANE decides for that host); and a host without TLSA records
//! that the policy does not list is not used (the policy decides).

use crate::common::dns::{DnsServer, Rec};
use crate::common::pki::Pki;
use crate::common::sts::PolicyServer;
use crate::common::*;
use crate::dane::spki_sha256;
use crate::mta_sts::{listing, policy};
use std::time::Duration;

/// Where the policies are served (port 443; no other test binds this address).
const POLICY_IP: &str = "127.0.0.12";

#[test]
fn a_failing_dane_validation_holds_mail_that_mta_sts_would_let_through() {
    let pki = Pki::new();
    let dir = tempfile::tempdir().unwrap();
    let ca = pki.write_ca(dir.path());
    let port = free_port();
    let domains =
        ["good", "mismatch", "testing", "unlisted", "stsonly"].map(|d| format!("{d}.both.test"));
    let mx_names: Vec<String> = domains.iter().map(|d| format!("mx.{d}")).collect();
    let mx_refs: Vec<&str> = mx_names.iter().map(String::as_str).collect();
    let primary = Primary::start_on(
        "127.0.0.1",
        port,
        PrimaryOptions {
            tls: Some(pki.server_config(dir.path(), &mx_refs)),
            ..PrimaryOptions::default()
        },
    );
    let digest = spki_sha256(&dir.path().join("server.crt"));
    let mut wrong = digest.clone();
    wrong[0] ^= 0xff;

    let mut records = Vec::new();
    let mut policies = Vec::new();
    for (d, mx) in domains.iter().zip(&mx_names) {
        let leak = |s: String| -> &'static str { s.leak() };
        let tlsa = if d.starts_with("mismatch") || d.starts_with("testing") {
            wrong.clone()
        } else {
            digest.clone()
        };
        records.push((leak(d.clone()), Rec::Mx(10, leak(mx.clone()))));
        records.push((leak(mx.clone()), Rec::Ip("127.0.0.1")));
        if !d.starts_with("stsonly") {
            records.push((leak(format!("_{port}._tcp.{mx}")), Rec::Tlsa(3, 1, 1, tlsa)));
        }
        records.push((leak(format!("_mta-sts.{d}")), Rec::Txt("v=STSv1; id=1;")));
        records.push((leak(format!("mta-sts.{d}")), Rec::Ip(POLICY_IP)));
        let (mode, listed) = match d.split('.').next() {
            Some("testing") => ("testing", mx.clone()),
            Some("unlisted" | "stsonly") => ("enforce", "mx.elsewhere.test".to_string()),
            _ => ("enforce", mx.clone()),
        };
        policies.push((format!("mta-sts.{d}"), policy(mode, &listed)));
    }
    let dns = DnsServer::start(&records);
    let policy_names: Vec<&str> = policies.iter().map(|(h, _)| h.as_str()).collect();
    let served: Vec<(&str, &str)> = policies
        .iter()
        .map(|(h, p)| (h.as_str(), p.as_str()))
        .collect();
    let server = PolicyServer::start(
        POLICY_IP,
        pki.server_config(dir.path(), &policy_names),
        &served,
    );
    let mut tail = format!(
        "{}timeout = \"2s\"\n[routing]\nmx_port = {port}\n\
         [delivery]\nconnect_timeout = \"2s\"\ncommand_timeout = \"5s\"\nmta_sts_ca_file = \"{}\"\n",
        dns.table(),
        ca.display()
    );
    for d in &domains {
        tail.push_str(&format!("[[domain]]\nname = \"{d}\"\nroute = \"mx\"\n"));
    }
    let mx2 = Mx2::start_config(|p, state| config_with(p, state, "", &tail));

    for d in &domains {
        let mut c = mx2.client();
        c.cmd("EHLO client.test");
        let id = d.split('.').next().unwrap();
        let r = c.send_mail("a@sender.test", &[&format!("u@{d}")], &message(id, "x"));
        assert!(r.starts_with("250"), "{r}");
    }

    // Matching TLSA records: delivered over TLS, whether or not the policy lists the host.
    let got = primary.wait_for(2, Duration::from_secs(20));
    let mut ids: Vec<String> = got.iter().map(|m| m.id()).collect();
    ids.sort();
    assert_eq!(ids, ["good", "unlisted"], "log:\n{}", mx2.log());
    assert!(got.iter().all(|m| m.tls), "delivered inside TLS");

    // Mismatching TLSA records: held with DANE's reason, under enforce and under testing,
    // though the certificate is valid for the MX name and the policy lists the host.
    for d in ["mismatch.both.test", "testing.both.test"] {
        let rcpt = format!("u@{d}");
        wait_until_showing(
            &format!("{rcpt} held for DANE"),
            Duration::from_secs(20),
            || {
                let l = listing(&mx2, &rcpt);
                l.contains(&format!("DANE: mx.{d}")) && l.contains("matching no TLSA record")
            },
            || format!("{}\n{}", listing(&mx2, &rcpt), mx2.log()),
        );
    }
    // Without TLSA records the policy decides: a host it does not list is not used.
    wait_until_showing(
        "u@stsonly.both.test held by the policy",
        Duration::from_secs(20),
        || {
            listing(&mx2, "u@stsonly.both.test")
                .contains("MTA-STS enforce: mx.stsonly.both.test not in policy")
        },
        || format!("{}\n{}", listing(&mx2, "u@stsonly.both.test"), mx2.log()),
    );
    std::thread::sleep(Duration::from_secs(2));
    let ids: Vec<String> = primary.messages().iter().map(|m| m.id()).collect();
    assert_eq!(ids.len(), 2, "held mail leaked: {ids:?}");
    assert!(server.served() >= 2, "the policies were fetched");
}
