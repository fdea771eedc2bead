//! Domains and tenants managed at run time, against a running embedded mx2: `mx2 domain …`
//! changes what SMTP accepts within a second (TXT ownership check included), a tenant's
//! token reaches its own domains and mail and nothing else (everything else reads as not
//! there), and the command line says what is wrong with a refused change.

use crate::common::dns::{DnsServer, Rec};
use crate::common::*;
use serde_json::Value;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

fn cli(args: &[&str], config: &Path) -> (i32, String, String) {
    mx2_text(args, config)
}

/// A command that must succeed; its standard output.
fn ok(args: &[&str], config: &Path) -> String {
    let (code, out, err) = cli(args, config);
    assert_eq!(code, 0, "mx2 {args:?}: {out}{err}");
    out
}

/// `mx2 ARGS --config CONFIG` with a tenant's token in MX2_TOKEN.
fn as_tenant(token: &str, args: &[&str], config: &Path) -> (i32, String, String) {
    let out = Command::new(mx2_binary())
        .args(args)
        .arg("--config")
        .arg(config)
        .env("MX2_TOKEN", token)
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// The reply to `RCPT TO:<to>` in a fresh transaction.
fn rcpt(mx2: &Mx2, to: &str) -> String {
    let mut c = mx2.client();
    c.cmd("EHLO client.test");
    c.cmd("MAIL FROM:<a@sender.test>");
    c.cmd(&format!("RCPT TO:<{to}>"))
}

/// Waits (at most a second) until `RCPT TO:<to>` is answered with `code`.
fn rcpt_within_a_second(mx2: &Mx2, to: &str, code: &str) {
    let mut last = String::new();
    let got = poll_until(Duration::from_secs(1), || {
        last = rcpt(mx2, to);
        last.starts_with(code)
    });
    assert!(
        got,
        "RCPT TO:<{to}> should get {code} within 1 s; last: {last}"
    );
}

/// Sends one message to `rcpts`; its queue id.
fn send(mx2: &Mx2, rcpts: &[&str], id: &str) -> String {
    let mut c = mx2.client();
    c.cmd("EHLO client.test");
    let r = c.send_mail("s@sender.test", rcpts, &message(id, id));
    assert!(r.starts_with("250"), "{rcpts:?}: {r}");
    r.rsplit(' ').next().unwrap().to_string()
}

/// Makes a token for `tenant`; (id, token).
fn token(tenant: &str, config: &Path) -> (String, String) {
    let v: Value =
        serde_json::from_str(&ok(&["tenant", "token", tenant, "--json"], config)).unwrap();
    (
        v["id"].as_str().unwrap().to_string(),
        v["token"].as_str().unwrap().to_string(),
    )
}

fn json(body: &str) -> Value {
    serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}: {body}"))
}

/// The names of a domain listing.
fn names(v: &Value) -> Vec<String> {
    v["domains"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["name"].as_str().unwrap().to_string())
        .collect()
}

