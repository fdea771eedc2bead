//! Large messages never held whole in memory: twenty sessions each send 20 MB to mx2 at once
//! while the primary takes them; mx2's resident memory, sampled throughout reception and
//! delivery, stays far below the 400 MB the messages add up to, and the primary receives
//! every byte as it was sent (with and without lines starting with a dot). Once with the
//! embedded store (content in spool files), once with PostgreSQL (content streamed from the
//! spool file into chunk rows, and out of them).

use crate::common::client::Client;
use crate::common::config::test_config;
use crate::common::memory::{PeakRss, rss};
use crate::common::pg::Pg;
use crate::common::primary::Primary;
use crate::common::runner::Mx2;
use crate::common::{exclusive, free_port};
use std::io::Write;
use std::thread;
use std::time::Duration;

const SESSIONS: usize = 20;
const MESSAGE: usize = 20 << 20;
/// Well below SESSIONS × MESSAGE (400 MB): what a server holding each message whole needs.
const RSS_BOUND: u64 = 150 << 20;

/// Message `n`'s content: headers, then lines of varying length from a seeded generator,
/// about `MESSAGE` bytes in all. In even-numbered messages some lines start with a dot
/// (stuffed on the wire both ways); odd-numbered ones have none, so the embedded store
/// hands their spool files to the kernel (`sendfile`) and the others go through the
/// dot-stuffer: both paths are checked byte for byte.
fn content(n: usize) -> Vec<u8> {
    let mut out = format!(
        "From: <s@sender.test>\r\nTo: <user@example.test>\r\nSubject: big {n}\r\nMessage-ID: <big{n}@test>\r\n\r\n"
    )
    .into_bytes();
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15 ^ n as u64;
    while out.len() < MESSAGE {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let len = 1 + (x % 997) as usize;
        if n.is_multiple_of(2) && x.is_multiple_of(5) {
            out.push(b'.');
        }
        out.extend((0..len).map(|i| b'!' + ((x >> (i % 56)) as u8 ^ i as u8) % 90));
        out.extend_from_slice(b"\r\n");
    }
    out
}

/// Content dot-stuffed for DATA.
fn stuffed(content: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(content.len() + content.len() / 64);
    for line in content.split_inclusive(|&b| b == b'\n') {
        if line.first() == Some(&b'.') {
            out.push(b'.');
        }
        out.extend_from_slice(line);
    }
    out
}

#[test]
fn twenty_sessions_of_20_mb_each_never_hold_a_message_whole() {
    twenty_sessions_of_20_mb("", &|| 0);
}

#[test]
fn twenty_sessions_of_20_mb_each_never_hold_a_message_whole_on_postgres() {
    let url = Pg::shared().fresh_db();
    let db = url.rsplit('/').next().unwrap_or_default().to_string();
    // Delivered messages leave the queue, and their chunk rows go soon after.
    let rows = || -> usize {
        Pg::shared()
            .sql(
                &db,
                "SELECT (SELECT COUNT(*) FROM messages) + (SELECT COUNT(*) FROM bodies)",
            )
            .parse()
            .unwrap()
    };
    twenty_sessions_of_20_mb(
        &format!("[storage]\nbackend = \"postgres\"\nurl = \"{url}\"\nnode = \"stream\"\n"),
        &rows,
    );
}

/// The test with `storage` (a `[storage]` table, or nothing for the embedded store), and
/// `rows_left`, what the store still holds of delivered messages (besides spool files).
fn twenty_sessions_of_20_mb(storage: &str, rows_left: &dyn Fn() -> usize) {
    let _x = exclusive();
    let primary_port = free_port();
    let primary = Primary::start(primary_port);
    let mx2 = Mx2::start_config(|port, state| {
        let smtp = "max_message_size = \"30MB\"\ndata_timeout = \"120s\"";
        test_config(port, primary_port, state, smtp) + storage
    });
    let pid = mx2.pid();
    let before = rss(pid);

    let sampler = PeakRss::start(pid);

    let port = mx2.port;
    let senders: Vec<_> = (0..SESSIONS)
        .map(|n| {
            thread::spawn(move || {
                let wire = stuffed(&content(n));
                let mut c = Client::connect(port);
                assert!(c.cmd("EHLO client.test").starts_with("250"));
                assert!(c.cmd("MAIL FROM:<s@sender.test>").starts_with("250"));
                assert!(c.cmd("RCPT TO:<user@example.test>").starts_with("250"));
                assert!(c.cmd("DATA").starts_with("354"));
                for part in wire.chunks(256 << 10) {
                    c.send_raw(part);
                }
                c.send_raw(b".\r\n");
                let reply = c.reply();
                let _ = c.into_stream().write_all(b"QUIT\r\n");
                reply
            })
        })
        .collect();
    for (n, s) in senders.into_iter().enumerate() {
        let reply = s.join().unwrap();
        assert!(
            reply.starts_with("250"),
            "message {n} not accepted: {reply}"
        );
    }

    let got = primary.wait_for(SESSIONS, Duration::from_secs(300));
    let peak = sampler.stop();
    eprintln!(
        "mx2 RSS ({}): {} MB at start, peak {} MB while receiving and delivering {SESSIONS} × {} MB",
        if storage.is_empty() {
            "embedded"
        } else {
            "postgres"
        },
        before >> 20,
        peak >> 20,
        MESSAGE >> 20
    );
    assert_eq!(got.len(), SESSIONS, "every message delivered");
    for n in 0..SESSIONS {
        let sent = content(n);
        let m = got
            .iter()
            .find(|m| m.id() == format!("big{n}"))
            .unwrap_or_else(|| panic!("message {n} not delivered"));
        // mx2 adds its Received header in front; the rest is the content, byte for byte.
        assert!(m.body.starts_with(b"Received: "), "message {n}");
        assert!(
            m.body.len() > sent.len() && m.body[m.body.len() - sent.len()..] == sent[..],
            "message {n}: the primary received different bytes ({} for {} sent)",
            m.body.len(),
            sent.len()
        );
    }
    assert!(
        peak <= RSS_BOUND,
        "mx2's RSS reached {} MB (bound {} MB): content was held in memory",
        peak >> 20,
        RSS_BOUND >> 20
    );
    // Delivered messages leave the queue, and their spool files with them.
    let spool = mx2.dir.join("state/spool");
    let mut left = usize::MAX;
    for _ in 0..100 {
        left = std::fs::read_dir(&spool).map_or(0, |d| d.count());
        if left == 0 {
            break;
        }
        thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(left, 0, "spool files left in {}", spool.display());
    let t0 = std::time::Instant::now();
    while rows_left() > 0 && t0.elapsed() < Duration::from_secs(30) {
        thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(rows_left(), 0, "rows left in the store after the drain");
    drop(mx2);
}
