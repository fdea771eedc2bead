//! The web inbox at `/inbox/`: people read the mail held for them in a browser, without
//! JavaScript (server-rendered pages, plain forms). Served on the admin listener and, when
//! `[inbox] web_listen` is set, over HTTPS on a listener of its own (the same routes, `/`
//! leading to them). A login is the IMAP side's ([`Inbox::login`]: lockout per address and
//! client, equal-cost failures, one-time codes) and is refused over plain HTTP except on
//! loopback ([`policy`]); a session is a random cookie kept in memory ([`sessions`]), each
//! of its forms carries the session's token. A user reaches only their own mailbox
//! (`Store::inbox_mailbox` of the key they logged in as): a message is looked up in it by
//! queue id, so another's is "not found". The list is newest first, paged; a message shows
//! its text, or its HTML sanitized ([`message`]), with its attachments and the whole
//! message as downloads (`application/octet-stream`, `attachment`; the whole message is
//! streamed from the store, the pages that parse it read it within the inbox's content
//! budget, [`super::budget`]); reading is an event,
//! and sets `\Seen` as an IMAP read does; delete follows the domain's `inbox_delete`
//! ([`Inbox::delete`]). Every answer carries a strict Content-Security-Policy.

pub mod message;
pub mod pages;
pub mod policy;
pub mod sessions;

use super::Inbox;
use super::budget::Whole;
use super::login::{Refused, Via};
use crate::admin::guard::Local;
use crate::admin::listener::Conn;
use crate::queue::StoreError;
use crate::queue::body::BodyReader;
use crate::queue::inbox::{FlagChange, Held, key_domain, mailbox_key};
use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, FromRequestParts, Path, RawQuery, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Extension, middleware};
use pages::{ListPage, MessagePage};
use sessions::{Session, Sessions};
use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Form posts larger than this are refused (a login form is far smaller).
const MAX_FORM: usize = 16 * 1024;
/// How much of a message the list reads for its header.
const MAX_HEAD: usize = 64 * 1024;

const STYLE: &str = include_str!("../../../templates/inbox/style.css");

/// What the web inbox's pages share.
pub struct Web {
    pub inbox: Arc<Inbox>,
    pub hostname: String,
    pub sessions: Sessions,
}

impl Web {
    /// Sessions end after `idle` without a request (`[inbox] idle_timeout`).
    pub fn new(inbox: Arc<Inbox>, hostname: &str, idle: Duration) -> Arc<Self> {
        Arc::new(Self {
            inbox,
            hostname: hostname.to_string(),
            sessions: Sessions::new(idle),
        })
    }

    /// The session the request's cookie names, while its domain still has an inbox.
    fn session(&self, headers: &HeaderMap) -> Option<(String, Session)> {
        let cookie = policy::cookie(headers)?;
        let s = self.sessions.get(cookie, Instant::now())?;
        if !self.inbox.has_domain(key_domain(&s.key)) {
            self.sessions.close(cookie);
            return None;
        }
        Some((cookie.to_string(), s))
    }

    fn problem(&self, status: StatusCode, title: &str, detail: &str) -> Response {
        pages::problem(status, &self.hostname, title, detail)
    }

    fn not_found(&self) -> Response {
        self.problem(
            StatusCode::NOT_FOUND,
            "Not found",
            "There is no such message in your inbox (it may have been delivered or deleted meanwhile).",
        )
    }

    fn store_down(&self, e: StoreError) -> Response {
        self.problem(
            StatusCode::SERVICE_UNAVAILABLE,
            "Try again shortly",
            &format!("The mail store cannot be read right now ({e}). Try again in a minute."),
        )
    }

    /// Message `id` of `key`'s mailbox, or the answer why not.
    async fn held(&self, key: &str, id: &str) -> Result<Held, Box<Response>> {
        let mailbox = self
            .inbox
            .store
            .inbox_mailbox(key)
            .await
            .map_err(|e| Box::new(self.store_down(e)))?;
        mailbox
            .messages
            .into_iter()
            .find(|m| m.queue_id == id)
            .ok_or_else(|| Box::new(self.not_found()))
    }

