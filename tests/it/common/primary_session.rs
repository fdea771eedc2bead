//! One session of the test primary: the connection (plain TCP, or TLS after STARTTLS) and
//! the SMTP dialogue as `PrimaryOptions` scripts it, recording what arrives in the primary's
//! state. Reads DATA laxly on purpose (see `Primary`); never opens connections itself.

use super::primary::{PrimaryOptions, PrimaryState, Received};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

/// The primary's side of one connection: plain TCP or TLS after STARTTLS, with its own read
/// buffer (so bytes pipelined before the handshake can be dropped).
struct PeerConn {
    tcp: Option<TcpStream>,
    tls: Option<Box<rustls::StreamOwned<rustls::ServerConnection, TcpStream>>>,
    buf: std::collections::VecDeque<u8>,
}

impl PeerConn {
    /// Reads more input; false at end of stream or when the primary is stopped.
    fn fill(&mut self, stop: &AtomicBool) -> std::io::Result<bool> {
        let mut chunk = [0u8; 4096];
        loop {
            if stop.load(Ordering::SeqCst) {
                return Ok(false);
            }
            let n = match (&mut self.tls, &mut self.tcp) {
                (Some(t), _) => t.read(&mut chunk),
                (None, Some(t)) => t.read(&mut chunk),
                _ => return Ok(false),
            };
            match n {
                Ok(0) => return Ok(false),
                Ok(n) => {
                    self.buf.extend(&chunk[..n]);
                    return Ok(true);
                }
                Err(e)
                    if e.kind() == std::io::ErrorKind::WouldBlock
                        || e.kind() == std::io::ErrorKind::TimedOut =>
                {
                    continue;
                }
                Err(e) => return Err(e),
            }
        }
    }

    fn byte(&mut self, stop: &AtomicBool) -> std::io::Result<Option<u8>> {
        if self.buf.is_empty() && !self.fill(stop)? {
            return Ok(None);
        }
        Ok(self.buf.pop_front())
    }

    fn line(&mut self, stop: &AtomicBool) -> std::io::Result<Option<Vec<u8>>> {
        let mut line = Vec::new();
        loop {
            match self.byte(stop)? {
                None => return Ok(None),
                Some(b'\n') => return Ok(Some(line)),
                Some(b) => line.push(b),
            }
        }
    }

    fn write(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        match (&mut self.tls, &mut self.tcp) {
            (Some(t), _) => {
                t.write_all(bytes)?;
                t.flush()
            }
            (None, Some(t)) => t.write_all(bytes),
            _ => Ok(()),
        }
    }

    fn start_tls(&mut self, config: Arc<rustls::ServerConfig>) -> std::io::Result<()> {
        self.buf.clear();
        let tcp = self
            .tcp
            .take()
            .ok_or_else(|| std::io::Error::other("no plain stream"))?;
        let conn = rustls::ServerConnection::new(config).map_err(std::io::Error::other)?;
        self.tls = Some(Box::new(rustls::StreamOwned::new(conn, tcp)));
        Ok(())
    }
}

