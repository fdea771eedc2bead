//! The test primary: a scriptable SMTP server on loopback standing in for a domain's primary
//! MX. Owns its listener thread and the record of what it received (messages, RCPT tries,
//! connections); one session's dialogue is in `primary_session`. Blocking std I/O and threads,
//! independent of mx2's runtime; never starts mx2 and never talks to anything but loopback.

use super::primary_session::serve_primary;
use std::collections::HashMap;
use std::io::Write;
use std::net::TcpListener;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

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
    /// The Message-ID's local part (`<ID@test>` → `ID`), empty without one.
    pub fn id(&self) -> String {
        let id = self.header("Message-ID").unwrap_or_default();
        let id = id.trim_start_matches('<').split('@').next().unwrap_or("");
        id.to_string()
    }

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
pub(super) struct PrimaryState {
    pub(super) messages: Vec<Received>,
    pub(super) rcpt_tries: HashMap<String, usize>,
    pub(super) connections: usize,
    /// Sessions open now, the most ever open at once, and connections refused with 421.
    pub(super) active: usize,
    pub(super) peak: usize,
    pub(super) refused: usize,
    /// Connections dropped after the final dot.
    pub(super) dropped: usize,
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
    /// Answer every MAIL with this reply (e.g. "550 5.7.23 SPF fail") instead of 250.
    pub mail_reply: Option<&'static str>,
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
            mail_reply: None,
        }
    }
}

impl PrimaryOptions {
    /// A primary that knows no `nobody…` recipient: 550 with `text` (e.g. "5.1.1 no such
    /// user"), 250 for everyone else.
    pub fn rejecting(text: &'static str) -> PrimaryOptions {
        PrimaryOptions {
            rcpt: Arc::new(move |addr, _| {
                if addr.starts_with("nobody") {
                    (550, text)
                } else {
                    (250, "2.1.5 ok")
                }
            }),
            ..Default::default()
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

    /// Waits until at least `n` messages have arrived, then `settle` longer for any that should
    /// not come (a second copy, a smuggled message), and returns all that arrived.
    pub fn wait_and_settle(&self, n: usize, limit: Duration, settle: Duration) -> Vec<Received> {
        self.wait_for(n, limit);
        thread::sleep(settle);
        self.messages()
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

/// Message id (`Received::id`) → how many times it arrived.
pub fn count_ids<'a>(messages: impl IntoIterator<Item = &'a Received>) -> HashMap<String, usize> {
    let mut counts = HashMap::new();
    for m in messages {
        *counts.entry(m.id()).or_default() += 1;
    }
    counts
}

/// Waits (at most `limit`) until every acknowledged id is among `messages()`; returns how many
/// times each id arrived, so the test can name the missing ones and count duplicates.
pub fn wait_for_ids<'a>(
    acked: impl IntoIterator<Item = &'a String>,
    limit: Duration,
    mut messages: impl FnMut() -> Vec<Received>,
) -> HashMap<String, usize> {
    let acked: Vec<&String> = acked.into_iter().collect();
    let deadline = Instant::now() + limit;
    loop {
        let counts = count_ids(&messages());
        if acked.iter().all(|id| counts.contains_key(*id)) || Instant::now() > deadline {
            return counts;
        }
        thread::sleep(Duration::from_millis(50));
    }
}
