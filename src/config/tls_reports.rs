//! The `[tls_reports]` table: whether mx2 sends daily TLS reports (RFC 8460) to the domains
//! it delivers to under a policy, and how the reports name their sender. Parsing and
//! validation only; `tlsrpt` counts and sends.

use super::defaults::tls_reports as default;
use super::{ConfigError, Ctx};
use serde::Deserialize;
use toml::Spanned;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsReportsConfig {
    pub enabled: bool,
    /// The report's `organization-name`.
    pub organization: String,
    /// The report's `contact-info`.
    pub contact: String,
    /// The `From:` of report mail.
    pub from: String,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawTlsReports {
    enabled: Option<bool>,
    organization: Option<String>,
    contact: Option<Spanned<String>>,
    from: Option<Spanned<String>>,
}

impl Ctx<'_> {
    pub(super) fn tls_reports(
        &self,
        raw: RawTlsReports,
        hostname: &str,
    ) -> Result<TlsReportsConfig, ConfigError> {
        let address = |v: Option<Spanned<String>>, key: &str| match v {
            Some(a) => match crate::smtp::address::parse_mailbox(a.get_ref(), true) {
                Ok(_) => Ok(a.into_inner()),
                Err(e) => Err(self.at(
                    a.span(),
                    &format!(
                        "[tls_reports] {key} `{}` is not a mail address: {e}",
                        a.get_ref()
                    ),
                )),
            },
            None => Ok(format!("{}@{hostname}", default::LOCAL_PART)),
        };
        Ok(TlsReportsConfig {
            enabled: raw.enabled.unwrap_or(default::ENABLED),
            organization: raw.organization.unwrap_or_else(|| hostname.to_string()),
            contact: address(raw.contact, "contact")?,
            from: address(raw.from, "from")?,
        })
    }
}

#[cfg(test)]
mod tests {
    use crate::config::tests::{MINIMAL, parse};

    #[test]
    fn defaults_name_the_host_and_addresses_are_checked() {
        let c = parse(&format!("hostname = \"mx2.b.test\"\n{MINIMAL}")).unwrap();
        let r = &c.tls_reports;
        assert!(!r.enabled);
        assert_eq!(r.organization, "mx2.b.test");
        assert_eq!(
            (r.contact.as_str(), r.from.as_str()),
            ("postmaster@mx2.b.test", "postmaster@mx2.b.test")
        );
        let c = parse(&format!(
            "[tls_reports]\nenabled = true\norganization = \"B Org\"\nfrom = \"tlsrpt@b.test\"\n{MINIMAL}"
        ))
        .unwrap();
        assert!(c.tls_reports.enabled && c.tls_reports.from == "tlsrpt@b.test");
        let e = parse(&format!("[tls_reports]\ncontact = \"not mail\"\n{MINIMAL}"))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("[tls_reports] contact") && e.contains("test.toml:2:"),
            "{e}"
        );
    }
}
