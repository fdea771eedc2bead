//! The emergency inbox against the real binary and real clients: Python's imaplib and curl
//! log in over TLS (implicit and STARTTLS), list, fetch a held message byte for byte, search,
//! set `\Seen` (kept across a reconnect); another user sees none of it (also through `+tag`
//! and case variants); a wrong password is refused and the lockout starts after the
//! configured failures; LOGIN before STARTTLS is refused and a command pipelined behind
//! STARTTLS is never run; IDLE reports new mail; a message read is still delivered. The
//! scenario runs on SQLite and on PostgreSQL.

use crate::common::pg::Pg;
use crate::common::pki::Pki;
use crate::common::*;
use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const CLIENT: &str = include_str!("inbox/client.py");

pub(crate) struct Inbox {
    pub(crate) mx2: Mx2,
    pub(crate) imaps: u16,
    imap: u16,
    pub(crate) ca: PathBuf,
    script: PathBuf,
    _dir: tempfile::TempDir,
}

/// mx2 with the inbox on for example.test (whose primary is on `primary_port`), on the
/// embedded store or the one `storage` names.
fn start(primary_port: u16, storage: &str, max_failures: u32) -> Inbox {
    start_with(primary_port, storage, max_failures, "", "")
}

/// The same with more `[inbox]` keys and more tables after the domains.
pub(crate) fn start_with(
    primary_port: u16,
    storage: &str,
    max_failures: u32,
    inbox_keys: &str,
    more: &str,
) -> Inbox {
    start_smtp(primary_port, storage, max_failures, inbox_keys, more, "")
}

/// The same with more `[smtp]` keys (`max_message_size` replaces the tests' 1 MB).
pub(crate) fn start_smtp(
    primary_port: u16,
    storage: &str,
    max_failures: u32,
    inbox_keys: &str,
    more: &str,
    smtp_extra: &str,
) -> Inbox {
    let pki = Pki::new();
    let dir = tempfile::tempdir().unwrap();
    let leaf = pki.leaf(dir.path(), "mx2", &["mx2.test", "127.0.0.1"]);
    let ca = pki.write_ca(dir.path());
    let (imap, imaps) = (free_port(), free_port());
    let tail = format!(
        "{storage}[tls]\ncert = \"{}\"\nkey = \"{}\"\n[inbox]\nlisten = \"127.0.0.1:{imap}\"\ntls_listen = \"127.0.0.1:{imaps}\"\nmax_login_failures = {max_failures}\nlockout = \"1m\"\n{inbox_keys}[[domain]]\nname = \"example.test\"\nprimary = [\"127.0.0.1:{primary_port}\"]\ninbox = true\n[[domain]]\nname = \"other.test\"\nprimary = [\"127.0.0.1:{primary_port}\"]\n{more}",
        leaf.cert.display(),
        leaf.key.display()
    );
    let mx2 = Mx2::start_config(|port, state| config_with(port, state, smtp_extra, &tail));
    let script = dir.path().join("client.py");
    std::fs::write(&script, CLIENT).unwrap();
    Inbox {
        mx2,
        imaps,
        imap,
        ca,
        script,
        _dir: dir,
    }
}

impl Inbox {
    /// `mx2 inbox passwd ADDRESS --password-stdin`.
    pub(crate) fn passwd(&self, address: &str, password: &str) {
        let mut child = Command::new(mx2_binary())
            .args(["inbox", "passwd", address, "--password-stdin", "--config"])
            .arg(&self.mx2.config)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        writeln!(child.stdin.take().unwrap(), "{password}").unwrap();
        let out = child.wait_with_output().unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "passwd: {text}{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(text.contains("inbox password"), "{text}");
    }

    /// `mx2 inbox log ARGS --json`: the events.
    fn log(&self, args: &[&str]) -> Vec<serde_json::Value> {
        let out = Command::new(mx2_binary())
            .args(["inbox", "log"])
            .args(args)
            .args(["--json", "--config"])
            .arg(&self.mx2.config)
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "inbox log: {text}{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let v: serde_json::Value = serde_json::from_str(text.trim()).unwrap();
        v["events"].as_array().unwrap().clone()
    }

