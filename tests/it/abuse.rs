//! Resisting abuse: per-client rate limits and connection caps that leave other clients
//! served, the early-talker wait, DNS blocklists, and an open-relay scan by nmap.

use crate::common::dns::{DnsServer, Rec};
use crate::common::*;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

/// A client connection from another loopback address (127.0.0.2), as a second host.
fn connect_from(src: &str, port: u16) -> TcpStream {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let s = rt
        .block_on(async {
            let sock = tokio::net::TcpSocket::new_v4()?;
            sock.bind(format!("{src}:0").parse().unwrap())?;
            sock.connect(format!("127.0.0.1:{port}").parse().unwrap())
                .await
        })
        .unwrap()
        .into_std()
        .unwrap();
    s.set_nonblocking(false).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s
}

#[test]
fn per_client_rate_limit_leaves_others_served() {
    let primary = Primary::start(0);
    let mx2 = Mx2::start_with(primary.port, "messages_per_minute_per_ip = 2");
    let mut greedy = mx2.client();
    greedy.cmd("EHLO greedy.test");
    for i in 0..2 {
        assert!(
            greedy
                .send_mail(
                    "a@sender.test",
                    &["user@example.test"],
                    &message(&format!("g{i}"), "x")
                )
                .starts_with("250")
        );
    }
    let r = greedy.cmd("MAIL FROM:<a@sender.test>");
    assert!(r.starts_with("451 4.7.1"), "{r}");
    let mut other = connect_from("127.0.0.2", mx2.port);
    assert!(read_reply(&mut other).starts_with("220"));
    raw_cmd(&mut other, "EHLO other.test");
    assert!(
        raw_cmd(&mut other, "MAIL FROM:<b@sender.test>").starts_with("250"),
        "another client is still served"
    );
}

#[test]
fn connection_cap_per_client_leaves_others_served() {
    let primary = Primary::start(0);
    let mx2 = Mx2::start_with(primary.port, "max_connections_per_ip = 1");
    // The start-up probe's connection may still hold the slot for a moment.
    std::thread::sleep(Duration::from_millis(300));
    let _hog = mx2.client();
    let mut second = connect_from("127.0.0.1", mx2.port);
    assert!(read_reply(&mut second).starts_with("421"));
    let mut other = connect_from("127.0.0.2", mx2.port);
    assert!(read_reply(&mut other).starts_with("220"));
}

#[test]
fn early_talkers_are_refused() {
    let primary = Primary::start(0);
    let mx2 = Mx2::start_with(primary.port, "greeting_delay = \"1s\"");
    let mut eager = TcpStream::connect(("127.0.0.1", mx2.port)).unwrap();
    eager
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    eager.write_all(b"EHLO eager.test\r\n").unwrap();
    let r = read_reply(&mut eager);
    assert!(r.starts_with("554 5.5.1"), "{r}");
    let mut polite = connect_from("127.0.0.2", mx2.port);
    assert!(
        read_reply(&mut polite).starts_with("220"),
        "a client that waits is greeted"
    );
}

/// Runs `f(0..n)` on at most `width` threads at a time; the results in order.
fn in_batches<T: Send>(n: usize, width: usize, f: impl Fn(usize) -> T + Sync) -> Vec<T> {
    let mut out = Vec::with_capacity(n);
    let f = &f;
    for start in (0..n).step_by(width) {
        let end = (start + width).min(n);
        std::thread::scope(|s| {
            let handles: Vec<_> = (start..end).map(|i| s.spawn(move || f(i))).collect();
            out.extend(handles.into_iter().map(|h| h.join().unwrap()));
        });
    }
    out
}

