//! The SMTP client side of the tests: a plain blocking client that talks to mx2 line by line,
//! a byte-wise reply reader for raw streams (TLS, PROXY),
//! the reply-code helper and a test message. Never asserts on anything but the greeting and
//! DATA's 354; judging the replies is the test's job.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::time::Duration;

/// A plain SMTP client for tests.
pub struct Client {
    r: BufReader<TcpStream>,
    w: TcpStream,
}

impl Client {
    pub fn connect(port: u16) -> Client {
        let s = TcpStream::connect(("127.0.0.1", port)).expect("connect to mx2");
        s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        let w = s.try_clone().unwrap();
        let mut c = Client {
            r: BufReader::new(s),
            w,
        };
        let greeting = c.reply();
        assert!(greeting.starts_with("220"), "greeting: {greeting}");
        c
    }

    /// Reads one reply (all lines joined with '\n').
    pub fn reply(&mut self) -> String {
        let mut all = String::new();
        loop {
            let mut line = String::new();
            let n = self.r.read_line(&mut line).unwrap_or(0);
            if n == 0 {
                all.push_str("<closed>");
                return all;
            }
            all.push_str(line.trim_end());
            if line.len() < 4 || line.as_bytes()[3] != b'-' {
                return all;
            }
            all.push('\n');
        }
    }

    /// The connection itself, for tests that misbehave on it.
    pub fn into_stream(self) -> TcpStream {
        self.w
    }

    pub fn send_raw(&mut self, bytes: &[u8]) {
        let _ = self.w.write_all(bytes);
    }

    pub fn cmd(&mut self, line: &str) -> String {
        self.send_raw(format!("{line}\r\n").as_bytes());
        self.reply()
    }

    pub fn code(&mut self, line: &str) -> u16 {
        code(&self.cmd(line))
    }

    /// One complete transaction; returns the final reply.
    pub fn send_mail(&mut self, from: &str, rcpts: &[&str], content: &[u8]) -> String {
        let r = self.cmd(&format!("MAIL FROM:<{from}>"));
        if !r.starts_with("250") {
            return r;
        }
        let mut any = false;
        for rcpt in rcpts {
            any |= self.cmd(&format!("RCPT TO:<{rcpt}>")).starts_with("250");
        }
        if !any {
            self.cmd("RSET");
            return "no recipient accepted".into();
        }
        let r = self.cmd("DATA");
        assert!(r.starts_with("354"), "DATA: {r}");
        self.send_raw(content);
        self.send_raw(b".\r\n");
        self.reply()
    }

    /// Sends `content` from a@sender.test to user@example.test, which must be accepted (250).
    pub fn send_ok(&mut self, content: &[u8]) -> String {
        let r = self.send_mail("a@sender.test", &["user@example.test"], content);
        assert!(r.starts_with("250"), "not accepted: {r}");
        r
    }
}

pub fn code(reply: &str) -> u16 {
    reply.get(..3).and_then(|c| c.parse().ok()).unwrap_or(0)
}

/// A message's content in wire form (CRLF, not yet dot-stuffed) with a Message-ID.
pub fn message(id: &str, body: &str) -> Vec<u8> {
    format!("From: <sender@sender.test>\r\nTo: <user@example.test>\r\nSubject: test {id}\r\nMessage-ID: <{id}@test>\r\n\r\n{body}\r\n").into_bytes()
}

/// Reads one reply byte by byte from a raw stream (TLS, a PROXY listener, a hand-made socket),
/// so nothing after it is consumed: its lines joined with CRLF, or what came before the end of
/// the stream followed by `<closed>`.
pub fn read_reply(r: &mut impl Read) -> String {
    let mut out = Vec::new();
    let mut b = [0u8; 1];
    loop {
        match r.read(&mut b) {
            Ok(1) => {
                out.push(b[0]);
                if b[0] == b'\n' {
                    let line_start = out[..out.len() - 1]
                        .iter()
                        .rposition(|&c| c == b'\n')
                        .map_or(0, |i| i + 1);
                    if out.len() - line_start < 4 || out[line_start + 3] != b'-' {
                        return String::from_utf8_lossy(&out).trim_end().to_string();
                    }
                }
            }
            _ => return format!("{}<closed>", String::from_utf8_lossy(&out)),
        }
    }
}

/// Sends one command line on a raw stream and reads its reply (`read_reply`).
pub fn raw_cmd(s: &mut (impl Read + Write), line: &str) -> String {
    s.write_all(format!("{line}\r\n").as_bytes()).unwrap();
    read_reply(s)
}
