//! Interoperability with a real MTA: Debian's Postfix relays to mx2 over STARTTLS while the
//! primary is down, and a second Postfix is the primary that mx2 hands the mail to when it
//! comes back (and answers mx2's recipient callouts). Needs root and the postfix package
//! (`.ci/run` installs it).

use crate::common::pki::Pki;
use crate::common::postfix::Postfix;
use crate::common::{Client, Mx2, code, config_with, free_port, mx2_command, wait_until_showing};
use std::time::{Duration, Instant};

/// A Postfix primary for example.test with two Maildir mailboxes and its own certificate
/// (so mx2's outbound STARTTLS meets a real server); other recipients get `550 5.1.1`.
fn primary(port: u16, pki: &Pki, dir: &std::path::Path) -> Postfix {
    let leaf = pki.leaf(dir, "primary", &["primary.postfix.test"]);
    Postfix::start(
        "primary",
        port,
        &format!(
            "virtual_mailbox_domains = example.test
virtual_mailbox_maps = inline:{{ user@example.test=user/, other@example.test=other/ }}
smtpd_tls_security_level = may
smtpd_tls_cert_file = {}
smtpd_tls_key_file = {}
smtpd_tls_loglevel = 1",
            leaf.cert.display(),
            leaf.key.display()
        ),
    )
}

/// mx2 with a certificate, backing up example.test to `primary_port` with `recipients`.
fn mx2(pki: &Pki, primary_port: u16, recipients: &str) -> Mx2 {
    let certs = tempfile::tempdir().unwrap().keep();
    let leaf = pki.leaf(&certs, "mx2", &["mx2.test"]);
    Mx2::start_config(|port, state| {
        config_with(
            port,
            state,
            "",
            &format!(
                "[tls]\ncert = \"{}\"\nkey = \"{}\"\n[[domain]]\nname = \"example.test\"\nprimary = [\"127.0.0.1:{primary_port}\"]\nrecipients = {recipients}\n",
                leaf.cert.display(),
                leaf.key.display()
            ),
        )
    })
}

/// Dot-stuffs wire content (CRLF lines) for DATA.
fn stuffed(content: &str) -> Vec<u8> {
    content
        .split_inclusive("\r\n")
        .flat_map(|l| {
            let dot = if l.starts_with('.') { "." } else { "" };
            format!("{dot}{l}").into_bytes()
        })
        .collect()
}

