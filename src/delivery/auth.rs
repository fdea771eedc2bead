//! SMTP AUTH to a primary that only accepts authenticated relays (RFC 4954, PLAIN or LOGIN),
//! and only inside TLS: credentials never cross the network in clear.

use super::client::{Client, ClientError};
use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
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
        let token = BASE64.encode(format!("\0{}\0{}", creds.user, creds.password).as_bytes());
        c.send(format!("AUTH PLAIN {token}\r\n").as_bytes(), "AUTH")
            .await?;
        return accepted(c, t, refused).await;
    }
    if c.caps.auth_login {
        c.send(b"AUTH LOGIN\r\n", "AUTH").await?;
        for secret in [&creds.user, &creds.password] {
            let r = c.read_reply(t, "the AUTH reply").await?;
            if r.code != 334 {
                return Err(refused(c, r));
            }
            c.send(
                format!("{}\r\n", BASE64.encode(secret.as_bytes())).as_bytes(),
                "AUTH",
            )
            .await?;
        }
        return accepted(c, t, refused).await;
    }
    Err(ClientError::Protocol {
        host: c.host.clone(),
        detail: "the primary offers no AUTH PLAIN or LOGIN".into(),
    })
}

/// The final AUTH reply: 235 is success, anything else a refusal.
async fn accepted(
    c: &mut Client,
    t: std::time::Duration,
    refused: impl Fn(&Client, crate::smtp::reply::Reply) -> ClientError,
) -> Result<(), ClientError> {
    let r = c.read_reply(t, "the AUTH reply").await?;
    if r.code == 235 {
        Ok(())
    } else {
        Err(refused(c, r))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_do_not_print_the_password() {
        let c = Credentials {
            user: "relay".into(),
            password: "s3cret".into(),
        };
        assert!(!format!("{c:?}").contains("s3cret"));
    }
}
