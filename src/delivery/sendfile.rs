//! Content that needs no dot-stuffing, from a file straight to a plain TCP connection with
//! `sendfile(2)`: the kernel moves it from the page cache to the socket, with no copy
//! through mx2 (a drain of large messages from the embedded store's spool files).
//!
//! Each call runs on the blocking pool, at most [`STEP`] bytes, since the file's pages may
//! have to come from the disk, and first asks for the next step's pages
//! (`POSIX_FADV_WILLNEED`), so the disk reads them while this step is sent; the socket stays
//! non-blocking, so a call never waits for the
//! primary and a slow primary holds no blocking thread. A full socket ends the call with
//! `EAGAIN`; the wait for room is then async, on a registration of a duplicate of the
//! socket (`AsyncFd`), whose readiness is cleared only for the event seen before the call
//! (tokio clears by event tick), so a wake-up arriving meanwhile is not lost. An earlier
//! version cleared the stream's own readiness after the call (`try_io`), which can drop
//! such a wake-up, and a drain hung.

use crate::queue::body::{self, FileRange};
use rustix::io::Errno;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::Interest;
use tokio::io::unix::AsyncFd;
use tokio::net::TcpStream;

/// The most one call hands over.
pub const STEP: u64 = 8 << 20;

/// Why sending the range failed.
#[derive(Debug)]
pub enum Failed {
    /// The connection: reset or closed, or no room in it within the timeout
    /// (`ErrorKind::TimedOut`).
    Connection(io::Error),
    /// The file: a read error, or it ends before the range does.
    File(io::Error),
}

/// A duplicate of the connection's socket, shared with the blocking pool; open as long as
/// one clone of the `Arc` lives.
struct Socket(Arc<OwnedFd>);

impl AsRawFd for Socket {
    fn as_raw_fd(&self) -> RawFd {
        self.0.as_raw_fd()
    }
}

/// Sends all of `range` to `tcp`; each wait for room in the socket within `timeout`.
pub async fn send(tcp: &TcpStream, range: &mut FileRange, timeout: Duration) -> Result<(), Failed> {
    let dup = Arc::new(rustix::io::dup(tcp).map_err(|e| Failed::Connection(e.into()))?);
    // SAFETY: the descriptor stays open, the same one, for as long as the `AsyncFd` lives:
    // it is owned by the `Arc` the `AsyncFd` holds a clone of, and `Socket::as_raw_fd`
    // always returns it.
    let socket =
        unsafe { AsyncFd::register_with_interest(Socket(dup.clone()), Interest::WRITABLE) }
            .map_err(|e| Failed::Connection(io::Error::other(e.to_string())))?;
    while range.len > 0 {
        let mut room = match tokio::time::timeout(timeout, socket.writable()).await {
            Err(_) => {
                return Err(Failed::Connection(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "no room in the connection within the data timeout",
                )));
            }
            Ok(Err(e)) => return Err(Failed::Connection(e)),
            Ok(Ok(room)) => room,
        };
        let (out, file, at) = (dup.clone(), range.file.clone(), range.offset);
        let count = range.len.min(STEP) as usize;
        let ahead = (range.len - count as u64).min(STEP);
        let sent = tokio::task::spawn_blocking(move || step(&out, &file, at, count, ahead))
            .await
            .map_err(|e| Failed::Connection(io::Error::other(e)))??;
        match sent {
            Some(n) => {
                range.offset += n as u64;
                range.len -= n as u64;
            }
            // Full: wait for the next sign of room (not the one already used).
            None => room.clear_ready(),
        }
    }
    Ok(())
}

