//! Fire drills against the real binary: the tests' DNS server publishes the domain's MX
//! records (the primary first, mx2.test behind it, both on 127.0.0.1), a test primary takes
//! (or refuses) the relayed drill message, and `mx2 drill`, the API, `/metrics`, the
//! dashboard and the alert webhook report what happened.

use crate::admin::{scrape_with, webhook_receiver};
use crate::common::dns::{DnsServer, Rec};
use crate::common::pki::Pki;
use crate::common::*;
use serde_json::Value;
use std::time::Duration;

const DOMAIN: &str = "example.test";
const CANARY: &str = "mx2-drill@example.test";

/// example.test: MX 10 primary.test, MX 20 mx2.test (or only the primary).
fn zone(backup_listed: bool) -> DnsServer {
    let mut records = vec![
        (DOMAIN, Rec::Mx(10, "primary.test")),
        ("primary.test", Rec::Ip("127.0.0.1")),
        ("mx2.test", Rec::Ip("127.0.0.1")),
    ];
    if backup_listed {
        records.push((DOMAIN, Rec::Mx(20, "mx2.test")));
    }
    DnsServer::start(&records)
}

/// mx2 (hostname mx2.test) backing up example.test to primary.test:PORT.
fn start(dns: &DnsServer, primary_port: u16, domain_extra: &str, tables: &str) -> Mx2 {
    Mx2::start_config(|port, state| {
        config_with(
            port,
            state,
            "",
            &format!(
                "{}\ntimeout = \"500ms\"\n{tables}\n[[domain]]\nname = \"{DOMAIN}\"\nprimary = [\"primary.test:{primary_port}\"]\n{domain_extra}\n",
                dns.table()
            ),
        )
    })
}

fn run_drill(mx2: &Mx2) -> (u16, Value) {
    let (code, body) = http(
        "POST",
        &format!("{}/api/v1/drills/{DOMAIN}", mx2.admin_url()),
        None,
        Some("{}"),
    );
    (code, serde_json::from_str(&body).unwrap_or(Value::Null))
}

fn history(mx2: &Mx2) -> Vec<Value> {
    let (code, body) = http(
        "GET",
        &format!("{}/api/v1/drills/{DOMAIN}", mx2.admin_url()),
        None,
        None,
    );
    assert_eq!(code, 200, "{body}");
    let v: Value = serde_json::from_str(&body).unwrap();
    v["drills"].as_array().cloned().unwrap_or_default()
}

fn step<'v>(drill: &'v Value, name: &str) -> &'v Value {
    drill["steps"]
        .as_array()
        .and_then(|s| s.iter().find(|s| s["name"] == name))
        .unwrap_or_else(|| panic!("no step {name}: {drill:#}"))
}

fn primary_up(mx2: &Mx2) -> bool {
    let (_, body) = http(
        "GET",
        &format!("{}/api/v1/status", mx2.admin_url()),
        None,
        None,
    );
    let v: Value = serde_json::from_str(&body).unwrap_or_default();
    v["primaries"].as_array().into_iter().flatten().any(|p| {
        p["domains"]
            .as_array()
            .is_some_and(|d| d.iter().any(|d| d == DOMAIN))
            && p["up"] == true
    })
}

fn drill_messages(primary: &Primary) -> Vec<Received> {
    primary
        .messages()
        .into_iter()
        .filter(|m| m.header("X-Mx2-Drill").is_some())
        .collect()
}

