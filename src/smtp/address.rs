//! RFC 5321 paths and mailboxes (`<local@domain>`), with the RFC 6531 UTF-8 extension when the
//! client asked for SMTPUTF8. Pure syntax: relay decisions live in `policy`.

use std::fmt;

/// Longest path accepted, brackets excluded (RFC 5321 §4.5.3.1.3).
pub const MAX_PATH: usize = 256;
/// Longest local part (RFC 5321 §4.5.3.1.1).
pub const MAX_LOCAL_PART: usize = 64;

/// `local@domain`, as the client wrote it (a source route is dropped).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mailbox {
    /// The local part as written, quotes included if it was quoted.
    pub local: String,
    /// The domain as written (case kept), or an address literal `[…]`.
    pub domain: String,
}

impl Mailbox {
    /// The domain in the form used for lookups: lower case, no trailing dot.
    pub fn domain_key(&self) -> String {
        self.domain.trim_end_matches('.').to_lowercase()
    }

    /// The local part without surrounding quotes and quoted-pair escapes.
    pub fn local_unquoted(&self) -> String {
        match self
            .local
            .strip_prefix('"')
            .and_then(|s| s.strip_suffix('"'))
        {
            Some(inner) => {
                let mut out = String::new();
                let mut esc = false;
                for c in inner.chars() {
                    if esc || c != '\\' {
                        out.push(c);
                        esc = false;
                    } else {
                        esc = true;
                    }
                }
                out
            }
            None => self.local.clone(),
        }
    }

    pub fn is_address_literal(&self) -> bool {
        self.domain.starts_with('[')
    }
}

impl fmt::Display for Mailbox {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}@{}", self.local, self.domain)
    }
}

/// MAIL FROM's path: a mailbox or the null sender `<>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReversePath {
    Null,
    Mailbox(Mailbox),
}

impl fmt::Display for ReversePath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ReversePath::Null => Ok(()),
            ReversePath::Mailbox(m) => m.fmt(f),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AddressError {
    #[error("path too long")]
    TooLong,
    #[error("local part too long")]
    LocalTooLong,
    #[error("syntax error in the local part")]
    Local,
    #[error("syntax error in the domain")]
    Domain,
    #[error("missing @domain")]
    NoDomain,
    #[error("non-ASCII address without SMTPUTF8")]
    NeedsUtf8,
}

fn is_atext(c: char, utf8: bool) -> bool {
    c.is_ascii_alphanumeric() || "!#$%&'*+-/=?^_`{|}~".contains(c) || (utf8 && !c.is_ascii())
}

/// Parses the inside of `<…>` for RCPT (a mailbox is required).
pub fn parse_mailbox(inner: &str, utf8: bool) -> Result<Mailbox, AddressError> {
    if inner.len() > MAX_PATH {
        return Err(AddressError::TooLong);
    }
    if !utf8 && !inner.is_ascii() {
        return Err(AddressError::NeedsUtf8);
    }
    let inner = strip_source_route(inner)?;
    let (local, rest) = split_local(inner, utf8)?;
    if local.len() > MAX_LOCAL_PART {
        return Err(AddressError::LocalTooLong);
    }
    let domain = rest.strip_prefix('@').ok_or(AddressError::NoDomain)?;
    if !valid_domain(domain, utf8) {
        return Err(AddressError::Domain);
    }
    Ok(Mailbox {
        local: local.to_string(),
        domain: domain.to_string(),
    })
}

/// Parses the inside of `<…>` for MAIL FROM (empty means the null sender).
pub fn parse_reverse_path(inner: &str, utf8: bool) -> Result<ReversePath, AddressError> {
    if inner.is_empty() {
        return Ok(ReversePath::Null);
    }
    parse_mailbox(inner, utf8).map(ReversePath::Mailbox)
}

