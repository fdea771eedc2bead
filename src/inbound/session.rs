//! The SMTP server session as a pure state machine: command lines and message content in,
//! replies and actions out. No sockets, no clock, no store: the listener does the I/O and the
//! commit, and tells the session how the commit went.

use super::data::{Decoder, Mode};
use super::received::{Trace, count_received};
use crate::dsn;
use crate::policy::Policy;
use crate::policy::recipients::Verdict;
use crate::queue::{NewMessage, NewRecipient, QueueId, to_ms};
use crate::smtp::address::{AddressError, parse_mailbox, parse_reverse_path};
use crate::smtp::command::{self, Command, CommandError, Param};
use crate::smtp::{Reply, ReversePath};
use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Instant, SystemTime};

fn has_duplicates(params: &[Param]) -> bool {
    params
        .iter()
        .enumerate()
        .any(|(i, p)| params[..i].iter().any(|q| q.keyword == p.keyword))
}

/// The limits and names a session needs.
#[derive(Debug, Clone)]
pub struct SessionConfig {
    pub hostname: String,
    pub max_message_size: u64,
    pub max_recipients: usize,
    /// After this many errors the session is closed with 421.
    pub max_errors: usize,
    /// More Received headers than this → 554 5.4.6 (a mail loop).
    pub max_received: usize,
    /// STARTTLS is offered.
    pub starttls: bool,
}

/// What the listener must do after feeding a command.
#[derive(Debug, PartialEq, Eq)]
pub enum Action {
    Reply(Reply),
    /// Send the reply, then close the connection.
    Close(Reply),
    /// Send the 354 reply, then read content with a [`Decoder`] in DATA mode.
    StartData(Reply),
    /// The recipient passed syntax and relay checks; ask [`Recipients`](crate::policy::recipients)
    /// and give the verdict to [`Session::recipient_checked`].
    CheckRecipient(Box<PendingRcpt>),
    /// Send the 220 reply, drop any input pipelined after STARTTLS, and run the TLS
    /// handshake; then call [`Session::tls_started`].
    StartTls(Reply),
    /// ETRN (RFC 1985): start delivery for these configured domains; `node` is what the
    /// client asked for, for the reply.
    Flush {
        node: String,
        domains: Vec<String>,
    },
    /// Read exactly `size` bytes of content (and feed them to [`Session::chunk`]).
    ReadChunk {
        size: u64,
        last: bool,
    },
}

/// A recipient waiting for its asynchronous check.
#[derive(Debug, PartialEq, Eq)]
pub struct PendingRcpt {
    pub mailbox: crate::smtp::Mailbox,
    pub recipient: NewRecipient,
}

/// The result of the content phase.
#[derive(Debug)]
pub enum Content {
    /// Reply now (an error); the transaction is over.
    Reply(Reply),
    /// Commit this message, then call [`Session::committed`].
    Commit(Box<NewMessage>),
}

struct Transaction {
    sender: ReversePath,
    params: Vec<Param>,
    utf8: bool,
    recipients: Vec<NewRecipient>,
    /// Set while BDAT chunks are arriving.
    chunks: Option<Decoder>,
    /// A BDAT transaction that failed: later chunks are read and dropped until LAST.
    chunks_failed: Option<Reply>,
}

#[derive(PartialEq, Eq)]
enum Hello {
    None,
    Helo,
    Ehlo,
}

pub struct Session {
    cfg: Arc<SessionConfig>,
    policy: Arc<Policy>,
    client_ip: IpAddr,
    hello: Hello,
    helo_name: String,
    tx: Option<Transaction>,
    errors: usize,
    /// The TLS version and cipher once STARTTLS succeeded.
    tls: Option<String>,
    /// Messages accepted in this session (for logs).
    pub accepted: u64,
}

impl Session {
    pub fn new(cfg: Arc<SessionConfig>, policy: Arc<Policy>, client_ip: IpAddr) -> Self {
        Self {
            cfg,
            policy,
            client_ip,
            hello: Hello::None,
            helo_name: String::new(),
            tx: None,
            errors: 0,
            tls: None,
            accepted: 0,
        }
    }

    pub fn greeting(&self) -> Reply {
        Reply::plain(220, vec![format!("{} ESMTP mx2", self.cfg.hostname)])
    }

    /// The reply for a command line longer than the limit.
    pub fn line_too_long(&mut self) -> Action {
        self.error(Reply::new(500, "5.5.2", "line too long"))
    }

    /// An error reply; the session is closed when it has seen too many.
    fn error(&mut self, reply: Reply) -> Action {
        self.errors += 1;
        if self.errors >= self.cfg.max_errors {
            return Action::Close(Reply::new(
                421,
                "4.7.0",
                format!("{} too many errors, closing connection", self.cfg.hostname),
            ));
        }
        Action::Reply(reply)
    }

