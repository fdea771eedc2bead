//! The `[[domain]]` tables: each domain mx2 backs up, where its mail goes (primaries or MX),
//! who gets its notifications, how delivery uses TLS and SMTP AUTH. Its recipient keys are
//! built by `recipients.rs`. Parsing and validation only: nothing here connects anywhere.

use super::defaults::domain as default;
use super::drill::DrillConfig;
use super::host::{HostPort, is_domain_name};
use super::limits::DomainLimits;
use super::recipients::RecipientPolicy;
use super::{ConfigError, Ctx, HumanDuration, Size, parse_pin};
use serde::Deserialize;
use std::collections::HashSet;
use std::path::PathBuf;
use toml::Spanned;

/// One domain mx2 backs up.
#[derive(Debug, Clone)]
pub struct DomainConfig {
    /// Lower-case, no trailing dot.
    pub name: String,
    pub route: DomainRoute,
    pub bounce: BouncePolicy,
    pub tls: TlsPolicy,
    /// SMTP AUTH to the primary (only ever inside TLS).
    pub auth: Option<PrimaryAuthConfig>,
    pub recipients: RecipientPolicy,
    /// Refuse new mail with 451 while the primary is up, so senders go to it.
    pub standby: bool,
    /// Its own queue caps, lifetime, message size and rate.
    pub limits: DomainLimits,
    /// Its fire drill: schedule and canary.
    pub drill: DrillConfig,
    /// Its users may read the mail held for them in the emergency inbox.
    pub inbox: bool,
    /// What a user's delete in the inbox does.
    pub inbox_delete: crate::queue::inbox::DeletePolicy,
    /// Where the primary publishes its users' inbox credentials (`address argon2id-hash`
    /// lines), and the file with the bearer token to fetch them with.
    pub inbox_credentials_url: Option<String>,
    pub inbox_credentials_url_token_file: Option<std::path::PathBuf>,
}

#[derive(Clone, PartialEq, Eq)]
pub struct PrimaryAuthConfig {
    pub user: String,
    /// A file holding the password (one line), readable by mx2 only.
    pub password_file: PathBuf,
    /// The password, read from `password_file` when the config loads (line end trimmed).
    pub password: String,
}

impl std::fmt::Debug for PrimaryAuthConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PrimaryAuthConfig")
            .field("user", &self.user)
            .field("password_file", &self.password_file)
            .finish_non_exhaustive()
    }
}

/// How delivery to a domain uses TLS.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum TlsMode {
    /// STARTTLS when offered, any certificate; plaintext otherwise.
    #[default]
    Opportunistic,
    /// STARTTLS must succeed (any certificate); never plaintext.
    Required,
    /// STARTTLS must succeed with a certificate valid for the host name.
    Verify,
    /// DANE (RFC 7672) per MX host: the host's DNSSEC-secure TLSA records decide, and a host
    /// where DANE does not apply is not used (`route = "mx"` only).
    Dane,
    /// The domain's MTA-STS policy when it publishes one (`delivery::mta_sts`), else as
    /// `Opportunistic` (`route = "mx"` only).
    MtaSts,
    /// Per MX host: DANE where it applies, else the domain's MTA-STS policy, else
    /// opportunistic: the default for `route = "mx"` and for notifications to senders' domains.
    Auto,
}

impl TlsMode {
    /// Whether a connection may go on without TLS, or with any certificate, when nothing
    /// stricter applies (a policy in force is applied by the caller before connecting).
    pub fn opportunistic(self) -> bool {
        matches!(
            self,
            TlsMode::Opportunistic | TlsMode::MtaSts | TlsMode::Auto
        )
    }

    /// Whether the domain's published MTA-STS policy is applied.
    pub fn follows_mta_sts(self) -> bool {
        matches!(self, TlsMode::MtaSts | TlsMode::Auto)
    }

    /// The mode of a `route = "mx"` domain that sets no `tls`, and of the routes to senders'
    /// MX hosts (notifications): the published policies (DANE, then MTA-STS), then
    /// opportunistic.
    pub fn mx_default() -> TlsMode {
        TlsMode::Auto
    }
}

/// A domain's outbound TLS settings.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct TlsPolicy {
    pub mode: TlsMode,
    /// Extra trusted roots for `verify` (PEM), besides the built-in Mozilla roots.
    pub ca_file: Option<PathBuf>,
    /// SHA-256 of the primary's certificate (DER): must match when set.
    pub pin: Option<[u8; 32]>,
}

