//! The configuration file: TOML → a typed, validated [`Config`]. Every error names the file,
//! the line and the key. This module reads the file and nothing else.

mod admin;
mod cidr;
mod secrets;
mod storage;
mod units;

pub use admin::{AdminConfig, AlertsConfig};
pub use cidr::Cidr;
pub use storage::{PgTls, PostgresConfig, StorageConfig};

pub use units::{Size, Span, parse_duration, parse_pin, parse_size};

use serde::Deserialize;
use std::collections::HashSet;
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;
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
    pub auth: AuthCheckConfig,
    /// The certificate offered with STARTTLS (none: STARTTLS is not offered).
    pub tls: Option<TlsFiles>,
    pub admin: AdminConfig,
    pub alerts: AlertsConfig,
    pub domains: Vec<DomainConfig>,
    /// Where the queue lives (`[storage]`).
    pub storage: StorageConfig,
}

#[derive(Debug, Clone)]
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
}

#[derive(Debug, Clone)]
pub struct DnsConfig {
    /// Name servers (IP:port); empty: the system's resolv.conf.
    pub nameservers: Vec<std::net::SocketAddr>,
    pub timeout: Duration,
}

#[derive(Debug, Clone)]
pub struct RoutingConfig {
    /// Names under which MX records point at this server (hostname included).
    pub my_names: Vec<String>,
    /// Addresses that are this server besides the listen addresses (NAT, load balancer).
    pub my_addresses: Vec<std::net::IpAddr>,
    /// The port MX hosts are contacted on (25; other values are for tests).
    pub mx_port: u16,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    /// `text` or `json`.
    pub format: LogFormat,
    /// A tracing filter such as `info` or `mx2=debug,info`.
    pub level: String,
}

impl Default for LogConfig {
    fn default() -> Self {
        Self {
            format: LogFormat::Text,
            level: "info".into(),
        }
    }
}

#[derive(Debug, Clone)]
pub struct SmtpConfig {
    pub listen: Vec<std::net::SocketAddr>,
    pub max_message_size: u64,
    pub max_recipients: usize,
    pub max_connections: usize,
    pub max_connections_per_ip: usize,
    pub max_line_length: usize,
    /// Clients allowed to use ETRN (None: any).
    pub etrn_clients: Option<Vec<Cidr>>,
    pub command_timeout: Duration,
    pub data_timeout: Duration,
    /// Content must arrive at this many bytes per second on average (after a first
    /// `data_timeout`); 0: no minimum. As Postfix's `smtpd_min_data_rate`.
    pub min_data_rate: u64,
    /// Above this share of `max_connections` open, the server is under stress...
    pub stress_threshold: f64,
    /// ...and idle, command and greeting waits last at most this long.
    pub stress_timeout: Duration,
    /// IPv6 clients are counted per prefix of this length by the per-client limits.
    pub ipv6_prefix_length: u8,
    pub shutdown_grace: Duration,
    /// Wait this long before the banner; a client that talks first is refused (early talker).
    pub greeting_delay: Duration,
    /// Errors in a session before it is closed with 421.
    pub max_errors: usize,
    /// After the third error, each error reply is delayed by this much more (tarpit).
    pub error_delay: Duration,
    /// Per client address, token buckets refilled per minute (0: no limit).
    pub messages_per_minute_per_ip: u32,
    pub recipients_per_minute_per_ip: u32,
    /// Clients exempt from the greeting delay, rate limits and DNSBL checks.
    pub allow: Vec<Cidr>,
    /// DNS blocklist zones checked at connect.
    pub dnsbl: Vec<String>,
    /// Listeners that expect a PROXY protocol header (v1 or v2)...
    pub proxy_listen: Vec<std::net::SocketAddr>,
    /// ...from these load balancers only.
    pub proxy_trusted: Vec<Cidr>,
}

/// Sender authentication at reception.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuthCheckConfig {
    /// Evaluate SPF, DKIM and DMARC and prepend Authentication-Results.
    pub enabled: bool,
    /// Refuse (550 5.7.1) mail that fails DMARC where the domain's policy is reject.
    pub dmarc_reject: bool,
}

impl Default for AuthCheckConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            dmarc_reject: false,
        }
    }
}

