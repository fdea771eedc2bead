//! The inbound listener: accepts connections, applies connection limits and per-phase
//! timeouts (shortened under stress, see [`Pressure`](super::limits::Pressure)), and runs each
//! connection: it performs the I/O the [`Session`] asks for (DNS blocklists, recipient checks,
//! TLS, ETRN, content via `receive`), reports the facts back, and sends the
//! replies the session returns. Framing lives in `conn`.
//!
//! Never decides or phrases an SMTP reply: every reply comes from the [`Session`].

use super::Flusher;
use super::conn::{Conn, Input, Quiet};
use super::limits::{ConnectionLimits, Pressure};
use super::receive::{Body, receive};
use super::session::{Next, Session, SessionConfig};
use super::spooling::Spooling;
use crate::policy::Policy;
use crate::policy::authres::MailAuth;
use crate::policy::dnsbl::Dnsbl;
use crate::policy::recipients::Recipients;
use crate::queue::Store;
use crate::shutdown::Shutdown;
use crate::tls::Stream;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Notify;
use tokio::time::timeout;
use tracing::{debug, info, warn};

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
    /// Where content too large for memory goes while it is received (`state_dir/spool`).
    pub spool: crate::queue::spool::Spool,
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
    while let Some((stream, peer)) = crate::net::accept(&listener, &mut shutdown, "smtp").await {
        let inbound = current.borrow().clone();
        let shutdown = shutdown.clone();
        tasks.spawn(async move { connection(stream, peer, inbound, shutdown, proxied).await });
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
    let mut conn = Conn::new(
        stream,
        inbound.command_timeout,
        Pressure::new(&inbound.limits, inbound.stress_timeout),
    );
    let mut peer = crate::net::canonical(peer);
    let mut session = Session::new(inbound.session.clone(), inbound.policy.clone(), peer.ip())
        .with_dmarc_reject(inbound.dmarc_reject);
    if proxied {
        if !inbound.proxy_trusted.iter().any(|c| c.contains(peer.ip())) {
            info!(client = %peer.ip(), "connection refused: PROXY listener, and not a trusted load balancer");
            conn.buffer_reply(&session.proxy_untrusted());
            conn.close().await;
            return;
        }
        match conn
            .proxy_header(inbound.command_timeout.min(Duration::from_secs(10)))
            .await
        {
            Ok(Some(real)) => {
                peer = crate::net::canonical(real);
                session.proxied_for(peer.ip());
            }
            Ok(None) => {}
            Err(why) => {
                info!(balancer = %peer, reason = %why, "connection refused: no valid PROXY header");
                conn.buffer_reply(&session.proxy_header_missing(&why));
                conn.close().await;
                return;
            }
        }
    }
    let _slot = match inbound.limits.acquire(peer.ip()) {
        Ok(slot) => slot,
        Err(why) => {
            let reply = session.too_many_connections(why);
            info!(client = %peer.ip(), reason = reply.lines.join(" ").as_str(), "connection refused");
            conn.buffer_reply(&reply);
            conn.close().await;
            return;
        }
    };
    if !inbound.policy.is_allowed(peer.ip())
        && !Box::pin(screen(&mut conn, &session, &inbound, peer)).await
    {
        conn.close().await;
        return;
    }
    conn.buffer_reply(&session.greeting());
    // A transaction's content once it outgrows memory (BDAT: across chunks).
    let mut spooling = Spooling::default();
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
                conn.buffer_reply(&session.timed_out());
                break;
            }
            Input::Shutdown => {
                conn.buffer_reply(&session.shutting_down());
                break;
            }
        };
        let errors_before = session.errors();
        match session.command(&line, std::time::Instant::now()) {
            Next::StartData(reply) => {
                conn.buffer_reply(&reply);
                if conn.flush().await.is_err() {
                    break;
                }
                let body = Body::Data(session.data_decoder());
                let received =
                    receive(&mut conn, &mut session, body, &inbound, peer, &mut spooling);
                if !Box::pin(received).await {
                    break;
                }
            }
            Next::ReadChunk { size, last } => {
                let body = Body::Chunk { size, last };
                let received =
                    receive(&mut conn, &mut session, body, &inbound, peer, &mut spooling);
                if !Box::pin(received).await {
                    break;
                }
            }
            Next::Flush { node, domains } => {
                let result = inbound.flusher.flush(domains).await;
                match &result {
                    Ok(0) => {}
                    Ok(n) => {
                        info!(client = %peer.ip(), node, recipients = n, "ETRN: delivery started")
                    }
                    Err(e) => warn!(client = %peer.ip(), node, error = %e, "ETRN failed"),
                }
                conn.buffer_reply(&session.etrn_result(&node, result));
            }
            Next::CheckRecipient(pending) => {
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
                if let Next::Reply(r) | Next::Close(r) = &action
                    && r.code >= 400
                {
                    info!(client = %peer.ip(), reply = %r, "recipient refused");
                }
                if !act_simple(&mut conn, action) {
                    break;
                }
            }
            Next::StartTls(reply) => {
                conn.buffer_reply(&reply);
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

/// Checks before the banner: DNS blocklists, then the early-talker wait. False: refused (the
/// session's reply is buffered).
async fn screen(conn: &mut Conn, session: &Session, inbound: &Inbound, peer: SocketAddr) -> bool {
    if !inbound.dnsbl.is_empty()
        && let Some(zone) = inbound.dnsbl.listed(peer.ip()).await
    {
        info!(client = %peer.ip(), zone, "connection refused: listed in a DNS blocklist");
        conn.buffer_reply(&session.dnsbl_listed(&zone));
        return false;
    }
    if inbound.greeting_delay.is_zero() {
        return true;
    }
    match conn.quiet_for(inbound.greeting_delay).await {
        Quiet::Yes => true,
        Quiet::Talked => {
            info!(client = %peer.ip(), "connection refused: client talked before the greeting");
            conn.buffer_reply(&session.talked_early());
            false
        }
        Quiet::Gone => false,
    }
}

/// Buffers a reply action; false when the connection must close.
fn act_simple(conn: &mut Conn, action: Next) -> bool {
    match action {
        Next::Reply(r) => {
            conn.buffer_reply(&r);
            true
        }
        Next::Close(r) => {
            conn.buffer_reply(&r);
            false
        }
        // Only Session::command produces the content actions; handled by the caller.
        Next::StartData(r) => {
            conn.buffer_reply(&r);
            false
        }
        Next::ReadChunk { .. }
        | Next::Flush { .. }
        | Next::StartTls(_)
        | Next::CheckRecipient(_) => false,
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
