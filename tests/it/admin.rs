//! The operators' tools against a running mx2: the admin API and the `mx2` commands that use
//! it (with the primary down, then up), the token, `/metrics`, alert webhooks, reload, and
//! the dashboard in headless Chromium.

use crate::common::*;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

const TOKEN: &str = ADMIN_TOKEN;

/// Starts mx2 backing up example.test (primary on `primary_port`) with `extra` tables.
fn start(primary_port: u16, extra: &str) -> Mx2 {
    Mx2::start_with_token(&format!(
        "{extra}\n[[domain]]\nname = \"example.test\"\nprimary = [\"127.0.0.1:{primary_port}\"]\n"
    ))
}

/// Runs `mx2 ARGS --config CONFIG`: (exit code, stdout, stderr).
fn cli(args: &[&str], config: &Path) -> (i32, String, String) {
    mx2_text(args, config)
}

fn queue_ids(config: &Path, extra: &[&str]) -> Vec<String> {
    let mut args = vec!["queue", "list", "--json"];
    args.extend_from_slice(extra);
    let (code, out, err) = cli(&args, config);
    assert_eq!(code, 0, "{err}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    v.as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_str().unwrap().to_string())
        .collect()
}

fn send(mx2: &Mx2, from: &str, rcpt: &str, id: &str) -> String {
    let mut c = mx2.client();
    c.cmd("EHLO client.test");
    let r = c.send_mail(from, &[rcpt], &message(id, id));
    assert!(r.starts_with("250"), "{r}");
    r.rsplit(' ').next().unwrap().to_string()
}

#[test]
fn api_and_cli_with_the_primary_down_then_up() {
    let primary_port = free_port();
    let mx2 = start(primary_port, "");
    let api = mx2.admin_url();
    let cfg = mx2.config.clone();
    let id1 = send(&mx2, "a@sender.test", "user1@example.test", "one");
    let id2 = send(&mx2, "b@sender.test", "user2@example.test", "two");
    let id3 = send(&mx2, "c@sender.test", "user3@example.test", "three");
    let id4 = send(&mx2, "d@sender.test", "user4@example.test", "four");
    wait_until(
        "the primary to be seen down",
        Duration::from_secs(10),
        || cli(&["status", "--json"], &cfg).1.contains("\"up\": false"),
    );

    // The token guards everything but /healthz.
    assert_eq!(
        http("GET", &format!("{api}/api/v1/status"), None, None).0,
        401
    );
    assert_eq!(
        http("GET", &format!("{api}/api/v1/status"), Some("wrong"), None).0,
        401
    );
    assert_eq!(http("GET", &format!("{api}/metrics"), None, None).0, 401);
    assert_eq!(http("GET", &format!("{api}/healthz"), None, None).0, 200);
    let (code, body) = http("GET", &format!("{api}/api/v1/status"), Some(TOKEN), None);
    assert_eq!(code, 200, "{body}");
    assert_eq!(
        http("GET", &format!("{api}/api/v1/identity"), None, None).0,
        401
    );
    let (code, body) = http("GET", &format!("{api}/api/v1/identity"), Some(TOKEN), None);
    assert_eq!(code, 200, "{body}");
    let who: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        std::path::Path::new(who["state_dir"].as_str().unwrap())
            .canonicalize()
            .unwrap(),
        mx2.dir.join("state").canonicalize().unwrap(),
        "{body}"
    );
    let wrong = mx2.dir.join("wrong.token");
    std::fs::write(&wrong, "nope").unwrap();
    let (code, _, err) = cli(&["status", "--token-file", wrong.to_str().unwrap()], &cfg);
    assert_eq!(code, 1);
    assert!(err.contains("token was refused"), "{err}");

    // Status and listing through the API.
    let (code, out, err) = cli(&["status"], &cfg);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("DOWN") && out.contains(&format!("127.0.0.1:{primary_port}")),
        "{out}"
    );
    assert_eq!(
        queue_ids(&cfg, &[]),
        vec![id1.clone(), id2.clone(), id3.clone(), id4.clone()]
    );
    assert_eq!(
        queue_ids(&cfg, &["--sender", "b@sender"]),
        vec![id2.clone()]
    );
    let (code, out, _) = cli(&["queue", "show", &id1], &cfg);
    assert_eq!(code, 0);
    assert!(out.contains("<user1@example.test> pending"), "{out}");
    let (code, _, err) = cli(&["queue", "show", "nosuchid"], &cfg);
    assert_eq!(code, 1);
    assert!(err.contains("no message nosuchid"), "{err}");
    let (code, out, _) = cli(&["queue", "export", &id3], &cfg);
    assert_eq!(code, 0);
    assert!(out.ends_with(&String::from_utf8(message("three", "three")).unwrap()));

    // Hold, delete, bounce; an action without a selection is refused.
    let (code, _, err) = cli(&["queue", "delete"], &cfg);
    assert_eq!(code, 2);
    assert!(err.contains("--all"), "{err}");
    let (code, out, err) = cli(&["queue", "hold", &id1], &cfg);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("held 1 message"), "{out}");
    assert_eq!(queue_ids(&cfg, &["--state", "held"]), vec![id1.clone()]);
    assert_eq!(cli(&["queue", "delete", &id2], &cfg).0, 0);
    assert_eq!(cli(&["queue", "bounce", &id4], &cfg).0, 0);
    wait_until(
        "the bounced message to leave",
        Duration::from_secs(10),
        || !queue_ids(&cfg, &[]).contains(&id4),
    );
    let ours = ["--domain", "example.test"];
    assert_eq!(queue_ids(&cfg, &ours), vec![id1.clone(), id3.clone()]);
    // The bounce went back to its sender (auth checks are off here, so the default policy
    // cannot rule it out).
    let (_, out, _) = cli(
        &["queue", "list", "--json", "--recipient", "d@sender.test"],
        &cfg,
    );
    let dsn: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(dsn[0]["sender"], "", "{dsn}");
    // The file can be read while the server runs, too.
    assert_eq!(
        queue_ids(&cfg, &["--offline", "--domain", "example.test"]),
        vec![id1.clone(), id3.clone()]
    );

    // The primary comes back; a flush delivers at once, but not what is held.
    let primary = Primary::start(primary_port);
    let started = Instant::now();
    let (code, out, err) = cli(&["queue", "flush"], &cfg);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("due now"), "{out}");
    let got = primary.wait_for(1, Duration::from_secs(20));
    println!("flush to delivery: {:?}", started.elapsed());
    assert_eq!(got[0].rcpts, ["user3@example.test"]);
    thread::sleep(Duration::from_secs(2));
    assert_eq!(primary.messages().len(), 1, "held mail stays held");
    let (code, out, _) = cli(&["queue", "release", "--state", "held"], &cfg);
    assert_eq!(code, 0);
    assert!(out.contains("released 1 message"), "{out}");
    let got = primary.wait_for(2, Duration::from_secs(20));
    assert_eq!(got[1].rcpts, ["user1@example.test"]);
    wait_until("an empty queue", Duration::from_secs(10), || {
        queue_ids(&cfg, &ours).is_empty()
    });
    assert!(
        primary
            .messages()
            .iter()
            .all(|m| m.rcpts != ["user2@example.test"]),
        "deleted mail is never delivered"
    );
}

