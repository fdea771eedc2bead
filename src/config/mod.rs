//! The configuration file: TOML → a typed, validated [`Config`]. Every error names the file,
//! the line and the key. This module reads the file and nothing else.
//!
//! Here: [`Config`], [`Config::load`]/[`Config::parse`], the error type and [`Ctx`], which
//! turns byte positions into `file:line:col: key` errors, collects warnings and resolves
//! relative paths (one helper, [`Ctx::resolve`], for every path in the file). Each
//! `[section]` has its own file that owns its file shape (`Raw…`), its typed form and its
//! validation, as a `Ctx` method; every default is a named constant in `defaults.rs`.

mod admin;
mod auth;
mod cidr;
mod defaults;
mod delivery;
mod dns;
mod domain;
mod drill;
mod host;
mod inbox;
mod limits;
mod log;
mod probe;
mod queue;
mod recipients;
mod routing;
mod secrets;
mod smtp;
mod storage;
mod tls;
mod tls_reports;
mod units;

pub use admin::{AdminConfig, AlertsConfig};
pub use auth::SenderAuthConfig;
pub use cidr::Cidr;
pub use delivery::DeliveryConfig;
pub use dns::{DnsConfig, Dnssec};
pub use domain::{BouncePolicy, DomainConfig, DomainRoute, PrimaryAuthConfig, TlsMode, TlsPolicy};
pub use drill::DrillConfig;
pub use host::{HostPort, is_domain_name};
pub use inbox::InboxConfig;
pub use limits::DomainLimits;
pub use log::{LogConfig, LogFormat};
pub use probe::ProbeConfig;
pub use queue::{DiskReserve, QueueConfig};
pub use recipients::{RecipientPolicy, RecipientsConfig, UnknownWhenDown};
pub use routing::RoutingConfig;
pub use smtp::SmtpConfig;
pub use storage::{PgTls, PostgresConfig, StorageConfig};
pub use tls::TlsFiles;
pub use tls_reports::TlsReportsConfig;

pub use units::{HumanDuration, Size, parse_duration, parse_pin, parse_size};

use serde::Deserialize;
use std::path::{Path, PathBuf};
use toml::Spanned;

/// A configuration error, ready to show to a user.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{path}: cannot read the configuration file: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("{path}:{line}:{column}: {key}{message}")]
    Invalid {
        path: String,
        line: usize,
        column: usize,
        key: String,
        message: String,
    },
    #[error("{path}: {message}")]
    Whole { path: String, message: String },
}

/// The whole validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// Problems that do not stop mx2 (a secret file others can read): logged at start and
    /// reload, printed by `mx2 config check`.
    pub warnings: Vec<String>,
    pub hostname: String,
    pub state_dir: PathBuf,
    pub log: LogConfig,
    pub smtp: SmtpConfig,
    pub queue: QueueConfig,
    pub probe: ProbeConfig,
    pub delivery: DeliveryConfig,
    pub dns: DnsConfig,
    pub routing: RoutingConfig,
    pub recipients: RecipientsConfig,
    pub auth: SenderAuthConfig,
    /// The certificate offered with STARTTLS (none: STARTTLS is not offered).
    pub tls: Option<TlsFiles>,
    pub admin: AdminConfig,
    pub alerts: AlertsConfig,
    /// Daily TLS reports to the domains delivered to under a policy (`[tls_reports]`).
    pub tls_reports: TlsReportsConfig,
    /// The emergency inbox (`[inbox]`).
    pub inbox: InboxConfig,
    pub domains: Vec<DomainConfig>,
    /// Where the queue lives (`[storage]`).
    pub storage: StorageConfig,
}

impl Config {
    /// The configured domain for a recipient domain (already lower-cased, no trailing dot).
    pub fn domain(&self, name: &str) -> Option<&DomainConfig> {
        self.domains.iter().find(|d| d.name == name)
    }
}

// ---- raw file shape ------------------------------------------------------------------

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    hostname: Option<Spanned<String>>,
    state_dir: Option<String>,
    #[serde(default)]
    log: LogConfig,
    #[serde(default)]
    smtp: smtp::RawSmtp,
    #[serde(default)]
    queue: queue::RawQueue,
    #[serde(default)]
    probe: probe::RawProbe,
    #[serde(default)]
    delivery: delivery::RawDelivery,
    #[serde(default)]
    dns: dns::RawDns,
    #[serde(default)]
    routing: routing::RawRouting,
    #[serde(default)]
    recipients: recipients::RawRecipients,
    #[serde(default)]
    auth: SenderAuthConfig,
    tls: Option<tls::RawTls>,
    #[serde(default)]
    admin: admin::RawAdmin,
    #[serde(default)]
    alerts: admin::RawAlerts,
    #[serde(default)]
    inbox: inbox::RawInbox,
    #[serde(default)]
    tls_reports: tls_reports::RawTlsReports,
    #[serde(default)]
    domain: Vec<domain::RawDomain>,
    #[serde(default)]
    storage: storage::RawStorage,
}

