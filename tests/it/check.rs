//! `mx2 check` against crafted zones on the local DNS server: each setup gets the right
//! verdict, reasons and fixes (snapshots), the right exit code, and valid JSON.

use crate::common;
use crate::common::dns::{DnsServer, Rec};
use crate::common::sts::PolicyServer;
use std::process::Command;

fn zones() -> DnsServer {
    DnsServer::start(&[
        // A good setup: two MX hosts in different networks, reverse DNS that resolves back.
        ("good.test", Rec::Mx(10, "mx1.good.test")),
        ("good.test", Rec::Mx(20, "mx2.backup.test")),
        ("mx1.good.test", Rec::Ip("192.0.2.10")),
        ("10.2.0.192.in-addr.arpa", Rec::Ptr("mx1.good.test")),
        ("mx2.backup.test", Rec::Ip("198.51.100.20")),
        ("20.100.51.198.in-addr.arpa", Rec::Ptr("mx2.backup.test")),
        // Backup in the same /24 as the primary.
        ("samenet.test", Rec::Mx(10, "a.samenet.test")),
        ("samenet.test", Rec::Mx(20, "b.samenet.test")),
        ("a.samenet.test", Rec::Ip("192.0.2.10")),
        ("b.samenet.test", Rec::Ip("192.0.2.99")),
        ("99.2.0.192.in-addr.arpa", Rec::Ptr("b.samenet.test")),
        // One MX host only.
        ("single.test", Rec::Mx(10, "mx1.good.test")),
        // A CNAME target.
        ("cname.test", Rec::Mx(10, "alias.cname.test")),
        ("cname.test", Rec::Mx(20, "mx2.backup.test")),
        ("alias.cname.test", Rec::Cname("mx1.good.test")),
        // An IP literal as target.
        ("literal.test", Rec::Mx(10, "192.0.2.10")),
        ("literal.test", Rec::Mx(20, "mx2.backup.test")),
        // Equal preferences.
        ("equal.test", Rec::Mx(10, "mx1.good.test")),
        ("equal.test", Rec::Mx(10, "mx2.backup.test")),
        // Null MX.
        ("nullmx.test", Rec::NullMx),
        // No reverse DNS for the primary.
        ("noptr.test", Rec::Mx(10, "mx1.noptr.test")),
        ("noptr.test", Rec::Mx(20, "mx2.backup.test")),
        ("mx1.noptr.test", Rec::Ip("203.0.113.5")),
    ])
}

fn check(dns: &DnsServer, domain: &str, json: bool) -> (i32, String) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_mx2"));
    cmd.args(["check", domain, "--resolver", &dns.addr.to_string()]);
    cmd.arg("--trust-anchor").arg(&dns.anchor);
    if json {
        cmd.arg("--json");
    }
    let out = cmd.output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

#[test]
fn verdicts_reasons_and_fixes() {
    let dns = zones();
    for (domain, code) in [
        ("good.test", 0),
        ("samenet.test", 2),
        ("single.test", 2),
        ("cname.test", 2),
        ("literal.test", 2),
        ("equal.test", 1),
        ("nullmx.test", 2),
        ("noptr.test", 1),
    ] {
        let (got, text) = check(&dns, domain, false);
        assert_eq!(got, code, "{domain}:\n{text}");
        insta::assert_snapshot!(domain.replace('.', "_"), text);
    }
}

/// The domain's MTA-STS policy (mode enforce, served over HTTPS by a server with the test
/// CA's certificate) lists the primary only: senders that enforce it never use the backup.
/// Its TLS-RPT record is found.
#[test]
fn backup_missing_from_the_mta_sts_policy() {
    let pki = common::pki::Pki::new();
    let dir = tempfile::tempdir().unwrap();
    let ca = pki.write_ca(dir.path());
    let dns = DnsServer::start(&[
        ("stsmiss.test", Rec::Mx(10, "mx1.good.test")),
        ("stsmiss.test", Rec::Mx(20, "mx2.backup.test")),
        ("mx1.good.test", Rec::Ip("192.0.2.10")),
        ("10.2.0.192.in-addr.arpa", Rec::Ptr("mx1.good.test")),
        ("mx2.backup.test", Rec::Ip("198.51.100.20")),
        ("20.100.51.198.in-addr.arpa", Rec::Ptr("mx2.backup.test")),
        ("_mta-sts.stsmiss.test", Rec::Txt("v=STSv1; id=20261202")),
        ("mta-sts.stsmiss.test", Rec::Ip("127.0.0.10")),
        (
            "_smtp._tls.stsmiss.test",
            Rec::Txt("v=TLSRPTv1; rua=mailto:tlsrpt@stsmiss.test"),
        ),
    ]);
    let policy = PolicyServer::start(
        "127.0.0.10",
        pki.server_config(dir.path(), &["mta-sts.stsmiss.test"]),
        &[(
            "mta-sts.stsmiss.test",
            "version: STSv1\r\nmode: enforce\r\nmx: mx1.good.test\r\nmax_age: 86400\r\n",
        )],
    );
    let out = Command::new(env!("CARGO_BIN_EXE_mx2"))
        .args(["check", "stsmiss.test", "--resolver", &dns.addr.to_string()])
        .arg("--ca-file")
        .arg(&ca)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert_eq!(out.status.code(), Some(2), "{text}");
    assert_eq!(policy.served(), 1, "the policy was fetched:\n{text}");
    insta::assert_snapshot!("stsmiss_test", text);
}

