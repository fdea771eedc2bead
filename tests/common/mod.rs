//! Test harness for end-to-end tests: a scriptable test primary (an SMTP server), a plain
//! SMTP client, and a running `mx2` binary on ephemeral loopback ports. Blocking std I/O and
//! threads: simple, and independent of mx2's own runtime.
#![allow(dead_code)]

pub mod dns;
pub mod mmdb;
pub mod pg;
pub mod pki;
pub mod postfix;

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
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

/// A port on 127.0.0.1 that was free a moment ago.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A message as the test primary received it.
#[derive(Debug, Clone)]
pub struct Received {
    pub mail_from: String,
    pub mail_params: String,
    pub rcpts: Vec<String>,
    /// Each accepted recipient's RCPT parameters.
    pub rcpt_params: Vec<String>,
    pub body: Vec<u8>,
    pub at: Instant,
    /// The session was inside TLS.
    pub tls: bool,
    /// The user the session authenticated as.
    pub authenticated: Option<String>,
}

impl Received {
    /// The first header field of that name, continuation lines unfolded.
    pub fn header(&self, name: &str) -> Option<String> {
        let text = String::from_utf8_lossy(&self.body);
        let prefix = format!("{}:", name.to_ascii_lowercase());
        let lines: Vec<&str> = text.split("\r\n").take_while(|l| !l.is_empty()).collect();
        let start = lines
            .iter()
            .position(|l| l.to_ascii_lowercase().starts_with(&prefix))?;
        let mut value = lines[start][prefix.len()..].trim().to_string();
        for cont in lines[start + 1..]
            .iter()
            .take_while(|l| l.starts_with([' ', '\t']))
        {
            value.push(' ');
            value.push_str(cont.trim());
        }
        Some(value)
    }
}

