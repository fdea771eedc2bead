//! Content that needs no dot-stuffing, from a file straight to a plain TCP connection with
//! `sendfile(2)`: the kernel moves it from the page cache to the socket, with no copy
//! through mx2 (a drain of large messages from the embedded store's spool files).
//!
//! The calls run on the blocking pool, one step of at most [`STEP`] bytes each, since the
//! file's pages may have to come from the disk. The socket stays non-blocking: when it is
//! full, the step waits for room with `poll(2)` on its own duplicate of the socket, within
//! the data timeout. tokio's readiness of the socket is never used for this, so no wake-up
//! can be lost between the two (an earlier version waited on it and could hang).

use crate::queue::body::FileRange;
use rustix::event::{PollFd, PollFlags, Timespec};
use rustix::io::Errno;
use std::io;
use std::os::fd::OwnedFd;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpStream;

/// The most one step hands over before the next is scheduled.
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

/// Sends all of `range` to `tcp`; each wait for room in the socket within `timeout`.
pub async fn send(tcp: &TcpStream, range: &mut FileRange, timeout: Duration) -> Result<(), Failed> {
    let out = Arc::new(rustix::io::dup(tcp).map_err(|e| Failed::Connection(e.into()))?);
    while range.len > 0 {
        let (out, file, at) = (out.clone(), range.file.clone(), range.offset);
        let count = range.len.min(STEP) as usize;
        let sent = tokio::task::spawn_blocking(move || step(&out, &file, at, count, timeout))
            .await
            .map_err(|e| Failed::Connection(io::Error::other(e)))??;
        range.offset += sent as u64;
        range.len -= sent as u64;
    }
    Ok(())
}

/// One `sendfile` of up to `count` bytes of `file` from `at`, waiting for room first when
/// the socket is full. Returns how many bytes went (at least one).
fn step(
    out: &OwnedFd,
    file: &std::fs::File,
    mut at: u64,
    count: usize,
    timeout: Duration,
) -> Result<usize, Failed> {
    let wait = Timespec {
        tv_sec: i64::try_from(timeout.as_secs()).unwrap_or(i64::MAX),
        tv_nsec: i64::from(timeout.subsec_nanos()),
    };
    loop {
        match rustix::fs::sendfile(out, file, Some(&mut at), count) {
            Ok(0) => {
                return Err(Failed::File(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    format!("the content's file ends {count} or fewer bytes early"),
                )));
            }
            Ok(n) => return Ok(n),
            Err(Errno::AGAIN) => {
                let mut fds = [PollFd::new(out, PollFlags::OUT)];
                match rustix::event::poll(&mut fds, Some(&wait)) {
                    Ok(0) => {
                        return Err(Failed::Connection(io::Error::new(
                            io::ErrorKind::TimedOut,
                            "no room in the connection within the data timeout",
                        )));
                    }
                    // Room, or an error the next call reports.
                    Ok(_) | Err(Errno::INTR) => {}
                    Err(e) => return Err(Failed::Connection(e.into())),
                }
            }
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
        FileRange {
            file: Arc::new(f.reopen().unwrap()),
            offset,
            len,
            dot_free: true,
        }
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