/// How recipients are checked, and for how long verification results are kept.
#[derive(Debug, Clone)]
pub struct RecipientsConfig {
    pub positive_ttl: Duration,
    pub negative_ttl: Duration,
    pub callout_timeout: Duration,
    /// How often lists are checked for changes (files) or fetched again (URLs).
    pub reload_interval: Duration,
    /// How often a standby domain's primary is checked while it is up.
    pub standby_check_interval: Duration,
}

#[derive(Debug, Clone)]
pub struct QueueConfig {
    pub retry_min: Duration,
    pub retry_max: Duration,
    pub lifetime: Duration,
    /// Tell the sender once a recipient has waited this long (off when None).
    pub delay_warning: Option<Duration>,
}

#[derive(Debug, Clone)]
pub struct ProbeConfig {
    pub interval: Duration,
    pub timeout: Duration,
}

#[derive(Debug, Clone)]
pub struct DeliveryConfig {
    /// The ceiling of the adaptive per-primary concurrency.
    pub max_connections_per_primary: usize,
    /// Where the adaptive concurrency starts.
    pub initial_connections_per_primary: usize,
    /// Messages per second per primary (None: no cap).
    pub max_messages_per_second: Option<f64>,
    pub messages_per_connection: usize,
    pub connect_timeout: Duration,
    pub greeting_timeout: Duration,
    pub command_timeout: Duration,
    pub data_timeout: Duration,
}

/// One domain mx2 backs up.
#[derive(Debug, Clone)]
pub struct DomainConfig {
    /// Lower-case, no trailing dot.
    pub name: String,
    pub route: DomainRoute,
    pub bounce: BouncePolicy,
    pub tls: TlsPolicy,
    /// SMTP AUTH to the primary (only ever inside TLS).
    pub auth: Option<AuthConfig>,
    pub recipients: RecipientPolicy,
    /// Refuse new mail with 451 while the primary is up, so senders go to it.
    pub standby: bool,
}

/// What to answer for a recipient nobody can vouch for while the primary is down.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum UnknownWhenDown {
    Accept,
    #[default]
    TempFail,
}

/// How a domain's recipients are known.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct RecipientPolicy {
    /// Addresses come from lists (files, a URL); a list is authoritative.
    pub list: bool,
    /// Unknown addresses are asked of the primary (callout) and the answers cached.
    pub verify: bool,
    pub files: Vec<PathBuf>,
    pub url: Option<String>,
    pub url_token_file: Option<PathBuf>,
    pub unknown_when_down: UnknownWhenDown,
    pub case_sensitive: bool,
    /// `+` for user+tag@domain: the tag is ignored when looking the address up.
    pub subaddress: Option<char>,
}

impl RecipientPolicy {
    /// True when any recipient is accepted (no list, no verification).
    pub fn is_any(&self) -> bool {
        !self.list && !self.verify
    }
}

#[derive(Clone, PartialEq, Eq)]
pub struct AuthConfig {
    pub user: String,
    /// A file holding the password (one line), readable by mx2 only.
    pub password_file: PathBuf,
    /// The password, read from `password_file` when the config loads (line end trimmed).
    pub password: String,
}

impl std::fmt::Debug for AuthConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuthConfig")
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

/// A primary host: a name or an IP address, and a port.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct HostPort {
    pub host: String,
    pub port: u16,
}

impl fmt::Display for HostPort {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.host.contains(':') {
            write!(f, "[{}]:{}", self.host, self.port)
        } else {
            write!(f, "{}:{}", self.host, self.port)
        }
    }
}

impl HostPort {
    /// Parses `host:port`, `[v6]:port`, or a bare host (port 25).
    pub fn parse(text: &str) -> Result<Self, String> {
        let t = text.trim();
        let bad = |why: &str| {
            format!(
                "invalid primary `{text}`: {why} (expected host:port, e.g. \"mail.example.com:25\" or \"[2001:db8::1]:25\")"
            )
        };
        if let Some(rest) = t.strip_prefix('[') {
            let (host, after) = rest.split_once(']').ok_or_else(|| bad("missing `]`"))?;
            host.parse::<std::net::Ipv6Addr>()
                .map_err(|_| bad("not an IPv6 address inside [ ]"))?;
            let port = match after.strip_prefix(':') {
                Some(p) => p.parse().map_err(|_| bad("bad port"))?,
                None if after.is_empty() => 25,
                None => return Err(bad("junk after `]`")),
            };
            return Ok(Self {
                host: host.to_string(),
                port,
            });
        }
        let (host, port) = match t.rsplit_once(':') {
            Some((h, p)) => (h, p.parse::<u16>().map_err(|_| bad("bad port"))?),
            None => (t, 25),
        };
        if port == 0 {
            return Err(bad("port 0"));
        }
        if host.parse::<std::net::IpAddr>().is_err() && !is_domain_name(host) {
            return Err(bad("not a host name or IP address"));
        }
        Ok(Self {
            host: host.to_ascii_lowercase(),
            port,
        })
    }
}

