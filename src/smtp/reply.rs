//! SMTP replies: a code, an optional enhanced status code (RFC 3463) and text lines.
//! Formatting for the server and parsing for the client.

use std::fmt;

/// One SMTP reply, possibly multi-line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    pub code: u16,
    /// Each line's text after the code (and after the enhanced status code, if any).
    pub lines: Vec<String>,
    /// `x.y.z`, or empty for replies that carry none (greeting, EHLO).
    pub status: String,
}

impl Reply {
    /// A one-line reply with an enhanced status code.
    pub fn new(code: u16, status: &str, text: impl Into<String>) -> Self {
        Self {
            code,
            lines: vec![text.into()],
            status: status.to_string(),
        }
    }

    /// A reply without an enhanced status code (greeting, EHLO).
    pub fn plain(code: u16, lines: Vec<String>) -> Self {
        Self {
            code,
            lines,
            status: String::new(),
        }
    }

    pub fn is_positive(&self) -> bool {
        (200..400).contains(&self.code)
    }
    pub fn is_transient(&self) -> bool {
        (400..500).contains(&self.code)
    }
    pub fn is_permanent(&self) -> bool {
        self.code >= 500
    }

    /// Wire form, each line ending in CRLF.
    pub fn to_wire(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(64);
        self.write_wire(&mut out);
        out
    }

    pub fn write_wire(&self, out: &mut Vec<u8>) {
        let n = self.lines.len().max(1);
        for i in 0..n {
            let text = self.lines.get(i).map(String::as_str).unwrap_or("");
            let sep = if i + 1 == n { ' ' } else { '-' };
            let line = if self.status.is_empty() {
                format!("{}{}{}\r\n", self.code, sep, text)
            } else {
                format!("{}{}{} {}\r\n", self.code, sep, self.status, text)
            };
            out.extend_from_slice(line.as_bytes());
        }
    }

    /// The reply as one line for logs: `550 5.1.1 text`.
    pub fn one_line(&self) -> String {
        let text = self.lines.join(" / ");
        if self.status.is_empty() {
            format!("{} {}", self.code, text)
        } else {
            format!("{} {} {}", self.code, self.status, text)
        }
    }
}

impl fmt::Display for Reply {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.one_line())
    }
}

/// Why a line received from a server is not a valid reply line.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("malformed SMTP reply line: {0}")]
pub struct ReplyError(pub String);

/// Accumulates reply lines from a server until a reply is complete.
#[derive(Debug, Default)]
pub struct ReplyParser {
    code: Option<u16>,
    lines: Vec<String>,
}

/// At most this many lines in one reply (EHLO answers are the longest).
pub const MAX_REPLY_LINES: usize = 128;

impl ReplyParser {
    /// Feeds one line (without CRLF). Returns the reply when this line was the last one.
    pub fn line(&mut self, line: &[u8]) -> Result<Option<Reply>, ReplyError> {
        let result = self.line_inner(line);
        if result.is_err() {
            self.code = None;
            self.lines.clear();
        }
        result
    }

    fn line_inner(&mut self, line: &[u8]) -> Result<Option<Reply>, ReplyError> {
        let text = String::from_utf8_lossy(line);
        let bytes = line;
        if bytes.len() < 3 || !bytes[..3].iter().all(u8::is_ascii_digit) {
            return Err(ReplyError(text.into_owned()));
        }
        let code: u16 = text[..3]
            .parse()
            .map_err(|_| ReplyError(text.to_string()))?;
        if !(200..600).contains(&code) {
            return Err(ReplyError(text.into_owned()));
        }
        if let Some(c) = self.code
            && c != code
        {
            return Err(ReplyError(format!(
                "code changed inside a multi-line reply: {text}"
            )));
        }
        self.code = Some(code);
        let (last, rest) = match bytes.get(3) {
            None => (true, ""),
            Some(b' ') => (true, &text[4..]),
            Some(b'-') => (false, &text[4..]),
            Some(_) => return Err(ReplyError(text.into_owned())),
        };
        self.lines.push(rest.to_string());
        if self.lines.len() > MAX_REPLY_LINES {
            return Err(ReplyError("reply has too many lines".into()));
        }
        if !last {
            return Ok(None);
        }
        let lines = std::mem::take(&mut self.lines);
        self.code = None;
        // Split off an enhanced status code when the first line carries one of the right class.
        let mut status = String::new();
        let mut lines = lines;
        if let Some(first) = lines.first()
            && let Some((maybe, text)) = first.split_once(' ').or(Some((first.as_str(), "")))
            && is_status_code(maybe, code)
        {
            status = maybe.to_string();
            let text = text.to_string();
            lines[0] = text;
        }
        Ok(Some(Reply {
            code,
            lines,
            status,
        }))
    }
}

fn is_status_code(s: &str, code: u16) -> bool {
    let mut parts = s.split('.');
    let (Some(a), Some(b), Some(c), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return false;
    };
    let class_ok = a.len() == 1 && a.as_bytes()[0] == b'0' + (code / 100) as u8;
    class_ok
        && (1..=3).contains(&b.len())
        && (1..=3).contains(&c.len())
        && b.bytes().chain(c.bytes()).all(|x| x.is_ascii_digit())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_single_and_multi_line() {
        assert_eq!(
            Reply::new(250, "2.1.0", "OK").to_wire(),
            b"250 2.1.0 OK\r\n"
        );
        let r = Reply::plain(250, vec!["mx2".into(), "PIPELINING".into()]);
        assert_eq!(r.to_wire(), b"250-mx2\r\n250 PIPELINING\r\n");
    }

    #[test]
    fn parses_multi_line_with_status() {
        let mut p = ReplyParser::default();
        assert_eq!(p.line(b"250-first").unwrap(), None);
        let r = p.line(b"250 SIZE 100").unwrap().unwrap();
        assert_eq!(r.code, 250);
        assert_eq!(r.lines, vec!["first", "SIZE 100"]);
        let r = p.line(b"550 5.1.1 no such user").unwrap().unwrap();
        assert_eq!(
            (r.code, r.status.as_str(), r.lines[0].as_str()),
            (550, "5.1.1", "no such user")
        );
        let r = p
            .line(b"451 2.0.0 wrong class stays text")
            .unwrap()
            .unwrap();
        assert_eq!(r.status, "");
        assert!(p.line(b"hello").is_err());
        assert!(p.line(b"250x").is_err());
        let r = p.line(b"220").unwrap().unwrap();
        assert_eq!(r.code, 220);
    }
}