    fn ok(text: &str, status: &str) -> Action {
        Action::Reply(Reply::new(250, status, text))
    }

    /// Handles one command line (CRLF already removed).
    pub fn command(&mut self, line: &[u8]) -> Action {
        let cmd = match command::parse(line) {
            Ok(c) => c,
            Err(CommandError::Unknown) => {
                return self.error(Reply::new(500, "5.5.2", "command not recognized"));
            }
            Err(CommandError::BadParam) => {
                return self.error(Reply::new(501, "5.5.4", "syntax error in parameters"));
            }
            Err(CommandError::BadBytes) => {
                return self.error(Reply::new(500, "5.5.2", "invalid characters in command"));
            }
            Err(CommandError::Syntax(s)) => {
                return self.error(Reply::new(501, "5.5.4", format!("syntax: {s}")));
            }
        };
        if self
            .tx
            .as_ref()
            .is_some_and(|t| t.chunks.is_some() || t.chunks_failed.is_some())
            && !matches!(
                cmd,
                Command::Bdat { .. } | Command::Rset | Command::Quit | Command::Noop
            )
        {
            return self.error(Reply::new(
                503,
                "5.5.1",
                "only BDAT, RSET, NOOP or QUIT may follow BDAT",
            ));
        }
        match cmd {
            Command::Ehlo(name) => {
                self.tx = None;
                self.hello = Hello::Ehlo;
                self.helo_name = name;
                let mut lines = vec![
                    format!("{} greets {}", self.cfg.hostname, self.helo_name),
                    "PIPELINING".into(),
                    format!("SIZE {}", self.cfg.max_message_size),
                    "8BITMIME".into(),
                    "SMTPUTF8".into(),
                    "ENHANCEDSTATUSCODES".into(),
                    "CHUNKING".into(),
                    "DSN".into(),
                    "ETRN".into(),
                ];
                if self.cfg.starttls && self.tls.is_none() {
                    lines.push("STARTTLS".into());
                }
                lines.push("HELP".into());
                Action::Reply(Reply::plain(250, lines))
            }
            Command::Helo(name) => {
                self.tx = None;
                self.hello = Hello::Helo;
                self.helo_name = name;
                Action::Reply(Reply::plain(250, vec![self.cfg.hostname.clone()]))
            }
            Command::Mail { path, params } => self.mail(&path, params),
            Command::Rcpt { path, params } => self.rcpt(&path, params),
            Command::Data => self.data(),
            Command::Bdat { size, last } => self.bdat(size, last),
            Command::Rset => {
                self.tx = None;
                Self::ok("reset", "2.0.0")
            }
            Command::Noop => Self::ok("OK", "2.0.0"),
            Command::Quit => Action::Close(Reply::new(
                221,
                "2.0.0",
                format!("{} closing connection", self.cfg.hostname),
            )),
            Command::Vrfy => Action::Reply(Reply::new(
                252,
                "2.5.0",
                "cannot VRFY user; send mail and delivery will be attempted",
            )),
            Command::Expn => self.error(Reply::new(502, "5.5.1", "EXPN not available")),
            Command::Help => Action::Reply(Reply::new(
                214,
                "2.0.0",
                "mx2 backup MX: EHLO, MAIL, RCPT, DATA, BDAT, RSET, NOOP, VRFY, QUIT",
            )),
            Command::Etrn(arg) => self.etrn(&arg),
            Command::StartTls => self.starttls(),
            Command::Auth => self.error(Reply::new(502, "5.5.1", "command not implemented")),
        }
    }

    fn starttls(&mut self) -> Action {
        if !self.cfg.starttls {
            return self.error(Reply::new(502, "5.5.1", "STARTTLS not available"));
        }
        if self.tls.is_some() {
            return self.error(Reply::new(503, "5.5.1", "TLS already active"));
        }
        if self.tx.is_some() {
            return self.error(Reply::new(
                503,
                "5.5.1",
                "STARTTLS not allowed inside a mail transaction",
            ));
        }
        Action::StartTls(Reply::new(220, "2.0.0", "ready to start TLS"))
    }

    /// The handshake succeeded: everything known before it is forgotten (RFC 3207 §4.2); the
    /// client must say EHLO again.
    pub fn tls_started(&mut self, info: String) {
        self.hello = Hello::None;
        self.helo_name.clear();
        self.tx = None;
        self.tls = Some(info);
    }

