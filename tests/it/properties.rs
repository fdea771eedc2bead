//! Property tests: no input makes the parsers or the session panic, replies stay well formed,
//! and the DATA reader's result does not depend on how the input is split.

use mx2::inbound::data::{Decoder, Mode};
use mx2::inbound::session::{Content, Next, Session, SessionConfig};
use mx2::policy::Policy;
use mx2::smtp::reply::ReplyParser;
use proptest::prelude::*;
use std::sync::Arc;
use std::time::SystemTime;

fn session() -> Session {
    let cfg = SessionConfig {
        hostname: "mx2.test".into(),
        max_message_size: 4096,
        max_recipients: 5,
        max_errors: 50,
        max_received: 50,
        starttls: true,
    };
    Session::new(
        Arc::new(cfg),
        Arc::new(Policy::new(["example.test".to_string()])),
        "192.0.2.1".parse().unwrap(),
    )
}

fn well_formed(r: &mx2::smtp::Reply) -> bool {
    (200..600).contains(&r.code)
        && (r.status.is_empty()
            || r.status
                .starts_with(char::from(b'0' + (r.code / 100) as u8)))
        && r.to_wire().ends_with(b"\r\n")
        && !r.lines.iter().any(|l| l.contains('\r') || l.contains('\n'))
}

/// Lines that look like SMTP often enough to reach deep states.
fn line() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        Just(b"EHLO c.test".to_vec()),
        Just(b"MAIL FROM:<a@b.test>".to_vec()),
        Just(b"MAIL FROM:<>".to_vec()),
        Just(b"RCPT TO:<u@example.test>".to_vec()),
        Just(b"RCPT TO:<u%x@example.test>".to_vec()),
        Just(b"DATA".to_vec()),
        Just(b"BDAT 3 LAST".to_vec()),
        Just(b"RSET".to_vec()),
        Just(b"STARTTLS".to_vec()),
        Just(b"ETRN @test".to_vec()),
        "[A-Z]{4} [ -~]{0,40}".prop_map(|s| s.into_bytes()),
        proptest::collection::vec(any::<u8>(), 0..80),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(400))]

    #[test]
    fn session_never_panics_and_replies_are_well_formed(lines in proptest::collection::vec(line(), 0..40), body in proptest::collection::vec(any::<u8>(), 0..300)) {
        let mut s = session();
        for l in lines {
            match s.command(&l, std::time::Instant::now()) {
                Next::Reply(r) | Next::Close(r) | Next::StartTls(r) => prop_assert!(well_formed(&r), "{r:?}"),
                Next::StartData(r) => {
                    prop_assert_eq!(r.code, 354);
                    let mut d = s.data_decoder();
                    let mut input = body.clone();
                    input.extend_from_slice(b"\r\n.\r\n");
                    prop_assert!(d.feed(&input).is_some(), "the final CRLF.CRLF always ends DATA");
                    if let Content::Reply(r) = s.data_done(d, SystemTime::UNIX_EPOCH, "q".into()) {
                        prop_assert!(well_formed(&r));
                    }
                }
                Next::ReadChunk { size, last } => {
                    if let Some(d) = s.chunk_decoder() {
                        d.feed(&body[..body.len().min(size as usize)]);
                    }
                    if let Content::Reply(r) = s.chunk_done(last, size, SystemTime::UNIX_EPOCH, "q".into()) {
                        prop_assert!(well_formed(&r));
                    }
                }
                Next::Flush { .. } | Next::CheckRecipient(_) => {}
            }
        }
    }

    #[test]
    fn data_reader_is_split_invariant_and_normalizes(input in proptest::collection::vec(prop_oneof![Just(b'\r'), Just(b'\n'), Just(b'.'), any::<u8>()], 0..400), cut in any::<prop::sample::Index>()) {
        let whole = {
            let mut d = Decoder::new(Mode::Dot, 1 << 20);
            let end = d.feed(&input);
            (end, d.finish())
        };
        let at = cut.index(input.len() + 1);
        let split = {
            let mut d = Decoder::new(Mode::Dot, 1 << 20);
            let end = match d.feed(&input[..at]) {
                Some(n) => Some(n),
                None => d.feed(&input[at..]).map(|n| n + at),
            };
            (end, d.finish())
        };
        prop_assert_eq!(&whole, &split);
        let body = whole.1;
        for (i, &b) in body.iter().enumerate() {
            if b == b'\n' { prop_assert!(i > 0 && body[i - 1] == b'\r', "bare LF in output"); }
            if b == b'\r' { prop_assert!(body.get(i + 1) == Some(&b'\n'), "bare CR in output"); }
        }
        if let Some(n) = whole.0 {
            prop_assert!(n >= 3 && &input[n - 3..n] == b".\r\n");
            prop_assert!(n == 3 || input[..n - 3].ends_with(b"\r\n"), "ended somewhere other than CRLF.CRLF");
        }
    }

    #[test]
    fn parsers_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..200), text in "\\PC{0,120}") {
        let _ = mx2::smtp::command::parse(&bytes);
        let _ = mx2::smtp::address::parse_mailbox(&text, true);
        let _ = mx2::smtp::address::parse_reverse_path(&text, false);
        let _ = mx2::inbound::proxy::parse(&bytes);
        let _ = mx2::http::parse_response(&bytes);
        let mut p = ReplyParser::default();
        for l in bytes.split(|&b| b == b'\n') {
            let _ = p.line(l);
        }
        let _ = mx2::config::Config::parse(&text, "fuzz.toml", std::path::Path::new("/"));
    }
}
