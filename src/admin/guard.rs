//! What a web page the operator opens elsewhere must not be able to do to the admin port.
//!
//! - **DNS rebinding:** a page on `attacker.example` whose name is made to resolve to
//!   127.0.0.1 can read the port's answers, because to the browser they come from its own
//!   site. Its requests carry `Host: attacker.example`, so every request but `/healthz` must
//!   name this server: an IP address it answers on, a loopback address, `localhost`, or a
//!   name in `admin.allowed_hosts`. A request without `Host` (HTTP/1.0 tools) is served.
//! - **Cross-site requests (CSRF):** any page can make the browser send a form POST
//!   (`enctype=text/plain` included) to `http://127.0.0.1:8025/…`, with the admin token if
//!   the browser holds it as Basic credentials. State-changing requests (every method but
//!   GET and HEAD) must therefore carry what a page cannot send cross-site without the
//!   server's CORS permission, which mx2 never gives: `Content-Type: application/json` or
//!   the [`REQUEST_HEADER`]. `Origin`, when present, must be this server's own, and
//!   `Sec-Fetch-Site`, when present, `same-origin` or `none`.
//!
//! The dashboard has no forms or buttons that change anything (it only reads), so it needs no
//! CSRF token.

use std::net::{IpAddr, SocketAddr};

/// The header mx2's own commands send with every request (value `1`; any value counts).
pub const REQUEST_HEADER: &str = "x-mx2-request";

/// The connection's local address, which the server puts into each request's extensions:
/// an address the client reached is a name this server answers to.
#[derive(Debug, Clone, Copy)]
pub struct Local(pub SocketAddr);

/// The names, besides addresses, that requests may give in `Host`.
#[derive(Debug, Clone, Copy, Default)]
pub struct Hosts<'a> {
    /// `admin.allowed_hosts`: names in lower case without a trailing dot, addresses as
    /// `IpAddr` prints them.
    pub names: &'a [String],
    /// The address this connection came in on, when known.
    pub local: Option<SocketAddr>,
}

/// A `host[:port]` (IPv6 in brackets) split into its lower-case host (no brackets, no
/// trailing dot) and port; None when it is not one.
fn split_authority(authority: &str) -> Option<(String, Option<u16>)> {
    let a = authority.trim();
    // Bare IPv6 (`::1`), as some clients send it.
    if let Ok(IpAddr::V6(ip)) = a.parse::<IpAddr>() {
        return Some((ip.to_string(), None));
    }
    let (host, port) = if let Some(rest) = a.strip_prefix('[') {
        let (h, tail) = rest.split_once(']')?;
        h.parse::<std::net::Ipv6Addr>().ok()?;
        match tail {
            "" => (h, None),
            t => (h, Some(t.strip_prefix(':')?)),
        }
    } else {
        match a.split_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (a, None),
        }
    };
    let port = match port {
        None => None,
        Some(p) => Some(p.parse::<u16>().ok()?),
    };
    let host = host.trim_end_matches('.').to_ascii_lowercase();
    let name_like = |c: char| c.is_ascii_alphanumeric() || c == '-' || c == '.' || c == '_';
    if host.is_empty() || !(host.chars().all(name_like) || host.parse::<IpAddr>().is_ok()) {
        return None;
    }
    Some((host, port))
}

/// Whether `authority` (a `Host` header value) names this server.
pub fn host_allowed(authority: &str, hosts: &Hosts<'_>) -> bool {
    let Some((host, _)) = split_authority(authority) else {
        return false;
    };
    match host.parse::<IpAddr>() {
        // An address in Host never comes from a rebinding page: it names the address the
        // browser connects to.
        Ok(ip) => {
            let ip = ip.to_canonical();
            ip.is_loopback()
                || hosts.local.is_some_and(|l| l.ip().to_canonical() == ip)
                || hosts.names.contains(&ip.to_string())
        }
        Err(_) => host == "localhost" || hosts.names.contains(&host),
    }
}

