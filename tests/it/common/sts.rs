//! A test MTA-STS policy server: HTTPS on `IP:443` (the policy URL has no port; the tests
//! run as root) with a certificate from the test CA, answering each `Host`'s policy as
//! text/plain, 404 for others; it also takes POSTs (TLS reports to an https: rua) and keeps
//! them. Stops on `stop` or drop; counts the policies it served.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::TcpListener;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Duration;

/// A POST received: path, content type, body.
pub type Post = (String, String, Vec<u8>);

pub struct PolicyServer {
    stop: Arc<AtomicBool>,
    served: Arc<AtomicUsize>,
    posts: Arc<Mutex<Vec<Post>>>,
    thread: Option<thread::JoinHandle<()>>,
}

impl PolicyServer {
    /// Serves `policies` (host name `mta-sts.DOMAIN` → policy text) on `ip:443`.
    pub fn start(
        ip: &str,
        tls: Arc<rustls::ServerConfig>,
        policies: &[(&str, &str)],
    ) -> PolicyServer {
        let listener =
            TcpListener::bind((ip, 443)).expect("bind the policy server on port 443 (as root)");
        listener.set_nonblocking(true).unwrap();
        let policies: HashMap<String, String> = policies
            .iter()
            .map(|(h, p)| (h.to_string(), p.to_string()))
            .collect();
        let stop = Arc::new(AtomicBool::new(false));
        let served = Arc::new(AtomicUsize::new(0));
        let posts = Arc::new(Mutex::new(Vec::new()));
        let (sp, count, got) = (stop.clone(), served.clone(), posts.clone());
        let thread = thread::spawn(move || {
            while !sp.load(Ordering::SeqCst) {
                let Ok((tcp, _)) = listener.accept() else {
                    thread::sleep(Duration::from_millis(5));
                    continue;
                };
                tcp.set_nonblocking(false).unwrap();
                tcp.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
                let Ok(conn) = rustls::ServerConnection::new(tls.clone()) else {
                    continue;
                };
                let mut s = rustls::StreamOwned::new(conn, tcp);
                let mut req = Vec::new();
                let mut buf = [0u8; 1024];
                while !req.windows(4).any(|w| w == b"\r\n\r\n") {
                    match s.read(&mut buf) {
                        Ok(0) | Err(_) => break,
                        Ok(n) => req.extend_from_slice(&buf[..n]),
                    }
                }
                let end = req
                    .windows(4)
                    .position(|w| w == b"\r\n\r\n")
                    .map_or(req.len(), |i| i + 4);
                let text = String::from_utf8_lossy(&req[..end]).into_owned();
                let header = |name: &str| {
                    text.lines()
                        .find_map(|l| l.strip_prefix(name))
                        .unwrap_or("")
                        .trim()
                        .to_string()
                };
                let host = header("Host: ");
                if let Some(path) = text.strip_prefix("POST ") {
                    let want: usize = header("Content-Length: ").parse().unwrap_or(0);
                    let mut body = req[end..].to_vec();
                    while body.len() < want {
                        match s.read(&mut buf) {
                            Ok(0) | Err(_) => break,
                            Ok(n) => body.extend_from_slice(&buf[..n]),
                        }
                    }
                    let path = path.split(' ').next().unwrap_or("").to_string();
                    got.lock()
                        .unwrap()
                        .push((path, header("Content-Type: "), body));
                    let _ = s.write_all(
                        b"HTTP/1.1 204 No Content\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
                    );
                    let _ = s.flush();
                    continue;
                }
                let resp = match policies.get(&host) {
                    Some(body) if text.starts_with("GET /.well-known/mta-sts.txt ") => {
                        count.fetch_add(1, Ordering::SeqCst);
                        format!(
                            "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                            body.len()
                        )
                    }
                    _ => "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                        .to_string(),
                };
                let _ = s.write_all(resp.as_bytes());
                let _ = s.flush();
                s.conn.send_close_notify();
                let _ = s.flush();
            }
        });
        PolicyServer {
            stop,
            served,
            posts,
            thread: Some(thread),
        }
    }

    /// Policies served so far.
    pub fn served(&self) -> usize {
        self.served.load(Ordering::SeqCst)
    }

    /// The POSTs received so far.
    pub fn posts(&self) -> Vec<Post> {
        self.posts.lock().unwrap().clone()
    }

    /// Stops listening (the port is closed when this returns).
    pub fn stop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for PolicyServer {
    fn drop(&mut self) {
        self.stop();
    }
}
