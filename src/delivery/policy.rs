//! The outbound TLS policy for one host: which policy a connection to it follows and why. A
//! domain's configured mode (`opportunistic`, `required`, `verify`, with `tls_pin`) applies as
//! it is; `dane` and `auto` choose per MX host from DNSSEC-validated answers (RFC 7672 §2.2):
//! DANE when the MX answer, the host's addresses and its TLSA records are all secure and a
//! TLSA record is usable, else (`auto`) opportunistic TLS. Pure: the lookups are the caller's.
//! A new policy (MTA-STS) is one more [`Policy`] variant and one more step in [`choose`].

use super::dane::{self, Tlsa};
use crate::config::TlsMode;
use crate::dns::{DnsFailure, Proven};

/// What a connection to one host must satisfy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Policy {
    /// The domain's configured TLS settings (its route's client TLS).
    Configured,
    /// DANE: STARTTLS is mandatory and the certificate must match one of these usable TLSA
    /// records; a DANE-TA chain must name one of `names` (the MX host, the mail domain).
    Dane {
        records: Vec<Tlsa>,
        names: Vec<String>,
    },
}

/// A host's policy and the reason it was chosen (for logs and the held mail's reason).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostPolicy {
    pub policy: Policy,
    pub reason: String,
}

impl HostPolicy {
    pub fn configured(reason: impl Into<String>) -> Self {
        HostPolicy {
            policy: Policy::Configured,
            reason: reason.into(),
        }
    }
}

/// What the DNS said about one MX host, as far as the policy needs it.
#[derive(Debug)]
pub struct HostFacts<'a> {
    /// The mail domain (the next-hop domain).
    pub domain: &'a str,
    pub host: &'a str,
    /// The port mx2 connects to (the TLSA owner name carries it).
    pub port: u16,
    /// The MX answer that named the host was DNSSEC-secure.
    pub mx_secure: bool,
    /// The host's address records were DNSSEC-secure.
    pub addresses_secure: bool,
    /// The TLSA lookup at [`dane::owner`] (None: not looked up, the host being insecure).
    pub tlsa: Option<&'a Result<Proven<Vec<Tlsa>>, DnsFailure>>,
}

impl HostFacts<'_> {
    /// Whether a TLSA lookup is worth making (RFC 7672 §2.2: only for secure hosts).
    pub fn wants_tlsa(mode: TlsMode, mx_secure: bool, addresses_secure: bool) -> bool {
        matches!(mode, TlsMode::Dane | TlsMode::Auto) && mx_secure && addresses_secure
    }
}

/// The policy for a host: Ok, or Err with the reason not to use the host at all (its TLSA
/// lookup failed, or DANE is required and does not apply).
pub fn choose(mode: TlsMode, f: &HostFacts<'_>) -> Result<HostPolicy, String> {
    if !matches!(mode, TlsMode::Dane | TlsMode::Auto) {
        return Ok(HostPolicy::configured("configured"));
    }
    let not_dane = |why: String| {
        if mode == TlsMode::Dane {
            Err(format!("DANE required for {}: {why}", f.domain))
        } else {
            Ok(HostPolicy::configured(format!("opportunistic TLS: {why}")))
        }
    };
    if !f.mx_secure {
        return not_dane(format!(
            "the MX answer for {} is not DNSSEC-secure, so DANE does not apply",
            f.domain
        ));
    }
    if !f.addresses_secure {
        return not_dane(format!(
            "the address records of {} are not DNSSEC-secure, so DANE does not apply",
            f.host
        ));
    }
    let owner = dane::owner(f.host, f.port);
    match f.tlsa {
        None => not_dane(format!("no TLSA lookup for {}", f.host)),
        // RFC 7672 §2.2: a failed TLSA lookup of a secure host makes the host unusable.
        Some(Err(e)) => Err(format!(
            "DANE: TLSA lookup failed, not using {}: {e}",
            f.host
        )),
        Some(Ok(answer)) if answer.answer.is_empty() => {
            not_dane(format!("{owner} has no TLSA records"))
        }
        Some(Ok(answer)) if !answer.secure => {
            not_dane(format!("the TLSA records at {owner} are not DNSSEC-secure"))
        }
        Some(Ok(answer)) => {
            let records = dane::usable(&answer.answer);
            if records.is_empty() {
                return not_dane(format!("no usable TLSA record at {owner}"));
            }
            Ok(HostPolicy {
                reason: format!("DANE: {} usable TLSA record(s) at {owner}", records.len()),
                policy: Policy::Dane {
                    records,
                    names: vec![f.host.to_string(), f.domain.to_string()],
                },
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answer(records: Vec<Tlsa>, secure: bool) -> Result<Proven<Vec<Tlsa>>, DnsFailure> {
        Ok(Proven {
            answer: records,
            secure,
        })
    }

    fn ee() -> Tlsa {
        Tlsa {
            usage: 3,
            selector: 1,
            matching: 1,
            data: vec![7; 32],
        }
    }

    fn facts<'a>(
        mx: bool,
        addrs: bool,
        tlsa: Option<&'a Result<Proven<Vec<Tlsa>>, DnsFailure>>,
    ) -> HostFacts<'a> {
        HostFacts {
            domain: "example.net",
            host: "mx.example.net",
            port: 25,
            mx_secure: mx,
            addresses_secure: addrs,
            tlsa,
        }
    }

    #[test]
    fn auto_uses_dane_only_when_everything_is_secure_and_usable() {
        let good = answer(vec![ee()], true);
        let chosen = choose(TlsMode::Auto, &facts(true, true, Some(&good))).unwrap();
        assert!(matches!(chosen.policy, Policy::Dane { ref records, .. } if records.len() == 1));
        assert!(chosen.reason.starts_with("DANE:"), "{}", chosen.reason);

        let insecure = answer(vec![ee()], false);
        let pkix = answer(vec![Tlsa { usage: 1, ..ee() }], true);
        let none = answer(Vec::new(), true);
        for (f, why) in [
            (facts(false, true, Some(&good)), "MX answer"),
            (facts(true, false, Some(&good)), "address records"),
            (facts(true, true, Some(&insecure)), "not DNSSEC-secure"),
            (facts(true, true, Some(&pkix)), "no usable TLSA"),
            (facts(true, true, Some(&none)), "no TLSA records"),
        ] {
            let chosen = choose(TlsMode::Auto, &f).unwrap();
            assert_eq!(chosen.policy, Policy::Configured);
            assert!(chosen.reason.contains(why), "{why}: {}", chosen.reason);
            // Where DANE is required, the same facts make the host unusable.
            let refused = choose(TlsMode::Dane, &f).unwrap_err();
            assert!(refused.starts_with("DANE required"), "{refused}");
        }
    }

    #[test]
    fn a_failed_tlsa_lookup_of_a_secure_host_makes_it_unusable() {
        let failed = Err(DnsFailure {
            name: "_25._tcp.mx.example.net".into(),
            reason: "SERVFAIL".into(),
        });
        let e = choose(TlsMode::Auto, &facts(true, true, Some(&failed))).unwrap_err();
        assert!(e.contains("TLSA lookup failed"), "{e}");
    }

    #[test]
    fn configured_modes_are_left_alone() {
        for mode in [TlsMode::Opportunistic, TlsMode::Required, TlsMode::Verify] {
            assert_eq!(
                choose(mode, &facts(true, true, None)).unwrap().policy,
                Policy::Configured
            );
        }
    }
}
