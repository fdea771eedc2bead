//! A minimal HTTP/1.1 client (http and https, bearer token, size and time limits, an
//! expected content type; never follows a redirect): GET for
//! recipient lists a primary publishes and for MTA-STS policies, POST for alert webhooks,
//! and both for `mx2`'s commands that talk to the admin API. Not a general-purpose client.

use crate::config::{TlsMode, TlsPolicy};
use crate::dns::Dns;
use crate::tls::{ClientTls, Stream};
use std::net::SocketAddr;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// The largest body accepted.
pub const MAX_BODY: usize = 64 << 20;

#[derive(Debug, thiserror::Error)]
#[error("{method} {url}: {reason}")]
pub struct HttpError {
    pub method: &'static str,
    pub url: String,
    pub reason: String,
    /// The response's status when the server answered with something other than 2xx.
    pub status: Option<u16>,
}

/// A request body and its content type.
pub struct Body<'a> {
    pub content_type: &'a str,
    pub bytes: &'a [u8],
}

struct Url {
    https: bool,
    host: String,
    port: u16,
    path: String,
}

impl Url {
    /// The `Host` header: IPv6 in brackets, the port unless it is the scheme's default.
    fn authority(&self) -> String {
        let host = if self.host.contains(':') {
            format!("[{}]", self.host)
        } else {
            self.host.clone()
        };
        match (self.https, self.port) {
            (true, 443) | (false, 80) => host,
            (_, port) => format!("{host}:{port}"),
        }
    }
}

fn parse_url(url: &str) -> Option<Url> {
    let (https, rest) = if let Some(r) = url.strip_prefix("https://") {
        (true, r)
    } else {
        (false, url.strip_prefix("http://")?)
    };
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    let (host, port) = match authority.rsplit_once(':') {
        Some((h, p)) if !h.ends_with(']') || h.starts_with('[') => {
            (h.trim_matches(|c| c == '[' || c == ']'), p.parse().ok()?)
        }
        _ => (authority, if https { 443 } else { 80 }),
    };
    if host.is_empty() || path.contains(['\r', '\n', ' ']) {
        return None;
    }
    Some(Url {
        https,
        host: host.to_string(),
        port,
        path: path.to_string(),
    })
}

/// GETs `url`; Ok is the body of a 200 response. `ca_file` adds trusted CAs for https.
pub async fn get(
    url: &str,
    bearer: Option<&str>,
    dns: &Dns,
    limit: Duration,
    ca_file: Option<&std::path::Path>,
) -> Result<Vec<u8>, HttpError> {
    send(Request {
        bearer,
        dns: Some(dns),
        ca_file,
        ..Request::new("GET", url, limit)
    })
    .await
}

/// One request: what to send, where, and within what limits.
pub struct Request<'a> {
    pub method: &'static str,
    pub url: &'a str,
    /// Sent as `Authorization: Bearer …`.
    pub bearer: Option<&'a str>,
    pub body: Option<Body<'a>>,
    /// Resolves the URL's host; without it the host must be an IP address.
    pub dns: Option<&'a Dns>,
    /// The whole exchange, connect to last byte.
    pub limit: Duration,
    /// Extra trusted CAs for https.
    pub ca_file: Option<&'a std::path::Path>,
    /// The largest response body taken.
    pub max_body: usize,
    /// The media type the response must have (`text/plain` for MTA-STS policies).
    pub content_type: Option<&'a str>,
}

impl<'a> Request<'a> {
    /// A request without token, body, resolver or extra CAs.
    pub fn new(method: &'static str, url: &'a str, limit: Duration) -> Self {
        Request {
            method,
            url,
            bearer: None,
            body: None,
            dns: None,
            limit,
            ca_file: None,
            max_body: MAX_BODY,
            content_type: None,
        }
    }
}

