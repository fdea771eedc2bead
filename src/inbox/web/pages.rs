//! The web inbox's pages (askama templates under `templates/inbox/`): login, the list of
//! held messages, one message, and a short error page; each answer is a complete HTML page
//! with its status. Values are escaped by the templates; only an HTML body that
//! `message::sanitize` made safe is put in as it is.

use super::message::{Body, Shown};
use crate::admin::dashboard::size;
use askama::Template;
use axum::http::StatusCode;
use axum::response::{Html, IntoResponse, Response};

/// Messages per page of the list.
pub const PAGE: usize = 50;

/// `2026-12-02 08:30 UTC`.
pub fn when(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .map(|t| t.format("%Y-%m-%d %H:%M UTC").to_string())
        .unwrap_or_default()
}

fn page(status: StatusCode, t: &impl Template) -> Response {
    match t.render() {
        Ok(html) => (status, Html(html)).into_response(),
        Err(e) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("cannot render the page: {e}\n"),
        )
            .into_response(),
    }
}

#[derive(Template)]
#[template(path = "inbox/login.html")]
struct Login<'a> {
    hostname: &'a str,
    address: &'a str,
    error: Option<&'a str>,
    /// Plain HTTP from elsewhere: no form, a warning.
    plain: bool,
}

/// The login page; `error` says why the last attempt failed.
pub fn login(
    status: StatusCode,
    hostname: &str,
    address: &str,
    error: Option<&str>,
    plain: bool,
) -> Response {
    page(
        status,
        &Login {
            hostname,
            address,
            error,
            plain,
        },
    )
}

/// One row of the list.
pub struct Row {
    pub id: String,
    pub date: String,
    pub from: String,
    pub subject: String,
    pub size: String,
    pub unread: bool,
    /// Already delivered to the primary (kept for `keep_after_delivery`).
    pub delivered: bool,
}

impl Row {
    pub fn new(m: &crate::queue::inbox::Held, summary: super::message::Summary) -> Self {
        Self {
            id: m.queue_id.clone(),
            date: when(m.received_at_ms),
            from: summary.from,
            subject: summary.subject,
            size: size(m.size),
            unread: !m.seen,
            delivered: m.delivered,
        }
    }
}

#[derive(Template)]
#[template(path = "inbox/list.html")]
struct List<'a> {
    hostname: &'a str,
    address: &'a str,
    csrf: &'a str,
    rows: Vec<Row>,
    total: usize,
    page: usize,
    pages: usize,
    prev: Option<usize>,
    next: Option<usize>,
}

/// Which messages page `page` (1-based, newest first) of `total` shows: their places in
/// the newest-first order, and the page numbers (the page asked for, clamped; how many).
pub fn paging(total: usize, page: usize) -> (std::ops::Range<usize>, usize, usize) {
    let pages = total.div_ceil(PAGE).max(1);
    let page = page.clamp(1, pages);
    let start = (page - 1) * PAGE;
    (start..(start + PAGE).min(total), page, pages)
}

pub struct ListPage<'a> {
    pub hostname: &'a str,
    pub address: &'a str,
    pub csrf: &'a str,
    pub rows: Vec<Row>,
    pub total: usize,
    pub page: usize,
    pub pages: usize,
}

pub fn list(p: ListPage<'_>) -> Response {
    page(
        StatusCode::OK,
        &List {
            hostname: p.hostname,
            address: p.address,
            csrf: p.csrf,
            prev: (p.page > 1).then(|| p.page - 1),
            next: (p.page < p.pages).then(|| p.page + 1),
            rows: p.rows,
            total: p.total,
            page: p.page,
            pages: p.pages,
        },
    )
}

struct AttachmentRow {
    index: usize,
    name: String,
    size: String,
}

#[derive(Template)]
#[template(path = "inbox/message.html")]
struct Message<'a> {
    hostname: &'a str,
    address: &'a str,
    csrf: &'a str,
    id: &'a str,
    received: String,
    m: &'a Shown,
    html: Option<&'a str>,
    text: Option<&'a str>,
    attachments: Vec<AttachmentRow>,
    delete_note: &'a str,
    delivered: bool,
}

pub struct MessagePage<'a> {
    pub hostname: &'a str,
    pub address: &'a str,
    pub csrf: &'a str,
    pub id: &'a str,
    pub received_at_ms: i64,
    pub shown: &'a Shown,
    /// The domain's `inbox_delete = "do_not_deliver"`.
    pub delete_drops: bool,
    /// Already delivered to the primary (kept for `keep_after_delivery`).
    pub delivered: bool,
}

pub fn message(p: MessagePage<'_>) -> Response {
    let (html, text) = match &p.shown.body {
        Body::Html(h) => (Some(h.as_str()), None),
        Body::Text(t) => (None, Some(t.as_str())),
        Body::Empty => (None, None),
    };
    page(
        StatusCode::OK,
        &Message {
            hostname: p.hostname,
            address: p.address,
            csrf: p.csrf,
            id: p.id,
            received: when(p.received_at_ms),
            m: p.shown,
            html,
            text,
            attachments: p
                .shown
                .attachments
                .iter()
                .map(|a| AttachmentRow {
                    index: a.index,
                    name: a.name.clone(),
                    size: size(a.size),
                })
                .collect(),
            delivered: p.delivered,
            delete_note: if p.delivered {
                "removes it from this inbox (it has been delivered already)"
            } else if p.delete_drops {
                "removes it here and it will NOT be delivered to your mail server"
            } else {
                "removes it from this inbox only; it is still delivered to your mail server"
            },
        },
    )
}

#[derive(Template)]
#[template(
    source = "{% extends \"inbox/base.html\" %}{% block title %}{{ title }}{% endblock %}{% block content %}<h1>{{ title }}</h1><p class=\"error\" id=\"error\">{{ detail }}</p><p><a href=\"/inbox/\">Back to the inbox</a></p>{% endblock %}",
    ext = "html"
)]
struct Problem<'a> {
    hostname: &'a str,
    title: &'a str,
    detail: &'a str,
}

/// A short page saying what went wrong and where to go.
pub fn problem(status: StatusCode, hostname: &str, title: &str, detail: &str) -> Response {
    page(
        status,
        &Problem {
            hostname,
            title,
            detail,
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pages_of_the_list() {
        assert_eq!(paging(0, 1), (0..0, 1, 1));
        assert_eq!(paging(50, 1), (0..50, 1, 1));
        assert_eq!(paging(51, 2), (50..51, 2, 2));
        assert_eq!(
            paging(120, 9),
            (100..120, 3, 3),
            "past the end: the last page"
        );
        assert_eq!(paging(120, 0), (0..50, 1, 3));
    }

    #[test]
    fn delivered_mail_is_marked_in_the_list() {
        let row = |delivered| Row {
            id: "q1".into(),
            date: "today".into(),
            from: "a@b".into(),
            subject: "hello".into(),
            size: "1 KB".into(),
            unread: false,
            delivered,
        };
        let render = |rows| {
            List {
                hostname: "mx2.test",
                address: "u@example.test",
                csrf: "t",
                prev: None,
                next: None,
                rows,
                total: 1,
                page: 1,
                pages: 1,
            }
            .render()
            .unwrap()
        };
        assert!(render(vec![row(true)]).contains("class=\"meta delivered\">delivered<"));
        assert!(!render(vec![row(false)]).contains("delivered<"));
    }
}
