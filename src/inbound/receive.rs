//! The content path shared by DATA and BDAT: read the content (within the data timeout and
//! the minimum data rate), let the [`Session`] check it, run sender authentication, commit to
//! the store, and buffer the reply the session gives for the outcome. 250 only after commit.
//!
//! Performs I/O and reports what happened; never phrases a reply itself.

use super::conn::{Conn, Expired, after};
use super::data::Decoder;
use super::limits::data_budget;
use super::listener::Inbound;
use super::session::{Content, Session};
use crate::queue::new_queue_id;
use std::net::SocketAddr;
use std::time::SystemTime;
use tokio::time::Instant;
use tracing::{debug, info, warn};

/// The content a command announced.
pub enum Body {
    /// DATA: everything up to `<CRLF>.<CRLF>`, decoded here.
    Data(Decoder),
    /// One BDAT chunk of exactly `size` bytes, fed to [`Session::chunk_decoder`].
    Chunk { size: u64, last: bool },
}

/// Reads the content, then commits what the session makes of it and buffers the reply.
/// False: the connection is finished (any reply is buffered).
pub async fn receive(
    conn: &mut Conn,
    session: &mut Session,
    body: Body,
    inbound: &Inbound,
    peer: SocketAddr,
) -> bool {
    let Some(body) = read(conn, session, body, inbound, peer).await else {
        return false;
    };
    let id = new_queue_id();
    let now = SystemTime::now();
    let content = match body {
        Body::Data(decoder) => session.data_done(decoder, now, id.clone()),
        Body::Chunk { size, last } => session.chunk_done(last, size, now, id.clone()),
    };
    let mut message = match content {
        Content::Reply(r) => {
            if r.code >= 500 {
                info!(client = %peer.ip(), reply = %r, "message refused");
            }
            conn.buffer_reply(&r);
            return true;
        }
        Content::Commit(m) => m,
    };
    if let Some(auth) = &inbound.mail_auth {
        let ev = auth
            .evaluate(peer.ip(), &message.helo, &message.sender, &message.body)
            .await;
        debug!(queue_id = %id, authenticated = ev.authenticated, results = %ev.header.trim_end(), "sender authentication");
        if let Some(refusal) = session.sender_authenticated(&mut message, ev) {
            info!(queue_id = %id, client = %peer.ip(), from = %message.sender, "message refused: DMARC policy reject");
            conn.buffer_reply(&refusal);
            return true;
        }
    }
    let sender = message.sender.clone();
    let rcpts: Vec<String> = message
        .recipients
        .iter()
        .map(|r| r.address.clone())
        .collect();
    let size = message.body.len();
    let domains: Vec<String> = message
        .recipients
        .iter()
        .map(|r| r.domain.clone())
        .collect();
    let result = inbound.store.insert(*message).await;
    match &result {
        Ok(()) => {
            inbound
                .policy
                .admission()
                .accepted(domains.iter().map(String::as_str), size as u64);
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
    conn.buffer_reply(&session.committed(&id, result));
    true
}

/// Reads the content from the connection. None: the connection is finished.
async fn read(
    conn: &mut Conn,
    session: &mut Session,
    mut body: Body,
    inbound: &Inbound,
    peer: SocketAddr,
) -> Option<Body> {
    let mut left = match body {
        Body::Data(_) => 0,
        Body::Chunk { size, .. } => size,
    };
    let mut clock = ContentClock::start();
    loop {
        let (used, complete) = match &mut body {
            Body::Data(decoder) => match decoder.feed(&conn.buf) {
                Some(n) => (n, true),
                None => (conn.buf.len(), false),
            },
            Body::Chunk { .. } => {
                let take = (conn.buf.len() as u64).min(left) as usize;
                if let Some(d) = session.chunk_decoder() {
                    d.feed(&conn.buf[..take]);
                }
                left -= take as u64;
                (take, left == 0)
            }
        };
        conn.buf.drain(..used);
        if complete {
            return Some(body);
        }
        clock.received += used as u64;
        if let Body::Data(decoder) = &body
            && let Some(reply) = session.data_received(decoder.total())
        {
            conn.buffer_reply(&reply);
            return None;
        }
        if !clock.read_more(conn, inbound, session, peer).await {
            return None;
        }
    }
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

    /// Waits for more content. False: the connection is finished (the reply is buffered).
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
                conn.buffer_reply(&session.timed_out());
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
                conn.buffer_reply(&session.data_too_slow(inbound.min_data_rate));
                false
            }
        }
    }
}