    /// Runs a step of the imaplib client; its JSON answer.
    fn py(&self, mode: &str, port: u16, user: &str, password: &str) -> serde_json::Value {
        let out = Command::new("python3")
            .arg(&self.script)
            .args([mode, "127.0.0.1", &port.to_string()])
            .arg(&self.ca)
            .args([user, password])
            .env("PYTHONDONTWRITEBYTECODE", "1")
            .output()
            .expect("python3 must be installed");
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "client.py {mode}: {stdout}{}\nmx2 log:\n{}",
            String::from_utf8_lossy(&out.stderr),
            self.mx2.log()
        );
        serde_json::from_str(stdout.trim()).unwrap()
    }

    fn send(&self, to: &str, subject: &str) -> Vec<u8> {
        let content = format!(
            "From: Sender <s@sender.test>\r\nTo: {to}\r\nSubject: {subject}\r\nMessage-ID: <{subject}@sender.test>\r\n\r\nbody of {subject}\r\nline two\r\n"
        )
        .into_bytes();
        let mut c = self.mx2.client();
        c.cmd("EHLO client.test");
        let r = c.send_mail("s@sender.test", &[to], &content);
        assert!(r.starts_with("250"), "{r}");
        content
    }

    fn curl(&self, args: &[&str]) -> (bool, Vec<u8>) {
        let out = Command::new("curl")
            .args(["-s", "-S", "--max-time", "20", "--cacert"])
            .arg(&self.ca)
            .args(args)
            .output()
            .expect("curl must be installed");
        if !out.status.success() {
            eprintln!("curl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
        }
        (out.status.success(), out.stdout)
    }
}

fn base64(s: &str) -> Vec<u8> {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.decode(s).unwrap()
}

