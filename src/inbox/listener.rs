//! The inbox's accept loops: one per listener (`[inbox] listen` with STARTTLS, `tls_listen`
//! with TLS from the first byte), the connection cap (`* BYE` beyond it), the TLS handshake
//! for implicit TLS, and one task per session. Sessions end with the server: at shutdown
//! the accept loops stop and open sessions are dropped (they change nothing but flags,
//! each written durably before its reply).

use super::Inbox;
use super::session::Session;
use crate::shutdown::Shutdown;
use crate::tls::Stream;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tracing::debug;

/// Accepts until shutdown; `implicit_tls`: the TLS listener.
pub async fn run(
    listener: TcpListener,
    inbox: Arc<Inbox>,
    implicit_tls: bool,
    mut shutdown: Shutdown,
) {
    let open = Arc::new(AtomicUsize::new(0));
    while let Some((stream, peer)) = crate::net::accept(&listener, &mut shutdown, "inbox").await {
        let peer = crate::net::canonical(peer);
        let slot = Slot::take(&open, inbox.max_connections);
        let inbox = inbox.clone();
        let mut stop = shutdown.clone();
        tokio::spawn(async move {
            tokio::select! {
                _ = connection(stream, peer.ip(), inbox, implicit_tls, slot) => {}
                _ = stop.wait() => {}
            }
        });
    }
}

/// A place among the open connections, given back on drop.
struct Slot(Arc<AtomicUsize>);

impl Slot {
    fn take(open: &Arc<AtomicUsize>, max: usize) -> Option<Slot> {
        if open.fetch_add(1, Ordering::SeqCst) >= max {
            open.fetch_sub(1, Ordering::SeqCst);
            return None;
        }
        Some(Slot(open.clone()))
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

async fn connection(
    tcp: TcpStream,
    client: std::net::IpAddr,
    inbox: Arc<Inbox>,
    implicit_tls: bool,
    slot: Option<Slot>,
) {
    let _ = tcp.set_nodelay(true);
    let stream = if implicit_tls {
        let accept = inbox.acceptor.accept(tcp);
        match tokio::time::timeout(Duration::from_secs(30), accept).await {
            Ok(Ok(tls)) => Stream::Server(Box::new(tls)),
            Ok(Err(e)) => {
                debug!(%client, error = %e, "inbox TLS handshake failed");
                return;
            }
            Err(_) => return,
        }
    } else {
        Stream::Plain(tcp)
    };
    let Some(_slot) = slot else {
        let mut stream = stream;
        let _ = stream
            .write_all(b"* BYE too many connections, try again later\r\n")
            .await;
        return;
    };
    Session::new(inbox, client, implicit_tls).run(stream).await;
}
