//! DANE for SMTP (RFC 7672): TLSA records and which certificates they accept. Pure: the
//! records come from `dns::Dns::tlsa`, the certificates from the TLS handshake, and the
//! chain check for DANE-TA(2) is done by `tls::DaneVerifier` with the anchors found here.
//!
//! Usable records are DANE-TA(2) and DANE-EE(3) with selector Cert(0) or SPKI(1) and matching
//! type Full(0), SHA2-256(1) or SHA2-512(2) whose data has the digest's length; PKIX-TA(0),
//! PKIX-EE(1) and unknown values are unusable and ignored (RFC 7672 §3.1.3). A DANE-EE record
//! matches the server's own certificate with no name or expiry check (§3.1.1).

use ring::digest;

/// One TLSA record (RFC 6698 §2.1).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tlsa {
    pub usage: u8,
    pub selector: u8,
    pub matching: u8,
    pub data: Vec<u8>,
}

/// DANE-TA: the record names a trust anchor the server's chain must lead to.
pub const DANE_TA: u8 = 2;
/// DANE-EE: the record names the server's own certificate or key.
pub const DANE_EE: u8 = 3;

/// The most TLSA records looked at for one host (an answer is cut to this).
pub const MAX_RECORDS: usize = 32;

impl Tlsa {
    /// Whether an SMTP client may use this record (RFC 7672 §3.1.3).
    pub fn usable(&self) -> bool {
        matches!(self.usage, DANE_TA | DANE_EE)
            && matches!(self.selector, 0 | 1)
            && match self.matching {
                0 => !self.data.is_empty(),
                1 => self.data.len() == 32,
                2 => self.data.len() == 64,
                _ => false,
            }
    }

    /// Whether the certificate `cert` (DER) is the one this record names, by its selector and
    /// matching type. A certificate that cannot be parsed matches no SPKI record.
    pub fn matches(&self, cert: &[u8]) -> bool {
        let selected = match self.selector {
            0 => cert.to_vec(),
            1 => match x509_parser::parse_x509_certificate(cert) {
                Ok((_, c)) => c.tbs_certificate.subject_pki.raw.to_vec(),
                Err(_) => return false,
            },
            _ => return false,
        };
        match self.matching {
            0 => selected == self.data,
            1 => digest::digest(&digest::SHA256, &selected).as_ref() == self.data,
            2 => digest::digest(&digest::SHA512, &selected).as_ref() == self.data,
            _ => false,
        }
    }
}

impl std::fmt::Display for Tlsa {
    /// Presentation format, the data cut short: `3 1 1 6a1f…`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let hex: String = self
            .data
            .iter()
            .take(8)
            .map(|b| format!("{b:02x}"))
            .collect();
        let more = if self.data.len() > 8 { "…" } else { "" };
        write!(
            f,
            "{} {} {} {hex}{more}",
            self.usage, self.selector, self.matching
        )
    }
}

/// The usable records among `records` (at most [`MAX_RECORDS`]). Empty: DANE does not apply.
pub fn usable(records: &[Tlsa]) -> Vec<Tlsa> {
    records
        .iter()
        .take(MAX_RECORDS)
        .filter(|r| r.usable())
        .cloned()
        .collect()
}

/// Whether the server's certificate `ee` matches a usable DANE-EE record.
pub fn ee_matches(records: &[Tlsa], ee: &[u8]) -> bool {
    records
        .iter()
        .any(|r| r.usage == DANE_EE && r.usable() && r.matches(ee))
}

/// The trust anchors a usable DANE-TA record names: each certificate of the presented chain
/// (`chain`, end entity first; the end entity itself is never its own anchor) that matches one,
/// and the certificate in a full-certificate record `2 0 0`. The chain check against them is
/// the caller's (RFC 7672 §3.2.2).
pub fn trust_anchors(records: &[Tlsa], chain: &[&[u8]]) -> Vec<Vec<u8>> {
    let ta: Vec<&Tlsa> = records
        .iter()
        .filter(|r| r.usage == DANE_TA && r.usable())
        .collect();
    let mut out: Vec<Vec<u8>> = Vec::new();
    for cert in chain.iter().skip(1) {
        if ta.iter().any(|r| r.matches(cert)) && !out.iter().any(|c| c == cert) {
            out.push(cert.to_vec());
        }
    }
    for r in ta {
        if r.selector == 0 && r.matching == 0 && !out.contains(&r.data) {
            out.push(r.data.clone());
        }
    }
    out
}

/// The TLSA owner name for a host's SMTP service on `port`: `_25._tcp.mx.example.net`.
pub fn owner(host: &str, port: u16) -> String {
    format!("_{port}._tcp.{}", host.trim_end_matches('.'))
}