/// Why a `Host` header is refused, for the 421 answer.
pub fn wrong_host(authority: &str, hosts: &Hosts<'_>) -> String {
    let here = hosts
        .local
        .map_or_else(|| "its address".to_string(), |l| l.to_string());
    format!(
        "this admin port does not answer to the name `{authority}` (Host header): use {here} or localhost, or add the name to admin.allowed_hosts in the configuration"
    )
}

/// Whether `origin` (an `Origin` header value) is this server's own: the same host and port
/// as the request's `Host`, or a name in `admin.allowed_hosts` (a reverse proxy's).
fn origin_allowed(origin: &str, host_header: Option<&str>, hosts: &Hosts<'_>) -> bool {
    let Some((scheme, authority)) = origin.trim().split_once("://") else {
        return false; // `null` (sandboxed frames, some redirects) included
    };
    let default = |scheme: &str| if scheme == "https" { 443 } else { 80 };
    let Some((o_host, o_port)) = split_authority(authority.trim_end_matches('/')) else {
        return false;
    };
    if hosts.names.contains(&o_host) {
        return true;
    }
    match host_header.and_then(split_authority) {
        Some((h, p)) => h == o_host && p.unwrap_or(80) == o_port.unwrap_or(default(scheme)),
        None => host_header.is_none() && host_allowed(authority, hosts),
    }
}

/// What a state-changing request shows of itself, from its headers.
#[derive(Debug, Default, Clone, Copy)]
pub struct Claims<'a> {
    pub host: Option<&'a str>,
    pub origin: Option<&'a str>,
    pub sec_fetch_site: Option<&'a str>,
    pub content_type: Option<&'a str>,
    /// The [`REQUEST_HEADER`] was sent.
    pub marked: bool,
}

