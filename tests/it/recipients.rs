//! Knowing the recipients: lists (file, URL), callouts with caches that survive a restart,
//! learning from deliveries, and standby mode.

use crate::common::*;
use std::time::Duration;

fn mx2_for(primary_port: u16, domain_extra: &str, top_extra: &str) -> Mx2 {
    let tail = format!(
        "{top_extra}\n[[domain]]\nname = \"example.test\"\nprimary = [\"127.0.0.1:{primary_port}\"]\n{domain_extra}\n"
    );
    Mx2::start_tail(&tail)
}

fn rcpt(m: &Mx2, addr: &str) -> String {
    let mut c = m.client();
    c.cmd("EHLO client.test");
    c.cmd("MAIL FROM:<a@sender.test>");
    c.cmd(&format!("RCPT TO:<{addr}>"))
}

#[test]
fn list_from_a_file_is_authoritative_and_reloads() {
    let dir = tempfile::tempdir().unwrap();
    let list = dir.path().join("rcpts.txt");
    std::fs::write(&list, "# users\nalice@example.test\nBob@Example.test\n").unwrap();
    let mx2 = mx2_for(
        free_port(),
        &format!(
            "recipients = \"list\"\nrecipient_files = [\"{}\"]",
            list.display()
        ),
        "",
    );
    assert!(rcpt(&mx2, "alice@example.test").starts_with("250"));
    assert!(
        rcpt(&mx2, "ALICE+news@example.test").starts_with("250"),
        "case and +tag are folded"
    );
    assert!(rcpt(&mx2, "bob@example.test").starts_with("250"));
    let r = rcpt(&mx2, "mallory@example.test");
    assert!(r.starts_with("550 5.1.1"), "{r}");
    // RFC 5321 §4.5.1: the postmaster is always accepted.
    let r = rcpt(&mx2, "PostMaster@example.test");
    assert!(r.starts_with("250"), "{r}");
    // The file changes: picked up without a restart.
    std::fs::write(&list, "alice@example.test\nmallory@example.test\n").unwrap();
    assert!(
        poll_until(Duration::from_secs(15), || rcpt(
            &mx2,
            "mallory@example.test"
        )
        .starts_with("250")),
        "log:\n{}",
        mx2.log()
    );
    assert!(rcpt(&mx2, "bob@example.test").starts_with("550"));
    // SIGHUP reloads at once.
    std::fs::write(&list, "@example.test\n").unwrap();
    std::process::Command::new("kill")
        .args(["-HUP", &mx2.pid().to_string()])
        .status()
        .unwrap();
    assert!(
        poll_until(Duration::from_secs(5), || rcpt(&mx2, "anyone@example.test")
            .starts_with("250")),
        "wildcard after SIGHUP; log:\n{}",
        mx2.log()
    );
}

/// Serves `body` to every GET (checking the bearer token) until the test ends.
fn http_server(body: &'static str, token: &'static str) -> u16 {
    crate::common::http::ListServer::start(body, token).port
}

#[test]
fn list_from_a_url_the_primary_publishes() {
    let port = http_server("[\"carol@example.test\", \"dave@example.test\"]", "t0ken");
    let dir = tempfile::tempdir().unwrap();
    let token = dir.path().join("token");
    std::fs::write(&token, "t0ken\n").unwrap();
    let mx2 = mx2_for(
        free_port(),
        &format!(
            "recipients = \"list\"\nrecipient_url = \"http://127.0.0.1:{port}/rcpts.json\"\nrecipient_url_token_file = \"{}\"",
            token.display()
        ),
        "",
    );
    assert!(
        rcpt(&mx2, "carol@example.test").starts_with("250"),
        "log:\n{}",
        mx2.log()
    );
    assert!(rcpt(&mx2, "erin@example.test").starts_with("550 5.1.1"));
}

#[test]
fn callouts_are_cached_durably_and_answer_while_the_primary_is_down() {
    let port = free_port();
    let opts = || PrimaryOptions::rejecting("5.1.1 no such user");
    let primary = Primary::start_with(port, opts());
    let mut mx2 = mx2_for(port, "recipients = \"verify\"", "");
    assert!(rcpt(&mx2, "alice@example.test").starts_with("250"));
    assert!(rcpt(&mx2, "nobody@example.test").starts_with("550 5.1.1"));
    let tries = primary.rcpt_tries("alice@example.test");
    assert!(rcpt(&mx2, "alice@example.test").starts_with("250"));
    assert_eq!(
        primary.rcpt_tries("alice@example.test"),
        tries,
        "answered from the cache, no second callout"
    );
    // Primary gone, mx2 restarted: the cache still answers; the unknown wait.
    drop(primary);
    mx2.kill9();
    mx2.spawn();
    assert!(
        rcpt(&mx2, "alice@example.test").starts_with("250"),
        "log:\n{}",
        mx2.log()
    );
    assert!(rcpt(&mx2, "nobody@example.test").starts_with("550 5.1.1"));
    let r = rcpt(&mx2, "stranger@example.test");
    assert!(r.starts_with("451 4.4.3"), "{r}");
}

