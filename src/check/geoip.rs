//! The offline GeoIP checks of `mx2 check --geoip FILE` (a MaxMind .mmdb database with ASN and
//! city data): primary and backup with the same ASN or in the same city, and how far apart.

use super::diversity::distance_km;
use super::report::{Level, Report};
use serde::Deserialize;
use std::collections::HashMap;
use std::net::IpAddr;
use std::path::Path;

#[derive(Debug, Deserialize, Default, Clone)]
pub struct Record {
    pub autonomous_system_number: Option<u32>,
    pub autonomous_system_organization: Option<String>,
    pub country: Option<Country>,
    pub city: Option<City>,
    pub location: Option<Location>,
}

#[derive(Debug, Deserialize, Default, Clone)]
pub struct Country {
    pub iso_code: Option<String>,
}

#[derive(Debug, Deserialize, Default, Clone)]
pub struct City {
    pub names: Option<HashMap<String, String>>,
}

#[derive(Debug, Deserialize, Default, Clone, Copy)]
pub struct Location {
    pub latitude: Option<f64>,
    pub longitude: Option<f64>,
}

impl Record {
    fn city(&self) -> Option<&str> {
        self.city
            .as_ref()?
            .names
            .as_ref()?
            .get("en")
            .map(String::as_str)
    }
    fn point(&self) -> Option<(f64, f64)> {
        let l = self.location?;
        Some((l.latitude?, l.longitude?))
    }
}

pub fn run(r: &mut Report, path: &Path) {
    let reader = match maxminddb::Reader::open_readfile(path) {
        Ok(rd) => rd,
        Err(e) => {
            r.add(
                "geoip",
                Level::Fail,
                format!("cannot read the GeoIP database {}: {e}", path.display()),
                Some("pass a MaxMind .mmdb file (GeoLite2-City merged with ASN data, or GeoIP2)"),
            );
            return;
        }
    };
    let lookup = |ip: IpAddr| -> Option<Record> {
        reader.lookup(ip).ok()?.decode::<Record>().ok().flatten()
    };
    let best = r.mx.iter().map(|h| h.preference).min().unwrap_or(0);
    let prim: Vec<(String, IpAddr)> =
        r.mx.iter()
            .filter(|h| h.preference == best)
            .flat_map(|h| h.addresses.iter().map(|a| (h.name.clone(), a.ip)))
            .collect();
    let back: Vec<(String, IpAddr)> =
        r.mx.iter()
            .filter(|h| h.preference != best)
            .flat_map(|h| h.addresses.iter().map(|a| (h.name.clone(), a.ip)))
            .collect();
    for (pn, pip) in &prim {
        for (bn, bip) in &back {
            let (Some(p), Some(b)) = (lookup(*pip), lookup(*bip)) else {
                r.add(
                    "geoip",
                    Level::Info,
                    format!("no GeoIP data for {pip} or {bip}"),
                    None,
                );
                continue;
            };
            let label = format!("{pn} ({pip}) and {bn} ({bip})");
            match (p.autonomous_system_number, b.autonomous_system_number) {
                (Some(x), Some(y)) if x == y => r.add(
                    "geoip.asn",
                    Level::Warn,
                    format!(
                        "{label} are in the same network, AS{x} ({})",
                        p.autonomous_system_organization.clone().unwrap_or_default()
                    ),
                    Some("host the backup MX with another provider (another AS)"),
                ),
                (Some(x), Some(y)) => r.add(
                    "geoip.asn",
                    Level::Ok,
                    format!("{label} are in different networks (AS{x}, AS{y})"),
                    None,
                ),
                _ => r.add(
                    "geoip.asn",
                    Level::Info,
                    format!("{label}: no ASN data"),
                    None,
                ),
            }
            let country = |rec: &Record| {
                rec.country
                    .as_ref()
                    .and_then(|c| c.iso_code.clone())
                    .unwrap_or_else(|| "?".into())
            };
            match (p.city(), b.city()) {
                (Some(x), Some(y)) if x == y && country(&p) == country(&b) => r.add(
                    "geoip.city",
                    Level::Warn,
                    format!("{label} are both in {x} ({})", country(&p)),
                    Some("put the backup MX in another city or region"),
                ),
                _ => r.add(
                    "geoip.city",
                    Level::Info,
                    format!("{label}: {} / {}", country(&p), country(&b)),
                    None,
                ),
            }
            if let (Some(a), Some(c)) = (p.point(), b.point()) {
                let km = distance_km(a, c);
                if km < 50.0 {
                    r.add(
                        "geoip.distance",
                        Level::Warn,
                        format!("{label} are {km:.0} km apart: one regional outage can take both"),
                        Some("run the backup MX in another region"),
                    );
                } else {
                    r.add(
                        "geoip.distance",
                        Level::Ok,
                        format!("{label} are {km:.0} km apart"),
                        None,
                    );
                }
            }
        }
    }
}