/// `name{labels} value` lines as a map.
fn scrape(api: &str) -> std::collections::HashMap<String, f64> {
    scrape_with(api, Some(TOKEN))
}

/// `/metrics` as name{labels} → value.
pub(crate) fn scrape_with(
    api: &str,
    token: Option<&str>,
) -> std::collections::HashMap<String, f64> {
    let (code, body) = http("GET", &format!("{api}/metrics"), token, None);
    assert_eq!(code, 200, "{body}");
    body.lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .filter_map(|l| {
            let (k, v) = l.rsplit_once(' ')?;
            Some((k.to_string(), v.parse().ok()?))
        })
        .collect()
}

#[test]
fn metrics_follow_the_queue() {
    let primary_port = free_port();
    let mx2 = start(primary_port, "");
    let api = mx2.admin_url();
    let m = scrape(&api);
    assert_eq!(m["mx2_messages_accepted_total"], 0.0);
    assert_eq!(m["mx2_queue_size_messages"], 0.0);
    send(&mx2, "a@sender.test", "user1@example.test", "one");
    send(&mx2, "a@sender.test", "user2@example.test", "two");
    let mut c = mx2.client();
    c.cmd("EHLO client.test");
    c.cmd("MAIL FROM:<a@sender.test>");
    assert_eq!(c.code("RCPT TO:<x@elsewhere.test>"), 550);
    let primary_up = format!("mx2_primary_up{{primary=\"127.0.0.1:{primary_port}\"}}");
    wait_until(
        "the primary to be seen down",
        Duration::from_secs(10),
        || scrape(&api).get(&primary_up) == Some(&0.0),
    );
    let m = scrape(&api);
    assert_eq!(m["mx2_messages_accepted_total"], 2.0);
    assert_eq!(m["mx2_queue_size_messages"], 2.0);
    assert_eq!(m["mx2_queue_messages{domain=\"example.test\"}"], 2.0);
    assert!(m["mx2_queue_bytes{domain=\"example.test\"}"] > 100.0);
    assert!(m.contains_key("mx2_queue_oldest_message_age_seconds{domain=\"example.test\"}"));
    assert_eq!(
        m["mx2_smtp_rejections_total{code=\"550\",status=\"5.7.1\"}"],
        1.0
    );
    assert!(m["mx2_queue_commit_seconds_count"] >= 2.0);
    assert!(m["mx2_delivery_connection_failures_total"] >= 1.0);

    let primary = Primary::start(primary_port);
    primary.wait_for(2, Duration::from_secs(20));
    wait_until("the queue gauges to drop", Duration::from_secs(10), || {
        scrape(&api)["mx2_queue_size_messages"] == 0.0
    });
    let m = scrape(&api);
    assert_eq!(m[&primary_up], 1.0);
    assert_eq!(m["mx2_delivery_attempts_total{outcome=\"delivered\"}"], 2.0);
    assert!(!m.contains_key("mx2_queue_messages{domain=\"example.test\"}"));
}