    /// The content of message `id` of `key`'s mailbox, read now (an event, and `\Seen`).
    async fn read(
        &self,
        key: &str,
        id: &str,
        client: IpAddr,
    ) -> Result<(Held, BodyReader), Box<Response>> {
        let m = self.held(key, id).await?;
        let reader = self
            .inbox
            .store
            .body_reader(id)
            .await
            .map_err(|e| Box::new(self.unreadable(e)))?;
        self.inbox.record_read(key, id, client, "web");
        if !m.seen {
            let seen = FlagChange {
                seen: Some(true),
                flagged: None,
            };
            let _ = self
                .inbox
                .store
                .inbox_set_flags(key, vec![m.uid], seen)
                .await;
        }
        Ok((m, reader))
    }

    /// [`Web::read`], the content whole, within the inbox's content budget.
    async fn read_whole(
        &self,
        key: &str,
        id: &str,
        client: IpAddr,
    ) -> Result<(Held, Whole), Box<Response>> {
        let (m, reader) = self.read(key, id, client).await?;
        match self.inbox.budget.read_whole(reader).await {
            Ok(whole) => Ok((m, whole)),
            Err(e) => Err(Box::new(
                self.store_down(StoreError::Backend(e.to_string())),
            )),
        }
    }

    fn unreadable(&self, e: StoreError) -> Response {
        match e {
            StoreError::NotFound(_) => self.not_found(),
            e => self.store_down(e),
        }
    }
}

/// The inbox's routes (what the admin listener merges, outside its token check).
pub fn routes(web: Arc<Web>) -> Router {
    inner().with_state(web)
}

/// The router of `[inbox] web_listen`: the inbox's routes, `/` leading to them, and a
/// "not found" page for anything else.
pub fn standalone(web: Arc<Web>) -> Router {
    inner()
        .route("/", get(to_inbox))
        .fallback(|State(w): State<Arc<Web>>| async move {
            let mut r = w.problem(StatusCode::NOT_FOUND, "Not found", "Nothing is here.");
            policy::protect(r.headers_mut());
            r
        })
        .with_state(web)
}

fn inner() -> Router<Arc<Web>> {
    Router::new()
        .route("/inbox", get(to_inbox))
        .route("/inbox/", get(home))
        .route("/inbox/style.css", get(style))
        .route("/inbox/login", post(login))
        .route("/inbox/logout", post(logout))
        .route("/inbox/m/{id}", get(view))
        .route("/inbox/m/{id}/eml", get(eml))
        .route("/inbox/m/{id}/a/{n}", get(attachment))
        .route("/inbox/m/{id}/delete", post(delete))
        .layer(DefaultBodyLimit::max(MAX_FORM))
        .layer(middleware::map_response(|mut r: Response| async move {
            policy::protect(r.headers_mut());
            r
        }))
}

/// Where a request comes from, from its connection.
#[derive(Debug, Clone, Copy)]
struct Client {
    peer: IpAddr,
    tls: bool,
    local: Option<IpAddr>,
}

impl Client {
    fn of(conn: Option<Extension<Conn>>, local: Option<Extension<Local>>) -> Self {
        Self {
            peer: conn.map_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED), |c| c.peer.ip()),
            tls: conn.is_some_and(|c| c.tls),
            local: local.map(|l| l.0.0.ip()),
        }
    }

    fn may_log_in(&self) -> bool {
        policy::may_take_password(self.tls, self.peer, self.local)
    }
}

/// The session of a request that needs one (a page of the mailbox); without a live session
/// the request is answered with the way back to the login page.
struct LoggedIn(Session);

impl FromRequestParts<Arc<Web>> for LoggedIn {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, w: &Arc<Web>) -> Result<Self, Response> {
        match w.session(&parts.headers) {
            Some((_, s)) => Ok(LoggedIn(s)),
            None => Err(see_other("/inbox/")),
        }
    }
}

fn see_other(to: &str) -> Response {
    (StatusCode::SEE_OTHER, [(header::LOCATION, to.to_string())]).into_response()
}

async fn to_inbox() -> Response {
    see_other("/inbox/")
}

async fn style() -> Response {
    ([(header::CONTENT_TYPE, "text/css; charset=utf-8")], STYLE).into_response()
}