/// The greeting delay holds in every trial, not most: 100 of 100 polite clients get their
/// 220 no earlier than greeting_delay after connecting, and 100 of 100 clients that send EHLO
/// at once get 554 5.5.1 (a spurious readable wake-up used to end the wait early).
#[test]
fn greeting_delay_holds_for_every_client() {
    let _heavy = exclusive();
    let primary = Primary::start(0);
    let mx2 = Mx2::start_with(
        primary.port,
        "greeting_delay = \"1s\"\nmax_connections_per_ip = 200",
    );
    let polite = in_batches(100, 25, |_| {
        let start = std::time::Instant::now();
        let mut s = connect_from("127.0.0.1", mx2.port);
        let r = read_reply(&mut s);
        (start.elapsed(), r)
    });
    let waits: Vec<Duration> = polite.iter().map(|(d, _)| *d).collect();
    let (min, max) = (waits.iter().min().unwrap(), waits.iter().max().unwrap());
    println!("polite clients: 220 after {min:?} (min) to {max:?} (max)");
    let early: Vec<&(Duration, String)> = polite
        .iter()
        .filter(|(d, r)| !r.starts_with("220") || *d < Duration::from_millis(950))
        .collect();
    assert!(
        early.is_empty(),
        "{} of 100 polite clients were not greeted after the 1 s delay, e.g. {:?}",
        early.len(),
        &early[..early.len().min(5)]
    );
    let eager = in_batches(100, 25, |_| {
        let mut s = connect_from("127.0.0.1", mx2.port);
        s.write_all(b"EHLO eager.test\r\n").unwrap();
        read_reply(&mut s)
    });
    let served: Vec<&String> = eager
        .iter()
        .filter(|r| !r.starts_with("554 5.5.1"))
        .collect();
    println!("early talkers refused: {} of 100", 100 - served.len());
    assert!(
        served.is_empty(),
        "{} of 100 early talkers were not refused, e.g. {:?}",
        served.len(),
        &served[..served.len().min(5)]
    );
}

#[test]
fn dnsbl_listed_clients_are_refused_naming_the_list() {
    let dns = DnsServer::start(&[("1.0.0.127.bl.test", Rec::Ip("127.0.0.2"))]);
    let primary = Primary::start(0);
    let mx2 = Mx2::start_with(
        primary.port,
        &format!("dnsbl = [\"bl.test\"]\n{}", dns.table()),
    );
    let mut listed = TcpStream::connect(("127.0.0.1", mx2.port)).unwrap();
    listed
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let r = read_reply(&mut listed);
    assert!(r.starts_with("554 5.7.1") && r.contains("bl.test"), "{r}");
    let mut clean = connect_from("127.0.0.2", mx2.port);
    assert!(
        read_reply(&mut clean).starts_with("220"),
        "an unlisted client is greeted"
    );
}

#[test]
fn nmap_finds_no_open_relay() {
    let primary = Primary::start(0);
    let mx2 = Mx2::start(primary.port);
    let out = std::process::Command::new("nmap")
        .args([
            "-Pn",
            "-n",
            "-sV",
            "--version-intensity",
            "0",
            "-p",
            &mx2.port.to_string(),
            "--script",
            "smtp-open-relay",
            "127.0.0.1",
        ])
        .output()
        .expect("nmap is not installed: apt-get install nmap (the CI script does)");
    let text = String::from_utf8_lossy(&out.stdout);
    println!("{text}");
    assert!(out.status.success(), "{text}");
    assert!(
        text.contains("smtp-open-relay"),
        "the script did not run: {text}"
    );
    assert!(text.contains("doesn't seem to be an open relay"), "{text}");
    assert!(
        primary.messages().is_empty(),
        "a relay test reached the primary"
    );
}

/// mx2 with a PROXY listener that trusts 127.0.0.1 as its balancer (`smtp_extra`: more
/// `[smtp]` lines), its primary, and the listener's port.
fn behind_a_balancer(smtp_extra: &str) -> (Primary, Mx2, u16) {
    let primary = Primary::start(0);
    let px = free_port();
    let mx2 = Mx2::start_with(
        primary.port,
        &format!(
            "proxy_listen = [\"127.0.0.1:{px}\"]\nproxy_trusted = [\"127.0.0.1/32\"]\n{smtp_extra}"
        ),
    );
    (primary, mx2, px)
}

