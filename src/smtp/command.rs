//! SMTP commands as the server receives them: one line (CRLF removed) → [`Command`].
//! MAIL and RCPT keep their ESMTP parameters both parsed and as raw text, since mx2 relays the
//! parameters it received verbatim.

/// One ESMTP parameter, `KEYWORD[=value]`; the keyword is upper-cased.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Param {
    pub keyword: String,
    pub value: Option<String>,
}

impl Param {
    /// The parameter as it goes on the wire.
    pub fn to_wire(&self) -> String {
        match &self.value {
            Some(v) => format!("{}={}", self.keyword, v),
            None => self.keyword.clone(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    Ehlo(String),
    Helo(String),
    /// The text inside `<>` and the parameters.
    Mail {
        path: String,
        params: Vec<Param>,
    },
    Rcpt {
        path: String,
        params: Vec<Param>,
    },
    Data,
    Bdat {
        size: u64,
        last: bool,
    },
    Rset,
    Noop,
    Quit,
    Vrfy,
    Expn,
    Help,
    StartTls,
    Auth,
    Etrn(String),
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CommandError {
    #[error("command not recognized")]
    Unknown,
    #[error("syntax: {0}")]
    Syntax(&'static str),
    #[error("bad parameter syntax")]
    BadParam,
    #[error("8-bit or control characters in a command")]
    BadBytes,
}

/// Parses one command line (without its CRLF).
pub fn parse(line: &[u8]) -> Result<Command, CommandError> {
    // Commands are ASCII except inside MAIL/RCPT paths (SMTPUTF8); NUL and bare CR/LF never.
    if line.iter().any(|&b| b == 0 || b == b'\r' || b == b'\n') {
        return Err(CommandError::BadBytes);
    }
    let text = std::str::from_utf8(line).map_err(|_| CommandError::BadBytes)?;
    let (verb, rest) = match text.find(' ') {
        Some(i) => (&text[..i], &text[i + 1..]),
        None => (text, ""),
    };
    let arg = rest.trim();
    let verb = verb.to_ascii_uppercase();
    let no_arg = |cmd: Command, syntax: &'static str| {
        if arg.is_empty() {
            Ok(cmd)
        } else {
            Err(CommandError::Syntax(syntax))
        }
    };
    match verb.as_str() {
        "EHLO" | "HELO" => {
            // A domain is at most 255 octets (RFC 5321 §4.5.3.1.2); a longer name would
            // make mx2's Received: line exceed RFC 5322's 998.
            if arg.is_empty() || arg.len() > 255 || arg.contains([' ', '\t']) || !arg.is_ascii() {
                return Err(CommandError::Syntax(if verb == "EHLO" {
                    "EHLO domain"
                } else {
                    "HELO domain"
                }));
            }
            Ok(if verb == "EHLO" {
                Command::Ehlo(arg.to_string())
            } else {
                Command::Helo(arg.to_string())
            })
        }
        "MAIL" => {
            let (path, params) = path_and_params(rest, "FROM:")
                .ok_or(CommandError::Syntax("MAIL FROM:<address> [parameters]"))?;
            Ok(Command::Mail {
                path,
                params: parse_params(params)?,
            })
        }
        "RCPT" => {
            let (path, params) = path_and_params(rest, "TO:")
                .ok_or(CommandError::Syntax("RCPT TO:<address> [parameters]"))?;
            Ok(Command::Rcpt {
                path,
                params: parse_params(params)?,
            })
        }
        "DATA" => no_arg(Command::Data, "DATA"),
        "BDAT" => {
            let mut words = arg.split_ascii_whitespace();
            let size = words
                .next()
                .filter(|w| !w.is_empty() && w.len() <= 19 && w.bytes().all(|b| b.is_ascii_digit()))
                .and_then(|w| w.parse::<u64>().ok())
                .ok_or(CommandError::Syntax("BDAT size [LAST]"))?;
            let last = match words.next() {
                None => false,
                Some(w) if w.eq_ignore_ascii_case("LAST") => true,
                Some(_) => return Err(CommandError::Syntax("BDAT size [LAST]")),
            };
            if words.next().is_some() {
                return Err(CommandError::Syntax("BDAT size [LAST]"));
            }
            Ok(Command::Bdat { size, last })
        }
        "RSET" => no_arg(Command::Rset, "RSET"),
        "NOOP" => Ok(Command::Noop),
        "QUIT" => no_arg(Command::Quit, "QUIT"),
        "VRFY" => Ok(Command::Vrfy),
        "EXPN" => Ok(Command::Expn),
        "HELP" => Ok(Command::Help),
        "STARTTLS" => no_arg(Command::StartTls, "STARTTLS"),
        "AUTH" => Ok(Command::Auth),
        "ETRN" => Ok(Command::Etrn(arg.to_string())),
        _ => Err(CommandError::Unknown),
    }
}

/// Splits `FROM:<path> params` (space after the colon tolerated, as most servers do).
fn path_and_params<'a>(rest: &'a str, keyword: &str) -> Option<(String, &'a str)> {
    let head = rest.get(..keyword.len())?;
    if !head.eq_ignore_ascii_case(keyword) {
        return None;
    }
    let after = rest[keyword.len()..].trim_start_matches(' ');
    let inner_start = after.strip_prefix('<')?;
    // The path ends at the first '>' outside a quoted local part.
    let mut quoted = false;
    let mut esc = false;
    for (i, c) in inner_start.char_indices() {
        if esc {
            esc = false;
            continue;
        }
        match c {
            '\\' if quoted => esc = true,
            '"' => quoted = !quoted,
            '>' if !quoted => {
                let params = &inner_start[i + 1..];
                if !params.is_empty() && !params.starts_with(' ') {
                    return None;
                }
                return Some((inner_start[..i].to_string(), params));
            }
            _ => {}
        }
    }
    None
}

fn parse_params(text: &str) -> Result<Vec<Param>, CommandError> {
    let mut out = Vec::new();
    for word in text.split(' ').filter(|w| !w.is_empty()) {
        let (k, v) = match word.split_once('=') {
            Some((k, v)) => (k, Some(v.to_string())),
            None => (word, None),
        };
        if k.is_empty()
            || !k.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
            || !k.as_bytes()[0].is_ascii_alphanumeric()
        {
            return Err(CommandError::BadParam);
        }
        if let Some(v) = &v
            && (v.is_empty() || v.chars().any(|c| c == '=' || c.is_control()))
        {
            return Err(CommandError::BadParam);
        }
        out.push(Param {
            keyword: k.to_ascii_uppercase(),
            value: v,
        });
        if out.len() > 16 {
            return Err(CommandError::BadParam);
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mail_and_rcpt() {
        assert_eq!(
            parse(b"mail from:<a@b.test> SIZE=100 body=8BITMIME").unwrap(),
            Command::Mail {
                path: "a@b.test".into(),
                params: vec![
                    Param {
                        keyword: "SIZE".into(),
                        value: Some("100".into())
                    },
                    Param {
                        keyword: "BODY".into(),
                        value: Some("8BITMIME".into())
                    },
                ]
            }
        );
        assert_eq!(
            parse(b"MAIL FROM: <>").unwrap(),
            Command::Mail {
                path: "".into(),
                params: vec![]
            }
        );
        assert_eq!(
            parse(b"RCPT TO:<\"x>y\"@b.test>").unwrap(),
            Command::Rcpt {
                path: "\"x>y\"@b.test".into(),
                params: vec![]
            }
        );
        assert!(parse(b"MAIL FROM:a@b.test").is_err());
        assert!(parse(b"RCPT TO:<a@b.test>junk").is_err());
        assert!(parse(b"RCPT TO:<a@b.test> =x").is_err());
    }

    #[test]
    fn simple_commands() {
        assert_eq!(
            parse(b"EHLO client.test").unwrap(),
            Command::Ehlo("client.test".into())
        );
        assert!(parse(b"EHLO").is_err());
        assert_eq!(
            parse(b"bdat 10 last").unwrap(),
            Command::Bdat {
                size: 10,
                last: true
            }
        );
        assert!(parse(b"BDAT x").is_err());
        assert!(parse(b"BDAT 99999999999999999999999").is_err());
        assert_eq!(parse(b"QUIT").unwrap(), Command::Quit);
        assert!(parse(b"DATA x").is_err());
        assert_eq!(parse(b"FOO"), Err(CommandError::Unknown));
        assert_eq!(parse(b"NOOP\0"), Err(CommandError::BadBytes));
        assert_eq!(parse(&[0xff, 0xfe]), Err(CommandError::BadBytes));
    }
}
