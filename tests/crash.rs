//! Crash safety: mx2 is SIGKILLed again and again while several clients send to it (and, in
//! the later cycles, while it delivers). Every message that got a 250 must reach the primary;
//! duplicates (allowed only in the RFC 1047 window) are counted and printed.

mod common;

use common::*;
use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Duration;

/// SIGKILL cycles: `MX2_FAULT_CYCLES` (CI runs the default, `bench/faults` runs 20).
const DEFAULT_CYCLES: usize = 6;
const CLIENTS: usize = 6;

#[test]
fn sigkill_under_load_loses_no_acknowledged_message() {
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
    let deadline = std::time::Instant::now() + Duration::from_secs(90);
    let mut counts: HashMap<String, usize>;
    loop {
        counts = HashMap::new();
        for m in primary.messages() {
            let id = m.header("Message-ID").unwrap_or_default();
            let id = id
                .trim_start_matches('<')
                .split('@')
                .next()
                .unwrap_or("")
                .to_string();
            *counts.entry(id).or_default() += 1;
        }
        if acked.iter().all(|id| counts.contains_key(id)) || std::time::Instant::now() > deadline {
            break;
        }
        thread::sleep(Duration::from_millis(100));
    }
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