pub(super) fn serve_primary(
    stream: TcpStream,
    state: &Mutex<PrimaryState>,
    opts: &PrimaryOptions,
    stop: &AtomicBool,
) -> std::io::Result<()> {
    stream.set_read_timeout(Some(Duration::from_millis(200)))?;
    let mut c = PeerConn {
        tcp: Some(stream),
        tls: None,
        buf: Default::default(),
    };
    let reply = |c: &mut PeerConn, text: &str| -> std::io::Result<()> {
        if !opts.delay.is_zero() {
            thread::sleep(opts.delay);
        }
        c.write(text.as_bytes())
    };
    if opts.silent {
        while c.fill(stop)? {}
        return Ok(());
    }
    reply(&mut c, "220 primary.test ESMTP test primary\r\n")?;
    let (mut from, mut params, mut rcpts) = (String::new(), String::new(), Vec::<String>::new());
    let mut rcpt_params = Vec::<String>::new();
    let mut authenticated: Option<String> = None;
    while let Some(line) = c.line(stop)? {
        let text = String::from_utf8_lossy(&line).trim_end().to_string();
        let upper = text.to_ascii_uppercase();
        let in_tls = c.tls.is_some();
        if upper.starts_with("EHLO") {
            let dsn = if opts.dsn { "250-DSN\r\n" } else { "" };
            let starttls = if opts.tls.is_some() && !in_tls {
                "250-STARTTLS\r\n"
            } else {
                ""
            };
            let auth = if opts.auth.is_some() && in_tls {
                "250-AUTH PLAIN LOGIN\r\n"
            } else {
                ""
            };
            reply(
                &mut c,
                &format!(
                    "250-primary.test\r\n250-PIPELINING\r\n250-8BITMIME\r\n{dsn}{starttls}{auth}250-SMTPUTF8\r\n250 SIZE 100000000\r\n"
                ),
            )?;
        } else if upper.starts_with("HELO") {
            reply(&mut c, "250 primary.test\r\n")?;
        } else if upper == "STARTTLS" && opts.tls.is_some() && !in_tls {
            reply(&mut c, "220 2.0.0 go ahead\r\n")?;
            c.start_tls(opts.tls.clone().expect("checked"))?;
            from.clear();
            rcpts.clear();
            authenticated = None;
        } else if upper.starts_with("AUTH PLAIN") && in_tls {
            let arg = text[10..].trim();
            let decoded = base64_decode(arg).unwrap_or_default();
            let parts: Vec<&[u8]> = decoded.split(|&b| b == 0).collect();
            let ok = opts.auth.as_ref().is_some_and(|(u, p)| {
                parts.len() == 3 && parts[1] == u.as_bytes() && parts[2] == p.as_bytes()
            });
            if ok {
                authenticated = opts.auth.as_ref().map(|(u, _)| u.clone());
                reply(&mut c, "235 2.7.0 authenticated\r\n")?;
            } else {
                reply(&mut c, "535 5.7.8 bad credentials\r\n")?;
            }
        } else if upper.starts_with("MAIL FROM:") {
            if opts.auth.is_some() && authenticated.is_none() {
                reply(&mut c, "530 5.7.0 authentication required\r\n")?;
                continue;
            }
            let rest = &text[10..];
            let end = rest.find('>').unwrap_or(rest.len());
            from = rest.trim_start_matches('<')[..end.saturating_sub(1)].to_string();
            params = rest[(end + 1).min(rest.len())..].trim().to_string();
            rcpts.clear();
            rcpt_params.clear();
            match opts.mail_reply {
                Some(r) => reply(&mut c, &format!("{r}\r\n"))?,
                None => reply(&mut c, "250 2.1.0 ok\r\n")?,
            }
        } else if upper.starts_with("RCPT TO:") && opts.mail_reply.is_some() {
            reply(&mut c, "503 5.5.1 no valid MAIL command\r\n")?;
        } else if upper.starts_with("RCPT TO:") {
            let rest = &text[8..];
            let rparams = rest
                .split_once('>')
                .map(|(_, p)| p.trim().to_string())
                .unwrap_or_default();
            let addr = rest
                .trim_start_matches('<')
                .split('>')
                .next()
                .unwrap_or("")
                .to_string();
            let tries = {
                let mut s = state.lock().unwrap();
                let n = s.rcpt_tries.entry(addr.clone()).or_insert(0);
                *n += 1;
                *n
            };
            let (code, msg) = (opts.rcpt)(&addr, tries);
            if code == 250 {
                rcpts.push(addr);
                rcpt_params.push(rparams);
            }
            reply(&mut c, &format!("{code} {msg}\r\n"))?;
            if code == 421 {
                // 421: the server closes the channel (RFC 5321 §3.8), as real ones do.
                return Ok(());
            }
        } else if upper == "DATA" {
            if rcpts.is_empty() {
                reply(&mut c, "554 5.5.1 no valid recipients\r\n")?;
                continue;
            }
            reply(&mut c, "354 go ahead\r\n")?;
            let body = read_lax_data(&mut c, stop)?;
            state.lock().unwrap().messages.push(Received {
                mail_from: from.clone(),
                mail_params: params.clone(),
                rcpts: rcpts.clone(),
                rcpt_params: std::mem::take(&mut rcpt_params),
                body,
                at: Instant::now(),
                tls: in_tls,
                authenticated: authenticated.clone(),
            });
            rcpts.clear();
            let dropped = {
                let mut s = state.lock().unwrap();
                s.dropped += usize::from(s.dropped < opts.drop_after_dot);
                s.dropped <= opts.drop_after_dot && s.messages.len() <= opts.drop_after_dot
            };
            if dropped {
                return Ok(()); // the message is in, the reply never comes
            }
            reply(&mut c, "250 2.0.0 queued at primary\r\n")?;
        } else if upper == "RSET" || upper.starts_with("NOOP") {
            rcpts.clear();
            rcpt_params.clear();
            reply(&mut c, "250 2.0.0 ok\r\n")?;
        } else if upper == "QUIT" {
            reply(&mut c, "221 2.0.0 bye\r\n")?;
            return Ok(());
        } else {
            reply(&mut c, "500 5.5.2 what?\r\n")?;
        }
    }
    Ok(())
}