/// One primary's entry in `GET /api/v1/status`.
fn primary_status(api: &str, primary: &str) -> serde_json::Value {
    let (code, body) = http("GET", &format!("{api}/api/v1/status"), Some(TOKEN), None);
    assert_eq!(code, 200, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    v["primaries"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["primary"] == primary)
        .cloned()
        .unwrap_or_else(|| panic!("no {primary} in {body}"))
}

#[test]
fn a_primary_keeps_its_health_and_outages_across_restarts() {
    let primary_port = free_port();
    let mut mx2 = start(primary_port, "");
    let api = mx2.admin_url();
    let key = format!("127.0.0.1:{primary_port}");
    let up_metric = format!("mx2_primary_up{{primary=\"{key}\"}}");
    let stale_metric = format!("mx2_primary_up_stale{{primary=\"{key}\"}}");
    send(&mx2, "a@sender.test", "user1@example.test", "one");
    wait_until(
        "the primary to be seen down",
        Duration::from_secs(10),
        || primary_status(&api, &key)["up"] == false,
    );
    let before = primary_status(&api, &key);
    let down_ms = before["outages"][0]["down_ms"].as_i64().unwrap();
    assert_eq!(before["since_ms"].as_i64(), Some(down_ms), "{before}");
    assert_eq!(before["stale"], false, "{before}");

    // Restarted while the primary is still down: the very first answer says down, since
    // when it went down, with its outage, and so does the metric.
    let (code, _) = mx2.terminate();
    assert_eq!(code, Some(0));
    mx2.spawn();
    let started = Instant::now();
    let after = primary_status(&api, &key);
    let m = scrape(&api);
    println!("{:?} after the restart: {after}", started.elapsed());
    assert_eq!(after["up"], false, "{after}");
    assert_eq!(after["since_ms"].as_i64(), Some(down_ms), "{after}");
    assert_eq!(after["outages"], before["outages"], "{after}");
    assert!(after["stale"].is_boolean(), "{after}");
    assert_eq!(m[&up_metric], 0.0);
    assert!(m.contains_key(&stale_metric));
    // The probe confirms it (no longer last known), and it is the same outage.
    wait_until("the first probe", Duration::from_secs(10), || {
        primary_status(&api, &key)["stale"] == false
    });
    let probed = primary_status(&api, &key);
    assert_eq!(probed["up"], false, "{probed}");
    assert_eq!(probed["outages"], before["outages"], "{probed}");
    assert_eq!(scrape(&api)[&stale_metric], 0.0);

    // It comes back, everything is delivered: the outage closes, and a restart keeps it.
    let primary = Primary::start(primary_port);
    primary.wait_for(1, Duration::from_secs(20));
    wait_until("the drain to be recorded", Duration::from_secs(10), || {
        !primary_status(&api, &key)["outages"][0]["drained_ms"].is_null()
    });
    let back = primary_status(&api, &key);
    let outage = &back["outages"][0];
    assert_eq!(outage["down_ms"].as_i64(), Some(down_ms), "{back}");
    assert_eq!(back["since_ms"], outage["up_ms"], "{back}");
    assert_eq!(outage["held"], 1, "{back}");
    mx2.terminate();
    mx2.spawn();
    let again = primary_status(&api, &key);
    assert_eq!(again["up"], true, "{again}");
    assert_eq!(again["since_ms"], back["since_ms"], "{again}");
    assert_eq!(again["outages"], back["outages"], "{again}");
    assert_eq!(scrape(&api)[&up_metric], 1.0);
}

/// An HTTP server that answers 503 to its first request and 200 after, keeping the bodies.
pub(crate) fn webhook_receiver() -> (u16, Arc<Mutex<Vec<serde_json::Value>>>) {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    let got = Arc::new(Mutex::new(Vec::new()));
    let g = got.clone();
    thread::spawn(move || {
        for (n, conn) in l.incoming().enumerate() {
            let Ok(mut conn) = conn else { continue };
            let mut r = BufReader::new(conn.try_clone().unwrap());
            let mut len = 0;
            let mut auth = String::new();
            loop {
                let mut line = String::new();
                if r.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                    break;
                }
                let lower = line.to_ascii_lowercase();
                if let Some(v) = lower.strip_prefix("content-length:") {
                    len = v.trim().parse().unwrap_or(0);
                }
                if lower.starts_with("authorization:") {
                    auth = line.trim().to_string();
                }
            }
            let mut body = vec![0; len];
            let _ = r.read_exact(&mut body);
            if n == 0 {
                let _ = conn.write_all(b"HTTP/1.1 503 Busy\r\nContent-Length: 0\r\n\r\n");
                continue;
            }
            let mut v: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
            v["authorization"] = auth.into();
            g.lock().unwrap().push(v);
            let _ = conn.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n");
        }
    });
    (port, got)
}

