//! Test harness for the integration tests, split by job: the test primary (`primary`,
//! `primary_session`), the SMTP client (`client`), the config builder (`config`), the mx2
//! runner (`runner`), HTTP (`http`), and the peers and data the tests serve (`dns`, `pki`, `pg`,
//! `postfix`, `mmdb`). This file holds the small shared helpers (ports, counts, waiting).
//! Blocking std I/O and threads: simple, and independent of mx2's own runtime. Everything
//! listens on loopback at ports `free_port` hands out; nothing here may use a fixed port.

pub mod client;
pub mod config;
pub mod dns;
mod dns_zone;
pub mod http;
pub mod memory;
pub mod mmdb;
pub mod pg;
pub mod pki;
pub mod postfix;
pub mod primary;
mod primary_session;
pub mod runner;
pub mod sts;

pub use client::{Client, code, message, raw_cmd, read_reply};
pub use config::{config_with, example_domain, test_config};
pub use http::{http, http_with};
pub use primary::{Primary, PrimaryOptions, Received, count_ids, wait_for_ids};
pub use runner::{ADMIN_TOKEN, Mx2, mx2_binary, mx2_command, mx2_text};

use std::net::TcpListener;
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::thread;
use std::time::{Duration, Instant};

/// A count for a fault test: the environment variable `name` when it is set (`bench/faults`
/// sets large ones), else `default` (small, for CI). A value that is not a number is an error.
pub fn env_count(name: &str, default: usize) -> usize {
    match std::env::var(name) {
        Ok(v) => v
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("{name}={v:?}: expected a whole number")),
        Err(_) => default,
    }
}

/// Where test ports come from: below the kernel's ephemeral range (32768 and up on Linux), so
/// that no outgoing connection of a test running in parallel can take a port between this
/// call and the bind of the server it is meant for (a port the OS picked with `:0` could be
/// taken that way: "address in use" under load).
const PORTS: std::ops::Range<u16> = 20_000..32_000;

/// A port on 127.0.0.1 that is free and that no other test of this process was given.
pub fn free_port() -> u16 {
    use std::sync::atomic::{AtomicUsize, Ordering};
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    let span = usize::from(PORTS.end - PORTS.start);
    // Two test processes at once (two clones, say) start at different places.
    let base = std::process::id() as usize * 7919;
    for _ in 0..span {
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let port = PORTS.start + ((base + n) % span) as u16;
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free port in {PORTS:?}");
}

/// Polls `f` every 50 ms until it holds or `limit` has passed; whether it held (asked once
/// more at the end).
pub fn poll_until(limit: Duration, mut f: impl FnMut() -> bool) -> bool {
    let start = Instant::now();
    while start.elapsed() < limit {
        if f() {
            return true;
        }
        thread::sleep(Duration::from_millis(50));
    }
    f()
}

/// Waits until `f` holds; fails the test ("timed out waiting for WHAT") when `limit` passes.
pub fn wait_until(what: &str, limit: Duration, f: impl FnMut() -> bool) {
    assert!(poll_until(limit, f), "timed out waiting for {what}");
}

/// As `wait_until`, with `log()` (computed only on failure) in the failure message.
pub fn wait_until_showing(
    what: &str,
    limit: Duration,
    f: impl FnMut() -> bool,
    log: impl Fn() -> String,
) {
    assert!(
        poll_until(limit, f),
        "timed out waiting for {what}; log:\n{}",
        log()
    );
}

/// Held by the tests that need the machine's attention to themselves (load generators, SIGKILL
/// and SIGTERM cycles, fault injection, tight timings): they ran in binaries of their own
/// before all tests shared one, and two of them at once on a 2-core machine skew each other's
/// timings. Other tests still run beside them, as they did beside their file's siblings. A test
/// that failed while holding it does not block the others (the poison is ignored).
pub fn exclusive() -> MutexGuard<'static, ()> {
    static HEAVY: Mutex<()> = Mutex::new(());
    HEAVY.lock().unwrap_or_else(PoisonError::into_inner)
}