/// A form's fields.
fn form(body: &[u8]) -> HashMap<String, String> {
    form_urlencoded::parse(body).into_owned().collect()
}

/// Whether the form carries the session's token.
fn token_ok(fields: &HashMap<String, String>, s: &Session) -> bool {
    let given = fields.get("csrf").map_or(&b""[..], |t| t.as_bytes());
    subtle::ConstantTimeEq::ct_eq(given, s.csrf.as_bytes()).into()
}

/// The login page, or the list when logged in (`?page=N`).
async fn home(
    State(w): State<Arc<Web>>,
    conn: Option<Extension<Conn>>,
    local: Option<Extension<Local>>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
) -> Response {
    let client = Client::of(conn, local);
    let Some((_, s)) = w.session(&headers) else {
        return pages::login(StatusCode::OK, &w.hostname, "", None, !client.may_log_in());
    };
    let asked = form(query.unwrap_or_default().as_bytes())
        .get("page")
        .and_then(|p| p.parse().ok())
        .unwrap_or(1);
    let mailbox = match w.inbox.store.inbox_mailbox(&s.key).await {
        Ok(m) => m,
        Err(e) => return w.store_down(e),
    };
    let newest: Vec<&Held> = mailbox.messages.iter().rev().collect();
    let (range, page, pages) = pages::paging(newest.len(), asked);
    let mut rows = Vec::with_capacity(range.len());
    for m in &newest[range] {
        let head = match w.inbox.store.body_reader(&m.queue_id).await {
            Ok(r) => r.prefix(MAX_HEAD).await.unwrap_or_default(),
            Err(_) => Vec::new(),
        };
        let end = super::mailbox::body_start(&head);
        rows.push(pages::Row::new(m, message::summary(&head[..end])));
    }
    pages::list(ListPage {
        hostname: &w.hostname,
        address: &s.key,
        csrf: &s.csrf,
        rows,
        total: newest.len(),
        page,
        pages,
    })
}

async fn login(
    State(w): State<Arc<Web>>,
    conn: Option<Extension<Conn>>,
    local: Option<Extension<Local>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let client = Client::of(conn, local);
    if policy::cross_site(&headers) {
        return w.problem(
            StatusCode::FORBIDDEN,
            "Refused",
            "This login was sent from another web site. Open the inbox's own page and log in there.",
        );
    }
    let fields = form(&body);
    let address = fields.get("address").map_or("", |a| a.trim());
    let refuse = |status, why: &str| pages::login(status, &w.hostname, address, Some(why), false);
    if !client.may_log_in() {
        return pages::login(
            StatusCode::FORBIDDEN,
            &w.hostname,
            address,
            Some("Passwords are refused over plain HTTP: use the HTTPS address of this inbox."),
            true,
        );
    }
    let password = fields.get("password").map_or("", String::as_str);
    let wrong =
        "Wrong address or password (a one-time code works only once, and only for a while).";
    let Some(key) = mailbox_key(address).filter(|_| !password.is_empty()) else {
        return refuse(StatusCode::UNAUTHORIZED, wrong);
    };
    let client_key = crate::net::client_key(client.peer, w.inbox.ipv6_prefix);
    let outcome = w
        .inbox
        .login(&key, client_key, password.as_bytes().to_vec())
        .await;
    match outcome {
        Ok(via) => {
            let how = match via {
                Via::Password => "web",
                Via::Code => "web, one-time code",
            };
            w.inbox.record_login(&key, client.peer, "web", true, how);
            let (cookie, _) = w.sessions.open(&key, Instant::now());
            let mut r = see_other("/inbox/");
            if let Ok(v) = HeaderValue::from_str(&policy::set_cookie(&cookie, client.tls)) {
                r.headers_mut().insert(header::SET_COOKIE, v);
            }
            r
        }
        Err(r) => {
            let detail = format!("web: {}", r.detail());
            w.inbox
                .record_login(&key, client.peer, "web", false, &detail);
            match r {
                Refused::Locked(secs) => refuse(
                    StatusCode::TOO_MANY_REQUESTS,
                    &format!("Too many failed logins: try again in {secs} s."),
                ),
                Refused::Wrong(_) => refuse(StatusCode::UNAUTHORIZED, wrong),
            }
        }
    }
}

