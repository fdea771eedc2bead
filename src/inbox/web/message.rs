//! What the web inbox shows of a stored message, pure: the header summary a list row needs,
//! the message view (headers, the HTML body sanitized with `ammonia` or the plain text
//! body, the attachments), one attachment's content, and safe download file names. Parsed
//! with `mail-parser`; nothing here trusts the message.

use mail_parser::{Address, Message, MessageParser, MimeHeaders};
use std::borrow::Cow;
use std::collections::HashSet;

/// Header fields shown at most this long (characters).
const MAX_FIELD: usize = 300;

/// A list row's fields from the message's header.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Summary {
    pub from: String,
    pub subject: String,
}

/// How a message reads in the view.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Shown {
    pub from: String,
    pub to: String,
    pub cc: String,
    pub date: String,
    pub subject: String,
    pub body: Body,
    pub attachments: Vec<Attachment>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum Body {
    /// Sanitized HTML, safe to put into the page as it is.
    Html(String),
    Text(String),
    #[default]
    Empty,
}

/// An attachment as the view lists it; `index` is its place among the message's
/// attachments (the download's URL).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attachment {
    pub index: usize,
    pub name: String,
    pub size: u64,
}

fn short(s: &str) -> String {
    let s: String = s.chars().filter(|c| !c.is_control()).collect();
    match s.char_indices().nth(MAX_FIELD) {
        Some((at, _)) => format!("{}…", &s[..at]),
        None => s,
    }
}

/// `Name <address>, …` (names and addresses decoded).
fn addresses(a: Option<&Address>) -> String {
    let Some(a) = a else {
        return String::new();
    };
    let list: Vec<String> = a
        .iter()
        .map(|x| match (x.name(), x.address()) {
            (Some(n), Some(ad)) => format!("{n} <{ad}>"),
            (None, Some(ad)) => ad.to_string(),
            (Some(n), None) => n.to_string(),
            (None, None) => String::new(),
        })
        .filter(|s| !s.is_empty())
        .collect();
    short(&list.join(", "))
}

fn parse(raw: &[u8]) -> Option<Message<'_>> {
    MessageParser::default().parse(raw)
}

/// From and Subject of a message's header (`head`: its start, the header at least).
pub fn summary(head: &[u8]) -> Summary {
    let Some(m) = parse(head) else {
        return Summary::default();
    };
    Summary {
        from: addresses(m.from()),
        subject: short(m.subject().unwrap_or("")),
    }
}

/// The view of a whole message.
pub fn show(raw: &[u8]) -> Shown {
    let Some(m) = parse(raw) else {
        return Shown {
            body: Body::Text(String::from_utf8_lossy(raw).into_owned()),
            ..Shown::default()
        };
    };
    // mail-parser makes an HTML body out of a text one when there is none: only a real
    // text/html part counts as HTML.
    let body = match m.html_part(0).filter(|p| p.is_text_html()) {
        Some(p) => Body::Html(sanitize(p.text_contents().unwrap_or(""))),
        None => match m.body_text(0) {
            Some(t) => Body::Text(t.into_owned()),
            None => Body::Empty,
        },
    };
    let attachments = m
        .attachments()
        .enumerate()
        .map(|(index, p)| Attachment {
            index,
            name: safe_name(p.attachment_name(), index),
            size: p.contents().len() as u64,
        })
        .collect();
    Shown {
        from: addresses(m.from()),
        to: addresses(m.to()),
        cc: addresses(m.cc()),
        date: m.date().map(|d| d.to_rfc822()).unwrap_or_default(),
        subject: short(m.subject().unwrap_or("")),
        body,
        attachments,
    }
}

/// Attachment `index` of a message: its safe file name and decoded content.
pub fn attachment(raw: &[u8], index: usize) -> Option<(String, Vec<u8>)> {
    let m = parse(raw)?;
    let p = m.attachments().nth(index)?;
    Some((safe_name(p.attachment_name(), index), p.contents().to_vec()))
}

/// A file name safe to offer for download: letters, digits, `.`, `-` and `_` of the name
/// the message gives (others become `_`), no leading dot, at most 100 characters; without
/// a usable name `attachment-N.bin`.
pub fn safe_name(name: Option<&str>, index: usize) -> String {
    let base = name.unwrap_or("").rsplit(['/', '\\']).next().unwrap_or("");
    let cleaned: String = base
        .chars()
        .map(|c| {
            if c.is_alphanumeric() && c.is_ascii() || matches!(c, '.' | '-' | '_') {
                c
            } else {
                '_'
            }
        })
        .take(100)
        .collect();
    let cleaned = cleaned.trim_start_matches('.').to_string();
    if cleaned.chars().all(|c| c == '_' || c == '.') {
        format!("attachment-{}.bin", index + 1)
    } else {
        cleaned
    }
}

