//! A whole inbound session driven by arbitrary lines: no panic, every reply well formed.
#![no_main]
use libfuzzer_sys::fuzz_target;
use mx2::inbound::session::{Next, Session, SessionConfig};
use mx2::policy::Policy;
use std::sync::Arc;

fuzz_target!(|data: &[u8]| {
    let cfg = SessionConfig { hostname: "mx2.test".into(), max_message_size: 4096, max_recipients: 5, max_errors: 1000, max_received: 50, starttls: true };
    let mut s = Session::new(Arc::new(cfg), Arc::new(Policy::new(["example.test".to_string()])), "192.0.2.1".parse().unwrap());
    for line in data.split(|&b| b == b'\n') {
        if let Next::Reply(r) | Next::Close(r) | Next::StartData(r) | Next::StartTls(r) = s.command(line, std::time::Instant::now()) {
            assert!((200..600).contains(&r.code));
            assert!(r.to_wire().ends_with(b"\r\n"));
        }
    }
});
