//! The inbound listener: accepts connections, applies connection limits and per-phase
//! timeouts (shortened under stress, see [`Pressure`]; a minimum data rate for content),
//! moves bytes between the socket and the [`Session`], and commits messages to the store
//! before the session may say 250.

use super::data::Decoder;
use super::limits::{ConnectionLimits, Pressure, Refused, data_budget};
use super::session::{Action, Content, Session, SessionConfig};
use crate::policy::Policy;
use crate::policy::authres::MailAuth;
use crate::policy::dnsbl::Dnsbl;
use crate::policy::recipients::Recipients;
use crate::queue::{Store, new_queue_id};
use crate::scheduler::Flusher;
use crate::shutdown::Shutdown;
use crate::smtp::Reply;
use crate::tls::Stream;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Notify;
use tokio::time::{Instant, timeout, timeout_at};
use tracing::{debug, info, warn};

/// Bytes reserved per read.
const READ_CHUNK: usize = 16 * 1024;

/// Everything a connection needs, shared by all of them.
pub struct Inbound {
    pub session: Arc<SessionConfig>,
    pub policy: Arc<Policy>,
    pub store: Arc<dyn Store>,
    pub limits: Arc<ConnectionLimits>,
    pub max_line_length: usize,
    pub command_timeout: Duration,
    pub data_timeout: Duration,
    /// Content must arrive at this many bytes/s on average after data_timeout (0: no minimum).
    pub min_data_rate: u64,
    /// Under stress, waits for the client last at most this long.
    pub stress_timeout: Duration,
    /// Woken after each committed message, so the scheduler looks at it at once.
    pub new_mail: Arc<Notify>,
    /// Starts delivery for ETRN.
    pub flusher: Arc<dyn Flusher>,
    /// Present when STARTTLS is offered.
    pub tls: Option<tokio_rustls::TlsAcceptor>,
    /// Recipient lists, callouts, standby.
    pub recipients: Arc<Recipients>,
    pub dnsbl: Arc<Dnsbl>,
    /// Wait before the banner; talking first gets 554 (early talker).
    pub greeting_delay: Duration,
    /// Tarpit step after repeated errors.
    pub error_delay: Duration,
    /// SPF/DKIM/DMARC at reception (None: off).
    pub mail_auth: Option<Arc<MailAuth>>,
    /// Refuse DMARC p=reject failures.
    pub dmarc_reject: bool,
    /// Load balancers allowed to send PROXY headers on the PROXY listeners.
    pub proxy_trusted: Vec<crate::config::Cidr>,
}