/// Who gets delivery status notifications for mail to a domain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BouncePolicy {
    /// The sender if it passed SPF or DKIM at reception, else the domain's postmaster
    /// (the default: no backscatter to forged senders).
    Authenticated(String),
    /// The original sender (RFC 3461).
    Sender,
    /// This address instead of the sender.
    Postmaster(String),
    /// Nobody: logged only.
    None,
}

/// Where a backed-up domain's mail goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DomainRoute {
    /// `primary = [...]`: these hosts, tried in order.
    Primary(Vec<HostPort>),
    /// `route = "mx"`: the domain's MX hosts more preferred than this server.
    Mx,
}

/// One `[[domain]]` as written; the recipient keys are read by `recipients.rs`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawDomain {
    pub(super) name: Spanned<String>,
    primary: Option<Spanned<Vec<Spanned<String>>>>,
    route: Option<Spanned<String>>,
    bounce: Option<Spanned<String>>,
    postmaster: Option<Spanned<String>>,
    tls: Option<Spanned<String>>,
    tls_ca_file: Option<String>,
    tls_pin: Option<Spanned<String>>,
    auth_user: Option<Spanned<String>>,
    auth_password_file: Option<Spanned<String>>,
    pub(super) recipients: Option<Spanned<toml::Value>>,
    pub(super) recipient_files: Option<Vec<String>>,
    pub(super) recipient_url: Option<Spanned<String>>,
    pub(super) recipient_url_token_file: Option<String>,
    pub(super) unknown_when_down: Option<Spanned<String>>,
    pub(super) local_part_case: Option<Spanned<String>>,
    pub(super) subaddress_separator: Option<Spanned<String>>,
    standby: Option<bool>,
    inbox: Option<bool>,
    inbox_delete: Option<Spanned<String>>,
    inbox_credentials_url: Option<Spanned<String>>,
    inbox_credentials_url_token_file: Option<String>,
    pub(super) recipient_addresses: Option<Spanned<Vec<Spanned<String>>>>,
    pub(super) max_queue_messages: Option<Spanned<u64>>,
    pub(super) max_queue_bytes: Option<Spanned<Size>>,
    pub(super) lifetime: Option<Spanned<HumanDuration>>,
    pub(super) max_message_size: Option<Spanned<Size>>,
    pub(super) recipients_per_minute: Option<Spanned<u32>>,
    drill: Option<Spanned<String>>,
    drill_rcpt: Option<Spanned<String>>,
}

