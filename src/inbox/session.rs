//! One IMAP session: the RFC 3501 states (not authenticated, authenticated, selected), what
//! each command does and the responses it queues. Commands arrive parsed by imap-next
//! through the [`Driver`]; the mailbox is read from the store (`Store::inbox_mailbox`,
//! `Store::body`), flags written back to it; LOGIN is checked by [`super::login`]. Mail is
//! never changed: APPEND, COPY, MOVE, CREATE answer `NO [CANNOT]`; `\Deleted` is kept for
//! the session and EXPUNGE (or CLOSE) hides those messages from the user or, with the
//! domain's `inbox_delete = "do_not_deliver"`, drops the user's recipient from the queue.

use super::driver::{Closed, Driver, Input};
use super::login::{Refused, Via};
use super::mailbox::{self, View};
use super::{Inbox, budget, fetch};
use crate::queue::inbox::{FlagChange, mailbox_key};
use crate::tls::Stream;
use imap_next::imap_types::ToStatic;
use imap_next::imap_types::auth::{AuthMechanism, AuthenticateData};
use imap_next::imap_types::command::{Command, CommandBody};
use imap_next::imap_types::core::{Tag, Text, Vec1};
use imap_next::imap_types::fetch::{MacroOrMessageDataItemNames, MessageDataItem};
use imap_next::imap_types::flag::{Flag, FlagNameAttribute, FlagPerm, StoreResponse, StoreType};
use imap_next::imap_types::mailbox::{ListMailbox, Mailbox};
use imap_next::imap_types::response::{
    Capability, Code, CodeOther, CommandContinuationRequest, Data, Greeting, Status,
};
use imap_next::imap_types::search::SearchKey;
use imap_next::imap_types::status::{StatusDataItem, StatusDataItemName};
use imap_next::server::Event;
use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::Arc;
use tracing::{debug, warn};

enum State {
    NotAuthenticated,
    Authenticated {
        key: String,
    },
    Selected {
        key: String,
        view: View,
        read_only: bool,
    },
}

/// What a command leaves the session to do.
enum After {
    Continue,
    Logout,
    StartTls,
}

pub struct Session {
    inbox: Arc<Inbox>,
    client: IpAddr,
    /// The client's key for lockouts (IPv6: its prefix).
    client_key: IpAddr,
    tls: bool,
    state: State,
    /// The tag of an AUTHENTICATE waiting for its credentials.
    authenticating: Option<Tag<'static>>,
}

fn text(s: &str) -> Text<'static> {
    Text::try_from(s.to_string()).unwrap_or_else(|_| Text::unvalidated("-"))
}

fn code(atom: &'static str) -> Option<Code<'static>> {
    Some(Code::Other(CodeOther::unvalidated(atom.as_bytes())))
}

fn status_ok(tag: Tag<'static>, code: Option<Code<'static>>, t: &str) -> Status<'static> {
    Status::ok(Some(tag), code, text(t)).unwrap_or_else(|_| unreachable!("valid text"))
}

fn status_no(tag: Tag<'static>, code: Option<Code<'static>>, t: &str) -> Status<'static> {
    Status::no(Some(tag), code, text(t)).unwrap_or_else(|_| unreachable!("valid text"))
}

fn status_bad(tag: Tag<'static>, t: &str) -> Status<'static> {
    Status::bad(Some(tag), None, text(t)).unwrap_or_else(|_| unreachable!("valid text"))
}

fn nz(n: u32) -> NonZeroU32 {
    NonZeroU32::new(n).unwrap_or(NonZeroU32::MIN)
}

/// The greeting: capabilities in its code, so clients need not ask.
pub fn greeting(tls: bool) -> Greeting<'static> {
    Greeting::new(
        imap_next::imap_types::response::GreetingKind::Ok,
        Some(Code::Capability(capabilities(tls, false))),
        "mx2 emergency inbox ready (read-only)",
    )
    .unwrap_or_else(|_| unreachable!("valid greeting"))
    .to_static()
}

