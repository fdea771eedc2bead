//! Crash safety: mx2 is SIGKILLed again and again while several clients send to it (and, in
//! the later cycles, while it delivers). Every message that got a 250 must reach the primary;
//! duplicates (allowed only in the RFC 1047 window) are counted and printed.

use crate::common::*;
use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Duration;

/// SIGKILL cycles: `MX2_FAULT_CYCLES` (CI runs the default, `bench/faults` runs 20).
const DEFAULT_CYCLES: usize = 6;
const CLIENTS: usize = 6;

#[test]
fn sigkill_under_load_loses_no_acknowledged_message() {
    let _heavy = exclusive();
    let cycles = env_count("MX2_FAULT_CYCLES", DEFAULT_CYCLES).max(2);
    let primary_port = free_port();
    let mut mx2 = Mx2::start(primary_port);
    let acked: Arc<Mutex<HashSet<String>>> = Arc::default();
    let mut primary = None;
    for cycle in 0..cycles {
        if cycle == cycles / 2 {
            // From here on mx2 is also delivering when it is killed.
            primary = Some(Primary::start(primary_port));
        }
        let stop = Arc::new(AtomicBool::new(false));
        let mut clients = Vec::new();
        for t in 0..CLIENTS {
            let (acked, stop, port) = (acked.clone(), stop.clone(), mx2.port);
            clients.push(thread::spawn(move || {
                let Ok(stream) = std::net::TcpStream::connect(("127.0.0.1", port)) else {
                    return;
                };
                drop(stream);
                let mut c = Client::connect(port);
                if !c.cmd("EHLO load.test").starts_with("250") {
                    return;
                }
                for n in 0.. {
                    if stop.load(Ordering::SeqCst) {
                        return;
                    }
                    let id = format!("c{cycle}-t{t}-n{n}");
                    let r = c.send_mail(
                        "load@sender.test",
                        &["user@example.test"],
                        &message(&id, &"load ".repeat(200)),
                    );
                    if r.starts_with("250") {
                        acked.lock().unwrap().insert(id);
                    } else {
                        return; // killed mid-transaction: not acknowledged
                    }
                }
            }));
        }
        thread::sleep(Duration::from_millis(300 + 150 * (cycle as u64 % 4)));
        mx2.kill9();
        stop.store(true, Ordering::SeqCst);
        for c in clients {
            let _ = c.join();
        }
        mx2.spawn();
    }
    let primary = primary.expect("started");
    let acked = acked.lock().unwrap().clone();
    assert!(
        acked.len() > 50,
        "the load generator barely ran: {} messages",
        acked.len()
    );
    let counts = wait_for_ids(&acked, Duration::from_secs(90), || primary.messages());
    let missing: Vec<&String> = acked
        .iter()
        .filter(|id| !counts.contains_key(*id))
        .collect();
    let duplicates: usize = counts.values().map(|&n| n.saturating_sub(1)).sum();
    let unacked_delivered = counts.keys().filter(|id| !acked.contains(*id)).count();
    println!(
        "crash test: {cycles} SIGKILL cycles, {} messages acknowledged, {} delivered, {} missing, {duplicates} duplicates, {unacked_delivered} delivered without a 250 (killed between commit and reply)",
        acked.len(),
        counts.len(),
        missing.len()
    );
    assert!(
        missing.is_empty(),
        "acknowledged but lost: {missing:?}\nlog:\n{}",
        mx2.log()
    );
}

/// Copies the files of a directory (not recursive).
fn copy_dir(from: &std::path::Path, to: &std::path::Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        if e.file_type().unwrap().is_file() {
            std::fs::copy(e.path(), to.join(e.file_name())).unwrap();
        }
    }
}

/// Bytes no checksum will accept (xorshift, seeded).
fn garbage(n: usize, mut seed: u64) -> Vec<u8> {
    (0..n)
        .map(|_| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed as u8
        })
        .collect()
}

