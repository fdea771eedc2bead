//! A stored message's content as an HTTP download, streamed: the admin API's export and the
//! web inbox's `.eml` hand a message of any size to the client a chunk at a time, so a
//! download holds a few chunks of memory (the reader's buffer and one chunk in a channel of
//! one), never the whole message. A task reads from the store while the client takes the
//! bytes; it ends when the content does or the client goes. A store that fails halfway ends
//! the response short of its `Content-Length`, which the client sees as a broken download.

use crate::queue::body::BodyReader;
use axum::body::Body;
use axum::http::{HeaderValue, header};
use axum::response::Response;
use hyper::body::{Bytes, Frame, SizeHint};
use std::pin::Pin;
use std::task::{Context, Poll};
use tokio::sync::mpsc;

/// A download of `reader`'s content as `content_type`, saved as `file_name` (which the
/// caller made safe for a header: no quotes, no control characters).
pub fn response(reader: BodyReader, content_type: &'static str, file_name: &str) -> Response {
    let size = reader.size;
    let (tx, rx) = mpsc::channel(1);
    tokio::spawn(pump(reader, tx));
    let mut r = Response::new(Body::new(Streamed { rx, left: size }));
    let h = r.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    h.insert(header::CONTENT_LENGTH, HeaderValue::from(size));
    let disposition = format!("attachment; filename=\"{file_name}\"");
    if let Ok(v) = HeaderValue::from_str(&disposition) {
        h.insert(header::CONTENT_DISPOSITION, v);
    }
    r
}

/// Reads the content chunk by chunk into `tx` until it ends, fails, or nobody listens.
async fn pump(mut reader: BodyReader, tx: mpsc::Sender<std::io::Result<Bytes>>) {
    let mut buf = Vec::new();
    loop {
        match reader.next_chunk(&mut buf).await {
            Ok(true) => {
                // The chunk's buffer goes as it is; the next read gets a fresh one.
                if tx
                    .send(Ok(Bytes::from(std::mem::take(&mut buf))))
                    .await
                    .is_err()
                {
                    return;
                }
            }
            Ok(false) => return,
            Err(e) => {
                tracing::warn!(error = %e, "a download's content could not be read to its end");
                let _ = tx.send(Err(e)).await;
                return;
            }
        }
    }
}

/// The response body: what the pump sends, in order.
struct Streamed {
    rx: mpsc::Receiver<std::io::Result<Bytes>>,
    /// Bytes still to come.
    left: u64,
}

impl hyper::body::Body for Streamed {
    type Data = Bytes;
    type Error = std::io::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, std::io::Error>>> {
        match self.rx.poll_recv(cx) {
            Poll::Ready(Some(Ok(chunk))) => {
                self.left = self.left.saturating_sub(chunk.len() as u64);
                Poll::Ready(Some(Ok(Frame::data(chunk))))
            }
            Poll::Ready(Some(Err(e))) => Poll::Ready(Some(Err(e))),
            Poll::Ready(None) => Poll::Ready(None),
            Poll::Pending => Poll::Pending,
        }
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::with_exact(self.left)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_download_gives_the_content_with_its_length_and_name() {
        let content: Vec<u8> = (0..(3 * crate::queue::body::CHUNK + 17))
            .map(|i| (i % 251) as u8)
            .collect();
        let r = response(
            BodyReader::from_vec(content.clone()),
            "message/rfc822",
            "a_b.eml",
        );
        let h = r.headers();
        assert_eq!(h[header::CONTENT_TYPE], "message/rfc822");
        assert_eq!(
            h[header::CONTENT_LENGTH],
            content.len().to_string().as_str()
        );
        assert_eq!(
            h[header::CONTENT_DISPOSITION],
            "attachment; filename=\"a_b.eml\""
        );
        let got = axum::body::to_bytes(r.into_body(), usize::MAX)
            .await
            .unwrap();
        assert_eq!(&got[..], &content[..]);
    }

    #[tokio::test]
    async fn a_content_that_fails_halfway_fails_the_body() {
        struct Broken(bool);
        impl tokio::io::AsyncRead for Broken {
            fn poll_read(
                mut self: Pin<&mut Self>,
                _: &mut Context<'_>,
                buf: &mut tokio::io::ReadBuf<'_>,
            ) -> Poll<std::io::Result<()>> {
                if std::mem::replace(&mut self.0, true) {
                    return Poll::Ready(Err(std::io::Error::other("disk gone")));
                }
                buf.put_slice(b"first part");
                Poll::Ready(Ok(()))
            }
        }
        let r = response(BodyReader::new(1000, Broken(false)), "a/b", "x");
        let err = axum::body::to_bytes(r.into_body(), usize::MAX)
            .await
            .unwrap_err();
        assert!(err.to_string().contains("disk gone"), "{err}");
    }
}
