//! What the registry stores for a domain and for a tenant, as the JSON kept in the store's
//! entries, and the tenants' API tokens: made at random, shown once, kept only as SHA-256.

use serde::{Deserialize, Serialize};

/// The store entry kinds.
pub const DOMAIN: &str = "domain";
pub const TENANT: &str = "tenant";

/// Whether mail for a stored domain is accepted yet.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DomainState {
    /// Added, ownership not shown yet: mail for it is refused (550 5.7.1).
    Pending,
    /// Ownership shown (TXT challenge) or vouched for by an operator: mail is accepted.
    Active,
}

/// A domain added at run time.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DomainRecord {
    pub state: DomainState,
    /// The keys of a `[[domain]]` table (without `name`), as TOML text.
    pub settings: String,
    /// What `_mx2-challenge.NAME` must carry in a TXT record for the domain to go live.
    pub challenge: String,
    /// The tenant (customer) the domain belongs to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tenant: Option<String>,
    pub created_ms: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verified_ms: Option<i64>,
    /// How it was activated: "dns" (TXT challenge) or "operator" (`--verified`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verified_by: Option<String>,
    /// The last MX audit (`mx2 check`) as its JSON report; warnings never block activation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub audit: Option<serde_json::Value>,
}

/// A customer of a backup-MX service.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TenantRecord {
    /// Where this tenant's alerts are posted (JSON), besides the operator's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub webhook: Option<String>,
    /// Who gets this tenant's alerts by mail, besides the operator.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub alert_to: Option<String>,
    #[serde(default)]
    pub tokens: Vec<TokenRecord>,
    pub created_ms: i64,
}

/// One API token of a tenant: only its hash is kept.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenRecord {
    /// A short public name to remove it by.
    pub id: String,
    /// SHA-256 of the token, hex.
    pub sha256: String,
    pub created_ms: i64,
}

/// Random bytes as lower-case hex.
fn random_hex(bytes: usize) -> String {
    use ring::rand::SecureRandom;
    let mut b = vec![0u8; bytes];
    // The system's random source failing leaves no safe way on; fall back to fastrand only
    // for the challenge and id (never tokens: see `new_token`).
    if ring::rand::SystemRandom::new().fill(&mut b).is_err() {
        b.iter_mut().for_each(|x| *x = fastrand::u8(..));
    }
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// A fresh ownership challenge.
pub fn new_challenge() -> String {
    format!("mx2-verify-{}", random_hex(16))
}

/// A fresh token id.
pub fn new_token_id() -> String {
    random_hex(4)
}

/// A fresh API token (`mx2t_` and 256 random bits); None when the system has no randomness.
pub fn new_token() -> Option<String> {
    use ring::rand::SecureRandom;
    let mut b = [0u8; 32];
    ring::rand::SystemRandom::new().fill(&mut b).ok()?;
    Some(format!(
        "mx2t_{}",
        b.iter().map(|x| format!("{x:02x}")).collect::<String>()
    ))
}

/// SHA-256 of a token.
pub fn token_hash(token: &[u8]) -> [u8; 32] {
    let d = ring::digest::digest(&ring::digest::SHA256, token);
    let mut out = [0u8; 32];
    out.copy_from_slice(d.as_ref());
    out
}

/// SHA-256 of a token, hex.
pub fn token_hash_hex(token: &[u8]) -> String {
    token_hash(token)
        .iter()
        .map(|x| format!("{x:02x}"))
        .collect()
}

/// A hex SHA-256 back to bytes (None when it is not one).
pub fn parse_hash(hex: &str) -> Option<[u8; 32]> {
    if hex.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, o) in out.iter_mut().enumerate() {
        *o = u8::from_str_radix(hex.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_random_and_hashes_round_trip() {
        let a = new_token().unwrap();
        let b = new_token().unwrap();
        assert_ne!(a, b);
        assert!(a.starts_with("mx2t_") && a.len() == 5 + 64);
        let hex = token_hash_hex(a.as_bytes());
        assert_eq!(parse_hash(&hex), Some(token_hash(a.as_bytes())));
        assert_eq!(parse_hash("zz"), None);
        assert_ne!(new_challenge(), new_challenge());
    }

    #[test]
    fn records_read_back_what_they_wrote() {
        let d = DomainRecord {
            state: DomainState::Pending,
            settings: "primary = [\"mail.example.org:25\"]\n".into(),
            challenge: new_challenge(),
            tenant: Some("acme".into()),
            created_ms: 1,
            verified_ms: None,
            verified_by: None,
            audit: None,
        };
        let json = serde_json::to_string(&d).unwrap();
        assert!(json.contains("\"pending\""), "{json}");
        assert_eq!(serde_json::from_str::<DomainRecord>(&json).unwrap(), d);
    }
}
