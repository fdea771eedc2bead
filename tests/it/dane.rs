//! DANE (RFC 7672) for MX-routed delivery, against the tests' DNSSEC-signed zone: a TLSA record
//! matching the MX host's certificate lets the mail through, a mismatching one or a host
//! without STARTTLS holds it (never plaintext) with the DANE reason, and the same record in an
//! unsigned zone is not DANE at all. The MX host is a second mx2 with a test certificate,
//! relaying to the test primary.

use crate::common::dns::{DnsServer, Rec};
use crate::common::pki::Pki;
use crate::common::*;
use mx2::config::Dnssec;
use mx2::dns::Dns;
use std::time::Duration;

/// The SHA-256 of a PEM certificate's SubjectPublicKeyInfo (a `3 1 1` record's data).
pub(crate) fn spki_sha256(pem_file: &std::path::Path) -> Vec<u8> {
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject;
    let der = CertificateDer::from_pem_file(pem_file).unwrap();
    let (_, cert) = x509_parser::parse_x509_certificate(der.as_ref()).unwrap();
    ring::digest::digest(&ring::digest::SHA256, cert.tbs_certificate.subject_pki.raw)
        .as_ref()
        .to_vec()
}

/// An MX host with STARTTLS (an mx2 with a certificate for `names`) relaying example.test to
/// `primary_port`; returns it and its certificate file's directory.
fn tls_host(pki: &Pki, names: &[&str], primary_port: u16) -> (Mx2, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let leaf = pki.leaf(dir.path(), "host", names);
    let tail = format!(
        "[tls]\ncert = \"{}\"\nkey = \"{}\"\n[[domain]]\nname = \"example.test\"\nprimary = [\"127.0.0.1:{primary_port}\"]\n",
        leaf.cert.display(),
        leaf.key.display()
    );
    (Mx2::start_tail(&tail), dir)
}

/// The mx2 under test: routes example.test by MX (default `tls`, i.e. auto) on `mx_port`.
fn front(dns: &DnsServer, mx_port: u16) -> Mx2 {
    let tail = format!(
        "{}[routing]\nmx_port = {mx_port}\n[[domain]]\nname = \"example.test\"\nroute = \"mx\"\n",
        dns.table()
    );
    Mx2::start_tail(&tail)
}

fn send(m: &Mx2, id: &str) {
    let mut c = m.client();
    c.cmd("EHLO client.test");
    let r = c.send_mail("a@sender.test", &["user@example.test"], &message(id, "x"));
    assert!(r.starts_with("250"), "{r}");
}

/// The last reply recorded for the one queued message (what `mx2 queue list` shows).
fn last_reply(m: &Mx2) -> String {
    let (code, out, err) = mx2_text(&["queue", "list", "--json"], &m.config);
    assert_eq!(code, 0, "{err}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    v[0]["last_reply"].as_str().unwrap_or_default().to_string()
}

#[test]
fn lookups_in_the_signed_zone_are_secure_and_below_an_unsigned_delegation_insecure() {
    let dns = DnsServer::start_with(
        &[
            ("example.test", Rec::Mx(10, "mx.example.test")),
            ("mx.example.test", Rec::Ip("127.0.0.1")),
            ("_25._tcp.mx.example.test", Rec::Tlsa(3, 1, 1, vec![1; 32])),
            ("mx.plain.test", Rec::Ip("127.0.0.1")),
            ("_25._tcp.mx.plain.test", Rec::Tlsa(3, 1, 1, vec![1; 32])),
        ],
        &["plain.test"],
    );
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let validate = Dnssec::Validate {
            trust_anchor: Some(dns.anchor.clone()),
            strict: false,
        };
        let d = Dns::new(&[dns.addr], Duration::from_secs(2), &validate).unwrap();
        let mx = d.mx_proven("example.test").await.unwrap();
        assert!(mx.secure, "{mx:?}");
        let a = d.addresses_proven("mx.example.test").await.unwrap();
        assert!(a.secure && a.answer.len() == 1, "{a:?}");
        let t = d.tlsa("_25._tcp.mx.example.test").await.unwrap();
        assert!(t.secure && t.answer.len() == 1, "{t:?}");
        // A proven absence is no record, not a failure.
        let none = d.tlsa("_25._tcp.nothing.example.test").await.unwrap();
        assert!(none.answer.is_empty(), "{none:?}");

        let a = d.addresses_proven("mx.plain.test").await.unwrap();
        assert!(!a.secure && a.answer.len() == 1, "{a:?}");
        let t = d.tlsa("_25._tcp.mx.plain.test").await.unwrap();
        assert!(!t.secure && t.answer.len() == 1, "{t:?}");

        // The IANA root keys do not sign the test zone: strictly validated, its answers are
        // bogus, an error; under "auto" the root's keys do not validate, so nothing is
        // secure (and DANE does not apply).
        let iana = Dnssec::Validate {
            trust_anchor: None,
            strict: true,
        };
        let d = Dns::new(&[dns.addr], Duration::from_secs(2), &iana).unwrap();
        assert!(d.tlsa("_25._tcp.mx.example.test").await.is_err());
        let auto = Dnssec::Validate {
            trust_anchor: None,
            strict: false,
        };
        let d = Dns::new(&[dns.addr], Duration::from_secs(2), &auto).unwrap();
        let t = d.tlsa("_25._tcp.mx.example.test").await.unwrap();
        assert!(!t.secure && t.answer.len() == 1, "{t:?}");
        // Without validation nothing is secure.
        let d = Dns::new(&[dns.addr], Duration::from_secs(2), &Dnssec::Off).unwrap();
        assert!(!d.mx_proven("example.test").await.unwrap().secure);
    });
}