    fn etrn(&mut self, arg: &str) -> Action {
        if self.hello == Hello::None {
            return self.error(Reply::new(503, "5.5.1", "send EHLO first"));
        }
        if self.tx.is_some() {
            return self.error(Reply::new(
                503,
                "5.5.1",
                "ETRN is not allowed inside a mail transaction",
            ));
        }
        if arg.is_empty() || arg.contains(' ') {
            return self.error(Reply::new(
                501,
                "5.5.4",
                "syntax: ETRN domain | ETRN @domain",
            ));
        }
        if arg.starts_with('#') {
            return Action::Reply(Reply::new(
                458,
                "4.5.0",
                format!("unable to queue messages for node {arg}: named queues are not supported"),
            ));
        }
        let domains = self.policy.flush_domains(arg);
        if domains.is_empty() {
            return Action::Reply(Reply::new(
                459,
                "4.7.1",
                format!("node {arg} not allowed: this server does not back it up"),
            ));
        }
        Action::Flush {
            node: arg.to_string(),
            domains,
        }
    }

    fn mail(&mut self, path: &str, params: Vec<Param>) -> Action {
        if self.hello == Hello::None {
            return self.error(Reply::new(503, "5.5.1", "send EHLO or HELO first"));
        }
        if self.tx.is_some() {
            return self.error(Reply::new(503, "5.5.1", "nested MAIL command"));
        }
        let ehlo = self.hello == Hello::Ehlo;
        let max = self.cfg.max_message_size;
        let declared = params
            .iter()
            .find(|p| p.keyword == "SIZE")
            .and_then(|p| p.value.as_deref())
            .and_then(|v| v.parse::<u64>().ok());
        if ehlo && declared.is_some_and(|n| n > max) {
            return self.error(Reply::new(
                552,
                "5.3.4",
                format!("message size exceeds fixed maximum message size of {max} bytes"),
            ));
        }
        if let Err(a) =
            self.check_params(&params, |k, v| match k {
                _ if !ehlo => Some(false),
                "SIZE" => Some(v.and_then(|v| v.parse::<u64>().ok()).is_some()),
                "BODY" => Some(v.is_some_and(|v| {
                    v.eq_ignore_ascii_case("7BIT") || v.eq_ignore_ascii_case("8BITMIME")
                })),
                "SMTPUTF8" => Some(v.is_none()),
                "RET" => Some(v.is_some_and(|v| {
                    v.eq_ignore_ascii_case("FULL") || v.eq_ignore_ascii_case("HDRS")
                })),
                "ENVID" => Some(v.is_some_and(|v| v.len() <= 100 && dsn::is_xtext(v))),
                _ => None,
            })
        {
            return a;
        }
        let utf8 = params.iter().any(|p| p.keyword == "SMTPUTF8");
        if let Err(reply) = self.policy.take_message(self.client_ip, Instant::now()) {
            return Action::Reply(reply);
        }
        let sender = match parse_reverse_path(path, utf8) {
            Ok(s) => s,
            Err(e) => return self.error(bad_address(&e, 553, "5.1.7", "sender")),
        };
        let params = params.into_iter().filter(|p| p.keyword != "SIZE").collect();
        self.tx = Some(Transaction {
            sender,
            params,
            utf8,
            recipients: Vec::new(),
            chunks: None,
            chunks_failed: None,
        });
        Self::ok("sender OK", "2.1.0")
    }

    /// Validates ESMTP parameters with `valid(keyword, value)`: None is an unknown parameter
    /// (555), Some(false) a bad value (501); a repeated parameter is a 501 too.
    fn check_params(
        &mut self,
        params: &[Param],
        valid: impl Fn(&str, Option<&str>) -> Option<bool>,
    ) -> Result<(), Action> {
        for p in params {
            match valid(&p.keyword, p.value.as_deref()) {
                None => {
                    return Err(self.error(Reply::new(
                        555,
                        "5.5.4",
                        format!("unsupported parameter {}", p.keyword),
                    )));
                }
                Some(false) => {
                    return Err(self.error(Reply::new(
                        501,
                        "5.5.4",
                        format!("bad value for parameter {}", p.keyword),
                    )));
                }
                Some(true) => {}
            }
        }
        if has_duplicates(params) {
            return Err(self.error(Reply::new(501, "5.5.4", "a parameter is given twice")));
        }
        Ok(())
    }

