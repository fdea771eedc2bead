//! Any bytes as a command line, an address, a reply line or a PROXY header: no panic.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = mx2::smtp::command::parse(data);
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = mx2::smtp::address::parse_mailbox(text, true);
        let _ = mx2::smtp::address::parse_reverse_path(text, false);
    }
    let _ = mx2::smtp::reply::ReplyParser::default().line(data);
    let _ = mx2::inbound::proxy::parse(data);
});