#[test]
fn json_output_is_machine_readable() {
    let dns = zones();
    let (code, text) = check(&dns, "samenet.test", true);
    assert_eq!(code, 2);
    let v: serde_json::Value = serde_json::from_str(&text).expect("valid JSON");
    assert_eq!(v["verdict"], "fail");
    assert_eq!(v["mx"].as_array().unwrap().len(), 2);
    assert!(
        v["findings"]
            .as_array()
            .unwrap()
            .iter()
            .any(|f| f["check"] == "diversity" && f["level"] == "fail" && f["fix"].is_string())
    );
}

/// Issue 13, item 16: MX hosts at private, loopback or link-local addresses are failures.
#[test]
fn mx_hosts_the_internet_cannot_reach_fail() {
    let dns = DnsServer::start(&[
        ("private.test", Rec::Mx(10, "mx1.private.test")),
        ("private.test", Rec::Mx(20, "mx2.backup.test")),
        ("mx1.private.test", Rec::Ip("10.1.2.3")),
        ("mx2.backup.test", Rec::Ip("198.51.100.20")),
        ("20.100.51.198.in-addr.arpa", Rec::Ptr("mx2.backup.test")),
        ("inside.test", Rec::Mx(10, "mx1.good.test")),
        ("inside.test", Rec::Mx(20, "mx2.inside.test")),
        ("mx1.good.test", Rec::Ip("192.0.2.10")),
        ("10.2.0.192.in-addr.arpa", Rec::Ptr("mx1.good.test")),
        ("mx2.inside.test", Rec::Ip("127.0.0.1")),
        ("mx2.inside.test", Rec::Ip("fe80::1")),
    ]);
    for (domain, unreachable) in [
        ("private.test", vec![("10.1.2.3", "private")]),
        (
            "inside.test",
            vec![("127.0.0.1", "loopback"), ("fe80::1", "link-local")],
        ),
    ] {
        let (code, text) = check(&dns, domain, true);
        assert_eq!(code, 2, "{domain}: {text}");
        let v: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(v["verdict"], "fail", "{domain}");
        for (ip, kind) in unreachable {
            let f = v["findings"]
                .as_array()
                .unwrap()
                .iter()
                .find(|f| f["check"] == format!("mx.unreachable.{ip}"))
                .unwrap_or_else(|| panic!("{domain}: no finding for {ip}: {v:#}"));
            assert_eq!(f["level"], "fail");
            assert!(f["message"].as_str().unwrap().contains(kind), "{f}");
            assert!(f["fix"].is_string(), "{f}");
        }
    }
}

/// An mx2 backing up `domain`, also listening on `ip:port` with the given certificate files.
fn backup_mx2(
    domain: &str,
    ip: &str,
    port: u16,
    leaf: &common::pki::LeafFiles,
    primary_port: u16,
) -> common::Mx2 {
    let tail = format!(
        "[tls]\ncert = \"{}\"\nkey = \"{}\"\n[[domain]]\nname = \"{domain}\"\nprimary = [\"127.0.0.1:{primary_port}\"]\n",
        leaf.cert.display(),
        leaf.key.display()
    );
    common::Mx2::start_config(|p, state| {
        common::config_with(p, state, "", &tail).replace(
            &format!("listen = [\"127.0.0.1:{p}\"]"),
            &format!("listen = [\"127.0.0.1:{p}\", \"{ip}:{port}\"]"),
        )
    })
}

