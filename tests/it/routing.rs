//! MX routing against a local DNS server: the RFC 5321 §5.1 rule, mx2 as best MX, equal
//! preferences, implicit MX, null MX.

use crate::common::dns::{DnsServer, Rec};
use crate::common::*;
use std::time::Duration;

/// mx2 routing example.test by MX through `dns`, contacting MX hosts on `mx_port`.
fn mx2_with_dns(dns: &DnsServer, mx_port: u16) -> Mx2 {
    let tail = format!(
        "{}\ntimeout = \"2s\"\n[routing]\nmx_port = {mx_port}\n[[domain]]\nname = \"example.test\"\nroute = \"mx\"\n",
        dns.table()
    );
    Mx2::start_config(|port, state| config_with(port, state, "", &tail))
}

fn send_one(mx2: &Mx2, id: &str) {
    let mut c = mx2.client();
    c.cmd("EHLO client.test");
    let r = c.send_mail(
        "a@sender.test",
        &["user@example.test"],
        &message(id, "routed"),
    );
    assert!(r.starts_with("250"), "{r}");
}

/// An MX host whose address lookup fails drops out of the list; the others still get the
/// mail (RFC 5321 §5.1), instead of the whole domain being held.
#[test]
fn an_mx_host_that_cannot_be_looked_up_is_skipped() {
    let port = free_port();
    let dns = DnsServer::start(&[
        ("example.test", Rec::Mx(10, "broken.example.test")),
        ("example.test", Rec::Mx(10, "primary.example.test")),
        ("example.test", Rec::Mx(20, "mx2.test")),
        ("broken.example.test", Rec::ServFail),
        ("primary.example.test", Rec::Ip("127.0.0.2")),
        ("mx2.test", Rec::Ip("127.0.0.9")),
    ]);
    let primary = Primary::start_on("127.0.0.2", port, PrimaryOptions::default());
    let mx2 = mx2_with_dns(&dns, port);
    send_one(&mx2, "servfail");
    assert_eq!(
        primary.wait_for(1, Duration::from_secs(15)).len(),
        1,
        "log:\n{}",
        mx2.log()
    );
}

#[test]
fn delivers_only_to_hosts_more_preferred_than_itself() {
    let port = free_port();
    let dns = DnsServer::start(&[
        ("example.test", Rec::Mx(10, "primary.example.test")),
        ("example.test", Rec::Mx(20, "mx2.test")),
        ("example.test", Rec::Mx(30, "third.example.test")),
        ("primary.example.test", Rec::Ip("127.0.0.2")),
        ("mx2.test", Rec::Ip("127.0.0.9")),
        ("third.example.test", Rec::Ip("127.0.0.3")),
    ]);
    let primary = Primary::start_on("127.0.0.2", port, PrimaryOptions::default());
    let third = Primary::start_on("127.0.0.3", port, PrimaryOptions::default());
    let mx2 = mx2_with_dns(&dns, port);
    send_one(&mx2, "pref");
    assert_eq!(
        primary.wait_for(1, Duration::from_secs(10)).len(),
        1,
        "log:\n{}",
        mx2.log()
    );
    // The primary goes away: mx2 holds the mail; it never falls back to a less preferred MX.
    drop(primary);
    send_one(&mx2, "held");
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(
        third.connections(),
        0,
        "mx2 delivered to an MX less preferred than itself"
    );
    assert!(mx2.log().contains("primary is down"), "log:\n{}", mx2.log());
}

#[test]
fn best_mx_holds_and_flags_misconfiguration() {
    let port = free_port();
    let dns = DnsServer::start(&[
        ("example.test", Rec::Mx(10, "mx2.test")),
        ("example.test", Rec::Mx(10, "peer.example.test")),
        ("mx2.test", Rec::Ip("127.0.0.9")),
        ("peer.example.test", Rec::Ip("127.0.0.2")),
    ]);
    let peer = Primary::start_on("127.0.0.2", port, PrimaryOptions::default());
    let mx2 = mx2_with_dns(&dns, port);
    send_one(&mx2, "best");
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(
        peer.connections(),
        0,
        "a host of equal preference got the mail"
    );
    assert!(
        mx2.log()
            .contains("misconfigured: this server is the best MX"),
        "log:\n{}",
        mx2.log()
    );
}

#[test]
fn equal_preferences_are_spread() {
    let port = free_port();
    let dns = DnsServer::start(&[
        ("example.test", Rec::Mx(10, "a.example.test")),
        ("example.test", Rec::Mx(10, "b.example.test")),
        ("example.test", Rec::Mx(50, "mx2.test")),
        ("a.example.test", Rec::Ip("127.0.0.2")),
        ("b.example.test", Rec::Ip("127.0.0.3")),
        ("mx2.test", Rec::Ip("127.0.0.9")),
    ]);
    let a = Primary::start_on("127.0.0.2", port, PrimaryOptions::default());
    let b = Primary::start_on("127.0.0.3", port, PrimaryOptions::default());
    let mx2 = mx2_with_dns(&dns, port);
    for i in 0..16 {
        send_one(&mx2, &format!("spread{i}"));
        // Wait for this one so that each message gets a connection (and a draw) of its own.
        let start = std::time::Instant::now();
        while a.messages().len() + b.messages().len() <= i
            && start.elapsed() < Duration::from_secs(10)
        {
            std::thread::sleep(Duration::from_millis(10));
        }
    }
    let (na, nb) = (a.messages().len(), b.messages().len());
    println!("equal-preference MX hosts got {na} and {nb} of 16 messages");
    assert_eq!(na + nb, 16, "log:\n{}", mx2.log());
    assert!(na > 0 && nb > 0, "all mail went to one host: {na}/{nb}");
}

#[test]
fn no_mx_falls_back_to_the_domains_address() {
    let port = free_port();
    let dns = DnsServer::start(&[("example.test", Rec::Ip("127.0.0.2"))]);
    let primary = Primary::start_on("127.0.0.2", port, PrimaryOptions::default());
    let mx2 = mx2_with_dns(&dns, port);
    send_one(&mx2, "implicit");
    assert_eq!(
        primary.wait_for(1, Duration::from_secs(10)).len(),
        1,
        "log:\n{}",
        mx2.log()
    );
}

#[test]
fn null_mx_is_a_permanent_failure() {
    let dns = DnsServer::start(&[("example.test", Rec::NullMx)]);
    let mx2 = mx2_with_dns(&dns, free_port());
    send_one(&mx2, "nullmx");
    let start = std::time::Instant::now();
    while !mx2.log().contains("5.1.10") && start.elapsed() < Duration::from_secs(10) {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(
        mx2.log().contains("failed permanently"),
        "log:\n{}",
        mx2.log()
    );
}
