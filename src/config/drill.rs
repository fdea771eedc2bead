//! A domain's fire drill keys (`drill`, `drill_rcpt` in `[[domain]]`): how often the drill
//! runs on its own and the canary address it sends to. Parsing and validation only.

use super::defaults::drill as default;
use super::{ConfigError, Ctx, parse_duration};
use std::time::Duration;
use toml::Spanned;

/// A domain's drill settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DrillConfig {
    /// How often a drill runs on its own; None: only when asked (`mx2 drill`, the API).
    pub every: Option<Duration>,
    /// The canary: an address of the domain itself (mx2 relays for nobody).
    pub rcpt: String,
}

impl DrillConfig {
    /// A domain's settings when its table says nothing: off, the default canary.
    pub fn off(domain: &str) -> Self {
        Self {
            every: None,
            rcpt: format!("{}@{domain}", default::RCPT_LOCAL),
        }
    }
}

/// `"off"`, `"daily"`, or an interval (`"6h"`), at least [`default::MIN_EVERY`].
pub fn parse_every(text: &str) -> Result<Option<Duration>, String> {
    match text.trim() {
        "off" => Ok(None),
        "daily" => Ok(Some(Duration::from_secs(86_400))),
        other => {
            let d = parse_duration(other).map_err(|e| {
                format!("{e}: use \"off\", \"daily\" or an interval such as \"6h\"")
            })?;
            if d < default::MIN_EVERY {
                return Err(format!(
                    "a drill at most every {}s: use a longer interval",
                    default::MIN_EVERY.as_secs()
                ));
            }
            Ok(Some(d))
        }
    }
}

impl Ctx<'_> {
    pub(super) fn drill(
        &self,
        domain: &str,
        every: Option<&Spanned<String>>,
        rcpt: Option<&Spanned<String>>,
    ) -> Result<DrillConfig, ConfigError> {
        let mut d = DrillConfig::off(domain);
        if let Some(e) = every {
            d.every = parse_every(e.get_ref()).map_err(|m| self.at(e.span(), &m))?;
        }
        if let Some(r) = rcpt {
            let mailbox =
                crate::smtp::address::parse_mailbox(r.get_ref().trim(), true).map_err(|e| {
                    self.at(
                        r.span(),
                        &format!("`{}` is not a mail address: {e}", r.get_ref()),
                    )
                })?;
            if mailbox.domain_key() != domain {
                return Err(self.at(
                    r.span(),
                    &format!(
                        "drill_rcpt `{}` is not an address of {domain}: the canary must be in the domain it drills (mx2 relays for nobody)",
                        r.get_ref()
                    ),
                ));
            }
            d.rcpt = r.get_ref().trim().to_string();
        }
        Ok(d)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::tests::parse;

    fn domain(extra: &str) -> Result<DrillConfig, String> {
        parse(&format!(
            "[[domain]]\nname = \"a.test\"\nprimary = [\"h:25\"]\n{extra}\n"
        ))
        .map(|c| c.domains[0].drill.clone())
        .map_err(|e| e.to_string())
    }

    #[test]
    fn off_by_default_with_the_default_canary() {
        assert_eq!(
            domain("").unwrap(),
            DrillConfig {
                every: None,
                rcpt: "mx2-drill@a.test".into()
            }
        );
    }

    #[test]
    fn schedules() {
        assert_eq!(
            domain("drill = \"daily\"").unwrap().every,
            Some(Duration::from_secs(86_400))
        );
        assert_eq!(
            domain("drill = \"6h\"").unwrap().every,
            Some(Duration::from_secs(6 * 3600))
        );
        assert_eq!(domain("drill = \"off\"").unwrap().every, None);
        let e = domain("drill = \"weekly\"").unwrap_err();
        assert!(e.contains("test.toml:4:") && e.contains("\"daily\""), "{e}");
        let e = domain("drill = \"0s\"").unwrap_err();
        assert!(e.contains("longer interval"), "{e}");
    }

    #[test]
    fn the_canary_is_in_the_domain() {
        assert_eq!(
            domain("drill_rcpt = \"canary@A.test\"").unwrap().rcpt,
            "canary@A.test"
        );
        let e = domain("drill_rcpt = \"canary@elsewhere.test\"").unwrap_err();
        assert!(
            e.contains("not an address of a.test") && e.contains("relays for nobody"),
            "{e}"
        );
        let e = domain("drill_rcpt = \"no address\"").unwrap_err();
        assert!(e.contains("not a mail address"), "{e}");
    }
}