#[test]
fn live_smtp_checks() {
    let pki = common::pki::Pki::new();
    let dir = tempfile::tempdir().unwrap();
    let ca = pki.write_ca(dir.path());
    let port = common::free_port();
    let primary = common::Primary::start_on("127.0.0.1", port, common::PrimaryOptions::default());
    let good = backup_mx2(
        "live.test",
        "127.0.0.5",
        port,
        &pki.leaf(dir.path(), "good", &["backup.live.test"]),
        primary.port,
    );
    let stale = backup_mx2(
        "expired.test",
        "127.0.0.6",
        port,
        &pki.expired_leaf(dir.path(), "stale", &["backup.expired.test"]),
        primary.port,
    );
    let dns = DnsServer::start(&[
        ("live.test", Rec::Mx(10, "primary.live.test")),
        ("live.test", Rec::Mx(20, "backup.live.test")),
        ("primary.live.test", Rec::Ip("127.0.0.1")),
        ("backup.live.test", Rec::Ip("127.0.0.5")),
        ("expired.test", Rec::Mx(10, "primary.live.test")),
        ("expired.test", Rec::Mx(20, "backup.expired.test")),
        ("backup.expired.test", Rec::Ip("127.0.0.6")),
        // live.test publishes an MTA-STS policy that forgot its backup MX.
        ("_mta-sts.live.test", Rec::Txt("v=STSv1; id=20261128")),
        ("mta-sts.live.test", Rec::Ip("127.0.0.7")),
    ]);
    let _policy = PolicyServer::start(
        "127.0.0.7",
        pki.server_config(dir.path(), &["mta-sts.live.test"]),
        &[(
            "mta-sts.live.test",
            "version: STSv1\r\nmode: enforce\r\nmx: primary.live.test\r\nmax_age: 86400\r\n",
        )],
    );
    let run = |domain: &str| -> serde_json::Value {
        let out = Command::new(env!("CARGO_BIN_EXE_mx2"))
            .args([
                "check",
                domain,
                "--json",
                "--smtp",
                "--smtp-port",
                &port.to_string(),
                "--resolver",
                &dns.addr.to_string(),
                "--ca-file",
            ])
            .arg(&ca)
            .arg("--trust-anchor")
            .arg(&dns.anchor)
            .output()
            .unwrap();
        serde_json::from_slice(&out.stdout)
            .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stdout)))
    };
    let find = |v: &serde_json::Value, suffix: &str| -> (String, String) {
        let f = v["findings"]
            .as_array()
            .unwrap()
            .iter()
            .find(|f| f["check"].as_str().unwrap_or("").ends_with(suffix))
            .unwrap_or_else(|| panic!("no {suffix} in {v:#}"));
        (
            f["level"].as_str().unwrap().to_string(),
            f["message"].as_str().unwrap().to_string(),
        )
    };
    let v = run("live.test");
    assert_eq!(find(&v, "127.0.0.5.certificate").0, "ok", "{v:#}");
    assert_eq!(find(&v, "127.0.0.5.postmaster").0, "ok", "{v:#}");
    assert_eq!(find(&v, "127.0.0.5.relay").0, "ok", "{v:#}");
    assert_eq!(
        find(&v, "127.0.0.1.starttls").0,
        "warn",
        "the test primary offers no STARTTLS"
    );
    let v = run("expired.test");
    let (level, msg) = find(&v, "127.0.0.6.certificate");
    assert_eq!(level, "fail", "{msg}");
    assert!(msg.contains("2021"), "the expiry date is shown: {msg}");
    assert!(
        primary.messages().is_empty(),
        "the checks never send a message"
    );
    drop((good, stale));
}

