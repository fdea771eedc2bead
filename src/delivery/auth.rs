//! SMTP AUTH to a primary that only accepts authenticated relays (RFC 4954, PLAIN or LOGIN),
//! and only inside TLS: credentials never cross the network in clear.

use super::client::{Client, ClientError};
use std::fmt;

/// A user name and password for one route.
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    pub user: String,
    pub password: String,
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Credentials({}, ***)", self.user)
    }
}

/// Standard base64 with padding.
pub fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |acc, (i, &b)| acc | (u32::from(b) << (16 - 8 * i)));
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// Decodes standard base64 (padding optional); None on any other character.
pub fn base64_decode(text: &str) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(text.len() / 4 * 3);
    let (mut acc, mut bits) = (0u32, 0u32);
    for c in text.trim_end_matches('=').bytes() {
        let v = match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            _ => return None,
        };
        acc = (acc << 6) | u32::from(v);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    Some(out)
}

/// Authenticates on an open, encrypted session.
pub async fn authenticate(c: &mut Client, creds: &Credentials) -> Result<(), ClientError> {
    if c.tls.is_none() {
        return Err(ClientError::TlsRequired {
            host: c.host.clone(),
            reason: "credentials are only sent inside TLS".into(),
        });
    }
    let t = c.timeouts().command;
    let refused = |c: &Client, reply| ClientError::Refused {
        host: c.host.clone(),
        what: "AUTH",
        reply,
    };
    if c.caps.auth_plain {
        let token = base64(format!("\0{}\0{}", creds.user, creds.password).as_bytes());
        c.send(format!("AUTH PLAIN {token}\r\n").as_bytes(), "AUTH")
            .await?;
        let r = c.read_reply(t, "the AUTH reply").await?;
        return if r.code == 235 {
            Ok(())
        } else {
            Err(refused(c, r))
        };
    }
    if c.caps.auth_login {
        c.send(b"AUTH LOGIN\r\n", "AUTH").await?;
        for secret in [&creds.user, &creds.password] {
            let r = c.read_reply(t, "the AUTH reply").await?;
            if r.code != 334 {
                return Err(refused(c, r));
            }
            c.send(
                format!("{}\r\n", base64(secret.as_bytes())).as_bytes(),
                "AUTH",
            )
            .await?;
        }
        let r = c.read_reply(t, "the AUTH reply").await?;
        return if r.code == 235 {
            Ok(())
        } else {
            Err(refused(c, r))
        };
    }
    Err(ClientError::Protocol {
        host: c.host.clone(),
        detail: "the primary offers no AUTH PLAIN or LOGIN".into(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_vectors() {
        assert_eq!(base64(b""), "");
        assert_eq!(base64(b"f"), "Zg==");
        assert_eq!(base64(b"fo"), "Zm8=");
        assert_eq!(base64(b"foo"), "Zm9v");
        assert_eq!(base64(b"foobar"), "Zm9vYmFy");
        assert_eq!(base64(b"\0user\0pass"), "AHVzZXIAcGFzcw==");
        for s in [&b""[..], b"f", b"fo", b"foo", b"foobar", b"\0user\0pass"] {
            assert_eq!(base64_decode(&base64(s)).as_deref(), Some(s));
        }
        assert_eq!(base64_decode("Zm9v!"), None);
    }

    #[test]
    fn credentials_do_not_print_the_password() {
        let c = Credentials {
            user: "relay".into(),
            password: "s3cret".into(),
        };
        assert!(!format!("{c:?}").contains("s3cret"));
    }
}