#[test]
fn a_matching_tlsa_record_delivers_a_mismatching_one_holds() {
    let pki = Pki::new();
    let primary = Primary::start(0);
    let (host, dir) = tls_host(&pki, &["mx-b.test"], primary.port);
    let digest = spki_sha256(&dir.path().join("host.crt"));
    let owner = format!("_{}._tcp.mx-b.test", host.port);

    // Matching: delivered over TLS.
    let good = DnsServer::start(&[
        ("example.test", Rec::Mx(10, "mx-b.test")),
        ("mx-b.test", Rec::Ip("127.0.0.1")),
        (owner.as_str(), Rec::Tlsa(3, 1, 1, digest.clone())),
    ]);
    let a = front(&good, host.port);
    send(&a, "danegood");
    let got = primary.wait_for(1, Duration::from_secs(15));
    assert_eq!(got.len(), 1, "A log:\n{}\nB log:\n{}", a.log(), host.log());
    let text = String::from_utf8_lossy(&got[0].body).into_owned();
    let hop = text.split("Received: ").nth(1).unwrap_or_default();
    assert!(hop.contains("with ESMTPS"), "not over TLS: {hop}");

    // Mismatching: held, and the queue says why.
    let mut wrong = digest.clone();
    wrong[0] ^= 0xff;
    let bad = DnsServer::start(&[
        ("example.test", Rec::Mx(10, "mx-b.test")),
        ("mx-b.test", Rec::Ip("127.0.0.1")),
        (owner.as_str(), Rec::Tlsa(3, 1, 1, wrong)),
    ]);
    let b = front(&bad, host.port);
    send(&b, "danebad");
    wait_until_showing(
        "the DANE reason in the queue",
        Duration::from_secs(15),
        || {
            let r = last_reply(&b);
            r.contains("DANE: mx-b.test") && r.contains("matching no TLSA record")
        },
        || format!("queue: {}\nlog:\n{}", last_reply(&b), b.log()),
    );
    assert!(b.log().contains("matching no TLSA record"), "{}", b.log());
    std::thread::sleep(Duration::from_secs(2));
    let ids: Vec<String> = primary.messages().iter().map(|m| m.id()).collect();
    assert_eq!(ids, vec!["danegood"], "held mail leaked");
}

#[test]
fn dane_holds_mail_for_a_host_without_starttls() {
    let primary = Primary::start(0);
    // The test primary offers no STARTTLS; its TLSA record says it must.
    let owner = format!("_{}._tcp.mx.example.test", primary.port);
    let dns = DnsServer::start(&[
        ("example.test", Rec::Mx(10, "mx.example.test")),
        ("mx.example.test", Rec::Ip("127.0.0.1")),
        (owner.as_str(), Rec::Tlsa(3, 1, 1, vec![7; 32])),
    ]);
    let a = front(&dns, primary.port);
    send(&a, "nostarttls");
    wait_until_showing(
        "the DANE reason in the queue",
        Duration::from_secs(15),
        || {
            let r = last_reply(&a);
            r.contains("DANE: mx.example.test must use TLS") && r.contains("STARTTLS")
        },
        || format!("queue: {}\nlog:\n{}", last_reply(&a), a.log()),
    );
    assert!(primary.messages().is_empty(), "sent in plaintext");
}