fn capabilities(tls: bool, authenticated: bool) -> Vec1<Capability<'static>> {
    let mut c = vec![Capability::Imap4Rev1, Capability::Idle];
    if !tls {
        c.push(Capability::StartTls);
        c.push(Capability::LoginDisabled);
    } else if !authenticated {
        c.push(Capability::Auth(AuthMechanism::Plain));
    }
    Vec1::try_from(c).unwrap_or_else(|_| unreachable!("not empty"))
}

impl Session {
    pub fn new(inbox: Arc<Inbox>, client: IpAddr, tls: bool) -> Self {
        let client_key = crate::net::client_key(client, inbox.ipv6_prefix);
        Self {
            inbox,
            client,
            client_key,
            tls,
            state: State::NotAuthenticated,
            authenticating: None,
        }
    }

    /// Runs the session to its end; `stream` is plain (STARTTLS listener) or TLS already.
    pub async fn run(mut self, stream: Stream) {
        let timeout = self.inbox.idle_timeout;
        let mut drv = Driver::new(stream, greeting(self.tls), timeout);
        let why = loop {
            let input = match drv.next(None).await {
                Ok(i) => i,
                Err(e) => break e,
            };
            let after =
                match input {
                    Input::Event(Event::CommandReceived { command }) => {
                        match self.command(&mut drv, command).await {
                            Ok(a) => a,
                            Err(e) => break e,
                        }
                    }
                    Input::Event(Event::CommandAuthenticateReceived {
                        command_authenticate: c,
                    }) => {
                        let status = if !self.tls {
                            status_no(
                                c.tag,
                                code("PRIVACYREQUIRED"),
                                "AUTHENTICATE only after STARTTLS",
                            )
                        } else if c.mechanism != AuthMechanism::Plain {
                            status_no(c.tag, None, "only AUTHENTICATE PLAIN (or LOGIN)")
                        } else if let Some(initial) = c.initial_response {
                            self.plain(c.tag, initial.declassify()).await
                        } else {
                            self.authenticating = Some(c.tag);
                            let _ = drv.server().authenticate_continue(
                                CommandContinuationRequest::base64(b"".as_slice()),
                            );
                            continue;
                        };
                        let _ = drv.server().authenticate_finish(status);
                        After::Continue
                    }
                    Input::Event(Event::AuthenticateDataReceived { authenticate_data }) => {
                        let tag = self.authenticating.take().unwrap_or_else(|| {
                            Tag::try_from("x").unwrap_or_else(|_| unreachable!())
                        });
                        let status = match authenticate_data {
                            AuthenticateData::Continue(d) => self.plain(tag, d.declassify()).await,
                            AuthenticateData::Cancel => status_bad(tag, "AUTHENTICATE cancelled"),
                        };
                        let _ = drv.server().authenticate_finish(status);
                        After::Continue
                    }
                    Input::Event(Event::IdleCommandReceived { tag }) => {
                        match self.idle(&mut drv, tag).await {
                            Ok(()) => After::Continue,
                            Err(e) => break e,
                        }
                    }
                    Input::Event(_) | Input::Woken => After::Continue,
                };
            match after {
                After::Continue => {}
                After::Logout => {
                    let _ = drv.flush().await;
                    break Closed::Gone;
                }
                After::StartTls => match self.start_tls(drv).await {
                    Some(d) => drv = d,
                    None => break Closed::Gone,
                },
            }
        };
        debug!(client = %self.client, ?why, "inbox session ended");
    }

    /// After `OK Begin TLS`: the old machine and what it buffered are dropped; a handshake;
    /// a fresh machine whose greeting is not sent.
    async fn start_tls(&mut self, mut drv: Driver<Stream>) -> Option<Driver<Stream>> {
        drv.flush().await.ok()?;
        let mut stream = drv.into_stream();
        let tcp = stream.take_plain()?;
        let tls = tokio::time::timeout(
            std::time::Duration::from_secs(30),
            self.inbox.acceptor.accept(tcp),
        )
        .await
        .ok()?
        .map_err(|e| debug!(client = %self.client, error = %e, "inbox TLS handshake failed"))
        .ok()?;
        self.tls = true;
        Some(Driver::restart(
            Stream::Server(Box::new(tls)),
            greeting(true),
            self.inbox.idle_timeout,
        ))
    }

