//! Delivery status notifications, end to end: bounces for 5xx and expired mail reach the
//! sender's MX (found through the test DNS server) from <>, parsed back with mail-parser.

use crate::common::dns::{DnsServer, Rec};
use crate::common::*;
use mail_parser::{MessageParser, MimeHeaders};
use std::sync::Arc;
use std::time::Duration;

struct Setup {
    mx2: Mx2,
    primary: Primary,
    sender_mx: Primary,
    _dns: DnsServer,
}

/// example.test is backed up with a static primary; sender.test's MX is another test server.
fn setup(primary_opts: PrimaryOptions, queue_extra: &str, primary_up: bool) -> Setup {
    let port = free_port();
    let dns = DnsServer::start(&[
        ("sender.test", Rec::Mx(10, "mail.sender.test")),
        ("mail.sender.test", Rec::Ip("127.0.0.4")),
    ]);
    let sender_mx = Primary::start_on("127.0.0.4", port, PrimaryOptions::default());
    let primary = if primary_up {
        Primary::start_on("127.0.0.1", port, primary_opts)
    } else {
        Primary::start_on("127.0.0.5", port, primary_opts)
    };
    let tail = format!(
        "{queue_extra}\n{}\n[routing]\nmx_port = {port}\n[[domain]]\nname = \"example.test\"\nprimary = [\"127.0.0.1:{port}\"]\n",
        dns.table()
    );
    let mx2 = Mx2::start_tail(&tail);
    Setup {
        mx2,
        primary,
        sender_mx,
        _dns: dns,
    }
}

fn rejecting() -> PrimaryOptions {
    PrimaryOptions::rejecting("5.1.1 <nobody@example.test>: no such user")
}

/// The delivery-status part's text and the returned original (or its headers).
fn parse_report(raw: &[u8]) -> (String, String, String) {
    let m = MessageParser::default().parse(raw).expect("DSN parses");
    let ct = m.content_type().expect("content type");
    assert_eq!((ct.ctype(), ct.subtype()), ("multipart", Some("report")));
    assert_eq!(ct.attribute("report-type"), Some("delivery-status"));
    let mut status = None;
    let mut original = None;
    for part in &m.parts {
        if let Some(pct) = part.content_type() {
            match (pct.ctype(), pct.subtype().unwrap_or("")) {
                ("message", "delivery-status") => {
                    status = Some(String::from_utf8_lossy(part.contents()).into_owned())
                }
                ("message", "rfc822") | ("text", "rfc822-headers") => {
                    original = Some((
                        format!("{}/{}", pct.ctype(), pct.subtype().unwrap_or("")),
                        String::from_utf8_lossy(part.contents()).into_owned(),
                    ))
                }
                _ => {}
            }
        }
    }
    let (kind, original) = original.expect("original part");
    (status.expect("delivery-status part"), kind, original)
}

#[test]
fn a_permanent_failure_is_bounced_to_the_sender() {
    let s = setup(rejecting(), "", true);
    let mut c = s.mx2.client();
    c.cmd("EHLO client.test");
    assert_eq!(c.code("MAIL FROM:<alice@sender.test> ENVID=env+2B42"), 250);
    assert_eq!(
        c.code("RCPT TO:<nobody@example.test> ORCPT=rfc822;nobody@example.test"),
        250
    );
    assert_eq!(c.code("RCPT TO:<user@example.test>"), 250);
    assert_eq!(c.code("DATA"), 354);
    c.send_raw(&message("bounceme", "please bounce"));
    assert!(c.cmd(".").starts_with("250"));
    let delivered = s.primary.wait_for(1, Duration::from_secs(10));
    assert_eq!(delivered[0].rcpts, vec!["user@example.test"]);
    let dsns = s.sender_mx.wait_for(1, Duration::from_secs(10));
    assert_eq!(dsns.len(), 1, "log:\n{}", s.mx2.log());
    let dsn = &dsns[0];
    assert_eq!(dsn.mail_from, "", "notifications come from the null sender");
    assert_eq!(dsn.rcpts, vec!["alice@sender.test"]);
    let (status, kind, original) = parse_report(&dsn.body);
    assert!(status.contains("Reporting-MTA: dns; mx2.test"), "{status}");
    assert!(status.contains("Original-Envelope-Id: env+42"), "{status}");
    assert!(
        status.contains("Original-Recipient: rfc822; nobody@example.test"),
        "{status}"
    );
    assert!(
        status.contains("Final-Recipient: rfc822; nobody@example.test"),
        "{status}"
    );
    assert!(status.contains("Action: failed"), "{status}");
    assert!(status.contains("Status: 5.1.1"), "{status}");
    assert!(
        status.contains("Diagnostic-Code: smtp; 550 5.1.1"),
        "{status}"
    );
    assert!(
        !status.contains("user@example.test"),
        "the delivered recipient is not reported: {status}"
    );
    assert_eq!(kind, "message/rfc822");
    assert!(
        original.contains("Message-ID: <bounceme@test>") && original.contains("please bounce"),
        "{original}"
    );
}