/// A connection to a PROXY listener from the trusted balancer (127.0.0.1).
fn connect_as_balancer(px: u16) -> TcpStream {
    let s = TcpStream::connect(("127.0.0.1", px)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s
}

#[test]
fn proxy_headers_are_honoured_from_trusted_balancers_only() {
    let (primary, mx2, px) = behind_a_balancer("");
    let send_via = |header: &[u8], id: &str| {
        let mut s = connect_as_balancer(px);
        s.write_all(header).unwrap();
        assert!(read_reply(&mut s).starts_with("220"));
        for line in [
            "EHLO lb.test",
            "MAIL FROM:<a@sender.test>",
            "RCPT TO:<user@example.test>",
            "DATA",
        ] {
            let r = raw_cmd(&mut s, line);
            assert!(r.starts_with('2') || r.starts_with('3'), "{line}: {r}");
        }
        s.write_all(&message(id, "via proxy")).unwrap();
        assert!(raw_cmd(&mut s, ".").starts_with("250"));
    };
    send_via(b"PROXY TCP4 192.0.2.55 127.0.0.1 40000 25\r\n", "v1");
    let mut v2 = b"\r\n\r\n\0\r\nQUIT\n".to_vec();
    v2.extend_from_slice(&[
        0x21, 0x11, 0, 12, 198, 51, 100, 7, 127, 0, 0, 1, 0x9c, 0x41, 0, 25,
    ]);
    send_via(&v2, "v2");
    let got = primary.wait_for(2, Duration::from_secs(10));
    assert_eq!(got.len(), 2, "log:\n{}", mx2.log());
    let traces: Vec<String> = got
        .iter()
        .map(|m| String::from_utf8_lossy(&m.body[..80]).into_owned())
        .collect();
    assert!(
        traces.iter().any(|t| t.contains("[192.0.2.55]")),
        "{traces:?}"
    );
    assert!(
        traces.iter().any(|t| t.contains("[198.51.100.7]")),
        "{traces:?}"
    );
    // Not a trusted balancer: refused, header or not.
    let mut stranger = connect_from("127.0.0.2", px);
    stranger
        .write_all(b"PROXY TCP4 192.0.2.1 127.0.0.1 1 25\r\n")
        .unwrap();
    let r = read_reply(&mut stranger);
    assert!(r.starts_with("554"), "{r}");
}

/// A trusted balancer's connection without a valid PROXY header is answered with 421 and a
/// reason (it used to be closed with nothing sent), and logged with the balancer's address.
#[test]
fn a_missing_or_bad_proxy_header_gets_421_with_the_reason() {
    let (_primary, mx2, px) = behind_a_balancer("command_timeout = \"2s\"");
    let connect = || connect_as_balancer(px);
    let start = std::time::Instant::now();
    let mut silent = connect();
    let r = read_reply(&mut silent);
    println!("silent balancer: {r:?} after {:?}", start.elapsed());
    assert!(r.starts_with("421 4.7.0") && r.contains("timed out"), "{r}");
    assert!(
        start.elapsed() < Duration::from_secs(8),
        "{:?}",
        start.elapsed()
    );
    let mut garbage = connect();
    garbage.write_all(b"EHLO not-a-balancer.test\r\n").unwrap();
    let r = read_reply(&mut garbage);
    println!("garbage: {r:?}");
    assert!(r.starts_with("421 4.7.0") && r.contains("malformed"), "{r}");
    let mut closed = connect();
    closed.write_all(b"PROXY TCP4 192.0.2.1").unwrap();
    closed.shutdown(std::net::Shutdown::Write).unwrap();
    let r = read_reply(&mut closed);
    println!("closed half-way: {r:?}");
    assert!(r.starts_with("421 4.7.0") && r.contains("closed"), "{r}");
    let log = mx2.log();
    assert!(
        log.lines()
            .filter(|l| l.contains("no valid PROXY header") && l.contains("127.0.0.1:"))
            .count()
            == 3,
        "{log}"
    );
}

/// IPv6 clients are counted per /64 (`ipv6_prefix_length`): through a trusted balancer's PROXY
/// headers, two addresses of one /64 share the per-client connection and message limits, and
/// an address in another /64 has its own.
#[test]
fn ipv6_clients_in_one_prefix_share_their_limits() {
    let (_primary, _mx2, px) =
        behind_a_balancer("max_connections_per_ip = 2\nmessages_per_minute_per_ip = 1");
    let via = |client: &str| {
        let mut s = connect_as_balancer(px);
        s.write_all(format!("PROXY TCP6 {client} 2001:db8:ffff::25 40000 25\r\n").as_bytes())
            .unwrap();
        let r = read_reply(&mut s);
        (s, r)
    };
    let (mut a, r) = via("2001:db8:0:1::a");
    assert!(r.starts_with("220"), "{r}");
    let (mut b, r) = via("2001:db8:0:1:ffff::b");
    assert!(r.starts_with("220"), "{r}");
    let (_, r) = via("2001:db8:0:1::c");
    assert!(
        r.starts_with("421 4.7.0") && r.contains("your address"),
        "a third connection from the same /64: {r}"
    );
    let (mut other, r) = via("2001:db8:0:2::a");
    assert!(r.starts_with("220"), "another /64: {r}");
    for s in [&mut a, &mut b, &mut other] {
        assert!(raw_cmd(s, "EHLO v6.test").starts_with("250"));
    }
    assert!(raw_cmd(&mut a, "MAIL FROM:<a@sender.test>").starts_with("250"));
    let r = raw_cmd(&mut b, "MAIL FROM:<b@sender.test>");
    assert!(
        r.starts_with("451 4.7.1"),
        "the /64's one message a minute is taken: {r}"
    );
    let r = raw_cmd(&mut other, "MAIL FROM:<c@sender.test>");
    assert!(r.starts_with("250"), "another /64 has its own: {r}");
}

/// Sends 10 bytes every 200 ms until mx2 answers (at most 15 s): the reply and how long it
/// took.
fn trickle(s: &mut TcpStream) -> (String, Duration) {
    s.set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let start = std::time::Instant::now();
    let mut got = Vec::new();
    while start.elapsed() < Duration::from_secs(15) && !got.ends_with(b"\r\n") {
        if s.write_all(b"trickle..\n").is_err() {
            break;
        }
        // The read timeout paces the writes.
        let mut buf = [0u8; 256];
        match s.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(_) => {}
        }
    }
    (String::from_utf8_lossy(&got).into_owned(), start.elapsed())
}