/// Runs `mx2 serve` on `config` expecting it to refuse to start: returns its exit code and
/// what it printed. A server that starts anyway is stopped after 15 s and fails the test.
fn serve_expecting_refusal(config: &std::path::Path) -> (i32, String) {
    let mut child = std::process::Command::new(mx2_binary())
        .args(["serve", "--config"])
        .arg(config)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let start = std::time::Instant::now();
    while child.try_wait().unwrap().is_none() {
        if start.elapsed() > Duration::from_secs(15) {
            let _ = child.kill();
            let out = child.wait_with_output().unwrap();
            panic!(
                "mx2 started on a damaged queue; it printed:\n{}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        thread::sleep(Duration::from_millis(50));
    }
    let out = child.wait_with_output().unwrap();
    let text =
        String::from_utf8_lossy(&out.stderr).into_owned() + &String::from_utf8_lossy(&out.stdout);
    (out.status.code().unwrap_or(-1), text)
}

/// Issue 13, item 1: a queue whose files lost acknowledged mail (the database emptied, the
/// write-ahead log overwritten or damaged in the middle) is refused with a way out, and left
/// as it is; after a plain SIGKILL the queue starts with everything it held.
#[test]
fn a_damaged_queue_is_refused_and_a_killed_one_keeps_everything() {
    let _heavy = exclusive();
    const COUNT: usize = 20;
    let primary_port = free_port();
    let mut mx2 = Mx2::start(primary_port);
    let mut c = mx2.client();
    assert!(c.cmd("EHLO damage.test").starts_with("250"));
    for n in 0..COUNT {
        let r = c.send_mail(
            "s@sender.test",
            &["user@example.test"],
            &message(&format!("dmg{n}"), "held while the primary is down"),
        );
        assert!(r.starts_with("250"), "{r}");
    }
    mx2.kill9();
    let state = mx2.dir.join("state");
    let pristine = mx2.dir.join("pristine");
    copy_dir(&state, &pristine);
    let wal_len = std::fs::metadata(pristine.join("queue.sqlite-wal"))
        .expect("the acknowledged mail is in the write-ahead log")
        .len() as usize;
    println!("write-ahead log after SIGKILL: {wal_len} bytes");

    type Damage = fn(&std::path::Path, usize);
    let cases: [(&str, Damage); 3] = [
        ("database truncated to 0 bytes", |d, _| {
            std::fs::File::create(d.join("queue.sqlite")).unwrap();
        }),
        ("100 kB of the log overwritten", |d, len| {
            let mut wal = std::fs::read(d.join("queue.sqlite-wal")).unwrap();
            let n = len.min(100_000);
            wal[..n].copy_from_slice(&garbage(n, 7));
            std::fs::write(d.join("queue.sqlite-wal"), wal).unwrap();
        }),
        ("4 KiB of garbage in the middle of the log", |d, len| {
            let mut wal = std::fs::read(d.join("queue.sqlite-wal")).unwrap();
            let at = len / 2;
            let n = 4096.min(len - at);
            wal[at..at + n].copy_from_slice(&garbage(n, 11));
            std::fs::write(d.join("queue.sqlite-wal"), wal).unwrap();
        }),
    ];
    for (what, damage) in cases {
        let _ = std::fs::remove_dir_all(&state);
        copy_dir(&pristine, &state);
        damage(&state, wal_len);
        let before: Vec<(String, Vec<u8>)> = ["queue.sqlite", "queue.sqlite-wal"]
            .iter()
            .map(|f| (f.to_string(), std::fs::read(state.join(f)).unwrap()))
            .collect();
        let (code, said) = serve_expecting_refusal(&mx2.config);
        println!("{what}: exit {code}: {said}");
        assert_ne!(code, 0, "{what}: {said}");
        assert!(said.contains("is damaged"), "{what}: {said}");
        assert!(
            said.contains("mx2 queue reset --i-understand") && said.contains("mx2 queue adopt"),
            "{what}: the refusal must say how to recover: {said}"
        );
        for (f, bytes) in before {
            assert!(
                std::fs::read(state.join(&f)).unwrap() == bytes,
                "{what}: {f} was changed by the refused start"
            );
        }
    }

    // The ways out. The last case (the log damaged in the middle) is adopted as it reads:
    // the server then starts with what the file holds.
    let (code, out, err) = mx2_command(&["queue", "adopt"], &mx2.config);
    let said = String::from_utf8_lossy(&out).into_owned() + &String::from_utf8_lossy(&err);
    assert_eq!(code, 0, "{said}");
    assert!(
        said.contains("adopted") && said.contains("kept in"),
        "{said}"
    );
    mx2.spawn();
    // While it runs, nothing may reset its queue.
    let (code, _, err) = mx2_command(&["queue", "reset", "--i-understand"], &mx2.config);
    assert_ne!(code, 0);
    assert!(String::from_utf8_lossy(&err).contains("another process is using the queue"));
    mx2.kill9();
    // Reset asks for --i-understand, then sets the files aside and the next start is empty.
    let (code, _, err) = mx2_command(&["queue", "reset"], &mx2.config);
    assert_eq!(code, 2, "{}", String::from_utf8_lossy(&err));
    let (code, out, _) = mx2_command(&["queue", "reset", "--i-understand"], &mx2.config);
    assert_eq!(code, 0);
    assert!(String::from_utf8_lossy(&out).contains("empty queue"));
    assert!(!state.join("queue.sqlite").exists());
    mx2.spawn();
    mx2.kill9();

    // A plain SIGKILL: everything acknowledged is there and reaches the primary.
    let _ = std::fs::remove_dir_all(&state);
    copy_dir(&pristine, &state);
    mx2.spawn();
    let primary = Primary::start(primary_port);
    let got = primary.wait_for(COUNT, Duration::from_secs(30));
    assert_eq!(got.len(), COUNT, "log:\n{}", mx2.log());
}