/// Sends one request; Ok is the body of a 2xx response.
pub async fn send(request: Request<'_>) -> Result<Vec<u8>, HttpError> {
    let Request {
        method,
        url,
        bearer,
        body,
        dns,
        limit,
        ca_file,
        max_body,
        content_type,
    } = request;
    let err = |reason: String| HttpError {
        method,
        url: url.to_string(),
        reason,
        status: None,
    };
    let u = parse_url(url).ok_or_else(|| err("not an http:// or https:// URL".into()))?;
    let fetch = async {
        let ip = match (u.host.parse::<std::net::IpAddr>(), dns) {
            (Ok(ip), _) => ip,
            (Err(_), None) => return Err(err(format!("{} is not an IP address", u.host))),
            (Err(_), Some(dns)) => *dns
                .addresses(&u.host)
                .await
                .map_err(|e| err(e.to_string()))?
                .first()
                .ok_or_else(|| err(format!("{} has no address", u.host)))?,
        };
        let tcp = TcpStream::connect(SocketAddr::new(ip, u.port))
            .await
            .map_err(|e| err(e.to_string()))?;
        let mut stream = if u.https {
            let tls = ClientTls::new(&TlsPolicy {
                mode: TlsMode::Verify,
                ca_file: ca_file.map(|p| p.to_path_buf()),
                pin: None,
            })
            .map_err(err)?;
            Stream::Client(Box::new(
                tls.connect(&u.host, tcp)
                    .await
                    .map_err(|e| err(format!("TLS: {e}")))?,
            ))
        } else {
            Stream::Plain(tcp)
        };
        let auth = bearer
            .map(|t| format!("Authorization: Bearer {}\r\n", t.trim()))
            .unwrap_or_default();
        let content = body
            .as_ref()
            .map(|b| {
                format!(
                    "Content-Type: {}\r\nContent-Length: {}\r\n",
                    b.content_type,
                    b.bytes.len()
                )
            })
            .unwrap_or_default();
        // `X-Mx2-Request` tells mx2's admin API that a program, not a web page on another
        // site, sent this (it refuses changes without it or a JSON body); elsewhere it is
        // an inert header like `User-Agent`.
        let mut request = format!(
            "{method} {} HTTP/1.1\r\nHost: {}\r\nUser-Agent: mx2\r\nX-Mx2-Request: 1\r\nAccept: text/plain, application/json\r\n{auth}{content}Connection: close\r\n\r\n",
            u.path,
            u.authority()
        )
        .into_bytes();
        if let Some(b) = &body {
            request.extend_from_slice(b.bytes);
        }
        stream
            .write_all(&request)
            .await
            .map_err(|e| err(e.to_string()))?;
        let mut raw = Vec::new();
        let mut chunk = [0u8; 16384];
        loop {
            let n = stream
                .read(&mut chunk)
                .await
                .map_err(|e| err(e.to_string()))?;
            if n == 0 {
                break;
            }
            raw.extend_from_slice(&chunk[..n]);
            if raw.len() > max_body + 65536 {
                return Err(err(format!("response larger than {max_body} bytes")));
            }
        }
        let body = parse_response(&raw).map_err(|(status, reason)| HttpError {
            status,
            ..err(reason)
        })?;
        if body.len() > max_body {
            return Err(err(format!("response larger than {max_body} bytes")));
        }
        if let Some(want) = content_type {
            let got = header(&raw, "content-type").unwrap_or_default();
            let media = got.split(';').next().unwrap_or("").trim();
            if !media.eq_ignore_ascii_case(want) {
                return Err(err(format!("Content-Type is `{got}`, not {want}")));
            }
        }
        Ok(body)
    };
    tokio::time::timeout(limit, fetch)
        .await
        .map_err(|_| err("timed out".into()))?
}

/// The first value of a response header (name in lower case), from the raw response.
fn header(raw: &[u8], name: &str) -> Option<String> {
    let end = raw.windows(4).position(|w| w == b"\r\n\r\n")?;
    String::from_utf8_lossy(&raw[..end])
        .split("\r\n")
        .skip(1)
        .filter_map(|l| l.split_once(':'))
        .find(|(k, _)| k.trim().eq_ignore_ascii_case(name))
        .map(|(_, v)| v.trim().to_string())
}