/// Message content trickled below `min_data_rate` is cut off: with data_timeout 2 s and
/// 1000 bytes/s, content (DATA, or a BDAT chunk) must be complete within 2 s plus 1 s per
/// 1000 bytes, so a client sending 10 bytes every 200 ms gets 421 4.4.2 after about 2 s and
/// nothing is queued; a client that sends at once is unaffected. (data_timeout alone bounds
/// each read only.)
#[test]
fn content_trickled_below_the_minimum_data_rate_is_cut_off() {
    let _heavy = exclusive();
    let primary = Primary::start(0);
    let mx2 = Mx2::start_with(primary.port, "data_timeout = \"2s\"\nmin_data_rate = 1000");
    let start_transaction = |name: &str| {
        let mut c = mx2.client();
        for line in [
            &format!("EHLO {name}.test"),
            "MAIL FROM:<slow@sender.test>",
            "RCPT TO:<user@example.test>",
        ] {
            assert!(c.cmd(line).starts_with("250"), "{line}");
        }
        c
    };
    let mut data = start_transaction("data");
    assert!(data.cmd("DATA").starts_with("354"));
    let mut s = data.into_stream();
    s.write_all(&message("slow", "")).unwrap();
    let (text, took) = trickle(&mut s);
    println!("DATA trickled: cut off after {took:?}: {text:?}");
    assert!(text.starts_with("421 4.4.2"), "{text:?}\n{}", mx2.log());
    assert!(took < Duration::from_secs(6), "{took:?}");
    let mut bdat = start_transaction("bdat");
    bdat.send_raw(b"BDAT 100000 LAST\r\n");
    let (text, took) = trickle(&mut bdat.into_stream());
    println!("BDAT chunk trickled: cut off after {took:?}: {text:?}");
    assert!(text.starts_with("421 4.4.2"), "{text:?}");
    assert!(took < Duration::from_secs(6), "{took:?}");
    assert!(mx2.log().contains("arriving too slowly"), "{}", mx2.log());
    let mut fast = mx2.client();
    fast.cmd("EHLO fast.test");
    let body = "0123456789abcdef".repeat(12_500);
    let r = fast.send_mail(
        "fast@sender.test",
        &["user@example.test"],
        &message("fast", &body),
    );
    assert!(r.starts_with("250"), "{r}");
    let ids: Vec<String> = primary
        .wait_and_settle(1, Duration::from_secs(10), Duration::from_millis(500))
        .iter()
        .filter_map(|m| m.header("Message-ID"))
        .collect();
    assert_eq!(
        ids,
        vec!["<fast@test>".to_string()],
        "only the fast message"
    );
}