#[test]
fn a_webhook_hears_down_up_and_drained_in_order() {
    let primary_port = free_port();
    let (hook, got) = webhook_receiver();
    let mx2 = start(
        primary_port,
        &format!(
            "[alerts]\nwebhook = \"http://127.0.0.1:{hook}/mx2\"\nwebhook_token_file = \"admin.token\"\ndown_after = \"1s\"\nemail = \"ops@alerts.test\"\n[queue]\nretry_min = \"1s\"\nretry_max = \"1h\""
        ),
    );
    send(&mx2, "a@sender.test", "user1@example.test", "one");
    send(&mx2, "a@sender.test", "user2@example.test", "two");
    let events = || -> Vec<String> {
        got.lock()
            .unwrap()
            .iter()
            .map(|v| {
                format!(
                    "{} {}",
                    v["event"].as_str().unwrap_or(""),
                    v["primary"].as_str().unwrap_or("")
                )
            })
            .collect()
    };
    // The first call is answered 503: the alert is retried.
    wait_until("the down alert", Duration::from_secs(20), || {
        !events().is_empty()
    });
    let primary = Primary::start(primary_port);
    primary.wait_for(2, Duration::from_secs(20));
    wait_until("the up and drained alerts", Duration::from_secs(20), || {
        events().len() >= 3
    });
    // Only the primary alerts: the route the alert mails take (alerts.test, no DNS here)
    // is down too, but it is not a primary.
    let p = format!("127.0.0.1:{primary_port}");
    assert_eq!(
        events(),
        [
            format!("primary_down {p}"),
            format!("primary_up {p}"),
            format!("drained {p}")
        ]
    );
    let first = got.lock().unwrap()[0].clone();
    assert_eq!(first["primary"], format!("127.0.0.1:{primary_port}"));
    assert_eq!(
        first["authorization"],
        format!("Authorization: Bearer {TOKEN}")
    );
    assert!(first["text"].as_str().unwrap().contains("down"), "{first}");
    // The outage is on the record with its drain.
    let (_, body) = http(
        "GET",
        &format!("{}/api/v1/status", mx2.admin_url()),
        Some(TOKEN),
        None,
    );
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    let outage = &v["primaries"][0]["outages"][0];
    assert!(outage["drained_ms"].as_i64().unwrap() >= outage["up_ms"].as_i64().unwrap());
    // retry_max is an hour here, so nothing falls due by itself: both wait for the probe.
    assert_eq!(outage["held"], 2, "{outage}");
    // Each alert also went out by mail (null sender), to an address outside these domains.
    let (_, out, _) = cli(
        &["queue", "list", "--json", "--recipient", "ops@alerts.test"],
        &mx2.config,
    );
    let mails: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(mails.as_array().unwrap().len(), 3, "{mails}");
    assert_eq!(mails[0]["sender"], "");
}

