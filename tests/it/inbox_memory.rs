//! The emergency inbox reads large messages within its memory: a 10 MB message is held for
//! jo; eight IMAP clients (Python's imaplib), logged in first, fetch it at the same moment
//! (`FETCH BODY[]`), eight browsers (curl) download it at once from the web inbox (`.eml`,
//! streamed from the store, each at 10 MB/s) and four open its page at once (parsed
//! whole). Every copy is the held message byte for byte, and mx2's resident memory stays
//! far below what eight whole reads need: the reads that need a message whole take turns
//! within `[inbox] content_memory`. Without that budget the IMAP reads grew it by 192 MB, with it by 30 MB.

use crate::common::memory::PeakRss;
use crate::common::*;
use crate::inbox::{Inbox, start_smtp};
use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::thread;

const MESSAGE: usize = 10 << 20;
const READERS: usize = 8;
const BUDGET: &str = "32MiB";
/// Eight reads of a 10 MB message at once hold 80 MB of content alone, and each makes
/// three more copies (its rendered answer, the encoded one, its buffer's growth): without
/// the budget the IMAP reads grew mx2's memory by 192 MB (they overlap in part). With it,
/// one read at a time (a 10 MB message takes all 32 MiB): 30 MB measured.
const GROWTH_BOUND: u64 = 100 << 20;

/// About `MESSAGE` bytes of text, no line starting with a dot.
fn content() -> Vec<u8> {
    let mut out = b"From: <s@sender.test>\r\nTo: <jo@example.test>\r\nSubject: big\r\nMessage-ID: <big@sender.test>\r\n\r\n".to_vec();
    let mut x: u64 = 0x2545_f491_4f6c_dd1d;
    while out.len() < MESSAGE {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let len = 1 + (x % 120) as usize;
        out.extend((0..len).map(|i| b'a' + ((x >> (i % 56)) as u8 ^ i as u8) % 26));
        out.extend_from_slice(b"\r\n");
    }
    out
}