#[test]
fn no_notification_for_null_sender_or_notify_never() {
    let s = setup(rejecting(), "", true);
    let mut c = s.mx2.client();
    c.cmd("EHLO client.test");
    assert!(
        c.send_mail("", &["nobody@example.test"], &message("nullsender", "x"))
            .starts_with("250")
    );
    assert_eq!(c.code("MAIL FROM:<alice@sender.test>"), 250);
    assert_eq!(c.code("RCPT TO:<nobody@example.test> NOTIFY=NEVER"), 250);
    assert_eq!(c.code("DATA"), 354);
    c.send_raw(&message("never", "x"));
    assert!(c.cmd(".").starts_with("250"));
    // A third message that does bounce shows the others had their chance.
    assert!(
        c.send_mail(
            "bob@sender.test",
            &["nobody@example.test"],
            &message("control", "x")
        )
        .starts_with("250")
    );
    let dsns_now = s
        .sender_mx
        .wait_and_settle(1, Duration::from_secs(10), Duration::from_secs(1));
    assert_eq!(dsns_now.len(), 1, "{dsns_now:?}");
    assert_eq!(dsns_now[0].rcpts, vec!["bob@sender.test"]);
}

#[test]
fn ret_hdrs_returns_headers_only() {
    let s = setup(rejecting(), "", true);
    let mut c = s.mx2.client();
    c.cmd("EHLO client.test");
    assert_eq!(c.code("MAIL FROM:<alice@sender.test> RET=HDRS"), 250);
    assert_eq!(c.code("RCPT TO:<nobody@example.test>"), 250);
    assert_eq!(c.code("DATA"), 354);
    c.send_raw(&message("hdrs", "secret body text"));
    assert!(c.cmd(".").starts_with("250"));
    let dsns = s.sender_mx.wait_for(1, Duration::from_secs(10));
    assert_eq!(dsns.len(), 1, "log:\n{}", s.mx2.log());
    let (_, kind, original) = parse_report(&dsns[0].body);
    assert_eq!(kind, "text/rfc822-headers");
    assert!(original.contains("Message-ID: <hdrs@test>"));
    assert!(!String::from_utf8_lossy(&dsns[0].body).contains("secret body text"));
}

#[test]
fn dsn_parameters_pass_to_a_dsn_primary_and_relayed_notice_otherwise() {
    // A primary that speaks DSN gets NOTIFY and ORCPT verbatim, and mx2 sends nothing itself.
    let s = setup(
        PrimaryOptions {
            dsn: true,
            ..Default::default()
        },
        "",
        true,
    );
    let mut c = s.mx2.client();
    c.cmd("EHLO client.test");
    assert_eq!(
        c.code("MAIL FROM:<alice@sender.test> RET=FULL ENVID=e1"),
        250
    );
    assert_eq!(
        c.code("RCPT TO:<user@example.test> NOTIFY=SUCCESS,FAILURE ORCPT=utf-8;user@example.test"),
        250
    );
    assert_eq!(c.code("DATA"), 354);
    c.send_raw(&message("dsnparams", "x"));
    assert!(c.cmd(".").starts_with("250"));
    let got = s.primary.wait_for(1, Duration::from_secs(10));
    assert!(
        got[0].mail_params.contains("RET=FULL") && got[0].mail_params.contains("ENVID=e1"),
        "{}",
        got[0].mail_params
    );
    assert_eq!(
        got[0].rcpt_params,
        vec!["NOTIFY=SUCCESS,FAILURE ORCPT=utf-8;user@example.test"]
    );
    std::thread::sleep(Duration::from_millis(500));
    assert!(s.sender_mx.messages().is_empty());

    // A primary without DSN: NOTIFY=SUCCESS gets a "relayed" notification from mx2.
    let s = setup(PrimaryOptions::default(), "", true);
    let mut c = s.mx2.client();
    c.cmd("EHLO client.test");
    assert_eq!(c.code("MAIL FROM:<alice@sender.test>"), 250);
    assert_eq!(c.code("RCPT TO:<user@example.test> NOTIFY=SUCCESS"), 250);
    assert_eq!(c.code("DATA"), 354);
    c.send_raw(&message("relayed", "x"));
    assert!(c.cmd(".").starts_with("250"));
    let got = s.primary.wait_for(1, Duration::from_secs(10));
    assert_eq!(
        got[0].rcpt_params,
        vec![""],
        "no DSN parameters to a primary that does not speak DSN"
    );
    let dsns = s.sender_mx.wait_for(1, Duration::from_secs(10));
    assert_eq!(dsns.len(), 1, "log:\n{}", s.mx2.log());
    let (status, _, _) = parse_report(&dsns[0].body);
    assert!(
        status.contains("Action: relayed") && status.contains("Status: 2.0.0"),
        "{status}"
    );
}