#[test]
fn reload_adds_a_domain_and_a_bad_file_changes_nothing() {
    let primary = Primary::start(free_port());
    let mx2 = start(primary.port, "");
    let rcpt_code = |addr: &str| {
        let mut c = mx2.client();
        c.cmd("EHLO client.test");
        c.cmd("MAIL FROM:<a@sender.test>");
        c.code(&format!("RCPT TO:<{addr}>"))
    };
    assert_eq!(rcpt_code("x@added.test"), 550);
    // A session open across the reload is not dropped.
    let mut during = mx2.client();
    during.cmd("EHLO client.test");
    let original = std::fs::read_to_string(&mx2.config).unwrap();
    std::fs::write(
        &mx2.config,
        format!(
            "{original}\n[[domain]]\nname = \"added.test\"\nprimary = [\"127.0.0.1:{}\"]\n",
            primary.port
        ),
    )
    .unwrap();
    Command::new("kill")
        .args(["-HUP", &mx2.pid().to_string()])
        .status()
        .unwrap();
    wait_until(
        "the new domain to be accepted",
        Duration::from_secs(10),
        || rcpt_code("x@added.test") == 250,
    );
    assert_eq!(during.code("NOOP"), 250);
    let mut c = mx2.client();
    c.cmd("EHLO client.test");
    assert!(
        c.send_mail("a@sender.test", &["x@added.test"], &message("new", "new"))
            .starts_with("250")
    );
    let got = primary.wait_for(1, Duration::from_secs(20));
    assert_eq!(got[0].rcpts, ["x@added.test"]);

    // A broken file: the reload is refused with the file's line, the old config stays.
    let good = std::fs::read_to_string(&mx2.config).unwrap();
    std::fs::write(&mx2.config, format!("{good}\n[smtp2]\nlisten = 1\n")).unwrap();
    // `mx2 reload` reads the same file first and says what is wrong with it.
    let (code, _, err) = cli(&["reload"], &mx2.config);
    assert_eq!(code, 2);
    assert!(err.contains("mx2.toml:") && err.contains("smtp2"), "{err}");
    // Asked directly, the server refuses it too.
    let token = mx2.dir.join("admin.token");
    let (code, _, err) = cli(
        &[
            "reload",
            "--admin",
            &mx2.admin_url(),
            "--token-file",
            token.to_str().unwrap(),
        ],
        &mx2.config,
    );
    assert_eq!(code, 1);
    assert!(
        err.contains("not reloaded") && err.contains("mx2.toml:"),
        "{err}"
    );
    assert_eq!(rcpt_code("x@added.test"), 250);
    assert_eq!(rcpt_code("y@example.test"), 250);
    assert!(mx2.log().contains("NOT reloaded"));
    // The file mended: `mx2 reload` says what changed.
    std::fs::write(
        &mx2.config,
        good.replace("name = \"added.test\"", "name = \"other.test\""),
    )
    .unwrap();
    let (code, out, err) = cli(&["reload"], &mx2.config);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("1 added: other.test") && out.contains("1 removed: added.test"),
        "{out}"
    );
    assert_eq!(rcpt_code("x@added.test"), 550);
    assert_eq!(rcpt_code("x@other.test"), 250);
}

#[test]
fn the_dashboard_shows_a_down_primary_in_chromium() {
    let chromium = ["/usr/bin/chromium", "/usr/bin/chromium-browser"]
        .into_iter()
        .find(|p| Path::new(p).exists())
        .expect(
            "Chromium is needed for this test: apt-get install chromium (bash .ci/run installs it)",
        );
    let primary_port = free_port();
    let mx2 = Mx2::start_config(|port, state| test_config(port, primary_port, state, ""));
    send(&mx2, "a@sender.test", "user1@example.test", "one");
    send(&mx2, "a@sender.test", "user2@example.test", "two");
    let api = mx2.admin_url();
    wait_until(
        "the primary to be seen down",
        Duration::from_secs(10),
        || {
            http("GET", &format!("{api}/api/v1/status"), None, None)
                .1
                .contains("\"up\":false")
        },
    );
    let out_dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("dashboard");
    std::fs::create_dir_all(&out_dir).unwrap();
    let shot = out_dir.join("dashboard.png");
    let _ = std::fs::remove_file(&shot);
    let profile = tempfile::tempdir().unwrap();
    let run = |extra: &[String]| {
        let out = Command::new(chromium)
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-quic",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--window-size=1400,1100",
            ])
            .arg(format!("--user-data-dir={}", profile.path().display()))
            .args(extra)
            .arg(format!("{api}/"))
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "chromium failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let dom = run(&["--dump-dom".into()]);
    assert!(dom.contains("<span class=\"down\">DOWN</span>"), "{dom}");
    assert!(dom.contains(&format!("127.0.0.1:{primary_port}")));
    assert!(
        dom.contains("user1@example.test"),
        "the oldest messages are listed"
    );
    assert!(dom.contains("<polyline"), "the depth chart is drawn");
    run(&[format!("--screenshot={}", shot.display())]);
    let png = std::fs::read(&shot).expect("a screenshot");
    assert!(
        png.starts_with(b"\x89PNG") && png.len() > 10_000,
        "{} bytes",
        png.len()
    );
    println!("dashboard screenshot: {}", shot.display());
}

