//! The outbound SMTP client: connects to a primary, reads its capabilities, and runs mail
//! transactions (with PIPELINING when offered), each step under an RFC 5321 §4.5.3.2 timeout.

use super::auth::Credentials;
use super::mx::Target;
use super::policy::Policy;
use super::sendfile;
use crate::queue::body::{BodyReader, CHUNK, FileRange};
use crate::smtp::Reply;
use crate::smtp::reply::ReplyParser;
use crate::tls::{ClientTls, Stream};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::timeout;

/// Client timeouts (RFC 5321 §4.5.3.2 gives the defaults).
#[derive(Debug, Clone)]
pub struct Timeouts {
    pub connect: Duration,
    pub greeting: Duration,
    pub command: Duration,
    /// For sending the content and awaiting the reply to the final dot.
    pub data: Duration,
}

/// What the primary said it supports in its EHLO reply.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Capabilities {
    pub esmtp: bool,
    pub pipelining: bool,
    pub size: Option<u64>,
    pub eightbit: bool,
    pub smtputf8: bool,
    pub dsn: bool,
    pub chunking: bool,
    pub starttls: bool,
    pub auth_plain: bool,
    pub auth_login: bool,
}

impl Capabilities {
    pub fn from_ehlo(reply: &Reply) -> Self {
        let mut c = Capabilities {
            esmtp: true,
            ..Default::default()
        };
        for line in reply.lines.iter().skip(1) {
            let mut words = line.split_ascii_whitespace();
            let Some(kw) = words.next() else { continue };
            match kw.to_ascii_uppercase().as_str() {
                "PIPELINING" => c.pipelining = true,
                "SIZE" => c.size = words.next().and_then(|w| w.parse().ok()).filter(|&n| n > 0),
                "8BITMIME" => c.eightbit = true,
                "SMTPUTF8" => c.smtputf8 = true,
                "DSN" => c.dsn = true,
                "CHUNKING" => c.chunking = true,
                "STARTTLS" => c.starttls = true,
                "AUTH" => {
                    for m in words.by_ref() {
                        match m.to_ascii_uppercase().as_str() {
                            "PLAIN" => c.auth_plain = true,
                            "LOGIN" => c.auth_login = true,
                            _ => {}
                        }
                    }
                }
                _ => {}
            }
        }
        c
    }
}