/// Ok when a browser cannot have sent this state-changing request on another site's behalf;
/// Err says why it is refused.
pub fn forgery_check(c: &Claims<'_>, hosts: &Hosts<'_>) -> Result<(), String> {
    if let Some(site) = c.sec_fetch_site
        && !matches!(site.trim(), "same-origin" | "none")
    {
        return Err(format!(
            "refused: a browser sent this request from another site (Sec-Fetch-Site: {site}); the admin API only takes changes from mx2's commands, scripts, or its own pages"
        ));
    }
    if let Some(origin) = c.origin
        && !origin_allowed(origin, c.host, hosts)
    {
        return Err(format!(
            "refused: this request comes from the web page at {origin}, not from this server (if a reverse proxy serves mx2 under that name, add it to admin.allowed_hosts)"
        ));
    }
    let json = c.content_type.is_some_and(|t| {
        t.split(';')
            .next()
            .is_some_and(|essence| essence.trim().eq_ignore_ascii_case("application/json"))
    });
    if !json && !c.marked {
        return Err(format!(
            "refused: a request that changes something must carry `Content-Type: application/json` or the header `{}: 1` (web pages on other sites cannot send either; mx2's commands do)",
            "X-Mx2-Request"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hosts(names: &[String]) -> Hosts<'_> {
        Hosts {
            names,
            local: Some("192.0.2.7:8025".parse().unwrap()),
        }
    }

    fn names() -> Vec<String> {
        vec!["mx2.example.net".into(), "2001:db8::1".into()]
    }

    #[test]
    fn authorities() {
        assert_eq!(
            split_authority("LocalHost.:8025"),
            Some(("localhost".into(), Some(8025)))
        );
        assert_eq!(split_authority("[::1]:80"), Some(("::1".into(), Some(80))));
        assert_eq!(split_authority("::1"), Some(("::1".into(), None)));
        assert_eq!(split_authority("[::1]"), Some(("::1".into(), None)));
        assert_eq!(
            split_authority("127.0.0.1"),
            Some(("127.0.0.1".into(), None))
        );
        for bad in [
            "", ":80", "a:b", "[::1", "[nope]:1", "a b", "x:99999", "a/b",
        ] {
            assert_eq!(split_authority(bad), None, "{bad}");
        }
    }

    #[test]
    fn hosts_this_server_answers_to() {
        let n = names();
        let h = hosts(&n);
        for ok in [
            "127.0.0.1:8025",
            "127.0.0.1",
            "127.1.2.3:9",
            "[::1]:8025",
            "::1",
            "localhost",
            "localhost:8025",
            "192.0.2.7:8025",
            "MX2.example.net",
            "mx2.example.net.:443",
            "[2001:db8::1]:8025",
        ] {
            assert!(host_allowed(ok, &h), "{ok}");
        }
        for bad in [
            "attacker.example",
            "attacker.example:8025",
            "192.0.2.8:8025",
            "localhost.attacker.example",
            "example.net",
            "",
            "127.0.0.1:x",
        ] {
            assert!(!host_allowed(bad, &h), "{bad}");
        }
        assert!(wrong_host("a.example", &h).contains("admin.allowed_hosts"));
    }

    fn claims<'a>() -> Claims<'a> {
        Claims {
            host: Some("127.0.0.1:8025"),
            ..Default::default()
        }
    }

    #[test]
    fn what_a_page_on_another_site_can_send_is_refused() {
        let n = names();
        let h = hosts(&n);
        // A form with enctype=text/plain (or urlencoded, or multipart).
        for t in [
            "text/plain",
            "application/x-www-form-urlencoded",
            "multipart/form-data; boundary=x",
            "text/plain; application/json",
        ] {
            let c = Claims {
                content_type: Some(t),
                ..claims()
            };
            assert!(
                forgery_check(&c, &h).unwrap_err().contains("X-Mx2-Request"),
                "{t}"
            );
        }
        assert!(forgery_check(&claims(), &h).is_err());
        let json = Claims {
            content_type: Some("Application/JSON; charset=utf-8"),
            ..claims()
        };
        assert_eq!(forgery_check(&json, &h), Ok(()));
        let marked = Claims {
            marked: true,
            ..claims()
        };
        assert_eq!(forgery_check(&marked, &h), Ok(()));
        for site in ["cross-site", "same-site"] {
            let c = Claims {
                sec_fetch_site: Some(site),
                ..marked
            };
            assert!(forgery_check(&c, &h).unwrap_err().contains(site));
        }
        for site in ["same-origin", "none"] {
            let c = Claims {
                sec_fetch_site: Some(site),
                ..marked
            };
            assert_eq!(forgery_check(&c, &h), Ok(()));
        }
    }

    #[test]
    fn origins() {
        let n = names();
        let h = hosts(&n);
        let with = |origin, host| Claims {
            origin: Some(origin),
            host,
            marked: true,
            ..Default::default()
        };
        let ok = |o, host| forgery_check(&with(o, host), &h).is_ok();
        assert!(ok("http://127.0.0.1:8025", Some("127.0.0.1:8025")));
        assert!(ok("http://localhost:8025", Some("LOCALHOST:8025")));
        assert!(ok("http://127.0.0.1", Some("127.0.0.1:80")));
        assert!(ok("https://mx2.example.net", Some("127.0.0.1:8025")));
        assert!(ok("http://127.0.0.1:8025", None));
        assert!(!ok("http://127.0.0.1:3000", Some("127.0.0.1:8025")));
        assert!(!ok("http://localhost:8025", Some("127.0.0.1:8025")));
        assert!(!ok("https://attacker.example", Some("127.0.0.1:8025")));
        assert!(!ok("null", Some("127.0.0.1:8025")));
        assert!(!ok("http://attacker.example", None));
        assert!(
            forgery_check(&with("http://evil.example", None), &h)
                .unwrap_err()
                .contains("evil.example")
        );
    }
}
