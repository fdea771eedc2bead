//! Sender authentication at reception: SPF against the local DNS server, the
//! Authentication-Results header, the `authenticated` bounce policy, and DMARC p=reject.

use crate::common::dns::{DnsServer, Rec};
use crate::common::*;
use std::time::Duration;

fn dns() -> DnsServer {
    DnsServer::start(&[
        ("good.test", Rec::Txt("v=spf1 ip4:127.0.0.1 -all")),
        ("good.test", Rec::Mx(10, "mail.senders.test")),
        ("bad.test", Rec::Txt("v=spf1 ip4:192.0.2.1 -all")),
        ("bad.test", Rec::Mx(10, "mail.senders.test")),
        ("_dmarc.bad.test", Rec::Txt("v=DMARC1; p=reject")),
        ("mail.senders.test", Rec::Ip("127.0.0.4")),
    ])
}

fn mx2_with_auth(dns: &DnsServer, port: u16, extra: &str) -> Mx2 {
    let tail = format!(
        "[auth]\nenabled = true\n{extra}\n{}\n[routing]\nmx_port = {port}\n[[domain]]\nname = \"example.test\"\nprimary = [\"127.0.0.1:{port}\"]\n",
        dns.table()
    );
    // Up to 3 MB: large enough for content past the 1 MiB that sender authentication reads.
    Mx2::start_config(|port, state| {
        crate::common::config::config_with(port, state, "", &tail)
            .replace("max_message_size = \"1MB\"", "max_message_size = \"3MB\"")
    })
}

fn content(from: &str, id: &str) -> Vec<u8> {
    format!("From: <{from}>\r\nTo: <user@example.test>\r\nSubject: auth {id}\r\nMessage-ID: <{id}@test>\r\n\r\nbody\r\n").into_bytes()
}

#[test]
fn spf_results_and_the_authenticated_bounce_policy() {
    let dns = dns();
    let port = free_port();
    let rejecting = PrimaryOptions::rejecting("5.1.1 no such user");
    let primary = Primary::start_on("127.0.0.1", port, rejecting);
    let senders_mx = Primary::start_on("127.0.0.4", port, PrimaryOptions::default());
    let mx2 = mx2_with_auth(&dns, port, "");
    let mut c = mx2.client();
    c.cmd("EHLO client.test");
    assert!(
        c.send_mail(
            "alice@good.test",
            &["user@example.test"],
            &content("alice@good.test", "pass")
        )
        .starts_with("250")
    );
    assert!(
        c.send_mail(
            "alice@good.test",
            &["nobody@example.test"],
            &content("alice@good.test", "bounce-good")
        )
        .starts_with("250")
    );
    assert!(
        c.send_mail(
            "mallory@bad.test",
            &["nobody@example.test"],
            &content("mallory@bad.test", "bounce-bad")
        )
        .starts_with("250")
    );
    let got = primary.wait_for(2, Duration::from_secs(15));
    let delivered = got
        .iter()
        .find(|m| m.header("Message-ID").as_deref() == Some("<pass@test>"))
        .expect("delivered");
    let ar = delivered
        .header("Authentication-Results")
        .unwrap_or_default();
    assert!(
        ar.starts_with("mx2.test") && ar.contains("spf=pass"),
        "{ar}"
    );
    // A bounce for the SPF-passing sender goes to the sender...
    let to_sender = senders_mx.wait_for(1, Duration::from_secs(10));
    assert_eq!(to_sender.len(), 1, "log:\n{}", mx2.log());
    assert_eq!(to_sender[0].rcpts, vec!["alice@good.test"]);
    // ...and the one for the forged sender to the domain's postmaster, not to the victim.
    let to_postmaster = got
        .iter()
        .find(|m| m.rcpts == vec!["postmaster@example.test"])
        .expect("postmaster notification");
    assert_eq!(to_postmaster.mail_from, "");
    std::thread::sleep(Duration::from_millis(500));
    assert!(
        senders_mx
            .messages()
            .iter()
            .all(|m| m.rcpts != vec!["mallory@bad.test"]),
        "backscatter to a forged sender"
    );
}

#[test]
fn dmarc_reject_is_enforced_when_asked() {
    let dns = dns();
    let port = free_port();
    let primary = Primary::start_on("127.0.0.1", port, PrimaryOptions::default());
    let mx2 = mx2_with_auth(&dns, port, "dmarc_reject = true");
    let mut c = mx2.client();
    c.cmd("EHLO client.test");
    let r = c.send_mail(
        "mallory@bad.test",
        &["user@example.test"],
        &content("ceo@bad.test", "spoof"),
    );
    assert!(r.starts_with("550 5.7.1"), "{r}");
    assert!(
        c.send_mail(
            "alice@good.test",
            &["user@example.test"],
            &content("alice@good.test", "fine")
        )
        .starts_with("250")
    );
    // Content past the memory threshold is spooled to a file; up to 1 MiB it is read back
    // and DMARC still applies...
    let padded = |id: &str, bytes: usize| {
        let mut m = content("ceo@bad.test", id);
        let line = format!("{}\r\n", "x".repeat(76));
        m.extend(line.repeat(bytes / line.len()).into_bytes());
        m
    };
    let r = c.send_mail(
        "mallory@bad.test",
        &["user@example.test"],
        &padded("spoof-600k", 600_000),
    );
    assert!(r.starts_with("550 5.7.1"), "a spooled 600 kB spoof: {r}");
    // ...past it, the message is judged by SPF alone, and its header says so.
    let r = c.send_mail(
        "mallory@bad.test",
        &["user@example.test"],
        &padded("spoof-2m", 2_000_000),
    );
    assert!(r.starts_with("250"), "{r}");
    let got = primary.wait_and_settle(2, Duration::from_secs(10), Duration::from_millis(300));
    assert_eq!(got.len(), 2);
    let ids: Vec<Option<String>> = got.iter().map(|m| m.header("Message-ID")).collect();
    assert!(ids.contains(&Some("<fine@test>".into())), "{ids:?}");
    let large = got
        .iter()
        .find(|m| m.header("Message-ID").as_deref() == Some("<spoof-2m@test>"))
        .expect("the 2 MB message delivered");
    let ar = large.header("Authentication-Results").unwrap_or_default();
    assert!(
        ar.contains("dkim=none (not verified: message of") && ar.contains("dmarc=none"),
        "{ar}"
    );
}