    async fn command(
        &mut self,
        drv: &mut Driver<Stream>,
        command: Command<'static>,
    ) -> Result<After, Closed> {
        let tag = command.tag;
        let cannot = |tag| status_no(tag, code("CANNOT"), "this inbox is read-only");
        let status = match command.body {
            CommandBody::Capability => {
                let authenticated = !matches!(self.state, State::NotAuthenticated);
                drv.server()
                    .enqueue_data(Data::Capability(capabilities(self.tls, authenticated)));
                status_ok(tag, None, "CAPABILITY done")
            }
            CommandBody::Noop | CommandBody::Check => {
                self.refresh(drv).await?;
                status_ok(tag, None, "done")
            }
            CommandBody::Logout => {
                let bye = Status::bye(None, "logging out").unwrap_or_else(|_| unreachable!());
                drv.server().enqueue_status(bye);
                drv.server()
                    .enqueue_status(status_ok(tag, None, "LOGOUT done"));
                return Ok(After::Logout);
            }
            CommandBody::StartTLS if !self.tls => {
                drv.server()
                    .enqueue_status(status_ok(tag, None, "begin TLS now"));
                return Ok(After::StartTls);
            }
            CommandBody::StartTLS => status_bad(tag, "TLS is on already"),
            CommandBody::Login { username, password } => {
                let user = String::from_utf8_lossy(username.as_ref()).into_owned();
                let password = password.declassify().as_ref().to_vec();
                self.login(tag, &user, password).await
            }
            _ if matches!(self.state, State::NotAuthenticated) => status_bad(tag, "log in first"),
            CommandBody::Select { mailbox, .. } => self.select(drv, tag, &mailbox, false).await?,
            CommandBody::Examine { mailbox, .. } => self.select(drv, tag, &mailbox, true).await?,
            CommandBody::List {
                reference,
                mailbox_wildcard,
            } => self.list(drv, tag, &reference, &mailbox_wildcard, false),
            CommandBody::Lsub {
                reference,
                mailbox_wildcard,
            } => self.list(drv, tag, &reference, &mailbox_wildcard, true),
            CommandBody::Status {
                mailbox,
                item_names,
            } => self.status(drv, tag, &mailbox, &item_names).await?,
            CommandBody::Subscribe {
                mailbox: Mailbox::Inbox,
            } => status_ok(tag, None, "INBOX is always subscribed"),
            CommandBody::Append { .. }
            | CommandBody::Create { .. }
            | CommandBody::Delete { .. }
            | CommandBody::Rename { .. }
            | CommandBody::Subscribe { .. }
            | CommandBody::Unsubscribe { .. } => cannot(tag),
            _ if !matches!(self.state, State::Selected { .. }) => {
                status_bad(tag, "select INBOX first")
            }
            CommandBody::Copy { .. } | CommandBody::Move { .. } => cannot(tag),
            CommandBody::Expunge => self.expunge(drv, tag, None).await?,
            CommandBody::ExpungeUid { sequence_set } => {
                self.expunge(drv, tag, Some(&sequence_set)).await?
            }
            body @ (CommandBody::Close | CommandBody::Unselect) => {
                // CLOSE removes what is marked \Deleted, without telling (RFC 3501 6.4.2).
                if matches!(body, CommandBody::Close)
                    && let Err(e) = self.delete_marked(None).await
                {
                    warn!(error = %e, "inbox CLOSE: the deletes failed");
                }
                if let State::Selected { key, .. } = &self.state {
                    self.state = State::Authenticated { key: key.clone() };
                }
                status_ok(tag, None, "closed")
            }
            CommandBody::Fetch {
                sequence_set,
                macro_or_item_names,
                uid,
                ..
            } => {
                let names = match macro_or_item_names {
                    MacroOrMessageDataItemNames::Macro(m) => m.expand().to_static(),
                    MacroOrMessageDataItemNames::MessageDataItemNames(n) => n,
                };
                self.fetch(drv, &sequence_set, &names, uid).await?;
                status_ok(tag, None, "FETCH done")
            }
            CommandBody::Store {
                sequence_set,
                kind,
                response,
                flags,
                uid,
                ..
            } => {
                self.store(drv, tag, &sequence_set, kind, response, &flags, uid)
                    .await?
            }
            CommandBody::Search {
                charset,
                criteria,
                uid,
            } => {
                let ok = charset.as_ref().is_none_or(|c| {
                    let c = c.as_ref().to_ascii_uppercase();
                    c == "UTF-8" || c == "US-ASCII"
                });
                if ok {
                    self.search(drv, tag, criteria, uid).await?
                } else {
                    status_no(tag, Some(Code::BadCharset { allowed: vec![] }), "use UTF-8")
                }
            }
            _ => status_bad(tag, "not supported by this inbox"),
        };
        drv.server().enqueue_status(status);
        Ok(After::Continue)
    }

