//! The admin port's accept loop (HTTP/1.1, hyper), bounded so that slow or idle clients
//! cannot hold the process's file descriptors, which SMTP needs:
//!
//! - a request's headers must arrive within [`Limits::header_timeout`] of the connection
//!   opening or of the previous answer (hyper starts that timer whenever it waits for a
//!   request head, so it also ends idle keep-alive connections);
//! - at most [`Limits::max_connections`] are open at once; one more gets a short `503` (if
//!   its socket takes it without waiting) and is closed at once;
//! - no connection lives longer than [`Limits::lifetime`] (a body trickled in, or an answer
//!   the client never reads).
//!
//! With a TLS acceptor (the web inbox's `[inbox] web_listen`) each connection's handshake
//! comes first, within the header timeout. Each request carries the connection's [`Local`]
//! address and its [`Conn`] (peer, TLS or not) as extensions.
//!
//! On shutdown it stops accepting and lets each connection finish the request in hand.

use super::guard::Local;
use crate::shutdown::Shutdown;
use crate::tls::Stream;
use axum::Router;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::{Service, service_fn};
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tracing::{debug, warn};

/// Where a request's connection comes from and whether it is TLS (an extension of every
/// request).
#[derive(Debug, Clone, Copy)]
pub struct Conn {
    pub peer: SocketAddr,
    pub tls: bool,
}

/// The admin listener's bounds.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub header_timeout: Duration,
    pub max_connections: usize,
    pub lifetime: Duration,
}

/// What the admin port allows: a dashboard, Prometheus and a few operators need far less.
/// The lifetime is longer than the command line's own limit on one call (5 minutes).
pub const LIMITS: Limits = Limits {
    header_timeout: Duration::from_secs(10),
    max_connections: 256,
    lifetime: Duration::from_secs(600),
};

/// Serves `app` on `listener` within `limits` until shutdown; with `tls`, HTTPS.
pub async fn run(
    listener: TcpListener,
    app: Router,
    limits: Limits,
    tls: Option<tokio_rustls::TlsAcceptor>,
    mut shutdown: Shutdown,
) {
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    let mut full = false;
    loop {
        let tcp = tokio::select! {
            _ = shutdown.wait() => break,
            accepted = listener.accept() => match accepted {
                Ok((tcp, _)) => tcp,
                Err(e) => {
                    accept_failed(e).await;
                    continue;
                }
            },
        };
        match slots.clone().try_acquire_owned() {
            Ok(slot) => {
                full = false;
                let (app, tls, stop) = (app.clone(), tls.clone(), shutdown.clone());
                tokio::spawn(connection(tcp, app, limits, tls, stop, slot));
            }
            Err(_) => {
                if !full {
                    warn!(
                        limit = limits.max_connections,
                        "admin port: too many connections; new ones are refused until some close"
                    );
                    full = true;
                }
                refuse(tcp, limits.max_connections);
            }
        }
    }
    debug!("admin port closed");
}

/// Per-connection errors (the client went away) are nothing; others (EMFILE) are logged
/// and the loop pauses, so that it neither spins nor floods the log.
async fn accept_failed(e: std::io::Error) {
    use std::io::ErrorKind::*;
    if matches!(
        e.kind(),
        ConnectionAborted | ConnectionReset | ConnectionRefused
    ) {
        return;
    }
    warn!(error = %e, "admin port: accept failed");
    tokio::time::sleep(Duration::from_secs(1)).await;
}

/// Answers `503` if the socket takes it at once, and closes.
fn refuse(tcp: TcpStream, limit: usize) {
    let body = format!("too many admin connections (at most {limit}); try again later\n");
    let answer = format!(
        "HTTP/1.1 503 Service Unavailable\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let _ = tcp.try_write(answer.as_bytes());
}

async fn connection(
    tcp: TcpStream,
    app: Router,
    limits: Limits,
    tls: Option<tokio_rustls::TlsAcceptor>,
    mut shutdown: Shutdown,
    _slot: OwnedSemaphorePermit,
) {
    let local = tcp.local_addr().ok().map(Local);
    let Ok(peer) = tcp.peer_addr().map(crate::net::canonical) else {
        return;
    };
    let stream = match tls {
        None => Stream::Plain(tcp),
        Some(acceptor) => {
            match tokio::time::timeout(limits.header_timeout, acceptor.accept(tcp)).await {
                Ok(Ok(s)) => Stream::Server(Box::new(s)),
                Ok(Err(e)) => {
                    debug!(%peer, error = %e, "HTTPS handshake failed");
                    return;
                }
                Err(_) => return,
            }
        }
    };
    let conn_info = Conn {
        peer,
        tls: matches!(stream, Stream::Server(_)),
    };
    let app = TowerToHyperService::new(app);
    let service = service_fn(move |mut req: hyper::Request<Incoming>| {
        if let Some(l) = local {
            req.extensions_mut().insert(l);
        }
        req.extensions_mut().insert(conn_info);
        app.call(req)
    });
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout);
    let conn = builder.serve_connection(TokioIo::new(stream), service);
    tokio::pin!(conn);
    let too_long = tokio::time::sleep(limits.lifetime);
    tokio::pin!(too_long);
    let mut closing = false;
    loop {
        tokio::select! {
            done = conn.as_mut() => {
                if let Err(e) = done {
                    debug!(error = %e, "admin connection ended");
                }
                return;
            }
            _ = shutdown.wait(), if !closing => {
                conn.as_mut().graceful_shutdown();
                closing = true;
            }
            _ = &mut too_long => {
                debug!(limit = ?limits.lifetime, "admin connection open too long; closed");
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// Reads until the peer closes (or 10 s pass); what came, and when it closed.
    async fn until_closed(s: &mut TcpStream) -> (String, Duration) {
        let start = Instant::now();
        let mut all = Vec::new();
        let _ = tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut all)).await;
        (String::from_utf8_lossy(&all).into_owned(), start.elapsed())
    }

    #[tokio::test]
    async fn a_trickled_body_and_one_connection_too_many_are_closed() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let app = Router::new().route("/", axum::routing::post(|body: String| async move { body }));
        let limits = Limits {
            header_timeout: Duration::from_secs(5),
            max_connections: 1,
            lifetime: Duration::from_secs(1),
        };
        let (trigger, shutdown) = crate::shutdown::channel();
        tokio::spawn(run(listener, app, limits, None, shutdown));

        // Headers in time, then a body that never comes: the lifetime ends it.
        let mut slow = TcpStream::connect(addr).await.unwrap();
        slow.write_all(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\nab")
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(200)).await;
        // The only slot is taken: the next one is told so and closed at once.
        let mut second = TcpStream::connect(addr).await.unwrap();
        let (answer, took) = until_closed(&mut second).await;
        assert!(answer.starts_with("HTTP/1.1 503"), "{answer:?}");
        assert!(took < Duration::from_secs(1), "{took:?}");
        let (_, took) = until_closed(&mut slow).await;
        println!("trickled body closed after {took:?} (lifetime 1 s)");
        assert!(took < Duration::from_secs(5), "{took:?}");

        // Its slot is free again; after shutdown the port is closed.
        let mut third = TcpStream::connect(addr).await.unwrap();
        third
            .write_all(
                b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok",
            )
            .await
            .unwrap();
        let (answer, _) = until_closed(&mut third).await;
        assert!(
            answer.starts_with("HTTP/1.1 200") && answer.ends_with("ok"),
            "{answer:?}"
        );
        trigger.fire();
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert!(TcpStream::connect(addr).await.is_err());
    }
}
