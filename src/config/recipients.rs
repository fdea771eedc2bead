//! Which recipients mx2 accepts: the `[recipients]` table (how long answers are cached, how
//! often lists are reloaded) and each domain's recipient keys (`recipients`,
//! `recipient_files`, `recipient_url`, …) as a [`RecipientPolicy`]. Parsing and validation
//! only: the lists are read and the callouts made by the recipients code, never here.

use super::defaults::{domain::SUBADDRESS_SEPARATOR, recipients as default};
use super::domain::RawDomain;
use super::{ConfigError, Ctx, HumanDuration};
use serde::Deserialize;
use std::path::PathBuf;
use std::time::Duration;

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
    /// Addresses given inline (`recipient_addresses`, or uploaded with
    /// `PUT /api/v1/domains/NAME/recipients`), in the list's file syntax one per item.
    pub addresses: std::sync::Arc<Vec<String>>,
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

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawRecipients {
    positive_ttl: Option<HumanDuration>,
    negative_ttl: Option<HumanDuration>,
    callout_timeout: Option<HumanDuration>,
    reload_interval: Option<HumanDuration>,
    standby_check_interval: Option<HumanDuration>,
}

impl Ctx<'_> {
    pub(super) fn recipients(&self, r: RawRecipients) -> RecipientsConfig {
        RecipientsConfig {
            positive_ttl: r.positive_ttl.map_or(default::POSITIVE_TTL, |v| v.0),
            negative_ttl: r.negative_ttl.map_or(default::NEGATIVE_TTL, |v| v.0),
            callout_timeout: r.callout_timeout.map_or(default::CALLOUT_TIMEOUT, |v| v.0),
            reload_interval: r.reload_interval.map_or(default::RELOAD_INTERVAL, |v| {
                v.0.max(Duration::from_secs(1))
            }),
            standby_check_interval: r
                .standby_check_interval
                .map_or(default::STANDBY_CHECK_INTERVAL, |v| {
                    v.0.max(Duration::from_millis(100))
                }),
        }
    }

    /// A list fetched over HTTP (`recipient_url`, `inbox_credentials_url`) and the file
    /// holding its bearer token (`KEY_token_file`).
    pub(super) fn list_url(
        &self,
        url: Option<&toml::Spanned<String>>,
        token_file: Option<&String>,
        key: &str,
    ) -> Result<(Option<String>, Option<PathBuf>), ConfigError> {
        let url = match url {
            Some(u)
                if !(u.get_ref().starts_with("http://") || u.get_ref().starts_with("https://")) =>
            {
                return Err(self.at(
                    u.span(),
                    &format!("{key} must start with http:// or https://"),
                ));
            }
            u => u.map(|u| u.get_ref().clone()),
        };
        let token_file = token_file.map(|p| self.resolve(p));
        if let Some(f) = &token_file {
            self.secret_file(Err(&format!("{key}_token_file")), f);
        }
        Ok((url, token_file))
    }

    /// A domain's recipient keys.
    pub(super) fn recipient_policy(&self, d: &RawDomain) -> Result<RecipientPolicy, ConfigError> {
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
        policy.files = d
            .recipient_files
            .iter()
            .flatten()
            .map(|p| self.resolve(p))
            .collect();
        if let Some(a) = &d.recipient_addresses {
            if !policy.list {
                return Err(self.at(
                    a.span(),
                    "recipient_addresses needs recipients = \"list\" (or [\"list\", \"verify\"])",
                ));
            }
            let mut addresses = Vec::with_capacity(a.get_ref().len());
            for item in a.get_ref() {
                let t = item.get_ref().trim();
                let ok = match t.strip_prefix('@') {
                    Some(domain) => super::is_domain_name(domain.trim_end_matches('.')),
                    None => t.rsplit_once('@').is_some_and(|(l, d)| {
                        !l.is_empty() && super::is_domain_name(d.trim_end_matches('.'))
                    }),
                };
                if !ok {
                    return Err(self.at(
                        item.span(),
                        &format!(
                            "`{t}` is not an address (user@domain) or a whole domain (@domain)"
                        ),
                    ));
                }
                addresses.push(t.to_string());
            }
            policy.addresses = std::sync::Arc::new(addresses);
        }
        (policy.url, policy.url_token_file) = self.list_url(
            d.recipient_url.as_ref(),
            d.recipient_url_token_file.as_ref(),
            "recipient_url",
        )?;
        if policy.list
            && policy.files.is_empty()
            && policy.url.is_none()
            && d.recipient_addresses.is_none()
        {
            let span = d.recipients.as_ref().map_or(d.name.span(), |v| v.span());
            return Err(self.at(
                span,
                "recipients = \"list\" needs recipient_files, recipient_url or recipient_addresses",
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
            None => Some(SUBADDRESS_SEPARATOR),
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
}