/// The answer to a form post of a session: the session, the form's fields, or why not.
fn posted(
    w: &Web,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<(String, Session, HashMap<String, String>), Box<Response>> {
    let Some((cookie, s)) = w.session(headers) else {
        return Err(Box::new(see_other("/inbox/")));
    };
    let fields = form(body);
    if policy::cross_site(headers) || !token_ok(&fields, &s) {
        return Err(Box::new(w.problem(
            StatusCode::FORBIDDEN,
            "Refused",
            "This form is out of date or was sent from another web site: open the inbox again and retry.",
        )));
    }
    Ok((cookie, s, fields))
}

async fn logout(
    State(w): State<Arc<Web>>,
    conn: Option<Extension<Conn>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let tls = conn.is_some_and(|c| c.tls);
    let (cookie, _, _) = match posted(&w, &headers, &body) {
        Ok(p) => p,
        Err(r) => return *r,
    };
    w.sessions.close(&cookie);
    let mut r = see_other("/inbox/");
    if let Ok(v) = HeaderValue::from_str(&policy::clear_cookie(tls)) {
        r.headers_mut().insert(header::SET_COOKIE, v);
    }
    r
}

async fn view(
    State(w): State<Arc<Web>>,
    LoggedIn(s): LoggedIn,
    conn: Option<Extension<Conn>>,
    Path(id): Path<String>,
) -> Response {
    let (m, whole) = match w.read_whole(&s.key, &id, Client::of(conn, None).peer).await {
        Ok(r) => r,
        Err(r) => return *r,
    };
    // Parsing and sanitizing a large message is work for a blocking thread; the content's
    // share of the budget is held until the page is made.
    let Ok((shown, whole)) =
        tokio::task::spawn_blocking(move || (message::show(&whole.raw), whole)).await
    else {
        return w.not_found();
    };
    let drops = w.inbox.delete_policy(key_domain(&s.key))
        == Some(crate::queue::inbox::DeletePolicy::DoNotDeliver);
    let page = pages::message(MessagePage {
        hostname: &w.hostname,
        address: &s.key,
        csrf: &s.csrf,
        id: &id,
        received_at_ms: m.received_at_ms,
        shown: &shown,
        delete_drops: drops,
        delivered: m.delivered,
    });
    drop(whole);
    page
}

/// The whole message, streamed from the store (it never needs the content budget).
async fn eml(
    State(w): State<Arc<Web>>,
    LoggedIn(s): LoggedIn,
    conn: Option<Extension<Conn>>,
    Path(id): Path<String>,
) -> Response {
    match w.read(&s.key, &id, Client::of(conn, None).peer).await {
        Ok((_, reader)) => {
            let name = message::safe_name(Some(&format!("{id}.eml")), 0);
            crate::download::response(reader, "application/octet-stream", &name)
        }
        Err(r) => *r,
    }
}

async fn attachment(
    State(w): State<Arc<Web>>,
    LoggedIn(s): LoggedIn,
    conn: Option<Extension<Conn>>,
    Path((id, n)): Path<(String, usize)>,
) -> Response {
    let whole = match w.read_whole(&s.key, &id, Client::of(conn, None).peer).await {
        Ok((_, whole)) => whole,
        Err(r) => return *r,
    };
    match tokio::task::spawn_blocking(move || message::attachment(&whole.raw, n)).await {
        Ok(Some((name, bytes))) => crate::download::response(
            BodyReader::from_vec(bytes),
            "application/octet-stream",
            &name,
        ),
        _ => w.not_found(),
    }
}

async fn delete(
    State(w): State<Arc<Web>>,
    conn: Option<Extension<Conn>>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let (_, s, _) = match posted(&w, &headers, &body) {
        Ok(p) => p,
        Err(r) => return *r,
    };
    if let Err(r) = w.held(&s.key, &id).await {
        return *r;
    }
    let client = Client::of(conn, None).peer;
    match w.inbox.delete(&s.key, vec![id], client, "web").await {
        Ok(()) => see_other("/inbox/"),
        Err(e) => w.store_down(e),
    }
}
