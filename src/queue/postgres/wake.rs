//! Notifications between nodes: a dedicated connection LISTENs on one of the store's
//! channels and turns every notification into a notification of a `Notify` of this node's:
//! wake-ups of the scheduler ([`super::CHANNEL`]), registry changes
//! ([`super::registry::CHANNEL`]). The connection is made again when it drops, with a
//! notification then, since notifications sent meanwhile are lost; the polling its listener
//! does covers the gap. Ends (within seconds) when the store is dropped.

use super::{Inner, Tls};
use std::sync::{Arc, Weak};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::{Notify, mpsc};
use tokio_postgres::{AsyncMessage, Client, Connection};
use tracing::{debug, warn};

pub(super) async fn listen(inner: Weak<Inner>, channel: &'static str, wake: Arc<Notify>) {
    let mut delay = Duration::from_millis(200);
    loop {
        let Some(store) = inner.upgrade() else {
            return;
        };
        let (pg, tls, node) = (store.pg.clone(), store.tls.clone(), store.node.clone());
        drop(store);
        let connected = match tls {
            Tls::Off => match pg.connect(tokio_postgres::NoTls).await {
                Ok((client, conn)) => {
                    serve(client, conn, channel, &wake, &inner).await;
                    Ok(())
                }
                Err(e) => Err(e),
            },
            Tls::Rustls(t) => match pg.connect(t).await {
                Ok((client, conn)) => {
                    serve(client, conn, channel, &wake, &inner).await;
                    Ok(())
                }
                Err(e) => Err(e),
            },
        };
        match connected {
            Ok(()) => {
                debug!(node = %node, channel, "notification connection closed; connecting again");
                delay = Duration::from_millis(200);
            }
            Err(e) => {
                warn!(node = %node, channel, error = %e, "cannot listen for other nodes' notifications; polling meanwhile");
                delay = (delay * 2).min(Duration::from_secs(10));
            }
        }
        tokio::time::sleep(delay).await;
    }
}

/// Listens on one connection until it drops.
async fn serve<S, T>(
    client: Client,
    mut conn: Connection<S, T>,
    channel: &str,
    wake: &Notify,
    inner: &Weak<Inner>,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    T: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (tx, mut rx) = mpsc::unbounded_channel();
    let driver = tokio::spawn(async move {
        while let Some(message) = std::future::poll_fn(|cx| conn.poll_message(cx)).await {
            match message {
                Ok(AsyncMessage::Notification(_)) => {
                    if tx.send(()).is_err() {
                        return;
                    }
                }
                Ok(_) => {}
                Err(e) => {
                    debug!(error = %e, "notification connection failed");
                    return;
                }
            }
        }
    });
    if let Err(e) = client.batch_execute(&format!("LISTEN {channel}")).await {
        warn!(channel, error = %e, "LISTEN failed");
        driver.abort();
        return;
    }
    // Whatever was notified while this node was not listening: look now.
    wake.notify_one();
    loop {
        tokio::select! {
            got = rx.recv() => match got {
                Some(()) => wake.notify_one(),
                None => break,
            },
            _ = tokio::time::sleep(Duration::from_secs(5)) => {
                if inner.strong_count() == 0 {
                    break;
                }
            }
        }
    }
    driver.abort();
    drop(client);
}