/// The body of a delivered Maildir message (LF line ends): everything after the header block.
fn body(delivered: &[u8]) -> String {
    let text = String::from_utf8_lossy(delivered);
    text.split_once("\n\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default()
}

#[test]
fn postfix_relays_to_mx2_over_starttls_and_mx2_hands_over_to_a_postfix_primary() {
    let pki = Pki::new();
    let certs = tempfile::tempdir().unwrap();
    let primary_port = free_port();
    let mx2 = mx2(&pki, primary_port, "\"any\"");
    // The sender's MTA: everything goes to mx2 (as if the primary MX did not answer), and only
    // over TLS, so a broken STARTTLS would leave the mail in its queue.
    let sender = Postfix::start(
        "sender",
        free_port(),
        &format!(
            "relayhost = [127.0.0.1]:{}
smtpd_relay_restrictions = permit_mynetworks, reject
smtp_tls_security_level = encrypt
smtp_tls_loglevel = 1",
            mx2.port
        ),
    );

    // Three messages: plain; 8-bit UTF-8 with a leading dot, a 900-byte line and trailing
    // blanks, to two recipients; one with an empty body line at the end.
    let long = "x".repeat(900);
    let texts = [
        "Subject: plain\r\nMessage-ID: <plain@sender.test>\r\n\r\nHello from Postfix.\r\n"
            .to_string(),
        format!(
            "Subject: eight bit\r\nMessage-ID: <eight@sender.test>\r\nMIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n\r\nGrüße aus Köln — ✓\r\n.leading dot\r\n..two dots\r\n{long}\r\ntrailing blanks   \r\n"
        ),
        "Subject: blank end\r\nMessage-ID: <blank@sender.test>\r\n\r\nlast line is empty\r\n\r\n"
            .to_string(),
    ];
    let rcpts: [&[&str]; 3] = [
        &["user@example.test"],
        &["user@example.test", "other@example.test"],
        &["other@example.test"],
    ];
    let mut c = Client::connect(sender.port);
    assert_eq!(c.code("EHLO client.test"), 250);
    for (text, to) in texts.iter().zip(rcpts) {
        let r = c.send_mail("alice@sender.test", to, &stuffed(text));
        assert_eq!(code(&r), 250, "{r}");
    }
    assert_eq!(c.code("QUIT"), 221);

    // Postfix hands all three to mx2 (over TLS) while the primary is down.
    wait_until_showing(
        "Postfix to hand its queue to mx2",
        Duration::from_secs(60),
        || sender.queued() == 0,
        || format!("{}\n--- mx2 ---\n{}", sender.log(), mx2.log()),
    );
    let log = sender.log();
    assert!(
        log.matches("status=sent").count() == 4 && log.contains("TLS connection established to"),
        "{log}"
    );
    let (rc, out, err) = mx2_command(&["queue", "list", "--json"], &mx2.config);
    assert_eq!(rc, 0, "{}", String::from_utf8_lossy(&err));
    let listed: serde_json::Value = serde_json::from_slice(&out).unwrap();
    assert_eq!(listed.as_array().map(Vec::len), Some(3), "{listed}");

    // The primary comes back: mx2 delivers everything without a command.
    let back = Instant::now();
    let primary = primary(primary_port, &pki, certs.path());
    wait_until_showing(
        "the Postfix primary to store every message",
        Duration::from_secs(60),
        || primary.maildir("user").len() == 2 && primary.maildir("other").len() == 2,
        || format!("{}\n--- mx2 ---\n{}", primary.log(), mx2.log()),
    );
    println!(
        "Postfix primary up → 4 mailbox deliveries in {} ms",
        back.elapsed().as_millis()
    );
    let plog = primary.log();
    assert!(
        plog.contains("TLS connection established from"),
        "mx2 did not use STARTTLS with the primary:\n{plog}"
    );

    // Every body arrives byte for byte (Maildir stores LF line ends), with mx2's trace.
    let expected: Vec<String> = texts
        .iter()
        .map(|t| t.split_once("\r\n\r\n").unwrap().1.replace("\r\n", "\n"))
        .collect();
    let subject_of = |m: &[u8]| {
        let t = String::from_utf8_lossy(m).into_owned();
        t.lines()
            .find_map(|l| l.strip_prefix("Subject: ").map(str::to_string))
            .unwrap_or_default()
    };
    let mut delivered = primary.maildir("user");
    delivered.extend(primary.maildir("other"));
    for m in &delivered {
        let i = match subject_of(m).as_str() {
            "plain" => 0,
            "eight bit" => 1,
            "blank end" => 2,
            other => panic!("unexpected message {other:?}"),
        };
        assert_eq!(body(m), expected[i], "body of {:?} changed", subject_of(m));
        let text = String::from_utf8_lossy(m);
        assert!(
            text.contains("by mx2.test") && text.contains("Return-Path: <alice@sender.test>"),
            "{text}"
        );
    }

    // mx2 is idle again.
    wait_until_showing(
        "mx2's queue to empty",
        Duration::from_secs(30),
        || {
            let (_, out, _) = mx2_command(&["queue", "list", "--json"], &mx2.config);
            serde_json::from_slice::<serde_json::Value>(&out)
                .is_ok_and(|v| v.as_array().is_some_and(Vec::is_empty))
        },
        || mx2.log(),
    );
}

#[test]
fn recipient_callouts_ask_a_postfix_primary() {
    let pki = Pki::new();
    let certs = tempfile::tempdir().unwrap();
    let primary_port = free_port();
    let primary = primary(primary_port, &pki, certs.path());
    let mx2 = mx2(&pki, primary_port, "\"verify\"");

    let mut c = mx2.client();
    assert_eq!(c.code("EHLO client.test"), 250);
    assert_eq!(c.code("MAIL FROM:<alice@sender.test>"), 250);
    let unknown = c.cmd("RCPT TO:<nobody@example.test>");
    assert!(unknown.starts_with("550 5.1.1"), "{unknown}");
    let known = c.cmd("RCPT TO:<user@example.test>");
    assert_eq!(code(&known), 250, "{known}");
    assert_eq!(c.code("DATA"), 354);
    c.send_raw(b"Subject: verified\r\n\r\nchecked with the primary\r\n.\r\n");
    let r = c.reply();
    assert_eq!(code(&r), 250, "{r}");
    assert_eq!(c.code("QUIT"), 221);

    wait_until_showing(
        "the primary to store the message",
        Duration::from_secs(30),
        || primary.maildir("user").len() == 1,
        || format!("{}\n--- mx2 ---\n{}", primary.log(), mx2.log()),
    );
    // The callout itself was a null-sender probe the primary answered, never a delivery.
    let plog = primary.log();
    assert!(
        plog.contains("nobody@example.test") && plog.contains("User unknown"),
        "{plog}"
    );
    assert!(primary.maildir("other").is_empty());
}