/// Stress mode: with more than 80 % of max_connections open, idle connections are closed
/// after stress_timeout rather than command_timeout (5 min), the gauge says so, and a new
/// client is then served.
#[test]
fn idle_connections_are_closed_early_under_stress() {
    let _heavy = exclusive();
    let primary = Primary::start(0);
    let mx2 = Mx2::start_with(
        primary.port,
        "max_connections = 20\nmax_connections_per_ip = 100\nstress_timeout = \"2s\"\ncommand_timeout = \"5m\"",
    );
    let metrics = || http("GET", &format!("{}/metrics", mx2.admin_url()), None, None).1;
    assert!(metrics().contains("mx2_smtp_stress 0"), "{}", metrics());
    let mut idle: Vec<TcpStream> = (0..18)
        .map(|i| {
            let mut s = connect_from("127.0.0.1", mx2.port);
            let r = read_reply(&mut s);
            assert!(r.starts_with("220"), "connection {i}: {r}");
            s
        })
        .collect();
    let opened = std::time::Instant::now();
    assert!(metrics().contains("mx2_smtp_stress 1"), "{}", metrics());
    let status = http(
        "GET",
        &format!("{}/api/v1/status", mx2.admin_url()),
        None,
        None,
    )
    .1;
    assert!(status.contains("\"smtp_stress\":true"), "{status}");
    let closed: Vec<(String, Duration)> = idle
        .iter_mut()
        .map(|s| (read_reply(s), opened.elapsed()))
        .collect();
    let last = closed.iter().map(|(_, d)| *d).max().unwrap();
    println!(
        "18 idle connections of 20 allowed: all closed within {last:?} of the last one opening"
    );
    for (r, _) in &closed {
        assert!(r.starts_with("421 4.4.2"), "{r}");
    }
    assert!(last < Duration::from_secs(6), "{last:?}");
    let mut c = mx2.client();
    c.cmd("EHLO after.test");
    let r = c.send_mail(
        "a@sender.test",
        &["user@example.test"],
        &message("after-stress", "x"),
    );
    assert!(r.starts_with("250"), "{r}");
    let log = mx2.log();
    assert!(log.contains("SMTP under stress"), "{log}");
    assert!(log.contains("no longer under stress"), "{log}");
    assert!(metrics().contains("mx2_smtp_stress 0"), "{}", metrics());
}

