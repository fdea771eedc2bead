//! HTTP helpers: a blocking HTTP/1.1 request to a local server (the admin API, `/metrics`),
//! chunked bodies joined; and a list server, standing in for a primary that publishes a
//! list over HTTP. Loopback only; never parses JSON (the tests do).

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

/// A blocking HTTP/1.1 request to a local server with a JSON body: (status, body).
pub fn http(method: &str, url: &str, token: Option<&str>, body: Option<&str>) -> (u16, String) {
    http_with(
        method,
        url,
        token,
        &[("Content-Type", "application/json")],
        body,
    )
}

/// A blocking HTTP/1.1 request to a local server with these headers: (status, body).
pub fn http_with(
    method: &str,
    url: &str,
    token: Option<&str>,
    headers: &[(&str, &str)],
    body: Option<&str>,
) -> (u16, String) {
    let rest = url.strip_prefix("http://").unwrap();
    let (host, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    let path = if path.is_empty() { "/" } else { path };
    let mut s = TcpStream::connect(host).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let auth = token
        .map(|t| format!("Authorization: Bearer {t}\r\n"))
        .unwrap_or_default();
    let body = body.unwrap_or("");
    let headers: String = headers
        .iter()
        .map(|(k, v)| format!("{k}: {v}\r\n"))
        .collect();
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: {host}\r\n{auth}{headers}Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).unwrap();
    let text = String::from_utf8_lossy(&raw).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    // Chunked bodies (axum streams some responses): join the chunks.
    let body = if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        let mut out = String::new();
        let mut rest = body;
        while let Some((size, tail)) = rest.split_once("\r\n") {
            let n = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
            if n == 0 {
                break;
            }
            out.push_str(&tail[..n]);
            rest = &tail[n + 2..];
        }
        out
    } else {
        body.to_string()
    };
    (status, body)
}

/// A primary's list over HTTP: serves its body to every GET with the bearer token (401
/// without), or `503` while `body` is None, until the test ends.
pub struct ListServer {
    pub port: u16,
    pub body: std::sync::Arc<std::sync::Mutex<Option<String>>>,
}

impl ListServer {
    pub fn start(body: &str, token: &'static str) -> ListServer {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        let shared = std::sync::Arc::new(std::sync::Mutex::new(Some(body.to_string())));
        let served = shared.clone();
        std::thread::spawn(move || {
            for s in l.incoming() {
                let Ok(mut s) = s else { continue };
                let mut req = Vec::new();
                let mut buf = [0u8; 1024];
                while !req.windows(4).any(|w| w == b"\r\n\r\n") {
                    match s.read(&mut buf) {
                        Ok(0) | Err(_) => break,
                        Ok(n) => req.extend_from_slice(&buf[..n]),
                    }
                }
                let ok = String::from_utf8_lossy(&req)
                    .contains(&format!("Authorization: Bearer {token}"));
                let body = served.lock().unwrap().clone();
                let resp = match (ok, body) {
                    (false, _) => "HTTP/1.1 401 Unauthorized\r\nContent-Length: 0\r\n\r\n".into(),
                    (true, None) => "HTTP/1.1 503 Unavailable\r\nContent-Length: 0\r\n\r\n".into(),
                    (true, Some(body)) => format!(
                        "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: {}\r\n\r\n{body}",
                        body.len()
                    ),
                };
                let _ = s.write_all(resp.as_bytes());
            }
        });
        ListServer { port, body: shared }
    }
}