/// The whole story for one store (`storage`: its `[storage]` table, empty for SQLite).
fn scenario(storage: &str) {
    let primary_port = free_port();
    let ib = start_with(
        primary_port,
        storage,
        3,
        "keep_after_delivery = \"6s\"\n",
        "",
    );
    ib.passwd("Jo@Example.TEST", "jo-secret");
    ib.passwd("al@example.test", "al-secret");
    let report = ib.send("jo+news@example.test", "Quarterly");
    ib.send("JO@example.test", "Second");
    ib.send("al@example.test", "ForAl");
    ib.send("jo@other.test", "OtherDomain");

    let r = ib.py("read", ib.imaps, "jo@example.test", "jo-secret");
    assert_eq!(r["login"], "OK", "{r}");
    assert!(r["list"][0].as_str().unwrap().ends_with("INBOX"), "{r}");
    assert_eq!(r["exists"], 2, "jo sees their two messages: {r}");
    assert_eq!(r["search"].as_array().unwrap().len(), 1, "{r}");
    assert_eq!(r["unseen"].as_array().unwrap().len(), 2, "{r}");
    let fetched = base64(r["body"].as_str().unwrap());
    assert!(
        fetched.ends_with(&report),
        "the held message, as stored (trace header first): {}",
        String::from_utf8_lossy(&fetched)
    );
    assert!(
        fetched.starts_with(b"Received: "),
        "{}",
        String::from_utf8_lossy(&fetched)
    );
    let meta = r["meta"].as_str().unwrap();
    assert!(
        meta.contains(&format!("RFC822.SIZE {}", fetched.len())),
        "{meta}"
    );
    assert!(
        meta.contains("\"Quarterly\"") && meta.contains("\"sender.test\""),
        "{meta}"
    );
    assert!(
        meta.to_lowercase()
            .contains("bodystructure (\"text\" \"plain\"")
            && meta.contains(" 2))"),
        "{meta}"
    );
    assert!(
        !r["flags_before"].as_str().unwrap().contains("Seen"),
        "PEEK sets nothing: {r}"
    );
    assert_eq!(r["store"], "OK");
    assert!(r["copy"].as_str().unwrap().contains("CANNOT"), "{r}");
    let after = r["flags_after"].as_str().unwrap();
    assert!(
        after.contains("\\Seen") && after.contains("\\Flagged"),
        "kept across a reconnect: {r}"
    );
    assert_eq!(r["seen"].as_array().unwrap().len(), 1, "{r}");

    // Another user sees only their own mail, whatever case or +tag jo's address is given in.
    let al = ib.py("login", ib.imaps, "al@example.test", "al-secret");
    assert_eq!(
        (al["result"].as_str(), al["exists"].as_u64()),
        (Some("OK"), Some(1)),
        "{al}"
    );
    for variant in ["JO+x@EXAMPLE.test", "jo+other@example.test."] {
        let v = ib.py("login", ib.imaps, variant, "jo-secret");
        assert_eq!(v["exists"], 2, "{variant} is jo's own mailbox: {v}");
    }
    let wrong = ib.py("login", ib.imaps, "jo@example.test", "al-secret");
    assert_eq!(wrong["result"], "NO", "al's password is not jo's: {wrong}");
    let no_inbox = ib.py("login", ib.imaps, "jo@other.test", "jo-secret");
    assert_eq!(
        no_inbox["result"], "NO",
        "other.test has no inbox: {no_inbox}"
    );

    // STARTTLS: LOGIN refused before it, fine after.
    let st = ib.py("starttls", ib.imap, "al@example.test", "al-secret");
    let before: Vec<&str> = st["caps_before"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c.as_str().unwrap())
        .collect();
    assert!(
        before.contains(&"STARTTLS") && before.contains(&"LOGINDISABLED"),
        "{st}"
    );
    assert_ne!(st["plain_login"], "OK", "{st}");
    assert!(
        !st["caps_after"].to_string().contains("LOGINDISABLED"),
        "{st}"
    );
    assert_eq!(
        (st["login"].as_str(), st["exists"].as_u64()),
        (Some("OK"), Some(1)),
        "{st}"
    );

    // curl, a second real client: implicit TLS and STARTTLS.
    let url = format!("imaps://127.0.0.1:{}/INBOX", ib.imaps);
    let (ok, search) = ib.curl(&[
        "--user",
        "jo@example.test:jo-secret",
        "-X",
        "SEARCH SUBJECT Second",
        &url,
    ]);
    assert!(
        ok && String::from_utf8_lossy(&search).starts_with("* SEARCH "),
        "{}",
        String::from_utf8_lossy(&search)
    );
    let uid = String::from_utf8_lossy(&search)
        .trim()
        .rsplit(' ')
        .next()
        .unwrap()
        .to_string();
    let (ok, body) = ib.curl(&[
        "--user",
        "jo@example.test:jo-secret",
        &format!("{url};UID={uid}"),
    ]);
    assert!(
        ok && body.ends_with(b"body of Second\r\nline two\r\n"),
        "{}",
        String::from_utf8_lossy(&body)
    );
    let plain = format!("imap://127.0.0.1:{}/INBOX;UID={uid}", ib.imap);
    let (ok, body2) = ib.curl(&["--ssl-reqd", "--user", "jo@example.test:jo-secret", &plain]);
    assert!(ok && body2 == body, "STARTTLS gives the same bytes");
    let (_, theirs) = ib.curl(&[
        "--user",
        "al@example.test:al-secret",
        &format!("{url};UID={uid}"),
    ]);
    assert!(
        !theirs.ends_with(b"body of Second\r\nline two\r\n"),
        "al cannot fetch jo's UID"
    );

    // IDLE: a message arriving while jo idles is reported within 2 s.
    let mut idle = Command::new("python3")
        .arg(&ib.script)
        .args(["idle", "127.0.0.1", &ib.imaps.to_string()])
        .arg(&ib.ca)
        .args(["jo@example.test", "jo-secret"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(idle.stdout.take().unwrap()).lines();
    assert_eq!(lines.next().unwrap().unwrap(), "IDLING");
    let sent = Instant::now();
    ib.send("jo@example.test", "WhileIdling");
    let accepted = sent.elapsed();
    let answer: serde_json::Value = serde_json::from_str(&lines.next().unwrap().unwrap()).unwrap();
    let took = sent.elapsed();
    assert!(idle.wait().unwrap().success());
    println!(
        "IDLE: new mail reported {took:?} after the SMTP transaction began (accepted after {accepted:?})"
    );
    assert_eq!(answer["line"], "* 3 EXISTS", "{answer}");
    assert!(answer["done"].as_str().unwrap().contains("OK"), "{answer}");
    assert!(took < Duration::from_secs(2), "{took:?}");

    // Every login and message read is in the event log and `mx2 inbox log`, by mailbox.
    let url = format!("{}/api/v1/events", ib.mx2.admin_url());
    let (_, events) = crate::common::http::http("GET", &url, None, None);
    assert!(
        events.contains("inbox_login") && events.contains("inbox_read"),
        "{events}"
    );
    let jo = ib.log(&["JO+x@example.test"]);
    let kinds = |events: &[serde_json::Value], kind: &str| {
        events.iter().filter(|e| e["event"] == kind).count()
    };
    assert!(
        jo.iter().all(|e| e["address"] == "jo@example.test"),
        "only jo's: {jo:?}"
    );
    assert!(kinds(&jo, "inbox_read") >= 2, "{jo:?}");
    let refused = jo
        .iter()
        .find(|e| e["event"] == "inbox_login" && e["ok"] == false)
        .expect("al's password for jo, refused");
    assert_eq!(
        (refused["client"].as_str(), refused["protocol"].as_str()),
        (Some("127.0.0.1"), Some("imap")),
        "{refused}"
    );
    assert!(
        jo.iter()
            .any(|e| e["event"] == "inbox_login" && e["ok"] == true)
    );
    assert_eq!(kinds(&jo, "inbox_password"), 1, "mx2 inbox passwd: {jo:?}");
    let al = ib.log(&["al@example.test"]);
    assert!(!al.is_empty() && al.iter().all(|e| e["address"] == "al@example.test"));
    let domain = ib.log(&["--domain", "example.test"]);
    assert_eq!(domain.len(), jo.len() + al.len(), "{domain:?}");
    assert!(
        ib.log(&["--domain", "other.test"])
            .iter()
            .all(|e| e["address"].as_str().unwrap().ends_with("@other.test")),
        "jo@other.test's refused login only"
    );

    // The primary comes back: what jo read is delivered all the same, once.
    let primary = Primary::start(primary_port);
    let got = primary.wait_and_settle(5, Duration::from_secs(20), Duration::from_secs(1));
    let copies = got
        .iter()
        .filter(|m| m.body.ends_with(&report) && m.rcpts.iter().any(|r| r.contains("jo+news")))
        .count();
    assert_eq!(copies, 1, "the read message reaches the primary once");
    assert_eq!(got.len(), 5, "nothing delivered twice");

    // For keep_after_delivery (6 s here) jo still sees it all, marked delivered.
    let kept = ib.py("login", ib.imaps, "jo@example.test", "jo-secret");
    assert_eq!(
        kept["exists"], 3,
        "delivered mail stays in the inbox: {kept}"
    );
    let flags = kept["flags"].as_array().unwrap();
    assert!(
        flags.len() == 3
            && flags
                .iter()
                .all(|f| f.as_str().unwrap().contains("$Delivered")),
        "{kept}"
    );
    assert!(
        flags[0].as_str().unwrap().contains("\\Seen"),
        "what jo set is kept: {kept}"
    );
    assert_eq!(kept["delivered"].as_array().unwrap().len(), 3, "{kept}");
    // Kept, it is no queued mail: not in the queue's view or counts.
    let id = queue_id_of(&fetched);
    let admin = ib.mx2.admin_url();
    let (code, _) =
        crate::common::http::http("GET", &format!("{admin}/api/v1/queue/{id}"), None, None);
    assert_eq!(code, 404, "{id} is not in the queue");
    let (_, status) =
        crate::common::http::http("GET", &format!("{admin}/api/v1/status"), None, None);
    let status: serde_json::Value = serde_json::from_str(&status).unwrap();
    assert_eq!(status["queue"]["messages"], 0, "not queued mail: {status}");

    // Then it leaves the inbox, and the purge takes the four kept messages from the store.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let v = ib.py("login", ib.imaps, "jo@example.test", "jo-secret");
        if v["exists"] == 0 {
            break;
        }
        assert!(Instant::now() < deadline, "still shown: {v}");
        std::thread::sleep(Duration::from_millis(500));
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    let purged = |log: &str| {
        log.lines()
            .filter(|l| l.contains("kept for the inbox removed"))
            .filter_map(|l| {
                l.split("messages=")
                    .nth(1)?
                    .split_whitespace()
                    .next()?
                    .parse::<u64>()
                    .ok()
            })
            .sum::<u64>()
    };
    while purged(&ib.mx2.log()) < 4 {
        assert!(Instant::now() < deadline, "not purged:\n{}", ib.mx2.log());
        std::thread::sleep(Duration::from_millis(200));
    }
    assert_eq!(
        primary.messages().len(),
        5,
        "and it was never delivered again"
    );
}

/// The queue id in the first `Received:` line mx2 wrote (`… with ESMTP id ID`).
fn queue_id_of(message: &[u8]) -> String {
    let text = String::from_utf8_lossy(message);
    let at = text.find(" id ").expect("a Received: line with an id") + 4;
    text[at..]
        .split(|c: char| c.is_whitespace() || c == ';')
        .next()
        .unwrap()
        .to_string()
}

#[test]
fn imap_on_sqlite() {
    scenario("");
}

#[test]
fn imap_on_postgres() {
    let url = Pg::shared().fresh_db();
    scenario(&format!(
        "[storage]\nbackend = \"postgres\"\nurl = \"{url}\"\n"
    ));
}

/// `mx2 inbox invite`: the code is mailed (through the queue) to the alternate address's
/// server, works once as the IMAP password, and not after `code_validity`.
#[test]
fn one_time_codes() {
    let alt_port = free_port();
    let alt = Primary::start(alt_port);
    let ib = start_with(
        free_port(),
        "",
        5,
        "code_validity = \"10s\"\n",
        &format!("[[domain]]\nname = \"alt.test\"\nprimary = [\"127.0.0.1:{alt_port}\"]\n"),
    );
    let invite = |to: &str| -> (bool, serde_json::Value, String) {
        let out = Command::new(mx2_binary())
            .args([
                "inbox",
                "invite",
                "Jo@example.test",
                "--to",
                to,
                "--json",
                "--config",
            ])
            .arg(&ib.mx2.config)
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let err = String::from_utf8_lossy(&out.stderr).into_owned();
        let v = serde_json::from_str(text.trim()).unwrap_or(serde_json::Value::Null);
        (out.status.success(), v, format!("{text}{err}"))
    };
    let (ok, _, text) = invite("jo2@example.test");
    assert!(
        !ok && text.contains("elsewhere"),
        "not in the held domain: {text}"
    );

    let (ok, answer, text) = invite("jo.private@alt.test");
    assert!(ok, "{text}");
    assert_eq!(answer["address"], "jo@example.test", "{answer}");
    let refused = Command::new(mx2_binary())
        .args([
            "inbox",
            "invite",
            "jo@other.test",
            "--to",
            "jo.private@alt.test",
            "--config",
        ])
        .arg(&ib.mx2.config)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&refused.stderr);
    assert!(
        !refused.status.success()
            && err.contains("other.test has no emergency inbox")
            && err.contains("inbox = true"),
        "an invite for a domain without an inbox is refused: {err}"
    );
    let invites: Vec<_> = ib
        .log(&["--domain", "example.test"])
        .into_iter()
        .filter(|e| e["event"] == "inbox_invite")
        .collect();
    assert_eq!(invites.len(), 1, "{invites:?}");
    assert_eq!(invites[0]["to"], "jo.private@alt.test");
    assert!(
        ib.log(&["--domain", "other.test"]).is_empty(),
        "the refused invite is no event"
    );
    // The code is the line of the mail shaped `xxxxx-xxxxx-xxxxx-xxxxx`.
    let code_in = |m: &Received| {
        let mail = String::from_utf8_lossy(&m.body).into_owned();
        mail.lines()
            .map(str::trim)
            .find(|l| l.len() == 23 && l.matches('-').count() == 3)
            .unwrap_or_else(|| panic!("no code in the mail:\n{mail}"))
            .to_string()
    };
    let got = alt.wait_for(1, Duration::from_secs(20));
    assert_eq!(got[0].mail_from, "", "null sender: {:?}", got[0].mail_from);
    assert_eq!(got[0].rcpts, ["jo.private@alt.test"]);
    let code = code_in(&got[0]);
    assert!(!text.contains(&code), "the code is only in the mail");

    ib.send("jo@example.test", "Held");
    let first = ib.py("login", ib.imaps, "jo@example.test", &code);
    assert_eq!(
        (first["result"].as_str(), first["exists"].as_u64()),
        (Some("OK"), Some(1)),
        "the code logs in: {first}"
    );
    let again = ib.py("login", ib.imaps, "jo@example.test", &code);
    assert_eq!(again["result"], "NO", "a code works once: {again}");
    let (_, events) = crate::common::http::http(
        "GET",
        &format!("{}/api/v1/events", ib.mx2.admin_url()),
        None,
        None,
    );
    assert!(events.contains("one-time code"), "{events}");

    // A second code, not used within its validity, is refused after it.
    let (ok, answer, text) = invite("jo.private@alt.test");
    assert!(ok, "{text}");
    let got = alt.wait_for(2, Duration::from_secs(20));
    let late = code_in(&got[1]);
    assert_ne!(late, code);
    let expires = answer["expires_at_ms"].as_u64().unwrap();
    loop {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis() as u64;
        if now > expires + 200 {
            break;
        }
        std::thread::sleep(Duration::from_millis(expires + 250 - now));
    }
    let expired = ib.py("login", ib.imaps, "jo@example.test", &late);
    assert_eq!(
        expired["result"], "NO",
        "an expired code is refused: {expired}"
    );
}

/// A user's delete (STORE +FLAGS \Deleted, EXPUNGE): with the default `keep_delivering` it
/// only leaves the inbox and the message is still delivered; with `do_not_deliver` the
/// user's recipient is dropped (another recipient of the same message is still delivered).
#[test]
fn deletes_follow_inbox_delete() {
    let primary_port = free_port();
    let ib = start_with(
        primary_port,
        "",
        5,
        "",
        &format!(
            "[[domain]]\nname = \"drop.test\"\nprimary = [\"127.0.0.1:{primary_port}\"]\ninbox = true\ninbox_delete = \"do_not_deliver\"\n"
        ),
    );
    ib.passwd("jo@example.test", "jo-secret");
    ib.passwd("jo@drop.test", "jo-secret");
    ib.send("jo@example.test", "KeptForDelivery");
    ib.send("jo@drop.test", "NotDelivered");
    let content: &[u8] = b"From: s@sender.test\r\nTo: jo@drop.test, al@drop.test\r\nSubject: Shared\r\nMessage-ID: <shared@sender.test>\r\n\r\nfor both\r\n";
    let mut c = ib.mx2.client();
    c.cmd("EHLO client.test");
    let r = c.send_mail(
        "s@sender.test",
        &["Jo+x@drop.test", "al@drop.test"],
        content,
    );
    assert!(r.starts_with("250"), "{r}");

    for (user, n) in [("jo@example.test", 1), ("jo@drop.test", 2)] {
        let d = ib.py("delete", ib.imaps, user, "jo-secret");
        assert_eq!(d["before"], n, "{user}: {d}");
        assert_eq!(
            (d["store"].as_str(), d["expunge"].as_str()),
            (Some("OK"), Some("OK")),
            "{d}"
        );
        assert!(d["flags"].to_string().contains("\\\\Deleted"), "{d}");
        assert_eq!(d["expunged"].as_array().unwrap().len(), n as usize, "{d}");
        assert_eq!(d["after"], 0, "{user}: deleted from the inbox: {d}");
    }

    let deletes: Vec<_> = ib
        .log(&["jo@drop.test"])
        .into_iter()
        .filter(|e| e["event"] == "inbox_delete")
        .collect();
    assert_eq!(deletes.len(), 1, "{deletes:?}");
    assert_eq!(deletes[0]["not_delivered"], true);
    assert_eq!(deletes[0]["queue_ids"].as_array().unwrap().len(), 2);
    let kept = ib.log(&["jo@example.test"]);
    assert!(
        kept.iter()
            .any(|e| e["event"] == "inbox_delete" && e["not_delivered"] == false),
        "{kept:?}"
    );

    let primary = Primary::start(primary_port);
    // Two deliveries are due; anything more would arrive while settling.
    let got = primary.wait_and_settle(2, Duration::from_secs(20), Duration::from_secs(2));
    let delivered: Vec<(String, String)> = got
        .iter()
        .map(|m| {
            let text = String::from_utf8_lossy(&m.body).into_owned();
            let subject = text
                .lines()
                .find_map(|l| l.strip_prefix("Subject: "))
                .unwrap_or("")
                .to_string();
            (subject, m.rcpts.join(" "))
        })
        .collect();
    let has = |subject: &str, rcpt: &str| {
        delivered
            .iter()
            .any(|(s, r)| s == subject && r.contains(rcpt) && !r.contains("jo+x@drop.test"))
    };
    assert!(
        has("KeptForDelivery", "jo@example.test"),
        "keep_delivering: still delivered: {delivered:?}"
    );
    assert!(
        has("Shared", "al@drop.test"),
        "the other recipient is still delivered, jo's is not: {delivered:?}"
    );
    assert_eq!(
        delivered.len(),
        2,
        "do_not_deliver: jo's drop.test mail is not delivered: {delivered:?}"
    );
}

/// Wrong passwords are refused; after `max_login_failures` even the right one is, for the
/// lockout.
#[test]
fn lockout_after_failures() {
    let ib = start(free_port(), "", 3);
    ib.passwd("jo@example.test", "jo-secret");
    for _ in 0..3 {
        let r = ib.py("login", ib.imaps, "jo@example.test", "guess");
        assert_eq!(r["result"], "NO", "{r}");
        assert!(
            r["error"]
                .as_str()
                .unwrap()
                .contains("AUTHENTICATIONFAILED"),
            "{r}"
        );
    }
    let r = ib.py("login", ib.imaps, "jo@example.test", "jo-secret");
    assert_eq!(r["result"], "NO", "locked out: {r}");
    assert!(r["error"].as_str().unwrap().contains("try again in"), "{r}");
    assert!(ib.mx2.log().contains("locked out"), "logged");
}

/// Thirty wrong passwords for one address at once: only a few are checked (as many as
/// `max_login_failures`, and those already being checked when the lockout began), the rest
/// are refused as locked out without a check. Logins take turns at the argon2 verification
/// (a few at once); before they did, all thirty passed the lockout check together, thirty
/// guesses where three were allowed, each holding 19 MiB meanwhile.
#[test]
fn logins_at_once_stop_at_the_lockout() {
    const TRIES: usize = 30;
    const LIMIT: usize = 3;
    let ib = start(free_port(), "", LIMIT as u32);
    ib.passwd("jo@example.test", "jo-secret");
    let url = format!("imaps://127.0.0.1:{}/INBOX", ib.imaps);
    std::thread::scope(|s| {
        for n in 0..TRIES {
            let (ib, url) = (&ib, &url);
            s.spawn(move || ib.curl(&["--user", &format!("jo@example.test:wrong{n}"), url]));
        }
    });
    let logins: Vec<String> = ib
        .log(&["jo@example.test"])
        .iter()
        .filter(|e| e["event"] == "inbox_login" && e["ok"] == false)
        .map(|e| e["detail"].as_str().unwrap_or_default().to_string())
        .collect();
    let checked = logins
        .iter()
        .filter(|d| d.starts_with("wrong password"))
        .count();
    let locked = logins
        .iter()
        .filter(|d| d.starts_with("locked out"))
        .count();
    assert_eq!(checked + locked, TRIES, "{logins:?}");
    let at_once = std::thread::available_parallelism().map_or(2, |n| n.get().min(8));
    eprintln!("{TRIES} logins at once: {checked} checked, {locked} refused as locked out");
    assert!(
        (LIMIT..=LIMIT + at_once).contains(&checked),
        "{checked} passwords checked for a limit of {LIMIT} ({at_once} checks at once): {logins:?}"
    );
}

/// A command pipelined behind STARTTLS is dropped, never run inside TLS.
#[test]
fn starttls_drops_pipelined_commands() {
    let ib = start(free_port(), "", 5);
    ib.passwd("jo@example.test", "jo-secret");
    let mut tcp = TcpStream::connect(("127.0.0.1", ib.imap)).unwrap();
    tcp.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut r = BufReader::new(tcp.try_clone().unwrap());
    let mut line = String::new();
    r.read_line(&mut line).unwrap();
    assert!(
        line.starts_with("* OK") && line.contains("STARTTLS"),
        "{line}"
    );
    tcp.write_all(b"a LOGIN jo@example.test jo-secret\r\n")
        .unwrap();
    line.clear();
    r.read_line(&mut line).unwrap();
    assert!(line.starts_with("a NO"), "LOGIN before STARTTLS: {line}");
    tcp.write_all(b"b STARTTLS\r\nc LOGIN jo@example.test jo-secret\r\n")
        .unwrap();
    line.clear();
    r.read_line(&mut line).unwrap();
    assert!(line.starts_with("b OK"), "{line}");
    drop(r);
    let pki_ca = std::fs::read(&ib.ca).unwrap();
    let mut roots = rustls::RootCertStore::empty();
    for c in rustls_pemfile_certs(&pki_ca) {
        roots.add(c).unwrap();
    }
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let conn =
        rustls::ClientConnection::new(std::sync::Arc::new(config), "mx2.test".try_into().unwrap())
            .unwrap();
    let mut tls = rustls::StreamOwned::new(conn, tcp);
    tls.write_all(b"d SELECT INBOX\r\n").unwrap();
    let mut r = BufReader::new(tls);
    line.clear();
    r.read_line(&mut line).unwrap();
    assert!(
        line.starts_with("d BAD") && line.contains("log in first"),
        "the pipelined LOGIN must not have run: {line}"
    );
}

/// The certificates in a PEM file.
fn rustls_pemfile_certs(pem: &[u8]) -> Vec<rustls::pki_types::CertificateDer<'static>> {
    use rustls::pki_types::pem::PemObject;
    rustls::pki_types::CertificateDer::pem_slice_iter(pem)
        .map(|c| c.unwrap())
        .collect()
}

