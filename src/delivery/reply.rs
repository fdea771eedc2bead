//! A primary's reply as delivery results carry it and the queue stores it: the code, the
//! enhanced status code (RFC 3463: class.subject.detail) when there is one, and the text, on
//! one line (`550 5.1.1 no such user`). Parsed once, so consumers ask typed questions (is
//! this an unknown user? which DSN status?) instead of matching strings.
//!
//! Pure: no I/O. May use [`crate::smtp::Reply`]; must never decide what a reply means for a
//! recipient (that is the scheduler's recording).

use crate::smtp::Reply;
use std::fmt;

/// An enhanced status code, `class.subject.detail` (RFC 3463), written without leading
/// zeros.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Enhanced {
    /// 2 (success), 4 (persistent transient) or 5 (permanent).
    pub class: u8,
    pub subject: u16,
    pub detail: u16,
}

impl Enhanced {
    /// `5.1.1`: the mailbox does not exist.
    pub const UNKNOWN_USER: Enhanced = Enhanced {
        class: 5,
        subject: 1,
        detail: 1,
    };

    /// `x.y.z` with x one of 2, 4, 5 and y, z one to three digits; None for anything else,
    /// including numbers written with leading zeros (they stay part of the text, so the line
    /// reads back exactly as it came).
    pub fn parse(s: &str) -> Option<Self> {
        let mut parts = s.split('.');
        let (Some(a), Some(b), Some(c), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return None;
        };
        let class = match a {
            "2" => 2,
            "4" => 4,
            "5" => 5,
            _ => return None,
        };
        let number = |p: &str| -> Option<u16> {
            let canonical = (1..=3).contains(&p.len())
                && p.bytes().all(|b| b.is_ascii_digit())
                && (p == "0" || !p.starts_with('0'));
            canonical.then(|| p.parse().ok()).flatten()
        };
        Some(Self {
            class,
            subject: number(b)?,
            detail: number(c)?,
        })
    }
}

impl fmt::Display for Enhanced {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}.{}", self.class, self.subject, self.detail)
    }
}

/// One reply on one line: `code [x.y.z] text`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemoteReply {
    pub code: u16,
    pub enhanced: Option<Enhanced>,
    /// The text after the code and the enhanced status code; a multi-line reply's lines
    /// joined with ` / `.
    pub text: String,
}

impl RemoteReply {
    /// A reply line as stored (`550 5.1.1 no such user`, `421 closing`, `250`): three digits
    /// from 200 to 599, then the end or a space. None for anything else (a local note such as
    /// `held: …` or a connection error).
    pub fn parse(line: &str) -> Option<Self> {
        let code = line.get(..3)?;
        if !code.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        let code: u16 = code.parse().ok()?;
        if !(200..600).contains(&code) {
            return None;
        }
        let rest = match line.get(3..)? {
            "" => "",
            r => r.strip_prefix(' ')?,
        };
        let (first, after) = rest.split_once(' ').unwrap_or((rest, ""));
        Some(match Enhanced::parse(first) {
            Some(e) => Self {
                code,
                enhanced: Some(e),
                text: after.to_string(),
            },
            None => Self {
                code,
                enhanced: None,
                text: rest.to_string(),
            },
        })
    }

    /// A reply read from a primary (or made up locally in its place).
    pub fn of(reply: &Reply) -> Self {
        let text = reply.lines.join(" / ");
        match Enhanced::parse(&reply.status) {
            Some(e) => Self {
                code: reply.code,
                enhanced: Some(e),
                text,
            },
            None if reply.status.is_empty() => Self {
                code: reply.code,
                enhanced: None,
                text,
            },
            // Written unusually (leading zeros): kept as text, so the line stays as sent.
            None => Self {
                code: reply.code,
                enhanced: None,
                text: format!("{} {text}", reply.status),
            },
        }
    }

    pub fn is_permanent(&self) -> bool {
        self.code >= 500
    }

    /// The primary says the mailbox does not exist (`5.1.1`).
    pub fn is_unknown_user(&self) -> bool {
        self.enhanced == Some(Enhanced::UNKNOWN_USER)
    }
}

