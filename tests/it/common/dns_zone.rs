//! The test DNS server's zone: one DNSSEC-signed root zone holding every name, with unsigned
//! delegations carved out of it. Answers carry RRSIGs made on the fly with an Ed25519 key
//! (its DNSKEY is the tests' trust anchor); negative answers carry the SOA and the NSEC records
//! that prove them (RFC 4035 §3.1.3), so hickory's validator sees secure, insecure (below an
//! unsigned delegation) and proven-absent answers as a real signed zone would give them.

use super::dns::{Rec, key};
use hickory_proto::dnssec::crypto::Ed25519SigningKey;
use hickory_proto::dnssec::rdata::{DNSKEY, DNSSECRData, NSEC, RRSIG};
use hickory_proto::dnssec::{DnssecSigner, SigningKey};
use hickory_proto::op::{Message, ResponseCode};
use hickory_proto::rr::rdata::tlsa::{CertUsage, Matching, Selector};
use hickory_proto::rr::rdata::{A, AAAA, CNAME, MX, NS, PTR, SOA, TLSA, TXT};
use hickory_proto::rr::{DNSClass, Name, RData, Record, RecordSet, RecordType};
use std::collections::{BTreeSet, HashMap};
use std::net::IpAddr;
use std::time::Duration;

const TTL: u32 = 60;

/// The zone key and what it signs with.
pub struct Signer {
    signer: DnssecSigner,
    dnskey: DNSKEY,
}

impl Signer {
    pub fn generate() -> Signer {
        let pkcs8 = Ed25519SigningKey::generate_pkcs8().unwrap();
        let key = Ed25519SigningKey::from_pkcs8(&pkcs8).unwrap();
        let dnskey = DNSKEY::from_key(&key.to_public_key().unwrap());
        let signer = DnssecSigner::new(
            dnskey.clone(),
            Box::new(key),
            Name::root(),
            Duration::from_secs(86_400),
        );
        Signer { signer, dnskey }
    }

    /// The key as a trust anchor line (zone-file syntax).
    pub fn anchor_line(&self) -> String {
        format!(". 3600 IN DNSKEY {}\n", self.dnskey)
    }

    /// The RRSIG over `records` (one RRset).
    fn sign(&self, records: &[Record]) -> Record {
        let first = &records[0];
        let mut set = RecordSet::new(first.name.clone(), first.record_type(), 0);
        set.set_ttl(TTL);
        set.set_records(records.to_vec());
        let inception = time::OffsetDateTime::now_utc() - time::Duration::hours(1);
        let rrsig = RRSIG::from_rrset(&set, DNSClass::IN, inception, &self.signer).unwrap();
        Record::from_rdata(
            first.name.clone(),
            TTL,
            RData::DNSSEC(DNSSECRData::RRSIG(rrsig)),
        )
    }
}

pub struct Zone {
    pub names: HashMap<String, Vec<Rec>>,
    /// Apexes of unsigned zones delegated from the signed root.
    pub unsigned: Vec<String>,
    pub signer: Signer,
}

fn name(key: &str) -> Name {
    if key.is_empty() {
        Name::root()
    } else {
        Name::from_ascii(format!("{key}.")).unwrap()
    }
}

fn host(h: &str) -> Option<Name> {
    Name::from_ascii(format!("{h}.")).ok()
}

/// The record data `rec` gives for a query of `qtype` (a CNAME answers every type).
fn rdata(rec: &Rec, qtype: RecordType) -> Option<RData> {
    Some(match (rec, qtype) {
        (Rec::Mx(p, h), RecordType::MX) => RData::MX(MX::new(*p, host(h)?)),
        (Rec::NullMx, RecordType::MX) => RData::MX(MX::new(0, Name::root())),
        (Rec::Txt(t), RecordType::TXT) => RData::TXT(TXT::new(vec![t.to_string()])),
        (Rec::Cname(t), _) => RData::CNAME(CNAME(host(t)?)),
        (Rec::Ptr(t), RecordType::PTR) => RData::PTR(PTR(host(t)?)),
        (Rec::Tlsa(u, s, m, d), RecordType::TLSA) => RData::TLSA(TLSA::new(
            CertUsage::from(*u),
            Selector::from(*s),
            Matching::from(*m),
            d.clone(),
        )),
        (Rec::Ip(ip), t) => match (ip.parse::<IpAddr>().ok()?, t) {
            (IpAddr::V4(v4), RecordType::A) => RData::A(A(v4)),
            (IpAddr::V6(v6), RecordType::AAAA) => RData::AAAA(AAAA(v6)),
            _ => return None,
        },
        _ => return None,
    })
}

