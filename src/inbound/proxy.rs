//! PROXY protocol (HAProxy, v1 text and v2 binary) headers from a trusted load balancer, so
//! limits and logs see the real client. Pure parsing.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

const V2_SIGNATURE: &[u8; 12] = b"\r\n\r\n\0\r\nQUIT\n";

#[derive(Debug, PartialEq, Eq, thiserror::Error)]
#[error("bad PROXY protocol header: {0}")]
pub struct ProxyError(pub &'static str);

/// What a complete header says.
#[derive(Debug, PartialEq, Eq)]
pub struct Header {
    /// The real client, or None for `UNKNOWN` / `LOCAL` (health checks): keep the peer address.
    pub source: Option<SocketAddr>,
    /// Bytes the header took.
    pub len: usize,
}

/// Parses a header at the start of `buf`. Ok(None): not complete yet.
pub fn parse(buf: &[u8]) -> Result<Option<Header>, ProxyError> {
    if buf.len() >= 12 && &buf[..12] == V2_SIGNATURE {
        return parse_v2(buf);
    }
    if !buf.is_empty()
        && !V2_SIGNATURE.starts_with(&buf[..buf.len().min(12)])
        && !b"PROXY ".starts_with(&buf[..buf.len().min(6)])
    {
        return Err(ProxyError("no PROXY header"));
    }
    if buf.starts_with(b"PROXY ") {
        return parse_v1(buf);
    }
    Ok(None)
}

fn parse_v1(buf: &[u8]) -> Result<Option<Header>, ProxyError> {
    let Some(end) = buf.windows(2).position(|w| w == b"\r\n") else {
        return if buf.len() > 107 {
            Err(ProxyError("v1 line too long"))
        } else {
            Ok(None)
        };
    };
    if end > 105 {
        return Err(ProxyError("v1 line too long"));
    }
    let line = std::str::from_utf8(&buf[..end]).map_err(|_| ProxyError("v1 line is not text"))?;
    let parts: Vec<&str> = line.split(' ').collect();
    let len = end + 2;
    match parts.get(1).copied() {
        Some("UNKNOWN") => Ok(Some(Header { source: None, len })),
        Some(fam @ ("TCP4" | "TCP6")) if parts.len() == 6 => {
            let ip: IpAddr = parts[2]
                .parse()
                .map_err(|_| ProxyError("v1 source address"))?;
            if (fam == "TCP4") != ip.is_ipv4() {
                return Err(ProxyError("v1 address family mismatch"));
            }
            let port: u16 = parts[4].parse().map_err(|_| ProxyError("v1 source port"))?;
            parts[3]
                .parse::<IpAddr>()
                .map_err(|_| ProxyError("v1 destination address"))?;
            parts[5]
                .parse::<u16>()
                .map_err(|_| ProxyError("v1 destination port"))?;
            Ok(Some(Header {
                source: Some(SocketAddr::new(ip, port)),
                len,
            }))
        }
        _ => Err(ProxyError("v1 syntax")),
    }
}

fn parse_v2(buf: &[u8]) -> Result<Option<Header>, ProxyError> {
    if buf.len() < 16 {
        return Ok(None);
    }
    let ver_cmd = buf[12];
    if ver_cmd >> 4 != 2 {
        return Err(ProxyError("v2 version"));
    }
    let fam = buf[13];
    let addr_len = usize::from(u16::from_be_bytes([buf[14], buf[15]]));
    let len = 16 + addr_len;
    if buf.len() < len {
        return Ok(None);
    }
    let a = &buf[16..len];
    match ver_cmd & 0x0f {
        0 => return Ok(Some(Header { source: None, len })), // LOCAL
        1 => {}
        _ => return Err(ProxyError("v2 command")),
    }
    let source = match fam {
        0x11 if a.len() >= 12 => Some(SocketAddr::new(
            IpAddr::V4(Ipv4Addr::new(a[0], a[1], a[2], a[3])),
            u16::from_be_bytes([a[8], a[9]]),
        )),
        0x21 if a.len() >= 36 => {
            let mut o = [0u8; 16];
            o.copy_from_slice(&a[..16]);
            Some(SocketAddr::new(
                IpAddr::V6(Ipv6Addr::from(o)),
                u16::from_be_bytes([a[32], a[33]]),
            ))
        }
        0x00 => None,
        _ => return Err(ProxyError("v2 address family")),
    };
    Ok(Some(Header { source, len }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn v1() {
        let h = parse(b"PROXY TCP4 192.0.2.7 198.51.100.1 40000 25\r\nEHLO x\r\n")
            .unwrap()
            .unwrap();
        assert_eq!(h.source, Some("192.0.2.7:40000".parse().unwrap()));
        assert_eq!(h.len, 44);
        assert_eq!(
            parse(b"PROXY TCP6 2001:db8::1 2001:db8::2 1 25\r\n")
                .unwrap()
                .unwrap()
                .source
                .unwrap()
                .port(),
            1
        );
        assert_eq!(parse(b"PROXY UNKNOWN\r\n").unwrap().unwrap().source, None);
        assert_eq!(parse(b"PROXY TCP4 192.0.2.7").unwrap(), None, "incomplete");
        assert!(parse(b"PROXY TCP4 2001:db8::1 192.0.2.1 1 2\r\n").is_err());
        assert!(parse(b"EHLO client\r\n").is_err());
        assert!(parse(&[b'P'; 200]).is_err());
    }

    #[test]
    fn v2() {
        let mut h = V2_SIGNATURE.to_vec();
        h.extend_from_slice(&[
            0x21, 0x11, 0, 12, 192, 0, 2, 9, 198, 51, 100, 1, 0x9c, 0x40, 0, 25,
        ]);
        h.extend_from_slice(b"EHLO");
        let p = parse(&h).unwrap().unwrap();
        assert_eq!(p.source, Some("192.0.2.9:40000".parse().unwrap()));
        assert_eq!(p.len, 28);
        assert_eq!(parse(&h[..20]).unwrap(), None);
        let mut local = V2_SIGNATURE.to_vec();
        local.extend_from_slice(&[0x20, 0x00, 0, 0]);
        assert_eq!(parse(&local).unwrap().unwrap().source, None);
        let mut bad = V2_SIGNATURE.to_vec();
        bad.extend_from_slice(&[0x31, 0x11, 0, 0]);
        assert!(parse(&bad).is_err());
    }
}