const NOT_FOUND: (u16, &str) = (404, r#"{"error":"not found"}"#);

/// Issue 15 (a): a domain added over the command line takes mail within a second, a pending
/// one only once its TXT record is found, and a removed one none.
#[test]
fn domains_added_at_run_time_take_mail_at_once() {
    let dns = DnsServer::start(&[]);
    let primary = Primary::start(free_port());
    let mx2 = Mx2::start_with_token(&format!("{}\ntimeout = \"500ms\"\n", dns.table()));
    let cfg = mx2.config.clone();
    let to_primary = format!("127.0.0.1:{}", primary.port);
    assert!(rcpt(&mx2, "user@run.test").starts_with("550"));

    let out = ok(
        &[
            "domain",
            "add",
            "run.test",
            "--primary",
            &to_primary,
            "--verified",
        ],
        &cfg,
    );
    assert!(out.contains("added run.test (active)"), "{out}");
    rcpt_within_a_second(&mx2, "user@run.test", "250");
    send(&mx2, &["user@run.test"], "run1");
    let got = primary.wait_for(1, Duration::from_secs(20));
    assert_eq!(got[0].rcpts, ["user@run.test"]);

    // Pending: refused until the TXT record it printed is published and found.
    let out = ok(
        &["domain", "add", "pending.test", "--primary", &to_primary],
        &cfg,
    );
    assert!(out.contains("added pending.test (pending)"), "{out}");
    let line = out
        .lines()
        .find(|l| l.contains("_mx2-challenge.pending.test. IN TXT \""))
        .unwrap_or_else(|| panic!("no TXT record to publish in: {out}"));
    let challenge = line.split('"').nth(1).unwrap().to_string();
    assert!(out.contains("pending.test. IN MX 20 mx2.test."), "{out}");
    let shown = json(&ok(&["domain", "show", "pending.test", "--json"], &cfg));
    assert_eq!(shown["challenge"]["value"], challenge.as_str(), "{shown}");
    assert_eq!(shown["challenge"]["record"], "_mx2-challenge.pending.test");
    assert!(rcpt(&mx2, "user@pending.test").starts_with("550"));
    let (code, out, err) = cli(&["domain", "verify", "pending.test"], &cfg);
    assert_eq!(code, 1, "still pending: {out}{err}");
    assert!(out.contains("stays pending"), "{out}");
    // A record with another value does not count, and is not remembered once it is fixed.
    dns.add(
        "_mx2-challenge.pending.test",
        Rec::Txt("mx2-verify-not-this-one"),
    );
    let (code, out, _) = cli(&["domain", "verify", "pending.test"], &cfg);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("does not carry the challenge"), "{out}");
    dns.add(
        "_mx2-challenge.pending.test",
        Rec::Txt(Box::leak(challenge.into_boxed_str())),
    );
    let out = ok(&["domain", "verify", "pending.test"], &cfg);
    assert!(out.contains("pending.test is active"), "{out}");
    rcpt_within_a_second(&mx2, "user@pending.test", "250");

    let listed = json(&ok(&["domain", "list", "--json"], &cfg));
    assert_eq!(names(&listed), ["pending.test", "run.test"], "{listed}");
    let out = ok(&["domain", "remove", "run.test"], &cfg);
    assert!(
        out.contains("removed run.test") && out.contains("nothing was queued"),
        "{out}"
    );
    rcpt_within_a_second(&mx2, "user@run.test", "550");
    let (code, _, err) = cli(&["domain", "show", "run.test"], &cfg);
    assert_eq!(code, 1);
    assert!(err.contains("no domain run.test"), "{err}");
}