/// Issue 13, item 14: secret files other users can read are named, with the fix, by
/// `mx2 config check` and in the log at start; a private one is not.
#[test]
fn secret_files_readable_by_others_are_warned_about() {
    use std::os::unix::fs::PermissionsExt;
    let mut mx2 = Mx2::prepare(|port, state| {
        config_with(
            port,
            state,
            "",
            &format!(
                "[admin]\nlisten = \"127.0.0.1:{}\"\ntoken_file = \"token\"\n[[domain]]\nname = \"example.test\"\nprimary = [\"127.0.0.1:{}\"]\n",
                free_port(),
                free_port()
            ),
        )
    });
    let token = mx2.dir.join("token");
    std::fs::write(&token, "a-long-random-token-for-the-test").unwrap();
    std::fs::set_permissions(&token, std::fs::Permissions::from_mode(0o644)).unwrap();
    let (code, out, _) = mx2_command(&["config", "check"], &mx2.config);
    let out = String::from_utf8_lossy(&out).into_owned();
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains("warning:")
            && out.contains("admin.token_file")
            && out.contains(&token.display().to_string())
            && out.contains("chmod o-rwx"),
        "{out}"
    );
    mx2.spawn();
    mx2.terminate();
    assert!(
        mx2.log().contains("every user of this machine can read it"),
        "{}",
        mx2.log()
    );

    std::fs::set_permissions(&token, std::fs::Permissions::from_mode(0o600)).unwrap();
    let (_, out, _) = mx2_command(&["config", "check"], &mx2.config);
    let out = String::from_utf8_lossy(&out).into_owned();
    assert!(!out.contains("warning:"), "{out}");
}

/// Sends `request` as it is to `addr` (ip:port) and reads to the end: (status, whole answer).
fn raw_http(addr: &str, request: &str) -> (u16, String) {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    s.write_all(request.as_bytes()).unwrap();
    let mut answer = Vec::new();
    let _ = s.read_to_end(&mut answer);
    let answer = String::from_utf8_lossy(&answer).into_owned();
    let status = answer
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    (status, answer)
}

/// A POST as a browser sends it for `<form method=POST enctype=text/plain action=…>` on a
/// page at `origin`.
fn form_post(addr: &str, path: &str, origin: Option<&str>) -> (u16, String) {
    let origin = origin.map_or(String::new(), |o| {
        format!("Origin: {o}\r\nSec-Fetch-Site: cross-site\r\n")
    });
    raw_http(
        addr,
        &format!(
            "POST {path} HTTP/1.1\r\nHost: {addr}\r\n{origin}Content-Type: text/plain\r\nContent-Length: 4\r\nConnection: close\r\n\r\na=b\n"
        ),
    )
}

fn get_with_host(addr: &str, path: &str, host: &str) -> (u16, String) {
    raw_http(
        addr,
        &format!("GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"),
    )
}