#[test]
fn the_same_record_in_an_unsigned_zone_is_not_dane() {
    let pki = Pki::new();
    let primary = Primary::start(0);
    let (host, _dir) = tls_host(&pki, &["mx.plain.test"], primary.port);
    // A TLSA record that matches nothing: under DANE the mail would wait.
    let owner = format!("_{}._tcp.mx.plain.test", host.port);
    let dns = DnsServer::start_with(
        &[
            ("example.test", Rec::Mx(10, "mx.plain.test")),
            ("mx.plain.test", Rec::Ip("127.0.0.1")),
            (owner.as_str(), Rec::Tlsa(3, 1, 1, vec![7; 32])),
        ],
        &["plain.test"],
    );
    let a = front(&dns, host.port);
    send(&a, "unsigned");
    let got = primary.wait_for(1, Duration::from_secs(15));
    assert_eq!(got.len(), 1, "A log:\n{}", a.log());
    let text = String::from_utf8_lossy(&got[0].body).into_owned();
    let hop = text.split("Received: ").nth(1).unwrap_or_default();
    assert!(
        hop.contains("with ESMTPS"),
        "opportunistic TLS still used: {hop}"
    );
}

#[test]
fn notifications_to_a_senders_mx_follow_its_dane_policy() {
    let port = free_port();
    // The sender's MX publishes a TLSA record but offers no STARTTLS.
    let owner = format!("_{port}._tcp.mail.sender.test");
    let dns = DnsServer::start(&[
        ("sender.test", Rec::Mx(10, "mail.sender.test")),
        ("mail.sender.test", Rec::Ip("127.0.0.4")),
        (owner.as_str(), Rec::Tlsa(3, 1, 1, vec![7; 32])),
    ]);
    let sender_mx = Primary::start_on("127.0.0.4", port, PrimaryOptions::default());
    let primary = Primary::start_on(
        "127.0.0.1",
        port,
        PrimaryOptions::rejecting("5.1.1 <nobody@example.test>: no such user"),
    );
    let tail = format!(
        "{}[routing]\nmx_port = {port}\n[[domain]]\nname = \"example.test\"\nprimary = [\"127.0.0.1:{port}\"]\n",
        dns.table()
    );
    let mx2 = Mx2::start_tail(&tail);
    let mut c = mx2.client();
    c.cmd("EHLO client.test");
    let r = c.send_mail(
        "alice@sender.test",
        &["nobody@example.test"],
        &message("bounced", "x"),
    );
    assert!(r.starts_with("250"), "{r}");
    // The bounce is made, then held for the sender's MX with the DANE reason.
    wait_until_showing(
        "the notification held by DANE",
        Duration::from_secs(15),
        || last_reply(&mx2).contains("DANE: mail.sender.test must use TLS"),
        || format!("queue: {}\nlog:\n{}", last_reply(&mx2), mx2.log()),
    );
    assert_eq!(primary.rcpt_tries("nobody@example.test"), 1);
    assert!(
        sender_mx.messages().is_empty(),
        "the notification went out in plaintext"
    );
}

/// `dnssec = "auto"` (the default) behind name servers whose DNSSEC data does not validate
/// from the trust anchor (here: the built-in IANA root keys against the tests' own root key,
/// as behind a resolver that strips signatures): nothing is secure, a TLSA record that
/// matches nothing is not DANE and the mail is delivered. `dnssec = "validate"` holds it as
/// bogus instead.
#[test]
fn auto_without_usable_dnssec_data_delivers_validate_holds() {
    let pki = Pki::new();
    let primary = Primary::start(0);
    let (host, _dir) = tls_host(&pki, &["mx.example.test"], primary.port);
    let owner = format!("_{}._tcp.mx.example.test", host.port);
    let dns = DnsServer::start(&[
        ("example.test", Rec::Mx(10, "mx.example.test")),
        ("mx.example.test", Rec::Ip("127.0.0.1")),
        (owner.as_str(), Rec::Tlsa(3, 1, 1, vec![7; 32])),
    ]);
    let with = |dnssec: &str| {
        Mx2::start_tail(&format!(
            "[dns]\nnameservers = [\"{}\"]\n{dnssec}[routing]\nmx_port = {}\n[[domain]]\nname = \"example.test\"\nroute = \"mx\"\n",
            dns.addr, host.port
        ))
    };
    let strict = with("dnssec = \"validate\"\n");
    send(&strict, "strict");
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    let mut reply = String::new();
    while std::time::Instant::now() < deadline {
        reply = last_reply(&strict);
        if !reply.is_empty() {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(reply.contains("bogus"), "{reply}\n{}", strict.log());
    assert!(primary.messages().is_empty(), "validate must hold the mail");
    drop(strict);

    let auto = with("");
    send(&auto, "auto");
    let got = primary.wait_for(1, Duration::from_secs(15));
    assert_eq!(got.len(), 1, "log:\n{}", auto.log());
    assert!(
        auto.log().contains("DANE does not apply"),
        "the operator is told: {}",
        auto.log()
    );
}