/// True for an LDH domain name (letters, digits, hyphens, dots), 1–253 characters.
pub fn is_domain_name(name: &str) -> bool {
    let name = name.strip_suffix('.').unwrap_or(name);
    !name.is_empty()
        && name.len() <= 253
        && name.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        })
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
    smtp: RawSmtp,
    #[serde(default)]
    queue: RawQueue,
    #[serde(default)]
    probe: RawProbe,
    #[serde(default)]
    delivery: RawDelivery,
    #[serde(default)]
    dns: RawDns,
    #[serde(default)]
    routing: RawRouting,
    #[serde(default)]
    recipients: RawRecipients,
    #[serde(default)]
    auth: AuthCheckConfig,
    tls: Option<RawTls>,
    #[serde(default)]
    admin: admin::RawAdmin,
    #[serde(default)]
    alerts: admin::RawAlerts,
    #[serde(default)]
    domain: Vec<RawDomain>,
    #[serde(default)]
    storage: storage::RawStorage,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawDns {
    nameservers: Option<Vec<Spanned<String>>>,
    timeout: Option<Span>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTls {
    cert: String,
    key: String,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawRouting {
    my_names: Option<Vec<Spanned<String>>>,
    my_addresses: Option<Vec<Spanned<String>>>,
    mx_port: Option<Spanned<u16>>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawSmtp {
    listen: Option<Vec<Spanned<String>>>,
    max_message_size: Option<Spanned<Size>>,
    max_recipients: Option<Spanned<usize>>,
    max_connections: Option<usize>,
    max_connections_per_ip: Option<usize>,
    max_line_length: Option<Spanned<usize>>,
    etrn_clients: Option<Vec<Spanned<String>>>,
    command_timeout: Option<Span>,
    data_timeout: Option<Span>,
    min_data_rate: Option<u64>,
    stress_threshold: Option<Spanned<f64>>,
    stress_timeout: Option<Span>,
    ipv6_prefix_length: Option<Spanned<u8>>,
    shutdown_grace: Option<Span>,
    greeting_delay: Option<Span>,
    max_errors: Option<Spanned<usize>>,
    error_delay: Option<Span>,
    messages_per_minute_per_ip: Option<u32>,
    recipients_per_minute_per_ip: Option<u32>,
    allow: Option<Vec<Spanned<String>>>,
    dnsbl: Option<Vec<Spanned<String>>>,
    proxy_listen: Option<Vec<Spanned<String>>>,
    proxy_trusted: Option<Vec<Spanned<String>>>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawRecipients {
    positive_ttl: Option<Span>,
    negative_ttl: Option<Span>,
    callout_timeout: Option<Span>,
    reload_interval: Option<Span>,
    standby_check_interval: Option<Span>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawQueue {
    retry_min: Option<Spanned<Span>>,
    retry_max: Option<Spanned<Span>>,
    lifetime: Option<Span>,
    delay_warning: Option<Span>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawProbe {
    interval: Option<Spanned<Span>>,
    timeout: Option<Span>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawDelivery {
    max_connections_per_primary: Option<Spanned<usize>>,
    initial_connections_per_primary: Option<Spanned<usize>>,
    max_messages_per_second: Option<Spanned<f64>>,
    messages_per_connection: Option<Spanned<usize>>,
    connect_timeout: Option<Span>,
    greeting_timeout: Option<Span>,
    command_timeout: Option<Span>,
    data_timeout: Option<Span>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDomain {
    name: Spanned<String>,
    primary: Option<Spanned<Vec<Spanned<String>>>>,
    route: Option<Spanned<String>>,
    bounce: Option<Spanned<String>>,
    postmaster: Option<Spanned<String>>,
    tls: Option<Spanned<String>>,
    tls_ca_file: Option<String>,
    tls_pin: Option<Spanned<String>>,
    auth_user: Option<Spanned<String>>,
    auth_password_file: Option<Spanned<String>>,
    recipients: Option<Spanned<toml::Value>>,
    recipient_files: Option<Vec<String>>,
    recipient_url: Option<Spanned<String>>,
    recipient_url_token_file: Option<String>,
    unknown_when_down: Option<Spanned<String>>,
    local_part_case: Option<Spanned<String>>,
    subaddress_separator: Option<Spanned<String>>,
    standby: Option<bool>,
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
        // Relative paths in the file are beside it, and kept absolute: the server and a
        // command run from another directory must name the same files.
        let dir = path
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        let base = std::path::absolute(dir).unwrap_or_else(|_| dir.to_path_buf());
        Self::parse(&text, &path.display().to_string(), &base)
    }

    /// Parses configuration text; `name` is used in error messages, `base` resolves relative paths.
    pub fn parse(text: &str, name: &str, base: &Path) -> Result<Config, ConfigError> {
        let cx = Ctx {
            text,
            name,
            warnings: Default::default(),
        };
        let raw: RawConfig = toml::from_str(text).map_err(|e| {
            let span = e.span().unwrap_or(0..0);
            cx.at(span, e.message().trim_end())
        })?;
        cx.build(raw, base)
    }
}

struct Ctx<'a> {
    text: &'a str,
    name: &'a str,
    /// What is wrong but not fatal (secret files others can read), for the operator.
    warnings: std::cell::RefCell<Vec<String>>,
}

impl Ctx<'_> {
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

    fn recipient_policy(&self, d: &RawDomain, base: &Path) -> Result<RecipientPolicy, ConfigError> {
        let path = |p: &String| {
            let p = PathBuf::from(p);
            if p.is_relative() { base.join(p) } else { p }
        };
        let mut policy = RecipientPolicy::default();
        if let Some(v) = &d.recipients {
            let words: Vec<String> = match v.get_ref() {
                toml::Value::String(s) => vec![s.clone()],
                toml::Value::Array(a) => a
                    .iter()
                    .map(|x| x.as_str().unwrap_or("?").to_string())
                    .collect(),
                _ => vec!["?".into()],
            };
            for w in words {
                match w.as_str() {
                    "any" => {}
                    "list" => policy.list = true,
                    "verify" => policy.verify = true,
                    other => {
                        return Err(self.at(v.span(), &format!("unknown recipients mode `{other}`: use \"any\", \"list\", \"verify\" or [\"list\", \"verify\"]")));
                    }
                }
            }
        }
        policy.files = d.recipient_files.iter().flatten().map(path).collect();
        if let Some(u) = &d.recipient_url {
            if !(u.get_ref().starts_with("http://") || u.get_ref().starts_with("https://")) {
                return Err(self.at(
                    u.span(),
                    "recipient_url must start with http:// or https://",
                ));
            }
            policy.url = Some(u.get_ref().clone());
        }
        policy.url_token_file = d.recipient_url_token_file.as_ref().map(path);
        if let Some(f) = &policy.url_token_file {
            self.secret_file(Err("recipient_url_token_file"), f);
        }
        if policy.list && policy.files.is_empty() && policy.url.is_none() {
            let span = d.recipients.as_ref().map_or(d.name.span(), |v| v.span());
            return Err(self.at(
                span,
                "recipients = \"list\" needs recipient_files or recipient_url",
            ));
        }
        policy.unknown_when_down = match d
            .unknown_when_down
            .as_ref()
            .map(|v| (v, v.get_ref().as_str()))
        {
            None | Some((_, "tempfail")) => UnknownWhenDown::TempFail,
            Some((_, "accept")) => UnknownWhenDown::Accept,
            Some((v, other)) => {
                return Err(self.at(
                    v.span(),
                    &format!("unknown_when_down `{other}`: use \"tempfail\" or \"accept\""),
                ));
            }
        };
        policy.case_sensitive = match d
            .local_part_case
            .as_ref()
            .map(|v| (v, v.get_ref().as_str()))
        {
            None | Some((_, "insensitive")) => false,
            Some((_, "sensitive")) => true,
            Some((v, other)) => {
                return Err(self.at(
                    v.span(),
                    &format!("local_part_case `{other}`: use \"insensitive\" or \"sensitive\""),
                ));
            }
        };
        policy.subaddress = match &d.subaddress_separator {
            None => Some('+'),
            Some(v) if v.get_ref().is_empty() => None,
            Some(v) if v.get_ref().chars().count() == 1 => v.get_ref().chars().next(),
            Some(v) => {
                return Err(self.at(
                    v.span(),
                    "subaddress_separator must be one character (or \"\" for none)",
                ));
            }
        };
        Ok(policy)
    }

    fn cidrs(&self, list: Option<Vec<Spanned<String>>>) -> Result<Option<Vec<Cidr>>, ConfigError> {
        list.map(|l| {
            l.into_iter()
                .map(|c| Cidr::parse(c.get_ref()).map_err(|e| self.at(c.span(), &e)))
                .collect()
        })
        .transpose()
    }

    fn whole(&self, message: impl Into<String>) -> ConfigError {
        ConfigError::Whole {
            path: self.name.to_string(),
            message: message.into(),
        }
    }

    fn build(&self, raw: RawConfig, base: &Path) -> Result<Config, ConfigError> {
        let hostname = match raw.hostname {
            Some(h) => {
                let name = h
                    .get_ref()
                    .trim()
                    .trim_end_matches('.')
                    .to_ascii_lowercase();
                if !is_domain_name(&name) {
                    return Err(self.at(h.span(), "not a valid host name; use the fully qualified name senders see in the MX record"));
                }
                name
            }
            None => system_hostname(),
        };
        let state_dir = {
            let p = PathBuf::from(raw.state_dir.unwrap_or_else(|| "/var/lib/mx2".into()));
            if p.is_relative() { base.join(p) } else { p }
        };

        let s = raw.smtp;
        let listen = match s.listen {
            None => vec!["127.0.0.1:25".parse().expect("literal address")],
            Some(list) => {
                let mut out = Vec::new();
                for item in list {
                    let addr = item.get_ref().parse().map_err(|_| {
                        self.at(item.span(), &format!("`{}` is not an IP:port address, e.g. \"0.0.0.0:25\" or \"[::]:25\"", item.get_ref()))
                    })?;
                    out.push(addr);
                }
                if out.is_empty() {
                    return Err(self.whole("[smtp] listen is empty: give at least one address"));
                }
                out
            }
        };
        let max_message_size = match s.max_message_size {
            Some(v) if v.get_ref().0 < 1024 => {
                return Err(self.at(v.span(), "max_message_size must be at least 1KiB"));
            }
            Some(v) => v.into_inner().0,
            None => 50_000_000,
        };
        let max_recipients = positive(self, s.max_recipients, 100)?;
        let max_line_length = match s.max_line_length {
            Some(v) if *v.get_ref() < 512 => {
                return Err(self.at(
                    v.span(),
                    "max_line_length must be at least 512 (RFC 5321 §4.5.3.1.4)",
                ));
            }
            Some(v) => v.into_inner(),
            None => 4096,
        };
        let etrn_clients = self.cidrs(s.etrn_clients)?;
        let stress_threshold = match s.stress_threshold {
            Some(v) if !(*v.get_ref() > 0.0 && *v.get_ref() <= 1.0) => {
                return Err(self.at(
                    v.span(),
                    "stress_threshold is a share of max_connections: more than 0, at most 1 (e.g. 0.8)",
                ));
            }
            Some(v) => v.into_inner(),
            None => 0.8,
        };
        let ipv6_prefix_length = match s.ipv6_prefix_length {
            Some(v) if !(1..=128).contains(v.get_ref()) => {
                return Err(self.at(
                    v.span(),
                    "ipv6_prefix_length must be from 1 to 128 (64: one limit per /64, 128: per address)",
                ));
            }
            Some(v) => v.into_inner(),
            None => 64,
        };
        let smtp = SmtpConfig {
            listen,
            max_message_size,
            max_recipients,
            max_connections: s.max_connections.unwrap_or(1000).max(1),
            max_connections_per_ip: s.max_connections_per_ip.unwrap_or(20).max(1),
            max_line_length,
            etrn_clients,
            command_timeout: s.command_timeout.map_or(Duration::from_secs(300), |v| v.0),
            data_timeout: s.data_timeout.map_or(Duration::from_secs(180), |v| v.0),
            min_data_rate: s.min_data_rate.unwrap_or(500),
            stress_threshold,
            stress_timeout: s.stress_timeout.map_or(Duration::from_secs(10), |v| v.0),
            ipv6_prefix_length,
            shutdown_grace: s.shutdown_grace.map_or(Duration::from_secs(30), |v| v.0),
            greeting_delay: s.greeting_delay.map_or(Duration::from_secs(1), |v| v.0),
            max_errors: positive(self, s.max_errors, 20)?,
            error_delay: s.error_delay.map_or(Duration::from_secs(1), |v| v.0),
            messages_per_minute_per_ip: s.messages_per_minute_per_ip.unwrap_or(600),
            recipients_per_minute_per_ip: s.recipients_per_minute_per_ip.unwrap_or(3000),
            allow: self.cidrs(s.allow)?.unwrap_or_default(),
            dnsbl: s
                .dnsbl
                .unwrap_or_default()
                .into_iter()
                .map(|z| {
                    let zone = z.get_ref().trim_end_matches('.').to_ascii_lowercase();
                    if is_domain_name(&zone) {
                        Ok(zone)
                    } else {
                        Err(self.at(z.span(), &format!("`{}` is not a DNS zone", z.get_ref())))
                    }
                })
                .collect::<Result<_, _>>()?,
            proxy_listen: s
                .proxy_listen
                .unwrap_or_default()
                .into_iter()
                .map(|a| {
                    a.get_ref().parse().map_err(|_| {
                        self.at(
                            a.span(),
                            &format!("`{}` is not an IP:port address", a.get_ref()),
                        )
                    })
                })
                .collect::<Result<_, _>>()?,
            proxy_trusted: self.cidrs(s.proxy_trusted)?.unwrap_or_default(),
        };
        if !smtp.proxy_listen.is_empty() && smtp.proxy_trusted.is_empty() {
            return Err(self.whole("[smtp] proxy_listen needs proxy_trusted: the load balancers allowed to send PROXY headers"));
        }
        let r = raw.recipients;
        let recipients = RecipientsConfig {
            positive_ttl: r
                .positive_ttl
                .map_or(Duration::from_secs(30 * 86_400), |v| v.0),
            negative_ttl: r.negative_ttl.map_or(Duration::from_secs(3600), |v| v.0),
            callout_timeout: r.callout_timeout.map_or(Duration::from_secs(10), |v| v.0),
            reload_interval: r.reload_interval.map_or(Duration::from_secs(600), |v| {
                v.0.max(Duration::from_secs(1))
            }),
            standby_check_interval: r
                .standby_check_interval
                .map_or(Duration::from_secs(10), |v| {
                    v.0.max(Duration::from_millis(100))
                }),
        };

        let q = raw.queue;
        let retry_min = q
            .retry_min
            .as_ref()
            .map_or(Duration::from_secs(60), |v| v.get_ref().0);
        let retry_max = q
            .retry_max
            .as_ref()
            .map_or(Duration::from_secs(3600), |v| v.get_ref().0);
        if retry_min.is_zero() {
            let span = q.retry_min.as_ref().map_or(0..0, |v| v.span());
            return Err(self.at(span, "retry_min must be greater than zero"));
        }
        if retry_max < retry_min {
            let span = q
                .retry_max
                .as_ref()
                .or(q.retry_min.as_ref())
                .map_or(0..0, |v| v.span());
            return Err(self.at(span, "retry_max must not be less than retry_min"));
        }
        let queue = QueueConfig {
            retry_min,
            retry_max,
            lifetime: q.lifetime.map_or(Duration::from_secs(30 * 86_400), |v| v.0),
            delay_warning: q.delay_warning.map(|v| v.0).filter(|d| !d.is_zero()),
        };

        let interval = match raw.probe.interval {
            Some(v) if v.get_ref().0 < Duration::from_millis(100) => {
                return Err(self.at(v.span(), "probe interval must be at least 100ms"));
            }
            Some(v) => v.into_inner().0,
            None => Duration::from_secs(1),
        };
        let probe = ProbeConfig {
            interval,
            timeout: raw.probe.timeout.map_or(Duration::from_secs(10), |v| v.0),
        };

        let d = raw.delivery;
        let delivery = DeliveryConfig {
            max_connections_per_primary: positive(self, d.max_connections_per_primary, 20)?,
            initial_connections_per_primary: positive(self, d.initial_connections_per_primary, 2)?,
            max_messages_per_second: match d.max_messages_per_second {
                Some(r) if *r.get_ref() < 0.0 || !r.get_ref().is_finite() => {
                    return Err(self.at(
                        r.span(),
                        "max_messages_per_second must be a positive number (0 turns the cap off)",
                    ));
                }
                Some(r) if *r.get_ref() == 0.0 => None,
                Some(r) => Some(r.into_inner()),
                None => None,
            },
            messages_per_connection: positive(self, d.messages_per_connection, 100)?,
            connect_timeout: d.connect_timeout.map_or(Duration::from_secs(30), |v| v.0),
            greeting_timeout: d.greeting_timeout.map_or(Duration::from_secs(300), |v| v.0),
            command_timeout: d.command_timeout.map_or(Duration::from_secs(300), |v| v.0),
            data_timeout: d.data_timeout.map_or(Duration::from_secs(600), |v| v.0),
        };

        let mut seen = HashSet::new();
        let mut domains = Vec::new();
        for d in raw.domain {
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
            let route = match (&d.primary, &d.route) {
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
                        primary
                            .push(HostPort::parse(p.get_ref()).map_err(|e| self.at(p.span(), &e))?);
                    }
                    if primary.is_empty() {
                        return Err(self.at(
                            list.span(),
                            &format!("domain `{name}` has no primary: list at least one host:port"),
                        ));
                    }
                    DomainRoute::Primary(primary)
                }
            };
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
            let mode = match d.tls.as_ref().map(|t| (t, t.get_ref().as_str())) {
                None | Some((_, "opportunistic")) => TlsMode::Opportunistic,
                Some((_, "required")) => TlsMode::Required,
                Some((_, "verify")) => TlsMode::Verify,
                Some((t, other)) => {
                    return Err(self.at(t.span(), &format!("unknown tls mode `{other}`: use \"opportunistic\", \"required\" or \"verify\"")));
                }
            };
            let pin = match &d.tls_pin {
                Some(p) => Some(parse_pin(p.get_ref()).map_err(|e| self.at(p.span(), &e))?),
                None => None,
            };
            let ca_file = d.tls_ca_file.clone().map(|p| {
                let p = PathBuf::from(p);
                if p.is_relative() { base.join(p) } else { p }
            });
            let tls = TlsPolicy { mode, ca_file, pin };
            let auth = match (&d.auth_user, &d.auth_password_file) {
                (None, None) => None,
                (Some(u), Some(f)) => {
                    let span = f.span();
                    let f = PathBuf::from(f.get_ref());
                    let password_file = if f.is_relative() { base.join(f) } else { f };
                    self.secret_file(Ok(span.clone()), &password_file);
                    let password = std::fs::read_to_string(&password_file).map_err(|e| {
                        self.at(
                            span,
                            &format!("cannot read {}: {e}", password_file.display()),
                        )
                    })?;
                    Some(AuthConfig {
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
            let recipients = self.recipient_policy(&d, base)?;
            domains.push(DomainConfig {
                name,
                route,
                bounce,
                tls,
                auth,
                recipients,
                standby: d.standby.unwrap_or(false),
            });
        }
        if domains.is_empty() {
            return Err(self.whole("no [[domain]] configured: add at least one, e.g.\n[[domain]]\nname = \"example.com\"\nprimary = [\"mail.example.com:25\"]"));
        }

        let mut nameservers = Vec::new();
        for n in raw.dns.nameservers.unwrap_or_default() {
            let text = n.get_ref();
            let addr = text
                .parse::<std::net::SocketAddr>()
                .or_else(|_| {
                    text.parse::<std::net::IpAddr>()
                        .map(|ip| std::net::SocketAddr::new(ip, 53))
                })
                .map_err(|_| {
                    self.at(
                        n.span(),
                        &format!("`{text}` is not an IP address or IP:port of a name server"),
                    )
                })?;
            nameservers.push(addr);
        }
        let dns = DnsConfig {
            nameservers,
            timeout: raw.dns.timeout.map_or(Duration::from_secs(5), |v| v.0),
        };
        let mut my_names = vec![hostname.clone()];
        for n in raw.routing.my_names.unwrap_or_default() {
            let name = n.get_ref().trim_end_matches('.').to_ascii_lowercase();
            if !is_domain_name(&name) {
                return Err(self.at(n.span(), "not a valid host name"));
            }
            my_names.push(name);
        }
        let mut my_addresses = Vec::new();
        for a in raw.routing.my_addresses.unwrap_or_default() {
            my_addresses.push(a.get_ref().parse().map_err(|_| {
                self.at(a.span(), &format!("`{}` is not an IP address", a.get_ref()))
            })?);
        }
        let mx_port = match raw.routing.mx_port {
            Some(p) if *p.get_ref() == 0 => return Err(self.at(p.span(), "mx_port must not be 0")),
            Some(p) => p.into_inner(),
            None => 25,
        };
        let routing = RoutingConfig {
            my_names,
            my_addresses,
            mx_port,
        };
        let path = |p: String| {
            let p = PathBuf::from(p);
            if p.is_relative() { base.join(p) } else { p }
        };
        let tls = raw.tls.map(|t| TlsFiles {
            cert: path(t.cert),
            key: path(t.key),
        });
        if let Some(t) = &tls {
            self.secret_file(Err("tls.key"), &t.key);
        }

        let admin = self.admin(raw.admin, base)?;
        let alerts = self.alerts(raw.alerts, base)?;
        let storage = self.storage(raw.storage, base, &hostname)?;
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
            domains,
            storage,
            warnings: self.warnings.take(),
        })
    }
}

fn positive(cx: &Ctx<'_>, v: Option<Spanned<usize>>, default: usize) -> Result<usize, ConfigError> {
    match v {
        Some(v) if *v.get_ref() == 0 => Err(cx.at(v.span(), "must be at least 1")),
        Some(v) => Ok(v.into_inner()),
        None => Ok(default),
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

fn system_hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|s| s.trim().to_ascii_lowercase())
        .filter(|s| is_domain_name(s))
        .unwrap_or_else(|| "localhost".into())
}

impl Config {
    /// The configured domain for a recipient domain (already lower-cased, no trailing dot).
    pub fn domain(&self, name: &str) -> Option<&DomainConfig> {
        self.domains.iter().find(|d| d.name == name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Config, ConfigError> {
        Config::parse(text, "test.toml", Path::new("/etc/mx2"))
    }

    const MINIMAL: &str = "[[domain]]\nname = \"Example.TEST.\"\nprimary = [\"127.0.0.1:2526\"]\n";

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
        let e = parse("hostname = \"x\"\n").unwrap_err().to_string();
        assert!(e.contains("no [[domain]]"), "{e}");
        let e = parse(&format!("[queue]\nretry_min = \"2h\"\n{MINIMAL}"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("retry_max must not be less"), "{e}");
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

    #[test]
    fn ipv6_prefix_length_has_a_default_and_is_checked() {
        assert_eq!(parse(MINIMAL).unwrap().smtp.ipv6_prefix_length, 64);
        assert_eq!(parse(MINIMAL).unwrap().smtp.min_data_rate, 500);
        let c = parse(&format!("[smtp]\nipv6_prefix_length = 128\n{MINIMAL}")).unwrap();
        assert_eq!(c.smtp.ipv6_prefix_length, 128);
        for line in ["ipv6_prefix_length = 0", "ipv6_prefix_length = 129"] {
            let e = parse(&format!("[smtp]\n{line}\n{MINIMAL}"))
                .unwrap_err()
                .to_string();
            assert!(
                e.contains("test.toml:2:") && e.contains("ipv6_prefix_length"),
                "{line}: {e}"
            );
        }
    }

    #[test]
    fn stress_settings_have_defaults_and_are_checked() {
        let c = parse(MINIMAL).unwrap();
        assert_eq!(c.smtp.stress_threshold, 0.8);
        assert_eq!(c.smtp.stress_timeout, Duration::from_secs(10));
        let c = parse(&format!(
            "[smtp]\nstress_threshold = 0.5\nstress_timeout = \"3s\"\n{MINIMAL}"
        ))
        .unwrap();
        assert_eq!(c.smtp.stress_threshold, 0.5);
        assert_eq!(c.smtp.stress_timeout, Duration::from_secs(3));
        for line in ["stress_threshold = 1.5", "stress_threshold = 0.0"] {
            let e = parse(&format!("[smtp]\n{line}\n{MINIMAL}"))
                .unwrap_err()
                .to_string();
            assert!(
                e.contains("test.toml:2:") && e.contains("stress_threshold"),
                "{line}: {e}"
            );
        }
    }

    #[test]
    fn host_port_forms() {
        assert_eq!(HostPort::parse("[::1]:26").unwrap().port, 26);
        assert_eq!(HostPort::parse("mail.example.com").unwrap().port, 25);
        assert!(HostPort::parse("bad host:25").is_err());
        assert!(HostPort::parse("h:0").is_err());
    }
}
