//! The web inbox's security rules, pure: where a password may be typed (TLS, or a
//! connection on loopback at both ends), the session cookie's attributes, the headers every
//! inbox answer carries (a strict Content-Security-Policy among them), and which form posts
//! a browser sent on another site's behalf.

use axum::http::{HeaderMap, HeaderValue, header};
use std::net::IpAddr;

/// The session cookie's name.
pub const COOKIE: &str = "mx2_inbox";

/// What a page may load: nothing but this server's stylesheet and inline `data:` images; no
/// script at all; forms post only here; no page may frame it.
pub const CSP: &str = "default-src 'none'; style-src 'self'; img-src data:; form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

/// Whether a login (password or one-time code) may be sent over this connection: inside
/// TLS, or over plain HTTP when both ends are loopback addresses (the server itself, or a
/// reverse proxy on it). `local` is the address the connection came in on, when known.
pub fn may_take_password(tls: bool, peer: IpAddr, local: Option<IpAddr>) -> bool {
    tls || (peer.to_canonical().is_loopback()
        && local.is_some_and(|l| l.to_canonical().is_loopback()))
}

/// The `Set-Cookie` value that starts a session: only for `/inbox/`, never readable by
/// scripts, never sent with another site's requests, and only over TLS when it came over
/// TLS. A session cookie (no expiry): the server ends idle sessions.
pub fn set_cookie(value: &str, tls: bool) -> String {
    let secure = if tls { "; Secure" } else { "" };
    format!("{COOKIE}={value}; Path=/inbox/; HttpOnly; SameSite=Strict{secure}")
}

/// The `Set-Cookie` value that ends it in the browser.
pub fn clear_cookie(tls: bool) -> String {
    let secure = if tls { "; Secure" } else { "" };
    format!("{COOKIE}=; Path=/inbox/; HttpOnly; SameSite=Strict; Max-Age=0{secure}")
}

/// The session cookie a request carries, if any.
pub fn cookie(headers: &HeaderMap) -> Option<&str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, _)| *name == COOKIE)
        .map(|(_, value)| value.trim())
        .filter(|v| !v.is_empty())
}

/// Whether a browser says this request was made by a page on another site
/// (`Sec-Fetch-Site: cross-site` or `same-site`), or its `Origin` is not this `Host`.
pub fn cross_site(headers: &HeaderMap) -> bool {
    let text = |name| {
        headers
            .get(name)
            .and_then(|v: &HeaderValue| v.to_str().ok())
    };
    if let Some(site) = text("sec-fetch-site")
        && !matches!(site.trim(), "same-origin" | "none")
    {
        return true;
    }
    match (text("origin"), text("host")) {
        (Some(origin), Some(host)) => origin.split_once("://").is_none_or(|(_, authority)| {
            !authority.trim_end_matches('/').eq_ignore_ascii_case(host)
        }),
        (Some(_), None) => true,
        (None, _) => false,
    }
}

/// The headers every inbox answer carries.
pub fn protect(headers: &mut HeaderMap) {
    let set = |h: &mut HeaderMap, name, value: &'static str| {
        h.insert(name, HeaderValue::from_static(value));
    };
    set(headers, header::CONTENT_SECURITY_POLICY, CSP);
    set(headers, header::X_CONTENT_TYPE_OPTIONS, "nosniff");
    // Links in a message do not tell their site where they were followed from; this
    // server's own requests keep their `Origin`.
    set(headers, header::REFERRER_POLICY, "same-origin");
    set(headers, header::CACHE_CONTROL, "no-store");
    set(headers, header::X_FRAME_OPTIONS, "DENY");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_only_inside_tls_or_on_loopback() {
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        let lo = Some(ip("127.0.0.1"));
        assert!(may_take_password(false, ip("127.0.0.1"), lo));
        assert!(may_take_password(false, ip("::1"), Some(ip("::1"))));
        assert!(may_take_password(false, ip("::ffff:127.0.0.1"), lo));
        // Plain HTTP from elsewhere, or to a public address: refused; TLS: fine.
        assert!(!may_take_password(
            false,
            ip("192.0.2.9"),
            Some(ip("192.0.2.2"))
        ));
        assert!(!may_take_password(false, ip("192.0.2.9"), lo));
        assert!(!may_take_password(false, ip("127.0.0.1"), None));
        assert!(may_take_password(
            true,
            ip("192.0.2.9"),
            Some(ip("192.0.2.2"))
        ));
    }

    #[test]
    fn cookies() {
        assert_eq!(
            set_cookie("abc", true),
            "mx2_inbox=abc; Path=/inbox/; HttpOnly; SameSite=Strict; Secure"
        );
        assert!(!set_cookie("abc", false).contains("Secure"));
        assert!(clear_cookie(false).contains("Max-Age=0"));
        let mut h = HeaderMap::new();
        h.insert(
            header::COOKIE,
            HeaderValue::from_static("a=1; mx2_inbox=tok; b=2"),
        );
        assert_eq!(cookie(&h), Some("tok"));
        h.insert(
            header::COOKIE,
            HeaderValue::from_static("mx2_inboxx=tok; mx2_inbox="),
        );
        assert_eq!(cookie(&h), None);
    }

    #[test]
    fn cross_site_posts() {
        let h = |pairs: &[(&'static str, &'static str)]| {
            let mut m = HeaderMap::new();
            for (k, v) in pairs {
                m.insert(*k, HeaderValue::from_static(v));
            }
            m
        };
        assert!(!cross_site(&h(&[])));
        assert!(!cross_site(&h(&[("sec-fetch-site", "same-origin")])));
        assert!(cross_site(&h(&[("sec-fetch-site", "cross-site")])));
        assert!(cross_site(&h(&[("sec-fetch-site", "same-site")])));
        assert!(!cross_site(&h(&[
            ("origin", "https://mx2.example:8443"),
            ("host", "mx2.example:8443")
        ])));
        assert!(cross_site(&h(&[
            ("origin", "https://evil.example"),
            ("host", "mx2.example")
        ])));
        assert!(cross_site(&h(&[
            ("origin", "null"),
            ("host", "mx2.example")
        ])));
    }
}
