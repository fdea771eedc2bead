//! The `[inbox]` table: the emergency inbox's IMAP listeners (STARTTLS and implicit TLS) and
//! the web inbox's HTTPS listener (`web_listen`), all off unless given, all needing the
//! `[tls]` certificate; login failure limits, the connection cap and the memory for messages read whole, how long a one-time
//! login code is good for, and how long delivered mail stays in the inbox
//! (`keep_after_delivery`). Which domains have an inbox is the `[[domain]] inbox` key
//! (`domain.rs`), what a user's delete does its `inbox_delete` (parsed here). Parsing and validation only; `src/inbox/` uses the result.

use super::defaults::inbox as default;
use super::{ConfigError, Ctx, HumanDuration, Size};
use crate::queue::inbox::DeletePolicy;
use serde::Deserialize;
use std::net::SocketAddr;
use std::time::Duration;
use toml::Spanned;

#[derive(Debug, Clone)]
pub struct InboxConfig {
    /// IMAP with STARTTLS (143-style); None: off.
    pub listen: Option<SocketAddr>,
    /// IMAP over TLS from the first byte (993-style); None: off.
    pub tls_listen: Option<SocketAddr>,
    /// The web inbox over HTTPS on a listener of its own; None: only on the admin listener.
    pub web_listen: Option<SocketAddr>,
    /// Failed logins (per address, and per client address) before a lockout.
    pub max_login_failures: u32,
    /// The first lockout; each further failure while locked out doubles it (at most an hour).
    pub lockout: Duration,
    /// IMAP connections at once.
    pub max_connections: usize,
    /// Memory for messages read whole (IMAP FETCH and SEARCH of content, the web inbox's
    /// message and attachment pages), in bytes: see `src/inbox/budget.rs`.
    pub content_memory: u64,
    /// How long a session may stay silent (IDLE included) before it is closed.
    pub idle_timeout: Duration,
    /// How long a one-time login code (`mx2 inbox invite`) is good for.
    pub code_validity: Duration,
    /// How long the inbox keeps showing a message after its delivery to the primary; zero:
    /// it leaves the inbox (and the store) when delivered.
    pub keep_after_delivery: Duration,
}

impl InboxConfig {
    /// Whether any listener is on (then the web inbox is on the admin listener too).
    pub fn enabled(&self) -> bool {
        self.listen.is_some() || self.tls_listen.is_some() || self.web_listen.is_some()
    }
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawInbox {
    listen: Option<Spanned<String>>,
    tls_listen: Option<Spanned<String>>,
    web_listen: Option<Spanned<String>>,
    max_login_failures: Option<Spanned<u32>>,
    lockout: Option<Spanned<HumanDuration>>,
    max_connections: Option<Spanned<usize>>,
    content_memory: Option<Spanned<Size>>,
    idle_timeout: Option<Spanned<HumanDuration>>,
    code_validity: Option<Spanned<HumanDuration>>,
    keep_after_delivery: Option<Spanned<String>>,
}

impl Ctx<'_> {
    pub(super) fn inbox(&self, raw: RawInbox, has_tls: bool) -> Result<InboxConfig, ConfigError> {
        let listen = self.inbox_address(raw.listen.as_ref(), "143", has_tls)?;
        let tls_listen = self.inbox_address(raw.tls_listen.as_ref(), "993", has_tls)?;
        let web_listen = self.inbox_address(raw.web_listen.as_ref(), "443", has_tls)?;
        let max_login_failures = match raw.max_login_failures {
            Some(v) if *v.get_ref() == 0 => {
                return Err(self.at(
                    v.span(),
                    "must be at least 1 (failed logins before a lockout)",
                ));
            }
            Some(v) => v.into_inner(),
            None => default::MAX_LOGIN_FAILURES,
        };
        let lockout = match raw.lockout {
            Some(v) if v.get_ref().0 < Duration::from_secs(1) => {
                return Err(self.at(v.span(), "must be at least 1s"));
            }
            Some(v) => v.into_inner().0,
            None => default::LOCKOUT,
        };
        let idle_timeout = match raw.idle_timeout {
            Some(v) if v.get_ref().0 < Duration::from_secs(10) => {
                return Err(self.at(v.span(), "must be at least 10s (RFC 3501 asks for 30m)"));
            }
            Some(v) => v.into_inner().0,
            None => default::IDLE_TIMEOUT,
        };
        let code_validity = match raw.code_validity {
            Some(v)
                if v.get_ref().0 < Duration::from_secs(1)
                    || v.get_ref().0 > Duration::from_secs(86_400) =>
            {
                return Err(self.at(
                    v.span(),
                    "must be between 1s and 1d (how long a one-time login code works)",
                ));
            }
            Some(v) => v.into_inner().0,
            None => default::CODE_VALIDITY,
        };
        let content_memory = match raw.content_memory {
            Some(v) if v.get_ref().0 < default::MIN_CONTENT_MEMORY => {
                return Err(self.at(
                    v.span(),
                    "must be at least 1MB (memory for messages the inbox reads whole)",
                ));
            }
            Some(v) => v.into_inner().0,
            None => default::CONTENT_MEMORY,
        };
        Ok(InboxConfig {
            listen,
            tls_listen,
            web_listen,
            max_login_failures,
            lockout,
            max_connections: self.positive(raw.max_connections, default::MAX_CONNECTIONS)?,
            content_memory,
            idle_timeout,
            code_validity,
            keep_after_delivery: self.keep_after_delivery(raw.keep_after_delivery.as_ref())?,
        })
    }

