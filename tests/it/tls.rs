//! STARTTLS both ways: mx2 offers it with a test certificate (and discards input pipelined
//! after it), and delivers with the domain's TLS policy (opportunistic, required, verify).

use crate::common::dns::{DnsServer, Rec};
use crate::common::pki::Pki;
use crate::common::*;
use std::io::Write;
use std::net::TcpStream;
use std::sync::Arc;
use std::time::Duration;

fn client_config(pki: &Pki) -> Arc<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(rustls::pki_types::CertificateDer::from(pki.ca_der()))
        .unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    Arc::new(
        rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth(),
    )
}

/// mx2 with a certificate for mx2.test, backing up example.test to `primary_port`.
fn tls_mx2(pki: &Pki, primary_port: u16) -> (Mx2, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let leaf = pki.leaf(dir.path(), "mx2", &["mx2.test", "mx-b.test"]);
    let tail = format!(
        "[tls]\ncert = \"{}\"\nkey = \"{}\"\n[[domain]]\nname = \"example.test\"\nprimary = [\"127.0.0.1:{primary_port}\"]\n",
        leaf.cert.display(),
        leaf.key.display()
    );
    (Mx2::start_tail(&tail), dir)
}

#[test]
fn starttls_inbound_discards_pipelined_input_and_marks_the_trace() {
    let pki = Pki::new();
    let primary = Primary::start(0);
    let (mx2, _dir) = tls_mx2(&pki, primary.port);
    let mut tcp = TcpStream::connect(("127.0.0.1", mx2.port)).unwrap();
    tcp.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    assert!(read_reply(&mut tcp).starts_with("220"));
    tcp.write_all(b"EHLO client.test\r\n").unwrap();
    assert!(read_reply(&mut tcp).contains("STARTTLS"));
    // An attacker's MAIL FROM rides in the same packet as STARTTLS (CVE-2011-0411).
    tcp.write_all(b"STARTTLS\r\nMAIL FROM:<evil@attacker.test>\r\n")
        .unwrap();
    assert!(read_reply(&mut tcp).starts_with("220"));
    let conn =
        rustls::ClientConnection::new(client_config(&pki), "mx2.test".try_into().unwrap()).unwrap();
    let mut tls = rustls::StreamOwned::new(conn, tcp);
    tls.write_all(b"RCPT TO:<user@example.test>\r\n").unwrap();
    let r = read_reply(&mut tls);
    assert!(
        r.starts_with("503"),
        "the injected MAIL must not count: {r}"
    );
    tls.write_all(b"EHLO client.test\r\n").unwrap();
    let ehlo = read_reply(&mut tls);
    assert!(
        ehlo.starts_with("250") && !ehlo.contains("STARTTLS"),
        "{ehlo}"
    );
    for cmd in [
        "MAIL FROM:<a@sender.test>",
        "RCPT TO:<user@example.test>",
        "DATA",
    ] {
        tls.write_all(format!("{cmd}\r\n").as_bytes()).unwrap();
        let r = read_reply(&mut tls);
        assert!(r.starts_with('2') || r.starts_with('3'), "{cmd}: {r}");
    }
    tls.write_all(&message("overtls", "secret")).unwrap();
    tls.write_all(b".\r\n").unwrap();
    assert!(read_reply(&mut tls).starts_with("250"));
    let got = primary.wait_for(1, Duration::from_secs(10));
    assert_eq!(got.len(), 1, "log:\n{}", mx2.log());
    assert_eq!(got[0].mail_from, "a@sender.test");
    let trace = got[0].header("Received").unwrap_or_default();
    let head = String::from_utf8_lossy(&got[0].body[..300]).into_owned();
    assert!(
        head.contains("(using TLSv1_3 with cipher") && head.contains("with ESMTPS"),
        "{trace}\n{head}"
    );
}