// ---- loading --------------------------------------------------------------------------

impl Config {
    /// Reads and validates a configuration file. Relative paths inside it are taken relative
    /// to the directory that holds the file.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.display().to_string(),
            source,
        })?;
        Self::parse(&text, &path.display().to_string(), &base_dir(path))
    }

    /// Parses configuration text; `name` is used in error messages, `base` resolves relative paths.
    pub fn parse(text: &str, name: &str, base: &Path) -> Result<Config, ConfigError> {
        let cx = Ctx {
            text,
            name,
            base,
            warnings: Default::default(),
        };
        let raw: RawConfig = toml::from_str(text).map_err(|e| {
            let span = e.span().unwrap_or(0..0);
            cx.at(span, e.message().trim_end())
        })?;
        cx.build(raw)
    }
}

/// The directory relative paths in a configuration file (and in stored domains' settings)
/// are taken from: the file's own, made absolute, so that the server and a command run
/// from another directory name the same files.
pub fn base_dir(path: &Path) -> PathBuf {
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    std::path::absolute(dir).unwrap_or_else(|_| dir.to_path_buf())
}

/// One domain stored at run time (`mx2 domain add`): `settings` are the keys of a
/// `[[domain]]` table, as TOML text, without `name`. Validated exactly as the file's domains
/// are; relative paths are taken from `base` (the configuration file's directory). Returns
/// the domain and any warnings.
pub fn parse_stored_domain(
    name: &str,
    settings: &str,
    base: &Path,
) -> Result<(DomainConfig, Vec<String>), ConfigError> {
    let label = format!("domain {name}");
    let name_line = toml::Value::String(name.to_string()).to_string();
    let text = format!("name = {name_line}\n{settings}");
    let cx = Ctx {
        text: &text,
        name: &label,
        base,
        warnings: Default::default(),
    };
    let raw: domain::RawDomain = toml::from_str(&text).map_err(|e| {
        let span = e.span().unwrap_or(0..0);
        cx.at(span, e.message().trim_end())
    })?;
    let d = cx.domain(raw, &mut Default::default())?;
    Ok((d, cx.warnings.take()))
}

/// What every section's validation needs: the text (to place errors), the file's name and
/// directory, and the warnings so far.
struct Ctx<'a> {
    text: &'a str,
    name: &'a str,
    /// The directory relative paths are taken from.
    base: &'a Path,
    /// What is wrong but not fatal (secret files others can read), for the operator.
    warnings: std::cell::RefCell<Vec<String>>,
}

impl Ctx<'_> {
    /// Each section in turn, in the order their errors are reported.
    fn build(&self, raw: RawConfig) -> Result<Config, ConfigError> {
        let hostname = self.hostname(raw.hostname)?;
        let state_dir = self.resolve(
            raw.state_dir
                .unwrap_or_else(|| defaults::top::STATE_DIR.into()),
        );
        let smtp = self.smtp(raw.smtp)?;
        let recipients = self.recipients(raw.recipients);
        let queue = self.queue(raw.queue)?;
        let probe = self.probe(raw.probe)?;
        let delivery = self.delivery(raw.delivery)?;
        let domains = self.domains(raw.domain)?;
        let dns = self.dns(raw.dns)?;
        let routing = self.routing(raw.routing, &hostname)?;
        let tls = self.tls(raw.tls);
        let admin = self.admin(raw.admin)?;
        let alerts = self.alerts(raw.alerts)?;
        let inbox = self.inbox(raw.inbox, tls.is_some())?;
        let tls_reports = self.tls_reports(raw.tls_reports, &hostname)?;
        let storage = self.storage(raw.storage, &hostname)?;
        Ok(Config {
            admin,
            alerts,
            hostname,
            state_dir,
            log: raw.log,
            smtp,
            queue,
            probe,
            delivery,
            dns,
            routing,
            recipients,
            auth: raw.auth,
            tls,
            inbox,
            tls_reports,
            domains,
            storage,
            warnings: self.warnings.take(),
        })
    }

    /// A path from the file: relative ones are taken from the file's directory.
    fn resolve(&self, path: impl AsRef<Path>) -> PathBuf {
        let path = path.as_ref();
        if path.is_relative() {
            self.base.join(path)
        } else {
            path.to_path_buf()
        }
    }

    /// Notes a secret file that other users can read: at the key's place when it is known,
    /// else under the key's name.
    fn secret_file(&self, at: Result<std::ops::Range<usize>, &str>, path: &Path) {
        if let Some(why) = secrets::exposure(path) {
            let warning = match at {
                Ok(span) => self.at(span, &why).to_string(),
                Err(key) => format!("{}: key `{key}`: {why}", self.name),
            };
            self.warnings.borrow_mut().push(warning);
        }
    }

    /// An error pointing at a byte span of the file, naming the key found there.
    fn at(&self, span: std::ops::Range<usize>, message: &str) -> ConfigError {
        let start = span.start.min(self.text.len());
        let before = &self.text[..start];
        let line = before.matches('\n').count() + 1;
        let line_start = before.rfind('\n').map_or(0, |i| i + 1);
        let column = self.text[line_start..start].chars().count() + 1;
        let key = key_at(self.text, line_start)
            .map(|k| {
                if k.starts_with("table ") {
                    format!("{k}: ")
                } else {
                    format!("key `{k}`: ")
                }
            })
            .unwrap_or_default();
        ConfigError::Invalid {
            path: self.name.to_string(),
            line,
            column,
            key,
            message: message.to_string(),
        }
    }

    /// An error about the file as a whole (something missing), with no position.
    fn whole(&self, message: impl Into<String>) -> ConfigError {
        ConfigError::Whole {
            path: self.name.to_string(),
            message: message.into(),
        }
    }

    /// A count that must be at least 1.
    fn positive(&self, v: Option<Spanned<usize>>, default: usize) -> Result<usize, ConfigError> {
        match v {
            Some(v) if *v.get_ref() == 0 => Err(self.at(v.span(), "must be at least 1")),
            Some(v) => Ok(v.into_inner()),
            None => Ok(default),
        }
    }
}

