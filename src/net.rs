//! Listening sockets. An IPv6 listener is IPv6-only (`IPV6_V6ONLY`), so `0.0.0.0:25` and
//! `[::]:25` can both be listed, as the examples do (with Linux's default dual-stack sockets
//! the second bind fails with "address in use"), and IPv4 clients never appear as
//! `::ffff:a.b.c.d` addresses to the policy checks, blocklists and trace headers. Also the
//! key a client is counted under by per-client limits (its IPv6 prefix).

use std::net::{IpAddr, Ipv6Addr, SocketAddr};

/// Backlog of connections waiting to be accepted (the kernel caps it at somaxconn).
const BACKLOG: i32 = 1024;

/// Binds and listens on `addr` (address reuse on, IPv6-only for IPv6 addresses).
pub fn listen(addr: SocketAddr) -> std::io::Result<tokio::net::TcpListener> {
    use socket2::{Domain, Protocol, Socket, Type};
    let s = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    if addr.is_ipv6() {
        s.set_only_v6(true)?;
    }
    s.set_reuse_address(true)?;
    s.set_nonblocking(true)?;
    s.bind(&addr.into())?;
    s.listen(BACKLOG)?;
    tokio::net::TcpListener::from_std(s.into())
}

/// The next connection on `listener`, or `None` once `shutdown` fires. An accept error
/// (EMFILE and friends) is logged, naming the `listener`, and the loop pauses 100 ms rather
/// than spin.
pub async fn accept(
    listener: &tokio::net::TcpListener,
    shutdown: &mut crate::shutdown::Shutdown,
    what: &str,
) -> Option<(tokio::net::TcpStream, SocketAddr)> {
    loop {
        let accepted = tokio::select! {
            _ = shutdown.wait() => return None,
            a = listener.accept() => a,
        };
        match accepted {
            Ok(x) => return Some(x),
            Err(e) => {
                tracing::warn!(error = %e, listener = what, "accept failed");
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            }
        }
    }
}

/// The peer as policy sees it: an IPv4-mapped IPv6 address (from a dual-stack socket or a
/// PROXY header) becomes the IPv4 address it stands for.
pub fn canonical(peer: SocketAddr) -> SocketAddr {
    SocketAddr::new(peer.ip().to_canonical(), peer.port())
}

/// The key per-client limits (connections, rates, ETRN) count `ip` under: an IPv4 address
/// (or an IPv4-mapped one) as itself, an IPv6 address as its first `ipv6_prefix` bits, so
/// everyone in one /64 (the default) shares one limit. 128 counts each IPv6 address apart.
pub fn client_key(ip: IpAddr, ipv6_prefix: u8) -> IpAddr {
    match ip.to_canonical() {
        IpAddr::V6(v6) => {
            let bits = u32::from(ipv6_prefix.min(128));
            let mask = u128::MAX.checked_shl(128 - bits).unwrap_or(0);
            IpAddr::V6(Ipv6Addr::from(u128::from(v6) & mask))
        }
        v4 => v4,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn ipv4_and_ipv6_wildcards_share_a_port() {
        let v4 = listen("0.0.0.0:0".parse().unwrap()).unwrap();
        let port = v4.local_addr().unwrap().port();
        match listen(SocketAddr::new("::".parse().unwrap(), port)) {
            Ok(_) => {}
            // A machine without IPv6 cannot have the conflict this avoids.
            Err(e) if e.raw_os_error() == Some(97) => {}
            Err(e) => panic!("[::]:{port} next to 0.0.0.0:{port}: {e}"),
        }
    }

    #[test]
    fn clients_are_counted_by_ipv6_prefix() {
        let key = |ip: &str, p| client_key(ip.parse().unwrap(), p).to_string();
        assert_eq!(key("2001:db8:1:2:aaaa::1", 64), "2001:db8:1:2::");
        assert_eq!(
            key("2001:db8:1:2:aaaa::1", 64),
            key("2001:db8:1:2:ffff:1:2:3", 64),
            "one /64, one key"
        );
        assert_ne!(key("2001:db8:1:2::1", 64), key("2001:db8:1:3::1", 64));
        assert_eq!(key("2001:db8:1:2::1", 128), "2001:db8:1:2::1");
        assert_ne!(key("2001:db8::1", 128), key("2001:db8::2", 128));
        assert_eq!(key("2001:db8:1:2::1", 48), "2001:db8:1::");
        assert_eq!(key("2001:db8::1", 0), "::");
        assert_eq!(key("192.0.2.7", 64), "192.0.2.7", "IPv4 unchanged");
        assert_eq!(
            key("::ffff:192.0.2.7", 64),
            "192.0.2.7",
            "IPv4-mapped as IPv4"
        );
    }

    #[test]
    fn mapped_addresses_become_ipv4() {
        let p: SocketAddr = "[::ffff:192.0.2.7]:2525".parse().unwrap();
        assert_eq!(canonical(p), "192.0.2.7:2525".parse().unwrap());
        let v6: SocketAddr = "[2001:db8::1]:25".parse().unwrap();
        assert_eq!(canonical(v6), v6);
    }
}