#[test]
fn outbound_tls_policies() {
    let pki = Pki::new();
    let primary = Primary::start(0);
    // B: an mx2 with STARTTLS standing in for a TLS-capable primary.
    let (b, dir) = tls_mx2(&pki, primary.port);
    let ca = pki.write_ca(dir.path());
    let dns = DnsServer::start(&[
        ("mx-b.test", Rec::Ip("127.0.0.1")),
        ("wrong.test", Rec::Ip("127.0.0.1")),
    ]);
    let front = |host: &str, port: u16, tls: &str| {
        let tail = format!(
            "{}\n[[domain]]\nname = \"example.test\"\nprimary = [\"{host}:{port}\"]\n{tls}\n",
            dns.table()
        );
        Mx2::start_tail(&tail)
    };
    let send = |m: &Mx2, id: &str| {
        let mut c = m.client();
        c.cmd("EHLO client.test");
        assert!(
            c.send_mail("a@sender.test", &["user@example.test"], &message(id, "x"))
                .starts_with("250")
        );
    };

    // verify, right name, our CA: delivered over TLS to B, then by B to the primary.
    let a = front(
        "mx-b.test",
        b.port,
        &format!("tls = \"verify\"\ntls_ca_file = \"{}\"", ca.display()),
    );
    send(&a, "verified");
    let got = primary.wait_for(1, Duration::from_secs(15));
    assert_eq!(got.len(), 1, "A log:\n{}\nB log:\n{}", a.log(), b.log());
    let text = String::from_utf8_lossy(&got[0].body).into_owned();
    let hop_from_a = text
        .split("Received: ")
        .nth(1)
        .unwrap_or_default()
        .to_string();
    assert!(
        hop_from_a.contains("with ESMTPS"),
        "A→B was not encrypted: {hop_from_a}"
    );

    // verify with a name the certificate does not carry: held, never delivered.
    let wrong = front(
        "wrong.test",
        b.port,
        &format!("tls = \"verify\"\ntls_ca_file = \"{}\"", ca.display()),
    );
    send(&wrong, "wrongname");
    // required, to a primary that offers no STARTTLS: held, never sent in clear.
    let required = front("127.0.0.1", primary.port, "tls = \"required\"");
    send(&required, "cleartext");
    // opportunistic with a pin that does not match: the pin is enforced too.
    let pinned = front(
        "mx-b.test",
        b.port,
        &format!(
            "tls = \"required\"\ntls_pin = \"sha256:{}\"",
            "00".repeat(32)
        ),
    );
    send(&pinned, "pinned");
    std::thread::sleep(Duration::from_secs(4));
    let ids: Vec<String> = primary
        .messages()
        .iter()
        .filter_map(|m| m.header("Message-ID"))
        .collect();
    assert_eq!(ids, vec!["<verified@test>"], "held mail leaked: {ids:?}");
    assert!(wrong.log().contains("TLS failed"), "{}", wrong.log());
    assert!(
        required.log().contains("TLS is required"),
        "{}",
        required.log()
    );
    assert!(pinned.log().contains("tls_pin"), "{}", pinned.log());
}

#[test]
fn smtp_auth_to_the_primary_only_inside_tls() {
    let pki = Pki::new();
    let dir = tempfile::tempdir().unwrap();
    let pass = dir.path().join("relay.pass");
    std::fs::write(&pass, "s3cret\n").unwrap();
    let wrong = dir.path().join("wrong.pass");
    std::fs::write(&wrong, "guess\n").unwrap();
    let opts = || PrimaryOptions {
        tls: Some(pki.server_config(dir.path(), &["primary.test"])),
        auth: Some(("relay".into(), "s3cret".into())),
        ..Default::default()
    };
    let primary = Primary::start_with(0, opts());
    let relay = |port: u16, pass: &std::path::Path| {
        let tail = format!(
            "[[domain]]\nname = \"example.test\"\nprimary = [\"127.0.0.1:{port}\"]\nauth_user = \"relay\"\nauth_password_file = \"{}\"\n",
            pass.display()
        );
        Mx2::start_tail(&tail)
    };
    let send = |m: &Mx2, id: &str| {
        let mut c = m.client();
        c.cmd("EHLO client.test");
        assert!(
            c.send_mail("a@sender.test", &["user@example.test"], &message(id, "x"))
                .starts_with("250")
        );
    };
    let good = relay(primary.port, &pass);
    send(&good, "authed");
    let got = primary.wait_for(1, Duration::from_secs(10));
    assert_eq!(got.len(), 1, "log:\n{}", good.log());
    assert!(got[0].tls, "delivered outside TLS");
    assert_eq!(got[0].authenticated.as_deref(), Some("relay"));

    let bad = relay(primary.port, &wrong);
    send(&bad, "badpass");
    // A primary without TLS: the password must never be sent.
    let plain = Primary::start_with(
        0,
        PrimaryOptions {
            auth: Some(("relay".into(), "s3cret".into())),
            ..Default::default()
        },
    );
    let cleartext = relay(plain.port, &pass);
    send(&cleartext, "cleartext");
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(
        primary.messages().len(),
        1,
        "a message went through with a wrong password"
    );
    assert!(bad.log().contains("535"), "{}", bad.log());
    assert!(plain.messages().is_empty());
    assert!(
        cleartext
            .log()
            .contains("credentials are only sent inside TLS"),
        "{}",
        cleartext.log()
    );
    assert!(
        !cleartext.log().contains("s3cret") && !good.log().contains("s3cret"),
        "the password leaked into a log"
    );
}
