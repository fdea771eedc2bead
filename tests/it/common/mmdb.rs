//! Writes small MaxMind DB (.mmdb, format 2.0) files for tests: an IPv4 search tree with
//! 24-bit records and a data section of maps, strings, integers and doubles.

use std::net::Ipv4Addr;
use std::path::Path;

/// One network and what the database says about it.
pub struct Entry {
    pub net: Ipv4Addr,
    pub prefix: u8,
    pub asn: u32,
    pub org: &'static str,
    pub country: &'static str,
    pub city: &'static str,
    pub lat: f64,
    pub lon: f64,
}

fn ctrl(kind: u8, size: usize, out: &mut Vec<u8>) {
    let (k, ext) = if kind > 7 {
        (0u8, Some(kind - 7))
    } else {
        (kind, None)
    };
    if size < 29 {
        out.push((k << 5) | size as u8);
    } else {
        out.push((k << 5) | 29);
    }
    if let Some(e) = ext {
        out.push(e);
    }
    if size >= 29 {
        out.push((size - 29) as u8);
    }
}

fn string(s: &str, out: &mut Vec<u8>) {
    ctrl(2, s.len(), out);
    out.extend_from_slice(s.as_bytes());
}

fn uint(kind: u8, v: u64, out: &mut Vec<u8>) {
    let bytes = v.to_be_bytes();
    let skip = bytes.iter().take_while(|&&b| b == 0).count();
    ctrl(kind, 8 - skip, out);
    out.extend_from_slice(&bytes[skip..]);
}

fn double(v: f64, out: &mut Vec<u8>) {
    ctrl(3, 8, out);
    out.extend_from_slice(&v.to_be_bytes());
}

enum V<'a> {
    S(&'a str),
    U16(u16),
    U32(u32),
    U64(u64),
    D(f64),
    M(Vec<(&'a str, V<'a>)>),
    A(Vec<V<'a>>),
}

fn encode(v: &V<'_>, out: &mut Vec<u8>) {
    match v {
        V::S(s) => string(s, out),
        V::U16(n) => uint(5, u64::from(*n), out),
        V::U32(n) => uint(6, u64::from(*n), out),
        V::U64(n) => uint(9, *n, out),
        V::D(d) => double(*d, out),
        V::M(pairs) => {
            ctrl(7, pairs.len(), out);
            for (k, v) in pairs {
                string(k, out);
                encode(v, out);
            }
        }
        V::A(items) => {
            ctrl(11, items.len(), out);
            for i in items {
                encode(i, out);
            }
        }
    }
}

#[derive(Clone, Copy)]
enum Rec {
    Empty,
    Node(usize),
    Data(usize),
}

pub fn write(path: &Path, entries: &[Entry]) {
    let mut data = Vec::new();
    let mut nodes: Vec<[Rec; 2]> = vec![[Rec::Empty, Rec::Empty]];
    for e in entries {
        let offset = data.len();
        encode(
            &V::M(vec![
                ("autonomous_system_number", V::U32(e.asn)),
                ("autonomous_system_organization", V::S(e.org)),
                ("country", V::M(vec![("iso_code", V::S(e.country))])),
                (
                    "city",
                    V::M(vec![("names", V::M(vec![("en", V::S(e.city))]))]),
                ),
                (
                    "location",
                    V::M(vec![("latitude", V::D(e.lat)), ("longitude", V::D(e.lon))]),
                ),
            ]),
            &mut data,
        );
        let ip = u32::from(e.net);
        let mut node = 0;
        for i in 0..e.prefix {
            let bit = ((ip >> (31 - i)) & 1) as usize;
            if i + 1 == e.prefix {
                nodes[node][bit] = Rec::Data(offset);
            } else {
                node = match nodes[node][bit] {
                    Rec::Node(n) => n,
                    _ => {
                        nodes.push([Rec::Empty, Rec::Empty]);
                        let n = nodes.len() - 1;
                        nodes[node][bit] = Rec::Node(n);
                        n
                    }
                };
            }
        }
    }
    let count = nodes.len();
    let mut out = Vec::new();
    for n in &nodes {
        for r in n {
            let v = match *r {
                Rec::Empty => count,
                Rec::Node(i) => i,
                Rec::Data(off) => count + 16 + off,
            } as u32;
            out.extend_from_slice(&v.to_be_bytes()[1..]);
        }
    }
    out.extend_from_slice(&[0u8; 16]);
    out.extend_from_slice(&data);
    out.extend_from_slice(b"\xAB\xCD\xEFMaxMind.com");
    encode(
        &V::M(vec![
            ("binary_format_major_version", V::U16(2)),
            ("binary_format_minor_version", V::U16(0)),
            ("build_epoch", V::U64(1_795_829_084)),
            ("database_type", V::S("mx2-test")),
            ("description", V::M(vec![("en", V::S("mx2 test database"))])),
            ("ip_version", V::U16(4)),
            ("languages", V::A(vec![V::S("en")])),
            ("node_count", V::U32(count as u32)),
            ("record_size", V::U16(24)),
        ]),
        &mut out,
    );
    std::fs::write(path, out).unwrap();
}