    fn rcpt(&mut self, path: &str, params: Vec<Param>) -> Action {
        let Some(tx) = self.tx.as_ref() else {
            return self.error(Reply::new(503, "5.5.1", "need MAIL before RCPT"));
        };
        if tx.recipients.len() >= self.cfg.max_recipients {
            return Action::Reply(Reply::new(452, "4.5.3", "too many recipients"));
        }
        let utf8 = tx.utf8;
        if let Err(a) = self.check_params(&params, |k, v| {
            let v = v.unwrap_or("");
            match k {
                "NOTIFY" => Some(dsn::Notify::parse(v).is_some()),
                // addr-type ";" xtext; kept verbatim and relayed as received.
                "ORCPT" => Some(
                    v.len() <= 500
                        && v.split_once(';').is_some_and(|(t, a)| {
                            !t.is_empty()
                                && t.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
                                && dsn::is_xtext(a)
                        }),
                ),
                _ => None,
            }
        }) {
            return a;
        }
        let mailbox = match parse_mailbox(path, utf8) {
            Ok(m) => m,
            Err(e) => return self.error(bad_address(&e, 501, "5.1.3", "recipient")),
        };
        let domain = match self.policy.check_recipient(&mailbox) {
            Ok(d) => d,
            Err(reply) => return self.error(reply),
        };
        if let Err(reply) = self.policy.take_recipient(self.client_ip, Instant::now()) {
            return Action::Reply(reply);
        }
        let pending = PendingRcpt {
            recipient: NewRecipient {
                // A trailing dot ("example.com.") is not RFC 5321 Domain syntax: relayed
                // without it, so strict primaries take it and duplicates fold.
                address: format!("{}@{}", mailbox.local, mailbox.domain.trim_end_matches('.')),
                domain,
                params: params
                    .iter()
                    .map(Param::to_wire)
                    .collect::<Vec<_>>()
                    .join(" "),
            },
            mailbox,
        };
        if self.policy.needs_check(&pending.recipient.domain) {
            return Action::CheckRecipient(Box::new(pending));
        }
        Action::Reply(self.add_recipient(pending.recipient))
    }

    fn add_recipient(&mut self, r: NewRecipient) -> Reply {
        let Some(tx) = self.tx.as_mut() else {
            return Reply::new(503, "5.5.1", "need MAIL before RCPT");
        };
        // The same recipient twice is kept once. Local parts are compared as written: only
        // the primary may decide that John and john are one mailbox (RFC 5321 §2.4).
        if !tx.recipients.iter().any(|x| same_recipient(x, &r)) {
            tx.recipients.push(r);
        }
        Reply::new(250, "2.1.5", "recipient OK")
    }

    /// The answer to an [`Action::CheckRecipient`].
    /// A refusal counts as an error: a client guessing addresses is closed after
    /// `max_errors` like any other.
    pub fn recipient_checked(&mut self, pending: PendingRcpt, verdict: Verdict) -> Action {
        match verdict {
            Verdict::Accept => Action::Reply(self.add_recipient(pending.recipient)),
            Verdict::Reject(r) => self.error(r),
            Verdict::TempFail(r) => Action::Reply(r),
        }
    }

    /// Errors so far (the listener slows its replies down as they grow).
    pub fn errors(&self) -> usize {
        self.errors
    }

    fn data(&mut self) -> Action {
        match &self.tx {
            None => self.error(Reply::new(503, "5.5.1", "need MAIL and RCPT before DATA")),
            Some(tx) if tx.recipients.is_empty() => {
                self.error(Reply::new(554, "5.5.1", "no valid recipients"))
            }
            Some(_) => Action::StartData(Reply::new(354, "", "end data with <CR><LF>.<CR><LF>")),
        }
    }

    /// A decoder for the DATA phase that [`Action::StartData`] asked for.
    pub fn data_decoder(&self) -> Decoder {
        Decoder::new(Mode::Dot, self.cfg.max_message_size)
    }

    fn bdat(&mut self, size: u64, last: bool) -> Action {
        let max = self.cfg.max_message_size;
        match self.tx.as_mut() {
            Some(tx) if tx.recipients.is_empty() && tx.chunks_failed.is_none() => {
                tx.chunks_failed = Some(Reply::new(554, "5.5.1", "no valid recipients"));
            }
            Some(tx) if tx.chunks.is_none() && tx.chunks_failed.is_none() => {
                tx.chunks = Some(Decoder::new(Mode::Chunks, max));
            }
            Some(_) => {}
            None => {
                // The chunk is on the wire anyway: read it, then answer with the error.
                self.tx = Some(Transaction {
                    sender: ReversePath::Null,
                    params: Vec::new(),
                    utf8: false,
                    recipients: Vec::new(),
                    chunks: None,
                    chunks_failed: Some(Reply::new(503, "5.5.1", "need MAIL and RCPT before BDAT")),
                });
            }
        }
        Action::ReadChunk { size, last }
    }