/// One `sendfile` of up to `count` bytes of `file` from `at`, the `ahead` bytes after them
/// asked for first: how many went (at least one), or None when the socket is full.
fn step(
    out: &OwnedFd,
    file: &std::fs::File,
    mut at: u64,
    count: usize,
    ahead: u64,
) -> Result<Option<usize>, Failed> {
    // The next step's pages are asked for now, so the disk reads them while this one is
    // sent (a hint: nothing depends on it).
    body::ask_ahead(file, at + count as u64, ahead);
    loop {
        match rustix::fs::sendfile(out, file, Some(&mut at), count) {
            Ok(0) => {
                return Err(Failed::File(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    format!("the content's file ends {count} or fewer bytes early"),
                )));
            }
            Ok(n) => return Ok(Some(n)),
            Err(Errno::AGAIN) => return Ok(None),
            Err(Errno::INTR) => {}
            Err(
                e @ (Errno::PIPE
                | Errno::CONNRESET
                | Errno::NOTCONN
                | Errno::CONNABORTED
                | Errno::TIMEDOUT),
            ) => return Err(Failed::Connection(e.into())),
            Err(e) => return Err(Failed::File(e.into())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use tokio::io::AsyncReadExt;
    use tokio::net::TcpListener;

    /// A file of `len` seeded bytes, and the bytes.
    fn file(len: usize) -> (tempfile::NamedTempFile, Vec<u8>) {
        let bytes: Vec<u8> = (0..len).map(|i| (i * 7 % 251) as u8).collect();
        let mut f = tempfile::NamedTempFile::new().unwrap();
        f.write_all(&bytes).unwrap();
        (f, bytes)
    }

    fn range(f: &tempfile::NamedTempFile, offset: u64, len: u64) -> FileRange {
        FileRange::new(Arc::new(f.reopen().unwrap()), offset, len, true)
    }

    /// A connected pair: mx2's end and the peer's.
    async fn pair() -> (TcpStream, TcpStream) {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let ours = TcpStream::connect(l.local_addr().unwrap()).await.unwrap();
        let (theirs, _) = l.accept().await.unwrap();
        (ours, theirs)
    }

    #[tokio::test]
    async fn a_range_larger_than_the_socket_buffer_arrives_whole_past_a_slow_reader() {
        // Larger than a step and than what the socket holds: the sender finds it full
        // (the reader starts late) and must wait for room, several times.
        let (f, bytes) = file((STEP as usize) * 2 + 12_345);
        let (ours, mut theirs) = pair().await;
        let reader = tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(200)).await;
            let mut got = Vec::new();
            theirs.read_to_end(&mut got).await.unwrap();
            got
        });
        let mut r = range(&f, 100, bytes.len() as u64 - 100);
        send(&ours, &mut r, Duration::from_secs(10)).await.unwrap();
        assert_eq!(r.len, 0);
        assert_eq!(r.offset, bytes.len() as u64);
        drop(ours);
        let got = reader.await.unwrap();
        assert!(got == bytes[100..], "the bytes differ");
    }

    /// A reader that takes the content in small bursts keeps the socket full most of the
    /// time: calls end with `EAGAIN` again and again, and every wait must be woken, on six
    /// connections at once. (The first version's hang, in a drain, was not reproduced by
    /// this test when tried against that version; this is a check of the waits, not a
    /// reproduction of that race.)
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn many_waits_for_room_are_all_woken() {
        let (f, bytes) = file(24 << 20);
        let bytes = Arc::new(bytes);
        let mut senders = Vec::new();
        for _ in 0..6 {
            let (ours, mut theirs) = pair().await;
            let mut r = range(&f, 0, bytes.len() as u64);
            let expected = bytes.clone();
            let reader = tokio::spawn(async move {
                let (mut got, mut buf) = (Vec::new(), vec![0u8; 64 << 10]);
                loop {
                    let n = theirs.read(&mut buf).await.unwrap();
                    if n == 0 {
                        break;
                    }
                    got.extend_from_slice(&buf[..n]);
                    tokio::time::sleep(Duration::from_micros(200)).await;
                }
                assert!(got == *expected, "the bytes differ");
            });
            senders.push(tokio::spawn(async move {
                let sent = send(&ours, &mut r, Duration::from_secs(20)).await;
                drop(ours);
                sent
            }));
            senders.push(reader_as_result(reader));
        }
        for s in senders {
            s.await.unwrap().unwrap();
        }
    }

    fn reader_as_result(
        reader: tokio::task::JoinHandle<()>,
    ) -> tokio::task::JoinHandle<Result<(), Failed>> {
        tokio::spawn(async move {
            reader.await.unwrap();
            Ok(())
        })
    }

    #[tokio::test]
    async fn a_file_shorter_than_its_range_is_a_file_error() {
        let (f, _) = file(1000);
        let (ours, _theirs) = pair().await;
        let mut r = range(&f, 0, 2000);
        let e = send(&ours, &mut r, Duration::from_secs(5))
            .await
            .unwrap_err();
        assert!(
            matches!(&e, Failed::File(e) if e.kind() == io::ErrorKind::UnexpectedEof),
            "{e:?}"
        );
        assert_eq!(r.offset, 1000, "what the file held went");
    }

    #[tokio::test]
    async fn a_peer_that_never_reads_times_out() {
        let (f, _) = file(64 << 20);
        let (ours, _theirs) = pair().await;
        let mut r = range(&f, 0, 64 << 20);
        let e = send(&ours, &mut r, Duration::from_millis(300))
            .await
            .unwrap_err();
        assert!(
            matches!(&e, Failed::Connection(e) if e.kind() == io::ErrorKind::TimedOut),
            "{e:?}"
        );
        assert!(r.len > 0);
    }

    #[tokio::test]
    async fn a_closed_peer_is_a_connection_error() {
        let (f, _) = file(64 << 20);
        let (ours, theirs) = pair().await;
        drop(theirs);
        let mut r = range(&f, 0, 64 << 20);
        let e = send(&ours, &mut r, Duration::from_secs(5))
            .await
            .unwrap_err();
        assert!(matches!(e, Failed::Connection(_)), "{e:?}");
    }
}
