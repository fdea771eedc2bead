//! MTA-STS and TLS-RPT on delivery (RFC 8461, RFC 8460), with the real binary: policies
//! served over HTTPS by a test server (its certificate from the test CA, passed to mx2 as
//! `[delivery] mta_sts_ca_file`), `_mta-sts`, `_smtp._tls` and MX records from the test DNS
//! server, one TLS primary on loopback behind every MX name. `enforce` holds mail for an MX
//! host the policy does not list and for a certificate not valid for the MX name, and says
//! why, for notifications to a sender's MX hosts too; `testing` delivers and counts the
//! failure; the cached policy still holds after the policy server is gone and mx2
//! restarted; the day's TLS report is mailed and posted (https: rua), and parses.

use crate::common::dns::{DnsServer, Rec};
use crate::common::pki::Pki;
use crate::common::sts::PolicyServer;
use crate::common::*;
use mail_parser::{MessageParser, MimeHeaders};
use std::io::Read;
use std::time::Duration;

const POLICY_IP: &str = "127.0.0.8";
/// Where https: reports are posted.
const REPORTS_IP: &str = "127.0.0.11";

pub(crate) fn policy(mode: &str, mx: &str) -> String {
    format!("version: STSv1\r\nmode: {mode}\r\nmx: {mx}\r\nmax_age: 86400\r\n")
}

fn send(mx2: &Mx2, rcpt: &str, id: &str) {
    let mut c = mx2.client();
    c.cmd("EHLO client.test");
    let r = c.send_mail("a@sender.test", &[rcpt], &message(id, "under a policy"));
    assert!(r.starts_with("250"), "{r}");
}

/// The queue listing (JSON) of the mail to `rcpt`.
pub(crate) fn listing(mx2: &Mx2, rcpt: &str) -> String {
    mx2_text(
        &["queue", "list", "--json", "--recipient", rcpt],
        &mx2.config,
    )
    .1
}

fn wait_held(mx2: &Mx2, rcpt: &str, reason: &str) {
    wait_until_showing(
        &format!("{rcpt} held with `{reason}`"),
        Duration::from_secs(20),
        || listing(mx2, rcpt).contains(reason),
        || format!("{}\n{}", listing(mx2, rcpt), mx2.log()),
    );
}

fn gunzip_json(gz: &[u8]) -> serde_json::Value {
    let mut json = String::new();
    mail_auth::flate2::read::GzDecoder::new(gz)
        .read_to_string(&mut json)
        .expect("gzip");
    serde_json::from_str(&json).expect("JSON")
}

/// The TLS report mail's JSON, gunzipped from its `application/tlsrpt+gzip` part.
fn report_json(mail: &[u8]) -> serde_json::Value {
    let m = MessageParser::default().parse(mail).expect("a mail");
    let ct = m.content_type().expect("a content type");
    assert_eq!(
        (ct.ctype(), ct.subtype(), ct.attribute("report-type")),
        ("multipart", Some("report"), Some("tlsrpt"))
    );
    let part = m
        .attachments()
        .find(|a| {
            a.content_type()
                .is_some_and(|c| c.subtype() == Some("tlsrpt+gzip"))
        })
        .expect("an application/tlsrpt+gzip part");
    gunzip_json(part.contents())
}