/// The types present at a name (for its NSEC bitmap).
fn types(recs: &[Rec]) -> Vec<RecordType> {
    let mut out = Vec::new();
    for r in recs {
        let t = match r {
            Rec::Mx(..) | Rec::NullMx => RecordType::MX,
            Rec::Txt(_) => RecordType::TXT,
            Rec::Cname(_) => RecordType::CNAME,
            Rec::Ptr(_) => RecordType::PTR,
            Rec::Tlsa(..) => RecordType::TLSA,
            Rec::Ip(ip) if ip.contains(':') => RecordType::AAAA,
            Rec::Ip(_) => RecordType::A,
            Rec::ServFail => continue,
        };
        if !out.contains(&t) {
            out.push(t);
        }
    }
    out
}

fn is_under(name: &str, apex: &str) -> bool {
    name == apex || name.ends_with(&format!(".{apex}"))
}

impl Zone {
    /// The unsigned zone `qname` is in, if any.
    fn unsigned_apex(&self, qname: &str) -> Option<&str> {
        self.unsigned
            .iter()
            .find(|u| is_under(qname, u))
            .map(String::as_str)
    }

    /// Fills `m` with the answer to (`qname`, `qtype`). None: no reply at all.
    pub fn answer(&self, qname: &Name, qtype: RecordType, m: &mut Message) -> Option<()> {
        let k = key(&qname.to_ascii());
        let recs = self.names.get(&k);
        if recs.is_some_and(|r| r.iter().any(|r| matches!(r, Rec::ServFail))) {
            m.metadata.response_code = ResponseCode::ServFail;
            return Some(());
        }
        match self.unsigned_apex(&k) {
            // The delegation's DS and NS come from the signed parent.
            Some(apex) if apex == k && qtype == RecordType::DS => {
                self.deny(&k, m);
            }
            Some(apex) if apex == k && qtype == RecordType::NS => {
                m.add_answer(Record::from_rdata(
                    qname.clone(),
                    TTL,
                    RData::NS(NS(name(&format!("ns.{apex}")))),
                ));
            }
            Some(apex) => {
                let answers = self.plain_answers(qname, recs, qtype);
                if answers.is_empty() {
                    if recs.is_none() && !self.is_empty_non_terminal(&k) {
                        m.metadata.response_code = ResponseCode::NXDomain;
                    }
                    m.add_authority(self.soa(apex));
                }
                m.add_answers(answers);
            }
            None => self.signed(qname, &k, recs, qtype, m),
        }
        Some(())
    }

    fn plain_answers(
        &self,
        qname: &Name,
        recs: Option<&Vec<Rec>>,
        qtype: RecordType,
    ) -> Vec<Record> {
        recs.into_iter()
            .flatten()
            .filter_map(|r| rdata(r, qtype))
            .map(|d| Record::from_rdata(qname.clone(), TTL, d))
            .collect()
    }

    fn signed(
        &self,
        qname: &Name,
        k: &str,
        recs: Option<&Vec<Rec>>,
        qtype: RecordType,
        m: &mut Message,
    ) {
        let mut answers = self.plain_answers(qname, recs, qtype);
        if k.is_empty() {
            match qtype {
                RecordType::DNSKEY => answers.push(Record::from_rdata(
                    Name::root(),
                    TTL,
                    RData::DNSSEC(DNSSECRData::DNSKEY(self.signer.dnskey.clone())),
                )),
                RecordType::SOA => answers.push(self.soa("")),
                _ => {}
            }
        }
        if answers.is_empty() {
            self.deny(k, m);
            return;
        }
        // One RRset (a CNAME, or records of the asked type).
        let sig = self.signer.sign(&answers);
        m.add_answers(answers);
        m.add_answer(sig);
    }