/// Drops an RFC 5321 source route (`@a,@b:`), which servers may ignore (§3.3, appendix C).
fn strip_source_route(s: &str) -> Result<&str, AddressError> {
    if !s.starts_with('@') {
        return Ok(s);
    }
    let (route, rest) = s.split_once(':').ok_or(AddressError::Local)?;
    for hop in route.split(',') {
        let host = hop.strip_prefix('@').ok_or(AddressError::Domain)?;
        if !valid_domain(host, true) {
            return Err(AddressError::Domain);
        }
    }
    Ok(rest)
}

/// Splits the local part off; the rest starts at the `@` (or is empty).
fn split_local(s: &str, utf8: bool) -> Result<(&str, &str), AddressError> {
    if let Some(body) = s.strip_prefix('"') {
        let mut esc = false;
        for (i, c) in body.char_indices() {
            if esc {
                if !(' '..='~').contains(&c) {
                    return Err(AddressError::Local);
                }
                esc = false;
            } else if c == '\\' {
                esc = true;
            } else if c == '"' {
                let end = 1 + i + 1;
                return Ok(s.split_at(end));
            } else if !(c == ' ' || c.is_ascii_graphic() || (utf8 && !c.is_ascii())) {
                return Err(AddressError::Local);
            }
        }
        return Err(AddressError::Local);
    }
    let end = s.rfind('@').unwrap_or(s.len());
    let local = &s[..end];
    if local.is_empty()
        || local
            .split('.')
            .any(|atom| atom.is_empty() || !atom.chars().all(|c| is_atext(c, utf8)))
    {
        return Err(AddressError::Local);
    }
    Ok(s.split_at(end))
}

/// A domain name (LDH labels, U-labels with SMTPUTF8) or an address literal.
fn valid_domain(d: &str, utf8: bool) -> bool {
    if let Some(lit) = d.strip_prefix('[').and_then(|x| x.strip_suffix(']')) {
        if let Some(v6) = lit.strip_prefix("IPv6:") {
            return v6.parse::<std::net::Ipv6Addr>().is_ok();
        }
        return lit.parse::<std::net::Ipv4Addr>().is_ok();
    }
    let d = d.strip_suffix('.').unwrap_or(d);
    !d.is_empty()
        && d.len() <= 255
        && d.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label.chars().all(|c| {
                    c.is_ascii_alphanumeric()
                        || c == '-'
                        || (utf8 && !c.is_ascii() && c.is_alphanumeric())
                })
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_and_quoted() {
        let m = parse_mailbox("User.Name+tag@Example.TEST", false).unwrap();
        assert_eq!(m.local, "User.Name+tag");
        assert_eq!(m.domain_key(), "example.test");
        let m = parse_mailbox("\"a b@c\"@example.test", false).unwrap();
        assert_eq!(m.local_unquoted(), "a b@c");
        assert_eq!(m.to_string(), "\"a b@c\"@example.test");
    }

    #[test]
    fn source_route_is_dropped() {
        let m = parse_mailbox("@relay.test,@b.test:u@example.test", false).unwrap();
        assert_eq!(m.to_string(), "u@example.test");
    }

    #[test]
    fn rejects_bad_syntax() {
        assert_eq!(parse_mailbox("user", false), Err(AddressError::NoDomain));
        assert!(parse_mailbox("user@host@example.test", false).is_err());
        assert!(parse_mailbox("a..b@example.test", false).is_err());
        assert!(parse_mailbox("a@-bad.test", false).is_err());
        assert!(parse_mailbox("a@ex ample.test", false).is_err());
        assert_eq!(
            parse_mailbox("jö@example.test", false),
            Err(AddressError::NeedsUtf8)
        );
        assert!(parse_mailbox("jö@exämple.test", true).is_ok());
        assert!(parse_mailbox(&format!("{}@x.test", "a".repeat(65)), false).is_err());
        assert!(
            parse_mailbox("a@[127.0.0.1]", false)
                .unwrap()
                .is_address_literal()
        );
        assert!(parse_mailbox("a@[300.0.0.1]", false).is_err());
    }

    #[test]
    fn null_sender() {
        assert_eq!(parse_reverse_path("", false), Ok(ReversePath::Null));
    }
}