#[cfg(test)]
mod tests {
    use super::*;
    use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};

    fn ca() -> CertifiedIssuer<'static, KeyPair> {
        let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
        p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        CertifiedIssuer::self_signed(p, KeyPair::generate().unwrap()).unwrap()
    }

    fn leaf(ca: &CertifiedIssuer<'static, KeyPair>, name: &str) -> Vec<u8> {
        let key = KeyPair::generate().unwrap();
        CertificateParams::new(vec![name.to_string()])
            .unwrap()
            .signed_by(&key, ca)
            .unwrap()
            .der()
            .to_vec()
    }

    fn spki(der: &[u8]) -> Vec<u8> {
        let (_, c) = x509_parser::parse_x509_certificate(der).unwrap();
        c.tbs_certificate.subject_pki.raw.to_vec()
    }

    fn rec(usage: u8, selector: u8, matching: u8, data: Vec<u8>) -> Tlsa {
        Tlsa {
            usage,
            selector,
            matching,
            data,
        }
    }

    fn sha256(b: &[u8]) -> Vec<u8> {
        digest::digest(&digest::SHA256, b).as_ref().to_vec()
    }

    fn sha512(b: &[u8]) -> Vec<u8> {
        digest::digest(&digest::SHA512, b).as_ref().to_vec()
    }

    #[test]
    fn every_selector_and_matching_type_matches_the_end_entity() {
        let ca = ca();
        let ee = leaf(&ca, "mx.example.test");
        let other = leaf(&ca, "mx.example.test");
        for r in [
            rec(3, 0, 0, ee.clone()),
            rec(3, 0, 1, sha256(&ee)),
            rec(3, 0, 2, sha512(&ee)),
            rec(3, 1, 0, spki(&ee)),
            rec(3, 1, 1, sha256(&spki(&ee))),
            rec(3, 1, 2, sha512(&spki(&ee))),
        ] {
            assert!(r.usable(), "{r}");
            assert!(ee_matches(std::slice::from_ref(&r), &ee), "{r}");
            assert!(
                !ee_matches(std::slice::from_ref(&r), &other),
                "{r} matched another key"
            );
        }
    }

    #[test]
    fn unusable_records_are_ignored() {
        let ca = ca();
        let ee = leaf(&ca, "mx.example.test");
        let digest = sha256(&spki(&ee));
        let unusable = [
            rec(0, 1, 1, digest.clone()),        // PKIX-TA
            rec(1, 1, 1, digest.clone()),        // PKIX-EE
            rec(4, 1, 1, digest.clone()),        // unknown usage
            rec(3, 2, 1, digest.clone()),        // unknown selector
            rec(3, 1, 3, digest.clone()),        // unknown matching type
            rec(3, 1, 1, digest[..31].to_vec()), // digest of the wrong length
            rec(3, 1, 2, digest.clone()),        // SHA-512 record with a SHA-256 length
            rec(3, 0, 0, Vec::new()),
        ];
        for r in &unusable {
            assert!(!r.usable(), "{r} should be unusable");
        }
        assert!(usable(&unusable).is_empty(), "DANE does not apply");
        assert!(
            !ee_matches(&unusable, &ee),
            "a PKIX-EE record must not authenticate"
        );
        let mut mixed = unusable.to_vec();
        mixed.push(rec(3, 1, 1, digest));
        assert_eq!(usable(&mixed).len(), 1);
        assert!(ee_matches(&mixed, &ee));
    }

    #[test]
    fn trust_anchors_come_from_the_chain_or_a_full_record() {
        let ca = ca();
        let ca_der = ca.der().to_vec();
        let ee = leaf(&ca, "mx.example.test");
        let chain = [ee.as_slice(), ca_der.as_slice()];
        for r in [
            rec(2, 0, 1, sha256(&ca_der)),
            rec(2, 1, 1, sha256(&spki(&ca_der))),
            rec(2, 1, 2, sha512(&spki(&ca_der))),
        ] {
            assert_eq!(
                trust_anchors(std::slice::from_ref(&r), &chain),
                vec![ca_der.clone()],
                "{r}"
            );
            // Without the anchor in the chain, a digest names nothing to chain to.
            assert!(trust_anchors(std::slice::from_ref(&r), &chain[..1]).is_empty());
        }
        // The full certificate in DNS is an anchor even when the server omits it.
        let full = rec(2, 0, 0, ca_der.clone());
        assert_eq!(trust_anchors(&[full], &chain[..1]), vec![ca_der.clone()]);
        // A DANE-TA digest of the end entity does not make it its own anchor, nor does an
        // EE record name an anchor.
        assert!(trust_anchors(&[rec(2, 0, 1, sha256(&ee))], &chain).is_empty());
        assert!(trust_anchors(&[rec(3, 0, 1, sha256(&ca_der))], &chain).is_empty());
    }

    #[test]
    fn owner_names_the_port() {
        assert_eq!(owner("mx.example.net.", 25), "_25._tcp.mx.example.net");
    }
}