/// Item 2 of issue 13: with the default config (admin on loopback, no token), a web page
/// elsewhere can neither act on the queue through the operator's browser (form POSTs) nor
/// read it through DNS rebinding (a foreign `Host`); mx2's own commands still work.
#[test]
fn pages_on_other_sites_cannot_act_on_or_read_the_queue() {
    let primary_port = free_port();
    let admin_port = free_port();
    let mx2 = Mx2::start_config(|port, state| {
        let tail = format!(
            "[admin]\nlisten = \"127.0.0.1:{admin_port}\"\nallowed_hosts = [\"mx2.example.net\"]\n[[domain]]\nname = \"example.test\"\nprimary = [\"127.0.0.1:{primary_port}\"]\n"
        );
        config_with(port, state, "", &tail)
    });
    let cfg = mx2.config.clone();
    let addr = format!("127.0.0.1:{admin_port}");
    let id = send(&mx2, "a@sender.test", "user1@example.test", "one");
    let (code, _, err) = cli(&["queue", "hold", &id], &cfg);
    assert_eq!(code, 0, "{err}");

    // Forged from another site: refused, and the message is still there.
    let delete = format!("/api/v1/queue/{id}/delete");
    for origin in [Some("http://attacker.example"), None] {
        let (code, answer) = form_post(&addr, &delete, origin);
        assert_eq!(code, 403, "{answer}");
        assert!(answer.contains("refused"), "{answer}");
    }
    assert_eq!(queue_ids(&cfg, &["--state", "held"]), vec![id.clone()]);
    let (code, answer) = form_post(&addr, "/api/v1/flush", Some("http://attacker.example"));
    assert_eq!(code, 403, "{answer}");
    let (code, answer) = form_post(&addr, "/api/v1/reload", None);
    assert_eq!(code, 403, "{answer}");
    assert!(answer.contains("X-Mx2-Request"), "{answer}");
    // Even with a JSON body, a request a browser made for another site is refused.
    let (code, answer) = raw_http(
        &addr,
        &format!(
            "POST /api/v1/flush HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\nSec-Fetch-Site: cross-site\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
        ),
    );
    assert_eq!(code, 403, "{answer}");
    let (code, events) = http("GET", &format!("http://{addr}/api/v1/events"), None, None);
    assert_eq!(code, 200);
    assert!(
        !events.contains("reload"),
        "a refused reload did not run: {events}"
    );

    // DNS rebinding: the page's own name in Host gets nothing.
    for path in ["/api/v1/queue", &format!("/api/v1/queue/{id}/eml"), "/"] {
        let (code, answer) = get_with_host(&addr, path, &format!("attacker.example:{admin_port}"));
        assert_eq!(code, 421, "{path}: {answer}");
        assert!(!answer.contains(&id), "{answer}");
        assert!(answer.contains("admin.allowed_hosts"), "{answer}");
    }
    // This server's names: its address, localhost, a configured name; or no Host at all.
    for host in [
        addr.clone(),
        format!("localhost:{admin_port}"),
        "mx2.example.net".to_string(),
    ] {
        let (code, answer) = get_with_host(&addr, "/api/v1/queue", &host);
        assert_eq!(code, 200, "{host}: {answer}");
        assert!(answer.contains(&id), "{answer}");
    }
    let (code, answer) = raw_http(&addr, "GET /api/v1/queue HTTP/1.0\r\n\r\n");
    assert_eq!(code, 200, "{answer}");
    assert!(answer.contains(&id), "{answer}");

    // Programs and mx2's own commands still act.
    let (code, answer) = raw_http(
        &addr,
        &format!(
            "POST /api/v1/queue/{id}/release HTTP/1.1\r\nHost: {addr}\r\nOrigin: http://{addr}\r\nX-Mx2-Request: 1\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
        ),
    );
    assert_eq!(code, 200, "{answer}");
    for args in [&["queue", "flush"][..], &["reload"]] {
        let (code, out, err) = cli(args, &cfg);
        assert_eq!(code, 0, "{args:?}: {out}{err}");
    }
    let (code, out, err) = cli(&["queue", "delete", &id], &cfg);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("deleted 1"), "{out}");
    assert!(queue_ids(&cfg, &[]).is_empty());
}

/// How many files `pid` has open (Linux).
fn open_files(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, |d| d.count())
}