/// Started from a shell whose soft open-file limit is tiny, mx2 raises it to the hard limit:
/// hundreds of sessions are greeted, and mail still reaches the primary while they are open.
#[test]
fn a_low_soft_open_file_limit_is_raised_at_start() {
    let primary = Primary::start(0);
    let mut mx2 = Mx2::prepare(|port, state| {
        test_config(port, primary.port, state, "max_connections_per_ip = 1000")
    });
    mx2.wrapper = ["prlimit", "--nofile=64:4096"].map(String::from).to_vec();
    mx2.spawn();
    let open: Vec<TcpStream> = (0..300)
        .map(|i| {
            let mut s = TcpStream::connect(("127.0.0.1", mx2.port)).unwrap();
            s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
            let r = read_reply(&mut s);
            assert!(r.starts_with("220"), "session {i}: {r:?}\n{}", mx2.log());
            s
        })
        .collect();
    let mut c = mx2.client();
    c.cmd("EHLO busy.test");
    let r = c.send_mail("a@sender.test", &["user@example.test"], &message("fd", "x"));
    assert!(r.starts_with("250"), "{r}");
    primary.wait_for(1, Duration::from_secs(20));
    assert!(
        mx2.log().contains("open-file limit raised"),
        "{}",
        mx2.log()
    );
    drop(open);
}

/// A client that pipelines commands and never reads the replies: once its socket buffers are
/// full, mx2's write waits at most command_timeout, then the connection (and its slot) goes.
#[test]
fn a_client_that_never_reads_its_replies_loses_its_slot() {
    let _heavy = exclusive();
    let primary = Primary::start(0);
    let mx2 = Mx2::start_with(
        primary.port,
        "max_connections_per_ip = 1\ncommand_timeout = \"2s\"",
    );
    // The start-up probe's connection may still hold the slot for a moment.
    std::thread::sleep(Duration::from_millis(300));
    let mut hog = mx2.client();
    hog.cmd("EHLO hog.test");
    let mut raw = hog.into_stream();
    raw.set_write_timeout(Some(Duration::from_millis(500)))
        .unwrap();
    let chunk = b"NOOP\r\n".repeat(10_000);
    let mut sent = 0usize;
    // mx2 stops reading once it cannot write: the writes then stall.
    while sent < 256 << 20 {
        match raw.write(&chunk) {
            Ok(n) => sent += n,
            Err(_) => break,
        }
    }
    assert!(sent < 256 << 20, "mx2 kept reading without ever being read");
    let stalled = std::time::Instant::now();
    let mut second = loop {
        let mut s = connect_from("127.0.0.1", mx2.port);
        let r = read_reply(&mut s);
        if r.starts_with("220") {
            break s;
        }
        assert!(
            stalled.elapsed() < Duration::from_secs(20),
            "the slot was never freed: {r}"
        );
        std::thread::sleep(Duration::from_millis(500));
    };
    println!(
        "slot freed {:?} after the client stopped reading ({} bytes of commands sent)",
        stalled.elapsed(),
        sent
    );
    assert!(raw_cmd(&mut second, "EHLO other.test").starts_with("250"));
    drop(raw);
}

/// A client that trickles a command one byte at a time cannot stretch it past
/// command_timeout: the whole line must arrive within it.
#[test]
fn a_command_trickled_byte_by_byte_times_out() {
    let _heavy = exclusive();
    let primary = Primary::start(0);
    let mx2 = Mx2::start_with(primary.port, "command_timeout = \"2s\"");
    let mut s = connect_from("127.0.0.1", mx2.port);
    assert!(read_reply(&mut s).starts_with("220"));
    s.set_read_timeout(Some(Duration::from_millis(400)))
        .unwrap();
    let start = std::time::Instant::now();
    let mut got = Vec::new();
    for b in b"NOOP ".iter().chain(b"x".repeat(100).iter()) {
        if s.write_all(&[*b]).is_err() {
            break;
        }
        let mut buf = [0u8; 256];
        match s.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(_) => {}
        }
        if got.ends_with(b"\r\n") {
            break;
        }
    }
    let text = String::from_utf8_lossy(&got);
    println!("closed after {:?}: {text}", start.elapsed());
    assert!(text.starts_with("421 4.4.2"), "{text:?}");
    assert!(
        start.elapsed() < Duration::from_secs(8),
        "{:?}",
        start.elapsed()
    );
}
