//! The SMTP server session as a pure state machine: command lines, message content and the
//! facts the listener learned (a DNS blocklist hit, a timeout, how a commit or an ETRN run
//! went) in; replies and actions out. Every inbound reply is decided here, so each one is
//! testable without a socket; the policy's refusals (relay, rate limits, ETRN clients) and
//! the recipient checks' verdicts are phrased by `policy` and passed on from here.
//!
//! One type, [`Session`], split by SMTP phase:
//! - `connect`: the greeting and the replies that refuse or end a connection;
//! - `hello`: EHLO, HELO, STARTTLS;
//! - `envelope`: MAIL and RCPT;
//! - `content`: DATA, BDAT, sender authentication and the commit's reply;
//! - `etrn`: ETRN (RFC 1985).
//!
//! Never does I/O (no sockets, no store: the listener does those and reports back) and never
//! reads the clock: time is passed in ([`Session::command`], [`Session::data_done`]).

mod connect;
mod content;
mod envelope;
mod etrn;
mod hello;

use super::data::Decoder;
use crate::policy::Policy;
use crate::queue::{NewMessage, NewRecipient};
use crate::smtp::command::{self, Command, CommandError, Param};
use crate::smtp::{Reply, ReversePath};
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Instant;

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
pub enum Next {
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
    /// client asked for. Give the outcome to [`Session::etrn_result`].
    Flush {
        node: String,
        domains: Vec<String>,
    },
    /// Read exactly `size` bytes of content (and feed them to [`Session::chunk_decoder`]).
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
    /// The SIZE the client declared at MAIL.
    declared: Option<u64>,
    /// The largest content this transaction takes: the global limit, or less when a
    /// recipient's domain has a smaller one.
    max_size: u64,
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
    /// Refuse messages that fail DMARC when the sender domain's policy is `reject`.
    dmarc_reject: bool,
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
            dmarc_reject: false,
            accepted: 0,
        }
    }

    /// Refuse messages whose sender domain's DMARC policy says reject (see
    /// [`Session::sender_authenticated`]); off by default.
    pub fn with_dmarc_reject(mut self, on: bool) -> Self {
        self.dmarc_reject = on;
        self
    }

    /// An error reply; the session is closed when it has seen too many.
    fn error(&mut self, reply: Reply) -> Next {
        self.errors += 1;
        if self.errors >= self.cfg.max_errors {
            return Next::Close(Reply::new(
                421,
                "4.7.0",
                format!("{} too many errors, closing connection", self.cfg.hostname),
            ));
        }
        Next::Reply(reply)
    }

    fn ok(text: &str, status: &str) -> Next {
        Next::Reply(Reply::new(250, status, text))
    }

    /// Errors so far (the listener slows its replies down as they grow).
    pub fn errors(&self) -> usize {
        self.errors
    }

    /// Handles one command line (CRLF already removed) received at `now` (the per-client
    /// rate limits count with it).
    pub fn command(&mut self, line: &[u8], now: Instant) -> Next {
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
            Command::Ehlo(name) => self.ehlo(name),
            Command::Helo(name) => self.helo(name),
            Command::Mail { path, params } => self.mail(&path, params, now),
            Command::Rcpt { path, params } => self.rcpt(&path, params, now),
            Command::Data => self.data(),
            Command::Bdat { size, last } => self.bdat(size, last),
            Command::Rset => {
                self.tx = None;
                Self::ok("reset", "2.0.0")
            }
            Command::Noop => Self::ok("OK", "2.0.0"),
            Command::Quit => Next::Close(Reply::new(
                221,
                "2.0.0",
                format!("{} closing connection", self.cfg.hostname),
            )),
            Command::Vrfy => Next::Reply(Reply::new(
                252,
                "2.5.0",
                "cannot VRFY user; send mail and delivery will be attempted",
            )),
            Command::Expn => self.error(Reply::new(502, "5.5.1", "EXPN not available")),
            Command::Help => Next::Reply(Reply::new(
                214,
                "2.0.0",
                "mx2 backup MX: EHLO, MAIL, RCPT, DATA, BDAT, RSET, NOOP, VRFY, QUIT",
            )),
            Command::Etrn(arg) => self.etrn(&arg, now),
            Command::StartTls => self.starttls(),
            Command::Auth => self.error(Reply::new(502, "5.5.1", "command not implemented")),
        }
    }
}

/// Helpers shared by the phase files' tests.
#[cfg(test)]
mod testing {
    use super::*;
    pub use std::time::{Duration, SystemTime};

    pub fn config() -> SessionConfig {
        SessionConfig {
            hostname: "mx2.test".into(),
            max_message_size: 1000,
            max_recipients: 3,
            max_errors: 5,
            max_received: 50,
            starttls: true,
        }
    }

    pub fn session() -> Session {
        Session::new(
            Arc::new(config()),
            Arc::new(Policy::new(["example.test".to_string()])),
            "192.0.2.7".parse().unwrap(),
        )
    }

    pub fn code(a: &Next) -> u16 {
        match a {
            Next::Reply(r) | Next::Close(r) | Next::StartData(r) => r.code,
            Next::StartTls(r) => r.code,
            Next::ReadChunk { .. } | Next::Flush { .. } | Next::CheckRecipient(_) => 0,
        }
    }

    pub fn run(s: &mut Session, line: &str) -> u16 {
        code(&s.command(line.as_bytes(), std::time::Instant::now()))
    }

    pub fn commit(c: Content) -> NewMessage {
        match c {
            Content::Commit(m) => *m,
            Content::Reply(r) => panic!("expected commit, got {r}"),
        }
    }

    /// A reply as the client reads it.
    pub fn wire(r: &Reply) -> String {
        String::from_utf8(r.to_wire()).unwrap()
    }

    /// The reply of an action that sends one and closes the connection, as the client reads it.
    pub fn closing(a: Next) -> String {
        match a {
            Next::Close(r) => wire(&r),
            other => panic!("expected a closing reply, got {other:?}"),
        }
    }
}