    /// `[inbox] keep_after_delivery`: a duration up to 90 days, or `"0"` for off.
    fn keep_after_delivery(&self, v: Option<&Spanned<String>>) -> Result<Duration, ConfigError> {
        let Some(v) = v else {
            return Ok(default::KEEP_AFTER_DELIVERY);
        };
        let text = v.get_ref().trim();
        if text == "0" {
            return Ok(Duration::ZERO);
        }
        match super::units::parse_duration(text) {
            Ok(d) if d <= default::MAX_KEEP_AFTER_DELIVERY => Ok(d),
            Ok(_) => Err(self.at(
                v.span(),
                "must be at most 90d (delivered mail kept for the inbox takes disk space)",
            )),
            Err(e) => Err(self.at(v.span(), &format!("{e}; or \"0\" to turn it off"))),
        }
    }

    /// `[[domain]] inbox_delete`.
    pub(super) fn inbox_delete(
        &self,
        v: Option<&Spanned<String>>,
    ) -> Result<DeletePolicy, ConfigError> {
        match v.map(|v| (v, v.get_ref().as_str())) {
            None | Some((_, "keep_delivering")) => Ok(DeletePolicy::KeepDelivering),
            Some((_, "do_not_deliver")) => Ok(DeletePolicy::DoNotDeliver),
            Some((v, other)) => Err(self.at(
                v.span(),
                &format!("inbox_delete `{other}`: use \"keep_delivering\" or \"do_not_deliver\""),
            )),
        }
    }

    /// One listener's address: `""` or absent is off; on needs `[tls]`.
    fn inbox_address(
        &self,
        v: Option<&Spanned<String>>,
        port: &str,
        has_tls: bool,
    ) -> Result<Option<SocketAddr>, ConfigError> {
        let Some(v) = v.filter(|v| !v.get_ref().is_empty()) else {
            return Ok(None);
        };
        let addr = v.get_ref().parse::<SocketAddr>().map_err(|_| {
            self.at(
                v.span(),
                &format!(
                    "`{}` is not an IP:port address, e.g. \"0.0.0.0:{port}\" (or \"\" for none)",
                    v.get_ref()
                ),
            )
        })?;
        if !has_tls {
            return Err(self.at(
                v.span(),
                "the inbox needs a certificate (its logins carry passwords): add a [tls] table with cert and key",
            ));
        }
        Ok(Some(addr))
    }
}

#[cfg(test)]
mod tests {
    use crate::config::Config;
    use crate::queue::inbox::DeletePolicy;

    fn parse(text: &str) -> Result<Config, String> {
        let dir = tempfile::tempdir().unwrap();
        let head = "hostname = \"mx2.test\"\n[[domain]]\nname = \"a.test\"\nprimary = [\"h:25\"]\n";
        Config::parse(&format!("{head}{text}"), "mx2.toml", dir.path()).map_err(|e| e.to_string())
    }

    #[test]
    fn off_by_default_and_needs_tls() {
        let c = parse("").unwrap();
        assert!(!c.inbox.enabled());
        assert!(!c.domains[0].inbox);
        let e = parse("[inbox]\ntls_listen = \"127.0.0.1:993\"\n").unwrap_err();
        assert!(
            e.starts_with("mx2.toml:6:14: key `inbox.tls_listen`:") && e.contains("[tls]"),
            "{e}"
        );
        let e = parse("[tls]\ncert = \"c\"\nkey = \"k\"\n[inbox]\nlisten = \"143\"\n").unwrap_err();
        assert!(
            e.contains("key `inbox.listen`") && e.contains("0.0.0.0:143"),
            "{e}"
        );
        let e = parse("[inbox]\nmax_login_failures = 0\n").unwrap_err();
        assert!(
            e.contains("key `inbox.max_login_failures`: must be at least 1"),
            "{e}"
        );
        assert_eq!(parse("").unwrap().inbox.content_memory, 256 << 20);
        let c = parse("[inbox]\ncontent_memory = \"64MiB\"\n").unwrap();
        assert_eq!(c.inbox.content_memory, 64 << 20);
        let e = parse("[inbox]\ncontent_memory = \"100KB\"\n").unwrap_err();
        assert!(
            e.contains("key `inbox.content_memory`: must be at least 1MB"),
            "{e}"
        );
    }