    /// SASL PLAIN (RFC 4616): `authzid NUL authcid NUL password`; acting for another is
    /// refused.
    async fn plain(&mut self, tag: Tag<'static>, message: &[u8]) -> Status<'static> {
        let mut parts = message.splitn(3, |&b| b == 0);
        let (Some(authz), Some(user), Some(password)) = (parts.next(), parts.next(), parts.next())
        else {
            return status_bad(tag, "malformed PLAIN credentials");
        };
        if !authz.is_empty() && authz != user {
            return status_no(
                tag,
                code("AUTHORIZATIONFAILED"),
                "cannot act as another user",
            );
        }
        let user = String::from_utf8_lossy(user).into_owned();
        self.login(tag, &user, password.to_vec()).await
    }

    async fn login(&mut self, tag: Tag<'static>, user: &str, password: Vec<u8>) -> Status<'static> {
        let failed = |tag| {
            status_no(
                tag,
                code("AUTHENTICATIONFAILED"),
                "wrong user name or password",
            )
        };
        if !self.tls {
            return status_no(tag, code("PRIVACYREQUIRED"), "LOGIN only after STARTTLS");
        }
        if !matches!(self.state, State::NotAuthenticated) {
            return status_bad(tag, "logged in already");
        }
        let Some(key) = mailbox_key(user) else {
            return failed(tag);
        };
        match self.inbox.login(&key, self.client_key, password).await {
            Ok(via) => {
                let how = match via {
                    Via::Password => "",
                    Via::Code => "one-time code",
                };
                self.record_login(&key, true, how);
                self.state = State::Authenticated { key };
                let caps = Code::Capability(capabilities(true, true));
                status_ok(tag, Some(caps), "logged in")
            }
            Err(r @ Refused::Locked(secs)) => {
                self.record_login(&key, false, &r.detail());
                status_no(
                    tag,
                    code("AUTHENTICATIONFAILED"),
                    &format!("too many failed logins: try again in {secs} s"),
                )
            }
            Err(r) => {
                self.record_login(&key, false, &r.detail());
                failed(tag)
            }
        }
    }

    /// A message's content when `wanted` (`Some(None)` when not), read whole within the
    /// inbox's content budget (its share is held until the value is dropped), or `None` when
    /// it left the queue meanwhile (the next NOOP reports it expunged).
    async fn content(&self, queue_id: &str, wanted: bool) -> Option<Option<budget::Whole>> {
        if !wanted {
            return Some(None);
        }
        let reader = self.inbox.store.body_reader(queue_id).await.ok()?;
        self.inbox.budget.read_whole(reader).await.ok().map(Some)
    }

    fn record_login(&self, key: &str, ok: bool, detail: &str) {
        self.inbox
            .record_login(key, self.client, "imap", ok, detail);
    }

    fn key(&self) -> Option<&str> {
        match &self.state {
            State::NotAuthenticated => None,
            State::Authenticated { key } | State::Selected { key, .. } => Some(key),
        }
    }

    async fn select(
        &mut self,
        drv: &mut Driver<Stream>,
        tag: Tag<'static>,
        mailbox: &Mailbox<'_>,
        read_only: bool,
    ) -> Result<Status<'static>, Closed> {
        let Some(key) = self.key().map(str::to_string) else {
            return Ok(status_bad(tag, "log in first"));
        };
        if *mailbox != Mailbox::Inbox {
            self.state = State::Authenticated { key };
            return Ok(status_no(tag, None, "there is only INBOX"));
        }
        let view = match self.inbox.store.inbox_mailbox(&key).await {
            Ok(m) => View::new(m),
            Err(e) => return Ok(status_no(tag, code("UNAVAILABLE"), &e.to_string())),
        };
        let s = drv.server();
        s.enqueue_data(Data::Flags(vec![
            Flag::Seen,
            Flag::Flagged,
            Flag::Deleted,
            fetch::delivered(),
        ]));
        s.enqueue_data(Data::Exists(view.exists()));
        s.enqueue_data(Data::Recent(0));
        let perm = vec![
            FlagPerm::Flag(Flag::Seen),
            FlagPerm::Flag(Flag::Flagged),
            FlagPerm::Flag(Flag::Deleted),
        ];
        let untagged =
            |c: Code<'static>| Status::ok(None, Some(c), "-").unwrap_or_else(|_| unreachable!());
        s.enqueue_status(untagged(Code::UidValidity(nz(view.uid_validity))));
        s.enqueue_status(untagged(Code::UidNext(nz(view.uid_next))));
        s.enqueue_status(untagged(Code::PermanentFlags(if read_only {
            vec![]
        } else {
            perm
        })));
        if let Some(i) = view.messages.iter().position(|m| !m.seen) {
            s.enqueue_status(untagged(Code::Unseen(nz(i as u32 + 1))));
        }
        self.state = State::Selected {
            key,
            view,
            read_only,
        };
        Ok(if read_only {
            status_ok(tag, Some(Code::ReadOnly), "EXAMINE done")
        } else {
            status_ok(tag, Some(Code::ReadWrite), "SELECT done")
        })
    }

    fn list(
        &mut self,
        drv: &mut Driver<Stream>,
        tag: Tag<'static>,
        reference: &Mailbox<'_>,
        pattern: &ListMailbox<'_>,
        lsub: bool,
    ) -> Status<'static> {
        let pattern = match pattern {
            ListMailbox::Token(t) => String::from_utf8_lossy(t.as_ref()).into_owned(),
            ListMailbox::String(s) => String::from_utf8_lossy(s.as_ref()).into_owned(),
        };
        let reference = match reference {
            Mailbox::Inbox => "INBOX".to_string(),
            Mailbox::Other(o) => String::from_utf8_lossy(o.as_ref()).into_owned(),
        };
        let delimiter = imap_next::imap_types::core::QuotedChar::try_from('/').ok();
        let data = |items, mailbox| {
            if lsub {
                Data::Lsub {
                    items,
                    delimiter,
                    mailbox,
                }
            } else {
                Data::List {
                    items,
                    delimiter,
                    mailbox,
                }
            }
        };
        if pattern.is_empty() && !lsub {
            let root = Mailbox::try_from("").unwrap_or(Mailbox::Inbox).to_static();
            drv.server()
                .enqueue_data(data(vec![FlagNameAttribute::Noselect], root));
        } else if wildcard_matches(&format!("{reference}{pattern}"), "INBOX")
            || wildcard_matches(&pattern, "INBOX")
        {
            drv.server()
                .enqueue_data(data(vec![FlagNameAttribute::Noinferiors], Mailbox::Inbox));
        }
        status_ok(tag, None, if lsub { "LSUB done" } else { "LIST done" })
    }