/// An HTML body made safe to show inside the inbox's page: no script, styles, event
/// handlers, forms, frames or objects (ammonia keeps only its list of harmless tags and
/// attributes), links that open without telling the target where they came from, and no
/// image sources at all (a remote image tells the sender the mail was read; `cid:` parts
/// are not served).
pub fn sanitize(html: &str) -> String {
    let mut b = ammonia::Builder::default();
    b.url_relative(ammonia::UrlRelative::Deny)
        .url_schemes(HashSet::from(["http", "https", "mailto"]))
        .link_rel(Some("noopener noreferrer"))
        .attribute_filter(|_, attribute, value| {
            (!matches!(attribute, "src" | "srcset" | "background" | "poster"))
                .then_some(Cow::Borrowed(value))
        });
    b.clean(html).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAIL: &[u8] = b"From: =?utf-8?q?J=C3=B6?= <jo@sender.test>\r\nTo: al@x.test, Bo <bo@x.test>\r\nSubject: Report\r\nDate: Wed, 2 Dec 2026 08:00:00 +0000\r\nMIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=\"b1\"\r\n\r\n--b1\r\nContent-Type: multipart/alternative; boundary=\"b2\"\r\n\r\n--b2\r\nContent-Type: text/plain\r\n\r\nplain words\r\n--b2\r\nContent-Type: text/html\r\n\r\n<p onclick=\"x()\">Hello <b>there</b></p><script>document.title='pwned'</script><img src=\"http://tracker.example/t.png\" alt=\"t\"><form action=\"http://e.example\"><input name=p></form><iframe src=\"http://e.example\"></iframe><object data=\"x\"></object><a href=\"javascript:alert(1)\">j</a><a href=\"https://ok.example/\">ok</a><style>p{}</style>\r\n--b2--\r\n--b1\r\nContent-Type: application/pdf; name=\"../../etc/pass wd.pdf\"\r\nContent-Disposition: attachment; filename=\"../../etc/pass wd.pdf\"\r\nContent-Transfer-Encoding: base64\r\n\r\nJVBERi0xLjQK\r\n--b1--\r\n";

    #[test]
    fn a_message_reads_safely() {
        let s = show(MAIL);
        assert_eq!(s.from, "Jö <jo@sender.test>");
        assert_eq!(s.to, "al@x.test, Bo <bo@x.test>");
        assert_eq!(s.subject, "Report");
        assert!(s.date.contains("2026"), "{}", s.date);
        let Body::Html(h) = &s.body else {
            panic!("{:?}", s.body)
        };
        assert!(h.contains("Hello <b>there</b>"), "{h}");
        for bad in [
            "script",
            "pwned",
            "onclick",
            "tracker",
            "<form",
            "<input",
            "<iframe",
            "<object",
            "javascript",
            "<style",
            "src=",
        ] {
            assert!(!h.contains(bad), "{bad} in {h}");
        }
        assert!(
            h.contains("href=\"https://ok.example/\"") && h.contains("noopener"),
            "{h}"
        );
        assert_eq!(
            s.attachments,
            [Attachment {
                index: 0,
                name: "pass_wd.pdf".into(),
                size: 9
            }]
        );
        assert_eq!(
            attachment(MAIL, 0),
            Some(("pass_wd.pdf".into(), b"%PDF-1.4\n".to_vec()))
        );
        assert_eq!(attachment(MAIL, 1), None);
        let head = &MAIL[..MAIL.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4];
        assert_eq!(
            summary(head),
            Summary {
                from: "Jö <jo@sender.test>".into(),
                subject: "Report".into()
            }
        );
    }

    #[test]
    fn plain_text_stays_text() {
        let s = show(b"From: a@b.test\r\nSubject: hi\r\n\r\n<b>not html</b>\r\n");
        assert_eq!(s.body, Body::Text("<b>not html</b>\r\n".into()));
        assert!(s.attachments.is_empty());
        let s = show(b"");
        assert_eq!(s.subject, "");
    }

    #[test]
    fn download_names() {
        assert_eq!(safe_name(Some("report.pdf"), 0), "report.pdf");
        assert_eq!(safe_name(Some("..\\..\\win.ini"), 0), "win.ini");
        assert_eq!(safe_name(Some(".htaccess"), 0), "htaccess");
        assert_eq!(safe_name(Some("a\"b;c\r\n.txt"), 0), "a_b_c__.txt");
        assert_eq!(safe_name(Some("Ünïcødé.txt"), 0), "_n_c_d_.txt");
        assert_eq!(safe_name(Some("..."), 2), "attachment-3.bin");
        assert_eq!(safe_name(None, 0), "attachment-1.bin");
        assert_eq!(safe_name(Some(&"x".repeat(500)), 0).len(), 100);
    }
}