    #[test]
    fn listeners_and_limits() {
        let c = parse(
            "[tls]\ncert = \"c\"\nkey = \"k\"\n[inbox]\nlisten = \"127.0.0.1:1143\"\ntls_listen = \"[::1]:1993\"\nweb_listen = \"127.0.0.1:8443\"\nmax_login_failures = 3\nlockout = \"2m\"\ncode_validity = \"5m\"\n",
        )
        .unwrap();
        assert_eq!(c.inbox.listen, Some("127.0.0.1:1143".parse().unwrap()));
        assert_eq!(c.inbox.tls_listen, Some("[::1]:1993".parse().unwrap()));
        assert_eq!(c.inbox.web_listen, Some("127.0.0.1:8443".parse().unwrap()));
        let e = parse("[inbox]\nweb_listen = \"127.0.0.1:8443\"\n").unwrap_err();
        assert!(
            e.contains("key `inbox.web_listen`") && e.contains("[tls]"),
            "{e}"
        );
        assert_eq!(c.inbox.max_login_failures, 3);
        assert_eq!(c.inbox.lockout.as_secs(), 120);
        assert_eq!(c.inbox.code_validity.as_secs(), 300);
        let e = parse("[inbox]\ncode_validity = \"2d\"\n").unwrap_err();
        assert!(
            e.contains("key `inbox.code_validity`: must be between 1s and 1d"),
            "{e}"
        );
        let c =
            parse("[[domain]]\nname = \"b.test\"\nprimary = [\"h:25\"]\ninbox = true\n").unwrap();
        assert!(c.domains[1].inbox && !c.domains[0].inbox);
        assert_eq!(c.domains[1].inbox_delete, DeletePolicy::KeepDelivering);
        let c = parse("[[domain]]\nname = \"b.test\"\nprimary = [\"h:25\"]\ninbox_delete = \"do_not_deliver\"\n")
            .unwrap();
        assert_eq!(c.domains[1].inbox_delete, DeletePolicy::DoNotDeliver);
        let e =
            parse("[[domain]]\nname = \"b.test\"\nprimary = [\"h:25\"]\ninbox_delete = \"drop\"\n")
                .unwrap_err();
        assert!(e.contains("inbox_delete `drop`: use"), "{e}");
    }

    #[test]
    fn credentials_url_needs_the_inbox_and_http() {
        let domain = |keys: &str| {
            parse(&format!(
                "[[domain]]\nname = \"b.test\"\nprimary = [\"h:25\"]\n{keys}"
            ))
        };
        let c = domain("inbox = true\ninbox_credentials_url = \"https://h/users\"\n").unwrap();
        assert_eq!(
            c.domains[1].inbox_credentials_url.as_deref(),
            Some("https://h/users")
        );
        let e = domain("inbox_credentials_url = \"https://h/users\"\n").unwrap_err();
        assert!(
            e.contains("inbox_credentials_url needs inbox = true"),
            "{e}"
        );
        let e = domain("inbox = true\ninbox_credentials_url = \"ftp://h/users\"\n").unwrap_err();
        assert!(
            e.contains("inbox_credentials_url must start with http:// or https://"),
            "{e}"
        );
    }

    #[test]
    fn keep_after_delivery() {
        use std::time::Duration;
        let keep = |v: &str| parse(&format!("[inbox]\nkeep_after_delivery = \"{v}\"\n"));
        assert_eq!(
            parse("").unwrap().inbox.keep_after_delivery,
            Duration::from_secs(3 * 86_400)
        );
        assert_eq!(keep("0").unwrap().inbox.keep_after_delivery, Duration::ZERO);
        assert_eq!(
            keep("1s").unwrap().inbox.keep_after_delivery,
            Duration::from_secs(1)
        );
        let e = keep("91d").unwrap_err();
        assert!(
            e.contains("key `inbox.keep_after_delivery`: must be at most 90d"),
            "{e}"
        );
        let e = keep("3").unwrap_err();
        assert!(
            e.contains("a unit is required") && e.contains("\"0\" to turn it off"),
            "{e}"
        );
    }
}
