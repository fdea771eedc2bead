//! Framing of one inbound connection: the socket (plain or TLS), the input buffer, command
//! lines read with a length limit and a deadline for the whole line, the PROXY header, the
//! early-talker wait, and the replies buffered until they are flushed.
//!
//! Every wait for the client is cut under stress ([`Pressure`]). Knows bytes and lines, not
//! SMTP: it never decides or phrases a reply (that is the [`Session`](super::session::Session)'s job).

use super::limits::Pressure;
use crate::shutdown::Shutdown;
use crate::smtp::Reply;
use crate::tls::Stream;
use std::net::SocketAddr;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::{Instant, timeout, timeout_at};

/// Bytes reserved per read.
const READ_CHUNK: usize = 16 * 1024;

/// `t + d`, or far in the future when that does not fit (a timeout of years).
pub fn after(t: Instant, d: Duration) -> Instant {
    t.checked_add(d)
        .unwrap_or_else(|| t + Duration::from_secs(100 * 365 * 86_400))
}

/// A wait for input that ended without any.
struct TimedOut;

/// Which limit a wait for input ran into.
pub enum Expired {
    /// The idle or command limit (shortened under stress).
    Idle,
    /// The fixed deadline the caller set (the minimum data rate).
    Deadline,
}

/// What reading the next command line produced.
pub enum Input {
    Line(Vec<u8>),
    TooLong,
    Closed,
    TimedOut,
    Shutdown,
}

/// How a client spent the greeting delay.
pub enum Quiet {
    Yes,
    Talked,
    Gone,
}

pub struct Conn {
    pub stream: Stream,
    /// Input received and not consumed yet.
    pub buf: Vec<u8>,
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
    pub fn new(stream: TcpStream, write_limit: Duration, pressure: Pressure) -> Self {
        Self {
            stream: Stream::Plain(stream),
            buf: Vec::new(),
            out: Vec::new(),
            skipping: false,
            write_limit,
            pressure,
        }
    }

    /// Adds a reply to those waiting to be sent (see [`Conn::flush`]); counts refusals.
    pub fn buffer_reply(&mut self, reply: &Reply) {
        if reply.code >= 400 {
            crate::metrics::get().rejected(&reply.one_line());
        }
        reply.write_wire(&mut self.out);
    }

    /// Sends the buffered replies.
    pub async fn flush(&mut self) -> std::io::Result<()> {
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

    /// Closes after the replies buffered so far: flushes them, then ends the stream.
    pub async fn close(&mut self) {
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
    pub async fn read_more(
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
    pub fn has_line(&self) -> bool {
        self.buf.contains(&b'\n')
    }

    /// The next command line. `limit` bounds the whole line, not each read: a client that
    /// trickles a byte at a time cannot stretch one command past it.
    pub async fn next_line(
        &mut self,
        max: usize,
        limit: Duration,
        shutdown: &mut Shutdown,
    ) -> Input {
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

    /// Reads the PROXY header a trusted load balancer sends first. Ok(None): a health check
    /// (`UNKNOWN`/`LOCAL`), keep the balancer's address. Err says why there is none.
    pub async fn proxy_header(&mut self, limit: Duration) -> Result<Option<SocketAddr>, String> {
        let began = Instant::now();
        loop {
            match super::proxy::parse(&self.buf) {
                Ok(Some(h)) => {
                    self.buf.drain(..h.len);
                    return Ok(h.source);
                }
                Ok(None) => match self.read_more(limit, began, None).await {
                    Ok(true) => {}
                    Ok(false) => return Err("closed before the header was complete".into()),
                    Err(_) => return Err(format!("timed out after {limit:?} waiting for it")),
                },
                Err(e) => return Err(format!("malformed: {}", e.0)),
            }
        }
    }

    /// Waits the whole `delay` (cut under stress, as [`Conn::read_more`] does) unless the
    /// client sends something or closes first. Peeks, so no byte is taken from the stream,
    /// and a spurious readable wake-up does not end the wait.
    pub async fn quiet_for(&self, delay: Duration) -> Quiet {
        let Some(tcp) = self.stream.plain() else {
            return Quiet::Yes;
        };
        let began = Instant::now();
        let mut pressure = self.pressure.clone();
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
}