/// How the primary answers a RCPT: code and text, per recipient, counting earlier tries.
pub type RcptScript = dyn Fn(&str, usize) -> (u16, &'static str) + Send + Sync;

#[derive(Default)]
struct PrimaryState {
    messages: Vec<Received>,
    rcpt_tries: HashMap<String, usize>,
    connections: usize,
    /// Sessions open now, the most ever open at once, and connections refused with 421.
    active: usize,
    peak: usize,
    refused: usize,
    /// Connections dropped after the final dot.
    dropped: usize,
}

/// A scriptable SMTP server standing in for a domain's primary MX. Its end-of-data detection is
/// deliberately lax (any line that is only "." ends DATA, whatever its line endings, as in the
/// servers SMTP smuggling exploits), so a test sees a smuggled message if mx2 ever relays one.
pub struct Primary {
    pub port: u16,
    state: Arc<Mutex<PrimaryState>>,
    stop: Arc<AtomicBool>,
    thread: Option<thread::JoinHandle<()>>,
}

pub struct PrimaryOptions {
    pub rcpt: Arc<RcptScript>,
    /// Delay before every reply.
    pub delay: Duration,
    /// Advertise DSN in EHLO.
    pub dsn: bool,
    /// Refuse connections beyond this many open sessions with 421.
    pub max_connections: Option<usize>,
    /// Offer STARTTLS with this configuration.
    pub tls: Option<Arc<rustls::ServerConfig>>,
    /// Require AUTH PLAIN (offered only inside TLS) with this user and password.
    pub auth: Option<(String, String)>,
    /// Accept connections and never say anything.
    pub silent: bool,
    /// For the first N messages: take the whole message, then drop the connection without a
    /// reply (the RFC 1047 duplicate window).
    pub drop_after_dot: usize,
}

impl Default for PrimaryOptions {
    fn default() -> Self {
        Self {
            rcpt: Arc::new(|_, _| (250, "2.1.5 ok")),
            delay: Duration::ZERO,
            dsn: false,
            max_connections: None,
            tls: None,
            auth: None,
            silent: false,
            drop_after_dot: 0,
        }
    }
}

impl Primary {
    pub fn start(port: u16) -> Primary {
        Self::start_with(port, PrimaryOptions::default())
    }

    pub fn start_with(port: u16, opts: PrimaryOptions) -> Primary {
        Self::start_on("127.0.0.1", port, opts)
    }

    /// Listens on another loopback address (127.0.0.0/8), as a second host would.
    pub fn start_on(ip: &str, port: u16, opts: PrimaryOptions) -> Primary {
        let listener = TcpListener::bind((ip, port)).expect("bind the test primary");
        listener.set_nonblocking(true).unwrap();
        let port = listener.local_addr().unwrap().port();
        let state = Arc::new(Mutex::new(PrimaryState::default()));
        let stop = Arc::new(AtomicBool::new(false));
        let (st, sp) = (state.clone(), stop.clone());
        let opts = Arc::new(opts);
        let thread = thread::spawn(move || {
            while !sp.load(Ordering::SeqCst) {
                match listener.accept() {
                    Ok((mut stream, _)) => {
                        stream.set_nonblocking(false).unwrap();
                        // Replies go out as they are made: with Nagle, the second of pipelined
                        // replies waited for mx2's delayed ACK (~40 ms a message).
                        let _ = stream.set_nodelay(true);
                        {
                            let mut s = st.lock().unwrap();
                            s.connections += 1;
                            if opts.max_connections.is_some_and(|k| s.active >= k) {
                                s.refused += 1;
                                drop(s);
                                let _ = stream
                                    .write_all(b"421 4.7.0 too many connections, try later\r\n");
                                continue;
                            }
                            s.active += 1;
                            s.peak = s.peak.max(s.active);
                        }
                        let (st, opts, sp) = (st.clone(), opts.clone(), sp.clone());
                        thread::spawn(move || {
                            let _ = serve_primary(stream, &st, &opts, &sp);
                            st.lock().unwrap().active -= 1;
                        });
                    }
                    Err(_) => thread::sleep(Duration::from_millis(5)),
                }
            }
        });
        Primary {
            port,
            state,
            stop,
            thread: Some(thread),
        }
    }

    pub fn messages(&self) -> Vec<Received> {
        self.state.lock().unwrap().messages.clone()
    }

    pub fn rcpt_tries(&self, rcpt: &str) -> usize {
        self.state
            .lock()
            .unwrap()
            .rcpt_tries
            .get(rcpt)
            .copied()
            .unwrap_or(0)
    }

    pub fn connections(&self) -> usize {
        self.state.lock().unwrap().connections
    }

    /// Connections refused with 421 because `max_connections` were open.
    pub fn refused(&self) -> usize {
        self.state.lock().unwrap().refused
    }

    /// The most sessions ever open at once.
    pub fn peak(&self) -> usize {
        self.state.lock().unwrap().peak
    }

    /// Waits until at least `n` messages have arrived.
    pub fn wait_for(&self, n: usize, limit: Duration) -> Vec<Received> {
        let start = Instant::now();
        loop {
            let m = self.messages();
            if m.len() >= n || start.elapsed() > limit {
                return m;
            }
            thread::sleep(Duration::from_millis(10));
        }
    }

    pub fn stop(mut self) {
        self.halt();
    }

    /// Stops listening, waits (at most 5 s) until the sessions in flight have ended, and
    /// returns everything this primary received, including messages that arrived meanwhile.
    pub fn shut_down(mut self) -> Vec<Received> {
        self.halt();
        let start = Instant::now();
        while self.state.lock().unwrap().active > 0 && start.elapsed() < Duration::from_secs(5) {
            thread::sleep(Duration::from_millis(10));
        }
        self.messages()
    }

    fn halt(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for Primary {
    fn drop(&mut self) {
        self.halt();
    }
}

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

fn serve_primary(
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
            reply(&mut c, "250 2.1.0 ok\r\n")?;
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
pub fn base64_decode(s: &str) -> Option<Vec<u8>> {
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

// ---- the client side ------------------------------------------------------------------------

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
}

pub fn code(reply: &str) -> u16 {
    reply.get(..3).and_then(|c| c.parse().ok()).unwrap_or(0)
}

/// A message's content in wire form (CRLF, not yet dot-stuffed) with a Message-ID.
pub fn message(id: &str, body: &str) -> Vec<u8> {
    format!("From: <sender@sender.test>\r\nTo: <user@example.test>\r\nSubject: test {id}\r\nMessage-ID: <{id}@test>\r\n\r\n{body}\r\n").into_bytes()
}

// ---- mx2 itself -------------------------------------------------------------------------------

/// A running mx2 binary with its own config and state directory.
pub struct Mx2 {
    pub port: u16,
    pub dir: PathBuf,
    child: Option<Child>,
    pub config: PathBuf,
    /// A command mx2 runs under (e.g. `prlimit --nofile=64:4096`), empty for none.
    pub wrapper: Vec<String>,
}

pub fn mx2_binary() -> &'static str {
    env!("CARGO_BIN_EXE_mx2")
}

/// Config text for a test instance; `smtp_extra` holds more `[smtp]` lines (limits, timeouts).
pub fn test_config(port: u16, primary_port: u16, state_dir: &Path, smtp_extra: &str) -> String {
    let domains =
        format!("[[domain]]\nname = \"example.test\"\nprimary = [\"127.0.0.1:{primary_port}\"]\n");
    config_with(port, state_dir, smtp_extra, &domains)
}

/// Config text with the given tail: extra tables ([dns], [routing]) and the [[domain]]s.
pub fn config_with(port: u16, state_dir: &Path, smtp_extra: &str, tail: &str) -> String {
    format!(
        r#"hostname = "mx2.test"
state_dir = "{state}"
[smtp]
listen = ["127.0.0.1:{port}"]
max_message_size = "1MB"
shutdown_grace = "5s"
{greeting}
{smtp_extra}
{queue}
{probe}
{delivery}
{dns}
{auth}
{admin}
{tail}
"#,
        state = state_dir.display(),
        // Tests talk at once; the early-talker wait is tested on its own.
        greeting = if smtp_extra.contains("greeting_delay") {
            ""
        } else {
            "greeting_delay = \"0s\"\nerror_delay = \"50ms\""
        },
        // A tail with its own [queue] table replaces these test defaults.
        queue = if tail.contains("[queue]") {
            ""
        } else {
            "[queue]\nretry_min = \"1s\"\nretry_max = \"4s\""
        },
        delivery = if tail.contains("[delivery]") {
            ""
        } else {
            "[delivery]\nconnect_timeout = \"2s\"\ngreeting_timeout = \"5s\"\ncommand_timeout = \"5s\"\ndata_timeout = \"10s\""
        },
        // Never the machine's own resolver: tests must not send DNS queries off this host.
        dns = if tail.contains("[dns]") || smtp_extra.contains("[dns]") {
            ""
        } else {
            "[dns]\nnameservers = [\"127.0.0.1:9\"]\ntimeout = \"500ms\""
        },
        // SPF/DKIM/DMARC only where a test serves the DNS records for it.
        auth = if tail.contains("[auth]") {
            ""
        } else {
            "[auth]\nenabled = false"
        },
        // Every instance gets its own admin port (the default, 8025, would be shared).
        admin = if tail.contains("[admin]") {
            String::new()
        } else {
            format!("[admin]\nlisten = \"127.0.0.1:{}\"", free_port())
        },
        probe = if tail.contains("[probe]") {
            ""
        } else {
            "[probe]\ninterval = \"1s\"\ntimeout = \"2s\""
        }
    )
}

impl Mx2 {
    /// Starts mx2 backing up example.test to a primary on `primary_port`.
    pub fn start(primary_port: u16) -> Mx2 {
        Self::start_with(primary_port, "")
    }

    pub fn start_with(primary_port: u16, smtp_extra: &str) -> Mx2 {
        Self::start_config(|port, state| test_config(port, primary_port, state, smtp_extra))
    }

    /// Starts mx2 on a config made from its port and state directory.
    pub fn start_config(make: impl FnOnce(u16, &Path) -> String) -> Mx2 {
        let mut m = Self::prepare(make);
        m.spawn();
        m
    }

    /// An instance with its config written, not started yet (`spawn` starts it).
    pub fn prepare(make: impl FnOnce(u16, &Path) -> String) -> Mx2 {
        let dir = tempfile::tempdir().unwrap().keep();
        let port = free_port();
        let config = dir.join("mx2.toml");
        std::fs::write(&config, make(port, &dir.join("state"))).unwrap();
        Mx2 {
            port,
            dir,
            child: None,
            config,
            wrapper: Vec::new(),
        }
    }

    /// Starts (again) the binary on this instance's config and waits until it accepts.
    pub fn spawn(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join("mx2.log"))
            .unwrap();
        let mut command = match self.wrapper.split_first() {
            Some((program, args)) => {
                let mut c = Command::new(program);
                c.args(args).arg(mx2_binary());
                c
            }
            None => Command::new(mx2_binary()),
        };
        let child = command
            .args(["serve", "--config"])
            .arg(&self.config)
            .env("MX2_LOG", "mx2=debug,info")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start mx2");
        self.child = Some(child);
        let start = Instant::now();
        while TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            if let Some(status) = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                panic!("mx2 exited at start ({status}); log:\n{}", self.log());
            }
            assert!(
                start.elapsed() < Duration::from_secs(20),
                "mx2 did not start listening; log:\n{}",
                self.log()
            );
            thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("mx2.log")).unwrap_or_default()
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().map(Child::id).unwrap_or(0)
    }

    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGTERM and wait; returns the exit code and how long the exit took.
    pub fn terminate(&mut self) -> (Option<i32>, Duration) {
        let c = self.child.as_mut().expect("running");
        let start = Instant::now();
        let _ = Command::new("kill")
            .args(["-TERM", &c.id().to_string()])
            .status();
        let status = c.wait().unwrap();
        self.child = None;
        (status.code(), start.elapsed())
    }

    pub fn client(&self) -> Client {
        Client::connect(self.port)
    }

    /// The admin API's base URL, from the instance's config.
    pub fn admin_url(&self) -> String {
        let text = std::fs::read_to_string(&self.config).unwrap();
        let after = &text[text.find("[admin]").expect("config has [admin]")..];
        let line = after
            .lines()
            .find(|l| l.trim_start().starts_with("listen"))
            .expect("admin.listen");
        let addr = line.split('"').nth(1).unwrap();
        format!("http://{addr}")
    }
}

