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
//! On shutdown it stops accepting and lets each connection finish the request in hand.

use super::guard::Local;
use crate::shutdown::Shutdown;
use axum::Router;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::{Service, service_fn};
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tracing::{debug, warn};

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

/// Serves `app` on `listener` within `limits` until shutdown.
pub async fn run(listener: TcpListener, app: Router, limits: Limits, mut shutdown: Shutdown) {
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
                tokio::spawn(connection(tcp, app.clone(), limits, shutdown.clone(), slot));
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
    mut shutdown: Shutdown,
    _slot: OwnedSemaphorePermit,
) {
    let local = tcp.local_addr().ok().map(Local);
    let app = TowerToHyperService::new(app);
    let service = service_fn(move |mut req: hyper::Request<Incoming>| {
        if let Some(l) = local {
            req.extensions_mut().insert(l);
        }
        app.call(req)
    });
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout);
    let conn = builder.serve_connection(TokioIo::new(tcp), service);
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