/// Standard base64 (for AUTH PLAIN in the test primary).
fn base64_decode(s: &str) -> Option<Vec<u8>> {
    let val = |c: u8| match c {
        b'A'..=b'Z' => Some(c - b'A'),
        b'a'..=b'z' => Some(c - b'a' + 26),
        b'0'..=b'9' => Some(c - b'0' + 52),
        b'+' => Some(62),
        b'/' => Some(63),
        _ => None,
    };
    let bytes: Vec<u8> = s.bytes().filter(|&b| b != b'=').collect();
    let mut out = Vec::new();
    for chunk in bytes.chunks(4) {
        let v: Vec<u8> = chunk.iter().map(|&b| val(b)).collect::<Option<_>>()?;
        let n = v.iter().fold(0u32, |acc, &x| (acc << 6) | u32::from(x)) << (6 * (4 - v.len()));
        for i in 0..v.len().saturating_sub(1) {
            out.push((n >> (16 - 8 * i)) as u8);
        }
    }
    Some(out)
}

/// Reads DATA content laxly: CR, LF and CRLF all end lines; a line that is only "." ends the
/// data. Lines are unstuffed and joined with CRLF. An error when the data never ends.
fn read_lax_data(c: &mut PeerConn, stop: &AtomicBool) -> std::io::Result<Vec<u8>> {
    let mut body = Vec::new();
    let mut line = Vec::new();
    let mut prev_cr = false;
    while let Some(b) = c.byte(stop)? {
        if b == b'\n' && prev_cr {
            prev_cr = false;
            continue;
        }
        prev_cr = b == b'\r';
        if b == b'\r' || b == b'\n' {
            if line == b"." {
                if prev_cr {
                    // Swallow the LF of a CRLF terminator.
                    if c.buf.is_empty() {
                        let _ = c.fill(stop);
                    }
                    if c.buf.front() == Some(&b'\n') {
                        c.buf.pop_front();
                    }
                }
                return Ok(body);
            }
            let content = if line.first() == Some(&b'.') {
                &line[1..]
            } else {
                &line[..]
            };
            body.extend_from_slice(content);
            body.extend_from_slice(b"\r\n");
            line.clear();
        } else {
            line.push(b);
        }
    }
    // Closed, or this primary is stopping, before the final dot: the message did not arrive,
    // and the session ends without a reply (never a 250 for a partial message).
    Err(std::io::Error::other("no end of data"))
}