/// A connection-level failure: the session cannot go on.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("{host}: connection failed: {reason}")]
    Connect { host: String, reason: String },
    #[error("{host}: timed out waiting for {what}")]
    Timeout { host: String, what: &'static str },
    #[error("{host}: connection lost during {what}")]
    Lost { host: String, what: &'static str },
    #[error("{host}: {what} refused: {reply}")]
    Refused {
        host: String,
        what: &'static str,
        reply: Reply,
    },
    #[error("{host}: TLS failed: {reason}")]
    Tls { host: String, reason: String },
    #[error("{host}: TLS is required for this domain and {reason}")]
    TlsRequired { host: String, reason: String },
    /// The host's TLS policy (DANE) was not met; `reason` names the policy and the host.
    #[error("{reason}")]
    Policy { host: String, reason: String },
    #[error("{host}: protocol error: {detail}")]
    Protocol { host: String, detail: String },
    /// The message's stored content could not be read (the primary is not at fault; the
    /// transaction is abandoned before its end, so nothing is delivered cut short).
    #[error("{host}: transaction abandoned, the message content cannot be read: {reason}")]
    Content { host: String, reason: String },
}

impl ClientError {
    fn protocol(host: &str, detail: String) -> Self {
        ClientError::Protocol {
            host: host.to_string(),
            detail,
        }
    }
}

/// A failure under DANE, phrased so the held mail's reason names the policy.
fn dane_failure(host_name: &str, e: ClientError) -> ClientError {
    match e {
        ClientError::Tls { host, reason } if reason.starts_with("DANE:") => {
            ClientError::Policy { host, reason }
        }
        ClientError::Tls { host, reason } => ClientError::Policy {
            reason: format!("DANE: TLS with {host} failed: {reason}"),
            host,
        },
        ClientError::TlsRequired { host, reason } => ClientError::Policy {
            reason: format!("DANE: {host_name} must use TLS but {reason}"),
            host,
        },
        other => other,
    }
}

/// One SMTP connection to a primary.
pub struct Client {
    stream: Stream,
    buf: Vec<u8>,
    /// The primary in logs: `name (ip:port)`.
    pub host: String,
    /// The host name it was reached by (what its certificate should name).
    pub server_name: String,
    pub caps: Capabilities,
    /// The TLS version and cipher, when the session is encrypted.
    pub tls: Option<String>,
    /// The server said 421: it is closing the channel (RFC 5321 §3.8), so nothing more may be
    /// sent on this connection.
    pub closing: bool,
    t: Timeouts,
}

const MAX_REPLY_LINE: usize = 4096;

impl Client {
    /// Connects to the first target that answers with a 220 greeting and accepts EHLO (or
    /// HELO), starting TLS as the target's policy says: DANE's, or `tls` (the domain's
    /// configured mode). With opportunistic TLS a failed handshake is retried once in
    /// plaintext on the same target; under DANE never. The error is the last target's.
    pub async fn connect(
        targets: &[Target],
        helo: &str,
        t: &Timeouts,
        tls: &ClientTls,
        auth: Option<&Credentials>,
    ) -> Result<Client, ClientError> {
        let mut last = ClientError::Connect {
            host: "(none)".into(),
            reason: "no address to connect to".into(),
        };
        for target in targets {
            let attempt = match Self::connect_one(target, helo, t, Some(tls)).await {
                // Plaintext is worth a try only when nothing secret is to be sent.
                Err(ClientError::Tls { host, reason })
                    if tls.mode.opportunistic() && auth.is_none() =>
                {
                    tracing::info!(primary = %host, reason, "TLS handshake failed; retrying without TLS (opportunistic)");
                    Self::connect_one(target, helo, t, None).await
                }
                other => other,
            };
            match attempt {
                Ok(mut c) => match auth {
                    Some(creds) => match super::auth::authenticate(&mut c, creds).await {
                        Ok(()) => return Ok(c),
                        Err(e) => last = e,
                    },
                    None => return Ok(c),
                },
                Err(e) => last = e,
            }
        }
        Err(last)
    }

    async fn connect_one(
        target: &Target,
        helo: &str,
        t: &Timeouts,
        tls: Option<&ClientTls>,
    ) -> Result<Client, ClientError> {
        let name = target.to_string();
        let stream = match timeout(t.connect, TcpStream::connect(target.addr)).await {
            Err(_) => {
                return Err(ClientError::Timeout {
                    host: name,
                    what: "the TCP connection",
                });
            }
            Ok(Err(e)) => {
                return Err(ClientError::Connect {
                    host: name,
                    reason: e.to_string(),
                });
            }
            Ok(Ok(s)) => s,
        };
        let _ = stream.set_nodelay(true);
        let mut c = Client {
            stream: Stream::Plain(stream),
            buf: Vec::new(),
            host: name.clone(),
            server_name: target.name.clone(),
            caps: Capabilities::default(),
            tls: None,
            closing: false,
            t: t.clone(),
        };
        let greeting = c.read_reply(t.greeting, "the greeting").await?;
        if greeting.code != 220 {
            return Err(ClientError::Refused {
                host: name,
                what: "the session",
                reply: greeting,
            });
        }
        c.hello(helo).await?;
        let Some(tls) = tls else { return Ok(c) };
        match &target.policy.policy {
            Policy::Configured => c.start_tls(target, tls, tls.mode.opportunistic()).await?,
            Policy::Dane { records, names } => {
                let dane = ClientTls::dane(records, names, &name).map_err(|reason| {
                    dane_failure(
                        &target.name,
                        ClientError::Tls {
                            host: name.clone(),
                            reason,
                        },
                    )
                })?;
                // DANE: STARTTLS is mandatory and the certificate must match; whatever fails,
                // the reason names the policy (RFC 7672 §2.2).
                c.start_tls(target, &dane, false)
                    .await
                    .map_err(|e| dane_failure(&target.name, e))?;
            }
        }
        if c.tls.is_some() {
            c.hello(helo).await?;
        }
        Ok(c)
    }

    /// STARTTLS with `tls`. Without the extension or with a refusal, an `opportunistic`
    /// session goes on in plaintext (`self.tls` stays None); otherwise that is an error.
    async fn start_tls(
        &mut self,
        target: &Target,
        tls: &ClientTls,
        opportunistic: bool,
    ) -> Result<(), ClientError> {
        let name = self.host.clone();
        if !self.caps.starttls {
            if opportunistic {
                return Ok(());
            }
            return Err(ClientError::TlsRequired {
                host: name,
                reason: "the primary does not offer STARTTLS".into(),
            });
        }
        self.send(b"STARTTLS\r\n", "STARTTLS").await?;
        let reply = self
            .read_reply(self.t.command, "the STARTTLS reply")
            .await?;
        if reply.code != 220 {
            if opportunistic {
                return Ok(());
            }
            return Err(ClientError::TlsRequired {
                host: name,
                reason: format!("STARTTLS refused: {reply}"),
            });
        }
        // Anything the server sent before the handshake is not to be trusted (CVE-2021-38371).
        self.buf.clear();
        let Some(tcp) = self.stream.take_plain() else {
            return Err(ClientError::Tls {
                host: name,
                reason: "no plain stream to start TLS on".into(),
            });
        };
        match timeout(self.t.command, tls.connect(&target.name, tcp)).await {
            Err(_) => {
                return Err(ClientError::Tls {
                    host: name,
                    reason: "handshake timed out".into(),
                });
            }
            Ok(Err(e)) => {
                return Err(ClientError::Tls {
                    host: name,
                    reason: crate::tls::handshake_failure(&e),
                });
            }
            Ok(Ok(s)) => self.stream = Stream::Client(Box::new(s)),
        }
        self.tls = self.stream.tls_info();
        Ok(())
    }

    /// EHLO, or HELO when EHLO is refused; sets the capabilities.
    async fn hello(&mut self, helo: &str) -> Result<(), ClientError> {
        let t = self.t.command;
        self.send(format!("EHLO {helo}\r\n").as_bytes(), "EHLO")
            .await?;
        let ehlo = self.read_reply(t, "the EHLO reply").await?;
        if ehlo.code == 250 {
            self.caps = Capabilities::from_ehlo(&ehlo);
            return Ok(());
        }
        if ehlo.is_transient() {
            return Err(ClientError::Refused {
                host: self.host.clone(),
                what: "EHLO",
                reply: ehlo,
            });
        }
        self.send(format!("HELO {helo}\r\n").as_bytes(), "HELO")
            .await?;
        let helo_reply = self.read_reply(t, "the HELO reply").await?;
        if helo_reply.code != 250 {
            return Err(ClientError::Refused {
                host: self.host.clone(),
                what: "HELO",
                reply: helo_reply,
            });
        }
        self.caps = Capabilities::default();
        Ok(())
    }

    pub async fn send(&mut self, bytes: &[u8], what: &'static str) -> Result<(), ClientError> {
        match timeout(self.t.command, self.stream.write_all(bytes)).await {
            Err(_) => Err(ClientError::Timeout {
                host: self.host.clone(),
                what,
            }),
            Ok(Err(_)) => Err(ClientError::Lost {
                host: self.host.clone(),
                what,
            }),
            Ok(Ok(())) => Ok(()),
        }
    }

    /// Reads one (possibly multi-line) reply.
    pub async fn read_reply(
        &mut self,
        limit: Duration,
        what: &'static str,
    ) -> Result<Reply, ClientError> {
        let deadline = tokio::time::Instant::now() + limit;
        let mut parser = ReplyParser::default();
        loop {
            while let Some(pos) = self.buf.iter().position(|&b| b == b'\n') {
                let mut line: Vec<u8> = self.buf.drain(..=pos).collect();
                line.pop();
                if line.last() == Some(&b'\r') {
                    line.pop();
                }
                match parser.line(&line) {
                    Ok(Some(reply)) => {
                        self.closing |= reply.code == 421;
                        return Ok(reply);
                    }
                    Ok(None) => {}
                    Err(e) => {
                        return Err(ClientError::protocol(&self.host.clone(), e.to_string()));
                    }
                }
            }
            if self.buf.len() > MAX_REPLY_LINE {
                return Err(ClientError::protocol(
                    &self.host.clone(),
                    "reply line too long".into(),
                ));
            }
            let mut chunk = [0u8; 4096];
            match tokio::time::timeout_at(deadline, self.stream.read(&mut chunk)).await {
                Err(_) => {
                    return Err(ClientError::Timeout {
                        host: self.host.clone(),
                        what,
                    });
                }
                Ok(Err(_)) | Ok(Ok(0)) => {
                    return Err(ClientError::Lost {
                        host: self.host.clone(),
                        what,
                    });
                }
                Ok(Ok(n)) => self.buf.extend_from_slice(&chunk[..n]),
            }
        }
    }

    /// The server's certificate chain (DER, end entity first) once TLS is up.
    pub fn peer_certificates(&self) -> Vec<Vec<u8>> {
        match &self.stream {
            Stream::Client(s) => s
                .get_ref()
                .1
                .peer_certificates()
                .map(|c| c.iter().map(|d| d.as_ref().to_vec()).collect())
                .unwrap_or_default(),
            _ => Vec::new(),
        }
    }

    pub fn timeouts(&self) -> &Timeouts {
        &self.t
    }

    /// Streams the content from the store, dot-stuffed, ending with `<CRLF>.<CRLF>`; each
    /// chunk's write within the data timeout. A content read error abandons the transaction
    /// before the end of data (the connection must then be dropped).
    pub async fn send_content(&mut self, body: &mut BodyReader) -> Result<(), ClientError> {
        if matches!(self.stream, Stream::Plain(_))
            && let Some((head, range)) = body.take_dot_free_file()
        {
            return self.send_head_and_file(head, range).await;
        }
        let mut stuffer = DotStuffer::default();
        // A small message's buffers are its size (plus room to stuff), not a whole chunk.
        let cap = usize::try_from(body.size).map_or(CHUNK, |n| n.min(CHUNK)) + 1;
        let (mut chunk, mut wire) = (
            Vec::with_capacity(cap),
            Vec::with_capacity(cap + cap / 32 + 8),
        );
        loop {
            let more = body
                .next_chunk(&mut chunk)
                .await
                .map_err(|e| ClientError::Content {
                    host: self.host.clone(),
                    reason: e.to_string(),
                })?;
            let out = if more {
                stuffer.stuffed(&chunk, &mut wire)
            } else {
                wire.clear();
                stuffer.end(&mut wire);
                &wire[..]
            };
            self.write_content(out).await?;
            if !more {
                return Ok(());
            }
        }
    }

    /// The content as `head` (stuffed as usual) then `range`, which needs no stuffing,
    /// handed to the kernel with `sendfile` (plain TCP only), then the end of data.
    async fn send_head_and_file(
        &mut self,
        head: Vec<u8>,
        mut range: FileRange,
    ) -> Result<(), ClientError> {
        let content = |host: &str, e: std::io::Error| ClientError::Content {
            host: host.to_string(),
            reason: e.to_string(),
        };
        let mut stuffer = DotStuffer::default();
        let mut wire = Vec::new();
        let out = stuffer.stuffed(&head, &mut wire);
        self.write_content(out).await?;
        let last = range
            .last_bytes()
            .await
            .map_err(|e| content(&self.host, e))?;
        let Stream::Plain(tcp) = &self.stream else {
            return Err(ClientError::protocol(
                &self.host,
                "the connection is no longer plain TCP".into(),
            ));
        };
        match sendfile::send(tcp, &mut range, self.t.data).await {
            Ok(()) => {}
            Err(sendfile::Failed::File(e)) => return Err(content(&self.host, e)),
            Err(sendfile::Failed::Connection(e)) => {
                return Err(self.sending_failed(e.kind() == std::io::ErrorKind::TimedOut));
            }
        }
        stuffer.saw(&last);
        wire.clear();
        stuffer.end(&mut wire);
        self.write_content(&wire).await
    }

    async fn write_content(&mut self, wire: &[u8]) -> Result<(), ClientError> {
        match timeout(self.t.data, self.stream.write_all(wire)).await {
            Err(_) => Err(self.sending_failed(true)),
            Ok(Err(_)) => Err(self.sending_failed(false)),
            Ok(Ok(())) => Ok(()),
        }
    }

    /// Sending the content failed: no room within the data timeout, or the connection lost.
    fn sending_failed(&self, timed_out: bool) -> ClientError {
        let (host, what) = (self.host.clone(), "sending the message");
        if timed_out {
            ClientError::Timeout { host, what }
        } else {
            ClientError::Lost { host, what }
        }
    }

    /// Ends the session politely; errors do not matter any more.
    pub async fn quit(mut self) {
        if !self.closing && self.send(b"QUIT\r\n", "QUIT").await.is_ok() {
            let _ = self
                .read_reply(Duration::from_secs(5).min(self.t.command), "the QUIT reply")
                .await;
        }
        let _ = self.stream.shutdown().await;
    }
}

/// Content on the wire: every line starting with `.` gets another `.`, the content ends with
/// CRLF, then `.` CRLF.
pub fn dot_stuff(body: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(body.len() + body.len() / 64 + 5);
    let mut s = DotStuffer::default();
    s.stuff(body, &mut out);
    s.end(&mut out);
    out
}

/// Dot-stuffing one chunk at a time (the content streams from the store).
#[derive(Debug)]
pub struct DotStuffer {
    at_line_start: bool,
    /// The last two bytes of content so far (to end it with CRLF).
    tail: [u8; 2],
    empty: bool,
}

impl Default for DotStuffer {
    fn default() -> Self {
        Self {
            at_line_start: true,
            tail: [0; 2],
            empty: true,
        }
    }
}

impl DotStuffer {
    /// Appends `chunk`, stuffed, to `out`. Finds the line starts with a dot by searching
    /// for `\n.` (SIMD, `memchr::memmem`), not byte by byte: a drain of 50 MB messages
    /// spends its CPU here and in the kernel's copies.
    pub fn stuff(&mut self, chunk: &[u8], out: &mut Vec<u8>) {
        if self.at_line_start && chunk.first() == Some(&b'.') {
            out.push(b'.');
        }
        let mut start = 0;
        for i in memchr::memmem::find_iter(chunk, b"\n.") {
            // The line feed stays with what came before; the dot gets another in front.
            out.extend_from_slice(&chunk[start..=i]);
            out.push(b'.');
            start = i + 1;
        }
        out.extend_from_slice(&chunk[start..]);
        self.saw(chunk);
    }

    /// `chunk` as it goes on the wire: `chunk` itself when no line in it starts with a dot
    /// (the common case: nothing copied), else stuffed into `out` (cleared first).
    pub fn stuffed<'a>(&mut self, chunk: &'a [u8], out: &'a mut Vec<u8>) -> &'a [u8] {
        let leading = self.at_line_start && chunk.first() == Some(&b'.');
        if leading || memchr::memmem::find(chunk, b"\n.").is_some() {
            out.clear();
            self.stuff(chunk, out);
            return out;
        }
        self.saw(chunk);
        chunk
    }

    /// Moves the state past `chunk` (whether a line starts next, the content's last bytes).
    fn saw(&mut self, chunk: &[u8]) {
        let Some(&last) = chunk.last() else { return };
        self.at_line_start = last == b'\n';
        self.tail = match chunk {
            [b] => [self.tail[1], *b],
            [.., a, b] => [*a, *b],
            [] => self.tail,
        };
        self.empty = false;
    }

    /// Appends the end of data: CRLF unless the content ended with one, then `.` CRLF.
    pub fn end(&self, out: &mut Vec<u8>) {
        if !self.empty && self.tail != *b"\r\n" {
            out.extend_from_slice(b"\r\n");
        }
        out.extend_from_slice(b".\r\n");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stuffing_in_chunks_matches_stuffing_whole() {
        let body = b".a\r\nb\r\n..c\r\n.\r\nend\r";
        for cut in 0..body.len() {
            for cut2 in cut..body.len() {
                let mut s = DotStuffer::default();
                let mut out = Vec::new();
                for part in [&body[..cut], &body[cut..cut2], &body[cut2..]] {
                    s.stuff(part, &mut out);
                }
                s.end(&mut out);
                assert_eq!(out, dot_stuff(body), "cut at {cut} and {cut2}");
            }
        }
    }

    /// The byte-by-byte rule, for comparison: a dot that starts a line gets another.
    fn stuffed_slowly(body: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        let mut at_line_start = true;
        for &b in body {
            if at_line_start && b == b'.' {
                out.push(b'.');
            }
            out.push(b);
            at_line_start = b == b'\n';
        }
        if !body.is_empty() && !body.ends_with(b"\r\n") {
            out.extend_from_slice(b"\r\n");
        }
        out.extend_from_slice(b".\r\n");
        out
    }

    /// Random content rich in dots and line ends, cut at random places, stuffed chunk by
    /// chunk (appended, or handed back as it goes on the wire): the same bytes as the
    /// byte-by-byte rule.
    #[test]
    fn stuffing_matches_the_rule_on_random_content_and_cuts() {
        let mut x = 0x2545_f491_4f6c_dd1du64;
        let mut next = move |n: u64| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x % n
        };
        for _ in 0..500 {
            let len = next(300) as usize;
            let body: Vec<u8> = (0..len)
                .map(|_| [b'.', b'\n', b'\r', b'a'][next(4) as usize])
                .collect();
            let mut s = DotStuffer::default();
            let mut out = Vec::new();
            let mut at = 0;
            while at < body.len() {
                let end = (at + 1 + next(40) as usize).min(body.len());
                if next(2) == 0 {
                    s.stuff(&body[at..end], &mut out);
                } else {
                    let mut wire = Vec::new();
                    let piece = s.stuffed(&body[at..end], &mut wire).to_vec();
                    out.extend_from_slice(&piece);
                }
                if next(3) == 0 {
                    s.stuff(&[], &mut out);
                }
                at = end;
            }
            s.end(&mut out);
            assert_eq!(
                out,
                stuffed_slowly(&body),
                "{:?}",
                String::from_utf8_lossy(&body)
            );
        }
    }

    #[test]
    fn stuffing() {
        assert_eq!(
            dot_stuff(b".a\r\nb\r\n..c\r\n.\r\n"),
            b"..a\r\nb\r\n...c\r\n..\r\n.\r\n"
        );
        assert_eq!(dot_stuff(b"no newline"), b"no newline\r\n.\r\n");
        assert_eq!(dot_stuff(b""), b".\r\n");
    }

    #[test]
    fn ehlo_capabilities() {
        let r = Reply::plain(
            250,
            vec![
                "primary".into(),
                "PIPELINING".into(),
                "SIZE 1000".into(),
                "8BITMIME".into(),
                "dsn".into(),
            ],
        );
        let c = Capabilities::from_ehlo(&r);
        assert!(c.pipelining && c.eightbit && c.dsn && !c.smtputf8 && !c.chunking);
        assert_eq!(c.size, Some(1000));
    }
}
