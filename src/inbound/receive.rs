//! The content path shared by DATA and BDAT: read the content (within the data timeout and
//! the minimum data rate), let the [`Session`] check it, run sender authentication, commit to
//! the store, and buffer the reply the session gives for the outcome. 250 only after commit.
//! Content that outgrows memory goes to a spool file as it arrives (`spooling`), synced
//! before the commit that refers to it.
//!
//! Performs I/O and reports what happened; never phrases a reply itself.

use super::conn::{Conn, Expired, after};
use super::data::Decoder;
use super::limits::data_budget;
use super::listener::Inbound;
use super::session::{Content, Session};
use super::spooling::Spooling;
use crate::policy::authres;
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
/// `spooling` is the connection's: a BDAT transaction's content spans several calls.
/// False: the connection is finished (any reply is buffered).
pub async fn receive(
    conn: &mut Conn,
    session: &mut Session,
    body: Body,
    inbound: &Inbound,
    peer: SocketAddr,
    spooling: &mut Spooling,
) -> bool {
    match &body {
        Body::Data(_) => *spooling = Spooling::default(),
        Body::Chunk { .. } => spooling.forget_unless_continued(session.chunk_decoder().as_deref()),
    }
    let Some(body) = read(conn, session, body, inbound, peer, spooling).await else {
        return false;
    };
    let id = spooling.queue_id().unwrap_or_else(new_queue_id);
    let now = SystemTime::now();
    let ends = !matches!(body, Body::Chunk { last: false, .. });
    let content = match body {
        Body::Data(decoder) => session.data_done(decoder, now, id.clone()),
        Body::Chunk { size, last } => session.chunk_done(last, size, now, id.clone()),
    };
    let mut message = match content {
        Content::Reply(r) => {
            if r.code >= 500 {
                info!(client = %peer.ip(), reply = %r, "message refused");
            }
            if ends {
                *spooling = Spooling::default();
            }
            conn.buffer_reply(&r);
            return true;
        }
        Content::Commit(m) => m,
    };
    let spooled = match spooling.finish().await {
        Ok(s) => s,
        Err(e) => {
            warn!(queue_id = %id, client = %peer.ip(), error = %e, "content could not be spooled, message refused with 4xx");
            conn.buffer_reply(&session.committed(&id, Err(e)));
            return true;
        }
    };
    let size = message.body.len() as u64 + spooled.as_ref().map_or(0, |s| s.len);
    if let Some(auth) = &inbound.mail_auth {
        let read_back = match &spooled {
            Some(file) if size <= authres::CHECK_MAX => whole(&message.body, file).await,
            _ => None,
        };
        let content = match (&spooled, &read_back) {
            (None, _) => authres::Content::Whole(&message.body),
            (Some(_), Some(whole)) => authres::Content::Whole(whole),
            (Some(_), None) => authres::Content::Unread { size },
        };
        let ev = auth
            .evaluate(peer.ip(), &message.helo, &message.sender, content)
            .await;
        debug!(queue_id = %id, authenticated = ev.authenticated, results = %ev.header.trim_end(), "sender authentication");
        if let Some(refusal) = session.sender_authenticated(&mut message, ev) {
            info!(queue_id = %id, client = %peer.ip(), from = %message.sender, "message refused: DMARC policy reject");
            conn.buffer_reply(&refusal);
            return true;
        }
    }
    // A fire drill's own message (its header carries the token the drill registered) is
    // held from the start, so delivery cannot take it before the drill releases it.
    if spooled.is_none() {
        message.held = crate::drill::watch::get().accept(&message.body, &message.recipients, &id);
    }
    let sender = message.sender.clone();
    let rcpts: Vec<String> = message
        .recipients
        .iter()
        .map(|r| r.address.clone())
        .collect();
    let domains: Vec<String> = message
        .recipients
        .iter()
        .map(|r| r.domain.clone())
        .collect();
    let held = message.held;
    let result = match spooled {
        None => inbound.store.insert(*message).await,
        Some(content) => inbound.store.insert_spooled(*message, content).await,
    };
    match &result {
        Ok(()) => {
            inbound
                .policy
                .admission()
                .accepted(domains.iter().map(String::as_str), size);
            let m = crate::metrics::get();
            m.accepted_messages.inc();
            m.accepted_bytes.inc_by(size);
            info!(queue_id = %id, client = %peer.ip(), from = %sender, to = ?rcpts, size, drill = held, "accepted");
            inbound.new_mail.notify_one();
        }
        Err(e) => {
            warn!(queue_id = %id, client = %peer.ip(), error = %e, "commit failed, message refused with 4xx")
        }
    }
    conn.buffer_reply(&session.committed(&id, result));
    true
}

/// A spooled message small enough for sender authentication, whole: its trace headers and
/// its spool file (synced already), held only while it is checked. None when the file
/// cannot be read; the message is then judged as too large to read.
async fn whole(head: &[u8], file: &crate::queue::spool::Spooled) -> Option<Vec<u8>> {
    match tokio::fs::read(&file.path).await {
        Ok(content) => {
            let mut whole = Vec::with_capacity(head.len() + content.len());
            whole.extend_from_slice(head);
            whole.extend_from_slice(&content);
            Some(whole)
        }
        Err(e) => {
            warn!(queue_id = %file.id, error = %e, "cannot read the spooled message back for DKIM and DMARC; judged by SPF alone");
            None
        }
    }
}

/// Reads the content from the connection. None: the connection is finished.
async fn read(
    conn: &mut Conn,
    session: &mut Session,
    mut body: Body,
    inbound: &Inbound,
    peer: SocketAddr,
    spooling: &mut Spooling,
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
            Body::Chunk { last, .. } => {
                let take = (conn.buf.len() as u64).min(left) as usize;
                left -= take as u64;
                if let Some(d) = session.chunk_decoder() {
                    d.feed(&conn.buf[..take]);
                    if left == 0 && *last {
                        d.close();
                    }
                }
                (take, left == 0)
            }
        };
        conn.buf.drain(..used);
        let decoder = match &mut body {
            Body::Data(d) => Some(d),
            Body::Chunk { .. } => session.chunk_decoder(),
        };
        if let Some(d) = decoder {
            spooling.drain(&inbound.spool, d).await;
        }
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