/// The status for a delivery status notification: the reply's enhanced status code, or a
/// generic one (`5.0.0`, `4.0.0`) when it carries none or there is no reply.
pub fn dsn_status(reply: Option<&RemoteReply>, permanent: bool) -> String {
    match reply.and_then(|r| r.enhanced) {
        Some(e) => e.to_string(),
        None if permanent => "5.0.0".into(),
        None => "4.0.0".into(),
    }
}

impl fmt::Display for RemoteReply {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.enhanced {
            Some(e) => write!(f, "{} {e} {}", self.code, self.text),
            None => write!(f, "{} {}", self.code, self.text),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_code_status_and_text() {
        let r = RemoteReply::parse("550 5.1.1 no such user").unwrap();
        assert_eq!(
            (r.code, r.enhanced, r.text.as_str()),
            (550, Some(Enhanced::UNKNOWN_USER), "no such user")
        );
        assert!(r.is_unknown_user() && r.is_permanent());
        let r = RemoteReply::parse("421 closing").unwrap();
        assert_eq!(
            (r.code, r.enhanced, r.text.as_str()),
            (421, None, "closing")
        );
        let r = RemoteReply::parse("250").unwrap();
        assert_eq!((r.code, r.enhanced, r.text.as_str()), (250, None, ""));
        let r = RemoteReply::parse("451 4.7.1").unwrap();
        assert_eq!(r.enhanced.map(|e| e.to_string()).as_deref(), Some("4.7.1"));
    }

    #[test]
    fn not_a_reply() {
        for line in [
            "",
            "55",
            "held: the primary is down",
            "expired: queue lifetime exceeded",
            "127.0.0.1:25: connection lost during DATA",
            "2500 x",
            "199 too low",
            "600 too high",
            "550x",
        ] {
            assert_eq!(RemoteReply::parse(line), None, "{line}");
        }
    }

    #[test]
    fn odd_status_codes_stay_text() {
        for (line, text) in [
            ("550 5.01.1 leading zero", "5.01.1 leading zero"),
            ("550 5.1 two parts", "5.1 two parts"),
            ("550 3.1.1 no such class", "3.1.1 no such class"),
            ("550 no 5.1.1 here", "no 5.1.1 here"),
            ("550 5.1.1000 too long", "5.1.1000 too long"),
        ] {
            let r = RemoteReply::parse(line).unwrap();
            assert_eq!((r.enhanced, r.text.as_str()), (None, text), "{line}");
            assert!(!r.is_unknown_user());
        }
    }

    #[test]
    fn reads_back_exactly_as_written() {
        for line in [
            "550 5.1.1 no such user",
            "550 5.1.1 ",
            "451 4.7.1",
            "250 ",
            "250",
            "421 4.4.2 closing / try later",
            "550 5.01.1 leading zero",
            "554 5.0.0 delivery cancelled by the administrator of mx2.test",
        ] {
            let r = RemoteReply::parse(line).unwrap();
            // `250` and `451 4.7.1` gain the separator a reply line carries after the code.
            let expected = if line.len() == 3 || line == "451 4.7.1" {
                format!("{line} ")
            } else {
                line.to_string()
            };
            assert_eq!(r.to_string(), expected);
        }
    }

    #[test]
    fn the_wire_reply_reads_as_its_one_line_form() {
        for r in [
            Reply::new(550, "5.1.1", "no such user"),
            Reply::new(550, "5.01.1", "odd"),
            Reply::plain(421, vec!["closing".into(), "bye".into()]),
            Reply::plain(250, vec![]),
        ] {
            let typed = RemoteReply::of(&r);
            assert_eq!(typed.to_string(), r.one_line());
            assert_eq!(RemoteReply::parse(&r.one_line()), Some(typed));
        }
    }

    #[test]
    fn dsn_status_falls_back_by_class() {
        let status =
            |line: &str, permanent| dsn_status(RemoteReply::parse(line).as_ref(), permanent);
        assert_eq!(status("550 5.1.1 no such user", true), "5.1.1");
        assert_eq!(status("550 no such user", true), "5.0.0");
        assert_eq!(status("451 4.7.1 later", false), "4.7.1");
        assert_eq!(status("451 later", false), "4.0.0");
        assert_eq!(status("held: the primary is down", false), "4.0.0");
        assert_eq!(dsn_status(None, true), "5.0.0");
    }
}
