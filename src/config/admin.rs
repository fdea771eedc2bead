//! The `[admin]` and `[alerts]` sections: where the admin API listens and who may use it,
//! and where alerts go. Validated here; the secrets (token files) are read at load so a
//! missing file is a configuration error with its key, not a runtime surprise.

use super::defaults::{admin as admin_default, alerts as alerts_default};
use super::{ConfigError, Ctx, HumanDuration};
use serde::Deserialize;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;
use toml::Spanned;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AdminConfig {
    /// Where the admin API, `/metrics` and the dashboard listen; None: not at all.
    pub listen: Option<SocketAddr>,
    /// The bearer token every request but `/healthz` must carry; None: open (loopback only).
    pub token: Option<String>,
    /// Names (lower case, no trailing dot) and addresses that requests may give in `Host`
    /// besides the address they reached, loopback addresses and `localhost`.
    pub allowed_hosts: Vec<String>,
}

impl Default for AdminConfig {
    fn default() -> Self {
        Self {
            listen: Some(admin_default::LISTEN),
            token: None,
            allowed_hosts: Vec::new(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AlertsConfig {
    /// An HTTP(S) URL that gets a JSON POST for each alert.
    pub webhook: Option<String>,
    /// Sent as `Authorization: Bearer …` with each webhook call.
    pub webhook_token: Option<String>,
    /// CA certificates (PEM) trusted for an https webhook, besides the public roots.
    pub webhook_ca_file: Option<PathBuf>,
    /// How long a primary must be down before the first alert.
    pub down_after: Duration,
    /// An address (best on another domain than the ones backed up) that gets alerts by mail.
    pub email: Option<String>,
}

impl Default for AlertsConfig {
    fn default() -> Self {
        Self {
            webhook: None,
            webhook_token: None,
            webhook_ca_file: None,
            down_after: alerts_default::DOWN_AFTER,
            email: None,
        }
    }
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawAdmin {
    listen: Option<Spanned<String>>,
    token_file: Option<Spanned<String>>,
    #[serde(default)]
    allowed_hosts: Vec<Spanned<String>>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawAlerts {
    webhook: Option<Spanned<String>>,
    webhook_token_file: Option<Spanned<String>>,
    webhook_ca_file: Option<String>,
    down_after: Option<HumanDuration>,
    email: Option<Spanned<String>>,
}

/// Reads a secret from a file: trimmed, not empty.
fn secret(cx: &Ctx<'_>, v: &Spanned<String>) -> Result<String, ConfigError> {
    let p = cx.resolve(v.get_ref());
    cx.secret_file(Ok(v.span()), &p);
    let text = std::fs::read_to_string(&p).map_err(|e| {
        cx.at(
            v.span(),
            &format!(
                "cannot read {}: {e} (create it, readable by mx2 only)",
                p.display()
            ),
        )
    })?;
    let token = text.trim().to_string();
    if token.is_empty() {
        return Err(cx.at(v.span(), &format!("{} is empty", p.display())));
    }
    Ok(token)
}

/// One `admin.allowed_hosts` entry as requests' `Host` is compared with it: a host name in
/// lower case without a trailing dot, or an IP address; no port, no wildcard.
fn allowed_host(entry: &str) -> Result<String, String> {
    let e = entry.trim();
    if let Ok(ip) = e.trim_matches(['[', ']']).parse::<std::net::IpAddr>() {
        return Ok(ip.to_canonical().to_string());
    }
    let name = e.trim_end_matches('.').to_ascii_lowercase();
    let label_ok = |l: &str| {
        !l.is_empty()
            && l.len() <= 63
            && l.chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
    };
    if name.is_empty() || name.len() > 253 || !name.split('.').all(label_ok) {
        return Err(format!(
            "`{entry}` is not a host name or IP address, e.g. \"mx2.example.net\" (no scheme, port or wildcard)"
        ));
    }
    Ok(name)
}

impl Ctx<'_> {
    pub(super) fn admin(&self, raw: RawAdmin) -> Result<AdminConfig, ConfigError> {
        let token = raw
            .token_file
            .as_ref()
            .map(|t| secret(self, t))
            .transpose()?;
        let listen = match &raw.listen {
            None => AdminConfig::default().listen,
            Some(v) if v.get_ref().is_empty() => None,
            Some(v) => Some(v.get_ref().parse::<SocketAddr>().map_err(|_| {
                self.at(
                    v.span(),
                    &format!(
                        "`{}` is not an IP:port address, e.g. \"127.0.0.1:8025\" (or \"\" for no admin API)",
                        v.get_ref()
                    ),
                )
            })?),
        };
        if let (Some(addr), None) = (listen, &token)
            && !addr.ip().is_loopback()
        {
            let span = raw.listen.as_ref().map_or(0..0, |v| v.span());
            return Err(self.at(
                span,
                &format!(
                    "{addr} is reachable from other machines: set admin.token_file (a file holding a long random token) or listen on 127.0.0.1"
                ),
            ));
        }
        let allowed_hosts = raw
            .allowed_hosts
            .iter()
            .map(|h| allowed_host(h.get_ref()).map_err(|e| self.at(h.span(), &e)))
            .collect::<Result<_, _>>()?;
        Ok(AdminConfig {
            listen,
            token,
            allowed_hosts,
        })
    }

    pub(super) fn alerts(&self, raw: RawAlerts) -> Result<AlertsConfig, ConfigError> {
        if let Some(w) = &raw.webhook {
            let url = w.get_ref();
            if !(url.starts_with("http://") || url.starts_with("https://")) {
                return Err(self.at(
                    w.span(),
                    &format!("`{url}` is not an http:// or https:// URL"),
                ));
            }
        }
        if let Some(e) = &raw.email {
            let addr = e.get_ref();
            let ok = addr.rsplit_once('@').is_some_and(|(l, d)| {
                !l.is_empty() && d.contains('.') && !addr.contains(['<', '>', ' '])
            });
            if !ok {
                return Err(self.at(
                    e.span(),
                    &format!("`{addr}` is not a mail address like ops@example.net"),
                ));
            }
        }
        let d = AlertsConfig::default();
        Ok(AlertsConfig {
            webhook: raw.webhook.map(Spanned::into_inner),
            webhook_token: raw
                .webhook_token_file
                .as_ref()
                .map(|t| secret(self, t))
                .transpose()?,
            webhook_ca_file: raw.webhook_ca_file.map(|p| self.resolve(p)),
            down_after: raw.down_after.map_or(d.down_after, |s| s.0),
            email: raw.email.map(Spanned::into_inner),
        })
    }
}

#[cfg(test)]
mod tests {
    use crate::config::Config;

    fn parse(extra: &str, base: &std::path::Path) -> Result<Config, String> {
        let text = format!(
            "hostname = \"mx2.test\"\nstate_dir = \"/tmp/x\"\n{extra}\n[[domain]]\nname = \"example.test\"\nprimary = [\"127.0.0.1:25\"]\n"
        );
        Config::parse(&text, "mx2.toml", base).map_err(|e| e.to_string())
    }

    #[test]
    fn admin_defaults_and_tokens() {
        let dir = tempfile::tempdir().unwrap();
        let c = parse("", dir.path()).unwrap();
        assert_eq!(c.admin.listen, Some("127.0.0.1:8025".parse().unwrap()));
        assert_eq!(c.admin.token, None);
        assert_eq!(c.alerts.down_after, std::time::Duration::from_secs(300));
        let c = parse("[admin]\nlisten = \"\"", dir.path()).unwrap();
        assert_eq!(c.admin.listen, None);

        let err = parse("[admin]\nlisten = \"0.0.0.0:8025\"", dir.path()).unwrap_err();
        assert!(
            err.starts_with("mx2.toml:4:10: key `admin.listen`:") && err.contains("token_file"),
            "{err}"
        );
        let err = parse("[admin]\ntoken_file = \"missing\"", dir.path()).unwrap_err();
        assert!(
            err.contains("admin.token_file") && err.contains("missing"),
            "{err}"
        );
        std::fs::write(dir.path().join("t"), "  s3cret\n").unwrap();
        let c = parse(
            "[admin]\nlisten = \"0.0.0.0:8025\"\ntoken_file = \"t\"",
            dir.path(),
        )
        .unwrap();
        assert_eq!(c.admin.token.as_deref(), Some("s3cret"));
    }

    #[test]
    fn allowed_hosts_are_names_or_addresses() {
        let dir = tempfile::tempdir().unwrap();
        assert!(
            parse("", dir.path())
                .unwrap()
                .admin
                .allowed_hosts
                .is_empty()
        );
        let c = parse(
            "[admin]\nallowed_hosts = [\"MX2.Example.net.\", \"[2001:DB8::1]\", \"192.0.2.1\"]",
            dir.path(),
        )
        .unwrap();
        assert_eq!(
            c.admin.allowed_hosts,
            ["mx2.example.net", "2001:db8::1", "192.0.2.1"]
        );
        for bad in [
            "*.example.net",
            "http://x.example",
            "x.example:8025",
            "",
            "a..b",
        ] {
            let err =
                parse(&format!("[admin]\nallowed_hosts = [\"{bad}\"]"), dir.path()).unwrap_err();
            assert!(
                err.contains("admin.allowed_hosts") && err.contains("not a host name"),
                "{bad}: {err}"
            );
        }
    }

    #[test]
    fn alert_settings_are_checked() {
        let dir = tempfile::tempdir().unwrap();
        let err = parse("[alerts]\nwebhook = \"ftp://x\"", dir.path()).unwrap_err();
        assert!(
            err.contains("alerts.webhook") && err.contains("http"),
            "{err}"
        );
        let err = parse("[alerts]\nemail = \"nobody\"", dir.path()).unwrap_err();
        assert!(err.contains("alerts.email"), "{err}");
        let c = parse(
            "[alerts]\nwebhook = \"https://h.example/x\"\ndown_after = \"1m\"\nemail = \"ops@other.example\"",
            dir.path(),
        )
        .unwrap();
        assert_eq!(c.alerts.webhook.as_deref(), Some("https://h.example/x"));
        assert_eq!(c.alerts.down_after, std::time::Duration::from_secs(60));
        assert_eq!(c.alerts.email.as_deref(), Some("ops@other.example"));
    }
}