    /// Where the listener puts the bytes of a BDAT chunk (None: drop them).
    pub fn chunk_decoder(&mut self) -> Option<&mut Decoder> {
        self.tx.as_mut().and_then(|t| t.chunks.as_mut())
    }

    /// A BDAT chunk has been read in full.
    pub fn chunk_done(
        &mut self,
        last: bool,
        size: u64,
        now: SystemTime,
        queue_id: QueueId,
    ) -> Content {
        let Some(tx) = self.tx.as_mut() else {
            return Content::Reply(Reply::new(503, "5.5.1", "no transaction"));
        };
        if let Some(reply) = tx.chunks_failed.clone() {
            if last {
                self.tx = None;
            }
            self.errors += 1;
            return Content::Reply(reply);
        }
        if tx.chunks.as_ref().is_some_and(Decoder::over_limit) {
            tx.chunks = None;
            let reply = self.too_big();
            if let Some(tx) = self.tx.as_mut() {
                tx.chunks_failed = Some(reply.clone());
            }
            if last {
                self.tx = None;
            }
            return Content::Reply(reply);
        }
        if !last {
            return Content::Reply(Reply::new(250, "2.0.0", format!("{size} bytes received")));
        }
        let decoder = tx.chunks.take();
        match decoder {
            Some(d) => self.content_done(d, now, queue_id, "BDAT"),
            None => Content::Reply(Reply::new(503, "5.5.1", "no transaction")),
        }
    }

    fn too_big(&self) -> Reply {
        Reply::new(
            552,
            "5.3.4",
            format!(
                "message exceeds the maximum size of {} bytes",
                self.cfg.max_message_size
            ),
        )
    }

    /// The DATA content has ended (`<CRLF>.<CRLF>` seen).
    pub fn data_done(&mut self, decoder: Decoder, now: SystemTime, queue_id: QueueId) -> Content {
        self.content_done(decoder, now, queue_id, "DATA")
    }

    fn content_done(
        &mut self,
        decoder: Decoder,
        now: SystemTime,
        queue_id: QueueId,
        _how: &str,
    ) -> Content {
        let Some(tx) = self.tx.take() else {
            return Content::Reply(Reply::new(503, "5.5.1", "no transaction"));
        };
        if decoder.over_limit() {
            return Content::Reply(self.too_big());
        }
        let content = decoder.finish();
        if count_received(&content) > self.cfg.max_received {
            return Content::Reply(Reply::new(
                554,
                "5.4.6",
                "too many Received headers: mail loop detected",
            ));
        }
        let protocol = match (self.hello == Hello::Ehlo, tx.utf8, self.tls.is_some()) {
            (true, true, true) => "UTF8SMTPS",
            (true, true, false) => "UTF8SMTP",
            (true, false, true) => "ESMTPS",
            (true, false, false) => "ESMTP",
            _ => "SMTP",
        };
        let single = (tx.recipients.len() == 1).then(|| tx.recipients[0].address.as_str());
        let header = Trace {
            helo: &self.helo_name,
            client_ip: self.client_ip,
            hostname: &self.cfg.hostname,
            protocol,
            queue_id: &queue_id,
            tls: self.tls.as_deref(),
            single_recipient: single,
            time: now,
        }
        .header();
        let mut body = Vec::with_capacity(header.len() + content.len() + 2);
        body.extend_from_slice(header.as_bytes());
        body.extend_from_slice(&content);
        Content::Commit(Box::new(NewMessage {
            id: queue_id,
            received_at_ms: to_ms(now),
            sender: tx.sender.to_string(),
            mail_params: tx
                .params
                .iter()
                .map(Param::to_wire)
                .collect::<Vec<_>>()
                .join(" "),
            client: self.client_ip.to_string(),
            helo: self.helo_name.clone(),
            recipients: tx.recipients,
            body,
            authenticated: None,
        }))
    }

    /// The listener's commit finished: `Ok` only once the message is durable.
    pub fn committed(&mut self, id: &str, result: Result<(), crate::queue::StoreError>) -> Reply {
        match result {
            Ok(()) => {
                self.accepted += 1;
                Reply::new(250, "2.0.0", format!("queued as {id}"))
            }
            Err(crate::queue::StoreError::Full) => {
                Reply::new(452, "4.3.1", "insufficient system storage, try again later")
            }
            Err(_) => Reply::new(451, "4.3.0", "local error in processing, try again later"),
        }
    }

    /// The reply sent when the server shuts down while the session waits for a command.
    pub fn shutting_down(&self) -> Reply {
        Reply::new(
            421,
            "4.3.2",
            format!("{} shutting down, try again later", self.cfg.hostname),
        )
    }