#[test]
fn a_drill_through_an_accepting_primary_is_green_and_touches_nothing_else() {
    let dns = zone(true);
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new();
    let ca = pki.write_ca(dir.path());
    let mine = pki.leaf(dir.path(), "mx2", &["mx2.test"]);
    let primary_port = free_port();
    let mx2 = start(
        &dns,
        primary_port,
        &format!("tls_ca_file = \"{}\"", ca.display()),
        &format!(
            "[tls]\ncert = \"{}\"\nkey = \"{}\"",
            mine.cert.display(),
            mine.key.display()
        ),
    );
    // An ordinary message for the domain, held by the operator while the primary is away.
    let mut c = mx2.client();
    c.cmd("EHLO client.test");
    let reply = c.send_mail(
        "a@sender.test",
        &["user1@example.test"],
        &message("ordinary", "stays held"),
    );
    assert_eq!(code(&reply), 250, "{reply}");
    let id = reply.rsplit(' ').next().unwrap().trim().to_string();
    wait_until(
        "the primary to be found down",
        Duration::from_secs(10),
        || !primary_up(&mx2),
    );
    let (code_hold, out, err) = mx2_text(&["queue", "hold", &id], &mx2.config);
    assert_eq!(code_hold, 0, "{out}{err}");
    let primary = Primary::start_with(
        primary_port,
        PrimaryOptions {
            tls: Some(pki.server_config(dir.path(), &["primary.test"])),
            ..Default::default()
        },
    );
    wait_until(
        "the probe to find the primary up",
        Duration::from_secs(10),
        || primary_up(&mx2),
    );

    let (code, out, err) = mx2_text(&["drill", DOMAIN, "--json"], &mx2.config);
    assert_eq!(code, 0, "{out}{err}\n{}", mx2.log());
    let drill: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(drill["outcome"], "passed", "{drill:#}");
    let names: Vec<&str> = drill["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        [
            "primary",
            "mx",
            "connect",
            "tls_in",
            "recipient",
            "accepted",
            "held",
            "handoff",
            "tls_out"
        ]
    );
    for s in drill["steps"].as_array().unwrap() {
        assert_eq!(s["status"], "ok", "every step green: {drill:#}");
        assert!(s["ms"].is_u64(), "{s}");
    }
    assert!(
        drill["duration_ms"].as_u64().unwrap() >= 1000,
        "held a moment: {drill:#}"
    );
    let text = |name| step(&drill, name)["detail"].as_str().unwrap().to_string();
    assert!(
        text("mx")
            .contains("listed as mx2.test (preference 20), behind primary.test (preference 10)"),
        "{drill:#}"
    );
    assert!(
        text("tls_in").contains("certificate valid for mx2.test"),
        "{drill:#}"
    );
    assert!(text("recipient").contains(CANARY), "{drill:#}");
    assert!(
        text("handoff").contains("the primary took it: 250"),
        "{drill:#}"
    );
    assert!(
        text("tls_out").contains("TLS") && text("tls_out").contains("valid for primary.test"),
        "{drill:#}"
    );

    // The canary arrives once, with the drill header and the drill's Message-ID.
    let got = primary.wait_and_settle(1, Duration::from_secs(10), Duration::from_secs(2));
    let drills = drill_messages(&primary);
    assert_eq!(drills.len(), 1, "{got:?}");
    assert_eq!(got.len(), 1, "nothing else was delivered: {got:?}");
    assert_eq!(drills[0].rcpts, [CANARY]);
    assert_eq!(drills[0].mail_from, "");
    assert!(drills[0].tls, "relayed inside TLS");
    assert_eq!(
        drills[0].header("Message-ID").unwrap(),
        drill["message_id"].as_str().unwrap()
    );
    // The other message for the same domain is still held.
    let (_, body) = http(
        "GET",
        &format!("{}/api/v1/queue/{id}", mx2.admin_url()),
        None,
        None,
    );
    let shown: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(shown["recipients"][0]["held"], true, "{shown:#}");

    // The result is kept and shown everywhere.
    let (code, out, _) = mx2_text(&["drill", "--history", DOMAIN], &mx2.config);
    assert_eq!(code, 0);
    assert!(
        out.contains("Drill of example.test (manual") && out.contains("PASSED"),
        "{out}"
    );
    let m = scrape_with(&mx2.admin_url(), None);
    assert_eq!(m["mx2_drill_success{domain=\"example.test\"}"], 1.0);
    assert!(m["mx2_drill_last_timestamp_seconds{domain=\"example.test\"}"] > 1.7e9);
    assert!(m["mx2_drill_duration_seconds{domain=\"example.test\"}"] >= 1.0);
    let (_, page) = http("GET", &format!("{}/", mx2.admin_url()), None, None);
    assert!(
        page.contains("Last drill") && page.contains("example.test passed"),
        "{page}"
    );

    // Manual drills are rate-limited.
    let (code, body) = run_drill(&mx2);
    assert_eq!(code, 429, "{body}");
    assert!(
        body["error"]
            .as_str()
            .unwrap()
            .contains("one manual drill per domain per minute")
    );
    let (code, _, err) = mx2_text(&["drill", DOMAIN], &mx2.config);
    assert_eq!(code, 1);
    assert!(err.contains("try again in"), "{err}");
    assert_eq!(drill_messages(&primary).len(), 1);
}