    /// A signed denial: NODATA at an existing name or empty non-terminal, else NXDOMAIN.
    fn deny(&self, k: &str, m: &mut Message) {
        let owners = self.owners();
        let mut nsecs: Vec<Record> = Vec::new();
        if owners.contains(&name(k)) {
            nsecs.push(self.nsec(&owners, &name(k)));
        } else if self.is_empty_non_terminal(k) {
            nsecs.push(self.covering(&owners, &name(k)));
        } else {
            m.metadata.response_code = ResponseCode::NXDomain;
            nsecs.push(self.covering(&owners, &name(k)));
            let encloser = self.closest_encloser(&owners, k);
            let wildcard = name(&if encloser.is_empty() {
                "*".to_string()
            } else {
                format!("*.{encloser}")
            });
            let w = self.covering(&owners, &wildcard);
            if w != nsecs[0] {
                nsecs.push(w);
            }
        }
        let soa = self.soa("");
        let soa_sig = self.signer.sign(std::slice::from_ref(&soa));
        m.add_authority(soa);
        m.add_authority(soa_sig);
        for n in nsecs {
            let sig = self.signer.sign(std::slice::from_ref(&n));
            m.add_authority(n);
            m.add_authority(sig);
        }
    }

    fn soa(&self, apex: &str) -> Record {
        Record::from_rdata(
            name(apex),
            TTL,
            RData::SOA(SOA::new(
                name("ns.test"),
                name("hostmaster.test"),
                1,
                3600,
                600,
                86_400,
                TTL,
            )),
        )
    }

    /// The signed zone's owner names in canonical order: the apex, every name with records
    /// outside unsigned zones, and the delegation points.
    fn owners(&self) -> BTreeSet<Name> {
        let mut out = BTreeSet::new();
        out.insert(Name::root());
        for k in self.names.keys() {
            if self.unsigned_apex(k).is_none() {
                out.insert(name(k));
            }
        }
        for u in &self.unsigned {
            out.insert(name(u));
        }
        out
    }

    /// Whether `k` has no records but names below it do (in the signed zone).
    fn is_empty_non_terminal(&self, k: &str) -> bool {
        let suffix = format!(".{k}");
        self.names
            .keys()
            .chain(self.unsigned.iter())
            .any(|n| n.ends_with(&suffix))
    }

    /// The longest ancestor of `k` that exists (an owner or an empty non-terminal).
    fn closest_encloser(&self, owners: &BTreeSet<Name>, k: &str) -> String {
        let mut cur = k;
        loop {
            cur = match cur.split_once('.') {
                Some((_, rest)) => rest,
                None => return String::new(),
            };
            if owners.contains(&name(cur)) || self.is_empty_non_terminal(cur) {
                return cur.to_string();
            }
        }
    }

    /// The NSEC record owned by `owner`.
    fn nsec(&self, owners: &BTreeSet<Name>, owner: &Name) -> Record {
        let next = owners
            .range((std::ops::Bound::Excluded(owner), std::ops::Bound::Unbounded))
            .next()
            .cloned()
            .unwrap_or_else(Name::root);
        let k = key(&owner.to_ascii());
        let present = if owner.is_root() {
            vec![RecordType::SOA, RecordType::DNSKEY]
        } else if self.unsigned.contains(&k) {
            vec![RecordType::NS]
        } else {
            types(self.names.get(&k).map(Vec::as_slice).unwrap_or(&[]))
        };
        Record::from_rdata(
            owner.clone(),
            TTL,
            RData::DNSSEC(DNSSECRData::NSEC(NSEC::new_cover_self(next, present))),
        )
    }

    /// The NSEC record whose span covers `missing` (a name that owns nothing).
    fn covering(&self, owners: &BTreeSet<Name>, missing: &Name) -> Record {
        let prev = owners
            .range(..missing.clone())
            .next_back()
            .cloned()
            .unwrap_or_else(Name::root);
        self.nsec(owners, &prev)
    }
}