/// Issue 15 (b), what needs no mail: a tenant's token lists and checks its own domains, and
/// everything else reads as not there; the operator sees all; a revoked token is refused.
#[test]
fn a_tenant_token_reaches_its_own_domains_only() {
    let down = free_port();
    let mx2 = Mx2::start_with_token(&example_domain(down));
    let cfg = mx2.config.clone();
    let api = mx2.admin_url();
    let primary = format!("127.0.0.1:{down}");
    ok(&["tenant", "add", "a", "--alert-to", "ops@a.test"], &cfg);
    ok(&["tenant", "add", "b"], &cfg);
    for (d, t) in [("a.test", "a"), ("b.test", "b")] {
        ok(
            &[
                "domain",
                "add",
                d,
                "--primary",
                &primary,
                "--tenant",
                t,
                "--verified",
            ],
            &cfg,
        );
    }
    let out = ok(&["tenant", "token", "a"], &cfg);
    assert!(out.contains("cannot be shown again"), "{out}");
    let (id, a) = token("a", &cfg);
    let listed = ok(&["tenant", "list", "--json"], &cfg);
    assert!(
        listed.contains(&id) && !listed.contains(&a) && !listed.contains("sha256"),
        "{listed}"
    );
    let (code, _, err) = cli(&["tenant", "remove", "a"], &cfg);
    assert_eq!(code, 1);
    assert!(err.contains("still has domains (a.test)"), "{err}");

    let get = |path: &str, token: &str| http("GET", &format!("{api}{path}"), Some(token), None);
    let (code, body) = get("/api/v1/domains", &a);
    assert_eq!(code, 200, "{body}");
    assert_eq!(names(&json(&body)), ["a.test"]);
    let (code, body) = get("/api/v1/domains/a.test", &a);
    assert_eq!(
        (code, json(&body)["tenant"].as_str()),
        (200, Some("a")),
        "{body}"
    );
    for path in [
        "/api/v1/domains/b.test",
        "/api/v1/domains/example.test",
        "/api/v1/domains/nosuch.test",
        "/metrics",
        "/api/v1/tenants",
    ] {
        let (code, body) = get(path, &a);
        assert_eq!((code, body.as_str()), NOT_FOUND, "GET {path}");
    }
    for (method, path, body) in [
        ("POST", "/api/v1/reload", None),
        (
            "POST",
            "/api/v1/domains",
            Some(r#"{"name":"c.test","settings":{"route":"mx"}}"#),
        ),
        (
            "PATCH",
            "/api/v1/domains/a.test",
            Some(r#"{"settings":{"lifetime":"1d"}}"#),
        ),
        ("DELETE", "/api/v1/domains/a.test", None),
        ("POST", "/api/v1/tenants", Some(r#"{"name":"c"}"#)),
        ("POST", "/api/v1/tenants/a/tokens", None),
        ("POST", "/api/v1/domains/b.test/verify", None),
        (
            "PUT",
            "/api/v1/domains/b.test/recipients",
            Some(r#"["x@b.test"]"#),
        ),
    ] {
        let (code, body) = http(method, &format!("{api}{path}"), Some(&a), body);
        assert_eq!((code, body.as_str()), NOT_FOUND, "{method} {path}");
    }
    let (code, body) = get("/api/v1/identity", &a);
    assert_eq!(code, 200, "{body}");
    for path in ["/api/v1/status", "/"] {
        let (code, body) = get(path, &a);
        assert_eq!(code, 200, "{path}: {body}");
        assert!(
            !body.contains("b.test") && !body.contains("example.test"),
            "{path}: {body}"
        );
    }

    // Its own recipient list, as text (one a line, comments) or as JSON.
    let (code, body) = http_with(
        "PUT",
        &format!("{api}/api/v1/domains/a.test/recipients"),
        Some(&a),
        &[("Content-Type", "text/plain"), ("X-Mx2-Request", "1")],
        Some("# staff\nalice@a.test\n<bob@a.test>  # the boss\n\n"),
    );
    assert_eq!(code, 200, "{body}");
    assert_eq!(json(&body)["recipients"], 2, "{body}");
    let (code, body) = get("/api/v1/domains/a.test", &a);
    assert_eq!(code, 200);
    assert_eq!(
        json(&body)["settings"]["recipient_addresses"],
        serde_json::json!(["alice@a.test", "bob@a.test"]),
        "{body}"
    );
    let (code, body) = http(
        "PUT",
        &format!("{api}/api/v1/domains/a.test/recipients"),
        Some(&a),
        Some(r#"["not an address"]"#),
    );
    assert_eq!(code, 400, "{body}");
    assert!(body.contains("recipient_addresses"), "{body}");

    // The command line with the tenant's token.
    let (code, out, err) = as_tenant(&a, &["domain", "list"], &cfg);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("a.test") && !out.contains("b.test"), "{out}");
    let (code, _, err) = as_tenant(&a, &["domain", "show", "b.test"], &cfg);
    assert_eq!(code, 1);
    assert!(err.contains("not found"), "{err}");

    // The operator sees every domain.
    let (code, body) = get("/api/v1/domains", ADMIN_TOKEN);
    assert_eq!(code, 200);
    assert_eq!(names(&json(&body)), ["example.test", "a.test", "b.test"]);
    assert_eq!(json(&body)["domains"][0]["source"], "file");

    ok(&["tenant", "revoke", "a", &id], &cfg);
    assert_eq!(get("/api/v1/status", &a).0, 401);
    let (code, _, err) = as_tenant(&a, &["domain", "list"], &cfg);
    assert_eq!(code, 1);
    assert!(err.contains("token was refused"), "{err}");
}

/// Issue 15 (b), with mail queued for two tenants (their primary down): A's token lists,
/// counts, shows, exports and acts on A's mail only; B's reads as not there; a message for
/// both is shown with A's recipients only and is not A's to delete or hold.
#[test]
fn a_tenant_token_sees_and_acts_on_its_own_mail_only() {
    let (down_a, down_b) = (free_port(), free_port());
    let mx2 = Mx2::start_with_token("");
    let cfg = mx2.config.clone();
    let api = mx2.admin_url();
    for (d, t, port) in [("a.test", "a", down_a), ("b.test", "b", down_b)] {
        ok(&["tenant", "add", t], &cfg);
        let primary = format!("127.0.0.1:{port}");
        ok(
            &[
                "domain",
                "add",
                d,
                "--primary",
                &primary,
                "--tenant",
                t,
                "--verified",
            ],
            &cfg,
        );
        rcpt_within_a_second(&mx2, &format!("user@{d}"), "250");
    }
    let m_a = send(&mx2, &["u@a.test"], "for-a");
    let m_b = send(&mx2, &["u@b.test"], "for-b");
    let m_ab = send(&mx2, &["u@a.test", "v@b.test"], "for-both");
    let (_, a) = token("a", &cfg);
    let req = |method: &str, path: &str, token: &str, body: Option<&str>| {
        http(method, &format!("{api}{path}"), Some(token), body)
    };
    let ids = |token: &str| -> Vec<String> {
        let (code, body) = req("GET", "/api/v1/queue", token, None);
        assert_eq!(code, 200, "{body}");
        let mut ids: Vec<String> = json(&body)["messages"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["id"].as_str().unwrap().to_string())
            .collect();
        ids.sort();
        ids
    };
    let sorted = |mut v: Vec<String>| {
        v.sort();
        v
    };
    assert_eq!(ids(&a), sorted(vec![m_a.clone(), m_ab.clone()]));
    assert_eq!(
        ids(ADMIN_TOKEN),
        sorted(vec![m_a.clone(), m_b.clone(), m_ab.clone()])
    );
    let (_, body) = req("GET", "/api/v1/queue/count", &a, None);
    assert_eq!(json(&body)["total"], 2, "{body}");
    let (_, body) = req("GET", "/api/v1/queue?domain=b.test", &a, None);
    assert_eq!(json(&body)["messages"], serde_json::json!([]), "{body}");

    // Its own message, whole; the shared one with its own recipient only.
    let (code, body) = req("GET", &format!("/api/v1/queue/{m_a}"), &a, None);
    assert_eq!(code, 200, "{body}");
    let (code, body) = req("GET", &format!("/api/v1/queue/{m_ab}"), &a, None);
    assert_eq!(code, 200, "{body}");
    assert!(
        body.contains("u@a.test") && !body.contains("v@b.test"),
        "{body}"
    );
    let (code, body) = req("GET", &format!("/api/v1/queue/{m_a}/eml"), &a, None);
    assert_eq!(code, 200);
    assert!(body.ends_with(&String::from_utf8(message("for-a", "for-a")).unwrap()));

    // B's message reads exactly as one that is not there.
    let missing = "0000000000000000000000000000dead";
    for (method, tail, body) in [
        ("GET", "", None),
        ("GET", "/eml", None),
        ("POST", "/hold", None),
        ("POST", "/flush", None),
        ("DELETE", "", None),
    ] {
        let theirs = req(method, &format!("/api/v1/queue/{m_b}{tail}"), &a, body);
        let nothing = req(method, &format!("/api/v1/queue/{missing}{tail}"), &a, body);
        assert_eq!(theirs.0, 404, "{method} {tail}: {}", theirs.1);
        assert_eq!(
            theirs.1.replace(&m_b, missing),
            nothing.1,
            "{method} {tail}"
        );
    }
    let batch = format!(r#"{{"action":"hold","ids":["{m_a}","{m_b}"]}}"#);
    let (code, body) = req("POST", "/api/v1/queue/actions", &a, Some(&batch));
    assert_eq!(
        (code, json(&body)["affected"].as_u64()),
        (200, Some(1)),
        "{body}"
    );
    let (_, body) = req("GET", &format!("/api/v1/queue/{m_b}"), ADMIN_TOKEN, None);
    assert!(
        body.contains(r#""held":false"#),
        "B's message is untouched: {body}"
    );
    let (code, _) = req("POST", &format!("/api/v1/queue/{m_a}/release"), &a, None);
    assert_eq!(code, 200);

    // The shared message: A may flush it, not delete or hold it for B too.
    for action in ["delete", "hold", "bounce"] {
        let (code, body) = req("POST", &format!("/api/v1/queue/{m_ab}/{action}"), &a, None);
        assert_eq!(code, 409, "{action}: {body}");
        assert!(body.contains("not yours"), "{body}");
    }
    let (code, _) = req("POST", &format!("/api/v1/queue/{m_ab}/flush"), &a, None);
    assert_eq!(code, 200);
    let (code, body) = req("POST", "/api/v1/flush", &a, None);
    assert_eq!(code, 200, "{body}");
    assert_eq!(
        json(&body)["domains"],
        serde_json::json!(["a.test"]),
        "{body}"
    );
    assert_eq!(
        req("POST", "/api/v1/flush?domain=b.test", &a, None),
        (404, NOT_FOUND.1.to_string())
    );

    // Status and events: its own domains and primary.
    let (code, body) = req("GET", "/api/v1/status", &a, None);
    assert_eq!(code, 200, "{body}");
    let status = json(&body);
    assert_eq!(status["queue"]["messages"], 2, "{body}");
    let (primary_a, primary_b) = (format!("127.0.0.1:{down_a}"), format!("127.0.0.1:{down_b}"));
    assert!(
        !body.contains("b.test") && !body.contains(&primary_b),
        "{body}"
    );
    wait_until("both primaries seen down", Duration::from_secs(15), || {
        let (_, body) = req("GET", "/api/v1/events", ADMIN_TOKEN, None);
        body.contains(&primary_a) && body.contains(&primary_b)
    });
    let (_, body) = req("GET", "/api/v1/events", &a, None);
    assert!(
        body.contains(&primary_a) && !body.contains(&primary_b),
        "{body}"
    );

    // The command line with its token; then its own message deleted.
    let (code, out, err) = as_tenant(&a, &["queue", "list", "--json"], &cfg);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains(&m_a) && !out.contains(&m_b), "{out}");
    let (code, _) = req("DELETE", &format!("/api/v1/queue/{m_a}"), &a, None);
    assert_eq!(code, 200);
    assert_eq!(ids(ADMIN_TOKEN), sorted(vec![m_b.clone(), m_ab.clone()]));

    // Removing a domain keeps its mail unless purged.
    let out = ok(&["domain", "remove", "b.test"], &cfg);
    assert!(out.contains("2 message(s) queued for it stay"), "{out}");
    let out = ok(&["domain", "remove", "a.test", "--purge"], &cfg);
    assert!(out.contains("dropped 1 message(s)"), "{out}");
    assert_eq!(ids(ADMIN_TOKEN), sorted(vec![m_b, m_ab]));
}

/// Issue 15 (c): a refused change says why, naming the key; usage errors exit with 2.
#[test]
fn refused_domain_changes_say_why() {
    let mx2 = Mx2::start_with_token("");
    let cfg = mx2.config.clone();
    let add = |extra: &[&str]| {
        let mut args = vec!["domain", "add", "x.test", "--verified"];
        args.extend_from_slice(extra);
        cli(&args, &cfg)
    };
    let (code, _, err) = add(&["--primary", "127.0.0.1:25", "--set", "colour=red"]);
    assert_eq!(code, 1);
    assert!(err.contains("colour"), "{err}");
    let (code, _, err) = add(&["--primary", "127.0.0.1:25", "--set", "max_queue_bytes=lots"]);
    assert_eq!(code, 1);
    assert!(err.contains("max_queue_bytes"), "{err}");
    let (code, _, err) = add(&[]);
    assert_eq!(code, 1);
    assert!(err.contains("primary"), "{err}");
    let (code, _, err) = add(&["--primary", "127.0.0.1:25", "--tenant", "nobody"]);
    assert_eq!(code, 1);
    assert!(err.contains("no tenant nobody"), "{err}");
    let (code, _, err) = add(&["--set", "lifetime"]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("KEY=VALUE"), "{err}");

    ok(
        &[
            "domain",
            "add",
            "x.test",
            "--primary",
            "127.0.0.1:25",
            "--verified",
            "--lifetime",
            "14d",
        ],
        &cfg,
    );
    let out = ok(&["domain", "show", "x.test"], &cfg);
    assert!(out.contains("lifetime 1209600"), "{out}");
    let (code, _, err) = add(&["--primary", "127.0.0.1:25"]);
    assert_eq!(code, 1);
    assert!(err.contains("x.test is already added"), "{err}");
    let (code, _, err) = cli(&["domain", "set", "x.test", "--lifetime", "soon"], &cfg);
    assert_eq!(code, 1);
    assert!(err.contains("lifetime"), "{err}");
    let (code, _, err) = cli(&["domain", "set", "x.test"], &cfg);
    assert_eq!(code, 2);
    assert!(err.contains("nothing to change"), "{err}");
    let out = ok(
        &[
            "domain",
            "set",
            "x.test",
            "--max-queue-messages",
            "50",
            "--set",
            "lifetime=2d",
        ],
        &cfg,
    );
    assert!(out.contains("max_queue_messages 50"), "{out}");
    let (code, _, err) = cli(&["domain", "remove", "nosuch.test"], &cfg);
    assert_eq!(code, 1);
    assert!(err.contains("no domain nosuch.test"), "{err}");
    let (code, _, err) = cli(&["tenant", "token", "nobody"], &cfg);
    assert_eq!(code, 1);
    assert!(err.contains("no tenant nobody"), "{err}");
}