fn curl(ca: &Path, args: &[&str]) -> Output {
    let out = Command::new("curl")
        .args([
            "-s",
            "-S",
            "--max-time",
            "120",
            "--limit-rate",
            "10M",
            "--cacert",
        ])
        .arg(ca)
        .args(args)
        .output()
        .expect("curl must be installed");
    assert!(
        out.status.success(),
        "curl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// The peak growth of mx2's resident memory while `work` runs, printed as `what`.
fn growth(ib: &Inbox, what: &str, work: impl FnOnce()) -> u64 {
    let pid = ib.mx2.pid();
    let before = memory::rss(pid);
    let sampler = PeakRss::start(pid);
    work();
    let growth = sampler.stop().saturating_sub(before);
    eprintln!(
        "{what}: mx2 RSS {} MB before, grew by {} MB at most",
        before >> 20,
        growth >> 20
    );
    growth
}

/// `READERS` runs of `one` at once (each given its number); the growth meanwhile.
fn at_once(ib: &Inbox, what: &str, one: &(dyn Fn(usize) + Sync)) -> u64 {
    growth(ib, what, || {
        thread::scope(|s| {
            for n in 0..READERS {
                s.spawn(move || one(n));
            }
        })
    })
}

/// An IMAP reader: logs in, says so, waits for a line on its input, then fetches UID 1
/// whole into the file it was given.
const READER: &str = r#"
import imaplib, ssl, sys
host, port, ca, user, password, out = sys.argv[1:7]
m = imaplib.IMAP4_SSL(host, int(port), ssl_context=ssl.create_default_context(cafile=ca))
m.login(user, password)
m.select("INBOX", readonly=True)
print("ready", flush=True)
sys.stdin.readline()
typ, data = m.uid("FETCH", "1", "(BODY.PEEK[])")
assert typ == "OK", (typ, data)
open(out, "wb").write(data[0][1])
m.logout()
"#;

/// `READERS` IMAP clients, logged in first, fetch the message at the same moment; the
/// peak growth of mx2's resident memory meanwhile.
fn fetch_at_once(ib: &Inbox, dir: &Path, held: &dyn Fn(&[u8], &str)) -> u64 {
    let mut readers: Vec<_> = (0..READERS)
        .map(|n| {
            let mut child = Command::new("python3")
                .args(["-c", READER, "127.0.0.1", &ib.imaps.to_string()])
                .arg(&ib.ca)
                .args(["jo@example.test", "jo-secret"])
                .arg(dir.join(format!("imap{n}")))
                .env("PYTHONDONTWRITEBYTECODE", "1")
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .spawn()
                .expect("python3 must be installed");
            let mut line = String::new();
            BufReader::new(child.stdout.as_mut().unwrap())
                .read_line(&mut line)
                .unwrap();
            assert_eq!(line.trim(), "ready", "IMAP reader {n} did not log in");
            child
        })
        .collect();
    growth(ib, "IMAP FETCH BODY[]", || {
        for r in &mut readers {
            r.stdin.as_mut().unwrap().write_all(b"go\n").unwrap();
        }
        for (n, r) in readers.into_iter().enumerate() {
            assert!(
                r.wait_with_output().unwrap().status.success(),
                "IMAP reader {n}"
            );
            let got = std::fs::read(dir.join(format!("imap{n}"))).unwrap();
            held(&got, &format!("IMAP reader {n}"));
        }
    })
}

#[test]
fn large_messages_are_read_within_the_inbox_memory() {
    let _x = exclusive();
    let web = free_port();
    let ib = start_smtp(
        free_port(),
        "",
        5,
        &format!("web_listen = \"127.0.0.1:{web}\"\ncontent_memory = \"{BUDGET}\"\n"),
        "",
        "max_message_size = \"30MB\"\ndata_timeout = \"120s\"",
    );
    ib.passwd("jo@example.test", "jo-secret");
    let sent = content();
    let mut c = ib.mx2.client();
    c.cmd("EHLO client.test");
    let r = c.send_mail("s@sender.test", &["jo@example.test"], &sent);
    assert!(r.starts_with("250"), "{r}");
    let dir = tempfile::tempdir().unwrap();
    let held = |got: &[u8], what: &str| {
        // mx2 adds its Received header in front; the rest is the message as sent.
        assert!(
            got.starts_with(b"Received: ") && got.ends_with(&sent),
            "{what}: {} bytes, not the held message",
            got.len()
        );
    };

    let imap = fetch_at_once(&ib, dir.path(), &held);

    let base = format!("https://127.0.0.1:{web}/inbox");
    let jar = dir.path().join("jar");
    let jar = jar.to_str().unwrap();
    curl(
        &ib.ca,
        &[
            "-c",
            jar,
            "--data-urlencode",
            "address=jo@example.test",
            "--data-urlencode",
            "password=jo-secret",
            &format!("{base}/login"),
        ],
    );
    let list = String::from_utf8(curl(&ib.ca, &["-b", jar, &format!("{base}/")]).stdout).unwrap();
    let id = list
        .split("href=\"/inbox/m/")
        .nth(1)
        .and_then(|s| s.split('"').next())
        .unwrap_or_else(|| panic!("no message in the list: {list}"))
        .to_string();

    let eml = at_once(&ib, "web .eml download", &|n| {
        let file = dir.path().join(format!("eml{n}"));
        let path = format!("{base}/m/{id}/eml");
        curl(&ib.ca, &["-b", jar, "-o", file.to_str().unwrap(), &path]);
        held(&std::fs::read(&file).unwrap(), &format!("download {n}"));
    });

    let pages = at_once(&ib, "web message page", &|n| {
        if n % 2 == 1 {
            return; // four pages at once
        }
        let page = curl(&ib.ca, &["-b", jar, &format!("{base}/m/{id}")]).stdout;
        let tail = String::from_utf8_lossy(&sent[sent.len() - 200..]).into_owned();
        let last_line = tail.trim_end().rsplit("\r\n").next().unwrap().to_string();
        assert!(
            String::from_utf8_lossy(&page).contains(&last_line),
            "page {n} does not show the message's text"
        );
    });

    for (what, growth) in [("IMAP", imap), (".eml", eml), ("pages", pages)] {
        assert!(
            growth <= GROWTH_BOUND,
            "{what}: mx2's RSS grew by {} MB (bound {} MB) while {READERS} clients read a {} MB message",
            growth >> 20,
            GROWTH_BOUND >> 20,
            MESSAGE >> 20
        );
    }
    assert!(
        eml <= 64 << 20,
        "downloads stream: RSS grew by {} MB for {READERS} downloads",
        eml >> 20
    );
}