#[test]
fn geoip_database_checks() {
    use common::mmdb::{Entry, write};
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("test.mmdb");
    write(
        &db,
        &[
            Entry {
                net: "192.0.2.0".parse().unwrap(),
                prefix: 24,
                asn: 64500,
                org: "Primary Hosting",
                country: "FR",
                city: "Paris",
                lat: 48.8566,
                lon: 2.3522,
            },
            Entry {
                net: "198.51.100.0".parse().unwrap(),
                prefix: 24,
                asn: 64501,
                org: "Backup Hosting",
                country: "DE",
                city: "Berlin",
                lat: 52.52,
                lon: 13.405,
            },
            Entry {
                net: "203.0.113.0".parse().unwrap(),
                prefix: 24,
                asn: 64500,
                org: "Primary Hosting",
                country: "FR",
                city: "Paris",
                lat: 48.86,
                lon: 2.35,
            },
        ],
    );
    let dns = DnsServer::start(&[
        ("apart.test", Rec::Mx(10, "mx1.good.test")),
        ("apart.test", Rec::Mx(20, "mx2.backup.test")),
        ("mx1.good.test", Rec::Ip("192.0.2.10")),
        ("mx2.backup.test", Rec::Ip("198.51.100.20")),
        ("together.test", Rec::Mx(10, "mx1.good.test")),
        ("together.test", Rec::Mx(20, "mx2.together.test")),
        ("mx2.together.test", Rec::Ip("203.0.113.9")),
    ]);
    let run = |domain: &str| -> String {
        let out = Command::new(env!("CARGO_BIN_EXE_mx2"))
            .args([
                "check",
                domain,
                "--resolver",
                &dns.addr.to_string(),
                "--geoip",
            ])
            .arg(&db)
            .arg("--trust-anchor")
            .arg(&dns.anchor)
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let apart = run("apart.test");
    assert!(
        apart.contains("different networks (AS64500, AS64501)"),
        "{apart}"
    );
    assert!(
        apart.contains("878 km apart")
            || apart.contains("877 km apart")
            || apart.contains("879 km apart"),
        "{apart}"
    );
    let together = run("together.test");
    assert!(
        together.contains("same network, AS64500 (Primary Hosting)"),
        "{together}"
    );
    assert!(together.contains("both in Paris (FR)"), "{together}");
    assert!(
        together.contains("km apart: one regional outage can take both"),
        "{together}"
    );
}

/// The DANE part of a check's text (its findings naming TLSA, with their fixes), the port
/// and the (fresh) key's digest masked.
fn dane_lines(text: &str, port: u16, digest: &[u8]) -> String {
    let shown: String = digest.iter().take(8).map(|b| format!("{b:02x}")).collect();
    let mut out = Vec::new();
    let mut keep = false;
    for line in text.lines() {
        if !line.starts_with("    fix:") {
            keep = line.contains("TLSA");
        }
        if keep {
            out.push(line);
        }
    }
    out.join("\n")
        .replace(&shown, "SPKI-SHA256")
        .replace(&port.to_string(), "PORT")
}

#[test]
fn dane_checks_match_the_certificate_against_the_tlsa_records() {
    let pki = common::pki::Pki::new();
    let dir = tempfile::tempdir().unwrap();
    let primary = common::Primary::start(0);
    let leaf = pki.leaf(dir.path(), "mx", &["mx.good-dane.test", "mx.bad-dane.test"]);
    let tail = format!(
        "[tls]\ncert = \"{}\"\nkey = \"{}\"\n[[domain]]\nname = \"good-dane.test\"\nprimary = [\"127.0.0.1:{}\"]\n",
        leaf.cert.display(),
        leaf.key.display(),
        primary.port
    );
    let host = common::Mx2::start_tail(&tail);
    let der = {
        use rustls::pki_types::pem::PemObject;
        rustls::pki_types::CertificateDer::from_pem_file(&leaf.cert).unwrap()
    };
    let (_, cert) = x509_parser::parse_x509_certificate(der.as_ref()).unwrap();
    let digest = ring::digest::digest(&ring::digest::SHA256, cert.tbs_certificate.subject_pki.raw)
        .as_ref()
        .to_vec();
    let mut wrong = digest.clone();
    wrong[31] ^= 1;
    let p = host.port;
    let good_owner = format!("_{p}._tcp.mx.good-dane.test");
    let bad_owner = format!("_{p}._tcp.mx.bad-dane.test");
    let dns = DnsServer::start(&[
        ("good-dane.test", Rec::Mx(10, "mx.good-dane.test")),
        ("mx.good-dane.test", Rec::Ip("127.0.0.1")),
        (good_owner.as_str(), Rec::Tlsa(3, 1, 1, digest.clone())),
        ("bad-dane.test", Rec::Mx(10, "mx.bad-dane.test")),
        ("mx.bad-dane.test", Rec::Ip("127.0.0.1")),
        (bad_owner.as_str(), Rec::Tlsa(3, 1, 1, wrong)),
    ]);
    for (domain, snapshot) in [
        ("good-dane.test", "dane_all_good"),
        ("bad-dane.test", "dane_tlsa_mismatch"),
    ] {
        let out = Command::new(env!("CARGO_BIN_EXE_mx2"))
            .args(["check", domain, "--smtp", "--smtp-port", &p.to_string()])
            .args(["--resolver", &dns.addr.to_string(), "--trust-anchor"])
            .arg(&dns.anchor)
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        insta::assert_snapshot!(snapshot, dane_lines(&text, p, &digest));
    }
}