    async fn status(
        &mut self,
        drv: &mut Driver<Stream>,
        tag: Tag<'static>,
        mailbox: &Mailbox<'_>,
        names: &[StatusDataItemName],
    ) -> Result<Status<'static>, Closed> {
        let Some(key) = self.key().map(str::to_string) else {
            return Ok(status_bad(tag, "log in first"));
        };
        if *mailbox != Mailbox::Inbox {
            return Ok(status_no(tag, None, "there is only INBOX"));
        }
        let view = match self.inbox.store.inbox_mailbox(&key).await {
            Ok(m) => View::new(m),
            Err(e) => return Ok(status_no(tag, code("UNAVAILABLE"), &e.to_string())),
        };
        let items: Vec<StatusDataItem> = names
            .iter()
            .filter_map(|n| {
                Some(match n {
                    StatusDataItemName::Messages => StatusDataItem::Messages(view.exists()),
                    StatusDataItemName::Recent => StatusDataItem::Recent(0),
                    StatusDataItemName::UidNext => StatusDataItem::UidNext(nz(view.uid_next)),
                    StatusDataItemName::UidValidity => {
                        StatusDataItem::UidValidity(nz(view.uid_validity))
                    }
                    StatusDataItemName::Unseen => StatusDataItem::Unseen(view.unseen() as u32),
                    _ => return None,
                })
            })
            .collect();
        drv.server().enqueue_data(Data::Status {
            mailbox: Mailbox::Inbox,
            items: items.into(),
        });
        Ok(status_ok(tag, None, "STATUS done"))
    }

    /// Looks at the mailbox again and tells the client what changed.
    async fn refresh(&mut self, drv: &mut Driver<Stream>) -> Result<(), Closed> {
        let State::Selected { key, view, .. } = &mut self.state else {
            return Ok(());
        };
        let Ok(now) = self.inbox.store.inbox_mailbox(key).await else {
            return Ok(());
        };
        let changes = view.update(now);
        for seq in changes.expunged {
            drv.server().enqueue_data(Data::Expunge(nz(seq)));
        }
        if let Some(n) = changes.exists {
            drv.server().enqueue_data(Data::Exists(n));
            drv.server().enqueue_data(Data::Recent(0));
        }
        drv.flush().await
    }

    async fn idle(&mut self, drv: &mut Driver<Stream>, tag: Tag<'static>) -> Result<(), Closed> {
        if !matches!(self.state, State::Selected { .. }) {
            let _ = drv
                .server()
                .idle_reject(status_bad(tag, "select INBOX first"));
            return Ok(());
        }
        let cont = CommandContinuationRequest::basic(None, "idling")
            .unwrap_or_else(|_| unreachable!("valid text"));
        let _ = drv.server().idle_accept(cont);
        let mut wake = self.inbox.arrivals.subscribe();
        wake.mark_unchanged();
        self.refresh(drv).await?;
        loop {
            match drv.next(Some(&mut wake)).await? {
                Input::Woken => self.refresh(drv).await?,
                Input::Event(Event::IdleDoneReceived) => break,
                Input::Event(other) => debug!(?other, "unexpected while idling"),
            }
        }
        drv.server()
            .enqueue_status(status_ok(tag, None, "IDLE done"));
        Ok(())
    }

    async fn fetch(
        &mut self,
        drv: &mut Driver<Stream>,
        set: &imap_next::imap_types::sequence::SequenceSet,
        names: &[imap_next::imap_types::fetch::MessageDataItemName<'static>],
        uid: bool,
    ) -> Result<(), Closed> {
        let State::Selected {
            key,
            view,
            read_only,
        } = &mut self.state
        else {
            return Ok(());
        };
        let key = key.clone();
        let wanted: Vec<(u32, crate::queue::inbox::Held)> = view
            .select(set, uid)
            .into_iter()
            .map(|(s, m)| (s, m.clone()))
            .collect();
        let content = fetch::needs_content(names);
        let seen = fetch::marks_seen(names) && !*read_only;
        let mut newly_seen = Vec::new();
        for (seq, mut m) in wanted {
            let Some(raw) = self.content(&m.queue_id, content).await else {
                continue;
            };
            if seen && !m.seen {
                m.seen = true;
                newly_seen.push(m.uid);
            }
            let mut items = fetch::render(&m, names, raw.as_ref().map(|w| &w.raw[..]), uid);
            if newly_seen.last() == Some(&m.uid)
                && !items.iter().any(|i| matches!(i, MessageDataItem::Flags(_)))
            {
                items.push(MessageDataItem::Flags(fetch::flags(&m)));
            }
            if raw.is_some()
                && names.iter().any(|n| {
                    matches!(
                        n,
                        imap_next::imap_types::fetch::MessageDataItemName::BodyExt { .. }
                            | imap_next::imap_types::fetch::MessageDataItemName::Rfc822
                            | imap_next::imap_types::fetch::MessageDataItemName::Rfc822Text
                    )
                })
            {
                self.inbox
                    .record_read(&key, &m.queue_id, self.client, "imap");
            }
            if let Ok(items) = Vec1::try_from(items) {
                drv.server().enqueue_data(Data::Fetch {
                    seq: nz(seq),
                    items,
                });
            }
            // One message's response at a time, its content's share of the budget held
            // until the response is written.
            drv.flush().await?;
            drop(raw);
        }
        if !newly_seen.is_empty() {
            let change = FlagChange {
                seen: Some(true),
                flagged: None,
            };
            let _ = self
                .inbox
                .store
                .inbox_set_flags(&key, newly_seen.clone(), change)
                .await;
            if let State::Selected { view, .. } = &mut self.state {
                for m in view
                    .messages
                    .iter_mut()
                    .filter(|m| newly_seen.contains(&m.uid))
                {
                    m.seen = true;
                }
            }
        }
        Ok(())
    }

    #[allow(clippy::too_many_arguments)]
    async fn store(
        &mut self,
        drv: &mut Driver<Stream>,
        tag: Tag<'static>,
        set: &imap_next::imap_types::sequence::SequenceSet,
        kind: StoreType,
        response: StoreResponse,
        flags: &[Flag<'_>],
        uid: bool,
    ) -> Result<Status<'static>, Closed> {
        let State::Selected {
            key,
            view,
            read_only,
        } = &mut self.state
        else {
            return Ok(status_bad(tag, "select INBOX first"));
        };
        if *read_only {
            return Ok(status_no(
                tag,
                None,
                "INBOX was opened with EXAMINE (read-only)",
            ));
        }
        let has = |f: &Flag| flags.contains(f);
        let set_to = |present: bool| match kind {
            StoreType::Replace => Some(present),
            StoreType::Add => present.then_some(true),
            StoreType::Remove => present.then_some(false),
        };
        let change = FlagChange {
            seen: set_to(has(&Flag::Seen)),
            flagged: set_to(has(&Flag::Flagged)),
        };
        let deleted = set_to(has(&Flag::Deleted));
        let chosen: Vec<u32> = view.select(set, uid).iter().map(|(_, m)| m.uid).collect();
        if (change.seen.is_some() || change.flagged.is_some())
            && let Err(e) = self
                .inbox
                .store
                .inbox_set_flags(key, chosen.clone(), change)
                .await
        {
            return Ok(status_no(tag, code("UNAVAILABLE"), &e.to_string()));
        }
        for (i, m) in view.messages.iter_mut().enumerate() {
            if !chosen.contains(&m.uid) {
                continue;
            }
            m.seen = change.seen.unwrap_or(m.seen);
            m.flagged = change.flagged.unwrap_or(m.flagged);
            m.deleted = deleted.unwrap_or(m.deleted);
            if response == StoreResponse::Answer {
                let mut items = vec![MessageDataItem::Flags(fetch::flags(m))];
                if uid {
                    items.push(MessageDataItem::Uid(nz(m.uid)));
                }
                if let Ok(items) = Vec1::try_from(items) {
                    drv.server().enqueue_data(Data::Fetch {
                        seq: nz(i as u32 + 1),
                        items,
                    });
                }
            }
        }
        Ok(status_ok(tag, None, "STORE done"))
    }

    /// EXPUNGE (and UID EXPUNGE with `uids`): the messages marked `\Deleted` leave this
    /// user's inbox; what else happens is the domain's `inbox_delete`.
    async fn expunge(
        &mut self,
        drv: &mut Driver<Stream>,
        tag: Tag<'static>,
        uids: Option<&imap_next::imap_types::sequence::SequenceSet>,
    ) -> Result<Status<'static>, Closed> {
        if let State::Selected {
            read_only: true, ..
        } = self.state
        {
            return Ok(status_no(
                tag,
                None,
                "INBOX was opened with EXAMINE (read-only)",
            ));
        }
        if let Err(e) = self.delete_marked(uids).await {
            return Ok(status_no(tag, code("UNAVAILABLE"), &e.to_string()));
        }
        self.refresh(drv).await?;
        Ok(status_ok(tag, None, "EXPUNGE done"))
    }

    /// Deletes the selected mailbox's messages marked `\Deleted` (within `uids` if given)
    /// as the domain's `inbox_delete` says; nothing when EXAMINEd.
    async fn delete_marked(
        &mut self,
        uids: Option<&imap_next::imap_types::sequence::SequenceSet>,
    ) -> Result<(), crate::queue::StoreError> {
        let State::Selected {
            key,
            view,
            read_only: false,
        } = &self.state
        else {
            return Ok(());
        };
        let largest = view.messages.last().map_or(0, |m| m.uid);
        let ids: Vec<String> = view
            .messages
            .iter()
            .filter(|m| m.deleted && uids.is_none_or(|s| mailbox::contains(s, m.uid, largest)))
            .map(|m| m.queue_id.clone())
            .collect();
        if ids.is_empty() {
            return Ok(());
        }
        self.inbox.delete(key, ids, self.client, "imap").await
    }

    async fn search(
        &mut self,
        drv: &mut Driver<Stream>,
        tag: Tag<'static>,
        criteria: Vec1<SearchKey<'static>>,
        uid: bool,
    ) -> Result<Status<'static>, Closed> {
        let State::Selected { view, .. } = &self.state else {
            return Ok(status_bad(tag, "select INBOX first"));
        };
        let key = SearchKey::And(criteria);
        let content = mailbox::needs_content(&key);
        let mut found = Vec::new();
        for (i, m) in view.messages.iter().enumerate() {
            let seq = i as u32 + 1;
            let Some(raw) = self.content(&m.queue_id, content).await else {
                continue;
            };
            let c = raw.as_ref().map(|w| mailbox::Content {
                raw: &w.raw,
                headers: fetch::search_headers(&w.raw),
            });
            match mailbox::matches(&key, seq, m, view, c.as_ref()) {
                Ok(true) => found.push(nz(if uid { m.uid } else { seq })),
                Ok(false) => {}
                Err(e) => return Ok(status_bad(tag, &e)),
            }
        }
        drv.server().enqueue_data(Data::Search(found));
        Ok(status_ok(tag, None, "SEARCH done"))
    }
}

/// IMAP LIST wildcards: `*` anything, `%` anything but the delimiter; case-insensitive for
/// INBOX.
fn wildcard_matches(pattern: &str, name: &str) -> bool {
    fn go(p: &[u8], n: &[u8]) -> bool {
        match p.split_first() {
            None => n.is_empty(),
            Some((b'*', rest)) => (0..=n.len()).any(|i| go(rest, &n[i..])),
            Some((b'%', rest)) => (0..=n.len())
                .take_while(|&i| i == 0 || n[i - 1] != b'/')
                .any(|i| go(rest, &n[i..])),
            Some((c, rest)) => {
                n.first().is_some_and(|d| d.eq_ignore_ascii_case(c)) && go(rest, &n[1..])
            }
        }
    }
    pattern.len() <= 100 && go(pattern.as_bytes(), name.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::wildcard_matches;

    #[test]
    fn list_patterns() {
        assert!(wildcard_matches("*", "INBOX"));
        assert!(wildcard_matches("%", "INBOX"));
        assert!(wildcard_matches("inbox", "INBOX"));
        assert!(wildcard_matches("IN*", "INBOX"));
        assert!(!wildcard_matches("Sent", "INBOX"));
        assert!(!wildcard_matches("", "INBOX"));
    }
}