/// Accepts connections until shutdown. Each connection runs in its own task, tracked by
/// `tasks` so the server can wait for in-flight transactions. Each connection takes the
/// settings current when it is accepted (a reload changes them for new connections only).
pub async fn run(
    listener: TcpListener,
    current: tokio::sync::watch::Receiver<Arc<Inbound>>,
    mut shutdown: Shutdown,
    tasks: crate::tasks::Tracker,
    proxied: bool,
) {
    loop {
        let accepted = tokio::select! {
            _ = shutdown.wait() => break,
            a = listener.accept() => a,
        };
        let (stream, peer) = match accepted {
            Ok(x) => x,
            Err(e) => {
                // EMFILE and friends: back off a little rather than spin.
                warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let inbound = current.borrow().clone();
        let shutdown = shutdown.clone();
        tasks.spawn(async move { connection(stream, peer, inbound, shutdown, proxied).await });
    }
}

/// `t + d`, or far in the future when that does not fit (a timeout of years).
fn after(t: Instant, d: Duration) -> Instant {
    t.checked_add(d)
        .unwrap_or_else(|| t + Duration::from_secs(100 * 365 * 86_400))
}

/// A wait for input that ended without any.
struct TimedOut;

/// Which limit a wait for input ran into.
enum Expired {
    /// The idle or command limit (shortened under stress).
    Idle,
    /// The fixed deadline the caller set (the minimum data rate).
    Deadline,
}

/// What reading the next command line produced.
enum Input {
    Line(Vec<u8>),
    TooLong,
    Closed,
    TimedOut,
    Shutdown,
}

struct Conn {
    stream: Stream,
    buf: Vec<u8>,
    out: Vec<u8>,
    /// Discarding the rest of an over-long line.
    skipping: bool,
    /// How long a reply may wait for the client to read it (cut under stress): one that
    /// never reads must not hold its connection slot forever.
    write_limit: Duration,
    /// Shortens the waits for the client while the server is under stress.
    pressure: Pressure,
}

impl Conn {
    fn queue(&mut self, reply: &Reply) {
        if reply.code >= 400 {
            crate::metrics::get().rejected(&reply.one_line());
        }
        reply.write_wire(&mut self.out);
    }

    async fn flush(&mut self) -> std::io::Result<()> {
        if !self.out.is_empty() {
            let limit = self.pressure.current(self.write_limit);
            timeout(limit, self.stream.write_all(&self.out))
                .await
                .map_err(|_| {
                    std::io::Error::new(
                        std::io::ErrorKind::TimedOut,
                        "the client does not read its replies",
                    )
                })??;
            self.out.clear();
        }
        Ok(())
    }

    /// Closes after the replies queued so far: flushes them, then ends the stream.
    async fn close(&mut self) {
        let _ = self.flush().await;
        let _ = timeout(self.write_limit, self.stream.shutdown()).await;
    }

    /// Reads more input; Ok(false) at end of stream. Waits for readiness before reserving
    /// buffer space, so an idle connection holds no read buffer. Cancel-safe.
    async fn fill(&mut self, limit: Duration) -> Result<bool, TimedOut> {
        let Some(tcp) = self.stream.plain() else {
            // TLS: read through the TLS layer.
            self.buf.reserve(READ_CHUNK);
            return match timeout(limit, self.stream.read_buf(&mut self.buf)).await {
                Err(_) => Err(TimedOut),
                Ok(Ok(0)) | Ok(Err(_)) => Ok(false),
                Ok(Ok(_)) => Ok(true),
            };
        };
        loop {
            // Nothing buffered: give the buffer back before waiting. Readiness can be spurious
            // (the read then says WouldBlock), and an idle connection must not sit on the
            // READ_CHUNK reserved for a read that did not happen, nor on the last one's.
            if self.buf.is_empty() && self.buf.capacity() > 0 {
                self.buf = Vec::new();
            }
            match timeout(limit, tcp.readable()).await {
                Err(_) => return Err(TimedOut),
                Ok(Err(_)) => return Ok(false),
                Ok(Ok(())) => {}
            }
            self.buf.reserve(READ_CHUNK);
            match tcp.try_read_buf(&mut self.buf) {
                Ok(0) => return Ok(false),
                Ok(_) => return Ok(true),
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
                Err(_) => return Ok(false),
            }
        }
    }

    /// Waits for more input: Ok(true) when some arrived, Ok(false) at end of stream. Gives up
    /// once `normal` has passed since `began`, or at `deadline`. Under stress, `normal` is
    /// cut to the stress timeout, also when stress starts during the wait; a wait that was
    /// cut stays cut (so stress ends by closing idle connections, not by sparing the last
    /// ones), the next wait takes the limit current then.
    async fn read_more(
        &mut self,
        normal: Duration,
        began: Instant,
        deadline: Option<Instant>,
    ) -> Result<bool, Expired> {
        let mut pressure = self.pressure.clone();
        let mut limit = normal;
        loop {
            limit = limit.min(pressure.limit(normal));
            let idle_end = after(began, limit);
            let (end, why) = match deadline {
                Some(d) if d < idle_end => (d, Expired::Deadline),
                _ => (idle_end, Expired::Idle),
            };
            let left = end.saturating_duration_since(Instant::now());
            tokio::select! {
                _ = pressure.changed() => continue,
                f = self.fill(left) => return f.map_err(|TimedOut| why),
            }
        }
    }

    /// Gives back buffer memory once a burst is over.
    fn shrink(&mut self) {
        if self.buf.is_empty() && self.buf.capacity() > 4 * READ_CHUNK {
            self.buf = Vec::new();
        }
        if self.out.is_empty() && self.out.capacity() > 4 * READ_CHUNK {
            self.out = Vec::new();
        }
    }

    /// True when a complete command line is already buffered.
    fn has_line(&self) -> bool {
        self.buf.contains(&b'\n')
    }

    /// The next command line. `limit` bounds the whole line, not each read: a client that
    /// trickles a byte at a time cannot stretch one command past it.
    async fn next_line(&mut self, max: usize, limit: Duration, shutdown: &mut Shutdown) -> Input {
        let began = Instant::now();
        loop {
            if let Some(pos) = self.buf.iter().position(|&b| b == b'\n') {
                let mut line: Vec<u8> = self.buf.drain(..=pos).collect();
                line.pop();
                if line.last() == Some(&b'\r') {
                    line.pop();
                }
                if std::mem::take(&mut self.skipping) {
                    return Input::TooLong;
                }
                if line.len() > max {
                    return Input::TooLong;
                }
                return Input::Line(line);
            }
            if self.buf.len() > max {
                self.buf.clear();
                self.skipping = true;
            }
            if self.flush().await.is_err() {
                return Input::Closed;
            }
            self.shrink();
            let filled = tokio::select! {
                biased;
                _ = shutdown.wait() => return Input::Shutdown,
                f = self.read_more(limit, began, None) => f,
            };
            match filled {
                Ok(true) => {}
                Ok(false) => return Input::Closed,
                Err(_) => return Input::TimedOut,
            }
        }
    }
}

async fn connection(
    stream: TcpStream,
    peer: SocketAddr,
    inbound: Arc<Inbound>,
    mut shutdown: Shutdown,
    proxied: bool,
) {
    let _ = stream.set_nodelay(true);
    let _open = crate::metrics::OpenConnection::new();
    let mut conn = Conn {
        stream: Stream::Plain(stream),
        buf: Vec::new(),
        out: Vec::new(),
        skipping: false,
        write_limit: inbound.command_timeout,
        pressure: Pressure::new(&inbound.limits, inbound.stress_timeout),
    };
    let mut peer = crate::net::canonical(peer);
    if proxied {
        if !inbound.proxy_trusted.iter().any(|c| c.contains(peer.ip())) {
            info!(client = %peer.ip(), "connection refused: PROXY listener, and not a trusted load balancer");
            conn.queue(&Reply::new(
                554,
                "5.7.0",
                "this port is for the load balancer only",
            ));
            conn.close().await;
            return;
        }
        match read_proxy_header(
            &mut conn,
            inbound.command_timeout.min(Duration::from_secs(10)),
        )
        .await
        {
            Ok(Some(real)) => peer = crate::net::canonical(real),
            Ok(None) => {}
            Err(why) => {
                info!(balancer = %peer, reason = %why, "connection refused: no valid PROXY header");
                conn.queue(&Reply::no_proxy_header(&why));
                conn.close().await;
                return;
            }
        }
    }
    let _slot = match inbound.limits.acquire(peer.ip()) {
        Ok(slot) => slot,
        Err(why) => {
            let text = match why {
                Refused::Total => "too many connections, try again later",
                Refused::PerIp => "too many connections from your address, try again later",
            };
            info!(client = %peer.ip(), reason = text, "connection refused");
            conn.queue(&Reply::new(421, "4.7.0", text));
            conn.close().await;
            return;
        }
    };
    let mut session = Session::new(inbound.session.clone(), inbound.policy.clone(), peer.ip());
    if !inbound.policy.is_allowed(peer.ip()) && !Box::pin(screen(&mut conn, &inbound, peer)).await {
        conn.close().await;
        return;
    }
    conn.queue(&session.greeting());
    loop {
        let line = match conn
            .next_line(
                inbound.max_line_length,
                inbound.command_timeout,
                &mut shutdown,
            )
            .await
        {
            Input::Line(l) => l,
            Input::TooLong => {
                let action = session.line_too_long();
                if !act_simple(&mut conn, action) {
                    break;
                }
                continue;
            }
            Input::Closed => break,
            Input::TimedOut => {
                conn.queue(&session.timed_out());
                break;
            }
            Input::Shutdown => {
                conn.queue(&session.shutting_down());
                break;
            }
        };
        let errors_before = session.errors();
        match session.command(&line) {
            Action::StartData(reply) => {
                conn.queue(&reply);
                if conn.flush().await.is_err() {
                    break;
                }
                let decoder = session.data_decoder();
                let Some(decoder) =
                    Box::pin(read_data(&mut conn, decoder, &inbound, &mut session, peer)).await
                else {
                    break;
                };
                let done = |s: &mut Session, id| s.data_done(decoder, SystemTime::now(), id);
                if !Box::pin(finish_content(
                    &mut conn,
                    &mut session,
                    done,
                    &inbound,
                    peer,
                ))
                .await
                {
                    break;
                }
            }
            Action::ReadChunk { size, last } => {
                if !Box::pin(read_chunk(&mut conn, &mut session, size, &inbound, peer)).await {
                    break;
                }
                let done = |s: &mut Session, id| s.chunk_done(last, size, SystemTime::now(), id);
                if !Box::pin(finish_content(
                    &mut conn,
                    &mut session,
                    done,
                    &inbound,
                    peer,
                ))
                .await
                {
                    break;
                }
            }
            Action::Flush { node, domains } => {
                let reply = Box::pin(etrn(&inbound, peer, &node, domains)).await;
                conn.queue(&reply);
            }
            Action::CheckRecipient(pending) => {
                // The replies already due go out before a check that may take a while (a
                // callout), so a pipelining client is not left waiting for them.
                if conn.flush().await.is_err() {
                    break;
                }
                let verdict = Box::pin(
                    inbound
                        .recipients
                        .check(&pending.mailbox, &pending.recipient.domain),
                )
                .await;
                let action = session.recipient_checked(*pending, verdict);
                if let Action::Reply(r) | Action::Close(r) = &action
                    && r.code >= 400
                {
                    info!(client = %peer.ip(), reply = %r, "recipient refused");
                }
                if !act_simple(&mut conn, action) {
                    break;
                }
            }
            Action::StartTls(reply) => {
                conn.queue(&reply);
                if !Box::pin(start_tls(&mut conn, &mut session, &inbound, peer)).await {
                    break;
                }
            }
            other => {
                if !act_simple(&mut conn, other) {
                    break;
                }
            }
        }
        // Tarpit: from the third error on, the session waits before reading on. The replies
        // so far go out first, so a pipelining client's wait for them does not add up.
        if session.errors() > errors_before && session.errors() >= 3 {
            if conn.flush().await.is_err() {
                break;
            }
            let delay = inbound
                .error_delay
                .saturating_mul((session.errors() - 2) as u32)
                .min(Duration::from_secs(10));
            tokio::time::sleep(delay).await;
        }
        if !conn.has_line() && conn.flush().await.is_err() {
            break;
        }
    }
    conn.close().await;
}

/// Reads the PROXY header a trusted load balancer sends first. Ok(None): a health check
/// (`UNKNOWN`/`LOCAL`), keep the balancer's address. Err says why there is none.
async fn read_proxy_header(conn: &mut Conn, limit: Duration) -> Result<Option<SocketAddr>, String> {
    let began = Instant::now();
    loop {
        match super::proxy::parse(&conn.buf) {
            Ok(Some(h)) => {
                conn.buf.drain(..h.len);
                return Ok(h.source);
            }
            Ok(None) => match conn.read_more(limit, began, None).await {
                Ok(true) => {}
                Ok(false) => return Err("closed before the header was complete".into()),
                Err(_) => return Err(format!("timed out after {limit:?} waiting for it")),
            },
            Err(e) => return Err(format!("malformed: {}", e.0)),
        }
    }
}

/// Checks before the banner: DNS blocklists, then the early-talker wait. False: refused (the
/// reply is queued).
async fn screen(conn: &mut Conn, inbound: &Inbound, peer: SocketAddr) -> bool {
    if !inbound.dnsbl.is_empty()
        && let Some(zone) = inbound.dnsbl.listed(peer.ip()).await
    {
        info!(client = %peer.ip(), zone, "connection refused: listed in a DNS blocklist");
        conn.queue(&Reply::new(
            554,
            "5.7.1",
            format!(
                "service unavailable; client [{}] blocked using {zone}",
                peer.ip()
            ),
        ));
        return false;
    }
    if inbound.greeting_delay.is_zero() {
        return true;
    }
    match quiet_for(conn, inbound.greeting_delay).await {
        Quiet::Yes => true,
        Quiet::Talked => {
            info!(client = %peer.ip(), "connection refused: client talked before the greeting");
            conn.queue(&Reply::new(
                554,
                "5.5.1",
                "protocol error: talking before the greeting",
            ));
            false
        }
        Quiet::Gone => false,
    }
}

/// How a client spent the greeting delay.
enum Quiet {
    Yes,
    Talked,
    Gone,
}

/// Waits the whole `delay` (cut under stress, as [`Conn::read_more`] does) unless the client
/// sends something or closes first. Peeks, so no byte is taken from the stream, and a
/// spurious readable wake-up does not end the wait.
async fn quiet_for(conn: &Conn, delay: Duration) -> Quiet {
    let Some(tcp) = conn.stream.plain() else {
        return Quiet::Yes;
    };
    let began = Instant::now();
    let mut pressure = conn.pressure.clone();
    let mut limit = delay;
    let mut probe = [0u8; 1];
    loop {
        limit = limit.min(pressure.limit(delay));
        let end = after(began, limit);
        tokio::select! {
            _ = pressure.changed() => continue,
            peeked = timeout_at(end, tcp.peek(&mut probe)) => return match peeked {
                Err(_) => Quiet::Yes,
                Ok(Ok(0)) | Ok(Err(_)) => Quiet::Gone,
                Ok(Ok(_)) => Quiet::Talked,
            },
        }
    }
}

/// Queues a reply action; false when the connection must close.
fn act_simple(conn: &mut Conn, action: Action) -> bool {
    match action {
        Action::Reply(r) => {
            conn.queue(&r);
            true
        }
        Action::Close(r) => {
            conn.queue(&r);
            false
        }
        // Only Session::command produces the content actions; handled by the caller.
        Action::StartData(r) => {
            conn.queue(&r);
            false
        }
        Action::ReadChunk { .. }
        | Action::Flush { .. }
        | Action::StartTls(_)
        | Action::CheckRecipient(_) => false,
    }
}

/// Switches the connection to TLS after the 220 reply. Input the client pipelined after
/// STARTTLS is thrown away (CVE-2011-0411): only what arrives inside TLS counts. False: close.
async fn start_tls(
    conn: &mut Conn,
    session: &mut Session,
    inbound: &Inbound,
    peer: SocketAddr,
) -> bool {
    if conn.flush().await.is_err() {
        return false;
    }
    if !conn.buf.is_empty() {
        warn!(client = %peer.ip(), bytes = conn.buf.len(), "discarded input pipelined after STARTTLS");
        conn.buf.clear();
    }
    let (Some(acceptor), Some(tcp)) = (inbound.tls.as_ref(), conn.stream.take_plain()) else {
        return false;
    };
    match timeout(inbound.command_timeout, acceptor.accept(tcp)).await {
        Ok(Ok(tls)) => {
            conn.stream = Stream::Server(Box::new(tls));
            let info = conn.stream.tls_info().unwrap_or_default();
            debug!(client = %peer.ip(), tls = %info, "TLS started");
            session.tls_started(info);
            true
        }
        Ok(Err(e)) => {
            info!(client = %peer.ip(), error = %e, "TLS handshake failed");
            false
        }
        Err(_) => {
            info!(client = %peer.ip(), "TLS handshake timed out");
            false
        }
    }
}

/// Runs an ETRN request the session accepted (RFC 1985 replies).
async fn etrn(inbound: &Inbound, peer: SocketAddr, node: &str, domains: Vec<String>) -> Reply {
    if let Err(reply) = inbound
        .policy
        .check_etrn(peer.ip(), std::time::Instant::now())
    {
        info!(client = %peer.ip(), node, reply = %reply, "ETRN refused");
        return reply;
    }
    match inbound.flusher.flush(domains).await {
        Ok(0) => Reply::new(
            251,
            "2.0.0",
            format!("OK, no messages waiting for node {node}"),
        ),
        Ok(n) => {
            info!(client = %peer.ip(), node, recipients = n, "ETRN: delivery started");
            Reply::new(
                253,
                "2.0.0",
                format!("OK, {n} pending messages for node {node} started"),
            )
        }
        Err(e) => {
            warn!(client = %peer.ip(), node, error = %e, "ETRN failed");
            Reply::new(
                458,
                "4.3.0",
                format!("unable to queue messages for node {node}"),
            )
        }
    }
}

/// The most content read past the size limit before the connection is dropped.
fn hard_cap(inbound: &Inbound) -> u64 {
    inbound
        .session
        .max_message_size
        .saturating_mul(2)
        .saturating_add(1 << 20)
}

/// Bounds the time message content (DATA, or one BDAT chunk) takes: each read waits at most
/// data_timeout (shortened under stress), and the whole at most data_timeout plus one second
/// per min_data_rate bytes received.
struct ContentClock {
    started: Instant,
    received: u64,
}

impl ContentClock {
    fn start() -> Self {
        Self {
            started: Instant::now(),
            received: 0,
        }
    }

    /// Waits for more content. False: the connection is finished (the reply is queued).
    async fn read_more(
        &self,
        conn: &mut Conn,
        inbound: &Inbound,
        session: &Session,
        peer: SocketAddr,
    ) -> bool {
        let deadline = data_budget(inbound.data_timeout, self.received, inbound.min_data_rate)
            .map(|b| after(self.started, b));
        match conn
            .read_more(inbound.data_timeout, Instant::now(), deadline)
            .await
        {
            Ok(more) => more,
            Err(Expired::Idle) => {
                conn.queue(&session.timed_out());
                false
            }
            Err(Expired::Deadline) => {
                info!(
                    client = %peer.ip(),
                    bytes = self.received,
                    seconds = self.started.elapsed().as_secs(),
                    min_data_rate = inbound.min_data_rate,
                    "message content arriving too slowly: transaction ended, connection closed"
                );
                conn.queue(&session.data_too_slow(inbound.min_data_rate));
                false
            }
        }
    }
}

/// Reads DATA content up to `<CRLF>.<CRLF>`. None: the connection is finished.
async fn read_data(
    conn: &mut Conn,
    mut decoder: Decoder,
    inbound: &Inbound,
    session: &mut Session,
    peer: SocketAddr,
) -> Option<Decoder> {
    let mut clock = ContentClock::start();
    loop {
        if let Some(n) = decoder.feed(&conn.buf) {
            conn.buf.drain(..n);
            return Some(decoder);
        }
        clock.received += conn.buf.len() as u64;
        conn.buf.clear();
        if decoder.total() > hard_cap(inbound) {
            conn.queue(&Reply::new(
                552,
                "5.3.4",
                "message far exceeds the size limit, closing connection",
            ));
            return None;
        }
        if !clock.read_more(conn, inbound, session, peer).await {
            return None;
        }
    }
}

/// Reads one BDAT chunk of `size` bytes into the session's decoder. False: close.
async fn read_chunk(
    conn: &mut Conn,
    session: &mut Session,
    size: u64,
    inbound: &Inbound,
    peer: SocketAddr,
) -> bool {
    if size > hard_cap(inbound) {
        conn.queue(&Reply::new(
            552,
            "5.3.4",
            "chunk far exceeds the size limit, closing connection",
        ));
        return false;
    }
    let mut left = size;
    let mut clock = ContentClock::start();
    loop {
        let take = (conn.buf.len() as u64).min(left) as usize;
        if take > 0 {
            if let Some(d) = session.chunk_decoder() {
                d.feed(&conn.buf[..take]);
            }
            conn.buf.drain(..take);
            left -= take as u64;
            clock.received += take as u64;
        }
        if left == 0 {
            return true;
        }
        if !clock.read_more(conn, inbound, session, peer).await {
            return false;
        }
    }
}

/// Commits a finished message (or sends the error), then queues the reply. False: close.
async fn finish_content(
    conn: &mut Conn,
    session: &mut Session,
    done: impl FnOnce(&mut Session, String) -> Content,
    inbound: &Inbound,
    peer: SocketAddr,
) -> bool {
    let id = new_queue_id();
    let content = done(session, id.clone());
    let message = match content {
        Content::Reply(r) => {
            if r.code >= 500 {
                info!(client = %peer.ip(), reply = %r, "message refused");
            }
            conn.queue(&r);
            return true;
        }
        Content::Commit(m) => m,
    };
    let mut message = message;
    if let Some(auth) = &inbound.mail_auth {
        let ev = auth
            .evaluate(peer.ip(), &message.helo, &message.sender, &message.body)
            .await;
        debug!(queue_id = %id, authenticated = ev.authenticated, results = %ev.header.trim_end(), "sender authentication");
        if inbound.dmarc_reject && ev.dmarc_reject {
            info!(queue_id = %id, client = %peer.ip(), from = %message.sender, "message refused: DMARC policy reject");
            conn.queue(&Reply::new(
                550,
                "5.7.1",
                "message refused: it fails the sender domain's DMARC policy (p=reject)",
            ));
            return true;
        }
        let mut body = ev.header.into_bytes();
        body.extend_from_slice(&message.body);
        message.body = body;
        message.authenticated = Some(ev.authenticated);
    }
    let sender = message.sender.clone();
    let rcpts: Vec<String> = message
        .recipients
        .iter()
        .map(|r| r.address.clone())
        .collect();
    let size = message.body.len();
    let result = inbound.store.insert(*message).await;
    match &result {
        Ok(()) => {
            let m = crate::metrics::get();
            m.accepted_messages.inc();
            m.accepted_bytes.inc_by(size as u64);
            info!(queue_id = %id, client = %peer.ip(), from = %sender, to = ?rcpts, size, "accepted");
            inbound.new_mail.notify_one();
        }
        Err(e) => {
            warn!(queue_id = %id, client = %peer.ip(), error = %e, "commit failed, message refused with 4xx")
        }
    }
    let reply = session.committed(&id, result);
    conn.queue(&reply);
    true
}