#[test]
fn recipients_learned_from_deliveries_are_known_later() {
    let port = free_port();
    // Down at first: with unknown_when_down = "accept", carol is taken on trust...
    let mut mx2 = mx2_for(
        port,
        "recipients = \"verify\"\nunknown_when_down = \"accept\"",
        "",
    );
    let mut c = mx2.client();
    c.cmd("EHLO client.test");
    assert!(
        c.send_mail(
            "a@sender.test",
            &["carol@example.test"],
            &message("learn", "x")
        )
        .starts_with("250")
    );
    std::thread::sleep(Duration::from_millis(1500));
    // ...delivered when the primary comes back, which teaches mx2 that carol exists.
    let primary = Primary::start(port);
    assert_eq!(
        primary.wait_for(1, Duration::from_secs(10)).len(),
        1,
        "log:\n{}",
        mx2.log()
    );
    drop(primary);
    std::thread::sleep(Duration::from_millis(300));
    // Restart with the strict policy: carol is known, a stranger is not.
    let cfg = std::fs::read_to_string(&mx2.config).unwrap().replace(
        "unknown_when_down = \"accept\"",
        "unknown_when_down = \"tempfail\"",
    );
    std::fs::write(&mx2.config, cfg).unwrap();
    mx2.kill9();
    mx2.spawn();
    assert!(
        rcpt(&mx2, "carol@example.test").starts_with("250"),
        "log:\n{}",
        mx2.log()
    );
    assert!(rcpt(&mx2, "dave@example.test").starts_with("451"));
}

#[test]
fn standby_refuses_while_the_primary_is_up() {
    let port = free_port();
    let primary = Primary::start(port);
    let mx2 = mx2_for(
        port,
        "standby = true",
        "[recipients]\nstandby_check_interval = \"300ms\"",
    );
    let r = rcpt(&mx2, "alice@example.test");
    assert!(r.starts_with("451 4.7.1"), "{r}");
    drop(primary);
    assert!(
        poll_until(Duration::from_secs(10), || rcpt(&mx2, "alice@example.test")
            .starts_with("250")),
        "log:\n{}",
        mx2.log()
    );
    // Back up: refused again once the probe sees it.
    let _primary = Primary::start(port);
    assert!(
        poll_until(Duration::from_secs(10), || rcpt(&mx2, "alice@example.test")
            .starts_with("451")),
        "log:\n{}",
        mx2.log()
    );
}

/// Guessing addresses is an error like any other: after max_errors refusals the session is
/// closed with 421 (no unlimited directory harvesting), and the replies to a pipelined batch
/// come back without waiting for the tarpit to add up.
#[test]
fn guessing_recipients_ends_the_session_after_max_errors() {
    let dir = tempfile::tempdir().unwrap();
    let list = dir.path().join("rcpts.txt");
    std::fs::write(&list, "alice@example.test\n").unwrap();
    let tail = format!(
        "[[domain]]\nname = \"example.test\"\nprimary = [\"127.0.0.1:{}\"]\nrecipients = \"list\"\nrecipient_files = [\"{}\"]\n",
        free_port(),
        list.display()
    );
    let mx2 = Mx2::start_config(|p, state| config_with(p, state, "max_errors = 5", &tail));
    let mut c = mx2.client();
    assert!(c.cmd("EHLO client.test").starts_with("250"));
    let mut batch = String::from("MAIL FROM:<a@sender.test>\r\nRCPT TO:<alice@example.test>\r\n");
    for i in 0..10 {
        batch.push_str(&format!("RCPT TO:<guess{i}@example.test>\r\n"));
    }
    c.send_raw(batch.as_bytes());
    let mut replies = Vec::new();
    loop {
        let r = c.reply();
        if r.contains("<closed>") {
            break;
        }
        replies.push(r);
        assert!(replies.len() <= 12, "{replies:?}");
    }
    let refused = replies
        .iter()
        .filter(|r| r.starts_with("550 5.1.1"))
        .count();
    assert_eq!(refused, 4, "{replies:?}");
    assert!(
        replies.last().is_some_and(|r| r.starts_with("421 4.7.0")),
        "{replies:?}"
    );
}