/// Item 3 of issue 13: clients that open the admin port and send half a request head, or sit
/// idle between requests, are closed after the header timeout (10 s); beyond 256 at once
/// they are closed at once. Meanwhile SMTP on the same mx2, whose open-file limit is 400,
/// still greets.
#[test]
fn slow_admin_clients_cannot_take_the_file_descriptors_smtp_needs() {
    let _heavy = exclusive();
    const SLOW: usize = 450;
    const CAP: usize = 256;
    let mut mx2 = Mx2::prepare(|port, state| test_config(port, free_port(), state, ""));
    mx2.wrapper = ["prlimit", "--nofile=400:400"].map(String::from).to_vec();
    mx2.spawn();
    let api = mx2.admin_url();
    let addr = api.strip_prefix("http://").unwrap().to_string();
    let before = open_files(mx2.pid());

    // A keep-alive client that asks once, then says nothing.
    let mut idle = TcpStream::connect(&addr).unwrap();
    write!(idle, "GET /healthz HTTP/1.1\r\nHost: {addr}\r\n\r\n").unwrap();
    let mut first = [0u8; 512];
    let n = idle.read(&mut first).unwrap();
    assert!(
        String::from_utf8_lossy(&first[..n]).starts_with("HTTP/1.1 200"),
        "{}",
        String::from_utf8_lossy(&first[..n])
    );
    let idle_since = Instant::now();

    let opened = Instant::now();
    let mut slow: Vec<Option<TcpStream>> = (0..SLOW)
        .map(|_| {
            let mut s = TcpStream::connect(&addr).unwrap();
            s.write_all(b"GET / HTTP/1.1\r\n").unwrap();
            s.set_nonblocking(true).unwrap();
            Some(s)
        })
        .collect();
    let mut closed_after: Vec<Option<Duration>> = vec![None; SLOW];
    let mut answers = vec![Vec::new(); SLOW];
    let mut idle_closed: Option<Duration> = None;
    idle.set_nonblocking(true).unwrap();
    let mut during: Option<(usize, String, u16)> = None;
    let mut buf = [0u8; 1024];
    while opened.elapsed() < Duration::from_secs(40) {
        for (i, s) in slow.iter_mut().enumerate() {
            let Some(stream) = s else { continue };
            match stream.read(&mut buf) {
                Ok(0) => {}
                Ok(n) => {
                    answers[i].extend_from_slice(&buf[..n]);
                    continue;
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
                Err(_) => {}
            }
            closed_after[i] = Some(opened.elapsed());
            *s = None;
        }
        if idle_closed.is_none() {
            match idle.read(&mut buf) {
                Ok(0) => idle_closed = Some(idle_since.elapsed()),
                Ok(_) => {} // the rest of its answer
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                Err(_) => idle_closed = Some(idle_since.elapsed()),
            }
        }
        // Once the flood is in: what mx2 holds, and whether SMTP and the admin port answer.
        if during.is_none() && opened.elapsed() > Duration::from_secs(2) {
            let files = open_files(mx2.pid());
            let mut smtp = TcpStream::connect(("127.0.0.1", mx2.port)).unwrap();
            smtp.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
            let mut greeting = [0u8; 256];
            let n = smtp.read(&mut greeting).unwrap_or(0);
            let greeting = String::from_utf8_lossy(&greeting[..n]).into_owned();
            let over = raw_http(
                &addr,
                &format!("GET /healthz HTTP/1.1\r\nHost: {addr}\r\n\r\n"),
            )
            .0;
            during = Some((files, greeting, over));
        }
        if slow.iter().all(Option::is_none) && idle_closed.is_some() {
            break;
        }
        thread::sleep(Duration::from_millis(20));
    }
    let (files, greeting, over) = during.expect("checked during the flood");
    let at_once: Vec<Duration> = closed_after
        .iter()
        .flatten()
        .copied()
        .filter(|t| *t < Duration::from_secs(5))
        .collect();
    let timed_out: Vec<Duration> = closed_after
        .iter()
        .flatten()
        .copied()
        .filter(|t| *t >= Duration::from_secs(5))
        .collect();
    let answered_503 = answers
        .iter()
        .filter(|a| a.starts_with(b"HTTP/1.1 503"))
        .count();
    println!(
        "mx2 open files: {before} before, {files} with {SLOW} slow clients; closed at once: {} ({answered_503} saw 503); closed after {:?}..{:?}: {}; still open: {}; idle keep-alive closed after {idle_closed:?}; admin port during the flood: {over}",
        at_once.len(),
        timed_out.iter().min(),
        timed_out.iter().max(),
        timed_out.len(),
        slow.iter().flatten().count(),
    );
    assert!(
        greeting.starts_with("220"),
        "SMTP during the flood: {greeting:?}\n{}",
        mx2.log()
    );
    assert!(files <= before + CAP + 20, "mx2 held {files} files");
    assert!(
        at_once.len() >= SLOW - CAP,
        "only {} closed at once",
        at_once.len()
    );
    assert_eq!(
        slow.iter().flatten().count(),
        0,
        "slow clients still open after 40 s"
    );
    assert!(
        timed_out.iter().all(|t| *t < Duration::from_secs(25)),
        "header timeout (10 s) overrun: {:?}",
        timed_out.iter().max()
    );
    assert_ne!(
        over, 200,
        "the admin port took one more connection over its cap"
    );
    let idle_closed = idle_closed.expect("the idle keep-alive connection was closed");
    assert!(
        idle_closed >= Duration::from_secs(5) && idle_closed < Duration::from_secs(25),
        "idle keep-alive closed after {idle_closed:?}"
    );
    // Nothing stays behind: the port serves again.
    let (code, body) = http("GET", &format!("{api}/healthz"), None, None);
    assert_eq!(code, 200, "{body}");
}
