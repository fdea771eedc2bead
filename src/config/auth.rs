//! The `[auth]` table: sender authentication (SPF, DKIM, DMARC) at reception. Its file shape
//! is its typed form (serde fills in the defaults); the checks themselves live elsewhere.
//! SMTP AUTH to a primary is a domain's setting (`domain.rs`).

use super::defaults::auth as default;
use serde::Deserialize;

/// Sender authentication at reception.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SenderAuthConfig {
    /// Evaluate SPF, DKIM and DMARC and prepend Authentication-Results.
    pub enabled: bool,
    /// Refuse (550 5.7.1) mail that fails DMARC where the domain's policy is reject.
    pub dmarc_reject: bool,
}

impl Default for SenderAuthConfig {
    fn default() -> Self {
        Self {
            enabled: default::ENABLED,
            dmarc_reject: default::DMARC_REJECT,
        }
    }
}
