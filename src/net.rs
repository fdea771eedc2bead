//! Listening sockets. An IPv6 listener is IPv6-only (`IPV6_V6ONLY`), so `0.0.0.0:25` and
//! `[::]:25` can both be listed, as the examples do (with Linux's default dual-stack sockets
//! the second bind fails with "address in use"), and IPv4 clients never appear as
//! `::ffff:a.b.c.d` addresses to the policy checks, blocklists and trace headers.

use std::net::SocketAddr;

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

/// The peer as policy sees it: an IPv4-mapped IPv6 address (from a dual-stack socket or a
/// PROXY header) becomes the IPv4 address it stands for.
pub fn canonical(peer: SocketAddr) -> SocketAddr {
    SocketAddr::new(peer.ip().to_canonical(), peer.port())
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
    fn mapped_addresses_become_ipv4() {
        let p: SocketAddr = "[::ffff:192.0.2.7]:2525".parse().unwrap();
        assert_eq!(canonical(p), "192.0.2.7:2525".parse().unwrap());
        let v6: SocketAddr = "[2001:db8::1]:25".parse().unwrap();
        assert_eq!(canonical(v6), v6);
    }
}