/// A credentials list the primary publishes (`inbox_credentials_url`): its users log in
/// with the primary's hashes; a password set with `mx2 inbox passwd` wins; the last good
/// copy stays in the store, so logins work after a restart while the list is unreachable;
/// a new copy replaces it (a user taken off the list can no longer log in).
#[test]
fn credentials_published_by_the_primary() {
    let hash = |p: &str| mx2::inbox::auth::hash_password(p).unwrap();
    let list = format!(
        "# users of pub.test\njo@pub.test {}\nBob+x@PUB.test {}\nnot a line\n",
        hash("jo-primary"),
        hash("bob-primary")
    );
    let server = crate::common::http::ListServer::start(&list, "l1st");
    let dir = tempfile::tempdir().unwrap();
    let token = dir.path().join("token");
    std::fs::write(&token, "l1st").unwrap();
    let mut ib = start_with(
        free_port(),
        "",
        10,
        "",
        &format!(
            "[recipients]\nreload_interval = \"1s\"\n[[domain]]\nname = \"pub.test\"\nprimary = [\"127.0.0.1:{}\"]\ninbox = true\ninbox_credentials_url = \"http://127.0.0.1:{}/inbox-users\"\ninbox_credentials_url_token_file = \"{}\"\n",
            free_port(),
            server.port,
            token.display()
        ),
    );
    let loads = |ib: &Inbox| {
        ib.mx2
            .log()
            .matches("inbox credentials list loaded")
            .count()
    };
    assert!(
        poll_until(Duration::from_secs(10), || loads(&ib) > 0),
        "{}",
        ib.mx2.log()
    );
    assert!(
        ib.mx2.log().contains("skipped=1"),
        "the bad line is reported"
    );
    ib.send("jo@pub.test", "ForJo");
    let jo = ib.py("login", ib.imaps, "jo@pub.test", "jo-primary");
    assert_eq!(
        (jo["result"].as_str(), jo["exists"].as_u64()),
        (Some("OK"), Some(1)),
        "{jo}"
    );
    let bob = ib.py("login", ib.imaps, "bob@pub.test", "bob-primary");
    assert_eq!(bob["result"], "OK", "address keyed like a mailbox: {bob}");
    let wrong = ib.py("login", ib.imaps, "jo@pub.test", "bob-primary");
    assert_eq!(wrong["result"], "NO", "{wrong}");

    // A password set here is checked first.
    ib.passwd("jo@pub.test", "jo-local");
    assert_eq!(
        ib.py("login", ib.imaps, "jo@pub.test", "jo-local")["result"],
        "OK"
    );
    assert_eq!(
        ib.py("login", ib.imaps, "jo@pub.test", "jo-primary")["result"],
        "NO",
        "the stored password wins"
    );

    // The primary goes down with its list; mx2 restarts: the last good copy still serves.
    *server.body.lock().unwrap() = None;
    ib.mx2.kill9();
    ib.mx2.spawn();
    assert!(
        poll_until(Duration::from_secs(10), || ib
            .mx2
            .log()
            .contains("inbox credentials list not fetched")),
        "{}",
        ib.mx2.log()
    );
    let bob = ib.py("login", ib.imaps, "bob@pub.test", "bob-primary");
    assert_eq!(
        bob["result"], "OK",
        "the last good copy, from the store: {bob}"
    );

    // A new copy without bob replaces it.
    let before = loads(&ib);
    *server.body.lock().unwrap() = Some(format!("jo@pub.test {}\n", hash("jo-primary")));
    assert!(
        poll_until(Duration::from_secs(10), || loads(&ib) > before),
        "{}",
        ib.mx2.log()
    );
    let bob = ib.py("login", ib.imaps, "bob@pub.test", "bob-primary");
    assert_eq!(bob["result"], "NO", "off the list: {bob}");
}