#[test]
fn expired_mail_is_bounced_and_delay_warned_first() {
    // The primary never comes up; lifetime 6 s, delay warning after 1 s.
    let s = setup(
        PrimaryOptions::default(),
        "[queue]\nretry_min = \"1s\"\nretry_max = \"2s\"\nlifetime = \"6s\"\ndelay_warning = \"1s\"",
        false,
    );
    let mut c = s.mx2.client();
    c.cmd("EHLO client.test");
    assert!(
        c.send_mail(
            "alice@sender.test",
            &["user@example.test"],
            &message("expire", "x")
        )
        .starts_with("250")
    );
    let dsns = s.sender_mx.wait_for(2, Duration::from_secs(20));
    assert_eq!(dsns.len(), 2, "log:\n{}", s.mx2.log());
    let (first, _, _) = parse_report(&dsns[0].body);
    assert!(first.contains("Action: delayed"), "{first}");
    let (second, _, _) = parse_report(&dsns[1].body);
    assert!(
        second.contains("Action: failed") && second.contains("Status: 4.4.7"),
        "{second}"
    );
    assert!(s.primary.messages().is_empty());
}

/// Sends one message for example.test and returns when it was accepted.
fn send_one(s: &Setup, id: &str) -> std::time::Instant {
    let mut c = s.mx2.client();
    c.cmd("EHLO client.test");
    let r = c.send_mail(
        "alice@sender.test",
        &["user@example.test"],
        &message(id, "x"),
    );
    assert!(r.starts_with("250"), "{r}");
    std::time::Instant::now()
}

/// The expiry notice comes at the lifetime, not one retry interval later: with lifetime 4 s
/// and retries 30 s to 1 min apart, the sender hears within a few seconds of 4 s.
fn expires_within_seconds_of_its_lifetime(primary: PrimaryOptions, primary_up: bool, case: &str) {
    let lifetime = Duration::from_secs(4);
    let s = setup(
        primary,
        "[queue]\nretry_min = \"30s\"\nretry_max = \"1m\"\nlifetime = \"4s\"",
        primary_up,
    );
    let accepted = send_one(&s, case);
    let dsns = s.sender_mx.wait_for(1, lifetime + Duration::from_secs(15));
    let took = accepted.elapsed();
    println!("{case}: expiry notice {took:?} after acceptance (lifetime {lifetime:?})");
    assert_eq!(dsns.len(), 1, "{case}: no notice; log:\n{}", s.mx2.log());
    let (status, _, _) = parse_report(&dsns[0].body);
    assert!(
        status.contains("Action: failed") && status.contains("Status: 4.4.7"),
        "{case}: {status}"
    );
    assert!(
        took >= lifetime - Duration::from_millis(500) && took <= lifetime + Duration::from_secs(4),
        "{case}: expired {took:?} after acceptance, lifetime {lifetime:?}; log:\n{}",
        s.mx2.log()
    );
}

#[test]
fn mail_deferred_by_the_primary_expires_at_its_lifetime() {
    let deferring = PrimaryOptions {
        rcpt: Arc::new(|_, _| (451, "4.3.0 try again later")),
        ..Default::default()
    };
    expires_within_seconds_of_its_lifetime(deferring, true, "4xx");
}

#[test]
fn mail_held_for_a_down_primary_expires_at_its_lifetime() {
    expires_within_seconds_of_its_lifetime(PrimaryOptions::default(), false, "down");
}
