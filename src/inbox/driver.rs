//! The I/O around `imap-next`'s server state machine, over any stream: writes what the
//! machine has to send in full, reads when it needs more input (with the session's idle
//! timeout), and while a client idles waits for the socket or a wake-up (new mail). For
//! STARTTLS the session drops the machine and everything it buffered, so a command
//! pipelined behind STARTTLS is never run, and starts a fresh one over TLS whose greeting is
//! not sent ([`Driver::restart`]). No IMAP syntax here: that is imap-next's.

use imap_next::imap_types::response::{Greeting, Status};
use imap_next::server::{Error, Event, Options, Server};
use imap_next::{Interrupt, Io, State};
use std::collections::VecDeque;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::watch;

/// The longest command (literals included) a client may send: this server takes no
/// APPEND, so commands are short.
const MAX_COMMAND: u32 = 64 * 1024;
/// Malformed commands tolerated in one session.
const MAX_ERRORS: u32 = 20;

/// Why a session ends.
#[derive(Debug)]
pub enum Closed {
    /// The client went away, or the connection failed.
    Gone,
    /// The client was silent for the idle timeout.
    Timeout,
    /// Too many malformed commands.
    Errors,
}

/// What the session gets next.
#[derive(Debug)]
pub enum Input {
    Event(Event),
    /// The wake-up fired (new mail may be there).
    Woken,
}

pub trait Stream: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Stream for T {}

pub struct Driver<S> {
    pub stream: S,
    server: Server,
    /// Events read ahead while sending (a pipelined command), handed out first.
    pending: VecDeque<Event>,
    timeout: Duration,
    errors: u32,
}

fn options() -> Options {
    let mut o = Options::default();
    o.max_literal_size = MAX_COMMAND / 2;
    o.max_command_size = MAX_COMMAND;
    o.crlf_relaxed = true;
    o
}

impl<S: Stream> Driver<S> {
    /// A session on `stream`; the greeting goes out with the first [`Driver::next`].
    pub fn new(stream: S, greeting: Greeting<'static>, timeout: Duration) -> Self {
        Self {
            stream,
            server: Server::new(options(), greeting),
            pending: VecDeque::new(),
            timeout,
            errors: 0,
        }
    }

    /// The state machine, to queue responses on.
    pub fn server(&mut self) -> &mut Server {
        &mut self.server
    }

    /// Sends everything queued, keeping any event read meanwhile for [`Driver::next`].
    pub async fn flush(&mut self) -> Result<(), Closed> {
        loop {
            match self.server.next() {
                Ok(Event::GreetingSent { .. } | Event::ResponseSent { .. }) => {}
                Ok(event) => self.pending.push_back(event),
                Err(Interrupt::Io(Io::Output(bytes))) => self.write(&bytes).await?,
                Err(Interrupt::Io(Io::NeedMoreInput)) => return Ok(()),
                Err(Interrupt::Error(e)) => self.malformed(e)?,
            }
        }
    }

    /// The next event: sends what is queued, reads as needed. With `wake`, returns
    /// [`Input::Woken`] when it changes while waiting for the client.
    pub async fn next(
        &mut self,
        mut wake: Option<&mut watch::Receiver<u64>>,
    ) -> Result<Input, Closed> {
        loop {
            if let Some(e) = self.pending.pop_front() {
                return Ok(Input::Event(e));
            }
            match self.server.next() {
                Ok(Event::GreetingSent { .. } | Event::ResponseSent { .. }) => {}
                Ok(event) => return Ok(Input::Event(event)),
                Err(Interrupt::Io(Io::Output(bytes))) => self.write(&bytes).await?,
                Err(Interrupt::Io(Io::NeedMoreInput)) => {
                    let mut buf = [0u8; 8192];
                    let read = self.stream.read(&mut buf);
                    let n = match wake.as_deref_mut() {
                        Some(w) => {
                            // A sender gone (never while the server runs) wakes nobody.
                            let woken = async {
                                if w.changed().await.is_err() {
                                    std::future::pending::<()>().await;
                                }
                            };
                            tokio::select! {
                                r = tokio::time::timeout(self.timeout, read) => r,
                                _ = woken => return Ok(Input::Woken),
                            }
                        }
                        None => tokio::time::timeout(self.timeout, read).await,
                    };
                    match n {
                        Err(_) => return Err(Closed::Timeout),
                        Ok(Ok(0)) | Ok(Err(_)) => return Err(Closed::Gone),
                        Ok(Ok(n)) => self.server.enqueue_input(&buf[..n]),
                    }
                }
                Err(Interrupt::Error(e)) => self.malformed(e)?,
            }
        }
    }

    /// A command imap-next could not read: `* BAD`, and the end after too many.
    fn malformed(&mut self, e: Error) -> Result<(), Closed> {
        self.errors += 1;
        if self.errors > MAX_ERRORS {
            return Err(Closed::Errors);
        }
        let text = match e {
            Error::CommandTooLong { .. } | Error::LiteralTooLong { .. } => "command too long",
            _ => "cannot parse that command",
        };
        if let Ok(s) = Status::bad(None, None, text) {
            self.server.enqueue_status(s);
        }
        Ok(())
    }

    async fn write(&mut self, bytes: &[u8]) -> Result<(), Closed> {
        let w = async {
            self.stream.write_all(bytes).await?;
            self.stream.flush().await
        };
        match tokio::time::timeout(self.timeout, w).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(_)) => Err(Closed::Gone),
            Err(_) => Err(Closed::Timeout),
        }
    }

    /// Ends the state machine: what it buffered (a command pipelined after STARTTLS) is
    /// dropped unread; the stream is handed back.
    pub fn into_stream(self) -> S {
        self.stream
    }

    /// A fresh state machine over `stream` (after STARTTLS), its greeting not sent.
    pub fn restart(stream: S, greeting: Greeting<'static>, timeout: Duration) -> Self {
        let mut server = Server::new(options(), greeting);
        // The greeting comes out first, as output and then as sent: neither goes anywhere.
        while let Err(Interrupt::Io(Io::Output(_))) | Ok(Event::GreetingSent { .. }) = server.next()
        {
        }
        Self {
            stream,
            server,
            pending: VecDeque::new(),
            timeout,
            errors: 0,
        }
    }
}