#[test]
fn a_primary_refusing_relayed_mail_fails_the_handoff_with_advice_and_an_alert() {
    let dns = zone(true);
    let (hook, got) = webhook_receiver();
    let primary = Primary::start_with(
        free_port(),
        PrimaryOptions {
            mail_reply: Some("550 5.7.23 SPF fail"),
            ..Default::default()
        },
    );
    let mx2 = start(
        &dns,
        primary.port,
        "",
        &format!("[alerts]\nwebhook = \"http://127.0.0.1:{hook}/mx2\""),
    );
    let (code, drill) = run_drill(&mx2);
    assert_eq!(code, 200, "{drill}");
    assert_eq!(drill["outcome"], "failed", "{drill:#}");
    let handoff = step(&drill, "handoff");
    assert_eq!(handoff["status"], "fail");
    assert!(
        handoff["detail"]
            .as_str()
            .unwrap()
            .starts_with("the primary refuses mail relayed by mx2: 550 5.7.23 SPF fail"),
        "{drill:#}"
    );
    assert!(
        handoff["advice"]
            .as_str()
            .unwrap()
            .contains("exempt mx2's addresses")
    );
    for name in ["mx", "connect", "recipient", "accepted", "held"] {
        assert_eq!(step(&drill, name)["status"], "ok", "{name}: {drill:#}");
    }
    assert!(primary.messages().is_empty());
    // The drill's message does not linger to be tried again.
    let (_, body) = http(
        "GET",
        &format!("{}/api/v1/queue", mx2.admin_url()),
        None,
        None,
    );
    assert!(
        !body.contains(drill["queue_id"].as_str().unwrap()),
        "{body}"
    );
    assert_eq!(
        scrape_with(&mx2.admin_url(), None)["mx2_drill_success{domain=\"example.test\"}"],
        0.0
    );
    wait_until("the drill_failed alert", Duration::from_secs(15), || {
        got.lock()
            .unwrap()
            .iter()
            .any(|a| a["event"] == "drill_failed")
    });
    let alerts = got.lock().unwrap().clone();
    let alert = alerts
        .iter()
        .find(|a| a["event"] == "drill_failed")
        .unwrap();
    assert_eq!(alert["domain"], DOMAIN);
    assert!(
        alert["text"].as_str().unwrap().contains("550 5.7.23"),
        "{alert}"
    );
}

#[test]
fn a_domain_whose_mx_records_leave_this_server_out_fails_at_the_mx_step() {
    let dns = zone(false);
    let primary = Primary::start(free_port());
    let mx2 = start(&dns, primary.port, "", "");
    let (code, drill) = run_drill(&mx2);
    assert_eq!(code, 200, "{drill}");
    assert_eq!(drill["outcome"], "failed");
    let mx = step(&drill, "mx");
    assert_eq!(mx["status"], "fail");
    assert_eq!(
        mx["detail"],
        "the MX records of example.test do not list this server (mx2.test): 10 primary.test"
    );
    assert!(
        mx["advice"]
            .as_str()
            .unwrap()
            .contains("example.test. MX 20 mx2.test."),
        "{mx}"
    );
    assert_eq!(
        drill["steps"].as_array().unwrap().len(),
        2,
        "stops there: {drill:#}"
    );
    assert!(primary.messages().is_empty());
    // Not a domain mx2 backs up: refused.
    let (code, body) = http(
        "POST",
        &format!("{}/api/v1/drills/other.test", mx2.admin_url()),
        None,
        Some("{}"),
    );
    assert_eq!(code, 404, "{body}");
}

#[test]
fn scheduled_drills_run_at_their_interval_and_stop_while_the_primary_is_down() {
    let dns = zone(true);
    let primary = Primary::start(free_port());
    let mx2 = start(&dns, primary.port, "drill = \"3s\"", "");
    wait_until("two scheduled drills", Duration::from_secs(30), || {
        history(&mx2).len() >= 2
    });
    let drills = history(&mx2);
    for d in &drills {
        assert_eq!(d["trigger"], "scheduled", "{d:#}");
        assert_eq!(d["outcome"], "passed", "{d:#}");
    }
    let gap = drills[0]["at_ms"].as_i64().unwrap() - drills[1]["at_ms"].as_i64().unwrap();
    assert!((2900..6000).contains(&gap), "one every 3s: {gap} ms");
    assert!(drill_messages(&primary).len() >= 2);

    // The primary goes away; an ordinary message finds it down.
    primary.shut_down();
    let mut c = mx2.client();
    c.cmd("EHLO client.test");
    let reply = c.send_mail("a@sender.test", &["user1@example.test"], &message("m", "m"));
    assert_eq!(code(&reply), 250, "{reply}");
    wait_until(
        "the primary to be found down",
        Duration::from_secs(10),
        || !primary_up(&mx2),
    );
    wait_until("a skipped drill", Duration::from_secs(10), || {
        history(&mx2)[0]["outcome"] == "skipped"
    });
    let first_skipped = history(&mx2)[0]["at_ms"].as_i64().unwrap();
    std::thread::sleep(Duration::from_secs(7));
    let after: Vec<Value> = history(&mx2)
        .into_iter()
        .filter(|d| d["at_ms"].as_i64().unwrap() >= first_skipped)
        .collect();
    assert!(after.len() >= 3, "drills keep their rhythm: {after:#?}");
    for d in &after {
        assert_eq!(d["outcome"], "skipped", "{d:#}");
        assert!(
            step(d, "primary")["detail"]
                .as_str()
                .unwrap()
                .contains("is down"),
            "{d:#}"
        );
    }
}