    /// The reply when message content arrives slower than `min_rate` bytes per second (after
    /// the first data_timeout): the transaction ends and the connection closes.
    pub fn data_too_slow(&self, min_rate: u64) -> Reply {
        Reply::new(
            421,
            "4.4.2",
            format!(
                "{} message content arriving too slowly (under {min_rate} bytes/s), closing connection",
                self.cfg.hostname
            ),
        )
    }

    /// The reply when a phase times out.
    pub fn timed_out(&self) -> Reply {
        Reply::new(
            421,
            "4.4.2",
            format!("{} timeout exceeded, closing connection", self.cfg.hostname),
        )
    }
}

/// Same local part (exactly) at the same domain (any case, trailing dot or not).
fn same_recipient(a: &NewRecipient, b: &NewRecipient) -> bool {
    let split = |r: &NewRecipient| {
        let at = r.address.rfind('@').unwrap_or(r.address.len());
        r.address.split_at(at).0.to_string()
    };
    a.domain == b.domain && split(a) == split(b)
}

/// The reply to an address that does not parse. A non-ASCII address without SMTPUTF8 gets
/// RFC 6531 §3.5's `553 5.6.7`.
fn bad_address(e: &AddressError, code: u16, status: &str, what: &str) -> Reply {
    match e {
        AddressError::NeedsUtf8 => Reply::new(
            553,
            "5.6.7",
            format!("non-ASCII {what} address: send MAIL FROM with SMTPUTF8"),
        ),
        e => Reply::new(code, status, format!("bad {what} address: {e}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn session() -> Session {
        let cfg = SessionConfig {
            hostname: "mx2.test".into(),
            max_message_size: 1000,
            max_recipients: 3,
            max_errors: 5,
            max_received: 50,
            starttls: true,
        };
        Session::new(
            Arc::new(cfg),
            Arc::new(Policy::new(["example.test".to_string()])),
            "192.0.2.7".parse().unwrap(),
        )
    }

    fn code(a: &Action) -> u16 {
        match a {
            Action::Reply(r) | Action::Close(r) | Action::StartData(r) => r.code,
            Action::StartTls(r) => r.code,
            Action::ReadChunk { .. } | Action::Flush { .. } | Action::CheckRecipient(_) => 0,
        }
    }

    fn run(s: &mut Session, line: &str) -> u16 {
        code(&s.command(line.as_bytes()))
    }

    fn commit(c: Content) -> NewMessage {
        match c {
            Content::Commit(m) => *m,
            Content::Reply(r) => panic!("expected commit, got {r}"),
        }
    }

    #[test]
    fn overlong_helo_names_and_utf8_addresses_without_smtputf8_are_refused() {
        let mut s = session();
        let long = format!("EHLO {}.test", "a".repeat(300));
        assert_eq!(run(&mut s, &long), 501);
        assert_eq!(run(&mut s, "EHLO client.test"), 250);
        let a = s.command("MAIL FROM:<jörg@sender.test>".as_bytes());
        assert!(
            matches!(&a, Action::Reply(r) if r.code == 553 && r.status == "5.6.7"),
            "{a:?}"
        );
        assert_eq!(run(&mut s, "MAIL FROM:<a@sender.test>"), 250);
        let a = s.command("RCPT TO:<jörg@example.test>".as_bytes());
        assert!(
            matches!(&a, Action::Reply(r) if r.code == 553 && r.status == "5.6.7"),
            "{a:?}"
        );
    }

    #[test]
    fn full_transaction() {
        let mut s = session();
        assert_eq!(s.greeting().code, 220);
        assert_eq!(run(&mut s, "EHLO client.test"), 250);
        assert_eq!(
            run(&mut s, "MAIL FROM:<a@sender.test> BODY=8BITMIME SIZE=10"),
            250
        );
        assert_eq!(run(&mut s, "RCPT TO:<u@example.test>"), 250);
        assert_eq!(run(&mut s, "RCPT TO:<u@EXAMPLE.test>"), 250);
        assert_eq!(run(&mut s, "RCPT TO:<u@example.test.>"), 250);
        assert_eq!(run(&mut s, "RCPT TO:<U@example.test>"), 250);
        assert_eq!(run(&mut s, "DATA"), 354);
        let mut d = s.data_decoder();
        assert!(d.feed(b"Subject: hi\r\n\r\nbody\r\n.\r\n").is_some());
        let m = commit(s.data_done(d, SystemTime::UNIX_EPOCH, "q1".into()));
        assert_eq!(m.sender, "a@sender.test");
        assert_eq!(m.mail_params, "BODY=8BITMIME");
        assert_eq!(
            m.recipients
                .iter()
                .map(|r| r.address.as_str())
                .collect::<Vec<_>>(),
            ["u@example.test", "U@example.test"],
            "the same recipient twice is kept once; local parts keep their case"
        );
        assert!(
            m.body
                .starts_with(b"Received: from client.test ([192.0.2.7])")
        );
        assert!(m.body.ends_with(b"\r\nSubject: hi\r\n\r\nbody\r\n"));
        assert_eq!(s.committed("q1", Ok(())).code, 250);
        // The session is ready for the next transaction.
        assert_eq!(run(&mut s, "MAIL FROM:<>"), 250);
    }

    #[test]
    fn order_and_relay_errors() {
        let mut s = session();
        assert_eq!(run(&mut s, "MAIL FROM:<a@b.test>"), 503);
        assert_eq!(run(&mut s, "HELO c.test"), 250);
        assert_eq!(run(&mut s, "RCPT TO:<u@example.test>"), 503);
        assert_eq!(
            run(&mut s, "MAIL FROM:<a@b.test> SIZE=10"),
            501,
            "no ESMTP parameters after HELO"
        );
        let mut s = session();
        run(&mut s, "EHLO c.test");
        assert_eq!(run(&mut s, "MAIL FROM:<a@b.test> SIZE=1001"), 552);
        assert_eq!(run(&mut s, "MAIL FROM:<a@b.test> FOO=1"), 555);
        let mut s = session();
        run(&mut s, "EHLO c.test");
        run(&mut s, "MAIL FROM:<a@b.test>");
        assert_eq!(run(&mut s, "DATA"), 554, "no recipients yet");
        assert_eq!(run(&mut s, "RCPT TO:<u@elsewhere.test>"), 550);
        assert_eq!(run(&mut s, "RCPT TO:<u%elsewhere.test@example.test>"), 550);
        assert_eq!(
            run(&mut s, "RCPT TO:<u@example.test> NOTIFY=NEVER,SUCCESS"),
            501
        );
        // Five errors: closed.
        assert!(matches!(s.command(b"BOGUS"), Action::Close(r) if r.code == 421));
    }

    #[test]
    fn dsn_parameters_are_kept_verbatim() {
        let mut s = session();
        run(&mut s, "EHLO c.test");
        assert_eq!(
            run(&mut s, "MAIL FROM:<a@b.test> RET=HDRS ENVID=QQ+2B1"),
            250
        );
        assert_eq!(
            run(
                &mut s,
                "RCPT TO:<u@example.test> NOTIFY=SUCCESS,FAILURE ORCPT=utf-8;u+2Bx@example.test"
            ),
            250
        );
        assert_eq!(
            run(&mut s, "RCPT TO:<v@example.test> NOTIFY=NEVER NOTIFY=NEVER"),
            501
        );
        assert_eq!(run(&mut s, "RCPT TO:<v@example.test> FOO=1"), 555);
        run(&mut s, "DATA");
        let mut d = s.data_decoder();
        d.feed(b"x\r\n.\r\n");
        let m = commit(s.data_done(d, SystemTime::UNIX_EPOCH, "q".into()));
        assert_eq!(m.mail_params, "RET=HDRS ENVID=QQ+2B1");
        assert_eq!(
            m.recipients[0].params,
            "NOTIFY=SUCCESS,FAILURE ORCPT=utf-8;u+2Bx@example.test"
        );
    }

    #[test]
    fn etrn_names_configured_domains_only() {
        let mut s = session();
        assert_eq!(run(&mut s, "ETRN example.test"), 503);
        run(&mut s, "EHLO c.test");
        assert_eq!(
            s.command(b"ETRN Example.Test"),
            Action::Flush {
                node: "Example.Test".into(),
                domains: vec!["example.test".into()]
            }
        );
        assert_eq!(
            s.command(b"ETRN @test"),
            Action::Flush {
                node: "@test".into(),
                domains: vec!["example.test".into()]
            }
        );
        assert_eq!(run(&mut s, "ETRN other.test"), 459);
        assert_eq!(run(&mut s, "ETRN #queue"), 458);
        run(&mut s, "MAIL FROM:<>");
        assert_eq!(run(&mut s, "ETRN example.test"), 503);
    }

    #[test]
    fn starttls_resets_the_session() {
        let mut s = session();
        assert!(
            matches!(s.command(b"EHLO c.test"), Action::Reply(r) if r.lines.iter().any(|l| l == "STARTTLS"))
        );
        run(&mut s, "MAIL FROM:<>");
        assert_eq!(run(&mut s, "STARTTLS"), 503, "not inside a transaction");
        run(&mut s, "RSET");
        assert_eq!(run(&mut s, "STARTTLS"), 220);
        s.tls_started("TLSv1_3 TLS13_AES_128_GCM_SHA256".into());
        assert_eq!(
            run(&mut s, "MAIL FROM:<>"),
            503,
            "EHLO is needed again after TLS"
        );
        assert!(
            matches!(s.command(b"EHLO c.test"), Action::Reply(r) if !r.lines.iter().any(|l| l == "STARTTLS"))
        );
        assert_eq!(run(&mut s, "STARTTLS"), 503);
        run(&mut s, "MAIL FROM:<>");
        run(&mut s, "RCPT TO:<u@example.test>");
        run(&mut s, "DATA");
        let mut d = s.data_decoder();
        d.feed(b"x\r\n.\r\n");
        let m = commit(s.data_done(d, SystemTime::UNIX_EPOCH, "q".into()));
        let head = String::from_utf8_lossy(&m.body).into_owned();
        assert!(
            head.contains("(using TLSv1_3 with cipher TLS13_AES_128_GCM_SHA256)")
                && head.contains("with ESMTPS id q"),
            "{head}"
        );
    }

    #[test]
    fn recipient_limit() {
        let mut s = session();
        run(&mut s, "EHLO c.test");
        run(&mut s, "MAIL FROM:<>");
        for i in 0..3 {
            assert_eq!(run(&mut s, &format!("RCPT TO:<u{i}@example.test>")), 250);
        }
        assert_eq!(run(&mut s, "RCPT TO:<u9@example.test>"), 452);
    }

    #[test]
    fn oversize_data_and_loops() {
        let mut s = session();
        run(&mut s, "EHLO c.test");
        run(&mut s, "MAIL FROM:<>");
        run(&mut s, "RCPT TO:<u@example.test>");
        run(&mut s, "DATA");
        let mut d = s.data_decoder();
        let mut big = vec![b'x'; 2000];
        big.extend_from_slice(b"\r\n.\r\n");
        assert!(d.feed(&big).is_some());
        match s.data_done(d, SystemTime::UNIX_EPOCH, "q".into()) {
            Content::Reply(r) => assert_eq!(r.code, 552),
            Content::Commit(_) => panic!("oversize message committed"),
        }
        run(&mut s, "MAIL FROM:<>");
        run(&mut s, "RCPT TO:<u@example.test>");
        run(&mut s, "DATA");
        let mut d = s.data_decoder();
        let mut looped = b"Received: x\r\n".repeat(51);
        looped.extend_from_slice(b"\r\n.\r\n");
        d.feed(&looped);
        match s.data_done(d, SystemTime::UNIX_EPOCH, "q".into()) {
            Content::Reply(r) => assert_eq!((r.code, r.status.as_str()), (554, "5.4.6")),
            Content::Commit(_) => panic!("looping message committed"),
        }
    }

    #[test]
    fn bdat_chunks() {
        let mut s = session();
        run(&mut s, "EHLO c.test");
        run(&mut s, "MAIL FROM:<a@b.test>");
        run(&mut s, "RCPT TO:<u@example.test>");
        assert_eq!(
            s.command(b"BDAT 5"),
            Action::ReadChunk {
                size: 5,
                last: false
            }
        );
        s.chunk_decoder().unwrap().feed(b"Hi\r\nt");
        assert!(
            matches!(s.chunk_done(false, 5, SystemTime::UNIX_EPOCH, "q".into()), Content::Reply(r) if r.code == 250)
        );
        assert_eq!(
            run(&mut s, "MAIL FROM:<a@b.test>"),
            503,
            "no MAIL inside BDAT"
        );
        assert_eq!(
            s.command(b"BDAT 4 LAST"),
            Action::ReadChunk {
                size: 4,
                last: true
            }
        );
        s.chunk_decoder().unwrap().feed(b"ext\n");
        let m = commit(s.chunk_done(true, 4, SystemTime::UNIX_EPOCH, "q".into()));
        assert!(m.body.ends_with(b"\r\nHi\r\ntext\r\n"));
    }

    #[test]
    fn bdat_without_transaction_is_read_then_refused() {
        let mut s = session();
        run(&mut s, "EHLO c.test");
        assert_eq!(
            s.command(b"BDAT 3 LAST"),
            Action::ReadChunk {
                size: 3,
                last: true
            }
        );
        assert!(s.chunk_decoder().is_none());
        assert!(
            matches!(s.chunk_done(true, 3, SystemTime::UNIX_EPOCH, "q".into()), Content::Reply(r) if r.code == 503)
        );
        assert_eq!(run(&mut s, "MAIL FROM:<>"), 250);
    }
}