/// Runs `mx2 ARGS --config CONFIG`: (exit code, stdout, stderr).
pub fn mx2_command(args: &[&str], config: &Path) -> (i32, Vec<u8>, Vec<u8>) {
    let out = Command::new(mx2_binary())
        .args(args)
        .arg("--config")
        .arg(config)
        .output()
        .unwrap();
    (out.status.code().unwrap_or(-1), out.stdout, out.stderr)
}

/// A blocking HTTP/1.1 request to a local server: (status, body).
pub fn http(method: &str, url: &str, token: Option<&str>, body: Option<&str>) -> (u16, String) {
    let rest = url.strip_prefix("http://").unwrap();
    let (host, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    let path = if path.is_empty() { "/" } else { path };
    let mut s = TcpStream::connect(host).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let auth = token
        .map(|t| format!("Authorization: Bearer {t}\r\n"))
        .unwrap_or_default();
    let body = body.unwrap_or("");
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: {host}\r\n{auth}Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).unwrap();
    let text = String::from_utf8_lossy(&raw).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    // Chunked bodies (axum streams some responses): join the chunks.
    let body = if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        let mut out = String::new();
        let mut rest = body;
        while let Some((size, tail)) = rest.split_once("\r\n") {
            let n = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
            if n == 0 {
                break;
            }
            out.push_str(&tail[..n]);
            rest = &tail[n + 2..];
        }
        out
    } else {
        body.to_string()
    };
    (status, body)
}

impl Drop for Mx2 {
    fn drop(&mut self) {
        self.kill9();
        if !thread::panicking() {
            let _ = std::fs::remove_dir_all(&self.dir);
        } else {
            eprintln!("mx2 test directory kept: {}", self.dir.display());
        }
    }
}