#[test]
fn policies_hold_test_report_and_outlive_their_server() {
    let pki = Pki::new();
    let dir = tempfile::tempdir().unwrap();
    let ca = pki.write_ca(dir.path());
    let port = free_port();
    // Every MX name leads here; the certificate is valid for mx.good.sts.test only.
    let primary = Primary::start_on(
        "127.0.0.1",
        port,
        PrimaryOptions {
            tls: Some(pki.server_config(dir.path(), &["mx.good.sts.test"])),
            ..PrimaryOptions::rejecting("5.1.1 no such user")
        },
    );
    let mut records = vec![
        (
            "_smtp._tls.testing.sts.test",
            Rec::Txt("v=TLSRPTv1; rua=mailto:tlsrpt@reports.test,https://tlsrpt.reports.test/v1"),
        ),
        ("tlsrpt.reports.test", Rec::Ip(REPORTS_IP)),
        ("reports.test", Rec::Mx(10, "mx.reports.test")),
        ("mx.reports.test", Rec::Ip("127.0.0.1")),
        ("unlisted.sts.test", Rec::Mx(10, "mx.unlisted.sts.test")),
        ("wrongcert.sts.test", Rec::Mx(10, "mx.wrongcert.sts.test")),
        ("testing.sts.test", Rec::Mx(10, "mx.testing.sts.test")),
        ("good.sts.test", Rec::Mx(10, "mx.good.sts.test")),
        // A sender's domain: its notifications go to its MX hosts under its policy.
        ("strict.sts.test", Rec::Mx(10, "mx.strict.sts.test")),
    ];
    for d in [
        "unlisted.sts.test",
        "wrongcert.sts.test",
        "testing.sts.test",
        "good.sts.test",
        "strict.sts.test",
    ] {
        let name = |prefix: &str| -> &'static str { format!("{prefix}.{d}").leak() };
        records.push((name("mx"), Rec::Ip("127.0.0.1")));
        records.push((name("_mta-sts"), Rec::Txt("v=STSv1; id=1;")));
        records.push((name("mta-sts"), Rec::Ip(POLICY_IP)));
    }
    let dns = DnsServer::start(&records);
    let names = [
        "mta-sts.unlisted.sts.test",
        "mta-sts.wrongcert.sts.test",
        "mta-sts.testing.sts.test",
        "mta-sts.good.sts.test",
        "mta-sts.strict.sts.test",
    ];
    let mut server = PolicyServer::start(
        POLICY_IP,
        pki.server_config(dir.path(), &names),
        &[
            (names[0], &policy("enforce", "mx.elsewhere.test")),
            (names[1], &policy("enforce", "mx.wrongcert.sts.test")),
            (names[2], &policy("testing", "mx.testing.sts.test")),
            (names[3], &policy("enforce", "*.good.sts.test")),
            (names[4], &policy("enforce", "mx.elsewhere.test")),
        ],
    );
    let reports = PolicyServer::start(
        REPORTS_IP,
        pki.server_config(dir.path(), &["tlsrpt.reports.test"]),
        &[],
    );
    let tail = format!(
        "[dns]\nnameservers = [\"{}\"]\ntimeout = \"2s\"\n[routing]\nmx_port = {port}\n\
         [delivery]\nconnect_timeout = \"2s\"\ncommand_timeout = \"5s\"\nmta_sts_ca_file = \"{}\"\n\
         [tls_reports]\nenabled = true\norganization = \"Backup Org\"\ncontact = \"ops@mx2.test\"\n\
         [[domain]]\nname = \"unlisted.sts.test\"\nroute = \"mx\"\n\
         [[domain]]\nname = \"wrongcert.sts.test\"\nroute = \"mx\"\n\
         [[domain]]\nname = \"testing.sts.test\"\nroute = \"mx\"\ntls = \"mta-sts\"\n\
         [[domain]]\nname = \"good.sts.test\"\nroute = \"mx\"\n",
        dns.addr,
        ca.display()
    );
    let mut mx2 = Mx2::start_config(|p, state| config_with(p, state, "", &tail));

    send(&mx2, "u@unlisted.sts.test", "unlisted");
    send(&mx2, "w@wrongcert.sts.test", "wrongcert");
    send(&mx2, "t@testing.sts.test", "testing");
    send(&mx2, "g@good.sts.test", "good");
    // Refused by the primary: the bounce to the sender's domain is held by that domain's
    // policy like any other mail.
    let mut c = mx2.client();
    c.cmd("EHLO client.test");
    let r = c.send_mail(
        "s@strict.sts.test",
        &["nobody@good.sts.test"],
        &message("bounced", "to a user the primary does not know"),
    );
    assert!(r.starts_with("250"), "{r}");
    // enforce: an MX host the policy does not list, and a certificate for another name.
    wait_held(
        &mx2,
        "u@unlisted.sts.test",
        "MTA-STS enforce: mx.unlisted.sts.test not in policy",
    );
    wait_held(
        &mx2,
        "w@wrongcert.sts.test",
        "MTA-STS enforce: mx.wrongcert.sts.test",
    );
    let held = listing(&mx2, "w@wrongcert.sts.test");
    assert!(held.contains("certificate"), "{held}");
    // testing delivers despite the wrong certificate; enforce delivers to a listed host with
    // a valid certificate, inside TLS.
    let got = primary.wait_for(2, Duration::from_secs(20));
    let mut ids: Vec<String> = got.iter().map(|m| m.id()).collect();
    ids.sort();
    assert_eq!(ids, ["good", "testing"], "log:\n{}", mx2.log());
    assert!(got.iter().all(|m| m.tls));
    assert!(
        mx2.log().contains("MTA-STS testing"),
        "the testing failure is logged:\n{}",
        mx2.log()
    );
    assert!(!got.iter().any(|m| {
        m.rcpts
            .iter()
            .any(|r| r.contains("unlisted") || r.contains("wrongcert"))
    }));
    wait_held(
        &mx2,
        "s@strict.sts.test",
        "MTA-STS enforce: mx.strict.sts.test not in policy",
    );
    let fetched = server.served();
    assert_eq!(fetched, 5, "each policy fetched once, then cached");

    // The policy server goes away and mx2 restarts: the cached policies still apply. The
    // counters are moved back a day so that the restarted server reports them.
    mx2.terminate();
    server.stop();
    let db = rusqlite::Connection::open(mx2.dir.join("state").join("queue.sqlite")).unwrap();
    let moved = db
        .execute("UPDATE tlsrpt_counts SET day = day - 1", [])
        .unwrap();
    assert!(moved >= 2, "sessions were counted");
    drop(db);
    let restarted_at = mx2.log().len();
    mx2.spawn();
    send(&mx2, "u2@unlisted.sts.test", "unlisted2");
    send(&mx2, "g2@good.sts.test", "good2");
    // Without the cached policy, mx.unlisted.sts.test would now be used (no policy: any
    // host, opportunistic TLS); with it, the route's checks keep failing on the policy.
    wait_until_showing(
        "the cached policy refusing mx.unlisted.sts.test after the restart",
        Duration::from_secs(20),
        || {
            mx2.log()[restarted_at..]
                .contains("MTA-STS enforce: mx.unlisted.sts.test not in policy")
        },
        || mx2.log(),
    );
    // The report for testing.sts.test: one session, failed on the certificate.
    let got = primary.wait_for(4, Duration::from_secs(20));
    let report = got
        .iter()
        .find(|m| m.rcpts.iter().any(|r| r == "tlsrpt@reports.test"))
        .unwrap_or_else(|| panic!("no TLS report delivered; log:\n{}", mx2.log()));
    assert!(got.iter().any(|m| m.id() == "good2"));
    assert!(
        !got.iter().any(|m| m.id().starts_with("unlisted")),
        "mail went to an MX host outside the cached policy"
    );
    assert!(listing(&mx2, "u2@unlisted.sts.test").contains("u2@unlisted.sts.test"));
    let v = report_json(&report.body);
    assert_eq!(v["organization-name"], "Backup Org");
    assert_eq!(v["contact-info"], "ops@mx2.test");
    let policies = v["policies"].as_array().unwrap();
    assert_eq!(policies.len(), 1, "{v:#}");
    let p = &policies[0];
    assert_eq!(p["policy"]["policy-type"], "sts");
    assert_eq!(p["policy"]["policy-domain"], "testing.sts.test");
    assert_eq!(p["policy"]["mx-host"][0], "mx.testing.sts.test");
    assert_eq!(p["summary"]["total-successful-session-count"], 0);
    assert_eq!(p["summary"]["total-failure-session-count"], 1);
    let f = &p["failure-details"][0];
    assert_eq!(f["result-type"], "certificate-host-mismatch", "{v:#}");
    assert_eq!(f["receiving-mx-hostname"], "mx.testing.sts.test");
    assert_eq!(f["failed-session-count"], 1);
    assert_eq!(server.served(), fetched);
    // The same report, posted to the https: address.
    let posts = reports.posts();
    assert_eq!(posts.len(), 1, "{posts:?}");
    let (path, content_type, body) = &posts[0];
    assert_eq!(
        (path.as_str(), content_type.as_str()),
        ("/v1", "application/tlsrpt+gzip")
    );
    assert_eq!(gunzip_json(body), v);
}