impl Ctx<'_> {
    /// Every `[[domain]]`: at least one, each name once.
    pub(super) fn domains(&self, raw: Vec<RawDomain>) -> Result<Vec<DomainConfig>, ConfigError> {
        let mut seen = HashSet::new();
        let mut domains = Vec::new();
        for d in raw {
            domains.push(self.domain(d, &mut seen)?);
        }
        if domains.is_empty() {
            self.warnings.borrow_mut().push(format!(
                "{}: no [[domain]] in the file: mail is accepted only for domains added at run time (`mx2 domain add`); to back up a domain from the file, add e.g.\n[[domain]]\nname = \"example.com\"\nprimary = [\"mail.example.com:25\"]",
                self.name
            ));
        }
        Ok(domains)
    }

    pub(super) fn domain(
        &self,
        d: RawDomain,
        seen: &mut HashSet<String>,
    ) -> Result<DomainConfig, ConfigError> {
        let name = d
            .name
            .get_ref()
            .trim()
            .trim_end_matches('.')
            .to_ascii_lowercase();
        if !is_domain_name(&name) {
            return Err(self.at(
                d.name.span(),
                &format!("`{}` is not a valid domain name", d.name.get_ref()),
            ));
        }
        if !seen.insert(name.clone()) {
            return Err(self.at(
                d.name.span(),
                &format!("domain `{name}` is configured twice"),
            ));
        }
        let route = self.route(&d, &name)?;
        let postmaster = match &d.postmaster {
            Some(p) => {
                crate::smtp::address::parse_mailbox(p.get_ref(), true).map_err(|e| {
                    self.at(
                        p.span(),
                        &format!("`{}` is not a mail address: {e}", p.get_ref()),
                    )
                })?;
                p.get_ref().clone()
            }
            None => format!("postmaster@{name}"),
        };
        let bounce = match d.bounce.as_ref().map(|b| (b, b.get_ref().as_str())) {
            None | Some((_, "authenticated")) => BouncePolicy::Authenticated(postmaster),
            Some((_, "sender")) => BouncePolicy::Sender,
            Some((_, "postmaster")) => BouncePolicy::Postmaster(postmaster),
            Some((_, "none")) => BouncePolicy::None,
            Some((b, other)) => {
                return Err(self.at(b.span(), &format!("unknown bounce policy `{other}`: use \"authenticated\", \"sender\", \"postmaster\" or \"none\"")));
            }
        };
        let tls = self.tls_policy(&d, &route)?;
        let auth = match (&d.auth_user, &d.auth_password_file) {
            (None, None) => None,
            (Some(u), Some(f)) => {
                let span = f.span();
                let password_file = self.resolve(f.get_ref());
                self.secret_file(Ok(span.clone()), &password_file);
                let password = std::fs::read_to_string(&password_file).map_err(|e| {
                    self.at(
                        span,
                        &format!("cannot read {}: {e}", password_file.display()),
                    )
                })?;
                Some(PrimaryAuthConfig {
                    user: u.get_ref().clone(),
                    password: password.trim_end_matches(['\r', '\n']).to_string(),
                    password_file,
                })
            }
            (Some(u), None) => {
                return Err(self.at(
                    u.span(),
                    "auth_user needs auth_password_file (a file holding the password)",
                ));
            }
            (None, Some(f)) => {
                return Err(self.at(f.span(), "auth_password_file needs auth_user"));
            }
        };
        let recipients = self.recipient_policy(&d)?;
        let limits = self.domain_limits(&d)?;
        let drill = self.drill(&name, d.drill.as_ref(), d.drill_rcpt.as_ref())?;
        let inbox = d.inbox.unwrap_or(default::INBOX);
        let (inbox_credentials_url, inbox_credentials_url_token_file) = self.list_url(
            d.inbox_credentials_url.as_ref(),
            d.inbox_credentials_url_token_file.as_ref(),
            "inbox_credentials_url",
        )?;
        if let (Some(u), false) = (&d.inbox_credentials_url, inbox) {
            return Err(self.at(
                u.span(),
                "inbox_credentials_url needs inbox = true in the same [[domain]]",
            ));
        }
        Ok(DomainConfig {
            name,
            route,
            bounce,
            tls,
            auth,
            recipients,
            standby: d.standby.unwrap_or(default::STANDBY),
            limits,
            drill,
            inbox,
            inbox_delete: self.inbox_delete(d.inbox_delete.as_ref())?,
            inbox_credentials_url,
            inbox_credentials_url_token_file,
        })
    }

    /// `primary` or `route`, exactly one.
    fn route(&self, d: &RawDomain, name: &str) -> Result<DomainRoute, ConfigError> {
        Ok(match (&d.primary, &d.route) {
            (Some(_), Some(r)) => {
                return Err(self.at(
                    r.span(),
                    &format!("domain `{name}` has both `primary` and `route`: keep one"),
                ));
            }
            (None, None) => {
                return Err(self.at(
                    d.name.span(),
                    &format!(
                        "domain `{name}` needs `primary = [\"host:port\"]` or `route = \"mx\"`"
                    ),
                ));
            }
            (None, Some(r)) if r.get_ref() == "mx" => DomainRoute::Mx,
            (None, Some(r)) => {
                return Err(self.at(
                    r.span(),
                    &format!(
                        "unknown route `{}`: use \"mx\", or list the hosts in `primary`",
                        r.get_ref()
                    ),
                ));
            }
            (Some(list), None) => {
                let mut primary = Vec::new();
                for p in list.get_ref() {
                    primary.push(HostPort::parse(p.get_ref()).map_err(|e| self.at(p.span(), &e))?);
                }
                if primary.is_empty() {
                    return Err(self.at(
                        list.span(),
                        &format!("domain `{name}` has no primary: list at least one host:port"),
                    ));
                }
                DomainRoute::Primary(primary)
            }
        })
    }

    /// `tls`, `tls_ca_file` and `tls_pin`. `dane`, `mta-sts` and `auto` (the default for
    /// `route = "mx"`, [`TlsMode::mx_default`]) follow what the domain publishes for its MX
    /// hosts, so they need an MX route and take no pin or CA file.
    fn tls_policy(&self, d: &RawDomain, route: &DomainRoute) -> Result<TlsPolicy, ConfigError> {
        let by_mx = *route == DomainRoute::Mx;
        let mode = match d.tls.as_ref().map(|t| (t, t.get_ref().as_str())) {
            None if by_mx && d.tls_pin.is_none() && d.tls_ca_file.is_none() => {
                TlsMode::mx_default()
            }
            None | Some((_, "opportunistic")) => TlsMode::Opportunistic,
            Some((_, "required")) => TlsMode::Required,
            Some((_, "verify")) => TlsMode::Verify,
            Some((t, m @ ("dane" | "auto" | "mta-sts"))) => {
                if !by_mx {
                    return Err(self.at(t.span(), &format!("tls = \"{m}\" follows the policies a domain publishes for its MX hosts: it needs route = \"mx\"; for static primaries use \"opportunistic\", \"required\" or \"verify\" (with tls_pin or tls_ca_file)")));
                }
                if let Some(p) = &d.tls_pin {
                    return Err(self.at(p.span(), &format!("tls_pin does not go with tls = \"{m}\" (the published policy names the certificates): remove tls_pin or use tls = \"required\"")));
                }
                match m {
                    "dane" => TlsMode::Dane,
                    "mta-sts" => TlsMode::MtaSts,
                    _ => TlsMode::Auto,
                }
            }
            Some((t, other)) => {
                return Err(self.at(t.span(), &format!("unknown tls mode `{other}`: use \"opportunistic\", \"required\", \"verify\", \"dane\", \"mta-sts\" or \"auto\"")));
            }
        };
        let pin = match &d.tls_pin {
            Some(p) => Some(parse_pin(p.get_ref()).map_err(|e| self.at(p.span(), &e))?),
            None => None,
        };
        let ca_file = d.tls_ca_file.as_ref().map(|p| self.resolve(p));
        Ok(TlsPolicy { mode, ca_file, pin })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::tests::{MINIMAL, parse};

    #[test]
    fn tls_modes_dane_and_auto_are_for_mx_routes() {
        let mx = |tls: &str| {
            parse(&format!(
                "[[domain]]\nname = \"a.test\"\nroute = \"mx\"\n{tls}\n"
            ))
        };
        let mode = |tls: &str| mx(tls).unwrap().domains[0].tls.mode;
        assert_eq!(
            mode(""),
            TlsMode::Auto,
            "auto is the default for route = mx"
        );
        assert_eq!(mode("tls = \"dane\""), TlsMode::Dane);
        assert_eq!(mode("tls = \"opportunistic\""), TlsMode::Opportunistic);
        // A pin keeps the old default (opportunistic, pinned).
        let pin = format!("tls_pin = \"sha256:{}\"", "00".repeat(32));
        assert_eq!(mode(&pin), TlsMode::Opportunistic);
        let e = mx(&format!("tls = \"dane\"\n{pin}"))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("test.toml:5:") && e.contains("tls_pin does not go with tls = \"dane\""),
            "{e}"
        );
        // Static primaries keep opportunistic as their default and refuse per-MX modes.
        assert_eq!(
            parse(MINIMAL).unwrap().domains[0].tls.mode,
            TlsMode::Opportunistic
        );
        let e = parse(&format!("{MINIMAL}tls = \"auto\"\n"))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("test.toml:4:") && e.contains("needs route = \"mx\""),
            "{e}"
        );
        let e = mx("tls = \"mta\"").unwrap_err().to_string();
        assert!(e.contains("\"mta-sts\" or \"auto\""), "{e}");
    }

    #[test]
    fn bad_primary_and_duplicates_are_reported() {
        let e = parse("[[domain]]\nname = \"a.test\"\nprimary = [\"host:99999\"]\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("test.toml:3:") && e.contains("bad port"), "{e}");
        let e = parse(&format!("{MINIMAL}{MINIMAL}"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("configured twice") && e.contains(":5:"), "{e}");
        // No domain in the file is allowed (domains may be added at run time), with a warning.
        let c = parse("hostname = \"x\"\n").unwrap();
        assert!(c.domains.is_empty());
        assert!(
            c.warnings
                .iter()
                .any(|w| w.contains("no [[domain]]") && w.contains("mx2 domain add")),
            "{:?}",
            c.warnings
        );
        let e = parse(&format!("[queue]\nretry_min = \"2h\"\n{MINIMAL}"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("retry_max must not be less"), "{e}");
    }

    #[test]
    fn mx_routes_follow_the_published_policy_unless_told_otherwise() {
        let mode = |keys: &str| {
            parse(&format!("[[domain]]\nname = \"a.test\"\n{keys}\n"))
                .map(|c| c.domains[0].tls.mode)
                .map_err(|e| e.to_string())
        };
        assert_eq!(mode("route = \"mx\""), Ok(TlsMode::Auto));
        assert_eq!(
            mode("route = \"mx\"\ntls = \"mta-sts\""),
            Ok(TlsMode::MtaSts)
        );
        assert_eq!(
            mode("route = \"mx\"\ntls = \"opportunistic\""),
            Ok(TlsMode::Opportunistic)
        );
        assert_eq!(mode("primary = [\"h:25\"]"), Ok(TlsMode::Opportunistic));
        let e = mode("primary = [\"h:25\"]\ntls = \"mta-sts\"").unwrap_err();
        assert!(
            e.contains("route = \"mx\"") && e.contains("test.toml:4:"),
            "{e}"
        );
        let e = mode("route = \"mx\"\ntls = \"dane-ish\"").unwrap_err();
        assert!(e.contains("\"mta-sts\""), "{e}");
        assert!(TlsMode::MtaSts.opportunistic() && !TlsMode::Required.opportunistic());
    }

    #[test]
    fn limits_and_inline_addresses() {
        let c = parse("[[domain]]\nname = \"a.test\"\nprimary = [\"h:25\"]\nmax_queue_bytes = \"20GB\"\nmax_queue_messages = 100000\nlifetime = \"14d\"\nmax_message_size = \"10MB\"\nrecipients_per_minute = 600\nrecipients = \"list\"\nrecipient_addresses = [\"info@a.test\", \"@sub.a.test\"]\n").unwrap();
        let d = &c.domains[0];
        assert_eq!(d.limits.max_queue_bytes, Some(20_000_000_000));
        assert_eq!(d.limits.max_queue_messages, Some(100_000));
        assert_eq!(
            d.limits.lifetime,
            Some(std::time::Duration::from_secs(14 * 86400))
        );
        assert_eq!(d.limits.max_message_size, Some(10_000_000));
        assert_eq!(d.limits.recipients_per_minute, Some(600));
        assert!(d.recipients.list && d.recipients.addresses.len() == 2);
        for (bad, want) in [
            ("max_queue_messages = 0", "at least 1"),
            ("max_queue_bytes = \"lots\"", "invalid size"),
            ("lifetime = \"0s\"", "at least 1s"),
            (
                "recipient_addresses = [\"info@a.test\"]",
                "needs recipients = \"list\"",
            ),
            (
                "recipients = \"list\"\nrecipient_addresses = [\"not an address\"]",
                "not an address",
            ),
        ] {
            let e = parse(&format!(
                "[[domain]]\nname = \"a.test\"\nprimary = [\"h:25\"]\n{bad}\n"
            ))
            .unwrap_err()
            .to_string();
            assert!(e.contains(want) && e.contains("test.toml:"), "{bad}: {e}");
        }
    }

    #[test]
    fn stored_domains_are_checked_like_the_files() {
        let base = std::path::Path::new("/etc/mx2");
        let (d, _) = crate::config::parse_stored_domain(
            "b.test",
            "primary = [\"h:25\"]\nlifetime = \"5d\"\n",
            base,
        )
        .unwrap();
        assert_eq!(d.name, "b.test");
        assert_eq!(
            d.limits.lifetime,
            Some(std::time::Duration::from_secs(5 * 86400))
        );
        let e = crate::config::parse_stored_domain("b.test", "primary = [\"h:99999\"]\n", base)
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with("domain b.test:")
                && e.contains("key `primary`")
                && e.contains("bad port"),
            "{e}"
        );
        let e = crate::config::parse_stored_domain("b.test", "primry = [\"h:25\"]\n", base)
            .unwrap_err()
            .to_string();
        assert!(e.contains("primry"), "{e}");
    }

    #[test]
    fn mx_routes_and_dns() {
        let c = parse("[dns]\nnameservers = [\"127.0.0.1:5353\", \"::1\"]\n[routing]\nmy_names = [\"MX2.Example.net.\"]\n[[domain]]\nname = \"a.test\"\nroute = \"mx\"\n").unwrap();
        assert_eq!(c.domains[0].route, DomainRoute::Mx);
        assert_eq!(c.dns.nameservers[1].port(), 53);
        assert!(c.routing.my_names.contains(&"mx2.example.net".to_string()));
        let e = parse("[[domain]]\nname = \"a.test\"\nroute = \"dns\"\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("unknown route") && e.contains(":3:"), "{e}");
        let e = parse("[[domain]]\nname = \"a.test\"\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("needs `primary"), "{e}");
    }
}