/// The dotted key (`queue.retry_min`) defined on the line starting at `line_start`, using the
/// nearest `[table]` header above it.
fn key_at(text: &str, line_start: usize) -> Option<String> {
    let line = text[line_start..].lines().next()?;
    if line.trim_start().starts_with('[') {
        return Some(format!("table {}", line.trim()));
    }
    let (key, _) = line.split_once('=')?;
    let key = key.trim().trim_matches('"');
    if key.is_empty() || key.starts_with('#') {
        return None;
    }
    let table = text[..line_start]
        .lines()
        .rev()
        .map(str::trim)
        .find(|l| l.starts_with('['))
        .map(|l| l.trim_matches(|c| c == '[' || c == ']').trim().to_string());
    Some(match table {
        Some(t) if !t.is_empty() => format!("{t}.{key}"),
        _ => key.to_string(),
    })
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;
    use std::time::Duration;

    /// Parses `text` as `test.toml` in `/etc/mx2` (the section files' tests use it too).
    pub(crate) fn parse(text: &str) -> Result<Config, ConfigError> {
        Config::parse(text, "test.toml", Path::new("/etc/mx2"))
    }

    /// The smallest valid file: one domain.
    pub(crate) const MINIMAL: &str =
        "[[domain]]\nname = \"Example.TEST.\"\nprimary = [\"127.0.0.1:2526\"]\n";

    #[test]
    fn the_issue_example_parses() {
        let c = parse(
            r#"hostname = "mx2.example.net"
state_dir = "/var/lib/mx2"
[smtp]
listen = ["127.0.0.1:2525"]
max_message_size = "50MB"
[queue]
retry_min = "1m"
retry_max = "1h"
lifetime = "30d"
[probe]
interval = "5s"
[[domain]]
name = "example.test"
primary = ["127.0.0.1:2526"]
"#,
        )
        .unwrap();
        assert_eq!(c.hostname, "mx2.example.net");
        assert_eq!(c.smtp.max_message_size, 50_000_000);
        assert_eq!(c.queue.retry_min, Duration::from_secs(60));
        assert_eq!(c.queue.lifetime, Duration::from_secs(30 * 86400));
        assert_eq!(c.probe.interval, Duration::from_secs(5));
        assert_eq!(
            c.domains[0].route,
            DomainRoute::Primary(vec![HostPort::parse("127.0.0.1:2526").unwrap()])
        );
    }

    #[test]
    fn defaults_are_safe() {
        let c = parse(MINIMAL).unwrap();
        assert_eq!(c.domains[0].name, "example.test");
        assert_eq!(c.queue.lifetime, Duration::from_secs(30 * 86400));
        assert_eq!(c.smtp.max_recipients, 100);
        assert_eq!(c.state_dir, PathBuf::from("/var/lib/mx2"));
    }

    #[test]
    fn relative_state_dir_is_beside_the_file() {
        let c = parse(&format!("state_dir = \"spool\"\n{MINIMAL}")).unwrap();
        assert_eq!(c.state_dir, PathBuf::from("/etc/mx2/spool"));
    }

    #[test]
    fn unknown_key_names_file_line_and_key() {
        let e = parse(&format!("{MINIMAL}[queue]\nretry_mni = \"1m\"\n"))
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("test.toml:5:1: key `queue.retry_mni`"), "{e}");
        assert!(e.contains("unknown field"), "{e}");
    }

    #[test]
    fn bad_duration_names_the_key() {
        let e = parse(&format!("[queue]\nlifetime = \"30 days\"\n{MINIMAL}"))
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("test.toml:2:"), "{e}");
        assert!(e.contains("key `queue.lifetime`"), "{e}");
        assert!(e.contains("invalid duration"), "{e}");
    }
}