/// Splits a complete HTTP/1.1 response; Ok is the body of a 2xx (a 200 for GET callers
/// that care is the same thing in practice); Err carries the status when there was one.
pub fn parse_response(raw: &[u8]) -> Result<Vec<u8>, (Option<u16>, String)> {
    let plain = |e: &str| (None, e.to_string());
    let end = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(|| plain("no end of headers"))?;
    let head = String::from_utf8_lossy(&raw[..end]);
    let status = head.split("\r\n").next().unwrap_or("");
    let code: u16 = status
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| (None, format!("bad status line `{status}`")))?;
    let body_of = |end: usize| -> Result<Vec<u8>, String> {
        let mut chunked = false;
        let mut length = None;
        for l in head.split("\r\n").skip(1) {
            let Some((k, v)) = l.split_once(':') else {
                continue;
            };
            let (k, v) = (k.trim().to_ascii_lowercase(), v.trim());
            if k == "transfer-encoding" && v.to_ascii_lowercase().contains("chunked") {
                chunked = true;
            } else if k == "content-length" {
                length = v.parse::<usize>().ok();
            }
        }
        let body = &raw[end + 4..];
        if chunked {
            return dechunk(body);
        }
        match length {
            Some(n) if n <= body.len() => Ok(body[..n].to_vec()),
            Some(_) => Err("body shorter than Content-Length".into()),
            None => Ok(body.to_vec()),
        }
    };
    if !(200..300).contains(&code) {
        // The server's explanation, when it gave one in a short body.
        let why = body_of(end)
            .ok()
            .map(|b| {
                String::from_utf8_lossy(&b[..b.len().min(500)])
                    .trim()
                    .to_string()
            })
            .filter(|b| !b.is_empty())
            .map(|b| format!(": {b}"))
            .unwrap_or_default();
        return Err((Some(code), format!("HTTP status {code}{why}")));
    }
    body_of(end).map_err(|e| (Some(code), e))
}

fn dechunk(mut b: &[u8]) -> Result<Vec<u8>, String> {
    let mut out = Vec::new();
    loop {
        let eol = b
            .windows(2)
            .position(|w| w == b"\r\n")
            .ok_or("bad chunk header")?;
        let size_text = String::from_utf8_lossy(&b[..eol]);
        let size = usize::from_str_radix(size_text.split(';').next().unwrap_or("").trim(), 16)
            .map_err(|_| "bad chunk size")?;
        b = &b[eol + 2..];
        if size == 0 {
            return Ok(out);
        }
        if b.len() < size + 2 || out.len() + size > MAX_BODY {
            return Err("truncated or oversized chunk".into());
        }
        out.extend_from_slice(&b[..size]);
        b = &b[size + 2..];
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        let u = parse_url("https://primary.example.com:8443/rcpts.txt?x=1").unwrap();
        assert!(
            u.https
                && u.host == "primary.example.com"
                && u.port == 8443
                && u.path == "/rcpts.txt?x=1"
        );
        assert_eq!(u.authority(), "primary.example.com:8443");
        let u = parse_url("http://127.0.0.1").unwrap();
        assert_eq!((u.port, u.path.as_str()), (80, "/"));
        assert_eq!(u.authority(), "127.0.0.1");
        let u = parse_url("http://[::1]:8025/api").unwrap();
        assert_eq!(
            (u.host.as_str(), u.authority().as_str()),
            ("::1", "[::1]:8025")
        );
        assert!(parse_url("ftp://x").is_none());
    }

    #[test]
    fn responses() {
        assert_eq!(
            parse_response(b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nabcdef").unwrap(),
            b"abc"
        );
        assert_eq!(parse_response(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n").unwrap(), b"abcde");
        assert!(
            parse_response(b"HTTP/1.1 404 Not Found\r\n\r\n")
                .unwrap_err()
                .1
                .contains("404")
        );
        assert_eq!(
            parse_response(b"HTTP/1.0 200 OK\r\n\r\nall of it").unwrap(),
            b"all of it"
        );
    }
}
